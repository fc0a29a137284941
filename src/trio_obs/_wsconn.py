"""One accepted WebSocket connection: a writer task, a reader task, and every close path.

wsproto parses what the client sends and frames control messages; the events the
broker dispatches arrive as envelopes whose text frame was built once for every
client. The writer drains everything queued and writes it with one ``send_all``.
"""

from __future__ import annotations

import logging
import time
from typing import Final

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from . import _events as ev
from ._broker import Subscription
from ._codec import encode, parse_client_message
from ._errors import SLOW_CONSUMER, InvalidInput
from ._metrics import ServerMetrics
from ._routing import text_frame

log = logging.getLogger("trio_obs.server")

MAX_CLIENT_MESSAGE: Final = 64 * 1024
WRITE_TIMEOUT: Final = 10.0
"""A write that takes longer than this means the client is gone or stalled."""
CLOSE_TIMEOUT: Final = 1.0
"""How long a closing connection waits for the client's close frame (and a last write)."""

GOING_AWAY: Final = 1001
UNSUPPORTED_DATA: Final = 1003
MESSAGE_TOO_BIG: Final = 1009
INTERNAL_ERROR: Final = 1011
SLOW_CONSUMER_CODE: Final = 4008


class WebSocketConnection:
    """Serves one subscription over one accepted WebSocket until either side closes."""

    __slots__ = (
        "_broken", "_lock", "_message", "_message_size", "_tasks", "_write_scope",
        "close_code", "close_reason", "metrics", "ping_interval", "stream", "sub", "ws",
    )  # fmt: skip

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: Connection,
        sub: Subscription,
        metrics: ServerMetrics,
        *,
        ping_interval: float,
    ) -> None:
        self.stream = stream
        self.ws = ws
        self.sub = sub
        self.metrics = metrics
        self.ping_interval = ping_interval
        self.close_code: int | None = None
        self.close_reason = ""
        self._lock = trio.StrictFIFOLock()
        self._tasks = trio.CancelScope()
        self._write_scope: trio.CancelScope | None = None
        self._broken = False
        """A write was cut mid-frame: no more frames can be sent, not even a close."""
        self._message: list[str] = []
        self._message_size = 0

    # ------------------------------------------------------------------ lifecycle

    async def run(self, first: bytes) -> None:
        """Send ``first`` (handshake response + connected frame), then serve until closed."""
        self.sub.on_end = self._on_subscription_end
        try:
            await self._send(first)
            with self._tasks:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer)
                    nursery.start_soon(self._reader)
        finally:
            self.sub.close()
            with trio.CancelScope(shield=True):
                await self._close()

    def shutdown(self, code: int, reason: str) -> None:
        """Close with ``code`` (the first reason wins); lets an in-flight write finish briefly."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._write_scope is not None:
            self._write_scope.deadline = min(
                self._write_scope.deadline, trio.current_time() + CLOSE_TIMEOUT
            )
        self._tasks.cancel()

    def _on_subscription_end(self, reason: str) -> None:
        if reason == SLOW_CONSUMER:
            self.metrics.slow_consumer_closes += 1
            self.shutdown(SLOW_CONSUMER_CODE, SLOW_CONSUMER)
        else:
            self.shutdown(INTERNAL_ERROR, reason)

    async def _close(self) -> None:
        """The close handshake (bounded in time), then the TCP close."""
        if self.close_code is None:  # cancelled from outside: the server is stopping
            self.close_code, self.close_reason = GOING_AWAY, "server shutting down"
        with trio.move_on_after(CLOSE_TIMEOUT * 2):
            try:
                if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                    await self._send(
                        self.ws.send(CloseConnection(self.close_code, self.close_reason))
                    )
                # Wait for the client's close frame, so the client sees a clean close.
                while self.ws.state is ConnectionState.LOCAL_CLOSING:
                    data = await self.stream.receive_some(65536)
                    self.ws.receive_data(bytes(data) or None)
                    for _ in self.ws.events():
                        pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError):
                pass
        await trio.aclose_forcefully(self.stream)

    # ------------------------------------------------------------------ writing

    async def _send(self, data: bytes) -> None:
        if self._broken:
            raise trio.ClosedResourceError("connection broken")
        async with self._lock:
            # Shielded so that cancellation never cuts a frame in half; the deadline
            # bounds a write to a stalled client.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + WRITE_TIMEOUT) as cs:
                self._write_scope = cs
                try:
                    await self.stream.send_all(data)
                finally:
                    self._write_scope = None
            if cs.cancelled_caught:
                self._broken = True
                self.shutdown(SLOW_CONSUMER_CODE, SLOW_CONSUMER)
                raise trio.ClosedResourceError("write timed out")

    async def _writer(self) -> None:
        sub = self.sub
        counts = self.metrics.events_out
        try:
            async for page in sub.replay_pages():
                matches = sub.state.matches
                batch = [env for env in page if matches(env)]
                if batch:
                    await self._send(b"".join([env.frame for env in batch]))
                    for env in batch:
                        counts[env.event.type] += 1
            receive, receive_nowait = sub.channel.receive, sub.channel.receive_nowait
            observe = self.metrics.delivery_latency.observe
            while self.close_code is None:
                first = await receive()
                batch = [first]
                try:
                    while True:
                        batch.append(receive_nowait())
                except trio.WouldBlock:
                    pass
                await self._send(b"".join([env.frame for env in batch]))
                observe(time.perf_counter() - first.born)
                for env in batch:
                    counts[env.event.type] += 1
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
            self.shutdown(self.close_code or GOING_AWAY, self.close_reason)

    async def _reply(self, message: ev.ServerEvent) -> None:
        await self._send(text_frame(encode(message)))

    # ------------------------------------------------------------------ reading

    async def _reader(self) -> None:
        awaiting_pong = False
        try:
            while True:
                with trio.move_on_after(self.ping_interval) as idle:
                    data = await self.stream.receive_some(65536)
                if idle.cancelled_caught:
                    if awaiting_pong:
                        self.metrics.keepalive_closes += 1
                        self.shutdown(INTERNAL_ERROR, "keepalive timeout: no pong")
                        return
                    await self._send(self.ws.send(Ping(b"trio-obs")))
                    awaiting_pong = True
                    continue
                awaiting_pong = False
                self.ws.receive_data(bytes(data) or None)
                for event in self.ws.events():
                    if not await self._handle(event):
                        return
                if not data:
                    self.shutdown(GOING_AWAY, "client went away")
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.shutdown(GOING_AWAY, "connection lost")

    async def _handle(self, event: object) -> bool:
        """Handle one wsproto event; False when the connection is closing."""
        if isinstance(event, TextMessage):
            return await self._text(event)
        if isinstance(event, BytesMessage):
            self.shutdown(UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text")
            return False
        if isinstance(event, Ping):
            await self._send(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                self.close_code, self.close_reason = event.code, event.reason or ""
                await self._send(self.ws.send(event.response()))
            else:  # wsproto found a protocol violation and reports the code to close with
                self.shutdown(event.code, event.reason or "protocol error")
            self.shutdown(self.close_code or event.code, self.close_reason)
            return False
        elif not isinstance(event, Pong | Message):
            log.debug("ignored websocket event %r", event)
        return True

    async def _text(self, event: Message[str]) -> bool:
        self._message_size += len(event.data.encode())
        if self._message_size > MAX_CLIENT_MESSAGE:
            self.shutdown(MESSAGE_TOO_BIG, f"message over {MAX_CLIENT_MESSAGE} bytes")
            return False
        self._message.append(event.data)
        if not event.message_finished:
            return True
        text = "".join(self._message)
        self._message.clear()
        self._message_size = 0
        reply: ev.ServerEvent
        try:
            msg = parse_client_message(text)
        except InvalidInput as exc:
            reply = ev.ErrorEvent(error=str(exc), code=exc.code)
        else:
            if isinstance(msg, ev.Ping):
                reply = ev.PongEvent()
            elif isinstance(msg, ev.Subscribe):
                self.sub.subscribe(msg.topic, msg.filters)
                reply = ev.SubscribedEvent(
                    topic=msg.topic, execution_id=msg.execution_id or self.sub.stream
                )
            else:
                self.sub.unsubscribe(msg.topic)
                reply = ev.UnsubscribedEvent(topic=msg.topic)
        await self._reply(reply)
        return True
