"""The flusher: the one owner of "which connections have events".

It is the waker of every server subscription: the hub tells it which subscriptions
have new events, and one task visits each of their connections once per dispatch,
so a delivery costs no task switch per client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ..core.routing import Envelope
from ..hub.base import Subscription

if TYPE_CHECKING:
    from .websocket import WebSocketConnection


class Flusher:
    """Wakes on dispatch and lets each connection with new events write them."""

    def __init__(self) -> None:
        self._ready: list[Subscription] = []
        self._wanted = trio.Event()
        self._connections: dict[Subscription, WebSocketConnection] = {}

    def attach(self, conn: WebSocketConnection) -> None:
        """Serve ``conn``'s subscription from now on."""
        self._connections[conn.sub] = conn

    def detach(self, conn: WebSocketConnection) -> None:
        """Stop serving ``conn``."""
        self._connections.pop(conn.sub, None)

    def wake(self, sub: Subscription) -> None:
        """The hub's call: ``sub`` has events (it stays marked until visited)."""
        self._ready.append(sub)
        self._wanted.set()

    async def run(self) -> None:
        """Visit every connection that got events, once per wake-up, forever."""
        connections = self._connections
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            ready, self._ready = self._ready, []
            shared: dict[tuple[str, int], list[Envelope]] = {}
            for sub in ready:
                sub.marked = False
                conn = connections.get(sub)
                if conn is not None:
                    conn.flush(shared)
