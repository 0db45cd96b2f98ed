-- record_proposal.lua: Record a plan unless a decision was already taken. KEYS: proposal hash, accounts set, runs zset.
-- ARGV: body JSON, account id, run, now, ttl (seconds the proposal, its run's account set and the index are kept).
-- Returns {1, 'proposed', new run (1|0)} or {0, current status}.
local status = redis.call('HGET', KEYS[1], 'status')
if status and status ~= 'proposed' then return {0, status} end
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'status', 'proposed')
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
local new = redis.call('ZADD', KEYS[3], 'NX', ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[5])  -- the index too, once no run recorded anything for a retention
return {1, 'proposed', new}
