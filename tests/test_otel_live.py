"""trio_obs.otel.LiveSpanProcessor (SPEC §11): span starts live, beside the usual exporter.

Real SDK tracers, a real `trio-obs serve`, real sockets: a tool call shows while it runs;
the live processor and the usual exporter together still give one ``tool:start`` per
call; an outage or a lost answer loses nothing and stores nothing twice; a full buffer
drops instead of blocking; no thread outlives the processor, nor keeps a program alive.
"""

from __future__ import annotations

import functools
import itertools
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import httpx
import pytest
import trio
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_support import WEATHER_RUN, receive, shape, stored, tracer_provider, weather_run
from support import (
    START_TIMEOUT,
    TIMEOUT,
    ServerProcess,
    environment,
    free_port,
    serving,
    ws_client,
)
from trio_obs.otel import LiveSpanProcessor

WORKER = "trio-obs-live-spans"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with serving("--db", ":memory:") as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name == WORKER]


async def test_a_tool_call_shows_while_it_runs(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    running = trio.Event()
    may_end = threading.Event()
    token = trio.lowlevel.current_trio_token()
    execution: list[str] = []

    def agent() -> None:
        live = LiveSpanProcessor(server.url())
        usual = BatchSpanProcessor(OTLPSpanExporter(endpoint=server.url("/v1/traces")))
        with tracer_provider(live, usual) as (provider, ids):
            execution.append(ids.draw())

            def tool_runs() -> None:
                trio.from_thread.run_sync(running.set, trio_token=token)
                assert may_end.wait(TIMEOUT)

            weather_run(provider.get_tracer("weather-agent"), during_tool=tool_runs)
        # the provider's shutdown flushed both: the exporter has sent every ended span too
        assert live.dropped == 0

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, agent)
        with trio.fail_after(TIMEOUT):
            await running.wait()
        async with ws_client(server.ws_url(execution[0])) as ws:
            # the agent's start, its model call and the tool's start, while the tool runs
            first = await receive(ws, 4)
            assert [shape(e) for e in first] == WEATHER_RUN[:4]
            assert not may_end.is_set()
            may_end.set()
            rest = await receive(ws, len(WEATHER_RUN) - 4)
    events = first + rest
    assert [shape(e) for e in events] == WEATHER_RUN
    assert first[3]["toolUseId"] == rest[0]["toolUseId"] == first[3]["spanId"]
    # both the live processor and the exporter sent each ended span: one start, one end each
    assert [shape(e) for e in await stored(http, execution[0])] == WEATHER_RUN


async def test_spans_sent_while_the_server_is_down_arrive_when_it_is_back() -> None:
    port = free_port()
    live = LiveSpanProcessor(f"http://127.0.0.1:{port}")
    try:
        with tracer_provider(live) as (provider, ids):
            execution = ids.draw()
            # Nothing listens: the instrumented code runs through all the same.
            weather_run(provider.get_tracer("weather-agent"))
            assert not live.force_flush(timeout_millis=100)
            srv = ServerProcess("--db", ":memory:", port=port)
            try:
                assert await trio.to_thread.run_sync(live.force_flush, TIMEOUT * 1000)
                async with httpx.AsyncClient(base_url=srv.url(), trust_env=False) as http:
                    assert [shape(e) for e in await stored(http, execution)] == WEATHER_RUN
            finally:
                assert srv.stop() == 0
    finally:
        live.shutdown()
    assert live.dropped == 0


async def test_a_batch_whose_answer_was_lost_is_sent_again_and_stored_once(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    connections = itertools.count()
    answers_lost = 0

    async def proxy(client: trio.SocketStream) -> None:
        """Relays to the server, except that the first answer never reaches the client."""
        nonlocal answers_lost
        lose = next(connections) == 0
        upstream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with upstream, trio.open_nursery() as nursery:

            async def up() -> None:
                async for data in client:
                    await upstream.send_all(data)

            async def down() -> None:
                nonlocal answers_lost
                async for data in upstream:
                    if lose:  # the request was taken and answered: drop the answer
                        answers_lost += 1
                        nursery.cancel_scope.cancel()
                        return
                    await client.send_all(data)

            nursery.start_soon(up)
            nursery.start_soon(down)
        await trio.aclose_forcefully(client)

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(
            functools.partial(trio.serve_tcp, host="127.0.0.1"), proxy, 0
        )
        port = listener.socket.getsockname()[1]

        def agent() -> str:
            live = LiveSpanProcessor(f"http://127.0.0.1:{port}", max_batch_size=1000)
            with tracer_provider(live) as (provider, ids):
                execution = ids.draw()
                weather_run(provider.get_tracer("weather-agent"))
            assert live.dropped == 0
            return execution

        execution = await trio.to_thread.run_sync(agent)
        nursery.cancel_scope.cancel()
    assert answers_lost == 1
    assert [shape(e) for e in await stored(http, execution)] == WEATHER_RUN


async def test_a_full_buffer_drops_new_spans_and_never_blocks() -> None:
    live = LiveSpanProcessor(
        f"http://127.0.0.1:{free_port()}", max_queue_size=4, shutdown_timeout=0.3
    )
    with tracer_provider(live) as (provider, _):
        tracer = provider.get_tracer("t")
        spans = [tracer.start_span(f"execute_tool t{n}") for n in range(10)]
        # each accepted start keeps a place for its end: two fit in four
        assert [s.attributes.get("trio_obs.live_span") for s in spans] == [True] * 2 + [None] * 8
        assert live.dropped == 8
        for s in spans:
            s.end()
        # the two marked ends have their places; the unmarked ones find the buffer full
        assert live.dropped == 16
    # shut down without a server: the shutdown timeout bounds it; the rest is counted
    assert live.dropped == 20


def test_a_program_that_never_calls_shutdown_still_sends_its_spans_and_exits(
    server: ServerProcess,
) -> None:
    script = textwrap.dedent(
        f"""
        from opentelemetry.sdk.trace import TracerProvider
        from trio_obs.otel import LiveSpanProcessor

        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(LiveSpanProcessor({server.url()!r}))
        with provider.get_tracer("t").start_as_current_span("execute_tool exit_test") as span:
            print(format(span.get_span_context().trace_id, "032x"), flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        env=environment(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    execution = done.stdout.strip()
    events = httpx.get(server.url(f"/api/executions/{execution}/events"), trust_env=False).json()
    assert [shape(e) for e in events] == [
        ("execution:status", "started"),
        ("execution:status", "completed"),  # the root: a tool, but the execution itself
    ]


def test_shutdown_is_idempotent_and_later_spans_are_ignored() -> None:
    live = LiveSpanProcessor("http://127.0.0.1:1", shutdown_timeout=0.1)
    live.shutdown()
    live.shutdown()
    with tracer_provider(live) as (provider, _):
        provider.get_tracer("t").start_span("after").end()
    assert live.force_flush(timeout_millis=10)
    assert live.dropped == 0
