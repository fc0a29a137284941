"""Socket-free routing: WebSocket frames, topics and filters (SPEC §3), replay buffers."""

from __future__ import annotations

import tracemalloc
from typing import Any

import attrs
import pytest

from trio_obs.core import events as ev
from trio_obs.core.frames import text_frame
from trio_obs.core.protocol import GLOBAL, TOPICS
from trio_obs.core.routing import (
    Envelope,
    StreamLogs,
    SubscriptionState,
    own_task_id,
    within,
)


def ReplayBuffers(depth: int = 100, *, max_bytes: int = 1 << 30, **kw: Any) -> StreamLogs:
    return StreamLogs(depth, max_bytes=max_bytes, **kw)


# --------------------------------------------------------------------------- text_frame


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_text_frame_header(size: int, header: bytes) -> None:
    payload = b"x" * size
    frame = text_frame(payload)
    assert frame[: len(header)] == header
    assert frame[len(header) :] == payload
    assert len(frame) == size + len(header)


def test_an_envelope_keeps_its_json_at_its_size() -> None:
    # orjson's result keeps the buffer it grew (4 KiB for a 400-byte event): an envelope,
    # kept as long as the logs hold it, must not.
    event = ev.ToolOutputEvent(execution_id="e1", tool_use_id="t", chunk="x" * 400, seq=1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        env = Envelope.of("e1", event)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < len(env.data) + 1024  # the data and small objects, not a 4 KiB buffer


@pytest.mark.parametrize(
    ("sizes", "budget", "kept"),
    [([10, 10, 10], 25, 2), ([10, 10, 10], 30, 3), ([50, 10], 20, 1), ([5], 0, 1), ([], 9, 0)],
)
def test_within_keeps_the_start_that_fits_and_at_least_one(
    sizes: list[int], budget: int, kept: int
) -> None:
    envs = [_env(ev.ExecutionStatusEvent(execution_id="e1", status="running")) for _ in sizes]
    for env, size in zip(envs, sizes, strict=True):
        env.data = b"x" * size
    assert within(envs, budget) == envs[:kept]


def test_envelope_frame_is_built_once_and_carries_the_json() -> None:
    env = _env(ev.ExecutionStatusEvent(execution_id="e1", status="running"), seq=1)
    assert env.frame is env.frame
    assert env.frame == text_frame(env.data)
    assert b'"seq":1' in env.data
    assert env.topic == "execution"


# --------------------------------------------------------------------------- envelopes

_seq = 0


def _env(event: Any, *, seq: int | None = None, key: str | None = None, **kw: Any) -> Envelope:
    global _seq
    _seq += 1
    event = event.__class__(**{**_fields(event), "seq": seq if seq is not None else _seq})
    # As the store does: an event's own task, unless resolved from its tool use.
    kw.setdefault("task_id", own_task_id(event))
    return Envelope.of(key or event.execution_id or GLOBAL, event, **kw)


def _fields(event: Any) -> dict[str, Any]:
    return {a.name: getattr(event, a.name) for a in attrs.fields(type(event)) if a.init}


def transcript(entry_type: str = "phase_start", task_id: str | None = None) -> Envelope:
    entry = ev.TranscriptEntry(
        id="t",
        timestamp="ts",
        sequence=1,
        execution_id="e1",
        instance_id="i1",
        entry_type=entry_type,
        category="lifecycle",
        summary="s",
        task_id=task_id,
    )
    return _env(ev.TranscriptEntryEvent(execution_id="e1", entry=entry))


def tool_start(tool: str = "Read", task_id: str | None = None) -> Envelope:
    event = ev.ToolStartEvent(
        execution_id="e1", tool_use_id=f"tu-{tool}", tool=tool, input_summary="x", task_id=task_id
    )
    return _env(event, task_id=task_id, tool=tool)


def tool_end(tool: str | None = "Read", task_id: str | None = None) -> Envelope:
    # The store resolves tool and task of tool:end from its tool:start.
    event = ev.ToolEndEvent(
        execution_id="e1", tool_use_id=f"tu-{tool}", result_status="done", duration_ms=1
    )
    return _env(event, task_id=task_id, tool=tool)


def tool_output(tool: str | None = "Read", task_id: str | None = None) -> Envelope:
    event = ev.ToolOutputEvent(execution_id="e1", tool_use_id=f"tu-{tool}", chunk="x")
    return _env(event, task_id=task_id, tool=tool)


def assertion(category: str = "tests_pass", task_id: str = "task-1") -> Envelope:
    record = ev.AssertionResult(
        id="a",
        task_id=task_id,
        execution_id="e1",
        category=category,
        description="d",
        result="pass",
        timestamp="ts",
    )
    event = ev.AssertionResultEvent(execution_id="e1", task_id=task_id, assertion=record)
    return _env(event, task_id=task_id)


def message(severity: ev.Severity = "info", task_id: str | None = None) -> Envelope:
    entry = ev.MessageBusLogEntry(
        id="m",
        event_id="me",
        timestamp="ts",
        source="bus",
        event_type="x",
        human_summary="h",
        severity=severity,
        category="c",
        created_at="ts",
        task_id=task_id,
        execution_id="e1",
    )
    return _env(ev.MessageBusEvent(execution_id="e1", entry=entry), task_id=task_id)


def wave() -> Envelope:
    return _env(
        ev.WaveStatusEvent(
            execution_id="e1",
            wave_number=1,
            status="running",
            task_count=3,
            completed_count=0,
            failed_count=0,
        )
    )


def status(state: ev.ExecutionState = "running", key: str | None = None, **kw: Any) -> Envelope:
    return _env(ev.ExecutionStatusEvent(execution_id="e1", status=state), key=key, **kw)


def one_of_each() -> dict[str, Envelope]:
    return {
        "transcript": transcript(),
        "tools": tool_start(),
        "assertions": assertion(),
        "messagebus": message(),
        "waves": wave(),
        "execution": status(),
        "agents": _env(
            ev.AgentHeartbeatEvent(execution_id="e1", instance_id="i1", status="working")
        ),
        "skills": _env(
            ev.SkillStartEvent(
                execution_id="e1",
                skill_trace_id="s",
                skill_name="n",
                skill_file="f",
                line_number=1,
            )
        ),
        "spans": _env(ev.SpanStartEvent(execution_id="e1", span_id="sp", kind="llm", name="chat")),
        "alerts": _env(
            ev.WatchAlertEvent(execution_id="e1", alert_id="a", alert="lost", since="", message="m")
        ),
    }


def wanted(state: SubscriptionState, envs: dict[str, Envelope]) -> set[str]:
    return {name for name, env in envs.items() if state.matches(env)}


# --------------------------------------------------------------------------- topics


def test_new_subscriber_gets_everything() -> None:
    state = SubscriptionState()
    envs = one_of_each()
    assert state.everything
    assert wanted(state, envs) == set(envs)


def test_first_specific_subscribe_replaces_the_implicit_all() -> None:
    state = SubscriptionState()
    state.subscribe("tools")
    assert state.topics == {"tools"}
    assert wanted(state, one_of_each()) == {"tools"}


def test_later_subscribes_add_topics() -> None:
    state = SubscriptionState()
    state.subscribe("tools")
    state.subscribe("waves")
    assert wanted(state, one_of_each()) == {"tools", "waves"}


def test_subscribe_all_widens_again() -> None:
    state = SubscriptionState()
    state.subscribe("tools")
    state.subscribe("all")
    envs = one_of_each()
    assert wanted(state, envs) == set(envs)
    assert state.everything
    # "all" was explicit: a later specific subscribe adds to it, it does not narrow.
    state.subscribe("waves")
    assert wanted(state, envs) == set(envs)


def test_unsubscribe_removes_a_topic() -> None:
    state = SubscriptionState()
    state.subscribe("tools")
    state.subscribe("assertions")
    state.unsubscribe("tools")
    assert wanted(state, one_of_each()) == {"assertions"}
    state.unsubscribe("assertions")
    assert wanted(state, one_of_each()) == set()


def test_unsubscribe_the_implicit_all_stops_everything() -> None:
    state = SubscriptionState()
    state.unsubscribe("all")
    assert not state.everything
    assert wanted(state, one_of_each()) == set()
    # The implicit all is gone, so a specific subscribe now only adds.
    state.subscribe("waves")
    assert wanted(state, one_of_each()) == {"waves"}


def test_every_topic_maps_its_event_types() -> None:
    envs = one_of_each()
    for topic in sorted(TOPICS - {"all"}):
        state = SubscriptionState()
        state.subscribe(topic)
        assert wanted(state, envs) == {topic}


# --------------------------------------------------------------------------- filters


def test_task_id_filter() -> None:
    state = SubscriptionState()
    state.subscribe("all", ev.FilterUpdate({"task_id": "task-1"}))
    assert not state.everything
    assert state.matches(transcript(task_id="task-1"))
    assert not state.matches(transcript(task_id="task-2"))
    assert state.matches(assertion(task_id="task-1"))
    assert not state.matches(assertion(task_id="task-2"))
    assert not state.matches(message(task_id="task-2"))
    assert not state.matches(tool_start(task_id="task-2"))
    # Events that belong to no task are not "of another task".
    assert state.matches(transcript(task_id=None))
    assert state.matches(wave())


def test_task_id_filter_uses_the_task_resolved_for_tool_end_and_output() -> None:
    state = SubscriptionState()
    state.subscribe("tools", ev.FilterUpdate({"task_id": "task-1"}))
    assert state.matches(tool_end(task_id="task-1"))
    assert not state.matches(tool_end(task_id="task-2"))
    assert state.matches(tool_output(task_id="task-1"))
    assert not state.matches(tool_output(task_id="task-2"))


def test_tools_filter_drops_start_end_and_output_of_other_tools() -> None:
    state = SubscriptionState()
    state.subscribe("tools", ev.FilterUpdate({"tools": frozenset({"Read"})}))
    for make in (tool_start, tool_end, tool_output):
        assert state.matches(make("Read"))
        assert not state.matches(make("Bash"))
    # An end/output whose start is unknown names no tool: it is not a listed tool.
    assert not state.matches(tool_end(None))


def test_entry_types_filter() -> None:
    state = SubscriptionState()
    state.subscribe("all", ev.FilterUpdate({"entry_types": frozenset({"tool_use"})}))
    assert state.matches(transcript("tool_use"))
    assert not state.matches(transcript("phase_start"))
    assert state.matches(wave())  # other event kinds are not filtered by entry type


def test_categories_filter() -> None:
    state = SubscriptionState()
    state.subscribe("assertions", ev.FilterUpdate({"categories": frozenset({"lint"})}))
    assert state.matches(assertion("lint"))
    assert not state.matches(assertion("tests_pass"))


def test_severity_filter() -> None:
    state = SubscriptionState()
    state.subscribe("messagebus", ev.FilterUpdate({"severity": frozenset({"error", "critical"})}))
    assert state.matches(message("error"))
    assert state.matches(message("critical"))
    assert not state.matches(message("info"))
    assert not state.matches(message("warning"))


def test_filters_merge_and_null_clears() -> None:
    state = SubscriptionState()
    state.subscribe("all", ev.FilterUpdate({"severity": frozenset({"error"})}))
    state.subscribe("all", ev.FilterUpdate({"task_id": "task-1"}))
    assert state.filters == ev.Filters(severity=frozenset({"error"}), task_id="task-1")
    state.subscribe("all", ev.FilterUpdate({"severity": None, "task_id": None}))
    assert state.filters.empty
    assert state.everything


# --------------------------------------------------------------------------- replay buffers


def _status_env(key: str, seq: int, state: ev.ExecutionState = "running", **kw: Any) -> Envelope:
    event = ev.ExecutionStatusEvent(execution_id=key, status=state, seq=seq)
    return Envelope.of(key, event, **kw)


def _fill(buffers: StreamLogs, key: str, seqs: range, now: float = 0.0) -> None:
    for seq in seqs:
        buffers.append(_status_env(key, seq), now)


def test_buffer_depth_cap_keeps_the_newest() -> None:
    buffers = ReplayBuffers(depth=3)
    _fill(buffers, "e1", range(1, 6))
    assert [env.seq for env in buffers.newest("e1")] == [3, 4, 5]
    assert buffers.newest("unknown") == []


def test_buffer_depth_zero_keeps_nothing() -> None:
    buffers = ReplayBuffers(depth=0)
    _fill(buffers, "e1", range(1, 4))
    assert "e1" not in buffers
    assert buffers.range("e1", 0, 3) is None


def test_buffer_range_hit_and_miss() -> None:
    buffers = ReplayBuffers(depth=5)
    _fill(buffers, "e1", range(1, 9))  # keeps 4..8
    assert [e.seq for e in buffers.range("e1", 3, 8) or []] == [4, 5, 6, 7, 8]
    assert [e.seq for e in buffers.range("e1", 5, 7) or []] == [6, 7]
    assert buffers.range("e1", 6, 6) == []
    assert buffers.range("e1", 2, 8) is None  # seq 3 was dropped
    assert buffers.range("e1", 3, 9) is None  # seq 9 is not there yet
    assert buffers.range("other", 0, 1) is None


def test_buffer_max_keys_drops_the_least_recently_written() -> None:
    buffers = ReplayBuffers(depth=10, max_keys=2)
    _fill(buffers, "a", range(1, 3))
    _fill(buffers, "b", range(1, 3))
    _fill(buffers, "a", range(3, 4))  # a is now the most recently written
    _fill(buffers, "c", range(1, 2))
    assert set(buffers.keys()) == {"a", "c"}
    assert len(buffers) == 2


def test_buffer_clear() -> None:
    buffers = ReplayBuffers()
    _fill(buffers, "e1", range(1, 3))
    buffers.clear("e1")
    assert buffers.newest("e1") == []
    buffers.clear("never-seen")


@pytest.mark.parametrize("ending", ["completed", "failed"])
def test_expire_frees_ended_executions_after_grace(ending: ev.ExecutionState) -> None:
    buffers = ReplayBuffers(grace=5.0)
    _fill(buffers, "e1", range(1, 3), now=1.0)
    _fill(buffers, "live", range(1, 3), now=1.0)
    buffers.append(_status_env("e1", 3, ending), 10.0)
    assert buffers.expire(14.9) == []
    assert "e1" in buffers
    assert buffers.expire(15.0) == ["e1"]
    assert "e1" not in buffers
    assert "live" in buffers
    assert buffers.expire(1000.0) == []


def test_a_later_running_status_cancels_expiry() -> None:
    buffers = ReplayBuffers(grace=5.0)
    buffers.append(_status_env("e1", 1, "completed"), 10.0)
    buffers.append(_status_env("e1", 2, "running"), 11.0)
    assert buffers.expire(1000.0) == []
    assert "e1" in buffers


def test_the_global_copy_of_an_ending_status_does_not_expire_global() -> None:
    buffers = ReplayBuffers(grace=5.0)
    buffers.append(_status_env(GLOBAL, 1, "completed", is_copy=True), 0.0)
    assert buffers.expire(1000.0) == []
    assert GLOBAL in buffers


def test_replay_buffers_refuse_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        ReplayBuffers(max_keys=0)
    with pytest.raises(ValueError, match="depth"):
        ReplayBuffers(depth=-1)
