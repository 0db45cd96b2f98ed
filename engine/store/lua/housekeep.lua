-- housekeep.lua: trim the global indexes of what expired, and give finished runs their TTL.
-- Called at most once a minute by the sweeper (engine/store/housekeeping.py); bounded by doc.limit.
--
-- KEYS[1]  <prefix>:runs      zset: run label by creation time
-- KEYS[2]  <prefix>:batches   zset: batch id by the time it opened
-- KEYS[3]  <prefix>:gathers   hash: batch name -> its latest batch id
-- ARGV[1]  {runs: <prefix>:run:, batch: <prefix>:batch:, ttl, limit, live: [...], finished: [...]}
--
-- For each of the `limit` oldest runs (<runs><run> is its metadata hash, <runs><run>:<status> its sets):
--   no metadata and no status set left          -> its entry leaves the runs index
--   no live instance, metadata without a TTL    -> the metadata expires with the longest-lived of its
--                                                  finished sets (doc.ttl when it has none): a run whose
--                                                  last instance finished before its metadata was written,
--                                                  or a run that never had an instance
--   a finished set without a TTL (older data)   -> doc.ttl
-- Each of the `limit` oldest batches whose hash expired leaves the batch index, and each batch name
-- whose latest batch expired leaves the gathers hash (the next batch of that name starts at #1 again).
-- Returns {runs dropped, metadata given a TTL, batches dropped, names dropped}.
local doc = cjson.decode(ARGV[1])
local dropped_runs, expiring, dropped_batches, dropped_names = 0, 0, 0, 0

for _, run in ipairs(redis.call('ZRANGE', KEYS[1], 0, doc.limit - 1)) do
  local meta = doc.runs .. run
  local live = 0
  for _, s in ipairs(doc.live) do live = live + redis.call('EXISTS', meta .. ':' .. s) end
  local longest = -2
  for _, s in ipairs(doc.finished) do
    local set = meta .. ':' .. s
    local left = redis.call('TTL', set)
    if left == -1 then
      redis.call('EXPIRE', set, doc.ttl)
      left = doc.ttl
    end
    if left > longest then longest = left end
  end
  if redis.call('EXISTS', meta) == 0 then
    if live == 0 and longest == -2 then
      redis.call('ZREM', KEYS[1], run)
      dropped_runs = dropped_runs + 1
    end
  elseif live == 0 and redis.call('TTL', meta) == -1 then
    local ttl = doc.ttl
    if longest > 0 then ttl = longest end
    redis.call('EXPIRE', meta, ttl)
    expiring = expiring + 1
  end
end

for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, doc.limit - 1)) do
  if redis.call('EXISTS', doc.batch .. id) == 0 then
    redis.call('ZREM', KEYS[2], id)
    dropped_batches = dropped_batches + 1
  end
end

local names = redis.call('HGETALL', KEYS[3])
for i = 1, #names, 2 do
  if redis.call('EXISTS', doc.batch .. names[i + 1]) == 0 then
    redis.call('HDEL', KEYS[3], names[i])
    dropped_names = dropped_names + 1
  end
end

return {dropped_runs, expiring, dropped_batches, dropped_names}
