"""trio-obs benchmarks: side by side with baseline servers, one load generator, one run.

``python benchmarks/run.py`` runs the whole suite (about 10 minutes at most, loopback
only), prints one markdown table and the SPEC §8 targets, and writes every figure to
``benchmarks/results/latest.json`` and ``benchmarks/results/YYYY-MM-DD.json``.
``--quick`` runs a subset in under a minute (written to ``quick-latest.json``).
See ``benchmarks/README.md`` for what each figure means.

Exit status: 1 only when trio-obs's p99 at 100 clients x 1,000 events/s exceeds the
plan's 100 ms (or that load could not be measured at all); otherwise 0.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness import (
    HERE,
    SERVERS,
    ChildError,
    LoadgenPool,
    RssSampler,
    Server,
    busy_cpu_seconds,
    ensure_node_modules,
    merge_hists,
    node_available,
    percentile_ms,
    stop_all,
)

RESULTS = HERE / "results"
PLAN_BAR_MS = 100.0
SATURATED_PCT = 90.0
HOST_FULL_PCT = 90.0
"""Machine-wide CPU use (% of all cores) from which a load is noted as run on a full host."""
OTHERS_NOTE_PCT = 20.0
"""Other processes' CPU (% of one core) during a load from which the table notes it."""
MiB = 1024 * 1024
RSS_FLAT = 5 * MiB
"""A stalled client's run may grow the server's RSS by this much more than a healthy run's."""

# --------------------------------------------------------------------------- formatting


def fmt_ms(value: float | None) -> str:
    """Milliseconds with a precision that suits their size."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    return f"{value:.1f}"


def fmt_us(value: float | None) -> str:
    """Microseconds."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.2f} µs" if value < 100 else f"{value:,.0f} µs"


def fmt_rate(value: float | None) -> str:
    """Per-second rate, compact."""
    if value is None:
        return "—"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M/s"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k/s"
    return f"{value:.0f}/s"


def fmt_pct(value: float | None, digits: int = 1) -> str:
    """A percentage."""
    return "—" if value is None else f"{value:.{digits}f} %"


def ratio(a: float | None, b: float | None) -> str:
    """``a ÷ b`` as ``1.23x``."""
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return "—"
    return f"{a / b:.2f}x"


# --------------------------------------------------------------------------- the suite


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


SEARCH_RATES = (20, 50, 100, 200, 400, 700, 1000, 1500, 2000, 3000, 5000)
"""Events/s tried at 1,000 clients, up to the first that fails."""
FIXED_RATES = (100, 1000)
"""Rates at 1,000 clients measured (and tabled) whatever the search found."""


def full(load: dict[str, Any]) -> bool:
    """Delivered in full (>= 99.9 % of offered, within the load's time bounds)."""
    return "error" not in load and load["delivered_pct"] >= 99.9


def within_bar(load: dict[str, Any]) -> bool:
    """Delivered in full and with p99 within the plan's 100 ms."""
    p99 = load.get("p99_ms")
    return full(load) and p99 is not None and p99 <= PLAN_BAR_MS


def summary_of(load: dict[str, Any]) -> dict[str, Any]:
    """The figures of a load that the max-rate summary keeps."""
    keys = ("label", "rate", "deliveries_per_s", "p99_ms", "loadgen_saturated")
    return {k: load[k] for k in keys}


class Target:
    """One server under test with its load generators; restarted after a load it failed."""

    def __init__(self, suite: Suite, kind: str) -> None:
        self.suite = suite
        self.kind = kind
        self.server = suite.start_server(kind)
        self.pool = LoadgenPool(suite.args.loadgen_procs, log_dir=suite.log_dir, tag=f"-{kind}")

    def load(self, **kw: Any) -> dict[str, Any]:
        """Run a load; a server that did not deliver it all (a backlog may remain, or
        clients were dropped) is replaced by a fresh one, so no load inherits another's."""
        result = self.suite.run_load(self.server, self.pool, **kw)
        if "error" in result or result["delivered_pct"] < 99.9:
            self.suite.say(f"  restarting {self.kind}: the load was not delivered in full")
            result["restarted_after"] = True
            self.stop()
            self.server = self.suite.start_server(self.kind)
            self.pool = LoadgenPool(
                self.suite.args.loadgen_procs, log_dir=self.suite.log_dir, tag=f"-{self.kind}"
            )
        return result

    def stop(self) -> None:
        """Close the clients, stop the load generators and the server."""
        with contextlib.suppress(ChildError):
            self.pool.close()
        self.pool.stop()
        self.server.stop()


class Suite:
    """Runs the sections and collects every figure."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.budget = Budget(args.budget or (60.0 if self.quick else 600.0))
        self.log_dir = RESULTS / "logs"
        if not args.render:  # each run's logs only
            for old_log in self.log_dir.glob("*.log"):
                old_log.unlink()
        self.results: dict[str, Any] = {
            "meta": meta(args),
            "micro": {},
            "loads": [],
            "max_rate": {},
            "slow_consumer": {},
            "ingest": {},
            "memory": {},
            "profile": {},
            "profile_ingest": {},
            "targets": [],
            "skipped": [],
        }
        self.rows: list[list[str]] = []
        self._runs = 0
        self.servers = [s for s in args.servers.split(",") if s]
        if "node-plan" in self.servers and not node_available():
            self.skip("node-plan: node is not installed")
            self.servers.remove("node-plan")

    # ------------------------------------------------------------------ helpers

    def say(self, text: str) -> None:
        """Progress, on stderr (the table goes to stdout)."""
        elapsed = time.monotonic() - self.budget.start
        print(f"[{elapsed:6.1f}s] {text}", file=sys.stderr, flush=True)

    def skip(self, why: str) -> None:
        """Note a step that did not run."""
        self.results["skipped"].append(why)
        print(f"skipped: {why}", file=sys.stderr, flush=True)

    def next_run(self) -> str:
        """A fresh run id (stamped into events, so late ones are never miscounted)."""
        self._runs += 1
        return str(self._runs)

    def seconds(self, full: float, quick: float) -> float:
        """A load's length, scaled by ``--scale``."""
        return (quick if self.quick else full) * self.args.scale

    # ------------------------------------------------------------------ a load

    def run_load(
        self,
        server: Server,
        pool: LoadgenPool,
        *,
        clients: int,
        rate: float,
        seconds: float,
        label: str,
        stall: int = 0,
    ) -> dict[str, Any]:
        """Emit ``rate``/s for ``seconds`` to ``clients`` clients (+ ``stall`` stalled ones)."""
        result: dict[str, Any] = {
            "label": label,
            "server": server.kind,
            "clients": clients,
            "stalled": stall,
            "rate": rate,
            "seconds": seconds,
        }
        try:
            got = pool.connect(server.url, clients + stall, timeout=90, rate=rate)
            if stall:
                pool.stall(stall)
            seen = server.wait_count(clients + stall, 30)
            if seen != clients + stall:
                raise ChildError(f"{seen} clients connected of {clients + stall} ({got})")
            # Warm up at the same rate (its events arrive as another run's: not counted).
            warm = min(1.0, seconds / 3)
            warm_count = max(1, round(rate * warm))
            server.child.request(
                f"EMIT w{self.next_run()} {rate} {warm_count} {warm * 1.5 + 1}",
                "EMITTED",
                timeout=warm * 1.5 + 30,
            )
            time.sleep(0.3)
            run = self.next_run()
            pool.reset(run)
            sampler = RssSampler(server.child)
            cpu0, t0 = server.child.cpu_seconds(), time.monotonic()
            gen0, busy0, me0 = pool.cpu_seconds(), busy_cpu_seconds(), time.process_time()
            count = max(1, round(rate * seconds))
            give_up = seconds * 1.5 + 2
            emitted = json.loads(
                server.child.request(
                    f"EMIT {run} {rate} {count} {give_up}", "EMITTED", timeout=give_up + 30
                )
            )
            reports = self.drain(pool, emitted["emitted"] * clients, timeout=5 + seconds)
            cpu1, t1 = server.child.cpu_seconds(), time.monotonic()
            gen1, busy1, me1 = pool.cpu_seconds(), busy_cpu_seconds(), time.process_time()
            rss_start, rss_peak, rss_end = sampler.stop()
        except ChildError as exc:
            self.say(f"  {label} on {server.kind}: FAILED: {exc}")
            result["error"] = str(exc)
            return result
        hist = merge_hists(r["hist"] for r in reports)
        max_us = max((r["maxUs"] for r in reports), default=0.0)
        received = sum(r["count"] for r in reports)
        counted = [r for r in reports if r["count"]]
        span = (
            max(r["lastS"] for r in counted) - min(r["firstS"] for r in counted) if counted else 0
        )
        closes: dict[str, int] = {}
        for r in reports:
            for code, n in r["closes"].items():
                closes[code] = closes.get(code, 0) + n
        loadgen_cpu = max(r["cpuPct"] for r in reports)
        result.update({
            "run": run,
            "offered": count * clients,
            "emitted": emitted["emitted"],
            "emitter": emitted,
            "received": received,
            "delivered_pct": 100.0 * received / (count * clients),
            "deliveries_per_s": received / max(seconds, span) if received else 0.0,
            "p50_ms": percentile_ms(hist, 0.50, max_us),
            "p99_ms": percentile_ms(hist, 0.99, max_us),
            "max_ms": max_us / 1000 if received else None,
            "server_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
            # Everything else the machine ran meanwhile (other work, steal), in % of one core:
            # the figure that says how much a result was disturbed.
            "others_cpu_pct": 100
            * max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - (gen1 - gen0) - (me1 - me0))
            / (t1 - t0),
            # How busy the whole machine was (% of all its cores): near 100 %, the server
            # and the load generators were competing for CPU, whatever each one's figure.
            "host_busy_pct": 100 * (busy1 - busy0) / ((t1 - t0) * (os.cpu_count() or 1)),
            "loadgen_cpu_pct": loadgen_cpu,
            "loadgen_cpu_pct_each": [round(r["cpuPct"], 1) for r in reports],
            "loadgen_saturated": loadgen_cpu > SATURATED_PCT,
            "loadgen_loop_delay_p99_ms": max(r["loopDelayP99Ms"] for r in reports),
            "stale": sum(r["stale"] for r in reports),
            "negative": sum(r["negative"] for r in reports),
            "closes": closes,
            "stalled_received": sum(r["stalledReceived"] for r in reports),
            "rss_start": rss_start,
            "rss_peak": rss_peak,
            "rss_end": rss_end,
            "hist": sorted(hist.items()),
        })  # fmt: skip
        sat = " (loadgen saturated)" if result["loadgen_saturated"] else ""
        sat += f", others {result['others_cpu_pct']:.0f} %"
        self.say(
            f"  {label:>10} {server.kind:<12} p50 {fmt_ms(result['p50_ms'])} p99"
            f" {fmt_ms(result['p99_ms'])} max {fmt_ms(result['max_ms'])} ms, delivered"
            f" {result['delivered_pct']:.2f} %, server CPU {result['server_cpu_pct']:.0f} %,"
            f" loadgen CPU {loadgen_cpu:.0f} %{sat}"
        )
        return result

    def drain(self, pool: LoadgenPool, expected: int, timeout: float) -> list[dict[str, Any]]:
        """Reports once every expected event arrived, or nothing arrived for 1 s, or timeout."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while True:
            reports = pool.report()
            got = sum(r["count"] for r in reports)
            now = time.monotonic()
            if got != last:
                last, last_change = got, now
            if got >= expected or now - last_change > 1.0 or now > deadline:
                return reports
            time.sleep(0.1)

    # ------------------------------------------------------------------ sections

    def micro(self) -> None:
        """(a) codec and (b) in-process broker, in a child process."""
        only = self.args.only
        parts = [p for p in ("codec", "broker") if only is None or p in only]
        for part in parts:
            self.say(f"{part} (in-process)")
            cmd = [sys.executable, str(HERE / "micro.py"), "--only", part]
            if self.quick:
                cmd.append("--quick")
            try:
                out = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=240, check=True, cwd=HERE.parent
                )
            except (subprocess.SubprocessError, OSError) as exc:
                stderr = getattr(exc, "stderr", "") or ""
                self.skip(f"{part}: {exc} {stderr[-500:]}")
                continue
            self.results["micro"].update(json.loads(out.stdout))

    def start_server(self, kind: str) -> Server:
        """A fresh server process of ``kind``."""
        return Server(
            kind, log_dir=self.log_dir, python=sys.executable, queue_size=self.args.queue_size
        )

    def servers_sections(self) -> None:
        """Every load, each run against every server in turn (so a change in what else the
        machine runs hits all of them alike); memory first, on fresh processes."""
        quick = self.quick
        sections = self.args.only
        want = lambda name: sections is None or name in sections  # noqa: E731
        targets: dict[str, Target] = {}
        for kind in self.servers:
            try:
                targets[kind] = Target(self, kind)
            except ChildError as exc:
                self.skip(f"{kind}: could not start: {exc}")
        main = targets.get("trio-obs")
        some = {k: t for k, t in targets.items() if not quick or k == "trio-obs"}
        try:
            if want("memory"):
                self.say("memory: 1,000 idle connections")
                for target in some.values():
                    self.memory(target.server, target.pool)
            if want("e2e") and not quick:
                self.say("1,000 clients: max-rate search and fixed loads")
                self.thousand_clients(targets)
            if want("e2e") or want("slow"):
                self.say("100 clients x 1,000 events/s, then the same with one stalled client")
                for kind, target in targets.items():
                    healthy = target.load(
                        clients=100, rate=1000, seconds=self.seconds(8, 3), label="100x1000"
                    )
                    self.results["loads"].append(healthy)
                    # Right after, so both runs see the same machine.
                    if want("slow") and kind in some:
                        self.slow_consumer(target, healthy)
            if want("e2e") and not quick:
                self.say("1 client x 1,000 events/s")
                for target in targets.values():
                    self.results["loads"].append(
                        target.load(
                            clients=1, rate=1000, seconds=self.seconds(5, 2), label="1x1000"
                        )
                    )
            if main is not None and self.args.profile and not quick and want("e2e"):
                self.say("profile: pyinstrument on trio-obs during 100 x 1,000")
                self.profile(main.server, main.pool)
            if main is not None and want("ingest"):
                self.say("ingest: POST /api/events")
                self.ingest(main.server, main.pool)
        finally:
            for target in targets.values():
                target.stop()

    def search_step(self, target: Target, rate: int, seconds: float) -> dict[str, Any]:
        """One step of the search at 1,000 clients; a near miss (>= 90 % delivered) is tried
        once more, since one stall of a shared machine can cost a step."""
        label = f"1000x{rate}"
        load = target.load(clients=1000, rate=rate, seconds=seconds, label=label)
        load["search"] = True
        self.results["loads"].append(load)
        if not full(load) and "error" not in load and load["delivered_pct"] >= 90:
            load["superseded"] = True
            load = target.load(clients=1000, rate=rate, seconds=seconds, label=label)
            load["search"] = True
            load["retry"] = True
            self.results["loads"].append(load)
        return load

    def thousand_clients(self, targets: dict[str, Target]) -> None:
        """1,000 clients: rising rates up to the first not delivered in full (the max-rate
        search), and the fixed loads 1000x100 and 1000x1000, each against every server in turn."""
        searching = dict(targets)
        tried: dict[str, set[int]] = {kind: set() for kind in targets}
        first_miss: dict[str, dict[str, Any]] = {}
        for rate in SEARCH_RATES:
            seconds = self.seconds(5, 2) if rate in FIXED_RATES else self.seconds(3, 2)
            if not searching:
                break
            if not self.budget.allows(len(searching) * (2 * seconds + 12) + 150):
                self.skip(f"1000x{rate} and above (time budget)")
                break
            for kind, target in list(searching.items()):
                load = self.search_step(target, rate, seconds)
                tried[kind].add(rate)
                if not full(load):
                    first_miss[kind] = load
                    del searching[kind]
        for rate in FIXED_RATES:
            for kind, target in targets.items():
                if rate in tried[kind] or not self.budget.allows(self.seconds(5, 2) + 120):
                    continue
                load = target.load(
                    clients=1000, rate=rate, seconds=self.seconds(5, 2), label=f"1000x{rate}"
                )
                load["search"] = True
                self.results["loads"].append(load)
        for kind in targets:
            steps = [
                ld for ld in self.results["loads"]
                if ld["server"] == kind and ld.get("search") and not ld.get("superseded")
            ]  # fmt: skip
            out: dict[str, Any] = {"criterion": ">= 99.9 % delivered (at any latency)"}
            in_full = [ld for ld in steps if full(ld)]
            if in_full:
                best = max(in_full, key=lambda ld: ld["rate"])
                out.update(summary_of(best), passed=True)
            elif kind in first_miss and "error" not in first_miss[kind]:
                # Nothing delivered in full: what it delivered overloaded bounds what it can do.
                out.update(summary_of(first_miss[kind]), passed=False)
            within = [ld for ld in in_full if within_bar(ld)]
            if within:
                out["within_bar"] = summary_of(max(within, key=lambda ld: ld["rate"]))
            self.results["max_rate"][kind] = out

    def memory(self, server: Server, pool: LoadgenPool) -> None:
        """(g) RSS per idle connection: server RSS delta over 1,000 idle connections / 1,000."""
        n = 1000
        time.sleep(0.5)
        before = server.child.rss()
        got = pool.connect(server.url, n, timeout=90)
        seen = server.wait_count(n, 30)
        time.sleep(1.5)
        after = server.child.rss()
        per = (after - before) / max(1, seen) / 1024
        self.results["memory"][server.kind] = {
            "connections": seen,
            "failed": got["failed"],
            "rss_before": before,
            "rss_after": after,
            "kib_per_connection": per,
        }
        self.say(f"  memory {server.kind}: {per:.1f} KiB per idle connection ({seen} connections)")

    def slow_consumer(self, target: Target, healthy: dict[str, Any]) -> None:
        """(e) 100 healthy clients + 1 that stops reading, compared with the healthy run."""
        stalled = target.load(
            clients=100, rate=1000, seconds=healthy["seconds"], label="100x1000+1", stall=1
        )
        with contextlib.suppress(ChildError):
            target.pool.drop_stalled()
        self.results["loads"].append(stalled)
        out: dict[str, Any] = {"healthy": healthy.get("run"), "stalled": stalled.get("run")}
        if "error" not in stalled and "error" not in healthy:
            grow_healthy = healthy["rss_peak"] - healthy["rss_start"]
            grow_stalled = stalled["rss_peak"] - stalled["rss_start"]
            out.update({
                "p99_without_ms": healthy["p99_ms"],
                "p99_with_ms": stalled["p99_ms"],
                "p99_change_pct": 100 * (stalled["p99_ms"] / healthy["p99_ms"] - 1)
                if healthy["p99_ms"] and stalled["p99_ms"] else None,
                "rss_growth_without": grow_healthy,
                "rss_growth_with": grow_stalled,
                "rss_extra": grow_stalled - grow_healthy,
                "rss_peak_with": stalled["rss_peak"],
                "stalled_closed_4008": stalled["closes"].get("4008", 0),
            })  # fmt: skip
        self.results["slow_consumer"][target.kind] = out

    def profile(self, server: Server, pool: LoadgenPool) -> None:
        """pyinstrument on the trio-obs server during a 100x1000 load (not a measured run)."""
        path = RESULTS / "profile-100x1000.txt"
        try:
            server.child.request("PROFILE START", "OK", 10)
            load = self.run_load(
                server, pool, clients=100, rate=1000, seconds=self.seconds(5, 2), label="profile"
            )
            top = json.loads(server.child.request(f"PROFILE STOP {path}", "PROFILED", 60))
        except ChildError as exc:
            self.skip(f"profile: {exc}")
            return
        top["file"] = str(path.relative_to(HERE))
        top["load"] = {k: load.get(k) for k in ("p50_ms", "p99_ms", "delivered_pct")}
        self.results["profile"] = top

    def ingest(self, server: Server, pool: LoadgenPool) -> None:
        """(f) POST /api/events in batches of 100, one client receiving everything."""
        batches = 100 if self.quick else 600
        try:
            pool.connect(server.url, 1)
            server.wait_count(1, 10)
            before = metrics(server.http)
            server.child.request("COMMITS RESET", "OK", 10)
            run = self.next_run()
            pool.reset(run)
            cpu0, t0 = server.child.cpu_seconds(), time.monotonic()
            child = pool.children[0]
            reply = json.loads(
                child.request(
                    f"INGEST {server.http} {run} {batches} 100 8 bench-ingest 60", "INGESTED", 90
                )
            )
            reports = self.drain(pool, reply["accepted"], timeout=20)
            cpu1, t1 = server.child.cpu_seconds(), time.monotonic()
            after = metrics(server.http)
            measured = json.loads(server.child.request("COMMITS", "COMMITS", 10))
        except (ChildError, OSError) as exc:
            self.skip(f"ingest: {exc}")
            return
        report = reports[0]
        hist = merge_hists([report["hist"]])
        post_hist = merge_hists([reply["postHist"]])
        elapsed = reply["endS"] - reply["startS"]
        delivered_span = (report["lastS"] - reply["startS"]) if report["count"] else math.inf
        commits = commit_stats(before, after) or commit_measured(measured)
        out = {
            "batches": reply["sent"],
            "batch_size": 100,
            "accepted": reply["accepted"],
            "errors": reply["errors"],
            "statuses": reply["statuses"],
            "stored_per_s": reply["accepted"] / elapsed if elapsed > 0 else 0.0,
            "delivered": report["count"],
            "delivered_pct": 100.0 * report["count"] / max(1, reply["sent"] * 100),
            "delivered_per_s": report["count"] / delivered_span if report["count"] else 0.0,
            "p50_ms": percentile_ms(hist, 0.5, report["maxUs"]),
            "p99_ms": percentile_ms(hist, 0.99, report["maxUs"]),
            "max_ms": report["maxUs"] / 1000 if report["count"] else None,
            "post_p50_ms": percentile_ms(post_hist, 0.5, math.inf),
            "post_p99_ms": percentile_ms(post_hist, 0.99, math.inf),
            "server_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
            "loadgen_cpu_pct": report["cpuPct"],
            "loadgen_saturated": report["cpuPct"] > SATURATED_PCT,
            "commit": commits,
        }
        self.results["ingest"] = out
        self.say(
            f"  ingest: stored {out['stored_per_s']:.0f}/s, delivered"
            f" {out['delivered_per_s']:.0f}/s, server CPU {out['server_cpu_pct']:.0f} %"
        )
        if self.args.profile and not self.quick:
            self.profile_ingest(server, pool)

    def profile_ingest(self, server: Server, pool: LoadgenPool) -> None:
        """pyinstrument on the trio-obs server during a second ingest (not a measured one)."""
        path = RESULTS / "profile-ingest.txt"
        try:
            server.child.request("PROFILE START", "OK", 10)
            run = self.next_run()
            pool.reset(run)
            reply = json.loads(
                pool.children[0].request(
                    f"INGEST {server.http} {run} 300 100 8 bench-ingest 60", "INGESTED", 90
                )
            )
            self.drain(pool, reply["accepted"], timeout=20)
            top = json.loads(server.child.request(f"PROFILE STOP {path}", "PROFILED", 60))
        except ChildError as exc:
            self.skip(f"ingest profile: {exc}")
            return
        top["file"] = str(path.relative_to(HERE))
        self.results["profile_ingest"] = top

    # ------------------------------------------------------------------ whole run

    def run(self) -> int:
        """Every section; then the table, the targets and the results files."""
        only = set(self.args.only or ())
        if not only or {"codec", "broker"} & only:
            self.micro()
        if not only or {"e2e", "slow", "ingest", "memory"} & only:
            if not node_available():
                self.skip("e2e, slow, ingest, memory: the load generator needs node (and npm)")
            else:
                try:
                    ensure_node_modules()
                except (ChildError, OSError, subprocess.SubprocessError) as exc:
                    self.skip(f"e2e, slow, ingest, memory: cannot install ws: {exc}")
                else:
                    self.servers_sections()
        self.results["meta"]["seconds"] = round(time.monotonic() - self.budget.start, 1)
        self.targets()
        table = self.table()
        self.results["table"] = table
        print(table)
        print()
        print(self.targets_text())
        self.write()
        return self.exit_status()

    # ------------------------------------------------------------------ results

    def load(self, server: str, label: str) -> dict[str, Any] | None:
        """The measured load of ``server`` called ``label``."""
        for load in self.results["loads"]:
            if load["server"] == server and load["label"] == label and not load.get("superseded"):
                return load  # type: ignore[no-any-return]
        return None

    def targets(self) -> None:
        """SPEC §8 targets, each met / not met (None: not measured) with its figure."""
        res = self.results
        out: list[dict[str, Any]] = res["targets"]

        def add(name: str, met: bool | None, figure: str = "not measured") -> None:
            out.append({"target": name, "met": met, "figure": figure})

        name = "p99 <= 2 ms at 100 clients x 1,000 events/s"
        main = self.load("trio-obs", "100x1000")
        if main and main.get("p99_ms") is not None:
            sat = " (loadgen saturated)" if main["loadgen_saturated"] else ""
            p99, delivered = main["p99_ms"], main["delivered_pct"]
            add(name, p99 <= 2.0, f"{fmt_ms(p99)} ms, {delivered:.2f} % delivered{sat}")
        else:
            add(name, None)

        name = "deliveries/s at 1,000 clients >= 2x the best baseline"
        rates = {k: v.get("deliveries_per_s") for k, v in res["max_rate"].items()}
        ours = rates.pop("trio-obs", None)
        base = [(k, v) for k, v in rates.items() if v]
        if ours and base:
            kind, best = max(base, key=lambda kv: kv[1])
            figure = (
                f"{fmt_rate(ours)} vs {fmt_rate(best)} ({kind}): {ours / best:.2f}x"
                " (highest rate delivered in full)"
            )
            add(name, ours >= 2 * best, figure)
        else:
            add(name, None)

        name = "producer's cost per emit at 1,000 subscribers <= 1.5x at 0"
        broker = {b["subscribers"]: b for b in res["micro"].get("broker", [])}
        if 0 in broker and 1000 in broker:
            # The producer's own cost: the time its task runs per emit. Fan-out runs in
            # the store writer and the subscribers' tasks; the producer's wall time
            # (publish p50) includes them, because one thread runs every task.
            c0, c1000 = broker[0]["producer_us"]["p50"], broker[1000]["producer_us"]["p50"]
            p0, p1000 = broker[0]["publish_us"]["p50"], broker[1000]["publish_us"]["p50"]
            d0, d1000 = broker[0]["dispatch_us"]["mean"], broker[1000]["dispatch_us"]["mean"]
            figure = (
                f"producer task p50 {fmt_us(c1000)} vs {fmt_us(c0)} ({c1000 / c0:.2f}x);"
                f" its wall time (publish p50, other tasks included) {fmt_us(p1000)} vs"
                f" {fmt_us(p0)} ({p1000 / p0:.1f}x); writer's dispatch {fmt_us(d1000)} vs"
                f" {fmt_us(d0)} per event"
            )
            add(name, c1000 <= 1.5 * c0, figure)
        else:
            add(name, None)

        name = "a stalled client moves the others' p99 by < 20 % and RSS stays flat"
        slow = res["slow_consumer"].get("trio-obs") or {}
        if slow.get("p99_change_pct") is not None:
            change, extra = slow["p99_change_pct"], slow["rss_extra"]
            figure = (
                f"p99 {fmt_ms(slow['p99_without_ms'])} -> {fmt_ms(slow['p99_with_ms'])} ms"
                f" ({change:+.0f} %); RSS growth {extra / MiB:+.1f} MiB over the healthy run's;"
                f" stalled client closed with 4008: {slow['stalled_closed_4008']}"
            )
            # "Changes" as in slows: a stall cannot speed the others up; a drop is noise.
            add(name, change < 20 and extra <= RSS_FLAT, figure)
        else:
            add(name, None)

        name = "ingest >= 50,000 events/s stored and delivered (batches of 100)"
        ing = res["ingest"]
        if ing:
            stored, delivered = ing["stored_per_s"], ing["delivered_per_s"]
            figure = f"stored {stored:,.0f}/s, delivered {delivered:,.0f}/s"
            add(name, min(stored, delivered) >= 50_000, figure)
        else:
            add(name, None)

        name = "<= 20 KiB RSS per idle connection"
        mem = res["memory"].get("trio-obs")
        if mem:
            per = mem["kib_per_connection"]
            add(name, per <= 20, f"{per:.1f} KiB at {mem['connections']} connections")
        else:
            add(name, None)

    def targets_text(self) -> str:
        """The targets as a markdown list."""
        lines = ["Targets (SPEC §8):"]
        for t in self.results["targets"]:
            mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
            lines.append(f"- **{mark}**: {t['target']} — {t['figure']}")
        if self.results["skipped"]:
            lines.append("")
            lines.append("Skipped: " + "; ".join(self.results["skipped"]))
        return "\n".join(lines)

    def exit_status(self) -> int:
        """1 when p99 at 100 x 1,000 exceeds the plan's 100 ms (or failed to measure)."""
        main = self.load("trio-obs", "100x1000")
        if main is None:
            return 0
        p99 = main.get("p99_ms")
        return 1 if p99 is None or p99 > PLAN_BAR_MS else 0

    def table(self) -> str:
        """One markdown table of every figure, with trio-obs ÷ baseline rows."""
        head = [
            "measure", "load", "server", "p50", "p99", "max", "delivered", "rate",
            "server CPU", "loadgen CPU", "notes",
        ]  # fmt: skip
        rows: list[list[str]] = []
        micro = self.results["micro"]
        for kind, c in micro.get("codec", {}).items():
            e, d = c["encode_us"], c["decode_us"]
            rows.append([
                f"codec {kind}", f"encode / decode, {c['bytes']} B", "in-process",
                f"{e['p50']:.2f} / {d['p50']:.2f} µs", f"{e['p99']:.2f} / {d['p99']:.2f} µs",
                f"{e['max']:.2f} / {d['max']:.2f} µs", "—",
                f"{fmt_rate(1e6 / e['mean'])} / {fmt_rate(1e6 / d['mean'])}", "—", "—", "",
            ])  # fmt: skip
        for b in micro.get("broker", []):
            n = b["subscribers"]
            ds, ps, lat = b["dispatch_us"], b["publish_us"], b["latency_ms"]
            rows.append([
                "broker dispatch / event", f"{n} subscribers", "in-process",
                fmt_us(ds["p50"]), fmt_us(ds["p99"]), fmt_us(ds["max"]),
                fmt_pct(b["dispatch_delivered_pct"]), fmt_rate(1e6 / ds["mean"]),
                fmt_pct(b["dispatch_cpu_pct"], 0), "(same process)",
                f"{b['dispatch_events']} events",
            ])  # fmt: skip
            rows.append([
                "broker publish / emit", f"{n} subscribers", "in-process",
                fmt_us(ps["p50"]), fmt_us(ps["p99"]), fmt_us(ps["max"]),
                fmt_pct(b["delivered_pct"]), fmt_rate(1e6 / ps["mean"]),
                fmt_pct(b["cpu_pct"], 0), "(same process)",
                f"emit→receive p50 {fmt_ms(lat['p50'])} p99 {fmt_ms(lat['p99'])} max"
                f" {fmt_ms(lat['max'])} ms" if n else "no subscribers",
            ])  # fmt: skip
            if "producer_us" in b:
                cs = b["producer_us"]
                rows.append([
                    "producer's own time / emit", f"{n} subscribers", "in-process",
                    fmt_us(cs["p50"]), fmt_us(cs["p99"]), fmt_us(cs["max"]), "—", "—", "—",
                    "(same process)", "time the producer task itself runs per emit",
                ])  # fmt: skip
        labels: list[str] = []
        for load in self.results["loads"]:
            if load["label"] not in labels:
                labels.append(load["label"])
        order = ["1x1000", "100x1000", "100x1000+1", "1000x100", "1000x1000"]
        labels.sort(key=lambda lb: (order.index(lb) if lb in order else len(order), lb))
        for label in labels:
            if label not in order and not self.args.all_steps:
                continue
            group = [
                ld
                for ld in self.results["loads"]
                if ld["label"] == label and not ld.get("superseded")
            ]
            rows.extend(self.load_rows(f"e2e {label}" if "+" not in label else "slow consumer",
                                       group))  # fmt: skip
        rows.extend(self.max_rate_rows())
        ing = self.results["ingest"]
        if ing:
            c = ing["commit"] or {}
            commit = (
                f"commit p50 {fmt_ms(c.get('p50_ms'))} p99 {fmt_ms(c.get('p99_ms'))} mean"
                f" {fmt_ms(c.get('mean_ms'))} ms, {c.get('events_per_commit', 0):.0f} events/commit"
                if c
                else "no commit histogram"
            )
            rows.append([
                "ingest POST→WS", f"{ing['batches']}x100 events, 8 in flight", "trio-obs",
                fmt_ms(ing["p50_ms"]), fmt_ms(ing["p99_ms"]), fmt_ms(ing["max_ms"]),
                fmt_pct(ing["delivered_pct"], 2),
                f"stored {fmt_rate(ing['stored_per_s'])}, delivered"
                f" {fmt_rate(ing['delivered_per_s'])}",
                fmt_pct(ing["server_cpu_pct"], 0), self.cpu_cell(ing), commit,
            ])  # fmt: skip
        mem = self.results["memory"]
        for kind in SERVERS:
            if kind in mem:
                m = mem[kind]
                rows.append([
                    "memory / idle connection", f"{m['connections']} idle", kind,
                    "", "", "", "", "", "", "",
                    f"**{m['kib_per_connection']:.1f} KiB** (RSS {m['rss_before'] / MiB:.0f} →"
                    f" {m['rss_after'] / MiB:.0f} MiB)",
                ])  # fmt: skip
        if "trio-obs" in mem:
            for kind in SERVERS[1:]:
                if kind in mem:
                    per = ratio(
                        mem["trio-obs"]["kib_per_connection"], mem[kind]["kib_per_connection"]
                    )
                    rows.append([
                        "memory / idle connection", "", f"trio-obs ÷ {kind}",
                        "", "", "", "", "", "", "", per,
                    ])  # fmt: skip
        lines = [
            "| " + " | ".join(head) + " |",
            "|" + "|".join("---" for _ in head) + "|",
        ]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
        return "\n".join(lines)

    @staticmethod
    def cpu_cell(load: dict[str, Any]) -> str:
        """The load generator's CPU, flagged when it was the saturated one."""
        cpu = load.get("loadgen_cpu_pct")
        if cpu is None:
            return "—"
        return f"{cpu:.0f} %" + (" ⚠ saturated" if load.get("loadgen_saturated") else "")

    def load_rows(self, measure: str, group: list[dict[str, Any]]) -> list[list[str]]:
        """A row per server of one load, then trio-obs ÷ each baseline."""
        rows = []
        by_server = {ld["server"]: ld for ld in group}
        for kind in SERVERS:
            ld = by_server.get(kind)
            if ld is None:
                continue
            who = "1 client" if ld["clients"] == 1 else f"{ld['clients']} clients"
            load_text = f"{who} x {ld['rate']:g}/s, {ld['seconds']:g} s"
            if ld.get("stalled"):
                load_text = f"{ld['clients']} + {ld['stalled']} stalled x {ld['rate']:g}/s"
            if "error" in ld:
                rows.append([measure, load_text, kind, "", "", "", "", "", "", "",
                             f"error: {ld['error'][:120]}"])  # fmt: skip
                continue
            notes = []
            if ld["emitted"] < ld["offered"] // max(1, ld["clients"]):
                notes.append(
                    f"emitter gave up: {ld['emitted']} of {ld['offered'] // ld['clients']}"
                )
            if ld["emitter"].get("worstLagMs", 0) > 5:
                notes.append(f"emitter lag ≤{ld['emitter']['worstLagMs']:.0f} ms")
            if ld["closes"]:
                notes.append("closes " + ", ".join(f"{k}x{v}" for k, v in ld["closes"].items()))
            if ld["stale"]:
                notes.append(f"{ld['stale']} stale")
            if ld["negative"]:
                notes.append(f"{ld['negative']} arrived before their scheduled time (clock?)")
            if ld.get("stalled"):
                notes.append(f"peak RSS {ld['rss_peak'] / MiB:.0f} MiB")
            if ld.get("host_busy_pct", 0) >= HOST_FULL_PCT:
                notes.append(f"host CPU {ld['host_busy_pct']:.0f} % busy")
            if ld.get("others_cpu_pct", 0) >= OTHERS_NOTE_PCT:
                notes.append(f"other processes {ld['others_cpu_pct']:.0f} % CPU")
            rows.append([
                measure, load_text, kind, fmt_ms(ld["p50_ms"]), fmt_ms(ld["p99_ms"]),
                fmt_ms(ld["max_ms"]), fmt_pct(ld["delivered_pct"], 2),
                fmt_rate(ld["deliveries_per_s"]), fmt_pct(ld["server_cpu_pct"], 0),
                self.cpu_cell(ld), "; ".join(notes),
            ])  # fmt: skip
        ours = by_server.get("trio-obs")
        if ours and "error" not in ours:
            for kind in SERVERS[1:]:
                theirs = by_server.get(kind)
                if theirs and "error" not in theirs:
                    rows.append([
                        measure, "", f"trio-obs ÷ {kind}",
                        *(ratio(ours[k], theirs[k]) for k in ("p50_ms", "p99_ms", "max_ms",
                                                               "delivered_pct", "deliveries_per_s",
                                                               "server_cpu_pct")),
                        "", "",
                    ])  # fmt: skip
        return rows

    def max_rate_rows(self) -> list[list[str]]:
        """The max-rate search at 1,000 clients: the highest rate each server delivered in
        full, and the highest it delivered in full within the plan's 100 ms p99."""
        rows = []
        rates = self.results["max_rate"]
        for kind in SERVERS:
            r = rates.get(kind)
            if r is None:
                continue
            best = self.load(kind, r["label"]) if r.get("label") else None
            if best is None:
                rows.append(["max rate, 1000 clients", r["criterion"], kind, "", "", "", "",
                             "not measured", "", "", self.search_trail(kind)])  # fmt: skip
                continue
            what = (
                f"in full up to {best['rate']:g} events/s"
                if r["passed"]
                else f"none in full; at {best['rate']:g} events/s"
            )
            within = r.get("within_bar")
            bar = (
                f"p99 <= {PLAN_BAR_MS:.0f} ms up to {fmt_rate(within['deliveries_per_s'])}"
                f" ({within['label']}); "
                if within
                else f"p99 <= {PLAN_BAR_MS:.0f} ms: none; "
            )
            rows.append([
                "max rate, 1000 clients", what, kind,
                fmt_ms(best["p50_ms"]), fmt_ms(best["p99_ms"]), fmt_ms(best["max_ms"]),
                fmt_pct(best["delivered_pct"], 2), f"**{fmt_rate(best['deliveries_per_s'])}**",
                fmt_pct(best["server_cpu_pct"], 0), self.cpu_cell(best),
                bar + self.search_trail(kind),
            ])  # fmt: skip
        ours = rates.get("trio-obs", {}).get("deliveries_per_s")
        for kind in SERVERS[1:]:
            theirs = rates.get(kind, {}).get("deliveries_per_s")
            if ours and theirs:
                rows.append(["max rate, 1000 clients", "", f"trio-obs ÷ {kind}", "", "", "", "",
                             ratio(ours, theirs), "", "", ""])  # fmt: skip
        return rows

    def search_trail(self, kind: str) -> str:
        """The steps of the search, as rate: p99 (✗ and % delivered where one failed)."""
        steps = [ld for ld in self.results["loads"] if ld["server"] == kind and ld.get("search")]
        parts = []
        for ld in steps:
            if "error" in ld:
                parts.append(f"{ld['rate']:g}: error")
                continue
            mark = "" if full(ld) else f" ✗ {ld['delivered_pct']:.0f} %"
            if ld.get("superseded"):
                mark += " (tried again)"
            parts.append(f"{ld['rate']:g}: p99 {fmt_ms(ld['p99_ms'])}{mark}")
        return "steps " + ", ".join(parts)

    def write(self) -> None:
        """``latest.json`` and ``YYYY-MM-DD.json``; a quick or partial run (``--only``,
        ``--servers``) writes ``quick-``/``partial-`` files instead, leaving those alone."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        partial = self.args.only is not None or self.args.servers != ",".join(SERVERS)
        prefix = "quick-" if self.quick else "partial-" if partial else ""
        text = dump_json(self.results)
        day = dt.date.today().isoformat()
        (RESULTS / f"{prefix}latest.json").write_text(text, encoding="utf-8")
        (RESULTS / f"{prefix}{day}.json").write_text(text, encoding="utf-8")
        self.say(f"wrote {RESULTS / (prefix + 'latest.json')} and {prefix}{day}.json")


def dump_json(results: dict[str, Any]) -> str:
    """Indented JSON, with each latency histogram on one line (they are long)."""
    compact: dict[str, str] = {}

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            out = {}
            for key, value in obj.items():
                if key == "hist":
                    marker = f"@@hist{len(compact)}@@"
                    compact[marker] = json.dumps(value, separators=(",", ":"))
                    out[key] = marker
                else:
                    out[key] = walk(value)
            return out
        if isinstance(obj, list):
            return [walk(item) for item in obj]
        return obj

    text = json.dumps(walk(results), indent=1, default=str)
    for marker, raw in compact.items():
        text = text.replace(f'"{marker}"', raw)
    return text + "\n"


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
    """Commits during the ingest as the driver observed them (when /metrics has no histogram)."""
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


def parse_counter_total(text: str, name: str) -> float:
    """The sum over labels of a Prometheus counter."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --------------------------------------------------------------------------- meta and main


def meta(args: argparse.Namespace) -> dict[str, Any]:
    """Where and how this run ran."""

    def out(cmd: list[str]) -> str | None:
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    import trio_obs

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "node": out(["node", "--version"]),
        "trio_obs": trio_obs.__version__,
        "commit": out(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"]),
        "dirty": bool(out(["git", "-C", str(HERE.parent), "status", "--porcelain", "src"])),
        "args": vars(args),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="trio-obs benchmarks side by side with baseline servers."
    )
    parser.add_argument("--quick", action="store_true", help="a subset in under a minute")
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=None,
        help="comma-separated sections: codec,broker,e2e,slow,ingest,memory",
    )
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help=f"comma-separated, of {','.join(SERVERS)}"
    )
    parser.add_argument(
        "--loadgen-procs",
        type=int,
        default=2 if (os.cpu_count() or 1) >= 2 else 1,
        help="Node load generator processes sharing the clients",
    )
    parser.add_argument(
        "--queue-size", type=int, default=1024, help="trio-obs per-connection queue"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every load's length")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds (default 600, quick 60)"
    )
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip the pyinstrument run"
    )
    parser.add_argument(
        "--all-steps", action="store_true", help="also print every step of the max-rate search"
    )
    parser.add_argument(
        "--render", metavar="JSON", help="print the table and targets of a results file; no run"
    )
    args = parser.parse_args(argv)

    if args.render:
        suite = Suite(args)
        suite.results = json.loads(Path(args.render).read_text(encoding="utf-8"))
        suite.results["targets"] = []
        suite.targets()
        print(suite.table())
        print()
        print(suite.targets_text())
        return 0

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        return Suite(args).run()
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
