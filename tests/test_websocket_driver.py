"""The WebSocket driver over ``trio.testing`` memory streams: no socket, the same writer.

A connection is driven exactly as the server drives it (a subscription woken by the
flusher), through :class:`StreamTransport`, with a wsproto client on the other end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import CloseConnection, TextMessage

import trio_obs
from trio_obs.core.frames import text_frame
from trio_obs.core.protocol import GOING_AWAY, SLOW_CONSUMER, SLOW_CONSUMER_CODE
from trio_obs.core.session import greeting
from trio_obs.server.flush import Flusher
from trio_obs.server.metrics import ServerMetrics
from trio_obs.server.transport import StreamTransport
from trio_obs.server.websocket import WebSocketConnection, WriterState

TIMEOUT = 30  # a hang guard, never about speed


class Client:
    """The client end: a wsproto client connection over a memory stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT)
        self.events: list[Any] = []

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def next(self) -> Any:
        with trio.fail_after(TIMEOUT):
            while not self.events:
                data = await self.stream.receive_some(65536)
                self.ws.receive_data(data or None)
                self.events.extend(self.ws.events())
        return self.events.pop(0)

    async def message(self) -> dict[str, Any] | CloseConnection:
        """The next whole text message (as JSON), or the close."""
        parts = []
        while True:
            event = await self.next()
            if isinstance(event, CloseConnection):
                return event
            assert isinstance(event, TextMessage), event
            parts.append(event.data)
            if event.message_finished:
                message: dict[str, Any] = orjson.loads("".join(parts))
                return message

    async def json(self) -> dict[str, Any]:
        message = await self.message()
        assert isinstance(message, dict), message
        return message


@asynccontextmanager
async def connection(
    stream: str = "e1", *, lockstep: bool = False, capacity: int = 64 * 1024, **kw: Any
) -> AsyncIterator[tuple[trio_obs.Observability, WebSocketConnection, Client]]:
    async with trio_obs.open_observability() as obs, trio.open_nursery() as nursery:
        metrics = ServerMetrics(obs.hub, lambda: 1)
        flusher = Flusher(metrics)
        nursery.start_soon(flusher.run)
        sub, _ = await obs.hub.open_subscription(stream, since=0, waker=flusher)
        ours, theirs = (
            trio.testing.lockstep_stream_pair() if lockstep else trio.testing.memory_stream_pair()
        )
        conn = WebSocketConnection(
            StreamTransport(ours, capacity=capacity),
            Connection(ConnectionType.SERVER),
            sub,
            metrics,
            ping_interval=kw.pop("ping_interval", 60.0),
            stall_timeout=kw.pop("stall_timeout", 5.0),
            close_grace=kw.pop("close_grace", 0.5),
        )
        flusher.attach(conn)
        first = greeting(stream, replayed=sub.replay_count, epoch="E", reset=None, now="t")
        nursery.start_soon(conn.run, first)
        yield obs, conn, Client(theirs)
        nursery.cancel_scope.cancel()


async def stall(obs: trio_obs.Observability, conn: WebSocketConnection) -> None:
    """Emit 21 events of 3 kB at a client that does not read, until the writer is closing."""
    tool = await obs.tools.start("e1", "Bash", "yes")
    for i in range(20):
        await obs.tools.output("e1", tool.tool_use_id, f"{i}:" + "x" * 3000)
    with trio.fail_after(TIMEOUT):
        while conn.state is not WriterState.CLOSING:  # noqa: ASYNC110 - the writer's state
            await trio.sleep(0.05)


async def whole_messages_then_slow_close(client: Client) -> CloseConnection:
    """The stalled client reads again: whole messages in seq order, fewer than the 21 sent,
    then the slow consumer's close (returned)."""
    seqs = []
    while not isinstance(message := await client.message(), CloseConnection):
        if "seq" in message:
            seqs.append(message["seq"])
    assert (message.code, message.reason) == (SLOW_CONSUMER_CODE, SLOW_CONSUMER)
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) < 21
    return message


async def test_greeting_then_live_events_through_the_flusher() -> None:
    async with connection() as (obs, conn, client):
        assert (await client.json())["type"] == "observability:connected"
        with trio.fail_after(TIMEOUT):
            while conn.state is not WriterState.IDLE:  # noqa: ASYNC110 - the writer's state
                await trio.sleep(0.01)
        stored = await obs.tools.start("e1", "Bash", "ls")
        message = await client.json()
        assert (message["type"], message["seq"]) == ("tool:start", stored.seq)


async def test_client_messages_are_answered_between_frames() -> None:
    async with connection() as (_, _conn, client):
        await client.json()
        await client.send_text('{"type":"ping"}')
        assert (await client.json())["type"] == "pong"
        await client.send_text('{"action":"subscribe","topic":"waves"}')
        assert (await client.json())["type"] == "observability:subscribed"
        await client.send_text("nonsense")
        assert (await client.json())["code"] == "INVALID_MESSAGE"


async def test_a_stalled_client_is_closed_after_the_frame_in_flight() -> None:
    async with connection(lockstep=True, capacity=1024, stall_timeout=0.3, close_grace=2.0) as (
        obs,
        conn,
        client,
    ):
        await stall(obs, conn)
        assert conn.close_reason is not None and conn.close_reason.code == SLOW_CONSUMER_CODE
        await whole_messages_then_slow_close(client)  # the client reads again


async def test_a_stalled_client_gets_the_close_grace_to_take_the_frame_begun() -> None:
    # A stall timeout shorter than the close grace: the client that reads again after the
    # stall timeout but within the grace still gets the frame begun whole, then the close.
    async with connection(lockstep=True, capacity=1024, stall_timeout=0.2, close_grace=10.0) as (
        obs,
        conn,
        client,
    ):
        await stall(obs, conn)
        assert conn.outbox.begun
        await trio.sleep(1.0)  # the scenario: the client reads again only after 5 stall timeouts
        message = await whole_messages_then_slow_close(client)
        await client.stream.send_all(client.ws.send(message.response()))


async def test_shutdown_finishes_the_started_frame_only() -> None:
    async with connection(lockstep=True, capacity=512) as (obs, conn, client):
        tool = await obs.tools.start("e1", "Bash", "yes")
        for i in range(5):
            await obs.tools.output("e1", tool.tool_use_id, f"{i}:" + "y" * 2000)
        await trio.sleep(0.1)  # some of it is on its way, a frame half written
        conn.shutdown(GOING_AWAY, "server shutting down")
        kinds = []
        while not isinstance(message := await client.message(), CloseConnection):
            kinds.append(message["type"])
        assert message.code == GOING_AWAY
        assert len(kinds) < 7  # the queue was not flushed, only the frame in flight


def test_the_outbox_cuts_to_the_frame_in_flight() -> None:
    from trio_obs.server.websocket import Outbox

    box = Outbox()
    frames = [text_frame(b"a" * 10), text_frame(b"b" * 10), text_frame(b"c" * 10)]
    box.add(frames, written=5)  # 5 bytes of the first frame went out
    box.cut()
    assert b"".join(bytes(v) for v in box.views()) == frames[0][5:]
    box.advance(box.size)
    assert not box
    box.add(frames, written=len(frames[0]))  # a whole frame went out: nothing is started
    box.cut()
    assert not box
