"""The Redis hub's keys and Lua scripts: the one place where order is assigned (DESIGN.md §4).

Keys, under a prefix (default ``trio-obs:``):

- ``epoch`` -- a random id naming the history (created with ``SET NX``; SPEC §10);
- ``meta`` -- a hash: ``pos``, the position of the newest fan-out entry, and ``activity``;
- ``fan`` -- the fan-out stream every node reads: entry ``<pos>-0`` per stored event,
  fields ``k`` (stream key), ``s`` (seq) and the fields of the execution stream; trimmed
  with ``MAXLEN ~``; an entry with ``x`` says the stream ``k`` was deleted (retention);
- ``x:<key>`` -- an execution's stream: entry ``<seq>-0`` per event, fields ``p`` (its
  fan-out position: the event's ``pos`` on ``all``, SPEC §14), ``d`` (the event's
  unstamped JSON, see :mod:`trio_obs.core.stamp`), ``t`` (``=``task id), ``l`` (tool),
  ``r`` (assertions passed and total, for ``runningPassRate``), ``c`` (a ``global`` copy
  of an ``execution:status``);
- ``c:<key>`` -- its counters: ``seq``, ``n`` (events), ``first``/``last`` timestamps,
  ``status``, ``at``/``ap`` (assertions total/passed);
- ``s:<key>`` -- its tool uses (``t<id>`` tool, ``T<id>`` task) and skills (``K<id>`` task);
- ``active`` / ``touched`` -- sorted sets of executions by last write (a counter, and
  Redis's clock in seconds, for retention);
- ``idem:<key>`` -- the answer of an ``Idempotency-Key``, expiring after 24 h.

An optional value travels as ``""`` (absent) or ``"=" + value``, so an empty string
stays distinct from none.
"""

from __future__ import annotations

from typing import Final

import attrs

PUBLISH: Final = r"""#!lua
-- ARGV: prefix, epoch candidate, idempotency key ('' = none), its ttl, fan-out maxlen,
-- envelopes (events + global copies), the events' facts as a JSON array of [key, kind,
-- timestamp, own task (''|'='..id), tool name, span id or status], then the unstamped
-- JSON of each event.
-- Reads first, writes after: a batch is stored whole or not at all.
local P = ARGV[1]
local epoch = redis.call('SET', P .. 'epoch', ARGV[2], 'NX', 'GET') or ARGV[2]
local idem = ARGV[3]
if idem ~= '' then
  local seen = redis.call('GET', P .. 'idem:' .. idem)
  if seen then return {epoch, seen} end
end

local counters, spans, span_writes = {}, {}, {}
local function counter(key)
  local c = counters[key]
  if not c then
    local v = redis.call('HMGET', P .. 'c:' .. key, 'seq', 'n', 'first', 'at', 'ap')
    c = {seq = tonumber(v[1]) or 0, n = tonumber(v[2]) or 0, first = v[3],
         at = tonumber(v[4]) or 0, ap = tonumber(v[5]) or 0}
    counters[key] = c
  end
  return c
end
local function span(key, field)
  local known = spans[key] and spans[key][field]
  if known ~= nil then return known end
  return redis.call('HGET', P .. 's:' .. key, field)
end
local function remember(key, field, value)
  if not spans[key] then spans[key] = {}; span_writes[key] = {} end
  spans[key][field] = value
  local w = span_writes[key]
  w[#w + 1] = field; w[#w + 1] = value
end

local entries, order, answer, out = {}, {}, {}, {epoch, false}
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
  order[#order + 1] = key
  return c.seq
end

for i, facts in ipairs(cjson.decode(ARGV[7])) do
  local key, kind, ts, task, name, extra = unpack(facts)
  local data = ARGV[7 + i]
  if task == '' then task = false end
  local tool, rate, x, y = false, false, false, false
  if kind == 'A' or kind == 'a' then
    local c = counter(key)
    c.at = c.at + 1
    if kind == 'A' then c.ap = c.ap + 1 end
    x, y = c.ap, c.at
    rate = c.ap .. ' ' .. c.at
  elseif kind == 'T' then
    remember(key, 't' .. extra, name)
    remember(key, 'T' .. extra, task or '')
    tool = name
  elseif kind == 'K' then
    remember(key, 'K' .. extra, task or '')
  elseif kind == 'r' then
    local found = span(key, 't' .. extra)
    if found then
      tool = found
      local t = span(key, 'T' .. extra)
      if t and t ~= '' then task = t end
    end
    x, y = tool, task
  elseif kind == 'k' then
    local t = span(key, 'K' .. extra)
    if t and t ~= '' then task = t end
    y = task
  elseif kind == 's' then
    counter(key).status = extra
  end
  local seq = add(key, data, ts, task, tool, rate, false)
  answer[#answer + 1] = {key, seq}
  if kind == 's' and key ~= 'global' then
    x = add('global', data, ts, false, false, false, true)
  end
  out[#out + 1] = seq; out[#out + 1] = x; out[#out + 1] = y
end

-- Writes.
local total = tonumber(ARGV[6])
local pos = redis.call('HINCRBY', P .. 'meta', 'pos', total) - total
out[#out + 1] = pos  -- last: the position before the batch's first entry
local fan, maxlen = P .. 'fan', ARGV[5]
for _, e in ipairs(entries) do
  local key, seq, fields = e[1], e[2], e[3]
  pos = pos + 1
  redis.call('XADD', P .. 'x:' .. key, seq .. '-0', 'p', pos, unpack(fields))
  redis.call('XADD', fan, 'MAXLEN', '~', maxlen, pos .. '-0', 'k', key, 's', seq, 'p', pos,
    unpack(fields))
end
for key, c in pairs(counters) do
  local h = {'seq', c.seq, 'n', c.n, 'at', c.at, 'ap', c.ap}
  if c.first then h[#h + 1] = 'first'; h[#h + 1] = c.first end
  if c.last then h[#h + 1] = 'last'; h[#h + 1] = c.last end
  if c.status then h[#h + 1] = 'status'; h[#h + 1] = c.status end
  redis.call('HSET', P .. 'c:' .. key, unpack(h))
end
for key, w in pairs(span_writes) do
  redis.call('HSET', P .. 's:' .. key, unpack(w))
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
  redis.call('SET', P .. 'idem:' .. idem, cjson.encode(answer), 'EX', ARGV[4])
end
return out
"""
"""One batch, atomically: epoch, idempotency, seqs, counters, spans, both streams."""

STATE: Final = r"""#!lua
-- ARGV: prefix, epoch candidate, stream key ('' = none). -> {epoch, its last seq, fan pos}
local P = ARGV[1]
local epoch = redis.call('SET', P .. 'epoch', ARGV[2], 'NX', 'GET') or ARGV[2]
local seq = 0
if ARGV[3] ~= '' then seq = tonumber(redis.call('HGET', P .. 'c:' .. ARGV[3], 'seq')) or 0 end
return {epoch, seq, tonumber(redis.call('HGET', P .. 'meta', 'pos')) or 0}
"""
"""The epoch (made if Redis lost it), a stream's last seq and the fan-out position."""

HEADS: Final = r"""#!lua flags=no-writes
-- ARGV: prefix, stream keys. -> the last seq of each
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = tonumber(redis.call('HGET', ARGV[1] .. 'c:' .. ARGV[i], 'seq')) or 0
end
return out
"""
"""The last seq of several stream keys."""

BUMP_EPOCH: Final = r"""#!lua
-- ARGV: prefix, the epoch that is no longer true, a new one. -> the epoch now
local P = ARGV[1]
local epoch = redis.call('GET', P .. 'epoch')
if epoch and epoch ~= ARGV[2] then return epoch end
redis.call('SET', P .. 'epoch', ARGV[3])
return ARGV[3]
"""
"""Replace an epoch whose history Redis no longer holds (unless another node did)."""

SUMMARIES: Final = r"""#!lua flags=no-writes
-- ARGV: prefix, limit. -> per execution: id, seq, n, first, last, status
local P = ARGV[1]
local out = {}
for _, id in ipairs(redis.call('ZREVRANGE', P .. 'active', 0, tonumber(ARGV[2]) - 1)) do
  local v = redis.call('HMGET', P .. 'c:' .. id, 'seq', 'n', 'first', 'last', 'status')
  out[#out + 1] = id
  for j = 1, 5 do out[#out + 1] = v[j] end
end
return out
"""
"""Executions, most recently active first, with their counters."""

RETAIN: Final = r"""#!lua
-- ARGV: prefix, max idle seconds, at most this many, fan-out maxlen. -> deleted ids
local P = ARGV[1]
local now = redis.call('TIME')
local cutoff = string.format('(%.6f', now[1] + now[2] / 1e6 - tonumber(ARGV[2]))
local ids = redis.call('ZRANGEBYSCORE', P .. 'touched', '-inf', cutoff, 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
  redis.call('DEL', P .. 'x:' .. id, P .. 'c:' .. id, P .. 's:' .. id)
  redis.call('ZREM', P .. 'touched', id)
  redis.call('ZREM', P .. 'active', id)
  local pos = redis.call('HINCRBY', P .. 'meta', 'pos', 1)
  redis.call('XADD', P .. 'fan', 'MAXLEN', '~', ARGV[4], pos .. '-0', 'k', id, 'x', '1')
end
return ids
"""
"""Delete executions idle longer than a duration, telling every node through the fan-out."""


@attrs.frozen
class Keys:
    """The names of the hub's keys under one prefix (the scripts build the same names)."""

    prefix: str = "trio-obs:"

    @property
    def fan(self) -> str:
        """The fan-out stream."""
        return self.prefix + "fan"

    def stream(self, key: str) -> str:
        """The stream of one stream key (an execution or ``global``)."""
        return f"{self.prefix}x:{key}"
