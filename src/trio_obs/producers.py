"""The one event builder: the producer services (plan OBS-603…610) and the broker's emits.

A service builds the typed event, the hub stores it (the ledger assigns ``seq`` and
every derived field, such as ``runningPassRate``) and fans it out; the service returns
the stored event, which is exactly what subscribers receive. The plan's stream service
(OBS-600: ``emit_tool_start`` …) is :class:`Broker`, whose emit methods build through
the services. :func:`open_observability` opens a store, a hub and every service.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import cached_property
from typing import Final, Protocol, TypeVar

import attrs
import trio

from .core import events as ev
from .core.protocol import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_BUFFER_SIZE,
    DEFAULT_QUEUE_SIZE,
    Severity,
)
from .core.routing import Envelope
from .hub.base import Hub
from .hub.local import LocalHub, now_iso
from .hub.sqlite import Store, open_store

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


class _Service:
    def __init__(self, hub: Publisher) -> None:
        self.hub = hub

    async def _store(self, event: E) -> E:
        stored = (await self.hub.publish([event]))[0].event
        assert isinstance(stored, type(event))
        return stored


class _Spans:
    """Start times of open tool uses / skill traces, to compute a missing duration."""

    def __init__(self) -> None:
        self._started: OrderedDict[str, float] = OrderedDict()

    def start(self, span_id: str) -> None:
        self._started[span_id] = trio.current_time()
        if len(self._started) > _OPEN_SPANS_MAX:
            self._started.popitem(last=False)

    def end(self, span_id: str, duration_ms: float | None) -> float:
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
        self, execution_id: str, entry: ev.TranscriptEntry, *, is_latest: bool = True
    ) -> ev.TranscriptEntryEvent:
        """Store a transcript record made elsewhere and emit ``transcript:entry``."""
        return await self._store(
            ev.TranscriptEntryEvent(
                timestamp=now_iso(), execution_id=execution_id, entry=entry, is_latest=is_latest
            )
        )


class ToolUseService(_Service):
    """Tool uses: start, streamed output, end (OBS-604)."""

    def __init__(self, hub: Publisher) -> None:
        super().__init__(hub)
        self._spans = _Spans()

    async def start(
        self,
        execution_id: str,
        tool: str,
        input_summary: str,
        *,
        tool_use_id: str | None = None,
        task_id: str | None = None,
    ) -> ev.ToolStartEvent:
        """Store and emit ``tool:start``; returns it (its ``tool_use_id`` names the use)."""
        tool_use_id = tool_use_id or new_id()
        self._spans.start(tool_use_id)
        return await self._store(
            ev.ToolStartEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                tool_use_id=tool_use_id,
                tool=tool,
                input_summary=input_summary,
                task_id=task_id,
            )
        )

    async def output(
        self, execution_id: str, tool_use_id: str, chunk: str, *, is_stderr: bool = False
    ) -> ev.ToolOutputEvent:
        """Store and emit a ``tool:output`` chunk."""
        return await self._store(
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
        *,
        duration_ms: float | None = None,
        output_summary: str | None = None,
    ) -> ev.ToolEndEvent:
        """Store and emit ``tool:end``; the duration defaults to the time since ``start``."""
        return await self._store(
            ev.ToolEndEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                tool_use_id=tool_use_id,
                result_status=result_status,
                duration_ms=self._spans.end(tool_use_id, duration_ms),
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
        return await self._store(
            ev.AssertionResultEvent(
                timestamp=now_iso(), execution_id=execution_id, task_id=task_id, assertion=assertion
            )
        )


class SkillService(_Service):
    """Skill traces: start and end (OBS-606)."""

    def __init__(self, hub: Publisher) -> None:
        super().__init__(hub)
        self._spans = _Spans()

    async def start(
        self,
        execution_id: str,
        skill_name: str,
        skill_file: str,
        line_number: int,
        *,
        skill_trace_id: str | None = None,
        task_id: str | None = None,
    ) -> ev.SkillStartEvent:
        """Store and emit ``skill:start``."""
        skill_trace_id = skill_trace_id or new_id()
        self._spans.start(skill_trace_id)
        return await self._store(
            ev.SkillStartEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                skill_trace_id=skill_trace_id,
                skill_name=skill_name,
                skill_file=skill_file,
                line_number=line_number,
                task_id=task_id,
            )
        )

    async def end(
        self,
        execution_id: str,
        skill_trace_id: str,
        skill_name: str,
        status: ev.SkillStatus,
        *,
        duration_ms: float | None = None,
    ) -> ev.SkillEndEvent:
        """Store and emit ``skill:end``; the duration defaults to the time since ``start``."""
        return await self._store(
            ev.SkillEndEvent(
                timestamp=now_iso(),
                execution_id=execution_id,
                skill_trace_id=skill_trace_id,
                skill_name=skill_name,
                status=status,
                duration_ms=self._spans.end(skill_trace_id, duration_ms),
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
        self, entry: ev.MessageBusLogEntry, *, requires_action: bool = False
    ) -> ev.MessageBusEvent:
        """Store a message-bus record made elsewhere and emit ``messagebus:event``.

        ``requiresAction`` is set for severity error and critical; ``requires_action``
        can set it for a lower severity too.
        """
        return await self._store(
            ev.MessageBusEvent(timestamp=now_iso(), entry=entry, requires_action=requires_action)
        )


class ExecutionService(_Service):
    """Waves, agent heartbeats and execution status (OBS-608…OBS-610)."""

    async def wave_status(
        self,
        execution_id: str,
        wave_number: int,
        status: ev.WaveState,
        *,
        task_count: int,
        completed_count: int = 0,
        failed_count: int = 0,
    ) -> ev.WaveStatusEvent:
        """Store and emit ``wave:status``."""
        return await self._store(
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
        *,
        current_task_id: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> ev.AgentHeartbeatEvent:
        """Store and emit ``agent:heartbeat``."""
        return await self._store(
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
        return await self._store(
            ev.ExecutionStatusEvent(
                timestamp=now_iso(), execution_id=execution_id, status=status, message=message
            )
        )


@attrs.frozen
class Services:
    """Every producer service, bound to one hub."""

    transcripts: TranscriptService
    tools: ToolUseService
    assertions: AssertionService
    skills: SkillService
    message_bus: MessageBusService
    executions: ExecutionService

    @classmethod
    def over(cls, hub: Publisher) -> Services:
        """Services that publish through ``hub`` (or any publisher)."""
        return cls(
            TranscriptService(hub),
            ToolUseService(hub),
            AssertionService(hub),
            SkillService(hub),
            MessageBusService(hub),
            ExecutionService(hub),
        )


class Broker(LocalHub):
    """The in-process hub with the plan's stream service on top (OBS-600, fixed).

    One emit method per event type, each building its event through the services;
    create it over an open :class:`~trio_obs.Store`, start :meth:`run` in a nursery
    (or use :func:`open_observability`), then ``emit_*`` / ``publish`` and ``subscribe``.
    """

    @cached_property
    def _services(self) -> Services:
        return Services.over(self)

    async def emit_transcript_entry(
        self, execution_id: str, entry: ev.TranscriptEntry, is_latest: bool = True
    ) -> ev.StreamEvent:
        """Store and broadcast a ``transcript:entry`` event."""
        return await self._services.transcripts.entry(execution_id, entry, is_latest=is_latest)

    async def emit_tool_start(
        self,
        execution_id: str,
        tool_use_id: str,
        tool: str,
        input_summary: str,
        task_id: str | None = None,
    ) -> ev.StreamEvent:
        """Store and broadcast a ``tool:start`` event."""
        return await self._services.tools.start(
            execution_id, tool, input_summary, tool_use_id=tool_use_id, task_id=task_id
        )

    async def emit_tool_end(
        self,
        execution_id: str,
        tool_use_id: str,
        result_status: ev.ToolResultStatus,
        duration_ms: float,
        output_summary: str | None = None,
    ) -> ev.StreamEvent:
        """Store and broadcast a ``tool:end`` (``isError``/``isBlocked`` follow the status)."""
        return await self._services.tools.end(
            execution_id,
            tool_use_id,
            result_status,
            duration_ms=duration_ms,
            output_summary=output_summary,
        )

    async def emit_tool_output(
        self, execution_id: str, tool_use_id: str, chunk: str, is_stderr: bool = False
    ) -> ev.StreamEvent:
        """Store and broadcast a ``tool:output`` chunk."""
        return await self._services.tools.output(
            execution_id, tool_use_id, chunk, is_stderr=is_stderr
        )

    async def emit_assertion_result(
        self, execution_id: str, task_id: str, assertion: ev.AssertionResult
    ) -> ev.StreamEvent:
        """Store and broadcast an ``assertion:result``; the ledger computes the pass rate."""
        return await self._services.assertions.result(execution_id, task_id, assertion)

    async def emit_skill_start(
        self,
        execution_id: str,
        skill_trace_id: str,
        skill_name: str,
        skill_file: str,
        line_number: int,
        task_id: str | None = None,
    ) -> ev.StreamEvent:
        """Store and broadcast a ``skill:start`` event."""
        return await self._services.skills.start(
            execution_id,
            skill_name,
            skill_file,
            line_number,
            skill_trace_id=skill_trace_id,
            task_id=task_id,
        )

    async def emit_skill_end(
        self,
        execution_id: str,
        skill_trace_id: str,
        skill_name: str,
        status: ev.SkillStatus,
        duration_ms: float,
    ) -> ev.StreamEvent:
        """Store and broadcast a ``skill:end`` event."""
        return await self._services.skills.end(
            execution_id, skill_trace_id, skill_name, status, duration_ms=duration_ms
        )

    async def emit_message_bus_event(
        self, entry: ev.MessageBusLogEntry, requires_action: bool = False
    ) -> ev.StreamEvent:
        """Store and broadcast a ``messagebus:event`` (``global`` when it has no execution).

        ``requiresAction`` is set for severity error and critical, or when asked.
        """
        return await self._services.message_bus.entry(entry, requires_action=requires_action)

    async def emit_wave_status(
        self,
        execution_id: str,
        wave_number: int,
        status: ev.WaveState,
        task_count: int,
        completed_count: int,
        failed_count: int,
    ) -> ev.StreamEvent:
        """Store and broadcast a ``wave:status`` event."""
        return await self._services.executions.wave_status(
            execution_id,
            wave_number,
            status,
            task_count=task_count,
            completed_count=completed_count,
            failed_count=failed_count,
        )

    async def emit_agent_heartbeat(
        self,
        execution_id: str,
        instance_id: str,
        status: ev.AgentState,
        current_task_id: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> ev.StreamEvent:
        """Store and broadcast an ``agent:heartbeat`` event."""
        return await self._services.executions.heartbeat(
            execution_id, instance_id, status, current_task_id=current_task_id, metrics=metrics
        )

    async def emit_execution_status(
        self, execution_id: str, status: ev.ExecutionState, message: str | None = None
    ) -> ev.StreamEvent:
        """Store and broadcast an ``execution:status`` event (a copy also goes to ``global``)."""
        return await self._services.executions.status(execution_id, status, message)


@attrs.frozen
class Observability:
    """An open trio-obs: a hub and every service, ready to use."""

    hub: Hub
    transcripts: TranscriptService
    tools: ToolUseService
    assertions: AssertionService
    skills: SkillService
    message_bus: MessageBusService
    executions: ExecutionService

    @classmethod
    def over(cls, hub: Hub) -> Observability:
        """Services bound to ``hub``."""
        s = Services.over(hub)
        return cls(hub, s.transcripts, s.tools, s.assertions, s.skills, s.message_bus, s.executions)

    @property
    def broker(self) -> Broker:
        """The in-process hub with the plan's emit methods (SQLite mode)."""
        if not isinstance(self.hub, Broker):
            raise TypeError("this trio-obs runs on another hub; use .hub (the Hub protocol)")
        return self.hub

    @property
    def store(self) -> Store:
        """The SQLite store under the in-process hub."""
        return self.broker.store

    async def ingest(
        self, events: Sequence[ev.StreamEvent], *, idempotency_key: str | None = None
    ) -> list[ev.StreamEvent]:
        """Store foreign events (already decoded) as one atomic batch; the stored events."""
        envelopes = await self.hub.publish(events, idempotency_key=idempotency_key)
        return [env.event for env in envelopes if not env.is_copy]


@asynccontextmanager
async def open_observability(
    db: str = ":memory:",
    *,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    max_buffers: int = 1000,
    buffer_grace: float = 300.0,
) -> AsyncIterator[Observability]:
    """Open the store, the hub and the services in a nursery of their own.

    ``db`` is a SQLite file path or ``:memory:``. On exit, queued writes are
    committed and the store is closed.
    """
    async with open_store(db) as store, trio.open_nursery() as nursery:
        broker = Broker(
            store,
            buffer_size=buffer_size,
            queue_size=queue_size,
            buffer_bytes=buffer_bytes,
            max_buffers=max_buffers,
            buffer_grace=buffer_grace,
        )
        await nursery.start(broker.run)
        try:
            yield Observability.over(broker)
        finally:
            broker.close()
