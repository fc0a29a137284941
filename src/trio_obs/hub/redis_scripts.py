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
  ``all`` has no single order), ``d`` (the event's unstamped JSON, see
  :mod:`trio_obs.core.stamp`), ``t`` (``=``task id), ``l`` (tool), ``r`` (assertions passed
  and total, for ``runningPassRate``), ``c`` (a ``global`` copy of an ``execution:status``);
- ``c:<key>`` -- its counters: ``seq``, ``n`` (events), ``first``/``last`` timestamps,
  ``status``, ``at``/``ap`` (assertions total/passed);
- ``s:<key>`` -- its tool uses (``t<id>`` tool, ``T<id>`` task) and skills (``K<id>`` task);
- ``active`` / ``touched`` -- sorted sets of executions by last write (a counter, and
  Redis's clock in seconds, for retention and for ordering across partitions);
- ``idem:<key>`` -- the answer of an ``Idempotency-Key`` (this partition's part of it);
- ``health`` -- written by the health check (a write, with a short expiry).

An optional value travels as ``""`` (absent) or ``"=" + value``, so an empty string
stays distinct from none. Every script is called with ``KEYS[1]`` = the partition's
``epoch`` key (a Redis Cluster client routes by it) and ``ARGV[1]`` = the prefix.

**The fence** (rollbacks are never silent, SPEC §10): a node passes the newest fan-out
entry it knows of (one it read or one its own batch wrote: position and token). If the
partition no longer holds it -- its position is beyond the newest one, or another batch's
token stands there -- Redis lost writes that a client may have seen or been acknowledged
(a failover to a replica that had not received them): the script starts a new epoch and
says so in the fan-out, so every node tells its clients (``observability:reset``).
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
-- ARGV[2] epoch candidate, ARGV[3] the node's epoch, ARGV[4] fence position, ARGV[5] its
-- token, ARGV[6] fan-out maxlen. Sets `epoch` and `fan`.
local P = ARGV[1]
local fan = P .. 'fan'
local epoch = redis.call('SET', P .. 'epoch', ARGV[2], 'NX', 'GET') or ARGV[2]
local fence = tonumber(ARGV[4])
if fence > 0 and epoch == ARGV[3] then
  local lost = (tonumber(redis.call('HGET', P .. 'meta', 'pos')) or 0) < fence
  if not lost then
    local found = redis.call('XRANGE', fan, fence .. '-0', fence .. '-0')
    lost = found[1] ~= nil and found[1][2][2] ~= ARGV[5]
  end
  if lost then
    epoch = ARGV[2]
    redis.call('SET', P .. 'epoch', epoch)
    local at = redis.call('HINCRBY', P .. 'meta', 'pos', 1)
    redis.call('XADD', fan, 'MAXLEN', '~', ARGV[6], at .. '-0', 'b', epoch, 'e', epoch)
  end
end
"""

PUBLISH: Final = (
    "#!lua\n"
    + _FENCE
    + r"""
-- ARGV[7] batch token, ARGV[8] idempotency key ('' = none), ARGV[9] its ttl, ARGV[10] '1'
-- to write each event's position `p`, ARGV[11] '1' when `global` lives in this partition,
-- ARGV[12] now (the timestamp a held status is stored with), ARGV[13] the facts as a JSON
-- array (see redis_codec.Planned.fact) of [key, kind, timestamp, own task (''|'='..id),
-- tool name, tool-use/skill id or status, span role, span id, agent look-up span id,
-- agent offset, the span's agent (JSON), counters to add, fields to set once], then the
-- unstamped JSON of each.
-- Kind 'C' is the `global` copy of the execution status before it.
-- Span roles (the ledger's rules, SPEC §12, CONTRACT B): 'o' opens, 'c' closes, 'l'
-- closes provisionally (lost), 'S' a `started` status stored once per execution, 'H' the
-- root span's closing status, held while spans are open; '' (anything else) is stored.
-- Reads first, writes after: a batch is stored whole or not at all.
-- -> {epoch, false, the fan position before the first entry, (seq, x, y, agent, more) per
--    fact} or {epoch, earlier answer}. seq 0: not stored (a copy dropped, or held);
--    more: false or {copy seq, released seq, released JSON, its copy seq} (0: none).
local token, idem = ARGV[7], ARGV[8]
if idem ~= '' then
  local seen = redis.call('GET', P .. 'idem:' .. idem)
  if seen then
    -- A write, so that a WAIT after this call covers the batch the answer names.
    redis.call('SET', P .. 'idem:' .. idem, seen, 'KEEPTTL')
    return {epoch, seen}
  end
end

local counters, spans, span_writes = {}, {}, {}
local function counter(key)
  local c = counters[key]
  if not c then
    local v = redis.call('HMGET', P .. 'c:' .. key, 'seq', 'n', 'first', 'at', 'ap', 'open',
                         'started', 'held', 'heldst')
    c = {seq = tonumber(v[1]) or 0, n = tonumber(v[2]) or 0, first = v[3],
         at = tonumber(v[4]) or 0, ap = tonumber(v[5]) or 0, open = tonumber(v[6]) or 0,
         started = v[7], held = v[8], heldst = v[9], add = {}, once = {}}
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
local here, now = ARGV[11] == '1', ARGV[12]
local function copy(data, ts)
  if here then return add('global', data, ts, false, false, false, true) end
  return 0
end

for i, f in ipairs(cjson.decode(ARGV[13])) do
  local key, kind, ts, task, name, extra = f[1], f[2], f[3], f[4], f[5], f[6]
  local role, id, look, at, own = f[7] or '', f[8] or '', f[9] or '', f[10] or 0, f[11] or ''
  local data = ARGV[13 + i]
  if task == '' then task = false end
  local tool, rate, x, y, agent, more = false, false, false, false, false, false
  local keep, held = true, false
  local c = counter(key)
  -- The agent a span's event lacks: its parent's (or its own span's), where known.
  if look ~= '' then
    agent = span(key, 'g' .. look)
    if agent then
      data = string.sub(data, 1, at) .. ',"agent":' .. agent .. string.sub(data, at + 1)
    end
  end
  -- One opening and one closing per span (a lost closing is provisional).
  local closes = false
  if role == 'o' then
    if span(key, 'z' .. id) then keep = false
    else
      remember(key, 'z' .. id, 'o')
      c.open = c.open + 1
      if own ~= '' then remember(key, 'g' .. id, own)
      elseif agent then remember(key, 'g' .. id, agent) end
    end
  elseif role == 'c' or role == 'l' then
    local z = span(key, 'z' .. id)
    if z == 'c' or (z == 'l' and role == 'l') then keep = false
    else
      remember(key, 'z' .. id, role)
      if z == 'o' then c.open = c.open - 1; closes = c.open == 0 end
    end
  elseif role == 'S' then
    if c.started then keep = false else c.started = '1' end
  elseif role == 'H' then
    if span(key, 'z' .. id) == 'c' or (c.held and c.held ~= '') then keep = false
    else
      remember(key, 'z' .. id, 'c')
      if c.open > 0 then keep, held = false, true; c.held, c.heldst = data, extra end
    end
  end
  if kind == 'A' or kind == 'a' then
    c.at = c.at + 1
    if kind == 'A' then c.ap = c.ap + 1 end
    x, y = c.ap, c.at
    rate = c.ap .. ' ' .. c.at
  elseif kind == 'T' then
    if keep then
      remember(key, 't' .. extra, name)
      remember(key, 'T' .. extra, task or '')
    end
    tool = name
  elseif kind == 'K' then
    if keep then remember(key, 'K' .. extra, task or '') end
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
  elseif kind == 's' and keep then
    c.status = extra
  end
  local seq = 0
  if keep then
    seq = add(key, data, ts, task, tool, rate, kind == 'C')
    local adds, once = f[12], f[13]
    if adds then for j = 1, #adds, 2 do c.add[adds[j]] = (c.add[adds[j]] or 0) + adds[j + 1] end end
    if once then
      for j = 1, #once, 2 do
        if c.once[once[j]] == nil then c.once[once[j]] = once[j + 1] end
      end
    end
    if role == 'S' or role == 'H' then more = {copy(data, ts), 0, false, 0} end
  end
  if closes and c.held and c.held ~= '' then
    -- The last open span closed: the held closing status is stored now.
    local released = string.gsub(c.held, ',"timestamp":"[^"]*"}$', ',"timestamp":"' .. now .. '"}')
    c.status, c.held = c.heldst, ''
    local rseq = add(key, released, now, false, false, false, false)
    if not more then more = {0, 0, false, 0} end
    more[2], more[3], more[4] = rseq, released, copy(released, now)
  end
  out[#out + 1] = seq; out[#out + 1] = x; out[#out + 1] = y
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
    shared[#shared + 1] = 'p'; shared[#shared + 1] = pos
  end
  for _, v in ipairs(fields) do own[#own + 1] = v; shared[#shared + 1] = v end
  redis.call('XADD', P .. 'x:' .. key, unpack(own))
  redis.call('XADD', fan, unpack(shared))
end
for key, c in pairs(counters) do
  local h = {'seq', c.seq, 'n', c.n, 'at', c.at, 'ap', c.ap, 'open', c.open}
  if c.first then h[#h + 1] = 'first'; h[#h + 1] = c.first end
  if c.last then h[#h + 1] = 'last'; h[#h + 1] = c.last end
  if c.status then h[#h + 1] = 'status'; h[#h + 1] = c.status end
  if c.started then h[#h + 1] = 'started'; h[#h + 1] = c.started end
  if c.held then h[#h + 1] = 'held'; h[#h + 1] = c.held end
  if c.heldst then h[#h + 1] = 'heldst'; h[#h + 1] = c.heldst end
  redis.call('HSET', P .. 'c:' .. key, unpack(h))
  for field, n in pairs(c.add) do redis.call('HINCRBY', P .. 'c:' .. key, field, n) end
  for field, v in pairs(c.once) do redis.call('HSETNX', P .. 'c:' .. key, field, v) end
end
for key, w in pairs(span_writes) do
  redis.call('HSET', P .. 's:' .. key, unpack(w))
end
-- Executions by last write: each key once, in the order of its last write in the batch.
local now_s = redis.call('TIME')
local seconds = string.format('%d.%06d', now_s[1], now_s[2])
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
-- ARGV: prefix, limit. -> per execution: id, seq, n, first, last, status, last write (seconds)
local P = ARGV[1]
local out = {}
for _, id in ipairs(redis.call('ZREVRANGE', P .. 'active', 0, tonumber(ARGV[2]) - 1)) do
  local v = redis.call('HMGET', P .. 'c:' .. id, 'seq', 'n', 'first', 'last', 'status')
  out[#out + 1] = id
  for j = 1, 5 do out[#out + 1] = v[j] end
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
