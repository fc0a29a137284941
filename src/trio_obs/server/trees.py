"""The span trees the server answered last, kept to fold only what came since (SPEC §12).

``GET /api/executions/<id>/tree`` folds an execution's stored events; a tree of 10,000
spans is 20,000 events to read, parse and fold. The fold is incremental (events in seq
order), so the server keeps the last few trees it answered with the last row it folded: a
request reads the rows from that last one on, folds the new ones and answers again, the
tree encoding only the spans that changed; with nothing new, the same bytes. The answer is
the one a fold of every stored event gives: a tree whose last folded row is no longer
stored as it was (the execution deleted by retention, a new epoch) is folded again from
the start. A tree folded from the start, or many rows at once, is folded and answered in a
worker thread: the server goes on serving the others meanwhile.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

import attrs
import orjson
import trio

from ..core.prices import Prices
from ..core.protocol import MAX_EVENTS_LIMIT
from ..core.spantree import SpanTree
from ..hub.base import Hub
from .http import HttpError

KEPT_TREES: Final = 8
"""Trees kept (the runs being watched); the least recently asked for goes first."""
FOLD_INLINE: Final = 500
"""Rows folded on the trio thread at most (a few milliseconds); a tree folded from the
start, or more rows, are folded and answered in a worker thread."""


@attrs.define(slots=True)
class _Kept:
    tree: SpanTree
    epoch: str | None
    last_row: bytes


class TreeCache:
    """The tree endpoint's answers, folded incrementally from the hub's stored events."""

    def __init__(self, hub: Hub, prices: Prices, size: int = KEPT_TREES) -> None:
        self.hub = hub
        self.prices = prices
        self.size = size
        self._kept: OrderedDict[str, _Kept] = OrderedDict()

    async def answer(self, execution_id: str) -> bytes:
        """The encoded tree of ``execution_id`` (HttpError 404 when nothing is stored)."""
        epoch = self.hub.epoch
        read = self.hub.read
        kept = self._kept.pop(execution_id, None)  # ours while we fold (no two folds of one)
        if kept is not None and kept.epoch != epoch:
            kept = None  # a new epoch: what was stored may have been lost
        rows: list[bytes] = []
        if kept is not None:
            rows = await read(execution_id, after=kept.tree.seq - 1, limit=MAX_EVENTS_LIMIT)
            if not rows or rows[0] != kept.last_row:
                kept = None  # deleted, or stored again since: from the start
        if kept is None:
            rows = await read(execution_id, after=0, limit=MAX_EVENTS_LIMIT)
            if not rows:
                raise HttpError(404, f"no execution {execution_id!r} is stored")
            kept = _Kept(SpanTree(execution_id), epoch, b"")
        folded = 0
        offload = kept.tree.folded == 0
        while rows:
            new = rows[1:] if rows[0] == kept.last_row else rows
            if new:
                folded += len(new)
                if offload or folded > FOLD_INLINE:
                    offload = True
                    await trio.to_thread.run_sync(_fold, kept.tree, new)
                else:
                    _fold(kept.tree, new)
                kept.last_row = new[-1]
            if len(rows) < MAX_EVENTS_LIMIT:
                break
            rows = await read(execution_id, after=kept.tree.seq, limit=MAX_EVENTS_LIMIT)
        tree, prices = kept.tree, self.prices
        if offload:
            answer = await trio.to_thread.run_sync(lambda: tree.answer(prices, epoch=epoch))
        else:
            answer = tree.answer(prices, epoch=epoch)
        self._kept[execution_id] = kept
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return answer


def _fold(tree: SpanTree, rows: Sequence[bytes]) -> None:
    add, loads = tree.add, orjson.loads
    for row in rows:
        add(loads(row))
