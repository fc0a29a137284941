"""The Redis hub's keys and Lua scripts: the one place where order is assigned (DESIGN.md §4).

The keys are grouped in **partitions**, each under its own prefix: one partition (the
prefix, default ``trio-obs:``) on one Redis or a Sentinel-managed one; on a Redis Cluster
:data:`CLUSTER_PARTITIONS`, each prefix carrying a hash tag (``trio-obs:{p3-12}:``) whose
slots are spread over the whole slot range, so every key of a partition lives in one slot
and the partitions spread over the shards. An execution lives in one partition
(:meth:`Layout.of`); ``global`` explicitly in the first. Every script works on one
partition, so it runs atomically on one shard. Keys of a partition, under its prefix:

- ``epoch`` -- a random id naming the history (created with ``SET NX``; SPEC §10);
- ``meta`` -- a hash: ``pos``, the position of the newest fan-out entry, and ``activity``;
- ``fan`` -- the fan-out stream every node reads: entry ``<pos>-0``, first field ``b`` (the
  token of the batch that wrote it, so that an entry rewritten after a rollback is told
  from the one a node saw), then ``k`` (stream key), ``s`` (seq) and the fields of the
  execution stream; or ``k`` and ``x`` (the stream ``k`` was deleted: retention); or ``e``
  (the epoch changed: a rollback was found); an event's entry has its ``p`` too; trimmed
  with ``MAXLEN ~``;
- ``x:<key>`` -- an execution's stream: entry ``<seq>-0`` per event, fields ``p`` (its
  fan-out position: the event's ``pos`` on ``all``, SPEC §14; not on a Redis Cluster, whose
  ``all`` has no single order) and with it ``b`` (its fan-out entry's token, for the fence
  below), ``d`` (the event's unstamped JSON, see :mod:`trio_obs.core.stamp`), ``t``
  (``=``task id), ``l`` (tool), ``r`` (assertions passed and total, for
  ``runningPassRate``), ``c`` (a ``global`` copy of an ``execution:status``);
- ``c:<key>`` -- its counters: ``seq``, ``n`` (events), ``first``/``last`` timestamps,
  ``status``, ``at``/``ap`` (assertions total/passed); the execution rules' state
  (``open`` spans, the seqs of the root's ``started`` and closing status, the ``held``
  closing status with its ``heldts``, ``heldst`` and ``helder``, ``1`` if it is an error);
  its summary (``name``, ``namesince``, ``conv``, ``agents`` as a JSON array,
  ``mc``/``tc``/``er`` model calls, tool calls and errors, ``ti``/``to`` tokens,
  ``mi:<model>``/``mo:<model>`` per model); ``sv`` 1 once its spans are kept as below;
- ``s:<key>`` -- its spans (SPEC §12): ``r<span id>``, the span's record as JSON (kind,
  tool name, task, agent, model, the seqs of its opening and closing, closed lost?); the
  earlier scripts' one field per fact (``t``, ``T``, ``K``...) are made records when a batch
  first touches the execution;
- ``active`` / ``touched`` -- sorted sets of executions by last write (a counter, and
  Redis's clock in seconds, for retention and for ordering across partitions);
- ``idem:<key>`` -- the answer of an ``Idempotency-Key`` (this partition's part of it);
- ``health`` -- written by the health check (a write, with a short expiry).

An optional value travels as ``""`` (absent) or ``"=" + value``, so an empty string
stays distinct from none. Every script is called with ``KEYS[1]`` = the partition's
``epoch`` key (a Redis Cluster client routes by it) and ``ARGV[1]`` = the prefix.

**The fence** (rollbacks are never silent, SPEC §10): a node passes the newest fan-out
entry it knows of (one it read, one its own batch wrote, or one whose event it read from an
execution stream for a client: position and token). If the partition no longer holds it --
its position is beyond the newest one, or another batch's token stands there -- Redis lost
writes that a client may have seen or been acknowledged (a failover to a replica that had
not received them): the script starts a new epoch and says so in the fan-out, so every node
tells its clients (``observability:reset``). So it does when Redis names an epoch the node
has left (a second failover, to a replica promoted before it had synced, brings an older
copy back): an epoch, once left, never comes back.
"""

from __future__ import annotations

import zlib
from typing import Final

import attrs

from ..core.protocol import GLOBAL

CLUSTER_PARTITIONS: Final = 16
"""Partitions (fan-out streams) on a Redis Cluster: every node reads all of them."""
SLOTS: Final = 16384
"""Hash slots of a Redis Cluster."""

_FENCE: Final = r"""
-- ARGV[2] epoch candidate, ARGV[3] the node's epoch (then, comma-separated, the epochs it
-- left), ARGV[4] fence position, ARGV[5] its token, ARGV[6] fan-out maxlen. Sets `epoch`
-- and `fan`.
local P = ARGV[1]
local fan = P .. 'fan'
local epoch = redis.call('SET', P .. 'epoch', ARGV[2], 'NX', 'GET') or ARGV[2]
local mine, left = ARGV[3], ''
local comma = string.find(mine, ',', 1, true)
if comma then mine, left = string.sub(mine, 1, comma - 1), string.sub(mine, comma) .. ',' end
-- An epoch the node left is back (a replica promoted before it had synced): a stale copy.
local lost = string.find(left, ',' .. epoch .. ',', 1, true) ~= nil
local fence = tonumber(ARGV[4])
if not lost and fence > 0 and epoch == mine then
  lost = (tonumber(redis.call('HGET', P .. 'meta', 'pos')) or 0) < fence
  if not lost then
    local found = redis.call('XRANGE', fan, fence .. '-0', fence .. '-0')
    lost = found[1] ~= nil and found[1][2][2] ~= ARGV[5]
  end
end
if lost then
  epoch = ARGV[2]
  redis.call('SET', P .. 'epoch', epoch)
  local at = redis.call('HINCRBY', P .. 'meta', 'pos', 1)
  redis.call('XADD', fan, 'MAXLEN', '~', ARGV[6], at .. '-0', 'b', epoch, 'e', epoch)
end
"""

PUBLISH: Final = (
    "#!lua\n"
    + _FENCE
    + r"""
-- ARGV[7] batch token, ARGV[8] idempotency key ('' = none), ARGV[9] its ttl, ARGV[10] '1'
-- to write each event's position `p`, ARGV[11] '1' when `global` lives in this partition,
-- ARGV[12] the facts as a JSON array (one array per entry: see FACT below), then the
-- unstamped JSON of each.
-- The rules of core/ledger.py and core/spanrules.py, on what the keys above keep, so that
-- every node decides alike (SPEC §12: one start and one end per span; the root's closing
-- status held while spans are open).
-- -> {epoch, false, the fan position before the first entry, (seq, x, y, agent, more) per
--    fact} or {epoch, earlier answer}. seq < 0: not stored, answered with -seq (the event
--    it repeats); x, y: pass count and total (assertions), else tool and task;
--    agent: the agent filled in (JSON); more: false or {copy seq, released seq, released
--    JSON, its copy seq} (0: none).
local token, idem = ARGV[7], ARGV[8]
if idem ~= '' then
  local seen = redis.call('GET', P .. 'idem:' .. idem)
  if seen then
    -- A write, so that a WAIT after this call covers the batch the answer names.
    redis.call('SET', P .. 'idem:' .. idem, seen, 'KEEPTTL')
    return {epoch, seen}
  end
end

local NUMBERS = {'seq', 'n', 'at', 'ap', 'open', 'started', 'ended', 'sv'}
local TEXTS = {'first', 'last', 'status', 'held', 'heldts', 'heldst', 'helder', 'name',
               'namesince', 'conv', 'agents'}
local FIELDS = {unpack(NUMBERS)}
for _, name in ipairs(TEXTS) do FIELDS[#FIELDS + 1] = name end
local counters, records, dirty = {}, {}, {}
-- The span records of the earlier versions of this script, a hash field per fact and span:
-- tool uses `t<id>` (tool) and `T<id>` (task), skills `K<id>` (task); later `k` kind,
-- `n` tool name, `T` task, `g` agent, `m` model, `O`/`C` seqs, `X` 'l' if lost. Made records
-- `r<id>` (kept where one was written since) the first time a batch touches their execution.
local OLD = {t = 'n', T = 'T', K = 'T', k = 'k', n = 'n', g = 'g', m = 'm', O = 'O', C = 'C',
             X = 'X'}
local function upgrade(key)
  local s = P .. 's:' .. key
  local flat = redis.call('HGETALL', s)
  local made, newer, old = {}, {}, {}
  for j = 1, #flat, 2 do
    local letter, id, v = string.sub(flat[j], 1, 1), string.sub(flat[j], 2), flat[j + 1]
    local to = OLD[letter]
    if letter == 'r' then newer[id] = true
    elseif to then
      old[#old + 1] = flat[j]
      local r = made[id] or {}
      made[id] = r
      if letter == 't' then r.k = 'tool' elseif letter == 'K' then r.k = 'skill' end
      if to == 'O' or to == 'C' then v = tonumber(v) or 0 end
      if (v ~= '' and v ~= 0 and (to ~= 'X' or v == 'l')) or to == 'k' then r[to] = v end
    end
  end
  local h = {}
  for id, r in pairs(made) do
    if r.k and not newer[id] then  -- a span was known by its kind (or its tool or skill)
      h[#h + 1] = 'r' .. id; h[#h + 1] = cjson.encode(r)
      if #h >= 1000 then redis.call('HSET', s, unpack(h)); h = {} end
    end
  end
  if #h > 0 then redis.call('HSET', s, unpack(h)) end
  for j = 1, #old, 1000 do redis.call('HDEL', s, unpack(old, j, math.min(j + 999, #old))) end
end
local function counter(key)
  local c = counters[key]
  if not c then
    local v = redis.call('HMGET', P .. 'c:' .. key, unpack(FIELDS))
    c = {add = {}}
    for j, name in ipairs(NUMBERS) do c[name] = tonumber(v[j]) or 0 end
    for j, name in ipairs(TEXTS) do c[name] = v[#NUMBERS + j] end
    if c.sv == 0 and c.seq > 0 then upgrade(key) end
    c.sv = 1
    counters[key] = c
  end
  return c
end
local function record(key, id)
  -- A span's record: {k kind, n tool name, T task, g agent (JSON), m model, O/C seqs of its
  -- opening/closing, X 'l' if it closed lost}; false if the span is not known.
  local mine = records[key]
  if not mine then mine = {}; records[key] = mine end
  local r = mine[id]
  if r == nil then
    local v = redis.call('HGET', P .. 's:' .. key, 'r' .. id)
    r = v and cjson.decode(v) or false
    mine[id] = r
  end
  return r
end
local function keep(key, id, r)
  records[key][id] = r
  if not dirty[key] then dirty[key] = {} end
  dirty[key][id] = true
end
local function count(c, field, n) c.add[field] = (c.add[field] or 0) + n end
local function count_span(c, kind)
  if kind == 'tool' then count(c, 'tc', 1) elseif kind == 'llm' then count(c, 'mc', 1) end
end
local function name_agent(c, name, first)
  local list = c.agents and cjson.decode(c.agents) or {}
  for _, a in ipairs(list) do if a == name then return end end
  if first then table.insert(list, 1, name) else list[#list + 1] = name end
  c.agents = cjson.encode(list)
end

local entries, order, answer, out = {}, {}, {}, {epoch, false, 0}
local function add(key, data, ts, task, tool, rate, copy)
  local c = counter(key)
  c.seq = c.seq + 1
  c.n = c.n + 1
  if not c.first then c.first = ts end
  c.last = ts
  local fields = {'d', data}
  if task then fields[#fields + 1] = 't'; fields[#fields + 1] = task end
  if tool then fields[#fields + 1] = 'l'; fields[#fields + 1] = tool end
  if rate then fields[#fields + 1] = 'r'; fields[#fields + 1] = rate end
  if copy then fields[#fields + 1] = 'c'; fields[#fields + 1] = '1' end
  entries[#entries + 1] = {key, c.seq, fields}
  if not copy then order[#order + 1] = key; answer[#answer + 1] = {key, c.seq} end
  return c.seq
end
local here = ARGV[11] == '1'
local function copy(data, ts)
  if here then return add('global', data, ts, false, false, false, true) end
  return 0
end

-- FACT (see redis_codec.plan): 1 key, 2 kind (A/a an assertion passed or not, C a `global`
-- copy, s a status, else p), 3 timestamp, 4 own task (''|'='..id), 5 tool (`tool:start`'s),
-- 6 status, 7 role (o opens, c closes, n content, s stored as sent, S/H/R the root span's
-- started/closing/other status), 8 span id, 9 parent span id, 10 where `,"agent":..`
-- goes (-1: the event has its agent), 11 span kind, 12 span name, 13 model, 14 '1' if the
-- closing is `lost`, 15 1 if it is an error, 16 conversation id, 17/18 tokens in/out
-- (-1: no usage), 19 '1' if content takes its tool and task from its span, 20 the agent
-- the event gives (JSON, ''), 21 an agent span's own name, or a root status's title (JSON,
-- '').
-- The entry being read (the helpers below work on it).
local f, key, kind, ts, task, tool, status, role, id, parent, at, data, c
local rate, agent, more, seq
local function fill(found)
  if at >= 0 and found and not agent then
    agent = found
    data = string.sub(data, 1, at) .. ',"agent":' .. agent .. string.sub(data, at + 1)
  end
end
local function store()
  seq = add(key, data, ts, task, tool, rate, kind == 'C')
  if key ~= 'global' and f[15] == 1 then count(c, 'er', 1) end
  return seq
end
local function parent_agent()
  local r = parent ~= '' and record(key, parent)
  return r and r.g or false
end
for i, fact in ipairs(cjson.decode(ARGV[12])) do
  f = fact
  key, kind, ts, task, tool, status = f[1], f[2], f[3], f[4], f[5], f[6]
  role, id, parent, at = f[7] or '', f[8] or '', f[9] or '', f[10] or -1
  data = ARGV[12 + i]
  if task == '' then task = false end
  if tool == '' then tool = false end
  rate, agent, more, seq = false, false, false, 0
  c = counter(key)
  if kind == 'A' or kind == 'a' then
    c.at = c.at + 1
    if kind == 'A' then c.ap = c.ap + 1 end
    rate = c.ap .. ' ' .. c.at
  end
  if role == 'n' then
    local r = id ~= '' and record(key, id)
    if r then
      if f[19] == '1' then
        tool = r.k == 'tool' and r.n or false
        task = r.T or false
      end
      fill(r.g or false)
    end
    fill(parent_agent())
    store()
  elseif role == 'o' then
    local r = record(key, id)
    if r and ((r.O or 0) > 0 or (r.C or 0) > 0) then  -- spanrules.takes_opening
      seq = -((r.O or 0) > 0 and r.O or r.C)
    else
      local skind, name = f[11], f[12]
      local pk = parent ~= '' and record(key, parent)
      local pagent = pk and pk.g or false
      local own = f[20] ~= '' and f[20]
      if not own then
        if skind == 'agent' then own = f[21] ~= '' and f[21] else own = pagent end
      end
      fill(own)
      store()
      r = {k = skind, O = seq}
      if task then r.T = task end
      if skind == 'tool' then r.n = name end
      if own then r.g = own end
      if f[13] ~= '' then r.m = f[13] end
      keep(key, id, r)
      c.open = c.open + 1
      count_span(c, skind)
      local named = skind == 'agent' and own and cjson.decode(own)
      if named and named ~= '' then  -- an agent span's agent is the agent's name
        local since = c.namesince
        if (not pk or not pagent) and (not since or (since ~= '' and ts < since)) then
          c.name, c.namesince = named, ts
        end
        name_agent(c, named, false)
      elseif not c.name and skind ~= 'tool' and skind ~= 'skill' and name ~= '' and not pk then
        c.name = name
      end
      if f[16] ~= '' and not c.conv then c.conv = f[16] end
    end
  elseif role == 'c' then
    local r = record(key, id)
    local known = r and true
    local closed = r and r.C or 0
    local lost = f[14] == '1'
    if r and not (closed == 0 or (r.X == 'l' and not lost)) then
      seq = -closed
    else
      local skind, model
      if r then
        skind, model = r.k, r.m or ''
        task = task or r.T or false
        tool = r.k == 'tool' and r.n or false
        fill(r.g or false)
      else
        skind = f[11]
        local own
        if skind == 'agent' then own = f[21] ~= '' and f[21] else own = parent_agent() end
        fill(own)
        r = {k = skind}
        if task then r.T = task end
        if skind == 'tool' then r.n = f[12] end
        if own then r.g = own end
        model, tool = '', false
      end
      store()
      r.C, r.X = seq, lost and 'l' or nil
      keep(key, id, r)
      if not known then count_span(c, skind) end
      if closed == 0 and skind == 'llm' and f[17] >= 0 then
        local m = f[13] ~= '' and f[13] or model
        count(c, 'ti', f[17]); count(c, 'to', f[18])
        count(c, 'mi:' .. m, f[17]); count(c, 'mo:' .. m, f[18])
      end
      if known and (r.O or 0) > 0 and closed == 0 then
        c.open = c.open - 1
        if c.open <= 0 and c.held then
          -- The last open span closed: the held closing status is stored now, after it.
          local held, when = c.held, c.heldts
          if ts > when then
            when = ts
            held = string.gsub(held, ',"timestamp":"[^"]*"}$',
                               function() return ',"timestamp":"' .. ts .. '"}' end)
          end
          c.status, c.held, c.heldts, c.heldst = c.heldst, false, false, false
          local rseq = add(key, held, when, false, false, false, false)
          if c.helder then count(c, 'er', 1); c.helder = false end  -- counted as stored
          answer[#answer] = nil  -- not an answer to this batch
          c.ended = rseq
          more = {0, rseq, held, copy(held, when)}
        end
      end
    end
  elseif role == 'S' then
    if c.started > 0 then seq, role = -c.started, 'S-'  -- a copy: it names nothing either
    else
      c.status = status
      c.started = store()
      more = {copy(data, ts), 0, false, 0}
    end
  elseif role == 'H' then
    if c.ended > 0 or c.held then seq = -(c.ended > 0 and c.ended or c.seq)
    elseif c.open > 0 then
      c.held, c.heldts, c.heldst = data, ts, status
      c.helder = f[15] == 1 and '1' or false
      seq = -c.seq
    else
      c.status = status
      c.ended = store()
      more = {copy(data, ts), 0, false, 0}
    end
  else
    if kind == 's' then c.status = status end
    store()
  end
  if (role == 'S' or role == 'H' or role == 'R') and f[20] ~= '' then
    local name = cjson.decode(f[20])
    c.name, c.namesince = name, ''
    name_agent(c, name, true)
  end
  -- No agent named the run: the root's title (21) does.
  if (role == 'S' or role == 'H' or role == 'R') and f[21] ~= '' and not c.namesince then
    c.name = cjson.decode(f[21])
  end
  if seq < 0 then answer[#answer + 1] = {key, -seq} end  -- the event it repeats
  if rate then
    out[#out + 1] = seq; out[#out + 1] = c.ap; out[#out + 1] = c.at
  else
    out[#out + 1] = seq; out[#out + 1] = tool; out[#out + 1] = task
  end
  out[#out + 1] = agent; out[#out + 1] = more
end

-- Writes.
local total = #entries
local pos = redis.call('HINCRBY', P .. 'meta', 'pos', total) - total
out[3] = pos
local maxlen, positioned = ARGV[6], ARGV[10] == '1'
for _, e in ipairs(entries) do
  local key, seq, fields = e[1], e[2], e[3]
  pos = pos + 1
  local own = {seq .. '-0'}
  local shared = {'MAXLEN', '~', maxlen, pos .. '-0', 'b', token, 'k', key, 's', seq}
  if positioned and fields[#fields - 1] ~= 'c' then
    own[#own + 1] = 'p'; own[#own + 1] = pos
    own[#own + 1] = 'b'; own[#own + 1] = token
    shared[#shared + 1] = 'p'; shared[#shared + 1] = pos
  end
  for _, v in ipairs(fields) do own[#own + 1] = v; shared[#shared + 1] = v end
  redis.call('XADD', P .. 'x:' .. key, unpack(own))
  redis.call('XADD', fan, unpack(shared))
end
for key, c in pairs(counters) do
  local h, gone = {}, {}
  for _, f in ipairs(NUMBERS) do h[#h + 1] = f; h[#h + 1] = c[f] end
  for _, f in ipairs(TEXTS) do
    if c[f] then h[#h + 1] = f; h[#h + 1] = c[f] else gone[#gone + 1] = f end
  end
  redis.call('HSET', P .. 'c:' .. key, unpack(h))
  if #gone > 0 then redis.call('HDEL', P .. 'c:' .. key, unpack(gone)) end
  for field, n in pairs(c.add) do redis.call('HINCRBY', P .. 'c:' .. key, field, n) end
end
for key, ids in pairs(dirty) do
  local h = {}
  for id in pairs(ids) do h[#h + 1] = 'r' .. id; h[#h + 1] = cjson.encode(records[key][id]) end
  redis.call('HSET', P .. 's:' .. key, unpack(h))
end
-- Executions by last write: each key once, in the order of its last write in the batch.
local now = redis.call('TIME')
local seconds = string.format('%d.%06d', now[1], now[2])
local seen, recent = {}, {}
for j = #order, 1, -1 do
  local key = order[j]
  if not seen[key] then seen[key] = true; recent[#recent + 1] = key end
end
for j = #recent, 1, -1 do
  local key = recent[j]
  if key ~= 'global' then
    redis.call('ZADD', P .. 'active', redis.call('HINCRBY', P .. 'meta', 'activity', 1), key)
    redis.call('ZADD', P .. 'touched', seconds, key)
  end
end
if idem ~= '' then
  redis.call('SET', P .. 'idem:' .. idem, cjson.encode(answer), 'EX', ARGV[9])
end
return out
"""
)
"""One batch, atomically: epoch, fence, idempotency, seqs, counters, spans, both streams."""

STATE: Final = (
    "#!lua\n"
    + _FENCE
    + r"""
-- ARGV[7] stream key ('' = none). -> {epoch, its last seq, fan position}
local seq = 0
if ARGV[7] ~= '' then seq = tonumber(redis.call('HGET', P .. 'c:' .. ARGV[7], 'seq')) or 0 end
return {epoch, seq, tonumber(redis.call('HGET', P .. 'meta', 'pos')) or 0}
"""
)
"""The epoch (made if Redis lost it, new after a rollback), a stream's last seq, the position."""

PEEK: Final = r"""#!lua flags=no-writes
-- ARGV: prefix. -> the epoch ('' if none yet): checks that the partition answers, writes nothing
return redis.call('GET', ARGV[1] .. 'epoch') or ''
"""
"""Whether a partition answers, writing nothing (a start that fails leaves no key behind)."""

HEALTH: Final = r"""#!lua
-- ARGV: prefix, a token. A write that expires: refused as a batch would be (out of memory,
-- read-only replica, too few replicas for min-replicas-to-write).
redis.call('SET', ARGV[1] .. 'health', ARGV[2], 'PX', 60000)
return 1
"""
"""A write, as a batch's would be: what ``/api/health`` tests."""

HEADS: Final = r"""#!lua flags=no-writes
-- ARGV: prefix, stream keys. -> the last seq of each
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = tonumber(redis.call('HGET', ARGV[1] .. 'c:' .. ARGV[i], 'seq')) or 0
end
return out
"""
"""The last seq of several stream keys."""

SUMMARIES: Final = r"""#!lua flags=no-writes
-- ARGV: prefix, limit. -> per execution: id, its counters (HGETALL), last write (seconds)
local P = ARGV[1]
local out = {}
for _, id in ipairs(redis.call('ZREVRANGE', P .. 'active', 0, tonumber(ARGV[2]) - 1)) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', P .. 'c:' .. id)
  out[#out + 1] = redis.call('ZSCORE', P .. 'touched', id)
end
return out
"""
"""Executions, most recently active first, with their counters."""

RETAIN: Final = r"""#!lua
-- ARGV: prefix, max idle seconds, at most this many, fan-out maxlen, a token. -> deleted ids
local P = ARGV[1]
local now = redis.call('TIME')
local cutoff = string.format('(%.6f', now[1] + now[2] / 1e6 - tonumber(ARGV[2]))
local ids = redis.call('ZRANGEBYSCORE', P .. 'touched', '-inf', cutoff, 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
  redis.call('DEL', P .. 'x:' .. id, P .. 'c:' .. id, P .. 's:' .. id)
  redis.call('ZREM', P .. 'touched', id)
  redis.call('ZREM', P .. 'active', id)
  local pos = redis.call('HINCRBY', P .. 'meta', 'pos', 1)
  redis.call('XADD', P .. 'fan', 'MAXLEN', '~', ARGV[4], pos .. '-0', 'b', ARGV[5], 'k', id,
             'x', '1')
end
return ids
"""
"""Delete executions idle longer than a duration, telling every node through the fan-out."""

SCRIPTS: Final = {
    "publish": PUBLISH, "state": STATE, "peek": PEEK, "health": HEALTH, "heads": HEADS,
    "summaries": SUMMARIES, "retain": RETAIN,
}  # fmt: skip
"""Every script of the hub, by name."""


@attrs.frozen
class Keys:
    """The names of one partition's keys under its prefix (the scripts build the same names)."""

    prefix: str = "trio-obs:"

    @property
    def epoch(self) -> str:
        """The epoch key: the key every script call names (a cluster client routes by it)."""
        return self.prefix + "epoch"

    @property
    def fan(self) -> str:
        """The fan-out stream."""
        return self.prefix + "fan"

    def stream(self, key: str) -> str:
        """The stream of one stream key (an execution or ``global``)."""
        return f"{self.prefix}x:{key}"


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def hash_slot(key: str) -> int:
    """The cluster slot of ``key`` (its ``{hash tag}`` if it has one)."""
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return crc16(data) % SLOTS


def _tag(i: int, k: int) -> str:
    """A hash tag whose slot lies in the ``i``-th of ``k`` equal ranges of the slot range."""
    low, high = i * SLOTS // k, (i + 1) * SLOTS // k
    n = 0
    while not low <= hash_slot(f"{{p{i}-{n}}}") < high:
        n += 1
    return f"p{i}-{n}"


@attrs.frozen
class Layout:
    """The partitions of the hub's keys, and which partition each stream key lives in."""

    partitions: tuple[Keys, ...]

    @classmethod
    def single(cls, prefix: str) -> Layout:
        """One partition: one Redis (or one that fails over), keys under ``prefix``."""
        return cls((Keys(prefix),))

    @classmethod
    def cluster(cls, prefix: str, k: int = CLUSTER_PARTITIONS) -> Layout:
        """``k`` partitions whose hash tags spread evenly over a cluster's slots."""
        if "{" in prefix or "}" in prefix:
            raise ValueError(
                "on a Redis Cluster the key prefix takes no {hash tag}: the partitions add theirs"
            )
        return cls(tuple(Keys(f"{prefix}{{{_tag(i, k)}}}:") for i in range(k)))

    def of(self, key: str) -> int:
        """The partition of a stream key: ``global`` in the first, an execution by its hash."""
        k = len(self.partitions)
        if k == 1 or key == GLOBAL:
            return 0
        return zlib.crc32(key.encode()) % k
