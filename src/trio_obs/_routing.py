"""Socket-free routing state: stored envelopes, subscription topics and filters, replay buffers.

Nothing here does I/O or reads a clock; the broker and the server drive it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Final

import attrs

from . import _events as ev
from ._codec import encode

_TEXT_OPCODE: Final = 0x81  # FIN + text frame


def text_frame(payload: bytes) -> bytes:
    """One unmasked server-to-client WebSocket text frame (RFC 6455 §5.2) around ``payload``."""
    n = len(payload)
    if n < 126:
        header = bytes((_TEXT_OPCODE, n))
    elif n < 1 << 16:
        header = bytes((_TEXT_OPCODE, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((_TEXT_OPCODE, 127)) + n.to_bytes(8, "big")
    return header + payload


@attrs.define(slots=True, eq=False)
class Envelope:
    """A stored event with its routing facts, its JSON and (lazily) its WebSocket frame.

    Built once per stored event and shared by every subscriber that receives it.
    ``tool`` and ``task_id`` are resolved by the store for events that only carry a
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
        *,
        task_id: str | None = None,
        tool: str | None = None,
        is_copy: bool = False,
        born: float = 0.0,
    ) -> Envelope:
        """An envelope for a stored event (``event.seq`` set), encoding it once."""
        assert event.seq is not None, "only stored events travel in envelopes"
        return cls(
            key,
            event.seq,
            event,
            encode(event),
            ev.TOPIC_OF_TYPE[event.type],
            task_id,
            tool,
            is_copy,
            born,
        )


def own_task_id(event: ev.StreamEvent) -> str | None:
    """The task an event names itself (not the one resolved from a tool use or skill)."""
    match event:
        case ev.TranscriptEntryEvent() | ev.MessageBusEvent():
            return event.entry.task_id
        case ev.AssertionResultEvent() | ev.ToolStartEvent() | ev.SkillStartEvent():
            return event.task_id
        case ev.AgentHeartbeatEvent():
            return event.current_task_id
        case _:
            return None


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

    def unsubscribe(self, topic: str) -> None:
        """Apply an ``unsubscribe`` message (topic already validated)."""
        self.topics = self.topics - {topic}
        self.implicit_all = False
        self._refresh()

    def _refresh(self) -> None:
        self.everything = "all" in self.topics and self.filters.empty

    def matches(self, env: Envelope) -> bool:
        """Whether this subscriber wants the event in ``env``."""
        if self.everything:
            return True
        if "all" not in self.topics and env.topic not in self.topics:
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


class ReplayBuffers:
    """The most recent envelopes of each stream key, bounded in depth and in keys.

    A cache in front of the store: dropping a buffer loses nothing (replay then reads
    the store). Buffers of ended executions are freed ``grace`` seconds after they end,
    and at most ``max_keys`` buffers are kept (least recently written dropped first).
    """

    def __init__(self, depth: int = 100, *, max_keys: int = 1000, grace: float = 300.0) -> None:
        if depth < 0 or max_keys < 1 or grace < 0:
            raise ValueError("depth and grace must be >= 0 and max_keys >= 1")
        self.depth = depth
        self.max_keys = max_keys
        self.grace = grace
        self._buffers: OrderedDict[str, deque[Envelope]] = OrderedDict()
        self._ended: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._buffers)

    def __contains__(self, key: str) -> bool:
        return key in self._buffers

    def append(self, env: Envelope, now: float) -> None:
        """Keep ``env`` as the newest event of its key; note when an execution ends."""
        if self.depth == 0:
            return
        buf = self._buffers.get(env.key)
        if buf is None:
            buf = self._buffers[env.key] = deque(maxlen=self.depth)
            if len(self._buffers) > self.max_keys:
                old, _ = self._buffers.popitem(last=False)
                self._ended.pop(old, None)
        else:
            self._buffers.move_to_end(env.key)
        buf.append(env)
        event = env.event
        if isinstance(event, ev.ExecutionStatusEvent) and not env.is_copy:
            if event.status in ev.ENDED_STATES:
                self._ended[env.key] = now
            else:
                self._ended.pop(env.key, None)

    def get(self, key: str) -> list[Envelope]:
        """The buffered envelopes of ``key``, oldest first."""
        return list(self._buffers.get(key, ()))

    def range(self, key: str, after: int, upto: int) -> list[Envelope] | None:
        """Envelopes with ``after < seq <= upto`` if the buffer holds all of them, else None."""
        if upto <= after:
            return []
        buf = self._buffers.get(key)
        if not buf or buf[0].seq > after + 1 or buf[-1].seq < upto:
            return None
        start = after + 1 - buf[0].seq
        return [buf[i] for i in range(start, start + upto - after)]

    def clear(self, key: str) -> None:
        """Forget the buffer of ``key``."""
        self._buffers.pop(key, None)
        self._ended.pop(key, None)

    def expire(self, now: float) -> list[str]:
        """Free buffers of executions that ended more than ``grace`` seconds ago."""
        done = [k for k, t in self._ended.items() if now - t >= self.grace]
        for key in done:
            self.clear(key)
        return done

    def keys(self) -> Iterable[str]:
        """The keys that have a buffer."""
        return self._buffers.keys()
