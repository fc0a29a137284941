"""Reading OTLP messages for :mod:`trio_obs.core.otlp`: attribute values as bounded JSON,
the GenAI operation of a span, a view of one span with what is derived from it once,
and the checks on its ids. Pure: protobuf messages in, plain data out.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

import attrs
import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from . import events as ev
from .protocol import Severity

AGENT: Final = "invoke_agent"
TOOL: Final = "execute_tool"
LLM_OPERATIONS: Final = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
OPERATIONS: Final = LLM_OPERATIONS | {
    AGENT, TOOL, "create_agent", "invoke_workflow", "plan", "retrieval", "create_memory",
    "create_memory_store", "delete_memory", "delete_memory_store", "search_memory",
    "update_memory", "upsert_memory",
}  # fmt: skip
"""The GenAI operation names (``gen_ai.operation.name``), also recognised as a span
name's first word when the attribute is missing."""

MAX_SUMMARY: Final = 500
"""Characters of a summary (tool arguments and results, log bodies) at most."""
MAX_STRING: Final = 2000
"""Characters of one attribute string kept in ``details``/``payload``."""
MAX_ITEMS: Final = 100
"""Items of one attribute array kept in ``details``/``payload``."""
MAX_DEPTH: Final = 8
"""Levels of nested attribute values kept; deeper ones become their JSON text."""

_ERROR: Final = Status.STATUS_CODE_ERROR
_SEVERITIES: Final[tuple[tuple[int, Severity], ...]] = (
    (21, "critical"), (17, "error"), (13, "warning"), (9, "info"), (1, "debug"),
)  # fmt: skip
"""OTLP severity numbers (the lowest of each range) and the message-bus severity they give."""
_SEVERITY_WORDS: Final[dict[str, Severity]] = {
    "fatal": "critical", "crit": "critical", "critical": "critical", "error": "error",
    "err": "error", "warn": "warning", "warning": "warning", "info": "info", "debug": "debug",
    "trace": "debug",
}  # fmt: skip
"""``severity_text`` words, for records that carry no severity number."""

SpanRef: TypeAlias = tuple[str, str]
"""(trace id, span id), in lower-case hex."""
JSON: TypeAlias = Any


_SECONDS: dict[int, str | None] = {}
"""Recent whole seconds as ISO-8601 up to the dot (a request's spans share a few): a
datetime per timestamp was a tenth of the translation."""
_SECONDS_KEPT: Final = 4096


def iso_of_nanos(nanos: int) -> str | None:
    """A Unix time in nanoseconds as ISO-8601 UTC with milliseconds; None when unset (0)."""
    if nanos <= 0:
        return None
    second = nanos // 1_000_000_000
    head = _SECONDS.get(second, "")
    if head == "":
        try:
            moment = datetime.fromtimestamp(second, UTC)
        except (OverflowError, OSError, ValueError):
            head = None
        else:
            head = ev.iso_utc(moment)[:-4]  # "...T10:30:00." (the stored form, to the dot)
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        _SECONDS[second] = head
    if head is None:
        return None
    return f"{head}{nanos // 1_000_000 % 1000:03d}Z"


def value_of(value: AnyValue, depth: int = 0) -> JSON:
    """An OTLP ``AnyValue`` as plain JSON data (bytes as base64)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "array_value":
        return [value_of(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values, depth + 1)
    return None


def attributes_of(pairs: Iterable[KeyValue], depth: int = 0) -> dict[str, JSON]:
    """OTLP key-value pairs as a dict of plain JSON data."""
    return {kv.key: value_of(kv.value, depth) for kv in pairs}


def trimmed(value: JSON, depth: int = 0) -> JSON:
    """``value`` within the bounds of ``details``: strings, arrays and nesting cut short."""
    if isinstance(value, str):
        return cut(value, MAX_STRING)
    if isinstance(value, dict) and depth < MAX_DEPTH:
        # The usual attributes: flat, short strings and numbers, kept as they are.
        plain = True
        for v in value.values():
            if isinstance(v, str):
                if len(v) > MAX_STRING:
                    plain = False
                    break
            elif isinstance(v, list | dict):
                plain = False
                break
        if plain:
            return {str(k): v for k, v in value.items()}
    if isinstance(value, list | dict) and depth >= MAX_DEPTH:
        return cut(orjson.dumps(value).decode(), MAX_STRING)
    if isinstance(value, list):
        return [trimmed(v, depth + 1) for v in value[:MAX_ITEMS]]
    if isinstance(value, dict):
        return {str(k): trimmed(v, depth + 1) for k, v in value.items()}
    return value


def cut(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters long, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def summary_of(value: JSON) -> str:
    """A one-line summary of an attribute value: a string as it is, anything else as JSON."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return cut(" ".join(text.split()), MAX_SUMMARY)


def text_of(value: JSON) -> str | None:
    """``value`` if it is a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def number_of(value: JSON) -> int | float | None:
    """``value`` if it is a number (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def output_text_of(messages: JSON) -> str | None:
    """The first text (or the tools called) of ``gen_ai.output.messages``, if it has any."""
    if isinstance(messages, str):
        try:
            messages = orjson.loads(messages)
        except orjson.JSONDecodeError:
            return summary_of(messages) or None
    if not isinstance(messages, list):
        return None
    calls: list[str] = []
    for message in messages:
        parts = message.get("parts") if isinstance(message, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and text_of(part.get("content")):
                return summary_of(part["content"])
            if part.get("type") == "tool_call" and text_of(part.get("name")):
                calls.append(part["name"])
    return f"calls {', '.join(calls)}" if calls else None


def operation_of(name: str, attributes: Mapping[str, JSON]) -> str | None:
    """The GenAI operation of a span: ``gen_ai.operation.name``, else its name's first word."""
    named = text_of(attributes.get("gen_ai.operation.name"))
    if named:
        return named
    first = name.split(" ", 1)[0]
    return first if first in OPERATIONS else None


def after_prefix(name: str, prefix: str) -> str | None:
    """What follows ``prefix`` in ``name`` (``execute_tool get_weather`` → ``get_weather``)."""
    rest = name[len(prefix) :].strip() if name.startswith(prefix) else ""
    return rest or None


def severity_of(number: int, text: str) -> Severity:
    """The message-bus severity of an OTLP severity number, else of its text."""
    for lowest, severity in _SEVERITIES:
        if number >= lowest:
            return severity
    return _SEVERITY_WORDS.get(text.strip().lower(), "info")


@attrs.frozen
class ResourceView:
    """What a span or record takes from its resource."""

    service: str | None

    @classmethod
    def of(cls, pairs: Iterable[KeyValue]) -> ResourceView:
        return cls(text_of(attributes_of(pairs).get("service.name")))


@attrs.frozen
class SpanView:
    """One span being translated, with what is derived from it once."""

    span: Span
    trace_id: str
    span_id: str
    attributes: dict[str, JSON]
    resource: ResourceView
    operation: str | None

    @property
    def ref(self) -> SpanRef:
        return (self.trace_id, self.span_id)

    @property
    def parent_ref(self) -> SpanRef | None:
        return (self.trace_id, self.span.parent_span_id.hex()) if self.span.parent_span_id else None

    @property
    def start(self) -> int:
        return self.span.start_time_unix_nano

    @property
    def end(self) -> int:
        return self.span.end_time_unix_nano

    @property
    def failed(self) -> bool:
        return self.span.status.code == _ERROR

    @property
    def duration_ms(self) -> float:
        if not (self.start and self.end):
            return 0.0
        return round(max(0, self.end - self.start) / 1e6, 3)


def agent_name_of(span_name: str, attributes: Mapping[str, JSON]) -> str:
    """An agent span's agent: ``gen_ai.agent.name``, else its name after ``invoke_agent``."""
    return text_of(attributes.get("gen_ai.agent.name")) or after_prefix(span_name, AGENT) or "agent"


def bad_ids(trace_id: bytes, span_id: bytes, parent_span_id: bytes) -> str | None:
    """Why a span's ids are refused (OTLP: 16-byte trace, 8-byte span ids), or None."""
    if len(trace_id) != 16 or not any(trace_id):
        return f"its trace id has {len(trace_id)} bytes; it needs 16, not all zero"
    if len(span_id) != 8 or not any(span_id):
        return f"its span id has {len(span_id)} bytes; it needs 8, not all zero"
    if parent_span_id and len(parent_span_id) != 8:
        return f"its parent span id has {len(parent_span_id)} bytes; it needs 8 (or none)"
    return None


def bad_log_ids(trace_id: bytes, span_id: bytes) -> str | None:
    """Why a log record's ids are refused (both are optional there), or None."""
    if trace_id and len(trace_id) != 16:
        return f"its trace id has {len(trace_id)} bytes; it needs 16 (or none)"
    if span_id and len(span_id) != 8:
        return f"its span id has {len(span_id)} bytes; it needs 8 (or none)"
    return None
