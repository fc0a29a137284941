"""The Redis hub: several nodes as one server, on one Redis, a Sentinel set or a Cluster
(SPEC §10, DESIGN.md §4).

Publishing completes a batch (the history-free rules, as on one node), then one Lua
script per partition stores it atomically: seqs and counters per stream key, both
streams, the idempotency key (:mod:`~trio_obs.hub.redis_scripts`). On a Redis Cluster a
batch whose executions live in several partitions is stored partition by partition,
and the answer says what is known: all stored, nothing stored, or which events are
(:class:`~trio_obs.UncertainOutcome`). Nothing is dispatched here: every node, this one
included, reads the fan-out streams with its
:class:`~trio_obs.hub.redis_reader.FanoutReader`\\ s and dispatches through the same
:class:`~trio_obs.hub.dispatch.Dispatcher` as a single node. Subscriptions that fall
behind, replays and reads go to the execution streams, on any node.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, Literal, TypeVar

import attrs
import orjson
import trio
from coredis.exceptions import (
    ConnectionError,
    NoScriptError,
    ReadOnlyError,
    ReplicationError,
    ResponseError,
    SentinelError,
)
from coredis.response.types import StreamEntry

from ..core import events as ev
from ..core.errors import StoreError, SubscriptionEnded, UncertainOutcome
from ..core.ledger import complete_batch
from ..core.protocol import (
    ALL,
    DEFAULT_BUFFER_BYTES,
    DEFAULT_BUFFER_SIZE,
    DEFAULT_QUEUE_SIZE,
    GLOBAL,
    MAX_EVENTS_LIMIT,
    NOT_REPLICATED,
    OUTCOME_UNKNOWN,
    PARTIALLY_STORED,
    SLOW_CONSUMER,
    ErrorCode,
)
from ..core.routing import Envelope
from ..core.search import RunFilters, SearchQuery, SearchResult
from ..core.session import Resume
from ..core.stamp import unstamped
from .clock import now_iso
from .common import HubCommon
from .dispatch import Dispatcher
from .local import IDEMPOTENCY_TTL
from .local_index import LocalIndex
from .redis_codec import (
    COPY,
    WIDTH,
    Planned,
    arguments,
    copy_envelope,
    counters_of,
    entry_json,
    envelope_of,
    plan,
    stored,
)
from .redis_connect import Clients, follow_master, open_clients
from .redis_reader import (
    READ_COUNT,
    Epoch,
    Failure,
    FanoutReader,
    entry_fields,
    entry_position,
    new_token,
)
from .redis_scripts import SCRIPTS, Keys, Layout
from .redis_url import parse_redis_url
from .sqlite import Store, open_store

T = TypeVar("T")
log = logging.getLogger("trio_obs.hub")

DEFAULT_FANOUT_MAXLEN: Final = 100_000
"""Fan-out entries Redis keeps (about, all partitions together): how far a node's reader may
fall behind."""
DEFAULT_TIMEOUT: Final = 2.0
"""Seconds a Redis call may take before the hub reports the store unavailable."""
INTERNAL_KEY_TTL: Final = 600
"""Seconds the hub's own idempotency key of a batch is kept (with replicas, to learn the
seqs of a batch that was stored but not confirmed by them)."""
_RETAIN_PAGE: Final = 1000

_REFUSALS: Final = {
    "OOM": "Redis is out of memory (maxmemory reached) and refuses writes",
    "READONLY": "Redis is a read-only replica (a failover is under way)",
    "NOREPLICAS": "Redis refuses writes: too few replicas are online (min-replicas-to-write)",
    "MISCONF": "Redis refuses writes: it cannot persist them (MISCONF)",
    "BUSY": "Redis is busy running a script",
    "LOADING": "Redis is loading its data",
    "CLUSTERDOWN": "the Redis Cluster is down",
    "MASTERDOWN": "Redis has lost its master",
}
"""What Redis's error prefixes mean, said to people."""


def why(exc: BaseException, timeout: float) -> str:
    """A short reason for a failed Redis call."""
    if isinstance(exc, trio.TooSlowError):
        return f"no answer within {timeout:g} s"
    text = str(exc) or type(exc).__name__
    for prefix, meaning in _REFUSALS.items():
        if text.startswith(prefix):
            return meaning
    return text


Result = Literal["not stored", "unknown", "not replicated"]


def outcome_of(exc: BaseException) -> Result:
    """What a failed publish call means for its batch.

    An error answer from Redis (out of memory, read-only, no script...) or a connection
    that could not be made means the script never ran; a timeout or a connection lost
    while waiting leaves it unknown; a short ``WAIT`` means stored on the primary only.
    """
    if isinstance(exc, ReplicationError):
        return "not replicated"
    if isinstance(exc, ResponseError | SentinelError | ConnectionRefusedError):
        return "not stored"
    if isinstance(exc, ConnectionError) and str(exc).startswith("Unable to establish"):
        return "not stored"
    return "unknown"


def _more_entries(more: Any) -> int:
    """Entries the script wrote beyond an event: its copy, a released status and its copy."""
    if not more:
        return 0
    return sum(1 for i in (0, 1, 3) if int(more[i]))


@attrs.define
class _Part:
    """One partition's share of a batch, and what became of it."""

    partition: int
    indexes: list[int]
    """Where its entries stand in the batch's plan."""
    reply: list[Any] | None = None
    """The script's ``(seq, x, y)`` per entry, once stored."""
    base: int = 0
    """The fan-out position before its first entry, once stored."""
    repeat: list[tuple[str, int]] | None = None
    """The answer stored earlier under the batch's key (a retry)."""
    failure: BaseException | None = None
    result: Result | None = None


class RedisHub(HubCommon):
    """The hub of one node of several sharing Redis; open it with :func:`open_redis_hub`."""

    def __init__(
        self,
        clients: Clients,
        *,
        layout: Layout,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        max_buffers: int = 1000,
        buffer_grace: float = 300.0,
        fanout_maxlen: int = DEFAULT_FANOUT_MAXLEN,
        timeout: float = DEFAULT_TIMEOUT,
        block: float = 1.0,
        replicas: int = 0,
        index: Store | None = None,
    ) -> None:
        if fanout_maxlen < 1:
            raise ValueError("fanout_maxlen must be >= 1")
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        self.replicas = replicas
        """Replicas that must have a batch (Redis ``WAIT``) before it is acknowledged."""
        self.clients = clients
        self.client = clients.calls
        self.where = clients.target.where
        """Where Redis is (its URL without a password), for messages."""
        self.layout = layout
        # Shared by the partitions, so that a cluster keeps what one Redis keeps.
        self.fanout_maxlen = -(-fanout_maxlen // len(layout.partitions))
        self.timeout = timeout
        self.dispatcher = Dispatcher(
            self,
            buffer_size=buffer_size,
            queue_size=queue_size,
            buffer_bytes=buffer_bytes,
            max_buffers=max_buffers,
            buffer_grace=buffer_grace,
        )
        self._epoch = Epoch(self.dispatcher, len(layout.partitions))
        self._shas = {name: "" for name in SCRIPTS}
        self.readers = [
            FanoutReader(
                self._xread,
                keys.fan,
                self.dispatcher,
                self._epoch,
                partition=i,
                state=lambda i=i: self._fan_state(i),  # type: ignore[misc]
                heads=self._heads,
                keys_here=lambda key, i=i: layout.of(key) == i,  # type: ignore[misc]
                place=None if self.ordered_all else self._place,
                block=block,
            )
            for i, keys in enumerate(layout.partitions)
        ]
        self._next_pos = index.last_pos() if index is not None and not self.ordered_all else 0
        """On a Redis Cluster: the node's own position of the last event it dispatched."""
        self.index = LocalIndex(index, self.dispatcher, self._history) if index else None
        """This node's search index (SPEC §14; DESIGN.md §6), fed by its own readers."""

    @property
    def epoch(self) -> str:
        """The epoch of Redis's history (the same on every node; new if Redis lost any of it)."""
        return self._epoch.value

    @property
    def ordered_all(self) -> bool:
        """Whether ``all`` has one order (one fan-out stream): not on a Redis Cluster, whose
        partitions have a fan-out stream each and no order across them. Where it has none, a
        resume of ``all`` from a global position is answered with a reset (README)."""
        return len(self.layout.partitions) == 1

    @property
    def trimmed(self) -> int:
        """Fan-out entries this node could not read because they were trimmed."""
        return sum(r.trimmed for r in self.readers)

    def _place(self, envelopes: list[Envelope]) -> None:
        """On a Redis Cluster, whose ``all`` has no order across its partitions: give events
        this node's own positions, in the order it dispatches them (its ``all`` subscribers
        and its search index go by them; they are never sent: README)."""
        for env in envelopes:
            if not env.is_copy:
                self._next_pos += 1
                env.pos = self._next_pos

    def _keys(self, key: str) -> Keys:
        return self.layout.partitions[self.layout.of(key)]

    # ------------------------------------------------------------------ Redis calls

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` within the timeout; :class:`StoreError` if Redis cannot answer."""
        try:
            with trio.fail_after(self.timeout):
                return await call()
        except Failure as exc:
            raise StoreError(f"Redis could not {what}: {why(exc, self.timeout)}") from exc

    async def _run(self, name: str, partition: int, *args: Any) -> Any:
        """Run script ``name`` on ``partition`` (loading the scripts where Redis lacks them:
        after a failover, on a shard that joined). Raises what coredis raises."""
        keys = self.layout.partitions[partition]
        for attempt in (1, 2):
            try:
                return await self.client.evalsha(
                    self._shas[name], keys=[keys.epoch], args=[keys.prefix, *args]
                )
            except NoScriptError:
                if attempt == 2:
                    raise
                await self._load_scripts()
            except ReadOnlyError:
                self.clients.drop_connections()  # a demoted master: reconnect to the new one
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _script(self, what: str, name: str, partition: int, *args: Any) -> Any:
        return await self._call(what, lambda: self._run(name, partition, *args))

    def _fence(self, partition: int) -> tuple[str, str, int, str, int]:
        """The fence arguments of every writing script (see :mod:`.redis_scripts`)."""
        fence = self._epoch.fences[partition]
        return (
            self._epoch.candidate,
            self._epoch.named(partition),
            fence.pos,
            fence.token,
            self.fanout_maxlen,
        )

    async def _state(self, partition: int, stream: str = "") -> tuple[str, int, int]:
        epoch, seq, pos = await self._script(
            "read the epoch", "state", partition, *self._fence(partition), stream
        )
        epoch = bytes(epoch).decode()
        self._epoch.adopt(epoch, partition)
        return epoch, int(seq), int(pos)

    async def _fan_state(self, partition: int) -> tuple[str, int]:
        epoch, _, pos = await self._state(partition)
        return epoch, pos

    async def _heads(self, keys: list[str]) -> dict[str, int]:
        heads: dict[str, int] = {}
        for partition in sorted({self.layout.of(k) for k in keys}):
            mine = [k for k in keys if self.layout.of(k) == partition]
            seqs = await self._script("read the last seqs", "heads", partition, *mine)
            heads.update((key, int(seq)) for key, seq in zip(mine, seqs, strict=True))
        return heads

    async def _xread(self, fan: str, cursor: int, block_ms: int) -> Sequence[StreamEntry]:
        reply = await self.clients.reads.xread(
            {fan: f"{cursor}-0"}, count=READ_COUNT, block=block_ms
        )
        return next(iter(reply.values())) if reply else ()

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Check that every partition answers, writing nothing; :class:`StoreError` if not."""
        try:
            await self._call("load the scripts", self._load_scripts)
            for i in range(len(self.layout.partitions)):
                await self._script("read the epoch", "peek", i)
        except StoreError as exc:
            cause = exc.__cause__
            reason = why(cause, self.timeout) if cause is not None else str(exc)
            raise StoreError(f"cannot reach Redis at {self.where}: {reason}") from None

    async def _load_scripts(self) -> None:
        # Loaded up front, so a first call finds them; again when a Redis lacks them (then
        # maybe within a publish's WAIT, which a load must not wait for: it writes nothing).
        with self.client.ensure_replication(0, 1):
            for name, source in SCRIPTS.items():
                self._shas[name] = bytes(await self.client.script_load(source)).decode()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The fan-out readers, upkeep (freeing old buffers) and, on Sentinel, following
        the master, until cancelled."""
        async with trio.open_nursery() as nursery:
            for reader in self.readers:
                await nursery.start(reader.run)
            if self.index is not None:
                await nursery.start(self.index.run, lambda: self.epoch)
            nursery.start_soon(self._upkeep)
            nursery.start_soon(follow_master, self.clients)
            task_status.started()

    async def _upkeep(self) -> None:
        while True:
            await trio.sleep(max(1.0, self.dispatcher.logs.grace / 10))
            self.dispatcher.expire(trio.current_time())

    # ------------------------------------------------------------------ publishing

    async def publish(
        self, events: Sequence[ev.StreamEvent], *, idempotency_key: str | None = None
    ) -> list[Envelope]:
        """Store ``events`` in Redis, atomically per partition; return them stored.

        Every node's fan-out readers (this one's too) dispatch them. Raises
        :class:`~trio_obs.InvalidInput` for a bad batch (nothing stored),
        :class:`~trio_obs.StoreError` when Redis could not take any of it, and
        :class:`~trio_obs.UncertainOutcome` when some of it is, or may be, stored.
        """
        if not events:
            return []
        planned = plan(complete_batch(events, now_iso()))
        started = time.perf_counter()
        key = idempotency_key
        if key is None and self.replicas:
            key = "~" + new_token()  # to learn the seqs of a batch the replicas did not confirm
        ttl = int(IDEMPOTENCY_TTL) if idempotency_key else INTERNAL_KEY_TTL
        parts: dict[int, _Part] = {}
        for i, p in enumerate(planned):
            partition = self.layout.of(p.key)
            parts.setdefault(partition, _Part(partition, [])).indexes.append(i)
        if len(parts) == 1:
            await self._store(next(iter(parts.values())), planned, key or "", ttl)
        else:
            async with trio.open_nursery() as nursery:
                for part in parts.values():
                    nursery.start_soon(self._store, part, planned, key or "", ttl)
        self.dispatcher.stats.commit_latency.observe(time.perf_counter() - started)
        if any(part.result is not None for part in parts.values()):
            raise self._failure(planned, list(parts.values()), idempotency_key is not None)
        released: list[Envelope] = []
        envelopes = await self._envelopes(planned, list(parts.values()), released)
        if self.ordered_all:
            return envelopes
        return await self._global_copies(envelopes, released)

    async def _global_copies(
        self, envelopes: list[Envelope], released: list[Envelope]
    ) -> list[Envelope]:
        """On a Redis Cluster: the ``global`` copies of the root span's statuses, whose fate
        only the script knew (a ``started`` stored once, a closing status held then
        released), written after the batch (``global`` lives in another slot), once each
        whichever node tries. Returns the answer with the copies of its statuses."""
        out: list[Envelope] = []
        every = [*envelopes, *released]
        for i, env in enumerate(every):
            if i < len(envelopes):
                out.append(env)
            if (
                not isinstance(env.event, ev.ExecutionStatusEvent)
                or env.is_copy
                or not env.data  # an answer, not stored
                or env.key == GLOBAL
                or (i + 1 < len(every) and every[i + 1].is_copy)  # the script copied it
            ):
                continue
            copy = await self._global_copy(env)
            if copy is not None and i < len(envelopes):
                out.append(copy)
        return out

    async def _global_copy(self, env: Envelope) -> Envelope | None:
        data = unstamped(env.event)
        fact = (GLOBAL, COPY, env.event.timestamp, "", "", "")
        share = [Planned(env.event, GLOBAL, COPY, data, fact)]
        part = _Part(self.layout.of(GLOBAL), [0])
        await self._store(part, share, f"~copy:{env.key}:{env.seq}", int(IDEMPOTENCY_TTL))
        if part.reply is not None:
            return copy_envelope(env.event, int(part.reply[0]), data)
        if part.failure is not None:
            log.error(
                "the global copy of execution %s's status (seq %d) was not stored: %s",
                env.key, env.seq, why(part.failure, self.timeout),
            )  # fmt: skip
        return None

    async def _store(self, part: _Part, planned: list[Planned], key: str, ttl: int) -> None:
        """Run the publish script for one partition's share; note what became of it."""
        share = [planned[i] for i in part.indexes]
        token = new_token()
        positions = "1" if self.ordered_all else ""
        here = "1" if part.partition == self.layout.of(GLOBAL) else ""
        header = (*self._fence(part.partition), token, key, ttl, positions, here)
        args = (*header, *arguments(share))
        try:
            with trio.fail_after(self.timeout), contextlib.ExitStack() as stack:
                if self.replicas:  # WAIT on the connection that wrote, after the script
                    wait_ms = max(1, int(self.timeout * 250))  # within the call's timeout
                    stack.enter_context(self.client.ensure_replication(self.replicas, wait_ms))
                reply = await self._run("publish", part.partition, *args)
        except Failure as exc:
            part.failure, part.result = exc, outcome_of(exc)
            if part.result == "not replicated" and key:
                await self._learn_seqs(part, args)
            return
        self._epoch.adopt(bytes(reply[0]).decode(), part.partition)
        if reply[1] is not None:
            part.repeat = [(str(k), int(s)) for k, s in orjson.loads(reply[1])]
            return
        part.base = int(reply[2])
        written = sum(1 for v in reply[3::WIDTH] if int(v) > 0) + sum(
            _more_entries(more) for more in reply[7::WIDTH]
        )
        if written:
            self._epoch.fences[part.partition].saw(part.base + written, token)
        part.reply = reply[3:]

    async def _learn_seqs(self, part: _Part, args: tuple[Any, ...]) -> None:
        """A batch stored but not confirmed by the replicas: ask again for its answer."""
        try:
            with trio.fail_after(self.timeout):
                reply = await self._run("publish", part.partition, *args)
        except Failure:
            part.result = "unknown"
            return
        if reply[1] is not None:
            part.repeat = [(str(k), int(s)) for k, s in orjson.loads(reply[1])]

    async def _envelopes(
        self, planned: list[Planned], parts: list[_Part], released: list[Envelope]
    ) -> list[Envelope]:
        """The stored batch's envelopes, in the batch's order (a retry's are read back)."""
        if all(part.reply is not None for part in parts):
            reply: list[Any] = [None] * (WIDTH * len(planned))
            for part in parts:
                assert part.reply is not None
                for j, i in enumerate(part.indexes):
                    reply[WIDTH * i : WIDTH * i + WIDTH] = part.reply[WIDTH * j : WIDTH * j + WIDTH]
            base = parts[0].base if len(parts) == 1 and self.ordered_all else None
            return stored(planned, reply, base, released)
        # A retry: what each partition stored the first time (originals only), in order.
        # (An answer longer than the batch -- a key reused for another batch -- comes whole.)
        placed: list[tuple[int, int, Envelope]] = []
        for n, part in enumerate(parts):
            originals = [i for i in part.indexes if not planned[i].is_copy]
            if part.repeat is not None:
                envs = await self.read_back(part.repeat)
            else:
                assert part.reply is not None
                base = part.base if self.ordered_all else None
                share = stored([planned[i] for i in part.indexes], part.reply, base)
                envs = [e for e in share if not e.is_copy]
            for j, env in enumerate(envs):
                placed.append((originals[j] if j < len(originals) else len(planned) + j, n, env))
        return [env for *_, env in sorted(placed, key=lambda p: p[:2])]

    def _failure(
        self, planned: list[Planned], parts: list[_Part], keyed: bool
    ) -> StoreError | UncertainOutcome:
        """What to raise for a batch not stored whole: what is known of each event."""
        events = [i for i, p in enumerate(planned) if not p.is_copy]
        number = {i: n for n, i in enumerate(events)}
        seqs: list[int | None] = [None] * len(events)
        unknown: list[int] = []
        for part in parts:
            originals = [i for i in part.indexes if not planned[i].is_copy]
            if part.reply is not None:
                for j, i in enumerate(part.indexes):
                    if i in number:
                        seqs[number[i]] = abs(int(part.reply[WIDTH * j])) or None
            elif part.repeat is not None:
                for i, (_, seq) in zip(originals, part.repeat, strict=False):
                    seqs[number[i]] = seq
            elif part.result == "unknown":
                unknown += [number[i] for i in originals]
        failures = [part for part in parts if part.result is not None]
        reasons = sorted({why(p.failure, self.timeout) for p in failures if p.failure})
        reason = "; ".join(reasons)
        results = {p.result for p in failures}
        if results == {"not stored"} and all(s is None for s in seqs):
            return StoreError(f"Redis could not store the events: {reason}")
        retry = (
            "retry with the same Idempotency-Key (nothing is stored twice)"
            if keyed
            else "a retry without an Idempotency-Key may store them twice"
        )
        code: ErrorCode
        if "unknown" in results:
            code = OUTCOME_UNKNOWN
            message = f"not known whether the events were stored ({reason}); {retry}"
        elif "not replicated" in results:
            code = NOT_REPLICATED
            message = (
                f"the events are stored on the Redis primary, but fewer than {self.replicas} "
                f"replica(s) confirmed them in time; {retry}"
            )
        else:
            code = PARTIALLY_STORED
            stored_count = sum(s is not None for s in seqs)
            message = (
                f"{stored_count} of {len(seqs)} events were stored, the others not ({reason}); "
                f"{retry}"
            )
        return UncertainOutcome(message, code=code, seqs=seqs, unknown=sorted(unknown))

    # ------------------------------------------------------------------ subscribing

    async def head(self, stream: str) -> int:
        """The seq of ``stream``'s newest event in Redis (for ``all``: the newest position);
        learns the epoch.

        Replay and catch-up read Redis, so a subscription works on any node, including one
        that never saw the events.
        """
        if stream == ALL:
            pos = 0
            for partition in range(len(self.layout.partitions)):
                pos = (await self._state(partition))[2]
            return pos if self.ordered_all else self._next_pos
        return (await self._state(self.layout.of(stream), stream))[1]

    async def _resume_all(self, resume: Resume, head: int, since_pos: int | None) -> Resume:
        """``all`` resumes from the fan-out stream, as far back as it reaches. On a Redis
        Cluster ``all`` has no global position: a ``since_pos`` is answered with
        ``observability:reset``, then live events (README)."""
        if since_pos is not None and not self.ordered_all:
            return Resume(head, ev.ResetEvent(epoch=self.epoch, last_seq=head))
        if resume.reset is None and resume.cursor < head:
            return await self._still_held(resume, head)
        return resume

    # ------------------------------------------------------------------ `all` by position

    async def _fan_range(self, after: int, count: int) -> tuple[StreamEntry, ...]:
        fan = self.layout.partitions[0].fan
        return await self._call(
            "read the fan-out stream",
            lambda: self.client.xrange(fan, f"{after + 1}-0", "+", count=count),
        )

    async def _still_held(self, resume: Resume, head: int) -> Resume:
        """``all`` resumes from the fan-out stream: a position it no longer holds (trimmed
        past the fan-out's length) is told ``observability:reset`` and starts at its oldest."""
        first = await self._fan_range(resume.cursor, 1)
        oldest = entry_position(first[0]) if first else head + 1
        if oldest <= resume.cursor + 1:
            return resume
        return Resume(oldest - 1, ev.ResetEvent(epoch=self.epoch, last_seq=head))

    async def read_positions(self, *, after: int, limit: int) -> tuple[list[Envelope], int | None]:
        """Events on ``all`` after a fan-out position, for ``all`` subscriptions behind.

        The fan-out positions have no gap: a missing one was trimmed, and the subscription
        ends as a slow consumer (it fell behind what the cluster keeps; its client
        reconnects with ``since_pos`` and is told ``observability:reset``). On a Redis
        Cluster, whose ``all`` has no order to read back, one behind ends the same way.
        """
        if not self.ordered_all:
            raise SubscriptionEnded(SLOW_CONSUMER)
        generation = self._epoch.generations[0]
        entries = await self._fan_range(after, limit)
        self._fence_served(0, generation, entries)
        if entries and entry_position(entries[0]) != after + 1:
            raise SubscriptionEnded(SLOW_CONSUMER)
        page: list[Envelope] = []
        for entry in entries:
            fields = entry_fields(entry)
            if b"s" in fields and b"c" not in fields:  # an event: not a deletion, a copy, a mark
                page.append(envelope_of(fields[b"k"].decode(), int(fields[b"s"]), fields))
        return page, (entry_position(entries[-1]) if len(entries) >= limit else None)

    # ------------------------------------------------------------------ search

    def _searchable(self) -> LocalIndex:
        if self.index is None:
            raise StoreError("this node keeps no search index")
        return self.index

    async def search(self, query: SearchQuery) -> SearchResult:
        """Search this node's copy of the stored events (every node answers alike)."""
        return await self._searchable().search(query)

    async def matches_after(self, query: SearchQuery, *, after: int, upto: int) -> list[Envelope]:
        """This node's indexed events matching a live query between two positions."""
        return await self._searchable().store.matches_after(query, after=after, upto=upto)

    async def _history(self, after: dict[str, int]) -> AsyncIterator[list[Envelope]]:
        """Pages of every stored stream after the given last seqs (a local index's copy)."""
        for partition, keys in enumerate(self.layout.partitions):
            active = await self._call("list the executions", partial(
                self.client.zrange, keys.prefix + "active", 0, -1
            ))  # fmt: skip
            names = [bytes(k).decode() for k in active]
            for key in [GLOBAL, *names] if partition == 0 else names:
                last = after.get(key, 0)
                while True:
                    page = await self._range(key, after=last, limit=_RETAIN_PAGE)
                    if not page:
                        break
                    if not self.ordered_all:
                        self._place(page)  # positions of this node's own (README)
                    yield page
                    last = page[-1].seq

    # ------------------------------------------------------------------ reads

    async def _range(
        self, key: str, *, after: int, limit: int | None = None, upto: int | None = None
    ) -> list[Envelope]:
        end = "+" if upto is None else f"{upto}-0"
        entries = await self._served(
            key,
            lambda: self.client.xrange(
                self._keys(key).stream(key), f"{after + 1}-0", end, count=limit
            ),
        )
        return [envelope_of(key, entry_position(e), entry_fields(e)) for e in entries]

    async def _served(
        self, key: str, xrange: Callable[[], Awaitable[tuple[StreamEntry, ...]]]
    ) -> tuple[StreamEntry, ...]:
        """Entries of ``key``'s stream read for a client, the newest of them fenced."""
        partition = self.layout.of(key)
        generation = self._epoch.generations[partition]
        entries = await self._call("read events", xrange)
        self._fence_served(partition, generation, entries)
        return entries

    def _fence_served(
        self, partition: int, generation: int, entries: Sequence[StreamEntry]
    ) -> None:
        """Entries a client is given fence the history (see :mod:`.redis_scripts`): if Redis
        loses them (a failover, an older file), the next script starts a new epoch, though
        this node's reader never read them from the fan-out (a replay, a catch-up read)."""
        if generation != self._epoch.generations[partition]:
            return  # read in a history now gone
        for entry in reversed(entries):
            fields = entry_fields(entry)
            pos, token = fields.get(b"p"), fields.get(b"b")
            if pos is not None and token is not None:
                self._epoch.fences[partition].saw(int(pos), token.decode())
                return

    async def read_range(self, key: str, *, after: int, upto: int) -> list[Envelope]:
        """Stored envelopes of ``key`` with ``after < seq <= upto``."""
        return await self._range(key, after=after, upto=upto)

    async def read_envelopes(self, key: str, *, after: int, limit: int) -> list[Envelope]:
        """Stored envelopes of ``key`` after a seq, for subscriptions that fell behind.

        While Redis is down it waits for it (closing the subscription ends the wait), so
        a connection that was catching up carries on once Redis is back (SPEC §10).
        """
        wait = 0.05
        while True:
            try:
                return await self._range(key, after=after, limit=limit)
            except StoreError:
                await trio.sleep(wait)
                wait = min(wait * 2, 1.0)

    async def read(self, stream: str, *, after: int = 0, limit: int = 1000) -> list[bytes]:
        """Stored JSON of ``stream``'s events with ``seq > after``, at most ``limit``."""
        if limit <= 0:
            return []
        name = self._keys(stream).stream(stream)
        entries = await self._served(
            stream, lambda: self.client.xrange(name, f"{after + 1}-0", "+", count=limit)
        )
        return [entry_json(entry_position(e), entry_fields(e)) for e in entries]

    async def executions(
        self, limit: int = 100, filters: RunFilters | None = None
    ) -> list[ev.ExecutionSummary]:
        """Known executions, most recently active first (across partitions: by Redis's clock);
        those that pass ``filters`` (this node's search index says which have an agent's
        events, or errors)."""
        if limit <= 0:
            return []
        ids = await self._searchable().store.run_ids(filters) if filters else None
        scan = MAX_EVENTS_LIMIT if filters else limit
        found: list[tuple[float, ev.ExecutionSummary]] = []
        for partition in range(len(self.layout.partitions)):
            flat = await self._script("list the executions", "summaries", partition, scan)
            found += [
                (float(flat[i + 2] or 0), counters_of(flat[i + 1]).summary(bytes(flat[i]).decode()))
                for i in range(0, len(flat), 3)
            ]
        if len(self.layout.partitions) > 1:
            found.sort(key=lambda pair: pair[0], reverse=True)
        summaries = [summary for _, summary in found]
        if filters:
            summaries = [
                s for s in summaries
                if (ids is None or s.execution_id in ids)
                and (filters.state is None or s.last_status == filters.state)
            ]  # fmt: skip
        return summaries[:limit]

    async def problem(self) -> str | None:
        """Why a batch could not be stored now (a write is tried, as a batch's would be,
        with ``WAIT`` for the replicas asked for), or None when it could."""
        token = new_token()
        try:
            with trio.fail_after(self.timeout), contextlib.ExitStack() as stack:
                if self.replicas:
                    wait_ms = max(1, int(self.timeout * 250))
                    stack.enter_context(self.client.ensure_replication(self.replicas, wait_ms))
                for partition in range(len(self.layout.partitions)):
                    await self._run("health", partition, token)
        except ReplicationError:
            return f"fewer than {self.replicas} Redis replica(s) confirm writes in time"
        except Failure as exc:
            return why(exc, self.timeout)
        return None

    # ------------------------------------------------------------------ retention

    async def retain(self, max_idle: float) -> list[str]:
        """Delete every execution whose last write is older than ``max_idle`` seconds.

        Its stream, counters and spans go, and every node forgets what it holds of it in
        memory (told through the fan-out stream). Returns the deleted execution ids.
        """
        gone: list[str] = []
        for partition in range(len(self.layout.partitions)):
            while True:
                ids = await self._script(
                    "delete idle executions", "retain", partition, max_idle, _RETAIN_PAGE,
                    self.fanout_maxlen, new_token(),
                )  # fmt: skip
                gone += [bytes(i).decode() for i in ids]
                if len(ids) < _RETAIN_PAGE:
                    break
        for key in gone:
            self.dispatcher.logs.clear(key)
        return gone


@asynccontextmanager
async def open_redis_hub(
    url: str,
    *,
    redis_timeout: float = DEFAULT_TIMEOUT,
    block: float = 1.0,
    prefix: str = "trio-obs:",
    index: str = ":memory:",
    **options: Any,
) -> AsyncIterator[RedisHub]:
    """Connect to Redis at ``url``, start the hub's readers, and yield the hub.

    ``url`` is ``redis://[:PASSWORD@]HOST:PORT/DB`` (``rediss://`` for TLS), or
    ``redis+sentinel://H1:P1,H2:P2?sentinel_master_name=NAME``, or
    ``redis+cluster://H1:P1[,H2:P2...]`` (see :mod:`~trio_obs.hub.redis_url`). Raises
    :class:`~trio_obs.StoreError` with one sentence if the URL is bad or Redis does not
    answer (and then writes nothing). ``redis_timeout`` bounds each Redis call (seconds);
    ``index`` is the node's own search index (a SQLite file, or ``:memory:``: copied from
    Redis at each start); ``options`` go to :class:`RedisHub`.
    """
    target = parse_redis_url(url)
    try:
        layout = Layout.cluster(prefix) if target.mode == "cluster" else Layout.single(prefix)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    failure: StoreError | None = None
    async with (
        open_clients(
            target, timeout=redis_timeout, block=block, readers=len(layout.partitions)
        ) as clients,
        open_store(index) as store,
    ):
        hub = RedisHub(
            clients, layout=layout, timeout=redis_timeout, block=block, index=store, **options
        )
        try:
            await hub.connect()
        except StoreError as exc:
            failure = exc
        if failure is None:
            async with trio.open_nursery() as nursery:
                await nursery.start(hub.run)
                try:
                    yield hub
                finally:
                    nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
