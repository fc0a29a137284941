"""Security and limits (SPEC §3, §6): token, Origin, connection cap, frame/head/idle limits."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url
from wsproto.events import CloseConnection, TextMessage

from support import (
    TIMEOUT,
    RawClient,
    Server,
    close_code,
    heartbeat,
    running_server,
    ws_client,
)
from trio_obs.server.app import is_loopback

TOKEN = "s3cret-t0ken"
HEARTBEAT = orjson.dumps(heartbeat("e1", instanceId="i", status="idle"))
pytestmark = pytest.mark.usefixtures("no_server_errors")

# --------------------------------------------------------------------------- harness


@pytest.fixture(autouse=True)
def no_token_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The server never logs the token, nor a wrong one, even at DEBUG."""
    caplog.set_level(logging.DEBUG, logger="trio_obs")
    yield
    logged = (
        "\n".join(r.getMessage() for when in ("setup", "call") for r in caplog.get_records(when))
        + caplog.text
    )
    assert TOKEN not in logged
    assert "wr0ng" not in logged


async def refused(url: str, headers: list[tuple[bytes, bytes]] | None = None) -> ConnectionRejected:
    """The refusal of a handshake that must be refused."""
    with pytest.raises(ConnectionRejected) as info, trio.fail_after(TIMEOUT):
        async with open_websocket_url(url, extra_headers=headers):
            pass
    body = info.value.body or b""
    assert orjson.loads(body)["error"]
    return info.value


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
    missing = await guarded.http.post("/api/events", content=HEARTBEAT)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].lower().startswith("bearer")
    in_query = await guarded.http.post(f"/api/events?token={TOKEN}", content=HEARTBEAT)
    assert in_query.status_code == 401  # a POST must not carry its secret in the URL
    wrong = await guarded.http.post("/api/events", content=HEARTBEAT, headers={
        "Authorization": "Bearer wr0ng"})  # fmt: skip
    assert wrong.status_code == 401
    assert guarded.obs.broker.last_seq("e1") == 0  # nothing of a refused POST is stored
    ok = await guarded.http.post(
        "/api/events", content=HEARTBEAT, headers={"Authorization": f"Bearer {TOKEN}"}
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


async def test_same_origin_only_when_none_is_configured() -> None:
    # SPEC §6: a web page the user visits must not read the stream (cross-origin).
    async with running_server() as srv:
        foreign = await refused(srv.ws_url(), [(b"Origin", b"http://anywhere.example")])
        assert foreign.status_code == 403
        assert "--allowed-origin" in orjson.loads(foreign.body or b"{}")["error"]
        own = f"http://127.0.0.1:{srv.port}".encode()
        async with ws_client(srv.ws_url(), [(b"Origin", own)]):
            assert await connections(srv) == 1
        async with ws_client(srv.ws_url()):  # no Origin: not a browser
            assert await connections(srv) >= 1


# --------------------------------------------------------------------------- connection cap


async def test_every_socket_counts_toward_max_connections() -> None:
    async with running_server(max_connections=3) as srv:
        assert await connections(srv) == 0  # the test's own HTTP connection: socket 1
        async with ws_client(srv.ws_url("a")), ws_client(srv.ws_url("b")):
            refusal = await refused(srv.ws_url("c"))  # socket 4
            assert refusal.status_code == 503
            async with httpx.AsyncClient(trust_env=False) as other:  # plain HTTP too
                busy = await other.get(srv.url("/api/health"))
            assert busy.status_code == 503
            assert busy.json()["code"] == "UNAVAILABLE"
            assert await connections(srv) == 2  # the sockets already open are served
        # Both closed: the server frees their slots (awaited, not slept on).
        with trio.fail_after(TIMEOUT):
            while await connections(srv):  # noqa: ASYNC110 - nothing to await but the count
                await trio.sleep(0.01)
        async with ws_client(srv.ws_url("c")), ws_client(srv.ws_url("d")):
            assert await connections(srv) == 2
        metrics = (await srv.http.get("/metrics")).text
        assert "trio_obs_sockets_refused_total 2.0" in metrics


# --------------------------------------------------------------------------- client frames


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
            assert await close_code(ws) == 1009
        with trio.fail_after(TIMEOUT):
            while await connections(srv):  # noqa: ASYNC110 - nothing to await but the count
                await trio.sleep(0.01)


async def test_a_fragmented_message_over_64_kib_closes_with_1009() -> None:
    async with running_server() as srv:
        client = await RawClient.connect(srv, connected=True)
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
        client = await RawClient.connect(srv, connected=True)
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


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("", False),
     ("192.168.1.5", False), ("example.com", False)],
)  # fmt: skip
def test_one_rule_says_what_a_loopback_bind_is(host: str, loopback: bool) -> None:
    # The Host check (421) and the "no token beyond loopback" warning both read it.
    assert is_loopback(host) is loopback
