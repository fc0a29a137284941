"""The producer services (plan OBS-603…OBS-610): each stores its record, then emits it.

A service builds the typed event, the hub stores it (assigning ``seq`` and derived
fields such as ``runningPassRate``) and fans it out; the service returns the stored
event, which is exactly what subscribers receive.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final, TypeVar

import attrs
import trio

from . import _events as ev
from ._broker import Broker, Hub
from ._events import utc_now_iso
from ._store import Store, open_store

E = TypeVar("E", bound=ev.StreamEvent)

_OPEN_SPANS_MAX: Final = 10_000


def new_id() -> str:
    """A fresh random id for a record."""
    return uuid.uuid4().hex


class _Service:
    def __init__(self, hub: Hub) -> None:
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

    def __init__(self, hub: Hub) -> None:
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
            timestamp=utc_now_iso(),
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
        return await self._store(
            ev.TranscriptEntryEvent(execution_id=execution_id, entry=entry, is_latest=is_latest)
        )


class ToolUseService(_Service):
    """Tool uses: start, streamed output, end (OBS-604)."""

    def __init__(self, hub: Hub) -> None:
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
                execution_id=execution_id, tool_use_id=tool_use_id, chunk=chunk, is_stderr=is_stderr
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
                execution_id=execution_id,
                tool_use_id=tool_use_id,
                result_status=result_status,
                duration_ms=self._spans.end(tool_use_id, duration_ms),
                output_summary=output_summary,
                is_error=result_status == "error",
                is_blocked=result_status == "blocked",
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
            timestamp=utc_now_iso(),
            chain_id=chain_id,
            evidence=evidence,
            duration_ms=duration_ms,
        )
        return await self._store(
            ev.AssertionResultEvent(execution_id=execution_id, task_id=task_id, assertion=assertion)
        )


class SkillService(_Service):
    """Skill traces: start and end (OBS-606)."""

    def __init__(self, hub: Hub) -> None:
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
        severity: ev.Severity,
        category: str,
        execution_id: str | None = None,
        task_id: str | None = None,
        correlation_id: str | None = None,
        transcript_entry_id: str | None = None,
        payload: ev.JSONDict | None = None,
        event_id: str | None = None,
    ) -> ev.MessageBusEvent:
        """Store and emit ``messagebus:event`` (to ``global`` when there is no execution)."""
        now = utc_now_iso()
        entry = ev.MessageBusLogEntry(
            id=new_id(),
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
        return await self._store(derive(ev.MessageBusEvent(execution_id=ev.GLOBAL, entry=entry)))


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
            ev.ExecutionStatusEvent(execution_id=execution_id, status=status, message=message)
        )


def derive(event: E) -> E:
    """The event with the fields a producer cannot choose computed by the server.

    ``requiresAction`` follows the severity and a message-bus event without an
    execution belongs to ``global``. (``runningPassRate`` is computed by the store,
    which alone knows the order of assertions.)
    """
    if isinstance(event, ev.MessageBusEvent):
        return attrs.evolve(
            event,
            # A posted top-level executionId counts too; only an event with no
            # execution at all belongs to ``global``.
            execution_id=event.entry.execution_id or event.execution_id or ev.GLOBAL,
            requires_action=event.entry.severity in ev.ACTION_SEVERITIES,
        )
    return event


@attrs.frozen
class Observability:
    """An open trio-obs: the store, the broker and every service, ready to use."""

    store: Store
    broker: Broker
    transcripts: TranscriptService
    tools: ToolUseService
    assertions: AssertionService
    skills: SkillService
    message_bus: MessageBusService
    executions: ExecutionService

    @classmethod
    def over(cls, store: Store, broker: Broker) -> Observability:
        """Services bound to ``broker``."""
        return cls(
            store,
            broker,
            TranscriptService(broker),
            ToolUseService(broker),
            AssertionService(broker),
            SkillService(broker),
            MessageBusService(broker),
            ExecutionService(broker),
        )

    async def ingest(self, events: Sequence[ev.StreamEvent]) -> list[ev.StreamEvent]:
        """Store foreign events (already validated) as one atomic batch, with derived fields."""
        envelopes = await self.broker.publish([derive(e) for e in events])
        return [env.event for env in envelopes if not env.is_copy]


@asynccontextmanager
async def open_observability(
    db: str = ":memory:",
    *,
    buffer_size: int = 100,
    queue_size: int = 1024,
    max_buffers: int = 1000,
    buffer_grace: float = 300.0,
) -> AsyncIterator[Observability]:
    """Open the store, broker and services in a nursery of their own.

    ``db`` is a SQLite file path or ``:memory:``. On exit, queued writes are
    committed and the store is closed.
    """
    async with open_store(db) as store, trio.open_nursery() as nursery:
        broker = Broker(
            store,
            buffer_size=buffer_size,
            queue_size=queue_size,
            max_buffers=max_buffers,
            buffer_grace=buffer_grace,
        )
        await nursery.start(broker.run)
        try:
            yield Observability.over(store, broker)
        finally:
            nursery.cancel_scope.cancel()
