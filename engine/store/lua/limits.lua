-- limits.lua: the shared rate and concurrency limits of step nodes, entered by an operation name.
--
-- The clock is Redis's own (TIME), so every worker on every machine agrees on it.
--
-- Key families (built from doc.prefix = <prefix>:limit:)
--   <p>override               hash: limit name -> JSON {per_second, burst} or {max}: set at run time
--   <p>names                  zset: limit name -> when it was last used (what `tradeflow limits` lists)
--   <p>waits                  hash: limit name -> how many times a step was parked by it (a counter)
--   <p>rate:<name>            zset: the calls of the last window (member: a call number, score: its time, us)
--                            and the calls planned for the parked steps (member: <id>#<k>, k = 1..cost, score:
--                            the time the step is planned at, us)
--   <p>rate:<name>:n          counter of calls made (the members of the calls)
--   <p>rate:<name>:line       zset: instance id -> when it may try again (s): the instances parked by it
--   <p>rate:<name>:cost       hash: instance id -> the calls planned for it (its cost)
--   <p>conc:<name>:holders    hash: instance id -> the step seq it holds a slot for
--   <p>conc:<name>:line       zset: instance id -> its arrival number: the instances queued behind it
--   <p>conc:<name>:n          counter of arrivals (the line's order)
--   <p>pools                  set:  the concurrency limits with holders or a line (the sweeper's list)
--   <p>spec                   hash: limit name -> JSON of what the definition declares (doc.spec, as last used)
--   <p>wake                   string: when the next early wake of the timers is due (the engine's clock, s),
--                            while one is on its way (expires a moment after that time)
--
-- ARGV[1] is one JSON document {op, prefix, name, ...}. Operations:
--   rate     may instance `id` call now under {per_second, burst} (an override wins)? A rate limit
--            allows at most `burst` calls in any window of burst/per_second seconds. A step that
--            arrives while others are parked joins the end of the line (arrival order); one woken
--            from the line takes the next free call. A parked step's calls are planned for its time
--            (the next one parked is planned after them), so a step woken at its time finds them free.
--            doc.cost (default 1): how many calls the step counts for (at most burst). Returns
--            {'ok', tokens} or {'wait', seconds, tokens}: park until then.
--   acquire  take a slot of the pool for instance `id` at step `seq` (max: the pool's size, an
--            override wins): {'ok'} when it holds one (already, or now: the line is served in
--            arrival order), else {'wait', position} and it is in the line.
--   release  instance `id` leaves the pool: returns the ids that may take the free slots now
--            (the head of the line) for the caller to wake.
--   forget   drop the names unused for doc.age seconds that hold nothing (no override, slot or line):
--            the housekeeping's, so that keys such as one per household do not pile up. Returns how many.
--   leave    drop instance `id` from a line (rate or conc, doc.kind), e.g. it was cancelled.
--   set      store an override {per_second, burst} or {max} for `name`; clear: drop it.
--   wake     a wake of the timers is wanted at doc.at (the caller's clock; doc.wall: its now): 1 when
--            none is on its way for that time or earlier (it is marked, the caller sends one), else 0.
--   woke     a wake ran at doc.wall: the mark of one due by then (doc.slack seconds later at most: the
--            clocks of two machines differ a little) is dropped, so the next may be asked for.
--   show     {name, kind, per_second, burst, max, tokens, parked, holders, waits, override} of each
--            name of doc.names, as JSON (tokens: calls allowed right now).
local doc = cjson.decode(ARGV[1])
local p = doc.prefix
local name = doc.name
local now_us
if doc.now then  -- a test's own clock (Limits.limit_clock); a deployment always uses Redis's TIME
  now_us = math.floor(doc.now * 1000000 + 0.5)  -- to the nearest microsecond: a float clock moved by 0.3 lands on it
else
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local now = now_us / 1000000

local function override()
  local raw = redis.call('HGET', p .. 'override', name)
  if raw then return cjson.decode(raw) end
  return nil
end

-- keep `key` for `ms` milliseconds at least (never shortens what it has: planned calls lie ahead)
local function keep(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

-- a ZCOUNT/ZRANGEBYSCORE bound just after `us` (microseconds: formatted whole, not in 14 digits)
local function after(us)
  return string.format('(%.0f', us)
end

-- the calls of the window ending now (made, or planned for a parked step whose time came)
local function rate_state(per_second, burst)
  local log = p .. 'rate:' .. name
  local window_us = math.floor(burst * 1000000 / per_second)
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now_us - window_us)
  return log, window_us, redis.call('ZCOUNT', log, after(now_us - window_us), now_us)
end

-- take back the calls planned for `id` (its step calls now, is planned anew, or left the line)
local function unplan(log, id)
  local planned = tonumber(redis.call('HGET', log .. ':cost', id) or '0')
  for k = 1, planned do redis.call('ZREM', log, id .. '#' .. k) end
  redis.call('HDEL', log .. ':cost', id)
end

local ops = {}

ops.rate = function()
  local per_second, burst = tonumber(doc.per_second), tonumber(doc.burst)
  local o = override()
  if o and o.per_second then per_second, burst = tonumber(o.per_second), tonumber(o.burst) end
  local cost = math.min(tonumber(doc.cost or 1), burst)
  redis.call('ZADD', p .. 'names', now, name)
  local log = p .. 'rate:' .. name
  local line = log .. ':line'
  local queued = redis.call('ZSCORE', line, doc.id)
  if queued then unplan(log, doc.id) end  -- woken from the line: it is the line's turn
  local _, window_us, used = rate_state(per_second, burst)
  local ahead = 0
  if not queued then ahead = redis.call('ZCARD', line) end
  local window_ms = math.floor(window_us / 1000) + 1000
  if used + cost <= burst and ahead == 0 then
    for _ = 1, cost do redis.call('ZADD', log, now_us, redis.call('INCR', log .. ':n')) end
    keep(log, window_ms)
    keep(log .. ':n', window_ms)
    if queued then redis.call('ZREM', line, doc.id) end
    return {'ok', tostring(burst - used - cost)}
  end
  -- A woken step that finds its calls taken (one ahead of it ran late) keeps its turn: it is
  -- planned for the first time a call leaves the window at which its calls fit, counting the
  -- calls planned by then -- two that lose the race together are not planned for the same
  -- call. (Looked for among the next calls to leave; past those, at the end of the line.)
  local at_us = nil
  if queued then
    local leaving = redis.call('ZRANGEBYSCORE', log, after(now_us - window_us), '+inf', 'WITHSCORES',
                               'LIMIT', math.max(used + cost - burst - 1, 0), 32)
    for i = 2, #leaving, 2 do
      local t = tonumber(leaving[i]) + window_us
      if redis.call('ZCOUNT', log, after(t - window_us), t) + cost <= burst then
        at_us = t
        break
      end
    end
  end
  -- Otherwise planned for the earliest time at which the window ending then holds at most
  -- burst - cost calls, made or planned (its own calls are planned there in turn: the next one
  -- parked is planned after them), and one call interval of its own after the last step of the
  -- line, so the line is served evenly, not a window's worth at once. A step woken at its time
  -- finds its calls free.
  if not at_us then
    at_us = now_us
    local nth = redis.call('ZREVRANGE', log, burst - cost, burst - cost, 'WITHSCORES')
    if nth[2] then at_us = math.max(at_us, tonumber(nth[2]) + window_us) end
    local last = redis.call('ZRANGE', line, -2, -1, 'WITHSCORES')
    for i = #last - 1, 1, -2 do
      if last[i] ~= doc.id then
        at_us = math.max(at_us, math.floor(tonumber(last[i + 1]) * 1000000 + cost * 1000000 / per_second))
        break
      end
    end
  end
  local at = at_us / 1000000
  redis.call('ZADD', line, at, doc.id)
  redis.call('HSET', log .. ':cost', doc.id, cost)
  for k = 1, cost do redis.call('ZADD', log, at_us, doc.id .. '#' .. k) end
  local ms = math.floor((at_us - now_us) / 1000) + window_ms
  keep(log, ms)
  keep(log .. ':n', ms)
  redis.call('HINCRBY', p .. 'waits', name, 1)
  return {'wait', tostring(math.max(at - now, 0.001)), tostring(math.max(burst - used, 0))}
end

local function pool_max()
  local o = override()
  if o and o.max then return tonumber(o.max) end
  return tonumber(doc.max)
end

ops.acquire = function()
  local holders, line = p .. 'conc:' .. name .. ':holders', p .. 'conc:' .. name .. ':line'
  redis.call('ZADD', p .. 'names', now, name)
  if redis.call('HEXISTS', holders, doc.id) == 1 then
    redis.call('HSET', holders, doc.id, doc.seq)
    return {'ok'}
  end
  local free = pool_max() - redis.call('HLEN', holders)
  local rank = redis.call('ZRANK', line, doc.id)
  local position = rank
  if not rank then position = redis.call('ZCARD', line) end
  if position < free then
    redis.call('HSET', holders, doc.id, doc.seq)
    redis.call('ZREM', line, doc.id)
    redis.call('SADD', p .. 'pools', name)
    return {'ok'}
  end
  if not rank then
    redis.call('ZADD', line, redis.call('INCR', p .. 'conc:' .. name .. ':n'), doc.id)
    redis.call('HINCRBY', p .. 'waits', name, 1)
  end
  redis.call('SADD', p .. 'pools', name)
  return {'wait', tostring(position + 1)}
end

ops.release = function()
  local holders, line = p .. 'conc:' .. name .. ':holders', p .. 'conc:' .. name .. ':line'
  redis.call('HDEL', holders, doc.id)
  redis.call('ZREM', line, doc.id)
  local free = pool_max() - redis.call('HLEN', holders)
  if redis.call('HLEN', holders) == 0 and redis.call('ZCARD', line) == 0 then
    redis.call('SREM', p .. 'pools', name)
    redis.call('DEL', p .. 'conc:' .. name .. ':n')
  end
  if free <= 0 then return {} end
  return redis.call('ZRANGE', line, 0, free - 1)
end

ops.leave = function()
  redis.call('ZREM', p .. doc.kind .. ':' .. name .. ':line', doc.id)
  if doc.kind == 'rate' then unplan(p .. 'rate:' .. name, doc.id) end
  return {}
end

ops.set = function()
  redis.call('HSET', p .. 'override', name, cjson.encode(doc.value))
  redis.call('ZADD', p .. 'names', now, name)
  return {}
end

ops.clear = function()
  redis.call('HDEL', p .. 'override', name)
  return {}
end

ops.forget = function()
  -- names unused for doc.age seconds, with no override, no slot held and no one in a line, leave the
  -- names, their wait counters and their declared settings (at most doc.limit of the oldest a call)
  local dropped = 0
  local old = redis.call('ZRANGEBYSCORE', p .. 'names', '-inf', now - doc.age, 'LIMIT', 0, doc.limit)
  for _, n in ipairs(old) do
    local busy = redis.call('HEXISTS', p .. 'override', n) == 1
      or redis.call('HLEN', p .. 'conc:' .. n .. ':holders') > 0
      or redis.call('ZCARD', p .. 'conc:' .. n .. ':line') > 0
      or redis.call('ZCARD', p .. 'rate:' .. n .. ':line') > 0
    if not busy then
      redis.call('ZREM', p .. 'names', n)
      redis.call('HDEL', p .. 'waits', n)
      redis.call('HDEL', p .. 'spec', n)
      dropped = dropped + 1
    end
  end
  return dropped
end

ops.wake = function()
  local key = p .. 'wake'
  local pending = redis.call('GET', key)
  if pending and tonumber(pending) <= doc.at + 0.001 then return 0 end  -- (a millisecond: the mark's rounding)
  redis.call('SET', key, string.format('%.6f', doc.at), 'PX', math.max(math.floor((doc.at - doc.wall) * 1000), 0) + 2000)
  return 1
end

ops.woke = function()
  local key = p .. 'wake'
  local pending = redis.call('GET', key)
  if pending and tonumber(pending) <= doc.wall + (doc.slack or 0) then redis.call('DEL', key) end
  return 0
end

ops.show = function()
  local out = {}
  for i, n in ipairs(doc.names) do
    name = n
    local o = override()
    local spec = cjson.decode(redis.call('HGET', p .. 'spec', n) or '{}')
    local row = {name = n, kind = spec.kind, override = o ~= nil,
                 waits = tonumber(redis.call('HGET', p .. 'waits', n) or '0')}
    local per_second, burst, max = spec.per_second, spec.burst, spec.max
    if o then per_second, burst, max = o.per_second or per_second, o.burst or burst, o.max or max end
    row.per_second, row.burst, row.max = per_second, burst, max
    if per_second and burst then
      local _, _, used = rate_state(tonumber(per_second), tonumber(burst))
      row.tokens = math.max(tonumber(burst) - used, 0)
      row.parked = redis.call('ZCARD', p .. 'rate:' .. n .. ':line')
      row.kind = 'rate'
    end
    if max then
      row.holders = redis.call('HLEN', p .. 'conc:' .. n .. ':holders')
      row.parked = redis.call('ZCARD', p .. 'conc:' .. n .. ':line')
      row.tokens = math.max(tonumber(max) - row.holders, 0)
      row.kind = 'concurrency'
    end
    out[i] = row
  end
  return cjson.encode(out)
end

if not ops[doc.op] then return redis.error_reply('limits.lua: unknown operation ' .. tostring(doc.op)) end
-- the spec a definition declared for this name (what `show` reports when there is no override)
if doc.spec then redis.call('HSET', p .. 'spec', name, cjson.encode(doc.spec)) end
return ops[doc.op]()
