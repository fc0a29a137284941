"""Private ``redis-server``s (one, a Sentinel set, a Cluster), and a TCP relay to cut links.

Tests never touch a Redis they did not start: each :class:`RedisServer` runs on a free
loopback port in a temporary directory, with AOF on (``appendfsync always``, so a
restart with its data loses nothing) and no RDB snapshots, and is stopped by its PID.
A :class:`SentinelSet` is a master, a replica and three Sentinels that fail over within
about two seconds; a :class:`Cluster` is three shards of a primary and a replica each.
"""

from __future__ import annotations

import contextlib
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from support import START_TIMEOUT, TIMEOUT, free_port
from trio_obs import Observability
from trio_obs.hub.redis import RedisHub
from trio_obs.producers import open_redis_observability

CALM = 10.0
"""Redis's per-call timeout (``redis_timeout``) in tests that do not test timeouts: on a
loaded machine a test's redis-servers get no core for seconds, and the product's default
(2 s) once ran out while a node was starting (load 12 on 2 cores)."""

FAILOVER_WAIT = 30
"""Seconds a failover may take on a loaded machine before a test gives up (a hang guard)."""

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")

_LOGGED = threading.Condition()
"""Notified at each line any :class:`RedisServer` of this process logs (see :func:`wait_until`)."""
_lines_logged = 0


def _logged() -> int:
    with _LOGGED:
        return _lines_logged


def _note_logged() -> None:
    global _lines_logged
    with _LOGGED:
        _lines_logged += 1
        _LOGGED.notify_all()


needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None or REDIS_CLI is None,
    reason="redis-server is not installed (.ci/run installs it)",
)


class RedisServer:
    """``redis-server`` on ``127.0.0.1:port``, its data under ``folder``."""

    def __init__(
        self,
        folder: Path,
        *,
        replica_of: int | None = None,
        port: int | None = None,
        config: Path | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        self.folder = folder
        self.replica_of = replica_of
        self.port = port or free_port()
        self.config = config
        """A configuration file (a Sentinel's: it rewrites it)."""
        self.options = options
        """More ``redis-server`` arguments (``--cluster-enabled yes``, ``--sentinel`` ...)."""
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    READY = (b"Ready to accept connections", b"Sentinel ID is")
    """What ``redis-server`` logs once it listens (a Sentinel logs its ID instead)."""

    def start(self) -> None:
        """Start it (on the same port and folder as before) and wait until it says it is ready.

        It logs (``notice``) to a pipe that a thread drains to the end, so a full pipe never
        blocks it; the thread tells when the log says it listens, or when the log ends (it
        exited: the test fails with its log).
        """
        assert REDIS_SERVER is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [REDIS_SERVER, *([str(self.config)] if self.config else []),
             "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--repl-diskless-sync-delay", "0",
             "--dir", str(self.folder), "--daemonize", "no",
             "--loglevel", "notice", "--logfile", "",
             *(["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []),
             *self.options],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log: list[bytes] = []
        ready = threading.Event()
        said = threading.Event()  # ready, or the log ended
        threading.Thread(
            target=self._drain, args=(self.process, log, ready, said), daemon=True
        ).start()
        if not said.wait(START_TIMEOUT) or not ready.is_set():
            self.process.kill()
            self.process.wait()
            text = b"".join(log[-40:]).decode(errors="replace")
            pytest.fail(f"redis-server did not start on port {self.port}:\n{text}")

    @classmethod
    def _drain(
        cls,
        process: subprocess.Popen[bytes],
        log: list[bytes],
        ready: threading.Event,
        said: threading.Event,
    ) -> None:
        """Read the server's log to its end (kept in ``log``), telling when it is ready."""
        assert process.stdout is not None
        with process.stdout as lines:
            for line in lines:
                log.append(line)
                _note_logged()
                if not ready.is_set() and any(m in line for m in cls.READY):
                    ready.set()
                    said.set()
                del log[:-200]
        said.set()

    def answers(self) -> bool:
        """Whether it answers PING now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def info(self, section: str) -> str:
        """The text of ``INFO section``."""
        return self.call("INFO", section)

    def call(self, *args: str) -> str:
        """One command's answer, as ``redis-cli`` prints it (a test's view, not the product's)."""
        assert REDIS_CLI is not None
        done = subprocess.run(
            [REDIS_CLI, "-p", str(self.port), *args],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        return done.stdout.decode(errors="replace")

    def wait_replicas(self, n: int) -> None:
        """Until ``n`` replicas of this primary are online and have acknowledged everything
        written to it so far: a write, then Redis's own ``WAIT n`` on the same connection
        (it blocks until that many replicas acknowledge the write)."""
        assert REDIS_CLI is not None
        done = subprocess.run(
            [REDIS_CLI, "-p", str(self.port)],
            input=f"SET redis-support:wait-replicas 1\nWAIT {n} {int(TIMEOUT * 1000)}\n".encode(),
            capture_output=True,
            timeout=TIMEOUT + 5,
            check=False,
        )
        answer = done.stdout.decode(errors="replace").split()
        if len(answer) != 2 or not answer[1].isdigit() or int(answer[1]) < n:
            pytest.fail(f"redis-server on port {self.port} has not {n} replicas online: {answer}")

    def stop(self, signum: int = signal.SIGKILL) -> None:
        """Stop it (killed by default: AOF ``always`` keeps every write anyway)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(TIMEOUT)
            finally:
                self.process.kill()
        self.process = None

    def restart(self, *, keep_data: bool = True) -> None:
        """Stop it and start it again, with its data or with none (a new history)."""
        self.stop()
        if not keep_data:
            shutil.rmtree(self.folder)
        self.start()


class Relay:
    """A TCP relay on a free loopback port to a target port, which a test may cut or move.

    It stands for a network (``cut``: a partition) or for a load balancer (``target``:
    where new connections go).
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.paused = False
        self._resumed = trio.Event()
        self._open: set[trio.CancelScope] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Relay until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target)
        except OSError:
            await client.aclose()
            return
        async with client, server, trio.open_nursery() as nursery:
            self._open.add(nursery.cancel_scope)
            nursery.start_soon(self._pump, client, server)
            nursery.start_soon(self._pump, server, client)
        self._open.discard(nursery.cancel_scope)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(65536):
                while self.paused:
                    await self._resumed.wait()
                await sink.send_all(data)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await sink.send_eof()

    def pause(self) -> None:
        """Hold every byte in flight, as a network that stopped delivering."""
        self.paused = True
        self._resumed = trio.Event()

    def resume(self) -> None:
        """Deliver again."""
        self.paused = False
        self._resumed.set()

    def cut(self) -> None:
        """Drop every relayed connection (new ones still go through)."""
        for scope in self._open:
            scope.cancel()


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float = FAILOVER_WAIT,
    *,
    notices: Sequence[tuple[RedisServer, str]] = (),
) -> None:
    """Until ``check`` (a Redis's own state) holds; ``timeout`` is only a hang guard.

    ``notices`` are the ``(server, channel)`` pub/sub channels on which Redis announces a
    change of that state (a Sentinel's ``+switch-master``, ``+slave`` ...): subscribed to
    first, then ``check`` once, then again on each message only, so no change between the
    check and the wait is missed. Without notices, ``check`` runs again at each line a
    Redis server of this process logs: what Redis announces on no channel (a Cluster's
    ``cluster_state``, a node's role, a replica coming online) it logs ("Cluster state
    changed: ok", "Failover election won", "Synchronization with replica … succeeded"),
    and a single-threaded server has finished the change before it answers ``check``.
    """
    deadline = time.monotonic() + timeout
    if not notices:
        seen = _logged()  # before the check: a line logged after it wakes the wait
        while not check():
            with _LOGGED:
                while _lines_logged == seen:
                    if not _LOGGED.wait(max(0.0, deadline - time.monotonic())):
                        pytest.fail(f"gave up waiting: {what}")
                seen = _lines_logged
        return
    with _subscribed(notices, deadline, what) as heard:
        while not check():
            try:
                heard.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"gave up waiting: {what}")


@contextlib.contextmanager
def _subscribed(
    notices: Sequence[tuple[RedisServer, str]], deadline: float, what: str
) -> Iterator[queue.Queue[tuple[int, str, str]]]:
    """A queue of the messages on ``notices`` (port, channel, payload), once Redis has
    confirmed every subscription: one ``redis-cli SUBSCRIBE`` per server, each read by a
    thread to its end."""
    assert REDIS_CLI is not None
    channels: dict[int, list[str]] = {}
    for server, channel in notices:
        channels.setdefault(server.port, []).append(channel)
    confirmed: queue.Queue[int] = queue.Queue()
    heard: queue.Queue[tuple[int, str, str]] = queue.Queue()
    with contextlib.ExitStack() as stack:
        for port, names in channels.items():
            cli = subprocess.Popen(
                [REDIS_CLI, "-p", str(port), "SUBSCRIBE", *names],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(cli.wait)
            stack.callback(cli.kill)  # its reader then reads the end and closes the pipe
            threading.Thread(
                target=_read_messages, args=(cli, port, confirmed, heard), daemon=True
            ).start()
        for _ in range(sum(map(len, channels.values()))):
            try:
                confirmed.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"gave up waiting: {what} (no subscription to {channels})")
        yield heard


def _read_messages(
    cli: subprocess.Popen[bytes],
    port: int,
    confirmed: queue.Queue[int],
    heard: queue.Queue[tuple[int, str, str]],
) -> None:
    """``redis-cli``'s pub/sub replies, three lines each (kind, channel, payload)."""
    assert cli.stdout is not None
    with cli.stdout as out:
        lines = (line.decode(errors="replace").rstrip("\n") for line in out)
        for kind in lines:
            channel, payload = next(lines, ""), next(lines, "")
            if kind == "subscribe":
                confirmed.put(port)
            elif kind == "message":
                heard.put((port, channel, payload))


class SentinelSet:
    """A master, a replica and three Sentinels (quorum 2) on free loopback ports.

    The replica may replicate through a :class:`Relay` (``relay_port``), which a test
    pauses to hold the replication stream in flight and cuts to lose it.
    """

    NAME = "obs"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.master = RedisServer(folder / "m")
        self.replica: RedisServer | None = None
        self.sentinels: list[RedisServer] = []

    def start_replica(self, via: int | None = None) -> RedisServer:
        """The replica, replicating from the master (or from port ``via``: a relay)."""
        self.replica = RedisServer(self.folder / "r", replica_of=via or self.master.port)
        self.master.wait_replicas(1)  # synced, and acknowledging the master's writes
        return self.replica

    def start_sentinels(self) -> None:
        """Three Sentinels watching the master: down after 0.5 s, failover within seconds."""
        for i in range(3):
            folder = self.folder / f"s{i}"
            folder.mkdir(parents=True)
            config = folder / "sentinel.conf"
            config.write_text(
                f"sentinel monitor {self.NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.NAME} 500\n"
                f"sentinel failover-timeout {self.NAME} 2000\n"
                f"sentinel parallel-syncs {self.NAME} 1\n"
            )
            self.sentinels.append(RedisServer(folder, config=config, options=("--sentinel",)))
        wait_until(lambda: all("slaves=1" in s.info("sentinel") for s in self.sentinels),
                   "every Sentinel knows the replica",
                   notices=[(s, "+slave") for s in self.sentinels])  # fmt: skip

    @property
    def url(self) -> str:
        """``redis+sentinel://`` naming the three Sentinels."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}?sentinel_master_name={self.NAME}"

    def master_port(self) -> int:
        """The master's port, as the first Sentinel that answers says."""
        for s in self.sentinels:
            answer = s.call("SENTINEL", "get-master-addr-by-name", self.NAME).split()
            if len(answer) == 2:
                return int(answer[1])
        return 0

    def stop(self) -> None:
        for server in [*self.sentinels, self.master, *([self.replica] if self.replica else [])]:
            server.stop()


def _cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class Cluster:
    """A Redis Cluster of three shards (a primary and a replica each) on free loopback ports.

    Failover is quick: a node is failed after 0.5 s and any replica may take over.
    """

    def __init__(self, folder: Path, *, shards: int = 3) -> None:
        options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                   "--cluster-node-timeout", "500", "--cluster-replica-validity-factor", "0",
                   "--repl-ping-replica-period", "1")  # fmt: skip
        self.nodes = [
            RedisServer(folder / f"n{i}", port=_cluster_port(), options=options)
            for i in range(2 * shards)
        ]
        assert REDIS_CLI is not None
        subprocess.run(
            [REDIS_CLI, "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        # This wait, wait_whole's and fail_over's wake at the nodes' log lines: Redis Cluster
        # announces no change of cluster_state nor of a node's role on any channel.
        wait_until(self.ok, "the cluster forms")
        self.wait_whole()

    def wait_whole(self) -> None:
        """Until the cluster is ok and every primary has a replica online."""
        wait_until(
            lambda: self.ok() and all(self.replicas_of(p) for p in self.primaries),
            "the cluster is whole",
        )

    def ok(self) -> bool:
        """Whether every live node says the cluster is ok."""
        live = [n for n in self.nodes if n.process is not None]
        return all("cluster_state:ok" in n.call("CLUSTER", "INFO") for n in live)

    def _rows(self) -> list[list[str]]:
        live = next(n for n in self.nodes if n.process is not None)
        return [row.split() for row in live.call("CLUSTER", "NODES").splitlines() if row]

    @property
    def primaries(self) -> list[RedisServer]:
        """The primaries now (a failover changes them), in slot order."""
        found: list[tuple[int, int]] = []
        for row in self._rows():
            if "master" in row[2] and "fail" not in row[2] and len(row) > 8:
                port = int(row[1].split("@")[0].rsplit(":", 1)[1])
                found.append((int(row[8].partition("-")[0]), port))
        by_port = {n.port: n for n in self.nodes}
        return [by_port[port] for _, port in sorted(found)]

    def primary_of(self, slot: int) -> RedisServer:
        """The primary that serves ``slot`` now."""
        for row in self._rows():
            if "master" not in row[2] or "fail" in row[2]:
                continue
            for part in row[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    port = int(row[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no primary serves slot {slot}")

    def fail_over(self, primary: RedisServer) -> RedisServer:
        """Kill ``primary``; wait until its replica has taken over. The new primary."""
        [replica] = self.replicas_of(primary)
        primary.stop()
        wait_until(
            lambda: "role:master" in replica.info("replication") and self.ok(), "the failover"
        )
        return replica

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        """The replicas (online) of one primary."""
        text = primary.info("replication")
        ports = {int(p) for p in re.findall(r"slave\d+:ip=[^,]+,port=(\d+),state=online", text)}
        return [n for n in self.nodes if n.port in ports]

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming one node (the client finds the others)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# --------------------------------------------------------------------------- fixtures and nodes
# (a plugin: conftest registers this module, so every test module has these fixtures)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the module; each test keeps to its own key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it stops, restarts or loses it)."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test alone."""
    return f"t{uuid.uuid4().hex[:8]}:"


@asynccontextmanager
async def nodes(
    url: str, prefix: str = "trio-obs:", n: int = 2, **options: Any
) -> AsyncIterator[list[RedisHub]]:
    """``n`` hubs on one Redis: ``n`` nodes of one server (Redis's timeout :data:`CALM`
    unless ``options`` say ``redis_timeout``)."""
    options.setdefault("redis_timeout", CALM)
    async with AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(open_redis_observability(url, prefix=prefix, **options))
            for _ in range(n)
        ]
        yield [hub_of(obs) for obs in opened]


def hub_of(obs: Observability) -> RedisHub:
    assert isinstance(obs.hub, RedisHub)
    return obs.hub
