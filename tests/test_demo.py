"""The demo: a simulated execution that shows every kind of event (SPEC §7), played into
a real store and, over HTTP, into a real server (``trio-obs demo``)."""

from __future__ import annotations

import argparse
import os
import random
import signal
from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio

from support import TIMEOUT, free_port, to_wire
from trio_obs import GLOBAL, Hub, Observability, ServerConfig, Services, serve
from trio_obs.cli import build_parser
from trio_obs.core import events as ev
from trio_obs.core.intake import decode_events
from trio_obs.core.routing import Envelope
from trio_obs.demo.cli import _demo, run_demo_cli
from trio_obs.demo.play import run_in_process, simulate

FAST = 1000.0  # a ~45 s run takes a few tens of milliseconds of sleeping

PRODUCED = set(ev.STREAM_EVENT_TYPES) - {"watch:alert", "watch:clear"}
"""Every type a producer sends (the watchdog's judgements are the server's own)."""


@attrs.define
class Recording:
    """A publisher between the demo's services and a hub: what was sent (in wire form,
    as it was when sent) and what the hub stored."""

    hub: Hub
    sent: list[dict[str, Any]] = attrs.Factory(list)
    stored: list[ev.StreamEvent] = attrs.Factory(list)

    async def publish(
        self, events: Sequence[ev.StreamEvent], *, idempotency_key: str | None = None
    ) -> list[Envelope]:
        self.sent.extend(to_wire(e) for e in events)  # the hub takes over the objects
        stored = await self.hub.publish(events, idempotency_key=idempotency_key)
        self.stored.extend(env.event for env in stored if not env.is_copy)
        return stored


@attrs.define
class Collector:
    """A publisher that keeps the events and numbers them as a hub would (no store)."""

    events: list[ev.StreamEvent] = attrs.Factory(list)
    seqs: Counter[str] = attrs.Factory(Counter)

    async def publish(
        self, events: Sequence[ev.StreamEvent], *, idempotency_key: str | None = None
    ) -> list[Envelope]:
        out = []
        for event in events:
            key = event.execution_id or GLOBAL
            self.seqs[key] += 1
            out.append(Envelope.of(key, attrs.evolve(event, seq=self.seqs[key]), b""))
        self.events.extend(events)
        return out


async def play(obs: Observability, seed: int) -> tuple[str, Recording]:
    rec = Recording(obs.hub)
    execution_id = await simulate(Services.over(rec), speed=FAST, rng=random.Random(seed))
    return execution_id, rec


async def stored_events(obs: Observability, key: str) -> list[ev.StreamEvent]:
    return [env.event for env in await obs.store.read(key)]


# --------------------------------------------------------------------------- the simulation


async def test_a_run_shows_every_kind_of_event(obs: Observability) -> None:
    execution_id, rec = await play(obs, seed=7)
    assert execution_id.startswith("exec-")
    mine = [e for e in rec.stored if e.execution_id == execution_id]

    assert {e.type for e in rec.stored} == PRODUCED  # agent spans too
    # Each task is an agent span with a model call, and its tools run inside it.
    calls = [e for e in mine if isinstance(e, ev.SpanEndEvent) and e.usage]
    assert calls and all(e.model == "claude-sonnet-4-5" for e in calls)
    agents = {e.span_id: e for e in mine if isinstance(e, ev.SpanStartEvent) and e.kind == "agent"}
    tools = [e for e in mine if isinstance(e, ev.ToolStartEvent)]
    assert all(t.parent_span_id in agents for t in tools)
    assert all(t.agent == agents[t.parent_span_id].name for t in tools)
    # Failing and passing checks, with the pass rate the store derived.
    outcomes = Counter(e.assertion.result for e in mine if isinstance(e, ev.AssertionResultEvent))
    assert outcomes["fail"] >= 1
    assert outcomes["pass"] > outcomes["fail"]
    rates = [e.running_pass_rate for e in mine if isinstance(e, ev.AssertionResultEvent)]
    assert rates[-1] == pytest.approx(outcomes["pass"] / sum(outcomes.values()))
    assert {e.assertion.category for e in mine if isinstance(e, ev.AssertionResultEvent)} >= {
        "typescript_compiles",
        "tests_pass",
        "lint_clean",
    }
    # Streamed tool output, some of it on stderr.
    outputs = [e for e in mine if isinstance(e, ev.ToolOutputEvent)]
    assert any(e.is_stderr for e in outputs)
    assert any(not e.is_stderr for e in outputs)
    tools = Counter(e.tool for e in mine if isinstance(e, ev.ToolStartEvent))
    assert set(tools) == {"Read", "Edit", "Bash", "Grep", "Write"}
    results = {e.result_status for e in mine if isinstance(e, ev.ToolEndEvent)}
    assert results == {"done", "error", "blocked"}
    # Message-bus traffic: severities, some needing action, some with no execution.
    bus = [e for e in rec.stored if isinstance(e, ev.MessageBusEvent)]
    assert {e.entry.severity for e in bus} >= {"info", "warning", "error"}
    assert any(e.requires_action for e in bus)
    assert all(e.requires_action == (e.entry.severity in ("error", "critical")) for e in bus)
    assert any(e.execution_id == GLOBAL and e.entry.execution_id is None for e in bus)
    # Several agents at once, each with heartbeats and metrics.
    beats = [e for e in mine if isinstance(e, ev.AgentHeartbeatEvent)]
    assert len({e.instance_id for e in beats}) >= 2
    assert all(
        e.metrics is not None
        and set(e.metrics) == {"toolCalls", "assertions", "memoryMb", "cpuPercent"}
        for e in beats
    )
    assert {e.status for e in beats} >= {"working", "idle"}
    # Waves go pending -> running -> completed/failed.
    waves = [e for e in mine if isinstance(e, ev.WaveStatusEvent)]
    assert [e.status for e in waves if e.wave_number == 1][:2] == ["pending", "running"]
    assert [e.status for e in waves if e.wave_number == 1][-1] in ("completed", "failed")


async def test_the_execution_starts_first_and_ends_last(obs: Observability) -> None:
    execution_id, rec = await play(obs, seed=11)
    stream = await stored_events(obs, execution_id)
    assert [e.seq for e in stream] == list(range(1, len(stream) + 1))
    # (A message-bus event is sent with its execution in its entry; the ledger routes it.)
    owners = [e.get("executionId") or e.get("entry", {}).get("executionId") for e in rec.sent]
    assert len(stream) == owners.count(execution_id)
    first, last = stream[0], stream[-1]
    assert isinstance(first, ev.ExecutionStatusEvent) and first.status == "started"
    assert isinstance(last, ev.ExecutionStatusEvent) and last.status in ("completed", "failed")
    statuses = [e.status for e in stream if isinstance(e, ev.ExecutionStatusEvent)]
    assert statuses == ["started", "running", last.status]


async def test_every_tool_and_skill_that_starts_also_ends(obs: Observability) -> None:
    execution_id, _ = await play(obs, seed=3)
    stream = await stored_events(obs, execution_id)
    started = [e.tool_use_id for e in stream if isinstance(e, ev.ToolStartEvent)]
    ended = [e.tool_use_id for e in stream if isinstance(e, ev.ToolEndEvent)]
    assert len(started) == len(set(started)) and sorted(started) == sorted(ended)
    open_: set[str] = set()
    for e in stream:  # in seq order: output only between a use's start and end
        if isinstance(e, ev.ToolStartEvent):
            open_.add(e.tool_use_id)
        elif isinstance(e, ev.ToolOutputEvent):
            assert e.tool_use_id in open_
        elif isinstance(e, ev.ToolEndEvent):
            open_.remove(e.tool_use_id)
    traces: dict[str, list[str]] = {}
    for e in stream:
        if isinstance(e, ev.SkillStartEvent | ev.SkillEndEvent):
            traces.setdefault(e.skill_trace_id, []).append(e.type)
    assert traces and all(t == ["skill:start", "skill:end"] for t in traces.values())
    starts = [e for e in stream if isinstance(e, ev.SkillStartEvent)]
    assert all(e.skill_file.endswith(".md") and e.line_number > 0 for e in starts)


async def test_everything_it_sends_passes_the_servers_validation(obs: Observability) -> None:
    _, rec = await play(obs, seed=5)
    assert not any("seq" in e for e in rec.sent)
    # The demo leaves the derived fields to the server.
    assert not any(e.get("requiresAction") for e in rec.sent)
    decoded = decode_events(orjson.dumps(rec.sent))
    assert [to_wire(e) for e in decoded] == rec.sent


async def test_a_seed_repeats_the_plan() -> None:
    async def outline(seed: int) -> tuple[str, list[tuple[str, str, ev.AssertionOutcome]], str]:
        collector = Collector()
        execution_id = await simulate(Services.over(collector), speed=FAST, rng=random.Random(seed))
        events = collector.events
        checks = sorted(
            (e.task_id, e.assertion.category, e.assertion.result)
            for e in events
            if isinstance(e, ev.AssertionResultEvent)
        )
        last = events[-1]
        assert isinstance(last, ev.ExecutionStatusEvent)
        return execution_id, checks, last.status

    first = await outline(42)
    assert await outline(42) == first
    assert await outline(43) != first


async def test_run_in_process_plays_into_observability(obs: Observability) -> None:
    await run_in_process(obs, False, speed=FAST, seed=1)
    [summary] = await obs.store.executions()
    assert summary.execution_id.startswith("exec-")
    assert summary.last_status in ("completed", "failed")
    assert summary.event_count > 100


# --------------------------------------------------------------------------- over HTTP


def demo_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["demo", *argv])


async def test_trio_obs_demo_streams_into_a_server(
    obs: Observability, nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    port = await nursery.start(serve, obs, ServerConfig(port=0, token="s3cret"))
    url = f"http://127.0.0.1:{port}"
    args = demo_args("--url", url, "--token", "s3cret", "--speed", "1000", "--seed", "7")

    assert await _demo(args) == 0

    [summary] = await obs.store.executions()
    execution_id = summary.execution_id
    stream = await stored_events(obs, execution_id)
    assert len(stream) == summary.event_count > 100
    assert {e.type for e in stream} == PRODUCED
    assert isinstance(stream[0], ev.ExecutionStatusEvent) and stream[0].status == "started"
    assert isinstance(stream[-1], ev.ExecutionStatusEvent)
    assert stream[-1].status == summary.last_status in ("completed", "failed")
    assert any(isinstance(e, ev.MessageBusEvent) for e in await stored_events(obs, GLOBAL))
    # The tree shows each task's agent with its model call and tools, and the run's totals.
    async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
        got = await http.get(f"/api/executions/{execution_id}/tree",
                             headers={"authorization": "Bearer s3cret"})  # fmt: skip
    tree = got.json()
    kinds = Counter(s["kind"] for s in tree["spans"])
    assert kinds["agent"] == kinds["llm"] >= 1 and kinds["tool"] > kinds["agent"]
    assert tree["totals"]["modelCalls"] == kinds["llm"] and tree["totals"]["cost"] > 0
    assert tree["state"] == ("done" if summary.last_status == "completed" else "error")
    err = capsys.readouterr().err
    assert f"streaming execution {execution_id} into {url}" in err
    assert f"watch: {url}/ or `trio-obs tail {execution_id}`" in err
    assert f"execution {execution_id} {summary.last_status} (" in err


async def test_a_wrong_token_is_a_clear_error(
    obs: Observability, nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    port = await nursery.start(serve, obs, ServerConfig(port=0, token="s3cret"))
    args = demo_args("--url", f"http://127.0.0.1:{port}", "--token", "nope", "--speed", "1000")

    assert await _demo(args) == 1

    err = capsys.readouterr().err
    assert "refused the events: HTTP 401" in err
    assert "missing or wrong token" in err and "--token" in err
    assert "Traceback" not in err
    assert await obs.store.executions() == []


async def test_ctrl_c_marks_the_execution_failed_and_exits_130(
    obs: Observability, nursery: trio.Nursery
) -> None:
    port = await nursery.start(serve, obs, ServerConfig(port=0))
    args = demo_args("--url", f"http://127.0.0.1:{port}", "--speed", "1")
    status: list[int] = []
    done = trio.Event()

    async def run_demo() -> None:
        status.append(await _demo(args))
        done.set()

    with obs.broker.subscribe("all") as sub:
        nursery.start_soon(run_demo)
        with trio.fail_after(TIMEOUT):  # a hang guard
            async for env in sub:
                execution_id = env.event.execution_id
                if execution_id != GLOBAL:
                    break
    os.kill(os.getpid(), signal.SIGINT)  # the demo's own handler is installed by now
    with trio.fail_after(TIMEOUT):
        await done.wait()

    assert status == [130]
    last = (await stored_events(obs, execution_id))[-1]
    assert isinstance(last, ev.ExecutionStatusEvent)
    assert last.status == "failed" and "interrupted" in (last.message or "")


def test_an_unreachable_server_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # a port that nobody listens on

    assert run_demo_cli(demo_args("--url", url)) == 1

    err = capsys.readouterr().err
    assert f"cannot reach the server at {url}" in err
    assert "is `trio-obs serve` running?" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--speed", "0"], "--speed must be positive"),
        (["--url", "localhost:3001"], "--url must start with http:// or https://"),
    ],
)
def test_bad_flags_are_refused(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_demo_cli(demo_args(*argv)) == 2
    assert complaint in capsys.readouterr().err
