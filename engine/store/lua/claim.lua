-- claim.lua: take a lease on the due members of a sorted set (timers or deadlines).
-- KEYS[1] sorted set   ARGV[1] now   ARGV[2] max members   ARGV[3] lease end (new score)
-- Returns {member, old_score, member, old_score, ...}. Two callers never get the same member;
-- a caller that dies leaves the member due again when its lease ends.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], ARGV[3], due[i])
end
return due
