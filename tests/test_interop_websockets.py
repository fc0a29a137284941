"""Interop: the Python ``websockets`` library (asyncio) against ``trio-obs serve``.

A client we did not write, on another event loop, in another process than the
server, walks through the SPEC §3 flow.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from support import TIMEOUT, ServerProcess, heartbeats


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess("--db", ":memory:")
    yield srv
    status = srv.stop(signal.SIGINT)
    assert status == 0
    assert "Traceback" not in "".join(srv.stderr)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run an asyncio scenario to its end, within the time limit."""

    async def bounded() -> None:
        await asyncio.wait_for(scenario(), TIMEOUT)

    asyncio.run(bounded())


async def recv(ws: ClientConnection) -> dict[str, Any]:
    message = await ws.recv()
    assert isinstance(message, str)
    frame: dict[str, Any] = json.loads(message)
    return frame


async def request(ws: ClientConnection, message: object) -> dict[str, Any]:
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    return await recv(ws)


async def post(srv: ServerProcess, body: object) -> list[int]:
    async with httpx.AsyncClient(base_url=srv.url(), trust_env=False) as http:
        response = await http.post("/api/events", json=body)
    assert response.status_code == 202, response.text
    seqs: list[int] = response.json()["seqs"]
    return seqs


def tool_start(e: str, tool: str = "Read") -> dict[str, Any]:
    return {"type": "tool:start", "executionId": e, "toolUseId": f"use-{tool}", "tool": tool,
            "inputSummary": "x"}  # fmt: skip


def ws_connect(url: str) -> Any:
    return connect(url, proxy=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT)


# --------------------------------------------------------------------------- the flow


def test_connected_is_the_first_frame(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with ws_connect(server.ws_url("interop-1")) as ws:
            connected = await recv(ws)
            assert connected["type"] == "observability:connected"
            assert connected["executionId"] == "interop-1"
            assert connected["message"] == "Connected to execution interop-1"
            assert connected["bufferedEventCount"] == 0
        async with ws_connect(server.ws_url("all")) as ws:
            connected = await recv(ws)
            assert connected["message"] == "Connected to all observability events"
            assert connected["bufferedEventCount"] == 0

    run(scenario)


def test_replay_then_live(server: ServerProcess) -> None:
    async def scenario() -> None:
        assert await post(server, heartbeats("interop-replay", 5)) == [1, 2, 3, 4, 5]
        async with ws_connect(server.ws_url("interop-replay")) as ws:
            assert (await recv(ws))["bufferedEventCount"] == 5
            replay = [await recv(ws) for _ in range(5)]
            assert [f["seq"] for f in replay] == [1, 2, 3, 4, 5]
            assert [f["instanceId"] for f in replay] == [f"i{i}" for i in range(5)]
            await post(server, heartbeats("interop-replay", 1))
            live = await recv(ws)
            assert (live["type"], live["seq"]) == ("agent:heartbeat", 6)

    run(scenario)


def test_since_resumes_after_a_seq(server: ServerProcess) -> None:
    async def scenario() -> None:
        await post(server, heartbeats("interop-since", 10))
        async with ws_connect(server.ws_url("interop-since", since=4)) as ws:
            assert (await recv(ws))["bufferedEventCount"] == 6
            assert [(await recv(ws))["seq"] for _ in range(6)] == [5, 6, 7, 8, 9, 10]
            await post(server, heartbeats("interop-since", 1))
            assert (await recv(ws))["seq"] == 11

    run(scenario)


def test_subscribe_and_unsubscribe_are_confirmed_and_applied(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with ws_connect(server.ws_url("interop-topics")) as ws:
            await recv(ws)
            subscribed = await request(ws, {"action": "subscribe", "topic": "tools"})
            assert subscribed["type"] == "observability:subscribed"
            assert subscribed["topic"] == "tools"
            assert subscribed["executionId"] == "interop-topics"
            await post(server, [*heartbeats("interop-topics", 2), tool_start("interop-topics")])
            assert (await recv(ws))["type"] == "tool:start"  # the heartbeats were dropped
            unsubscribed = await request(ws, {"action": "unsubscribe", "topic": "tools"})
            assert unsubscribed["type"] == "observability:unsubscribed"
            assert unsubscribed["topic"] == "tools"
            await post(server, tool_start("interop-topics", "Bash"))
            assert (await request(ws, {"type": "ping"}))["type"] == "pong"  # nothing came

    run(scenario)


def test_ping_pong_both_json_and_protocol_level(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with ws_connect(server.ws_url("interop-ping")) as ws:
            await recv(ws)
            pong = await request(ws, {"type": "ping"})
            assert pong["type"] == "pong"
            assert isinstance(pong["timestamp"], str)
            latency = await ws.ping()
            await latency  # the server answers WebSocket pings too

    run(scenario)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "INVALID_MESSAGE"),
        ("[]", "INVALID_MESSAGE"),
        ('{"action": "jump", "topic": "tools"}', "INVALID_MESSAGE"),
        ('{"type": "pang"}', "INVALID_MESSAGE"),
        ('{"action": "subscribe", "topic": "weather"}', "INVALID_TOPIC"),
        ('{"action": "subscribe", "topic": "tools", "filters": {"tools": 1}}', "INVALID_FILTER"),
    ],
)
def test_error_codes_and_the_connection_stays_open(
    server: ServerProcess, message: str, code: str
) -> None:
    async def scenario() -> None:
        async with ws_connect(server.ws_url("interop-errors")) as ws:
            await recv(ws)
            error = await request(ws, message)
            assert error["type"] == "observability:error"
            assert error["code"] == code
            assert error["error"]
            assert (await request(ws, {"type": "ping"}))["type"] == "pong"

    run(scenario)


@pytest.mark.parametrize(("payload", "code"), [(b"binary", 1003), ("x" * (64 * 1024 + 1), 1009)])
def test_binary_and_oversized_messages_close_the_connection(
    server: ServerProcess, payload: str | bytes, code: int
) -> None:
    async def scenario() -> None:
        async with ws_connect(server.ws_url("interop-close")) as ws:
            await recv(ws)
            await ws.send(payload)
            with pytest.raises(ConnectionClosedError) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == code

    run(scenario)


@pytest.mark.parametrize(
    ("path", "status"),
    [("/ws", 400), ("/ws?observability=", 400), ("/ws?observability=x&since=-1", 400),
     ("/wsx?observability=x", 404)],
)  # fmt: skip
def test_refused_handshakes(server: ServerProcess, path: str, status: int) -> None:
    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(f"ws://127.0.0.1:{server.port}{path}"):
                pass
        assert refused.value.response.status_code == status
        assert json.loads(refused.value.response.body or b"{}")["error"]

    run(scenario)


def test_routing_of_all_and_global(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with (
            ws_connect(server.ws_url("all")) as everyone,
            ws_connect(server.ws_url("global")) as glob,
            ws_connect(server.ws_url("interop-route")) as mine,
        ):
            for ws in (everyone, glob, mine):
                await recv(ws)
            await post(server, [
                tool_start("interop-other"),
                {"type": "execution:status", "executionId": "interop-route", "status": "completed"},
            ])  # fmt: skip
            frames = [await recv(everyone), await recv(everyone)]
            assert [(f["type"], f["executionId"]) for f in frames] == [
                ("tool:start", "interop-other"),
                ("execution:status", "interop-route"),
            ]
            mine_frame = await recv(mine)
            assert (mine_frame["type"], mine_frame["seq"]) == ("execution:status", 1)
            copy = await recv(glob)
            assert (copy["type"], copy["executionId"]) == ("execution:status", "interop-route")
            for ws in (everyone, glob, mine):  # nothing else, and no duplicate
                assert (await request(ws, {"type": "ping"}))["type"] == "pong"

    run(scenario)


def test_server_shutdown_closes_with_1001() -> None:
    srv = ServerProcess("--db", ":memory:")
    try:

        async def scenario() -> None:
            async with ws_connect(srv.ws_url("all")) as ws:
                await recv(ws)
                srv.process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosedOK) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1001

        run(scenario)
        assert srv.process.wait(TIMEOUT) == 0
        assert "Traceback" not in "".join(srv.stderr)
    finally:
        srv.process.kill()
