"""``trio-obs demo --otel``: the same simulated run, told through the OpenTelemetry SDK.

The demo's services hand their events to :class:`SpanPublisher` instead of posting them:
it records each as what an instrumented agent would emit, spans of the GenAI semantic
conventions, and the real SDK exports them (``BatchSpanProcessor`` with the OTLP/HTTP
exporter, as any agent has, plus :class:`~trio_obs.otel.LiveSpanProcessor` so tool calls
show while they run) to the server's ``POST /v1/traces``. The server's OTLP rule turns
them back into stream events, so both paths can be watched side by side.

What becomes what (the execution id is the trace id):

- the run: an ``invoke_agent orchestrator`` span, from ``started`` to its final status;
- each task: an ``invoke_agent <agent>`` span under it (a sub-agent), from its first
  transcript entry to its last;
- tool calls: ``execute_tool <tool>`` spans (arguments and result as attributes);
- other transcript entries: ``chat demo-model`` spans with token usage and the text;
- skills, assertions: spans of their own; message-bus errors: spans with an
  ``exception`` event. Waves, heartbeats, tool output and other messages have no
  OpenTelemetry counterpart and are left out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final

import attrs
import orjson
import trio
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from ..client.common import auth_headers
from ..core import events as ev
from ..core.protocol import ACTION_SEVERITIES, ENDED_STATES, GLOBAL
from ..core.routing import Envelope
from ..otel import LiveSpanProcessor

SERVICE: Final = "trio-obs-demo"
MODEL: Final = "demo-model"
ORCHESTRATOR: Final = "orchestrator"
_FAILED_TASK: Final = "Gave up"
"""How the demo's last transcript entry of a failed task begins (demo.work)."""


class _PresetTraceIds(RandomIdGenerator):
    """Random ids, except for the root span of a run: its trace id is the execution id."""

    def __init__(self) -> None:
        self.next_trace_id: int | None = None

    def generate_trace_id(self) -> int:
        preset, self.next_trace_id = self.next_trace_id, None
        return preset if preset is not None else super().generate_trace_id()


@attrs.define
class _Run:
    """The open spans of one execution."""

    root: Span
    tasks: dict[str, Span] = attrs.Factory(dict)
    tools: dict[str, Span] = attrs.Factory(dict)
    skills: dict[str, Span] = attrs.Factory(dict)

    def parent(self, task_id: str | None) -> Span:
        return self.tasks.get(task_id or "", self.root)

    def open_spans(self) -> list[Span]:
        return [*self.skills.values(), *self.tools.values(), *self.tasks.values()]


class SpanPublisher:
    """The demo services' publisher that records spans instead of posting events."""

    def __init__(self, provider: TracerProvider, ids: _PresetTraceIds) -> None:
        self.provider = provider
        self.ids = ids
        self.tracer = provider.get_tracer("trio_obs.demo")
        self.runs: dict[str, _Run] = {}

    async def publish(
        self, events: Sequence[ev.StreamEvent], *, idempotency_key: str | None = None
    ) -> list[Envelope]:
        """Record ``events`` as spans; they come back as if stored (seq 0: not known here)."""
        for event in events:
            if self.record(event):
                # The run is over: its last spans reach the server before the demo says so.
                await trio.to_thread.run_sync(self.provider.force_flush)
        return [Envelope.of(e.execution_id or GLOBAL, attrs.evolve(e, seq=0), b"") for e in events]

    def _start(self, name: str, parent: Span | None, attributes: Attributes) -> Span:
        context = trace.set_span_in_context(parent) if parent is not None else None
        kind = SpanKind.CLIENT if name.startswith("chat") else SpanKind.INTERNAL
        return self.tracer.start_span(name, context=context, kind=kind, attributes=attributes)

    def record(self, event: ev.StreamEvent) -> bool:
        """Record one event; True when it ended a run."""
        run = self.runs.get(event.execution_id)
        match event:
            case ev.ExecutionStatusEvent(status="started") if run is None:
                self.ids.next_trace_id = int(event.execution_id, 16)
                root = self._start(
                    f"invoke_agent {ORCHESTRATOR}",
                    None,
                    {
                        "gen_ai.operation.name": "invoke_agent",
                        "gen_ai.agent.name": ORCHESTRATOR,
                        "gen_ai.agent.description": event.message or "",
                        "gen_ai.conversation.id": f"demo-{event.execution_id[:8]}",
                    },
                )
                self.runs[event.execution_id] = _Run(root)
            case ev.ExecutionStatusEvent(status=status) if run and status in ENDED_STATES:
                for span in run.open_spans():  # cut short: the run was interrupted
                    span.set_status(Status(StatusCode.ERROR, "interrupted"))
                    span.end()
                if status == "failed":
                    run.root.set_status(Status(StatusCode.ERROR, event.message or "failed"))
                run.root.end()
                del self.runs[event.execution_id]
                return True
            case ev.ToolStartEvent() if run:
                run.tools[event.tool_use_id] = self._start(
                    f"execute_tool {event.tool}",
                    run.parent(event.task_id),
                    {
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": event.tool,
                        "gen_ai.tool.call.id": event.tool_use_id,
                        "gen_ai.tool.type": "function",
                        "gen_ai.tool.call.arguments": event.input_summary,
                    },
                )
            case ev.ToolEndEvent() if run and event.tool_use_id in run.tools:
                span = run.tools.pop(event.tool_use_id)
                if event.output_summary:
                    span.set_attribute("gen_ai.tool.call.result", event.output_summary)
                if event.result_status != "done":
                    span.set_status(Status(StatusCode.ERROR, event.output_summary))
                span.end()
            case ev.TranscriptEntryEvent(entry=entry) if run:
                self._transcript(run, entry)
            case ev.SkillStartEvent() if run:
                run.skills[event.skill_trace_id] = self._start(
                    f"skill {event.skill_name}",
                    run.parent(event.task_id),
                    {"code.file.path": event.skill_file, "code.line.number": event.line_number},
                )
            case ev.SkillEndEvent() if run and event.skill_trace_id in run.skills:
                span = run.skills.pop(event.skill_trace_id)
                span.set_attribute("skill.status", event.status)
                if event.status == "failed":
                    span.set_status(Status(StatusCode.ERROR, "the skill failed"))
                span.end()
            case ev.AssertionResultEvent(assertion=a) if run:
                span = self._start(
                    f"assertion {a.category}",
                    run.parent(a.task_id),
                    {"assertion.result": a.result, "assertion.description": a.description},
                )
                if a.result == "fail":
                    span.set_status(Status(StatusCode.ERROR, a.description))
                span.end()
            case ev.MessageBusEvent(entry=entry) if entry.severity in ACTION_SEVERITIES:
                owner = self.runs.get(entry.execution_id or "")
                if owner is not None:
                    span = self._start(entry.event_type, owner.parent(entry.task_id), {})
                    span.add_event(
                        "exception",
                        {
                            "exception.type": entry.event_type,
                            "exception.message": entry.human_summary,
                        },
                    )
                    span.set_status(Status(StatusCode.ERROR, entry.human_summary))
                    span.end()
        return False

    def _transcript(self, run: _Run, entry: ev.TranscriptEntry) -> None:
        task = entry.task_id or ""
        if entry.entry_type == "phase_start" and task not in run.tasks:
            run.tasks[task] = self._start(
                f"invoke_agent {entry.instance_id}",
                run.root,
                {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": entry.instance_id,
                    "gen_ai.agent.description": entry.summary,
                },
            )
        elif entry.entry_type == "phase_end" and task in run.tasks:
            span = run.tasks.pop(task)
            if entry.summary.startswith(_FAILED_TASK):
                span.set_status(Status(StatusCode.ERROR, entry.summary))
            span.end()
        elif entry.entry_type != "tool_use":  # a tool call is its own span
            said = entry.summary
            span = self._start(
                f"chat {MODEL}",
                run.parent(entry.task_id),
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "demo",
                    "gen_ai.request.model": MODEL,
                    "gen_ai.agent.name": entry.instance_id,
                    "gen_ai.usage.input_tokens": 400 + 7 * len(said),
                    "gen_ai.usage.output_tokens": 1 + len(said) // 4,
                    "gen_ai.output.messages": orjson.dumps(
                        [{"role": "assistant", "parts": [{"type": "text", "content": said}]}]
                    ).decode(),
                },
            )
            span.end()


@asynccontextmanager
async def span_publisher(url: str, token: str | None) -> AsyncIterator[SpanPublisher]:
    """A :class:`SpanPublisher` whose spans go to ``url``; flushed and shut down on exit.

    Exported as an instrumented agent would be: the SDK's ``BatchSpanProcessor`` with its
    OTLP/HTTP exporter, and a :class:`~trio_obs.otel.LiveSpanProcessor` beside it.
    """
    ids = _PresetTraceIds()
    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE}),
        id_generator=ids,
        shutdown_on_exit=False,
    )
    provider.add_span_processor(LiveSpanProcessor(url, token=token))
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers=auth_headers(token), timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    try:
        yield SpanPublisher(provider, ids)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(provider.shutdown)
