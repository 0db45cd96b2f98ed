-- start.lua: a worker starts a step; read the instance and mark the step started, in one round trip.
--
-- KEYS[1] instance hash   KEYS[2] queued zset   KEYS[3] deadlines zset
-- ARGV[1] node   ARGV[2] seq   ARGV[3] attempt   ARGV[4] now (epoch seconds)
--
-- If the instance is running at exactly (node, seq, attempt) and that step is still queued, it
-- leaves the queued set and gets its deadline: now + the step's timeout (+ grace), stored as
-- 'step_timeout' when the step was sent. A step's timeout therefore counts from its start,
-- never from when its message joined a backlog. Any other delivery (stale, duplicate, paused)
-- changes nothing. Returns the instance hash as HGETALL does ({} when it does not exist).
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return h end
local f = {}
for i = 1, #h, 2 do f[h[i]] = h[i + 1] end
if f['status'] == 'running' and f['node'] == ARGV[1] and f['seq'] == ARGV[2] and f['attempt'] == ARGV[3]
   and redis.call('ZREM', KEYS[2], f['id']) == 1 then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[4]) + tonumber(f['step_timeout'] or '0'), f['id'])
end
return h
