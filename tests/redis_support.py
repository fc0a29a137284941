"""A private ``redis-server`` per test module, and a TCP relay to cut or move connections.

Tests never touch a Redis they did not start: each :class:`RedisServer` runs on a free
loopback port in a temporary directory, with AOF on (``appendfsync always``, so a
restart with its data loses nothing) and no RDB snapshots, and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trio

from support import TIMEOUT, free_port

REDIS_SERVER = shutil.which("redis-server")

needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (.ci/run installs it)"
)


class RedisServer:
    """``redis-server`` on ``127.0.0.1:port``, its data under ``folder``."""

    def __init__(self, folder: Path, *, replica_of: int | None = None) -> None:
        self.folder = folder
        self.replica_of = replica_of
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (on the same port and folder as before) and wait until it answers."""
        assert REDIS_SERVER is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--repl-diskless-sync-delay", "0",
             "--dir", str(self.folder), "--daemonize", "no", "--loglevel", "warning",
             *(["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

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
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as sock:
            sock.sendall(f"INFO {section}\r\n".encode())
            data = b""
            while not data.endswith(b"\r\n\r\n") and (chunk := sock.recv(65536)):
                data += chunk  # a bulk string: $<length>, the text, an empty line
            return data.decode(errors="replace")

    def wait_replicas(self, n: int) -> None:
        """Until this primary has ``n`` replicas online (synchronised, acknowledging)."""
        deadline = time.monotonic() + TIMEOUT
        while self.info("replication").count("state=online") < n:
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server on port {self.port} has not {n} replicas online")
            time.sleep(0.02)

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
