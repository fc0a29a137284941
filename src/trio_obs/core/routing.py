"""Routing state: stored envelopes, subscription topics and filters, and the logs of recent events.

Everything is stored before it is sent, so the logs here are caches in front of the
store: a subscriber reads from them while it keeps up and from the store when it falls
behind. Nothing here does I/O or reads a clock; the hub drives it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

import attrs

from . import events as ev
from .facts import own_task_id as own_task_id  # read from the table of event facts
from .frames import text_frame
from .protocol import ENDED_STATES, TOPIC_OF_TYPE
from .search import TypedFilters, typed_filters
from .wire import encode_kept

_ENVELOPE_OVERHEAD: Final = 512
"""Bytes an envelope costs beyond its JSON: objects, and the typed event's own strings."""


@attrs.define(slots=True, eq=False)
class Envelope:
    """A stored event with its routing facts, its JSON and (lazily) its WebSocket frame.

    Built once per stored event and shared by every subscriber that receives it.
    ``tool`` and ``task_id`` are resolved by the ledger for events that only carry a
    tool-use or skill-trace id, so filters need no per-connection memory.
    """

    key: str
    seq: int
    event: ev.StreamEvent
    data: bytes
    topic: str
    task_id: str | None = None
    tool: str | None = None
    is_copy: bool = False
    """True for the ``global`` copy of an ``execution:status`` event (``all`` skips it)."""
    born: float = 0.0
    """``time.perf_counter()`` when stored (0 for envelopes read back from the store)."""
    _frame: bytes | None = None
    cost: int = attrs.field(init=False, default=0)
    """Bytes of memory this envelope holds (its JSON, its frame, its typed event)."""
    pos: int = attrs.field(init=False, default=0)
    """The event's global position on ``all`` (SPEC §14; 0 for a copy, or where unknown)."""

    def __attrs_post_init__(self) -> None:
        self.cost = 3 * len(self.data) + _ENVELOPE_OVERHEAD
        self.pos = self.event.pos or 0

    @property
    def frame(self) -> bytes:
        """The text frame carrying :attr:`data`, built on first use and then shared."""
        frame = self._frame
        if frame is None:
            frame = self._frame = text_frame(self.data)
        return frame

    @classmethod
    def of(
        cls,
        key: str,
        event: ev.StreamEvent,
        data: bytes | None = None,
        *,
        task_id: str | None = None,
        tool: str | None = None,
        is_copy: bool = False,
    ) -> Envelope:
        """An envelope for a stored event (``event.seq`` set) and its wire JSON (made if None)."""
        assert event.seq is not None, "only stored events travel in envelopes"
        if data is None:
            data = encode_kept(event)
        return cls(key, event.seq, event, data, TOPIC_OF_TYPE[event.type], task_id, tool, is_copy)


def within(envs: list[Envelope], budget: int) -> list[Envelope]:
    """The longest start of ``envs`` whose JSON fits in ``budget`` bytes (at least one)."""
    total = 0
    for i, env in enumerate(envs):
        total += len(env.data)
        if total > budget and i:
            return envs[:i]
    return envs


@attrs.define(slots=True)
class SubscriptionState:
    """Topics and filters of one subscriber, and the rules of SPEC §3 that apply them.

    A new subscriber has the implicit topic ``all``; the first subscribe to a specific
    topic replaces it, later ones add, ``all`` widens again, unsubscribe removes.
    """

    topics: frozenset[str] = frozenset({"all"})
    filters: ev.Filters = ev.NO_FILTERS
    implicit_all: bool = True
    everything: bool = True
    """Cached: topic ``all`` and no filters, so :meth:`matches` is always true."""
    typed: TypedFilters | None = None
    """Cached: the typed filters of SPEC §14, when any is set."""
    searching: bool = False
    """Cached: a live query is set (SPEC §14): the index judges the events, not memory."""

    def subscribe(self, topic: str, update: ev.FilterUpdate | None = None) -> None:
        """Apply a ``subscribe`` message (topic already validated)."""
        if topic == "all":
            self.topics = frozenset({"all"})
        elif self.implicit_all:
            self.topics = frozenset({topic})
        else:
            self.topics = self.topics | {topic}
        self.implicit_all = False
        if update is not None:
            self.filters = self.filters.merged(update)
        self._refresh()

    def filter(self, update: ev.FilterUpdate) -> None:
        """Merge filters without touching the topics (those a handshake's query gives)."""
        self.filters = self.filters.merged(update)
        self._refresh()

    def unsubscribe(self, topic: str) -> None:
        """Apply an ``unsubscribe`` message (topic already validated)."""
        self.topics = self.topics - {topic}
        self.implicit_all = False
        self._refresh()

    def _refresh(self) -> None:
        self.everything = "all" in self.topics and self.filters.empty
        typed = typed_filters(self.filters)
        self.typed = typed if typed else None
        self.searching = self.filters.q is not None

    @property
    def query(self) -> str | None:
        """The live query (SPEC §14), if one is set: the index judges it, not :meth:`matches`."""
        return self.filters.q

    def matches(self, env: Envelope) -> bool:
        """Whether this subscriber wants the event in ``env`` (a live query aside)."""
        if self.everything:
            return True
        if "all" not in self.topics and env.topic not in self.topics:
            return False
        if self.typed is not None and not self.typed.accepts(env.event, env.tool):
            return False
        f = self.filters
        if f.task_id is not None and env.task_id is not None and env.task_id != f.task_id:
            return False
        if env.topic == "tools":
            return f.tools is None or env.tool in f.tools
        event = env.event
        if isinstance(event, ev.TranscriptEntryEvent):
            return f.entry_types is None or event.entry.entry_type in f.entry_types
        if isinstance(event, ev.AssertionResultEvent):
            return f.categories is None or event.assertion.category in f.categories
        if isinstance(event, ev.MessageBusEvent):
            return f.severity is None or event.entry.severity in f.severity
        return True

    def select(self, envs: list[Envelope]) -> list[Envelope]:
        """The envelopes of ``envs`` this subscriber wants, in order."""
        if self.everything:
            return envs
        matches = self.matches
        return [env for env in envs if matches(env)]


class KeyLog:
    """The most recent envelopes of one stream key, with contiguous seqs, oldest first."""

    __slots__ = ("_envs", "_limit", "_start", "cost", "depth")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._limit = depth + depth // 8
        """Held at most; beyond it the oldest go down to ``depth`` at once (amortized)."""
        self._envs: list[Envelope] = []
        self._start = 0  # index of the oldest kept envelope in _envs (trimmed in chunks)
        self.cost = 0

    def __len__(self) -> int:
        return len(self._envs) - self._start

    @property
    def first_seq(self) -> int:
        """The seq of the oldest envelope held (0 when empty)."""
        return self._envs[self._start].seq if len(self) else 0

    @property
    def last_seq(self) -> int:
        """The seq of the newest envelope held (0 when empty)."""
        return self._envs[-1].seq if len(self) else 0

    def append(self, env: Envelope) -> int:
        """Keep ``env`` as the newest; returns the change in :attr:`cost` (may be negative)."""
        envs = self._envs
        before = self.cost
        if len(envs) > self._start and env.seq != envs[-1].seq + 1:
            self.clear()  # a gap (events this log never saw): keep only what is contiguous
        envs.append(env)
        self.cost += env.cost
        if len(envs) - self._start > self._limit:
            self._drop(len(envs) - self._start - self.depth)
        return self.cost - before

    def _drop(self, n: int) -> None:
        start, envs = self._start, self._envs
        self.cost -= sum(e.cost for e in envs[start : start + n])
        start += n
        if start * 2 > len(envs):
            del envs[:start]
            start = 0
        self._start = start

    def drop_oldest(self) -> int:
        """Forget the oldest envelope; returns the bytes freed."""
        env = self._envs[self._start]
        self._start += 1
        freed = env.cost
        self.cost -= freed
        if self._start > 64 and self._start * 2 > len(self._envs):
            del self._envs[: self._start]
            self._start = 0
        return freed

    def clear(self) -> None:
        """Forget everything."""
        self._envs.clear()
        self._start = 0
        self.cost = 0

    def after(self, after: int, upto: int | None = None) -> list[Envelope] | None:
        """Envelopes with ``after < seq <= upto`` (default: the newest), or None if not all held."""
        if not len(self):
            return None
        first = self._envs[self._start].seq
        last = self._envs[-1].seq
        upto = last if upto is None else upto
        if upto <= after:
            return []
        if after + 1 < first or upto > last:
            return None
        base = self._start - first
        return self._envs[base + after + 1 : base + upto + 1]

    def newest(self, n: int) -> list[Envelope]:
        """The newest ``n`` envelopes held, oldest first."""
        return self._envs[max(self._start, len(self._envs) - n) :]


class StreamLogs:
    """Recent envelopes of every stream key, bounded in depth, in keys and in bytes.

    A cache in front of the store: dropping a log loses nothing (readers then read the
    store). Logs of ended executions are freed ``grace`` seconds after they end; beyond
    ``max_keys`` logs or ``max_bytes`` in all, the least recently active go first.
    """

    def __init__(
        self,
        depth: int,
        *,
        max_bytes: int,
        max_keys: int = 1000,
        grace: float = 300.0,
    ) -> None:
        if depth < 0 or max_keys < 1 or grace < 0 or max_bytes < 0:
            raise ValueError("depth, max_bytes and grace must be >= 0 and max_keys >= 1")
        self.depth = depth
        self.max_bytes = max_bytes
        self.max_keys = max_keys
        self.grace = grace
        self.cost = 0
        self._logs: OrderedDict[str, KeyLog] = OrderedDict()
        self._ended: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._logs)

    def __contains__(self, key: str) -> bool:
        return key in self._logs

    def get(self, key: str) -> KeyLog | None:
        """The log of ``key``, if one is held."""
        return self._logs.get(key)

    def append(self, env: Envelope, now: float) -> None:
        """Keep ``env`` as the newest event of its key; note when an execution ends."""
        if self.depth == 0:
            return
        logs = self._logs
        log = logs.get(env.key)
        if log is None:
            log = logs[env.key] = KeyLog(self.depth)
            if len(logs) > self.max_keys:
                self._drop(next(iter(logs)))
        else:
            logs.move_to_end(env.key)
        self.cost += log.append(env)
        if self.cost > self.max_bytes:
            self._shed(env.key)
        event = env.event
        if isinstance(event, ev.ExecutionStatusEvent) and not env.is_copy:
            if event.status in ENDED_STATES:
                self._ended[env.key] = now
            else:
                self._ended.pop(env.key, None)

    def _shed(self, newest: str) -> None:
        # Least recently active logs go whole; the newest log keeps at least its last event.
        logs = self._logs
        while self.cost > self.max_bytes:
            key = next(iter(logs))
            if key != newest:
                self._drop(key)
                continue
            log = logs[key]
            while self.cost > self.max_bytes and len(log) > 1:
                self.cost -= log.drop_oldest()
            return

    def _drop(self, key: str) -> None:
        log = self._logs.pop(key, None)
        if log is not None:
            self.cost -= log.cost
        self._ended.pop(key, None)

    def range(self, key: str, after: int, upto: int) -> list[Envelope] | None:
        """Envelopes of ``key`` with ``after < seq <= upto`` if all are held, else None."""
        log = self._logs.get(key)
        if log is None:
            return [] if upto <= after else None
        return log.after(after, upto)

    def newest(self, key: str) -> list[Envelope]:
        """Every envelope held for ``key``, oldest first."""
        log = self._logs.get(key)
        return log.newest(log.depth) if log is not None else []

    def clear(self, key: str) -> None:
        """Forget the log of ``key``."""
        self._drop(key)

    def expire(self, now: float) -> list[str]:
        """Free logs of executions that ended more than ``grace`` seconds ago."""
        done = [k for k, t in self._ended.items() if now - t >= self.grace]
        for key in done:
            self._drop(key)
        return done

    def keys(self) -> Iterable[str]:
        """The keys that have a log."""
        return self._logs.keys()


class GlobalLog:
    """Recent live envelopes in dispatch order, for ``all`` subscribers (SPEC §4, §14).

    Envelopes are kept by their global position ``pos`` (increasing, with gaps where
    ``global`` copies or deleted events were): the log holds every envelope dispatched
    with ``base < pos`` since it began. A subscriber whose cursor (the last ``pos`` it
    took) is below :attr:`base` reads the store instead.
    """

    __slots__ = ("_envs", "base", "cost", "depth", "max_bytes")

    def __init__(self, depth: int, *, max_bytes: int) -> None:
        self.depth = depth
        self.max_bytes = max_bytes
        self._envs: list[Envelope] = []
        self.base = 0
        """Every envelope dispatched after this position is held."""
        self.cost = 0

    def __len__(self) -> int:
        return len(self._envs)

    @property
    def head(self) -> int:
        """The position of the newest envelope held (else :attr:`base`)."""
        return self._envs[-1].pos if self._envs else self.base

    def append(self, env: Envelope) -> None:
        """Add ``env`` (its ``pos`` above every position held)."""
        self._envs.append(env)
        self.cost += env.cost

    def after(self, cursor: int) -> list[Envelope] | None:
        """Envelopes after position ``cursor``, or None if some of them are not held."""
        if cursor < self.base:
            return None
        envs = self._envs
        if not envs or envs[-1].pos <= cursor:
            return []
        if cursor <= self.base:
            return envs[:]
        return envs[bisect_right(envs, cursor, key=_position) :]

    def trim(self, slowest: int, *, extra: int = 0) -> None:
        """Drop what the slowest cursor has passed, then whatever exceeds the bounds
        (:attr:`depth` envelopes and ``extra`` more, :attr:`max_bytes`)."""
        envs = self._envs
        drop = bisect_right(envs, slowest, key=_position)
        over = len(envs) - drop - self.depth - extra
        if over > 0:
            drop += over
        if drop:
            self._cut(drop)
        while self.cost > self.max_bytes and len(self._envs) > 1:
            self._cut(max(1, len(self._envs) // 8))

    def _cut(self, n: int) -> None:
        envs = self._envs
        for env in envs[:n]:
            self.cost -= env.cost
        self.base = envs[n - 1].pos
        del envs[:n]

    def restart(self, base: int) -> None:
        """Forget everything; from now on, hold what is dispatched after ``base``."""
        self._envs.clear()
        self.base = base
        self.cost = 0


def _position(env: Envelope) -> int:
    return env.pos
