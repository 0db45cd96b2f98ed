-- reject_proposal.lua: the final rejection of a proposal reviewed in its workflow. KEYS: proposal hash.
-- ARGV: who, now, note, cutoff ('' = none). Returns {1, 'rejected'} or {0, reason, status}
-- with reason 'missing', 'late' (past the cut-off) or 'status' (decided already).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, 'missing', ''} end
if status ~= 'proposed' then return {0, 'status', status} end
if ARGV[4] ~= '' and tonumber(ARGV[2]) > tonumber(ARGV[4]) then return {0, 'late', status} end
redis.call('HSET', KEYS[1], 'status', 'rejected', 'decided_by', ARGV[1], 'decided_at', ARGV[2], 'note', ARGV[3])
return {1, 'rejected'}
