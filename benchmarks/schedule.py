"""The emission schedule both Python benchmark servers follow, so their loads are identical.

Events are due at a steady rate from ``t0`` on the monotonic clock (which the Node
load generator reads too); each carries its scheduled time, so a server that falls
behind shows it in the latency figures, and ``worst_lag`` says by how much.
"""

from __future__ import annotations

import math
import time

import orjson

MAX_BATCH = 200
"""At most this many overdue events per batch, so the deadline is checked between them."""


class Schedule:
    """``count`` events at ``rate``/s, within ``max_seconds``, starting shortly after now."""

    def __init__(self, rate: float, count: int, max_seconds: float) -> None:
        self.rate, self.count = rate, count
        self.t0 = time.monotonic() + 0.05
        self.deadline = self.t0 + max_seconds
        self.emitted = 0
        self.batches = 0
        self.worst_lag = 0.0

    def scheduled(self, i: int) -> float:
        """When event ``i`` is due."""
        return self.t0 + i / self.rate

    @property
    def past_deadline(self) -> bool:
        """Whether the time for this load has run out."""
        return time.monotonic() > self.deadline

    @property
    def finished(self) -> bool:
        """Every event emitted, or out of time."""
        return self.emitted >= self.count or self.past_deadline

    def due(self) -> range:
        """The indexes due now and not yet emitted (at most MAX_BATCH), noting the lag."""
        now = time.monotonic()
        due = min(self.count, math.floor((now - self.t0) * self.rate) + 1) if now >= self.t0 else 0
        due = min(due, self.emitted + MAX_BATCH)
        if due <= self.emitted:
            return range(0)
        self.worst_lag = max(self.worst_lag, now - self.scheduled(self.emitted))
        return range(self.emitted, due)

    def report(self, run: str) -> str:
        """The ``EMITTED`` line for the runner."""
        return "EMITTED " + orjson.dumps({
            "run": run,
            "emitted": self.emitted,
            "count": self.count,
            "batches": self.batches,
            "worstLagMs": round(self.worst_lag * 1000, 3),
            "seconds": round(time.monotonic() - self.t0, 3),
        }).decode()  # fmt: skip
