"""The HTTP routes of SPEC §5 on the server's one port, over real loopback sockets."""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

import trio_obs
from support import TIMEOUT, Server, heartbeat, parse_metrics, running_server, ws_client
from trio_obs.core.facts import facts_js
from trio_obs.core.prices import SHIPPED_PRICES, Price
from trio_obs.core.protocol import MAX_ID_BYTES

pytestmark = pytest.mark.usefixtures("no_server_errors")

# --------------------------------------------------------------------------- harness


async def next_frame(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        frame: dict[str, Any] = orjson.loads(await ws.get_message())
    return frame


async def stored(srv: Server, execution_id: str, **params: int) -> list[dict[str, Any]]:
    response = await srv.http.get(f"/api/executions/{execution_id}/events", params=params)
    assert response.status_code == 200
    events: list[dict[str, Any]] = response.json()
    return events


async def post(srv: Server, body: object) -> httpx.Response:
    return await srv.http.post("/api/events", content=orjson.dumps(body))


def assertion(e: str, result: str, **extra: object) -> dict[str, Any]:
    return {
        "type": "assertion:result", "executionId": e, "taskId": "t1",
        "assertion": {"id": f"a-{result}", "taskId": "t1", "executionId": e, "category": "tests",
                      "description": "it works", "result": result,
                      "timestamp": "2025-01-01T00:00:00.000Z"},
        **extra,
    }  # fmt: skip


def bus(severity: str, execution_id: str | None = None, **extra: object) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": f"m-{severity}", "eventId": "ev-1", "timestamp": "2025-01-01T00:00:00.000Z",
        "source": "scheduler", "eventType": "task:failed", "humanSummary": "task failed",
        "severity": severity, "category": "task", "createdAt": "2025-01-01T00:00:00.000Z",
    }  # fmt: skip
    event: dict[str, Any] = {"type": "messagebus:event", "entry": entry, **extra}
    if execution_id is not None:
        event["executionId"] = entry["executionId"] = execution_id
    return event


class RawHttp:
    """One TCP connection speaking bytes, for what an HTTP client library would not send."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def open(cls, srv: Server) -> RawHttp:
        with trio.fail_after(TIMEOUT):
            return cls(await trio.open_tcp_stream("127.0.0.1", srv.port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next whole response: status, headers (lower-case names) and body."""
        with trio.fail_after(TIMEOUT):
            while b"\r\n\r\n" not in self.buffer:
                await self._fill()
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers["content-length"])
            while len(rest) < length:
                await self._fill()
                rest = self.buffer.partition(b"\r\n\r\n")[2]
            self.buffer = rest[length:]
            return status, headers, rest[:length]

    async def head_only(self) -> tuple[int, dict[str, str]]:
        """Status and headers of a response that has no body (to HEAD)."""
        with trio.fail_after(TIMEOUT):
            while b"\r\n\r\n" not in self.buffer:
                await self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        return int(lines[0].split()[1]), headers

    async def closed_by_server(self) -> bool:
        with trio.fail_after(TIMEOUT):
            return self.buffer == b"" and await self.stream.receive_some(1) == b""

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError(f"connection closed; got {self.buffer!r}")
        self.buffer += data

    async def aclose(self) -> None:
        await self.stream.aclose()


def request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
        if not any(h.lower().startswith("content-type:") for h in headers):
            lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --------------------------------------------------------------------------- health


async def test_health_reports_status_connections_and_uptime(server: Server) -> None:
    response = await server.http.get("/api/health")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    health = response.json()
    assert health["status"] == "ok"
    assert health["connections"] == 0
    assert health["uptimeSeconds"] >= 0
    assert health["version"] == trio_obs.__version__
    async with ws_client(server.ws_url("all")), ws_client(server.ws_url("x")):
        assert (await server.http.get("/api/health")).json()["connections"] == 2


# --------------------------------------------------------------------------- POST /api/events


async def test_post_one_event_then_an_array(server: Server) -> None:
    one = await post(server, heartbeat("e1"))
    assert one.status_code == 202
    assert one.json() == {"accepted": 1, "seqs": [1]}
    many = await post(server, [heartbeat("e1"), heartbeat("e2"), heartbeat("e1")])
    assert many.status_code == 202
    assert many.json() == {"accepted": 3, "seqs": [2, 1, 3]}  # seq is per execution
    assert [e["seq"] for e in await stored(server, "e1")] == [1, 2, 3]
    assert [e["seq"] for e in await stored(server, "e2")] == [1]


async def test_posted_events_are_stored_then_broadcast(server: Server) -> None:
    async with ws_client(server.ws_url("e1")) as mine, ws_client(server.ws_url("all")) as everyone:
        status = {"type": "execution:status", "executionId": "e1", "status": "running"}
        response = await post(server, [heartbeat("e1"), status])
        assert response.status_code == 202
        events = await stored(server, "e1")
        for ws in (mine, everyone):
            assert [await next_frame(ws), await next_frame(ws)] == events


async def test_server_assigns_seq_and_stamps_a_missing_timestamp(server: Server) -> None:
    sent = [
        heartbeat("e1", seq=99, timestamp="2025-06-01T12:00:00.000Z"),
        heartbeat("e1", seq=99),
        heartbeat("e1", timestamp=None),
    ]
    assert (await post(server, sent)).json()["seqs"] == [1, 2, 3]
    events = await stored(server, "e1")
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[0]["timestamp"] == "2025-06-01T12:00:00.000Z"
    assert all(isinstance(e["timestamp"], str) and e["timestamp"].endswith("Z") for e in events)


async def test_running_pass_rate_is_computed_by_the_server(server: Server) -> None:
    await post(server, [assertion("e1", "pass", runningPassRate=0.0),
                        assertion("e1", "fail", runningPassRate=1.0)])  # fmt: skip
    await post(server, assertion("e1", "pass", runningPassRate=0.0))
    await post(server, assertion("e1", "skip"))
    rates = [e["runningPassRate"] for e in await stored(server, "e1")]
    assert rates == pytest.approx([1.0, 0.5, 2 / 3, 0.5])


async def test_requires_action_follows_severity_whatever_was_posted(server: Server) -> None:
    await post(server, [
        bus("error", "e1", requiresAction=False),
        bus("critical", "e1"),
        bus("info", "e1", requiresAction=True),
        bus("warning", "e1", requiresAction=True),
    ])  # fmt: skip
    flags = [(e["entry"]["severity"], e["requiresAction"]) for e in await stored(server, "e1")]
    assert flags == [("error", True), ("critical", True), ("info", False), ("warning", False)]


async def test_a_message_bus_event_without_execution_goes_to_global(server: Server) -> None:
    async with ws_client(server.ws_url("global")) as glob:
        response = await post(server, bus("info"))
        assert response.status_code == 202
        frame = await next_frame(glob)
        assert frame["executionId"] == "global"
        assert frame["seq"] == 1
        assert await stored(server, "global") == [frame]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "INVALID_EVENT"),
        (b"", "INVALID_EVENT"),
        (b"[]", "INVALID_EVENT"),
        (b"42", "INVALID_EVENT"),
        (b'[{"type": "agent:heartbeat", "executionId": "bad", "instanceId": "i", '
         b'"status": "working"}, 42]', "INVALID_EVENT"),
        (b'{"type": "tool:teleport", "executionId": "bad"}', "INVALID_EVENT"),
        (b'{"type": "agent:heartbeat", "executionId": "bad", "status": "working"}',
         "INVALID_EVENT"),
        (b'{"type": "agent:heartbeat", "executionId": "bad", "instanceId": "i", '
         b'"status": "asleep"}', "INVALID_EVENT"),
        (b'{"type": "wave:status", "executionId": "bad", "waveNumber": "1", "status": "running",'
         b' "taskCount": 1, "completedCount": 0, "failedCount": 0}', "INVALID_EVENT"),
        (b'{"type": "wave:status", "executionId": "bad", "waveNumber": true, "status": "running",'
         b' "taskCount": 1, "completedCount": 0, "failedCount": 0}', "INVALID_EVENT"),
        (b'{"type": "agent:heartbeat", "executionId": "", "instanceId": "i", "status": "idle"}',
         "INVALID_EVENT"),
    ],
)  # fmt: skip
async def test_invalid_batch_is_refused_whole_and_nothing_is_stored_or_sent(
    server: Server, body: bytes, code: str
) -> None:
    async with (
        ws_client(server.ws_url("bad")) as watcher,
        ws_client(server.ws_url("all")) as everyone,
    ):
        # A valid event first: it must not be stored either.
        if body.startswith(b"[") and body != b"[]":
            body = b"[" + orjson.dumps(heartbeat("bad")) + b"," + body[1:]
        response = await server.http.post("/api/events", content=body)
        assert response.status_code == 400
        error = response.json()
        assert error["code"] == code
        assert isinstance(error["error"], str)
        assert error["error"]
        assert await stored(server, "bad") == []
        assert (await server.http.get("/api/executions")).json() == []
        # The next thing either client sees is a later, valid event with seq 1.
        assert (await post(server, heartbeat("bad"))).json()["seqs"] == [1]
        for ws in (watcher, everyone):
            frame = await next_frame(ws)
            assert (frame["executionId"], frame["seq"]) == ("bad", 1)


async def test_body_over_1_mib_is_refused_before_it_is_read(server: Server) -> None:
    raw = await RawHttp.open(server)
    try:
        # Only the head is sent: an answer proves the server did not wait for the body.
        await raw.send(request("POST", "/api/events", "Content-Length: 1048577"))
        status, headers, body = await raw.response()
        assert status == 413
        assert orjson.loads(body)["error"]
        assert headers.get("connection") == "close"
        assert await raw.closed_by_server()
    finally:
        await raw.aclose()
    # A body of exactly 1 MiB is read (and here refused as JSON, not as too large).
    response = await server.http.post("/api/events", content=b" " * (1024 * 1024))
    assert response.status_code == 400


async def test_body_limit_holds_without_content_length() -> None:
    async with running_server(max_body=2000) as srv:
        ok = orjson.dumps(heartbeat("e1"))
        ok += b" " * (2000 - len(ok))
        assert (await srv.http.post("/api/events", content=ok)).status_code == 202
        raw = await RawHttp.open(srv)
        try:
            chunks = b"".join(b"%x\r\n%s\r\n" % (1000, b" " * 1000) for _ in range(3))
            await raw.send(
                request("POST", "/api/events", "Transfer-Encoding: chunked") + chunks + b"0\r\n\r\n"
            )
            status, _, _ = await raw.response()
            assert status == 413
        finally:
            await raw.aclose()
        assert [e["seq"] for e in await stored(srv, "e1")] == [1]


# --------------------------------------------------------------------------- reads


async def test_executions_most_recently_active_first(server: Server) -> None:
    def at(second: int) -> str:
        return f"2025-01-01T00:00:{second:02d}.000Z"

    await post(server, heartbeat("a", timestamp=at(1)))
    await post(server, heartbeat("b", timestamp=at(2)))
    await post(server, {"type": "execution:status", "executionId": "c", "status": "running",
                        "timestamp": at(3)})  # fmt: skip
    await post(server, bus("info"))  # global: not an execution
    await post(server, [heartbeat("a", timestamp=at(4)),
                        {"type": "execution:status", "executionId": "a", "status": "completed",
                         "timestamp": at(5)}])  # fmt: skip
    response = await server.http.get("/api/executions")
    assert response.status_code == 200
    plan_fields = ("executionId", "lastStatus", "eventCount", "lastSeq", "firstTimestamp",
                   "lastTimestamp")  # fmt: skip
    assert [{k: e[k] for k in plan_fields} for e in response.json()] == [
        {"executionId": "a", "lastStatus": "completed", "eventCount": 3, "lastSeq": 3,
         "firstTimestamp": at(1), "lastTimestamp": at(5)},
        {"executionId": "c", "lastStatus": "running", "eventCount": 1, "lastSeq": 1,
         "firstTimestamp": at(3), "lastTimestamp": at(3)},
        {"executionId": "b", "lastStatus": None, "eventCount": 1, "lastSeq": 1,
         "firstTimestamp": at(2), "lastTimestamp": at(2)},
    ]  # fmt: skip
    # SPEC §12: name, conversation, agents, state and totals (no model call: costs nothing)
    b = response.json()[2]
    assert (b["name"], b["conversationId"], b["agents"], b["state"]) == (None, None, [], "running")
    assert b["totals"] == {"modelCalls": 0, "inputTokens": 0, "outputTokens": 0,
                           "toolCalls": 0, "errors": 0, "cost": 0}  # fmt: skip
    limited = await server.http.get("/api/executions", params={"limit": 2})
    assert [e["executionId"] for e in limited.json()] == ["a", "c"]


async def test_events_of_an_execution_with_since_and_limit(server: Server) -> None:
    await post(server, [heartbeat("e1", instanceId=f"i{n}") for n in range(1, 11)])
    events = await stored(server, "e1")
    assert [e["seq"] for e in events] == list(range(1, 11))
    assert [e["instanceId"] for e in events] == [f"i{n}" for n in range(1, 11)]
    assert events[0]["type"] == "agent:heartbeat"
    assert [e["seq"] for e in await stored(server, "e1", since=3, limit=4)] == [4, 5, 6, 7]
    assert [e["seq"] for e in await stored(server, "e1", since=8)] == [9, 10]
    assert await stored(server, "e1", since=10) == []
    assert await stored(server, "e1", limit=0) == []
    assert await stored(server, "unknown") == []


@pytest.mark.parametrize("query", ["since=abc", "since=-1", "limit=x", "limit=-5"])
async def test_events_with_a_bad_parameter_is_400(server: Server, query: str) -> None:
    response = await server.http.get(f"/api/executions/e1/events?{query}")
    assert response.status_code == 400
    assert response.json()["error"]
    assert response.json()["code"] == "INVALID_PARAMETER"


async def test_the_events_of_an_unknown_execution_are_an_empty_list(server: Server) -> None:
    # Execution ids are the producers' names: a reader may ask before the first event is
    # posted (as a WebSocket may subscribe before it), so "none yet" is not an error.
    response = await server.http.get("/api/executions/never-posted/events")
    assert (response.status_code, response.json()) == (200, [])


# --------------------------------------------------------------------------- metrics

METRICS = {
    "trio_obs_connections",
    "trio_obs_events_in",
    "trio_obs_events_out",
    "trio_obs_slow_consumer_closes",
    "trio_obs_keepalive_closes",
    "trio_obs_handshakes_refused",
    "trio_obs_queue_depth",
    "trio_obs_replay_buffers",
    "trio_obs_uptime_seconds",
}
HISTOGRAMS = {"trio_obs_delivery_latency_seconds", "trio_obs_store_commit_seconds"}


async def scrape(srv: Server) -> tuple[set[str], dict[str, float]]:
    response = await srv.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse_metrics(response.text)


async def test_metrics_parse_and_count_what_happened(server: Server) -> None:
    names, _ = await scrape(server)
    assert names >= METRICS
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/ws"):
            pass
    async with ws_client(server.ws_url("e1")) as ws:
        await post(server, [heartbeat("e1"), heartbeat("e1"), heartbeat("e1")])
        for _ in range(3):
            await next_frame(ws)
        with trio.fail_after(TIMEOUT):  # the count follows the socket write
            while True:
                names, samples = await scrape(server)
                if samples.get("trio_obs_events_out_total{type=agent:heartbeat}") == 3:
                    break
                await trio.sleep(0.01)
        assert names >= METRICS
        assert samples["trio_obs_connections"] == 1
        assert samples["trio_obs_events_in_total{type=agent:heartbeat}"] == 3
        assert samples["trio_obs_handshakes_refused_total{status=400}"] == 1
        assert samples["trio_obs_slow_consumer_closes_total"] == 0
        assert samples["trio_obs_keepalive_closes_total"] == 0
        assert samples["trio_obs_replay_buffers"] == 1
        assert samples["trio_obs_queue_depth{stat=max}"] == 0
        assert samples["trio_obs_uptime_seconds"] > 0


# --------------------------------------------------------------------------- routing of requests


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/events", "POST"),
        ("PUT", "/api/events", "POST"),
        ("POST", "/api/health", "GET"),
        ("DELETE", "/metrics", "GET"),
        ("POST", "/api/executions", "GET"),
        ("POST", "/api/executions/e1/events", "GET"),
        ("POST", "/", "GET"),
        ("POST", "/ws", "GET"),
    ],
)
async def test_wrong_method_is_405_with_allow(
    server: Server, method: str, path: str, allow: str
) -> None:
    response = await server.http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["error"]


@pytest.mark.parametrize(
    "path",
    ["/nope", "/api", "/api/", "/api/executions/", "/api/executions/a/b/events",
     "/api/executions/a/events/x", "/metrics/x", "/static/nope.js", "/static/", "/index.html/x"],
)  # fmt: skip
async def test_unknown_path_is_404(server: Server, path: str) -> None:
    response = await server.http.get(path)
    assert response.status_code == 404
    assert response.json()["error"]


async def test_viewer_page_and_its_static_files(server: Server) -> None:
    page = await server.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert b"<" in page.content
    folder = resources.files("trio_obs.server") / "static"
    served = 0
    for item in folder.iterdir():
        response = await server.http.get(f"/static/{item.name}")
        assert response.status_code == 200, item.name
        assert response.content == item.read_bytes()
        served += 1
    assert served >= 3  # the page, its script and its style at least


async def test_two_requests_on_one_keep_alive_connection(server: Server) -> None:
    raw = await RawHttp.open(server)
    try:
        await raw.send(request("GET", "/api/health"))
        status, headers, body = await raw.response()
        assert (status, orjson.loads(body)["status"]) == (200, "ok")
        assert headers.get("connection") != "close"
        await raw.send(request("POST", "/api/events", body=orjson.dumps(heartbeat("e1"))))
        status, _, body = await raw.response()
        assert (status, orjson.loads(body)) == (202, {"accepted": 1, "seqs": [1]})
        # Pipelined: two requests in one write, two answers in order.
        await raw.send(request("GET", "/api/executions/e1/events") + request("GET", "/nope"))
        first, second = await raw.response(), await raw.response()
        assert (first[0], second[0]) == (200, 404)
        assert orjson.loads(first[2])[0]["seq"] == 1
        # An error answer to a whole request leaves the connection usable.
        await raw.send(request("GET", "/api/health"))
        assert (await raw.response())[0] == 200
    finally:
        await raw.aclose()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello, roughly
    ],
)
async def test_malformed_request_is_400_and_others_are_still_served(
    server: Server, garbage: bytes
) -> None:
    async with ws_client(server.ws_url("e1")) as ws:
        raw = await RawHttp.open(server)
        try:
            await raw.send(garbage)
            status, _, body = await raw.response()
            assert status == 400
            assert orjson.loads(body)["error"]
            assert await raw.closed_by_server()
        finally:
            await raw.aclose()
        assert (await server.http.get("/api/health")).status_code == 200
        await post(server, heartbeat("e1"))
        assert (await next_frame(ws))["seq"] == 1


async def test_metrics_include_the_latency_histograms(server: Server) -> None:
    async with ws_client(server.ws_url("e1")) as ws:
        await post(server, heartbeat("e1"))
        await next_frame(ws)
        with trio.fail_after(TIMEOUT):  # observed after the socket write
            while True:
                names, samples = await scrape(server)
                if samples.get("trio_obs_events_out_total{type=agent:heartbeat}") == 1:
                    break
                await trio.sleep(0.01)
    assert names >= HISTOGRAMS
    for name in HISTOGRAMS:
        assert samples[f"{name}_count"] >= 1
        assert samples[f"{name}_bucket{{le=+Inf}}"] == samples[f"{name}_count"]
        assert samples[f"{name}_sum"] >= 0


# --------------------------------------------------------------------------- edge cases


async def test_head_request_gets_an_answer(server: Server) -> None:
    raw = await RawHttp.open(server)
    try:
        await raw.send(request("HEAD", "/api/health"))
        status, headers = await raw.head_only()
        assert status in (200, 405)
        if status == 405:
            assert "GET" in headers["allow"]
        await raw.send(request("GET", "/api/health"))  # the connection is still usable
        assert (await raw.response())[0] == 200
    finally:
        await raw.aclose()


async def test_execution_ids_in_the_path_are_percent_decoded(server: Server) -> None:
    for name in ("my exec", "a/b", "caf\u00e9"):
        await post(server, heartbeat(name))
        events = await stored(server, quote(name, safe=""))
        assert [e["executionId"] for e in events] == [name], name


@pytest.mark.parametrize("query", ["since=%C2%B2", "limit=%C2%B2", "since=%EF%BC%93", "since=+3"])
async def test_numbers_that_are_not_ascii_digits_are_400(server: Server, query: str) -> None:
    # str.isdigit() is true for '\u00b2' and full-width digits; int() refuses the first.
    response = await server.http.get(f"/api/executions/e1/events?{query}")
    assert response.status_code == 400
    assert response.json()["error"]


async def test_a_since_beyond_any_seq_is_answered(server: Server) -> None:
    await post(server, heartbeat("e1"))
    response = await server.http.get("/api/executions/e1/events", params={"since": "9" * 30})
    assert response.status_code in (200, 400)  # clamped or refused, never a dropped connection
    if response.status_code == 200:
        assert response.json() == []


# --------------------------------------------------------------------------- error answers

SECRET = {"Authorization": "Bearer s3cret"}
AUTH = "Authorization: Bearer s3cret"
UPGRADE = (
    "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
)  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (request("GET", "/api/executions/e1/events?since=x", AUTH), 400, "INVALID_PARAMETER"),
        (request("GET", "/ws", AUTH, *UPGRADE), 400, "INVALID_PARAMETER"),
        (request("POST", "/api/events", AUTH, body=b"{not json"), 400, "INVALID_EVENT"),
        (b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", 400,
         "INVALID_REQUEST"),
        (request("POST", "/api/events", body=b"{}"), 401, "UNAUTHORIZED"),
        (request("GET", "/ws?observability=e1", AUTH, "Origin: http://evil.example", *UPGRADE),
         403, "FORBIDDEN"),
        (request("GET", "/nope"), 404, "NOT_FOUND"),
        (request("DELETE", "/metrics"), 405, "METHOD_NOT_ALLOWED"),
        (request("POST", "/api/events", AUTH, "Content-Length: 2000000",
                 "Content-Type: application/json"), 413, "BODY_TOO_LARGE"),
        (request("POST", "/api/events", AUTH, "Content-Type: text/plain", body=b"{}"), 415,
         "UNSUPPORTED_MEDIA_TYPE"),
        (b"GET /api/health HTTP/1.1\r\nHost: rebind.example\r\n\r\n", 421,
         "MISDIRECTED_REQUEST"),
        (request("GET", "/ws"), 426, "UPGRADE_REQUIRED"),
        (request("GET", "/api/health", "X-Big: " + "a" * 17_000), 431, "HEAD_TOO_LARGE"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)  # fmt: skip
async def test_every_error_answer_says_its_code(raw: bytes, status: int, code: str) -> None:
    async with running_server(token="s3cret") as srv:
        conn = await RawHttp.open(srv)
        try:
            await conn.send(raw)
            got, headers, body = await conn.response()
        finally:
            await conn.aclose()
    assert headers["content-type"] == "application/json"
    answer = orjson.loads(body)
    assert (got, answer["code"]) == (status, code), answer
    assert answer["error"]


async def test_a_request_too_slow_to_arrive_is_408_timeout() -> None:
    async with running_server(read_timeout=0.2) as srv:
        conn = await RawHttp.open(srv)
        try:
            await conn.send(b"GET /api/health HTTP/1.1\r\nHost:")
            status, _, body = await conn.response()
        finally:
            await conn.aclose()
    assert (status, orjson.loads(body)["code"]) == (408, "TIMEOUT")


# --------------------------------------------------------------------------- times and fields


@pytest.mark.parametrize("when", ["yesterday", "2026-13-45T99:99:99Z"])
async def test_a_timestamp_that_is_not_iso_8601_is_refused(server: Server, when: str) -> None:
    response = await post(server, [heartbeat("e1"), heartbeat("e1", timestamp=when)])
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "INVALID_EVENT"
    assert error["error"] == (
        "event 1 (agent:heartbeat) is invalid: expected an ISO-8601 date and time "
        f"(e.g. 2026-01-31T12:00:00.000Z), got {when!r} @ $.timestamp"
    )
    assert await stored(server, "e1") == []


async def test_timestamps_with_offsets_are_stored_in_utc_and_sort_right(server: Server) -> None:
    sent = ["2026-03-08T03:00:00-08:00", "2026-03-08T12:00:00.5Z", "2026-03-08T12:30:00+02:00"]
    response = await post(server, [heartbeat("e1", timestamp=when) for when in sent])
    assert response.status_code == 202
    times = [e["timestamp"] for e in await stored(server, "e1")]
    assert times == ["2026-03-08T11:00:00.000Z", "2026-03-08T12:00:00.500Z",
                     "2026-03-08T10:30:00.000Z"]  # fmt: skip
    [summary] = (await server.http.get("/api/executions")).json()
    assert (summary["firstTimestamp"], summary["lastTimestamp"]) == (times[0], times[-1])


async def test_unknown_fields_are_accepted_with_warnings_and_logged_once_per_name(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):
        response = await post(server, [heartbeat("e1", taskID="T-1") for _ in range(3)])
        assert response.status_code == 202
        answer = response.json()
        assert answer["accepted"] == 3
        assert answer["warnings"] == [
            f"event {i} (agent:heartbeat): unknown field 'taskID' ignored" for i in range(3)
        ]
    logged = [r.getMessage() for r in caplog.records if "taskID" in r.getMessage()]
    assert len(logged) == 1, logged
    assert "agent:heartbeat" in logged[0]
    assert "warnings" not in (await post(server, heartbeat("e1"))).json()


async def test_an_id_over_the_limit_is_refused_at_the_door(server: Server) -> None:
    # Accepted, such an event could never be read back nor watched (431 for the URL).
    response = await server.http.post("/api/events", content=orjson.dumps(heartbeat("e" * 20_000)))
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_EVENT"
    assert "executionId of 20,000 bytes" in response.json()["error"]
    assert (await server.http.get("/api/executions")).json() == []
    handshake = await server.http.get(server.ws_url("e" * 2000).replace("ws:", "http:"),
                                      headers={"upgrade": "websocket", "connection": "upgrade",
                                               "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
                                               "sec-websocket-version": "13"})  # fmt: skip
    assert handshake.status_code == 400 and "over 1,024 bytes" in handshake.json()["error"]


async def test_the_longest_id_can_be_posted_read_and_watched(server: Server) -> None:
    longest = "\u00e9" * (MAX_ID_BYTES // 2)  # 1,024 bytes, 3 KiB percent-encoded
    async with ws_client(server.ws_url(longest)) as ws:
        await post(server, heartbeat(longest))
        assert (await next_frame(ws))["executionId"] == longest
    assert [e["seq"] for e in await stored(server, quote(longest, safe=""))] == [1]


async def test_the_page_gets_the_facts_table_generated_by_the_server(server: Server) -> None:
    response = await server.http.get("/static/facts.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.text == facts_js()
    events_js = await server.http.get("/static/events.js")
    assert 'from "./facts.js"' in events_js.text


# --------------------------------------------------------------------------- agent traces


def agent_run(e: str) -> list[dict[str, Any]]:
    """An agent with a model call and a tool, as a producer of span events posts it."""
    return [
        {"type": "execution:status", "executionId": e, "status": "started", "spanId": "root",
         "timestamp": "2026-01-01T00:00:00.000Z"},
        {"type": "span:start", "executionId": e, "spanId": "a1", "parentSpanId": "root",
         "kind": "agent", "name": "planner", "conversationId": "conv-1"},
        {"type": "span:start", "executionId": e, "spanId": "m1", "parentSpanId": "a1",
         "kind": "llm", "name": "chat", "model": "gpt-4o-mini"},
        {"type": "span:end", "executionId": e, "spanId": "m1", "state": "done",
         "usage": {"inputTokens": 2000, "outputTokens": 500}},
        {"type": "tool:start", "executionId": e, "toolUseId": "tu1", "parentSpanId": "a1",
         "tool": "search", "inputSummary": "q"},
        {"type": "tool:end", "executionId": e, "toolUseId": "tu1", "resultStatus": "done",
         "durationMs": 5},
        {"type": "span:end", "executionId": e, "spanId": "a1", "state": "done"},
        {"type": "execution:status", "executionId": e, "status": "completed", "spanId": "root",
         "output": "the answer"},
    ]  # fmt: skip


async def test_the_tree_of_an_agent_run_and_its_totals(server: Server) -> None:
    first, rest = agent_run("run-1")[:-3], agent_run("run-1")[-3:]
    assert (await post(server, first)).status_code == 202
    # The root ends while the tool is open: the status is held, answered with the last seq.
    posted = await post(server, [rest[2]])
    assert posted.json() == {"accepted": 1, "seqs": [5]}
    tree = (await server.http.get("/api/executions/run-1/tree")).json()
    assert (tree["state"], tree["seq"], tree["rootSpanId"]) == ("running", 5, "root")
    assert (await post(server, rest[:2])).json() == {"accepted": 2, "seqs": [6, 7]}
    tree = (await server.http.get("/api/executions/run-1/tree")).json()
    assert (tree["state"], tree["seq"], tree["name"]) == ("done", 8, "planner")
    assert tree["epoch"] == (await server.http.get("/api/health")).json()["epoch"]
    spans = {s["spanId"]: s for s in tree["spans"]}
    assert [s["spanId"] for s in tree["spans"]] == ["root", "a1", "m1", "tu1"]
    assert (spans["tu1"]["agent"], spans["m1"]["agent"]) == ("planner", "planner")
    [listed] = (await server.http.get("/api/executions")).json()
    assert listed["totals"] == tree["totals"] == {
        "modelCalls": 1, "inputTokens": 2000, "outputTokens": 500,
        "cost": pytest.approx(2000 * 0.15 / 1e6 + 500 * 0.60 / 1e6), "toolCalls": 1, "errors": 0,
    }  # fmt: skip
    assert (listed["name"], listed["conversationId"], listed["agents"], listed["state"]) == (
        "planner", "conv-1", ["planner"], "completed")  # fmt: skip
    # A copy of what was stored is accepted, and changes nothing.
    assert (await post(server, agent_run("run-1")[1:3])).json()["seqs"] == [2, 3]
    assert (await server.http.get("/api/executions/run-1/tree")).json()["seq"] == 8


async def test_the_tree_of_an_unknown_execution_is_404(server: Server) -> None:
    response = await server.http.get("/api/executions/nope/tree")
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"


async def test_a_model_without_a_price_costs_unknown_and_prices_can_be_given() -> None:
    prices = {**SHIPPED_PRICES, "house-model": Price(1.0, 2.0)}
    async with running_server(prices=prices) as srv:
        run = agent_run("r")
        run[2]["model"] = "house-model"
        await post(srv, run)
        run[2]["model"] = "nobody-knows"
        await post(srv, [{**e, "executionId": "s"} for e in run])
        costs = {e["executionId"]: e["totals"]["cost"]
                 for e in (await srv.http.get("/api/executions")).json()}  # fmt: skip
        assert costs == {"r": pytest.approx(2000 / 1e6 + 1000 / 1e6), "s": "unknown"}
        tree = (await srv.http.get("/api/executions/s/tree")).json()
        assert tree["totals"]["cost"] == "unknown"
        assert [s["cost"] for s in tree["spans"] if s["kind"] == "llm"] == ["unknown"]
