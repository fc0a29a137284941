"""One accepted WebSocket connection: how its events are written, its reader, every close path.

wsproto parses what the client sends and frames control messages; the events the
broker dispatches arrive as envelopes whose text frame was built once for every
client. Writing has two paths, and only one owns the socket at a time:

* the server's flusher calls :meth:`WebSocketConnection.flush` once per dispatch for
  each connection that got events: it drains the connection's channel and writes
  everything with one non-blocking ``write`` -- no task switch per client;
* the connection's writer task owns the socket while it replays, and whenever a
  write would block: it waits until the socket drains, then catches up on the
  queued events, and hands the socket back.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
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
from ._events import (
    GOING_AWAY,
    INTERNAL_ERROR,
    MESSAGE_TOO_BIG,
    SLOW_CONSUMER_CODE,
    UNSUPPORTED_DATA,
)
from ._metrics import ServerMetrics
from ._routing import text_frame

log = logging.getLogger("trio_obs.server")

MAX_CLIENT_MESSAGE: Final = 64 * 1024
CLOSE_TIMEOUT: Final = 1.0
"""How long a closing connection waits for the client's close frame (and a last write)."""


class WebSocketConnection:
    """Serves one subscription over one accepted WebSocket until either side closes."""

    __slots__ = (
        "_broken", "_fd", "_handoff", "_message", "_message_size", "_reader_scope", "_wake",
        "_write_done", "_writer_scope", "_writing", "close_code", "close_reason", "metrics",
        "ping_interval", "request_flush", "stream", "sub", "ws",
    )  # fmt: skip

    def __init__(
        self,
        stream: trio.SocketStream,
        ws: Connection,
        sub: Subscription,
        metrics: ServerMetrics,
        *,
        ping_interval: float,
        request_flush: Callable[[Subscription], None],
    ) -> None:
        self.stream = stream
        self._fd = stream.socket.fileno()
        self.ws = ws
        self.sub = sub
        self.metrics = metrics
        self.ping_interval = ping_interval
        self.request_flush = request_flush
        """Asks the flusher to visit this connection (events wait in its channel)."""
        self.close_code: int | None = None
        self.close_reason = ""
        self._reader_scope = trio.CancelScope()
        self._writer_scope: trio.CancelScope | None = None
        self._writing = True
        """Some task owns the socket for writing (replay first); the flusher keeps off."""
        self._write_done: trio.Event | None = None
        self._handoff: memoryview | None = None
        self._wake = trio.Event()
        self._broken = False
        """A write was cut mid-frame: no more frames can be sent, not even a close."""
        self._message: list[str] = []
        self._message_size = 0

    # ------------------------------------------------------------------ lifecycle

    async def run(self, first: bytes) -> None:
        """Send ``first`` (handshake response + connected frame), then serve until closed."""
        self.sub.on_end = self._on_subscription_end
        try:
            await self._write_view(memoryview(first))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                nursery.start_soon(self._reader)
        finally:
            self.sub.close()
            with trio.CancelScope(shield=True):
                await self._close()

    def shutdown(self, code: int, reason: str) -> None:
        """Close with ``code`` (the first reason wins); an in-flight write gets a moment to end."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self.sub.close()
        self._wake.set()
        if self._writer_scope is not None:
            self._writer_scope.deadline = min(
                self._writer_scope.deadline, trio.current_time() + CLOSE_TIMEOUT
            )
        self._reader_scope.cancel()

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
                    close = CloseConnection(self.close_code, self.close_reason)
                    await self._write_view(memoryview(self.ws.send(close)))
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

    def _drain(self) -> bytes:
        """Everything queued in the channel, as one buffer of frames (counted as sent)."""
        receive_nowait = self.sub.channel.receive_nowait
        batch = []
        try:
            while True:
                batch.append(receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            pass
        if not batch:
            return b""
        counts = self.metrics.events_out
        for env in batch:
            counts[env.event.type] += 1
        if batch[0].born:
            self.metrics.delivery_latency.observe(time.perf_counter() - batch[0].born)
        return b"".join([env.frame for env in batch])

    def _try_write(self, view: memoryview) -> memoryview:
        """Write what the socket takes now; return the rest."""
        try:
            return view[os.write(self._fd, view) :]
        except BlockingIOError:
            return view
        except OSError as exc:
            self._broken = True
            raise trio.BrokenResourceError(errno.errorcode.get(exc.errno or 0, "")) from exc

    def flush(self) -> None:
        """Called by the flusher: write every queued event now, without blocking.

        If the socket cannot take it all, the rest goes to the writer task.
        """
        if self._writing or self._broken or self.close_code is not None:
            return  # the owner of the socket drains the channel before letting go
        data = self._drain()
        if not data:
            return
        try:
            rest = self._try_write(memoryview(data))
        except trio.BrokenResourceError:
            self.shutdown(GOING_AWAY, "connection lost")
            return
        if rest:
            self._writing = True
            self._handoff = rest
            self._wake.set()

    async def _write_view(self, view: memoryview) -> None:
        """Write all of ``view``, parking while the socket is full (socket already owned)."""
        try:
            while True:
                view = self._try_write(view)
                if not view:
                    return
                await trio.lowlevel.wait_writable(self._fd)
        finally:
            if view:
                self._broken = True

    async def _acquire(self) -> None:
        if self._broken:
            raise trio.ClosedResourceError("connection broken")
        while self._writing:
            if self._write_done is None:
                self._write_done = trio.Event()
            await self._write_done.wait()
        self._writing = True

    def _release(self) -> None:
        self._writing = False
        if self._write_done is not None:
            self._write_done.set()
            self._write_done = None
        if self.sub.queue_depth:  # events came while we held the socket
            self.request_flush(self.sub)

    async def _write(self, data: bytes) -> None:
        """Write ``data`` whole from a task (replies, control frames), in turn with the rest."""
        await self._acquire()
        try:
            await self._write_view(memoryview(data))
        finally:
            self._release()

    async def _writer(self) -> None:
        # Shielded: only shutdown() ends the writer (with a deadline for a write to a
        # stalled client), so cancellation never cuts a frame short.
        with trio.CancelScope(shield=True) as scope:
            self._writer_scope = scope
            try:
                await self._replay()
                while self.close_code is None:
                    if self._handoff is not None:
                        view, self._handoff = self._handoff, None
                        await self._write_view(view)
                    data = self._drain()
                    if data:
                        await self._write_view(memoryview(data))
                        continue
                    self._release()
                    await self._wake.wait()
                    self._wake = trio.Event()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass
        self.shutdown(self.close_code or GOING_AWAY, self.close_reason)

    async def _replay(self) -> None:
        sub = self.sub
        counts = self.metrics.events_out
        async for page in sub.replay_pages():
            matches = sub.state.matches
            batch = [env for env in page if matches(env)]
            if batch:
                await self._write_view(memoryview(b"".join([env.frame for env in batch])))
                for env in batch:
                    counts[env.event.type] += 1

    async def _reply(self, message: ev.ServerEvent) -> None:
        await self._write(text_frame(encode(message)))

    # ------------------------------------------------------------------ reading

    async def _reader(self) -> None:
        awaiting_pong = False
        try:
            with self._reader_scope:
                # Frames that came in the same read as the handshake are already parsed.
                for event in self.ws.events():
                    if not await self._handle(event):
                        return
                while True:
                    with trio.move_on_after(self.ping_interval) as idle:
                        data = await self.stream.receive_some(65536)
                    if idle.cancelled_caught:
                        if awaiting_pong:
                            self.metrics.keepalive_closes += 1
                            self.shutdown(INTERNAL_ERROR, "keepalive timeout: no pong")
                            return
                        await self._write(self.ws.send(Ping(b"trio-obs")))
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
        finally:
            # Also reached when the server's nursery is cancelled: end the writer too.
            self.shutdown(GOING_AWAY, "server shutting down")

    async def _handle(self, event: object) -> bool:
        """Handle one wsproto event; False when the connection is closing."""
        if isinstance(event, TextMessage):
            return await self._text(event)
        if isinstance(event, BytesMessage):
            self.shutdown(UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text")
            return False
        if isinstance(event, Ping):
            await self._write(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                self.close_code, self.close_reason = event.code, event.reason or ""
                await self._write(self.ws.send(event.response()))
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
