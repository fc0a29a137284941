"""The dispatcher's subscriptions (hub/dispatch.py): who tells the waker, and how much a
subscriber takes at once, from memory or from the store (SPEC §4: memory is bounded by
bytes, not by a count of events). Over a real in-memory store and hub."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from trio_obs import EmittingHub, open_observability
from trio_obs.core import events as ev
from trio_obs.core.protocol import PAGE_BYTES, REPLAY_PAGE
from trio_obs.core.routing import Envelope
from trio_obs.hub.base import Subscription

EXEC = "e1"


@pytest.fixture
async def broker() -> AsyncIterator[EmittingHub]:
    # Memory holds 8 events per execution: a subscriber from seq 0 reads the store.
    async with open_observability(buffer_size=4, queue_size=8) as obs:
        yield obs.broker


class Waker:
    """Records each time it is told."""

    def __init__(self) -> None:
        self.told: list[Subscription] = []

    def wake(self, sub: Subscription) -> None:
        self.told.append(sub)


def outputs(n: int, size: int, execution: str = EXEC) -> list[ev.StreamEvent]:
    return [
        ev.ToolOutputEvent(execution_id=execution, tool_use_id="t", chunk=f"{i}:" + "x" * size)
        for i in range(n)
    ]


def json_bytes(envs: list[Envelope]) -> int:
    return sum(len(env.data) for env in envs)


# --------------------------------------------------------------------------- waking


async def test_the_waker_is_told_once_until_it_visits(broker: EmittingHub) -> None:
    waker = Waker()
    sub = broker.subscribe(EXEC, since=0, waker=waker)
    await broker.publish(outputs(3, 10))
    await broker.publish(outputs(2, 10))
    assert waker.told == [sub]  # five events, one call: it has not visited yet
    assert sub.take_nowait()
    sub.woken()
    await broker.publish(outputs(1, 10))
    assert waker.told == [sub, sub]


async def test_an_ended_subscription_tells_its_waker_once(broker: EmittingHub) -> None:
    waker = Waker()
    told, fresh = broker.subscribe(EXEC, waker=waker), broker.subscribe("other", waker=waker)
    await broker.publish(outputs(1, 10))  # `told` is told, and has not visited yet
    broker.dispatcher.restart("the history was replaced")
    assert told.end_reason is not None and fresh.end_reason is not None
    assert waker.told == [told, fresh]  # the visit to come sees the end: no second call


# --------------------------------------------------------------------------- bytes


async def test_pages_from_the_store_are_bounded_in_bytes_without_a_gap(broker: EmittingHub) -> None:
    await broker.publish(outputs(40, 60_000))  # 2.4 MB, far more than one page
    with broker.subscribe(EXEC, since=0) as sub:
        assert sub.take_nowait() is None  # behind what memory holds
        seqs: list[int] = []
        while len(seqs) < 32:
            page = await sub.read_behind()
            assert page
            assert json_bytes(page) <= PAGE_BYTES
            seqs += [env.seq for env in page]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_an_event_larger_than_a_page_still_comes_alone(broker: EmittingHub) -> None:
    await broker.publish(outputs(3, PAGE_BYTES + 1000))
    await broker.publish(outputs(20, 10, execution="other"))  # push e1 out of memory
    with broker.subscribe(EXEC, since=0) as sub:
        sizes = []
        while sub.cursor < 3:
            batch = sub.take_nowait()
            page = await sub.read_behind() if batch is None else batch
            sizes.append(len(page))
        assert sizes == [1, 1, 1]


async def test_a_take_from_memory_is_bounded_in_bytes(broker: EmittingHub) -> None:
    big = PAGE_BYTES // 4
    with broker.subscribe(EXEC) as sub:
        await broker.publish(outputs(8, big))  # all held in memory (8 events deep)
        taken = sub.take_nowait()
        assert taken is not None and 1 <= len(taken) < 8
        assert json_bytes(taken) <= PAGE_BYTES
        rest = sub.take_nowait()
        assert rest and rest[0].seq == taken[-1].seq + 1


async def test_the_next_page_asks_for_what_fits_in_bytes(broker: EmittingHub) -> None:
    # A source that cannot stop at a byte count (Redis) is asked for fewer events once
    # the first page showed how large they are.
    asked: list[int] = []
    read = broker.read_envelopes

    async def recorded(key: str, *, after: int, limit: int) -> list[Envelope]:
        asked.append(limit)
        return await read(key, after=after, limit=limit)

    broker.dispatcher.source = type("Recorded", (), {"read_envelopes": staticmethod(recorded)})()
    await broker.publish(outputs(30, 60_000))
    with broker.subscribe(EXEC, since=0) as sub:
        await sub.read_behind()
        await sub.read_behind()
    assert asked[0] == REPLAY_PAGE
    assert asked[1] * 60_000 <= PAGE_BYTES * 1.1


async def test_all_read_from_the_store_by_position_is_bounded_in_bytes(
    broker: EmittingHub,
) -> None:
    with broker.subscribe("all") as sub:
        await broker.publish(outputs(40, 60_000))  # 2.4 MB: far beyond what memory holds
        positions: list[int] = []
        while len(positions) < 40:
            batch = sub.take_nowait()
            page = await sub.read_behind() if batch is None else batch
            assert page and json_bytes(page) <= PAGE_BYTES
            positions += [env.pos for env in page]
        assert positions == list(range(positions[0], positions[0] + 40))


# --------------------------------------------------------------------------- all, from memory


async def test_a_dispatch_larger_than_the_queue_is_taken_from_memory(broker: EmittingHub) -> None:
    # One group commit (an OTLP request of 512 spans is 1,028 events) may be larger than
    # the queue: a subscriber caught up before it takes it from memory, not the store
    # (issue 25); one left further behind than its queue still reads the store.
    asked: list[int] = []
    read = broker.read_positions

    async def recorded(*, after: int, limit: int) -> tuple[list[Envelope], int | None]:
        asked.append(after)
        return await read(after=after, limit=limit)

    broker.dispatcher.source = type("Recorded", (), {"read_positions": staticmethod(recorded)})()
    with broker.subscribe("all") as sub:
        await broker.publish(outputs(20, 10))  # one dispatch, 20 events, queue of 8
        positions: list[int] = []
        while batch := sub.take_nowait():
            positions += [env.pos for env in batch]
        assert len(positions) == 20 and asked == []  # all from memory
        assert positions == list(range(positions[0], positions[0] + 20))
        await broker.publish(outputs(20, 10))
        await broker.publish(outputs(20, 10))  # not taken: now 40 behind, beyond its queue
        assert sub.take_nowait() is None
        while len(positions) < 60:
            batch = sub.take_nowait()
            positions += [env.pos for env in (await sub.read_behind() if batch is None else batch)]
        assert asked
        assert positions == list(range(positions[0], positions[0] + 60))
        assert sub.take_nowait() == []
