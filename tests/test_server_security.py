"""Security and limits (SPEC §3, §6): token, Origin, connection cap, frame/head/idle limits."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import attrs
import httpx
import orjson
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Request, TextMessage

import trio_obs

TIMEOUT = 10
TOKEN = "s3cret-t0ken"

# --------------------------------------------------------------------------- harness


@attrs.frozen
class Server:
    obs: trio_obs.Observability
    port: int
    http: httpx.AsyncClient

    def ws_url(self, stream: str = "e1", **params: object) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?{urlencode({'observability': stream, **params})}"


@asynccontextmanager
async def running_server(**config: Any) -> AsyncIterator[Server]:
    """A server on a free loopback port, over a fresh in-memory store, with an HTTP client."""
    async with (
        trio_obs.open_observability() as obs,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(trio_obs.serve, obs, trio_obs.ServerConfig(port=0, **config))
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT, trust_env=False
        ) as http:
            yield Server(obs, port, http)
        nursery.cancel_scope.cancel()


@pytest.fixture(autouse=True)
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Any:
    """Whatever a client does, the server logs no error; and it never logs the token."""
    caplog.set_level(logging.DEBUG, logger="trio_obs")
    yield
    errors = [r for r in caplog.records if r.name.startswith("trio_obs") and r.levelno >= 40]
    assert not errors, [r.getMessage() for r in errors]
    assert TOKEN not in caplog.text
    assert "wr0ng" not in caplog.text


@asynccontextmanager
async def ws_client(
    url: str, headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket client whose ``connected`` frame has been read."""
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(url, extra_headers=headers) as ws:
            assert orjson.loads(await ws.get_message())["type"] == "observability:connected"
            yield ws


async def refused(url: str, headers: list[tuple[bytes, bytes]] | None = None) -> ConnectionRejected:
    """The refusal of a handshake that must be refused."""
    with pytest.raises(ConnectionRejected) as info, trio.fail_after(TIMEOUT):
        async with open_websocket_url(url, extra_headers=headers):
            pass
    body = info.value.body or b""
    assert orjson.loads(body)["error"]
    return info.value


async def closed_with(ws: WebSocketConnection) -> int:
    """Read until the server closes; its close code."""
    with trio.fail_after(TIMEOUT):
        while True:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                assert exc.reason is not None
                return exc.reason.code


def heartbeat(e: str = "e1") -> bytes:
    return orjson.dumps(
        {"type": "agent:heartbeat", "executionId": e, "instanceId": "i", "status": "idle"}
    )


async def connections(srv: Server) -> int:
    count: int = (await srv.http.get("/api/health")).json()["connections"]
    return count


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Bearer {token}".encode())]


# --------------------------------------------------------------------------- token


@pytest.fixture
async def guarded() -> AsyncIterator[Server]:
    async with running_server(token=TOKEN) as srv:
        yield srv


async def test_websocket_handshake_without_or_with_a_wrong_token_is_401(guarded: Server) -> None:
    for url, headers in [
        (guarded.ws_url(), None),
        (guarded.ws_url(token="wr0ng"), None),
        (guarded.ws_url(token=""), None),
        (guarded.ws_url(), bearer("wr0ng")),
        (guarded.ws_url(), bearer(TOKEN + "x")),
        (guarded.ws_url(), [(b"Authorization", f"Basic {TOKEN}".encode())]),
        (guarded.ws_url(), [(b"Authorization", TOKEN.encode())]),
    ]:
        refusal = await refused(url, headers)
        assert refusal.status_code == 401, (url, headers)
        assert TOKEN.encode() not in (refusal.body or b"")
    assert await connections(guarded) == 0


async def test_websocket_token_in_header_or_query_is_accepted(guarded: Server) -> None:
    async with ws_client(guarded.ws_url(), bearer(TOKEN)), ws_client(guarded.ws_url(token=TOKEN)):
        assert await connections(guarded) == 2
    async with ws_client(guarded.ws_url(), [(b"authorization", f"bearer {TOKEN}".encode())]):
        pass  # the scheme is case-insensitive


async def test_post_needs_the_bearer_header(guarded: Server) -> None:
    missing = await guarded.http.post("/api/events", content=heartbeat())
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].lower().startswith("bearer")
    in_query = await guarded.http.post(f"/api/events?token={TOKEN}", content=heartbeat())
    assert in_query.status_code == 401  # a POST must not carry its secret in the URL
    wrong = await guarded.http.post("/api/events", content=heartbeat(), headers={
        "Authorization": "Bearer wr0ng"})  # fmt: skip
    assert wrong.status_code == 401
    assert guarded.obs.store.last_seq("e1") == 0  # nothing of a refused POST is stored
    ok = await guarded.http.post(
        "/api/events", content=heartbeat(), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert ok.status_code == 202
    assert ok.json()["seqs"] == [1]


async def test_data_reads_need_the_token_but_health_does_not(guarded: Server) -> None:
    for path in ("/api/executions", "/api/executions/e1/events"):
        assert (await guarded.http.get(path)).status_code == 401
        assert (
            await guarded.http.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        ).status_code == 200
        assert (await guarded.http.get(path, params={"token": TOKEN})).status_code == 200
    assert (await guarded.http.get("/api/health")).status_code == 200


# --------------------------------------------------------------------------- origin


async def test_only_listed_origins_may_open_a_websocket() -> None:
    allowed = ("http://ui.example", "http://localhost:5173")
    async with running_server(allowed_origins=allowed) as srv:
        for origin in allowed:
            async with ws_client(srv.ws_url(), [(b"Origin", origin.encode())]):
                pass
        for origin in ("http://evil.example", "http://ui.example.evil.example",
                       "https://ui.example", "null"):  # fmt: skip
            refusal = await refused(srv.ws_url(), [(b"Origin", origin.encode())])
            assert refusal.status_code == 403, origin


async def test_clients_without_an_origin_are_held_to_the_token_not_the_origin_list() -> None:
    # Browsers always send Origin; terminals and scripts send none.
    async with (
        running_server(allowed_origins=("http://ui.example",)) as srv,
        ws_client(srv.ws_url(), []),
    ):
        assert await connections(srv) == 1


async def test_any_origin_is_accepted_when_none_is_configured() -> None:
    async with (
        running_server() as srv,
        ws_client(srv.ws_url(), [(b"Origin", b"http://anywhere.example")]),
    ):
        assert await connections(srv) == 1


# --------------------------------------------------------------------------- connection cap


async def test_handshakes_beyond_max_connections_get_503() -> None:
    async with running_server(max_connections=2) as srv:
        async with ws_client(srv.ws_url("a")), ws_client(srv.ws_url("b")):
            refusal = await refused(srv.ws_url("c"))
            assert refusal.status_code == 503
            # Plain HTTP is still served at the cap.
            assert await connections(srv) == 2
        # Both closed: the server frees their slots (awaited, not slept on).
        with trio.fail_after(TIMEOUT):
            while await connections(srv):  # noqa: ASYNC110 - nothing to await but the count
                await trio.sleep(0.01)
        async with ws_client(srv.ws_url("c")), ws_client(srv.ws_url("d")):
            assert await connections(srv) == 2
        metrics = (await srv.http.get("/metrics")).text
        assert 'trio_obs_handshakes_refused_total{status="503"} 1.0' in metrics


# --------------------------------------------------------------------------- client frames


class RawClient:
    """A WebSocket client on a bare socket, driven by wsproto."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()

    @classmethod
    async def connect(cls, srv: Server, target: str = "/ws?observability=e1") -> RawClient:
        with trio.fail_after(TIMEOUT):
            client = cls(await trio.open_tcp_stream("127.0.0.1", srv.port))
        await client.send(Request(host=f"127.0.0.1:{srv.port}", target=target))
        assert isinstance(await client.next_event(), AcceptConnection)
        connected = await client.next_event()
        assert isinstance(connected, TextMessage)
        assert orjson.loads(connected.data)["type"] == "observability:connected"
        return client

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self) -> Event:
        with trio.fail_after(TIMEOUT):
            while not self.events:
                data = await self.stream.receive_some(65536)
                self.ws.receive_data(bytes(data) or None)
                self.events.extend(self.ws.events())
        return self.events.popleft()

    async def aclose(self) -> None:
        await self.stream.aclose()


def padded_ping(size: int) -> str:
    """A valid ping message of exactly ``size`` bytes."""
    return '{"type": "ping"}'.ljust(size)


async def test_a_message_of_64_kib_is_read_and_one_byte_more_closes_with_1009() -> None:
    async with running_server() as srv:
        async with ws_client(srv.ws_url()) as ws:
            await ws.send_message(padded_ping(64 * 1024))
            with trio.fail_after(TIMEOUT):
                assert orjson.loads(await ws.get_message())["type"] == "pong"
            await ws.send_message(padded_ping(64 * 1024 + 1))
            assert await closed_with(ws) == 1009
        with trio.fail_after(TIMEOUT):
            while await connections(srv):  # noqa: ASYNC110 - nothing to await but the count
                await trio.sleep(0.01)


async def test_a_fragmented_message_over_64_kib_closes_with_1009() -> None:
    async with running_server() as srv:
        client = await RawClient.connect(srv)
        try:
            part = " " * 30_000
            await client.send(TextMessage(data='{"type": "ping"}' + part, message_finished=False))
            await client.send(TextMessage(data=part, message_finished=False))
            await client.send(TextMessage(data=part, message_finished=True))
            event = await client.next_event()
            assert isinstance(event, CloseConnection)
            assert event.code == 1009
        finally:
            await client.aclose()


async def test_a_fragmented_message_under_the_limit_is_answered() -> None:
    async with running_server() as srv:
        client = await RawClient.connect(srv)
        try:
            await client.send(TextMessage(data='{"type":', message_finished=False))
            await client.send(TextMessage(data=' "ping"}', message_finished=True))
            event = await client.next_event()
            assert isinstance(event, TextMessage)
            assert orjson.loads(event.data)["type"] == "pong"
        finally:
            await client.aclose()


# --------------------------------------------------------------------------- HTTP limits


async def read_response(stream: trio.SocketStream) -> tuple[int, bytes]:
    """Status and body of the one response before the server closes."""
    data = b""
    with trio.fail_after(TIMEOUT):
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_a_request_head_over_16_kib_is_431_and_others_are_served() -> None:
    async with running_server() as srv:
        stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
        async with stream:
            # No blank line yet: the head is still incomplete when it passes the limit.
            await stream.send_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: "
                                  + b"a" * (17 * 1024) + b"\r\n")  # fmt: skip
            status, body = await read_response(stream)
        assert status == 431
        assert orjson.loads(body)["error"]
        assert (await srv.http.get("/api/health")).status_code == 200


async def test_a_websocket_handshake_with_a_huge_head_is_431() -> None:
    async with running_server() as srv:
        stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
        async with stream:
            await stream.send_all(
                b"GET /ws?observability=e1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: " + b"c" * 20_000
            )
            status, _ = await read_response(stream)
        assert status == 431
        assert await connections(srv) == 0


async def test_a_client_that_never_finishes_its_head_is_dropped() -> None:
    async with running_server(head_timeout=0.2) as srv:
        idle = await trio.open_tcp_stream("127.0.0.1", srv.port)
        partial = await trio.open_tcp_stream("127.0.0.1", srv.port)
        async with idle, partial:
            await partial.send_all(b"GET /api/health HTTP/1.1\r\nHost:")
            status, _ = await read_response(partial)
            assert status == 408
            with trio.fail_after(TIMEOUT):
                assert await idle.receive_some(100) == b""  # closed without a word
        assert (await srv.http.get("/api/health")).status_code == 200
