"""The in-process hub: ledger -> SQLite store -> dispatch, in that order, in one writer task.

Publishing completes the events (checks and history-free derived fields) at once,
then queues them for the writer. The writer takes every batch that queued while the
last commit ran (group commit: batching grows with load, idle events go alone), stages
them with the ledger, writes the rows in one transaction, commits the ledger and
dispatches the envelopes, with no checkpoint between the last three steps.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

import attrs
import trio

from ..core import events as ev
from ..core.errors import InvalidInput, StoreError
from ..core.ledger import Ledger, Stage, complete_batch
from ..core.protocol import (
    ALL,
    DEFAULT_BUFFER_BYTES,
    DEFAULT_BUFFER_SIZE,
    DEFAULT_QUEUE_SIZE,
    PAGE_BYTES,
)
from ..core.routing import Envelope
from ..core.search import RunFilters, SearchQuery, SearchResult
from .base import Waker
from .clock import now_iso
from .common import HubCommon
from .dispatch import Dispatcher, LiveSubscription
from .indexing import build_index
from .sqlite import KeyRow, Store

IDEMPOTENCY_TTL: Final = 24 * 3600.0
"""Seconds an ``Idempotency-Key`` is remembered (SPEC §5)."""
GROUP_EVENTS: Final = 1024
"""A group commit closes once it holds this many events (whole batches): the batches that
queued behind a burst are stored and fanned out in groups of about this size, so that the
first of them does not wait for the commit of all (issue 25)."""
_KEY_CACHE: Final = 10_000


@attrs.define(eq=False)
class _Request:
    events: list[ev.StreamEvent]
    key: str | None
    done: trio.Event = attrs.field(factory=trio.Event)
    result: list[Envelope] | None = None
    repeat_of: list[tuple[str, int]] | None = None
    error: BaseException | None = None


@attrs.define(eq=False)
class _Retain:
    before: float
    done: trio.Event = attrs.field(factory=trio.Event)
    deleted: list[str] = attrs.field(factory=list)
    error: BaseException | None = None


@attrs.define(eq=False)
class _Barrier:
    done: trio.Event = attrs.field(factory=trio.Event)


class LocalHub(HubCommon):
    """The single-node hub over an open :class:`~trio_obs.hub.sqlite.Store`.

    Start :meth:`run` in a nursery (or use :func:`trio_obs.open_observability`), then
    ``publish`` and ``subscribe``.
    """

    def __init__(
        self,
        store: Store,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        max_buffers: int = 1000,
        buffer_grace: float = 300.0,
    ) -> None:
        self.store = store
        activity, has_streams = store.activity()
        last_pos = store.last_pos()
        self.ledger = Ledger(activity=activity, last_pos=last_pos, complete=not has_streams)
        self.dispatcher = Dispatcher(
            self,
            buffer_size=buffer_size,
            queue_size=queue_size,
            buffer_bytes=buffer_bytes,
            max_buffers=max_buffers,
            buffer_grace=buffer_grace,
        )
        # The index is written with the rows: it holds whatever was dispatched.
        self.dispatcher.pos_head = self.dispatcher.query_head = last_pos
        send, self._requests = trio.open_memory_channel[_Request | _Retain | _Barrier](math.inf)
        self._submit = send
        self._keys: OrderedDict[str, list[tuple[str, int]]] = OrderedDict()

    @property
    def epoch(self) -> str:
        """The store's epoch (made with the database; a new ``:memory:`` store has a new one)."""
        return self.store.epoch

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task, and upkeep (freeing old buffers), until cancelled or closed."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._upkeep)
            nursery.start_soon(self.store.keep_wal_small)
            nursery.start_soon(build_index, self.store)
            task_status.started()
            async with self._requests:
                async for first in self._requests:
                    group: list[_Request] = []
                    size = 0
                    item: _Request | _Retain | _Barrier | None = first
                    while item is not None:
                        if isinstance(item, _Barrier):
                            await self._commit(group)
                            group, size = [], 0
                            item.done.set()
                        elif isinstance(item, _Retain):
                            await self._commit(group)
                            group, size = [], 0
                            await self._retain(item)
                        else:
                            group.append(item)
                            size += len(item.events)
                            if size >= GROUP_EVENTS:  # the first batches go out first
                                await self._commit(group)
                                group, size = [], 0
                        try:
                            item = self._requests.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            item = None
                    await self._commit(group)
            nursery.cancel_scope.cancel()

    def close(self) -> None:
        """Take no more events; the writer finishes what is queued, then :meth:`run` returns."""
        self._submit.close()

    async def _upkeep(self) -> None:
        while True:
            await trio.sleep(max(1.0, self.dispatcher.logs.grace / 10))
            self.dispatcher.expire(trio.current_time())
            with contextlib.suppress(StoreError):  # the next round tries again
                await self.store.forget_answers(IDEMPOTENCY_TTL)

    # ------------------------------------------------------------------ publishing

    async def publish(
        self, events: Sequence[ev.StreamEvent], *, idempotency_key: str | None = None
    ) -> list[Envelope]:
        """Store ``events`` in one transaction and fan them out; return them stored.

        Events of ``execution:status`` are followed by their ``global`` copy. Raises
        :class:`~trio_obs.InvalidInput` for a bad batch (nothing stored) and
        :class:`~trio_obs.StoreError` when the store fails.
        """
        if not events:
            return []
        request = _Request(complete_batch(events, now_iso()), idempotency_key)
        await self._handled(request)
        if request.error is not None:
            if isinstance(request.error, InvalidInput):
                raise request.error
            raise StoreError(f"could not store the events: {request.error}") from request.error
        if request.repeat_of is not None:
            return await self.read_back(request.repeat_of)
        assert request.result is not None
        return request.result

    async def settled(self) -> None:
        """Return once every batch handed to the store before this call is stored and
        dispatched (or refused): what was published before it is all there to read."""
        barrier = _Barrier()
        await self._handled(barrier)

    async def _handled(self, request: _Request | _Retain | _Barrier) -> None:
        """Hand ``request`` to the writer and wait until it is done with it."""
        try:
            self._submit.send_nowait(request)
        except trio.ClosedResourceError:
            raise StoreError("the store is closed") from None
        await request.done.wait()

    async def _commit(self, group: list[_Request]) -> None:
        if not group:
            return
        started = time.perf_counter()
        try:
            group = await self._answer_repeats(group)
            batches = [r.events for r in group]
            if streams := self.ledger.unknown_streams(batches):
                self.ledger.learn_streams(await self.store.counters(streams))
            if spans := self.ledger.unknown_spans(batches):
                self.ledger.learn_spans(await self.store.spans(spans))
            stage = self.ledger.stage(batches, wall=time.time())
            keys = self._key_rows(group, stage)
            await self.store.write(stage, keys)
        except BaseException as exc:
            for request in group:
                request.error = exc
                request.done.set()
            if not isinstance(exc, Exception):
                raise
            return
        # Commit the ledger and dispatch in the same step, with no checkpoint between:
        # whoever reads the ledger's last seq sees exactly what was dispatched.
        self.ledger.commit(stage)
        for key, answer in keys:
            self._remember_key(key, answer)
        born = time.perf_counter()
        for env in stage.envelopes:
            env.born = born
        self.dispatcher.stats.commit_latency.observe(born - started)
        if stage.envelopes:
            self.dispatcher.dispatch(stage.envelopes, trio.current_time())
            self.dispatcher.indexed(stage.last_pos)
        for request, outcome in zip(group, stage.results, strict=True):
            if isinstance(outcome, InvalidInput):
                request.error = outcome
            else:
                request.result = outcome
            request.done.set()

    # ------------------------------------------------------------------ retention

    async def retain(self, max_idle: float) -> list[str]:
        """Delete every execution idle for more than ``max_idle`` seconds; their ids.

        Its events, counters, spans and recent events in memory go; ``global`` stays.
        An execution deleted this way that gets events again starts over at seq 1.
        """
        request = _Retain(time.time() - max_idle)
        await self._handled(request)
        if request.error is not None:
            raise StoreError(f"could not apply the retention: {request.error}") from request.error
        return request.deleted

    async def _retain(self, request: _Retain) -> None:
        # In the writer, between groups: nothing is staged for a key while it is deleted.
        try:
            request.deleted = await self.store.delete_idle(request.before)
        except Exception as exc:
            request.error = exc
        else:
            self.ledger.forget(request.deleted)
            for key in request.deleted:
                self.dispatcher.forget(key)
        request.done.set()

    # ------------------------------------------------------------------ idempotency

    async def _answer_repeats(self, group: list[_Request]) -> list[_Request]:
        """Answer requests whose key was accepted before; return the ones to store."""
        unknown = [r.key for r in group if r.key is not None and r.key not in self._keys]
        if unknown:
            for known, answer in (await self.store.answers(unknown, IDEMPOTENCY_TTL)).items():
                self._remember_key(known, answer)
        fresh: list[_Request] = []
        first_of: dict[str, _Request] = {}
        for request in group:
            key = request.key
            if key is not None and key in self._keys:
                request.repeat_of = self._keys[key]
                request.done.set()
            elif key is not None and key in first_of:
                # The same key twice in one group: answer it after this group commits.
                try:
                    self._submit.send_nowait(request)
                except trio.ClosedResourceError:
                    request.error = StoreError("the store is closed")
                    request.done.set()
            else:
                if key is not None:
                    first_of[key] = request
                fresh.append(request)
        return fresh

    @staticmethod
    def _key_rows(group: list[_Request], stage: Stage) -> list[KeyRow]:
        rows: list[KeyRow] = []
        for request, outcome in zip(group, stage.results, strict=True):
            if request.key is not None and not isinstance(outcome, InvalidInput):
                rows.append((request.key, [(e.key, e.seq) for e in outcome if not e.is_copy]))
        return rows

    def _remember_key(self, key: str, answer: list[tuple[str, int]]) -> None:
        self._keys[key] = answer
        self._keys.move_to_end(key)
        if len(self._keys) > _KEY_CACHE:
            self._keys.popitem(last=False)

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self,
        stream: str,
        *,
        since: int | None = None,
        queue_size: int | None = None,
        waker: Waker | None = None,
        since_pos: int | None = None,
    ) -> LiveSubscription:
        """Subscribe to ``stream`` (an execution id, ``global`` or ``all``).

        Replay is the last ``buffer_size`` events, or with ``since=S`` every stored
        event with ``seq > S``; live events follow with no gap and no duplicate.
        ``all`` gets no replay, unless ``since_pos=P``: every stored event after that
        global position (SPEC §14).
        """
        head = self._head_now(stream)
        return self._open(stream, since, None, head, queue_size, waker, since_pos)[0]

    def _head_now(self, stream: str) -> int:
        return self.ledger.last_pos if stream == ALL else self.last_seq(stream)

    async def head(self, stream: str) -> int:
        """The seq of ``stream``'s newest stored event (for ``all``: the newest position)."""
        if stream != ALL and not self.ledger.knows(stream):
            self.ledger.learn_streams(await self.store.counters([stream]))
        return self._head_now(stream)

    # ------------------------------------------------------------------ reads

    async def read_envelopes(self, key: str, *, after: int, limit: int) -> list[Envelope]:
        """Stored envelopes of ``key`` after a seq (subscriptions that fell behind read here),
        at most ``limit`` and, but for the first, no more than fit in ``PAGE_BYTES``."""
        return await self.store.read(key, after=after, limit=limit, max_bytes=PAGE_BYTES)

    async def read_range(self, key: str, *, after: int, upto: int) -> list[Envelope]:
        """Stored envelopes of ``key`` with ``after < seq <= upto``."""
        return await self.store.read(key, after=after, upto=upto)

    async def read_positions(self, *, after: int, limit: int) -> tuple[list[Envelope], int | None]:
        """Stored events on ``all`` after a position (``all`` subscriptions behind read here),
        at most ``limit`` and, but for the first, no more than fit in ``PAGE_BYTES``."""
        page, more = await self.store.read_positions(after=after, limit=limit, max_bytes=PAGE_BYTES)
        return page, (page[-1].pos if more and page else None)

    async def matches_after(self, query: SearchQuery, *, after: int, upto: int) -> list[Envelope]:
        """Stored events matching a live query between two positions, oldest first."""
        return await self.store.matches_after(query, after=after, upto=upto)

    async def search(self, query: SearchQuery) -> SearchResult:
        """Search the stored events (SPEC §14): a page of hits, newest first."""
        return await self.store.search(query)

    async def read(self, stream: str, *, after: int = 0, limit: int = 1000) -> list[bytes]:
        """Stored JSON of ``stream``'s events with ``seq > after``, at most ``limit``."""
        return await self.store.read_json(stream, after=after, limit=limit)

    async def executions(
        self, limit: int = 100, filters: RunFilters | None = None
    ) -> list[ev.ExecutionSummary]:
        """Known executions, most recently active first (those that pass ``filters``)."""
        return await self.store.executions(limit, filters)

    async def problem(self) -> str | None:
        """Why events could not be stored now, or None when they can (the store tries what a
        write needs: the write lock, its tables, room on the disk)."""
        return await self.store.unwritable()

    def last_seq(self, key: str) -> int:
        """The seq of the newest stored event of ``key`` (0 if none).

        Keys whose counters are not in memory are read from the store at once.
        """
        if not self.ledger.knows(key):
            self.ledger.learn_streams(self.store.counters_now([key]))
        return self.ledger.last_seq(key)

    # ------------------------------------------------------------------ the plan's queries

    def get_buffered_events(self, execution_id: str) -> list[ev.StreamEvent]:
        """An execution's recent events held in memory, oldest first (``getBufferedEvents``)."""
        envs = self.dispatcher.logs.newest(execution_id)
        return [env.event for env in envs[-self.buffer_size :]] if self.buffer_size else []

    def clear_buffer(self, execution_id: str) -> None:
        """Drop the recent events of an execution held in memory (replay then reads the store)."""
        self.dispatcher.logs.clear(execution_id)

    def get_listener_count(self, execution_id: str) -> int:
        """Subscribers of one execution (plan: ``getListenerCount``)."""
        return self.dispatcher.listener_count(execution_id)

    def get_global_listener_count(self) -> int:
        """Subscribers of ``all`` (plan: ``getGlobalListenerCount``)."""
        return self.dispatcher.listener_count(ALL)

    def connection_count(self) -> int:
        """All open subscriptions."""
        return len(self.dispatcher.subscriptions())
