"""``trio-obs demo --otel``: the simulated run through the OpenTelemetry SDK gives the view
that posting its events gives (SPEC §11, §7)."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import httpx

from support import TIMEOUT, running_server
from trio_obs.cli import build_parser
from trio_obs.client.post import HttpPublisher
from trio_obs.demo.cli import _demo
from trio_obs.demo.otel import span_publisher
from trio_obs.demo.play import simulate
from trio_obs.producers import Services

FAST = 1000.0


async def events_of(http: httpx.AsyncClient, execution: str) -> list[dict[str, Any]]:
    response = await http.get(f"/api/executions/{execution}/events", params={"limit": 10000})
    assert response.status_code == 200
    events: list[dict[str, Any]] = response.json()
    return events


def tool_calls(events: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    """Each tool call: its tool, input and how it ended (OTLP's tool use id is its span's)."""
    ends = {e["toolUseId"]: e["resultStatus"] for e in events if e["type"] == "tool:end"}
    return Counter(
        (e["tool"], e["inputSummary"], ends.get(e["toolUseId"], "open"))
        for e in events
        if e["type"] == "tool:start"
    )


async def test_both_paths_give_the_same_tool_calls_and_outcome() -> None:
    posted, traced = "a" * 32, "b" * 32
    async with running_server() as srv:
        url = srv.url()
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
            publisher = HttpPublisher(url, client=client)
            await simulate(
                Services.over(publisher), execution_id=posted, speed=FAST, rng=random.Random(5)
            )
        async with span_publisher(url, None) as spans:
            await simulate(
                Services.over(spans), execution_id=traced, speed=FAST, rng=random.Random(5)
            )
        plan = await events_of(srv.http, posted)
        otel = await events_of(srv.http, traced)
    calls = tool_calls(otel)
    # A span's status is OK or ERROR: a call the plan says was blocked is an error in OTLP.
    blocked_as_error = Counter(
        {(*call[:2], "error" if call[2] == "blocked" else call[2]): n
         for call, n in tool_calls(plan).items()}
    )  # fmt: skip
    assert calls == blocked_as_error
    assert sum(calls.values()) == sum(e["type"] == "tool:start" for e in plan)
    assert sum(e["type"] == "tool:end" for e in otel) == sum(calls.values())
    statuses = [e["status"] for e in otel if e["type"] == "execution:status"]
    final = [e["status"] for e in plan if e["type"] == "execution:status"][-1]
    assert statuses == ["started", final]
    kinds = Counter(e["kind"] for e in otel if e["type"] == "span:start")
    assert kinds["llm"] > 0 and kinds["agent"] > 0  # the agents' model calls, their tasks
    errors = [e for e in otel if e["type"] == "messagebus:event"]
    assert errors and all(e["entry"]["severity"] == "error" for e in errors)
    assert not [t for t in threading.enumerate() if t.name == "trio-obs-live-spans"]


async def test_trio_obs_demo_otel_streams_a_run_into_a_server() -> None:
    async with running_server() as srv:
        args = build_parser().parse_args(
            ["demo", "--otel", "--url", srv.url(), "--speed", str(FAST), "--seed", "11"]
        )
        assert await _demo(args) == 0
        [summary] = (await srv.http.get("/api/executions")).json()
        assert len(summary["executionId"]) == 32  # the trace id
        assert summary["lastStatus"] in ("completed", "failed")
        events = await events_of(srv.http, summary["executionId"])
    assert {"tool:start", "tool:end", "span:start", "span:end", "execution:status"} <= {
        e["type"] for e in events
    }


async def test_demo_otel_with_a_wrong_token_says_why() -> None:
    async with running_server(token="right") as srv:
        args = build_parser().parse_args(
            ["demo", "--otel", "--url", srv.url(), "--token", "wrong", "--speed", str(FAST)]
        )
        assert await _demo(args) == 1
        assert (await srv.http.get("/api/executions", params={"token": "right"})).json() == []


def test_demo_otel_help_says_what_becomes_what() -> None:
    parser = build_parser()
    assert parser.parse_args(["demo", "--otel"]).otel is True
    demo = parser._subparsers._group_actions[0].choices["demo"]  # type: ignore[union-attr]
    text = " ".join(demo.format_help().split())
    for word in (
        "--otel",
        "OpenTelemetry SDK",
        "invoke_agent",
        "execute_tool",
        "LiveSpanProcessor",
    ):
        assert word in text
