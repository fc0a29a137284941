"""Prometheus metrics of one server, written by prometheus-client (``GET /metrics``).

Hot-path counts are plain integers bumped in place; a custom collector turns them and
the hub's statistics into Prometheus families at scrape time, so a delivery costs no
lock and no label lookup.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..core.routing import Envelope
from ..core.stats import LatencyHistogram
from ..hub.base import Hub
from .listen import ConnectionCap


def _histogram(name: str, doc: str, histogram: LatencyHistogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, doc, buckets=histogram.cumulative(), sum_value=histogram.total
    )


class ServerMetrics(Collector):
    """Counters and gauges of one server, exposed in the Prometheus text format."""

    def __init__(
        self, hub: Hub, connections: Callable[[], int], cap: ConnectionCap | None = None
    ) -> None:
        self.started = time.monotonic()
        self._hub = hub
        self._connections = connections
        self._cap = cap
        self.events_out: Counter[str] = Counter()
        self.slow_consumer_closes = 0
        self.keepalive_closes = 0
        self.served_from_store = 0
        self.refused: Counter[int] = Counter()
        self.delivery_latency = LatencyHistogram()
        self.watched: Callable[[], dict[str, int]] | None = None
        """The watchdog's counts of open, slow and lost spans (SPEC §13), when it runs."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def count_out(self, envs: list[Envelope], connections: int = 1) -> None:
        """Count ``envs`` written to ``connections`` connections (once per write or round)."""
        counts = self.events_out
        if len(envs) == 1:
            counts[envs[0].event.type] += connections
        else:
            for env in envs:
                counts[env.event.type] += connections
        if envs[0].born:
            self.delivery_latency.observe(time.perf_counter() - envs[0].born)

    @property
    def uptime(self) -> float:
        """Seconds since the server started."""
        return time.monotonic() - self.started

    def collect(self) -> Iterator[Metric]:
        """Called by prometheus-client at scrape time."""
        stats = self._hub.stats()
        yield GaugeMetricFamily(
            "trio_obs_connections", "Open WebSocket connections.", value=self._connections()
        )
        for name, doc, counts in (
            ("trio_obs_events_in", "Events stored and dispatched, by type.", stats.events_in),
            ("trio_obs_events_out", "Events written to WebSocket clients, by type.",
             self.events_out),
        ):  # fmt: skip
            family = CounterMetricFamily(name, doc, labels=["type"])
            for kind, n in sorted(counts.items()):
                family.add_metric([kind], n)
            yield family
        yield CounterMetricFamily(
            "trio_obs_slow_consumer_closes",
            "Connections closed with 4008 (stalled: data waiting, no bytes taken).",
            value=self.slow_consumer_closes,
        )
        yield CounterMetricFamily(
            "trio_obs_store_catchups",
            "Times a connection that fell behind was served from the store.",
            value=self.served_from_store,
        )
        yield CounterMetricFamily(
            "trio_obs_keepalive_closes",
            "Connections closed because no pong came back in time.",
            value=self.keepalive_closes,
        )
        if self._cap is not None:
            yield GaugeMetricFamily(
                "trio_obs_sockets", "Open sockets (HTTP and WebSocket).", value=self._cap.open
            )
            yield CounterMetricFamily(
                "trio_obs_sockets_refused",
                "Sockets answered 503 and closed because --max-connections were open.",
                value=self._cap.refused,
            )
        refused = CounterMetricFamily(
            "trio_obs_handshakes_refused",
            "Refused WebSocket handshakes, by status.",
            labels=["status"],
        )
        for status, n in sorted(self.refused.items()):
            refused.add_metric([str(status)], n)
        yield refused
        depths = [s.queue_depth for s in self._hub.subscriptions()]
        depth = GaugeMetricFamily(
            "trio_obs_queue_depth", "Events not yet sent, per connection.", labels=["stat"]
        )
        depth.add_metric(["max"], max(depths, default=0))
        depth.add_metric(["total"], sum(depths))
        yield depth
        yield GaugeMetricFamily(
            "trio_obs_replay_buffers", "Streams with recent events in memory.",
            value=stats.replay_buffers,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "trio_obs_buffered_bytes", "Bytes of recent events held in memory.",
            value=stats.buffered_bytes,
        )  # fmt: skip
        if self.watched is not None:
            spans = GaugeMetricFamily(
                "trio_obs_spans",
                "Open spans of running executions as the watchdog sees them: open (running), "
                "slow (open, judged slow) and lost (closed lost, not cleared).",
                labels=["state"],
            )
            for state, n in self.watched().items():
                spans.add_metric([state], n)
            yield spans
        yield GaugeMetricFamily(
            "trio_obs_uptime_seconds", "Seconds since start.", value=self.uptime
        )
        yield _histogram(
            "trio_obs_delivery_latency_seconds",
            "Time from an event's storage to the socket write that carries it (the last such "
            "write of a flush round).",
            self.delivery_latency,
        )
        yield _histogram(
            "trio_obs_store_commit_seconds",
            "Duration of one store transaction (group commit).",
            stats.commit_latency,
        )

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
