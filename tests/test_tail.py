"""``trio-obs tail``: the line renderer (snapshots) and the command against a real server."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import attrs
import orjson
import pytest
import trio
from rich.text import Text

from support import START_TIMEOUT, T0, command, environment, free_port, running_server
from trio_obs import post_events
from trio_obs.client.tail_render import (
    AgentBoard,
    LineContext,
    SpanBook,
    format_duration,
    render_event,
    render_heartbeat,
)
from trio_obs.client.tail_tree import render_tree
from trio_obs.core.events import (
    AgentHeartbeatEvent,
    AssertionResult,
    AssertionResultEvent,
    ExecutionStatusEvent,
    MessageBusEvent,
    MessageBusLogEntry,
    SkillEndEvent,
    SkillStartEvent,
    SpanEndEvent,
    SpanStartEvent,
    StreamEvent,
    ToolEndEvent,
    ToolOutputEvent,
    ToolStartEvent,
    TranscriptEntry,
    TranscriptEntryEvent,
    WatchAlertEvent,
    WatchClearEvent,
    WaveStatusEvent,
)

TIMEOUT = START_TIMEOUT  # a safety net against hangs: each test starts a process
X = "exec-7f3a9c21e5b04d2f"
TS = "2024-05-01T12:34:56.789Z"
PREFIX = "12:34:56.789 exec-…04d2f "


def plain(event: StreamEvent) -> str | None:
    text = render_event(event, local_time=False)
    return None if text is None else text.plain


def styles_of(text: Text, fragment: str) -> set[str]:
    """The styles applied to the span where ``fragment`` starts."""
    start = text.plain.index(fragment)
    return {str(s.style) for s in text.spans if s.start <= start < s.end}


def assertion(result: str, rate: float) -> AssertionResultEvent:
    return AssertionResultEvent(
        execution_id=X,
        task_id="T-3",
        running_pass_rate=rate,
        timestamp=TS,
        assertion=AssertionResult(
            id="a1",
            task_id="T-3",
            execution_id=X,
            category="tests",
            description="unit tests pass",
            result=result,  # type: ignore[arg-type]
            timestamp=TS,
        ),
    )


def bus(severity: str, requires_action: bool) -> MessageBusEvent:
    return MessageBusEvent(
        execution_id=X,
        requires_action=requires_action,
        timestamp=TS,
        entry=MessageBusLogEntry(
            id="m1",
            event_id="ev1",
            timestamp=TS,
            source="ci",
            event_type="build_failed",
            human_summary="Build broke on main",
            severity=severity,  # type: ignore[arg-type]
            category="ci",
            created_at=TS,
        ),
    )


# --------------------------------------------------------------------------- renderer


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            TranscriptEntryEvent(
                execution_id=X,
                timestamp=TS,
                entry=TranscriptEntry(
                    id="t1",
                    timestamp=TS,
                    sequence=1,
                    execution_id=X,
                    instance_id="agent-1",
                    entry_type="tool_use",
                    category="action",
                    summary="Ran the tests",
                    task_id="T-3",
                ),
            ),
            "✎ agent-1 tool_use: Ran the tests [T-3]",
        ),
        (
            ToolStartEvent(
                execution_id=X,
                tool_use_id="tu1",
                tool="Bash",
                input_summary="npm test",
                task_id="T-3",
                timestamp=TS,
            ),
            "▶ Bash#tu1 npm test [T-3]",
        ),
        (
            ToolEndEvent(
                execution_id=X,
                tool_use_id="tu1",
                result_status="done",
                duration_ms=120,
                timestamp=TS,
            ),
            "■ #tu1 done 120 ms",
        ),
        (
            ToolEndEvent(
                execution_id=X,
                tool_use_id="tu1",
                result_status="error",
                duration_ms=3400,
                output_summary="exit 1",
                is_error=True,
                timestamp=TS,
            ),
            "■ #tu1 error 3.4 s — exit 1",
        ),
        (
            ToolOutputEvent(
                execution_id=X, tool_use_id="tu1", chunk="PASS a\nPASS b\n", timestamp=TS
            ),
            "  #tu1 │ PASS a\n" + " " * len(PREFIX) + "  #tu1 │ PASS b",
        ),
        (
            ToolOutputEvent(
                execution_id=X, tool_use_id="tu1", chunk="deprecated", is_stderr=True, timestamp=TS
            ),
            "  #tu1 │ stderr deprecated",
        ),
        (assertion("pass", 1.0), "✓ pass tests: unit tests pass [T-3] · pass rate 100%"),
        (assertion("fail", 2 / 3), "✗ fail tests: unit tests pass [T-3] · pass rate 67%"),
        (assertion("skip", 0.5), "○ skip tests: unit tests pass [T-3] · pass rate 50%"),
        (
            SkillStartEvent(
                execution_id=X,
                skill_trace_id="s1",
                skill_name="refactor",
                skill_file="skills/refactor.md",
                line_number=12,
                timestamp=TS,
            ),
            "◆ skill refactor (skills/refactor.md:12)",
        ),
        (
            SkillEndEvent(
                execution_id=X,
                skill_trace_id="s1",
                skill_name="refactor",
                status="success",
                duration_ms=65_000,
                timestamp=TS,
            ),
            "◇ skill refactor success 1m 05s",
        ),
        (bus("info", False), "✉ info ci build_failed: Build broke on main"),
        (bus("critical", True), "ACTION ✉ critical ci build_failed: Build broke on main"),
        (
            WaveStatusEvent(
                execution_id=X,
                wave_number=2,
                status="running",
                task_count=5,
                completed_count=3,
                failed_count=1,
                timestamp=TS,
            ),
            "≋ wave 2 running 3/5 done, 1 failed",
        ),
        (
            WaveStatusEvent(
                execution_id=X,
                wave_number=1,
                status="completed",
                task_count=4,
                completed_count=4,
                failed_count=0,
                timestamp=TS,
            ),
            "≋ wave 1 completed 4/4 done",
        ),
        (
            ExecutionStatusEvent(
                execution_id=X, status="failed", message="2 tasks failed", timestamp=TS
            ),
            "● execution failed: 2 tasks failed",
        ),
        (
            ExecutionStatusEvent(execution_id=X, status="started", timestamp=TS),
            "● execution started",
        ),
    ],
    ids=lambda v: v.type if hasattr(v, "type") else None,
)
def test_render_event_snapshots(event: StreamEvent, expected: str) -> None:
    assert plain(event) == PREFIX + expected


def test_short_executions_are_kept_whole_and_aligned() -> None:
    event = ExecutionStatusEvent(execution_id="e1", status="running", timestamp=TS)
    assert plain(event) == "12:34:56.789 e1          ● execution running"


def test_errors_and_actions_stand_out() -> None:
    action = render_event(bus("error", True), local_time=False)
    assert action is not None
    assert "bold red reverse" in styles_of(action, "ACTION")
    assert "bold red" in styles_of(action, "Build broke")
    info = render_event(bus("info", False), local_time=False)
    assert info is not None and "ACTION" not in info.plain

    failed = render_event(
        ToolEndEvent(execution_id=X, tool_use_id="t", result_status="error", duration_ms=5),
        local_time=False,
    )
    assert failed is not None and "bold red" in styles_of(failed, "error")
    stderr = render_event(
        ToolOutputEvent(execution_id=X, tool_use_id="t", chunk="oops", is_stderr=True),
        local_time=False,
    )
    assert stderr is not None and "red" in styles_of(stderr, "│")
    assert "✗" in (plain(assertion("fail", 0.0)) or "")


def test_heartbeats_fold_into_status_changes() -> None:
    def beat(status: str, task: str | None = "T-1", agent: str = "agent-1") -> AgentHeartbeatEvent:
        return AgentHeartbeatEvent(
            execution_id=X,
            instance_id=agent,
            status=status,  # type: ignore[arg-type]
            current_task_id=task,
            timestamp=TS,
        )

    assert render_event(beat("working")) is None
    board = AgentBoard()
    beats = [
        beat("working"),
        beat("working"),
        beat("working", agent="agent-2"),
        beat("working"),
        beat("working", task="T-2"),
        beat("idle", task=None),
        beat("idle", task=None),
    ]
    shown = [render_heartbeat(b, local_time=False).plain for b in beats if board.changed(b)]
    assert shown == [
        PREFIX + "♥ agent-1 working on T-1",
        PREFIX + "♥ agent-2 working on T-1",
        PREFIX + "♥ agent-1 working on T-2",
        PREFIX + "♥ agent-1 idle",
    ]


def test_durations_read_naturally() -> None:
    assert [format_duration(ms) for ms in (0, 999, 1000, 59_940, 125_000)] == [
        "0 ms",
        "999 ms",
        "1.0 s",
        "59.9 s",
        "2m 05s",
    ]


# --------------------------------------------------------------------------- the command


class Lines:
    """Lines out of a subprocess pipe."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str | None:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some()
            if not data:
                return None
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    async def take(self, n: int) -> list[str]:
        lines = []
        for _ in range(n):
            line = await self.next()
            assert line is not None, f"the output ended after {lines}"
            lines.append(line)
        return lines

    async def until(self, fragment: str) -> str:
        while (line := await self.next()) is not None:
            if fragment in line:
                return line
        raise AssertionError(f"{fragment!r} never appeared")

    async def rest(self) -> str:
        chunks = [self.buffer]
        while data := await self.stream.receive_some():
            chunks.append(data)
        return b"".join(chunks).decode()


@asynccontextmanager
async def tail(*args: str) -> AsyncIterator[tuple[trio.Process, Lines, Lines]]:
    process = await trio.lowlevel.open_process(
        command("tail", *args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(unbuffered=False),
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        yield process, Lines(process.stdout), Lines(process.stderr)
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def interrupt(process: trio.Process, err: Lines) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    status = await process.wait()
    return status, await err.rest()


def mixed_events(execution_id: str, first: int) -> Sequence[StreamEvent]:
    return [
        ToolStartEvent(
            execution_id=execution_id, tool_use_id=f"u{first}", tool="Bash", input_summary="ls"
        ),
        ToolOutputEvent(execution_id=execution_id, tool_use_id=f"u{first}", chunk="a\nb\n"),
        AgentHeartbeatEvent(execution_id=execution_id, instance_id="agent-1", status="working"),
        AgentHeartbeatEvent(execution_id=execution_id, instance_id="agent-1", status="working"),
        ToolEndEvent(
            execution_id=execution_id, tool_use_id=f"u{first}", result_status="done", duration_ms=7
        ),
    ]


async def test_tail_json_prints_every_event_as_received_and_exits_0_on_ctrl_c() -> None:
    with trio.fail_after(TIMEOUT):
        async with running_server() as srv:
            url = srv.url()
            seqs = await post_events(url, mixed_events("e1", 1))  # replayed
            async with tail("e1", "--url", url, "--json") as (process, out, err):
                lines = await out.take(5)
                seqs += await post_events(url, mixed_events("e1", 2))  # live
                lines += await out.take(5)
                status, stderr = await interrupt(process, err)
            stored = (await srv.http.get("/api/executions/e1/events")).json()

    assert status == 0
    assert "Traceback" not in stderr
    events = [orjson.loads(line) for line in lines]
    assert [e["seq"] for e in events] == seqs == list(range(1, 11))
    assert [e["type"] for e in events] == [e.type for e in mixed_events("e1", 0)] * 2
    # Byte for byte what the server sent (the stored wire JSON), one object per line.
    assert lines == [orjson.dumps(obj).decode() for obj in stored]


async def test_tail_text_folds_heartbeats_and_filters_by_topic() -> None:
    with trio.fail_after(TIMEOUT):
        async with running_server() as srv:
            url = srv.url()
            await post_events(url, mixed_events("e1", 1))
            await post_events(
                url, ExecutionStatusEvent(execution_id="e1", status="completed", message="ok")
            )
            async with tail("e1", "--url", url) as (process, out, err):
                text = await out.take(6)
                status, stderr = await interrupt(process, err)
                text_rest = await out.rest()
            async with tail("e1", "--url", url, "--topic", "execution") as (process, out, err):
                only = await out.take(1)
                status_2, stderr_2 = await interrupt(process, err)
                only_rest = await out.rest()

    assert [line[len(PREFIX) :] for line in text] == [
        "▶ Bash#u1 ls",
        "  Bash#u1 │ a",
        "  Bash#u1 │ b",
        "♥ agent-1 working",  # the second, identical heartbeat is folded away
        "■ Bash#u1 done 7 ms",
        "● execution completed: ok",
    ]
    assert [line[len(PREFIX) :] for line in only] == ["● execution completed: ok"]
    assert text_rest == only_rest == ""
    assert status == status_2 == 0
    assert "Traceback" not in stderr + stderr_2


async def test_tail_exits_1_with_a_clear_message_when_refused() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            running_server(token="s3cret") as srv,
            tail("all", "--url", srv.url()) as (process, _, err),
        ):
            status = await process.wait()
            stderr = await err.rest()
    assert status == 1
    assert "401" in stderr and "token" in stderr
    assert "Traceback" not in stderr


def test_tool_end_names_its_tool_when_the_start_was_seen() -> None:
    end = ToolEndEvent(execution_id="e1", tool_use_id="t9", result_status="done", duration_ms=5)
    named = render_event(end, local_time=False, context=LineContext(name="Grep"))
    assert named is not None and "■ Grep#t9 done" in named.plain
    anonymous = render_event(end, local_time=False)
    assert anonymous is not None and "■ #t9 done" in anonymous.plain  # at least the call


async def test_tail_of_an_execution_without_events_says_so_and_names_recent_ones() -> None:
    with trio.fail_after(TIMEOUT):
        async with running_server() as srv:
            await post_events(srv.url(), mixed_events("exec-real", 1))
            async with tail("nope-123", "--url", srv.url()) as (process, _, err):
                line = await err.until("no events yet")
                status, _ = await interrupt(process, err)
    assert "nope-123 has no events yet" in line
    assert "exec-real (no status, 5 events)" in line
    assert status == 0


async def test_a_filter_implies_its_topic_unless_one_is_given() -> None:
    entry = MessageBusLogEntry(
        id="m", event_id="e", timestamp=T0, source="ci", event_type="build.failed",
        human_summary="the build broke", severity="error", category="build", created_at=T0,
        execution_id="e1",
    )  # fmt: skip
    with trio.fail_after(TIMEOUT):
        async with running_server() as srv:
            url = srv.url()
            await post_events(url, [*mixed_events("e1", 1), MessageBusEvent(entry=entry)])
            async with tail("e1", "--url", url, "--severity", "error") as (process, out, err):
                [only] = await out.take(1)
                status, _ = await interrupt(process, err)
                rest = await out.rest()
    assert "the build broke" in only
    assert rest == ""  # the tool events and heartbeats of e1 are not shown
    assert status == 0


# --------------------------------------------------------------------------- where a line belongs


def npm_test(execution_id: str, use: str, task: str) -> ToolStartEvent:
    return ToolStartEvent(
        execution_id=execution_id, tool_use_id=use, tool="Bash", input_summary="npm test",
        task_id=task,
    )  # fmt: skip


async def test_two_parallel_runs_of_one_tool_are_told_apart_on_every_line() -> None:
    x = "e1"
    events: list[StreamEvent] = [
        npm_test(x, "toolu_01aaaa", "T-1"),
        npm_test(x, "toolu_01bbbb", "T-2"),
        ToolOutputEvent(execution_id=x, tool_use_id="toolu_01aaaa", chunk="PASS a"),
        ToolOutputEvent(execution_id=x, tool_use_id="toolu_01bbbb", chunk="FAIL b"),
        ToolEndEvent(execution_id=x, tool_use_id="toolu_01bbbb", result_status="error",
                     duration_ms=900, output_summary="exit 1", is_error=True),
        ToolEndEvent(execution_id=x, tool_use_id="toolu_01aaaa", result_status="done",
                     duration_ms=1000),
    ]  # fmt: skip
    with trio.fail_after(TIMEOUT):
        async with running_server() as srv:
            await post_events(srv.url(), events)
            async with tail(x, "--url", srv.url()) as (process, out, err):
                text = await out.take(6)
                status, _ = await interrupt(process, err)
    assert [line[len("12:34:56.789 e1          ") :] for line in text] == [
        "▶ Bash#aaaa npm test [T-1]",
        "▶ Bash#bbbb npm test [T-2]",
        "  Bash#aaaa │ PASS a",
        "  Bash#bbbb │ FAIL b",
        "■ Bash#bbbb error 900 ms [T-2] — exit 1",
        "■ Bash#aaaa done 1.0 s [T-1]",
    ]
    assert status == 0


async def test_an_end_whose_start_came_before_the_tail_names_its_call() -> None:
    with trio.fail_after(TIMEOUT):
        async with running_server() as srv:
            url = srv.url()
            await post_events(url, mixed_events("e1", 1))  # seq 1 is the start
            async with tail("e1", "--url", url, "--since", "1") as (process, out, err):
                lines = await out.take(4)
                status, _ = await interrupt(process, err)
    assert lines[-1].split(" ", 2)[2].strip().startswith("■ ")
    assert "■ Bash#u1 done 7 ms" in lines[-1]  # named from the server's span tree
    assert "  Bash#u1 │ a" in lines[0]
    assert status == 0


async def test_a_tool_use_transcript_entry_does_not_repeat_the_tool_start() -> None:
    x = "e1"
    entry = TranscriptEntry(
        id="t1", timestamp=T0, sequence=1, execution_id=x, instance_id="agent-1",
        entry_type="tool_use", category="action", summary="Bash npm test", task_id="T-1",
        details={"tool": "Bash"},
    )  # fmt: skip
    other = attrs.evolve(entry, id="t2", sequence=2, summary="Read README.md", details=None)
    skill = SkillStartEvent(
        execution_id=x, skill_trace_id="s1", skill_name="verify", skill_file="verify.md",
        line_number=9, task_id="T-1",
    )  # fmt: skip
    invoke = attrs.evolve(
        entry, id="t3", sequence=3, entry_type="skill_invoke", summary="Using verify (verify.md:9)"
    )
    with trio.fail_after(TIMEOUT):
        async with running_server() as srv:
            await post_events(
                srv.url(),
                [
                    npm_test(x, "u1", "T-1"),
                    TranscriptEntryEvent(execution_id=x, entry=entry),  # the echo
                    TranscriptEntryEvent(execution_id=x, entry=other),  # no start: shown
                    skill,
                    TranscriptEntryEvent(execution_id=x, entry=invoke),  # the echo
                    ExecutionStatusEvent(execution_id=x, status="completed"),
                ],
            )
            async with tail(x, "--url", srv.url()) as (process, out, err):
                text = await out.take(4)
                status, _ = await interrupt(process, err)
                rest = await out.rest()
    assert [line.split(" ", 2)[2].strip() for line in text] == [
        "▶ Bash#u1 npm test [T-1]",
        "✎ agent-1 tool_use: Read README.md [T-1]",
        "◆ skill verify (verify.md:9) [T-1]",
        "● execution completed",
    ]
    assert rest == ""
    assert status == 0


def test_span_lines_are_indented_by_depth_and_say_their_agent() -> None:
    x = "e1"
    events: list[StreamEvent] = [
        ExecutionStatusEvent(execution_id=x, status="started", span_id="root", timestamp=TS),
        SpanStartEvent(execution_id=x, span_id="a1", parent_span_id="root", kind="agent",
                       name="orchestrator", agent="orchestrator", timestamp=TS),
        SpanStartEvent(execution_id=x, span_id="m1", parent_span_id="a1", kind="llm",
                       name="chat gpt-4o", model="gpt-4o", agent="orchestrator", timestamp=TS),
        SpanEndEvent(execution_id=x, span_id="m1", state="done", duration_ms=1300,
                     usage={"inputTokens": 1200, "outputTokens": 85}, timestamp=TS),
        ToolStartEvent(execution_id=x, tool_use_id="call_1", tool="delegate_research",
                       input_summary='{"q": "trio"}', parent_span_id="a1", timestamp=TS),
        SpanStartEvent(execution_id=x, span_id="a2", parent_span_id="call_1", kind="agent",
                       name="research_agent", timestamp=TS),
        ToolOutputEvent(execution_id=x, tool_use_id="call_1", chunk="searching", timestamp=TS),
        SpanEndEvent(execution_id=x, span_id="a2", state="error", duration_ms=2000,
                     error="rate limited", timestamp=TS),
        ToolEndEvent(execution_id=x, tool_use_id="call_1", result_status="error",
                     duration_ms=2100, timestamp=TS),
        SpanEndEvent(execution_id=x, span_id="a1", state="done", duration_ms=4000,
                     output="Trio is a structured concurrency library.", timestamp=TS),
        ExecutionStatusEvent(execution_id=x, status="completed", span_id="root",
                             usage={"inputTokens": 1200, "outputTokens": 85}, timestamp=TS),
    ]  # fmt: skip
    book = SpanBook()
    lines = []
    for event in events:
        book.learn(event)
        text = render_event(event, local_time=False, context=book.context(event))
        assert text is not None
        lines.append(text.plain[len("12:34:56.789 e1          ") :])
    assert lines == [
        "● execution started",
        "  ▶ agent orchestrator",
        "    ▶ model gpt-4o @orchestrator",
        "    ■ model gpt-4o done 1.3 s · 1,200 in / 85 out tokens @orchestrator",
        '    ▶ delegate_research#call_1 {"q": "trio"} @orchestrator',
        "      ▶ agent research_agent",
        "      delegate_research#call_1 │ searching",
        "      ■ agent research_agent error 2.0 s — rate limited",
        "    ■ delegate_research#call_1 error 2.1 s @orchestrator",
        "  ■ agent orchestrator done 4.0 s — Trio is a structured concurrency library.",
        "● execution completed · 1,200 in / 85 out tokens",
    ]


def test_a_tree_answer_fills_what_came_before_the_tail() -> None:
    book = SpanBook()
    end = ToolEndEvent(execution_id="e1", tool_use_id="call_9", result_status="done",
                       duration_ms=5, timestamp=TS)  # fmt: skip
    book.learn(end)
    assert book.missing(end)
    tree = {
        "executionId": "e1",
        "spans": [
            {"spanId": "root", "parentSpanId": None, "kind": "agent", "name": "boss",
             "agent": "boss"},
            {"spanId": "call_9", "parentSpanId": "root", "kind": "tool", "name": "grep",
             "agent": "boss", "toolUseId": "call_9", "taskId": "T-4"},
        ],
    }  # fmt: skip
    book.learn_tree(tree)
    assert not book.missing(end)
    text = render_event(end, local_time=False, context=book.context(end))
    assert text is not None
    assert text.plain.endswith("  ■ grep#call_9 done 5 ms [T-4] @boss")


# --------------------------------------------------------------------------- a stopped server


async def test_a_stopped_server_is_told_once_then_retried_quietly_until_it_answers() -> None:
    port = free_port()
    attempts = 0
    enough = trio.Event()

    async def refuse(stream: trio.SocketStream) -> None:  # a server that is not ready yet
        nonlocal attempts
        attempts += 1
        if attempts >= 2:
            enough.set()
        await stream.receive_some()
        await stream.send_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        await stream.aclose()

    with trio.fail_after(TIMEOUT * 2):
        async with tail("e1", "--url", f"http://127.0.0.1:{port}") as (process, out, err):
            first = await err.next()
            async with trio.open_nursery() as nursery:
                listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
                nursery.start_soon(trio.serve_listeners, refuse, listeners)
                await enough.wait()  # it kept trying ...
                nursery.cancel_scope.cancel()
            async with running_server(port=port) as srv:  # ... and follows once it answers
                await post_events(srv.url(), mixed_events("e1", 1))
                shown = await out.next()
                status, stderr = await interrupt(process, err)
    assert first is not None
    assert f"cannot reach the server at http://127.0.0.1:{port}" in first
    assert "Is it running?" in first
    assert "cannot reach" not in stderr  # said once, not at every retry
    assert "connected to" in stderr
    assert shown is not None and "▶ Bash#u1 ls" in shown
    assert status == 0


async def test_no_wait_exits_1_when_the_server_cannot_be_reached() -> None:
    with trio.fail_after(TIMEOUT):
        url = f"http://127.0.0.1:{free_port()}"
        async with tail("all", "--url", url, "--no-wait") as (process, _, err):
            status = await process.wait()
            stderr = await err.rest()
    assert status == 1
    assert stderr.count("cannot reach the server") == 1
    assert url in stderr and "Is it running?" in stderr
    assert "Traceback" not in stderr


# --------------------------------------------------------------------------- --tree

TREE = {
    "executionId": "4bf92f3577b34da6a3ce929d0e0e4736",
    "seq": 14,
    "epoch": "ep1",
    "name": "orchestrator",
    "state": "running",
    "rootSpanId": "root",
    "totals": {"modelCalls": 2, "inputTokens": 1500, "outputTokens": 120, "cost": 0.0051,
               "toolCalls": 1, "errors": 1},
    "spans": [
        {"spanId": "root", "parentSpanId": None, "kind": "agent", "name": "orchestrator",
         "agent": "orchestrator", "state": "running", "start": "2026-12-06T21:00:00.000Z",
         "end": None, "durationMs": None, "model": None, "usage": None, "cost": None,
         "error": None, "placeholder": False, "openSeq": 1, "closeSeq": None},
        {"spanId": "m1", "parentSpanId": "root", "kind": "llm", "name": "chat gpt-4o",
         "agent": "orchestrator", "state": "done", "start": "2026-12-06T21:00:00.100Z",
         "end": "2026-12-06T21:00:01.400Z", "durationMs": 1300, "model": "gpt-4o",
         "usage": {"inputTokens": 1200, "outputTokens": 85}, "cost": 0.0039, "error": None,
         "placeholder": False, "openSeq": 2, "closeSeq": 3},
        {"spanId": "call_1", "parentSpanId": "root", "kind": "tool",
         "name": "delegate_research", "agent": "orchestrator", "state": "error",
         "start": "2026-12-06T21:00:01.500Z", "end": "2026-12-06T21:00:03.600Z",
         "durationMs": 2100, "model": None, "usage": None, "cost": None,
         "error": "rate limited", "placeholder": False, "openSeq": 4, "closeSeq": 9,
         "toolUseId": "call_1"},
        {"spanId": "a2", "parentSpanId": "call_1", "kind": "agent", "name": "research_agent",
         "agent": "research_agent", "state": "error", "start": "2026-12-06T21:00:01.600Z",
         "end": "2026-12-06T21:00:03.500Z", "durationMs": 1900, "model": None, "usage": None,
         "cost": None, "error": "rate limited", "placeholder": False, "openSeq": 5,
         "closeSeq": 8},
        {"spanId": "m2", "parentSpanId": "a2", "kind": "llm", "name": "chat mystery-1",
         "agent": "research_agent", "state": "done", "start": "2026-12-06T21:00:01.700Z",
         "end": "2026-12-06T21:00:02.000Z", "durationMs": 300, "model": "mystery-1",
         "usage": {"inputTokens": 300, "outputTokens": 35}, "cost": "unknown", "error": None,
         "placeholder": False, "openSeq": 6, "closeSeq": 7},
        {"spanId": "m3", "parentSpanId": "root", "kind": "llm", "name": "chat gpt-4o",
         "agent": "orchestrator", "state": "running", "start": "2026-12-06T21:00:03.700Z",
         "end": None, "durationMs": None, "model": "gpt-4o", "usage": None, "cost": None,
         "error": None, "placeholder": False, "openSeq": 10, "closeSeq": None},
        {"spanId": "p9", "parentSpanId": "gone", "kind": "span", "name": None, "agent": None,
         "state": "running", "start": None, "end": None, "durationMs": None, "model": None,
         "usage": None, "cost": None, "error": None, "placeholder": True, "openSeq": None,
         "closeSeq": None},
    ],
}  # fmt: skip


def test_the_tree_is_drawn_with_states_durations_tokens_and_cost() -> None:
    now = datetime(2026, 12, 6, 21, 0, 5, tzinfo=UTC)
    lines = [line.plain for line in render_tree(TREE, now=now)]
    assert lines == [
        "orchestrator running  4bf92f3577b34da6a3ce929d0e0e4736",
        "2 model calls · 1 tool call · 1 error · 1,500 in / 120 out tokens · $0.0051",
        "agent orchestrator running 5.0 s so far",
        "├─ model gpt-4o done 1.3 s · 1,200 in / 85 out tokens · $0.0039",
        "├─ tool delegate_research#call_1 error 2.1 s — rate limited",
        "│  └─ agent research_agent error 1.9 s — rate limited",
        "│     └─ model mystery-1 done 300 ms · 300 in / 35 out tokens · cost unknown",
        "└─ model gpt-4o running 1.3 s so far",
        "#p9 (not seen yet)",
    ]


def test_the_tree_of_states_is_coloured_and_survives_a_broken_answer() -> None:
    lines = render_tree(TREE)
    error = next(line for line in lines if "research_agent error" in line.plain)
    assert "bold red" in styles_of(error, "error")
    assert [line.plain for line in render_tree({"executionId": "e1", "spans": "?"})] == ["e1 "]
    cycle = {"executionId": "e1", "spans": [
        {"spanId": "a", "parentSpanId": "b", "kind": "span", "name": "a"},
        {"spanId": "b", "parentSpanId": "a", "kind": "span", "name": "b"},
    ]}  # fmt: skip
    assert [line.plain for line in render_tree(cycle)][1:] == ["a", "└─ b"]  # each span once


async def test_tree_of_an_unknown_execution_or_a_stopped_server_exits_1_saying_so() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            running_server() as srv,
            tail("--tree", "nope", "--url", srv.url()) as (process, out, err),
        ):
            status = await process.wait()
            stderr, stdout = await err.rest(), await out.rest()
        url = f"http://127.0.0.1:{free_port()}"
        async with tail("--tree", "e1", "--url", url) as (process, _, err):
            status_2 = await process.wait()
            stderr_2 = await err.rest()
    assert (status, stdout) == (1, "")
    assert "has no execution 'nope'" in stderr
    assert status_2 == 1
    assert f"cannot reach the server at {url}" in stderr_2 and "Traceback" not in stderr_2


async def test_a_lost_connection_is_told_once_and_resumed_without_a_gap(tmp_path: Path) -> None:
    db, port = str(tmp_path / "obs.db"), free_port()
    url = f"http://127.0.0.1:{port}"
    with trio.fail_after(TIMEOUT * 2):
        async with tail("e1", "--url", url) as (process, out, err):
            async with running_server(db, port=port):
                await post_events(url, mixed_events("e1", 1))
                first = await out.take(5)
            lost = await err.until("lost the connection")
            async with running_server(db, port=port):  # the same store, back again
                await post_events(url, mixed_events("e1", 2))
                second = await out.take(4)  # the heartbeat did not change: folded
                status, stderr = await interrupt(process, err)
    assert "▶ Bash#u1 ls" in first[0] and "▶ Bash#u2 ls" in second[0]
    assert f"lost the connection to {url}" in lost
    assert "lost the connection" not in stderr  # told once, not at every retry
    assert "resumed after seq 5" in stderr
    assert status == 0


async def test_tree_prints_a_real_execution_and_names_an_end_seen_before_the_tail() -> None:
    x = "run-1"
    events: list[StreamEvent] = [
        ExecutionStatusEvent(execution_id=x, status="started", span_id="root"),
        SpanStartEvent(execution_id=x, span_id="a1", parent_span_id="root", kind="agent",
                       name="orchestrator"),
        SpanStartEvent(execution_id=x, span_id="m1", parent_span_id="a1", kind="llm",
                       name="chat gpt-4o", model="gpt-4o"),
        SpanEndEvent(execution_id=x, span_id="m1", state="done", duration_ms=1300,
                     usage={"inputTokens": 1200, "outputTokens": 85}),
        ToolStartEvent(execution_id=x, tool_use_id="call_1", tool="search",
                       input_summary="trio", parent_span_id="a1"),
    ]  # fmt: skip
    end = ToolEndEvent(execution_id=x, tool_use_id="call_1", result_status="error",
                       duration_ms=2100, output_summary="rate limited", is_error=True)  # fmt: skip
    with trio.fail_after(TIMEOUT):
        async with running_server() as srv:
            url = srv.url()
            await post_events(url, events)
            async with tail(x, "--url", url, "--since", str(len(events))) as (process, out, err):
                await post_events(url, end)  # its start came before the tail began
                [ended] = await out.take(1)
                status, _ = await interrupt(process, err)
            async with tail("--tree", x, "--url", url) as (process, out, _):
                tree = (await out.rest()).splitlines()
                tree_status = await process.wait()
    assert status == tree_status == 0
    assert "■ search#call_1 error 2.1 s" in ended  # named from the server's tree
    assert "@orchestrator" in ended and ended.index("■") > len(PREFIX)  # under its agent
    text = "\n".join(tree)
    assert "model gpt-4o done 1.3 s · 1,200 in / 85 out tokens" in text
    assert "search#call_1 error 2.1 s" in text
    assert "agent orchestrator running" in text


def test_a_tasks_events_without_a_span_are_drawn_inside_the_agent_on_that_task() -> None:
    x = "e1"
    book = SpanBook()
    agent = SpanStartEvent(execution_id=x, span_id="a1", parent_span_id="root", kind="agent",
                           name="instance-1", task_id="T-3", timestamp=TS)  # fmt: skip
    lines = []
    for event in (agent, assertion("pass", 1.0), bus("info", False)):
        event = attrs.evolve(event, execution_id=x)
        book.learn(event)
        text = render_event(event, local_time=False, context=book.context(event))
        assert text is not None
        lines.append(text.plain[len("12:34:56.789 e1          ") :])
    assert lines == [
        "  ▶ agent instance-1 [T-3]",
        "    ✓ pass tests: unit tests pass [T-3] @instance-1 · pass rate 100%",
        "✉ info ci build_failed: Build broke on main",  # no task: where it was
    ]


def test_the_watchdogs_alerts_and_clears_say_what_they_are_about() -> None:
    x = "e1"
    book = SpanBook()
    start = ToolStartEvent(execution_id=x, tool_use_id="toolu_9c1f", tool="Bash",
                           input_summary="npm test", task_id="T-3", agent="builder",
                           timestamp=TS)  # fmt: skip
    slow = WatchAlertEvent(execution_id=x, alert_id="a1", alert="slow", since=TS,
                           message="open for 3m 10s (p95 of Bash: 40 s)", span_id="toolu_9c1f",
                           tool_use_id="toolu_9c1f", timestamp=TS)  # fmt: skip
    lost = WatchAlertEvent(execution_id=x, alert_id="a2", alert="lost", since=TS,
                           message="instance-1 silent for 31 s", instance_id="instance-1",
                           timestamp=TS)  # fmt: skip
    clear = WatchClearEvent(execution_id=x, alert_id="a1", message="Bash ended", timestamp=TS)
    lines = []
    for event in (start, slow, lost, clear):
        book.learn(event)
        text = render_event(event, local_time=False, context=book.context(event))
        assert text is not None
        lines.append(text)
    assert [line.plain[len("12:34:56.789 e1          ") :] for line in lines] == [
        "▶ Bash#9c1f npm test [T-3] @builder",
        "  ⚠ slow Bash#9c1f — open for 3m 10s (p95 of Bash: 40 s) [T-3] @builder",
        "⚠ lost — instance-1 silent for 31 s",
        "✓ clear — Bash ended",
    ]
    assert "bold red" in styles_of(lines[2], "lost")
