-- approve_proposal.lua: one approval of a proposal reviewed in its workflow. KEYS: proposal hash.
-- ARGV: who, now, approval JSON, approvals required, cutoff ('' = none), decided_at.
-- Returns {1, status, approvals} (recorded; status 'approved' once enough), or {0, reason, status}
-- with reason 'missing', 'late' (past the cut-off), 'same' (this person approved already) or 'status'.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, 'missing', ''} end
if redis.call('HEXISTS', KEYS[1], 'approval:' .. ARGV[1]) == 1 then return {0, 'same', status} end
if status ~= 'proposed' then return {0, 'status', status} end
if ARGV[5] ~= '' and tonumber(ARGV[2]) > tonumber(ARGV[5]) then return {0, 'late', status} end
redis.call('HSET', KEYS[1], 'approval:' .. ARGV[1], ARGV[3])
local count = redis.call('HINCRBY', KEYS[1], 'approval_count', 1)
if count >= tonumber(ARGV[4]) then
  status = 'approved'
  redis.call('HSET', KEYS[1], 'status', status, 'decided_by', ARGV[1], 'decided_at', ARGV[6])
end
return {1, status, count}
