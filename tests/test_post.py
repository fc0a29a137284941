"""``post_events`` (client/post.py) and ``LiveSpanProcessor`` under trio and under asyncio.

Most agent frameworks run on asyncio: posting, its retries (a lost answer, a 503, a server
not there yet) and the live span processor work there as under trio. Each scenario is one
AnyIO coroutine run on both backends against a real ``trio-obs serve`` on loopback (a
subprocess, so no event loop is shared); a proxy in threads loses an answer or says 503.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

import anyio
import httpx
import pytest

from otel_support import shape, tracer_provider
from support import TIMEOUT, ServerProcess, free_port, serving
from trio_obs import post_events
from trio_obs.core.events import AgentHeartbeatEvent
from trio_obs.otel import LiveSpanProcessor

BACKENDS = ["trio", "asyncio"]
UNAVAILABLE = b'{"error":"the store is busy: try again","code":"UNAVAILABLE"}'
SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(UNAVAILABLE), UNAVAILABLE)
)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with serving("--db", ":memory:") as srv:
        yield srv


class FaultyProxy:
    """Relays loopback connections to ``port``; the first ``faults`` go wrong, as ``fault`` says.

    ``"lose"``: the request reaches the server, its answer never reaches the client.
    ``"503"``: the proxy answers 503 itself (the server never sees the request).
    Threads, not tasks: it serves trio and asyncio clients alike.
    """

    def __init__(self, port: int, fault: str, faults: int = 1) -> None:
        self.upstream, self.fault, self.faults = port, fault, faults
        self.connections = 0
        self.faulted = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone does not)
        self.listener.close()
        for thread in self.threads:
            thread.join(TIMEOUT)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            self.connections += 1
            faulty = self.faulted < self.faults
            self.faulted += faulty
            self._spawn(self._serve, client, faulty)

    def _serve(self, client: socket.socket, faulty: bool) -> None:
        with client:
            if faulty and self.fault == "503":
                _read_request(client)  # not relayed: the server never sees it
                client.sendall(SERVICE_UNAVAILABLE)
                return
            with socket.create_connection(("127.0.0.1", self.upstream), TIMEOUT) as upstream:
                self._spawn(_relay, client, upstream)
                while data := upstream.recv(65536):
                    if faulty:  # the server answered; the producer never hears it
                        client.shutdown(socket.SHUT_RDWR)
                        return
                    client.sendall(data)


def _read_request(client: socket.socket) -> None:
    """Reads one HTTP request whose body has a ``content-length`` (as httpx sends it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += client.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += client.recv(65536)


def _relay(source: socket.socket, sink: socket.socket) -> None:
    """Copies ``source`` to ``sink`` until ``source`` ends, then ends ``sink``'s writing."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        return  # either side closed


def heartbeats(execution: str, n: int) -> list[AgentHeartbeatEvent]:
    return [
        AgentHeartbeatEvent(execution_id=execution, instance_id=f"i{i}", status="working")
        for i in range(n)
    ]


async def shapes(http: httpx.AsyncClient, execution: str) -> list[tuple[str, str]]:
    """Each stored event's shape (none before the execution's first event is stored)."""
    response = await http.get(f"/api/executions/{execution}/events")
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [shape(event) for event in response.json()]


def seqs_stored(server: ServerProcess, execution: str) -> list[int]:
    response = httpx.get(
        server.url(f"/api/executions/{execution}/events"), timeout=TIMEOUT, trust_env=False
    )
    return [event["seq"] for event in response.json()]


# --------------------------------------------------------------------------- post_events


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fault", ["lose", "503"])
def test_a_failed_post_is_retried_and_stored_once(
    server: ServerProcess, backend: str, fault: str
) -> None:
    execution = f"post-{backend}-{fault}"

    async def producer(url: str) -> list[int]:
        with anyio.fail_after(TIMEOUT):
            return await post_events(url, heartbeats(execution, 3))

    with FaultyProxy(server.port, fault) as proxy:
        seqs = anyio.run(producer, proxy.url(), backend=backend)
    assert seqs == [1, 2, 3]
    assert proxy.faulted == 1 and proxy.connections == 2  # one failure, one retry
    assert seqs_stored(server, execution) == [1, 2, 3]  # stored once, though sent twice


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_last_error_is_raised_when_the_attempts_run_out(backend: str) -> None:
    async def producer() -> None:
        with anyio.fail_after(TIMEOUT):
            await post_events(f"http://127.0.0.1:{free_port()}", heartbeats("e1", 1), attempts=2)

    with pytest.raises(httpx.ConnectError):
        anyio.run(producer, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_server_that_starts_late_gets_the_batch(backend: str) -> None:
    port = free_port()
    servers: list[ServerProcess] = []

    async def producer() -> list[int]:
        with anyio.fail_after(TIMEOUT * 2):
            async with anyio.create_task_group() as tasks:
                seqs: list[int] = []

                async def post() -> None:
                    url = f"http://127.0.0.1:{port}"
                    seqs.extend(await post_events(url, heartbeats("e1", 2), attempts=10))

                tasks.start_soon(post)
                # Nothing listens at the first attempt: the server starts meanwhile.
                start = partial(ServerProcess, "--db", ":memory:", port=port)
                servers.append(await anyio.to_thread.run_sync(start))
            return seqs

    try:
        assert anyio.run(producer, backend=backend) == [1, 2]
    finally:
        for srv in servers:
            srv.stop()


# --------------------------------------------------------------------------- LiveSpanProcessor


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_live_span_processor_in_an_async_agent(server: ServerProcess, backend: str) -> None:
    """A tool span opened in a coroutine is on the server while the coroutine awaits."""
    tool = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.call.id": "call_weather_1",
    }

    async def agent() -> None:
        live = LiveSpanProcessor(server.url())
        async with httpx.AsyncClient(base_url=server.url(), trust_env=False) as http:
            with tracer_provider(live) as (provider, ids):
                execution = ids.draw()
                tracer = provider.get_tracer("weather-agent")
                agent_span = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bot"}
                with (
                    tracer.start_as_current_span("invoke_agent bot", attributes=agent_span),
                    tracer.start_as_current_span("execute_tool get_weather", attributes=tool),
                ):
                    with anyio.fail_after(TIMEOUT):  # the tool runs until its start is stored
                        while ("tool:start", "get_weather") not in await shapes(http, execution):  # noqa: ASYNC110
                            await anyio.sleep(0.05)  # a poll interval: the server is elsewhere
                    assert ("tool:end", "done") not in await shapes(http, execution)
            # The provider's shutdown flushed the processor: the end is stored too.
            assert live.dropped == 0
            seen = await shapes(http, execution)
        assert seen.count(("tool:start", "get_weather")) == 1
        assert seen.count(("tool:end", "done")) == 1

    anyio.run(agent, backend=backend)
