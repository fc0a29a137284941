"""Measuring: one load against one server, and the sections built on it (memory, slow
consumer, profile, ingest). Everything here returns typed results (``suite.model``);
nothing here judges or prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from harness import (
    HERE,
    ChildError,
    Deployment,
    LoadgenPool,
    RssSampler,
    Server,
    ServerSpec,
    busy_cpu_seconds,
    merge_hists,
    percentile_ms,
)
from suite.model import Ingest, Load, Memory, Results, SlowConsumer

RESULTS = HERE / "results"
SATURATED_PCT = 90.0
"""A load generator process above this much of one core may be what limits a figure."""


class Budget:
    """The run's time budget: steps that would overrun it are skipped (and say so)."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + seconds

    def left(self) -> float:
        """Seconds left."""
        return self.deadline - time.monotonic()

    def allows(self, seconds: float) -> bool:
        """Whether a step of about ``seconds`` still fits."""
        return self.left() >= seconds


class Run:
    """What every section needs: the options, the clock, the results, progress output."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        default = 100.0 if self.quick else 600.0
        if args.compare:
            default *= 1.6  # a second trio-obs in every section
        self.budget = Budget(args.budget or default)
        self.log_dir = RESULTS / "logs"
        self.results = Results()
        self._runs = 0

    def say(self, text: str) -> None:
        """Progress, on stderr (the table goes to stdout)."""
        elapsed = time.monotonic() - self.budget.start
        print(f"[{elapsed:6.1f}s] {text}", file=sys.stderr, flush=True)

    def skip(self, why: str) -> None:
        """Note a step that did not run."""
        self.results.skipped.append(why)
        print(f"skipped: {why}", file=sys.stderr, flush=True)

    def next_run(self) -> str:
        """A fresh run id (stamped into events, so late ones are never miscounted)."""
        self._runs += 1
        return str(self._runs)

    def seconds(self, full: float, quick: float) -> float:
        """A load's length, scaled by ``--scale``."""
        return (quick if self.quick else full) * self.args.scale

    def new_pool(self, tag: str) -> LoadgenPool:
        """Load generator processes for one server."""
        return LoadgenPool(self.args.loadgen_procs, log_dir=self.log_dir, tag=f"-{tag}")


def fresh_db(run: Run, name: str) -> Path:
    """A SQLite file for one trio-obs under test (``--store file``), removed if it exists."""
    path = run.log_dir / f"{name.replace('@', '-at-')}.db"
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


class Target:
    """One server under test with its load generators; restarted after a load it failed."""

    def __init__(self, run: Run, spec: ServerSpec) -> None:
        self.run = run
        if run.args.store == "file" and spec.program == "trio-obs":
            spec = attrs.evolve(spec, args=(*spec.args, "--db", str(fresh_db(run, spec.name))))
        self.spec = spec
        self.kind = spec.name
        self.server = Deployment(spec, log_dir=run.log_dir, queue_size=run.args.queue_size)
        self.pool = run.new_pool(spec.name)

    def load(self, **kw: Any) -> Load:
        """Run a load; a server that did not deliver it all (a backlog may remain, or
        clients were dropped) is replaced by a fresh one, so no load inherits another's."""
        result = run_load(self.run, self.server, self.pool, **kw)
        if not result.ok or result.delivered_pct < 99.9:
            self.run.say(f"  restarting {self.kind}: the load was not delivered in full")
            result.restarted_after = True
            self.stop()
            self.server = Deployment(
                self.spec, log_dir=self.run.log_dir, queue_size=self.run.args.queue_size
            )
            self.pool = self.run.new_pool(self.kind)
        return result

    def stop(self) -> None:
        """Close the clients, stop the load generators and the server."""
        with contextlib.suppress(ChildError):
            self.pool.close()
        self.pool.stop()
        self.server.stop()


def run_load(
    run: Run,
    server: Deployment,
    pool: LoadgenPool,
    *,
    clients: int,
    rate: float,
    seconds: float,
    label: str,
    stall: int = 0,
) -> Load:
    """Emit ``rate``/s for ``seconds`` to ``clients`` clients (+ ``stall`` stalled ones)."""
    result = Load(
        label=label,
        server=server.name,
        clients=clients,
        stalled=stall,
        rate=rate,
        seconds=seconds,
        nodes=len(server.nodes),
    )
    try:
        got = pool.connect(server.subscribe_urls, clients + stall, timeout=90, rate=rate)
        if stall:
            pool.stall(stall)
        seen = server.wait_count(clients + stall, 30)
        if seen != clients + stall:
            raise ChildError(f"{seen} clients connected of {clients + stall} ({got})")
        # Warm up at the same rate (its events arrive as another run's: not counted).
        warm = min(1.0, seconds / 3)
        warm_count = max(1, round(rate * warm))
        server.emit(f"w{run.next_run()}", rate, warm_count, warm * 1.5 + 1)
        time.sleep(0.3)
        run_id = run.next_run()
        pool.reset(run_id)
        sampler = RssSampler(server.rss)
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        gen0, busy0, me0 = pool.cpu_seconds(), busy_cpu_seconds(), time.process_time()
        count = max(1, round(rate * seconds))
        emitted = server.emit(run_id, rate, count, seconds * 1.5 + 2)
        reports = drain(pool, emitted["emitted"] * clients, timeout=5 + seconds)
        cpu1, t1 = server.cpu_seconds(), time.monotonic()
        gen1, busy1, me1 = pool.cpu_seconds(), busy_cpu_seconds(), time.process_time()
        rss_start, rss_peak, rss_end = sampler.stop()
    except ChildError as exc:
        run.say(f"  {label} on {server.name}: FAILED: {exc}")
        result.error = str(exc)
        return result
    hist = merge_hists(r["hist"] for r in reports)
    max_us = max((r["maxUs"] for r in reports), default=0.0)
    received = sum(r["count"] for r in reports)
    counted = [r for r in reports if r["count"]]
    span = max(r["lastS"] for r in counted) - min(r["firstS"] for r in counted) if counted else 0
    closes: dict[str, int] = {}
    for r in reports:
        for code, n in r["closes"].items():
            closes[code] = closes.get(code, 0) + n
    busy = [r for r in reports if r["count"] or r["open"]] or reports
    loadgen_cpu = max(r["cpuPct"] for r in busy)
    wall = t1 - t0
    result.run = run_id
    result.offered = count * clients
    result.emitted = emitted["emitted"]
    result.emitter = emitted
    result.received = received
    result.delivered_pct = 100.0 * received / (count * clients)
    result.deliveries_per_s = received / max(seconds, span) if received else 0.0
    result.p50_ms = percentile_ms(hist, 0.50, max_us)
    result.p99_ms = percentile_ms(hist, 0.99, max_us)
    result.max_ms = max_us / 1000 if received else None
    result.server_cpu_s = cpu1 - cpu0
    result.server_cpu_pct = 100 * (cpu1 - cpu0) / wall
    # Everything else the machine ran meanwhile (other work, steal, the kernel's softirq
    # time for loopback traffic), in % of one core: how much a result was disturbed.
    others = (busy1 - busy0) - (cpu1 - cpu0) - (gen1 - gen0) - (me1 - me0)
    result.others_cpu_pct = 100 * max(0.0, others) / wall
    # How busy the whole machine was (% of all its cores): near 100 %, the server and the
    # load generators were competing for CPU, whatever each one's figure.
    result.host_busy_pct = 100 * (busy1 - busy0) / (wall * (os.cpu_count() or 1))
    result.loadgen_cpu_pct = loadgen_cpu
    result.loadgen_cpu_pct_each = [round(r["cpuPct"], 1) for r in reports]
    result.loadgen_saturated = loadgen_cpu > SATURATED_PCT
    result.loadgen_loop_delay_p99_ms = max(r["loopDelayP99Ms"] for r in reports)
    result.stale = sum(r["stale"] for r in reports)
    result.negative = sum(r["negative"] for r in reports)
    result.closes = closes
    result.stalled_received = sum(r["stalledReceived"] for r in reports)
    result.rss_start, result.rss_peak, result.rss_end = rss_start, rss_peak, rss_end
    result.hist = [list(kv) for kv in sorted(hist.items())]
    sat = " (loadgen saturated)" if result.loadgen_saturated else ""
    cpu_d = result.cpu_us_per_delivery
    run.say(
        f"  {label:>10} {server.name:<14} p50 {_ms(result.p50_ms)} p99 {_ms(result.p99_ms)}"
        f" max {_ms(result.max_ms)} ms, delivered {result.delivered_pct:.2f} %, server CPU"
        f" {result.server_cpu_pct:.0f} % ({cpu_d or 0:.2f} µs/delivery), loadgen CPU"
        f" {loadgen_cpu:.0f} %{sat}, others {result.others_cpu_pct:.0f} %"
    )
    return result


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def drain(
    pool: LoadgenPool, expected: float, timeout: float, *, frames: bool = False
) -> list[dict[str, Any]]:
    """Reports once every expected event arrived, or nothing arrived for 1 s, or timeout
    (``frames``: count every frame, not only the timed ones)."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while True:
        reports = pool.report()
        got = sum(r["count"] + (r["other"] if frames else 0) for r in reports)
        now = time.monotonic()
        if got != last:
            last, last_change = got, now
        if got >= expected or now - last_change > 1.0 or now > deadline:
            return reports
        time.sleep(0.1)


# --------------------------------------------------------------------------- sections


def micro(run: Run) -> None:
    """(a) codec and (b) in-process broker, in a child process."""
    only = run.args.only
    for part in [p for p in ("codec", "broker") if only is None or p in only]:
        run.say(f"{part} (in-process)")
        cmd = [sys.executable, str(HERE / "micro.py"), "--only", part]
        if run.quick:
            cmd.append("--quick")
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=240, check=True, cwd=HERE.parent
            )
        except (subprocess.SubprocessError, OSError) as exc:
            stderr = getattr(exc, "stderr", "") or ""
            run.skip(f"{part}: {exc} {stderr[-500:]}")
            continue
        run.results.micro.update(json.loads(out.stdout))


def memory(run: Run, target: Target) -> None:
    """(g) RSS per idle connection: server RSS delta over 1,000 idle connections / 1,000."""
    n = 1000
    server, pool = target.server, target.pool
    time.sleep(0.5)
    before = server.rss()
    got = pool.connect(server.subscribe_urls, n, timeout=90)
    seen = server.wait_count(n, 30)
    time.sleep(1.5)
    after = server.rss()
    per = (after - before) / max(1, seen) / 1024
    run.results.memory[target.kind] = Memory(
        connections=seen,
        failed=got["failed"],
        rss_before=before,
        rss_after=after,
        kib_per_connection=per,
    )
    run.say(f"  memory {target.kind}: {per:.1f} KiB per idle connection ({seen} connections)")


def slow_consumer(run: Run, target: Target, healthy: Load) -> None:
    """(e) 100 healthy clients + 1 that stops reading, compared with the healthy run."""
    stalled = target.load(
        clients=100, rate=1000, seconds=healthy.seconds, label="100x1000+1", stall=1
    )
    with contextlib.suppress(ChildError):
        target.pool.drop_stalled()
    run.results.loads.append(stalled)
    out = SlowConsumer(healthy=healthy.run, stalled=stalled.run)
    if stalled.ok and healthy.ok:
        grow_healthy = healthy.rss_peak - healthy.rss_start
        grow_stalled = stalled.rss_peak - stalled.rss_start
        out.p99_without_ms = healthy.p99_ms
        out.p99_with_ms = stalled.p99_ms
        if healthy.p99_ms and stalled.p99_ms:
            out.p99_change_pct = 100 * (stalled.p99_ms / healthy.p99_ms - 1)
        out.rss_growth_without = grow_healthy
        out.rss_growth_with = grow_stalled
        out.rss_extra = grow_stalled - grow_healthy
        out.rss_peak_with = stalled.rss_peak
        out.stalled_closed_4008 = stalled.closes.get("4008", 0)
    run.results.slow_consumer[target.kind] = out


def profile(run: Run, target: Target) -> None:
    """pyinstrument on the trio-obs server during a 100x1000 load (not a measured run)."""
    path = RESULTS / "profile-100x1000.txt"
    server = target.server
    try:
        server.publisher.child.request("PROFILE START", "OK", 10)
        load = run_load(
            run, server, target.pool, clients=100, rate=1000, seconds=run.seconds(5, 2),
            label="profile",
        )  # fmt: skip
        top = json.loads(server.publisher.child.request(f"PROFILE STOP {path}", "PROFILED", 60))
    except ChildError as exc:
        run.skip(f"profile: {exc}")
        return
    top["file"] = str(path.relative_to(HERE))
    top["load"] = {"p50_ms": load.p50_ms, "p99_ms": load.p99_ms, "delivered": load.delivered_pct}
    run.results.profile = top


def ingest_once(
    run: Run, target: Target, batches: int, *, concurrency: int = 8
) -> tuple[Ingest, list[dict[str, Any]]]:
    """POST ``batches`` batches of 100 events; one WebSocket client receives them all."""
    server, pool = target.server, target.pool
    pool.connect(server.subscribe_urls, 1)
    server.wait_count(1, 10)
    before = metrics(server.publisher.http)
    server.publisher.child.request("COMMITS RESET", "OK", 10)
    run_id = run.next_run()
    pool.reset(run_id)
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    reply = json.loads(
        pool.children[0].request(
            f"INGEST {server.publisher.http} {run_id} {batches} 100 {concurrency} bench-ingest 60",
            "INGESTED",
            90,
        )
    )
    reports = drain(pool, reply["accepted"], timeout=20)
    cpu1, t1 = server.cpu_seconds(), time.monotonic()
    after = metrics(server.publisher.http)
    measured = json.loads(server.publisher.child.request("COMMITS", "COMMITS", 10))
    report = reports[0]
    hist = merge_hists([report["hist"]])
    post_hist = merge_hists([reply["postHist"]])
    elapsed = reply["endS"] - reply["startS"]
    delivered_span = (report["lastS"] - reply["startS"]) if report["count"] else math.inf
    out = Ingest(
        batches=reply["sent"],
        batch_size=100,
        accepted=reply["accepted"],
        errors=reply["errors"],
        statuses=reply["statuses"],
        stored_per_s=reply["accepted"] / elapsed if elapsed > 0 else 0.0,
        delivered=report["count"],
        delivered_pct=100.0 * report["count"] / max(1, reply["sent"] * 100),
        delivered_per_s=report["count"] / delivered_span if report["count"] else 0.0,
        p50_ms=percentile_ms(hist, 0.5, report["maxUs"]),
        p99_ms=percentile_ms(hist, 0.99, report["maxUs"]),
        max_ms=report["maxUs"] / 1000 if report["count"] else None,
        post_p50_ms=percentile_ms(post_hist, 0.5, math.inf),
        post_p99_ms=percentile_ms(post_hist, 0.99, math.inf),
        server_cpu_pct=100 * (cpu1 - cpu0) / (t1 - t0),
        server_cpu_s=cpu1 - cpu0,
        loadgen_cpu_pct=report["cpuPct"],
        loadgen_saturated=report["cpuPct"] > SATURATED_PCT,
        commit=commit_stats(before, after) or commit_measured(measured),
    )
    return out, reports


def ingest(run: Run, target: Target) -> None:
    """(f) POST /api/events in batches of 100, one client receiving everything."""
    try:
        out, _ = ingest_once(run, target, 100 if run.quick else 600)
    except (ChildError, OSError) as exc:
        run.skip(f"ingest: {exc}")
        return
    run.results.ingest = out
    run.say(
        f"  ingest: stored {out.stored_per_s:.0f}/s, delivered {out.delivered_per_s:.0f}/s,"
        f" server CPU {out.server_cpu_pct:.0f} % ({out.cpu_us_per_event or 0:.1f} µs/event)"
    )
    if run.args.profile and not run.quick:
        profile_ingest(run, target)


def profile_ingest(run: Run, target: Target) -> None:
    """pyinstrument on the trio-obs server during a second ingest (not a measured one)."""
    path = RESULTS / "profile-ingest.txt"
    server = target.server.publisher
    try:
        server.child.request("PROFILE START", "OK", 10)
        run_id = run.next_run()
        target.pool.reset(run_id)
        reply = json.loads(
            target.pool.children[0].request(
                f"INGEST {server.http} {run_id} 300 100 8 bench-ingest 60", "INGESTED", 90
            )
        )
        drain(target.pool, reply["accepted"], timeout=20)
        top = json.loads(server.child.request(f"PROFILE STOP {path}", "PROFILED", 60))
    except ChildError as exc:
        run.skip(f"ingest profile: {exc}")
        return
    top["file"] = str(path.relative_to(HERE))
    run.results.profile_ingest = top


# --------------------------------------------------------------------------- metrics


def metrics(base: str) -> str:
    """The server's /metrics text."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        return str(response.read().decode())


def parse_histogram(text: str, name: str) -> tuple[dict[float, float], float, float]:
    """Cumulative buckets, sum and count of a Prometheus histogram."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[math.inf if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count"):
            count = float(line.rsplit(" ", 1)[1])
    return buckets, total, count


def parse_counter_total(text: str, name: str) -> float:
    """The sum over labels of a Prometheus counter."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "_total")
    )


def commit_stats(before: str, after: str) -> dict[str, Any] | None:
    """Commits during the ingest, from ``trio_obs_store_commit_seconds`` (None if absent)."""
    name = "trio_obs_store_commit_seconds"
    b0, s0, c0 = parse_histogram(before, name)
    b1, s1, c1 = parse_histogram(after, name)
    commits = c1 - c0
    if not b1 or commits <= 0:
        return None
    delta = {le: b1[le] - b0.get(le, 0.0) for le in sorted(b1)}

    def quantile(q: float) -> float:
        for le, cum in delta.items():
            if cum >= q * commits:
                return le * 1000
        return math.inf

    events = parse_counter_total(after, "trio_obs_events_in") - parse_counter_total(
        before, "trio_obs_events_in"
    )
    return {
        "source": "trio_obs_store_commit_seconds in /metrics (bucket upper bounds)",
        "commits": commits,
        "mean_ms": 1000 * (s1 - s0) / commits,
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "events_per_commit": events / commits if events else 0.0,
    }


def commit_measured(stats: dict[str, Any]) -> dict[str, Any] | None:
    """Commits during the ingest as the server observed them (when /metrics has none)."""
    n = stats.get("commits", 0)
    if not n:
        return None
    return {
        "source": "measured in the server process (no histogram in /metrics)",
        "commits": n,
        "mean_ms": 1000 * stats["mean"],
        "p50_ms": 1000 * stats["p50"],
        "p99_ms": 1000 * stats["p99"],
        "max_ms": 1000 * stats["max"],
        "events_per_commit": stats["events"] / n,
    }


def git_out(*cmd: str, cwd: Path = HERE) -> str | None:
    """A git command's output (None when it fails)."""
    try:
        return subprocess.run(
            ["git", "-C", str(cwd), *cmd], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------- the realistic mix

MIX_KINDS = {
    # kind: (path, content type, batches in a full run, events (spans) per batch)
    "json": ("/api/events", "application/json", 600, 100),
    "otlp": ("/v1/traces", "application/x-protobuf", 120, 512),
}


def floor(run: Run) -> dict[str, Any] | None:
    """``floor.py`` in a child process: the unavoidable work on the same bodies."""
    cmd = [sys.executable, str(HERE / "floor.py"), "--batches", "100" if run.quick else "300"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        run.skip(f"floor: {exc}")
        return None
    result: dict[str, Any] = json.loads(out.stdout)
    return result


PROFILE_DIR_ENV = "TRIO_OBS_BENCH_PYSPY"
"""Set to a folder: each mix load is sampled there by py-spy (raw, threads, 200 Hz), one file
per mix and server, for ``layers.py``."""


@contextlib.contextmanager
def sampled(server: Server, name: str) -> Iterator[None]:
    """py-spy on ``server``'s process while the block runs, if ``PROFILE_DIR_ENV`` is set."""
    folder = os.environ.get(PROFILE_DIR_ENV)
    if not folder:
        yield
        return
    out = Path(folder) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    spy_bin = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    argv = [spy_bin, "record", "-p", str(server.child.proc.pid), "--format", "raw"]
    spy = subprocess.Popen(
        [*argv, "--threads", "-r", "200", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


def ingest_mix(run: Run, target: Target, kind: str, *, concurrency: int = 8) -> dict[str, Any]:
    """The realistic mix (``mix.py``): JSON plan events or OTLP spans, ``concurrency``
    requests in flight, one ``all`` client receiving everything. Returns the figures."""
    sys.path.insert(0, str(HERE))
    import mix  # the bench's own module: the same bodies for every revision

    path, ctype, full, per_batch = MIX_KINDS[kind]
    batches = max(10, full // 6) if run.quick else full
    server, pool = target.server, target.pool
    pool.connect(server.subscribe_urls, 1)
    server.wait_count(1, 10)
    run_id = run.next_run()
    template = mix.json_template(run_id) if kind == "json" else mix.otlp_template(run_id)
    file = RESULTS / "logs" / f"mix-{kind}-{run_id}.bin"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(template)
    before = metrics(server.publisher.http)
    pool.reset(run_id)
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    with sampled(server.publisher, f"mix-{kind}-{target.kind}"):
        reply = json.loads(
            pool.children[0].request(
                f"POSTMIX {server.publisher.http} {path} {ctype} {file} {batches} {concurrency} 60",
                "POSTED",
                90,
            )
        )
    # Every stored event reaches the `all` client: count them all (not only the timed ones).
    after = metrics(server.publisher.http)
    stored_events = parse_counter_total(after, "trio_obs_events_in") - parse_counter_total(
        before, "trio_obs_events_in"
    )
    reports = drain(pool, stored_events, timeout=20, frames=True)
    cpu1, t1 = server.cpu_seconds(), time.monotonic()
    file.unlink(missing_ok=True)
    report = reports[0]
    hist = merge_hists([report["hist"]])
    elapsed = reply["endS"] - reply["startS"]
    units = reply["ok"] * per_batch  # events (JSON) or spans (OTLP) accepted
    delivered_span = (report["lastS"] - reply["startS"]) if report["count"] else math.inf
    return {
        "kind": kind,
        "batches": reply["sent"],
        "per_batch": per_batch,
        "statuses": reply["statuses"],
        "errors": reply["errors"],
        "units": units,
        "units_per_s": units / elapsed if elapsed > 0 else 0.0,
        "stored_events": stored_events,
        "delivered": report["count"] + report["other"],
        "timed": report["count"],
        "delivered_pct": 100.0 * (report["count"] + report["other"]) / max(1.0, stored_events),
        "delivered_per_s": (report["count"] + report["other"]) / delivered_span
        if report["count"]
        else 0.0,
        "closes": report.get("closes", {}),
        "p50_ms": percentile_ms(hist, 0.5, report["maxUs"]),
        "p99_ms": percentile_ms(hist, 0.99, report["maxUs"]),
        "server_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "cpu_us_per_unit": 1e6 * (cpu1 - cpu0) / units if units else None,
    }


def ingest_mixes(run: Run, target: Target) -> None:
    """Both mixes on one server, kept in ``meta["ingest_mix"][server]``."""
    for kind in MIX_KINDS:
        try:
            out = ingest_mix(run, target, kind)
        except (ChildError, OSError, KeyError) as exc:
            run.skip(f"ingest mix {kind} ({target.kind}): {exc}")
            continue
        run.results.meta.setdefault("ingest_mix", {}).setdefault(target.kind, {})[kind] = out
        unit = "events" if kind == "json" else "spans"
        run.say(
            f"  mix {kind} ({target.kind}): {out['units_per_s']:.0f} {unit}/s,"
            f" stored {out['stored_events']:.0f} events, delivered {out['delivered_pct']:.1f} %"
            f" ({out['delivered_per_s']:.0f}/s),"
            f" {out['cpu_us_per_unit'] or 0:.1f} µs CPU/{unit[:-1]}, p99 {out['p99_ms']} ms"
        )


LIVE_RATE = 100
"""Batches per second of the live load (10 span starts each: 1,000 spans/s)."""


def ingest_live(run: Run, target: Target) -> None:
    """Span starts at 1,000/s in the live processor's small batches (10 per POST), one
    ``all`` client: POST → WebSocket latency (SPEC §8: ≤ 10 ms p99). Kept in
    ``meta["ingest_live"][server]``."""
    sys.path.insert(0, str(HERE))
    import mix

    seconds = 3 if run.quick else 10
    batches = LIVE_RATE * seconds
    server, pool = target.server, target.pool
    try:
        pool.connect(server.subscribe_urls, 1)
        server.wait_count(1, 10)
        run_id = run.next_run()
        file = RESULTS / "logs" / f"mix-live-{run_id}.bin"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(mix.live_template(run_id, time.time_ns()))
        pool.reset(run_id)
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        reply = json.loads(
            pool.children[0].request(
                f"POSTMIX {server.publisher.http} /v1/traces application/x-protobuf {file}"
                f" {batches} 8 {seconds + 30} {LIVE_RATE}",
                "POSTED",
                seconds + 60,
            )
        )
        reports = drain(pool, reply["ok"] * mix.LIVE_BATCH, timeout=10)
        cpu1, t1 = server.cpu_seconds(), time.monotonic()
        file.unlink(missing_ok=True)
    except (ChildError, OSError) as exc:
        run.skip(f"ingest live ({target.kind}): {exc}")
        return
    report = reports[0]
    hist = merge_hists([report["hist"]])
    out = {
        "spans": reply["ok"] * mix.LIVE_BATCH,
        "spans_per_s": reply["ok"] * mix.LIVE_BATCH / max(1e-9, reply["endS"] - reply["startS"]),
        "timed": report["count"],
        "p50_ms": percentile_ms(hist, 0.5, report["maxUs"]),
        "p99_ms": percentile_ms(hist, 0.99, report["maxUs"]),
        "max_ms": report["maxUs"] / 1000 if report["count"] else None,
        "server_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "statuses": reply["statuses"],
    }
    run.results.meta.setdefault("ingest_live", {})[target.kind] = out
    run.say(
        f"  live spans ({target.kind}): {out['spans_per_s']:.0f}/s, {out['timed']} timed,"
        f" p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms"
    )
