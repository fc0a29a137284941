"""OpenTelemetry in (SPEC §11, §12): OTLP spans and log records become stream events.

Pure: the official ``opentelemetry-proto`` request messages in; typed stream events
out, with the number of items refused and why (OTLP's partial success). No I/O, no
clock: times come from the spans, and ``now`` from the caller for records without one.

The rule (README "OpenTelemetry" has it as a table):

- The execution id is the trace id, in lower-case hex; the trace's root span (the span
  without a parent) is the execution, whatever its kind.
- What a span is (agent, model call, tool, anything else; its title, model, usage,
  conversation...) is read by :mod:`.otlp_dialects` from whichever dialect said it.
- Per trace in a request, FIRST ``execution:status`` ``started`` (at the earliest start
  in the request; ``spanId`` the root's when the request has it, else the execution id:
  the ledger stores one per execution), then per copy of a
  span: the root's end is the closing ``execution:status`` (``completed``/``failed``,
  with the outermost agent's output and usage); a start copy of any other span (the
  live processor's, a Logfire pending span, an in-progress span) is its opening
  (``tool:start`` for tools, else ``span:start``); an ended copy is its opening and its
  closing (``tool:end`` / ``span:end``).
- Every copy gives its candidates: the ledger keeps one opening and one closing per span
  and holds the closing status while spans of the execution are open (SPEC §12). The
  :class:`SpanMemory` only leaves out what this server itself already stored.
- Span events named ``exception``: ``messagebus:event`` with severity ``error``; the
  GenAI message events are folded into their model call; other span events and log
  records are transcript entries (of their span, where they have one).

The live processor (:class:`~trio_obs.otel.LiveSpanProcessor`) marks every span it
handles (:data:`LIVE_SPAN`) and says which of its own copies is which
(:data:`LIVE_COPY`); the usual exporter's copy of such a span adds nothing.
"""

from __future__ import annotations

from typing import Final, Literal

import attrs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from . import events as ev
from .otlp_dialects import BULKY, SpanDescription, cut_conversation, describe, event_messages
from .otlp_memory import Outer, Seen, SpanMemory, Translation
from .otlp_values import (
    JSON,
    MAX_SUMMARY,
    ResourceView,
    SpanRef,
    SpanView,
    attributes_of,
    bad_ids,
    bad_log_ids,
    cut,
    iso_of_nanos,
    operation_of,
    severity_of,
    summary_of,
    text_of,
    trimmed,
    value_of,
)
from .watchdog import KEEPALIVE, keepalive_heartbeat

LIVE_SPAN: Final = "trio_obs.live_span"
"""Set (``true``) on a span by the live processor when it starts: that processor sends
this span's start and its end itself."""
LIVE_COPY: Final = "trio_obs.live_copy"
"""On the live processor's own copies of a span: ``"start"`` (in progress) or ``"end"``."""

MAX_REASONS: Final = 3
MAX_OUTPUT: Final = 64 * 1024
"""Characters of a span's ``output`` text at most."""
MAX_DEPTH: Final = 256
"""Ancestors walked up to find a span's agent (a bound against cycles in bad input)."""
_NOT_SHOWN: Final = ("trio_obs.", "llm.input_messages.", "llm.output_messages.")
"""Attribute prefixes left out of a span's ``details`` (ours, and messages given structured)."""


@attrs.frozen
class Copy:
    """One copy of a span in a request, read: which span it stands for and what it says."""

    view: SpanView
    about: SpanDescription
    span_id: str
    """The span this copy stands for (a Logfire pending span stands for its parent)."""
    parent: str | None
    """That span's parent (hex); None for the trace's root."""
    ended: bool
    """True for a copy of the ended span; False for a start copy."""

    @property
    def trace_id(self) -> str:
        return self.view.trace_id

    @property
    def ref(self) -> SpanRef:
        return (self.view.trace_id, self.span_id)


class _Builder:
    """One request being translated, on top of what the memory knows."""

    def __init__(self, memory: SpanMemory, now: str, what: str) -> None:
        self.memory = memory
        self.now = now
        self.what = what
        self.spans: dict[SpanRef, Seen] = {}
        self.entries: dict[str, int] = {}
        self.outer: dict[str, Outer] = {}
        self.started: set[str] = set()
        self.walked: dict[SpanRef, tuple[str | None, bool | None]] = {}
        self.shown: dict[SpanRef, JSON] = {}
        self.out: list[tuple[int, int, ev.StreamEvent]] = []
        self.last_time = 0
        self.total = 0
        self.rejected = 0
        self.reasons: list[str] = []

    # ------------------------------------------------------------------ bookkeeping

    def seen(self, ref: SpanRef) -> Seen | None:
        found = self.spans.get(ref)
        return found if found is not None else self.memory.seen(ref)

    def above(self, trace_id: str, parent: str | None) -> tuple[str | None, bool | None]:
        """The nearest agent at or above span ``parent``: (its name where known, whether there
        is one: None when the chain is cut before an agent or the root). One walk up, kept
        for the request (every call comes after the spans of the request are read)."""
        if parent is None:
            return None, False
        found = self.walked.get((trace_id, parent))
        if found is not None:
            return found
        answer: tuple[str | None, bool | None] = (None, None)
        at: str | None = parent
        for _ in range(MAX_DEPTH):
            if at is None:
                answer = (None, False)
                break
            seen = self.seen((trace_id, at))
            if seen is None:
                break
            if seen.kind == "agent" or seen.agent is not None:
                answer = (seen.agent, True)
                break
            at = seen.parent
        self.walked[(trace_id, parent)] = answer
        return answer

    def agent_above(self, trace_id: str, parent: str | None) -> str | None:
        """The name of the nearest agent at or above span ``parent``, where it is known."""
        return self.above(trace_id, parent)[0]

    def outer_of(self, trace_id: str) -> Outer | None:
        found = self.outer.get(trace_id)
        return found if found is not None else self.memory.outer(trace_id)

    def next_sequence(self, trace_id: str) -> int:
        count = self.entries.get(trace_id)
        if count is None:
            count = self.memory.entries(trace_id)
        self.entries[trace_id] = count + 1
        return count + 1

    def emit(self, nanos: int, event: ev.StreamEvent, *, first: bool = False) -> None:
        # Events without a time of their own keep their place after the previous one.
        nanos = nanos if nanos > 0 else self.last_time
        self.last_time = nanos
        self.out.append((-1 if first else nanos, len(self.out), event))

    def stamp(self, nanos: int) -> str:
        return iso_of_nanos(nanos) or self.now

    def reject(self, why: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(why)

    def result(self) -> Translation:
        # Within a request, events go in the order they happened (an exporter sends
        # children before their parents), each trace's ``started`` before all of it.
        self.out.sort(key=lambda item: (item[0], item[1]))
        message = ""
        if self.rejected:
            message = f"{self.rejected} of {self.total} {self.what} refused: " + "; ".join(
                self.reasons
            )
        return Translation(
            [event for _, _, event in self.out],
            self.rejected,
            message,
            self.spans,
            self.entries,
            self.outer,
            self.started,
        )

    def entry(
        self,
        nanos: int,
        trace_id: str,
        *,
        id: str,
        instance_id: str,
        entry_type: str,
        category: str,
        summary: str,
        details: ev.JSONDict,
        duration_ms: float | None = None,
        span_id: str | None = None,
        agent: str | None = None,
    ) -> None:
        timestamp = self.stamp(nanos)
        entry = ev.TranscriptEntry(
            id=id,
            timestamp=timestamp,
            sequence=self.next_sequence(trace_id),
            execution_id=trace_id,
            instance_id=instance_id,
            entry_type=entry_type,
            category=category,
            summary=summary,
            details=details,
            duration_ms=duration_ms,
        )
        self.emit(
            nanos,
            ev.TranscriptEntryEvent(
                execution_id=trace_id,
                entry=entry,
                span_id=span_id,
                agent=agent,
                timestamp=timestamp,
            ),
        )

    # ------------------------------------------------------------------ spans

    def traces(self, request: ExportTraceServiceRequest) -> None:
        copies: list[Copy] = []
        for resource_spans in request.resource_spans:
            resource = ResourceView.of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.total += 1
                    why = bad_ids(span.trace_id, span.span_id, span.parent_span_id)
                    if why:
                        self.reject(f"span {span.name!r}: {why}")
                        continue
                    found = self.read(span, resource)
                    if found is not None:
                        copies.append(found)
        # What every copy says of its span first, so a child placed before its parent in
        # the request still finds its agent.
        for c in copies:
            known = self.seen(c.ref)
            agent = c.about.agent_name if c.about.kind == "agent" else None
            if known is None:
                self.spans[c.ref] = Seen(c.about.kind, c.parent, agent)
            elif known.kind == "span" and c.about.kind != "span":
                self.spans[c.ref] = attrs.evolve(known, kind=c.about.kind, agent=agent)
        by_trace: dict[str, list[Copy]] = {}
        for c in copies:
            by_trace.setdefault(c.trace_id, []).append(c)
        for trace_id, its in by_trace.items():
            self.trace(trace_id, its)

    def read(self, span: Span, resource: ResourceView) -> Copy | None:
        """One span of the request as a :class:`Copy`; None for a copy that adds nothing."""
        attributes = attributes_of(span.attributes)
        live = attributes.get(LIVE_COPY)
        if live is None and attributes.get(LIVE_SPAN) is True:
            return None  # the usual exporter's copy of a span the live processor sends
        trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
        operation = operation_of(span.name, attributes)
        view = SpanView(span, trace_id, span_id, attributes, resource, operation)
        events = [(e.name, attributes_of(e.attributes)) for e in span.events]
        error = (span.status.message or "") if view.failed else None
        about = describe(span.name, attributes, events, operation=operation, error=error)
        parent = span.parent_span_id.hex() or None
        if about.pending and parent is not None:
            return Copy(view, about, parent, about.real_parent, ended=False)
        ended = span.end_time_unix_nano > 0 and live != "start" and not about.pending
        return Copy(view, about, span_id, parent, ended=ended)

    def trace(self, trace_id: str, copies: list[Copy]) -> None:
        roots = [c for c in copies if c.parent is None]
        starts = [c.view.start for c in copies if c.view.start > 0]
        earliest = min(starts) if starts else 0
        self.learn_outer(trace_id, copies)
        outer = self.outer_of(trace_id)
        root = roots[0] if roots else None
        named = outer.name if outer else (root.about.title if root else None)
        if not (trace_id in self.started or self.memory.started(trace_id)):
            self.started.add(trace_id)
            self.emit(
                earliest,
                ev.ExecutionStatusEvent(
                    execution_id=trace_id,
                    status="started",
                    message=f"{named} started" if named else "started",
                    # the root's id, else the execution's: a root status either way,
                    # stored once per execution whichever node and copy it comes from
                    span_id=root.span_id if root else trace_id,
                    name=root.about.title if root else None,
                    agent=outer.name if outer else None,
                    timestamp=self.stamp(earliest),
                ),
                first=True,
            )
        for c in copies:
            if c.parent is not None:
                self.open(c)
            # A span's events come with its end (once per server, as its closing).
            if c.ended and (self.close(c) if c.parent is not None else self.close_execution(c)):
                self.span_events(c)

    def learn_outer(self, trace_id: str, copies: list[Copy]) -> None:
        """Keep the trace's outermost agent: the earliest agent with no agent above it."""
        best = self.outer_of(trace_id)
        for c in copies:
            if c.about.kind != "agent" or c.about.agent_name is None:
                continue
            if self.above(trace_id, c.parent)[1] is not False:
                continue  # an agent above it, or a chain not known up to the root yet
            same = (
                best is not None and best.start == c.view.start and best.name == c.about.agent_name
            )
            if best is None or same or c.view.start < best.start:
                ended = c.ended or (same and best is not None and best.ended)
                best = Outer(
                    c.view.start,
                    c.about.agent_name,
                    c.about.output if c.ended else (best.output if same and best else None),
                    c.about.usage if c.ended else (best.usage if same and best else None),
                    ended,
                )
        if best is not None:
            self.outer[trace_id] = best

    def agent_of(self, c: Copy) -> str | None:
        if c.about.kind == "agent":
            return c.about.agent_name
        return c.about.agent_name or self.agent_above(c.trace_id, c.parent)

    def mark(self, c: Copy, phase: Literal["opened", "closed"]) -> bool:
        """Mark ``c``'s span opened or closed; False if this server already stored that."""
        seen = self.seen(c.ref) or Seen(c.about.kind, c.parent)
        opened = phase == "opened"
        if seen.opened if opened else seen.closed:
            return False
        self.spans[c.ref] = Seen(
            seen.kind, seen.parent, seen.agent, opened or seen.opened, not opened or seen.closed
        )
        return True

    def open(self, c: Copy) -> None:
        if not self.mark(c, "opened"):
            return
        s, a = c.view, c.about
        agent = self.agent_of(c)
        if a.kind == "tool":
            self.emit(
                s.start,
                ev.ToolStartEvent(
                    execution_id=c.trace_id,
                    tool_use_id=c.span_id,
                    tool=a.tool_name or "tool",
                    input_summary=a.tool_arguments or "",
                    span_id=c.span_id,
                    parent_span_id=c.parent,
                    agent=agent,
                    timestamp=self.stamp(s.start),
                ),
            )
            return
        (system, given), _ = cut_conversation(a.system_instructions, a.input_messages)
        self.emit(
            s.start,
            ev.SpanStartEvent(
                execution_id=c.trace_id,
                span_id=c.span_id,
                kind=a.kind,
                name=a.title,
                parent_span_id=c.parent,
                agent=agent,
                operation=a.operation,
                model=a.model,
                provider=a.provider,
                conversation_id=a.conversation_id,
                input_messages=given,
                system_instructions=system,
                details=self.details(c),
                timestamp=self.stamp(s.start),
            ),
        )

    def close(self, c: Copy) -> bool:
        if not self.mark(c, "closed"):
            return False
        s, a = c.view, c.about
        agent = self.agent_of(c)
        nanos = max(s.end, s.start)
        if a.kind == "tool":
            output = a.tool_result or (summary_of(a.error) if a.error else None)
            self.emit(
                nanos,
                ev.ToolEndEvent(
                    execution_id=c.trace_id,
                    tool_use_id=c.span_id,
                    result_status="error" if a.error is not None else "done",
                    duration_ms=s.duration_ms,
                    output_summary=output or None,
                    is_error=a.error is not None,
                    is_blocked=False,
                    span_id=c.span_id,
                    parent_span_id=c.parent,
                    agent=agent,
                    timestamp=self.stamp(s.end),
                ),
            )
            return True
        (system, given, said), cut_bytes = cut_conversation(
            a.system_instructions, a.input_messages, a.output_messages
        )
        extra: ev.JSONDict = {}
        if a.usage and a.usage_is_aggregate:
            extra["aggregatedUsage"] = a.usage  # its model calls' sum: not counted again
        self.emit(
            nanos,
            ev.SpanEndEvent(
                execution_id=c.trace_id,
                span_id=c.span_id,
                state="error" if a.error is not None else "done",
                duration_ms=s.duration_ms,
                kind=a.kind,
                name=a.title,
                parent_span_id=c.parent,
                agent=agent,
                model=(a.response_model or a.model) if a.kind == "llm" else None,
                provider=a.provider,
                usage=a.usage if a.usage and not a.usage_is_aggregate else None,
                finish_reasons=a.finish_reasons,
                input_messages=given,
                system_instructions=system,
                output_messages=said,
                output=cut(a.output, MAX_OUTPUT) if a.output else None,
                cut=cut_bytes or None,
                error=a.error,
                details=self.details(c, **extra),
                timestamp=self.stamp(s.end),
            ),
        )
        return True

    def close_execution(self, c: Copy) -> bool:
        """The root has ended: the execution's closing status (held while spans are open)."""
        if not self.mark(c, "closed"):
            return False
        s, a = c.view, c.about
        outer = self.outer_of(c.trace_id)
        use_outer = outer is not None and outer.ended and a.kind != "agent"
        output = outer.output if use_outer and outer else a.output
        usage = outer.usage if use_outer and outer else a.usage
        name = a.agent_name if a.kind == "agent" else (outer.name if outer else a.title)
        about = f" (conversation {a.conversation_id})" if a.conversation_id else ""
        outcome: ev.ExecutionState = "failed" if a.error is not None else "completed"
        failure = f": {a.error}" if a.error else ""
        self.emit(
            max(s.end, s.start),
            ev.ExecutionStatusEvent(
                execution_id=c.trace_id,
                status=outcome,
                message=f"{name} {outcome}{about}{failure}",
                output=cut(output, MAX_OUTPUT) if output else None,
                usage=usage or None,
                name=a.title or None,
                span_id=c.span_id,
                agent=outer.name if outer else None,
                timestamp=self.stamp(s.end),
            ),
        )
        return True

    def details(self, c: Copy, **extra: JSON) -> ev.JSONDict:
        """What else the producer said of a span: its name, service and other attributes."""
        shown = self.shown.get(c.ref)
        if shown is None:  # once per copy: a finished span's opening and closing share it
            shown = self.shown[c.ref] = trimmed(
                {
                    k: v
                    for k, v in c.view.attributes.items()
                    if k not in BULKY and not k.startswith(_NOT_SHOWN)
                }
            )
        out: ev.JSONDict = {
            "spanName": c.view.span.name,
            "service": c.view.resource.service,
            "toolCallId": c.about.tool_call_id,
            "attributes": shown or None,
            **extra,
        }
        return {k: v for k, v in out.items() if v is not None}

    def span_events(self, c: Copy) -> None:
        """A span's events: ``exception`` to the message bus; message events are already
        in the model call; the others are transcript entries of the span."""
        s = c.view
        if not s.span.events:
            return
        agent = self.agent_of(c)
        for index, event in enumerate(s.span.events):
            if event.name.startswith("gen_ai.") and (
                c.about.input_messages or c.about.output_messages or c.about.system_instructions
            ):
                continue
            nanos = event.time_unix_nano or s.end
            a = attributes_of(event.attributes)
            timestamp = self.stamp(nanos)
            event_id = f"{c.span_id}-{index}"
            if event.name == "exception":
                kind = text_of(a.get("exception.type"))
                text = text_of(a.get("exception.message"))
                said = ": ".join(part for part in (kind, text) if part) or "exception"
                entry = ev.MessageBusLogEntry(
                    id=event_id,
                    event_id=event_id,
                    timestamp=timestamp,
                    source=s.resource.service or "otel",
                    event_type="exception",
                    human_summary=cut(f"{said} (in {s.span.name})", MAX_SUMMARY),
                    severity="error",
                    category="exception",
                    created_at=timestamp,
                    correlation_id=c.span_id,
                    execution_id=c.trace_id,
                    payload={
                        "spanId": c.span_id,
                        "spanName": s.span.name,
                        "attributes": trimmed(a),
                    },
                )
                self.emit(
                    nanos,
                    ev.MessageBusEvent(
                        entry=entry,
                        execution_id=c.trace_id,
                        span_id=c.span_id,
                        agent=agent,
                        timestamp=timestamp,
                    ),
                )
            else:
                self.entry(
                    nanos,
                    c.trace_id,
                    id=event_id,
                    instance_id=agent or s.resource.service or "otel",
                    entry_type=event.name or "event",
                    category="event",
                    summary=cut(f"{event.name or 'event'} (in {s.span.name})", MAX_SUMMARY),
                    details={
                        "spanId": c.span_id,
                        "spanName": s.span.name,
                        **({"attributes": trimmed(a)} if a else {}),
                    },
                    span_id=c.span_id,
                    agent=agent,
                )

    # ------------------------------------------------------------------ logs

    def logs(self, request: ExportLogsServiceRequest) -> None:
        for resource_logs in request.resource_logs:
            resource = ResourceView.of(resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    self.total += 1
                    why = bad_log_ids(record.trace_id, record.span_id)
                    if why:
                        self.reject(f"log record {self.total - 1}: {why}")
                        continue
                    self.log(record, resource, self.total - 1)

    def log(self, record: LogRecord, resource: ResourceView, index: int) -> None:
        nanos = record.time_unix_nano or record.observed_time_unix_nano
        timestamp = self.stamp(nanos)
        a = attributes_of(record.attributes)
        if KEEPALIVE in a and any(record.trace_id):  # the live processor's (SPEC §13)
            alive = keepalive_heartbeat(record.trace_id.hex(), a, resource.service)
            if alive is not None:
                self.emit(nanos, alive)
                return
        body = value_of(record.body) if record.HasField("body") else None
        severity = severity_of(record.severity_number, record.severity_text)
        kind = record.event_name or "log"
        said = summary_of(body) or record.event_name or "(empty log record)"
        span_id = record.span_id.hex() if any(record.span_id) else None
        details: ev.JSONDict = {
            "severity": record.severity_text or severity,
            "severityNumber": record.severity_number or None,
            "eventName": record.event_name or None,
            "spanId": span_id,
            "service": resource.service,
            "body": trimmed(body) if not isinstance(body, str) else None,
            "attributes": trimmed(a) or None,
        }
        details = {k: v for k, v in details.items() if v is not None}
        category = "log"
        conversation = event_messages(kind, a, body)
        if conversation is not None:
            # A model call's messages sent as a log record: structured, of its span.
            category = "llm"
            details.pop("body", None)
            details.pop("attributes", None)
            details.update(conversation)
            count = len(conversation.get("inputMessages", [])) + len(
                conversation.get("outputMessages", [])
            )
            said = summary_of(conversation.get("output")) or f"{kind} ({count} messages)"
        record_id = f"log-{span_id or 'x'}-{nanos}-{index}"
        if not any(record.trace_id):
            entry = ev.MessageBusLogEntry(
                id=record_id,
                event_id=record_id,
                timestamp=timestamp,
                source=resource.service or "otel",
                event_type=kind,
                human_summary=said,
                severity=severity,
                category="log",
                created_at=timestamp,
                payload=details,
            )
            self.emit(nanos, ev.MessageBusEvent(entry=entry, timestamp=timestamp))
            return
        trace_id = record.trace_id.hex()
        self.entry(
            nanos,
            trace_id,
            id=record_id,
            instance_id=(
                text_of(a.get("gen_ai.agent.name"))
                or self.agent_above(trace_id, span_id)
                or resource.service
                or "otel"
            ),
            entry_type=kind,
            category=category,
            summary=said,
            details=details,
            span_id=span_id,
            agent=self.agent_above(trace_id, span_id),
        )


def translate_traces(
    request: ExportTraceServiceRequest, memory: SpanMemory, *, now: str
) -> Translation:
    """The stream events an OTLP trace export gives, in the order they happened.

    ``memory`` is only read; call :meth:`SpanMemory.learn` with the result once its
    events are stored. ``now`` stamps what carries no time of its own.
    """
    builder = _Builder(memory, now, "spans")
    builder.traces(request)
    return builder.result()


def translate_logs(
    request: ExportLogsServiceRequest, memory: SpanMemory, *, now: str
) -> Translation:
    """The stream events an OTLP log export gives (see :func:`translate_traces`)."""
    builder = _Builder(memory, now, "log records")
    builder.logs(request)
    return builder.result()
