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
from .metrics import ServerMetrics

if TYPE_CHECKING:
    from .websocket import WebSocketConnection


class _Written:
    """One list of envelopes written in a round: its frames, and to how many connections."""

    __slots__ = ("connections", "envs", "frames")

    def __init__(self, envs: list[Envelope]) -> None:
        self.envs = envs
        self.frames = [env.frame for env in envs]
        self.connections = 0


class Round:
    """One visit of the flusher: takes and frames shared between connections, and the
    deliveries counted once per round instead of once per connection."""

    __slots__ = ("shared", "written")

    def __init__(self) -> None:
        self.shared: dict[tuple[str, int], list[Envelope]] = {}
        """The hub's shared takes (see ``Subscription.take_nowait``)."""
        self.written: dict[int, _Written] = {}
        """By the ``id()`` of each list taken: connections at the same point share one list
        (the round holds it, so its id is not reused before the round ends)."""

    def frames_of(self, envs: list[Envelope]) -> list[bytes]:
        """The frames of ``envs`` for one more connection (made once per list)."""
        written = self.written.get(id(envs))
        if written is None:
            written = self.written[id(envs)] = _Written(envs)
        written.connections += 1
        return written.frames

    def account(self, metrics: ServerMetrics) -> None:
        """Count what this round wrote (and the latency to its last write)."""
        for written in self.written.values():
            metrics.count_out(written.envs, written.connections)


class Flusher:
    """Wakes on dispatch and lets each connection with new events write them."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
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
        """The hub's call: ``sub`` has events (it is not told again until visited)."""
        if not self._ready:
            self._wanted.set()
        self._ready.append(sub)

    async def run(self) -> None:
        """Visit every connection that got events, once per wake-up, forever."""
        connections = self._connections
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            ready, self._ready = self._ready, []
            visit = Round()
            for sub in ready:
                sub.woken()
                conn = connections.get(sub)
                if conn is not None:
                    conn.flush(visit)
            if visit.written:
                visit.account(self.metrics)
