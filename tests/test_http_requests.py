"""An HTTP request is always answered once it has arrived; only reading it has a deadline.

Raw sockets, so nothing hides what the server sends: a request handled for longer than
any timeout is answered (and its batch stored once), a body that does not arrive within
``--read-timeout`` is answered 408 and stores nothing, and a stop answers what began.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import h11
import orjson
import pytest
import trio
import trio.testing

from support import Server, heartbeat, running_server
from trio_obs.server.http import HttpConnection, HttpError, Request, fast_head

LONG = 240  # seconds: 216,000 events on a loaded 2-core machine (a minute once seen)

pytestmark = pytest.mark.usefixtures("no_server_errors")


def post_head(srv: Server, length: int) -> bytes:
    return (
        f"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


async def answer_of(stream: trio.SocketStream) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the one answer before the server closes."""
    data = b""
    with trio.fail_after(LONG):  # a hang guard: the server works through 216,000 events
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, "the connection was closed without an answer"
    return int(head.split()[1]), orjson.loads(body)


@pytest.mark.timeout(LONG + 60)
async def test_concurrent_large_posts_are_all_answered_however_long_they_take() -> None:
    # 24 POSTs of ~940 KB (9,000 small events each) at once take the writer seconds: each
    # is answered, never cut (a producer that hears nothing retries and stores twice).
    batches = [orjson.dumps([heartbeat(f"big{n}", instanceId=f"agent-{i:05}-of-batch")
                             for i in range(9000)]) for n in range(24)]  # fmt: skip
    assert all(900_000 < len(b) < 1024 * 1024 for b in batches)
    answers: list[tuple[int, dict[str, Any]]] = []
    async with running_server(shutdown_timeout=0.5) as srv:

        async def post(body: bytes) -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
            async with stream:
                await stream.send_all(post_head(srv, len(body)) + body)
                answers.append(await answer_of(stream))

        async with trio.open_nursery() as nursery:
            for body in batches:
                nursery.start_soon(post, body)
        assert [status for status, _ in answers] == [202] * 24
        assert all(answer["accepted"] == 9000 for _, answer in answers)
        for n in range(24):
            assert srv.obs.broker.last_seq(f"big{n}") == 9000  # each stored once


async def test_a_body_that_does_not_arrive_in_time_is_408_and_stores_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_obs")
    body = orjson.dumps([heartbeat("slow")])
    async with running_server(read_timeout=0.5) as srv:
        stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
        async with stream, trio.open_nursery() as nursery:

            async def trickle() -> None:
                # Paced, as a stuck producer sends: a few bytes now and then, never all.
                await stream.send_all(post_head(srv, len(body)) + body[:5])
                with contextlib.suppress(trio.BrokenResourceError):  # answered and closed
                    for byte in body[5:-1]:
                        await stream.send_all(bytes([byte]))
                        await trio.sleep(0.1)

            nursery.start_soon(trickle)
            status, answer = await answer_of(stream)
            nursery.cancel_scope.cancel()
        assert status == 408
        assert answer["code"] == "TIMEOUT"
        assert "within 0.5 s" in answer["error"]
        assert srv.obs.broker.last_seq("slow") == 0
        assert (await srv.http.get("/api/executions")).json() == []
    assert any("answered 408" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- at a stop


async def request_in_flight(
    *, read_timeout: float = 60.0
) -> tuple[HttpConnection, trio.testing.MemorySendStream, bytes]:
    """A server-side connection whose request head was read; the client's side; the body."""
    client, server = trio.testing.memory_stream_pair()
    http = HttpConnection(server, idle_timeout=10, read_timeout=read_timeout)
    body = orjson.dumps([heartbeat("late")])
    head = (
        "POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    await client.send_all(head + body[:10])
    assert await http.next_request() is not None
    return http, client, body[10:]


async def test_a_body_being_read_at_a_stop_is_still_read(autojump_clock: Any) -> None:
    http, client, rest = await request_in_flight()
    got: list[bytes] = []
    server_task = trio.CancelScope()
    async with trio.open_nursery() as nursery:

        async def handler(*, task_status: trio.TaskStatus[None]) -> None:
            with server_task:
                task_status.started()
                got.append(await http.read_body(head_of(http), 1 << 20))

        await nursery.start(handler)
        server_task.cancel()  # the server stops: its tasks are cancelled...
        http.hurry(trio.current_time() + 3)  # ...and requests being read get 3 s
        await trio.sleep(1)
        await client.send_all(rest)
    assert got and got[0].endswith(rest)


async def test_a_body_that_does_not_come_at_a_stop_is_408_at_the_shutdown_timeout(
    autojump_clock: Any,
) -> None:
    http, _client, _ = await request_in_flight(read_timeout=60)
    http.hurry(trio.current_time() + 3)
    started = trio.current_time()
    with pytest.raises(HttpError) as refused:
        await http.read_body(head_of(http), 1 << 20)
    assert refused.value.status == 408 and "stopping" in str(refused.value)
    assert trio.current_time() - started == pytest.approx(3)  # not the read timeout's 60 s


def head_of(http: HttpConnection) -> Request:
    """A request head like the one read (read_body needs only its headers)."""
    return Request("POST", "/api/events", "/api/events", {}, {}, b"")


# --------------------------------------------------------------------------- the fast path

_POST = b"POST /api/events?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    ("head", "fast"),
    [
        (_POST + b"Content-Length: 2\r\n\r\n", True),
        (_POST + b"Content-Length: 2\r\nConnection: keep-alive\r\n\r\n", True),
        (_POST + b"Content-Length: 2\r\nConnection: close\r\n\r\n", False),
        (_POST + b"Transfer-Encoding: chunked\r\n\r\n", False),
        (_POST + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n", False),
        (_POST + b"Content-Length: 2\r\nHost: other\r\n\r\n", False),
        (_POST + b"Content-Length: -2\r\n\r\n", False),
        (_POST + b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n", False),
        (_POST + b"Content-Length : 2\r\n\r\n", False),
        (_POST + b" folded\r\nContent-Length: 2\r\n\r\n", False),
        (b"POST /api/events HTTP/1.1\r\nContent-Length: 2\r\n\r\n", False),
        (b"POST /api/events HTTP/1.0\r\nHost: a\r\nContent-Length: 2\r\n\r\n", False),
        (b"GET /api/events HTTP/1.1\r\nHost: a\r\n\r\n", False),
        (b"POST /api/events HTTP/1.1\nHost: a\nContent-Length: 2\n\n", False),
    ],
)
def test_the_fast_path_takes_only_the_plain_post(head: bytes, fast: bool) -> None:
    found = fast_head(head + b"[]")
    assert isinstance(found, tuple) == fast
    if isinstance(found, tuple):
        request, length = found
        assert (request.method, request.path, request.query, length) == (
            "POST", "/api/events", {"x": ["1"]}, 2,
        )  # fmt: skip
        assert request.headers["content-type"] == "application/json"
        assert request.raw[request.head_size :] == b"[]"


def test_a_head_in_pieces_waits_for_the_rest() -> None:
    assert fast_head(_POST[:20]) == "need more"


async def test_pipelined_posts_are_answered_in_order_and_as_h11_would() -> None:
    client, server = trio.testing.memory_stream_pair()
    http = HttpConnection(server, idle_timeout=10, read_timeout=10)
    one = _POST + b"Content-Length: 2\r\n\r\n[]"
    await client.send_all(one + one[:30])  # the second one arrives in pieces
    answers = []
    for n in range(3):
        if n == 1:
            await client.send_all(one[30:])
        if n == 2:  # then one that only h11 takes, on the same connection
            await client.send_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        request = await http.next_request()
        assert request is not None
        body = await http.read_body(request, 1000)
        await http.respond(202, b'{"n":%d}' % n, headers=[("retry-after", "1")])
        assert http.reusable
        answers.append((request.method, body))
    assert answers == [("POST", b"[]"), ("POST", b"[]"), ("GET", b"")]
    got = await client.receive_some(65536)
    for n in range(3):
        h = h11.Connection(h11.SERVER)
        h.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        h.next_event()
        headers = [
            ("content-type", "application/json"), ("content-length", "7"),
            ("cache-control", "no-store"), ("retry-after", "1"),
        ]  # fmt: skip
        expected = h.send(h11.Response(status_code=202, headers=headers, reason="Accepted"))
        expected += h.send(h11.Data(data=b'{"n":%d}' % n)) + h.send(h11.EndOfMessage())
        assert expected in got  # byte for byte what h11 writes


async def test_a_fast_post_with_a_bad_body_is_answered_and_the_connection_kept() -> None:
    async with running_server() as srv:
        for _ in range(2):  # httpx keeps the connection: the fast path both times
            bad = await srv.http.post(
                "/api/events", content=b"[{", headers={"content-type": "application/json"}
            )
            assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
        good = await srv.http.post("/api/events", json=[heartbeat("fast")])
        assert good.status_code == 202
