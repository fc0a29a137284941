"""The plan's stream service (OBS-600, fixed): the in-process hub with one emit per type.

Each ``emit_*`` builds its event through the services, the one event builder.
"""

from __future__ import annotations

from functools import cached_property

from ..core import events as ev
from ..hub.local import LocalHub
from .services import Services


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
