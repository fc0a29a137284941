"""The cluster benchmark's two other sections: what durability costs, and a Redis Cluster.

- ``durability``: one Redis (AOF ``everysec``) with a replica. Nodes acknowledge a batch
  once Redis has it (the default) or once the replica has it too (``--redis-replicas 1``:
  ``WAIT``). For each: the cross-node load (posted on A, received on B: p50 / p99) and
  ingest (``POST /api/events``, batches of 100, 8 in flight: events stored per second and
  the POST's p50 / p99), with this checkout's trio-obs and, with ``--compare REV``, the
  other revision's, in the same run.
- ``cluster``: a Redis Cluster of three shards (a primary and a replica each), the producer
  spreading its events over 48 executions (so over every shard); the clients on B, then on
  B and C, then on B, C and D: deliveries, p99, each node's CPU and each shard's CPU.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from run import Loadgen, Node, cpu_of, free_port, measure, quantile_ms

EXECUTIONS = 48
"""Executions the cluster load spreads its events over."""


class RedisProcess:
    """One private ``redis-server`` (AOF ``everysec``) on a free port, stopped by its PID."""

    def __init__(self, folder: Path, *args: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (apt-get install redis-server)")
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(folder),
             "--loglevel", "warning", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.ps = psutil.Process(self.proc.pid)
        self.call("PING", wait=10)

    def call(self, *args: str, wait: float = 0.0) -> str:
        """One command through ``redis-cli`` (retried for ``wait`` seconds until it answers)."""
        deadline = time.monotonic() + wait
        while True:
            done = subprocess.run(
                ["redis-cli", "-p", str(self.port), *args],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            if done.returncode == 0 and not done.stdout.startswith("Could not connect"):
                return done.stdout
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port}: {done.stdout}{done.stderr}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cpu(self) -> float:
        return cpu_of(self.ps)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(5)


class Servers:
    """Several ``redis-server``\\ s counted as one (CPU summed)."""

    def __init__(self, servers: list[RedisProcess]) -> None:
        self.servers = servers

    def cpu(self) -> float:
        return sum(s.cpu() for s in self.servers)

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


def replicated(folder: Path) -> tuple[RedisProcess, RedisProcess]:
    """A primary and a replica in sync."""
    primary = RedisProcess(folder / "primary")
    replica = RedisProcess(folder / "replica", "--replicaof", "127.0.0.1", str(primary.port))
    deadline = time.monotonic() + 30
    while "state=online" not in primary.call("INFO", "replication"):
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not sync")
        time.sleep(0.05)
    return primary, replica


def redis_cluster(
    folder: Path, shards: int = 3
) -> tuple[list[RedisProcess], str, list[RedisProcess]]:
    """A Redis Cluster of ``shards`` primaries with a replica each: its servers, URL, primaries."""
    nodes = []
    for i in range(2 * shards):
        port = free_port()
        while port + 10000 > 65535:
            port = free_port()
        nodes.append(RedisProcess(folder / f"n{i}", "--cluster-enabled", "yes",
                                  "--cluster-config-file", "nodes.conf", port=port))  # fmt: skip
    subprocess.run(
        ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
         "--cluster-replicas", "1", "--cluster-yes"],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not all("cluster_state:ok" in n.call("CLUSTER", "INFO") for n in nodes):
        if time.monotonic() > deadline:
            raise RuntimeError("the cluster did not form")
        time.sleep(0.1)
    primaries = [n for n in nodes if "role:master" in n.call("INFO", "replication")]
    return nodes, f"redis+cluster://127.0.0.1:{primaries[0].port}", primaries


def ingest(gen: Loadgen, node: Node, run: str, batches: int) -> dict[str, Any]:
    """``POST /api/events`` (batches of 100, 8 in flight) to ``node``: stored/s and POST latency."""
    got = json.loads(gen.child.request(
        f"INGEST http://127.0.0.1:{node.port} {run} {batches} 100 8 ingest-{run} 120",
        "INGESTED", 180,
    ))  # fmt: skip
    hist = {int(i): int(c) for i, c in got["postHist"]}
    seconds = max(1e-9, got["endS"] - got["startS"])
    return {
        "storedPerS": round(got["accepted"] / seconds),
        "postP50Ms": quantile_ms(hist, 0.5, 6e7),
        "postP99Ms": quantile_ms(hist, 0.99, 6e7),
        "statuses": got["statuses"],
    }


def durability(
    args: Any, folder: Path, logs: Path, children: list[Any], pythons: dict[str, str]
) -> dict[str, Any]:
    """``A->B`` and ingest, without and with ``WAIT``, for each trio-obs (``pythons``)."""
    primary, replica = replicated(folder / "durability")
    gens = [Loadgen("loadgen-durability-b", logs), Loadgen("loadgen-durability-i", logs)]
    children += [g.child for g in gens]
    out: dict[str, Any] = {}
    try:
        for who, python in pythons.items():
            for replicas in (0, 1):
                label = f"{who}, {'WAIT 1 replica' if replicas else 'no WAIT'}"
                extra = ("--replicas", str(replicas))
                a = Node(f"dur-A-{who}-{replicas}", primary.url, logs, python=python, extra=extra)
                b = Node(f"dur-B-{who}-{replicas}", primary.url, logs, python=python, extra=extra)
                children += [a.child, b.child]
                try:
                    load = (a, [(b, gens[0], args.clients)], [a, b], primary)
                    measure(label, *load, rate=args.rate, seconds=1.0, run="w")  # warm-up
                    rows = []
                    for i in range(args.rounds):
                        print(f"durability round {i + 1}: {label}", file=sys.stderr)
                        rows.append(
                            measure(
                                label,
                                *load,
                                rate=args.rate,
                                seconds=args.seconds,
                                run=f"D{replicas}{who[:1]}{i}",
                            )
                        )
                    gens[0].child.request("CLOSE", "CLOSED")
                    rows.sort(key=lambda r: r["p99Ms"] or 1e9)
                    row = rows[len(rows) // 2]
                    batches = 300 if args.quick else 600
                    stored = [ingest(gens[1], a, f"I{replicas}{who[:1]}{i}", batches)
                              for i in range(args.rounds)]  # fmt: skip
                    stored.sort(key=lambda r: r["storedPerS"])
                    out[label] = {
                        "p50Ms": row["p50Ms"],
                        "p99Ms": row["p99Ms"],
                        "deliveredPct": row["deliveredPct"],
                        "redisUsPerEvent": row["redisUsPerEvent"],
                        "hostBusyPct": row["hostBusyPct"],
                        "ingest": stored[len(stored) // 2],
                    }
                finally:
                    a.child.stop()
                    b.child.stop()
    finally:
        primary.stop()
        replica.stop()
    return out


def cluster(args: Any, folder: Path, logs: Path, children: list[Any]) -> dict[str, Any]:
    """The producer on A, the clients spread over 1, 2 and 3 more nodes, on 3 shards."""
    nodes_, url, primaries = redis_cluster(folder / "cluster")
    everything = Servers(nodes_)
    extra = ("--executions", str(EXECUTIONS))
    out: dict[str, Any] = {}
    try:
        nodes = [Node(f"cl-{n}", url, logs, extra=extra) for n in "ABCD"]
        gens = [Loadgen(f"loadgen-cl-{n}", logs) for n in "BCD"]
        children += [n.child for n in nodes] + [g.child for g in gens]
        a = nodes[0]
        for k in (1, 2, 3):
            receivers = [(nodes[j], gens[j - 1], args.clients // k) for j in range(1, k + 1)]
            for g in gens:
                if all(g is not r[1] for r in receivers):
                    g.child.request("CLOSE", "CLOSED")
            name = "A->" + "+".join("BCD"[:k])
            used = [a, *nodes[1 : k + 1]]
            measure(name, a, receivers, used, everything, rate=args.rate, seconds=1.0, run="w")
            rows = []
            for i in range(args.rounds):
                print(f"cluster round {i + 1}: {name}", file=sys.stderr)
                before = [p.cpu() for p in primaries]
                row = measure(name, a, receivers, used, everything, rate=args.rate,
                              seconds=args.seconds, run=f"C{k}{i}")  # fmt: skip
                spent = [p.cpu() - b for p, b in zip(primaries, before, strict=True)]
                row["shardCpuPct"] = [round(100 * s / row["wallSeconds"], 1) for s in spent]
                row["shardUsPerEvent"] = [round(1e6 * s / max(1, row["emitted"]), 2)
                                          for s in spent]  # fmt: skip
                rows.append(row)
            rows.sort(key=lambda r: r["p99Ms"] or 1e9)
            out[name] = rows[len(rows) // 2]
    finally:
        everything.stop()
    return out


def tables(durable: dict[str, Any] | None, sharded: dict[str, Any] | None) -> str:
    """The two sections as markdown tables."""
    lines: list[str] = []
    if durable:
        lines += [
            "",
            "durability (A->B p50 / p99; ingest: batches of 100, 8 in flight):",
            "| trio-obs, acknowledged when | p50 / p99 ms | delivered | Redis us per event"
            " | ingest stored/s | POST p50 / p99 ms |",
            "|---|---|---|---|---|---|",
        ]
        for label, row in durable.items():
            ing = row["ingest"]
            lines.append(
                f"| {label} | {row['p50Ms']} / {row['p99Ms']} | {row['deliveredPct']} % "
                f"| {row['redisUsPerEvent']} | {ing['storedPerS']} "
                f"| {ing['postP50Ms']} / {ing['postP99Ms']} |"
            )
    if sharded:
        lines += [
            "",
            f"Redis Cluster, 3 shards, events spread over {EXECUTIONS} executions:",
            "| load | p50 / p99 ms | delivered | deliveries | node CPU % | CPU per shard %"
            " | us per event per shard |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in sharded.items():
            nodes = ", ".join(f"{k} {v['cpuPct']}" for k, v in row["nodes"].items())
            deliveries = sum(v["deliveries"] for v in row["nodes"].values())
            lines.append(
                f"| {name} | {row['p50Ms']} / {row['p99Ms']} | {row['deliveredPct']} % "
                f"| {deliveries} | {nodes} | {row['shardCpuPct']} | {row['shardUsPerEvent']} |"
            )
    return "\n".join(lines)
