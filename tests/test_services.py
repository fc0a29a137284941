"""The producer services (OBS-603…610): each stores its record, then emits it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest
import trio

from support import T0, collect_envelopes, drain
from trio_obs import (
    ALL,
    GLOBAL,
    InvalidInput,
    Observability,
    open_observability,
)
from trio_obs.core import events as ev
from trio_obs.core.intake import decode_events
from trio_obs.core.wire import decode_stream_event

EXEC = "exec-1"


Call = Callable[[Observability], Awaitable[ev.StreamEvent]]

CALLS: list[tuple[str, Call]] = [
    (
        "transcript:entry",
        lambda o: o.transcripts.record(
            EXEC, instance_id="i1", entry_type="phase_start", category="lifecycle", summary="go"
        ),
    ),
    ("tool:start", lambda o: o.tools.start(EXEC, "Read", "Read a.py", task_id="task-1")),
    ("tool:output", lambda o: o.tools.output(EXEC, "tu-1", "line\n", is_stderr=True)),
    ("tool:end", lambda o: o.tools.end(EXEC, "tu-1", "blocked", duration_ms=3.5)),
    (
        "assertion:result",
        lambda o: o.assertions.record(
            EXEC, "task-1", category="lint", description="ruff passes", result="pass"
        ),
    ),
    ("skill:start", lambda o: o.skills.start(EXEC, "plan", "skills/plan.md", 7)),
    ("skill:end", lambda o: o.skills.end(EXEC, "st-1", "plan", "success", duration_ms=2)),
    (
        "messagebus:event",
        lambda o: o.message_bus.log(
            source="scheduler",
            event_type="task.failed",
            human_summary="task failed",
            severity="error",
            category="task",
            execution_id=EXEC,
        ),
    ),
    ("wave:status", lambda o: o.executions.wave_status(EXEC, 1, "running", task_count=4)),
    (
        "agent:heartbeat",
        lambda o: o.executions.heartbeat(EXEC, "i1", "working", metrics={"tokens": 12.0}),
    ),
    ("execution:status", lambda o: o.executions.status(EXEC, "running", "go")),
    ("span:start", lambda o: o.spans.start(EXEC, "llm", "chat", model="gpt-4o")),
    ("span:end", lambda o: o.spans.end(EXEC, "sp-1", "error", error="timeout")),
]


def test_every_event_type_has_a_service_call() -> None:
    judged = {"watch:alert", "watch:clear"}  # the server's own (SPEC §13): no service makes them
    assert sorted(kind for kind, _ in CALLS) == sorted(set(ev.STREAM_EVENT_TYPES) - judged)


@pytest.mark.parametrize(("kind", "call"), CALLS, ids=[k for k, _ in CALLS])
async def test_service_stores_then_emits_what_it_returns(
    obs: Observability, kind: str, call: Call
) -> None:
    with obs.broker.subscribe(EXEC) as sub:
        stored = await call(obs)
        [env] = drain(sub)
    assert stored.type == kind
    assert stored.seq == 1
    assert env.event == stored
    assert decode_stream_event(env.data) == stored
    [read] = await obs.store.read(EXEC)
    assert read.event == stored


async def test_transcript_sequence_counts_per_execution(obs: Observability) -> None:
    async def record(execution_id: str) -> int:
        event = await obs.transcripts.record(
            execution_id, instance_id="i", entry_type="x", category="c", summary="s"
        )
        return event.entry.sequence

    assert [await record("a"), await record("a"), await record("b"), await record("a")] == [
        1,
        2,
        1,
        3,
    ]
    explicit = await obs.transcripts.record(
        "a", instance_id="i", entry_type="x", category="c", summary="s", sequence=10
    )
    assert explicit.entry.sequence == 10
    assert await record("a") == 11


async def test_running_pass_rate_is_passed_over_total_including_this_one(
    obs: Observability,
) -> None:
    rates = []
    for result in ("pass", "pass", "fail", "skip", "warn", "pass"):
        event = await obs.assertions.record(
            EXEC,
            "task-1",
            category="tests",
            description="d",
            result=result,
        )
        rates.append(event.running_pass_rate)
    assert rates == [1.0, 1.0, pytest.approx(2 / 3), 0.5, 0.4, 0.5]
    other = await obs.assertions.record(
        "exec-2", "task-9", category="tests", description="d", result="fail"
    )
    assert other.running_pass_rate == 0.0


@pytest.mark.parametrize(
    ("severity", "requires_action"),
    [("debug", False), ("info", False), ("warning", False), ("error", True), ("critical", True)],
)
async def test_requires_action_for_error_and_critical_only(
    obs: Observability, severity: ev.Severity, requires_action: bool
) -> None:
    event = await obs.message_bus.log(
        source="s",
        event_type="t",
        human_summary="h",
        severity=severity,
        category="c",
        execution_id=EXEC,
    )
    assert event.requires_action is requires_action
    assert event.entry.severity == severity


async def test_message_bus_without_execution_goes_to_global(obs: Observability) -> None:
    with obs.broker.subscribe(GLOBAL) as global_, obs.broker.subscribe(ALL) as everything:
        event = await obs.message_bus.log(
            source="s", event_type="t", human_summary="h", severity="info", category="c"
        )
        [g] = drain(global_)
        [a] = drain(everything)
    assert event.execution_id == GLOBAL
    assert event.entry.execution_id is None
    assert (g.key, g.seq, g.event) == (GLOBAL, 1, event)
    assert a.event == event
    assert obs.broker.last_seq(GLOBAL) == 1


async def test_execution_status_also_lands_in_global(obs: Observability) -> None:
    event = await obs.executions.status(EXEC, "completed")
    assert event.seq == 1
    [copy] = await obs.store.read(GLOBAL)
    assert copy.is_copy
    assert copy.event.execution_id == EXEC


async def test_tool_end_computes_duration_when_omitted(
    obs: Observability, autojump_clock: trio.testing.MockClock
) -> None:
    start = await obs.tools.start(EXEC, "Bash", "sleep 2")
    await trio.sleep(2)
    end = await obs.tools.end(EXEC, start.tool_use_id, "done")
    assert end.duration_ms >= 2000
    assert (end.is_error, end.is_blocked) == (False, False)
    explicit = await obs.tools.end(EXEC, start.tool_use_id, "error", duration_ms=12.0)
    assert explicit.duration_ms == 12.0
    assert (explicit.is_error, explicit.is_blocked) == (True, False)
    never_started = await obs.tools.end(EXEC, "unknown", "blocked")
    assert never_started.duration_ms == 0.0
    assert never_started.is_blocked is True


async def test_skill_end_computes_duration_when_omitted(
    obs: Observability, autojump_clock: trio.testing.MockClock
) -> None:
    start = await obs.skills.start(EXEC, "plan", "skills/plan.md", 3)
    await trio.sleep(1.5)
    end = await obs.skills.end(EXEC, start.skill_trace_id, "plan", "failed")
    assert end.duration_ms >= 1500


async def test_an_agent_span_its_model_call_and_tool(
    obs: Observability, autojump_clock: trio.testing.MockClock
) -> None:
    agent = await obs.spans.start(EXEC, "agent", "planner")
    call = await obs.spans.start(EXEC, "llm", "chat", parent_span_id=agent.span_id, model="o3")
    tool = await obs.tools.start(EXEC, "Read", "a.py", parent_span_id=agent.span_id)
    assert (agent.agent, call.agent, tool.agent) == ("planner", "planner", "planner")
    await trio.sleep(1)
    end = await obs.spans.end(EXEC, call.span_id, usage={"inputTokens": 3, "outputTokens": 4})
    assert end.duration_ms is not None and end.duration_ms >= 1000 and end.agent == "planner"
    [summary] = await obs.store.executions()
    assert summary.totals is not None and summary.totals["modelCalls"] == 1
    assert summary.models == {"o3": (3, 4)} and summary.name == "planner"


async def test_tool_start_generates_ids_and_end_resolves_its_tool(obs: Observability) -> None:
    a = await obs.tools.start(EXEC, "Read", "x", task_id="task-1")
    b = await obs.tools.start(EXEC, "Read", "y")
    assert a.tool_use_id and b.tool_use_id and a.tool_use_id != b.tool_use_id
    given = await obs.tools.start(EXEC, "Edit", "z", tool_use_id="mine")
    assert given.tool_use_id == "mine"
    with obs.broker.subscribe(EXEC, since=obs.broker.last_seq(EXEC)) as sub:
        await obs.tools.end(EXEC, a.tool_use_id, "done", duration_ms=1)
        [env] = drain(sub)
    assert (env.tool, env.task_id) == ("Read", "task-1")


# --------------------------------------------------------------------------- ingest


def _wire_batch() -> bytes:
    entry = {
        "id": "m1",
        "eventId": "e1",
        "timestamp": "2025-01-01T00:00:00.000Z",
        "source": "ci",
        "eventType": "build.broken",
        "humanSummary": "build broken",
        "severity": "critical",
        "category": "build",
        "createdAt": "2025-01-01T00:00:00.000Z",
        "executionId": EXEC,
    }
    assertion = {
        "id": "a1",
        "taskId": "task-1",
        "executionId": EXEC,
        "category": "tests",
        "description": "d",
        "result": "fail",
        "timestamp": "2025-01-01T00:00:00.000Z",
    }
    return orjson.dumps(
        [
            {
                "type": "messagebus:event",
                "executionId": EXEC,
                "entry": entry,
                "requiresAction": False,
            },
            {
                "type": "assertion:result",
                "executionId": EXEC,
                "taskId": "task-1",
                "assertion": assertion,
                "runningPassRate": 0.99,
            },
            {"type": "execution:status", "executionId": EXEC, "status": "failed"},
            {
                "type": "messagebus:event",
                "entry": {**entry, "executionId": None, "severity": "debug"},
                "requiresAction": True,
            },
        ]
    )


async def test_ingest_computes_derived_fields(obs: Observability) -> None:
    with obs.broker.subscribe(EXEC) as sub:
        stored = await obs.ingest(decode_events(_wire_batch()))
        live = [env.event for env in drain(sub)]
    assert [e.type for e in stored] == [
        "messagebus:event",
        "assertion:result",
        "execution:status",
        "messagebus:event",
    ]
    bus, rate, _status, global_bus = stored
    assert bus.requires_action is True  # type: ignore[union-attr]
    assert rate.running_pass_rate == 0.0  # type: ignore[union-attr]
    assert global_bus.requires_action is False  # type: ignore[union-attr]
    assert global_bus.execution_id == GLOBAL
    assert [e.seq for e in stored] == [1, 2, 3, 2]  # global: the status copy took seq 1
    assert live == stored[:3]


async def test_ingest_is_atomic(obs: Observability) -> None:
    good = decode_events(_wire_batch())
    entry = ev.TranscriptEntry(
        id="t",
        timestamp="ts",
        sequence=2**70,  # the encoder refuses it
        execution_id=EXEC,
        instance_id="i",
        entry_type="x",
        category="c",
        summary="s",
    )
    bad = ev.TranscriptEntryEvent(execution_id=EXEC, entry=entry)
    with obs.broker.subscribe(EXEC) as sub, obs.broker.subscribe(ALL) as everything:
        with pytest.raises(InvalidInput):
            await obs.ingest([*good, bad])
        assert drain(sub) == []
        assert drain(everything) == []
    assert obs.broker.last_seq(EXEC) == 0
    assert obs.broker.last_seq(GLOBAL) == 0
    assert await obs.store.executions() == []
    stored = await obs.ingest(good)
    assert [e.seq for e in stored[:3]] == [1, 2, 3]


async def test_open_observability_on_a_file_persists(tmp_path: Path) -> None:
    db = str(tmp_path / "obs.db")
    async with open_observability(db) as obs:
        await obs.executions.status(EXEC, "running")
        await obs.tools.start(EXEC, "Read", "x", tool_use_id="tu-1", task_id="task-1")
    async with open_observability(db) as obs:
        with obs.broker.subscribe(EXEC) as sub:
            assert sub.replay_count == 2
            end = await obs.tools.end(EXEC, "tu-1", "done", duration_ms=1)
            assert end.seq == 3
            got = await collect_envelopes(sub, 3)
    assert [env.seq for env in got] == [1, 2, 3]
    assert (got[2].tool, got[2].task_id) == ("Read", "task-1")


async def test_ingest_keeps_the_posted_execution_of_a_message_bus_event(
    obs: Observability,
) -> None:
    entry = {
        "id": "m1",
        "eventId": "e1",
        "timestamp": T0,
        "source": "ci",
        "eventType": "x",
        "humanSummary": "h",
        "severity": "info",
        "category": "c",
        "createdAt": T0,
    }
    body = {"type": "messagebus:event", "executionId": EXEC, "entry": entry}
    [decoded] = decode_events(orjson.dumps(body))
    assert decoded.execution_id == EXEC  # the codec keeps it
    [stored] = await obs.ingest([decoded])
    assert stored.execution_id == EXEC
