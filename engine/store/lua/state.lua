-- state.lua: every change of an instance, its indexes and its run, entered by an operation name.
--
-- Key families
--   KEYS[1]  <prefix>:{<id>}          hash: the instance (status, node, seq, attempt, c:<node> context...)
--   KEYS[2]  <prefix>:{<id>}:acts     list: its activity records, oldest first
--   KEYS[3]  <prefix>:timers          zset: id by the time its wait, await timeout or retry backoff ends
--   KEYS[4]  <prefix>:deadlines       zset: id by the time its in-flight step must have progressed by
--   KEYS[5]  broker queue (list) of the next step's message; KEYS[1] again when there is none
--   KEYS[6]  <prefix>:queued          zset: id by when its step was sent, until a worker starts it
--   <doc.runs><run>:<status>          set: the ids of a run in one status (built here from the run)
--   doc.gather.* (batch keys)         an instance placed at a gather node joins a batch (see join)
--
-- ARGV[1] is the operation: one JSON document {op, now, ttl, runs, ...named fields}.
-- ARGV[2..] are the stored documents it carries (compact JSON, zlib-compressed when long, so
-- they cannot ride inside ARGV[1]): doc.docs names them in order. Names used:
--   activity  the record appended on success   noop   the record appended when the expectation fails
--   data      initial data (create)            error  the error (fail, create)
--   result    the instance's result            message the next step's broker message
--   c:<node>  a context entry written on success
--   quorum    the quorum counted at an await node (signal): kept on the instance as field `quorum`
--   contribution  what an instance placed at a gather node brings to its batch
--
-- Operations (each one branch below; `expect` = seq/attempt/status compare-and-set):
--   create   a new instance with its first placement (no-op if the id exists); doc.retention (its
--            definition's retention_days in seconds) is kept as field `retention`: the TTL it gets
--            when it finishes, instead of doc.ttl
--            doc.shadow marks a shadow instance
--   create_many  many new instances in one call: `create` for each of doc.items in turn (see below)
--   advance  a step's (or a wait's, or an await timeout's) transition: context entry, seq + 1, next placement
--   signal   a signal to an awaiting instance: like advance, plus the marker of its key (doc.marker)
--            and its await's quorum (the `quorum` document: written when counted; dropped when
--            reached (doc.quorum_reached) or when the instance leaves the node)
--   refuse   only record a refused signal's activity (the instance changes in nothing else)
--   retry    another attempt of the current step: now (deadline) or after a backoff (timer)
--   fail     the instance fails with an error
--   park     a delivered step of a paused instance is set aside (resume re-sends it)
--   hold     a started step over its limit waits: status waiting, a `limit` timer, and the reason
--            (doc.place.reason, e.g. 'rate: brokerage') kept as field `waiting_for` and counted in
--            the run's `<run>:limited` hash until the instance leaves the wait (see settle)
--   control  an operator's pause, resume, retry (with context edits) or cancel
--   noop     only record a no-op activity (stale or duplicate delivery)
--   release  drop an index entry (timers/deadlines/queued) that no longer applies
--   chain    several of the operations above on one instance in one call, in order (see below)
--   start_many  a start of each of doc.items (a drained batch's steps), each on its own instance
--   start    a worker starts a step: read the instance (HGETALL) and, when that step is the
--            instance's queued one, move it from `queued` to `deadlines` (its timeout starts now);
--            when it is the instance's current step, record doc.carrier (the process running it)
--
-- Returns {'applied', final_status, seq[, batch, hint]} (batch: the batch a gathering instance joined;
-- hint '1' when no other live instance of its run could still arrive), {'stale', current_seq, current_status},
-- {'missing'}, {'created', status, seq}, {'exists'}, {'released'} or {'refused'}; start returns the hash as two
-- strings: the byte lengths of its fields and values in HGETALL order (each a little-endian unsigned
-- 32-bit integer), and all of them end to end ({} when the instance does not exist);
-- create_many returns one character per item: '1' created, '0' its id existed; chain and start_many
-- return the list of their items' replies.
--
-- create_many: doc holds what the instances share (workflow, version, run, ttl, runs, wall) and
-- doc.items one document per instance {id, now, place, gather, docs}; ARGV[2..] are every item's
-- stored documents, item after item, each item's in the order of its `docs`. KEYS[3], KEYS[4] and
-- KEYS[6] are the indexes as above (KEYS[1], KEYS[2], KEYS[5]: the first item's); item i's hash,
-- activity list and queue (its hash again when it has no message) are KEYS[4 + 3i .. 6 + 3i].
--
-- chain: doc.items the operations' own documents ({op, now, expect, place, docs...}, as each would be
-- called alone); ARGV[2..] every item's stored documents, item after item, each item's in the order
-- of its `docs`. KEYS as for one instance; KEYS[5] the queue of the item that sends a message (the
-- hash when none does). Each item runs exactly as its own call would, its own compare-and-set
-- expecting what the items before it left: the transitions a worker held for the reads-only steps
-- it ran (engine/runtime/pipeline.py) cost one script call instead of one each (the fixed cost of
-- a call -- the script's lookup, its ARGV, its top-level code -- is paid once).
--
-- An `advance`, and a chain whose items are all advances (the common case), are applied at once
-- (`advances` below): every item's compare-and-set first, against what the items before it
-- leave, then one command per key and kind of write (one RPUSH of the records, one HSET, one
-- HDEL...) instead of one per item and field; whatever that pass cannot do exactly as the calls
-- one by one would (a paused or waiting instance, a gather node, a limit, a stale item) goes item
-- by item. The script runs top to bottom on every call, so what the common calls need comes first:
-- a start returns before anything else is defined, an advance or chain applied at once before the
-- other operations are. `create_many` likewise writes a new live instance's own keys at once and
-- its entries in the shared keys (run sets, indexes, queues) with the other items'. doc.sequential
-- (set on the call's own document) always goes item by item: the reference the tests hold the
-- other to.
--
-- To add an operation: one function in `ops` below, defined under `if called.<name> then` (a
-- closure made for an operation not called costs every call), its name in `needs_instance` if it
-- acts on an existing instance under the compare-and-set, and one method in Python
-- (engine/store/instances.py) that builds its document.
local inst, acts, timers, deadlines, queue, queued = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local doc = cjson.decode(ARGV[1])
local op = doc.op
local blob = {}
for i, name in ipairs(doc.docs or {}) do blob[name] = ARGV[i + 1] end
-- The operations this call runs: its own, and a chain's items' (only theirs are defined below).
local called = {[op] = true}
if op == 'start_many' then called.start = true end
if op == 'chain' then
  for _, item in ipairs(doc.items) do called[item.op] = true end
end

-- The scores of the `deadlines` and `queued` indexes are whole seconds: a deadline rounded up (a
-- step's timeout is minutes; the sweeper finds it at most a second later), a sending time rounded
-- down (the reconciliation ages it by minutes). Redis keeps a small sorted set (up to 128 members, as
-- `deadlines` of a busy deployment and `queued` of a shallow queue are) as one flat list, and an
-- insertion reads the scores before its place: a whole number is read as it is stored, a fraction is
-- parsed again from its decimal text at every read (17 digits, Redis's dearest parse).
local function deadline_score(at) return math.ceil(tonumber(at)) end
local function sent_score(at) return math.floor(tonumber(at)) end

local start_step = nil  -- (defined only when called)
if called.start then
  -- The byte lengths `sizes` as little-endian unsigned 32-bit integers, end to end: Redis's
  -- `struct` packs them at once (numbers made text cost Redis a printf each); a Lua without it
  -- (an emulated Redis), or more lengths than unpack can hand over (Lua's C stack), builds the
  -- same bytes one by one.
  local function pack_sizes(sizes)
    if struct and #sizes <= 4000 then return struct.pack('<' .. string.rep('I4', #sizes), unpack(sizes)) end
    local out = {}
    for i, n in ipairs(sizes) do
      out[i] = string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256,
                           math.floor(n / 16777216) % 256)
    end
    return table.concat(out)
  end
  start_step = function()
    local h = redis.call('HGETALL', inst)
    if #h == 0 then return h end
    local f = {}
    for i = 1, #h, 2 do f[h[i]] = h[i + 1] end
    if f.status == 'running' and f.node == doc.node and tonumber(f.seq) == doc.seq
       and tonumber(f.attempt) == doc.attempt then
      if redis.call('ZREM', queued, f.id) == 1 then
        redis.call('ZADD', deadlines, deadline_score(tonumber(doc.now) + tonumber(f.step_timeout or '0')), f.id)
      end
      -- which process runs it (node:seq:attempt@host:pid): the sweeper checks that process's liveness mark
      if doc.carrier then redis.call('HSET', inst, 'carrier', doc.carrier) end
    end
    -- Two bulk strings instead of two per field: a client parses a reply element by element.
    local sizes = {}
    for i = 1, #h do sizes[i] = #h[i] end
    return {pack_sizes(sizes), table.concat(h)}
  end
end

-- A start alone (every step's first round trip) needs nothing defined below it.
if op == 'start' then return start_step() end
-- Many starts in one call (a worker's drained batch): each item {node, seq, attempt, carrier} a
-- start of its own instance, whose hash is KEYS[1] for the first item and KEYS[5 + i] for item i
-- after it; the reply is the list of the items' replies. One call's fixed cost instead of one each.
if op == 'start_many' then
  local replies = {}
  for i, item in ipairs(doc.items) do
    inst = i == 1 and KEYS[1] or KEYS[5 + i]
    item.now = doc.now
    doc = item
    replies[i] = start_step()
  end
  return replies
end

-- The terminal statuses, filled in from engine.instance.TERMINAL_STATUSES when the script is loaded.
local TERMINAL = {__TERMINAL__}

-- The statuses of a live instance: while a run has one, its metadata has no TTL.
local LIVE = {'running', 'waiting', 'awaiting', 'gathering', 'paused'}

-- Give `key` a TTL of `ttl` seconds unless it already lives longer (a run's keys outlive
-- each of its instances, whatever the retention of their definitions).
local function extend(key, ttl)
  local left = redis.call('TTL', key)
  if left == -1 or left < ttl then redis.call('EXPIRE', key, ttl) end
end

-- An instance of `run` has just finished in status `final`: it, its activities and its run's
-- set of that status expire a retention from now (its definition's, kept on the instance at
-- creation, else the global one); the run's metadata too when none of its instances is live.
local function finish(run, final)
  local runp = doc.runs .. run .. ':'
  local ttl = tonumber(redis.call('HGET', inst, 'retention') or doc.ttl)
  redis.call('EXPIRE', inst, ttl)
  redis.call('EXPIRE', acts, ttl)
  extend(runp .. final, ttl)
  local live = {}
  for i, s in ipairs(LIVE) do live[i] = runp .. s end
  if redis.call('EXISTS', unpack(live)) == 0 then extend(doc.runs .. run, ttl) end
end

-- The instance's entries in the indexes, in step with its placement `p` (status `final`; `queues`
-- and `times` as settle reads them from `p`; `wall` its sending time; `woke`: it had a wake time;
-- `sent`: it had a step timeout, kept from its sending until its next change).
local function reindex(id, final, p, queues, times, wall, woke, sent)
  if final == 'running' and p.deadline then
    redis.call('ZADD', deadlines, deadline_score(p.deadline), id)
  else
    redis.call('ZREM', deadlines, id)
  end
  -- sent, not started: no deadline until a worker starts it (a backlog is not a loss)
  if queues then
    redis.call('ZADD', queued, sent_score(wall), id)
  elseif sent then  -- (an instance without a step timeout is not queued: both are set together)
    redis.call('ZREM', queued, id)
  end
  if times then
    redis.call('ZADD', timers, p.timer, id)
  elseif woke then  -- (an instance without a wake time is in no timer: both are set together)
    redis.call('ZREM', timers, id)
  end
end

-- Advances at once: `items` (operation documents, each `advance`) and `blobs` (each one's stored
-- documents by name) applied to the instance exactly as one call each, in turn, would leave it,
-- with one command per key and kind of write instead of one per item and field. A step's
-- transition and the reads-only steps' transitions a worker held before it (a chain) cost a
-- fixed handful of commands. Returns each item's reply, or nil (nothing written) when the
-- instance is not running or an item would not apply as its own call would: its compare-and-set
-- fails against what the items before it leave, or it needs what only `settle` does (a gather
-- node, a limit's wait, a pause); the items then go one by one. Defined only when an advance is called.
local advances = nil
if called.advance then advances = function(items, blobs)
  local cur = redis.call('HMGET', inst, 'seq', 'status', 'attempt', 'id', 'run', 'node',
                        'error', 'batch', 'wake_at', 'quorum', 'carrier', 'step_timeout')
  local status = cur[2]
  if not cur[4] or status ~= 'running' then return nil end
  -- every item's compare-and-set against what the items before it leave
  local seq, attempt, final = tonumber(cur[1]), tonumber(cur[3]), status
  for i, item in ipairs(items) do
    local expect, p = item.expect or {}, item.place or {}
    local allowed = false
    for _, s in ipairs(expect.statuses or {}) do
      if s == final then allowed = true end
    end
    if not allowed or (expect.seq and expect.seq ~= seq) or (expect.attempt and expect.attempt ~= attempt) then
      return nil
    end
    final = p.status or final
    if item.gather or p.reason or final == 'gathering' or final == 'paused' or (i < #items and final ~= 'running') then
      return nil
    end
    seq, attempt = seq + 1, 1
  end
  -- what each item would write, folded: the last value of each field (false: deleted)
  local id, run_id = cur[4], cur[5]
  local has = {error = cur[7], batch = cur[8], wake_at = cur[9], quorum = cur[10], carrier = cur[11],
               step_timeout = cur[12]}
  local fields, names = {}, {}
  local function put(name, value)
    if fields[name] == nil then names[#names + 1] = name end
    fields[name] = value
  end
  local records, sends, replies = {}, {}, {}
  local node = cur[6]
  local last, queues, times
  seq, final = tonumber(cur[1]), status
  for i, item in ipairs(items) do
    local p, b = item.place or {}, blobs[i]
    if b.activity then records[#records + 1] = b.activity end
    for name, value in pairs(b) do
      if string.sub(name, 1, 2) == 'c:' then put(name, value) end
    end
    for _, name in ipairs(item.forget or {}) do put('c:' .. name, false) end
    seq = seq + 1
    if has.error then put('error', false) end
    has.error = nil
    if item.carrier == '' then
      if has.carrier then put('carrier', false) end
      has.carrier = nil
    elseif item.carrier then
      put('carrier', item.carrier)
      has.carrier = true
    end
    -- settle's placement
    local before = final
    final = p.status or final
    if final ~= before then put('status', final) end
    put('updated_at', item.now)
    if p.node then
      if node and p.node ~= node and has.quorum then
        put('quorum', false)
        has.quorum = nil
      end
      put('node', p.node)
      node = p.node
    end
    if b.result then put('result', b.result) end
    queues = final == 'running' and p.queued
    if queues then
      put('step_timeout', p.queued)
      has.step_timeout = true
    elseif has.step_timeout then
      put('step_timeout', false)
      has.step_timeout = nil
    end
    times = (final == 'running' or final == 'waiting' or final == 'awaiting') and p.timer
    if times then
      put('wake_at', p.timer)
      put('timer', p.timer_kind)
      has.wake_at = true
    elseif has.wake_at then
      put('wake_at', false)
      put('timer', false)
      has.wake_at = nil
    end
    local terminal = TERMINAL[final] == true
    if terminal then put('finished_at', item.now) end
    if terminal then
      put('inflight', '0')
    elseif p.inflight ~= nil then
      put('inflight', p.inflight and '1' or '0')
    end
    if has.batch then put('batch', false) end
    has.batch = nil
    if final ~= 'running' and has.carrier then put('carrier', false) end
    if final ~= 'running' then has.carrier = nil end
    if final == 'succeeded' and p.drop then
      for _, name in ipairs(p.drop) do put('c:' .. name, false) end
    end
    if final == 'running' and b.message then sends[#sends + 1] = {p.front, b.message} end
    replies[i] = {'applied', final, tostring(seq)}
    last = item
  end
  put('seq', seq)
  put('attempt', 1)
  -- the writes: one per key and kind
  if #records > 0 then redis.call('RPUSH', acts, unpack(records)) end
  local set, gone = {}, {}
  for _, name in ipairs(names) do
    local value = fields[name]
    if value then
      set[#set + 1] = name
      set[#set + 1] = value
    else
      gone[#gone + 1] = name
    end
  end
  -- deletes first: the hash never holds more fields than before or after (a hash's table, once grown
  -- past a power of two, stays grown)
  if #gone > 0 then redis.call('HDEL', inst, unpack(gone)) end
  redis.call('HSET', inst, unpack(set))
  doc = last  -- (its ttl and runs prefix: finish reads them)
  local p = last.place or {}
  if final ~= status then
    redis.call('SMOVE', doc.runs .. run_id .. ':' .. status, doc.runs .. run_id .. ':' .. final, id)
  end
  reindex(id, final, p, queues, times, last.wall, cur[9], cur[12])
  if TERMINAL[final] then finish(run_id, final) end
  for _, send in ipairs(sends) do
    redis.call(send[1] and 'RPUSH' or 'LPUSH', queue, send[2])
  end
  return replies
end end

-- The common case first: an advance, or a chain whose items are all advances, applied at once
-- (`advances`) returns here, before the definitions below are made (each closure made costs every
-- call that passes its definition: 7 % of a morning's script instructions went to ones not used).
-- A chain binds each item's stored documents (ARGV[2..], item after item) to its own blob.
local chain_blobs = nil
if op == 'chain' then
  chain_blobs = {}
  local arg, all_advance = 2, not doc.sequential
  for i, item in ipairs(doc.items) do
    chain_blobs[i] = {}
    for _, name in ipairs(item.docs) do
      chain_blobs[i][name] = ARGV[arg]
      arg = arg + 1
    end
    if item.op ~= 'advance' then all_advance = false end
  end
  if all_advance and advances then
    local replies = advances(doc.items, chain_blobs)
    if replies then return replies end
  end
elseif op == 'advance' and not doc.sequential then
  local replies = advances({doc}, {blob})
  if replies then return replies[1] end
end

-- Write every context entry the operation carries.
local function write_context()
  for name, value in pairs(blob) do
    if string.sub(name, 1, 2) == 'c:' then redis.call('HSET', inst, name, value) end
  end
end

-- Record an activity.
local function record(name)
  if blob[name] then redis.call('RPUSH', acts, blob[name]) end
end

-- The live statuses of an instance that could still reach a gather node (gathering ones have arrived).
local COULD_ARRIVE = {'running', 'waiting', 'awaiting', 'paused'}
local joined = nil
-- The node the instance was at before the operation (nil at creation): leaving it ends its quorum.
local before_node = nil
-- Which optional fields the instance had before the operation (read with the compare-and-set's
-- HMGET; none at creation): a field it did not have is not deleted (no command for nothing).
local had = {}

-- A gathering instance contributes to its group's open batch, or opens the group's next one
-- (generation + 1). doc.gather: name, group, close_at, close_early, service, action, node,
-- workflow, version and the batch keys (prefix, gathers, batches, open). The batch closes at
-- the earliest close time of its members.
local join = nil  -- defined only where an instance can reach a gather node (see ops below)
if doc.gather or doc.items then
  join = function(id, run)
    local g = doc.gather
    local bp = g.prefix
    local latest = redis.call('HGET', g.gathers, g.name)
    local bid = latest
    if not latest or redis.call('HGET', bp .. latest, 'status') ~= 'open' then
      local gen = 1
      if latest then gen = tonumber(string.match(latest, '#(%d+)$')) + 1 end
      bid = g.name .. '#' .. gen
      redis.call('HSET', g.gathers, g.name, bid)
      redis.call('HSET', bp .. bid, 'id', bid, 'name', g.name, 'group', g.group, 'generation', gen,
                 'status', 'open', 'node', g.node, 'workflow', g.workflow, 'version', g.version,
                 'service', g.service, 'action', g.action, 'opened_at', doc.now, 'close_at', g.close_at,
                 'close_early', g.close_early and '1' or '0', 'attempt', 1, 'members', 0)
      redis.call('ZADD', g.batches, doc.now, bid)
      redis.call('ZADD', g.open, g.close_at, bid)
      redis.call('RPUSH', bp .. bid .. ':acts', cjson.encode({event = 'opened', at = tonumber(doc.now), by = id}))
    elseif tonumber(g.close_at) < tonumber(redis.call('HGET', bp .. bid, 'close_at')) then
      redis.call('HSET', bp .. bid, 'close_at', g.close_at)
      redis.call('ZADD', g.open, g.close_at, bid)
    end
    if redis.call('HSETNX', bp .. bid .. ':inputs', id, blob.contribution or 'null') == 1 then
      redis.call('RPUSH', bp .. bid .. ':members', id)
      redis.call('HINCRBY', bp .. bid, 'members', 1)
    end
    redis.call('SADD', bp .. bid .. ':runs', run)
    redis.call('HSET', inst, 'batch', bid)
    local hint = '1'
    for _, s in ipairs(COULD_ARRIVE) do
      if redis.call('SCARD', doc.runs .. run .. ':' .. s) > 0 then hint = '0' end
    end
    joined = {bid, hint}
  end
end

-- Move the instance to its placement and keep every index in step with it.
-- id, run: the instance's; status: its status before (nil at creation); hold: true when a
-- paused instance stays paused (the step in flight came back). Returns the final status.
local function settle(id, run, status, hold)
  local p = doc.place or {}
  local now = doc.now
  local runp = doc.runs .. run .. ':'
  local final = p.status or status
  local terminal = TERMINAL[final] == true
  -- A paused instance records the step that was in flight but goes no further.
  local held = hold and status == 'paused' and not terminal
  if held then final = 'paused' end

  -- The fields the placement writes, in one HSET (other writes and deletes touch other fields).
  local fields = {'updated_at', now}
  local function set(name, value)
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  if status == nil then
    redis.call('SADD', runp .. final, id)
    set('status', final)
  elseif final ~= status then
    redis.call('SMOVE', runp .. status, runp .. final, id)
    set('status', final)
  end
  if p.node then
    if before_node and p.node ~= before_node and (had.quorum or blob.quorum) then
      redis.call('HDEL', inst, 'quorum')
    end
    set('node', p.node)
  end
  if blob.result then set('result', blob.result) end
  -- a sent step's timeout, kept until a worker starts it (see start): no field once nothing is sent
  local queues = final == 'running' and p.queued
  if queues then set('step_timeout', p.queued) end
  local times = (final == 'running' or final == 'waiting' or final == 'awaiting') and p.timer
  if times then
    set('wake_at', p.timer)
    set('timer', p.timer_kind)
  end
  if terminal then set('finished_at', now) end
  if terminal or held then
    set('inflight', '0')  -- finished, or a step of a paused instance came back: nothing is in flight any more
  elseif p.inflight ~= nil then
    set('inflight', p.inflight and '1' or '0')
  end
  redis.call('HSET', inst, unpack(fields))
  if not queues and had.step_timeout then redis.call('HDEL', inst, 'step_timeout') end
  if final == 'gathering' and doc.gather then
    join(id, run)
  elseif final ~= 'gathering' and final ~= 'paused' and had.batch then
    redis.call('HDEL', inst, 'batch')
  end
  -- waiting for a limit: the reason on the instance and counted in its run while it waits
  if status == 'waiting' or p.reason then
    local was = redis.call('HGET', inst, 'waiting_for')
    if not was then was = nil end
    local reason = nil
    if final == 'waiting' then reason = p.reason or was end
    if was ~= reason then
      if was then redis.call('HINCRBY', runp .. 'limited', was, -1) end
      if reason then
        redis.call('HSET', inst, 'waiting_for', reason)
        redis.call('HINCRBY', runp .. 'limited', reason, 1)
        redis.call('EXPIRE', runp .. 'limited', doc.ttl)
      else
        redis.call('HDEL', inst, 'waiting_for')
      end
    end
  end

  reindex(id, final, p, queues, times, doc.wall, had.wake_at, had.step_timeout)
  -- a paused instance keeps its wake time so that resume parks it again until then
  if not times and had.wake_at and final ~= 'paused' then redis.call('HDEL', inst, 'wake_at', 'timer') end
  -- no step of it runs any more: no process carries it
  if final ~= 'running' and (had.carrier or (doc.carrier and doc.carrier ~= '')) then
    redis.call('HDEL', inst, 'carrier')
  end

  if final == 'succeeded' and p.drop and #p.drop > 0 then
    local names = {}
    for i, node in ipairs(p.drop) do names[i] = 'c:' .. node end
    redis.call('HDEL', inst, unpack(names))
  end
  if terminal then
    finish(run, final)
  else
    -- only a finished instance has a TTL (a retry or resume brings it back); a new one's activity
    -- list may be a leftover of an expired instance of the same id
    if status == nil then
      redis.call('PERSIST', acts)
    elseif TERMINAL[status] then
      redis.call('PERSIST', inst)
      redis.call('PERSIST', acts)
    end
  end
  if final == 'running' and blob.message then
    -- p.front: to the head of the queue (the end a worker takes from), ahead of what waits there
    redis.call(p.front and 'RPUSH' or 'LPUSH', queue, blob.message)
  end
  return final
end

-- The operations. Those marked `needs_instance` run after the compare-and-set (doc.expect:
-- seq, attempt, statuses) has passed and the activity is recorded; they return the new seq.
-- Only the operation called (and those it calls) is defined: a closure made for nothing costs
-- every call of the script (about 0.15 us each).
local ops = {}
local needs_instance = {advance = true, signal = true, retry = true, fail = true, park = true, hold = true,
                        control = true}
-- Operations under which a paused instance stays paused (the step in flight came back).
local holds_pause = {advance = true, retry = true}

if called.release then
  ops.release = function()
    local index = deadlines
    if doc.index == 'timers' then index = timers elseif doc.index == 'queued' then index = queued end
    redis.call('ZREM', index, doc.id)
    return {'released'}
  end
end

if called.start then ops.start = start_step end

if called.noop then
  ops.noop = function()
    if redis.call('EXISTS', inst) == 1 then
      record('noop')
      redis.call('HINCRBY', inst, 'noops', 1)
    end
    return {'stale'}
  end
end

if called.create or called.create_many then
  ops.create = function()
    if redis.call('EXISTS', inst) == 1 then return {'exists'} end
    redis.call('HSET', inst, 'id', doc.id, 'workflow', doc.workflow, 'version', doc.version, 'run', doc.run,
               'seq', 1, 'attempt', 1, 'data', blob.data, 'created_at', doc.now)
    if doc.retention then redis.call('HSET', inst, 'retention', doc.retention) end
    if blob.error then redis.call('HSET', inst, 'error', blob.error) end
    if doc.shadow then redis.call('HSET', inst, 'shadow', '1') end
    record('activity')
    local final = settle(doc.id, doc.run, nil, false)
    if joined then return {'created', final, '1', joined[1], joined[2]} end
    return {'created', final, '1'}
  end
end

-- Each item is created exactly as `create` alone would leave it: inst, acts, queue, doc, blob and
-- joined are rebound to the item's before it runs (doc falls back on the shared fields). An item
-- that starts live, off any gather node and limit (the common case) writes its own keys at once
-- (EXISTS, one HSET, its record) and leaves its entries in the shared keys (its run's status set,
-- the indexes, its queue) to be written with the other items' in one command per key; before an
-- item that takes `create` itself, and at the end, those are written (`flush`), in order.
if called.create_many then
  -- `cmd key values...` in calls of at most 1000 values (Lua's unpack has a limit; even: ZADD takes pairs)
  local function many(cmd, key, values)
    for low = 1, #values, 1000 do
      redis.call(cmd, key, unpack(values, low, math.min(#values, low + 999)))
    end
  end
  ops.create_many = function()
    local shared = doc
    local inherit = {__index = shared}
    local replies = {}
    local arg = 2
    local sets, set_keys, pushes = {}, {}, {}
    local index = {[deadlines] = {}, [queued] = {}, [timers] = {}}
    local unindex = {[deadlines] = {}, [queued] = {}}
    local function flush()
      for _, key in ipairs(set_keys) do many('SADD', key, sets[key]) end
      for key, values in pairs(index) do
        if #values > 0 then many('ZADD', key, values) end
        index[key] = {}
      end
      for key, values in pairs(unindex) do
        if #values > 0 then many('ZREM', key, values) end
        unindex[key] = {}
      end
      for _, run in ipairs(pushes) do many(run[1], run[2], run[3]) end
      sets, set_keys, pushes = {}, {}, {}
    end
    local function later(list, ...)
      for _, value in ipairs({...}) do list[#list + 1] = value end
    end
    for i, item in ipairs(shared.items) do
      local k = 4 + 3 * i
      inst, acts, queue = KEYS[k], KEYS[k + 1], KEYS[k + 2]
      doc = setmetatable(item, inherit)
      blob = {}
      for _, name in ipairs(item.docs) do
        blob[name] = ARGV[arg]
        arg = arg + 1
      end
      joined = nil
      local p = doc.place or {}
      local final = p.status
      if shared.sequential or not final or TERMINAL[final] or final == 'gathering' or final == 'paused' or p.reason
         or doc.gather then
        flush()
        replies[i] = ops.create()[1] == 'created' and '1' or '0'
      elseif redis.call('EXISTS', inst) == 1 then
        replies[i] = '0'
      else
        local id, now = doc.id, doc.now
        local fields = {'id', id, 'workflow', doc.workflow, 'version', doc.version, 'run', doc.run, 'seq', 1,
                        'attempt', 1, 'data', blob.data, 'created_at', now, 'updated_at', now, 'status', final}
        if doc.retention then later(fields, 'retention', doc.retention) end
        if blob.error then later(fields, 'error', blob.error) end
        if doc.shadow then later(fields, 'shadow', '1') end
        if p.node then later(fields, 'node', p.node) end
        if blob.result then later(fields, 'result', blob.result) end
        local queues = final == 'running' and p.queued
        if queues then later(fields, 'step_timeout', p.queued) end
        local times = (final == 'running' or final == 'waiting' or final == 'awaiting') and p.timer
        if times then later(fields, 'wake_at', p.timer, 'timer', p.timer_kind) end
        if p.inflight ~= nil then later(fields, 'inflight', p.inflight and '1' or '0') end
        redis.call('HSET', inst, unpack(fields))
        record('activity')
        redis.call('PERSIST', acts)  -- (a leftover of an expired instance of the same id)
        local set = doc.runs .. doc.run .. ':' .. final
        if not sets[set] then
          sets[set] = {}
          set_keys[#set_keys + 1] = set
        end
        later(sets[set], id)
        if final == 'running' and p.deadline then later(index[deadlines], deadline_score(p.deadline), id)
        else later(unindex[deadlines], id) end
        if queues then later(index[queued], sent_score(doc.wall), id) else later(unindex[queued], id) end
        if times then later(index[timers], p.timer, id) end
        if final == 'running' and blob.message then
          local cmd, last = p.front and 'RPUSH' or 'LPUSH', pushes[#pushes]
          if last and last[1] == cmd and last[2] == queue then later(last[3], blob.message)
          else pushes[#pushes + 1] = {cmd, queue, {blob.message}} end
        end
        replies[i] = '1'
      end
    end
    flush()
    return table.concat(replies)
  end
end

if called.advance or called.signal then
  ops.advance = function(seq)
    write_context()
    -- entries no node after this one reads (the definition's drop_after_use): deleted now
    if doc.forget then
      local fields = {}
      for i, name in ipairs(doc.forget) do fields[i] = 'c:' .. name end
      redis.call('HDEL', inst, unpack(fields))
    end
    redis.call('HSET', inst, 'seq', seq + 1, 'attempt', 1)
    if had.error then redis.call('HDEL', inst, 'error') end
    return seq + 1
  end
end

-- A signal: advance, and remember its key (an instance hash field, set to the new seq) so that
-- the same key sent again is found applied.
if called.signal then
  ops.signal = function(seq)
    seq = ops.advance(seq)
    if doc.marker then redis.call('HSET', inst, doc.marker, seq) end
    if blob.quorum then
      redis.call('HSET', inst, 'quorum', blob.quorum)  -- counted: the instance awaits more principals
    elseif doc.quorum_reached then
      redis.call('HDEL', inst, 'quorum')  -- (leaving the node drops it too: see settle)
    end
    return seq
  end
end

-- A refused signal: its record only, when the instance exists (no seq, status or index changes).
if called.refuse then
  ops.refuse = function()
    if redis.call('EXISTS', inst) == 1 then record('activity') end
    return {'refused'}
  end
end

if called.retry then
  ops.retry = function(seq)
    redis.call('HSET', inst, 'attempt', doc.attempt)
    return seq
  end
end

if called.fail then
  ops.fail = function(seq)
    redis.call('HSET', inst, 'error', blob.error)
    return seq
  end
end

if called.park then
  ops.park = function(seq)
    return seq  -- settle keeps it paused with nothing in flight
  end
end

if called.hold then
  ops.hold = function(seq)
    return seq  -- settle makes it wait for its limit (doc.place: status, timer, reason)
  end
end

if called.control then
  ops.control = function(seq)
    write_context()
    if doc.attempt then redis.call('HSET', inst, 'attempt', doc.attempt) end
    if had.error then redis.call('HDEL', inst, 'error') end
    return seq
  end
end

-- Run operation `name` on the instance (doc, blob and the keys bound to its own) and return its
-- reply. Those in `needs_instance` run only when the compare-and-set passes.
local function run(name)
  if not ops[name] then return redis.error_reply('state.lua: unknown operation ' .. tostring(name)) end
  if not needs_instance[name] then return ops[name]() end
  joined = nil
  local cur = redis.call('HMGET', inst, 'seq', 'status', 'attempt', 'id', 'run', 'node',
                        'error', 'batch', 'wake_at', 'quorum', 'carrier', 'step_timeout')
  if not cur[4] then return {'missing'} end
  local seq, status, attempt, id, run_id = tonumber(cur[1]), cur[2], tonumber(cur[3]), cur[4], cur[5]
  before_node = cur[6]
  had = {error = cur[7], batch = cur[8], wake_at = cur[9], quorum = cur[10], carrier = cur[11],
         step_timeout = cur[12]}
  local expect = doc.expect or {}
  local allowed = false
  for _, s in ipairs(expect.statuses or {}) do
    if s == status then allowed = true end
  end
  if (expect.seq and expect.seq ~= seq) or (expect.attempt and expect.attempt ~= attempt) or not allowed then
    if blob.noop then
      record('noop')
      redis.call('HINCRBY', inst, 'noops', 1)
    end
    return {'stale', tostring(seq), status}
  end
  record('activity')
  seq = ops[name](seq)
  if doc.carrier == '' then
    if had.carrier then redis.call('HDEL', inst, 'carrier') end
  elseif doc.carrier then
    redis.call('HSET', inst, 'carrier', doc.carrier)
  end
  local final = settle(id, run_id, status, holds_pause[name] == true)
  if joined then return {'applied', final, tostring(seq), joined[1], joined[2]} end
  return {'applied', final, tostring(seq)}
end

-- A chain that `advances` could not apply at once: each of doc.items (an operation's whole document)
-- in turn on the one instance, exactly as its own call would run it; doc and blob are rebound to the
-- item's (chain_blobs, bound above) before it runs. KEYS[5]: the queue of the item with a message.
-- Returns the items' replies, in order.
if op == 'chain' then
  ops.chain = function()
    local replies = {}
    for i, item in ipairs(doc.items) do
      doc, blob = item, chain_blobs[i]
      replies[i] = run(item.op)
    end
    return replies
  end
end

return run(op)
