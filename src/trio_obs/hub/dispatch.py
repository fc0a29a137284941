"""Fan-out: stored envelopes to subscribers, in seq order, without ever waiting on one.

The :class:`Dispatcher` keeps the recent envelopes of each stream key (and, while
``all`` subscribers exist, of every key in dispatch order) and wakes the subscribers
that want them. Each :class:`LiveSubscription` has a cursor: it takes what follows it
from memory while it keeps up, and from the store once it has fallen behind (SPEC §4:
falling behind is not a fault), so a subscriber costs no memory of its own and the
seam between replay and live events is exact by construction. An ``all`` subscriber's
cursor is a global position ``pos`` (SPEC §14); one with a live query reads the search
index after its cursor whenever the index says it holds more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import trio

from ..core import events as ev
from ..core.errors import InvalidInput, SubscriptionEnded
from ..core.protocol import ALL, PAGE_BYTES, REPLAY_PAGE, SLOW_CONSUMER
from ..core.routing import Envelope, GlobalLog, StreamLogs, SubscriptionState, within
from ..core.search import SearchQuery, live_query
from ..core.stats import HubStats
from .base import Subscription, Waker


class Source(Protocol):
    """Where subscriptions read what is no longer (or not yet) in memory."""

    async def read_envelopes(self, key: str, *, after: int, limit: int) -> list[Envelope]:
        """Stored envelopes of ``key`` with ``seq > after``, oldest first, at most ``limit``
        (a source that can may also stop at :data:`~trio_obs.core.protocol.PAGE_BYTES`)."""
        ...

    async def read_positions(self, *, after: int, limit: int) -> tuple[list[Envelope], int | None]:
        """Stored events on ``all`` with ``pos > after``, in position order, and the last
        position looked at when there may be more (None: everything stored was read).

        Raises :class:`~trio_obs.SubscriptionEnded` when events after ``after`` are gone.
        """
        ...

    async def matches_after(self, query: SearchQuery, *, after: int, upto: int) -> list[Envelope]:
        """Indexed events matching a live query with ``after < pos <= upto``, oldest
        first, at most ``query.limit``."""
        ...


class Observer(Protocol):
    """Told, in order, what a dispatcher fans out (a Redis node's local search index)."""

    def dispatched(self, envelopes: Sequence[Envelope]) -> None:
        """``envelopes`` were dispatched (never blocks)."""
        ...

    def forgot(self, key: str) -> None:
        """The stream ``key`` was deleted."""
        ...

    def restarted(self) -> None:
        """The history was replaced (a new epoch): everything held is void."""
        ...


SharedTakes = dict[tuple[str, int], list[Envelope]]
"""What subscribers took in one round, by (stream, cursor before): see ``take_nowait``."""


class LiveSubscription:
    """A subscription of the :class:`Dispatcher` (see :class:`~trio_obs.hub.base.Subscription`).

    Iterate it (``async for env in sub``) to get the replayed envelopes and then the
    live ones; it raises :class:`~trio_obs.SubscriptionEnded` if the hub ends it. A
    server instead takes events itself with :meth:`take_nowait` when its waker is told.
    """

    __slots__ = (
        "_cursor", "_event", "_head", "_page", "_reading", "_replayed", "closed", "dispatcher",
        "end_reason", "marked", "queue_size", "state", "stream", "waker",
    )  # fmt: skip

    def __init__(
        self,
        dispatcher: Dispatcher,
        stream: str,
        *,
        cursor: int,
        head: int,
        queue_size: int,
        waker: Waker | None,
    ) -> None:
        self.dispatcher = dispatcher
        self.stream = stream
        """An execution id, ``global``, or ``all``."""
        self.state = SubscriptionState()
        self.queue_size = queue_size
        """How far an ``all`` subscriber may fall behind before it is ended (slow consumer)."""
        self.waker: Waker = waker if waker is not None else self
        self.marked = False
        """Whether the waker was told and has not visited yet (written by :meth:`notify`
        and :meth:`woken` only)."""
        self.end_reason: str | None = None
        self.closed = False
        self._cursor = cursor
        self._head = head
        self._replayed = max(0, head - cursor)
        self._event: trio.Event | None = None
        self._reading: trio.CancelScope | None = None
        self._page = REPLAY_PAGE
        """Events to ask the store for next: as many as fit in PAGE_BYTES, by the last page
        (a source that stops at PAGE_BYTES by itself, as SQLite does, needs no guess)."""

    # ------------------------------------------------------------------ state

    @property
    def cursor(self) -> int:
        """The last seq taken (for ``all``: the last global position ``pos`` passed)."""
        return self._cursor

    @property
    def replay_count(self) -> int:
        """How many stored events came before live ones when it was opened (before filters)."""
        return self._replayed

    @property
    def head(self) -> int:
        """The newest seq (or position) known to exist for this subscription."""
        if self.stream == ALL:
            dispatcher = self.dispatcher
            return dispatcher.query_head if self.state.searching else dispatcher.pos_head
        log = self.dispatcher.logs.get(self.stream)
        return max(self._head, log.last_seq) if log is not None else self._head

    @property
    def queue_depth(self) -> int:
        """Events stored but not yet taken (for ``all``: positions, an upper bound)."""
        return max(0, self.head - self._cursor)

    def subscribe(self, topic: str, update: ev.FilterUpdate | None = None) -> None:
        """Narrow or widen topics and merge filters (SPEC §3)."""
        self.state.subscribe(topic, update)

    def unsubscribe(self, topic: str) -> None:
        """Remove a topic."""
        self.state.unsubscribe(topic)

    # ------------------------------------------------------------------ taking

    def take_nowait(self, shared: SharedTakes | None = None) -> list[Envelope] | None:
        """The wanted events held in memory after the cursor, advancing it.

        ``[]``: nothing new. ``None``: the next events are only in the store (call
        :meth:`read_behind`). Raises :class:`~trio_obs.SubscriptionEnded` once ended.
        ``shared``: one round's takes, so that subscribers of one stream at one cursor
        with no filter (the usual case) share a single list instead of making one each.
        """
        if self.end_reason is not None:
            raise SubscriptionEnded(self.end_reason)
        if shared is not None and self.state.everything:
            at = (self.stream, self._cursor)
            envs = shared.get(at)
            if envs is None:
                envs = self._take()
                if envs:
                    shared[at] = envs
            elif self.stream == ALL:
                self._cursor = envs[-1].pos
            else:
                self._cursor = envs[-1].seq
            return envs
        return self._take()

    def _take(self) -> list[Envelope] | None:
        if self.stream == ALL:
            if self.state.searching:  # the index answers, after what it holds is known
                return [] if self._cursor >= self.dispatcher.query_head else None
            envs = self.dispatcher.global_log.after(self._cursor)
            if envs is None:
                return None  # fallen behind what memory holds: read the store
            if envs:
                envs = within(envs, PAGE_BYTES)
                self._cursor = envs[-1].pos
            return self.state.select(envs)
        log = self.dispatcher.logs.get(self.stream)
        if log is None:
            return [] if self._cursor >= self._head else None
        envs = log.after(self._cursor)
        if envs is None:
            if self._cursor >= max(self._head, log.last_seq):
                return []
            return None
        if not envs:
            # Memory may hold less than the store (a shared store's events reach this
            # dispatcher after a subscriber learned they exist): read the store then.
            return None if self._cursor < self._head else []
        envs = within(envs, PAGE_BYTES)
        self._cursor = envs[-1].seq
        return self.state.select(envs)

    async def read_behind(self) -> list[Envelope]:
        """One page of wanted events from the store after the cursor, advancing it."""
        if self.stream == ALL:
            return await self._read_all()
        # A source may wait for its store to come back; closing the subscription ends that.
        page: list[Envelope] | None = None
        with trio.CancelScope() as self._reading:
            if not self.closed:
                page = await self.dispatcher.source.read_envelopes(
                    self.stream, after=self._cursor, limit=self._page
                )
        self._reading = None
        if page is None:  # closed meanwhile
            return []
        if not page:
            # Nothing stored after the cursor: what we thought existed does not (deleted).
            self._head = self._cursor
            return []
        if page[-1].seq <= self._cursor:  # pragma: no cover - a store returns seq > after
            return []
        page = self._bounded([env for env in page if env.seq > self._cursor])
        self._cursor = page[-1].seq
        self._head = max(self._head, self._cursor)
        return self.state.select(page)

    def _bounded(self, page: list[Envelope]) -> list[Envelope]:
        """What of a page read from the store fits in PAGE_BYTES (at least one event).

        Pages are bounded in bytes, not in events: the next one asks for as many events
        as fit, by this one's sizes (a store that stops at PAGE_BYTES itself needs no
        guess); what did not fit is read again.
        """
        if page:
            size = sum(len(env.data) for env in page)
            self._page = max(1, min(REPLAY_PAGE, PAGE_BYTES * len(page) // max(1, size)))
        return within(page, PAGE_BYTES)

    async def _read_all(self) -> list[Envelope]:
        """One page of ``all`` from the store (or, for a live query, from the index)."""
        source, after, head = self.dispatcher.source, self._cursor, self.head
        if self.closed or after >= head:
            return []
        page: list[Envelope] = []
        last: int | None = None
        with trio.CancelScope() as self._reading:
            try:
                if self.state.searching:
                    query = live_query(self.state.filters, self._page)
                    page = await source.matches_after(query, after=after, upto=head)
                    last = page[-1].pos if len(page) == self._page else None
                else:
                    page, last = await source.read_positions(after=after, limit=self._page)
            except SubscriptionEnded as exc:
                self._end(exc.reason)
                raise
            except InvalidInput as exc:  # pragma: no cover - queries are checked when set
                self._end(str(exc))
                raise SubscriptionEnded(str(exc)) from None
        self._reading = None
        if self.closed:
            return []
        kept = self._bounded(page)
        if len(kept) < len(page):
            last = kept[-1].pos  # what did not fit is read again
        page = kept
        if last is None:  # everything stored was read: live again from the newest known
            last = max(head, page[-1].pos if page else 0)
        self._cursor = max(after, last)
        return self.state.select(page)

    async def take(self) -> list[Envelope]:
        """The next wanted events: waits for some, reads the store when behind.

        Returns ``[]`` only once the subscription is closed.
        """
        while True:
            batch = self.take_nowait()
            if batch is None:
                batch = await self.read_behind()
            if batch:
                return batch
            if self.closed:
                return []
            if self._cursor < self.head:
                continue  # filtered out, or the store had less than announced: look again
            self.woken()
            self._event = trio.Event()
            await self._event.wait()

    # ------------------------------------------------------------------ waking

    def notify(self) -> None:
        """Tell the waker there are events to take: once, until it calls :meth:`woken`."""
        if not self.marked:
            self.marked = True
            self.waker.wake(self)

    def woken(self) -> None:
        """The waker's call as it visits: the next events tell it again."""
        self.marked = False

    def wake(self, sub: Subscription) -> None:
        """The waker of a subscription read by iteration: wake the iterating task."""
        if self._event is not None:
            self._event.set()

    async def __aiter__(self) -> AsyncIterator[Envelope]:
        while batch := await self.take():
            for env in batch:
                yield env
        if self.end_reason is not None:
            raise SubscriptionEnded(self.end_reason)

    async def events(self) -> AsyncIterator[ev.StreamEvent]:
        """Like iterating the subscription, but yields the typed events."""
        async for env in self:
            yield env.event

    def receive_nowait(self) -> list[Envelope]:
        """Everything already dispatched that memory holds (tests, synchronous callers)."""
        try:
            return self.take_nowait() or []
        except SubscriptionEnded:
            return []

    # ------------------------------------------------------------------ ending

    def close(self) -> None:
        """Stop receiving; safe to call more than once."""
        if not self.closed:
            self.closed = True
            self.dispatcher.remove(self)
            if self._event is not None:
                self._event.set()
            if self._reading is not None:
                self._reading.cancel()

    def _end(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
            self.close()
            if self.waker is not self:
                self.notify()  # already told, the waker visits anyway and sees the end

    def __enter__(self) -> LiveSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wake(subs: list[LiveSubscription], envs: list[Envelope]) -> None:
    """Wake each subscriber not yet woken that wants one of ``envs`` (once until it takes).

    Called once per dispatched batch and stream, so a subscriber costs one look per
    batch, not one per event. Live queries are not woken here: the index wakes them
    (:meth:`Dispatcher.indexed`).
    """
    for sub in subs:
        if not sub.marked:
            state = sub.state
            if state.everything or (
                not state.searching and any(state.matches(env) for env in envs)
            ):
                sub.notify()


class Dispatcher:
    """Recent envelopes in memory and the subscribers to wake; shared by every hub.

    A hub calls :meth:`dispatch` with each batch it has stored (or, on Redis, read from
    the fan-out stream), in order. Dispatch never blocks and never waits on anyone.
    """

    def __init__(
        self,
        source: Source,
        *,
        buffer_size: int,
        queue_size: int,
        buffer_bytes: int,
        max_buffers: int = 1000,
        buffer_grace: float = 300.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if buffer_size < 0:
            raise ValueError("buffer_size must be >= 0")
        self.source = source
        self.buffer_size = buffer_size
        self.queue_size = queue_size
        self.logs = StreamLogs(
            max(buffer_size, queue_size),
            max_bytes=buffer_bytes,
            max_keys=max_buffers,
            grace=buffer_grace,
        )
        self.global_log = GlobalLog(queue_size, max_bytes=buffer_bytes)
        self._by_stream: dict[str, list[LiveSubscription]] = {}
        self._all: list[LiveSubscription] = []
        self._shortest_queue = queue_size
        """The smallest queue of the ``all`` subscribers (when to trim their log)."""
        self.pos_head = 0
        """The global position of the newest event dispatched (the hub sets it at start)."""
        self.query_head = 0
        """The newest position the search index holds (:meth:`indexed`)."""
        self.observers: list[Observer] = []
        """Told what is dispatched, deleted and restarted (a Redis node's local index)."""
        self.stats = HubStats()

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self,
        stream: str,
        *,
        cursor: int,
        head: int,
        queue_size: int | None = None,
        waker: Waker | None = None,
    ) -> LiveSubscription:
        """A subscription to ``stream`` that takes events after ``cursor``.

        ``head`` is the newest seq the hub knows stored (what replay reaches); for ``all``,
        ``cursor`` and ``head`` are global positions.
        """
        if stream == ALL and not self._all:
            self.global_log.restart(self.pos_head)  # it holds what is dispatched from now
        sub = LiveSubscription(
            self,
            stream,
            cursor=min(cursor, head),
            head=head,
            queue_size=queue_size or self.queue_size,
            waker=waker,
        )
        if stream == ALL:
            self._all.append(sub)
            self._shortest_queue = min(self._shortest_queue, sub.queue_size)
        else:
            self._by_stream.setdefault(stream, []).append(sub)
        return sub

    def remove(self, sub: LiveSubscription) -> None:
        """Forget ``sub`` (idempotent)."""
        subs = self._all if sub.stream == ALL else self._by_stream.get(sub.stream)
        if subs is None or sub not in subs:
            return
        subs.remove(sub)
        if sub.stream == ALL:
            self._shortest_queue = min((s.queue_size for s in subs), default=self.queue_size)
            if not subs:
                self.global_log.restart(self.pos_head)
        elif not subs:
            del self._by_stream[sub.stream]

    # ------------------------------------------------------------------ dispatching

    def dispatch(self, envelopes: Sequence[Envelope], now: float) -> None:
        """Keep ``envelopes`` (stored, in order) and wake whoever wants them. Never blocks."""
        logs, by_stream, all_subs = self.logs, self._by_stream, self._all
        counts = self.stats.events_in
        glog = self.global_log if all_subs else None
        before = glog.head if glog is not None else 0
        wanted: dict[str, list[Envelope]] = {}
        fresh: list[Envelope] = []
        for env in envelopes:
            logs.append(env, now)
            if env.key in by_stream:
                if (same := wanted.get(env.key)) is None:
                    wanted[env.key] = [env]
                else:
                    same.append(env)
            if env.is_copy:
                continue
            counts[env.event.type] += 1
            if env.pos:
                self.pos_head = env.pos
            if glog is not None:
                glog.append(env)
                fresh.append(env)
        for key, envs in wanted.items():
            _wake(by_stream.get(key, []), envs)
        if glog is not None and fresh:
            _wake(all_subs, fresh)
            if len(glog) > self._shortest_queue or glog.cost > glog.max_bytes:
                self._trim_global(before, len(fresh))
        for observer in self.observers:
            observer.dispatched(envelopes)

    def _trim_global(self, before: int, dispatched: int) -> None:
        """Keep what the ``all`` subscribers still need, within the log's bounds.

        ``before`` is the position the log reached before the last dispatch, of
        ``dispatched`` envelopes. A subscriber within its queue before that dispatch keeps
        the whole of it in memory, even when one group commit is larger than its queue
        (an OTLP request of 512 spans is 1,028 events): memory holds at most a queue and
        one dispatch. A subscriber left behind reads the store by position (SPEC §4:
        falling behind is not a fault). Runs when the log holds more than the shortest queue.
        """
        glog = self.global_log
        # One further behind than its own queue is left to the store: it holds nothing here.
        cursors = [
            sub.cursor
            for sub in self._all
            if not sub.state.searching and before - sub.cursor <= sub.queue_size
        ]
        glog.trim(min(cursors, default=glog.head), extra=dispatched)

    def indexed(self, pos: int) -> None:
        """The search index holds every event up to ``pos``: wake the live queries behind it."""
        if pos <= self.query_head:
            return
        self.query_head = pos
        for sub in self._all:
            if sub.state.searching and sub.cursor < pos:
                sub.notify()

    def expire(self, now: float) -> None:
        """Free the logs of executions that ended long ago."""
        self.logs.expire(now)

    def forget(self, key: str) -> None:
        """A stream was deleted (retention): forget what is held of it, tell the observers."""
        self.logs.clear(key)
        for observer in self.observers:
            observer.forgot(key)

    # ------------------------------------------------------------------ missed events

    def missed(self, heads: dict[str, int]) -> None:
        """Events were stored that this dispatcher never saw (a shared store trimmed them).

        ``heads`` gives the newest stored seq of each stream key that has subscribers:
        those behind it read the store. ``all`` subscribers, who have no replay, are
        ended as slow consumers (their clients fetch what they missed and resume).
        """
        for key, head in heads.items():
            for sub in self._by_stream.get(key, ()):
                sub._head = max(sub._head, head)
                if sub._cursor < head:
                    sub.notify()
        for sub in list(self._all):
            self.stats.slow_closes += 1
            sub._end(SLOW_CONSUMER)

    def restart(self, reason: str) -> None:
        """The store's history was replaced (a new epoch): end every subscription, forget every log.

        Subscribers resume with their epoch and are told the history changed (SPEC §10).
        """
        for sub in self.subscriptions():
            sub._end(reason)
        for key in list(self.logs.keys()):
            self.logs.clear(key)
        self.pos_head = self.query_head = 0
        self.global_log.restart(0)
        for observer in self.observers:
            observer.restarted()

    # ------------------------------------------------------------------ queries

    def listener_count(self, stream: str) -> int:
        """Subscribers of one stream (``all`` included)."""
        return len(self._all) if stream == ALL else len(self._by_stream.get(stream, ()))

    def subscriptions(self) -> list[LiveSubscription]:
        """Every open subscription."""
        return [*self._all, *(s for subs in self._by_stream.values() for s in subs)]

    def snapshot(self) -> HubStats:
        """The counters, with the gauges filled in now."""
        stats = self.stats
        subs = self.subscriptions()
        stats.subscriptions = len(subs)
        stats.replay_buffers = len(self.logs)
        stats.buffered_bytes = self.logs.cost + self.global_log.cost
        return stats
