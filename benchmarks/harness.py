"""Child processes of the benchmark run: servers and load generators driven over pipes.

Every child speaks a line protocol on stdin/stdout (see the docstrings of the
servers and ``loadgen/loadgen.js``), runs in its own session, has a hard lifetime
limit of its own, exits when its stdin closes, and is killed (whole process group)
when the run ends, however it ends.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import psutil

HERE = Path(__file__).resolve().parent
_LIVE: set[Child] = set()


class ChildError(RuntimeError):
    """A child died, answered an error, or did not answer in time."""


class Child:
    """One child process with a line protocol; replies are read by a thread into a queue."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path = HERE,
    ) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.ps = psutil.Process(self.proc.pid)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        _LIVE.add(self)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def send(self, line: str) -> None:
        """Send one command line."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise ChildError(f"{self.name}: cannot send {line.split()[0]!r}: {exc}") from exc

    def expect(self, prefix: str, timeout: float) -> str:
        """The rest of the next line that starts with ``prefix`` (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError(f"{self.name}: no {prefix!r} within {timeout:.0f} s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._lines.put(None)
                raise ChildError(
                    f"{self.name}: exited ({self.proc.poll()}) while waiting for {prefix!r};"
                    f" see {self.log_path}"
                )
            if line.startswith("ERROR"):
                raise ChildError(f"{self.name}: {line}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def request(self, line: str, prefix: str, timeout: float = 30.0) -> str:
        """Send a command and wait for its reply."""
        self.send(line)
        return self.expect(prefix, timeout)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads)."""
        try:
            t = self.ps.cpu_times()
        except psutil.Error:
            return 0.0
        return t.user + t.system

    def rss(self) -> int:
        """Resident set size in bytes (0 once the process is gone)."""
        try:
            return int(self.ps.memory_info().rss)
        except psutil.Error:
            return 0

    def stop(self, timeout: float = 5.0) -> None:
        """Ask it to quit, then kill its process group if it has not gone in ``timeout`` s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ChildError):
                self.send("QUIT")
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(2)
        self._log.close()
        _LIVE.discard(self)


def stop_all() -> None:
    """Kill every child still alive (called at exit and on SIGTERM)."""
    for child in list(_LIVE):
        child.stop(timeout=1.0)


atexit.register(stop_all)


# --------------------------------------------------------------------------- servers

SERVERS = ("trio-obs", "ws-broadcast", "node-plan", "ceiling")
"""Every server kind; trio-obs first, the ceiling (the floor of any design) last."""
BASELINES = ("ws-broadcast", "node-plan")
CACHE = HERE / ".cache"
CEILING_SOURCE = HERE / "ceiling" / "ceiling.c"
CEILING_BINARY = CACHE / "ceiling"


def build_ceiling() -> Path:
    """Compile the ceiling server with the machine's ``cc`` (again when its source changed)."""
    built = CEILING_BINARY.exists()
    if built and CEILING_BINARY.stat().st_mtime >= CEILING_SOURCE.stat().st_mtime:
        return CEILING_BINARY
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise ChildError("no C compiler (cc) on PATH: cannot build the ceiling server")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CEILING_BINARY.with_suffix(".tmp")
    cmd = [cc, "-O2", "-Wall", "-o", str(tmp), str(CEILING_SOURCE), "-lm"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ChildError(f"building the ceiling failed: {done.stderr[-2000:]}")
    tmp.replace(CEILING_BINARY)
    return CEILING_BINARY


def node_available() -> bool:
    """Whether ``node`` is on PATH."""
    return shutil.which("node") is not None


def ensure_node_modules() -> None:
    """``npm ci`` (or install) ``ws`` into benchmarks/node_modules when it is missing."""
    if (HERE / "node_modules" / "ws" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise ChildError("node is installed but npm is not; cannot install ws")
    lock = HERE / "package-lock.json"
    cmd = [npm, "ci" if lock.exists() else "install", "--no-audit", "--no-fund"]
    done = subprocess.run(cmd, cwd=HERE, timeout=300, capture_output=True, text=True)
    if done.returncode != 0:
        raise ChildError(f"{' '.join(cmd[1:])} failed: {done.stderr[-2000:]}")


@attrs.frozen
class ServerSpec:
    """Which server to start: its name in the tables, its program, and how many nodes.

    ``program`` is one of :data:`SERVERS`. ``python`` runs the Python servers (another
    venv runs trio-obs of another revision: ``--compare``). ``nodes`` > 1 starts that
    many processes of the program (a multi-node server, e.g. trio-obs on Redis); the
    load generator's publisher then talks to node ``publish_on`` and the clients connect
    to the nodes ``subscribe_on`` (default: all, in turn).
    """

    name: str
    program: str
    python: str = sys.executable
    nodes: int = 1
    publish_on: int = 0
    subscribe_on: tuple[int, ...] | None = None
    args: tuple[str, ...] = ()
    """Extra arguments for every node (e.g. ``--redis URL`` one day)."""
    prefix: tuple[str, ...] = ()
    """A command to run the server under (e.g. valgrind for the stable figures)."""
    env: tuple[tuple[str, str], ...] = ()
    """Extra environment variables for every node."""


class Server:
    """One server process (trio-obs or a baseline) on a free loopback port."""

    def __init__(self, spec: ServerSpec, *, log_dir: Path, queue_size: int, tag: str = "") -> None:
        self.kind = spec.program
        kind = spec.program
        if kind == "trio-obs":
            argv = [spec.python, str(HERE / "servers" / "trio_obs_server.py")]
            argv += ["--queue-size", str(queue_size)]
            env: dict[str, str] = {}
        elif kind == "ws-broadcast":
            argv = [spec.python, str(HERE / "baselines" / "ws_broadcast.py")]
            env = {}
        elif kind == "node-plan":
            argv = ["node", str(HERE / "baselines" / "node_plan" / "server.js")]
            env = {"BENCH_EVENT_BYTES": "400"}
        elif kind == "ceiling":
            argv = [str(build_ceiling()), "--event-bytes", "400"]
            env = {}
        else:
            raise ValueError(kind)
        argv = [*spec.prefix, *argv, *spec.args]
        env.update(spec.env)
        ready = 30 if not spec.prefix else 180
        self.child = Child(f"server-{spec.name}{tag}", argv, log_dir=log_dir, env=env)
        self.port = int(self.child.expect("READY", ready))
        self.url = f"ws://127.0.0.1:{self.port}/ws?observability=all"
        self.http = f"http://127.0.0.1:{self.port}"

    def count(self) -> int:
        """Connected subscribers, as the server sees them."""
        return int(self.child.request("COUNT", "COUNT", 10))

    def stop(self) -> None:
        """Stop the server process."""
        self.child.stop()


class Deployment:
    """A server under test as one or more processes (see :class:`ServerSpec`)."""

    def __init__(self, spec: ServerSpec, *, log_dir: Path, queue_size: int) -> None:
        self.spec = spec
        self.name = spec.name
        self.nodes: list[Server] = []
        try:
            for i in range(spec.nodes):
                tag = f"-node{i}" if spec.nodes > 1 else ""
                self.nodes.append(Server(spec, log_dir=log_dir, queue_size=queue_size, tag=tag))
        except BaseException:
            self.stop()
            raise
        self.publisher = self.nodes[spec.publish_on]
        picked = spec.subscribe_on if spec.subscribe_on is not None else range(spec.nodes)
        self.subscribers = [self.nodes[i] for i in picked]

    @property
    def subscribe_urls(self) -> list[str]:
        """Where the clients connect (in turn, one load generator process per node)."""
        return [node.url for node in self.subscribers]

    def emit(self, run: str, rate: float, count: int, max_seconds: float) -> dict[str, Any]:
        """``EMIT`` on the publishing node; its ``EMITTED`` report."""
        reply = self.publisher.child.request(
            f"EMIT {run} {rate} {count} {max_seconds}", "EMITTED", timeout=max_seconds + 30
        )
        return dict(json.loads(reply))

    def count(self) -> int:
        """Subscribers counted by the subscribing nodes."""
        return sum(node.count() for node in self.subscribers)

    def wait_count(self, n: int, timeout: float) -> int:
        """Wait until the servers count ``n`` clients; returns the last count."""
        deadline = time.monotonic() + timeout
        seen = self.count()
        while seen != n and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = self.count()
        return seen

    def cpu_seconds(self) -> float:
        """CPU time of every node."""
        return sum(node.child.cpu_seconds() for node in self.nodes)

    def rss(self) -> int:
        """RSS of every node, added up."""
        return sum(node.child.rss() for node in self.nodes)

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


# --------------------------------------------------------------------------- load generators


ONE_PROCESS_DELIVERIES = 150_000
"""Deliveries/s one load generator process takes without saturating (about 5-7 µs of its
CPU per message when each arrives alone, as the baselines send them: ~75 % of a core)."""


class LoadgenPool:
    """One or more Node load generator processes sharing the clients of a load."""

    def __init__(self, procs: int, *, log_dir: Path, tag: str = "") -> None:
        script = str(HERE / "loadgen" / "loadgen.js")
        self.children = [
            Child(f"loadgen{tag}-{i}", ["node", script], log_dir=log_dir) for i in range(procs)
        ]
        for child in self.children:
            child.expect("READY", 30)

    def _all(self, lines: Iterable[str], prefix: str, timeout: float) -> list[str]:
        lines = list(lines)
        for child, line in zip(self.children, lines, strict=True):
            child.send(line)
        return [child.expect(prefix, timeout) for child in self.children]

    def shares(self, n: int, rate: float = 0.0) -> list[int]:
        """``n`` clients split across the processes: all in the first unless they would
        receive more than :data:`ONE_PROCESS_DELIVERIES` per second between them.

        Spreading a load that one process can take makes it worse, not better: on two
        cores, the server and two busy generator processes are three runnable processes,
        and the server's emitting thread then waits for a core (measured: the baselines'
        p99 at 100 x 1,000 was 3-10x their p99 under one independent client process).
        """
        k = len(self.children)
        if n * rate <= ONE_PROCESS_DELIVERIES:
            return [n] + [0] * (k - 1)
        return [n // k + (1 if i < n % k else 0) for i in range(k)]

    def cpu_seconds(self) -> float:
        """CPU time of all the load generator processes."""
        return sum(child.cpu_seconds() for child in self.children)

    def connect(
        self, urls: str | Sequence[str], n: int, timeout: float = 60.0, *, rate: float = 0.0
    ) -> dict[str, int]:
        """Ensure ``n`` open (non-stalled) clients in total, spread for a load of ``rate``
        events/s (see :meth:`shares`); with several URLs (nodes), process i connects to
        URL i mod len(urls)."""
        urls = [urls] if isinstance(urls, str) else list(urls)
        # Several nodes: every node gets clients, so spread whatever the rate.
        shares = self.shares(n, math.inf if len(urls) > 1 and n else rate)
        lines = (f"CONNECT {urls[i % len(urls)]} {share}" for i, share in enumerate(shares))
        replies = self._all(lines, "CONNECTED", timeout)
        got = [json.loads(r) for r in replies]
        return {"open": sum(g["open"] for g in got), "failed": sum(g["failed"] for g in got)}

    def reset(self, run: str) -> None:
        """Start counting the events of ``run``."""
        self._all((f"RESET {run}" for _ in self.children), "OK", 10)

    def stall(self, k: int) -> None:
        """``k`` clients (of the first process) stop reading."""
        self.children[0].request(f"STALL {k}", "OK", 10)

    def drop_stalled(self) -> None:
        """Close the stalled clients."""
        self.children[0].request("DROP_STALLED", "OK", 20)

    def report(self) -> list[dict[str, Any]]:
        """Every process's report."""
        return [json.loads(r) for r in self._all(("REPORT" for _ in self.children), "REPORT", 20)]

    def close(self) -> None:
        """Close every client."""
        self._all(("CLOSE" for _ in self.children), "CLOSED", 20)

    def stop(self) -> None:
        """Stop the processes."""
        for child in self.children:
            child.stop()


# --------------------------------------------------------------------------- histograms

NB = 1000 + 990 + 590 + 1
"""Bucket count of the load generator's latency histogram (mirrors loadgen.js)."""


def bucket_bounds(i: int) -> tuple[float, float]:
    """Lower and upper bound in microseconds of histogram bucket ``i``."""
    if i < 1000:
        return i * 10.0, (i + 1) * 10.0
    if i < 1990:
        lo = 1e4 + (i - 1000) * 1e3
        return lo, lo + 1e3
    if i < 2580:
        lo = 1e6 + (i - 1990) * 1e5
        return lo, lo + 1e5
    return 6e7, float("inf")


def merge_hists(hists: Iterable[Iterable[Sequence[int]]]) -> dict[int, int]:
    """Sparse histograms ([[bucket, count], ...]) added together."""
    total: dict[int, int] = {}
    for hist in hists:
        for i, n in hist:
            total[i] = total.get(i, 0) + n
    return total


def percentile_ms(hist: dict[int, int], q: float, max_us: float) -> float | None:
    """The ``q`` quantile (0..1) in ms: midpoint of its bucket, capped at the exact max."""
    n = sum(hist.values())
    if n == 0:
        return None
    rank = q * (n - 1)
    seen = 0
    for i in sorted(hist):
        seen += hist[i]
        if seen > rank:
            lo, hi = bucket_bounds(i)
            mid = lo + (hi - lo) / 2 if hi != float("inf") else lo
            return min(mid, max_us) / 1000
    return max_us / 1000


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy (every core, every process, and steal)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


class RssSampler:
    """Samples an RSS (``rss()``: bytes) every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, rss: Callable[[], int], interval: float = 0.05) -> None:
        self.rss = rss
        self.interval = interval
        self.start_rss = rss()
        self.peak = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def stop(self) -> tuple[int, int, int]:
        """(RSS at start, peak RSS, RSS now) in bytes."""
        self._stop.set()
        self._thread.join(2)
        now = self.rss()
        self.peak = max(self.peak, now)
        return self.start_rss, self.peak, now
