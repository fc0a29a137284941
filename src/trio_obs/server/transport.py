"""How a WebSocket connection's bytes reach the peer: a socket, or any trio stream.

A transport takes frames without blocking (:meth:`try_send`, what the socket buffer
accepts now) and says when it can take more (:meth:`wait_writable`), the way a
non-blocking socket does. :class:`SocketTransport` writes a socket with one
``writev`` per call; :class:`StreamTransport` gives any ``trio.abc.Stream`` (memory
streams in tests) the same shape, with a bounded buffer of its own and a pump task.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios
from collections.abc import Sequence
from typing import Final, Protocol

import trio

_IOV_MAX: Final = 512
_OUTQ: Final = getattr(termios, "TIOCOUTQ", 0x5411)  # SIOCOUTQ on a socket
_READ_SIZE: Final = 65536

Buffer = bytes | memoryview


class Transport(Protocol):
    """The byte pipe under one WebSocket connection."""

    def try_send(self, frames: Sequence[Buffer]) -> int:
        """Send what can be sent now, in order, without blocking; returns the bytes taken.

        Raises ``trio.BrokenResourceError`` when the peer is gone.
        """
        ...

    async def wait_writable(self) -> None:
        """Return when :meth:`try_send` can take something again."""
        ...

    def unsent(self) -> int | None:
        """Bytes taken by :meth:`try_send` that the peer has not taken yet (None: unknown).

        It falls whenever the peer reads, also while the socket is not writable (a
        kernel calls a socket writable only once a good part of its buffer is free).
        """
        ...

    async def receive_some(self) -> bytes:
        """The next bytes from the peer (``b""`` at end of stream)."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work the transport needs while the connection lives (may be none)."""
        ...

    async def aclose(self) -> None:
        """Close the connection (what was taken is delivered first, where possible)."""
        ...


class SocketTransport:
    """A TCP socket: ``writev`` on its descriptor, trio's readiness for waiting."""

    __slots__ = ("_fd", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._fd = stream.socket.fileno()

    def try_send(self, frames: Sequence[Buffer]) -> int:
        try:
            return os.writev(self._fd, frames if len(frames) <= _IOV_MAX else frames[:_IOV_MAX])
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(errno.errorcode.get(exc.errno or 0, "")) from exc

    async def wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self._fd)

    def unsent(self) -> int | None:
        try:  # Linux: bytes in the socket's send queue, sent or not, that the peer has not acked
            (queued,) = struct.unpack("i", fcntl.ioctl(self._fd, _OUTQ, bytes(4)))
        except OSError:
            return None
        return int(queued)

    async def receive_some(self) -> bytes:
        return bytes(await self.stream.receive_some(_READ_SIZE))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class StreamTransport:
    """Any trio stream, behind a buffer of ``capacity`` bytes that a pump task drains.

    ``try_send`` fills the buffer, as a kernel fills a socket buffer; the pump writes it
    to the stream with ``send_all``. A stream whose reader stops fills the buffer, and
    the connection sees a stall exactly as it would on a socket.
    """

    def __init__(self, stream: trio.abc.Stream, *, capacity: int = 64 * 1024) -> None:
        self.stream = stream
        self.capacity = capacity
        self._buffer = bytearray()
        self._has_data = trio.Event()
        self._has_room = trio.Event()
        self._broken = False

    def try_send(self, frames: Sequence[Buffer]) -> int:
        if self._broken:
            raise trio.BrokenResourceError("the stream is closed")
        room = self.capacity - len(self._buffer)
        taken = 0
        for frame in frames:
            if room <= 0:
                break
            part = frame[:room]
            self._buffer += part
            taken += len(part)
            room -= len(part)
        if taken:
            self._has_data.set()
        return taken

    async def wait_writable(self) -> None:
        while len(self._buffer) >= self.capacity and not self._broken:
            self._has_room = trio.Event()
            await self._has_room.wait()

    def unsent(self) -> int | None:
        return len(self._buffer)

    async def receive_some(self) -> bytes:
        return bytes(await self.stream.receive_some(_READ_SIZE))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                while not self._buffer:
                    self._has_data = trio.Event()
                    await self._has_data.wait()
                data = bytes(self._buffer)
                del self._buffer[:]
                self._has_room.set()
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._broken = True
            self._has_room.set()

    async def aclose(self) -> None:
        if self._buffer and not self._broken:
            with trio.move_on_after(1.0):
                await self.stream.send_all(bytes(self._buffer))
        self._buffer.clear()
        await trio.aclose_forcefully(self.stream)
