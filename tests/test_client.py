"""The Python client (``open_stream``, ``post_events``) against real servers on loopback.

Every disconnect here is real: a server stopped and started again on the same port
and SQLite file, a 4008 close of a slow consumer. The client must resume with no
gap and no duplicate, in seq order per execution.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import trio_obs
from support import free_port, running_server
from trio_obs import (
    EventStream,
    PostRejected,
    StreamRefused,
    open_stream,
    post_events,
)
from trio_obs.core.events import (
    SpanEndEvent,
    SpanStartEvent,
    StreamEvent,
    ToolOutputEvent,
    ToolStartEvent,
    WaveStatusEvent,
)

TIMEOUT = 30  # a safety net against hangs (a loaded 2-core machine is slow), never about speed


# --------------------------------------------------------------------------- harness


@attrs.define
class Server:
    """A server running in a task of its own, so a test can stop it mid-stream."""

    obs: trio_obs.Observability
    port: int
    stop: trio.Event
    stopped: trio.Event

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def shutdown(self) -> None:
        self.stop.set()
        await self.stopped.wait()


async def _serve(db: str, config: dict[str, Any], *, task_status: trio.TaskStatus[Server]) -> None:
    stop, stopped = trio.Event(), trio.Event()
    try:
        async with running_server(db, **config) as srv:
            task_status.started(Server(srv.obs, srv.port, stop, stopped))
            await stop.wait()
    finally:
        stopped.set()


async def start_server(nursery: trio.Nursery, db: str = ":memory:", **config: Any) -> Server:
    server: Server = await nursery.start(_serve, db, config)
    return server


class States:
    """An ``on_state`` callback that lets a test wait until the stream is live."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._live = trio.Event()

    def __call__(self, state: str) -> None:
        self.seen.append(state)
        if state == "live":
            self._live.set()

    async def live(self) -> None:
        await self._live.wait()
        self._live = trio.Event()


def tool_events(execution_id: str, n: int, *, start: int = 0, tool: str = "Bash") -> list[Any]:
    return [
        ToolStartEvent(
            execution_id=execution_id,
            tool_use_id=f"{execution_id}-{i}",
            tool=tool,
            input_summary=f"step {i}",
        )
        for i in range(start, start + n)
    ]


async def take(stream: EventStream, n: int) -> list[StreamEvent]:
    got: list[StreamEvent] = []
    if n:
        async for event in stream:
            got.append(event)
            if len(got) == n:
                break
    return got


def seqs_by_execution(events: list[StreamEvent]) -> dict[str, list[int | None]]:
    out: dict[str, list[int | None]] = {}
    for event in events:
        out.setdefault(event.execution_id, []).append(event.seq)
    return out


@asynccontextmanager
async def within_timeout() -> AsyncIterator[None]:
    with trio.fail_after(TIMEOUT):
        yield


# --------------------------------------------------------------------------- tests


async def test_receives_posted_events_in_seq_order() -> None:
    async with within_timeout(), trio.open_nursery() as nursery:
        server = await start_server(nursery, port=0)
        states = States()
        async with open_stream(server.url, "e1", on_state=states) as stream:
            await states.live()
            posted = tool_events("e1", 10)
            seqs = await post_events(server.url, posted)
            for event in tool_events("e1", 3, start=10):
                seqs += await post_events(server.url, event)
            got = await take(stream, 13)
        assert seqs == list(range(1, 14))
        assert [e.seq for e in got] == seqs
        assert [e.tool_use_id for e in got if isinstance(e, ToolStartEvent)] == [
            f"e1-{i}" for i in range(13)
        ]
        assert states.seen[:2] == ["connecting", "live"]
        await server.shutdown()


@pytest.mark.parametrize("stream_name", ["e1", "all"])
async def test_resumes_after_server_restart_without_gap_or_duplicate(
    tmp_path: Path, stream_name: str
) -> None:
    db = str(tmp_path / "events.db")
    port = free_port()
    async with within_timeout(), trio.open_nursery() as nursery:
        server_a = await start_server(nursery, db, port=port)
        states = States()
        async with open_stream(server_a.url, stream_name, on_state=states) as stream:
            await states.live()
            await post_events(server_a.url, tool_events("e1", 4) + tool_events("e2", 2))
            want_before = 6 if stream_name == "all" else 4
            before = await take(stream, want_before)

            await server_a.shutdown()
            # Stored while no server runs: only replay (or, for `all`, HTTP) can deliver these.
            async with trio_obs.open_observability(db) as obs:
                await obs.ingest(tool_events("e1", 3, start=4) + tool_events("e2", 1, start=2))
            server_b = await start_server(nursery, db, port=port)
            # Whether the client is back yet or not: stored now means replayed or live.
            await post_events(server_b.url, tool_events("e1", 2, start=7))
            after = await take(stream, 5 if stream_name == "e1" else 6)
            assert stream.reconnects == 1
        await server_b.shutdown()

    by_execution = seqs_by_execution(before + after)
    assert by_execution["e1"] == list(range(1, 10))
    if stream_name == "all":
        assert by_execution["e2"] == [1, 2, 3]
    else:
        assert "e2" not in by_execution
    assert "reconnecting" in states.seen


async def test_an_all_stream_that_falls_behind_is_served_from_the_store() -> None:
    async with within_timeout(), trio.open_nursery() as nursery:
        # A batch dispatched at once overflows a 4-event queue: the `all` stream reads
        # the store by position (SPEC §4, §14), and is neither closed nor resumed.
        server = await start_server(nursery, port=0, queue_size=4)
        states = States()
        async with open_stream(server.url, "all", on_state=states) as stream:
            await states.live()
            pairs = zip(tool_events("e1", 15), tool_events("e2", 15), strict=True)
            batch = [event for pair in pairs for event in pair]
            await post_events(server.url, batch)
            got = await take(stream, 30)
            assert stream.reconnects == 0
        await server.shutdown()

    by_execution = seqs_by_execution(got)
    assert by_execution["e1"] == list(range(1, 16))
    assert by_execution["e2"] == list(range(1, 16))
    assert [event.pos for event in got] == sorted(event.pos for event in got)


async def test_an_execution_stream_that_falls_behind_is_not_closed() -> None:
    async with within_timeout(), trio.open_nursery() as nursery:
        # SPEC §4: the same overflow on an execution stream is served from the store.
        server = await start_server(nursery, port=0, queue_size=4, buffer_size=2)
        states = States()
        async with open_stream(server.url, "e1", on_state=states) as stream:
            await states.live()
            pairs = zip(tool_events("e1", 15), tool_events("e2", 15), strict=True)
            await post_events(server.url, [event for pair in pairs for event in pair])
            got = await take(stream, 15)
            assert stream.reconnects == 0
        await server.shutdown()
    assert seqs_by_execution(got)["e1"] == list(range(1, 16))


async def test_wrong_token_is_refused_with_a_clear_error() -> None:
    async with within_timeout(), trio.open_nursery() as nursery:
        server = await start_server(nursery, port=0, token="s3cret")
        for token in ("wrong", None):
            async with open_stream(server.url, "e1", token=token) as stream:
                with pytest.raises(StreamRefused) as info:
                    await take(stream, 1)
            assert info.value.status == 401
            assert "401" in str(info.value) and "token" in str(info.value)
        # The right token works, for the stream and for posting.
        async with open_stream(server.url, "e1", token="s3cret") as stream:
            await post_events(server.url, tool_events("e1", 1), token="s3cret")
            assert [e.seq for e in await take(stream, 1)] == [1]
        with pytest.raises(PostRejected) as rejected:
            await post_events(server.url, tool_events("e1", 1), token="wrong")
        assert rejected.value.status == 401
        await server.shutdown()


async def test_topic_and_tool_filters_hold_for_replay_and_live() -> None:
    def mixed(execution_id: str, tag: str) -> list[Any]:
        return [
            ToolStartEvent(
                execution_id=execution_id, tool_use_id=f"bash-{tag}", tool="Bash", input_summary="x"
            ),
            ToolStartEvent(
                execution_id=execution_id, tool_use_id=f"read-{tag}", tool="Read", input_summary="y"
            ),
            ToolOutputEvent(execution_id=execution_id, tool_use_id=f"read-{tag}", chunk="no"),
            ToolOutputEvent(execution_id=execution_id, tool_use_id=f"bash-{tag}", chunk="yes"),
            WaveStatusEvent(
                execution_id=execution_id,
                wave_number=1,
                status="running",
                task_count=1,
                completed_count=0,
                failed_count=0,
            ),
        ]

    async with within_timeout(), trio.open_nursery() as nursery:
        server = await start_server(nursery, port=0)
        await post_events(server.url, mixed("e1", "old"))  # replayed, maybe before filters apply
        states = States()
        async with open_stream(
            server.url, "e1", topics=["tools"], filters={"tools": ["Bash"]}, on_state=states
        ) as stream:
            await states.live()
            await post_events(server.url, mixed("e1", "new"))
            got = await take(stream, 4)
        await server.shutdown()

    assert [(e.type, getattr(e, "tool_use_id", None)) for e in got] == [
        ("tool:start", "bash-old"),
        ("tool:output", "bash-old"),
        ("tool:start", "bash-new"),
        ("tool:output", "bash-new"),
    ]
    assert [e.seq for e in got] == [1, 4, 6, 9]


async def test_bad_arguments_fail_before_connecting() -> None:
    with pytest.raises(ValueError, match="since"):
        async with open_stream("http://127.0.0.1:1", "all", since=3):
            pass
    with pytest.raises(trio_obs.InvalidInput, match="topic"):
        async with open_stream("http://127.0.0.1:1", "e1", topics=["nope"]):
            pass
    with pytest.raises(trio_obs.InvalidInput, match="severity"):
        async with open_stream("http://127.0.0.1:1", "e1", filters={"severity": ["loud"]}):
            pass


async def test_user_errors_inside_the_stream_propagate_unwrapped() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with open_stream("http://127.0.0.1:1", "e1"):
            raise Boom


async def test_span_events_come_typed_and_a_spans_topic_keeps_only_them() -> None:
    start = SpanStartEvent(
        execution_id="e1", span_id="m1", parent_span_id="a1", kind="llm", name="chat gpt-4o",
        agent="orchestrator", model="gpt-4o", provider="openai",
    )  # fmt: skip
    end = SpanEndEvent(
        execution_id="e1", span_id="m1", state="done", duration_ms=1300.0,
        usage={"inputTokens": 1200, "outputTokens": 85}, finish_reasons=["stop"],
        output_messages=[{"role": "assistant", "parts": [{"type": "text", "content": "hi"}]}],
        output="hi",
    )  # fmt: skip
    other = ToolStartEvent(execution_id="e1", tool_use_id="u1", tool="Bash", input_summary="ls")
    async with within_timeout(), running_server() as srv:
        await post_events(srv.url(), [start, other, end])
        async with open_stream(srv.url(), "e1", since=0, topics=["spans"]) as stream:
            got = await take(stream, 2)
    assert [type(e) for e in got] == [SpanStartEvent, SpanEndEvent]
    # The end takes the agent of its span from the store (SPEC §12: every event of a span).
    expected = [start, attrs.evolve(end, agent="orchestrator")]
    assert [attrs.evolve(e, seq=None, pos=None, timestamp="") for e in got] == expected
