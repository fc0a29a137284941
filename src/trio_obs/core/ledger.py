"""The ledger: every derived field of a stored event, decided in one place.

:func:`complete` checks one event against the rules that need no history and fills
the fields a producer cannot choose (``timestamp`` if unset, ``requiresAction``,
``isError``/``isBlocked``, the stream a message-bus event belongs to). A
:class:`Ledger` holds what needs history (``seq`` per stream key, counters,
``runningPassRate``, the tool or task a tool-use/skill id belongs to) and stages
groups of batches into stamped envelopes plus the rows to write, without I/O: the hub
writes the rows, then tells the ledger they are committed.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeAlias

import attrs

from . import events as ev
from .errors import InvalidInput
from .facts import (
    FACTS,
    ROLE_OF,
    is_error_event,
    own_task_id,
    span_id_of,
    span_kind_of,
    span_name_of,
    tool_of,
)
from .protocol import (
    ACTION_SEVERITIES,
    ALL,
    ENDED_STATES,
    GLOBAL,
    INVALID_EVENT,
    MAX_ID_BYTES,
    RESERVED_STREAMS,
    TOPIC_OF_TYPE,
)
from .routing import Envelope
from .spanrules import (
    SpanRecord,
    closes_open_span,
    closing_state,
    is_root_status,
    own_agent,
    repeated_seq,
    takes_closing,
    takes_opening,
)
from .wire import camel, encode_kept

SpanKey: TypeAlias = tuple[str, str]
"""(stream key, span id): a tool use, a skill trace, or a ``span:*`` span."""
Span: TypeAlias = SpanRecord

SPAN_CACHE_SIZE: Final = 10_000
STREAM_CACHE_SIZE: Final = 10_000
"""Stream keys whose counters stay in memory; the others are read back from the store."""


@attrs.define
class StreamCounters:
    """What the ledger counts per stream key (one row of the store's ``streams``)."""

    last_seq: int = 0
    event_count: int = 0
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    last_status: str | None = None
    assertions_total: int = 0
    assertions_passed: int = 0
    activity: int = 0
    """Orders keys by their last write (higher = more recent)."""
    updated: float = 0.0
    """When the key was last written (seconds since the epoch, as the hub said)."""
    # One start, one end (core.spanrules): what the execution rules need.
    started_seq: int = 0
    """The seq of the root span's stored ``started`` (0: none)."""
    status_seq: int = 0
    """The seq of the root span's stored closing status (0: none)."""
    open_spans: int = 0
    """Spans of the execution opened and not closed."""
    held: ev.ExecutionStatusEvent | None = None
    """The root span's closing status, held while spans are open."""
    # The execution's summary (SPEC §12 "Totals and names").
    name: str | None = None
    name_since: str | None = None
    """The start of the agent span that named the run; "": the root agent did; None: no
    agent did (``name`` is a top-level span's title, if any)."""
    conversation_id: str | None = None
    agents: tuple[str, ...] = ()
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0
    errors: int = 0
    models: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    """Input and output tokens per model (cost is computed when read, from a price table).
    Replaced, never changed in place: staged counters share it with the committed ones."""

    def summary(self, key: str) -> ev.ExecutionSummary:
        """What ``GET /api/executions`` says of stream ``key`` (cost is added when priced)."""
        return ev.ExecutionSummary(
            execution_id=key, last_status=self.last_status, event_count=self.event_count,
            last_seq=self.last_seq, first_timestamp=self.first_timestamp,
            last_timestamp=self.last_timestamp, name=self.name,
            conversation_id=self.conversation_id, agents=list(self.agents),
            state=self.last_status or ("running" if self.event_count else None),
            totals={"modelCalls": self.model_calls, "inputTokens": self.input_tokens,
                    "outputTokens": self.output_tokens, "toolCalls": self.tool_calls,
                    "errors": self.errors},
            models=dict(self.models),
        )  # fmt: skip


def _counters_copier() -> Callable[[StreamCounters], StreamCounters]:
    """A copy of a :class:`StreamCounters` by one generated call: several times cheaper than
    ``attrs.evolve``, which the ledger did once per stream per batch (issue 25)."""
    fields = attrs.fields(StreamCounters)
    if not all(a.init for a in fields):
        return attrs.evolve
    scope: dict[str, Any] = {"cls": StreamCounters}
    args = ", ".join(f"{a.name}=o.{a.name}" for a in fields)
    exec(f"def copy(o):\n    return cls({args})", scope)  # our own field names, from attrs
    fn: Callable[[StreamCounters], StreamCounters] = scope["copy"]
    return fn


_copy_counters: Final = _counters_copier()


def _complete(event: ev.StreamEvent, changes: dict[str, Any]) -> ev.StreamEvent:
    """``event`` with ``changes`` applied.

    An event that was never stored (no ``seq``) belongs to the ledger from the moment it
    is handed over and is completed in place, which is many times cheaper than
    ``attrs.evolve``; an event stored before is copied, so the stored one never changes.
    """
    if not changes:
        return event
    if event.seq is not None:
        return attrs.evolve(event, **changes)
    for name, value in changes.items():
        object.__setattr__(event, name, value)
    return event


def _refuse(where: str, event: ev.StreamEvent, why: str) -> InvalidInput:
    return InvalidInput(f"{where} ({event.type}) {why}", INVALID_EVENT)


IdPaths: TypeAlias = tuple[str, ...]
_ID_GETTERS: dict[type, tuple[IdPaths, Callable[[Any], Any]]] = {}
_SURELY_SHORT: Final = MAX_ID_BYTES // 4
"""Characters: a shorter string is within the limit whatever its UTF-8 (4 bytes at most)."""


def _id_paths(kind: type) -> IdPaths:
    """The attribute paths (``a.b``) of the ids of an event type: its fields named ``id``
    or ``..._id``, and those of its records (``entry``, ``assertion``)."""
    found: list[str] = []
    for field in attrs.fields(attrs.resolve_types(kind)):
        if field.name == "id" or field.name.endswith("_id"):
            found.append(field.name)
        elif isinstance(field.type, type) and attrs.has(field.type):
            found += [f"{field.name}.{inner}" for inner in _id_paths(field.type)]
    return tuple(found)


def check_ids(
    event: ev.StreamEvent, data: bytes | None, index: int, batch: Sequence[ev.StreamEvent]
) -> None:
    """Refuse ``event``, at ``index`` of ``batch``, if an id of it is over :data:`MAX_ID_BYTES`.

    ``data`` is its JSON, made anyway where events are staged: an event whose whole JSON
    is within the limit has no longer id, so most events cost one comparison (None: no
    JSON was made, every id is looked at).
    """
    if (data is None or len(data) > MAX_ID_BYTES) and (long := long_id(event)) is not None:
        field, size = long
        raise _refuse(event_where(index, batch), event, f"has a {field} of {size:,} bytes; "
                      f"ids are at most {MAX_ID_BYTES:,} bytes (UTF-8)")  # fmt: skip


def long_id(event: ev.StreamEvent) -> tuple[str, int] | None:
    """The first id of ``event`` over :data:`MAX_ID_BYTES` (its wire path and size), or None."""
    known = _ID_GETTERS.get(type(event))
    if known is None:
        paths = _id_paths(type(event))
        known = _ID_GETTERS[type(event)] = (paths, operator.attrgetter(*paths, "execution_id"))
    paths, values_of = known
    values = values_of(event)  # one C call: every id (and the execution id again)
    for value in values:
        if value is not None and len(value) > _SURELY_SHORT:
            break
    else:
        return None
    for path, value in zip(paths, values, strict=False):
        if type(value) is str and len(value) > _SURELY_SHORT:
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > MAX_ID_BYTES:
                return ".".join(camel(name) for name in path.split(".")), size
    return None


def complete(event: ev.StreamEvent, now: str, *, where: str = "event") -> ev.StreamEvent:
    """Check ``event`` and fill its history-free derived fields; raises :class:`InvalidInput`.

    ``now`` stamps an event without a timestamp. A message-bus event belongs to its
    record's execution, else to the one it names, else to ``global``.
    """
    changes: dict[str, Any] = {}
    if not event.timestamp:
        changes["timestamp"] = now
    if isinstance(event, ev.MessageBusEvent):
        owner, named = event.entry.execution_id, event.execution_id
        if owner in RESERVED_STREAMS or named == ALL:
            name = named if named == ALL else owner
            raise _refuse(where, event, f"cannot belong to {name!r}: that name is reserved")
        if owner and named and owner != named:
            raise _refuse(
                where, event, f"names execution {named!r} but its entry belongs to {owner!r}"
            )
        key = owner or named or GLOBAL
        if key != event.execution_id:
            changes["execution_id"] = key
        # Error and critical always need action; an in-process producer may also raise it
        # for a lower severity (the plan's emitMessageBusEvent). Ingest drops what was posted.
        if not event.requires_action and event.entry.severity in ACTION_SEVERITIES:
            changes["requires_action"] = True
        return _complete(event, changes)
    execution_id = event.execution_id
    if not execution_id:
        raise _refuse(where, event, "needs a non-empty executionId")
    if execution_id in RESERVED_STREAMS:
        raise _refuse(
            where, event, f"cannot use executionId {execution_id!r}: that name is reserved"
        )
    match event:
        case ev.TranscriptEntryEvent(entry=entry) if entry.execution_id != execution_id:
            raise _refuse(
                where, event, f"entry.executionId {entry.execution_id!r} is not {execution_id!r}"
            )
        case ev.AssertionResultEvent(assertion=a) if a.execution_id != execution_id:
            raise _refuse(
                where, event, f"assertion.executionId {a.execution_id!r} is not {execution_id!r}"
            )
        case ev.AssertionResultEvent(assertion=a) if a.task_id != event.task_id:
            raise _refuse(where, event, f"assertion.taskId {a.task_id!r} is not {event.task_id!r}")
        case ev.ToolEndEvent():
            is_error = event.result_status == "error"
            is_blocked = event.result_status == "blocked"
            if event.is_error is not is_error:
                changes["is_error"] = is_error
            if event.is_blocked is not is_blocked:
                changes["is_blocked"] = is_blocked
    return _complete(event, changes)


def complete_batch(events: Sequence[ev.StreamEvent], now: str) -> list[ev.StreamEvent]:
    """:func:`complete` for each event of a batch; the first bad one raises, naming its index."""
    if len(events) == 1:
        return [complete(events[0], now)]
    done: list[ev.StreamEvent] = []
    for index, event in enumerate(events):
        try:
            done.append(complete(event, now))
        except InvalidInput:  # nothing was changed: again, to name its index
            complete(event, now, where=event_where(index, events))
            raise
    return done


def event_where(index: int, batch: Sequence[ev.StreamEvent]) -> str:
    """How an error names the event at ``index`` of ``batch``."""
    return "event" if len(batch) == 1 else f"event {index}"


@attrs.frozen
class Stage:
    """A group of batches staged by :meth:`Ledger.stage`: what to write, what to send."""

    results: list[list[Envelope] | InvalidInput]
    """Per batch, in order: an envelope per event (a ``global`` copy after each execution
    status), or why it cannot be stored. A bad batch fails alone. An event dropped by the
    span rules is answered by an envelope that is not stored, with the seq of the event it
    repeats (a held status: the stream's last seq then)."""
    envelopes: list[Envelope]
    """The envelopes of every stored batch, in order (the event rows)."""
    streams: dict[str, StreamCounters]
    """The new counters of every key written (the stream rows)."""
    spans: dict[SpanKey, Span]
    """Spans opened or closed (the span rows)."""
    last_pos: int = 0
    """The global position (``pos``, SPEC §14) of the stage's last event on ``all``."""


class _Batch:
    """One batch being staged on top of the group staged before it."""

    def __init__(
        self,
        ledger: Ledger,
        streams: dict[str, StreamCounters],
        spans: dict[SpanKey, Span],
        pos: int,
    ):
        self.ledger = ledger
        self.pos = pos
        self.group_streams = streams
        self.group_spans = spans
        self.streams: dict[str, StreamCounters] = {}
        self.spans: dict[SpanKey, Span] = {}
        self.envelopes: list[Envelope] = []
        self.answers: list[Envelope] = []

    def stream(self, key: str) -> StreamCounters:
        s = self.streams.get(key)
        if s is None:
            ledger = self.ledger
            base = (
                self.group_streams.get(key)
                or ledger._streams.get(key)
                or ledger._learned_streams.get(key)
            )
            if base is None and not ledger.knows(key):
                raise RuntimeError(f"the counters of {key!r} were not loaded before staging")
            s = self.streams[key] = _copy_counters(base) if base else StreamCounters()
        return s

    def span(self, key: SpanKey) -> Span | None:
        ledger = self.ledger
        return (
            self.spans.get(key)
            or self.group_spans.get(key)
            or ledger._spans.get(key)
            or ledger._learned_spans.get(key)
        )

    def add(
        self,
        key: str,
        event: ev.StreamEvent,
        task_id: str | None = None,
        tool: str | None = None,
        is_copy: bool = False,
        answer: bool = True,
    ) -> Envelope:
        s = self.streams.get(key) or self.stream(key)
        seq = s.last_seq = s.last_seq + 1
        s.event_count += 1
        if s.first_timestamp is None:
            s.first_timestamp = event.timestamp
        s.last_timestamp = event.timestamp
        # Every stored row takes a position, as every entry of Redis's fan-out stream does;
        # the `global` copy is not on `all`, so it does not carry its position.
        self.pos += 1
        pos = None if is_copy else self.pos
        if event.seq is None:  # fresh: the ledger's now (see _complete)
            object.__setattr__(event, "seq", seq)
            object.__setattr__(event, "pos", pos)
        else:
            event = attrs.evolve(event, seq=seq, pos=pos)
        env = Envelope(
            key, seq, event, encode_kept(event), TOPIC_OF_TYPE[event.type], task_id, tool, is_copy
        )
        self.envelopes.append(env)
        if answer:
            self.answers.append(env)
        return env

    def echo(
        self, event: ev.StreamEvent, seq: int, index: int, batch: Sequence[ev.StreamEvent]
    ) -> None:
        """Answer a dropped event with ``seq`` (the event it repeats); nothing is stored."""
        check_ids(event, None, index, batch)
        kept = attrs.evolve(event, seq=seq, pos=None)
        self.answers.append(Envelope(event.execution_id, seq, kept, b"", TOPIC_OF_TYPE[event.type]))

    def stage(self, batch: Sequence[ev.StreamEvent]) -> None:
        role_of = ROLE_OF
        for index, event in enumerate(batch):
            key = event.execution_id
            role = role_of[event.type]
            if role == "content":
                self.content(key, event, index, batch)
            elif role == "opens":
                self.opening(key, event, index, batch)
            elif role == "closes":
                self.closing(key, event, index, batch)
            else:
                self.status(key, event, index, batch)  # type: ignore[arg-type]

    def stored(
        self,
        key: str,
        event: ev.StreamEvent,
        index: int,
        batch: Sequence[ev.StreamEvent],
        task_id: str | None = None,
        tool: str | None = None,
        answer: bool = True,
    ) -> int:
        """Store ``event`` (its ``global`` copy if a status) and count it; ``answer``: it is
        an answer to its batch (not a held status released by a closing)."""
        env = self.add(key, event, task_id, tool, answer=answer)
        if len(env.data) > MAX_ID_BYTES:  # else no id of it can be (see check_ids)
            check_ids(env.event, env.data, index, batch)
        if key != GLOBAL:
            if isinstance(env.event, ev.ExecutionStatusEvent):
                copy = attrs.evolve(env.event, seq=None, pos=None)
                self.add(GLOBAL, copy, is_copy=True, answer=answer)
            if is_error_event(env.event):
                self.stream(key).errors += 1
        return env.seq

    def content(
        self, key: str, event: ev.StreamEvent, index: int, batch: Sequence[ev.StreamEvent]
    ) -> None:
        task_id, tool = own_task_id(event), None
        if isinstance(event, ev.AssertionResultEvent):
            s = self.stream(key)
            s.assertions_total += 1
            s.assertions_passed += event.assertion.result == "pass"
            rate = s.assertions_passed / s.assertions_total
            if rate != event.running_pass_rate:
                event = _complete(event, {"running_pass_rate": rate})
        span_id = span_id_of(event)
        if span_id is not None:
            found = self.span((key, span_id))
            if found is not None:
                if FACTS[event.type].span_kind is not None:  # tool:output: its tool's facts
                    tool = found.name if found.kind == "tool" else None
                    task_id = found.task_id
                if event.agent is None and found.agent is not None:
                    event = _complete(event, {"agent": found.agent})
        if event.agent is None and event.parent_span_id is not None:
            parent = self.span((key, event.parent_span_id))
            if parent is not None and parent.agent is not None:
                event = _complete(event, {"agent": parent.agent})
        self.stored(key, event, index, batch, task_id, tool)

    def opening(
        self, key: str, event: ev.StreamEvent, index: int, batch: Sequence[ev.StreamEvent]
    ) -> None:
        span_key = (key, span_id_of(event) or "")
        found = self.span(span_key)
        if found is not None and not takes_opening(found):
            self.echo(event, repeated_seq(found, True), index, batch)
            return
        kind = span_kind_of(event) or "span"
        name = span_name_of(event)
        parent_id = event.parent_span_id
        parent = self.span((key, parent_id)) if parent_id is not None else None
        agent = event.agent
        if agent is None and (agent := own_agent(kind, name, parent)) is not None:
            event = _complete(event, {"agent": agent})
        task_id, tool = own_task_id(event), tool_of(event)
        seq = self.stored(key, event, index, batch, task_id, tool)
        model = getattr(event, "model", None)
        self.spans[span_key] = SpanRecord(
            kind, name, task_id, parent_id, agent, model, open_seq=seq
        )
        s = self.stream(key)
        s.open_spans += 1
        _count_span(s, kind, model, None)
        if kind == "agent" and agent:  # an agent span's agent is the agent's name
            # The run is named by its outermost agent: the earliest with no agent above it.
            outermost = parent is None or parent.agent is None
            since = s.name_since  # None: no agent named it yet; "": the root agent did
            if outermost and (since is None or (since and event.timestamp < since)):
                s.name, s.name_since = agent, event.timestamp
            if agent not in s.agents:
                s.agents = (*s.agents, agent)
        elif s.name is None and kind not in ("tool", "skill") and name and parent is None:
            s.name = name  # a top-level span's title, until an agent names the run
        conversation = getattr(event, "conversation_id", None)
        if conversation and s.conversation_id is None:
            s.conversation_id = conversation

    def closing(
        self, key: str, event: ev.StreamEvent, index: int, batch: Sequence[ev.StreamEvent]
    ) -> None:
        span_key = (key, span_id_of(event) or "")
        found = self.span(span_key)
        state = closing_state(event)
        if found is not None and not takes_closing(found, state):
            self.echo(event, repeated_seq(found, False), index, batch)
            return
        task_id, tool = own_task_id(event), None
        if found is not None:
            task_id = task_id or found.task_id
            tool = found.name if found.kind == "tool" else None
            agent = found.agent
            record = found.copy()
        else:
            parent_id = event.parent_span_id
            parent = self.span((key, parent_id)) if parent_id is not None else None
            kind = span_kind_of(event) or ""
            agent = own_agent(kind, span_name_of(event), parent)
            record = SpanRecord(kind, span_name_of(event), task_id, parent_id, agent)
        if event.agent is None and agent is not None:
            event = _complete(event, {"agent": agent})
        seq = self.stored(key, event, index, batch, task_id, tool)
        first = found is None or found.close_seq == 0
        record.close_seq, record.close_state = seq, state
        self.spans[span_key] = record
        s = self.stream(key)
        if found is None:  # closed, never opened: it counts as a call all the same
            _count_span(s, record.kind, None, None)
        if first and record.kind == "llm" and isinstance(event, ev.SpanEndEvent) and event.usage:
            _count_span(s, "", event.model or record.model or "", event.usage)
        if closes_open_span(found):
            s.open_spans -= 1
            if s.open_spans <= 0 and s.held is not None:
                held, s.held = s.held, None
                when = max(held.timestamp, event.timestamp)
                released = attrs.evolve(held, timestamp=when, seq=None, pos=None)
                s.last_status = released.status
                s.status_seq = self.stored(key, released, index, batch, answer=False)

    def status(
        self,
        key: str,
        event: ev.ExecutionStatusEvent,
        index: int,
        batch: Sequence[ev.StreamEvent],
    ) -> None:
        if key == GLOBAL or not is_root_status(event):
            self.stream(key).last_status = event.status
            self.stored(key, event, index, batch)
            return
        s = self.stream(key)
        if event.status == "started":
            if s.started_seq:
                self.echo(event, s.started_seq, index, batch)
                return
            s.last_status = event.status
            s.started_seq = self.stored(key, event, index, batch)
        elif event.status in ENDED_STATES:
            if s.status_seq or s.held is not None:
                self.echo(event, s.status_seq or s.last_seq, index, batch)
            elif s.open_spans > 0:
                s.held = event
                self.echo(event, s.last_seq, index, batch)
            else:
                s.last_status = event.status
                s.status_seq = self.stored(key, event, index, batch)
        else:
            s.last_status = event.status
            self.stored(key, event, index, batch)
        if event.name and s.name_since is None:  # no agent named the run: the root's title
            s.name = event.name
        if event.agent:  # the root span is an agent: the outermost one, naming the run
            s.name, s.name_since = event.agent, ""
            if event.agent not in s.agents:
                s.agents = (event.agent, *s.agents)


_COPIED: Final = frozenset(
    kind for kind, fact in FACTS.items() if fact.role in ("status", "closes")
)
"""Types whose staging may write ``global``: a status (its copy), a closing (it may release
a held status, which has its copy)."""


def _count_span(s: StreamCounters, kind: str, model: str | None, usage: ev.Usage | None) -> None:
    """Count a span into its execution's totals: a call once, a model call's tokens once."""
    if kind == "tool":
        s.tool_calls += 1
    elif kind == "llm":
        s.model_calls += 1
    if usage is not None:
        tokens_in, tokens_out = usage.get("inputTokens", 0), usage.get("outputTokens", 0)
        s.input_tokens += tokens_in
        s.output_tokens += tokens_out
        before = s.models.get(model or "", (0, 0))
        s.models = {**s.models, model or "": (before[0] + tokens_in, before[1] + tokens_out)}


def span_key(event: ev.StreamEvent) -> SpanKey | None:
    """The span an event opens, closes or belongs to (None: it names none)."""
    span_id = span_id_of(event)
    return None if span_id is None else (event.execution_id, span_id)


class Ledger:
    """Counters and span facts of stream keys; stages batches, learns commits.

    The hub owns one and is its only writer: ``stage`` a group of completed batches,
    write the stage's rows, then ``commit`` it (or drop it if the write failed). Memory
    is bounded: only the most recently written ``stream_cache_size`` keys keep their
    counters here; before staging, the hub loads the others (:meth:`unknown_streams`,
    :meth:`learn_streams`), the way it does for spans.
    """

    def __init__(
        self,
        *,
        activity: int = 0,
        last_pos: int = 0,
        complete: bool = True,
        stream_cache_size: int = STREAM_CACHE_SIZE,
        span_cache_size: int = SPAN_CACHE_SIZE,
    ) -> None:
        self._streams: OrderedDict[str, StreamCounters] = OrderedDict()
        self._activity = activity
        self._last_pos = last_pos
        self._complete = complete
        """Every key the store has is in the cache or in ``_evicted`` (so any other key is
        new): true for a new store until more keys were evicted than are remembered."""
        self._evicted: set[str] = set()
        self._stream_cache_size = stream_cache_size
        self._span_cache_size = span_cache_size
        self._spans: OrderedDict[SpanKey, Span] = OrderedDict()
        self._misses: set[SpanKey] = set()
        self._whole: set[str] = set()
        """Keys every stored span of which is in the span cache, so that a span of theirs
        that is not there is not in the store either: keys the store had no event of when
        this ledger first met them, none of whose spans left the cache since (issue 25: a
        run's new tool uses and skills were looked up in the store, batch after batch)."""
        # What the hub loaded for the next stage, kept whole until it commits (the caches
        # may evict while learning a group larger than they are).
        self._learned_streams: dict[str, StreamCounters] = {}
        self._learned_spans: dict[SpanKey, Span] = {}

    # ------------------------------------------------------------------ reading

    def knows(self, key: str) -> bool:
        """Whether the counters of ``key`` are here (or ``key`` certainly has none)."""
        return (
            key in self._streams
            or key in self._learned_streams
            or (self._complete and key not in self._evicted)
        )

    def last_seq(self, key: str) -> int:
        """The seq of the newest committed event of ``key`` (0 if none); :meth:`knows` first."""
        s = self._streams.get(key)
        return s.last_seq if s else 0

    @property
    def last_pos(self) -> int:
        """The global position of the newest committed event on ``all`` (0 if none)."""
        return self._last_pos

    def counters(self, key: str) -> StreamCounters | None:
        """The committed counters of ``key``, if they are in memory."""
        return self._streams.get(key)

    def __len__(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------------------ streams

    def unknown_streams(self, batches: Sequence[Sequence[ev.StreamEvent]]) -> list[str]:
        """Stream keys ``batches`` write whose counters must be loaded from the store first."""
        wanted: dict[str, None] = {}
        copied = _COPIED
        for batch in batches:
            for event in batch:
                wanted[event.execution_id] = None
                if event.type in copied:
                    wanted[GLOBAL] = None
        return [key for key in wanted if not self.knows(key)]

    def learn_streams(self, found: dict[str, StreamCounters | None]) -> None:
        """Counters read from the store (None: the store has no such key)."""
        for key, counters in found.items():
            self._evicted.discard(key)
            if counters is None:  # nothing stored: no span either
                self._hold_whole(key)
            self._learned_streams[key] = counters or StreamCounters()
            self._keep(key, self._learned_streams[key])

    def _keep(self, key: str, counters: StreamCounters) -> None:
        streams = self._streams
        streams[key] = counters
        streams.move_to_end(key)
        while len(streams) > self._stream_cache_size:
            old, _ = streams.popitem(last=False)
            self._whole.discard(old)
            self._evicted.add(old)
            if len(self._evicted) > self._stream_cache_size:
                self._evicted.clear()  # bounded: from now on, unknown keys are looked up
                self._complete = False

    # ------------------------------------------------------------------ spans

    def unknown_spans(self, batches: Sequence[Sequence[ev.StreamEvent]]) -> list[SpanKey]:
        """Spans that ``batches`` open, close, belong to or name as a parent, known neither
        here nor from an earlier event of the group (which stages them).

        The hub looks them up in its store and passes the answers to :meth:`learn_spans`.
        None is asked of a key every stored span of which is here (a key new to the store).
        """
        seen: set[SpanKey] = set()
        missing: dict[SpanKey, None] = {}
        whole = self._whole
        for batch in batches:
            for event in batch:
                key = event.execution_id
                if key in whole:
                    continue
                if self._stores_nothing_of(key):
                    self._hold_whole(key)
                    continue
                span_id, parent_id = span_id_of(event), event.parent_span_id
                if span_id is None and parent_id is None:
                    continue
                for wanted in (span_id, parent_id):
                    if wanted is None:
                        continue
                    span = (key, wanted)
                    if (
                        span not in seen
                        and span not in self._spans
                        and span not in self._learned_spans
                        and span not in self._misses
                    ):
                        missing[span] = None
                if span_id is not None and FACTS[event.type].role in ("opens", "closes"):
                    seen.add((key, span_id))
        return list(missing)

    def _stores_nothing_of(self, key: str) -> bool:
        """Whether the store certainly has no event of ``key`` (a new store's new key)."""
        return (
            self._complete
            and key not in self._evicted
            and key not in self._streams
            and key not in self._learned_streams
        )

    def _hold_whole(self, key: str) -> None:
        whole = self._whole
        if len(whole) >= 2 * self._stream_cache_size:  # keys staged but never committed
            whole.clear()  # bounded: their spans are looked up again
        whole.add(key)

    def learn_spans(self, found: dict[SpanKey, Span | None]) -> None:
        """Remember spans read from the store (None: the store does not know it either)."""
        for key, span in found.items():
            if span is None:
                if len(self._misses) >= self._span_cache_size:
                    self._misses.clear()
                self._misses.add(key)
            else:
                self._learned_spans[key] = span
                self._remember(key, span)

    def _remember(self, key: SpanKey, span: Span) -> None:
        self._misses.discard(key)
        self._spans[key] = span
        self._spans.move_to_end(key)
        if len(self._spans) > self._span_cache_size:
            (old, _), _ = self._spans.popitem(last=False)
            self._whole.discard(old)  # its spans are no longer all here

    # ------------------------------------------------------------------ writing

    def stage(self, batches: Sequence[Sequence[ev.StreamEvent]], *, wall: float = 0.0) -> Stage:
        """Stage completed batches as one group: seqs, counters, envelopes, rows.

        Each batch is staged on its own and joins the group only if all of it could be,
        so a bad batch fails alone and never half-applies. Nothing changes until
        :meth:`commit`. ``wall`` (seconds since the epoch) is when the keys were written.
        """
        streams: dict[str, StreamCounters] = {}
        spans: dict[SpanKey, Span] = {}
        results: list[list[Envelope] | InvalidInput] = []
        envelopes: list[Envelope] = []
        written: dict[str, None] = {}  # keys in the order of their last write
        pos = self._last_pos
        for batch in batches:
            staged = _Batch(self, streams, spans, pos)
            try:
                staged.stage(batch)
            except InvalidInput as exc:
                results.append(exc)
                continue
            except (TypeError, ValueError) as exc:  # e.g. a value JSON cannot carry
                results.append(InvalidInput(f"the events cannot be stored: {exc}", INVALID_EVENT))
                continue
            streams.update(staged.streams)
            spans.update(staged.spans)
            pos = staged.pos
            envelopes.extend(staged.envelopes)
            for env in staged.envelopes:
                written.pop(env.key, None)
                written[env.key] = None
            results.append(staged.answers)
        activity = self._activity
        for key in written:
            activity += 1
            streams[key].activity = activity
            streams[key].updated = wall
        return Stage(results, envelopes, streams, spans, pos)

    def commit(self, stage: Stage) -> None:
        """The stage's rows are durable: its counters and spans are now the ledger's."""
        for key, counters in stage.streams.items():
            if self._stores_nothing_of(key):  # its first events: all its spans are here
                self._hold_whole(key)
            self._keep(key, counters)
            self._activity = max(self._activity, counters.activity)
        for span_id, span in stage.spans.items():
            self._remember(span_id, span)
        self._last_pos = max(self._last_pos, stage.last_pos)
        self._learned_streams.clear()
        self._learned_spans.clear()

    def forget(self, keys: Sequence[str]) -> None:
        """Drop the counters and spans of deleted stream keys (retention)."""
        gone = set(keys)
        self._whole -= gone
        for key in gone:
            self._streams.pop(key, None)
            self._evicted.discard(key)
        for span in [k for k in self._spans if k[0] in gone]:
            del self._spans[span]
        self._misses = {k for k in self._misses if k[0] not in gone}
