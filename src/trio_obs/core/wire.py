"""The one wire converter: typed objects <-> the exact wire JSON (SPEC §2, §3, §5).

One cattrs converter, configured once: camelCase keys, the ``type`` tag, absent
optional fields left out. Parsing foreign JSON gives a typed object or raises
:class:`~trio_obs.InvalidInput` carrying the code of SPEC §3 and a sentence. Every
JSON the project writes (events, client messages, summaries, answers) is made here.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import make_converter
from cattrs.v import format_exception

from . import events as ev
from .errors import InvalidInput
from .prices import Prices, cost
from .protocol import (
    INVALID_EVENT,
    INVALID_FILTER,
    INVALID_MESSAGE,
    INVALID_TOPIC,
    MAX_JSON_DEPTH,
    SEVERITIES,
    TOPICS,
    ErrorCode,
)
from .search import (
    FILTERS,
    SearchHit,
    SearchResult,
    TypedFilters,
    check_filters,
    compile_query,
)
from .times import EXAMPLE, TIME_FIELDS, utc_time

T = TypeVar("T")

_CAMEL_RE: Final = re.compile(r"_([a-z])")


def camel(name: str) -> str:
    """``tool_use_id`` -> ``toolUseId``."""
    return _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)


def _exactly(kind: type, name: str, *, optional: bool = False) -> Callable[[Any, type], Any]:
    """A hook that takes a JSON value of exactly ``kind`` (no ``"5"`` -> 5, no bool for int).

    On the ingest path: one call per field, and nothing else, when the value is right.
    """
    if kind is float:

        def number(value: Any, _: type) -> Any:
            cls = value.__class__
            if cls is float:
                return value
            if cls is int:
                return float(value)
            if value is None and optional:
                return None
            raise TypeError(f"expected {name}, got {type(value).__name__}")

        return number

    def structure(value: Any, _: type) -> Any:
        if value.__class__ is kind or (value is None and optional):
            return value
        raise TypeError(f"expected {name}, got {type(value).__name__}")

    return structure


_KNOWN_TIMES: Final = 256
"""Posted times each time hook remembers with their stored form (then it starts over)."""


def _time(*, optional: bool) -> Callable[[Any, type], str]:
    """A hook that takes an ISO-8601 date and time and gives its stored form (UTC, ...Z).

    ``optional``: an empty string passes (an event's time is stamped when it is stored).
    The last few times it read are remembered: the events of a batch share a few.
    """

    known: dict[str, str] = {}  # the times of a batch are mostly a few repeated ones

    def structure(value: Any, _: type) -> str:
        if value.__class__ is str:
            if optional and not value:
                return value
            utc = known.get(value)
            if utc is not None:
                return utc
            utc = utc_time(value)
            if utc is not None:
                if len(known) >= _KNOWN_TIMES:
                    known.clear()
                known[value] = utc
                return utc
            shown = repr(value) if len(value) <= 40 else f"{value[:32]!r}… ({len(value)} chars)"
        else:
            shown = type(value).__name__
        raise TypeError(f"expected an ISO-8601 date and time (e.g. {EXAMPLE}), got {shown}")

    return structure


_NESTED_LIMIT: Final = MAX_JSON_DEPTH - 3
"""Levels a free-form object (``details``, ``evidence``, ...) may nest: the body, the
event and its record take the first three of SPEC §6's 64."""


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects/arrays more than ``limit`` levels (iteratively)."""
    level: list[Any] = [value]
    depth = 0
    containers = (dict, list)
    while level:
        depth += 1
        if depth > limit:
            return True
        nested: list[Any] = []
        for item in level:  # plain loops: on the ingest path, for every free-form object
            if isinstance(item, dict):
                item = item.values()
            elif not isinstance(item, list):
                continue
            for v in item:
                if isinstance(v, containers):
                    nested.append(v)
        level = nested
    return False


def _structure_object(value: Any, _: type) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    if depth_exceeds(value, _NESTED_LIMIT):
        raise TypeError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _structure_metrics(value: Any, _: type) -> dict[str, float]:
    if not isinstance(value, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
    ):
        raise TypeError("expected an object of numbers")
    return {str(k): float(v) for k, v in value.items()}


def _structure_usage(value: Any, _: type) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
        v.__class__ is int and v >= 0 for v in value.values()
    ):
        raise TypeError("expected an object of non-negative integer token counts")
    return {str(k): v for k, v in value.items()}


def _make_converter(*, detailed: bool = True, posted: bool = False) -> cattrs.Converter:
    """The converter; ``posted``: for producers' events, whose times are checked and made UTC."""
    conv = make_converter(detailed_validation=detailed)
    # Foreign JSON must have the right JSON types: no silent "5" -> 5 coercion.
    for kind, name in ((str, "a string"), (int, "an integer"), (float, "a number"),
                       (bool, "a boolean")):  # fmt: skip
        conv.register_structure_hook(kind, _exactly(kind, name))
        conv.register_structure_hook(kind | None, _exactly(kind, name, optional=True))
    conv.register_structure_hook_func(lambda t: t == ev.JSONDict, _structure_object)
    conv.register_structure_hook_func(
        lambda t: set(typing.get_args(t)) == {ev.JSONDict, type(None)},
        lambda v, t: None if v is None else _structure_object(v, t),
    )
    conv.register_structure_hook_func(lambda t: t == dict[str, float], _structure_metrics)
    conv.register_structure_hook_func(lambda t: t == ev.Usage, _structure_usage)
    conv.register_structure_hook_func(
        lambda t: set(typing.get_args(t)) == {ev.Usage, type(None)},
        lambda v, t: None if v is None else _structure_usage(v, t),
    )

    wire_classes: list[type] = [
        ev.TranscriptEntry,
        ev.AssertionResult,
        ev.MessageBusLogEntry,
        *ev.STREAM_EVENT_TYPES.values(),
        ev.ConnectedEvent,
        ev.ResetEvent,
        ev.SubscribedEvent,
        ev.UnsubscribedEvent,
        ev.ErrorEvent,
        ev.PongEvent,
    ]
    for cls in wire_classes:
        # Absent optional fields (None) and an unset timestamp/execution ("") are left out.
        overrides: dict[str, Any] = {
            a.name: override(
                rename=camel(a.name),
                omit_if_default=a.default in (None, ""),
                struct_hook=_time(optional=a.default == "")
                if posted and a.name in TIME_FIELDS
                else None,
            )
            for a in attrs.fields(cls)
        }
        conv.register_unstructure_hook(
            cls,
            make_dict_unstructure_fn(cls, conv, _cattrs_include_init_false=True, **overrides),
        )
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, **overrides))
    for cls in (SearchHit, SearchResult):
        fields: dict[str, Any] = {
            a.name: override(rename=camel(a.name), omit_if_default=a.name == "note")
            for a in attrs.fields(cls)
        }
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **fields))
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, **fields))
    summary: dict[str, Any] = {
        a.name: override(rename=camel(a.name), omit=a.name == "models")
        for a in attrs.fields(ev.ExecutionSummary)
    }
    conv.register_unstructure_hook(
        ev.ExecutionSummary,
        make_dict_unstructure_fn(
            ev.ExecutionSummary, conv, _cattrs_include_init_false=False, **summary
        ),
    )
    return conv


converter: Final = _make_converter()
# Structuring foreign JSON is on the ingest path: the fast converter does it, and only
# a failure is structured again by the detailed one, to explain what was wrong. Posted
# events have their own pair, which also checks their times (events the server sent
# are taken as they are, so a client can still read what an older server stored).
_fast: Final = _make_converter(detailed=False)
_fast_posted: Final = _make_converter(detailed=False, posted=True)


# --------------------------------------------------------------------------- plain structuring

_INLINE_CHECKS: Final[dict[Any, list[str]]] = {
    str: ["if v.__class__ is not str: raise TypeError"],
    str | None: ["if v is not None and v.__class__ is not str: raise TypeError"],
    int: ["if v.__class__ is not int: raise TypeError"],
    int | None: ["if v is not None and v.__class__ is not int: raise TypeError"],
    bool: ["if v.__class__ is not bool: raise TypeError"],
    bool | None: ["if v is not None and v.__class__ is not bool: raise TypeError"],
    float: ["c = v.__class__", "if c is int: v = float(v)", "elif c is not float: raise TypeError"],
    float | None: [
        "c = v.__class__",
        "if c is int: v = float(v)",
        "elif c is not float and v is not None: raise TypeError",
    ],
}


def _settable(cls: type) -> dict[str, Callable[[Any, Any], None]]:
    """The slot setters of a frozen attrs class that ``__init__`` would do nothing but set
    (no converter, no factory, no post-init): a generated function then makes its instance
    without the keyword call and attrs' per-field ``object.__setattr__`` (issue 25);
    empty when it cannot."""
    setters: dict[str, Callable[[Any, Any], None]] = {}
    for a in attrs.fields(cls):
        slot = cls.__dict__.get(a.name)
        if (
            not isinstance(slot, types.MemberDescriptorType)
            or a.converter is not None
            or isinstance(a.default, attrs.Factory)  # type: ignore[arg-type]
        ):
            return {}
        setters[a.name] = slot.__set__
    if hasattr(cls, "__attrs_post_init__") or hasattr(cls, "__attrs_pre_init__"):
        return {}
    return setters


def _plain_structure_fn(
    cls: type, conv: cattrs.Converter, posted: bool, nested: Mapping[type, Callable[[Any], Any]]
) -> Callable[[Any], Any]:
    """``conv.structure(o, cls)`` as one generated function with the common checks inline.

    For the ingest path (issue 25): JSON types checked in place instead of by a hook call per
    field; literals by set membership; records by their own function; anything else
    (times, free-form objects, lists) by the very hook the converter uses. It raises on
    anything it does not take, and then the converter decides: it never accepts what
    the converter refuses, and what it accepts is equal to the converter's (a test holds it).
    The instance is made by setting its slots, then running its validators, as attrs'
    ``__init__`` does (see :func:`_settable`).
    """
    hints = typing.get_type_hints(cls)
    fields = attrs.fields(cls)
    direct = _settable(cls)
    scope: dict[str, Any] = {"cls": cls, "new": object.__new__}
    lines = ["def structure(o):", "    if o.__class__ is not dict: raise TypeError"]
    lines.append("    r = new(cls)" if direct else "    r = {}")
    for a in fields:
        if not a.init:
            if direct:
                scope[f"set_{a.name}"], scope[f"d_{a.name}"] = direct[a.name], a.default
                lines.append(f"    set_{a.name}(r, d_{a.name})")
            continue
        key, kind = camel(a.name), hints[a.name]
        args = [t for t in typing.get_args(kind) if t is not type(None)]
        optional = len(args) < len(typing.get_args(kind))
        record = next((t for t in (kind, *args) if t in nested), None)
        if posted and a.name in TIME_FIELDS:
            scope[f"h_{a.name}"] = _time(optional=a.default == "")
            check = [f"v = h_{a.name}(v, None)"]
        elif kind in _INLINE_CHECKS:
            check = _INLINE_CHECKS[kind]
        elif record is not None:
            scope[f"s_{a.name}"] = nested[record]
            call = f"v = s_{a.name}(v)"
            check = [f"if v is not None: {call}"] if optional else [call]
        elif typing.get_origin(kind) is Literal or (
            len(args) == 1 and typing.get_origin(args[0]) is Literal
        ):
            values = typing.get_args(args[0] if optional else kind)
            scope[f"l_{a.name}"] = frozenset(values)
            test = f"v not in l_{a.name}"
            check = [f"if {'v is not None and ' if optional else ''}{test}: raise TypeError"]
        else:
            scope[f"h_{a.name}"], scope[f"t_{a.name}"] = conv.get_structure_hook(kind), kind
            check = [f"v = h_{a.name}(v, t_{a.name})"]
        if a.default is attrs.NOTHING:
            body, indent = [f"    v = o[{key!r}]"], "    "
        else:
            body, indent = [f"    if {key!r} in o:", f"        v = o[{key!r}]"], "        "
        lines += body + [indent + c for c in check]
        if not direct:
            lines.append(f"{indent}r[{a.name!r}] = v")
            continue
        scope[f"set_{a.name}"] = direct[a.name]
        if a.default is attrs.NOTHING:
            lines.append(f"    set_{a.name}(r, v)")
        else:
            scope[f"d_{a.name}"] = a.default
            setter = f"set_{a.name}"
            lines += [f"        {setter}(r, v)", "    else:", f"        {setter}(r, d_{a.name})"]
    if direct:  # attrs runs the validators once every field is set: so do we
        for a in fields:
            if a.validator is not None:
                scope[f"va_{a.name}"], scope[f"at_{a.name}"] = a.validator, a
                lines.append(f"    va_{a.name}(r, at_{a.name}, r.{a.name})")
    lines.append("    return r" if direct else "    return cls(**r)")
    exec("\n".join(lines), scope)  # our own field names, read from attrs
    fn: Callable[[Any], Any] = scope["structure"]
    return fn


def _plain_structure_fns(
    conv: cattrs.Converter, posted: bool
) -> dict[type, Callable[[Any], ev.StreamEvent]]:
    fns: dict[type, Callable[[Any], Any]] = {}
    for record in (ev.TranscriptEntry, ev.AssertionResult, ev.MessageBusLogEntry):
        fns[record] = _plain_structure_fn(record, conv, posted, fns)
    return {
        cls: _plain_structure_fn(cls, conv, posted, fns) for cls in ev.STREAM_EVENT_TYPES.values()
    }


_PLAIN_STRUCTURE: Final = {
    posted: _plain_structure_fns(_fast_posted if posted else _fast, posted)
    for posted in (False, True)
}
"""Stream event classes' plain structuring, by ``posted``."""
POSTED_STRUCTURE: Final[Mapping[str, Callable[[Any], ev.StreamEvent]]] = {
    kind: _PLAIN_STRUCTURE[True][cls] for kind, cls in ev.STREAM_EVENT_TYPES.items()
}
"""A posted event's plain structuring by its ``type``, for a loop over a batch: it raises on
anything unusual, and :func:`decode_event` then takes the event, or says what is wrong;
``seq`` and ``pos`` it takes as they are (a producer's are dropped by the caller)."""


@functools.cache
def _explaining_posted() -> cattrs.Converter:
    return _make_converter(posted=True)  # built on the first refusal only


def _plain_unstructure_fn(cls: type, nested: Mapping[type, Callable[[Any], Any]]) -> Any:
    """The converter's unstructuring of ``cls`` as one generated function, for encoding only.

    Same keys, same order, same values as ``converter.unstructure`` (a test holds it), but
    one statement per field instead of a hook call per field: values of JSON types are
    handed to orjson as they are (not copied: the result is dumped at once, never kept),
    nested records by their own function.
    """
    hints = typing.get_type_hints(cls)
    lines = ["def unstructure(o):", "    d = {}"]
    scope: dict[str, Any] = {}
    fields = attrs.fields(cls)
    # cattrs's order: the fields always written, then those left out when at their default.
    for a in sorted(fields, key=lambda a: a.default in (None, "")):
        key, kind = camel(a.name), hints[a.name]
        record = next((t for t in (kind, *typing.get_args(kind)) if t in nested), None)
        value = f"o.{a.name}"
        if record is not None:
            scope[f"u_{a.name}"] = nested[record]
            value = f"u_{a.name}(v)"
        if a.default in (None, ""):
            test = "v is not None" if a.default is None else "v != ''"
            lines += [f"    v = o.{a.name}", f"    if {test}:", f"        d[{key!r}] = {value}"]
        elif record is not None:
            lines += [f"    v = o.{a.name}", f"    d[{key!r}] = {value}"]
        else:
            lines.append(f"    d[{key!r}] = {value}")
    lines.append("    return d")
    exec("\n".join(lines), scope)  # our own field names, read from attrs
    return scope["unstructure"]


def _plain_unstructure_fns() -> dict[type, Callable[[Any], dict[str, Any]]]:
    fns: dict[type, Callable[[Any], dict[str, Any]]] = {}
    for record in (ev.TranscriptEntry, ev.AssertionResult, ev.MessageBusLogEntry):
        fns[record] = _plain_unstructure_fn(record, fns)
    for cls in ev.STREAM_EVENT_TYPES.values():
        fns[cls] = _plain_unstructure_fn(cls, fns)
    return fns


_PLAIN: Final = _plain_unstructure_fns()
"""Stream events (the hot path's encoding) by class; any other object goes to cattrs."""


def encode(obj: ev.ServerEvent) -> bytes:
    """The wire JSON of a server event, as UTF-8 bytes."""
    plain = _PLAIN.get(obj.__class__)
    return orjson.dumps(plain(obj) if plain else converter.unstructure(obj))


def encode_kept(obj: ev.ServerEvent) -> bytes:
    """:func:`encode`, in a bytes object of exactly its size: for JSON that is kept.

    orjson's result keeps the whole buffer it grew: 4 KiB for a 400-byte event, about 8x
    the JSON for larger ones. An envelope keeps its JSON for as long as the logs of
    recent events hold it, so it keeps a copy (0.1 us) instead.
    """
    plain = _PLAIN.get(obj.__class__)
    return memoryview(orjson.dumps(plain(obj) if plain else converter.unstructure(obj))).tobytes()


def _describe(exc: BaseException, kind: type | None) -> str:
    # Our own hooks' TypeErrors already say what was wrong ("expected a string, got int").
    if isinstance(exc, TypeError) and str(exc).startswith(("expected ", "nested deeper")):
        return str(exc)
    return format_exception(exc, kind)


def _explain(exc: Exception) -> str:
    """One sentence out of a cattrs error, with wire (camelCase) paths."""
    if isinstance(exc, cattrs.BaseValidationError):
        lines = cattrs.transform_error(exc, format_exception=_describe)
    else:
        lines = [str(exc)]
    text = "; ".join(lines[:3])
    text = re.sub(
        r"unknown error \((.*?) not in literal typing\.Literal\[(.*?)\]\)",
        lambda m: f"{m.group(1)!r} is not one of {m.group(2)}",
        text,
    )
    return re.sub(r"(\$[\w.\[\]]*)", lambda m: camel(m.group(1)), text)


def loads_json(data: bytes | str, what: str, code: ErrorCode = INVALID_MESSAGE) -> Any:
    """Parsed JSON, or :class:`InvalidInput` with ``code`` saying that ``what`` is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON ({exc.msg})", code) from None


def event_name(index: int | None) -> str:
    """How messages name an event: ``event 3`` in a posted array, else ``event``."""
    return "event" if index is None else f"event {index}"


def decode_event(
    obj: Any, *, index: int | None = None, keep_seq: bool = False, posted: bool = False
) -> ev.StreamEvent:
    """A stream event out of one decoded JSON value (``index``: its place in a posted array).

    ``seq`` in the input is ignored, unless ``keep_seq`` (an event the server sent).
    ``posted``: a producer's event, whose times must be ISO-8601 and are made UTC.
    """
    if not isinstance(obj, dict):
        raise InvalidInput(f"{event_name(index)} must be a JSON object", INVALID_EVENT)
    kind = obj.get("type")
    cls = ev.STREAM_EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(sorted(ev.STREAM_EVENT_TYPES))
        raise InvalidInput(
            f"{event_name(index)} has unknown type {kind!r}; expected one of: {known}",
            INVALID_EVENT,
        )
    fields = obj  # "type" is not an input of the class; "seq" is dropped below
    if obj.get("timestamp", "") is None:
        fields = {k: v for k, v in obj.items() if k != "timestamp"}  # the ledger stamps it
    try:
        event: ev.StreamEvent = _PLAIN_STRUCTURE[posted][cls](fields)
    except Exception:  # anything unusual: the converter takes it, or says what is wrong
        event = _structure_or_explain(fields, cls, kind, index, posted)
    if not keep_seq:  # a producer does not choose its seq, nor its place in `all`
        if event.seq is not None:
            object.__setattr__(event, "seq", None)
        if event.pos is not None:
            object.__setattr__(event, "pos", None)
    return event


def _structure_or_explain(
    fields: Any, cls: type[ev.StreamEvent], kind: Any, index: int | None, posted: bool
) -> ev.StreamEvent:
    try:
        return (_fast_posted if posted else _fast).structure(fields, cls)
    except Exception:  # cattrs raises groups of arbitrary errors
        try:
            (_explaining_posted() if posted else converter).structure(fields, cls)
        except Exception as exc:
            reason = _explain(exc)
        else:  # pragma: no cover - both converters share every hook
            reason = "invalid"
        raise InvalidInput(
            f"{event_name(index)} ({kind}) is invalid: {reason}", INVALID_EVENT
        ) from None


def decode_stream_event(data: bytes | str) -> ev.StreamEvent:
    """A stream event from its wire JSON, keeping its ``seq`` (for clients and replay)."""
    return decode_event(loads_json(data, "the event"), keep_seq=True)


def decode_server_event(data: bytes | str) -> ev.ServerEvent:
    """Any server-sent message (stream, connection or pong) from its wire JSON."""
    obj = loads_json(data, "the message")
    kind = obj.get("type") if isinstance(obj, dict) else None
    cls = _SERVER_ONLY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return decode_stream_event(data)
    fields = {k: v for k, v in obj.items() if k != "type"}
    try:
        result: ev.ServerEvent = converter.structure(fields, cls)
    except Exception as exc:
        raise InvalidInput(f"{kind} message is invalid: {_explain(exc)}", INVALID_MESSAGE) from None
    return result


_SERVER_ONLY: Final[dict[str, type[ev.ServerEvent]]] = {
    "observability:connected": ev.ConnectedEvent,
    "observability:reset": ev.ResetEvent,
    "observability:subscribed": ev.SubscribedEvent,
    "observability:unsubscribed": ev.UnsubscribedEvent,
    "observability:error": ev.ErrorEvent,
    "pong": ev.PongEvent,
}

# --------------------------------------------------------------------------- client messages

_LIST_FILTERS: Final = {
    "entryTypes": "entry_types",
    "tools": "tools",
    "categories": "categories",
    "severity": "severity",
}
_TEXT_FILTERS: Final = {"taskId": "task_id", **{name: name for name in ("q", *FILTERS)}}
"""Filters that take one string (or null to clear): the task, and SPEC §14's live query."""


def parse_filters(raw: Any) -> ev.FilterUpdate:
    """The filter changes of a ``subscribe`` (wire keys), or :class:`InvalidInput`."""
    if raw is None:
        return ev.FilterUpdate()
    if not isinstance(raw, Mapping):
        raise InvalidInput("filters must be a JSON object", INVALID_FILTER)
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _TEXT_FILTERS:
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInput(
                    f"filter {key} must be a non-empty string or null", INVALID_FILTER
                )
            changes[_TEXT_FILTERS[key]] = value
        elif key in _LIST_FILTERS:
            if value is None or value == []:
                changes[_LIST_FILTERS[key]] = None
                continue
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidInput(f"filter {key} must be a list of strings", INVALID_FILTER)
            if key == "severity" and (bad := set(value) - SEVERITIES):
                raise InvalidInput(
                    f"filter severity has unknown value(s) {sorted(bad)}; "
                    f"allowed: {sorted(SEVERITIES)}",
                    INVALID_FILTER,
                )
            changes[_LIST_FILTERS[key]] = frozenset(value)
        else:
            allowed = ", ".join([*_TEXT_FILTERS, *_LIST_FILTERS])
            raise InvalidInput(f"unknown filter {key!r}; allowed: {allowed}", INVALID_FILTER)
    try:  # a live query is checked when it is asked for, not when it first runs
        if changes.get("q") is not None:
            compile_query(changes["q"])
    except InvalidInput as exc:
        raise InvalidInput(f"filter q: {exc}", INVALID_FILTER) from None
    try:
        check_filters(TypedFilters(type=changes.get("type")))
    except InvalidInput as exc:
        raise InvalidInput(f"filter {exc}", INVALID_FILTER) from None
    return ev.FilterUpdate(changes)


def parse_client_message(data: bytes | str) -> ev.ClientMessage:
    """A client message (subscribe, unsubscribe, ping) out of a text frame."""
    obj = loads_json(data, "the message")
    if not isinstance(obj, dict):
        raise InvalidInput("the message must be a JSON object", INVALID_MESSAGE)
    if "action" not in obj:
        if obj.get("type") == "ping":
            return ev.Ping()
        raise InvalidInput(
            f'unknown message type {obj.get("type")!r}; send {{"type": "ping"}} or '
            '{"action": "subscribe"|"unsubscribe", "topic": ...}',
            INVALID_MESSAGE,
        )
    action = obj["action"]
    if action not in ("subscribe", "unsubscribe"):
        raise InvalidInput(
            f"unknown action {action!r}; expected 'subscribe' or 'unsubscribe'", INVALID_MESSAGE
        )
    topic = obj.get("topic")
    if not isinstance(topic, str) or topic not in TOPICS:
        raise InvalidInput(
            f"unknown topic {topic!r}; expected one of: {', '.join(sorted(TOPICS))}",
            INVALID_TOPIC,
        )
    execution_id = obj.get("executionId")
    if execution_id is not None and not isinstance(execution_id, str):
        raise InvalidInput("executionId must be a string", INVALID_MESSAGE)
    if action == "unsubscribe":
        return ev.Unsubscribe(topic=topic, execution_id=execution_id)  # type: ignore[arg-type]
    return ev.Subscribe(
        topic=topic,  # type: ignore[arg-type]
        filters=parse_filters(obj.get("filters")),
        execution_id=execution_id,
    )


def encode_client_message(msg: ev.ClientMessage) -> bytes:
    """The wire JSON of a client message (used by our clients and tests)."""
    if isinstance(msg, ev.Ping):
        return b'{"type":"ping"}'
    out: dict[str, Any] = {
        "action": "subscribe" if isinstance(msg, ev.Subscribe) else "unsubscribe",
        "topic": msg.topic,
    }
    if msg.execution_id is not None:
        out["executionId"] = msg.execution_id
    if isinstance(msg, ev.Subscribe) and msg.filters.changes:
        wire = {v: k for k, v in (_LIST_FILTERS | _TEXT_FILTERS).items()}
        out["filters"] = {
            wire[k]: (sorted(v) if isinstance(v, frozenset) else v)
            for k, v in msg.filters.changes.items()
        }
    return orjson.dumps(out)


# --------------------------------------------------------------------------- HTTP answers


def to_json(obj: Any) -> bytes:
    """JSON of plain data (dicts, lists, strings, numbers) for the HTTP answers."""
    return orjson.dumps(obj)


def summaries_json(summaries: list[ev.ExecutionSummary], prices: Prices | None = None) -> bytes:
    """The ``GET /api/executions`` answer; with ``prices``, each ``totals`` has its ``cost``."""
    out = [converter.unstructure(s) for s in summaries]
    if prices is not None:
        for item, summary in zip(out, summaries, strict=True):
            if item.get("totals") is not None:
                item["totals"] = {**item["totals"], "cost": cost(summary.models, prices)}
    return orjson.dumps(out)


def events_json(rows: list[bytes]) -> bytes:
    """A JSON array of stored events, from their stored JSON (no re-encoding)."""
    return b"[" + b",".join(rows) + b"]"


def search_json(result: SearchResult) -> bytes:
    """The ``GET /api/search`` answer: ``hits`` (newest first), ``next``, ``complete``."""
    return orjson.dumps(converter.unstructure(result))


def to_wire_hit(hit: SearchHit) -> dict[str, Any]:
    """A search hit as ``GET /api/search`` gives it (camelCase)."""
    return converter.unstructure(hit)  # type: ignore[no-any-return]


def decode_search_result(data: bytes | str) -> SearchResult:
    """A :class:`SearchResult` from a ``GET /api/search`` answer (what the clients read)."""
    obj = loads_json(data, "the answer")
    try:
        result: SearchResult = converter.structure(obj, SearchResult)
    except Exception as exc:
        raise InvalidInput(
            f"the search answer is invalid: {_explain(exc)}", INVALID_MESSAGE
        ) from None
    return result


def accepted_json(seqs: list[int], warnings: list[str] | None = None) -> bytes:
    """The ``202`` answer of ``POST /api/events`` (``warnings`` only when there are some)."""
    if warnings:
        return orjson.dumps({"accepted": len(seqs), "seqs": seqs, "warnings": warnings})
    return orjson.dumps({"accepted": len(seqs), "seqs": seqs})


def error_json(message: str, code: ErrorCode) -> bytes:
    """An error answer: ``{"error": <a sentence>, "code": ...}``."""
    return orjson.dumps({"error": message, "code": code})


def uncertain_json(
    message: str, code: ErrorCode, seqs: list[int | None], unknown: list[int]
) -> bytes:
    """The answer to a batch not known stored whole: the error, each event's seq where it is
    known stored (else null), and the indexes of the events whose outcome is not known."""
    return orjson.dumps(
        {"error": message, "code": code, "accepted": sum(s is not None for s in seqs),
         "seqs": seqs, "unknown": unknown}
    )  # fmt: skip
