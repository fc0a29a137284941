"""Building the search index of events stored before it existed, in the background.

A store opened with events that its index does not hold (written by an older trio-obs,
or indexed by another version of the index) indexes them here, a batch at a time in a
worker thread, newest first, logging its progress, while the server serves: a start is
never held up by it, and searches say the index is incomplete until it is done.
"""

from __future__ import annotations

import logging
import time
from typing import Final, Protocol

import trio
import trio.lowlevel

from ..core.errors import StoreError

log = logging.getLogger("trio_obs.hub")

BATCH: Final = 5000
"""Events given positions or indexed per transaction (a few tens of milliseconds)."""
_REPORT_EVERY: Final = 10.0
"""Seconds between two progress lines in the log."""


class Indexable(Protocol):
    """A store whose index can be built a batch at a time."""

    path: str

    def index_some(self, rows: int) -> int:
        """Index up to ``rows`` old events (in a worker thread); what is left (0: done)."""
        ...

    def unindexed(self) -> int:
        """What is left to index (0: done)."""
        ...


async def build_index(store: Indexable, *, batch: int = BATCH) -> None:
    """Index what ``store`` holds unindexed, logging progress; returns when it is done."""
    left = await trio.to_thread.run_sync(store.unindexed)
    if not left:
        return
    total = left
    log.info("search index: indexing %d stored events of %s in the background", total, store.path)
    started = reported = time.monotonic()
    while left:
        try:
            left = await trio.to_thread.run_sync(store.index_some, batch)
        except StoreError as exc:  # pragma: no cover - a closed store ends the server anyway
            log.warning("search index: stopped building: %s", exc)
            return
        now = time.monotonic()
        if left and now - reported >= _REPORT_EVERY:
            reported = now
            log.info("search index: %d%% built (%d left)", 100 - 100 * left // total, left)
        await trio.lowlevel.checkpoint()  # the writer goes first between two batches
    log.info("search index: built in %.1f s", time.monotonic() - started)
