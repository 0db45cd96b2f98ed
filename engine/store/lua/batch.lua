-- batch.lua: every change of a batch of a gather node, entered by an operation name.
-- (An instance joins a batch in state.lua, atomically with the step that brings it there.)
--
-- Key families
--   KEYS[1]  <prefix>:batch:<id>        hash: name, group, node, status (open|closed|applied), times,
--                                       attempt, due_kind, answer (the batch step's answer, once)
--   KEYS[2]  <prefix>:batch:<id>:acts   list: the batch's records (opened, closed, step attempts, applied)
--   KEYS[3]  <prefix>:batches:open      zset: open batch id by its close time
--   KEYS[4]  <prefix>:batches:due       zset: closed batch id by when its step is (re)sent (deadline/backoff)
--   KEYS[5]  broker queue of the batch step's message; KEYS[1] again when there is none
--   KEYS[1]..':members' / ':inputs' / ':runs'   its members, contributions and runs (TTL on apply)
--   <doc.runs><run>:<status>            the run status sets (read by an early close)
--
-- ARGV[1] is the operation: one JSON document {op, now, ...named fields}. ARGV[2..] are the stored
-- documents named by doc.docs: record (appended to KEYS[2]), message (pushed), answer (kept once).
--
-- Operations:
--   close    open -> closed: due = doc.due, attempt 1, push the message. With doc.early, only when no
--            instance of the batch's runs is live anywhere but at a gather (nothing could still arrive).
--   started  an attempt of the batch step began: its deadline (due) counts from now
--   answer   keep the batch step's answer, once: the first answer wins, every caller gets it back
--   retry    an attempt failed: the next attempt is sent when its backoff (due) ends; with
--            doc.kind 'limit', the step is over its node's rate limit and waits for a free call
--            (doc.reason, e.g. 'rate: brokerage', kept as waiting_for while due_kind is 'limit')
--   resend   the due time passed (lost message, dead worker, backoff over): send attempt doc.attempt
--   applied  closed -> applied: out of the due set; the batch's keys expire after doc.ttl
--   note     only append a record
-- Every operation but note checks doc.expect (status, attempt) first: {'stale', status, attempt}.
-- Returns {'done', status, attempt[, answer]} or {'missing'}.
local batch, acts, open, due, queue = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local doc = cjson.decode(ARGV[1])
local blob = {}
for i, name in ipairs(doc.docs or {}) do blob[name] = ARGV[i + 1] end
local COULD_ARRIVE = {'running', 'waiting', 'awaiting', 'paused'}

local cur = redis.call('HMGET', batch, 'status', 'attempt', 'id')
if not cur[3] then return {'missing'} end
local status, attempt = cur[1], tonumber(cur[2])
local function record()
  if blob.record then redis.call('RPUSH', acts, blob.record) end
end
if doc.op == 'note' then
  record()
  return {'done', status, tostring(attempt)}
end
local expect = doc.expect or {}
if (expect.status and expect.status ~= status) or (expect.attempt and expect.attempt ~= attempt) then
  return {'stale', status, tostring(attempt)}
end

local function push()
  if blob.message then redis.call('LPUSH', queue, blob.message) end
end

if doc.op == 'close' then
  if doc.early then
    for _, run in ipairs(redis.call('SMEMBERS', batch .. ':runs')) do
      for _, s in ipairs(COULD_ARRIVE) do
        if redis.call('SCARD', doc.runs .. run .. ':' .. s) > 0 then return {'open', status, tostring(attempt)} end
      end
    end
  end
  redis.call('HSET', batch, 'status', 'closed', 'closed_at', doc.now, 'close_reason', doc.reason,
             'attempt', 1, 'due_kind', 'deadline')
  redis.call('ZREM', open, doc.id)
  redis.call('ZADD', due, doc.due, doc.id)
  record()
  push()
  return {'done', 'closed', '1'}
elseif doc.op == 'started' then
  redis.call('ZADD', due, doc.due, doc.id)
  redis.call('HSET', batch, 'due_kind', 'deadline', 'started_at', doc.now)
  return {'done', status, tostring(attempt)}
elseif doc.op == 'answer' then
  redis.call('HSETNX', batch, 'answer', blob.answer)
  record()
  return {'done', status, tostring(attempt), redis.call('HGET', batch, 'answer')}
elseif doc.op == 'retry' then
  redis.call('HSET', batch, 'attempt', doc.attempt, 'due_kind', doc.kind or 'retry', 'waiting_for', doc.reason or '')
  redis.call('ZADD', due, doc.due, doc.id)
  record()
  return {'done', status, tostring(doc.attempt)}
elseif doc.op == 'resend' then
  local score = redis.call('ZSCORE', due, doc.id)
  if not score or tonumber(score) > tonumber(doc.now) then return {'stale', status, tostring(attempt)} end
  redis.call('HSET', batch, 'attempt', doc.attempt, 'due_kind', 'deadline')
  redis.call('ZADD', due, doc.due, doc.id)
  record()
  push()
  return {'done', status, tostring(doc.attempt)}
elseif doc.op == 'applied' then
  redis.call('HSET', batch, 'status', 'applied', 'applied_at', doc.now)
  redis.call('HDEL', batch, 'due_kind')
  redis.call('ZREM', due, doc.id)
  redis.call('ZREM', open, doc.id)
  record()
  for _, key in ipairs({batch, acts, batch .. ':members', batch .. ':inputs', batch .. ':runs'}) do
    redis.call('EXPIRE', key, doc.ttl)
  end
  return {'done', 'applied', tostring(attempt)}
end
return redis.error_reply('batch.lua: unknown operation ' .. tostring(doc.op))
