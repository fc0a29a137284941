"""The Redis hub: several nodes as one server, on one Redis (SPEC §10, DESIGN.md §4).

Publishing completes a batch (the history-free rules, as on one node), then one Lua
script stores it atomically: seqs and counters per stream key, both streams, the
idempotency key (:mod:`~trio_obs.hub.redis_scripts`). Nothing is dispatched here:
every node, this one included, reads the fan-out stream with its
:class:`~trio_obs.hub.redis_reader.FanoutReader` and dispatches through the same
:class:`~trio_obs.hub.dispatch.Dispatcher` as a single node. Subscriptions that fall
behind, replays and reads go to the execution streams, on any node.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import orjson
import trio
from coredis import Redis
from coredis.exceptions import ReplicationError
from coredis.response.types import StreamEntry
from coredis.retry import NoRetryPolicy

from ..core import events as ev
from ..core.errors import StoreError, SubscriptionEnded
from ..core.ledger import complete_batch
from ..core.protocol import (
    ALL,
    DEFAULT_BUFFER_BYTES,
    DEFAULT_BUFFER_SIZE,
    DEFAULT_QUEUE_SIZE,
    GLOBAL,
    MAX_EVENTS_LIMIT,
    SLOW_CONSUMER,
)
from ..core.routing import Envelope
from ..core.search import RunFilters, SearchQuery, SearchResult
from ..core.session import Resume, resume_point
from ..core.stats import HubStats
from .base import Waker
from .clock import now_iso
from .dispatch import Dispatcher, LiveSubscription
from .local import IDEMPOTENCY_TTL
from .local_index import LocalIndex
from .redis_codec import entry_json, envelope_count, envelope_of, plan, stored
from .redis_reader import (
    Epoch,
    Failure,
    FanoutReader,
    entry_fields,
    entry_position,
    new_epoch,
)
from .redis_scripts import BUMP_EPOCH, HEADS, PUBLISH, RETAIN, STATE, SUMMARIES, Keys
from .sqlite import Store, open_store

T = TypeVar("T")

DEFAULT_FANOUT_MAXLEN: Final = 100_000
"""Fan-out entries Redis keeps (about): how far a node's reader may fall behind."""
DEFAULT_TIMEOUT: Final = 2.0
"""Seconds a Redis call may take before the hub reports the store unavailable."""
_RETAIN_PAGE: Final = 1000


def redacted(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, fit for logs and errors."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<a Redis URL that does not parse>"


def redis_client(url: str, *, timeout: float) -> Redis[bytes]:
    """A coredis client for ``url`` (not connected yet); :class:`StoreError` for a bad URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise StoreError(f"the Redis URL {redacted(url)} does not parse: {exc}") from None
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise StoreError(
            f"the Redis URL must look like redis://HOST:PORT/DB (rediss:// for TLS, "
            f"redis://:PASSWORD@HOST:PORT/DB with a password), got {redacted(url)!r}"
        )
    try:
        client: Redis[bytes] = Redis.from_url(
            url,
            decode_responses=False,
            stream_timeout=timeout,
            connect_timeout=min(timeout, 2.0),
            retry_policy=NoRetryPolicy(),
        )
    except (ValueError, TypeError) as exc:
        raise StoreError(f"the Redis URL {redacted(url)} is not usable: {exc}") from None
    return client


class RedisHub:
    """The hub of one node of several sharing a Redis; open it with :func:`open_redis_hub`."""

    def __init__(
        self,
        client: Redis[bytes],
        reader_client: Redis[bytes],
        *,
        where: str = "redis",
        prefix: str = "trio-obs:",
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
        self.client = client
        self.where = where
        """Where Redis is (its URL without a password), for messages."""
        self.keys = Keys(prefix)
        self.fanout_maxlen = fanout_maxlen
        self.timeout = timeout
        self.dispatcher = Dispatcher(
            self,
            buffer_size=buffer_size,
            queue_size=queue_size,
            buffer_bytes=buffer_bytes,
            max_buffers=max_buffers,
            buffer_grace=buffer_grace,
        )
        self._epoch = Epoch(self.dispatcher)
        self._scripts = {
            name: client.register_script(source)
            for name, source in (
                ("publish", PUBLISH), ("state", STATE), ("heads", HEADS), ("bump", BUMP_EPOCH),
                ("summaries", SUMMARIES), ("retain", RETAIN),
            )
        }  # fmt: skip
        self.reader = FanoutReader(
            reader_client,
            self.keys.fan,
            self.dispatcher,
            self._epoch,
            state=self._fan_state,
            heads=self._heads,
            bump=self._bump,
            block=block,
        )
        self.index = LocalIndex(index, self.dispatcher, self._history) if index else None
        """This node's search index (SPEC §14; DESIGN.md §6), fed by its own reader."""

    @property
    def epoch(self) -> str:
        """The epoch of Redis's history (the same on every node; new if Redis lost its data)."""
        return self._epoch.value

    @property
    def buffer_size(self) -> int:
        """Events replayed to a new subscriber without ``since``."""
        return self.dispatcher.buffer_size

    @property
    def queue_size(self) -> int:
        """Events a subscriber may fall behind in memory."""
        return self.dispatcher.queue_size

    # ------------------------------------------------------------------ Redis calls

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, trio.TooSlowError):
            return f"no answer within {self.timeout:g} s"
        return str(exc) or type(exc).__name__

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` within the timeout; :class:`StoreError` if Redis cannot answer."""
        try:
            with trio.fail_after(self.timeout):
                return await call()
        except Failure as exc:
            raise StoreError(f"Redis at {self.where} could not {what}: {self._why(exc)}") from exc

    async def _script(self, what: str, name: str, *args: str | bytes | int | float) -> Any:
        script = self._scripts[name]
        return await self._call(what, lambda: script(args=[self.keys.prefix, *args]))

    async def _state(self, stream: str = "") -> tuple[str, int, int]:
        epoch, seq, pos = await self._script(
            "read the epoch", "state", self._epoch.candidate, stream
        )
        return bytes(epoch).decode(), int(seq), int(pos)

    async def _fan_state(self) -> tuple[str, int]:
        epoch, _, pos = await self._state()
        return epoch, pos

    async def _heads(self, keys: list[str]) -> dict[str, int]:
        seqs = await self._script("read the last seqs", "heads", *keys)
        return {key: int(seq) for key, seq in zip(keys, seqs, strict=True)}

    async def _bump(self, old: str) -> str:
        return bytes(await self._script("start a new epoch", "bump", old, new_epoch())).decode()

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        """Check that Redis answers and learn its epoch; :class:`StoreError` if it does not."""
        try:
            await self._call("load the scripts", self._load_scripts)
            epoch, _, _ = await self._state()
        except StoreError as exc:
            why = self._why(exc.__cause__) if exc.__cause__ is not None else str(exc)
            raise StoreError(f"cannot reach Redis at {self.where}: {why}") from None
        self._epoch.adopt(epoch)

    async def _load_scripts(self) -> None:
        # Loaded up front, so a first call finds them (coredis would load one that is missing).
        for script in self._scripts.values():
            await self.client.script_load(script.script)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The fan-out reader and upkeep (freeing old buffers), until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.reader.run)
            if self.index is not None:
                await nursery.start(self.index.run, lambda: self.epoch)
            nursery.start_soon(self._upkeep)
            task_status.started()

    async def _upkeep(self) -> None:
        while True:
            await trio.sleep(max(1.0, self.dispatcher.logs.grace / 10))
            self.dispatcher.expire(trio.current_time())

    # ------------------------------------------------------------------ publishing

    async def publish(
        self, events: Sequence[ev.StreamEvent], *, idempotency_key: str | None = None
    ) -> list[Envelope]:
        """Store ``events`` as one atomic batch in Redis; return them stored.

        Every node's fan-out reader (this one's too) dispatches them. Raises
        :class:`~trio_obs.InvalidInput` for a bad batch (nothing stored) and
        :class:`~trio_obs.StoreError` when Redis cannot take it.
        """
        if not events:
            return []
        planned, args = plan(complete_batch(events, now_iso()))
        started = time.perf_counter()
        header = (
            self._epoch.candidate,
            idempotency_key or "",
            int(IDEMPOTENCY_TTL),
            self.fanout_maxlen,
            envelope_count(planned),
        )
        with contextlib.ExitStack() as stack:
            if self.replicas:  # WAIT on the connection that wrote, after the script
                wait_ms = max(1, int(self.timeout * 250))  # within the call's timeout
                stack.enter_context(self.client.ensure_replication(self.replicas, wait_ms))
            try:
                reply = await self._script("store the events", "publish", *header, *args)
            except StoreError as exc:
                if isinstance(exc.__cause__, ReplicationError):
                    raise StoreError(
                        f"Redis at {self.where} stored the events but fewer than "
                        f"{self.replicas} replica(s) confirmed them in time; retry with the "
                        "same Idempotency-Key"
                    ) from exc
                raise
        self.dispatcher.stats.commit_latency.observe(time.perf_counter() - started)
        self._epoch.adopt(bytes(reply[0]).decode())
        if reply[1] is not None:
            answer = [(str(key), int(seq)) for key, seq in orjson.loads(reply[1])]
            return await self._read_back(answer)
        return stored(planned, reply[2:-1], int(reply[-1]))

    async def _read_back(self, answer: list[tuple[str, int]]) -> list[Envelope]:
        """The envelopes an earlier request stored, read back."""
        out: list[Envelope] = []
        i = 0
        while i < len(answer):
            key, first = answer[i]
            j = i
            while j + 1 < len(answer) and answer[j + 1] == (key, answer[j][1] + 1):
                j += 1
            out += await self._range(key, after=first - 1, upto=answer[j][1])
            i = j + 1
        return out

    # ------------------------------------------------------------------ subscribing

    async def open_subscription(
        self,
        stream: str,
        *,
        since: int | None = None,
        epoch: str | None = None,
        queue_size: int | None = None,
        waker: Waker | None = None,
        since_pos: int | None = None,
    ) -> tuple[LiveSubscription, Resume]:
        """Subscribe to an execution, ``global`` or ``all``, resuming after ``since``
        (``all``: after the fan-out position ``since_pos``).

        Replay and catch-up read Redis, so it works on any node, including one that never
        saw the events; ``epoch`` is the client's, which may get it ``observability:reset``.
        """
        if since is not None and since < 0:
            raise ValueError("since must be >= 0")
        if since_pos is not None and since_pos < 0:
            raise ValueError("since_pos must be >= 0")
        current, head, pos = await self._state("" if stream == ALL else stream)
        self._epoch.adopt(current)
        if stream == ALL:
            head, since = pos, since_pos
        resume = resume_point(
            stream,
            since=since,
            client_epoch=epoch,
            epoch=current,
            last_seq=head,
            buffer_size=self.buffer_size,
        )
        if stream == ALL and resume.reset is None and resume.cursor < head:
            resume = await self._still_held(resume, head)
        sub = self.dispatcher.subscribe(
            stream, cursor=resume.cursor, head=head, queue_size=queue_size, waker=waker
        )
        return sub, resume

    # ------------------------------------------------------------------ reads

    async def _range(
        self, key: str, *, after: int, limit: int | None = None, upto: int | None = None
    ) -> list[Envelope]:
        end = "+" if upto is None else f"{upto}-0"
        entries = await self._call(
            "read events",
            lambda: self.client.xrange(self.keys.stream(key), f"{after + 1}-0", end, count=limit),
        )
        return [envelope_of(key, entry_position(e), entry_fields(e)) for e in entries]

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

    # ------------------------------------------------------------------ `all` by position

    async def _fan_range(self, after: int, count: int) -> tuple[StreamEntry, ...]:
        return await self._call(
            "read the fan-out stream",
            lambda: self.client.xrange(self.keys.fan, f"{after + 1}-0", "+", count=count),
        )

    async def _still_held(self, resume: Resume, head: int) -> Resume:
        """``all`` resumes from the fan-out stream: a position it no longer holds (trimmed
        past ``--fanout-maxlen``) is told ``observability:reset`` and starts at its oldest."""
        first = await self._fan_range(resume.cursor, 1)
        oldest = entry_position(first[0]) if first else head + 1
        if oldest <= resume.cursor + 1:
            return resume
        return Resume(oldest - 1, ev.ResetEvent(epoch=self.epoch, last_seq=head))

    async def read_positions(self, *, after: int, limit: int) -> tuple[list[Envelope], int | None]:
        """Events on ``all`` after a fan-out position, for ``all`` subscriptions behind.

        The fan-out positions have no gap: a missing one was trimmed, and the subscription
        ends as a slow consumer (it fell behind what the cluster keeps; its client
        reconnects with ``since_pos`` and is told ``observability:reset``).
        """
        entries = await self._fan_range(after, limit)
        if entries and entry_position(entries[0]) != after + 1:
            raise SubscriptionEnded(SLOW_CONSUMER)
        page: list[Envelope] = []
        for entry in entries:
            fields = entry_fields(entry)
            if b"x" not in fields and b"c" not in fields:  # not a deletion, not a copy
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
        keys = await self._call(
            "list the executions", lambda: self.client.zrange(self.keys.prefix + "active", 0, -1)
        )
        for key in [GLOBAL, *(bytes(k).decode() for k in keys)]:
            last = after.get(key, 0)
            while True:
                page = await self._range(key, after=last, limit=_RETAIN_PAGE)
                if not page:
                    break
                yield page
                last = page[-1].seq

    async def read(self, stream: str, *, after: int = 0, limit: int = 1000) -> list[bytes]:
        """Stored JSON of ``stream``'s events with ``seq > after``, at most ``limit``."""
        if limit <= 0:
            return []
        entries = await self._call(
            "read events",
            lambda: self.client.xrange(
                self.keys.stream(stream), f"{after + 1}-0", "+", count=limit
            ),
        )
        return [entry_json(entry_position(e), entry_fields(e)) for e in entries]

    async def executions(
        self, limit: int = 100, filters: RunFilters | None = None
    ) -> list[ev.ExecutionSummary]:
        """Known executions, most recently active first (those that pass ``filters``:
        this node's search index says which have an agent's events, or errors)."""
        if limit <= 0:
            return []
        ids = await self._searchable().store.run_ids(filters) if filters else None
        scan = MAX_EVENTS_LIMIT if filters else limit
        flat = await self._script("list the executions", "summaries", scan)
        text = [None if v is None else bytes(v).decode() for v in flat]
        summaries = [
            ev.ExecutionSummary(
                execution_id=cast(str, text[i]),
                last_seq=int(text[i + 1] or 0),
                event_count=int(text[i + 2] or 0),
                first_timestamp=text[i + 3],
                last_timestamp=text[i + 4],
                last_status=text[i + 5],
            )
            for i in range(0, len(text), 6)
        ]
        if filters:
            summaries = [
                s for s in summaries
                if (ids is None or s.execution_id in ids)
                and (filters.state is None or s.last_status == filters.state)
            ]  # fmt: skip
        return summaries[:limit]

    async def healthy(self) -> bool:
        """Whether Redis answers a ping within a second (or the timeout, if shorter)."""
        with trio.move_on_after(min(1.0, self.timeout)):
            try:
                await self.client.ping()
            except Failure:
                return False
            return True
        return False

    def stats(self) -> HubStats:
        """Counters for ``/metrics`` (this node's)."""
        return self.dispatcher.snapshot()

    def subscriptions(self) -> list[LiveSubscription]:
        """This node's open subscriptions."""
        return self.dispatcher.subscriptions()

    # ------------------------------------------------------------------ retention

    async def retain(self, max_idle: float) -> list[str]:
        """Delete every execution whose last write is older than ``max_idle`` seconds.

        Its stream, counters and spans go, and every node forgets what it holds of it in
        memory (told through the fan-out stream). Returns the deleted execution ids.
        """
        gone: list[str] = []
        while True:
            ids = await self._script(
                "delete idle executions", "retain", max_idle, _RETAIN_PAGE, self.fanout_maxlen
            )
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
    index: str = ":memory:",
    **options: Any,
) -> AsyncIterator[RedisHub]:
    """Connect to Redis at ``url``, start the hub's reader, and yield the hub.

    ``url`` is ``redis://[:PASSWORD@]HOST:PORT/DB`` (``rediss://`` for TLS). Raises
    :class:`~trio_obs.StoreError` with one sentence if the URL is bad or Redis does not
    answer. ``redis_timeout`` bounds each Redis call (seconds); ``index`` is the node's
    own search index (a SQLite file, or ``:memory:``: copied from Redis at each start);
    ``options`` go to :class:`RedisHub`.
    """
    timeout = redis_timeout
    client = redis_client(url, timeout=timeout)
    reader = redis_client(url, timeout=timeout + block)
    failure: StoreError | None = None
    async with client, reader, open_store(index) as store:
        hub = RedisHub(
            client, reader, where=redacted(url), timeout=timeout, block=block, index=store,
            **options,
        )  # fmt: skip
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
