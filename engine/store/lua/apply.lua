-- apply.lua: the one atomic state transition of an instance (compare-and-set).
--
-- KEYS[1] instance hash   KEYS[2] activity list   KEYS[3] timers zset   KEYS[4] deadlines zset
-- KEYS[5] broker queue list of the next step's message (when ARGV[22] is set)
-- KEYS[6] queued zset (steps sent, not yet started: no deadline until a worker starts them)
-- ARGV:
--  1 expected seq ('' = any)          2 expected attempt ('' = any)   3 allowed statuses (comma list)
--  4 now (epoch seconds)              5 activity JSON ('' = none)     6 context node ('' = none)
--  7 context JSON                     8 new node ('' = keep)          9 bump seq ('1' | '0')
-- 10 new attempt ('' = keep)         11 new status ('' = keep)       12 deadline score ('' = clear)
-- 13 timer score ('' = clear)        14 timer kind                   15 result JSON ('' = keep)
-- 16 error JSON ('' = keep, '-' = clear)                             17 TTL seconds on finish
-- 18 runs key prefix (+ run + ':' + status)                  19 respect pause ('1' | '0')    20 in-flight after ('1' | '0' | '')
-- 21 noop activity JSON (recorded when the compare-and-set fails; '' = none)
-- 22 next step's broker message ('' = none): pushed onto KEYS[5] if the instance is running after
--    the update, so the transition and the message that continues it land together or not at all
-- 23 carrier: the message whose worker runs the next step inline ('' = keep, '-' = clear)
-- 24 context entries (comma list of node names) deleted if the instance ends 'succeeded'
-- 25 queued: the step was sent and waits for a worker ('' = not queued); the value is the seconds
--    its deadline lies after the start, which start.lua turns into a deadline when a worker starts it
--
-- Returns {'applied', final_status, seq} or {'stale', current_seq, current_status}
-- or {'missing'}.
local inst, acts, timers, deadlines = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cur = redis.call('HMGET', inst, 'seq', 'status', 'attempt', 'id', 'run')
if not cur[4] then
  return {'missing'}
end
local seq, status, attempt = tonumber(cur[1]), cur[2], cur[3]

local allowed = false
for s in string.gmatch(ARGV[3], '[^,]+') do
  if s == status then allowed = true end
end
if (ARGV[1] ~= '' and tonumber(ARGV[1]) ~= seq)
   or (ARGV[2] ~= '' and ARGV[2] ~= attempt)
   or not allowed then
  if ARGV[21] ~= '' then
    redis.call('RPUSH', acts, ARGV[21])
    redis.call('HINCRBY', inst, 'noops', 1)
  end
  return {'stale', tostring(seq), status}
end

local now = ARGV[4]
local runp = ARGV[18] .. cur[5] .. ':'
if ARGV[5] ~= '' then redis.call('RPUSH', acts, ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', inst, 'c:' .. ARGV[6], ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', inst, 'node', ARGV[8]) end
if ARGV[9] == '1' then
  seq = seq + 1
  redis.call('HSET', inst, 'seq', seq)
end
if ARGV[10] ~= '' then redis.call('HSET', inst, 'attempt', ARGV[10]) end
if ARGV[15] ~= '' then redis.call('HSET', inst, 'result', ARGV[15]) end
if ARGV[23] == '-' then
  redis.call('HDEL', inst, 'carrier')
elseif ARGV[23] ~= '' then
  redis.call('HSET', inst, 'carrier', ARGV[23])
end
if ARGV[16] == '-' then
  redis.call('HDEL', inst, 'error')
elseif ARGV[16] ~= '' then
  redis.call('HSET', inst, 'error', ARGV[16])
end

local final = ARGV[11]
if final == '' then final = status end
local terminal = (final == 'succeeded' or final == 'failed' or final == 'cancelled')
-- A paused instance records the step that was in flight but goes no further.
if ARGV[19] == '1' and status == 'paused' and not terminal then final = 'paused' end

if final ~= status then
  redis.call('SMOVE', runp .. status, runp .. final, cur[4])
  redis.call('HSET', inst, 'status', final)
end
redis.call('HSET', inst, 'updated_at', now)

if final == 'running' and ARGV[12] ~= '' then
  redis.call('ZADD', deadlines, ARGV[12], cur[4])
else
  redis.call('ZREM', deadlines, cur[4])
end
-- queued: a backlog is not a loss, so no deadline until a worker starts the step
if final == 'running' and ARGV[25] ~= '' then
  redis.call('ZADD', KEYS[6], now, cur[4])
  redis.call('HSET', inst, 'step_timeout', ARGV[25])
else
  redis.call('ZREM', KEYS[6], cur[4])
end
if (final == 'running' or final == 'waiting') and ARGV[13] ~= '' then
  redis.call('ZADD', timers, ARGV[13], cur[4])
  redis.call('HSET', inst, 'wake_at', ARGV[13], 'timer', ARGV[14])
else
  redis.call('ZREM', timers, cur[4])
  -- a paused instance keeps its wake time so that resume parks it again until then
  if final ~= 'paused' then redis.call('HDEL', inst, 'wake_at', 'timer') end
end
if terminal or (final == 'paused' and ARGV[19] == '1') then
  -- finished, or a step of a paused instance came back: nothing is in flight any more
  redis.call('HSET', inst, 'inflight', '0')
elseif ARGV[20] ~= '' then
  redis.call('HSET', inst, 'inflight', ARGV[20])
end

if final == 'succeeded' and ARGV[24] ~= '' then
  for node in string.gmatch(ARGV[24], '[^,]+') do redis.call('HDEL', inst, 'c:' .. node) end
end
if terminal then
  redis.call('HSET', inst, 'finished_at', now)
  local ttl = tonumber(ARGV[17])
  redis.call('EXPIRE', inst, ttl)
  redis.call('EXPIRE', acts, ttl)
  redis.call('EXPIRE', runp .. final, ttl)
else
  redis.call('PERSIST', inst)
  redis.call('PERSIST', acts)
end
if final == 'running' and ARGV[22] ~= '' then
  redis.call('LPUSH', KEYS[5], ARGV[22])
end
return {'applied', final, tostring(seq)}
