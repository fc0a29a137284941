"""``trio-obs tail``: the live stream in a terminal, one line per event (or NDJSON).

The renderer is a pure function (:func:`render_event`) so it can be tested without
a terminal; heartbeats are folded: a line only when an agent's status changes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Final, TextIO

import httpx
import trio
from rich.console import Console
from rich.text import Text

from ..core import events as ev
from ..core.errors import InvalidInput
from ..core.protocol import ALL
from .common import StreamClosed, StreamRefused, auth_headers, endpoints
from .stream import EventStream, open_stream

_AGENTS_MAX: Final = 10_000
_EXEC_WIDTH: Final = 11
_INDENT: Final = len("HH:MM:SS.mmm ") + _EXEC_WIDTH + 1
"""Where an event's text starts after the time and execution columns."""
_PALETTE: Final = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta")

_KIND_STYLE: Final[dict[str, str]] = {
    "transcript:entry": "white",
    "tool:start": "cyan",
    "tool:end": "cyan",
    "tool:output": "grey70",
    "assertion:result": "green",
    "skill:start": "magenta",
    "skill:end": "magenta",
    "messagebus:event": "blue",
    "wave:status": "yellow",
    "agent:heartbeat": "grey50",
    "execution:status": "bold",
}
_TOOL_END_STYLE: Final = {"done": "cyan", "error": "bold red", "blocked": "yellow"}
_ASSERTION_MARK: Final = {
    "pass": ("✓", "green"),
    "fail": ("✗", "bold red"),
    "skip": ("○", "grey50"),
    "warn": ("!", "yellow"),
}
_SEVERITY_STYLE: Final = {
    "debug": "grey50",
    "info": "blue",
    "warning": "yellow",
    "error": "red",
    "critical": "bold red",
}
_STATUS_STYLE: Final = {
    "completed": "bold green",
    "failed": "bold red",
    "paused": "yellow",
    "success": "green",
    "partial": "yellow",
    "idle": "grey50",
    "working": "green",
    "blocked": "yellow",
    "error": "bold red",
    "pending": "grey50",
    "running": "yellow",
}


# --------------------------------------------------------------------------- rendering


def format_time(timestamp: str, *, local_time: bool = True) -> str:
    """``HH:MM:SS.mmm`` of an ISO-8601 timestamp (local time, or as given)."""
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp[11:23] or timestamp
    if local_time and moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def short_id(execution_id: str) -> str:
    """An execution id short enough for a column: kept whole, or its start and end."""
    if len(execution_id) <= _EXEC_WIDTH:
        return execution_id
    return f"{execution_id[:5]}…{execution_id[-5:]}"


def format_duration(ms: float) -> str:
    """``120 ms``, ``3.4 s`` or ``2m 05s``."""
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    return f"{minutes}m {seconds:02d}s"


def _execution_style(execution_id: str) -> str:
    # Stable across runs (unlike hash()), so an execution keeps its colour.
    return _PALETTE[sum(execution_id.encode()) % len(_PALETTE)]


def _prefix(event: ev.StreamEvent, local_time: bool) -> Text:
    return Text.assemble(
        (format_time(event.timestamp, local_time=local_time), "grey50"),
        " ",
        (f"{short_id(event.execution_id):<{_EXEC_WIDTH}}", _execution_style(event.execution_id)),
        " ",
    )


def _task(task_id: str | None) -> Text:
    return Text(f" [{task_id}]", "grey50") if task_id else Text()


def _body(event: ev.StreamEvent, tools: Mapping[str, str]) -> Text | None:
    style = _KIND_STYLE[event.type]
    match event:
        case ev.TranscriptEntryEvent(entry=entry):
            return Text.assemble(
                ("✎ ", style),
                (entry.instance_id, "bold"),
                " ",
                (f"{entry.entry_type}:", "grey70"),
                " ",
                entry.summary,
                _task(entry.task_id),
            )
        case ev.ToolStartEvent():
            return Text.assemble(
                ("▶ ", style),
                (event.tool, "bold cyan"),
                " ",
                event.input_summary,
                _task(event.task_id),
            )
        case ev.ToolEndEvent():
            end_style = _TOOL_END_STYLE.get(event.result_status, style)
            tool = tools.get(event.tool_use_id)
            text = Text.assemble(
                ("■ ", end_style),
                (f"{tool} " if tool else "", "bold cyan"),
                (event.result_status, end_style),
                " ",
                (format_duration(event.duration_ms), "grey70"),
            )
            if event.output_summary:
                text.append(f" — {event.output_summary}", "red" if event.is_error else "")
            return text
        case ev.ToolOutputEvent():
            lines = event.chunk.rstrip("\n").split("\n")
            text = Text()
            for i, line in enumerate(lines):
                if i:
                    text.append("\n" + " " * _INDENT)
                if event.is_stderr:
                    text.append("  │ ", "red")
                    text.append("stderr ", "bold red")
                    text.append(line, "red")
                else:
                    text.append("  │ ", "grey50")
                    text.append(line, style)
            return text
        case ev.AssertionResultEvent(assertion=assertion):
            mark, mark_style = _ASSERTION_MARK[assertion.result]
            return Text.assemble(
                (f"{mark} {assertion.result}", mark_style),
                " ",
                (f"{assertion.category}:", "grey70"),
                " ",
                assertion.description,
                _task(event.task_id),
                (f" · pass rate {event.running_pass_rate:.0%}", "grey70"),
            )
        case ev.SkillStartEvent():
            return Text.assemble(
                ("◆ skill ", style),
                (event.skill_name, "bold magenta"),
                (f" ({event.skill_file}:{event.line_number})", "grey50"),
                _task(event.task_id),
            )
        case ev.SkillEndEvent():
            return Text.assemble(
                ("◇ skill ", style),
                (event.skill_name, "bold magenta"),
                " ",
                (event.status, _STATUS_STYLE.get(event.status, "")),
                " ",
                (format_duration(event.duration_ms), "grey70"),
            )
        case ev.MessageBusEvent(entry=entry):
            text = Text()
            if event.requires_action:
                text.append("ACTION", "bold red reverse")
                text.append(" ")
            text.append_text(
                Text.assemble(
                    ("✉ ", style),
                    (entry.severity, _SEVERITY_STYLE.get(entry.severity, "")),
                    " ",
                    (entry.source, "bold"),
                    " ",
                    (f"{entry.event_type}:", "grey70"),
                    " ",
                    (entry.human_summary, "bold red" if event.requires_action else ""),
                    _task(entry.task_id),
                )
            )
            return text
        case ev.WaveStatusEvent():
            text = Text.assemble(
                (f"≋ wave {event.wave_number} ", style),
                (event.status, _STATUS_STYLE.get(event.status, "")),
                f" {event.completed_count}/{event.task_count} done",
            )
            if event.failed_count:
                text.append(f", {event.failed_count} failed", "bold red")
            return text
        case ev.ExecutionStatusEvent():
            text = Text.assemble(
                ("● execution ", style), (event.status, _STATUS_STYLE.get(event.status, "bold"))
            )
            if event.message:
                text.append(f": {event.message}")
            return text
        case _:  # heartbeats are folded: see render_heartbeat
            return None


def render_event(
    event: ev.StreamEvent, *, local_time: bool = True, tools: Mapping[str, str] | None = None
) -> Text | None:
    """One line for ``event`` (tool output: one per output line); None for heartbeats.

    Columns: time (``HH:MM:SS.mmm``), the execution (shortened), then a glyph and the
    event's substance in the colour of its kind. ``tools`` maps tool-use ids to tool
    names, so a ``tool:end`` can say which tool ended. Heartbeats return None: tail
    shows :func:`render_heartbeat` only when an agent's status changes.
    """
    body = _body(event, tools or {})
    if body is None:
        return None
    return _prefix(event, local_time) + body


def render_heartbeat(event: ev.AgentHeartbeatEvent, *, local_time: bool = True) -> Text:
    """The line for an agent whose status (or current task) changed."""
    body = Text.assemble(
        ("♥ ", _KIND_STYLE[event.type]),
        (event.instance_id, "bold"),
        " ",
        (event.status, _STATUS_STYLE.get(event.status, "")),
    )
    if event.current_task_id:
        body.append(f" on {event.current_task_id}", "grey70")
    return _prefix(event, local_time) + body


class AgentBoard:
    """The last known status of each agent, to fold heartbeats into status changes."""

    def __init__(self) -> None:
        self._last: OrderedDict[tuple[str, str], tuple[str, str | None]] = OrderedDict()

    def changed(self, event: ev.AgentHeartbeatEvent) -> bool:
        """Record ``event``; True when its agent's status or task differs from before."""
        key = (event.execution_id, event.instance_id)
        now = (event.status, event.current_task_id)
        before = self._last.get(key)
        self._last[key] = now
        self._last.move_to_end(key)
        if len(self._last) > _AGENTS_MAX:
            self._last.popitem(last=False)
        return before != now


# --------------------------------------------------------------------------- the command


class _BrokenOutput(Exception):
    """stdout was closed by the reader (``| head``): stop quietly."""


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich would raise SystemExit(1); a closed pipe (`| head`) is a normal way to stop.
        raise _BrokenOutput


class _Tail:
    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.out = out
        self.console = _Console(file=out, highlight=False, soft_wrap=True, emoji=False)
        self.errors = Console(file=err, highlight=False, soft_wrap=True, emoji=False)
        self.agents = AgentBoard()
        self.tools: dict[str, str] = {}
        self.stream: EventStream | None = None
        self.was_live = False
        self.live = trio.Event()

    def note(self, message: str, style: str = "yellow") -> None:
        self.errors.print(Text(f"trio-obs tail: {message}", style))

    def on_state(self, state: str) -> None:
        stream = self.stream
        if state != "live":
            return
        if self.was_live:
            since = stream.last_seq() if stream and stream.stream != ALL else None
            self.note("resumed" if since is None else f"resumed after seq {since}", "green")
        elif self.errors.is_terminal:
            self.note(f"following {self.args.execution} at {self.args.url}", "green")
        self.was_live = True
        self.live.set()

    def on_retry(self, reason: str, delay: float) -> None:
        if self.was_live:
            self.note(f"connection lost: {reason}; reconnecting in {delay:.1f} s")
        else:
            self.note(f"cannot reach {self.args.url}: {reason}; retrying in {delay:.1f} s")

    async def explain_empty(self, stream: EventStream) -> None:
        """Following an execution with no events: say so, and name the recent ones."""
        if stream.stream in (ALL,) or stream.last_seq() != 0 or self.args.since:
            return
        try:
            async with httpx.AsyncClient(
                timeout=5.0, trust_env=False, headers=auth_headers(self.args.token or None)
            ) as http:
                response = await http.get(f"{endpoints(self.args.url).http}/api/executions?limit=5")
                recent = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            recent = None
        text = f"{stream.stream} has no events yet; waiting for them"
        if recent:
            names = ", ".join(
                f"{e['executionId']} ({e['lastStatus'] or 'no status'}, {e['eventCount']} events)"
                for e in recent
            )
            text += f". The most recent executions: {names}"
        elif recent == []:
            text += ". The server has no executions yet"
        self.note(text)

    def show(self, event: ev.StreamEvent, text: str) -> None:
        try:
            if self.args.json:
                self.out.write(text + "\n")
                self.out.flush()
                return
            line: Text | None
            if isinstance(event, ev.AgentHeartbeatEvent):
                line = render_heartbeat(event) if self.agents.changed(event) else None
            else:
                if isinstance(event, ev.ToolStartEvent):
                    self.tools[event.tool_use_id] = event.tool
                    if len(self.tools) > 10_000:  # bounded: forget the oldest
                        del self.tools[next(iter(self.tools))]
                line = render_event(event, tools=self.tools)
            if line is not None:
                self.console.print(line)
                self.out.flush()
        except BrokenPipeError:
            raise _BrokenOutput from None

    def subscription(self) -> tuple[list[str], dict[str, object]]:
        """The topics and filters the flags ask for; a filter implies its topic."""
        args = self.args
        filters: dict[str, object] = {}
        implied: list[str] = []
        for values, key, topic in (
            (args.tool, "tools", "tools"),
            (args.severity, "severity", "messagebus"),
            (args.category, "categories", "assertions"),
            (args.entry_type, "entryTypes", "transcript"),
        ):
            if values:
                filters[key] = list(values)
                implied.append(topic)
        if args.task:
            filters["taskId"] = args.task
        for key, value in (
            ("q", args.query), ("type", args.type), ("state", args.state), ("agent", args.agent)
        ):  # fmt: skip
            if value:
                filters[key] = value
        return (list(args.topic) or implied), filters

    async def run(self) -> int:
        args = self.args
        topics, filters = self.subscription()
        try:
            async with open_stream(
                args.url,
                args.execution,
                since=args.since,
                topics=topics,
                filters=filters or None,
                token=args.token or None,
                on_state=self.on_state,
                on_retry=self.on_retry,
            ) as stream:
                self.stream = stream
                stream.on_notice = self.note
                explaining = trio.CancelScope()

                async def explain_once() -> None:
                    with explaining:
                        await self.live.wait()
                        await self.explain_empty(stream)

                failure: Exception | None = None
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(explain_once)
                    try:
                        async for event, text in stream.frames():
                            explaining.cancel()  # events came: nothing to explain
                            self.show(event, text)
                    except (StreamRefused, StreamClosed, _BrokenOutput) as exc:
                        failure = exc  # raised below, outside the nursery: not in a group
                    explaining.cancel()
                if failure is not None:
                    raise failure
        except (InvalidInput, ValueError) as exc:
            self.note(str(exc), "bold red")
            return 2
        except (StreamRefused, StreamClosed) as exc:
            self.note(str(exc), "bold red")
            return 1
        except _BrokenOutput:
            return 0
        return 0


async def _main(tail: _Tail) -> int:
    status = 0
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                nonlocal status
                status = await tail.run()
                nursery.cancel_scope.cancel()

            nursery.start_soon(follow)
            async for _ in signals:  # Ctrl-C: a normal way to stop following
                nursery.cancel_scope.cancel()
                break
    return status


def run_tail_cli(args: argparse.Namespace) -> int:
    """``trio-obs tail``: follow a stream until Ctrl-C; 1 if the server refuses it."""
    logging.basicConfig(
        level=logging.WARNING, format="trio-obs tail: %(message)s", stream=sys.stderr
    )
    tail = _Tail(args, sys.stdout, sys.stderr)
    try:
        status = trio.run(_main, tail)
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was installed
        status = 0
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status
