"""The watchdog in a real server (SPEC §13): alerts stored, numbered and withdrawn live.

Short thresholds (about a second); every test waits for the condition it checks.
"""

from __future__ import annotations

import argparse
import io
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

import trio_obs
from redis_support import RedisServer, needs_redis
from support import TIMEOUT, Server, command, heartbeat, parse_metrics, running_server
from trio_obs.cli import watch_seconds
from trio_obs.client.running import run_running
from trio_obs.core.facts import span_id_of
from trio_obs.core.watchdog import Thresholds
from trio_obs.core.wire import decode_stream_event
from trio_obs.producers import open_redis_observability

pytestmark = pytest.mark.usefixtures("no_server_errors")

QUICK = Thresholds(lost_after=1.0, slow_after=1.0, idle_after=1.0)
NO_IDLE = Thresholds(lost_after=1.0, slow_after=1.0, idle_after=3600.0)
NEVER = Thresholds(lost_after=3600.0, slow_after=3600.0, idle_after=3600.0)


def status(e: str, state: str = "running") -> dict[str, Any]:
    return {"type": "execution:status", "executionId": e, "status": state}


def tool_start(e: str, tu: str, tool: str = "grep") -> dict[str, Any]:
    return {"type": "tool:start", "executionId": e, "toolUseId": tu, "tool": tool,
            "inputSummary": "x"}  # fmt: skip


def tool_end(e: str, tu: str) -> dict[str, Any]:
    return {"type": "tool:end", "executionId": e, "toolUseId": tu, "resultStatus": "done",
            "durationMs": 5}  # fmt: skip


async def post(http: httpx.AsyncClient, *events: dict[str, Any]) -> None:
    response = await http.post(
        "/api/events",
        content=orjson.dumps(list(events)),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 202, response.text


async def events_of(http: httpx.AsyncClient, e: str) -> list[dict[str, Any]]:
    response = await http.get(f"/api/executions/{e}/events")
    assert response.status_code == 200
    found: list[dict[str, Any]] = response.json()
    return found


async def wait_for(
    http: httpx.AsyncClient, e: str, check: Callable[[list[dict[str, Any]]], bool], what: str
) -> list[dict[str, Any]]:
    """The stored events of ``e`` once ``check`` holds for them (fails after TIMEOUT)."""
    with trio.fail_after(TIMEOUT):
        while not check(found := await events_of(http, e)):  # noqa: ASYNC110 - polls the store
            await trio.sleep(0.05)
    assert check(found), what
    return found


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Once ``check()`` holds (fails after TIMEOUT)."""
    with trio.fail_after(TIMEOUT):
        while not await check():  # noqa: ASYNC110 - polls what a client sees
            await trio.sleep(0.05)


def of(kind: str, found: list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
    return [x for x in found if x["type"] == kind and all(x.get(k) == v for k, v in fields.items())]


async def test_heartbeats_stop_lost_and_spans_close_lost_then_resume_clears() -> None:
    async with running_server(watch=NO_IDLE) as srv:
        await post(srv.http, status("e1"), heartbeat("e1"), tool_start("e1", "tu1"))
        found = await wait_for(
            srv.http, "e1", lambda f: bool(of("watch:alert", f, alert="lost")), "lost"
        )
        (alert,) = of("watch:alert", found, alert="lost")
        assert alert["instanceId"] == "agent-1" and alert["inferred"] is True
        assert alert["seq"] > 0 and alert["since"].endswith("Z")
        (closing,) = of("span:end", found, state="lost")
        assert closing["spanId"] == "tu1" and closing["details"]["alertId"] == alert["alertId"]

        async def state(wanted: str) -> None:
            async def now() -> bool:
                (run,) = (await srv.http.get("/api/executions")).json()
                return bool(run["state"] == wanted)

            await until(now)

        await state("lost")  # the run's state follows
        await post(srv.http, heartbeat("e1"))
        found = await wait_for(
            srv.http, "e1", lambda f: bool(of("watch:clear", f, alertId=alert["alertId"])), "clear"
        )
        await state("running")  # and a clear restores it
        # the tool runs on, live again: it ends for real and is stored
        await post(srv.http, tool_end("e1", "tu1"))
        found = await wait_for(srv.http, "e1", lambda f: bool(of("tool:end", f)), "the end")
        assert len(of("watch:alert", found, alert="lost")) == 1


async def test_a_slow_tool_one_alert_then_its_end_clears() -> None:
    async with running_server(watch=Thresholds(3600, 1.0, 3600)) as srv:
        await post(srv.http, status("e1"), tool_start("e1", "tu1", "build"))
        found = await wait_for(srv.http, "e1", lambda f: bool(of("watch:alert", f)), "slow")
        (alert,) = of("watch:alert", found)
        assert alert["alert"] == "slow" and alert["toolUseId"] == "tu1"
        metrics = (await srv.http.get("/metrics")).text
        assert parse_metrics(metrics)[1]["trio_obs_spans{state=slow}"] == 1
        running = (await srv.http.get("/api/running")).json()
        (span,) = running["spans"]
        assert span["name"] == "build" and span["alert"] == "slow" and span["ageMs"] >= 1000
        await post(srv.http, tool_end("e1", "tu1"))
        found = await wait_for(srv.http, "e1", lambda f: bool(of("watch:clear", f)), "clear")
        assert len(of("watch:alert", found)) == 1
        assert of("watch:clear", found)[0]["alertId"] == alert["alertId"]
        assert (
            parse_metrics((await srv.http.get("/metrics")).text)[1]["trio_obs_spans{state=open}"]
            == 0
        )


async def test_idle_then_the_next_event_clears() -> None:
    async with running_server(watch=Thresholds(3600, 3600, 1.0)) as srv:
        await post(srv.http, status("e1"))
        found = await wait_for(srv.http, "e1", lambda f: bool(of("watch:alert", f)), "idle")
        assert of("watch:alert", found)[0]["alert"] == "idle"
        await post(srv.http, heartbeat("e1", instanceId="late"))
        await wait_for(srv.http, "e1", lambda f: bool(of("watch:clear", f)), "clear")


async def test_nothing_for_an_ended_run() -> None:
    async with running_server(watch=QUICK) as srv:
        await post(srv.http, status("done"), heartbeat("done"), tool_start("done", "t"))
        await post(srv.http, tool_end("done", "t"), status("done", "completed"))
        await post(srv.http, status("witness"), heartbeat("witness"))
        # once the witness (posted after) is judged lost, the ended run had its chance
        await wait_for(srv.http, "witness", lambda f: bool(of("watch:alert", f, alert="lost")), "")
        assert not of("watch:alert", await events_of(srv.http, "done"))


async def test_a_restart_judges_nothing_twice(tmp_path: Path) -> None:
    db = str(tmp_path / "obs.db")
    async with running_server(db, watch=NO_IDLE) as srv:
        await post(srv.http, status("e1"), heartbeat("e1"), tool_start("e1", "tu1"))
        await wait_for(srv.http, "e1", lambda f: len(of("watch:alert", f)) >= 1, "lost")
    async with running_server(db, watch=NO_IDLE) as srv:
        await post(srv.http, status("w"), heartbeat("w"))
        await wait_for(srv.http, "w", lambda f: bool(of("watch:alert", f)), "the witness")
        found = await events_of(srv.http, "e1")
        assert len(of("watch:alert", found, alert="lost")) == 1
        assert len(of("span:end", found, state="lost")) == 1
        # the slow alert of tu1 was not judged either: it was lost first
        assert not of("watch:alert", found, alert="slow")


@needs_redis
async def test_two_nodes_on_one_redis_judge_once(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    try:
        async with AsyncExitStack() as stack:
            nursery = await stack.enter_async_context(trio.open_nursery())
            servers: list[Server] = []
            for _ in range(2):
                obs = await stack.enter_async_context(
                    open_redis_observability(redis.url, prefix="wd:")
                )
                config = trio_obs.ServerConfig(port=0, watch=NO_IDLE)
                port = await nursery.start(trio_obs.serve, obs, config)
                http = await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=TIMEOUT
                    )
                )
                servers.append(Server(obs, port, http))
            a, b = servers
            await post(a.http, status("e1"), heartbeat("e1"), tool_start("e1", "tu1"))
            await wait_for(b.http, "e1", lambda f: bool(of("watch:alert", f)), "lost")
            await post(b.http, heartbeat("e1"))
            found = await wait_for(a.http, "e1", lambda f: bool(of("watch:clear", f)), "clear")
            await post(a.http, status("w"), heartbeat("w"))
            await wait_for(b.http, "w", lambda f: bool(of("watch:alert", f)), "the witness")
            found = await events_of(a.http, "e1")
            assert len(of("watch:alert", found, alert="lost")) == 1
            assert len(of("watch:alert", found, alert="slow")) <= 1  # tu1, live again, is slow
            lost_id = of("watch:alert", found, alert="lost")[0]["alertId"]
            assert len(of("watch:clear", found, alertId=lost_id)) == 1
            assert len(of("span:end", found, state="lost")) == 1
            nursery.cancel_scope.cancel()
    finally:
        redis.stop()


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]], trio.Event]]:
    """A tiny loopback HTTP server that keeps each POSTed JSON body (answers 500 once)."""
    bodies: list[dict[str, Any]] = []
    got = trio.Event()
    failed_once = False

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal failed_once
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some()
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += await stream.receive_some()
        if not failed_once:  # the first try fails: the sender retries
            failed_once = True
            await stream.send_all(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n")
            return
        bodies.append(orjson.loads(body))
        got.set()
        await stream.send_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}/hook", bodies, got
        nursery.cancel_scope.cancel()


async def test_the_webhook_receives_each_alert_and_clear() -> None:
    async with (
        receiver() as (url, bodies, got),
        running_server(watch=Thresholds(3600, 1.0, 3600), alert_webhook=url) as srv,
    ):
        await post(srv.http, status("e1"), tool_start("e1", "tu1"))
        with trio.fail_after(TIMEOUT):
            await got.wait()
        await post(srv.http, tool_end("e1", "tu1"))

        async def both() -> bool:
            return len(bodies) == 2

        await until(both)
    alert, clear = bodies
    assert alert["type"] == "watch:alert" and alert["alert"] == "slow" and alert["seq"] > 0
    assert clear["type"] == "watch:clear" and clear["alertId"] == alert["alertId"]


async def test_tail_running_lists_open_spans_with_their_age() -> None:
    async with running_server(watch=NEVER) as srv:
        await post(srv.http, status("e1"), tool_start("e1", "tu1", "compile"))
        args = argparse.Namespace(url=srv.url(), token=None, json=False)
        with trio.fail_after(TIMEOUT):
            while True:
                out, err = io.StringIO(), io.StringIO()
                assert await run_running(args, out, err, rounds=1) == 0, err.getvalue()
                if "compile" in out.getvalue():
                    break
                await trio.sleep(0.05)
        assert "tool" in out.getvalue() and "age" in out.getvalue()
        out = io.StringIO()
        args.json = True
        assert await run_running(args, out, io.StringIO(), rounds=1) == 0
        (line,) = out.getvalue().splitlines()
        span = orjson.loads(line)
        assert span["executionId"] == "e1" and span["toolUseId"] == "tu1" and span["ageMs"] >= 0
        await post(srv.http, tool_end("e1", "tu1"))

        async def none_open() -> bool:
            return not (await srv.http.get("/api/running")).json()["spans"]

        await until(none_open)
        out = io.StringIO()
        args.json = False
        assert await run_running(args, out, io.StringIO(), rounds=1) == 0
        assert "no open spans" in out.getvalue()


async def test_metrics_count_open_spans() -> None:
    async with running_server(watch=NEVER) as srv:
        await post(srv.http, status("e1"), tool_start("e1", "a"), tool_start("e1", "b"))
        values: dict[str, float] = {}

        async def two_open() -> bool:
            values.update(parse_metrics((await srv.http.get("/metrics")).text)[1])
            return values.get("trio_obs_spans{state=open}") == 2

        await until(two_open)
        assert values["trio_obs_spans{state=lost}"] == 0


async def test_a_live_processor_sends_keepalives_and_is_lost_when_they_stop() -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import set_span_in_context

    from trio_obs.otel import LiveSpanProcessor

    async with running_server(watch=Thresholds(1.0, 3600, 3600)) as srv:
        live = LiveSpanProcessor(srv.url(), keepalive_interval=0.2)
        provider = TracerProvider(resource=Resource.create({"service.name": "weather"}))
        provider.add_span_processor(live)
        tracer = provider.get_tracer("t")
        agent = tracer.start_span("invoke_agent weather")  # the root: the execution
        span = tracer.start_span(
            "execute_tool get_weather",
            context=set_span_in_context(agent),
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.call.id": "call_1",
            },
        )
        trace = format(span.get_span_context().trace_id, "032x")
        found = await wait_for(
            srv.http, trace, lambda f: len(of("agent:heartbeat", f)) >= 2, "keep-alives"
        )
        beat = of("agent:heartbeat", found)[0]
        assert beat["instanceId"] == f"otel:weather:{live.producer_id}"
        assert beat["metrics"] == {"intervalSeconds": 0.2}
        # the process "dies": its keep-alives stop, its span never ends
        await trio.to_thread.run_sync(live.shutdown)
        found = await wait_for(
            srv.http, trace, lambda f: bool(of("watch:alert", f, alert="lost")), "lost"
        )
        (alert,) = of("watch:alert", found)
        assert alert["instanceId"] == beat["instanceId"]
        (start,) = of("tool:start", found)
        (closing,) = of("span:end", found, state="lost")
        assert closing["spanId"] == span_id_of(decode_stream_event(orjson.dumps(start)))
        assert live.keepalives >= 2


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--lost-after", "soon", "must be a positive number of seconds"),
        ("--slow-after", "-1", "must be a positive number of seconds"),
        ("--alert-webhook", "hooks.example", "must be an http:// or https:// URL"),
    ],
)
def test_bad_watchdog_flags_are_one_line_errors(flag: str, value: str, says: str) -> None:
    done = subprocess.run(
        command("serve", "--db", ":memory:", flag, value),
        capture_output=True,
        text=True,
        timeout=6 * TIMEOUT,  # a safety net: a cold start on a loaded machine is slow
        check=False,
    )
    assert done.returncode == 2
    assert says in done.stderr and "Traceback" not in done.stderr


def test_flags_in_short_forms() -> None:
    assert watch_seconds("45") == 45.0 and watch_seconds("2.5") == 2.5
    assert watch_seconds("10m") == 600.0 and watch_seconds("1h") == 3600.0


async def test_settled_returns_once_what_was_handed_over_is_dispatched(
    obs: trio_obs.Observability,
) -> None:
    from trio_obs.core import events as ev

    sub, _ = await obs.hub.open_subscription("all")
    beat = ev.AgentHeartbeatEvent(execution_id="e1", instance_id="a", status="working")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(obs.hub.publish, [beat])
        await trio.lowlevel.checkpoint()  # the publish is handed over, not yet stored
        await obs.hub.settled()
        assert sub.queue_depth == 1  # stored and dispatched: there to be taken
