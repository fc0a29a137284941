"""What the SQLite and Redis hubs share: subscribing through the dispatcher, reading back.

Each hub says where a stream's head is (:meth:`HubCommon.head`) and how to read a range of
stored envelopes (:meth:`HubCommon.read_range`); the rest of the Hub protocol's
subscription and idempotency plumbing is here, once.
"""

from __future__ import annotations

from ..core.protocol import ALL
from ..core.routing import Envelope
from ..core.session import Resume, resume_point
from ..core.stats import HubStats
from .base import Waker
from .dispatch import Dispatcher, LiveSubscription


class HubCommon:
    """The body both hubs share (a base class; not a hub by itself)."""

    dispatcher: Dispatcher

    @property
    def epoch(self) -> str:
        """Names the history: it changes only if the history was lost (SPEC §10)."""
        raise NotImplementedError

    @property
    def ordered_all(self) -> bool:
        """Whether ``all`` has one order, so one global position (SPEC §14); a Redis Cluster's
        partitions have none across them."""
        return True

    @property
    def buffer_size(self) -> int:
        """Events replayed to a new subscriber without ``since``."""
        return self.dispatcher.buffer_size

    @property
    def queue_size(self) -> int:
        """Events a subscriber may fall behind in memory."""
        return self.dispatcher.queue_size

    async def head(self, stream: str) -> int:
        """The seq of the newest stored event of ``stream`` (for ``all``: the newest global
        position), learning the store's epoch on the way."""
        raise NotImplementedError

    async def read_range(self, key: str, *, after: int, upto: int) -> list[Envelope]:
        """Stored envelopes of ``key`` with ``after < seq <= upto``."""
        raise NotImplementedError

    async def open_subscription(
        self,
        stream: str,
        *,
        since: int | None = None,
        epoch: str | None = None,
        queue_size: int | None = None,
        waker: Waker | None = None,
        since_pos: int | None = None,
    ) -> tuple[LiveSubscription, Resume]:
        """Subscribe to an execution, ``global`` or ``all``, resuming after ``since``
        (``all``: after the global position ``since_pos``).

        ``epoch`` is the client's: one of another history (or a ``since`` beyond what is
        stored) gets the subscription's :class:`~trio_obs.core.session.Resume` a reset.
        """
        head = await self.head(stream)
        resume = self._resume(stream, since, epoch, head, since_pos)
        if stream == ALL:
            resume = await self._resume_all(resume, head, since_pos)
        sub = self.dispatcher.subscribe(
            stream, cursor=resume.cursor, head=head, queue_size=queue_size, waker=waker
        )
        return sub, resume

    async def _resume_all(self, resume: Resume, head: int, since_pos: int | None) -> Resume:
        """Where an ``all`` subscription starts, once the store had its say (default: as
        :func:`~trio_obs.core.session.resume_point` said)."""
        return resume

    def _resume(
        self, stream: str, since: int | None, epoch: str | None, head: int, since_pos: int | None
    ) -> Resume:
        if since is not None and since < 0:
            raise ValueError("since must be >= 0")
        if since_pos is not None and since_pos < 0:
            raise ValueError("since_pos must be >= 0")
        return resume_point(
            stream,
            since=since_pos if stream == ALL else since,
            client_epoch=epoch,
            epoch=self.epoch,
            last_seq=head,
            buffer_size=self.buffer_size,
        )

    def _open(
        self,
        stream: str,
        since: int | None,
        epoch: str | None,
        head: int,
        queue_size: int | None,
        waker: Waker | None,
        since_pos: int | None = None,
    ) -> tuple[LiveSubscription, Resume]:
        resume = self._resume(stream, since, epoch, head, since_pos)
        sub = self.dispatcher.subscribe(
            stream, cursor=resume.cursor, head=head, queue_size=queue_size, waker=waker
        )
        return sub, resume

    async def read_back(self, answer: list[tuple[str, int]]) -> list[Envelope]:
        """The envelopes an earlier request stored (its ``(key, seq)`` answer), read back."""
        out: list[Envelope] = []
        i = 0
        while i < len(answer):
            key, first = answer[i]
            j = i
            while j + 1 < len(answer) and answer[j + 1] == (key, answer[j][1] + 1):
                j += 1
            out += await self.read_range(key, after=first - 1, upto=answer[j][1])
            i = j + 1
        return out

    async def settled(self) -> None:
        """Return once what this node began to store before the call is stored and dispatched
        (a barrier; a hub whose publishes are never queued has nothing to wait for)."""
        return

    def stats(self) -> HubStats:
        """Counters for ``/metrics`` (this node's)."""
        return self.dispatcher.snapshot()

    def subscriptions(self) -> list[LiveSubscription]:
        """Every open subscription (this node's)."""
        return self.dispatcher.subscriptions()
