"""Cluster benchmark (SPEC §8, §10): several trio-obs nodes on one Redis against one node alone.

    python benchmarks/cluster/run.py [--quick] [--clients 100] [--rate 1000] [--seconds S]

Starts its own ``redis-server`` (free port, temporary directory, AOF ``everysec``), the
nodes (``node.py``: trio-obs embedded, emitting on command) and Node load generators
(``benchmarks/loadgen/loadgen.js``, one process per receiving node), then measures in
one run, round after round so that the machine's noise falls on every load alike:

- ``single``: one node alone (SQLite), producer and clients on it -- the reference;
- ``A->B``: two nodes; the producer on A, every client on B (the cross-node path);
- ``A->A+B``: two nodes; the producer on A, half the clients on each;
- ``A->B+C``: three nodes; the producer on A, the clients split over B and C.

For each: emit -> receipt latency (p50/p99/max), delivered %, each node's CPU per
delivery (its CPU time / the deliveries its clients received), and Redis's CPU per
event. Prints a table and the targets, writes ``results/latest.json`` (``quick-latest``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import ha
import psutil

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
RESULTS = HERE / "results"


class Child:
    """A child process with a line protocol on stdin/stdout; stderr goes to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._err = open(self.log, "ab")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
            text=True, bufsize=1, start_new_session=True, cwd=BENCH,
        )  # fmt: skip
        self.ps = psutil.Process(self.proc.pid)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise RuntimeError(f"{self.name} exited; see {self.log}")
            if line.startswith("ERROR"):
                raise RuntimeError(f"{self.name}: {line}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise RuntimeError(f"{self.name}: no {prefix} within {timeout:.0f} s; see {self.log}")

    def request(self, line: str, prefix: str, timeout: float = 30.0) -> str:
        self.send(line)
        return self.expect(prefix, timeout)

    def cpu(self) -> float:
        return cpu_of(self.ps)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, AssertionError):
                self.send("QUIT")
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self._err.close()


def cpu_of(ps: psutil.Process) -> float:
    """User + system CPU seconds of a process, all threads."""
    try:
        t = ps.cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CpuSource(Protocol):
    """Something whose CPU time is counted (a Redis, or all the servers of a cluster)."""

    def cpu(self) -> float:
        """User + system CPU seconds so far."""
        ...


class Redis:
    """A private redis-server (AOF everysec, the README's default durability)."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(folder),
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                break
            time.sleep(0.02)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def cpu(self) -> float:
        return cpu_of(self.ps)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


class Node:
    """A trio-obs node process (``node.py``), of this checkout or of ``python``'s trio-obs."""

    def __init__(
        self,
        name: str,
        redis: str | None,
        log_dir: Path,
        *,
        python: str = sys.executable,
        extra: Sequence[str] = (),
    ) -> None:
        argv = [python, str(HERE / "node.py"), *(["--redis", redis] if redis else []), *extra]
        self.child = Child(name, argv, log_dir)
        self.name = name
        self.port = int(self.child.expect("READY", 60))
        self.url = f"ws://127.0.0.1:{self.port}/ws?observability=all"

    def count(self) -> int:
        return int(self.child.request("COUNT", "COUNT"))


class Loadgen:
    """One Node load generator process, holding the clients of one node."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.child = Child(name, ["node", str(BENCH / "loadgen" / "loadgen.js")], log_dir)
        self.child.expect("READY")

    def connect(self, url: str, n: int) -> None:
        got = json.loads(self.child.request(f"CONNECT {url} {n}", "CONNECTED", 60))
        if got["open"] != n:
            raise RuntimeError(f"only {got['open']} of {n} clients connected to {url}")


def ensure_ws() -> None:
    """``npm ci`` the benchmarks' Node dependency (``ws``) when it is missing."""
    if (BENCH / "node_modules" / "ws" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        sys.exit("the load generator needs node and npm")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True, timeout=300)


# --------------------------------------------------------------------------- histograms


def bucket_bounds(i: int) -> tuple[float, float]:
    """Bounds in µs of the load generator's histogram bucket ``i`` (mirrors loadgen.js)."""
    if i < 1000:
        return i * 10.0, (i + 1) * 10.0
    if i < 1990:
        return 1e4 + (i - 1000) * 1e3, 1e4 + (i - 999) * 1e3
    if i < 2580:
        return 1e6 + (i - 1990) * 1e5, 1e6 + (i - 1989) * 1e5
    return 6e7, 6e7


def quantile_ms(hist: dict[int, int], q: float, max_us: float) -> float | None:
    n = sum(hist.values())
    if not n:
        return None
    seen, rank = 0, q * (n - 1)
    for i in sorted(hist):
        seen += hist[i]
        if seen > rank:
            lo, hi = bucket_bounds(i)
            return round(min((lo + hi) / 2, max_us) / 1000, 3)
    return round(max_us / 1000, 3)


# --------------------------------------------------------------------------- one load


def measure(
    name: str,
    emitter: Node,
    receivers: list[tuple[Node, Loadgen, int]],
    nodes: list[Node],
    redis: CpuSource | None,
    *,
    rate: int,
    seconds: float,
    run: str,
) -> dict[str, Any]:
    """One load: connect the clients, emit, and count what arrived where and what it cost."""
    for node, gen, n in receivers:
        gen.connect(node.url, n)
    deadline = time.monotonic() + 30
    want = {node.name: 0 for node in nodes}
    for node, _, n in receivers:
        want[node.name] += n
    while any(node.count() < want[node.name] for node in nodes):
        if time.monotonic() > deadline:
            raise RuntimeError("the nodes did not see every client connect")
        time.sleep(0.05)
    time.sleep(1.0)  # let connections (and the closes of the previous load's) settle
    for _, gen, _ in receivers:
        gen.child.request(f"RESET {run}", "OK")
    count = int(rate * seconds)
    cpu0 = {node.name: node.child.cpu() for node in nodes}
    redis0 = redis.cpu() if redis else 0.0
    busy0, wall0 = psutil.cpu_times(), time.monotonic()
    emitted = json.loads(
        emitter.child.request(f"EMIT {run} {rate} {count} {seconds * 3}", "EMITTED", seconds * 4)
    )
    time.sleep(0.5)  # the last deliveries
    reports = [json.loads(gen.child.request("REPORT", "REPORT")) for _, gen, _ in receivers]
    wall = time.monotonic() - wall0
    busy1 = psutil.cpu_times()
    cpu = {node.name: node.child.cpu() - cpu0[node.name] for node in nodes}
    redis_cpu = redis.cpu() - redis0 if redis else None
    hist: dict[int, int] = {}
    per_node: dict[str, dict[str, Any]] = {}
    for (node, _, n), rep in zip(receivers, reports, strict=True):
        node_hist = {int(i): int(c) for i, c in rep["hist"]}
        for i, c in node_hist.items():
            hist[i] = hist.get(i, 0) + c
        per_node[node.name] = {
            "clients": n,
            "deliveries": rep["count"],
            "p99Ms": quantile_ms(node_hist, 0.99, rep["maxUs"]),
        }
    deliveries = sum(r["count"] for r in reports)
    max_us = max((r["maxUs"] for r in reports), default=0.0)
    producing = emitted.get("producerCpuSeconds")  # None from a node.py that does not say
    for node in nodes:
        got = per_node.setdefault(node.name, {"clients": 0, "deliveries": 0})
        got["cpuSeconds"] = round(cpu[node.name], 4)
        got["cpuPct"] = round(100 * cpu[node.name] / wall, 1)
        got["cpuUsPerDelivery"] = (
            round(1e6 * cpu[node.name] / got["deliveries"], 2) if got["deliveries"] else None
        )
        # The producer feeds every client of the cluster, not only its own node's: its
        # task's CPU is shared by every delivery, the rest of the node's by its own (on
        # a single node the two are the same figure). See README, "CPU per delivery".
        shared = got["cpuUsPerDelivery"]
        if node is emitter and producing is not None and got["deliveries"] and deliveries:
            got["producerCpuSeconds"] = producing
            own = (cpu[node.name] - producing) / got["deliveries"]
            shared = round(1e6 * (own + producing / deliveries), 2)
        got["cpuUsPerDeliveryShared"] = shared
    busy = sum(busy1) - busy1.idle - (sum(busy0) - busy0.idle)
    clients = sum(n for _, _, n in receivers)
    return {
        "load": name,
        "clients": clients,
        "rate": rate,
        "emitted": emitted["emitted"],
        "emitterWorstLagMs": emitted["worstLagMs"],
        "deliveredPct": round(100 * deliveries / max(1, emitted["emitted"] * clients), 2),
        "p50Ms": quantile_ms(hist, 0.50, max_us),
        "p99Ms": quantile_ms(hist, 0.99, max_us),
        "maxMs": round(max_us / 1000, 3),
        "nodes": per_node,
        "wallSeconds": round(wall, 3),
        "redisCpuSeconds": round(redis_cpu, 4) if redis_cpu is not None else None,
        "redisCpuPct": round(100 * redis_cpu / wall, 1) if redis_cpu is not None else None,
        "redisUsPerEvent": (
            round(1e6 * redis_cpu / emitted["emitted"], 2)
            if redis_cpu is not None and emitted["emitted"]
            else None
        ),
        "hostBusyPct": round(100 * busy / wall / psutil.cpu_count(), 1),
    }


def median_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The round whose p99 is the median (its figures stay consistent with each other)."""
    ordered = sorted(rows, key=lambda r: r["p99Ms"] if r["p99Ms"] is not None else 1e9)
    return {**ordered[len(ordered) // 2], "rounds": [r["p99Ms"] for r in rows]}


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    ensure_ws()
    folder = Path(tempfile.mkdtemp(prefix="trio-obs-cluster-"))
    logs = folder / "logs"
    logs.mkdir()
    children: list[Child] = []
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": psutil.cpu_count(), "python": sys.version.split()[0]},
        "settings": {
            "clients": args.clients,
            "rate": args.rate,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "quick": args.quick,
            "only": sorted(args.only),
            "compare": args.compare,
        },
    }
    try:
        if "nodes" in args.only:
            result |= nodes_section(args, folder, logs, children)
        if "durability" in args.only:
            pythons = {"new": sys.executable}
            if args.compare:
                pythons["old"] = other_python(args.compare)
            result["durability"] = ha.durability(args, folder, logs, children, pythons)
        if "cluster" in args.only:
            result["cluster"] = ha.cluster(args, folder, logs, children)
    finally:
        for child in reversed(children):
            child.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return result


def other_python(rev: str) -> str:
    """The Python of a venv holding trio-obs at ``rev`` (made once, as ``run.py --compare``)."""
    sys.path.insert(0, str(BENCH))
    from suite.compare import prepare  # the main benchmark's: one venv per revision

    spec, commit = prepare(rev, lambda text: print(text, file=sys.stderr))
    print(f"compare: {rev} is {commit}", file=sys.stderr)
    assert spec.python is not None
    return spec.python


def nodes_section(
    args: argparse.Namespace, folder: Path, logs: Path, children: list[Child]
) -> dict[str, Any]:
    """One node alone, then two and three nodes on one Redis (the section's loads)."""
    redis = Redis(folder)
    rows: dict[str, list[dict[str, Any]]] = {}
    n, half = args.clients, args.clients // 2
    try:

        def start_node(name: str, url: str | None) -> Node:
            node = Node(name, url, logs)
            children.append(node.child)
            return node

        def start_gen(name: str) -> Loadgen:
            gen = Loadgen(name, logs)
            children.append(gen.child)
            return gen

        single = start_node("single", None)
        a, b = start_node("A", redis.url), start_node("B", redis.url)
        gens = {name: start_gen(f"loadgen-{name}") for name in ("single", "A", "B", "C")}
        loads = {
            "single": (single, [(single, gens["single"], n)], [single], None),
            "A->B": (a, [(b, gens["B"], n)], [a, b], redis),
            "A->A+B": (a, [(a, gens["A"], half), (b, gens["B"], n - half)], [a, b], redis),
        }

        def only(receivers: list[tuple[Node, Loadgen, int]]) -> None:
            """Close the clients of every load generator this load does not use."""
            used = [gen for _, gen, _ in receivers]
            for gen in gens.values():
                if gen not in used:
                    gen.child.request("CLOSE", "CLOSED")

        for name, (emitter, receivers, nodes, r) in loads.items():  # warm-up, not measured
            only(receivers)
            measure(name, emitter, receivers, nodes, r, rate=args.rate, seconds=1.0, run="w")
        for i in range(args.rounds):
            for k, (name, (emitter, receivers, nodes, r)) in enumerate(loads.items()):
                print(f"round {i + 1}: {name}", file=sys.stderr)
                only(receivers)
                rows.setdefault(name, []).append(
                    measure(
                        name,
                        emitter,
                        receivers,
                        nodes,
                        r,
                        rate=args.rate,
                        seconds=args.seconds,
                        run=f"L{k}r{i}",
                    )
                )
        only([])
        single.child.stop()
        c = start_node("C", redis.url)
        three = (a, [(b, gens["B"], half), (c, gens["C"], n - half)], [a, b, c], redis)
        measure("A->B+C", *three, rate=args.rate, seconds=1.0, run="w")
        for i in range(args.rounds):
            print(f"round {i + 1}: A->B+C", file=sys.stderr)
            rows.setdefault("A->B+C", []).append(
                measure("A->B+C", *three, rate=args.rate, seconds=args.seconds, run=f"L3r{i}")
            )
    finally:
        for child in [*children]:
            if child.name in ("single", "A", "B", "C") or child.name.startswith("loadgen-"):
                child.stop()
        redis.stop()
    loads_out = {name: median_of(r) for name, r in rows.items()}
    return {
        "loads": loads_out,
        "targets": targets(loads_out),
        "model": model(loads_out, args.rate),
    }


def model(loads: dict[str, dict[str, Any]], rate: int) -> dict[str, Any]:
    """Per-event and per-delivery costs fitted from the run, and what they project to K nodes.

    A receiving node's CPU = events x (its cost per event: read, decode, keep) + deliveries
    x (cost per delivery); node B with all clients (A->B) and with half (A->A+B) gives both.
    Redis's CPU per event = a fixed part (the script) + a part per node (its XREAD); two
    and three nodes give both. Noise can make a fitted part negative: it is clamped to 0.
    """
    full, half = loads["A->B"], loads["A->A+B"]
    b1, b2 = full["nodes"]["B"], half["nodes"]["B"]
    per_delivery = (b1["cpuSeconds"] - b2["cpuSeconds"]) / max(
        1, b1["deliveries"] - b2["deliveries"]
    )
    per_delivery = max(per_delivery, 0.0)
    per_event = max(0.0, (b1["cpuSeconds"] - per_delivery * b1["deliveries"]) / full["emitted"])
    fit: dict[str, Any] = {
        "nodeUsPerEvent": round(per_event * 1e6, 2),
        "nodeUsPerDelivery": round(per_delivery * 1e6, 3),
    }
    three = loads.get("A->B+C")
    if three is None:
        return fit
    r2, r3 = half["redisUsPerEvent"], three["redisUsPerEvent"]
    per_node = max(0.0, r3 - r2)
    fixed = max(0.0, r2 - 2 * per_node)
    fit |= {"redisUsPerEventFixed": round(fixed, 2), "redisUsPerEventPerNode": round(per_node, 2)}
    projection = []
    for k in (2, 4, 8, 16, 32):
        budget = 1e6 - rate * fit["nodeUsPerEvent"]  # us of one core per second, per node
        clients = budget / (rate * fit["nodeUsPerDelivery"]) if per_delivery else None
        redis_us = fixed + k * per_node
        projection.append({
            "nodes": k,
            "clientsPerNodeAtOneCore": int(clients) if clients and clients > 0 else None,
            "clusterClients": int(k * clients) if clients and clients > 0 else None,
            "redisCorePctAtRate": round(rate * redis_us / 1e4, 1),
            "redisMaxEventsPerSecond": int(1e6 / redis_us) if redis_us else None,
        })  # fmt: skip
    fit["projection"] = {"rate": rate, "rows": projection}
    return fit


def targets(loads: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """SPEC §8's cluster targets, judged on this run's figures."""
    single, cross, split = loads["single"], loads["A->B"], loads["A->A+B"]
    three = loads.get("A->B+C")
    out = []
    limit = single["p99Ms"] + 2.0
    out.append({"target": "posted on A, received on B: p99 <= single-node p99 + 2 ms",
                "figure": f"{cross['p99Ms']} ms vs {single['p99Ms']} + 2 ms",
                "met": cross["p99Ms"] <= limit})  # fmt: skip
    one = single["nodes"]["single"]["cpuUsPerDelivery"]
    for label, load, name in (("A->B, node B", cross, "B"), ("A->A+B, node B", split, "B"),
                              ("A->A+B, node A (with the producer)", split, "A")):  # fmt: skip
        got = load["nodes"][name]
        mine = got.get("cpuUsPerDeliveryShared") or got["cpuUsPerDelivery"]
        figure = f"{mine} vs {one} us ({mine / one:.2f}x)"
        if mine != got["cpuUsPerDelivery"]:
            raw = got["cpuUsPerDelivery"]
            figure += (
                f", its producer's {got['producerCpuSeconds']} s shared by every delivery;"
                f" all of it on this node's deliveries: {raw} us ({raw / one:.2f}x)"
            )
        out.append({"target": f"CPU per delivery within 1.2x of one node's ({label})",
                    "figure": figure, "met": mine <= 1.2 * one})  # fmt: skip
    if three is not None:
        two, more = split["redisUsPerEvent"], three["redisUsPerEvent"]
        out.append({"target": "Redis CPU per event flat in nodes (2 -> 3 nodes)",
                    "figure": f"{two} -> {more} us per event ({more / two:.2f}x)",
                    "met": more <= 1.5 * two})  # fmt: skip
    return out


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    head = (
        f"cluster benchmark: {s['clients']} clients x {s['rate']} events/s, {s['seconds']} s"
        f" per load, median of {s['rounds']} round(s); {result['machine']['cpus']} cores"
    )
    more = ha.tables(result.get("durability"), result.get("cluster"))
    if "loads" not in result:
        return head + "\n" + more
    return head + "\n" + nodes_table(result) + "\n" + more


def nodes_table(result: dict[str, Any]) -> str:
    lines = [
        "",
        "| load | p50 / p99 / max ms | delivered | per node: CPU, CPU per delivery, p99 of its"
        " clients | Redis CPU, per event | host busy |",
        "|---|---|---|---|---|---|",
    ]
    for name, load in result["loads"].items():
        nodes = "; ".join(
            f"{k}: {v['cpuPct']} %"
            + (f", {v['cpuUsPerDelivery']} us, p99 {v['p99Ms']} ms" if v["deliveries"] else "")
            + (
                f" (producer {v['producerCpuSeconds']} s; shared: {v['cpuUsPerDeliveryShared']} us)"
                if v.get("producerCpuSeconds") is not None
                else ""
            )
            for k, v in load["nodes"].items()
        )
        redis = (
            "-"
            if load["redisCpuPct"] is None
            else f"{load['redisCpuPct']}%, {load['redisUsPerEvent']}"
        )
        lines.append(
            f"| {name} | {load['p50Ms']} / {load['p99Ms']} / {load['maxMs']} "
            f"| {load['deliveredPct']} % | {nodes} | {redis} | {load['hostBusyPct']} % |"
        )
    lines += ["", "targets (SPEC §8):"]
    for t in result["targets"]:
        lines.append(f"- {'met' if t['met'] else 'NOT met'}: {t['target']} -- {t['figure']}")
    fit = result["model"]
    lines += [
        "",
        f"fitted: a node spends {fit['nodeUsPerEvent']} us per event (whatever its clients) and"
        f" {fit['nodeUsPerDelivery']} us per delivery",
    ]
    if "projection" in fit:
        lines[-1] += (
            f"; Redis {fit['redisUsPerEventFixed']} us per event + {fit['redisUsPerEventPerNode']}"
            " us per event per node"
        )
        rate = fit["projection"]["rate"]
        lines += [
            f"projection at {rate} events/s (one core per node, Redis on one core; at this"
            " run's batch sizes):",
            "| nodes | clients per node | clients in all | Redis core % | Redis max events/s |",
            "|---|---|---|---|---|",
        ]
        for row in fit["projection"]["rows"]:
            lines.append(
                f"| {row['nodes']} | {row['clientsPerNodeAtOneCore']} | {row['clusterClients']} "
                f"| {row['redisCorePctAtRate']} % | {row['redisMaxEventsPerSecond']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3-second loads, one round")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=int, default=1000, help="events per second")
    parser.add_argument("--seconds", type=float, default=None, help="per load (10; quick 3)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds of every load (3; quick 1)"
    )
    parser.add_argument(
        "--only",
        default="nodes,durability,cluster",
        help="sections: nodes (one Redis, 1-3 nodes), durability (with and without WAIT), "
        "cluster (a Redis Cluster of 3 shards)",
    )
    parser.add_argument(
        "--compare", default=None, metavar="REV",
        help="durability: also trio-obs at REV (a git revision), same run",
    )  # fmt: skip
    args = parser.parse_args()
    args.only = set(args.only.split(","))
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    name = "quick-latest.json" if args.quick else "latest.json"
    if args.only != {"nodes", "durability", "cluster"}:
        name = "partial-" + name
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
