"""The WebSocket protocol of SPEC §3-§4, end to end over real loopback sockets.

Ports the plan's OBS-602 script and OBS-612 E2E tests, then covers what the plan
got wrong: replay/live seam, exact routing, topics that narrow, filters that hold
for the whole tool use, error codes, keepalive and slow consumers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection, open_websocket_url
from wsproto.events import BytesMessage, Ping, TextMessage

import trio_obs
from support import (
    TIMEOUT,
    RawClient,
    Server,
    close_reason,
    parse_metrics,
    running_server,
)
from trio_obs.core import events as ev
from trio_obs.core.events import AgentHeartbeatEvent
from trio_obs.core.wire import encode

EXEC = "test-exec"
pytestmark = pytest.mark.usefixtures("no_server_errors")

# --------------------------------------------------------------------------- harness


class Client:
    """A trio-websocket client that speaks JSON."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.connected: dict[str, Any] = {}

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(TIMEOUT):
            message = await self.ws.get_message()
        assert isinstance(message, str), "the server sends text frames only"
        frame: dict[str, Any] = orjson.loads(message)
        return frame

    async def send(self, message: object) -> None:
        await self.ws.send_message(
            message if isinstance(message, str) else orjson.dumps(message).decode()
        )

    async def request(self, message: object) -> dict[str, Any]:
        await self.send(message)
        return await self.recv()

    async def until(self, last: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Frames up to and including the first one for which ``last`` is true."""
        frames = [await self.recv()]
        while not last(frames[-1]):
            frames.append(await self.recv())
        return frames

    async def take(self, n: int) -> list[dict[str, Any]]:
        return [await self.recv() for _ in range(n)]

    async def close_code(self) -> tuple[int, str | None]:
        """Read until the server closes; its close code and reason."""
        return await close_reason(self.ws)


@asynccontextmanager
async def connect(
    srv: Server, stream: str = EXEC, *, queue: int = 10_000, **params: object
) -> AsyncIterator[Client]:
    """A connected client whose ``connected`` frame has been read."""
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(srv.ws_url(stream, **params), message_queue_size=queue) as ws:
            client = Client(ws)
            client.connected = await client.recv()
            assert client.connected["type"] == "observability:connected"
            yield client


def wire(event: trio_obs.StreamEvent) -> dict[str, Any]:
    """What a client receives for a stored event."""
    frame: dict[str, Any] = orjson.loads(encode(event))
    return frame


def is_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame["type"] == kind


async def one_of_each(obs: trio_obs.Observability, e: str) -> list[trio_obs.StreamEvent]:
    """One event of each of the 11 stream types, emitted through the services, in order."""
    events: list[trio_obs.StreamEvent] = []
    events.append(
        await obs.transcripts.record(
            e, instance_id="agent-1", entry_type="tool_use", category="action",
            summary="reads the plan", task_id="t1",
        )
    )  # fmt: skip
    tool = await obs.tools.start(e, "Read", "plan.md", task_id="t1")
    events.append(tool)
    events.append(await obs.tools.output(e, tool.tool_use_id, "line 1\n"))
    events.append(await obs.tools.end(e, tool.tool_use_id, "done", duration_ms=5.0))
    events.append(
        await obs.assertions.record(
            e, "t1", category="file", description="plan exists", result="pass"
        )
    )
    skill = await obs.skills.start(e, "plan", "skills/plan.md", 3, task_id="t1")
    events.append(skill)
    events.append(await obs.skills.end(e, skill.skill_trace_id, "plan", "success", duration_ms=2.0))
    events.append(
        await obs.message_bus.log(
            source="agent-1", event_type="task:done", human_summary="task t1 done",
            severity="info", category="lifecycle", execution_id=e, task_id="t1",
        )
    )  # fmt: skip
    events.append(await obs.executions.wave_status(e, 1, "running", task_count=3))
    events.append(await obs.executions.heartbeat(e, "agent-1", "working", current_task_id="t1"))
    events.append(await obs.executions.status(e, "running"))
    return events


async def heartbeats(obs: trio_obs.Observability, e: str, n: int) -> list[trio_obs.StreamEvent]:
    """``n`` events stored in one batch."""
    return await obs.ingest(
        [AgentHeartbeatEvent(execution_id=e, instance_id=f"a{i}", status="working")
         for i in range(n)]
    )  # fmt: skip


async def scrape(srv: Server) -> dict[str, float]:
    """``/metrics`` as {sample name with labels: value}."""
    response = await srv.http.get("/metrics")
    assert response.status_code == 200
    return parse_metrics(response.text)[1]


# ----------------------------------------------------------------- connecting (OBS-602, OBS-612)


async def test_connect_with_execution_id_gets_connected_first(server: Server) -> None:
    async with connect(server, "test-exec") as client:
        connected = client.connected
        assert connected["executionId"] == "test-exec"
        assert connected["message"] == "Connected to execution test-exec"
        assert connected["bufferedEventCount"] == 0
        assert isinstance(connected["timestamp"], str)


async def test_connect_with_all_gets_no_replay(server: Server) -> None:
    await heartbeats(server.obs, "busy", 5)
    async with connect(server, "all") as client:
        assert client.connected["executionId"] == "all"
        assert client.connected["message"] == "Connected to all observability events"
        assert "all observability events" in client.connected["message"]
        assert client.connected["bufferedEventCount"] == 0
        # The first frame after connected is live, not replayed.
        [live] = await heartbeats(server.obs, "busy", 1)
        assert await client.recv() == wire(live)
        assert live.seq == 6


async def test_subscribe_then_unsubscribe_are_confirmed_and_close_is_clean(
    server: Server,
) -> None:
    async with connect(server, "test-exec") as client:
        subscribed = await client.request({"action": "subscribe", "topic": "tools"})
        assert subscribed["type"] == "observability:subscribed"
        assert subscribed["topic"] == "tools"
        assert subscribed["executionId"] == "test-exec"
        unsubscribed = await client.request({"action": "unsubscribe", "topic": "tools"})
        assert unsubscribed["type"] == "observability:unsubscribed"
        assert unsubscribed["topic"] == "tools"
        ws = client.ws
    assert ws.closed is not None
    assert ws.closed.code == 1000  # the client's own close, answered by the server


async def test_ping_gets_pong_with_timestamp(server: Server) -> None:
    async with connect(server) as client:
        pong = await client.request({"type": "ping"})
        assert pong["type"] == "pong"
        assert isinstance(pong["timestamp"], str)
        assert pong["timestamp"].endswith("Z")


async def test_buffered_events_follow_connected_in_seq_order(server: Server) -> None:
    stored = await one_of_each(server.obs, EXEC)
    async with connect(server) as client:
        assert client.connected["bufferedEventCount"] == len(stored)
        assert await client.take(len(stored)) == [wire(e) for e in stored]
        [live] = await heartbeats(server.obs, EXEC, 1)
        assert await client.recv() == wire(live)
        assert live.seq == len(stored) + 1


async def test_default_replay_is_the_last_100_events(server: Server) -> None:
    stored = await heartbeats(server.obs, EXEC, 150)
    async with connect(server) as client:
        assert client.connected["bufferedEventCount"] == 100
        replay = await client.take(100)
        assert [f["seq"] for f in replay] == list(range(51, 151))
        assert replay == [wire(e) for e in stored[50:]]
        [live] = await heartbeats(server.obs, EXEC, 1)
        assert (await client.recv())["seq"] == live.seq == 151


@pytest.mark.parametrize(("since", "expected"), [(0, 150), (20, 130), (149, 1), (150, 0)])
async def test_since_replays_every_later_event_however_old(
    server: Server, since: int, expected: int
) -> None:
    await heartbeats(server.obs, EXEC, 150)
    server.obs.broker.clear_buffer(EXEC)  # old events come from the store, not the cache
    async with connect(server, since=since) as client:
        assert client.connected["bufferedEventCount"] == expected
        replay = await client.take(expected)
        assert [f["seq"] for f in replay] == list(range(since + 1, 151))
        await heartbeats(server.obs, EXEC, 1)
        assert (await client.recv())["seq"] == 151


@pytest.mark.parametrize("epoch", [False, True])
async def test_a_since_beyond_the_stored_head_is_told_with_a_reset(
    server: Server, epoch: bool
) -> None:
    # The client saw seqs this store does not hold (a copy restored from a backup, an
    # execution deleted by retention): it is told and gets the history that exists, never
    # silently other events under the numbers it saw (SPEC §10).
    stored = await heartbeats(server.obs, EXEC, 3)
    params = {"epoch": server.obs.hub.epoch} if epoch else {}
    async with connect(server, since=9, **params) as client:
        assert client.connected["bufferedEventCount"] == 3
        reset = await client.recv()
        assert reset == {"type": "observability:reset", "epoch": server.obs.hub.epoch,
                         "lastSeq": 3, "timestamp": reset["timestamp"]}  # fmt: skip
        assert await client.take(3) == [wire(e) for e in stored]


async def test_since_resumes_without_gap_or_duplicate_while_a_producer_posts() -> None:
    # A small replay buffer: resumes read the store (a checkpoint) while events keep coming.
    async with running_server(buffer_size=10) as srv:
        sinces = [0, 7, 33, 60, 95]
        history, all_connected = trio.Event(), trio.Event()
        connected = 0
        results: dict[int, list[int]] = {}

        async def produce() -> None:
            n = after = 0
            while after < 200:  # keep posting until 200 events after every client connected
                await srv.obs.executions.heartbeat("seam", f"agent-{n}", "working")
                n += 1
                if n == 100:
                    history.set()
                if all_connected.is_set():
                    after += 1
            await srv.obs.executions.status("seam", "completed")

        async def consume(since: int) -> None:
            nonlocal connected
            await history.wait()
            async with connect(srv, "seam", since=since) as client:
                connected += 1
                if connected == len(sinces):
                    all_connected.set()
                frames = await client.until(is_type("execution:status"))
                results[since] = [f["seq"] for f in frames]

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                for since in sinces:
                    nursery.start_soon(consume, since)

        last = srv.obs.broker.last_seq("seam")
        assert last >= 301
        for since in sinces:
            assert results[since] == list(range(since + 1, last + 1)), since


async def test_live_events_of_every_type_are_delivered_as_stored(server: Server) -> None:
    async with connect(server) as client:
        stored = await one_of_each(server.obs, EXEC)
        assert {e.type for e in stored} == ev.PLAN_EVENT_TYPES  # spans: issue 21
        assert await client.take(len(stored)) == [wire(e) for e in stored]
        assert [e.seq for e in stored] == list(range(1, 12))


async def test_events_posted_over_http_reach_websocket_clients(server: Server) -> None:
    async with connect(server) as client, httpx.AsyncClient(trust_env=False) as http:
        body = [
            {"type": "wave:status", "executionId": EXEC, "waveNumber": 1, "status": "running",
             "taskCount": 2, "completedCount": 0, "failedCount": 0},
            {"type": "execution:status", "executionId": EXEC, "status": "completed"},
        ]  # fmt: skip
        response = await http.post(server.url("/api/events"), json=body)
        assert response.status_code == 202
        frames = await client.take(2)
        assert [(f["type"], f["seq"]) for f in frames] == [
            ("wave:status", 1),
            ("execution:status", 2),
        ]


# --------------------------------------------------------------------------- routing


async def test_each_connection_gets_exactly_its_events_once_in_seq_order(server: Server) -> None:
    obs = server.obs
    async with (
        connect(server, "A") as conn_a,
        connect(server, "B") as conn_b,
        connect(server, "all") as conn_all,
        connect(server, "global") as conn_global,
    ):
        stored: list[trio_obs.StreamEvent] = [
            await obs.tools.start("A", "Bash", "ls"),
            await obs.transcripts.record(
                "B", instance_id="i", entry_type="thought", category="plan", summary="s"
            ),
            await obs.executions.status("A", "running"),
            await obs.message_bus.log(
                source="bus", event_type="system:up", human_summary="up", severity="info",
                category="system",
            ),
            await obs.message_bus.log(
                source="bus", event_type="task:claimed", human_summary="claimed",
                severity="warning", category="task", execution_id="A",
            ),
            await obs.executions.status("B", "completed"),
            await obs.executions.wave_status("A", 1, "running", task_count=1),
            await obs.executions.heartbeat("B", "i", "idle"),
            await obs.executions.status("A", "completed"),
        ]  # fmt: skip
        of_a = [wire(e) for e in stored if e.execution_id == "A"]
        of_b = [wire(e) for e in stored if e.execution_id == "B"]
        a = await conn_a.take(len(of_a))
        b = await conn_b.take(len(of_b))
        assert a == of_a
        assert [f["seq"] for f in a] == list(range(1, len(of_a) + 1))
        assert b == of_b
        assert [f["seq"] for f in b] == list(range(1, len(of_b) + 1))

        everything = await conn_all.take(len(stored))
        assert everything == [wire(e) for e in stored]  # execution:status only once

        glob = await conn_global.take(4)
        assert [(f["type"], f["executionId"], f.get("status")) for f in glob] == [
            ("execution:status", "A", "running"),
            ("messagebus:event", "global", None),
            ("execution:status", "B", "completed"),
            ("execution:status", "A", "completed"),
        ]
        assert [f["seq"] for f in glob] == [1, 2, 3, 4]  # the global stream's own seqs

        # Nothing else is queued for anyone: a ping's pong is the very next frame.
        for conn in (conn_a, conn_b, conn_all, conn_global):
            assert (await conn.request({"type": "ping"}))["type"] == "pong"


# --------------------------------------------------------------------------- topics


def kinds(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


async def test_subscribing_to_a_topic_narrows_the_stream(server: Server) -> None:
    async with connect(server) as client:
        await client.request({"action": "subscribe", "topic": "tools"})
        await one_of_each(server.obs, EXEC)
        await server.obs.tools.start(EXEC, "Read", "sentinel")
        frames = await client.until(lambda f: f.get("inputSummary") == "sentinel")
        assert kinds(frames) == ["tool:start", "tool:output", "tool:end", "tool:start"]


async def test_later_subscribes_add_topics_and_unsubscribe_removes_one(server: Server) -> None:
    obs = server.obs
    async with connect(server) as client:
        await client.request({"action": "subscribe", "topic": "tools"})
        await client.request({"action": "subscribe", "topic": "assertions"})
        await one_of_each(obs, EXEC)
        await obs.assertions.record(EXEC, "t1", category="c", description="end", result="fail")
        frames = await client.until(lambda f: f.get("assertion", {}).get("description") == "end")
        assert kinds(frames) == [
            "tool:start", "tool:output", "tool:end", "assertion:result", "assertion:result"
        ]  # fmt: skip

        unsubscribed = await client.request({"action": "unsubscribe", "topic": "tools"})
        assert (unsubscribed["type"], unsubscribed["topic"]) == (
            "observability:unsubscribed",
            "tools",
        )
        await one_of_each(obs, EXEC)
        await obs.assertions.record(EXEC, "t1", category="c", description="end2", result="pass")
        frames = await client.until(lambda f: f.get("assertion", {}).get("description") == "end2")
        assert kinds(frames) == ["assertion:result", "assertion:result"]


async def test_subscribing_to_all_widens_again(server: Server) -> None:
    async with connect(server) as client:
        await client.request({"action": "subscribe", "topic": "waves"})
        widened = await client.request({"action": "subscribe", "topic": "all"})
        assert widened["topic"] == "all"
        stored = await one_of_each(server.obs, EXEC)
        assert await client.take(len(stored)) == [wire(e) for e in stored]


async def test_unsubscribing_every_topic_silences_the_connection(server: Server) -> None:
    async with connect(server) as client:
        await client.request({"action": "unsubscribe", "topic": "all"})
        await one_of_each(server.obs, EXEC)
        # Still open and answering, but no event was delivered.
        assert (await client.request({"type": "ping"}))["type"] == "pong"


# --------------------------------------------------------------------------- filters


async def test_task_filter_drops_events_of_other_tasks(server: Server) -> None:
    obs = server.obs
    async with connect(server) as client:
        confirmed = await client.request(
            {"action": "subscribe", "topic": "all", "filters": {"taskId": "t1"}}
        )
        assert confirmed["type"] == "observability:subscribed"
        mine = await obs.tools.start(EXEC, "Read", "mine", task_id="t1")
        other = await obs.tools.start(EXEC, "Read", "other", task_id="t2")
        await obs.transcripts.record(
            EXEC, instance_id="i", entry_type="e", category="c", summary="other", task_id="t2"
        )
        await obs.assertions.record(EXEC, "t2", category="c", description="other", result="pass")
        await obs.tools.output(EXEC, other.tool_use_id, "other output")  # task from its tool use
        await obs.tools.end(EXEC, other.tool_use_id, "done")
        await obs.message_bus.log(
            source="s", event_type="x", human_summary="other", severity="info", category="c",
            execution_id=EXEC, task_id="t2",
        )  # fmt: skip
        await obs.executions.heartbeat(EXEC, "i", "working", current_task_id="t2")
        kept: list[trio_obs.StreamEvent] = [
            await obs.tools.output(EXEC, mine.tool_use_id, "my output"),
            await obs.executions.wave_status(EXEC, 1, "running", task_count=2),  # no task: kept
            await obs.tools.end(EXEC, mine.tool_use_id, "done"),
        ]
        frames = await client.take(1 + len(kept))
        assert frames == [wire(mine), *(wire(e) for e in kept)]


async def test_tools_filter_drops_the_whole_tool_use_of_other_tools(server: Server) -> None:
    obs = server.obs
    async with connect(server) as client:
        await client.request(
            {"action": "subscribe", "topic": "tools", "filters": {"tools": ["Read"]}}
        )
        read = await obs.tools.start(EXEC, "Read", "a.txt")
        bash = await obs.tools.start(EXEC, "Bash", "rm -rf /tmp/x")
        await obs.tools.output(EXEC, bash.tool_use_id, "removed")
        read_out = await obs.tools.output(EXEC, read.tool_use_id, "hello")
        await obs.tools.end(EXEC, bash.tool_use_id, "error")
        read_end = await obs.tools.end(EXEC, read.tool_use_id, "done")
        frames = await client.take(3)
        assert frames == [wire(read), wire(read_out), wire(read_end)]


async def test_severity_filter_keeps_only_listed_severities(server: Server) -> None:
    obs = server.obs
    async with connect(server, "global") as client:
        await client.request(
            {"action": "subscribe", "topic": "messagebus",
             "filters": {"severity": ["error", "critical"]}}
        )  # fmt: skip
        for severity in ("debug", "info", "warning", "error", "critical"):
            await obs.message_bus.log(
                source="bus", event_type="e", human_summary=severity, severity=severity,
                category="c",
            )  # fmt: skip
        frames = await client.take(2)
        assert [f["entry"]["severity"] for f in frames] == ["error", "critical"]
        assert all(f["requiresAction"] for f in frames)


async def test_entry_type_and_category_filters(server: Server) -> None:
    obs = server.obs
    async with connect(server) as client:
        await client.request(
            {"action": "subscribe", "topic": "transcript", "filters": {"entryTypes": ["error"]}}
        )
        await client.request(
            {"action": "subscribe", "topic": "assertions", "filters": {"categories": ["tests"]}}
        )
        for entry_type in ("thought", "error", "tool_use"):
            await obs.transcripts.record(
                EXEC, instance_id="i", entry_type=entry_type, category="c", summary=entry_type
            )
        for category in ("lint", "tests"):
            await obs.assertions.record(
                EXEC, "t", category=category, description="d", result="pass"
            )
        transcript, assertion = await client.take(2)
        assert (transcript["type"], transcript["entry"]["entryType"]) == (
            "transcript:entry",
            "error",
        )
        assert (assertion["type"], assertion["assertion"]["category"]) == (
            "assertion:result",
            "tests",
        )


# --------------------------------------------------------------------------- bad client messages


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("hello{", "INVALID_MESSAGE"),
        ("", "INVALID_MESSAGE"),
        ("[1, 2]", "INVALID_MESSAGE"),
        ('"ping"', "INVALID_MESSAGE"),
        ({"type": "hello"}, "INVALID_MESSAGE"),
        ({}, "INVALID_MESSAGE"),
        ({"action": "dance", "topic": "tools"}, "INVALID_MESSAGE"),
        ({"action": "subscribe", "topic": "nope"}, "INVALID_TOPIC"),
        ({"action": "subscribe"}, "INVALID_TOPIC"),
        ({"action": "unsubscribe", "topic": 7}, "INVALID_TOPIC"),
        ({"action": "subscribe", "topic": "tools", "filters": "Read"}, "INVALID_FILTER"),
        ({"action": "subscribe", "topic": "tools", "filters": {"tools": "Read"}}, "INVALID_FILTER"),
        ({"action": "subscribe", "topic": "all", "filters": {"severity": ["x"]}}, "INVALID_FILTER"),
        ({"action": "subscribe", "topic": "all", "filters": {"taskId": 3}}, "INVALID_FILTER"),
        ({"action": "subscribe", "topic": "all", "filters": {"colour": ["red"]}}, "INVALID_FILTER"),
    ],
)  # fmt: skip
async def test_bad_message_gets_an_error_and_the_connection_stays_open(
    server: Server, message: object, code: str
) -> None:
    async with connect(server) as client:
        error = await client.request(message)
        assert error["type"] == "observability:error"
        assert error["code"] == code
        assert isinstance(error["error"], str)
        assert error["error"]
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        # A refused subscribe changed nothing: every event still arrives.
        stored = await one_of_each(server.obs, EXEC)
        assert await client.take(len(stored)) == [wire(e) for e in stored]


async def test_binary_frame_closes_with_1003(server: Server) -> None:
    client = await RawClient.connect(server, f"/ws?observability={EXEC}")
    try:
        assert (await client.next_json())["type"] == "observability:connected"
        await client.send(BytesMessage(data=b'{"type": "ping"}'))
        close, frames = await client.until_close()
        assert close.code == 1003
        assert frames == []
    finally:
        await client.aclose()


async def test_trio_websocket_binary_message_is_refused_too(server: Server) -> None:
    async with connect(server) as client:
        await client.ws.send_message(b"\x00\x01")
        code, _ = await client.close_code()
        assert code == 1003


# --------------------------------------------------------------------------- handshake refusals


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/ws", 400),
        ("/ws?observability=", 400),
        ("/ws?since=3", 400),
        ("/ws?observability=e&since=-1", 400),
        ("/ws?observability=e&since=abc", 400),
        ("/ws?observability=e&since=", 400),
        ("/wsx?observability=e", 404),
        ("/nope?observability=e", 404),
        ("/ws/?observability=e", 404),
    ],
)
async def test_bad_handshake_is_refused_with_status_and_one_line_body(
    server: Server, target: str, status: int
) -> None:
    with pytest.raises(ConnectionRejected) as refused, trio.fail_after(TIMEOUT):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}{target}"):
            pass
    assert refused.value.status_code == status
    body = refused.value.body or b""
    assert b"\n" not in body.strip()
    message = orjson.loads(body)["error"]
    assert isinstance(message, str)
    assert message
    assert "\n" not in message
    # The server is unharmed.
    async with connect(server) as client:
        assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_a_since_that_is_not_ascii_digits_is_400(server: Server) -> None:
    # str.isdigit() is true for '\u00b2', which int() refuses: refused, not a dropped connection.
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(
            b"GET /ws?observability=e&since=%C2%B2 HTTP/1.1\r\nHost: x\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = b""
        with trio.fail_after(TIMEOUT):
            while chunk := await stream.receive_some(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_plain_get_of_ws_path_is_426(server: Server) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(server.url("/ws?observability=all"))
    assert response.status_code == 426
    assert response.headers["upgrade"].lower() == "websocket"
    assert response.json()["error"]


# --------------------------------------------------------------------------- keepalive


async def test_keepalive_closes_a_client_that_never_answers_pings() -> None:
    async with running_server(ping_interval=0.2) as srv:
        silent = await RawClient.connect(srv, "/ws?observability=all")
        polite = await RawClient.connect(srv, "/ws?observability=all")
        try:
            assert (await silent.next_json())["type"] == "observability:connected"
            assert (await polite.next_json())["type"] == "observability:connected"

            async def answer_pings(n: int) -> None:
                for _ in range(n):
                    ping = await polite.next_event()
                    assert isinstance(ping, Ping), ping
                    await polite.send(ping.response())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_pings, 4)
                first = await silent.next_event()
                assert isinstance(first, Ping)  # not answered
                close, _ = await silent.until_close()
                assert close.code == 1011

            # The polite client answered four pings and is still served.
            await polite.send(TextMessage(data='{"type": "ping"}'))
            while isinstance(event := await polite.next_event(), Ping):
                await polite.send(event.response())
            assert isinstance(event, TextMessage)
            assert orjson.loads(event.data)["type"] == "pong"
            metrics = await scrape(srv)
            assert metrics["trio_obs_keepalive_closes_total"] == 1
            assert metrics["trio_obs_connections"] == 1
        finally:
            await silent.aclose()
            await polite.aclose()


# --------------------------------------------------------------------------- slow consumers


async def test_a_stalled_consumer_is_closed_with_4008_and_others_get_everything() -> None:
    # SPEC §4: stalling is a fault. The stalled client reads nothing: once the socket
    # buffers are full and it accepts no byte for --stall-timeout, it is closed.
    async with running_server(stall_timeout=0.5) as srv:
        obs = srv.obs
        chunk = "x" * 16_000
        tool = await obs.tools.start("slow", "Bash", "yes")
        fast_frames: list[dict[str, Any]] = []

        async def fast_reader(client: Client, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            fast_frames.extend(await client.until(is_type("execution:status")))

        slow = await RawClient.connect(srv, "/ws?observability=slow&since=1", rcvbuf=4096)
        try:
            assert (await slow.next_json())["type"] == "observability:connected"
            async with connect(srv, "slow", since=1) as fast, trio.open_nursery() as nursery:
                await nursery.start(fast_reader, fast)
                # The slow client reads nothing now; post until the server gives up on it.
                with trio.fail_after(TIMEOUT):
                    posted = 0
                    while obs.broker.get_listener_count("slow") == 2:
                        await obs.tools.output("slow", tool.tool_use_id, chunk)
                        posted += 1
                        assert posted < 5000, "the stalled client was never closed"
                last = (await obs.executions.status("slow", "completed")).seq
                assert last is not None
                # Resume reading right away: the server lets its last write finish, then closes.
                close, slow_frames = await slow.until_close()

            assert close.code == 4008
            assert close.reason == "slow consumer"
            # What the slow client got is a gap-free prefix; the fast one got everything.
            assert [f["seq"] for f in slow_frames] == list(range(2, 2 + len(slow_frames)))
            assert [f["seq"] for f in fast_frames] == list(range(2, last + 1))
        finally:
            await slow.aclose()

        # Resuming with since= loses nothing.
        resume_from = slow_frames[-1]["seq"] if slow_frames else 1
        async with connect(srv, "slow", since=resume_from) as again:
            rest = await again.until(is_type("execution:status"))
            assert [f["seq"] for f in rest] == list(range(resume_from + 1, last + 1))
        assert (await scrape(srv))["trio_obs_slow_consumer_closes_total"] == 1


# --------------------------------------------------------------------------- many at once


async def test_200_clients_and_4_producers_all_get_every_event(server: Server) -> None:
    n_clients, per_producer = 200, 10
    executions = ["p0", "p1", "p2", "p3"]
    received: list[list[dict[str, Any]]] = []
    all_connected = trio.Event()

    async def client(task_status: trio.TaskStatus[None]) -> None:
        async with connect(server, "all") as c:
            task_status.started()
            await all_connected.wait()
            frames: list[dict[str, Any]] = []
            done = 0
            while done < len(executions):
                frames.append(await c.recv())
                done += frames[-1]["type"] == "execution:status"
            received.append(frames)

    async def produce_in_process(e: str) -> None:
        for i in range(per_producer - 1):
            await server.obs.tools.output(e, "use", f"chunk {i}")
        await server.obs.executions.status(e, "completed")

    async def produce_over_http(e: str) -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as http:
            for i in range(per_producer - 1):
                body = {
                    "type": "tool:output",
                    "executionId": e,
                    "toolUseId": "use",
                    "chunk": f"{i}",
                }
                assert (await http.post(server.url("/api/events"), json=body)).status_code == 202
            body = {"type": "execution:status", "executionId": e, "status": "completed"}
            assert (await http.post(server.url("/api/events"), json=body)).status_code == 202

    with trio.fail_after(2 * TIMEOUT):  # a hang guard: 200 handshakes on a loaded machine
        async with trio.open_nursery() as nursery:
            for _ in range(n_clients):
                await nursery.start(client)
            all_connected.set()
            nursery.start_soon(produce_in_process, "p0")
            nursery.start_soon(produce_in_process, "p1")
            nursery.start_soon(produce_over_http, "p2")
            nursery.start_soon(produce_over_http, "p3")

    assert len(received) == n_clients
    for frames in received:
        assert len(frames) == len(executions) * per_producer
        for e in executions:
            seqs = [f["seq"] for f in frames if f["executionId"] == e]
            assert seqs == list(range(1, per_producer + 1))
