"""Accepting connections: every socket counts toward a cap, and running out of
descriptors slows accepting down instead of flooding the log (SPEC §6)."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import trio

from ..core.protocol import ERROR_CODE_OF_STATUS
from ..core.wire import error_json

log = logging.getLogger("trio_obs.server")

_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_FIRST_PAUSE: Final = 0.05
_LONGEST_PAUSE: Final = 1.0
_BUSY_BODY: Final = error_json("too many connections; try again later", ERROR_CODE_OF_STATUS[503])
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class ConnectionCap:
    """How many sockets are open, against the most the server takes (``--max-connections``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        """Sockets turned away because the server was full."""

    @property
    def full(self) -> bool:
        """No room for one more."""
        return self.open >= self.limit


async def _refuse(stream: trio.SocketStream) -> None:
    # Over the cap: one short answer, then the socket goes (it never reaches a handler).
    with trio.move_on_after(1.0), contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(_BUSY)
    await trio.aclose_forcefully(stream)


async def _accept_loop(
    listener: trio.SocketListener,
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    cap: ConnectionCap,
    nursery: trio.Nursery,
) -> None:
    pause = 0.0
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _OUT_OF_RESOURCES:
                raise
            if not pause:
                log.warning(
                    "cannot accept connections: %s (open: %d); slowing down until it passes",
                    errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                    cap.open,
                )
            pause = min(max(pause * 2, _FIRST_PAUSE), _LONGEST_PAUSE)
            await trio.sleep(pause)
            continue
        if pause:
            log.info("accepting connections again")
            pause = 0.0
        if cap.full:
            cap.refused += 1
            nursery.start_soon(_refuse, stream)
            continue
        nursery.start_soon(_counted, handler, stream, cap)


async def _counted(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    stream: trio.SocketStream,
    cap: ConnectionCap,
) -> None:
    cap.open += 1
    try:
        await handler(stream)
    finally:
        cap.open -= 1


async def serve_listeners(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    listeners: Sequence[trio.SocketListener],
    cap: ConnectionCap,
) -> None:
    """Accept on every listener until cancelled; each connection runs ``handler``."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, handler, cap, nursery)
