-- transition_proposal.lua: Move a proposal to a new status if it is in one of the allowed ones. KEYS: proposal hash.
-- ARGV: new status, allowed statuses (comma separated), then field/value pairs to set.
-- Returns {1, new status}, {0, current status} or {0, ''} when there is no such proposal.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, ''} end
local allowed = false
for s in string.gmatch(ARGV[2], '[^,]+') do if s == status then allowed = true end end
if not allowed then return {0, status} end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return {1, ARGV[1]}
