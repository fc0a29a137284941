"""The Hub protocol: the seam between producers/servers and "order + store + fan-out".

The SQLite hub (:class:`~trio_obs.hub.local.LocalHub`) and the Redis hub implement
it; both fan out through the same :class:`~trio_obs.hub.dispatch.Dispatcher`, so a
subscription behaves the same whichever hub made it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Protocol

from ..core import events as ev
from ..core.routing import Envelope, SubscriptionState
from ..core.search import RunFilters, SearchQuery, SearchResult
from ..core.session import Resume
from ..core.stats import HubStats

if TYPE_CHECKING:
    from .dispatch import Dispatcher


class Waker(Protocol):
    """Told when a subscription has new events (once, until it reads them)."""

    def wake(self, sub: Subscription) -> None:
        """``sub`` has events to take; it is not told again until it calls ``sub.woken()``."""
        ...


class Subscription(Protocol):
    """One subscriber's view of a stream: its cursor, topics and filters.

    Events are taken in seq order after the cursor, from memory while the subscriber
    keeps up and from the store when it has fallen behind: no gap, no duplicate.
    """

    stream: str
    state: SubscriptionState
    marked: bool
    """Whether the waker was told and has not visited yet (the subscription's to write)."""
    end_reason: str | None

    @property
    def cursor(self) -> int:
        """The last seq taken (for ``all``: the last global position ``pos`` passed)."""
        ...

    @property
    def replay_count(self) -> int:
        """How many stored events came before live ones when it was opened (before filters)."""
        ...

    @property
    def queue_depth(self) -> int:
        """Events stored but not yet taken."""
        ...

    def take_nowait(
        self, shared: dict[tuple[str, int], list[Envelope]] | None = None
    ) -> list[Envelope] | None:
        """The wanted events the hub holds in memory after the cursor, advancing it.

        ``[]``: nothing new. ``None``: the next events are only in the store (call
        :meth:`read_behind`). Raises :class:`~trio_obs.SubscriptionEnded` once ended.
        ``shared``: the takes of one round, reused by subscribers at the same point.
        """
        ...

    async def read_behind(self) -> list[Envelope]:
        """One page of wanted events from the store after the cursor, advancing it."""
        ...

    def woken(self) -> None:
        """The waker's call as it visits: the next events tell it again."""
        ...

    def __aiter__(self) -> AsyncIterator[Envelope]: ...

    def close(self) -> None:
        """Stop receiving; safe to call more than once."""
        ...


class Hub(Protocol):
    """Order, store and fan out events; serve subscriptions and reads (SPEC §3, §5, §10)."""

    dispatcher: Dispatcher
    """What fans out this node's events (its ``observers`` are told each one, in order)."""

    @property
    def epoch(self) -> str:
        """Names the history: it changes only if the history was lost (SPEC §10)."""
        ...

    async def publish(
        self, events: Sequence[ev.StreamEvent], *, idempotency_key: str | None = None
    ) -> list[Envelope]:
        """Store ``events`` as one atomic batch, fan them out, and return them stored.

        Raises :class:`~trio_obs.InvalidInput` (nothing stored) for a bad batch and
        :class:`~trio_obs.StoreError` when the store cannot take it (nothing stored), or
        its :class:`~trio_obs.UncertainOutcome` when some of it is, or may be, stored (Redis).
        With an ``idempotency_key`` seen before, nothing is stored and the first answer
        returns (a retry with it completes a batch stored in part).
        """
        ...

    async def open_subscription(
        self,
        stream: str,
        *,
        since: int | None = None,
        epoch: str | None = None,
        queue_size: int | None = None,
        waker: Waker | None = None,
        since_pos: int | None = None,
    ) -> tuple[Subscription, Resume]:
        """Subscribe to an execution, ``global`` or ``all``; also says where it resumed.

        ``since_pos`` (``all`` only): every stored event after that global position first.
        """
        ...

    async def search(self, query: SearchQuery) -> SearchResult:
        """A page of stored events matching ``query``, newest first (SPEC §14)."""
        ...

    async def read(self, stream: str, *, after: int = 0, limit: int = 1000) -> list[bytes]:
        """Stored JSON of a stream's events after a seq, oldest first."""
        ...

    async def executions(
        self, limit: int = 100, filters: RunFilters | None = None
    ) -> list[ev.ExecutionSummary]:
        """Known executions, most recently active first (those that pass ``filters``)."""
        ...

    async def retain(self, max_idle: float) -> list[str]:
        """Delete every execution idle for more than ``max_idle`` seconds; their ids."""
        ...

    async def problem(self) -> str | None:
        """Why events could not be stored right now (a sentence), or None when they can."""
        ...

    async def settled(self) -> None:
        """Return once what this node began to store before the call is stored and
        dispatched (the watchdog's barrier before it judges a silence)."""
        ...

    def stats(self) -> HubStats:
        """Counters for ``/metrics``."""
        ...

    def subscriptions(self) -> Sequence[Subscription]:
        """Every open subscription."""
        ...
