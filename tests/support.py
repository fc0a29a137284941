"""Test helpers shared by the modules: servers in-process and as subprocesses, and clients."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any
from urllib.parse import urlencode

import attrs
import httpx
import orjson
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Request, TextMessage

import trio_obs
from trio_obs.core import events as ev
from trio_obs.core.events import ServerEvent
from trio_obs.core.frames import frame_length
from trio_obs.core.routing import Envelope
from trio_obs.core.watchdog import Thresholds
from trio_obs.core.wire import encode
from trio_obs.hub.dispatch import LiveSubscription

TIMEOUT = 30  # a safety net against hangs, never an assertion about speed: generous, since
# on a loaded 2-core machine starting one `trio-obs serve` alone can take over 6 s
START_TIMEOUT = 60  # the same for a process to start (an interpreter importing trio_obs, a
# redis-server): under a load average of 20 on 2 cores a start takes tens of seconds
T0 = "2026-01-01T00:00:00.000Z"
"""A time in the one form the server stores (any posted time must be ISO-8601)."""
LISTENING = re.compile(
    r"listening on http://\S+?:(\d+).*ws://(?:127\.0\.0\.1|\[::1\]):(\d+)/ws\?observability=all"
)

# --------------------------------------------------------------------------- servers


class Address:
    """The URLs of a server listening on loopback ``port``."""

    port: int

    def url(self, path: str = "") -> str:
        """``http://127.0.0.1:PORT`` followed by ``path``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, stream: str = "e1", **params: object) -> str:
        """The WebSocket URL of ``stream``, with ``params`` in the query."""
        return f"ws://127.0.0.1:{self.port}/ws?{urlencode({'observability': stream, **params})}"


@attrs.frozen
class Server(Address):
    """A server running in this process: its store, its port and an HTTP client for it."""

    obs: trio_obs.Observability
    port: int
    http: httpx.AsyncClient


UNJUDGED = Thresholds(lost_after=864_000.0, slow_after=864_000.0, idle_after=864_000.0)
"""The watchdog of a test's server unless the test asks for one (``watch=``, or the
``--*-after`` flags): the tests' events are stamped long ago, so with the defaults a tick
could judge them slow or lost at any moment and store an alert that takes a seq."""
_WATCH_FLAGS = ("--lost-after", "--slow-after", "--idle-after")
_UNJUDGED_ARGS = (
    *("--lost-after", str(UNJUDGED.lost_after)),
    *("--slow-after", str(UNJUDGED.slow_after)),
    *("--idle-after", str(UNJUDGED.idle_after)),
)
"""The same for ``trio-obs serve`` (:class:`ServerProcess`)."""


@asynccontextmanager
async def running_server(
    db: str = ":memory:",
    *,
    buffer_size: int = 100,
    buffer_bytes: int | None = None,
    **config: Any,
) -> AsyncIterator[Server]:
    """A server over store ``db`` on loopback, on a free port unless ``port=`` is given.

    ``buffer_size``, ``buffer_bytes`` and ``queue_size`` go to the hub (``queue_size``
    also to the server, for ``all`` connections); the rest is the server's config.
    """
    hub: dict[str, Any] = {"buffer_size": buffer_size}
    if buffer_bytes is not None:
        hub["buffer_bytes"] = buffer_bytes
    if config.get("queue_size") is not None:
        hub["queue_size"] = config["queue_size"]
    async with (
        trio_obs.open_observability(db, **hub) as obs,
        trio.open_nursery() as nursery,
    ):
        server_config = trio_obs.ServerConfig(**{"port": 0, "watch": UNJUDGED, **config})
        port = await nursery.start(trio_obs.serve, obs, server_config)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=TIMEOUT,
            trust_env=False,
            headers={"content-type": "application/json"},  # what POST /api/events needs
        ) as http:
            yield Server(obs, port, http)
        nursery.cancel_scope.cancel()


def free_port() -> int:
    """A loopback port that nothing listens on (as of a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(*args: str) -> list[str]:
    """The command line of ``trio-obs ARGS`` in this interpreter."""
    return [sys.executable, "-m", "trio_obs", *args]


def environment(*, unbuffered: bool = True, **extra: str) -> dict[str, str]:
    """This environment without ``TRIO_OBS_TOKEN`` (and unbuffered, unless told), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "TRIO_OBS_TOKEN"}
    return {**env, **({"PYTHONUNBUFFERED": "1"} if unbuffered else {}), **extra}


class ServerProcess(Address):
    """``trio-obs serve --port PORT ARGS`` in a subprocess; a thread drains its stderr."""

    def __init__(self, *args: str, port: int = 0, start_timeout: float = START_TIMEOUT) -> None:
        if not any(flag in args for flag in _WATCH_FLAGS):
            args = (*args, *_UNJUDGED_ARGS)
        self.process = subprocess.Popen(
            command("serve", "--port", str(port), *args),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(),
        )
        self.stderr: list[str] = []
        self.port = 0
        listening = threading.Event()
        threading.Thread(target=self._drain, args=(listening,), daemon=True).start()
        if not listening.wait(start_timeout) or not self.port:
            self.process.kill()
            pytest.fail("the server did not start:\n" + "".join(self.stderr))

    def _drain(self, listening: threading.Event) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            if not self.port and (match := LISTENING.search(line)):
                self.port = int(match[1])
                listening.set()
        listening.set()  # the process ended: stop waiting

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum``; the exit status (it is killed if still running after the timeout)."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(TIMEOUT)
        finally:
            self.process.kill()


@contextmanager
def serving(*args: str) -> Iterator[ServerProcess]:
    """``trio-obs serve ARGS`` in a subprocess that, at the end, stops cleanly on SIGINT:
    status 0 and no traceback logged."""
    srv = ServerProcess(*args)
    yield srv
    assert srv.stop(signal.SIGINT) == 0
    assert "Traceback" not in "".join(srv.stderr)


class Cli(Address):
    """A running ``trio-obs serve`` and what it has written to stderr so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stderr = ""
        self.port = 0
        self.ready = trio.Event()
        """Set once it listens, or once its stderr ended (it exited)."""
        self.eof = trio.Event()

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr += chunk.decode(errors="replace")
            if not self.port and (match := LISTENING.search(self.stderr)):
                assert match[1] == match[2]
                self.port = int(match[1])
                self.ready.set()
        self.eof.set()
        self.ready.set()

    async def stop(self, signum: int = signal.SIGINT) -> int:
        """Send ``signum``; the exit status, once the process has ended and said everything."""
        self.process.send_signal(signum)
        with trio.fail_after(TIMEOUT):
            status = await self.process.wait()
            await self.eof.wait()
        return status


@asynccontextmanager
async def serve_cli(
    *args: str,
    program: Sequence[str] = command(),
    until_serving: bool = True,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Cli]:
    """``trio-obs serve --port 0 ARGS``, listening; killed at the end if still running.

    With ``until_serving``, it has also answered an HTTP request: its main task then
    waits for signals (see ``test_a_signal_right_after_the_listening_line_...``).
    """
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            partial(
                trio.run_process,
                [*program, "serve", "--port", "0", *args],
                stderr=subprocess.PIPE,
                check=False,
                env=env or environment(),
            )
        )
        cli = Cli(process)
        nursery.start_soon(cli.read_stderr)
        with trio.fail_after(START_TIMEOUT):
            await cli.ready.wait()
            if not cli.port:
                pytest.fail(f"the server did not start:\n{cli.stderr}")
            if until_serving:
                async with httpx.AsyncClient(trust_env=False) as http:
                    assert (await http.get(cli.url("/api/health"))).status_code == 200
        yield cli
        nursery.cancel_scope.cancel()  # run_process kills it if it is still running


def assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Error" not in stderr, stderr


# --------------------------------------------------------------------------- clients


@asynccontextmanager
async def ws_client(
    url: str, headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket client whose ``connected`` frame has been read."""
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(url, extra_headers=headers) as ws:
            assert orjson.loads(await ws.get_message())["type"] == "observability:connected"
            yield ws


async def close_reason(ws: WebSocketConnection) -> tuple[int, str | None]:
    """Read until the server closes; its close code and reason."""
    with trio.fail_after(TIMEOUT):
        while True:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                assert exc.reason is not None
                return exc.reason.code, exc.reason.reason


async def close_code(ws: WebSocketConnection) -> int:
    """Read until the server closes; its close code."""
    return (await close_reason(ws))[0]


class RawClient:
    """A WebSocket client on a bare socket, driven by wsproto: it sends what a library would not."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()

    @classmethod
    async def connect(
        cls,
        srv: Address,
        target: str = "/ws?observability=e1",
        *,
        rcvbuf: int | None = None,
        connected: bool = False,
    ) -> RawClient:
        """A client past the handshake (and, with ``connected``, its ``connected`` frame)."""
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        with trio.fail_after(TIMEOUT):
            await sock.connect(("127.0.0.1", srv.port))
        client = cls(trio.SocketStream(sock))
        await client.send(Request(host=f"127.0.0.1:{srv.port}", target=target))
        accepted = await client.next_event()
        assert isinstance(accepted, AcceptConnection), accepted
        if connected:
            assert (await client.next_json())["type"] == "observability:connected"
        return client

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self) -> Event:
        with trio.fail_after(TIMEOUT):
            while not self.events:
                data = await self.stream.receive_some(65536)
                self.ws.receive_data(bytes(data) or None)
                self.events.extend(self.ws.events())
        return self.events.popleft()

    async def next_json(self) -> dict[str, Any]:
        """The next whole text message, as JSON."""
        parts = []
        while True:
            event = await self.next_event()
            assert isinstance(event, TextMessage), event
            parts.append(event.data)
            if event.message_finished:
                frame: dict[str, Any] = orjson.loads("".join(parts))
                return frame

    async def until_close(self) -> tuple[CloseConnection, list[dict[str, Any]]]:
        """Read up to the server's close frame and answer it; the close and the messages before."""
        frames: list[dict[str, Any]] = []
        parts: list[str] = []
        while True:
            event = await self.next_event()
            if isinstance(event, CloseConnection):
                await self.send(event.response())
                return event, frames
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    frames.append(orjson.loads("".join(parts)))
                    parts.clear()

    async def aclose(self) -> None:
        await self.stream.aclose()


def parse_metrics(text: str) -> tuple[set[str], dict[str, float]]:
    """Prometheus text: the family names, and {sample name with labels: value}."""
    families = list(text_string_to_metric_families(text))
    samples = {}
    for family in families:
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return {f.name for f in families}, samples


# --------------------------------------------------------------------------- subscriptions


def drain(sub: LiveSubscription) -> list[Envelope]:
    """Everything already dispatched to ``sub`` (dispatch happens before an emit returns)."""
    out: list[Envelope] = []
    while batch := sub.receive_nowait():
        out += batch
    return out


async def collect_envelopes(sub: LiveSubscription, until_seq: int) -> list[Envelope]:
    """What iterating ``sub`` yields (replay, then live) up to ``until_seq``."""
    got: list[Envelope] = []
    with trio.fail_after(TIMEOUT):  # a hang guard, not a timing assertion
        async for env in sub:
            got.append(env)
            if env.seq >= until_seq:
                break
    return got


async def collect_seqs(sub: LiveSubscription, until_seq: int) -> list[int]:
    """Seqs from iterating ``sub`` (replay, then live) up to ``until_seq``."""
    return [env.seq for env in await collect_envelopes(sub, until_seq)]


# --------------------------------------------------------------------------- records

EXECUTION = "exec-123"
RECORD_TIME = "2025-06-01T12:00:00.000Z"


def transcript_record(i: int, execution_id: str = EXECUTION) -> ev.TranscriptEntry:
    """Transcript entry number ``i`` of ``execution_id``."""
    return ev.TranscriptEntry(
        id=f"entry-{i}",
        timestamp=RECORD_TIME,
        sequence=i,
        execution_id=execution_id,
        instance_id="instance-1",
        entry_type="phase_start",
        category="lifecycle",
        summary=f"Event {i}",
        details={},
    )


def bus_record(
    execution_id: str | None, severity: ev.Severity = "info", task_id: str | None = None
) -> ev.MessageBusLogEntry:
    """A message-bus entry of ``execution_id`` (None: of no execution)."""
    return ev.MessageBusLogEntry(
        id="m1",
        event_id="ev-1",
        timestamp=T0,
        source="scheduler",
        event_type="task.done",
        human_summary="task done",
        severity=severity,
        category="task",
        created_at=T0,
        execution_id=execution_id,
        task_id=task_id,
    )


def assertion_record(
    result: ev.AssertionOutcome = "pass", execution_id: str = EXECUTION
) -> ev.AssertionResult:
    """An assertion of task ``task-1`` with ``result``."""
    return ev.AssertionResult(
        id="assert-1",
        task_id="task-1",
        execution_id=execution_id,
        category="typescript_compiles",
        description="TypeScript compiles",
        result=result,
        evidence={"exitCode": 0},
        timestamp=RECORD_TIME,
        duration_ms=2000,
    )


# --------------------------------------------------------------------------- wire events


def to_wire(event: ServerEvent) -> dict[str, Any]:
    """The wire JSON of ``event`` as a dict (camelCase keys, absent fields left out)."""
    wire: dict[str, Any] = orjson.loads(encode(event))
    return wire


def split_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole server frames at the start of ``data`` (opcode, payload), and what is left."""
    frames: list[tuple[int, bytes]] = []
    view = memoryview(data)
    while view:
        length = frame_length(view[:10])
        if length is None or length > len(view):
            break
        header = 2 if view[1] & 0x7F < 126 else 4 if view[1] & 0x7F == 126 else 10
        assert not view[1] & 0x80, "a server frame is never masked"
        frames.append((view[0] & 0x0F, bytes(view[header:length])))
        view = view[length:]
    return frames, bytes(view)


def heartbeat(e: str, **extra: object) -> dict[str, Any]:
    """An ``agent:heartbeat`` in wire form; ``extra`` adds fields or replaces them."""
    return {"type": "agent:heartbeat", "executionId": e, "instanceId": "agent-1",
            "status": "working", **extra}  # fmt: skip


def heartbeats(e: str, n: int) -> list[dict[str, Any]]:
    """``n`` heartbeats of ``e``, from agents ``i0`` to ``iN-1``."""
    return [heartbeat(e, instanceId=f"i{i}") for i in range(n)]
