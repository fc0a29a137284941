"""Typed events, records and client messages of the wire format (SPEC §2, §3).

Plain frozen attrs classes with snake_case attributes; the wire converter
(``core.wire``) maps them to the camelCase keys. Allowed values are ``Literal``
types, which the converter checks whenever a message comes in from outside.

An event's ``timestamp`` may be left empty: the ledger stamps it when it is stored
(the core reads no clock). A stored event's ``execution_id`` is its stream key.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import attrs

from .protocol import Severity, Topic


def iso_utc(moment: datetime) -> str:
    """``moment`` (an aware datetime in UTC) as ISO-8601 with milliseconds (``...Z``).

    The one form of every stored time: fixed width, so times sort as strings.
    """
    m = moment
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}."
        f"{m.microsecond // 1000:03d}Z"
    )


ToolResultStatus: TypeAlias = Literal["done", "error", "blocked"]
SkillStatus: TypeAlias = Literal["success", "partial", "failed"]
WaveState: TypeAlias = Literal["pending", "running", "completed", "failed"]
AgentState: TypeAlias = Literal["idle", "working", "blocked", "error"]
ExecutionState: TypeAlias = Literal["started", "running", "paused", "completed", "failed"]
AssertionOutcome: TypeAlias = Literal["pass", "fail", "skip", "warn"]
SpanKind: TypeAlias = Literal["agent", "llm", "tool", "skill", "task", "wave", "span"]
"""What a span is (SPEC §12): an agent, a model call, a tool call, a skill, a task, a wave,
or anything else."""
SpanState: TypeAlias = Literal["running", "done", "error", "blocked", "lost"]
"""A span's state (SPEC §12): ``blocked`` is for tools, ``lost`` is judged by the watchdog."""
SpanEndState: TypeAlias = Literal["done", "error", "blocked", "lost"]
"""The states a ``span:end`` may carry (a span that ended is no longer ``running``)."""

JSONDict: TypeAlias = dict[str, Any]
Usage: TypeAlias = dict[str, int]
"""Token counts by camelCase name: ``inputTokens``, ``outputTokens`` and any other the
producer gave (``cacheReadInputTokens``, ``reasoningTokens``, ...)."""


def _finite(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    """Refuse NaN and infinities: JSON cannot carry them, so they could never be read back."""
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number, got {value}")


def _finite_values(
    _: object, attribute: attrs.Attribute[Any], value: dict[str, float] | None
) -> None:
    if value is not None and not all(math.isfinite(v) for v in value.values()):
        raise ValueError(f"{attribute.name} values must be finite numbers")


# --------------------------------------------------------------------------- records


@attrs.frozen(kw_only=True)
class TranscriptEntry:
    """One transcript record (plan OBS-603)."""

    id: str
    timestamp: str
    sequence: int
    execution_id: str
    instance_id: str
    entry_type: str
    category: str
    summary: str
    task_id: str | None = None
    wave_number: int | None = None
    details: JSONDict | None = None
    duration_ms: float | None = attrs.field(default=None, validator=_finite)


@attrs.frozen(kw_only=True)
class AssertionResult:
    """One assertion outcome (plan OBS-605)."""

    id: str
    task_id: str
    execution_id: str
    category: str
    description: str
    result: AssertionOutcome
    timestamp: str
    chain_id: str | None = None
    evidence: JSONDict | None = None
    duration_ms: float | None = attrs.field(default=None, validator=_finite)


@attrs.frozen(kw_only=True)
class MessageBusLogEntry:
    """One message-bus log record (plan OBS-607)."""

    id: str
    event_id: str
    timestamp: str
    source: str
    event_type: str
    human_summary: str
    severity: Severity
    category: str
    created_at: str
    correlation_id: str | None = None
    transcript_entry_id: str | None = None
    task_id: str | None = None
    execution_id: str | None = None
    payload: JSONDict | None = None


# --------------------------------------------------------------------------- stream events


@attrs.frozen(kw_only=True)
class TranscriptEntryEvent:
    """``transcript:entry``: a transcript record was stored."""

    type: Literal["transcript:entry"] = attrs.field(default="transcript:entry", init=False)
    execution_id: str
    entry: TranscriptEntry
    is_latest: bool = True
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class ToolStartEvent:
    """``tool:start``: a tool invocation began."""

    type: Literal["tool:start"] = attrs.field(default="tool:start", init=False)
    execution_id: str
    tool_use_id: str
    tool: str
    input_summary: str
    task_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class ToolEndEvent:
    """``tool:end``: a tool invocation finished."""

    type: Literal["tool:end"] = attrs.field(default="tool:end", init=False)
    execution_id: str
    tool_use_id: str
    result_status: ToolResultStatus
    duration_ms: float = attrs.field(validator=_finite)
    output_summary: str | None = None
    is_error: bool | None = None
    is_blocked: bool | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class ToolOutputEvent:
    """``tool:output``: a chunk of a running tool's output."""

    type: Literal["tool:output"] = attrs.field(default="tool:output", init=False)
    execution_id: str
    tool_use_id: str
    chunk: str
    is_stderr: bool = False
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class AssertionResultEvent:
    """``assertion:result``: an assertion was recorded; carries the running pass rate."""

    type: Literal["assertion:result"] = attrs.field(default="assertion:result", init=False)
    execution_id: str
    task_id: str
    assertion: AssertionResult
    running_pass_rate: float = attrs.field(default=1.0, validator=_finite)
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class SkillStartEvent:
    """``skill:start``: a skill invocation began."""

    type: Literal["skill:start"] = attrs.field(default="skill:start", init=False)
    execution_id: str
    skill_trace_id: str
    skill_name: str
    skill_file: str
    line_number: int
    task_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class SkillEndEvent:
    """``skill:end``: a skill invocation finished."""

    type: Literal["skill:end"] = attrs.field(default="skill:end", init=False)
    execution_id: str
    skill_trace_id: str
    skill_name: str
    status: SkillStatus
    duration_ms: float = attrs.field(validator=_finite)
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class MessageBusEvent:
    """``messagebus:event``: a message-bus record; ``global`` when it has no execution.

    ``execution_id`` and ``requires_action`` are derived by the ledger from the entry.
    """

    type: Literal["messagebus:event"] = attrs.field(default="messagebus:event", init=False)
    entry: MessageBusLogEntry
    execution_id: str = ""
    requires_action: bool = False
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class WaveStatusEvent:
    """``wave:status``: a wave changed state."""

    type: Literal["wave:status"] = attrs.field(default="wave:status", init=False)
    execution_id: str
    wave_number: int
    status: WaveState
    task_count: int
    completed_count: int
    failed_count: int
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class AgentHeartbeatEvent:
    """``agent:heartbeat``: an agent instance is alive."""

    type: Literal["agent:heartbeat"] = attrs.field(default="agent:heartbeat", init=False)
    execution_id: str
    instance_id: str
    status: AgentState
    current_task_id: str | None = None
    metrics: dict[str, float] | None = attrs.field(default=None, validator=_finite_values)
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class ExecutionStatusEvent:
    """``execution:status``: an execution changed state (also copied to ``global``)."""

    type: Literal["execution:status"] = attrs.field(default="execution:status", init=False)
    execution_id: str
    status: ExecutionState
    message: str | None = None
    output: str | None = None
    """On the closing status: what the run's outermost agent (else its root) produced."""
    usage: Usage | None = None
    """On the closing status: the run's token usage, each count once (SPEC §12 "Results")."""
    name: str | None = None
    """On the root span's statuses: its title, the run's name when no agent names it."""
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class SpanStartEvent:
    """``span:start`` (topic ``spans``): an agent, model call or other span began (SPEC §12).

    Tools keep ``tool:start``, skills ``skill:start`` and the trace's root span
    ``execution:status``; every other span opens with exactly one of these.
    ``name`` is the title a person reads (``logfire.msg``, else the agent/model name,
    else the span name). Model calls (``kind`` ``llm``) carry ``model`` and ``provider``,
    and their input messages when the producer gave them at the start.
    """

    type: Literal["span:start"] = attrs.field(default="span:start", init=False)
    execution_id: str
    span_id: str
    kind: SpanKind
    name: str
    parent_span_id: str | None = None
    agent: str | None = None
    task_id: str | None = None
    operation: str | None = None
    """The producer's own word for what the span does (``chat``, ``invoke_agent``, ...)."""
    model: str | None = None
    provider: str | None = None
    conversation_id: str | None = None
    input_messages: list[JSONDict] | None = None
    system_instructions: list[JSONDict] | None = None
    details: JSONDict | None = None
    """Everything else the producer said of the span (attributes, trimmed)."""
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class SpanEndEvent:
    """``span:end`` (topic ``spans``): a span that ``span:start`` opened has ended.

    A span's facts are its start and its end together (a field on both: the end's).
    For a model call: ``model`` (the response model, else the request's), ``usage``,
    ``finish_reasons``, and the conversation structured as the OpenTelemetry GenAI
    conventions' JSON messages (``input_messages``, ``system_instructions``,
    ``output_messages``: role and typed parts — text, tool_call, tool_call_response,
    reasoning), at most 256 KiB per call: ``cut`` says how many bytes were cut (from
    the middle of the longest message, marked there). ``output`` is the text the span
    produced (an agent's final result, a model call's answer).
    """

    type: Literal["span:end"] = attrs.field(default="span:end", init=False)
    execution_id: str
    span_id: str
    state: SpanEndState
    duration_ms: float | None = attrs.field(default=None, validator=_finite)
    kind: SpanKind | None = None
    name: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    task_id: str | None = None
    model: str | None = None
    provider: str | None = None
    usage: Usage | None = None
    finish_reasons: list[str] | None = None
    input_messages: list[JSONDict] | None = None
    system_instructions: list[JSONDict] | None = None
    output_messages: list[JSONDict] | None = None
    output: str | None = None
    cut: int | None = None
    error: str | None = None
    """Why the span failed (state ``error``), as the producer said it."""
    details: JSONDict | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


AlertKind: TypeAlias = Literal["lost", "slow", "idle"]
"""What the watchdog judged (SPEC §13): a producer went silent, a call runs long, a run idles."""


@attrs.frozen(kw_only=True)
class WatchAlertEvent:
    """``watch:alert`` (topic ``alerts``): the watchdog's judgement (SPEC §13), always inferred.

    ``alert_id`` names the condition (the same on every node and after a restart, so the
    hub stores it once); ``since`` is when what it is about was last heard of.
    """

    type: Literal["watch:alert"] = attrs.field(default="watch:alert", init=False)
    execution_id: str
    alert_id: str
    alert: AlertKind
    since: str
    message: str
    instance_id: str | None = None
    span_id: str | None = None
    tool_use_id: str | None = None
    inferred: bool = True
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


@attrs.frozen(kw_only=True)
class WatchClearEvent:
    """``watch:clear`` (topic ``alerts``): the real event came after all; withdraws ``alert_id``."""

    type: Literal["watch:clear"] = attrs.field(default="watch:clear", init=False)
    execution_id: str
    alert_id: str
    message: str
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    timestamp: str = ""
    seq: int | None = None
    pos: int | None = None


StreamEvent: TypeAlias = (
    TranscriptEntryEvent
    | ToolStartEvent
    | ToolEndEvent
    | ToolOutputEvent
    | AssertionResultEvent
    | SkillStartEvent
    | SkillEndEvent
    | MessageBusEvent
    | WaveStatusEvent
    | AgentHeartbeatEvent
    | ExecutionStatusEvent
    | SpanStartEvent
    | SpanEndEvent
    | WatchAlertEvent
    | WatchClearEvent
)

STREAM_EVENT_TYPES: Final[dict[str, type[StreamEvent]]] = {
    "transcript:entry": TranscriptEntryEvent,
    "tool:start": ToolStartEvent,
    "tool:end": ToolEndEvent,
    "tool:output": ToolOutputEvent,
    "assertion:result": AssertionResultEvent,
    "skill:start": SkillStartEvent,
    "skill:end": SkillEndEvent,
    "messagebus:event": MessageBusEvent,
    "wave:status": WaveStatusEvent,
    "agent:heartbeat": AgentHeartbeatEvent,
    "execution:status": ExecutionStatusEvent,
    "span:start": SpanStartEvent,
    "span:end": SpanEndEvent,
    "watch:alert": WatchAlertEvent,
    "watch:clear": WatchClearEvent,
}
"""Every stream event type (SPEC §2, §12 and §13), by its ``type``."""

PLAN_EVENT_TYPES: Final[frozenset[str]] = frozenset(
    {
        "transcript:entry", "tool:start", "tool:end", "tool:output", "assertion:result",
        "skill:start", "skill:end", "messagebus:event", "wave:status", "agent:heartbeat",
        "execution:status",
    }
)  # fmt: skip
"""The source plan's 11 stream event types (their shape never changes; SPEC §2)."""


# --------------------------------------------------------------------------- connection events


@attrs.frozen(kw_only=True)
class ConnectedEvent:
    """``observability:connected``: first frame; ``buffered_event_count`` replayed events follow."""

    type: Literal["observability:connected"] = attrs.field(
        default="observability:connected", init=False
    )
    execution_id: str
    message: str
    buffered_event_count: int
    epoch: str | None = None
    pos: int | None = None
    """``all`` only: the global position the stream starts after (what ``since_pos=`` to
    resume with if nothing arrives before the connection is cut; SPEC §14)."""
    timestamp: str = ""


@attrs.frozen(kw_only=True)
class ResetEvent:
    """``observability:reset``: the history a client resumed from is gone (SPEC §10).

    Sent right after ``connected`` when the client's epoch is not the server's; the
    history that exists follows, from its first event.
    """

    type: Literal["observability:reset"] = attrs.field(default="observability:reset", init=False)
    epoch: str
    last_seq: int
    timestamp: str = ""


@attrs.frozen(kw_only=True)
class SubscribedEvent:
    """``observability:subscribed``: confirms a ``subscribe``."""

    type: Literal["observability:subscribed"] = attrs.field(
        default="observability:subscribed", init=False
    )
    topic: str
    execution_id: str | None = None
    timestamp: str = ""


@attrs.frozen(kw_only=True)
class UnsubscribedEvent:
    """``observability:unsubscribed``: confirms an ``unsubscribe``."""

    type: Literal["observability:unsubscribed"] = attrs.field(
        default="observability:unsubscribed", init=False
    )
    topic: str
    timestamp: str = ""


@attrs.frozen(kw_only=True)
class ErrorEvent:
    """``observability:error``: a client message was refused; the connection stays open."""

    type: Literal["observability:error"] = attrs.field(default="observability:error", init=False)
    error: str
    code: str
    timestamp: str = ""


@attrs.frozen(kw_only=True)
class PongEvent:
    """``pong``: the answer to a client ``ping``."""

    type: Literal["pong"] = attrs.field(default="pong", init=False)
    timestamp: str = ""


ConnectionEvent: TypeAlias = (
    ConnectedEvent | ResetEvent | SubscribedEvent | UnsubscribedEvent | ErrorEvent
)
ServerEvent: TypeAlias = StreamEvent | ConnectionEvent | PongEvent

# --------------------------------------------------------------------------- client messages


@attrs.frozen(kw_only=True)
class Filters:
    """Event filters a client sends with ``subscribe`` (SPEC §3). ``None`` = no filter."""

    entry_types: frozenset[str] | None = None
    tools: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    severity: frozenset[str] | None = None
    task_id: str | None = None
    q: str | None = None
    """A live query (SPEC §14): only events whose text matches it (judged by the index)."""
    execution: str | None = None
    """Only events of this execution (the typed filters of SPEC §14, exact values)."""
    type: str | None = None
    tool: str | None = None
    state: str | None = None
    agent: str | None = None

    def merged(self, update: FilterUpdate) -> Filters:
        """These filters with the keys present in ``update`` replaced (null clears one)."""
        return attrs.evolve(self, **update.changes)

    @property
    def empty(self) -> bool:
        """True when nothing is filtered."""
        return self == NO_FILTERS


NO_FILTERS: Final = Filters()


@attrs.frozen
class FilterUpdate:
    """The filter keys a ``subscribe`` named, by attribute name; a ``None`` value clears."""

    changes: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Subscribe:
    """``{"action": "subscribe", "topic": ..., "filters": {...}}``."""

    topic: Topic
    filters: FilterUpdate = attrs.field(factory=FilterUpdate)
    execution_id: str | None = None


@attrs.frozen(kw_only=True)
class Unsubscribe:
    """``{"action": "unsubscribe", "topic": ...}``."""

    topic: Topic
    execution_id: str | None = None


@attrs.frozen
class Ping:
    """``{"type": "ping"}``."""


ClientMessage: TypeAlias = Subscribe | Unsubscribe | Ping


# --------------------------------------------------------------------------- summaries


@attrs.frozen(kw_only=True)
class ExecutionSummary:
    """What the hub knows of one execution (``GET /api/executions``)."""

    execution_id: str
    last_status: str | None
    event_count: int
    last_seq: int
    first_timestamp: str | None
    last_timestamp: str | None
    name: str | None = None
    """The run's name: its outermost agent's, else a top-level span's title (SPEC §12)."""
    conversation_id: str | None = None
    agents: list[str] = attrs.field(factory=list)
    """The names of the run's agents, the outermost first where known."""
    state: str | None = None
    """Its last stored status; ``running`` when events came without one."""
    totals: dict[str, Any] | None = None
    """``modelCalls``, ``inputTokens``, ``outputTokens``, ``toolCalls``, ``errors``, and
    ``cost`` once priced (:func:`trio_obs.core.prices.cost`)."""
    models: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    """Input and output tokens per model: what ``cost`` is computed from (not sent)."""
