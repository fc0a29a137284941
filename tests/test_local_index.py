"""A node's own search index (hub/local_index.py) alone: fed by a dispatcher, deleting what
is forgotten, wiped and copied again when the history changes, bounded in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from support import TIMEOUT
from trio_obs.core import events as ev
from trio_obs.core.routing import Envelope
from trio_obs.core.search import search_query
from trio_obs.hub import local_index
from trio_obs.hub.dispatch import Dispatcher
from trio_obs.hub.local_index import LocalIndex
from trio_obs.hub.sqlite import open_store


def said(execution: str, seq: int, pos: int, text: str) -> Envelope:
    event = ev.ToolStartEvent(
        execution_id=execution, tool_use_id=f"u{seq}", tool="Bash", input_summary=text,
        timestamp="2026-01-01T00:00:00.000Z", seq=seq, pos=pos,
    )  # fmt: skip
    return Envelope.of(execution, event)


class Shared:
    """The shared store's history, as the hub would copy it."""

    def __init__(self, envelopes: list[Envelope]) -> None:
        self.envelopes = envelopes
        self.copies = 0

    async def history(self, after: dict[str, int]) -> AsyncIterator[list[Envelope]]:
        self.copies += 1
        yield [e for e in self.envelopes if e.seq > after.get(e.key, 0)]


class NoSource:
    async def read_envelopes(self, key: str, *, after: int, limit: int) -> list[Envelope]:
        return []

    async def read_positions(self, *, after: int, limit: int) -> tuple[list[Envelope], None]:
        return [], None

    async def matches_after(self, query: object, *, after: int, upto: int) -> list[Envelope]:
        return []


def dispatcher() -> Dispatcher:
    return Dispatcher(NoSource(), buffer_size=10, queue_size=10, buffer_bytes=1 << 20)


async def found(index: LocalIndex, text: str) -> list[tuple[str, int]]:
    return [(h.execution_id, h.seq) for h in (await index.search(search_query(text))).hits]


async def until_indexed(d: Dispatcher, pos: int) -> None:
    with trio.fail_after(TIMEOUT):
        while d.query_head < pos:  # noqa: ASYNC110 - the index tells the dispatcher only
            await trio.sleep(0.01)


async def test_it_keeps_what_is_dispatched_and_forgets_deleted_streams() -> None:
    d, shared = dispatcher(), Shared([said("old", 1, 1, "deploy old")])
    async with open_store() as store, trio.open_nursery() as nursery:
        index = LocalIndex(store, d, shared.history)
        await nursery.start(index.run, lambda: "E1")
        d.dispatch([said("e1", 1, 2, "deploy one"), said("e2", 1, 3, "deploy two")], 0.0)
        await until_indexed(d, 3)
        with trio.fail_after(TIMEOUT):
            while (await index.search(search_query("deploy"))).complete is False:  # noqa: ASYNC110
                await trio.sleep(0.01)  # the copy of the history runs in the background
        assert await found(index, "deploy") == [("e2", 1), ("e1", 1), ("old", 1)]
        d.forget("e1")
        with trio.fail_after(TIMEOUT):
            while ("e1", 1) in await found(index, "deploy"):  # noqa: ASYNC110
                await trio.sleep(0.01)
        # A new epoch: everything held is void; the new history is copied.
        shared.envelopes = [said("fresh", 1, 1, "deploy fresh")]
        d.restart("a new epoch")
        with trio.fail_after(TIMEOUT):
            while await found(index, "deploy") != [("fresh", 1)]:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_a_backlog_too_long_is_dropped_and_copied_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local_index, "MAX_PENDING", 5)
    d = dispatcher()
    backlog = [said("e1", i, i, f"step {i}") for i in range(1, 11)]
    shared = Shared(backlog)
    async with open_store() as store, trio.open_nursery() as nursery:
        index = LocalIndex(store, d, shared.history)
        d.dispatch(backlog, 0.0)  # before the writer runs: over the bound
        await nursery.start(index.run, lambda: "E1")
        # The start's copy, then the one that replaced the dropped backlog: wait for both
        # (the first alone already holds all ten events).
        with trio.fail_after(TIMEOUT):
            while shared.copies < 2 or len(await found(index, "step")) < 10:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert shared.copies >= 2 and len(await found(index, "step")) == 10
        nursery.cancel_scope.cancel()
