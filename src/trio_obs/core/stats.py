"""Counters a hub and a server keep for ``/metrics``: plain numbers, cheap on the hot path."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Final

import attrs

LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
)  # fmt: skip


class LatencyHistogram:
    """Bucket counts and a sum of observed durations (seconds), for one thread."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, count at or below it)`` pairs, ending with ``+Inf``."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@attrs.define
class HubStats:
    """What a hub counts, read by ``/metrics`` (a snapshot; mutate only in the hub)."""

    events_in: Counter[str] = attrs.field(factory=Counter)
    """Events stored and dispatched, by type (``global`` copies not counted)."""
    commit_latency: LatencyHistogram = attrs.field(factory=LatencyHistogram)
    """Duration of one store write (a group commit)."""
    subscriptions: int = 0
    replay_buffers: int = 0
    """Stream keys with recent events in memory."""
    buffered_bytes: int = 0
    """Bytes those recent events hold."""
    behind: int = 0
    """Subscriptions being served from the store because they fell behind."""
    slow_closes: int = 0
    """``all`` subscriptions ended because they fell out of the live window."""
