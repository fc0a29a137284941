"""Faults found when the server was attacked, each with its regression test (SPEC §5, §6).

Bad input gets a clear error and loses nothing: never a traceback, never a half-applied
batch, never a crashed server.
"""

from __future__ import annotations

import socket
from typing import Any

import orjson
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from support import T0, TIMEOUT, RawClient, Server, heartbeat, parse_metrics, running_server

pytestmark = pytest.mark.usefixtures("no_server_errors")


class Raw:
    """An HTTP client on a bare socket: sends any bytes, reads answers as they come."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.data = b""

    @classmethod
    async def open(cls, srv: Server) -> Raw:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with trio.fail_after(TIMEOUT):
            await sock.connect(("127.0.0.1", srv.port))
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await self.sock.send(data)

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """The next whole response: status, headers (lower case), body."""
        with trio.fail_after(TIMEOUT):
            while b"\r\n\r\n" not in self.data:
                chunk = await self.sock.recv(65536)
                assert chunk, f"closed without an answer: {self.data!r}"
                self.data += chunk
            head, _, rest = self.data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                chunk = await self.sock.recv(65536)
                assert chunk
                rest += chunk
        self.data = rest[length:]
        return int(lines[0].split()[1]), headers, rest[:length]

    async def closed(self) -> bool:
        """Whether the server closed the connection (after what was already read)."""
        with trio.fail_after(TIMEOUT):
            return await self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()


def http(method: str, target: str, *headers: str, body: bytes = b"", host: str = "") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host or '127.0.0.1'}", *headers]
    if body and not any(h.lower().startswith(("content-length", "transfer-")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _nothing_stored(srv: Server) -> None:
    assert (await srv.http.get("/api/executions")).json() == []


# --------------------------------------------------------------------------- 2. numbers


@pytest.mark.parametrize(
    "target",
    [
        "/api/executions/e1/events?since=" + "9" * 5000,
        "/api/executions/e1/events?limit=" + "9" * 5000,
        "/api/executions?limit=" + "1" * 4301,
        "/api/executions/e1/events?since=1234567890123456789",  # 19 digits
    ],
)
async def test_a_huge_number_parameter_is_400(server: Server, target: str) -> None:
    response = await server.http.get(target)
    assert response.status_code == 400
    assert "at most 18 digits" in response.json()["error"]


async def test_a_huge_since_on_the_handshake_is_400(server: Server) -> None:
    raw = await Raw.open(server)
    try:
        await raw.send(
            http(
                "GET",
                "/ws?observability=e1&since=" + "9" * 5000,
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
            )
        )
        status, _, body = await raw.answer()
    finally:
        raw.close()
    assert status == 400
    assert "since" in orjson.loads(body)["error"]


# --------------------------------------------------------------------------- 3. cross-origin


async def test_a_post_that_is_not_json_is_415_and_stores_nothing(server: Server) -> None:
    body = orjson.dumps(heartbeat("e1"))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        response = await server.http.post(
            "/api/events", content=body, headers={"content-type": ""} | headers
        )
        assert response.status_code == 415, content_type
        assert "application/json" in response.json()["error"]
    ok = await server.http.post(
        "/api/events", content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert ok.status_code == 202


@pytest.mark.parametrize("host", ["evil.example", "evil.example:3001", "10.0.0.7:3001"])
async def test_a_foreign_host_is_421_on_a_loopback_bind(server: Server, host: str) -> None:
    raw = await Raw.open(server)
    try:
        await raw.send(http("GET", "/api/executions", host=host))
        status, _, body = await raw.answer()
        assert status == 421
        assert "loopback" in orjson.loads(body)["error"]
        for good in ("localhost", f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
            await raw.send(http("GET", "/api/health", host=good))
            assert (await raw.answer())[0] == 200
    finally:
        raw.close()


async def test_a_handshake_with_a_foreign_host_is_421(server: Server) -> None:
    raw = await Raw.open(server)
    try:
        await raw.send(
            http(
                "GET",
                "/ws?observability=e1",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
                host="rebound.example:80",
            )
        )
        assert (await raw.answer())[0] == 421
    finally:
        raw.close()


# --------------------------------------------------------------------------- 4. chunked


@pytest.mark.parametrize(
    "chunks",
    [b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n", b"-1\r\n\r\n"],
)
async def test_a_malformed_chunked_body_is_400(server: Server, chunks: bytes) -> None:
    raw = await Raw.open(server)
    try:
        await raw.send(
            http(
                "POST",
                "/api/events",
                "Content-Type: application/json",
                "Transfer-Encoding: chunked",
                body=chunks,
            )
        )
        status, _, body = await raw.answer()
    finally:
        raw.close()
    assert status == 400
    assert "malformed" in orjson.loads(body)["error"]
    await _nothing_stored(server)


# --------------------------------------------------------------------------- 5. nesting


@pytest.mark.parametrize("depth", [70, 300, 1000])
async def test_deeply_nested_details_are_400_and_store_nothing(server: Server, depth: int) -> None:
    entry = {
        "id": "t1", "timestamp": T0, "sequence": 1, "executionId": "e1",
        "instanceId": "i", "entryType": "x", "category": "c", "summary": "s", "details": "@",
    }  # fmt: skip
    event = orjson.dumps({"type": "transcript:entry", "executionId": "e1", "entry": entry})
    nested = b'{"d":' * depth + b'"bottom"' + b"}" * depth  # beyond what orjson writes
    body = event.replace(b'"@"', nested)
    response = await server.http.post("/api/events", content=body)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_EVENT"
    assert "64 levels" in response.json()["error"]
    await _nothing_stored(server)


async def test_nesting_within_the_limit_is_stored(server: Server) -> None:
    nested: Any = 1
    for _ in range(50):
        nested = [nested]
    event = {**heartbeat("e1"), "metrics": {"x": 1.0}}
    entry = {
        "id": "t1", "timestamp": T0, "sequence": 1, "executionId": "e1", "instanceId": "i",
        "entryType": "x", "category": "c", "summary": "s", "details": {"deep": nested},
    }  # fmt: skip
    batch = [event, {"type": "transcript:entry", "executionId": "e1", "entry": entry}]
    assert (await server.http.post("/api/events", content=orjson.dumps(batch))).status_code == 202


# --------------------------------------------------------------------------- 7. handshake bytes


async def _handshake_with(server: Server, extra: bytes, later: bytes = b"") -> list[Any]:
    """A handshake sent in one write together with ``extra`` (then ``later``); the replies."""
    client = WSConnection(ConnectionType.CLIENT)
    head = client.send(Request(host=f"127.0.0.1:{server.port}", target="/ws?observability=e1"))
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with trio.fail_after(TIMEOUT):
        await sock.connect(("127.0.0.1", server.port))
        await sock.send(head + extra)
        if later:
            await trio.sleep(0.05)
            await sock.send(later)
        replies: list[Any] = []
        while len(replies) < 2:
            data = await sock.recv(65536)
            assert data
            client.receive_data(data)
            for event in client.events():
                if isinstance(event, AcceptConnection):
                    continue
                assert isinstance(event, TextMessage), event
                replies.append(orjson.loads(event.data))
    sock.close()
    return replies


def _masked(text: str) -> bytes:
    """A client text frame (masked, as clients must send)."""
    payload = text.encode()
    mask = b"\x01\x02\x03\x04"
    assert len(payload) < 126
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x81, 0x80 | len(payload))) + mask + body


async def test_a_message_sent_with_the_handshake_is_answered(server: Server) -> None:
    frame = _masked('{"action":"subscribe","topic":"tools"}')
    connected, subscribed = await _handshake_with(server, frame)
    assert connected["type"] == "observability:connected"
    assert (subscribed["type"], subscribed["topic"]) == ("observability:subscribed", "tools")


async def test_half_a_frame_with_the_handshake_and_the_rest_later(server: Server) -> None:
    frame = _masked('{"type":"ping"}')
    connected, pong = await _handshake_with(server, frame[:5], frame[5:])
    assert connected["type"] == "observability:connected"
    assert pong["type"] == "pong"


# --------------------------------------------------------------------------- 8, 9. framing, heads


async def test_content_length_with_transfer_encoding_is_answered_then_closed(
    server: Server,
) -> None:
    raw = await Raw.open(server)
    try:
        body = orjson.dumps(heartbeat("e1"))
        chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        await raw.send(
            http(
                "POST",
                "/api/events",
                "Content-Type: application/json",
                "Content-Length: 5",
                "Transfer-Encoding: chunked",
                body=chunked,
            )
        )
        status, headers, _ = await raw.answer()
        assert status in (202, 400)
        assert headers.get("connection") == "close"
        assert await raw.closed()
    finally:
        raw.close()


@pytest.mark.parametrize("size", [17 * 1024, 40 * 1024, 60 * 1024])
async def test_a_head_over_16_kib_is_431(server: Server, size: int) -> None:
    raw = await Raw.open(server)
    try:
        await raw.send(http("GET", "/api/health", "X-Pad: " + "a" * size))
        status, _, body = await raw.answer()
    finally:
        raw.close()
    assert status == 431
    assert "16384" in orjson.loads(body)["error"]


async def test_a_head_just_under_16_kib_is_served(server: Server) -> None:
    raw = await Raw.open(server)
    try:
        await raw.send(http("GET", "/api/health", "X-Pad: " + "a" * (15 * 1024)))
        assert (await raw.answer())[0] == 200
    finally:
        raw.close()


# --------------------------------------------------------------------------- 11. validation


def _bus(**top: Any) -> dict[str, Any]:
    entry = {
        "id": "m", "eventId": "e", "timestamp": T0, "source": "s", "eventType": "t",
        "humanSummary": "h", "severity": "info", "category": "c", "createdAt": T0,
    }  # fmt: skip
    entry.update(top.pop("entry", {}))
    return {"type": "messagebus:event", "entry": entry, **top}


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (_bus(executionId=[]), "executionId"),
        (_bus(executionId={}), "executionId"),
        (_bus(executionId=None), "executionId"),
        (_bus(executionId="all"), "reserved"),
        (_bus(entry={"executionId": "global"}), "reserved"),
        (_bus(executionId="e1", entry={"executionId": "e2"}), "belongs to"),
        ({**heartbeat("all")}, "reserved"),
        ({**heartbeat("global")}, "reserved"),
        (
            {"type": "assertion:result", "executionId": "e1", "taskId": "t1", "assertion": {
                "id": "a", "taskId": "t2", "executionId": "e1", "category": "c",
                "description": "d", "result": "pass", "timestamp": T0}},
            "taskId",
        ),
        (
            {"type": "assertion:result", "executionId": "e1", "taskId": "t1", "assertion": {
                "id": "a", "taskId": "t1", "executionId": "e9", "category": "c",
                "description": "d", "result": "pass", "timestamp": T0}},
            "executionId",
        ),
        (
            {"type": "transcript:entry", "executionId": "e1", "entry": {
                "id": "t", "timestamp": T0, "sequence": 1, "executionId": "e2",
                "instanceId": "i", "entryType": "x", "category": "c", "summary": "s"}},
            "executionId",
        ),
    ],
)  # fmt: skip
async def test_inconsistent_or_reserved_ids_are_400(
    server: Server, event: dict[str, Any], words: str
) -> None:
    response = await server.http.post("/api/events", content=orjson.dumps([heartbeat("e1"), event]))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_EVENT"
    assert words in response.json()["error"]
    await _nothing_stored(server)


# --------------------------------------------------------------------------- 1. memory


async def test_recent_events_in_memory_are_bounded_in_bytes() -> None:
    # 4 executions of 30 events of ~200 KiB: 24 MiB of JSON, in a 2 MiB budget.
    async with running_server(buffer_bytes=2 * 1024 * 1024) as srv:
        chunk = "x" * 200_000
        for execution in ("m1", "m2", "m3", "m4"):
            tool = await srv.obs.tools.start(execution, "Bash", "cat big")
            for _ in range(30):
                await srv.obs.tools.output(execution, tool.tool_use_id, chunk)
        _, samples = parse_metrics((await srv.http.get("/metrics")).text)
        assert samples["trio_obs_buffered_bytes"] <= 2 * 1024 * 1024
        # What memory no longer holds is replayed from the store, whole and in order.
        client = await RawClient.connect(srv, "/ws?observability=m1&since=0", connected=True)
        try:
            seqs = [(await client.next_json())["seq"] for _ in range(31)]
        finally:
            await client.aclose()
        assert seqs == list(range(1, 32))
