"""The SQLite store: rows in, rows out (the single-node default, SPEC §7).

It writes what the ledger staged (event, stream and span rows) in one transaction and
reads events, summaries and spans back. A commit is on disk before it is acknowledged
(``durability="full"``: the WAL is synced at each commit, in a worker thread). With
``durability="normal"`` a small write runs on the trio thread itself: SQLite commits
one event in about 6 us of CPU, where handing it to a worker thread costs about 120 us
(measured: the GIL's hand-offs). Large writes, every read and the WAL checkpoints
(which fsync) run in a worker thread, so the loop never waits on the disk.
One server owns a database file at a time: a second one is refused at open, naming it,
and so is a database of another application.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypeAlias, TypeVar, cast

import orjson
import trio

from ..core import events as ev
from ..core.errors import InvalidInput, StoreError
from ..core.ledger import Span, SpanKey, Stage, StreamCounters
from ..core.protocol import GLOBAL, INVALID_QUERY, TOPIC_OF_TYPE
from ..core.routing import Envelope
from ..core.search import RunFilters, SearchHit, SearchQuery, SearchResult
from ..core.spanrules import SpanRecord
from ..core.wire import decode_stream_event, encode_kept
from . import search_sql
from .lockfile import Mark, StoreLock, boot_id
from .sql_blocks import insert_rows
from .wal import WAL_QUIET_SECONDS, WAL_SIZE_LIMIT, CheckpointMode, WalWatch

log = logging.getLogger("trio_obs.store")

_SPANS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS spans (
    execution_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    task_id TEXT,
    parent_span_id TEXT,
    agent TEXT,
    model TEXT,
    open_seq INTEGER NOT NULL DEFAULT 0,
    close_seq INTEGER NOT NULL DEFAULT 0,
    close_state TEXT,
    PRIMARY KEY (execution_id, span_id)
) WITHOUT ROWID;
"""
EVENTS_TABLE: Final = """
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
    pos INTEGER,
    PRIMARY KEY (stream_key, seq)
) WITHOUT ROWID;
"""
"""The stored events (also what `benchmarks/floor.py` writes into)."""
_SCHEMA: Final = f"""
{EVENTS_TABLE}CREATE TABLE IF NOT EXISTS streams (
    stream_key TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    event_count INTEGER NOT NULL,
    first_timestamp TEXT,
    last_timestamp TEXT,
    last_status TEXT,
    assertions_total INTEGER NOT NULL DEFAULT 0,
    assertions_passed INTEGER NOT NULL DEFAULT 0,
    activity INTEGER NOT NULL,
    updated REAL NOT NULL DEFAULT 0,
    started_seq INTEGER NOT NULL DEFAULT 0,
    status_seq INTEGER NOT NULL DEFAULT 0,
    open_spans INTEGER NOT NULL DEFAULT 0,
    held BLOB,
    name TEXT,
    name_since TEXT,
    conversation_id TEXT,
    agents TEXT,
    model_calls INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    tool_calls INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    models TEXT
);
CREATE INDEX IF NOT EXISTS streams_by_activity ON streams (activity);
CREATE INDEX IF NOT EXISTS streams_by_update ON streams (updated);
{_SPANS_TABLE}
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    created REAL NOT NULL,
    answer TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS position_backfill (
    stream_key TEXT PRIMARY KEY,
    done INTEGER NOT NULL,
    upto INTEGER NOT NULL,
    base INTEGER NOT NULL
) WITHOUT ROWID;
"""
_POSITION_INDEX: Final = (
    "CREATE UNIQUE INDEX IF NOT EXISTS events_by_pos ON events (pos) WHERE pos IS NOT NULL"
)
_POSITIONED: Final = "position_backfill"
"""Events stored before positions existed get ``pos = base + seq``, stream by stream, in the
order of their streams' activity (a table the store empties in the background)."""
_MAX_SEQ: Final = 2**62
_T = TypeVar("_T")
INLINE_ROWS: Final = 64
INLINE_BYTES: Final = 64 * 1024
INLINE_LOOKUPS: Final = 64
"""Point reads (counters, spans, idempotency keys) of at most this many keys run on the
trio thread when the writer connection is free."""
"""A write of at most this many event rows and JSON bytes runs on the trio thread."""
_BUSY_TIMEOUT_MS: Final = 5000
_CHECKPOINT_WAIT_MS: Final = 20
"""How long a RESTART or TRUNCATE checkpoint waits for readers before it settles for less."""

Durability: TypeAlias = Literal["full", "normal"]
DURABILITIES: Final[tuple[Durability, ...]] = ("full", "normal")
DEFAULT_DURABILITY: Final[Durability] = "full"
_SYNCHRONOUS: Final[dict[str, str]] = {"full": "FULL", "normal": "NORMAL"}
_MIN_FREE_DISK: Final = 16 * 1024 * 1024
"""Below this much free space beside the database, the store says it cannot take writes."""
_PROBE: Final = "\x00trio-obs health probe"
"""The key of the rows a health check writes (and rolls back)."""
_COUNTERS: Final = (
    "last_seq, event_count, first_timestamp, last_timestamp, last_status,"
    " assertions_total, assertions_passed, activity, updated, started_seq, status_seq,"
    " open_spans, held, name, name_since, conversation_id, agents, model_calls,"
    " input_tokens, output_tokens, tool_calls, errors, models"
)
_STREAM_COLUMNS: Final = {
    "updated": "REAL NOT NULL DEFAULT 0",
    **dict.fromkeys(("started_seq", "status_seq", "open_spans"), "INTEGER NOT NULL DEFAULT 0"),
    "held": "BLOB",
    **dict.fromkeys(("name", "name_since", "conversation_id", "agents"), "TEXT"),
    **dict.fromkeys(
        ("model_calls", "input_tokens", "output_tokens", "tool_calls", "errors"),
        "INTEGER NOT NULL DEFAULT 0",
    ),
    "models": "TEXT",
}
"""Columns of ``streams`` that an older store may not have (added when it is opened)."""
_SPAN_COLUMNS: Final = (
    "execution_id, span_id, kind, name, task_id, parent_span_id, agent, model, open_seq,"
    " close_seq, close_state"
)


def _counters_of(row: Sequence[Any]) -> StreamCounters:
    """Counters from a ``streams`` row (the :data:`_COUNTERS` columns)."""
    held = row[12]
    agents, models = row[16], row[22]
    plain = _COUNTERS.replace(" ", "").split(",")[:12]
    return StreamCounters(
        **dict(zip(plain, row[:12], strict=True)),
        held=decode_stream_event(held) if held else None,  # type: ignore[arg-type]
        name=row[13], name_since=row[14], conversation_id=row[15],
        agents=tuple(orjson.loads(agents)) if agents else (),
        model_calls=row[17], input_tokens=row[18], output_tokens=row[19],
        tool_calls=row[20], errors=row[21],
        models={k: (v[0], v[1]) for k, v in orjson.loads(models).items()} if models else {},
    )  # fmt: skip


def _stream_row(key: str, s: StreamCounters) -> tuple[Any, ...]:
    """The ``streams`` row of counters (every column, in the table's order)."""
    return (
        key, s.last_seq, s.event_count, s.first_timestamp, s.last_timestamp, s.last_status,
        s.assertions_total, s.assertions_passed, s.activity, s.updated, s.started_seq,
        s.status_seq, s.open_spans, encode_kept(s.held) if s.held is not None else None,
        s.name, s.name_since, s.conversation_id,
        orjson.dumps(s.agents).decode() if s.agents else None, s.model_calls,
        s.input_tokens, s.output_tokens, s.tool_calls, s.errors,
        orjson.dumps(s.models).decode() if s.models else None,
    )  # fmt: skip


Statements = list[tuple[str, Iterable[tuple[Any, ...]]]]
KeyRow = tuple[str, list[tuple[str, int]]]
"""An ``Idempotency-Key`` and its answer: the (stream key, seq) of each event it stored."""


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _type_of(data: bytes) -> str:
    # The converter writes "type" first: {"type":"tool:start",...}
    end = data.index(b'"', 9)
    return data[9:end].decode()


def _tables(db: sqlite3.Connection) -> frozenset[str]:
    """The tables of a database (SQLite's own left out)."""
    names = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return frozenset(name for (name,) in names if not name.startswith("sqlite_"))


@functools.cache
def _our_tables() -> frozenset[str]:
    """The tables of a new store: its schema's, its search index's and the index's own."""
    store = Store(":memory:")
    try:
        return _tables(store._write)
    finally:
        store.close()


class Store:
    """Durable event rows on SQLite (a path or ``:memory:``); open it with :func:`open_store`.

    ``durability``: ``full`` (the default) syncs the WAL at every commit, so an
    acknowledged write survives a machine crash; ``normal`` syncs it only at checkpoints
    (faster; a machine crash, not a process crash, may lose the last second or so of
    acknowledged writes, and the store then starts a new epoch: SPEC §10).
    """

    def __init__(self, path: str, *, durability: Durability = DEFAULT_DURABILITY) -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}")
        self.path = path
        self.durability = durability
        self._owner = None if path == ":memory:" else StoreLock(path)
        self._lock = threading.Lock()  # serializes use of the writer connection
        try:
            self._write = self._connect(check=True)
            self._migrate()
            self._write.executescript(_SCHEMA)
            self._migrate_positions()
            self._write.execute(_POSITION_INDEX)
            self.epoch = self._load_epoch()
            self._prepare_search()
            self._position = self._stored_activity()
            self._continue_history()
        except (sqlite3.Error, StoreError) as exc:
            self._give_up()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open the store at {path!r}: {exc}") from exc
        if path == ":memory:":
            self._read, self._read_lock = self._write, self._lock
        else:
            self._read, self._read_lock = self._connect(), threading.Lock()
        self.closed = False
        self._wal = None if path == ":memory:" else WalWatch(f"{path}-wal")

    # ------------------------------------------------------------------ opening

    def _give_up(self) -> None:
        """Opening failed: close what was opened; the lock file stays if it holds a mark."""
        with contextlib.suppress(AttributeError, sqlite3.Error):
            self._write.close()
        if self._owner is not None:
            self._owner.release(remove=self._owner.previous is None)

    def _connect(self, *, check: bool = False) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            search_sql.register(db)
            if check:  # before anything below writes to the file
                self._check_ours(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={_SYNCHRONOUS[self.durability]}")
            db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            # Checkpoints fsync: the store runs them itself, off the trio thread.
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {self.path!r}: {exc}") from exc
        return db

    def _check_ours(self, db: sqlite3.Connection) -> None:
        """Refuse a database of another application (it keeps its tables, untouched)."""
        tables = _tables(db)
        if not tables or tables <= _our_tables():
            return  # a new store, or one of this or an older trio-obs
        with contextlib.suppress(sqlite3.Error):
            if db.execute("SELECT 1 FROM meta WHERE name='epoch'").fetchone() is not None:
                return  # ours, with tables of a newer trio-obs
        db.close()
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(
            f"{self.path!r} is not a trio-obs store: it is a SQLite database with tables of "
            f"its own ({shown}); it was left untouched. Give --db a new file"
        )

    def _migrate(self) -> None:
        """Bring a store written by an older trio-obs to this schema."""
        db = self._write
        columns = [r[1] for r in db.execute("PRAGMA table_info(streams)")]
        if columns:
            for name, kind in _STREAM_COLUMNS.items():
                if name not in columns:
                    db.execute(f"ALTER TABLE streams ADD COLUMN {name} {kind}")
        columns = [r[1] for r in db.execute("PRAGMA table_info(spans)")]
        if columns and "open_seq" not in columns:
            # Spans were keyed by (execution, tool|skill, id); now by (execution, span id).
            def work(db: sqlite3.Connection) -> None:
                db.execute("ALTER TABLE spans RENAME TO spans_before")
                db.execute(_SPANS_TABLE)
                db.execute(
                    "INSERT OR IGNORE INTO spans (execution_id, span_id, kind, name, task_id,"
                    " open_seq) SELECT execution_id, span_id, kind, name, task_id, 1"
                    " FROM spans_before"
                )
                db.execute("DROP TABLE spans_before")

            self._transaction(work)

    def _migrate_positions(self) -> None:
        """Events stored before ``pos`` existed get positions below every new one: a range is
        set aside for each stream (by activity, oldest first) and filled in the background."""
        if "pos" in [r[1] for r in self._write.execute("PRAGMA table_info(events)")]:
            return

        def work(db: sqlite3.Connection) -> None:
            db.execute("ALTER TABLE events ADD COLUMN pos INTEGER")
            base, rows = 0, []
            for key, last_seq in db.execute(
                "SELECT stream_key, last_seq FROM streams ORDER BY activity"
            ).fetchall():
                rows.append((key, 0, last_seq, base))
                base += last_seq
            db.executemany(f"INSERT OR REPLACE INTO {_POSITIONED} VALUES (?,?,?,?)", rows)
            self._set_meta("pos_floor", base)
            self._set_meta("search_unindexed", base)

        self._transaction(work)

    def _load_epoch(self) -> str:
        row = self._write.execute("SELECT value FROM meta WHERE name='epoch'").fetchone()
        if row is not None:
            return str(row[0])
        return self._new_epoch()

    def _new_epoch(self) -> str:
        epoch = secrets.token_hex(8)
        self._write.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (epoch,))
        return epoch

    def _continue_history(self) -> None:
        """Start a new epoch if the store cannot prove its history goes on where it ended.

        The lock file's mark (:mod:`~trio_obs.hub.lockfile`) says what the last owner
        acknowledged: beyond what the database holds, acknowledged writes were lost; from
        another boot of a store whose commits were not synced, some may have been. Seqs
        after the loss are given again, so clients that resume are told (SPEC §10).
        """
        if self._owner is None:
            return
        mark = self._owner.previous
        why = None
        if mark is not None and mark.epoch == self.epoch:
            if mark.position > self._position:
                why = (
                    "it lost writes it had acknowledged "
                    "(the machine stopped before they reached the disk)"
                )
            elif mark.durability != "full" and mark.boot != boot_id():
                why = (
                    f"it was not closed before the machine restarted, with --durability "
                    f"{mark.durability} (its last writes may be lost)"
                )
        if why is not None:
            old, self.epoch = self.epoch, self._new_epoch()
            log.warning(
                "the store %r cannot prove its history continues: %s; new epoch %s "
                "(was %s): clients that resume are told to start over",
                self.path, why, self.epoch, old,
            )  # fmt: skip
        self._owner.mark(Mark(self.epoch, self._position, self.durability, boot_id()))

    def _stored_activity(self) -> int:
        (top,) = self._write.execute(
            "SELECT max(coalesce((SELECT max(activity) FROM streams), 0),"
            " coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE name='activity'), 0))"
        ).fetchone()
        return int(top)

    def _meta(self, name: str, default: int = 0) -> int:
        row = self._write.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row is not None else default

    def _set_meta(self, name: str, value: int) -> None:
        self._write.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, str(value)))

    def _prepare_search(self) -> None:
        """Create the search index, or start it over if it was built by another version
        (what was stored before is then indexed again in the background)."""
        row = self._write.execute("SELECT value FROM meta WHERE name='search_version'").fetchone()
        if row is not None and row[0] == search_sql.VERSION:
            self._transaction(lambda db: [db.execute(sql) for sql in search_sql.SETTINGS])
            return

        def work(db: sqlite3.Connection) -> None:
            for sql in (*search_sql.DROP, *search_sql.CREATE, *search_sql.SETTINGS):
                db.execute(sql)
            (top,) = db.execute("SELECT coalesce(max(pos), 0) FROM events").fetchone()
            self._set_meta("search_unindexed", max(top, self._meta("pos_floor")))
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('search_version', ?)", (search_sql.VERSION,)
            )

        self._transaction(work)

    def meta_text(self, name: str) -> str | None:
        """A value the store keeps for its owner (None if unset)."""
        with self._lock:
            row = self._write.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta_text(self, name: str, value: str) -> None:
        """Keep ``value`` under ``name`` for the store's owner."""
        with self._lock:
            self._write.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    def last_pos(self) -> int:
        """The highest global position given so far (read at open; the ledger goes on)."""
        with self._lock:
            (top,) = self._write.execute("SELECT coalesce(max(pos), 0) FROM events").fetchone()
            return max(int(top), self._meta("pos_floor"))

    def activity(self) -> tuple[int, bool]:
        """The highest activity written, and whether any stream exists (read at open)."""
        with self._lock:
            (count,) = self._write.execute("SELECT count(*) FROM streams").fetchone()
            return self._stored_activity(), bool(count)

    def counters_now(
        self, keys: Sequence[str], *, locked: bool = False
    ) -> dict[str, StreamCounters | None]:
        """The stored counters of ``keys`` (None where there are none), read right now."""
        found: dict[str, StreamCounters | None] = dict.fromkeys(keys)
        with contextlib.nullcontext() if locked else self._lock:
            for key in keys:
                row = self._write.execute(
                    f"SELECT {_COUNTERS} FROM streams WHERE stream_key=?", (key,)
                ).fetchone()
                if row is not None:
                    found[key] = _counters_of(row)
        return found

    async def counters(self, keys: Sequence[str]) -> dict[str, StreamCounters | None]:
        """:meth:`counters_now`: on the trio thread for a few keys, else in a worker thread."""
        found: dict[str, StreamCounters | None] = await self._lookup(self.counters_now, keys)
        return found

    async def _lookup(self, fn: Callable[..., _T], keys: Sequence[Any]) -> _T:
        """``fn(keys, locked=...)``: a few point reads by primary key take microseconds, less
        than a hop to a worker thread and back (issue 25: a live span's start waited for
        three such hops), so they run on the trio thread when the writer connection is
        free; many keys, or a busy connection, go to a worker thread."""
        if len(keys) <= INLINE_LOOKUPS and self._lock.acquire(blocking=False):
            try:
                return fn(keys, locked=True)
            except sqlite3.Error as exc:
                raise StoreError(f"the store failed: {exc}") from exc
            finally:
                self._lock.release()
        return cast(_T, await self._run(functools.partial(fn, locked=False), keys))

    # ------------------------------------------------------------------ writing

    async def write(self, stage: Stage, keys: Sequence[KeyRow] = ()) -> None:
        """Write a staged group's rows, and its idempotency keys, in one transaction."""
        statements = self._statements(stage)
        if keys:
            now = time.time()
            answers = [(key, now, orjson.dumps(answer).decode()) for key, answer in keys]
            statements.append(("INSERT OR REPLACE INTO idempotency VALUES (?,?,?)", answers))
        if not statements:
            return
        rows = len(stage.envelopes)
        size = sum(len(env.data) for env in stage.envelopes) if rows <= INLINE_ROWS else 0
        small = rows <= INLINE_ROWS and size <= INLINE_BYTES
        if small and self._inline and self._lock.acquire(blocking=False):
            try:  # small, not synced, and nobody is using the connection: no thread hop
                self._execute(statements, locked=True)
            except sqlite3.Error as exc:
                raise StoreError(f"the store failed: {exc}") from exc
            finally:
                self._lock.release()
        else:
            await self._run(self._execute, statements)
        if stage.streams:
            self._position = max(self._position, *(s.activity for s in stage.streams.values()))
            if self._owner is not None:
                self._owner.advance(self._position)
        if self._wal is not None and self._wal.wrote(large=not small):
            await self.checkpoint("RESTART")

    @property
    def _inline(self) -> bool:
        """Whether small writes may run on the trio thread (their commit does not fsync)."""
        return self.durability == "normal" or self._wal is None

    async def checkpoint(self, mode: CheckpointMode = "PASSIVE") -> None:
        """Move the WAL into the database, in a worker thread (``RESTART`` and ``TRUNCATE``
        also wait, briefly, for readers, so the WAL starts over; else they act as ``PASSIVE``)."""
        if self._wal is not None:
            await self._run(self._checkpoint, mode)

    def _checkpoint(self, mode: CheckpointMode) -> None:
        assert self._wal is not None
        with self._lock:
            db = self._write
            db.execute(f"PRAGMA busy_timeout={_CHECKPOINT_WAIT_MS}")
            try:
                busy, frames, done = db.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            finally:
                db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        self._wal.checkpointed(mode, complete=not busy and frames == done)

    async def keep_wal_small(self) -> None:
        """Checkpoint (``TRUNCATE``) after each pause in writes, until cancelled or closed.

        The hub runs it beside its writer; the WAL's growth under load is checked by
        :meth:`write` itself.
        """
        while self._wal is not None and not self.closed:
            await trio.sleep(WAL_QUIET_SECONDS)
            if self._wal.paused():
                with contextlib.suppress(StoreError):  # the next pause tries again
                    await self.checkpoint("TRUNCATE")

    @staticmethod
    def _statements(stage: Stage) -> Statements:
        if not stage.envelopes and not stage.streams:
            return []
        envelopes = stage.envelopes
        rows = [
            (env.key, env.seq, env.event.type, env.event.execution_id, env.event.timestamp,
             env.task_id, env.tool, int(env.is_copy), env.data, env.pos or None)
            for env in envelopes
        ]  # fmt: skip
        statements: Statements = [
            ("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?)", rows),
            # Made while the statement runs (in the writer's thread for a large write).
            (search_sql.INDEX_ROWS, search_sql.index_rows(envelopes)),
        ]
        if stage.spans:
            span_rows = [
                (*k, v.kind, v.name, v.task_id, v.parent_span_id, v.agent, v.model, v.open_seq,
                 v.close_seq, v.close_state)
                for k, v in stage.spans.items()
            ]  # fmt: skip
            statements.append(
                (f"INSERT OR REPLACE INTO spans ({_SPAN_COLUMNS}) VALUES ({_marks(11)})",
                 span_rows)
            )  # fmt: skip
        stream_rows = [_stream_row(key, s) for key, s in stage.streams.items()]
        statements.append(
            (f"INSERT OR REPLACE INTO streams (stream_key, {_COUNTERS})"
             f" VALUES ({_marks(len(stream_rows[0]) if stream_rows else 1)})", stream_rows)
        )  # fmt: skip
        return statements

    def _execute(self, statements: Statements, *, locked: bool = False) -> None:
        """The statements in one transaction (in a worker thread, unless small)."""

        def work(db: sqlite3.Connection) -> None:
            for sql, rows in statements:
                insert_rows(db, sql, rows)

        with contextlib.nullcontext() if locked else self._lock:
            self._transaction(work)

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self.closed:
            raise StoreError("the store is closed")
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"the store failed: {exc}") from exc

    async def answers(self, keys: Sequence[str], ttl: float) -> dict[str, list[tuple[str, int]]]:
        """The answers of ``keys`` accepted within the last ``ttl`` seconds."""
        since = time.time() - ttl

        def select(keys: Sequence[str], *, locked: bool) -> list[Any]:
            marks = ",".join("?" * len(keys))
            with contextlib.nullcontext() if locked else self._lock:
                return self._write.execute(
                    f"SELECT key, answer FROM idempotency WHERE key IN ({marks}) AND created > ?",
                    (*keys, since),
                ).fetchall()

        rows = await self._lookup(select, keys)
        return {key: [(k, int(s)) for k, s in orjson.loads(answer)] for key, answer in rows}

    async def delete_idle(self, before: float) -> list[str]:
        """Delete every execution last written before ``before`` (seconds since the epoch),
        with its events, spans and search entries; returns their ids. ``global`` is kept."""

        def delete() -> list[str]:
            with self._lock:
                keys = [
                    r[0]
                    for r in self._write.execute(
                        "SELECT stream_key FROM streams WHERE updated < ? AND stream_key != ?",
                        (before, GLOBAL),
                    )
                ]
                if keys:
                    self._transaction(lambda db: self._delete_streams(db, keys))
                return keys

        deleted: list[str] = await self._run(delete)
        return deleted

    def _delete_streams(self, db: sqlite3.Connection, keys: Sequence[str]) -> None:
        unindexed = self._meta("search_unindexed")
        rows = [(k,) for k in keys]
        db.executemany(search_sql.UNINDEX_STREAM, [(k, unindexed) for k in keys])
        db.executemany("DELETE FROM events WHERE stream_key=?", rows)
        db.executemany("DELETE FROM spans WHERE execution_id=?", rows)
        db.executemany("DELETE FROM streams WHERE stream_key=?", rows)
        db.executemany(f"DELETE FROM {_POSITIONED} WHERE stream_key=?", rows)
        self._keep_activity(db)

    def _keep_activity(self, db: sqlite3.Connection) -> None:
        """The activity counter never goes back, even when the stream that has it is deleted
        (the lock file's mark is compared with it at the next start)."""
        db.execute("INSERT OR REPLACE INTO meta VALUES ('activity', ?)", (self._position,))

    def _transaction(self, work: Any) -> Any:
        """``work(connection)`` in one write transaction (the caller holds the lock)."""
        db = self._write
        try:
            db.execute("BEGIN IMMEDIATE")
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    async def wipe(self) -> None:
        """Delete every event and counter (a Redis node's local index whose history was lost)."""

        def wipe() -> None:
            def work(db: sqlite3.Connection) -> None:
                db.execute(search_sql.UNINDEX_ALL)
                for table in ("events", "streams", "spans", _POSITIONED):
                    db.execute(f"DELETE FROM {table}")
                db.execute("DELETE FROM meta WHERE name IN ('pos_floor', 'search_unindexed')")
                self._keep_activity(db)

            with self._lock:
                self._transaction(work)

        await self._run(wipe)

    # ------------------------------------------------------------------ the search index

    def index_some(self, rows: int) -> int:
        """Runs in a worker thread: give positions to (or index) up to ``rows`` old events.

        Events stored before positions existed get theirs first; then what the index does
        not hold yet (events stored before it existed) is indexed, newest first. Returns
        the positions still to index (0: done).
        """
        try:
            with self._lock:
                return int(self._transaction(lambda db: self._index_some(db, rows)))
        except sqlite3.Error as exc:
            raise StoreError(f"the store failed while indexing: {exc}") from exc

    def _index_some(self, db: sqlite3.Connection, rows: int) -> int:
        found = db.execute(
            f"SELECT stream_key, done, upto, base FROM {_POSITIONED} ORDER BY base LIMIT 1"
        ).fetchone()
        unindexed = self._meta("search_unindexed")
        if found is not None:
            key, done, upto, base = found
            end = min(done + rows, upto)
            db.execute(
                "UPDATE events SET pos = ? + seq WHERE stream_key = ? AND seq > ? AND seq <= ?"
                " AND is_copy = 0 AND pos IS NULL",
                (base, key, done, end),
            )
            if end >= upto:
                db.execute(f"DELETE FROM {_POSITIONED} WHERE stream_key = ?", (key,))
            else:
                db.execute(f"UPDATE {_POSITIONED} SET done = ? WHERE stream_key = ?", (end, key))
            return max(unindexed, 1)
        if unindexed <= 0:
            return 0
        low = max(1, unindexed - rows + 1)
        db.execute(search_sql.INDEX_RANGE, (low, unindexed))
        self._set_meta("search_unindexed", low - 1)
        return low - 1

    def unindexed(self) -> int:
        """Positions not indexed yet (0 when the index holds every stored event)."""
        with self._read_lock:
            row = self._read.execute(
                "SELECT value FROM meta WHERE name='search_unindexed'"
            ).fetchone()
            backfill = self._read.execute(f"SELECT 1 FROM {_POSITIONED} LIMIT 1").fetchone()
        return max(int(row[0]) if row else 0, 1 if backfill else 0)

    async def search(self, query: SearchQuery) -> SearchResult:
        """A page of hits for ``query``, newest first; :class:`~trio_obs.InvalidInput` when
        the index cannot read it."""

        def run() -> SearchResult:
            sql, params = search_sql.hits(query, query.before)
            with self._read_lock:
                try:
                    rows = self._read.execute(sql, params).fetchall()
                except sqlite3.OperationalError as exc:
                    raise _query_error(exc) from None
            unindexed = self.unindexed()
            hits = [
                SearchHit(execution_id=r[0], seq=r[1], pos=r[2], type=r[3], timestamp=r[4],
                          snippet=r[5] or "")
                for r in rows
            ]  # fmt: skip
            return SearchResult(
                hits=hits,
                next=hits[-1].pos if len(hits) == query.limit else None,
                complete=not unindexed,
                note=(
                    "the search index is still being built: events stored before it existed"
                    f" (up to position {unindexed}) may be missing"
                    if unindexed
                    else None
                ),
            )

        result: SearchResult = await self._run(run)
        return result

    async def matches_after(self, query: SearchQuery, *, after: int, upto: int) -> list[Envelope]:
        """The stored events matching a live query with ``after < pos <= upto``, oldest first,
        at most ``query.limit``."""
        sql, params = search_sql.matches_after(query, after, upto)
        try:
            rows = await self._query(sql, tuple(params))
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.OperationalError):
                raise _query_error(exc.__cause__) from None
            raise
        return [_envelope(row) for row in rows]

    async def read_positions(
        self, *, after: int, limit: int, max_bytes: int | None = None
    ) -> tuple[list[Envelope], bool]:
        """Stored events with ``pos > after`` in position order (``all``): at most ``limit``
        and, but for the first, no more than fit in ``max_bytes`` of JSON; and whether
        more may follow."""
        rows, cut = await self._query_cut(
            "SELECT stream_key, seq, task_id, tool, is_copy, data FROM events"
            " WHERE pos > ? ORDER BY pos LIMIT ?",
            (after, limit),
            max_bytes=max_bytes,
        )
        return [_envelope(row) for row in rows], cut or len(rows) >= limit

    async def add_envelopes(self, envelopes: Sequence[Envelope]) -> None:
        """Store (and index) events numbered elsewhere, skipping any already here.

        A Redis node's local index keeps what it reads this way (``hub/local_index.py``).
        """

        def add() -> None:
            def work(db: sqlite3.Connection) -> None:
                for env in envelopes:
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (env.key, env.seq, env.event.type, env.event.execution_id,
                         env.event.timestamp, env.task_id, env.tool, int(env.is_copy),
                         env.data, env.pos or None),
                    )  # fmt: skip
                    if cursor.rowcount == 1 and env.pos:
                        db.execute(search_sql.INDEX_ONE, (env.pos,))

            with self._lock:
                self._transaction(work)

        await self._run(add)

    async def delete_streams(self, keys: Sequence[str]) -> None:
        """Delete streams with their events and search entries (told by another node)."""

        def delete() -> None:
            with self._lock:
                self._transaction(lambda db: self._delete_streams(db, keys))

        await self._run(delete)

    async def run_ids(self, filters: RunFilters) -> set[str] | None:
        """The executions with the events the list's ``filters`` ask for (None: no such
        filter), whatever their last status (a Redis node's list filters by them)."""
        found: set[str] | None = None
        for match in search_sql.run_matches(filters):
            rows = await self._query(search_sql.RUN_IDS, (match,))
            ids = {row[0] for row in rows}
            found = ids if found is None else found & ids
        return found

    async def last_seqs(self) -> dict[str, int]:
        """The last seq stored of every stream key (a local index resuming its copy)."""
        rows = await self._query("SELECT stream_key, max(seq) FROM events GROUP BY stream_key", ())
        return {key: int(seq) for key, seq in rows}

    async def forget_answers(self, ttl: float) -> None:
        """Delete idempotency keys older than ``ttl`` seconds."""
        cutoff = time.time() - ttl
        await self._run(self._execute, [("DELETE FROM idempotency WHERE created < ?", [(cutoff,)])])

    # ------------------------------------------------------------------ reading

    async def spans(self, keys: Sequence[SpanKey]) -> dict[SpanKey, Span | None]:
        """The stored spans of ``keys`` (None where unknown)."""

        def select(keys: Sequence[SpanKey], *, locked: bool) -> dict[SpanKey, Span | None]:
            found: dict[SpanKey, Span | None] = {}
            with contextlib.nullcontext() if locked else self._lock:
                for key in keys:
                    row = self._write.execute(
                        f"SELECT {_SPAN_COLUMNS} FROM spans WHERE execution_id=? AND span_id=?",
                        key,
                    ).fetchone()
                    found[key] = SpanRecord(*row[2:]) if row else None
            return found

        return await self._lookup(select, keys)

    async def read(
        self,
        key: str,
        *,
        after: int = 0,
        limit: int | None = None,
        upto: int | None = None,
        max_bytes: int | None = None,
    ) -> list[Envelope]:
        """Stored envelopes of ``key`` with ``after < seq <= upto``, oldest first; at most
        ``limit`` of them and, but for the first, no more than fit in ``max_bytes`` of JSON."""
        rows = await self._query(
            "SELECT stream_key, seq, task_id, tool, is_copy, data FROM events"
            " WHERE stream_key=? AND seq>? AND seq<=? ORDER BY seq LIMIT ?",
            (key, after, _MAX_SEQ if upto is None else upto, -1 if limit is None else limit),
            max_bytes=max_bytes,
        )
        return [_envelope(row) for row in rows]

    async def read_json(self, key: str, *, after: int = 0, limit: int = 1000) -> list[bytes]:
        """The stored JSON of events of ``key`` with ``seq > after``, at most ``limit``."""
        rows = await self._query(
            "SELECT data FROM events WHERE stream_key=? AND seq>? ORDER BY seq LIMIT ?",
            (key, after, limit),
        )
        return [bytes(r[0]) for r in rows]

    async def executions(
        self, limit: int = 100, filters: RunFilters | None = None
    ) -> list[ev.ExecutionSummary]:
        """Known executions, most recently active first (``global`` left out), those that
        pass ``filters`` only."""
        where, params = search_sql.runs(filters or RunFilters())
        rows = await self._query(
            f"SELECT stream_key, {_COUNTERS} FROM streams WHERE stream_key != ? AND {where}"
            " ORDER BY activity DESC LIMIT ?",
            (GLOBAL, *params, limit),
        )
        return [_counters_of(r[1:]).summary(r[0]) for r in rows]

    async def _query(
        self, sql: str, params: tuple[Any, ...], *, max_bytes: int | None = None
    ) -> list[Any]:
        """The rows of a query, in a worker thread; with ``max_bytes``, the rows (at least
        one) whose last columns add up to no more than it: the rest is never read."""
        rows, _ = await self._query_cut(sql, params, max_bytes=max_bytes)
        return rows

    async def _query_cut(
        self, sql: str, params: tuple[Any, ...], *, max_bytes: int | None
    ) -> tuple[list[Any], bool]:
        """:meth:`_query`, and whether rows were left unread for ``max_bytes``."""

        def run() -> tuple[list[Any], bool]:
            with self._read_lock:
                cursor = self._read.execute(sql, params)
                if max_bytes is None:
                    return cursor.fetchall(), False
                rows: list[Any] = []
                total = 0
                for row in cursor:
                    total += len(row[-1])
                    if total > max_bytes and rows:
                        cursor.close()
                        return rows, True
                    rows.append(row)
                return rows, False

        found: tuple[list[Any], bool] = await self._run(run)
        return found

    # ------------------------------------------------------------------ health

    async def unwritable(self) -> str | None:
        """Why a write cannot succeed now (None when it can): what a write needs is tried.

        The disk holding the store must have room, and a transaction takes the write
        lock and writes a row to the tables every commit writes, then rolls back.
        """
        try:
            found: str | None = await self._run(self._try_write)
        except StoreError as exc:
            return str(exc)
        return found

    def _try_write(self) -> str | None:
        if self._wal is not None:
            try:
                disk = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
            except OSError as exc:
                return f"the store's folder cannot be read: {exc.strerror}"
            if disk.f_bavail * disk.f_frsize < _MIN_FREE_DISK:
                return "the disk holding the store is full"
        with self._lock:
            db = self._write
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "INSERT OR REPLACE INTO events (stream_key, seq, type, execution_id,"
                    " timestamp, is_copy, data) VALUES (?,0,'',?,'',0,x'')",
                    (_PROBE, _PROBE),
                )
                db.execute(
                    "INSERT OR REPLACE INTO streams (stream_key, last_seq, event_count, activity)"
                    " VALUES (?,0,0,0)",
                    (_PROBE,),
                )
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, '')", (_PROBE,))
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")
        return None

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the database connections and give up the file (and its lock file)."""
        if self.closed:
            return
        self.closed = True
        with self._lock:
            self._write.close()
        if self._read is not self._write:
            with self._read_lock:
                self._read.close()
        if self._owner is not None:
            # Closing the last connection checkpointed the WAL: nothing is left to lose.
            self._owner.release()


def _envelope(row: tuple[Any, ...]) -> Envelope:
    """The envelope of a stored row: (stream key, seq, task, tool, is copy, data)."""
    key, seq, task_id, tool, is_copy, data = row
    return Envelope(
        key, seq, decode_stream_event(data), bytes(data), TOPIC_OF_TYPE[_type_of(data)],
        task_id, tool, bool(is_copy),
    )  # fmt: skip


def _query_error(exc: sqlite3.OperationalError) -> InvalidInput | StoreError:
    """A search the index could not run: the query's fault (400) or the store's."""
    text = str(exc)
    if text.startswith("fts5:") or "syntax error" in text:
        return InvalidInput(f"the search index cannot read q: {text}", INVALID_QUERY)
    return StoreError(f"the store failed: {text}")


@asynccontextmanager
async def open_store(
    path: str = ":memory:", *, durability: Durability = DEFAULT_DURABILITY
) -> AsyncIterator[Store]:
    """Open a :class:`Store`; closed on exit."""
    store = await trio.to_thread.run_sync(functools.partial(Store, path, durability=durability))
    try:
        yield store
    finally:
        with contextlib.suppress(sqlite3.Error):
            store.close()
