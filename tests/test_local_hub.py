"""The SQLite hub (``hub.local``): replay buffers, exactly-once routing, topics and filters,
exact replay seams, slow consumers and concurrent producers (SPEC §3, §4, §9)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from support import EXECUTION, bus_record, collect_envelopes, collect_seqs, drain, transcript_record
from trio_obs import ALL, GLOBAL, EmittingHub, Observability, open_observability
from trio_obs.core import events as ev
from trio_obs.core.ledger import Stage
from trio_obs.core.routing import Envelope
from trio_obs.hub.local import GROUP_EVENTS, LocalHub

# --------------------------------------------------------------------------- buffers


async def test_buffer_keeps_events_for_replay(broker: EmittingHub) -> None:
    await broker.emit_transcript_entry(EXECUTION, transcript_record(1), True)
    buffered = broker.get_buffered_events(EXECUTION)
    assert [e.type for e in buffered] == ["transcript:entry"]


async def test_buffer_is_limited_to_100_and_drops_the_oldest(broker: EmittingHub) -> None:
    for i in range(150):
        await broker.emit_transcript_entry(EXECUTION, transcript_record(i), True)
    buffered = broker.get_buffered_events(EXECUTION)
    assert len(buffered) == 100
    assert buffered[0].entry.sequence == 50  # type: ignore[union-attr]
    assert [e.seq for e in buffered] == list(range(51, 151))


async def test_clear_buffer(broker: EmittingHub) -> None:
    await broker.emit_transcript_entry(EXECUTION, transcript_record(1), True)
    broker.clear_buffer(EXECUTION)
    assert broker.get_buffered_events(EXECUTION) == []
    # Nothing is lost: replay now reads the store.
    with broker.subscribe(EXECUTION) as sub:
        assert await collect_seqs(sub, 1) == [1]


async def test_execution_status_reaches_execution_all_and_global_once_each(
    broker: EmittingHub,
) -> None:
    with (
        broker.subscribe(EXECUTION) as execution,
        broker.subscribe(ALL) as everything,
        broker.subscribe(GLOBAL) as global_,
    ):
        stored = await broker.emit_execution_status(EXECUTION, "started")
        got = {
            name: drain(sub) for name, sub in [("e", execution), ("a", everything), ("g", global_)]
        }
    assert [env.event for env in got["e"]] == [stored]
    assert [env.event for env in got["a"]] == [stored]
    [copy] = got["g"]
    assert copy.is_copy
    assert (copy.key, copy.event.execution_id, copy.event.type) == (
        GLOBAL,
        EXECUTION,
        "execution:status",
    )


# --------------------------------------------------------------------------- exactly once


async def test_routing_is_exactly_once(broker: EmittingHub) -> None:
    subs = {
        "a": broker.subscribe("exec-a"),
        "b": broker.subscribe("exec-b"),
        ALL: broker.subscribe(ALL),
        GLOBAL: broker.subscribe(GLOBAL),
    }
    published = []
    published += await broker.publish(
        [ev.ExecutionStatusEvent(execution_id="exec-a", status="started")]
    )
    published += [await broker.emit_tool_start("exec-a", "tu1", "Read", "x")]  # type: ignore[list-item]
    published += await broker.publish(
        [
            ev.WaveStatusEvent(
                execution_id="exec-b",
                wave_number=1,
                status="running",
                task_count=1,
                completed_count=0,
                failed_count=0,
            ),
            ev.ExecutionStatusEvent(execution_id="exec-b", status="completed"),
        ]
    )
    await broker.emit_message_bus_event(bus_record(None))
    await broker.emit_message_bus_event(bus_record("exec-a"))
    got = {name: drain(sub) for name, sub in subs.items()}
    for sub in subs.values():
        sub.close()

    def ids(envs: list[Envelope]) -> list[tuple[str, int]]:
        return [(env.key, env.seq) for env in envs]

    assert ids(got["a"]) == [("exec-a", 1), ("exec-a", 2), ("exec-a", 3)]
    assert all(env.event.execution_id == "exec-a" for env in got["a"])
    assert ids(got["b"]) == [("exec-b", 1), ("exec-b", 2)]
    assert ids(got[GLOBAL]) == [(GLOBAL, 1), (GLOBAL, 2), (GLOBAL, 3)]
    assert [env.is_copy for env in got[GLOBAL]] == [True, True, False]
    # all: every event once, the global copies never, execution-less bus events too.
    assert ids(got[ALL]) == [
        ("exec-a", 1),
        ("exec-a", 2),
        ("exec-b", 1),
        ("exec-b", 2),
        (GLOBAL, 3),
        ("exec-a", 3),
    ]
    assert not any(env.is_copy for env in got[ALL])
    assert len({id(env) for env in got[ALL]}) == len(got[ALL])


async def test_all_gets_no_replay(broker: EmittingHub) -> None:
    await broker.emit_execution_status(EXECUTION, "running")
    with broker.subscribe(ALL, since=0) as sub:
        assert sub.replay_count == 0
        await broker.emit_execution_status(EXECUTION, "completed")
        assert await collect_seqs(sub, 2) == [2]


# --------------------------------------------------------------------------- topics and filters


async def emit_mixed(broker: EmittingHub, execution_id: str = EXECUTION) -> None:
    await broker.emit_transcript_entry(execution_id, transcript_record(1, execution_id))
    await broker.emit_tool_start(execution_id, "tu-read", "Read", "x", task_id="task-1")
    await broker.emit_tool_output(execution_id, "tu-read", "data")
    await broker.emit_tool_start(execution_id, "tu-bash", "Bash", "ls", task_id="task-2")
    await broker.emit_tool_end(execution_id, "tu-bash", "done", 1)
    await broker.emit_tool_end(execution_id, "tu-read", "done", 1)
    await broker.emit_wave_status(execution_id, 1, "running", 2, 0, 0)


async def test_topic_narrowing_and_widening(broker: EmittingHub) -> None:
    with broker.subscribe(EXECUTION) as sub:
        sub.subscribe("tools")
        await emit_mixed(broker)
        assert {env.topic for env in drain(sub)} == {"tools"}
        sub.subscribe("waves")
        await emit_mixed(broker)
        assert {env.topic for env in drain(sub)} == {"tools", "waves"}
        sub.subscribe("all")
        await emit_mixed(broker)
        assert {env.topic for env in drain(sub)} == {"transcript", "tools", "waves"}
        sub.unsubscribe("all")
        await emit_mixed(broker)
        assert drain(sub) == []


async def test_tools_filter_also_drops_end_and_output_of_other_tools(broker: EmittingHub) -> None:
    with broker.subscribe(EXECUTION) as sub:
        sub.subscribe("tools", ev.FilterUpdate({"tools": frozenset({"Read"})}))
        await emit_mixed(broker)
        got = [(env.event.type, env.tool) for env in drain(sub)]
    assert got == [("tool:start", "Read"), ("tool:output", "Read"), ("tool:end", "Read")]


async def test_task_filter_uses_the_task_of_the_tool_use(broker: EmittingHub) -> None:
    with broker.subscribe(ALL) as sub:
        sub.subscribe("tools", ev.FilterUpdate({"task_id": "task-2"}))
        await emit_mixed(broker)
        got = [(env.event.type, env.task_id) for env in drain(sub)]
    assert got == [("tool:start", "task-2"), ("tool:end", "task-2")]


async def test_replay_applies_topics_and_filters(broker: EmittingHub) -> None:
    await emit_mixed(broker)
    with broker.subscribe(EXECUTION, since=0) as sub:
        sub.subscribe("tools", ev.FilterUpdate({"tools": frozenset({"Bash"})}))
        await broker.emit_tool_start(EXECUTION, "tu-2", "Bash", "pwd")
        got = [env.event.type for env in await collect_envelopes(sub, 8)]
    assert got == ["tool:start", "tool:end", "tool:start"]


# --------------------------------------------------------------------------- replay seams


async def test_default_replay_is_the_last_buffer_size_events(broker: EmittingHub) -> None:
    await broker.publish(
        [
            ev.ToolOutputEvent(execution_id=EXECUTION, tool_use_id="t", chunk=str(i))
            for i in range(150)
        ]
    )
    with broker.subscribe(EXECUTION) as sub:
        assert (sub.cursor, sub.head, sub.replay_count) == (50, 150, 100)
        await broker.emit_execution_status(EXECUTION, "running")
        assert await collect_seqs(sub, 151) == list(range(51, 152))


async def test_since_replays_everything_after_it_however_old(broker: EmittingHub) -> None:
    await broker.publish(
        [
            ev.ToolOutputEvent(execution_id=EXECUTION, tool_use_id="t", chunk=str(i))
            for i in range(1200)
        ]
    )
    logs = broker.dispatcher.logs
    with broker.subscribe(EXECUTION, since=0) as sub:
        assert sub.replay_count == 1200
        assert logs.range(EXECUTION, 0, 500) is None  # so the first pages come from the store
        assert sub.take_nowait() is None
        pages = [len(await sub.read_behind()), len(await sub.read_behind())]
        rest = sub.take_nowait()  # memory holds the newest events
        assert rest is not None
        assert [env.seq for env in rest] == list(range(1001, 1201))
    assert pages == [500, 500]
    with broker.subscribe(EXECUTION, since=0) as sub:
        assert await collect_seqs(sub, 1200) == list(range(1, 1201))
    with broker.subscribe(EXECUTION, since=1150) as sub:
        assert logs.range(EXECUTION, 1150, 1200) is not None  # served from memory
        assert await collect_seqs(sub, 1200) == list(range(1151, 1201))


async def test_since_beyond_the_end_starts_over_from_the_first_event(broker: EmittingHub) -> None:
    # The subscriber saw seqs this store does not hold: it is another history (SPEC §10).
    await broker.emit_execution_status(EXECUTION, "running")
    with broker.subscribe(EXECUTION, since=99) as sub:
        assert sub.replay_count == 1
        await broker.emit_execution_status(EXECUTION, "completed")
        assert await collect_seqs(sub, 2) == [1, 2]
    sub, resume = await broker.open_subscription(EXECUTION, since=99, epoch=broker.epoch)
    with sub:
        assert resume.reset == ev.ResetEvent(epoch=broker.epoch, last_seq=2)
        assert await collect_seqs(sub, 2) == [1, 2]
    with pytest.raises(ValueError, match="since"):
        broker.subscribe(EXECUTION, since=-1)


async def test_replay_reads_the_store_when_the_buffer_was_cleared(broker: EmittingHub) -> None:
    for i in range(30):
        await broker.emit_tool_output(EXECUTION, "t", str(i))
    broker.clear_buffer(EXECUTION)
    with broker.subscribe(EXECUTION, since=10) as sub:
        assert sub.replay_count == 20
        assert broker.dispatcher.logs.range(EXECUTION, 10, 30) is None
        for i in range(5):
            await broker.emit_tool_output(EXECUTION, "t", f"live {i}")
        assert await collect_seqs(sub, 35) == list(range(11, 36))


async def test_replay_reads_the_store_when_the_gap_exceeds_the_buffer() -> None:
    async with open_observability(buffer_size=8, queue_size=8) as obs:
        for i in range(50):
            await obs.broker.emit_tool_output(EXECUTION, "t", str(i))
        assert len(obs.broker.get_buffered_events(EXECUTION)) == 8
        with obs.broker.subscribe(EXECUTION, since=5) as sub:
            assert obs.broker.dispatcher.logs.range(EXECUTION, 5, 50) is None
            await obs.broker.emit_tool_output(EXECUTION, "t", "live")
            assert await collect_seqs(sub, 51) == list(range(6, 52))


class Progress:
    """Wakes waiters once a stream's committed seq reaches a value (a subscriber of its own)."""

    def __init__(self, broker: EmittingHub, key: str) -> None:
        self.sub = broker.subscribe(key)
        self.last = 0
        self.waiters: list[tuple[int, trio.Event]] = []

    async def run(self) -> None:
        async for env in self.sub:
            self.last = env.seq
            for seq, event in self.waiters:
                if self.last >= seq:
                    event.set()

    async def reached(self, seq: int) -> None:
        if self.last < seq:
            event = trio.Event()
            self.waiters.append((seq, event))
            await event.wait()


@pytest.mark.parametrize("buffer_size", [100, 8])
async def test_since_seam_is_exact_under_concurrent_producers(buffer_size: int) -> None:
    producers, per_producer = 10, 40
    total = producers * per_producer
    # (when to subscribe, how to pick since from the last committed seq at that moment)
    plans: list[tuple[int, Callable[[int], int | None]]] = [
        (0, lambda last: 0),
        (1, lambda last: last),
        (37, lambda last: None),
        (60, lambda last: last - 7),
        (120, lambda last: 0),
        (150, lambda last: max(0, last - 60)),
        (200, lambda last: last),
        (240, lambda last: None),
    ]
    checked: list[int] = []

    async with open_observability(buffer_size=buffer_size) as obs:
        broker = obs.broker
        progress = Progress(broker, EXECUTION)

        async def producer(p: int) -> None:
            for i in range(per_producer):
                await broker.emit_tool_output(EXECUTION, f"tu-{p}", str(i))
                await broker.emit_tool_output("noise", f"tu-{p}", str(i))

        async def late_subscriber(at: int, pick: Callable[[int], int | None]) -> None:
            await progress.reached(at)
            last = broker.last_seq(EXECUTION)
            since = pick(last)
            sub = broker.subscribe(EXECUTION, since=since)
            first = since if since is not None else max(0, last - buffer_size)
            assert sub.replay_count == last - first
            assert last < total, "subscribed after the producers finished: no seam tested"
            with sub:
                seqs = await collect_seqs(sub, total)
            assert seqs == list(range(first + 1, total + 1)), (at, since)
            checked.append(at)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(progress.run)
            async with trio.open_nursery() as inner:
                for at, pick in plans:
                    inner.start_soon(late_subscriber, at, pick)
                for p in range(producers):
                    inner.start_soon(producer, p)
            progress.sub.close()
        assert [env.seq for env in await obs.store.read(EXECUTION)] == list(range(1, total + 1))
    assert sorted(checked) == sorted(at for at, _ in plans)


# --------------------------------------------------------------------------- slow consumers


async def test_a_slow_execution_subscriber_is_served_from_the_store_not_ended() -> None:
    # SPEC §4: falling behind is not a fault. Memory keeps 4 events; the slow reader
    # takes the rest from the store, page by page, then live again: no gap, no duplicate.
    async with open_observability(buffer_size=2, queue_size=4) as obs:
        broker = obs.broker
        slow, fast = broker.subscribe(EXECUTION), broker.subscribe(EXECUTION)
        for i in range(10):
            await broker.emit_tool_output(EXECUTION, "t", str(i))
        assert slow.end_reason is None
        assert broker.get_listener_count(EXECUTION) == 2
        assert slow.take_nowait() is None  # what it missed is no longer in memory
        assert await collect_seqs(fast, 10) == list(range(1, 11))
        await broker.emit_tool_output(EXECUTION, "t", "live")
        assert await collect_seqs(slow, 11) == list(range(1, 12))
        log = broker.dispatcher.logs.get(EXECUTION)
        assert log is not None
        assert len(log) <= 4  # memory is bounded by the queue, whoever falls behind
        slow.close()
        fast.close()


async def test_slow_all_subscriber_does_not_hold_up_execution_subscribers(
    broker: EmittingHub,
) -> None:
    # An `all` subscriber beyond its queue reads the store by position (SPEC §4, §14).
    slow = broker.subscribe(ALL, queue_size=2)
    with broker.subscribe("exec-a") as a, broker.subscribe("exec-b") as b:
        for i in range(5):
            await broker.emit_tool_output("exec-a", "t", str(i))
            await broker.emit_tool_output("exec-b", "t", str(i))
        assert slow.end_reason is None
        assert slow.take_nowait() is None  # what it missed is no longer in memory
        assert len(broker.dispatcher.global_log) <= 2  # bounded, whoever falls behind
        assert len(drain(a)) == 5
        assert len(drain(b)) == 5
    taken = await slow.read_behind()
    assert [env.pos for env in taken] == list(range(1, 11))
    assert [env.event.execution_id for env in taken] == ["exec-a", "exec-b"] * 5
    assert slow.take_nowait() == []
    slow.close()


async def test_closed_subscription_ends_iteration_quietly(broker: EmittingHub) -> None:
    sub = broker.subscribe(EXECUTION)
    await broker.emit_tool_output(EXECUTION, "t", "x")
    sub.close()
    sub.close()  # idempotent
    assert [env.seq async for env in sub] == [1]
    assert sub.end_reason is None
    await broker.emit_tool_output(EXECUTION, "t", "y")  # dispatch skips it


# --------------------------------------------------------------------------- counts, load


async def test_listener_counts(broker: EmittingHub) -> None:
    assert broker.get_listener_count(EXECUTION) == 0
    assert broker.get_global_listener_count() == 0
    a1, a2 = broker.subscribe(EXECUTION), broker.subscribe(EXECUTION)
    everything = broker.subscribe(ALL)
    other = broker.subscribe("other")
    assert broker.get_listener_count(EXECUTION) == 2
    assert broker.get_listener_count("other") == 1
    assert broker.get_global_listener_count() == 1
    assert broker.connection_count() == 4
    a1.close()
    assert broker.get_listener_count(EXECUTION) == 1
    for sub in (a2, everything, other):
        sub.close()
    assert broker.connection_count() == 0
    assert broker.get_global_listener_count() == 0
    assert broker.subscriptions() == []


async def test_many_producers_at_once_get_gap_free_seqs(broker: EmittingHub) -> None:
    returned: dict[int, list[int]] = {}
    with broker.subscribe(EXECUTION) as sub, broker.subscribe(ALL) as everything:

        async def producer(p: int) -> None:
            seqs = returned.setdefault(p, [])
            for i in range(50):
                stored = await broker.emit_tool_output(EXECUTION, f"tu-{p}", str(i))
                seqs.append(stored.seq or 0)

        async with trio.open_nursery() as nursery:
            for p in range(20):
                nursery.start_soon(producer, p)
        live = [env.seq for env in drain(sub)]
        assert len(drain(everything)) == 1000
    assert live == list(range(1, 1001))
    assert sorted(s for seqs in returned.values() for s in seqs) == live
    for seqs in returned.values():  # each producer's events keep its order
        assert seqs == sorted(seqs)


async def test_a_burst_is_committed_in_groups_and_its_first_batches_go_out_first(
    obs: Observability, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 25: batches that queued together are stored in groups of about GROUP_EVENTS,
    # so the first ones reach subscribers before the last ones are committed.
    hub = obs.hub
    assert isinstance(hub, LocalHub)
    writes: list[tuple[int, int]] = []  # (events in the commit, events delivered before it)
    received: list[Envelope] = []
    subs = [hub.subscribe(f"e{b}") for b in range(6)]  # 500 events each: within the queue
    write = hub.store.write

    async def counting_write(stage: Stage, keys: Any = ()) -> None:
        for sub in subs:
            received.extend(drain(sub))
        writes.append((len(stage.envelopes), len(received)))
        await write(stage, keys)

    monkeypatch.setattr(hub.store, "write", counting_write)
    batches = [
        [ev.ToolOutputEvent(execution_id=f"e{b}", tool_use_id="t", chunk=f"{i}")
         for i in range(500)]
        for b in range(6)
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:
        for batch in batches:
            nursery.start_soon(hub.publish, batch)
    for sub in subs:
        received.extend(drain(sub))
        sub.close()
    assert len(received) == 3000
    assert sum(size for size, _ in writes) == 3000 and len(writes) >= 2
    assert all(size < GROUP_EVENTS + 500 for size, _ in writes)
    assert writes[-1][1] >= 500  # the first batches were out before the last commit
