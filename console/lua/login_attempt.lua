-- One login attempt, counted before the password is checked (console/throttle.py).
--
-- KEYS: one hash {count, last} per thing that is throttled (the user name, the client address).
-- ARGV: now, then per key: free attempts, base delay, maximum delay (seconds).
--
-- For every key, the attempt must come at least delay(count) after that key's last counted
-- attempt, where delay(n) = 0 for n < free, else min(base * 2^(n - free), maximum).
-- If every key allows it, the attempt is counted on each (count + 1, last = now; kept a day)
-- and 0 is returned: the caller may check the password. Otherwise nothing is written and the
-- longest wait in seconds is returned. Check and count are one atomic step, so parallel
-- attempts cannot all slip through between a check and a record.
local now = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local free = tonumber(ARGV[2 + (i - 1) * 3])
  local base = tonumber(ARGV[3 + (i - 1) * 3])
  local maximum = tonumber(ARGV[4 + (i - 1) * 3])
  local record = redis.call('HMGET', key, 'count', 'last')
  local count = tonumber(record[1]) or 0
  local last = tonumber(record[2]) or 0
  if count >= free then
    local delay = math.min(base * 2 ^ (count - free), maximum)
    wait = math.max(wait, last + delay - now)
  end
end
if wait > 0 then
  return tostring(wait)
end
for _, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'count', 1)
  redis.call('HSET', key, 'last', ARGV[1])
  redis.call('EXPIRE', key, 86400)
end
return '0'
