"""The SQLite store: the one place that assigns ``seq`` and computes derived fields.

One writer task owns all writes. Appends that queue while a commit runs go into the
next transaction together (group commit), so batching grows with load and costs no
delay when idle. Every database call runs in a worker thread, never on the trio loop.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import trio

from . import _events as ev
from ._codec import decode_stream_event
from ._errors import StoreError
from ._routing import Envelope, own_task_id

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    stream_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    task_id TEXT,
    tool TEXT,
    is_copy INTEGER NOT NULL DEFAULT 0,
    data BLOB NOT NULL,
    PRIMARY KEY (stream_key, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streams (
    stream_key TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    event_count INTEGER NOT NULL,
    first_timestamp TEXT,
    last_timestamp TEXT,
    last_status TEXT,
    assertions_total INTEGER NOT NULL DEFAULT 0,
    assertions_passed INTEGER NOT NULL DEFAULT 0,
    activity INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS streams_by_activity ON streams (activity);
CREATE TABLE IF NOT EXISTS spans (
    execution_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    span_id TEXT NOT NULL,
    name TEXT NOT NULL,
    task_id TEXT,
    PRIMARY KEY (execution_id, kind, span_id)
) WITHOUT ROWID;
"""

_SPAN_CACHE_SIZE: Final = 10_000


@attrs.frozen(kw_only=True)
class ExecutionSummary:
    """What the store knows of one stream key (``GET /api/executions``)."""

    execution_id: str
    last_status: str | None
    event_count: int
    last_seq: int
    first_timestamp: str | None
    last_timestamp: str | None

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON object of this summary."""
        return {
            "executionId": self.execution_id,
            "lastStatus": self.last_status,
            "eventCount": self.event_count,
            "lastSeq": self.last_seq,
            "firstTimestamp": self.first_timestamp,
            "lastTimestamp": self.last_timestamp,
        }


@attrs.define
class _Stream:
    """Cached counters of one stream key (mirrors a ``streams`` row)."""

    last_seq: int = 0
    event_count: int = 0
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    last_status: str | None = None
    assertions_total: int = 0
    assertions_passed: int = 0


@attrs.define(eq=False)
class _Append:
    events: Sequence[ev.StreamEvent]
    done: trio.Event = attrs.field(factory=trio.Event)
    result: list[Envelope] | None = None
    error: BaseException | None = None


def _stamp(event: ev.StreamEvent, **changes: Any) -> ev.StreamEvent:
    """``event`` with the store's fields set.

    A fresh event (no ``seq`` yet) belongs to the store from now on and is updated in
    place, which is several times cheaper than ``attrs.evolve``; an event object
    stored a second time is copied, so the first stored one never changes.
    """
    if event.seq is not None:
        return attrs.evolve(event, **changes)
    for name, value in changes.items():
        object.__setattr__(event, name, value)
    return event


CommitListener = Callable[[list[Envelope]], None]
CommitObserver = Callable[[float, int], None]


class _Batch:
    """One append's events being prepared: seqs, derived fields, rows, routing facts."""

    def __init__(
        self,
        store: Store,
        group_streams: dict[str, _Stream],
        group_spans: dict[tuple[str, str, str], tuple[str, str | None]],
    ) -> None:
        self.store = store
        self.group_streams = group_streams
        self.group_spans = group_spans
        self.streams: dict[str, _Stream] = {}
        self.spans: dict[tuple[str, str, str], tuple[str, str | None]] = {}
        self.rows: list[tuple[Any, ...]] = []
        self.order: list[str] = []

    def stream(self, key: str) -> _Stream:
        s = self.streams.get(key)
        if s is None:
            base = self.group_streams.get(key) or self.store._streams.get(key) or _Stream()
            s = self.streams[key] = attrs.evolve(base)
        return s

    def span(self, key: tuple[str, str, str]) -> tuple[str, str | None] | None:
        return self.spans.get(key) or self.group_spans.get(key) or self.store._lookup_span(key)

    def add(self, key: str, event: ev.StreamEvent, **routing: Any) -> Envelope:
        s = self.stream(key)
        s.last_seq += 1
        s.event_count += 1
        if s.first_timestamp is None:
            s.first_timestamp = event.timestamp
        s.last_timestamp = event.timestamp
        env = Envelope.of(key, _stamp(event, seq=s.last_seq), born=time.perf_counter(), **routing)
        self.rows.append(
            (key, env.seq, event.type, event.execution_id, event.timestamp,
             env.task_id, env.tool, int(env.is_copy), env.data)
        )  # fmt: skip
        self.order.append(key)
        return env

    def prepare(self, batch: Sequence[ev.StreamEvent]) -> list[Envelope]:
        envs: list[Envelope] = []
        for event in batch:
            key = ev.stream_key(event)
            task_id, tool = own_task_id(event), None
            match event:
                case ev.AssertionResultEvent():
                    s = self.stream(key)
                    s.assertions_total += 1
                    s.assertions_passed += event.assertion.result == "pass"
                    rate = s.assertions_passed / s.assertions_total
                    event = _stamp(event, running_pass_rate=rate)
                case ev.ToolStartEvent():
                    self.spans[(key, "tool", event.tool_use_id)] = (event.tool, task_id)
                    tool = event.tool
                case ev.SkillStartEvent():
                    self.spans[(key, "skill", event.skill_trace_id)] = (event.skill_name, task_id)
                case ev.ToolEndEvent() | ev.ToolOutputEvent():
                    found = self.span((key, "tool", event.tool_use_id))
                    if found is not None:
                        tool, task_id = found
                case ev.SkillEndEvent():
                    found = self.span((key, "skill", event.skill_trace_id))
                    if found is not None:
                        task_id = found[1]
                case ev.ExecutionStatusEvent():
                    self.stream(key).last_status = event.status
            env = self.add(key, event, task_id=task_id, tool=tool)
            envs.append(env)
            if isinstance(event, ev.ExecutionStatusEvent) and key != ev.GLOBAL:
                copy = attrs.evolve(env.event, seq=None)
                envs.append(self.add(ev.GLOBAL, copy, is_copy=True))
        return envs


class Store:
    """Durable, ordered event storage on SQLite (a file path or ``:memory:``).

    Open it with :func:`open_store`. :meth:`append` stores a batch atomically and
    returns it as envelopes with ``seq`` and derived fields set; the commit listener
    (the broker) sees every committed batch, in commit order, before ``append`` returns.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()  # serializes use of the writer connection
        self._write = self._connect()
        self._write.executescript(_SCHEMA)
        if path == ":memory:":
            self._read, self._read_lock = self._write, self._lock
        else:
            self._read, self._read_lock = self._connect(), threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._activity = 0
        self._spans: OrderedDict[tuple[str, str, str], tuple[str, str | None]] = OrderedDict()
        self._misses: set[tuple[str, str, str]] = set()
        self._load()
        send, self._requests = trio.open_memory_channel[_Append](math.inf)
        self._submit = send
        self.listener: CommitListener | None = None
        self.commit_observer: CommitObserver | None = None
        self.closed = False

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {self.path!r}: {exc}") from exc
        return db

    def _load(self) -> None:
        rows = self._write.execute(
            "SELECT stream_key, last_seq, event_count, first_timestamp, last_timestamp,"
            " last_status, assertions_total, assertions_passed, activity FROM streams"
        ).fetchall()
        for key, *counters, activity in rows:
            self._streams[key] = _Stream(*counters)
            self._activity = max(self._activity, activity)

    # ------------------------------------------------------------------ reads (sync, cached)

    def last_seq(self, key: str) -> int:
        """The seq of the newest committed event of ``key`` (0 if none)."""
        stream = self._streams.get(key)
        return stream.last_seq if stream else 0

    # ------------------------------------------------------------------ writes

    async def append(self, events: Sequence[ev.StreamEvent]) -> list[Envelope]:
        """Store ``events`` in one transaction; return them stored, in order.

        The events of ``execution:status`` are followed by their ``global`` copy.
        """
        if self.closed:
            raise StoreError("the store is closed")
        if not events:
            return []
        request = _Append(events)
        self._submit.send_nowait(request)
        await request.done.wait()
        if request.error is not None:
            raise StoreError(f"could not store the events: {request.error}") from request.error
        assert request.result is not None
        return request.result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: commits queued appends in groups until the store closes."""
        task_status.started()
        async with self._requests:
            async for first in self._requests:
                group = [first]
                while True:
                    try:
                        group.append(self._requests.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self._commit(group)

    async def _commit(self, group: list[_Append]) -> None:
        started = time.perf_counter()
        batches = [r.events for r in group]
        try:
            # Spans not in the cache (after a restart, or evicted) come from the database,
            # in the worker thread, so that preparing needs no I/O.
            if missing := self._missing_spans(batches):
                for key, span in (
                    await trio.to_thread.run_sync(self._select_spans, missing)
                ).items():
                    if span is None:
                        if len(self._misses) >= _SPAN_CACHE_SIZE:
                            self._misses.clear()
                        self._misses.add(key)
                    else:
                        self._remember_span(key, span)
            # Preparing (seqs, derived fields, encoding) is pure Python: it runs here, and
            # the worker thread runs only SQLite, which releases the GIL while it works.
            results, streams, spans, activity, statements = self._prepare_group(batches)
            if statements:
                await trio.to_thread.run_sync(self._execute, statements)
        except BaseException as exc:
            for request in group:
                request.error = exc
                request.done.set()
            if not isinstance(exc, Exception):
                raise
            return
        # Publish the new counters and dispatch in the same step, with no checkpoint
        # between: a subscriber that snapshots last_seq() sees exactly what was sent.
        self._streams.update(streams)
        self._activity = activity
        for span_key, span in spans.items():
            self._remember_span(span_key, span)
        stored = [envs for envs in results if not isinstance(envs, Exception)]
        if self.commit_observer is not None:
            self.commit_observer(time.perf_counter() - started, sum(len(r) for r in stored))
        if self.listener is not None and stored:
            self.listener([env for envs in stored for env in envs])
        for request, outcome in zip(group, results, strict=True):
            if isinstance(outcome, Exception):
                request.error = outcome
            else:
                request.result = outcome
            request.done.set()

    def _remember_span(self, key: tuple[str, str, str], span: tuple[str, str | None]) -> None:
        self._misses.discard(key)
        self._spans[key] = span
        self._spans.move_to_end(key)
        if len(self._spans) > _SPAN_CACHE_SIZE:
            self._spans.popitem(last=False)

    def _prepare_group(
        self, batches: list[Sequence[ev.StreamEvent]]
    ) -> tuple[
        list[list[Envelope] | Exception],
        dict[str, _Stream],
        dict[tuple[str, str, str], tuple[str, str | None]],
        int,
        list[tuple[str, list[tuple[Any, ...]]]],
    ]:
        """Stage every batch of a group: envelopes, new counters, and the SQL to run.

        Each batch is staged on its own and merged only if all of it could be
        prepared, so a bad batch fails alone and never half-applies.
        """
        streams: dict[str, _Stream] = {}
        new_spans: dict[tuple[str, str, str], tuple[str, str | None]] = {}
        last_write: dict[str, None] = {}  # stream keys in the order of their last write
        rows: list[tuple[Any, ...]] = []
        results: list[list[Envelope] | Exception] = []
        for batch in batches:
            try:
                staged = _Batch(self, streams, new_spans)
                envs = staged.prepare(batch)
            except Exception as exc:
                results.append(exc)
                continue
            streams.update(staged.streams)
            new_spans.update(staged.spans)
            rows.extend(staged.rows)
            for key in staged.order:
                last_write.pop(key, None)
                last_write[key] = None
            results.append(envs)
        if not rows:
            return results, {}, {}, self._activity, []
        activity = self._activity
        stream_rows = []
        for key in last_write:
            activity += 1
            st = streams[key]
            stream_rows.append((
                key, st.last_seq, st.event_count, st.first_timestamp, st.last_timestamp,
                st.last_status, st.assertions_total, st.assertions_passed, activity,
            ))  # fmt: skip
        statements = [("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)", rows)]
        if new_spans:
            span_rows = [(*k, *v) for k, v in new_spans.items()]
            statements.append(("INSERT OR REPLACE INTO spans VALUES (?,?,?,?,?)", span_rows))
        statements.append(
            ("INSERT OR REPLACE INTO streams VALUES (?,?,?,?,?,?,?,?,?)", stream_rows)
        )
        return results, streams, new_spans, activity, statements

    def _execute(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        """Runs in a worker thread: the group's statements in one transaction."""
        with self._lock:
            try:
                self._write.execute("BEGIN IMMEDIATE")
                for sql, rows in statements:
                    self._write.executemany(sql, rows)
                self._write.execute("COMMIT")
            except BaseException:
                if self._write.in_transaction:
                    self._write.execute("ROLLBACK")
                raise

    def _lookup_span(self, key: tuple[str, str, str]) -> tuple[str, str | None] | None:
        return self._spans.get(key)

    def _missing_spans(self, batches: list[Sequence[ev.StreamEvent]]) -> list[tuple[str, str, str]]:
        """Span keys the group ends or streams output for, known neither here nor by it."""
        started: set[tuple[str, str, str]] = set()
        missing: list[tuple[str, str, str]] = []
        for batch in batches:
            for event in batch:
                match event:
                    case ev.ToolStartEvent():
                        started.add((event.execution_id, "tool", event.tool_use_id))
                    case ev.SkillStartEvent():
                        started.add((event.execution_id, "skill", event.skill_trace_id))
                    case ev.ToolEndEvent() | ev.ToolOutputEvent():
                        key = (event.execution_id, "tool", event.tool_use_id)
                        if key not in started and key not in self._spans:
                            missing.append(key)
                    case ev.SkillEndEvent():
                        key = (event.execution_id, "skill", event.skill_trace_id)
                        if key not in started and key not in self._spans:
                            missing.append(key)
        return [k for k in dict.fromkeys(missing) if k not in self._misses]

    def _select_spans(
        self, keys: list[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], tuple[str, str | None] | None]:
        """Runs in a worker thread: the stored spans of ``keys`` (None where unknown)."""
        found: dict[tuple[str, str, str], tuple[str, str | None] | None] = {}
        with self._lock:
            for key in keys:
                row = self._write.execute(
                    "SELECT name, task_id FROM spans WHERE execution_id=? AND kind=? AND span_id=?",
                    key,
                ).fetchone()
                found[key] = (row[0], row[1]) if row else None
        return found

    # ------------------------------------------------------------------ reads (async, off-loop)

    async def read(
        self, key: str, *, after: int = 0, limit: int | None = None, upto: int | None = None
    ) -> list[Envelope]:
        """Stored envelopes of ``key`` with ``after < seq <= upto``, oldest first."""
        rows = await self._query(
            "SELECT seq, task_id, tool, is_copy, data FROM events"
            " WHERE stream_key=? AND seq>? AND seq<=? ORDER BY seq LIMIT ?",
            (key, after, upto if upto is not None else 2**62, -1 if limit is None else limit),
        )
        return [
            Envelope(key, seq, decode_stream_event(data), bytes(data),
                     ev.TOPIC_OF_TYPE[_type_of(data)], task_id, tool, bool(is_copy))
            for seq, task_id, tool, is_copy, data in rows
        ]  # fmt: skip

    async def read_json(self, key: str, *, after: int = 0, limit: int = 1000) -> list[bytes]:
        """The stored JSON of events of ``key`` with ``seq > after``, at most ``limit``."""
        rows = await self._query(
            "SELECT data FROM events WHERE stream_key=? AND seq>? ORDER BY seq LIMIT ?",
            (key, after, limit),
        )
        return [bytes(r[0]) for r in rows]

    async def executions(self, limit: int = 100) -> list[ExecutionSummary]:
        """Known executions, most recently active first (``global`` left out)."""
        rows = await self._query(
            "SELECT stream_key, last_status, event_count, last_seq, first_timestamp,"
            " last_timestamp FROM streams WHERE stream_key != ? ORDER BY activity DESC LIMIT ?",
            (ev.GLOBAL, limit),
        )
        return [ExecutionSummary(
            execution_id=r[0], last_status=r[1], event_count=r[2], last_seq=r[3],
            first_timestamp=r[4], last_timestamp=r[5]) for r in rows]  # fmt: skip

    async def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        if self.closed:
            raise StoreError("the store is closed")

        def run() -> list[Any]:
            with self._read_lock:
                return self._read.execute(sql, params).fetchall()

        try:
            return await trio.to_thread.run_sync(run)
        except sqlite3.Error as exc:
            raise StoreError(f"could not read the store: {exc}") from exc

    def close(self) -> None:
        """Close the database connections (pending appends fail)."""
        if self.closed:
            return
        self.closed = True
        self._submit.close()
        with self._lock:
            self._write.close()
        if self._read is not self._write:
            with self._read_lock:
                self._read.close()


def _type_of(data: bytes) -> str:
    # The codec writes "type" first: {"type":"tool:start",...}
    end = data.index(b'"', 9)
    return data[9:end].decode()


@asynccontextmanager
async def open_store(path: str = ":memory:") -> AsyncIterator[Store]:
    """Open a :class:`Store` with its writer task; on exit, finish queued writes and close."""
    store = await trio.to_thread.run_sync(Store, path)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            try:
                yield store
            finally:
                store._submit.close()
    finally:
        store.close()
