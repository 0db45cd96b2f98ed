-- trim_brokerage.lua: forget the simulated brokerage's records older than a cutoff (its retention).
-- KEYS: pairs (receipts hash, its `:at` zset of key -> acceptance time) then pairs (delivery list,
-- its `:at` list of delivery times, in the same order). ARGV: number of receipt pairs, cutoff, limit.
-- At most `limit` records of each key go per call. Returns how many records went.
local pairs_of_receipts, cutoff, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local gone = 0
for i = 1, pairs_of_receipts * 2, 2 do
  local old = redis.call('ZRANGEBYSCORE', KEYS[i + 1], '-inf', cutoff, 'LIMIT', 0, limit)
  if #old > 0 then
    redis.call('HDEL', KEYS[i], unpack(old))
    redis.call('ZREM', KEYS[i + 1], unpack(old))
    gone = gone + #old
  end
end
for i = pairs_of_receipts * 2 + 1, #KEYS, 2 do
  local n = 0
  while n < limit do
    local at = redis.call('LINDEX', KEYS[i + 1], 0)
    if not at or tonumber(at) > cutoff then break end
    redis.call('LPOP', KEYS[i])
    redis.call('LPOP', KEYS[i + 1])
    n = n + 1
  end
  gone = gone + n
end
return gone
