-- record_proposal.lua: Record a plan unless a decision was already taken. KEYS: proposal hash, accounts set, runs zset.
-- ARGV: body JSON, account id, run, now. Returns {1, 'proposed'} or {0, current status}.
local status = redis.call('HGET', KEYS[1], 'status')
if status and status ~= 'proposed' then return {0, status} end
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'status', 'proposed')
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], 'NX', ARGV[4], ARGV[3])
return {1, 'proposed'}
