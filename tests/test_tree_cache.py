"""The server's kept trees (server/trees.py): the answer of a fold of every stored event,
folding only what came since; no sockets (a hub of rows in memory)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from trio_obs.core.prices import SHIPPED_PRICES
from trio_obs.core.spantree import SpanTree
from trio_obs.server.http import HttpError
from trio_obs.server.trees import TreeCache


class RowHub:
    """What the tree cache reads of a hub: ``epoch`` and ``read``."""

    def __init__(self) -> None:
        self.epoch = "e1"
        self.rows: dict[str, list[bytes]] = {}
        self.reads: list[tuple[str, int]] = []

    def add(self, execution: str, **event: Any) -> None:
        rows = self.rows.setdefault(execution, [])
        event = {"executionId": execution, "seq": len(rows) + 1, **event}
        rows.append(orjson.dumps(event))

    async def read(self, stream: str, *, after: int = 0, limit: int = 1000) -> list[bytes]:
        self.reads.append((stream, after))
        return [r for r in self.rows.get(stream, []) if orjson.loads(r)["seq"] > after][:limit]


def fresh(hub: RowHub, execution: str) -> bytes:
    events = [orjson.loads(r) for r in hub.rows[execution]]
    answer = SpanTree(execution).add_all(events).to_json(SHIPPED_PRICES, epoch=hub.epoch)
    return orjson.dumps(answer)


def start(hub: RowHub, span: str, parent: str = "root", **more: Any) -> None:
    hub.add("x", type="span:start", spanId=span, parentSpanId=parent, kind="agent", name=span,
            timestamp=f"2026-01-01T00:00:0{len(hub.rows.get('x', []))}.000Z", **more)  # fmt: skip


async def test_a_kept_tree_folds_what_came_since_and_answers_as_a_fresh_fold() -> None:
    hub = RowHub()
    cache = TreeCache(hub, SHIPPED_PRICES)  # type: ignore[arg-type]
    hub.add("x", type="execution:status", status="started", spanId="root")
    start(hub, "a1")
    assert orjson.loads(await cache.answer("x")) == orjson.loads(fresh(hub, "x"))
    hub.reads.clear()
    same = await cache.answer("x")
    assert same == fresh(hub, "x") and hub.reads == [("x", 1)]  # only from the last row on
    start(hub, "a2", "a1")
    hub.add("x", type="span:end", spanId="a2", state="done")
    hub.reads.clear()
    assert await cache.answer("x") == fresh(hub, "x")
    assert hub.reads == [("x", 1)]
    assert [s["spanId"] for s in orjson.loads(fresh(hub, "x"))["spans"]] == ["root", "a1", "a2"]


async def test_a_deleted_execution_is_404_and_one_stored_again_is_folded_anew() -> None:
    hub = RowHub()
    cache = TreeCache(hub, SHIPPED_PRICES)  # type: ignore[arg-type]
    start(hub, "old")
    start(hub, "older")
    await cache.answer("x")
    del hub.rows["x"]  # retention
    with pytest.raises(HttpError) as caught:
        await cache.answer("x")
    assert caught.value.status == 404
    start(hub, "old")
    await cache.answer("x")
    hub.rows["x"] = []
    start(hub, "new")  # the same seq, another event
    start(hub, "newer")
    assert await cache.answer("x") == fresh(hub, "x")
    assert "old" not in {s["spanId"] for s in orjson.loads(fresh(hub, "x"))["spans"]}


async def test_a_new_epoch_folds_anew_and_few_trees_are_kept() -> None:
    hub = RowHub()
    cache = TreeCache(hub, SHIPPED_PRICES, size=2)  # type: ignore[arg-type]
    start(hub, "a1")
    await cache.answer("x")
    hub.epoch = "e2"
    hub.reads.clear()
    assert orjson.loads(await cache.answer("x"))["epoch"] == "e2"
    assert hub.reads == [("x", 0)]
    for other in ("y", "z"):
        hub.add(other, type="span:start", spanId="s", kind="agent", name="s")
        await cache.answer(other)
    hub.reads.clear()
    await cache.answer("x")  # the least recently asked for went first
    assert hub.reads == [("x", 0)]
