"""Real agent frameworks into a `trio-obs serve` (SPEC §12, issue 21): nothing of ours in them.

pydantic-ai with its own OpenTelemetry instrumentation (an orchestrator that asks a
research agent through a tool, and a slow tool), the openai SDK under
opentelemetry-instrumentation-openai-v2 and under OpenInference against a model server on
loopback, and the Logfire SDK with its own exporter (the path that sends pending spans).
Each run is a process of its own (``framework_runs.py``): instrumentation is global state.
Needs the ``frameworks`` extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from frameworks_support import USAGE, openai_server
from otel_support import stored
from support import TIMEOUT, ServerProcess, environment, serving

RUNS = Path(__file__).with_name("framework_runs.py")
STARTUP = TIMEOUT * 6
"""A safety net: importing a framework takes seconds on a loaded machine."""
OPENING = {"span:start", "tool:start"}
CLOSING = {"span:end", "tool:end"}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with serving("--db", ":memory:") as srv:
        yield srv


def run(scenario: str, *args: str, **env: str) -> str:
    """Run ``scenario`` of framework_runs.py to its end: the trace id it printed."""
    done = subprocess.run(
        [sys.executable, str(RUNS), scenario, *args],
        capture_output=True,
        text=True,
        timeout=STARTUP * 2,
        env=environment(**env),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


async def events_of(server: ServerProcess, execution: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.url(), timeout=TIMEOUT, trust_env=False) as c:
        return await stored(c, execution)


async def summary_of(server: ServerProcess, execution: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url(), timeout=TIMEOUT, trust_env=False) as c:
        listed = (await c.get("/api/executions")).json()
    [found] = [s for s in listed if s["executionId"] == execution]
    summary: dict[str, Any] = found
    return summary


def check_totals(summary: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """The run's totals are its model calls' and tools' (an agent's aggregate not added)."""
    ends = by_kind(events, "span:end", "llm")
    totals = summary["totals"]
    assert totals["modelCalls"] == len(ends)
    assert totals["inputTokens"] == sum(e["usage"]["inputTokens"] for e in ends)
    assert totals["outputTokens"] == sum(e["usage"]["outputTokens"] for e in ends)
    assert totals["toolCalls"] == sum(e["type"] == "tool:start" for e in events)
    assert totals["errors"] == 0


def one_run(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Check what every run must be; its spans' openings by span id."""
    statuses = [e for e in events if e["type"] == "execution:status"]
    assert [s["status"] for s in statuses] == ["started", "completed"], statuses
    assert events[0] is statuses[0]  # started before anything of it
    assert events[-1] is statuses[-1]  # completed after everything of it
    opened = Counter(e["spanId"] for e in events if e["type"] in OPENING)
    closed = Counter(e["spanId"] for e in events if e["type"] in CLOSING)
    assert set(opened.values()) == {1} and opened == closed  # one start and one end each
    seqs = {(e["type"] in CLOSING, e["spanId"]): e["seq"] for e in events if "spanId" in e}
    assert all(seqs[(False, s)] < seqs[(True, s)] for s in opened)
    root = statuses[-1]["spanId"]
    starts = {e["spanId"]: e for e in events if e["type"] in OPENING}
    assert all(s.get("parentSpanId") in starts or s.get("parentSpanId") == root
               for s in starts.values())  # fmt: skip
    return starts


def by_kind(events: list[dict[str, Any]], type_: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_ and e.get("kind") == kind]


# --------------------------------------------------------------------------- pydantic-ai


def ms_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000


def check_orchestrator(events: list[dict[str, Any]]) -> None:
    """The orchestrator → delegate_research → research_agent run, whoever exported it."""
    starts = one_run(events)
    root = events[-1]["spanId"]
    tools = {e["tool"]: e for e in events if e["type"] == "tool:start"}
    assert set(tools) == {"delegate_research", "slow_lookup"}
    for tool in tools.values():  # a tool call says whose it is and what it is in
        assert (tool["agent"], tool["parentSpanId"]) == ("orchestrator", root)
        assert tool["toolUseId"] == tool["spanId"]
    [research] = by_kind(events, "span:start", "agent")
    assert research["agent"] == "research_agent"
    assert research["parentSpanId"] == tools["delegate_research"]["spanId"]
    calls = by_kind(events, "span:start", "llm")
    assert Counter(c["agent"] for c in calls) == {"orchestrator": 3, "research_agent": 1}
    assert all(c["model"] in ("orchestrator-model", "research-model") for c in calls)
    for call in calls:
        assert starts[call["spanId"]]["parentSpanId"] in (root, research["spanId"])
    ends = by_kind(events, "span:end", "llm")
    assert all(e["usage"]["inputTokens"] > 0 and e["usage"]["outputTokens"] > 0 for e in ends)
    last = max(ends, key=lambda e: e["seq"])
    assert last["outputMessages"][0]["parts"][0]["type"] == "text"
    assert last["inputMessages"][0]["role"] in ("system", "user")
    assert any(p["type"] == "tool_call" for m in ends[0]["outputMessages"] for p in m["parts"])
    [slow] = [
        e
        for e in events
        if e["type"] == "tool:end" and e["spanId"] == tools["slow_lookup"]["spanId"]
    ]
    # Its duration is its span's, in ms (the stamps are to the ms): it lasted until what
    # ended before it was sent, and in a gated run until the test saw it running.
    lasted = ms_between(tools["slow_lookup"]["timestamp"], slow["timestamp"])
    assert slow["durationMs"] > 0 and abs(slow["durationMs"] - lasted) <= 1
    assert slow["outputSummary"] == "Paris: no rain"
    completed = events[-1]
    assert completed["output"] == "Take sunglasses: it is sunny in Paris."
    assert completed["agent"] == "orchestrator"
    assert completed["usage"]["inputTokens"] > 0  # the orchestrator's own aggregate
    [research_end] = by_kind(events, "span:end", "agent")
    assert research_end["output"] == "Paris: sunny, 21 C"
    assert "usage" not in research_end  # an aggregate: not counted again


async def test_pydantic_ai_with_the_batch_exporter(server: ServerProcess) -> None:
    # The exporter sends every 50 ms: the run reaches the server in several requests,
    # children first; the tool's sub-agent ends long before its orchestrator.
    execution = await trio.to_thread.run_sync(run, "pydantic-ai", server.url())
    events = await events_of(server, execution)
    check_orchestrator(events)
    summary = await summary_of(server, execution)
    assert summary["name"] == "orchestrator" and summary["state"] == "completed"
    assert summary["agents"] == ["orchestrator", "research_agent"]
    check_totals(summary, events)
    # The tree and the run's summary, from the same store.
    async with httpx.AsyncClient(base_url=server.url(), timeout=TIMEOUT, trust_env=False) as c:
        tree = (await c.get(f"/api/executions/{execution}/tree")).json()
        [summary] = (await c.get("/api/executions")).json()
    spans = {s["spanId"]: s for s in tree["spans"]}
    assert (tree["name"], tree["state"], summary["name"], summary["state"]) == (
        "orchestrator", "done", "orchestrator", "completed")  # fmt: skip
    assert not [s for s in tree["spans"] if s["placeholder"] or s["state"] == "running"]
    [research] = [s for s in tree["spans"][1:] if s["kind"] == "agent"]  # the root is one too
    assert spans[research["parentSpanId"]]["name"] == "delegate_research"
    assert spans[spans[research["parentSpanId"]]["parentSpanId"]]["spanId"] == tree["rootSpanId"]
    assert tree["totals"]["modelCalls"] == summary["totals"]["modelCalls"] == 4
    assert tree["totals"] == summary["totals"] and tree["totals"]["cost"] == "unknown"
    assert summary["agents"][0] == "orchestrator" and "research_agent" in summary["agents"]


def open_for_writing(fifo: Path) -> None:
    """Open ``fifo`` for writing and close it: once a reader has it open, both go on."""
    os.close(os.open(fifo, os.O_WRONLY))


async def gated_run(
    server: ServerProcess, scenario: str, tmp_path: Path
) -> tuple[str, list[dict[str, Any]]]:
    """Run ``scenario`` with its slow tool held until the tool's start has reached a
    WebSocket client, and check that the run shows as running meanwhile."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    execution = ""
    # (not support.ws_client: its safety net is for the whole block, and a framework's
    # imports alone take seconds on a loaded machine)
    async with open_websocket_url(server.ws_url("all")) as ws, trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: trio.to_thread.run_sync(
                lambda: run(scenario, server.url(), TRIO_OBS_TEST_GATE=str(gate))
            )
        )
        seen: list[dict[str, Any]] = []
        with trio.fail_after(STARTUP):
            while True:
                event = orjson.loads(await ws.get_message())
                seen.append(event)
                if event.get("type") == "tool:start" and event["tool"] == "slow_lookup":
                    execution = event["executionId"]
                    break
        mine = [e for e in seen if e.get("executionId") == execution]
        assert mine[0]["type"] == "execution:status" and mine[0]["status"] == "started"
        assert not [e for e in mine if e["type"] == "execution:status"][1:]  # still running
        assert not [e for e in mine if e["type"] == "tool:end" and e["spanId"] == event["spanId"]]
        with trio.fail_after(TIMEOUT):  # the tool opens it for reading: a moment
            await trio.to_thread.run_sync(open_for_writing, gate, abandon_on_cancel=True)
    return execution, await events_of(server, execution)


async def test_pydantic_ai_with_the_live_processor_shows_a_tool_while_it_runs(
    server: ServerProcess, tmp_path: Path
) -> None:
    _, events = await gated_run(server, "pydantic-ai-live", tmp_path)
    check_orchestrator(events)


async def test_logfires_own_exporter_and_its_pending_spans(
    server: ServerProcess, tmp_path: Path
) -> None:
    # Logfire sends a pending span at each start: one start each, live, and the run is
    # running until the orchestrator ends.
    _, events = await gated_run(server, "logfire", tmp_path)
    check_orchestrator(events)
    titles = {e["name"] for e in by_kind(events, "span:start", "agent")}
    assert titles == {"research_agent run"}  # logfire.msg is the title


# --------------------------------------------------------------------------- the openai SDK


@pytest.mark.parametrize("dialect", ["openai-v2", "openinference"])
async def test_the_openai_sdk_instrumented(server: ServerProcess, dialect: str) -> None:
    with openai_server() as model_url:
        execution = await trio.to_thread.run_sync(run, dialect, server.url(), model_url)
    events = await events_of(server, execution)
    one_run(events)  # no agent span: the job is one execution
    assert events[-1]["message"] == "weather job completed"
    summary = await summary_of(server, execution)
    assert summary["state"] == "completed"
    check_totals(summary, events)
    calls = by_kind(events, "span:start", "llm")
    ends = by_kind(events, "span:end", "llm")
    assert len(calls) == len(ends) == 2
    assert all(c["model"].startswith("gpt-4o") for c in calls)
    for end in ends:
        assert end["usage"]["inputTokens"] == USAGE["prompt_tokens"]
        assert end["usage"]["outputTokens"] == USAGE["completion_tokens"]
        assert end["model"] == "gpt-4o-2025"  # the response's model
        assert end["inputMessages"][0] == {
            "role": "system", "parts": [{"type": "text", "content": "Be brief."}]
        }  # fmt: skip
    first, second = sorted(ends, key=lambda e: e["seq"])
    [call] = first["outputMessages"][0]["parts"]
    assert (call["type"], call["name"], call["arguments"]) == (
        "tool_call", "get_weather", {"city": "Paris"},
    )  # fmt: skip
    assert second["output"] == "It is sunny in Paris."
    assert any(
        p["type"] == "tool_call_response" for m in second["inputMessages"] for p in m["parts"]
    )
