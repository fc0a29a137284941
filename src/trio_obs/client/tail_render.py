"""The lines of ``trio-obs tail``: pure functions of an event and what tail saw before.

:class:`SpanBook` remembers the spans the stream showed (their kind, name, parent,
agent and task), so each line can say where it belongs: indented by its depth in the
span tree, with its task and agent, and a tool call's end and output lines named by
the call (``Bash#8c1f``) even when two of the same run side by side.
:func:`render_event` turns one event and its :class:`LineContext` into a rich ``Text``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import attrs
from rich.text import Text

from ..core import events as ev
from ..core.facts import own_task_id, role_of, span_id_of

_EXEC_WIDTH: Final = 11
_INDENT: Final = len("HH:MM:SS.mmm ") + _EXEC_WIDTH + 1
"""Where an event's text starts after the time and execution columns."""
_STEP: Final = "  "
"""The indent of one level of nesting."""
_DEPTH_MAX: Final = 12
"""Deeper spans are drawn at this depth (a line must stay readable)."""
_SPANS_MAX: Final = 10_000
_ECHOES_MAX: Final = 64
_OUTPUT_MAX: Final = 120
"""Characters of a span's output or error shown on its end line."""
_AGENTS_MAX: Final = 10_000
_TASK_KINDS: Final = frozenset({"agent", "task"})
"""Spans whose task id places that task's span-less events (assertions, notes) inside them."""
_ECHO_OF: Final = {"tool_use": "tool", "skill_invoke": "skill"}
"""Transcript entry types that repeat a start tail already shows, and what they repeat."""
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
    "span:start": "bright_blue",
    "span:end": "bright_blue",
    "watch:alert": "yellow",
    "watch:clear": "green",
}
_SPAN_STYLE: Final = {"agent": "bold yellow", "llm": "bold bright_blue"}
_SPAN_WORD: Final = {"llm": "model", "span": ""}
"""How a span's kind is said on its line (``span``: nothing, its name says it)."""
_ALERT_STYLE: Final = {"lost": "bold red", "slow": "yellow", "idle": "grey62"}
"""The watchdog's words (SPEC §13): lost is an alarm, slow a warning, idle a note."""
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
STATUS_STYLE: Final = {
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
    "done": "green",
    "lost": "bold red",
}


# --------------------------------------------------------------------------- small formats


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


def call_id(tool_use_id: str) -> str:
    """A tool use id short enough to tell calls apart: kept whole up to 6, else its end."""
    return tool_use_id if len(tool_use_id) <= 6 else tool_use_id[-4:]


def call_label(tool: str | None, tool_use_id: str) -> str:
    """How a tool call is named on each of its lines: ``Bash#8c1f`` (``#8c1f`` unnamed)."""
    return f"{tool or ''}#{call_id(tool_use_id)}"


def format_duration(ms: float) -> str:
    """``120 ms``, ``3.4 s`` or ``2m 05s``."""
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    return f"{minutes}m {seconds:02d}s"


def format_tokens(usage: Mapping[str, Any] | None) -> str:
    """``1,200 in / 85 out tokens`` (empty without usage)."""
    if not usage:
        return ""
    parts = [
        f"{usage[key]:,} {word}"
        for key, word in (("inputTokens", "in"), ("outputTokens", "out"))
        if isinstance(usage.get(key), int)
    ]
    return f"{' / '.join(parts)} tokens" if parts else ""


def one_line(text: str, limit: int = _OUTPUT_MAX) -> str:
    """``text`` on one line, cut to ``limit`` characters (an ellipsis says it was cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _execution_style(execution_id: str) -> str:
    # Stable across runs (unlike hash()), so an execution keeps its colour.
    return _PALETTE[sum(execution_id.encode()) % len(_PALETTE)]


# --------------------------------------------------------------------------- what tail saw


@attrs.define
class SpanFacts:
    """What tail knows of one span: filled from its start, its end, or the tree."""

    kind: str
    name: str | None = None
    parent: str | None = None
    agent: str | None = None
    task_id: str | None = None


@attrs.frozen
class LineContext:
    """Where an event's line belongs: its depth, task, agent, and the span it is about."""

    depth: int = 0
    task_id: str | None = None
    agent: str | None = None
    name: str | None = None
    """The span's name, for an end that does not carry it (a tool's name, a model's)."""
    kind: str | None = None
    """The span's kind, for an end that does not carry it."""


def _is_root_status(event: ev.StreamEvent) -> bool:
    return isinstance(event, ev.ExecutionStatusEvent) and event.span_id is not None


class SpanBook:
    """The spans one tail saw (bounded: the oldest are forgotten), and the lines they make.

    ``learn`` every event in stream order, then ask ``context`` for its line. Depth is
    the number of ancestors known through ``parentSpanId`` (a parent never seen counts
    as one): the root's children are at 1, a tool of an agent under the root at 2.
    """

    def __init__(self, limit: int = _SPANS_MAX) -> None:
        self._spans: OrderedDict[tuple[str, str], SpanFacts] = OrderedDict()
        self._limit = limit
        self._starts: dict[str, deque[tuple[str, str | None, str, str]]] = {}
        """Per execution, the latest starts (kind, task, name, input) a transcript may echo."""
        self._task_spans: dict[tuple[str, str], str] = {}
        """The agent (or task) span working on each task, for the task's other events."""
        self.looked_up: set[str] = set()
        """Executions whose tree was asked for (once each)."""

    def get(self, execution_id: str, span_id: str | None) -> SpanFacts | None:
        """What is known of a span, or None."""
        if span_id is None:
            return None
        return self._spans.get((execution_id, span_id))

    def _put(self, execution_id: str, span_id: str, facts: SpanFacts) -> None:
        if facts.kind in _TASK_KINDS and facts.task_id is not None:
            self._task_spans[(execution_id, facts.task_id)] = span_id
            if len(self._task_spans) > self._limit:
                del self._task_spans[next(iter(self._task_spans))]
        key = (execution_id, span_id)
        known = self._spans.get(key)
        if known is not None:  # fill what was missing; the first word stands
            for field in ("name", "parent", "agent", "task_id"):
                if getattr(known, field) is None:
                    setattr(known, field, getattr(facts, field))
            if known.kind == "?":
                known.kind = facts.kind
            self._spans.move_to_end(key)
            return
        self._spans[key] = facts
        if len(self._spans) > self._limit:
            self._spans.popitem(last=False)

    def learn(self, event: ev.StreamEvent) -> None:
        """Remember what ``event`` says of its span."""
        x = event.execution_id
        match event:
            case ev.ToolStartEvent():
                facts = SpanFacts("tool", event.tool, event.parent_span_id, event.agent)
                facts.task_id = event.task_id
                self._put(x, event.tool_use_id, facts)
                self._started(x, ("tool", event.task_id, event.tool, event.input_summary))
            case ev.SkillStartEvent():
                facts = SpanFacts("skill", event.skill_name, event.parent_span_id, event.agent)
                facts.task_id = event.task_id
                self._put(x, event.skill_trace_id, facts)
                self._started(x, ("skill", event.task_id, event.skill_name, ""))
            case ev.SpanStartEvent() | ev.SpanEndEvent():
                agent = event.agent or (event.name if event.kind == "agent" else None)
                name = event.model if event.kind == "llm" and event.model else event.name
                facts = SpanFacts(event.kind or "?", name, event.parent_span_id, agent)
                facts.task_id = event.task_id
                self._put(x, event.span_id, facts)
            case ev.ToolEndEvent() | ev.SkillEndEvent() | ev.ToolOutputEvent():
                span = span_id_of(event)
                assert span is not None
                kind = "skill" if isinstance(event, ev.SkillEndEvent) else "tool"
                self._put(x, span, SpanFacts(kind, None, event.parent_span_id, event.agent))
            case ev.ExecutionStatusEvent() if event.span_id is not None:
                self._put(x, event.span_id, SpanFacts("execution", None, None, event.agent))

    def _started(self, execution_id: str, start: tuple[str, str | None, str, str]) -> None:
        starts = self._starts.get(execution_id)
        if starts is None:
            if len(self._starts) >= _SPANS_MAX:  # bounded: forget the oldest execution
                del self._starts[next(iter(self._starts))]
            starts = self._starts[execution_id] = deque(maxlen=_ECHOES_MAX)
        starts.append(start)

    def learn_tree(self, tree: Mapping[str, Any]) -> None:
        """Remember every span of a ``GET /api/executions/<id>/tree`` answer."""
        x = tree.get("executionId")
        spans = tree.get("spans")
        if not isinstance(x, str) or not isinstance(spans, list):
            return
        for span in spans:
            if not isinstance(span, dict) or not isinstance(span.get("spanId"), str):
                continue
            kind = str(span.get("kind") or "?")
            facts = SpanFacts(
                kind,
                _str(
                    span.get("model") if kind == "llm" and span.get("model") else span.get("name")
                ),
                _str(span.get("parentSpanId")),
                _str(span.get("agent")),
                _str(span.get("taskId")),
            )
            if span.get("placeholder"):
                facts.name = None
            if isinstance(span.get("toolUseId"), str):
                self._put(x, span["toolUseId"], facts)
            self._put(x, span["spanId"], facts)

    def missing(self, event: ev.StreamEvent) -> bool:
        """True when ``event``'s span or its parent was never seen (its start came earlier)."""
        span = span_id_of(event)
        if span is None:
            return False
        facts = self.get(event.execution_id, span)
        if facts is None:
            return True
        if facts.name is None and facts.kind != "execution":
            return True
        return facts.parent is not None and self.get(event.execution_id, facts.parent) is None

    def depth(self, execution_id: str, span_id: str | None) -> int:
        """How many ancestors a span has, as far as tail knows (a parent never seen: 1)."""
        depth = 0
        facts = self.get(execution_id, span_id)
        while facts is not None and facts.parent is not None and depth < _DEPTH_MAX:
            depth += 1
            facts = self.get(execution_id, facts.parent)
        return depth

    def is_echo(self, event: ev.StreamEvent) -> bool:
        """True for a transcript entry that repeats a tool or skill start already shown.

        Each start absorbs one echo: a ``tool_use`` entry of the same execution and task
        that names the same tool (``details.tool``, or the summary ``<tool> <input>``), a
        ``skill_invoke`` entry that names the skill.
        """
        if not isinstance(event, ev.TranscriptEntryEvent):
            return False
        entry = event.entry
        kind = _ECHO_OF.get(entry.entry_type)
        starts = self._starts.get(event.execution_id)
        if kind is None or not starts:
            return False
        named = (entry.details or {}).get(kind)
        for start in reversed(starts):
            start_kind, task_id, name, input_summary = start
            if start_kind != kind or task_id != entry.task_id:
                continue
            if (
                entry.summary == f"{name} {input_summary}".strip()
                or (named == name and entry.summary.startswith(name))
                or (kind == "skill" and name in entry.summary)
            ):
                starts.remove(start)
                return True
        return False

    def context(self, event: ev.StreamEvent) -> LineContext:
        """The depth, task, agent and span name of ``event``'s line."""
        x = event.execution_id
        span = span_id_of(event)
        facts = self.get(x, span)
        opens_or_closes = role_of(event) in ("opens", "closes") or _is_root_status(event)
        if isinstance(event, ev.ToolOutputEvent):  # drawn at its tool's depth, under "  "
            opens_or_closes = True
        parent_id = event.parent_span_id
        if parent_id is None and span is None and (task := own_task_id(event)) is not None:
            parent_id = self._task_spans.get((x, task))  # inside the agent on that task
        if opens_or_closes:
            depth = self.depth(x, span)
        elif span is not None:  # content of a span: one level under it
            depth = self.depth(x, span) + 1
        elif parent_id is not None:
            depth = self.depth(x, parent_id) + 1
        else:
            depth = 0
        parent = self.get(x, facts.parent if facts else parent_id)
        agent = (
            event.agent or (facts.agent if facts else None) or (parent.agent if parent else None)
        )
        task_id = own_task_id(event) or (facts.task_id if facts else None)
        return LineContext(
            depth=min(depth, _DEPTH_MAX),
            task_id=task_id,
            agent=agent,
            name=facts.name if facts else None,
            kind=facts.kind if facts and facts.kind != "?" else None,
        )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------- rendering


def _prefix(event: ev.StreamEvent, local_time: bool) -> Text:
    return Text.assemble(
        (format_time(event.timestamp, local_time=local_time), "grey50"),
        " ",
        (f"{short_id(event.execution_id):<{_EXEC_WIDTH}}", _execution_style(event.execution_id)),
        " ",
    )


def _where(task_id: str | None, agent: str | None = None) -> Text:
    """`` [T-3] @research_agent``: the task and agent a line belongs to."""
    text = Text()
    if task_id:
        text.append(f" [{task_id}]", "grey50")
    if agent:
        text.append(f" @{agent}", "grey62")
    return text


def span_title(kind: str | None, name: str | None, model: str | None, span_id: str) -> Text:
    """``agent research_agent``, ``model gpt-4o``, ``tool search`` or a span's name."""
    kind = kind or "span"
    word = _SPAN_WORD.get(kind, kind)
    title = model if kind == "llm" and model else (name or f"#{call_id(span_id)}")
    style = _SPAN_STYLE.get(kind, "bold")
    return Text.assemble((f"{word} " if word else "", "grey70"), (title, style))


def _body(event: ev.StreamEvent, c: LineContext) -> Text | None:
    style = _KIND_STYLE.get(event.type, "")
    agent = c.agent
    match event:
        case ev.TranscriptEntryEvent(entry=entry):
            return Text.assemble(
                ("✎ ", style),
                (entry.instance_id, "bold"),
                " ",
                (f"{entry.entry_type}:", "grey70"),
                " ",
                entry.summary,
                _where(entry.task_id or c.task_id, None if agent == entry.instance_id else agent),
            )
        case ev.ToolStartEvent():
            return Text.assemble(
                ("▶ ", style),
                (call_label(event.tool, event.tool_use_id), "bold cyan"),
                " ",
                event.input_summary,
                _where(c.task_id, agent),
            )
        case ev.ToolEndEvent():
            end_style = _TOOL_END_STYLE.get(event.result_status, style)
            text = Text.assemble(
                ("■ ", end_style),
                (call_label(c.name, event.tool_use_id), "bold cyan"),
                " ",
                (event.result_status, end_style),
                " ",
                (format_duration(event.duration_ms), "grey70"),
                _where(c.task_id, agent),
            )
            if event.output_summary:
                text.append(f" — {event.output_summary}", "red" if event.is_error else "")
            return text
        case ev.ToolOutputEvent():
            label = call_label(c.name, event.tool_use_id)
            lines = event.chunk.rstrip("\n").split("\n")
            text = Text()
            for i, line in enumerate(lines):
                if i:
                    text.append("\n" + " " * (_INDENT + len(_STEP) * c.depth))
                text.append("  ")
                text.append(label, "grey50")
                if event.is_stderr:
                    text.append(" │ ", "red")
                    text.append("stderr ", "bold red")
                    text.append(line, "red")
                else:
                    text.append(" │ ", "grey50")
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
                _where(event.task_id, agent),
                (f" · pass rate {event.running_pass_rate:.0%}", "grey70"),
            )
        case ev.SkillStartEvent():
            return Text.assemble(
                ("◆ skill ", style),
                (event.skill_name, "bold magenta"),
                (f" ({event.skill_file}:{event.line_number})", "grey50"),
                _where(c.task_id, agent),
            )
        case ev.SkillEndEvent():
            return Text.assemble(
                ("◇ skill ", style),
                (event.skill_name, "bold magenta"),
                " ",
                (event.status, STATUS_STYLE.get(event.status, "")),
                " ",
                (format_duration(event.duration_ms), "grey70"),
                _where(c.task_id, agent),
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
                    _where(entry.task_id, agent),
                )
            )
            return text
        case ev.WaveStatusEvent():
            text = Text.assemble(
                (f"≋ wave {event.wave_number} ", style),
                (event.status, STATUS_STYLE.get(event.status, "")),
                f" {event.completed_count}/{event.task_count} done",
            )
            if event.failed_count:
                text.append(f", {event.failed_count} failed", "bold red")
            return text
        case ev.ExecutionStatusEvent():
            text = Text.assemble(
                ("● execution ", style), (event.status, STATUS_STYLE.get(event.status, "bold"))
            )
            if event.message:
                text.append(f": {event.message}")
            if tokens := format_tokens(event.usage):
                text.append(f" · {tokens}", "grey70")
            if event.output:
                text.append(f" — {one_line(event.output)}")
            return text
        case ev.SpanStartEvent():
            text = Text.assemble(
                ("▶ ", style), span_title(event.kind, event.name, event.model, event.span_id)
            )
            text.append_text(_where(c.task_id, None if agent == event.name else agent))
            return text
        case ev.SpanEndEvent():
            kind = event.kind or c.kind
            name = event.name or c.name
            state_style = STATUS_STYLE.get(event.state, "")
            text = Text.assemble(
                ("■ ", state_style or style),
                span_title(kind, name, event.model, event.span_id),
                " ",
                (event.state, state_style),
            )
            if event.duration_ms is not None:
                text.append(f" {format_duration(event.duration_ms)}", "grey70")
            if tokens := format_tokens(event.usage):
                text.append(f" · {tokens}", "grey70")
            text.append_text(_where(c.task_id, None if agent == name else agent))
            if event.error:
                text.append(f" — {one_line(event.error)}", "red")
            elif event.output:
                text.append(f" — {one_line(event.output)}")
            return text
        case ev.WatchAlertEvent():
            alert_style = _ALERT_STYLE.get(event.alert, "yellow")
            text = Text.assemble(("⚠ ", alert_style), (event.alert, alert_style), " ")
            if event.tool_use_id is not None:
                text.append(call_label(c.name, event.tool_use_id), "bold cyan")
                text.append(" ")
            elif c.name is not None and event.span_id is not None:
                text.append_text(span_title(c.kind, c.name, None, event.span_id))
                text.append(" ")
            text.append(f"— {event.message}")
            text.append_text(_where(c.task_id, agent))
            return text
        case ev.WatchClearEvent():
            return Text.assemble(("✓ clear ", "green"), f"— {event.message}", _where(None, agent))
        case _:  # heartbeats are folded: see render_heartbeat
            return None


def render_event(
    event: ev.StreamEvent, *, local_time: bool = True, context: LineContext | None = None
) -> Text | None:
    """One line for ``event`` (tool output: one per output line); None for heartbeats.

    Columns: time (``HH:MM:SS.mmm``), the execution (shortened), then, indented by the
    span's depth, a glyph and the event's substance in the colour of its kind, and the
    task (``[T-3]``) and agent (``@name``) it belongs to. ``context`` (from
    :meth:`SpanBook.context`) gives the depth, and what the event itself does not say:
    the tool a ``tool:end`` ends, its task, its agent. Heartbeats return None: tail shows
    :func:`render_heartbeat` only when an agent's status changes.
    """
    if context is None:  # what the event says of itself
        book = SpanBook()
        book.learn(event)
        context = book.context(event)
    c = context
    body = _body(event, c)
    if body is None:
        return None
    return _prefix(event, local_time) + Text(_STEP * c.depth) + body


def render_heartbeat(event: ev.AgentHeartbeatEvent, *, local_time: bool = True) -> Text:
    """The line for an agent whose status (or current task) changed."""
    body = Text.assemble(
        ("♥ ", _KIND_STYLE[event.type]),
        (event.instance_id, "bold"),
        " ",
        (event.status, STATUS_STYLE.get(event.status, "")),
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
