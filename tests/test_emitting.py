"""The plan's stream service on the SQLite hub (``producers.emitting``): the OBS-611 unit
tests of its emit methods, one per event type, each building its event through the services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from support import EXECUTION, assertion_record, bus_record, drain, transcript_record
from trio_obs import EmittingHub
from trio_obs.core import events as ev
from trio_obs.core.wire import decode_stream_event

# --------------------------------------------------------------------------- OBS-611 port

Emit = Callable[[EmittingHub], Awaitable[ev.StreamEvent]]

EMITS: list[tuple[str, Emit, dict[str, Any]]] = [
    (
        "transcript:entry",
        lambda b: b.emit_transcript_entry(EXECUTION, transcript_record(1), True),
        {"is_latest": True, "entry": transcript_record(1)},
    ),
    (
        "tool:start",
        lambda b: b.emit_tool_start(EXECUTION, "tool-1", "Read", "Read file.ts", task_id="task-1"),
        {"tool_use_id": "tool-1", "tool": "Read", "input_summary": "Read file.ts"},
    ),
    (
        "tool:end",
        lambda b: b.emit_tool_end(EXECUTION, "tool-1", "done", 150),
        {"result_status": "done", "duration_ms": 150},
    ),
    (
        "tool:output",
        lambda b: b.emit_tool_output(EXECUTION, "tool-1", "error\n", True),
        {"chunk": "error\n", "is_stderr": True},
    ),
    (
        "assertion:result",
        lambda b: b.emit_assertion_result(EXECUTION, "task-1", assertion_record()),
        {"task_id": "task-1", "running_pass_rate": 1.0, "assertion": assertion_record()},
    ),
    (
        "skill:start",
        lambda b: b.emit_skill_start(EXECUTION, "trace-1", "plan", "skills/plan.md", 12),
        {"skill_trace_id": "trace-1", "skill_file": "skills/plan.md", "line_number": 12},
    ),
    (
        "skill:end",
        lambda b: b.emit_skill_end(EXECUTION, "trace-1", "plan", "partial", 40.5),
        {"status": "partial", "duration_ms": 40.5},
    ),
    (
        "messagebus:event",
        lambda b: b.emit_message_bus_event(bus_record(EXECUTION, "critical")),
        {"requires_action": True},
    ),
    (
        "wave:status",
        lambda b: b.emit_wave_status(EXECUTION, 2, "running", 5, 3, 1),
        {"wave_number": 2, "task_count": 5, "completed_count": 3, "failed_count": 1},
    ),
    (
        "agent:heartbeat",
        lambda b: b.emit_agent_heartbeat(
            EXECUTION, "instance-1", "working", "task-1", {"cpu": 0.5}
        ),
        {"instance_id": "instance-1", "current_task_id": "task-1", "metrics": {"cpu": 0.5}},
    ),
    (
        "execution:status",
        lambda b: b.emit_execution_status(EXECUTION, "paused", "waiting for approval"),
        {"status": "paused", "message": "waiting for approval"},
    ),
]


def test_every_event_type_has_an_emit_method() -> None:
    assert sorted(kind for kind, _, _ in EMITS) == sorted(ev.PLAN_EVENT_TYPES)  # spans: issue 21


@pytest.mark.parametrize(("kind", "emit", "fields"), EMITS, ids=[k for k, _, _ in EMITS])
async def test_emit_reaches_an_execution_subscriber_once(
    broker: EmittingHub, kind: str, emit: Emit, fields: dict[str, Any]
) -> None:
    with broker.subscribe(EXECUTION) as sub:
        stored = await emit(broker)
        [env] = drain(sub)
    assert env.event is stored
    assert (stored.type, stored.execution_id, stored.seq) == (kind, EXECUTION, 1)
    for name, value in fields.items():
        assert getattr(stored, name) == value, name
    assert decode_stream_event(env.data) == stored


async def test_tool_start_and_end_in_order(broker: EmittingHub) -> None:
    with broker.subscribe(EXECUTION) as sub:
        await broker.emit_tool_start(EXECUTION, "tool-1", "Read", "Read file.ts")
        await broker.emit_tool_end(EXECUTION, "tool-1", "done", 150)
        events = [env.event for env in drain(sub)]
    assert [e.type for e in events] == ["tool:start", "tool:end"]
    assert events[1].duration_ms == 150  # type: ignore[union-attr]


async def test_tool_output_stderr_flag(broker: EmittingHub) -> None:
    with broker.subscribe(EXECUTION) as sub:
        await broker.emit_tool_output(EXECUTION, "tool-1", "line 1\n", False)
        await broker.emit_tool_output(EXECUTION, "tool-1", "error\n", True)
        events = [env.event for env in drain(sub)]
    assert [e.is_stderr for e in events] == [False, True]  # type: ignore[union-attr]


async def test_assertion_running_pass_rate_is_computed(broker: EmittingHub) -> None:
    # The plan passed the rate in (0.92); here the store computes it from stored results.
    rates = []
    for result in ("pass", "fail", "pass", "warn"):
        stored = await broker.emit_assertion_result(EXECUTION, "task-1", assertion_record(result))
        rates.append(stored.running_pass_rate)  # type: ignore[union-attr]
    assert rates == [1.0, 0.5, pytest.approx(2 / 3), 0.5]


async def test_message_bus_requires_action_defaults_to_severity(broker: EmittingHub) -> None:
    for severity, expected in [
        ("debug", False),
        ("info", False),
        ("warning", False),
        ("error", True),
        ("critical", True),
    ]:
        stored = await broker.emit_message_bus_event(bus_record(EXECUTION, severity))  # type: ignore[arg-type]
        assert stored.requires_action is expected, severity  # type: ignore[union-attr]
    explicit = await broker.emit_message_bus_event(
        bus_record(EXECUTION, "info"), requires_action=True
    )
    assert explicit.requires_action is True  # type: ignore[union-attr]
