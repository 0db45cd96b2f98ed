-- publish.lua: store a definition as an immutable, numbered version.
-- KEYS[1] versions hash (field = version, value = JSON)   KEYS[2] fingerprints hash
-- KEYS[3] names set   KEYS[4] aliases hash
-- ARGV[1] name  ARGV[2] pinned version ('' = next)  ARGV[3] fingerprint  ARGV[4] JSON template
--   (the JSON holds the placeholder "__VERSION__" where the number goes)
-- Returns {version, 'new' | 'existing'} or {'conflict', version}.
local known = redis.call('HGET', KEYS[2], ARGV[3])
if known and ARGV[2] == '' then
  return {known, 'existing'}
end
local version
if ARGV[2] ~= '' then
  version = ARGV[2]
  if redis.call('HEXISTS', KEYS[1], version) == 1 then
    if known == version then return {version, 'existing'} end
    return {'conflict', version}
  end
else
  version = tostring(redis.call('HLEN', KEYS[1]) + 1)
  while redis.call('HEXISTS', KEYS[1], version) == 1 do
    version = tostring(tonumber(version) + 1)
  end
end
local body = string.gsub(ARGV[4], '"__VERSION__"', version)
redis.call('HSET', KEYS[1], version, body)
redis.call('HSET', KEYS[2], ARGV[3], version)
redis.call('SADD', KEYS[3], ARGV[1])
local latest = tonumber(redis.call('HGET', KEYS[4], 'latest') or '0')
if tonumber(version) > latest then redis.call('HSET', KEYS[4], 'latest', version) end
return {version, 'new'}
