"""The broker: stores each event, then fans it out to subscribers without ever waiting on one.

Subscribers each own one bounded trio memory channel. The store's writer calls
:meth:`Broker._dispatch` after every commit, in commit order; dispatch hands each
matching subscriber the shared :class:`Envelope` with ``send_nowait``. A subscriber
whose channel is full is ended with reason ``slow consumer``; it resumes with
``since=`` and loses nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final, Protocol

import trio

from . import _events as ev
from ._errors import SLOW_CONSUMER, SubscriptionEnded
from ._routing import Envelope, ReplayBuffers, SubscriptionState
from ._store import ExecutionSummary, Store

_REPLAY_PAGE: Final = 500

EndCallback = Callable[[str], None]


class Subscription:
    """One subscriber: its stream, topics and filters, replay range and live channel.

    Iterate it (``async for env in sub``) to get the replayed envelopes and then the
    live ones; it raises :class:`SubscriptionEnded` if the broker ends it. The server
    instead reads :meth:`replay_pages` and :attr:`channel` itself.
    """

    def __init__(
        self,
        broker: Broker,
        stream: str,
        *,
        replay_after: int,
        replay_upto: int,
        queue_size: int,
        ready: list[Subscription] | None = None,
    ) -> None:
        self.broker = broker
        self.stream = stream
        """An execution id, ``global``, or ``all``."""
        self.state = SubscriptionState()
        self.replay_after = replay_after
        self.replay_upto = replay_upto
        send, recv = trio.open_memory_channel[Envelope](queue_size)
        self._send = send
        self.channel: trio.MemoryReceiveChannel[Envelope] = recv
        """Live envelopes (seq > :attr:`replay_upto`) as the broker dispatches them."""
        self.ready = ready
        """If set, the broker appends this subscription to it (once until ``flush_pending``
        is reset) when it queues events, so one task can serve many subscriptions."""
        self.flush_pending = False
        self.end_reason: str | None = None
        self.on_end: EndCallback | None = None
        """Called (synchronously, from dispatch) when the broker ends this subscription."""

    @property
    def replay_count(self) -> int:
        """How many stored events replay yields before live ones (before filters)."""
        return self.replay_upto - self.replay_after

    @property
    def queue_depth(self) -> int:
        """Live envelopes waiting in the channel."""
        return self.channel.statistics().current_buffer_used

    def subscribe(self, topic: str, update: ev.FilterUpdate | None = None) -> None:
        """Narrow or widen topics and merge filters (SPEC §3)."""
        self.state.subscribe(topic, update)

    def unsubscribe(self, topic: str) -> None:
        """Remove a topic."""
        self.state.unsubscribe(topic)

    async def replay_pages(self) -> AsyncIterator[list[Envelope]]:
        """The replay range in pages, from the replay buffer or else the store."""
        after = self.replay_after
        while after < self.replay_upto:
            page = self.broker.buffers.range(
                self.stream, after, min(self.replay_upto, after + _REPLAY_PAGE)
            )
            if page is None:
                page = await self.broker.store.read(
                    self.stream, after=after, limit=_REPLAY_PAGE, upto=self.replay_upto
                )
                if not page:
                    return
            yield page
            after = page[-1].seq

    async def __aiter__(self) -> AsyncIterator[Envelope]:
        matches = self.state.matches
        async for page in self.replay_pages():
            for env in page:
                if matches(env):
                    yield env
        async for env in self.channel:
            yield env
        if self.end_reason is not None:
            raise SubscriptionEnded(self.end_reason)

    async def events(self) -> AsyncIterator[ev.StreamEvent]:
        """Like iterating the subscription, but yields the typed events."""
        async for env in self:
            yield env.event

    def close(self) -> None:
        """Stop receiving; safe to call more than once."""
        self.broker._remove(self)
        self._send.close()

    def _end(self, reason: str) -> None:
        self.end_reason = reason
        self._send.close()
        if self.on_end is not None:
            self.on_end(reason)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hub(Protocol):
    """The seam between producers/servers and "store + fan-out".

    :class:`Broker` is the in-process implementation; a scaled-out one (e.g. on
    Redis) implements the same methods, and the services and the server need no change.
    """

    async def publish(self, events: Sequence[ev.StreamEvent]) -> list[Envelope]:
        """Store ``events`` atomically, fan them out, and return them stored."""
        ...

    def subscribe(
        self,
        stream: str,
        *,
        since: int | None = None,
        queue_size: int | None = None,
        ready: list[Subscription] | None = None,
    ) -> Subscription:
        """Open a subscription to an execution, ``global`` or ``all``."""
        ...

    async def read(self, stream: str, *, after: int = 0, limit: int = 1000) -> list[bytes]:
        """Stored JSON of a stream's events after a seq."""
        ...

    async def executions(self, limit: int = 100) -> list[ExecutionSummary]:
        """Known executions, most recently active first."""
        ...

    def connection_count(self) -> int:
        """Open subscriptions."""
        ...

    def subscriptions(self) -> list[Subscription]:
        """Every open subscription."""
        ...

    dispatch_hooks: list[Callable[[list[Envelope]], None]]
    """Called after every dispatched batch (a server wakes its flusher here)."""


class Broker:
    """In-process store + fan-out (the plan's OBS-600 stream service, fixed).

    Create it over an open :class:`Store`, start :meth:`run` in a nursery (or use
    :func:`trio_obs.open_observability`), then ``publish`` / ``emit_*`` and ``subscribe``.
    """

    def __init__(
        self,
        store: Store,
        *,
        buffer_size: int = 100,
        queue_size: int = 1024,
        max_buffers: int = 1000,
        buffer_grace: float = 300.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.store = store
        self.buffers = ReplayBuffers(buffer_size, max_keys=max_buffers, grace=buffer_grace)
        self.queue_size = queue_size
        self._by_stream: dict[str, list[Subscription]] = {}
        self._all: list[Subscription] = []
        self.dispatch_hooks: list[Callable[[list[Envelope]], None]] = []
        """Called after every dispatched batch (servers: metrics, waking their flusher)."""
        store.listener = self._dispatch

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background upkeep: frees replay buffers of executions that ended long ago."""
        task_status.started()
        while True:
            await trio.sleep(max(1.0, self.buffers.grace / 10))
            self.buffers.expire(trio.current_time())

    # ------------------------------------------------------------------ publishing

    async def publish(self, events: Sequence[ev.StreamEvent]) -> list[Envelope]:
        """Store ``events`` in one transaction and fan them out; return them stored."""
        return await self.store.append(events)

    async def _emit(self, event: ev.StreamEvent) -> ev.StreamEvent:
        return (await self.store.append([event]))[0].event

    def _dispatch(self, envelopes: list[Envelope]) -> None:
        """Called by the store after each commit, in commit order. Never blocks."""
        now = trio.current_time()
        ended: list[tuple[Subscription, str]] = []
        for env in envelopes:
            self.buffers.append(env, now)
            for subs in (self._by_stream.get(env.key, ()), () if env.is_copy else self._all):
                for sub in subs:
                    if sub.state.everything or sub.state.matches(env):
                        try:
                            sub._send.send_nowait(env)
                            if sub.ready is not None and not sub.flush_pending:
                                sub.flush_pending = True
                                sub.ready.append(sub)
                        except trio.WouldBlock:
                            ended.append((sub, SLOW_CONSUMER))
                        except (trio.ClosedResourceError, trio.BrokenResourceError):
                            ended.append((sub, "closed"))
            if ended:
                for sub, reason in ended:
                    if self._remove(sub):
                        sub._end(reason)
                ended.clear()
        for hook in self.dispatch_hooks:
            hook(envelopes)

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self,
        stream: str,
        *,
        since: int | None = None,
        queue_size: int | None = None,
        ready: list[Subscription] | None = None,
    ) -> Subscription:
        """Subscribe to ``stream`` (an execution id, ``global`` or ``all``).

        Replay is the last ``buffer_size`` events, or with ``since=S`` every stored
        event with ``seq > S``; live events follow with no gap and no duplicate.
        ``all`` gets no replay. ``ready``: see :attr:`Subscription.ready`.
        """
        if since is not None and since < 0:
            raise ValueError("since must be >= 0")
        if stream == ev.ALL:
            after = upto = 0
        else:
            upto = self.store.last_seq(stream)
            after = since if since is not None else max(0, upto - self.buffers.depth)
            after = min(after, upto)
        sub = Subscription(
            self,
            stream,
            replay_after=after,
            replay_upto=upto,
            queue_size=queue_size or self.queue_size,
            ready=ready,
        )
        # No checkpoint between reading last_seq and registering: the seam is exact.
        (self._all if stream == ev.ALL else self._by_stream.setdefault(stream, [])).append(sub)
        return sub

    def _remove(self, sub: Subscription) -> bool:
        subs = self._all if sub.stream == ev.ALL else self._by_stream.get(sub.stream)
        if subs is None or sub not in subs:
            return False
        subs.remove(sub)
        if not subs and sub.stream != ev.ALL:
            del self._by_stream[sub.stream]
        return True

    # ------------------------------------------------------------------ queries

    async def read(self, stream: str, *, after: int = 0, limit: int = 1000) -> list[bytes]:
        """Stored JSON of ``stream``'s events with ``seq > after``, at most ``limit``."""
        return await self.store.read_json(stream, after=after, limit=limit)

    async def executions(self, limit: int = 100) -> list[ExecutionSummary]:
        """Known executions, most recently active first."""
        return await self.store.executions(limit)

    def get_buffered_events(self, execution_id: str) -> list[ev.StreamEvent]:
        """The replay buffer of an execution, oldest first (plan: ``getBufferedEvents``)."""
        return [env.event for env in self.buffers.get(execution_id)]

    def clear_buffer(self, execution_id: str) -> None:
        """Drop the replay buffer of an execution (replay then reads the store)."""
        self.buffers.clear(execution_id)

    def get_listener_count(self, execution_id: str) -> int:
        """Subscribers of one execution (plan: ``getListenerCount``)."""
        return len(self._by_stream.get(execution_id, ()))

    def get_global_listener_count(self) -> int:
        """Subscribers of ``all`` (plan: ``getGlobalListenerCount``)."""
        return len(self._all)

    def connection_count(self) -> int:
        """All open subscriptions."""
        return len(self._all) + sum(len(s) for s in self._by_stream.values())

    def subscriptions(self) -> list[Subscription]:
        """Every open subscription (for metrics)."""
        return [*self._all, *(s for subs in self._by_stream.values() for s in subs)]

    # ------------------------------------------------------------------ emit methods (OBS-600)

    async def emit_transcript_entry(
        self, execution_id: str, entry: ev.TranscriptEntry, is_latest: bool = True
    ) -> ev.StreamEvent:
        """Store and broadcast a ``transcript:entry`` event."""
        return await self._emit(
            ev.TranscriptEntryEvent(execution_id=execution_id, entry=entry, is_latest=is_latest)
        )

    async def emit_tool_start(
        self,
        execution_id: str,
        tool_use_id: str,
        tool: str,
        input_summary: str,
        task_id: str | None = None,
    ) -> ev.StreamEvent:
        """Store and broadcast a ``tool:start`` event."""
        return await self._emit(
            ev.ToolStartEvent(
                execution_id=execution_id,
                tool_use_id=tool_use_id,
                tool=tool,
                input_summary=input_summary,
                task_id=task_id,
            )
        )

    async def emit_tool_end(
        self,
        execution_id: str,
        tool_use_id: str,
        result_status: ev.ToolResultStatus,
        duration_ms: float,
        output_summary: str | None = None,
        is_error: bool | None = None,
        is_blocked: bool | None = None,
    ) -> ev.StreamEvent:
        """Store and broadcast a ``tool:end`` event."""
        return await self._emit(
            ev.ToolEndEvent(
                execution_id=execution_id,
                tool_use_id=tool_use_id,
                result_status=result_status,
                duration_ms=duration_ms,
                output_summary=output_summary,
                is_error=is_error,
                is_blocked=is_blocked,
            )
        )

    async def emit_tool_output(
        self, execution_id: str, tool_use_id: str, chunk: str, is_stderr: bool = False
    ) -> ev.StreamEvent:
        """Store and broadcast a ``tool:output`` chunk."""
        return await self._emit(
            ev.ToolOutputEvent(
                execution_id=execution_id, tool_use_id=tool_use_id, chunk=chunk, is_stderr=is_stderr
            )
        )

    async def emit_assertion_result(
        self, execution_id: str, task_id: str, assertion: ev.AssertionResult
    ) -> ev.StreamEvent:
        """Store and broadcast an ``assertion:result``; the store computes the pass rate."""
        return await self._emit(
            ev.AssertionResultEvent(execution_id=execution_id, task_id=task_id, assertion=assertion)
        )

    async def emit_skill_start(
        self,
        execution_id: str,
        skill_trace_id: str,
        skill_name: str,
        skill_file: str,
        line_number: int,
        task_id: str | None = None,
    ) -> ev.StreamEvent:
        """Store and broadcast a ``skill:start`` event."""
        return await self._emit(
            ev.SkillStartEvent(
                execution_id=execution_id,
                skill_trace_id=skill_trace_id,
                skill_name=skill_name,
                skill_file=skill_file,
                line_number=line_number,
                task_id=task_id,
            )
        )

    async def emit_skill_end(
        self,
        execution_id: str,
        skill_trace_id: str,
        skill_name: str,
        status: ev.SkillStatus,
        duration_ms: float,
    ) -> ev.StreamEvent:
        """Store and broadcast a ``skill:end`` event."""
        return await self._emit(
            ev.SkillEndEvent(
                execution_id=execution_id,
                skill_trace_id=skill_trace_id,
                skill_name=skill_name,
                status=status,
                duration_ms=duration_ms,
            )
        )

    async def emit_message_bus_event(
        self, entry: ev.MessageBusLogEntry, requires_action: bool | None = None
    ) -> ev.StreamEvent:
        """Store and broadcast a ``messagebus:event`` (``global`` when it has no execution).

        ``requires_action`` defaults to: severity is ``error`` or ``critical``.
        """
        if requires_action is None:
            requires_action = entry.severity in ev.ACTION_SEVERITIES
        return await self._emit(
            ev.MessageBusEvent(
                execution_id=entry.execution_id or ev.GLOBAL,
                entry=entry,
                requires_action=requires_action,
            )
        )

    async def emit_wave_status(
        self,
        execution_id: str,
        wave_number: int,
        status: ev.WaveState,
        task_count: int,
        completed_count: int,
        failed_count: int,
    ) -> ev.StreamEvent:
        """Store and broadcast a ``wave:status`` event."""
        return await self._emit(
            ev.WaveStatusEvent(
                execution_id=execution_id,
                wave_number=wave_number,
                status=status,
                task_count=task_count,
                completed_count=completed_count,
                failed_count=failed_count,
            )
        )

    async def emit_agent_heartbeat(
        self,
        execution_id: str,
        instance_id: str,
        status: ev.AgentState,
        current_task_id: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> ev.StreamEvent:
        """Store and broadcast an ``agent:heartbeat`` event."""
        return await self._emit(
            ev.AgentHeartbeatEvent(
                execution_id=execution_id,
                instance_id=instance_id,
                status=status,
                current_task_id=current_task_id,
                metrics=metrics,
            )
        )

    async def emit_execution_status(
        self, execution_id: str, status: ev.ExecutionState, message: str | None = None
    ) -> ev.StreamEvent:
        """Store and broadcast an ``execution:status`` event (a copy also goes to ``global``)."""
        return await self._emit(
            ev.ExecutionStatusEvent(execution_id=execution_id, status=status, message=message)
        )
