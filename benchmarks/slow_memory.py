"""Slow readers (SPEC §4): what they and the buffer budget cost in RSS, and which are kept.

Three figures, each against a real ``trio-obs serve`` process (``--src`` runs another
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
- **slowest kept** (``--only slowest``): readers at several rates, with a 4 KB and with
  the system's receive buffer, for three stall timeouts (``--stall-timeout``, default
  10 s): which the server never closed (its log names each slow consumer it closes).

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
        self.log: list[str] = []
        threading.Thread(target=self.log.extend, args=(self.process.stderr,), daemon=True).start()

    def closed_as_slow(self, execution: str) -> bool:
        """Whether the server's log says it closed a slow consumer of ``execution``."""
        return any(f"closing a slow consumer of {execution} " in line for line in self.log)

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


def slow_reader(
    port: int,
    execution: str,
    rate: int,
    seconds: float,
    taken: list[int],
    rcvbuf: int | None = 4096,
) -> None:
    """Read ``rate`` bytes/s for ``seconds`` (with a 4 KB receive buffer, by default)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
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


def slowest_kept(args: argparse.Namespace, src: str | None) -> dict[str, Any]:
    """Readers at several rates, with a 4 KB and with the system's receive buffer, for three
    stall timeouts: which were never closed (the server sees a reader's bytes when its
    kernel reopens its TCP window, about each half of its receive buffer)."""
    rates = {"4 KB buffer": (4096, [100, 200, 400, 800, 1600]),
             "system buffer": (None, [1000, 2000, 4000, 8000, 16000])}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        server = Server(src, folder, "--stall-timeout", str(args.stall_timeout))
        try:
            readers = []
            for label, (rcvbuf, speeds) in rates.items():
                for rate in speeds:
                    name = f"r{rcvbuf or 0}-{rate}"
                    fill(server, name, 160, 64)  # 10 MiB: more than the buffers hold
                    readers.append((label, rate, name, rcvbuf))
            threads = [
                threading.Thread(
                    target=slow_reader,
                    args=(server.port, name, rate, 3 * args.stall_timeout, [], rcvbuf),
                )
                for _, rate, name, rcvbuf in readers
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            closes = server.metric("trio_obs_slow_consumer_closes_total")
            closed = [name for _, _, name, _ in readers if server.closed_as_slow(name)]
        finally:
            server.stop()
    never_closed = {
        label: [rate for lab, rate, name, _ in readers if lab == label and name not in closed]
        for label in rates
    }
    return {
        "stall_timeout_s": args.stall_timeout,
        "read_for_s": 3 * args.stall_timeout,
        "rates_b_per_s": {label: speeds for label, (_, speeds) in rates.items()},
        "never_closed_b_per_s": never_closed,
        "slow_consumer_closes": closes,
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
    p.add_argument("--stall-timeout", type=float, default=10.0)
    p.add_argument("--only", choices=("readers", "budget", "slowest"), default=None)
    args = p.parse_args()
    results: dict[str, Any] = {}
    for src in args.src or [None]:
        name = src or "installed"
        results[name] = {}
        if args.only == "slowest":
            results[name]["slowest_kept"] = slowest_kept(args, src)
            continue
        if args.only != "budget":
            results[name]["per_slow_reader"] = per_slow_reader(args, src)
        if args.only != "readers":
            results[name]["buffer_budget"] = buffer_budget(args, src, watched=False)
            results[name]["buffer_budget_watched"] = buffer_budget(args, src, watched=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
