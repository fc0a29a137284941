"""The one event builder: the producer services (plan OBS-603…610).

A service builds the typed event, the hub stores it (the ledger assigns ``seq`` and
every derived field, such as ``runningPassRate``) and fans it out; the service returns
the stored event, which is exactly what subscribers receive.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, Generic, Protocol, Self, TypeVar

import attrs
import trio

from ..core import events as ev
from ..core.protocol import Severity
from ..core.routing import Envelope
from ..hub.clock import now_iso

E = TypeVar("E", bound=ev.StreamEvent)

_OPEN_SPANS_MAX: Final = 10_000


def new_id() -> str:
    """A fresh random id for a record."""
    return uuid.uuid4().hex


class Publisher(Protocol):
    """Where services send what they build: a hub, or a remote server's ingest."""

    async def publish(
        self, events: Sequence[ev.StreamEvent], *, idempotency_key: str | None = None
    ) -> Sequence[Envelope]:
        """Store ``events`` as one batch; they come back stored (with ``seq``)."""
        ...


P = TypeVar("P", bound=Publisher)


class _Service:
    def __init__(self, hub: Publisher) -> None:
        self.hub = hub

    async def _publish(self, event: E) -> E:
        """Hand ``event`` to the hub; it comes back stored (with ``seq``)."""
        stored = (await self.hub.publish([event]))[0].event
        assert isinstance(stored, type(event))
        return stored


class _SpanService(_Service):
    """A service of things that start and end (tool uses, skill traces): it remembers
    when each started, to give an end without a duration the time since its start."""

    def __init__(self, hub: Publisher) -> None:
        super().__init__(hub)
        self._started: OrderedDict[str, float] = OrderedDict()

    def _open(self, span_id: str | None) -> str:
        """Note the start of ``span_id`` (a new id if None); the id."""
        span_id = span_id or new_id()
        self._started[span_id] = trio.current_time()
        if len(self._started) > _OPEN_SPANS_MAX:
            self._started.popitem(last=False)
        return span_id

    def _duration(self, span_id: str, duration_ms: float | None) -> float:
        """``duration_ms``, else the milliseconds since ``span_id`` started (0 if unknown)."""
        started = self._started.pop(span_id, None)
        if duration_ms is not None:
            return duration_ms
        return 0.0 if started is None else round((trio.current_time() - started) * 1000, 3)


class TranscriptService(_Service):
    """Transcript entries (OBS-603)."""

    def __init__(self, hub: Publisher) -> None:
        super().__init__(hub)
        self._sequence: dict[str, int] = {}

    async def record(
        self,
        execution_id: str,
        *,
        instance_id: str,
        entry_type: str,
        category: str,
        summary: str,
        task_id: str | None = None,
        wave_number: int | None = None,
        details: ev.JSONDict | None = None,
        duration_ms: float | None = None,
        sequence: int | None = None,
        id: str | None = None,
        is_latest: bool = True,
    ) -> ev.TranscriptEntryEvent:
        """Store a transcript entry and emit ``transcript:entry``.

        ``sequence`` defaults to this service's running count for the execution.
        """
        if sequence is None:
            sequence = self._sequence.get(execution_id, 0) + 1
        self._sequence[execution_id] = sequence
        entry = ev.TranscriptEntry(
            id=id or new_id(),
            timestamp=now_iso(),
            sequence=sequence,
            execution_id=execution_id,
            instance_id=instance_id,
            entry_type=entry_type,
            category=category,
            summary=summary,
            task_id=task_id,
            wave_number=wave_number,
            details=details,
            duration_ms=duration_ms,
        )
        return await self.entry(execution_id, entry, is_latest=is_latest)

    async def entry(
        self, execution_id: str, entry: ev.TranscriptEntry, is_latest: bool = True
    ) -> ev.TranscriptEntryEvent:
        """Store a transcript record made elsewhere and emit ``transcript:entry``."""
        return await self._publish(
            ev.TranscriptEntryEvent(
                timestamp=now_iso(), execution_id=execution_id, entry=entry, is_latest=is_latest
            )
        )


class ToolUseService(_SpanService):
    """Tool uses: start, streamed output, end (OBS-604)."""

    async def start(
        self,
        execution_id: str,
        tool: str,
        input_summary: str,
        *,
        tool_use_id: str | None = None,
        task_id: str | None = None,
        parent_span_id: str | None = None,
        agent: str | None = None,
    ) -> ev.ToolStartEvent:
        """Store and emit ``tool:start``; returns it (its ``tool_use_id`` names the use).

        ``parent_span_id``: the span it runs in (an agent's, SPEC §12), if any.
        """
        return await self._publish(
            ev.ToolStartEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                tool_use_id=self._open(tool_use_id),
                tool=tool,
                input_summary=input_summary,
                task_id=task_id,
                parent_span_id=parent_span_id,
                agent=agent,
            )
        )

    async def output(
        self, execution_id: str, tool_use_id: str, chunk: str, is_stderr: bool = False
    ) -> ev.ToolOutputEvent:
        """Store and emit a ``tool:output`` chunk."""
        return await self._publish(
            ev.ToolOutputEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                tool_use_id=tool_use_id,
                chunk=chunk,
                is_stderr=is_stderr,
            )
        )

    async def end(
        self,
        execution_id: str,
        tool_use_id: str,
        result_status: ev.ToolResultStatus,
        duration_ms: float | None = None,
        output_summary: str | None = None,
    ) -> ev.ToolEndEvent:
        """Store and emit ``tool:end``; the duration defaults to the time since ``start``."""
        return await self._publish(
            ev.ToolEndEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                tool_use_id=tool_use_id,
                result_status=result_status,
                duration_ms=self._duration(tool_use_id, duration_ms),
                output_summary=output_summary,
            )
        )


class AssertionService(_Service):
    """Assertion results with the running pass rate of the execution (OBS-605)."""

    async def record(
        self,
        execution_id: str,
        task_id: str,
        *,
        category: str,
        description: str,
        result: ev.AssertionOutcome,
        evidence: ev.JSONDict | None = None,
        chain_id: str | None = None,
        duration_ms: float | None = None,
        id: str | None = None,
    ) -> ev.AssertionResultEvent:
        """Store and emit ``assertion:result``; ``running_pass_rate`` comes from the store."""
        assertion = ev.AssertionResult(
            id=id or new_id(),
            task_id=task_id,
            execution_id=execution_id,
            category=category,
            description=description,
            result=result,
            timestamp=now_iso(),
            chain_id=chain_id,
            evidence=evidence,
            duration_ms=duration_ms,
        )
        return await self.result(execution_id, task_id, assertion)

    async def result(
        self, execution_id: str, task_id: str, assertion: ev.AssertionResult
    ) -> ev.AssertionResultEvent:
        """Store an assertion record made elsewhere and emit ``assertion:result``."""
        return await self._publish(
            ev.AssertionResultEvent(
                timestamp=now_iso(), execution_id=execution_id, task_id=task_id, assertion=assertion
            )
        )


class SkillService(_SpanService):
    """Skill traces: start and end (OBS-606)."""

    async def start(
        self,
        execution_id: str,
        skill_name: str,
        skill_file: str,
        line_number: int,
        *,
        skill_trace_id: str | None = None,
        task_id: str | None = None,
        parent_span_id: str | None = None,
    ) -> ev.SkillStartEvent:
        """Store and emit ``skill:start`` (``parent_span_id``: the span it runs in, if any)."""
        return await self._publish(
            ev.SkillStartEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                skill_trace_id=self._open(skill_trace_id),
                skill_name=skill_name,
                skill_file=skill_file,
                line_number=line_number,
                task_id=task_id,
                parent_span_id=parent_span_id,
            )
        )

    async def end(
        self,
        execution_id: str,
        skill_trace_id: str,
        skill_name: str,
        status: ev.SkillStatus,
        duration_ms: float | None = None,
    ) -> ev.SkillEndEvent:
        """Store and emit ``skill:end``; the duration defaults to the time since ``start``."""
        return await self._publish(
            ev.SkillEndEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                skill_trace_id=skill_trace_id,
                skill_name=skill_name,
                status=status,
                duration_ms=self._duration(skill_trace_id, duration_ms),
            )
        )


class SpanService(_SpanService):
    """Agents, model calls and other spans: ``span:start`` and ``span:end`` (SPEC §12)."""

    async def start(
        self,
        execution_id: str,
        kind: ev.SpanKind,
        name: str,
        *,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        agent: str | None = None,
        task_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        conversation_id: str | None = None,
        input_messages: list[ev.JSONDict] | None = None,
    ) -> ev.SpanStartEvent:
        """Store and emit ``span:start``; returns it (its ``span_id`` names the span).

        An agent span's ``agent`` is its own name and a span's agent is its parent's
        when not given (the ledger fills it).
        """
        return await self._publish(
            ev.SpanStartEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                span_id=self._open(span_id),
                kind=kind,
                name=name,
                parent_span_id=parent_span_id,
                agent=agent,
                task_id=task_id,
                model=model,
                provider=provider,
                conversation_id=conversation_id,
                input_messages=input_messages,
            )
        )

    async def end(
        self,
        execution_id: str,
        span_id: str,
        state: ev.SpanEndState = "done",
        *,
        duration_ms: float | None = None,
        model: str | None = None,
        usage: ev.Usage | None = None,
        output: str | None = None,
        output_messages: list[ev.JSONDict] | None = None,
        finish_reasons: list[str] | None = None,
        error: str | None = None,
    ) -> ev.SpanEndEvent:
        """Store and emit ``span:end``; the duration defaults to the time since ``start``."""
        return await self._publish(
            ev.SpanEndEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                span_id=span_id,
                state=state,
                duration_ms=self._duration(span_id, duration_ms),
                model=model,
                usage=usage,
                output=output,
                output_messages=output_messages,
                finish_reasons=finish_reasons,
                error=error,
            )
        )


class MessageBusService(_Service):
    """Message-bus log entries (OBS-607); ``requiresAction`` for error and critical."""

    async def log(
        self,
        *,
        source: str,
        event_type: str,
        human_summary: str,
        severity: Severity,
        category: str,
        execution_id: str | None = None,
        task_id: str | None = None,
        correlation_id: str | None = None,
        transcript_entry_id: str | None = None,
        payload: ev.JSONDict | None = None,
        event_id: str | None = None,
        id: str | None = None,
    ) -> ev.MessageBusEvent:
        """Store and emit ``messagebus:event`` (to ``global`` when there is no execution)."""
        now = now_iso()
        entry = ev.MessageBusLogEntry(
            id=id or new_id(),
            event_id=event_id or new_id(),
            timestamp=now,
            source=source,
            event_type=event_type,
            human_summary=human_summary,
            severity=severity,
            category=category,
            created_at=now,
            correlation_id=correlation_id,
            transcript_entry_id=transcript_entry_id,
            task_id=task_id,
            execution_id=execution_id,
            payload=payload,
        )
        return await self.entry(entry)

    async def entry(
        self, entry: ev.MessageBusLogEntry, requires_action: bool = False
    ) -> ev.MessageBusEvent:
        """Store a message-bus record made elsewhere and emit ``messagebus:event``.

        ``requiresAction`` is set for severity error and critical; ``requires_action``
        can set it for a lower severity too.
        """
        return await self._publish(
            ev.MessageBusEvent(timestamp=now_iso(), entry=entry, requires_action=requires_action)
        )


class ExecutionService(_Service):
    """Waves, agent heartbeats and execution status (OBS-608…OBS-610)."""

    async def wave_status(
        self,
        execution_id: str,
        wave_number: int,
        status: ev.WaveState,
        task_count: int,
        completed_count: int = 0,
        failed_count: int = 0,
    ) -> ev.WaveStatusEvent:
        """Store and emit ``wave:status``."""
        return await self._publish(
            ev.WaveStatusEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                wave_number=wave_number,
                status=status,
                task_count=task_count,
                completed_count=completed_count,
                failed_count=failed_count,
            )
        )

    async def heartbeat(
        self,
        execution_id: str,
        instance_id: str,
        status: ev.AgentState,
        current_task_id: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> ev.AgentHeartbeatEvent:
        """Store and emit ``agent:heartbeat``."""
        return await self._publish(
            ev.AgentHeartbeatEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                instance_id=instance_id,
                status=status,
                current_task_id=current_task_id,
                metrics=metrics,
            )
        )

    async def status(
        self, execution_id: str, status: ev.ExecutionState, message: str | None = None
    ) -> ev.ExecutionStatusEvent:
        """Store and emit ``execution:status`` (a copy also goes to ``global``)."""
        return await self._publish(
            ev.ExecutionStatusEvent(
                timestamp=now_iso(), execution_id=execution_id, status=status, message=message
            )
        )


@attrs.frozen
class Services(Generic[P]):
    """Every producer service, bound to one publisher: a hub, or a remote server's ingest."""

    hub: P
    transcripts: TranscriptService
    tools: ToolUseService
    assertions: AssertionService
    skills: SkillService
    message_bus: MessageBusService
    executions: ExecutionService
    spans: SpanService

    @classmethod
    def over(cls, hub: P) -> Self:
        """Services that publish through ``hub``."""
        return cls(
            hub,
            TranscriptService(hub),
            ToolUseService(hub),
            AssertionService(hub),
            SkillService(hub),
            MessageBusService(hub),
            ExecutionService(hub),
            SpanService(hub),
        )
