"""What slow readers and the buffer budget cost in RSS (SPEC §4: memory stays bounded).

Two figures, each against a real ``trio-obs serve`` process (``--src`` runs another
checkout's ``src``, e.g. ``git archive main src | tar -x -C /tmp/main``, so old and new
are measured by the same script in one run):

- **per slow reader**: ``--executions`` executions of ``--events`` events of
  ``--event-kib`` KiB are stored; then one raw WebSocket reader per execution replays
  it from ``since=0`` with a 4 KB receive buffer, taking ``--rate`` bytes/s. The
  server's peak RSS during ``--seconds`` of reading, minus its RSS before, divided by
  the readers, is what each slow reader costs.
- **buffer budget**: ``--budget-events`` events of ``--event-kib`` KiB spread over 200
  executions fill the logs of recent events, with no client and with an ``all`` client
  reading everything (the events' frames are built then); the RSS growth is set beside
  what ``/metrics`` says they hold (``trio_obs_buffered_bytes``).

Prints one JSON object. Not a test: figures, to compare side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

LISTENING = re.compile(r"listening on http://\S+?:(\d+)")


def rss_kib(pid: int) -> tuple[int, int]:
    """The process's RSS and peak RSS (VmHWM) in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


class Server:
    """``trio-obs serve`` on a free port, over a fresh SQLite file, from ``src``."""

    def __init__(self, src: str | None, folder: str, *extra: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("TRIO_OBS_TOKEN", None)
        if src:
            env["PYTHONPATH"] = src
        db = os.path.join(folder, "obs.db")
        cmd = [sys.executable, "-m", "trio_obs", "serve", "--port", "0", "--db", db, *extra]
        self.process = subprocess.Popen(
            cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if match := LISTENING.search(line):
                self.port = int(match[1])
                break
        else:
            raise SystemExit("the server did not start")
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def post(self, events: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/events",
            data=json.dumps(events).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 202

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise KeyError(name)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        finally:
            self.process.kill()


def output_events(execution: str, count: int, kib: int) -> list[dict[str, Any]]:
    chunk = "x" * (kib * 1024 - 150)
    return [
        {"type": "tool:output", "executionId": execution, "toolUseId": "t1",
         "chunk": f"{i}:{chunk}"}
        for i in range(count)
    ]  # fmt: skip


def fill(server: Server, execution: str, count: int, kib: int) -> None:
    """Store ``count`` events, in POSTs under the 1 MiB body limit."""
    per_post = max(1, (900 * 1024) // (kib * 1024))
    events = output_events(execution, count, kib)
    for i in range(0, count, per_post):
        server.post(events[i : i + per_post])


def slow_reader(port: int, execution: str, rate: int, seconds: float, taken: list[int]) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /ws?observability={execution}&since=0 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    step = max(1, rate // 10)
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        data = sock.recv(step)
        if not data:
            break
        total += len(data)
        time.sleep(0.1)
    taken.append(total)
    sock.close()


def per_slow_reader(args: argparse.Namespace, src: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        server = Server(src, folder)
        try:
            names = [f"slow-{i}" for i in range(args.executions)]
            for name in names:
                fill(server, name, args.events, args.event_kib)
            time.sleep(1.0)
            before, _ = rss_kib(server.process.pid)
            peak = before
            taken: list[int] = []
            readers = [
                threading.Thread(
                    target=slow_reader, args=(server.port, n, args.rate, args.seconds, taken)
                )
                for n in names
            ]
            for reader in readers:
                reader.start()
            while any(r.is_alive() for r in readers):
                peak = max(peak, rss_kib(server.process.pid)[0])
                time.sleep(0.05)
            closes = server.metric("trio_obs_slow_consumer_closes_total")
        finally:
            server.stop()
    return {
        "readers": args.executions,
        "event_kib": args.event_kib,
        "stored_mib_per_execution": round(args.events * args.event_kib / 1024, 1),
        "rss_before_mib": round(before / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "per_reader_mib": round((peak - before) / 1024 / args.executions, 1),
        "bytes_taken_per_reader": round(sum(taken) / max(1, len(taken))),
        "slow_consumer_closes": closes,
    }


def watcher(port: int, stop: threading.Event) -> None:
    """An ``all`` client that reads everything at once (its frames get built)."""
    sock = socket.socket()
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /ws?observability=all HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            if not sock.recv(1 << 20):
                break
        except TimeoutError:
            continue
    sock.close()


def buffer_budget(args: argparse.Namespace, src: str | None, *, watched: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        server = Server(src, folder)
        stop = threading.Event()
        try:
            if watched:
                threading.Thread(target=watcher, args=(server.port, stop), daemon=True).start()
            time.sleep(0.5)
            before, _ = rss_kib(server.process.pid)
            per_execution = max(1, args.budget_events // 200)
            for i in range(200):
                fill(server, f"buffered-{i}", per_execution, args.event_kib)
            time.sleep(1.0)
            after, _ = rss_kib(server.process.pid)
            gauge = server.metric("trio_obs_buffered_bytes")
        finally:
            stop.set()
            server.stop()
    return {
        "events": per_execution * 200,
        "event_kib": args.event_kib,
        "watched_by_an_all_client": watched,
        "gauge_mib": round(gauge / 2**20, 1),
        "rss_growth_mib": round((after - before) / 1024, 1),
        "rss_per_gauge_byte": round((after - before) * 1024 / max(1.0, gauge), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", action="append", default=[], help="a src folder (repeatable; "
                   "default: the installed trio_obs)")  # fmt: skip
    p.add_argument("--executions", type=int, default=4)
    p.add_argument("--events", type=int, default=100)
    p.add_argument("--event-kib", type=int, default=64)
    p.add_argument("--rate", type=int, default=1024, help="bytes/s each slow reader takes")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--budget-events", type=int, default=4000)
    p.add_argument("--only", choices=("readers", "budget"), default=None)
    args = p.parse_args()
    results: dict[str, Any] = {}
    for src in args.src or [None]:
        name = src or "installed"
        results[name] = {}
        if args.only != "budget":
            results[name]["per_slow_reader"] = per_slow_reader(args, src)
        if args.only != "readers":
            results[name]["buffer_budget"] = buffer_budget(args, src, watched=False)
            results[name]["buffer_budget_watched"] = buffer_budget(args, src, watched=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
