"""OpenTelemetry in (SPEC §11): OTLP spans and log records become stream events, by one rule.

Pure: the official ``opentelemetry-proto`` request messages in; typed stream events
out, with the number of items refused and why (OTLP's partial success). No I/O, no
clock: times come from the spans, and ``now`` from the caller for records without one.

The rule (README "OpenTelemetry" has it as a table):

- The execution id is the trace id, in lower-case hex. SDK processors send a span
  when it ends, so children come before their parents; the trace id is the one thing
  every span knows from the start.
- ``invoke_agent`` (``gen_ai.operation.name``, else the first word of the span name):
  its start is ``execution:status`` ``started``, its end ``completed`` or ``failed``,
  with ``gen_ai.agent.name`` and ``gen_ai.conversation.id`` in the message. An agent
  whose parent span is a known agent is a sub-agent: transcript entries, so that only
  the outermost agent says when the execution is over.
- ``execute_tool``: ``tool:start`` and ``tool:end``.
- Every other span: one transcript entry when it ends (LLM spans with the model and the
  token usage in ``details``); span events named ``exception``: ``messagebus:event``
  with severity ``error``; other span events: transcript entries of their own type.
- Log records: transcript entries of their trace; without a trace, message-bus events
  of no execution (``global``).

A span may arrive twice and in any order: an in-progress copy at its start, then the
ended span from :class:`~trio_obs.otel.LiveSpanProcessor` and again from the usual
exporter. What it gives is decided from the span alone where it can be, so two server
nodes decide alike: the live processor marks every span it handles (:data:`LIVE_SPAN`,
set on the span itself, so the usual exporter's copy carries it too) and says which of
its own copies is which (:data:`LIVE_COPY`). A marked span's start comes from the
``start`` copy, its end from the ``end`` copy, and the exporter's copy adds nothing. A
span without the mark gives its start and end when it arrives ended. A
:class:`SpanMemory` (bounded, owned by the server) also drops what this server already
turned into events: an exporter's retry, a start that comes after its end.
"""

from __future__ import annotations

from typing import Final

import attrs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from . import events as ev
from .otlp_memory import Seen, SpanMemory, Translation
from .otlp_values import (
    AGENT,
    JSON,
    LLM_OPERATIONS,
    MAX_SUMMARY,
    TOOL,
    ResourceView,
    SpanRef,
    SpanView,
    after_prefix,
    agent_name_of,
    attributes_of,
    bad_ids,
    bad_log_ids,
    cut,
    iso_of_nanos,
    number_of,
    operation_of,
    output_text_of,
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


class _Builder:
    """One request being translated, on top of what the memory knows."""

    def __init__(self, memory: SpanMemory, now: str, what: str) -> None:
        self.memory = memory
        self.now = now
        self.what = what
        self.spans: dict[SpanRef, Seen] = {}
        self.entries: dict[str, int] = {}
        self.agents: dict[SpanRef, str] = {}
        """The ``invoke_agent`` spans of this request (any copy), by reference: their names."""
        self.out: list[tuple[int, int, ev.StreamEvent]] = []
        self.last_time = 0
        self.total = 0
        self.rejected = 0
        self.reasons: list[str] = []

    # ------------------------------------------------------------------ bookkeeping

    def seen(self, ref: SpanRef) -> Seen:
        found = self.spans.get(ref)
        return found if found is not None else self.memory.seen(ref)

    def agent_name(self, ref: SpanRef) -> str | None:
        """The name of agent span ``ref``, if it is one this request or the memory knows."""
        return self.agents.get(ref) or self.seen(ref).agent

    def next_sequence(self, trace_id: str) -> int:
        count = self.entries.get(trace_id)
        if count is None:
            count = self.memory.entries(trace_id)
        self.entries[trace_id] = count + 1
        return count + 1

    def emit(self, nanos: int, event: ev.StreamEvent) -> None:
        # Events without a time of their own keep their place after the previous one.
        nanos = nanos if nanos > 0 else self.last_time
        self.last_time = nanos
        self.out.append((nanos, len(self.out), event))

    def stamp(self, nanos: int) -> str:
        return iso_of_nanos(nanos) or self.now

    def reject(self, why: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(why)

    def result(self) -> Translation:
        # Within a request, events go in the order they happened: an exporter sends
        # children before their parents, yet the agent's start should come first.
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
            ev.TranscriptEntryEvent(execution_id=trace_id, entry=entry, timestamp=timestamp),
        )

    # ------------------------------------------------------------------ spans

    def traces(self, request: ExportTraceServiceRequest) -> None:
        batch: list[tuple[Span, ResourceView, dict[str, JSON]]] = []
        for resource_spans in request.resource_spans:
            resource = ResourceView.of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.total += 1
                    why = bad_ids(span.trace_id, span.span_id, span.parent_span_id)
                    if why:
                        self.reject(f"span {span.name!r}: {why}")
                        continue
                    attributes = attributes_of(span.attributes)
                    if operation_of(span.name, attributes) == AGENT:
                        name = agent_name_of(span.name, attributes)
                        self.agents[(span.trace_id.hex(), span.span_id.hex())] = name
                    batch.append((span, resource, attributes))
        for span, resource, attributes in batch:
            self.span(span, resource, attributes)

    def span(self, span: Span, resource: ResourceView, attributes: dict[str, JSON]) -> None:
        trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
        ref = (trace_id, span_id)
        copy = attributes.get(LIVE_COPY)
        ended = span.end_time_unix_nano > 0
        if copy == "start":
            gives_start, gives_end = True, False
        elif copy == "end":
            gives_start, gives_end = False, True
        elif attributes.get(LIVE_SPAN) is True:
            return  # the usual exporter's copy of a span the live processor sends itself
        else:
            gives_start, gives_end = True, ended
        seen = self.seen(ref)
        gives_start = gives_start and not (seen.started or seen.ended)
        gives_end = gives_end and ended and not seen.ended
        if not (gives_start or gives_end):
            return  # this server has already turned this part of the span into events
        operation = operation_of(span.name, attributes)
        span_view = SpanView(span, trace_id, span_id, attributes, resource, operation)
        if operation == AGENT:
            seen = self.agent(span_view, seen, gives_start, gives_end)
        elif operation == TOOL:
            seen = self.tool(span_view, seen, gives_start, gives_end)
        elif gives_end:
            self.other(span_view)
        if gives_end:
            self.span_events(span_view)
        self.spans[ref] = attrs.evolve(
            seen, started=seen.started or gives_start, ended=seen.ended or gives_end
        )

    def agent(self, s: SpanView, seen: Seen, gives_start: bool, gives_end: bool) -> Seen:
        name = agent_name_of(s.span.name, s.attributes)
        parent = s.parent_ref
        parent_agent = self.agent_name(parent) if parent else None
        conversation = text_of(s.attributes.get("gen_ai.conversation.id"))
        about = f" (conversation {conversation})" if conversation else ""
        failure = f": {s.span.status.message}" if s.failed and s.span.status.message else ""
        outcome = "failed" if s.failed else "completed"
        if parent_agent is None:
            if gives_start:
                self.emit(
                    s.start,
                    ev.ExecutionStatusEvent(
                        execution_id=s.trace_id,
                        status="started",
                        message=f"{name} started{about}",
                        timestamp=self.stamp(s.start),
                    ),
                )
            if gives_end:
                self.emit(
                    s.end,
                    ev.ExecutionStatusEvent(
                        execution_id=s.trace_id,
                        status="failed" if s.failed else "completed",
                        message=f"{name} {outcome}{about}{failure}",
                        timestamp=self.stamp(s.end),
                    ),
                )
        else:
            # A sub-agent: only the outermost agent says when the execution is over.
            for phase, ending, nanos, text in (
                (gives_start, False, s.start, f"agent {name} started{about}"),
                (gives_end, True, s.end, f"agent {name} {outcome}{about}{failure}"),
            ):
                if phase:
                    self.entry(
                        nanos,
                        s.trace_id,
                        id=s.span_id if ending else f"{s.span_id}-start",
                        instance_id=name,
                        entry_type=AGENT,
                        category="agent",
                        summary=text,
                        details=s.details(parentAgent=parent_agent),
                        duration_ms=s.duration_ms if ending else None,
                    )
        return attrs.evolve(seen, agent=name)

    def tool(self, s: SpanView, seen: Seen, gives_start: bool, gives_end: bool) -> Seen:
        tool = (
            text_of(s.attributes.get("gen_ai.tool.name"))
            or after_prefix(s.span.name, TOOL)
            or s.span.name
            or "tool"
        )
        tool_use_id = (
            seen.tool_use_id or text_of(s.attributes.get("gen_ai.tool.call.id")) or s.span_id
        )
        if gives_start:
            self.emit(
                s.start,
                ev.ToolStartEvent(
                    execution_id=s.trace_id,
                    tool_use_id=tool_use_id,
                    tool=tool,
                    input_summary=summary_of(s.attributes.get("gen_ai.tool.call.arguments")),
                    timestamp=self.stamp(s.start),
                ),
            )
        if gives_end:
            output = summary_of(s.attributes.get("gen_ai.tool.call.result"))
            if not output and s.failed:
                output = summary_of(s.span.status.message or s.attributes.get("error.type"))
            self.emit(
                max(s.end, s.start),
                ev.ToolEndEvent(
                    execution_id=s.trace_id,
                    tool_use_id=tool_use_id,
                    result_status="error" if s.failed else "done",
                    duration_ms=s.duration_ms,
                    output_summary=output or None,
                    is_error=s.failed,
                    is_blocked=False,
                    timestamp=self.stamp(s.end),
                ),
            )
        return attrs.evolve(seen, tool_use_id=tool_use_id)

    def other(self, s: SpanView) -> None:
        """A span that is neither an agent nor a tool: one transcript entry when it ends."""
        a = s.attributes
        operation = s.operation
        model = text_of(a.get("gen_ai.request.model"))
        is_llm = operation in LLM_OPERATIONS or (operation is None and model is not None)
        extra: ev.JSONDict = {}
        summary = s.span.name or operation or "span"
        if is_llm:
            usage = {
                key.removeprefix("gen_ai.usage."): value
                for key, value in a.items()
                if key.startswith("gen_ai.usage.") and number_of(value) is not None
            }
            extra = {
                "model": model,
                "responseModel": text_of(a.get("gen_ai.response.model")),
                "provider": text_of(a.get("gen_ai.provider.name") or a.get("gen_ai.system")),
                "usage": usage or None,
                "finishReasons": a.get("gen_ai.response.finish_reasons"),
            }
            said = output_text_of(a.get("gen_ai.output.messages"))
            if said:
                summary = f"{summary}: {said}"
            tokens_in = usage.get("input_tokens", usage.get("prompt_tokens"))
            tokens_out = usage.get("output_tokens", usage.get("completion_tokens"))
            counts = [f"{n} {way}" for n, way in ((tokens_in, "in"), (tokens_out, "out")) if n]
            if counts:
                summary += f" ({', '.join(counts)} tokens)"
        if s.failed:
            summary += f" \u2014 error: {s.span.status.message or a.get('error.type') or 'failed'}"
        parent = s.parent_ref
        self.entry(
            max(s.end, s.start),
            s.trace_id,
            id=s.span_id,
            instance_id=self.instance_of(s, parent),
            entry_type=operation or "span",
            category="llm" if is_llm else ("agent" if operation else "span"),
            summary=cut(summary, MAX_SUMMARY),
            details=s.details(**extra),
            duration_ms=s.duration_ms,
        )

    def span_events(self, s: SpanView) -> None:
        """A span's events: ``exception`` to the message bus, the others to the transcript."""
        for index, event in enumerate(s.span.events):
            nanos = event.time_unix_nano or s.end
            a = attributes_of(event.attributes)
            timestamp = self.stamp(nanos)
            event_id = f"{s.span_id}-{index}"
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
                    correlation_id=s.span_id,
                    execution_id=s.trace_id,
                    payload=s.details(attributes=trimmed(a)),
                )
                self.emit(
                    nanos,
                    ev.MessageBusEvent(entry=entry, execution_id=s.trace_id, timestamp=timestamp),
                )
            else:
                self.entry(
                    nanos,
                    s.trace_id,
                    id=event_id,
                    instance_id=self.instance_of(s, s.ref),
                    entry_type=event.name or "event",
                    category="event",
                    summary=cut(f"{event.name or 'event'} (in {s.span.name})", MAX_SUMMARY),
                    details=s.details(attributes=trimmed(a)),
                )

    def instance_of(self, s: SpanView, agent: SpanRef | None) -> str:
        """Who a transcript entry is from: the span's agent, its parent agent, its service."""
        return (
            text_of(s.attributes.get("gen_ai.agent.name"))
            or (self.agent_name(agent) if agent else None)
            or s.resource.service
            or "otel"
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
                or (self.agent_name((trace_id, span_id)) if span_id else None)
                or resource.service
                or "otel"
            ),
            entry_type=kind,
            category="log",
            summary=said,
            details=details,
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
