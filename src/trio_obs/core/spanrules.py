"""One start, one end (SPEC §12): the rules applied per span and per execution.

Written once, here, as small pure functions over what the store keeps of a span (a
:class:`SpanRecord`, one row of SQLite's ``spans``) and of an execution (the counters
of its stream): the ledger applies them while staging, and the Redis publish script
mirrors them line for line. Per (execution, span id):

- the first opening is stored; a later one (a copy, a retry, a start after the end) is
  dropped, silently (the answer gives the seq of the event it repeats);
- the first closing is stored, later ones dropped, except after a closing in state
  ``lost`` (the watchdog's, provisional): a later real closing is still stored;
- a closing for a span never opened is stored (plan producers do that);
- ``agent``, when absent, is filled: an agent span's own name, else the agent of the
  span it belongs to (content, closings) or of its parent (openings), where known.

Per execution (its status events that carry a ``spanId``, i.e. the root span's, which
OTLP ingest always sets: the root span's id, or the execution id while the root has
not arrived): ``started`` is stored once; ``completed``/``failed`` while spans of the
execution are open is held, and stored (with the closing's timestamp, its seq then)
right after the closing of the last open span. Statuses without ``spanId`` (the plan's
JSON) are stored as sent.
"""

from __future__ import annotations

from typing import Final

import attrs

from . import events as ev

LOST: Final = "lost"
"""The provisional closing state (the watchdog's judgement, SPEC §13)."""

_SKILL_STATE: Final = {"success": "done", "partial": "done", "failed": "error"}


@attrs.define(slots=True)
class SpanRecord:
    """What the store keeps of one span (execution id and span id are its key)."""

    kind: str = ""
    """``tool``, ``skill``, ``agent``, ``llm``...; empty when only a closing said nothing."""
    name: str = ""
    """The tool or skill name, the span's title."""
    task_id: str | None = None
    parent_span_id: str | None = None
    agent: str | None = None
    """The agent it belongs to (its own name for an agent span)."""
    model: str | None = None
    """A model call's model, as its opening said it."""
    open_seq: int = 0
    """The seq of its stored opening (0: none)."""
    close_seq: int = 0
    """The seq of its stored closing (0: none)."""
    close_state: str | None = None

    def copy(self) -> SpanRecord:
        """A copy to change (staged records never change the committed ones)."""
        return SpanRecord(
            self.kind, self.name, self.task_id, self.parent_span_id, self.agent, self.model,
            self.open_seq, self.close_seq, self.close_state,
        )  # fmt: skip


def takes_opening(span: SpanRecord | None) -> bool:
    """Whether an opening of ``span`` is stored: only for a span neither opened nor closed."""
    return span is None or (span.open_seq == 0 and span.close_seq == 0)


def takes_closing(span: SpanRecord | None, state: str) -> bool:
    """Whether a closing in ``state`` is stored: the first, or a real one after ``lost``."""
    return span is None or span.close_seq == 0 or (span.close_state == LOST and state != LOST)


def closes_open_span(span: SpanRecord | None) -> bool:
    """Whether a stored closing of ``span`` ends an open span (counted as open before)."""
    return span is not None and span.open_seq > 0 and span.close_seq == 0


def repeated_seq(span: SpanRecord, opening: bool) -> int:
    """The seq of the stored event a dropped opening (or closing) repeats."""
    if opening:
        return span.open_seq or span.close_seq
    return span.close_seq


def closing_state(event: ev.StreamEvent) -> str:
    """The state a closing event gives its span (``done``, ``error``, ``blocked``, ``lost``)."""
    match event:
        case ev.ToolEndEvent():
            return event.result_status
        case ev.SkillEndEvent():
            return _SKILL_STATE.get(event.status, "done")
        case ev.SpanEndEvent():
            return event.state
        case _:
            return "done"


def own_agent(kind: str, name: str, parent: SpanRecord | None) -> str | None:
    """The agent of a span opened now: an agent's own name, else its parent's agent."""
    if kind == "agent":
        return name or None
    return parent.agent if parent is not None else None


def is_root_status(event: ev.StreamEvent) -> bool:
    """Whether an ``execution:status`` is the root span's (carries ``spanId``): the ones
    the execution rules apply to."""
    return isinstance(event, ev.ExecutionStatusEvent) and event.span_id is not None
