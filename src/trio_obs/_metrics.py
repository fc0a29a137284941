"""Prometheus metrics of one server, written by prometheus-client (``GET /metrics``).

Hot-path counts are plain integers bumped in place; a custom collector turns them
into Prometheus families at scrape time, so a delivery costs no lock and no label
lookup. Latencies are prometheus-client histograms, observed once per socket write
and once per store commit.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ._broker import Broker
from ._routing import Envelope

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
)  # fmt: skip


class LatencyHistogram:
    """A lock-free histogram for one trio thread: bucket counts and a sum."""

    __slots__ = ("bounds", "counts", "doc", "name", "total")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        self.name, self.doc, self.bounds = name, doc, bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def family(self) -> HistogramMetricFamily:
        """The Prometheus family of the observations so far."""
        cumulative = list(accumulate(self.counts))
        buckets = [(str(b), c) for b, c in zip(self.bounds, cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.total)


class ServerMetrics(Collector):
    """Counters and gauges of one server, exposed in the Prometheus text format."""

    def __init__(self, broker: Broker, connections: Callable[[], int]) -> None:
        self.started = time.monotonic()
        self._broker = broker
        self._connections = connections
        self.events_in: Counter[str] = Counter()
        self.events_out: Counter[str] = Counter()
        self.slow_consumer_closes = 0
        self.keepalive_closes = 0
        self.refused: Counter[int] = Counter()
        self.delivery_latency = LatencyHistogram(
            "trio_obs_delivery_latency_seconds",
            "Time from an event's storage to the socket write that carries it.",
        )
        self.commit_latency = LatencyHistogram(
            "trio_obs_store_commit_seconds", "Duration of one store transaction (group commit)."
        )
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)
        broker.store.commit_observer = lambda seconds, _n: self.commit_latency.observe(seconds)

    def count_in(self, envelopes: list[Envelope]) -> None:
        """Count stored events by type (a broker dispatch hook)."""
        for env in envelopes:
            if not env.is_copy:
                self.events_in[env.event.type] += 1

    @property
    def uptime(self) -> float:
        """Seconds since the server started."""
        return time.monotonic() - self.started

    def collect(self) -> Iterator[Metric]:
        """Called by prometheus-client at scrape time."""
        yield GaugeMetricFamily(
            "trio_obs_connections", "Open WebSocket connections.", value=self._connections()
        )
        counters = [
            ("trio_obs_events_in", "Events stored and dispatched, by type.", self.events_in),
            (
                "trio_obs_events_out",
                "Events written to WebSocket clients, by type.",
                self.events_out,
            ),
        ]
        for name, doc, counts in counters:
            family = CounterMetricFamily(name, doc, labels=["type"])
            for kind, n in sorted(counts.items()):
                family.add_metric([kind], n)
            yield family
        yield CounterMetricFamily(
            "trio_obs_slow_consumer_closes",
            "Connections closed with 4008 because their queue overflowed.",
            value=self.slow_consumer_closes,
        )
        yield CounterMetricFamily(
            "trio_obs_keepalive_closes",
            "Connections closed because no pong came back in time.",
            value=self.keepalive_closes,
        )
        refused = CounterMetricFamily(
            "trio_obs_handshakes_refused",
            "Refused WebSocket handshakes, by status.",
            labels=["status"],
        )
        for status, n in sorted(self.refused.items()):
            refused.add_metric([str(status)], n)
        yield refused
        depths = [s.queue_depth for s in self._broker.subscriptions()]
        depth = GaugeMetricFamily(
            "trio_obs_queue_depth", "Events queued for delivery, per connection.", labels=["stat"]
        )
        depth.add_metric(["max"], max(depths, default=0))
        depth.add_metric(["total"], sum(depths))
        yield depth
        yield GaugeMetricFamily(
            "trio_obs_replay_buffers", "Streams with an in-memory replay buffer.",
            value=len(self._broker.buffers),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "trio_obs_uptime_seconds", "Seconds since start.", value=self.uptime
        )
        yield self.delivery_latency.family()
        yield self.commit_latency.family()

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
