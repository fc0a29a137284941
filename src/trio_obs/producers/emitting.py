"""The SQLite hub with the plan's emit methods on top (OBS-600, fixed).

:class:`EmittingHub` is a :class:`~trio_obs.hub.local.LocalHub` (order, store, fan out)
that also has the plan's ``ObservabilityStreamService`` API: one ``emit_*`` method per
event type, each building its event through the services, the one event builder.
``Broker`` is its former name, kept as an alias.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Concatenate, ParamSpec, TypeVar

from ..core import events as ev
from ..hub.local import LocalHub
from .services import (
    AssertionService,
    ExecutionService,
    MessageBusService,
    Services,
    SkillService,
    ToolUseService,
    TranscriptService,
)

S = TypeVar("S")
A = ParamSpec("A")
R = TypeVar("R")


def _emits(
    service: Callable[Concatenate[S, A], Awaitable[R]], name: str
) -> Callable[Concatenate[EmittingHub, A], Awaitable[R]]:
    """An emit method that is the service method ``service`` of the hub's ``name`` service
    (same arguments, in the plan's order; same answer: the stored event)."""

    async def emit(hub: EmittingHub, /, *args: A.args, **kwargs: A.kwargs) -> R:
        return await service(getattr(hub.services, name), *args, **kwargs)

    functools.update_wrapper(emit, service, assigned=("__doc__",))  # help() shows its arguments
    return emit


class EmittingHub(LocalHub):
    """The in-process SQLite hub with the plan's stream service on top (OBS-600, fixed).

    One emit method per event type, each building its event through the services;
    create it over an open :class:`~trio_obs.hub.sqlite.Store`, start :meth:`run` in a
    nursery (or use :func:`~trio_obs.open_observability`), then ``emit_*`` / ``publish``
    and ``subscribe``.
    """

    @cached_property
    def services(self) -> Services[EmittingHub]:
        """The services the emit methods build their events with."""
        return Services.over(self)

    emit_transcript_entry = _emits(TranscriptService.entry, "transcripts")
    emit_tool_output = _emits(ToolUseService.output, "tools")
    emit_tool_end = _emits(ToolUseService.end, "tools")
    emit_assertion_result = _emits(AssertionService.result, "assertions")
    emit_skill_end = _emits(SkillService.end, "skills")
    emit_message_bus_event = _emits(MessageBusService.entry, "message_bus")
    emit_wave_status = _emits(ExecutionService.wave_status, "executions")
    emit_agent_heartbeat = _emits(ExecutionService.heartbeat, "executions")
    emit_execution_status = _emits(ExecutionService.status, "executions")

    # The plan names a tool use and a skill trace before what it is; the services, which
    # make the id when none is given, take it last.

    async def emit_tool_start(
        self,
        execution_id: str,
        tool_use_id: str,
        tool: str,
        input_summary: str,
        task_id: str | None = None,
    ) -> ev.ToolStartEvent:
        """Store and broadcast a ``tool:start`` event."""
        return await self.services.tools.start(
            execution_id, tool, input_summary, tool_use_id=tool_use_id, task_id=task_id
        )

    async def emit_skill_start(
        self,
        execution_id: str,
        skill_trace_id: str,
        skill_name: str,
        skill_file: str,
        line_number: int,
        task_id: str | None = None,
    ) -> ev.SkillStartEvent:
        """Store and broadcast a ``skill:start`` event."""
        return await self.services.skills.start(
            execution_id,
            skill_name,
            skill_file,
            line_number,
            skill_trace_id=skill_trace_id,
            task_id=task_id,
        )


Broker = EmittingHub
"""The former name of :class:`EmittingHub` (it is a hub, and the broker is the hub)."""
