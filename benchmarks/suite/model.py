"""The typed result of a benchmark run: what measure fills, judge reads, render prints and
persist writes. Every class is a small attrs class with defaults, so a results file of an
older run (fewer fields) still loads for ``--render``.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import cattrs

MiB = 1024 * 1024


@attrs.define
class Load:
    """One load against one server: N clients, R events/s, S seconds (+ stalled clients)."""

    label: str
    server: str
    clients: int
    rate: float
    seconds: float
    stalled: int = 0
    error: str | None = None
    run: str | None = None
    offered: int = 0
    emitted: int = 0
    emitter: dict[str, Any] = attrs.Factory(dict)
    """The server's own EMITTED report (worstLagMs, batches, ...)."""
    received: int = 0
    delivered_pct: float = 0.0
    deliveries_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    server_cpu_pct: float = 0.0
    server_cpu_s: float | None = None
    """The server processes' CPU seconds during the measured part of the load."""
    others_cpu_pct: float = 0.0
    host_busy_pct: float = 0.0
    loadgen_cpu_pct: float = 0.0
    loadgen_cpu_pct_each: list[float] = attrs.Factory(list)
    loadgen_saturated: bool = False
    loadgen_loop_delay_p99_ms: float = 0.0
    stale: int = 0
    negative: int = 0
    closes: dict[str, int] = attrs.Factory(dict)
    stalled_received: int = 0
    rss_start: int = 0
    rss_peak: int = 0
    rss_end: int = 0
    hist: list[list[int]] = attrs.Factory(list)
    search: bool = False
    superseded: bool = False
    retry: bool = False
    restarted_after: bool = False
    nodes: int = 1
    """Server processes behind the load (a multi-node server has more than one)."""

    @property
    def ok(self) -> bool:
        """Measured (no error)."""
        return self.error is None

    @property
    def cpu_us_per_delivery(self) -> float | None:
        """Server CPU time ÷ deliveries, in µs (steadier than a latency on a shared machine)."""
        if self.server_cpu_s is None or not self.received:
            return None
        return 1e6 * self.server_cpu_s / self.received


@attrs.define
class StepSummary:
    """The figures of one max-rate step that the summary keeps."""

    label: str
    rate: float
    deliveries_per_s: float
    p99_ms: float | None
    loadgen_saturated: bool = False


@attrs.define
class MaxRate:
    """The max-rate search at 1,000 clients for one server."""

    criterion: str = ">= 99.9 % delivered (at any latency)"
    label: str | None = None
    rate: float | None = None
    deliveries_per_s: float | None = None
    p99_ms: float | None = None
    loadgen_saturated: bool = False
    passed: bool = False
    within_bar: StepSummary | None = None


@attrs.define
class SlowConsumer:
    """100 healthy clients + 1 stalled, against the healthy run just before."""

    healthy: str | None = None
    stalled: str | None = None
    p99_without_ms: float | None = None
    p99_with_ms: float | None = None
    p99_change_pct: float | None = None
    rss_growth_without: int = 0
    rss_growth_with: int = 0
    rss_extra: int = 0
    rss_peak_with: int = 0
    stalled_closed_4008: int = 0


@attrs.define
class Ingest:
    """POST /api/events in batches, one WebSocket client receiving everything."""

    batches: int = 0
    batch_size: int = 100
    accepted: int = 0
    errors: int = 0
    statuses: dict[str, int] = attrs.Factory(dict)
    stored_per_s: float = 0.0
    delivered: int = 0
    delivered_pct: float = 0.0
    delivered_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    post_p50_ms: float | None = None
    post_p99_ms: float | None = None
    server_cpu_pct: float = 0.0
    server_cpu_s: float | None = None
    loadgen_cpu_pct: float = 0.0
    loadgen_saturated: bool = False
    commit: dict[str, Any] | None = None

    @property
    def cpu_us_per_event(self) -> float | None:
        """Server CPU time ÷ events stored, in µs."""
        if self.server_cpu_s is None or not self.accepted:
            return None
        return 1e6 * self.server_cpu_s / self.accepted


@attrs.define
class Memory:
    """RSS per idle connection."""

    connections: int
    failed: int
    rss_before: int
    rss_after: int
    kib_per_connection: float


@attrs.define
class Independent:
    """The same server at the same load, under the independent client (not our generator)."""

    server: str
    clients: int
    rate: float
    seconds: float
    error: str | None = None
    count: int = 0
    expected: int = 0
    delivered_pct: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    client_cpu_pct: float = 0.0
    server_cpu_pct: float = 0.0
    emitter: dict[str, Any] = attrs.Factory(dict)
    rounds: int = 1
    """Rounds of ours then independent, alternated; each figure is the median of its side."""
    ours_p50_ms: float | None = None
    ours_p99_ms: float | None = None
    ours_delivered_pct: float | None = None
    ours_lag_ms: float | None = None
    """Our side's medians over the rounds (None: the 100x1000 load itself is our side)."""


@attrs.define
class Stable:
    """Instructions (callgrind) on a fixed small load: figures that do not move with the machine."""

    server: str
    what: str
    """``delivery`` (a fan-out load) or ``ingested event`` (POSTed batches)."""
    load: str
    units: int = 0
    """Deliveries (or events) the counted instructions were spent on."""
    instructions: int | None = None
    per_unit: float | None = None
    tool: str = "callgrind"
    windows: list[int] = attrs.Factory(list)
    """Instructions per unit of each counted window (the figure is the lowest)."""
    error: str | None = None


@attrs.define
class TargetResult:
    """One SPEC §8 target: met / not met (None: not measured), with its figures."""

    target: str
    met: bool | None
    figure: str = "not measured"
    ratio: float | None = None
    """The figure as a ratio to the ceiling's in the same run, where it has one."""
    k: float | None = None
    """The bound on that ratio the target is judged on (``<= k x ceiling``)."""
    k_implied: float | None = None
    """absolute target ÷ the ceiling's figure in this run: the k this run would give."""


@attrs.define
class Comparison:
    """trio-obs of another revision, measured in the same run (``--compare REV``)."""

    rev: str
    commit: str | None = None
    error: str | None = None
    figures: list[list[Any]] = attrs.Factory(list)
    """Rows of [figure, old, new, unit, better] (better: "lower" or "higher")."""


@attrs.define
class Results:
    """Everything a run measured, judged and printed."""

    meta: dict[str, Any] = attrs.Factory(dict)
    micro: dict[str, Any] = attrs.Factory(dict)
    loads: list[Load] = attrs.Factory(list)
    max_rate: dict[str, MaxRate] = attrs.Factory(dict)
    slow_consumer: dict[str, SlowConsumer] = attrs.Factory(dict)
    ingest: Ingest | None = None
    memory: dict[str, Memory] = attrs.Factory(dict)
    profile: dict[str, Any] = attrs.Factory(dict)
    profile_ingest: dict[str, Any] = attrs.Factory(dict)
    reproduction: list[Independent] = attrs.Factory(list)
    stable: list[Stable] = attrs.Factory(list)
    compare: Comparison | None = None
    viewer: dict[str, Any] = attrs.Factory(dict)
    search: dict[str, Any] = attrs.Factory(dict)
    """The search section (``benchmarks/search/run.py`` and ingest with/without the index)."""
    targets: list[TargetResult] = attrs.Factory(list)
    skipped: list[str] = attrs.Factory(list)
    table: str = ""

    def load(self, server: str, label: str) -> Load | None:
        """The measured (not superseded) load of ``server`` called ``label``."""
        for load in self.loads:
            if load.server == server and load.label == label and not load.superseded:
                return load
        return None


converter = cattrs.Converter()


def _structure_float(value: Any, _type: type) -> float:
    return math.nan if value is None else float(value)


converter.register_structure_hook(float, _structure_float)


def to_dict(results: Results) -> dict[str, Any]:
    """Plain JSON-ready data."""
    data: dict[str, Any] = converter.unstructure(results)
    return data


def from_dict(data: dict[str, Any]) -> Results:
    """A results file (of this or an older run) back into :class:`Results`."""
    data = dict(data)
    if not data.get("ingest"):  # older runs wrote {} for "not measured"
        data["ingest"] = None
    return converter.structure(data, Results)
