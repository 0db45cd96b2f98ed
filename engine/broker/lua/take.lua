-- take.lua: pop up to ARGV[1] messages from the lists KEYS (a queue's priority lists, served
-- first to last), oldest first -- the end kombu's Redis transport consumes from (BRPOP).
-- Returns {key, message, key, message, ...}.
local want = tonumber(ARGV[1])
local out = {}
for _, key in ipairs(KEYS) do
  if want <= 0 then break end
  local got = redis.call('RPOP', key, want)
  if got then
    for _, raw in ipairs(got) do
      out[#out + 1] = key
      out[#out + 1] = raw
    end
    want = want - #got
  end
end
return out
