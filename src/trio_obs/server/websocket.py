"""One accepted WebSocket connection: the wsproto driver and its single socket writer.

The writer owns the socket through one explicit :class:`WriterState`:

* ``BUSY`` -- the writer task has it: the greeting and the replay, catching up from
  the store after falling behind, or the rest of a write the socket could not take;
* ``IDLE`` -- caught up with nothing pending: the server's flusher writes the next
  events itself (one ``writev``, no task switch) when the hub wakes it;
* ``CLOSING`` -- whatever closes the connection, the frame already started is
  finished (only that one), then the close frame follows; if the peer takes nothing
  within a short grace the TCP connection is dropped with nothing appended;
* ``CLOSED`` -- nothing more is written.

A connection that has data waiting and accepts no bytes for ``stall_timeout`` seconds
is closed with 4008 (SPEC §4). What client messages do is decided by the session
(:class:`~trio_obs.core.session.ServerSession`); this module only moves bytes.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Final

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from ..core.errors import SubscriptionEnded
from ..core.protocol import (
    GOING_AWAY,
    INTERNAL_ERROR,
    SHUTTING_DOWN,
    SLOW_CONSUMER,
    SLOW_CONSUMER_CODE,
)
from ..core.routing import Envelope
from ..core.session import Close, KeepAlive, ServerSession
from ..hub.base import Subscription
from ..hub.clock import now_iso
from .metrics import ServerMetrics

if TYPE_CHECKING:
    from .flush import Round
from .transport import Buffer, Transport

log = logging.getLogger("trio_obs.server")

MAX_REPLY_BYTES: Final = 1024 * 1024
"""Replies queued for a connection that does not read: beyond this it is closed (4008)."""
_LOOK_EVERY_MIN: Final = 0.05
"""Seconds at least between two looks at what a stalled peer has taken (a tenth of the
patience, usually)."""


class WriterState(enum.Enum):
    """Who may write the socket now (see the module docstring)."""

    BUSY = "busy"
    IDLE = "idle"
    CLOSING = "closing"
    CLOSED = "closed"


class Outbox:
    """Frames waiting to be written, in order; the first may be partly written already."""

    __slots__ = ("_frames", "_offset", "replies", "size")

    def __init__(self) -> None:
        self._frames: deque[bytes] = deque()
        self._offset = 0
        self.size = 0
        """Bytes waiting."""
        self.replies = 0
        """Bytes of replies (answers to client messages) among them."""

    def __bool__(self) -> bool:
        return bool(self._frames)

    def add(self, frames: list[bytes], *, written: int = 0, reply: bool = False) -> None:
        """Queue ``frames``, of which the first ``written`` bytes were already sent."""
        self._frames.extend(frames)
        added = sum(map(len, frames))
        self.size += added
        if reply:
            self.replies += added
        if written:
            self.advance(written)

    def views(self) -> list[Buffer]:
        """What to write next, as buffers for one ``writev``."""
        frames = self._frames
        if not frames:
            return []
        out: list[Buffer] = [memoryview(frames[0])[self._offset :] if self._offset else frames[0]]
        for i in range(1, min(len(frames), 512)):
            out.append(frames[i])
        return out

    def advance(self, n: int) -> None:
        """``n`` more bytes were written."""
        self.size -= n
        frames = self._frames
        n += self._offset
        while frames and n >= len(frames[0]):
            n -= len(frames.popleft())
        self._offset = n
        if not frames:
            self.replies = 0

    @property
    def begun(self) -> bool:
        """Whether the first frame is partly written (the peer has its start)."""
        return self._offset > 0

    def cut(self) -> None:
        """Keep only the rest of a frame already started (a close follows it)."""
        if self._offset:
            first = self._frames[0]
            self._frames.clear()
            self._frames.append(first)
            self.size = len(first) - self._offset
        else:
            self._frames.clear()
            self.size = 0
        self.replies = 0


class WebSocketConnection:
    """Serves one subscription over one accepted WebSocket until either side closes."""

    __slots__ = (
        "_reader_done", "_reader_scope", "_rest_patience", "_wake", "close_grace", "close_reason",
        "metrics", "outbox", "ping_interval", "session", "stall_timeout", "state", "sub",
        "transport", "ws",
    )  # fmt: skip

    def __init__(
        self,
        transport: Transport,
        ws: Connection,
        sub: Subscription,
        metrics: ServerMetrics,
        *,
        ping_interval: float,
        stall_timeout: float,
        close_grace: float = 2.0,
    ) -> None:
        self.transport = transport
        self.ws = ws
        self.sub = sub
        self.session = ServerSession(sub.stream, sub.state)
        self.metrics = metrics
        self.ping_interval = ping_interval
        self.stall_timeout = stall_timeout
        self.close_grace = close_grace
        self.state = WriterState.BUSY
        self.outbox = Outbox()
        self.close_reason: Close | None = None
        """Why the connection is closing: the code and reason of its close frame (the
        first one given wins)."""
        self._rest_patience = max(stall_timeout, close_grace)
        """Seconds without progress the peer gets to take the rest of a frame begun: never
        less than the close grace (a stall timeout shorter than the grace gave a client
        that read again within the grace a cut frame)."""
        self._wake = trio.Event()
        self._reader_scope = trio.CancelScope()
        self._reader_done = trio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def run(self, first: bytes, received: bytes = b"") -> None:
        """Send ``first`` (handshake answer and greeting), then serve until closed.

        ``received`` is what the client sent after its handshake, in the same read.
        """
        self.outbox.add([first])
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.transport.run)
                nursery.start_soon(self._reader, received)
                await self._writer()
                nursery.cancel_scope.cancel()
        finally:
            self.sub.close()
            self.state = WriterState.CLOSED
            with trio.CancelScope(shield=True):
                await self.transport.aclose()

    def shutdown(self, code: int, reason: str, *, patience: float | None = None) -> None:
        """Close with ``code`` after the frame in progress; safe to call more than once.

        The peer gets the longer of the stall timeout and the close grace (or ``patience``,
        e.g. a stopping server's grace) without taking a byte before the rest of a frame
        begun is given up.
        """
        if self.close_reason is None:
            self.close_reason = Close(code, reason)
        if patience is not None:
            self._rest_patience = min(self._rest_patience, patience)
        if self.state in (WriterState.BUSY, WriterState.IDLE):
            self.outbox.cut()
            self.state = WriterState.CLOSING
        self.sub.close()
        self._wake.set()
        self._reader_scope.cancel()

    def _slow(self, why: str) -> None:
        if self.close_reason is None:
            self.metrics.slow_consumer_closes += 1
            log.info("closing a slow consumer of %s with 4008: %s", self.sub.stream, why)
        self.shutdown(SLOW_CONSUMER_CODE, SLOW_CONSUMER)

    # ------------------------------------------------------------------ writing, fast path

    def flush(self, visit: Round) -> None:
        """Called by the flusher when the subscription has events: write them now if idle.

        ``visit``: the flusher's round, whose takes and frames other connections share.
        """
        if self.state is not WriterState.IDLE:
            return  # the writer takes them itself before it lets go of the socket
        try:
            envs = self.sub.take_nowait(visit.shared)
        except SubscriptionEnded as exc:
            self._ended(exc.reason)
            return
        if envs is None:  # fallen behind what memory holds: the writer reads the store
            self.state = WriterState.BUSY
            self._wake.set()
        elif envs:
            self._send_now(visit.frames_of(envs))

    def _frames(self, envs: list[Envelope]) -> list[bytes]:
        self.metrics.count_out(envs)
        return [env.frame for env in envs]

    def _send_now(self, frames: list[bytes], *, reply: bool = False) -> None:
        """Write while idle; what the socket does not take goes to the writer task."""
        try:
            written = self.transport.try_send(frames)
        except trio.BrokenResourceError:
            self.outbox.cut()
            self.state = WriterState.CLOSED
            self.shutdown(GOING_AWAY, "connection lost")
            return
        if written < (len(frames[0]) if len(frames) == 1 else sum(map(len, frames))):
            self.outbox.add(frames, written=written, reply=reply)
            self.state = WriterState.BUSY
            self._wake.set()

    def reply(self, frame: bytes) -> None:
        """Queue an answer to the client (between event frames, never inside one)."""
        if self.state is WriterState.IDLE:
            self._send_now([frame], reply=True)
        elif self.state is WriterState.BUSY:
            if self.outbox.replies + len(frame) > MAX_REPLY_BYTES:
                self._slow("it sends messages but reads no answers")
                return
            self.outbox.add([frame], reply=True)

    def _ended(self, reason: str) -> None:
        if reason == SLOW_CONSUMER:
            self._slow("its 'all' stream fell behind what the cluster's fan-out stream keeps")
        else:
            self.shutdown(INTERNAL_ERROR, reason)

    # ------------------------------------------------------------------ writing, the task

    async def _writer(self) -> None:
        # Shielded: only shutdown() ends the writer (a frame is never cut by cancellation);
        # every wait below is bounded by the stall timeout or the close grace.
        with trio.CancelScope(shield=True):
            try:
                await self._serve()
                await self._finish()
            except trio.BrokenResourceError:
                self.state = WriterState.CLOSED

    async def _serve(self) -> None:
        sub = self.sub
        while self.state is WriterState.BUSY:
            if self.outbox:
                await self._drain(self.stall_timeout)
                continue
            try:
                frames = await self._next_frames()
            except SubscriptionEnded as exc:
                self._ended(exc.reason)
                continue
            if self.state is not WriterState.BUSY:
                break
            if frames:
                self.outbox.add(frames)
                continue
            if sub.queue_depth > 0:
                continue  # what was read was filtered out: take again
            self.state = WriterState.IDLE
            self._wake = trio.Event()
            await self._wake.wait()

    async def _next_frames(self) -> list[bytes]:
        """The frames of the next wanted events, from memory or a page of the store.

        Only the frames are kept while the socket drains, not the envelopes (whose
        JSON and typed event a page read from the store would hold as well).
        """
        envs = self.sub.take_nowait()
        if envs is None:
            self.metrics.served_from_store += 1
            envs = await self.sub.read_behind()
        return self._frames(envs) if envs else []

    async def _drain(self, patience: float) -> bool:
        """Write the outbox; False when the peer took nothing for ``patience`` seconds.

        Any byte the peer takes is progress (SPEC §4: slow is not a fault), also while
        the socket is not writable: a kernel calls it writable only once a good part
        of its buffer is free, which a reader taking 1 KB/s may need minutes for. So
        while waiting, the bytes the peer has not taken yet are read now and then.
        """
        outbox, transport = self.outbox, self.transport
        last_progress = time.monotonic()
        unsent: int | None = None
        while outbox:
            written = transport.try_send(outbox.views())
            now = time.monotonic()
            if written:
                outbox.advance(written)
                last_progress, unsent = now, None
                continue
            left = transport.unsent()
            if unsent is not None and left is not None and left < unsent:
                last_progress = now  # the peer took bytes the socket had
            unsent = left
            if self.state is WriterState.CLOSING:
                # A frame begun is finished if the peer takes it at all (else it would
                # read a cut frame); the close frame that follows gets a short grace.
                patience = self._rest_patience if outbox.begun else self.close_grace
            remaining = patience - (now - last_progress)
            if remaining <= 0:
                if self.state is not WriterState.CLOSING:
                    self._slow(f"it accepted no bytes for {patience:g} s")
                return False
            with trio.move_on_after(min(remaining, max(_LOOK_EVERY_MIN, patience / 10))):
                await transport.wait_writable()
        return True

    async def _finish(self) -> None:
        """CLOSING: the rest of the frame started, the close frame, the peer's close."""
        if self.state is WriterState.CLOSED:
            return  # the connection broke: nothing more can be written
        close = self.close_reason or Close(GOING_AWAY, SHUTTING_DOWN)
        try:
            if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                self.outbox.add([self.ws.send(CloseConnection(close.code, close.reason))])
        except LocalProtocolError:
            pass
        if not await self._drain(self.close_grace):
            self.state = WriterState.CLOSED  # nothing appended: the TCP close follows
            return
        self.state = WriterState.CLOSED
        # Wait (bounded) for the client's close frame, so it sees a clean close.
        with trio.move_on_after(self.close_grace):
            await self._reader_done.wait()
            while self.ws.state is ConnectionState.LOCAL_CLOSING:
                data = await self.transport.receive_some()
                self.ws.receive_data(data or None)
                for _ in self.ws.events():
                    pass
                if not data:
                    break

    # ------------------------------------------------------------------ reading

    async def _reader(self, received: bytes) -> None:
        keepalive = KeepAlive()
        try:
            with self._reader_scope:
                if received:
                    self.ws.receive_data(received)
                # Frames that came in the same read as the handshake are handled first.
                if not self._handle_events():
                    return
                while True:
                    with trio.move_on_after(self.ping_interval) as idle:
                        data = await self.transport.receive_some()
                    if idle.cancelled_caught:
                        decision = keepalive.silent()
                        if decision is not None:
                            self.metrics.keepalive_closes += 1
                            self.shutdown(decision.code, decision.reason)
                            return
                        self.reply(self.ws.send(Ping(b"trio-obs")))
                        continue
                    keepalive.heard()
                    self.ws.receive_data(data or None)
                    if not self._handle_events():
                        return
                    if not data:
                        self.shutdown(GOING_AWAY, "client went away")
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.shutdown(GOING_AWAY, "connection lost")
        finally:
            self._reader_done.set()
            # Also reached when the server's nursery is cancelled: close in order.
            self.shutdown(GOING_AWAY, SHUTTING_DOWN)

    def _handle_events(self) -> bool:
        """Handle what wsproto parsed; False once the connection is closing."""
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                answer = self.session.text(
                    event.data, finished=event.message_finished, now=now_iso()
                )
                if isinstance(answer, Close):
                    self.shutdown(answer.code, answer.reason)
                    return False
                if answer is not None:
                    self.reply(answer)
            elif isinstance(event, BytesMessage):
                close = self.session.binary()
                self.shutdown(close.code, close.reason)
                return False
            elif isinstance(event, Ping):
                self.reply(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                # The client closes (REMOTE_CLOSING: we answer with its code), or wsproto
                # found a protocol violation and gives the code to close with.
                self.shutdown(event.code, event.reason or "")
                return False
            elif not isinstance(event, Pong):
                log.debug("ignored websocket event %r", event)
        return True
