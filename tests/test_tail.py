"""``trio-obs tail``: the line renderer (snapshots) and the command against a real server."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import orjson
import pytest
import trio
from rich.text import Text

from support import T0, command, environment, free_port, running_server
from trio_obs import post_events
from trio_obs.client.tail import AgentBoard, format_duration, render_event, render_heartbeat
from trio_obs.core.events import (
    AgentHeartbeatEvent,
    AssertionResult,
    AssertionResultEvent,
    ExecutionStatusEvent,
    MessageBusEvent,
    MessageBusLogEntry,
    SkillEndEvent,
    SkillStartEvent,
    StreamEvent,
    ToolEndEvent,
    ToolOutputEvent,
    ToolStartEvent,
    TranscriptEntry,
    TranscriptEntryEvent,
    WaveStatusEvent,
)

TIMEOUT = 15  # a safety net against hangs, never an assertion about speed
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
            "▶ Bash npm test [T-3]",
        ),
        (
            ToolEndEvent(
                execution_id=X,
                tool_use_id="tu1",
                result_status="done",
                duration_ms=120,
                timestamp=TS,
            ),
            "■ done 120 ms",
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
            "■ error 3.4 s — exit 1",
        ),
        (
            ToolOutputEvent(
                execution_id=X, tool_use_id="tu1", chunk="PASS a\nPASS b\n", timestamp=TS
            ),
            "  │ PASS a\n" + " " * len(PREFIX) + "  │ PASS b",
        ),
        (
            ToolOutputEvent(
                execution_id=X, tool_use_id="tu1", chunk="deprecated", is_stderr=True, timestamp=TS
            ),
            "  │ stderr deprecated",
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
        "▶ Bash ls",
        "  │ a",
        "  │ b",
        "♥ agent-1 working",  # the second, identical heartbeat is folded away
        "■ Bash done 7 ms",
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


async def test_tail_keeps_retrying_an_unreachable_server_until_ctrl_c() -> None:
    with trio.fail_after(TIMEOUT):
        async with tail("all", "--url", f"http://127.0.0.1:{free_port()}") as (process, _, err):
            line = await err.until("retrying")
            assert process.returncode is None
            status, stderr = await interrupt(process, err)
    assert "cannot reach" in line
    assert status == 0
    assert "Traceback" not in stderr


def test_tool_end_names_its_tool_when_the_start_was_seen() -> None:
    end = ToolEndEvent(execution_id="e1", tool_use_id="t9", result_status="done", duration_ms=5)
    named = render_event(end, local_time=False, tools={"t9": "Grep"})
    assert named is not None and "■ Grep done" in named.plain
    anonymous = render_event(end, local_time=False)
    assert anonymous is not None and "■ done" in anonymous.plain


async def test_tail_says_every_retry_with_its_reason_and_wait() -> None:
    with trio.fail_after(TIMEOUT):
        async with tail("e1", "--url", f"http://127.0.0.1:{free_port()}") as (process, _, err):
            first = await err.until("retrying in")
            second = await err.until("retrying in")
            status, _ = await interrupt(process, err)
    assert "cannot reach" in first and "0.1 s" in first
    assert "0.2 s" in second  # each retry is told, with its backoff
    assert status == 0


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
