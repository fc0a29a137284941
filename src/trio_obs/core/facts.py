"""The one table of event facts (DESIGN.md §6): what each stream event type is.

Per type: its topic, its role in a span (``opens``, ``closes``, ``content`` or
``status``), the kind of span it opens or closes (``tool``, ``skill``, or read from the
event for ``span:*``), where its span id, task id, tool name and agent are read from
(wire paths, ``entry.taskId``), and when it is an error or needs action (rules: a
wire path and the values that make it so). The ledger, resume, the Redis codec, ``tail``
and the page read it; the page gets it as ``/static/facts.js``, generated from this
table by :func:`facts_js` (never a hand copy).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import attrs

if TYPE_CHECKING:
    from . import events as ev

SpanRole: TypeAlias = Literal["opens", "closes", "content", "status"]
Rule: TypeAlias = tuple[str, tuple[Any, ...]]
"""A wire path and the values that make the rule hold (``("resultStatus", ("error",))``)."""


@attrs.frozen(kw_only=True)
class Fact:
    """What one stream event type is (one row of :data:`FACTS`)."""

    topic: str
    role: SpanRole
    span_kind: str | None = None
    """The kind of span it opens or closes; None: read from the event (``kind``)."""
    span_id: str = "spanId"
    """The wire path of the span it opens, closes or belongs to."""
    task_id: str | None = None
    """The wire path of the task the event names itself (None: it names none)."""
    tool: str | None = None
    """The wire path of the tool name it carries (``tool:start``)."""
    agent: str = "agent"
    error: tuple[Rule, ...] = ()
    """It is an error when any rule holds."""
    action: tuple[Rule, ...] = ()
    """It needs action (an alert) when any rule holds."""


_BAD: Final = ("error", "failed", "fail", "blocked", "critical")
_FAILED: Final = (("status", _BAD),)

FACTS: Final[dict[str, Fact]] = {
    "transcript:entry": Fact(
        topic="transcript", role="content", task_id="entry.taskId",
        error=(("entry.entryType", ("error",)),),
    ),
    "tool:start": Fact(
        topic="tools", role="opens", span_kind="tool", span_id="toolUseId",
        task_id="taskId", tool="tool",
    ),
    "tool:end": Fact(
        topic="tools", role="closes", span_kind="tool", span_id="toolUseId",
        error=(("resultStatus", _BAD), ("isError", (True,))),
        action=(("resultStatus", ("error", "blocked")),),
    ),
    "tool:output": Fact(topic="tools", role="content", span_kind="tool", span_id="toolUseId"),
    "assertion:result": Fact(
        topic="assertions", role="content", task_id="taskId",
        error=(("assertion.result", ("fail",)),), action=(("assertion.result", ("fail",)),),
    ),
    "skill:start": Fact(
        topic="skills", role="opens", span_kind="skill", span_id="skillTraceId",
        task_id="taskId",
    ),
    "skill:end": Fact(
        topic="skills", role="closes", span_kind="skill", span_id="skillTraceId", error=_FAILED,
    ),
    "messagebus:event": Fact(
        topic="messagebus", role="content", task_id="entry.taskId",
        error=(("entry.severity", _BAD), ("requiresAction", (True,))),
        action=(("requiresAction", (True,)),),
    ),
    "wave:status": Fact(topic="waves", role="content", error=_FAILED),
    "agent:heartbeat": Fact(
        topic="agents", role="content", task_id="currentTaskId", error=_FAILED
    ),
    "execution:status": Fact(
        topic="execution", role="status", error=_FAILED, action=(("status", ("failed",)),),
    ),
    "span:start": Fact(topic="spans", role="opens", task_id="taskId"),
    "span:end": Fact(
        topic="spans", role="closes", task_id="taskId", error=(("state", ("error",)),)
    ),
    "watch:alert": Fact(
        topic="alerts", role="content", action=(("alert", ("lost", "slow", "idle")),),
    ),
    "watch:clear": Fact(topic="alerts", role="content"),
}  # fmt: skip
"""Every stream event type's facts, by its ``type`` (the types of ``events.STREAM_EVENT_TYPES``)."""

TOPIC_OF_TYPE: Final[dict[str, str]] = {t: f.topic for t, f in FACTS.items()}
"""Which topic each stream event type belongs to (the plan's OBS-602; ``spans``: SPEC §12;
``alerts``: SPEC §13)."""

# --------------------------------------------------------------------------- wire dicts


def _at(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def holds(rules: tuple[Rule, ...], data: Mapping[str, Any]) -> bool:
    """Whether one of ``rules`` (a fact's ``error`` or ``action``) holds for a wire event."""
    for path, values in rules:
        value = _at(data, path)
        # `True in ("x",)` is False, but `1 in (True,)` is True: compare types too.
        if any(value == v and type(value) is type(v) for v in values):
            return True
    return False


def fact_of(data: Mapping[str, Any]) -> Fact | None:
    """The facts of a wire event (None for a type this table does not know)."""
    kind = data.get("type")
    return FACTS.get(kind) if isinstance(kind, str) else None


def is_error(data: Mapping[str, Any]) -> bool:
    """Whether a wire event is an error (shown in red; counted in ``totals.errors``)."""
    fact = fact_of(data)
    return fact is not None and holds(fact.error, data)


def needs_action(data: Mapping[str, Any]) -> bool:
    """Whether a wire event is an alert someone should act on."""
    fact = fact_of(data)
    return fact is not None and holds(fact.action, data)


# --------------------------------------------------------------------------- typed events


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


def _getter(path: str | None) -> Callable[[Any], Any]:
    if path is None:
        return lambda _: None
    get = operator.attrgetter(".".join(_snake(part) for part in path.split(".")))

    def read(event: Any) -> Any:
        try:
            return get(event)
        except AttributeError:
            return None

    return read


@attrs.frozen
class _Readers:
    span_id: Callable[[Any], str | None]
    task_id: Callable[[Any], str | None]
    tool: Callable[[Any], str | None]
    agent: Callable[[Any], str | None]


_READERS: Final[dict[str, _Readers]] = {
    t: _Readers(_getter(f.span_id), _getter(f.task_id), _getter(f.tool), _getter(f.agent))
    for t, f in FACTS.items()
}


def _typed_rule(path: str, values: tuple[Any, ...]) -> tuple[Callable[[Any], Any], frozenset[Any]]:
    # Strings match as strings, True only as True (`1 == True`, so they are kept apart).
    return _getter(path), frozenset(v if type(v) is str else (True, v) for v in values)


_TYPED_ERRORS: Final = {
    t: tuple(_typed_rule(path, values) for path, values in f.error) for t, f in FACTS.items()
}


def is_error_event(event: ev.StreamEvent) -> bool:
    """:func:`is_error` of a typed event (the same rules, read from its attributes)."""
    for read, values in _TYPED_ERRORS[event.type]:
        value = read(event)
        kind = type(value)
        if (kind is str and value in values) or (kind is bool and (True, value) in values):
            return True
    return False


ROLE_OF: Final[dict[str, str]] = {kind: fact.role for kind, fact in FACTS.items()}
"""Each type's role (``FACTS[kind].role`` without the attribute read, for per-event loops)."""


def span_id_of(event: ev.StreamEvent) -> str | None:
    """The span ``event`` opens, closes or belongs to (None: none named)."""
    return _READERS[event.type].span_id(event)


def own_task_id(event: ev.StreamEvent) -> str | None:
    """The task an event names itself (not the one resolved from a tool use or skill)."""
    return _READERS[event.type].task_id(event)


def tool_of(event: ev.StreamEvent) -> str | None:
    """The tool name an event carries (``tool:start``)."""
    return _READERS[event.type].tool(event)


def span_kind_of(event: ev.StreamEvent) -> str | None:
    """The kind of span an opening or closing event is about (None if it does not say)."""
    fact = FACTS[event.type]
    if fact.span_kind is not None:
        return fact.span_kind
    return getattr(event, "kind", None) if fact.role in ("opens", "closes") else None


def role_of(event: ev.StreamEvent) -> SpanRole:
    """The event's role in its span."""
    return FACTS[event.type].role


# --------------------------------------------------------------------------- the page

_JS_FUNCTIONS: Final = """
const at = (ev, path) => path.split(".").reduce((v, k) => (v == null ? undefined : v[k]), ev);
const holds = (rules, ev) => rules.some(([path, values]) => values.includes(at(ev, path)));
export const TOPIC_OF_TYPE = Object.fromEntries(
  Object.entries(FACTS).map(([type, f]) => [type, f.topic]));
export const TOPICS = [...new Set(Object.values(TOPIC_OF_TYPE))];
export const factOf = (ev) => FACTS[ev?.type];
export const topicOf = (ev) => factOf(ev)?.topic ?? "other";
export const isError = (ev) => { const f = factOf(ev); return !!f && holds(f.error, ev); };
export const needsAction = (ev) => { const f = factOf(ev); return !!f && holds(f.action, ev); };
export const roleOf = (ev) => factOf(ev)?.role ?? "content";
export const spanIdOf = (ev) => {
  const f = factOf(ev); return f ? at(ev, f.spanId) ?? null : null;
};
export const taskIdOf = (ev) => {
  const f = factOf(ev); return f && f.taskId ? at(ev, f.taskId) ?? null : null;
};
export const spanKindOf = (ev) => {
  const f = factOf(ev);
  if (!f) return null;
  return f.spanKind ?? (f.role === "opens" || f.role === "closes" ? ev.kind ?? null : null);
};
"""


def facts_json() -> dict[str, Any]:
    """The table as JSON (camelCase keys, rules as ``[path, [values]]``)."""
    return {
        t: {
            "topic": f.topic,
            "role": f.role,
            "spanKind": f.span_kind,
            "spanId": f.span_id,
            "taskId": f.task_id,
            "tool": f.tool,
            "agent": f.agent,
            "error": [[p, list(v)] for p, v in f.error],
            "action": [[p, list(v)] for p, v in f.action],
        }
        for t, f in FACTS.items()
    }


def facts_js() -> str:
    """``/static/facts.js``: the table and the functions that read it, as an ES module."""
    rows = (f" {json.dumps(t)}: {json.dumps(f, sort_keys=True)}" for t, f in facts_json().items())
    table = "{\n" + ",\n".join(rows) + "\n}"
    return (
        "// GENERATED by the server from trio_obs.core.facts (DESIGN.md §6): do not edit.\n"
        f"export const FACTS = {table};\n{_JS_FUNCTIONS}"
    )


_NAME_FIELD: Final = {
    "tool:start": "tool", "skill:start": "skill_name", "skill:end": "skill_name",
    "span:start": "name", "span:end": "name",
}  # fmt: skip


def span_name_of(event: ev.StreamEvent) -> str:
    """The name an opening or closing gives its span (tool, skill or span name; else "")."""
    field = _NAME_FIELD.get(event.type)
    return (getattr(event, field) or "") if field is not None else ""
