"""Search (SPEC §14): what each event type gives full-text search and the typed filters,
the query language users type, and the typed filters applied to one event. No I/O.

:data:`SEARCH_FACTS` is the one table of it: per event type, the wire paths of the text
that is indexed, of the conversation messages whose strings are indexed, of its state
and of its agent. The stores build their index from it (SQLite's SQL is generated from
it, ``hub/search_sql.py``); adding an event type to search is adding a row.

The query language is small and forgiving, compiled to SQLite FTS5 by
:func:`compile_query`: words (any characters but spaces, quotes and parentheses: ``rm
-rf`` and ``src/api/users.ts`` are fine), ``"quoted phrases"``, ``prefix*``, and the
operators ``AND`` (also implied between words), ``OR``, ``NOT`` (``a NOT b``: a without
b) and parentheses. Matching ignores case and accents.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, Final, TypeAlias

import attrs

from . import events as ev
from .errors import InvalidInput
from .protocol import INVALID_QUERY, MAX_QUERY_CHARS, MAX_QUERY_TERMS, MAX_SEARCH_LIMIT


@attrs.frozen
class SearchFacts:
    """What one event type gives search: wire paths (camelCase, dotted) into its JSON."""

    text: tuple[str, ...] = ()
    """Strings indexed as they are (titles, summaries, tool input and output)."""
    messages: tuple[str, ...] = ()
    """Lists of conversation messages: every string in them is indexed but the
    ``role``, ``type`` and ``id`` keys (so ``assistant`` or ``text`` match nothing)."""
    state: str | None = None
    """Where the ``state`` filter reads the event's state word."""
    agent: tuple[str, ...] = ("agent",)
    """Where the ``agent`` filter reads its agent: the first present."""


SEARCH_FACTS: Final[dict[str, SearchFacts]] = {
    "transcript:entry": SearchFacts(text=("entry.summary",)),
    "tool:start": SearchFacts(text=("tool", "inputSummary")),
    "tool:end": SearchFacts(text=("outputSummary",), state="resultStatus"),
    "tool:output": SearchFacts(text=("chunk",)),
    "assertion:result": SearchFacts(text=("assertion.description",), state="assertion.result"),
    "skill:start": SearchFacts(text=("skillName",)),
    "skill:end": SearchFacts(text=("skillName",), state="status"),
    "messagebus:event": SearchFacts(text=("entry.humanSummary",)),
    "wave:status": SearchFacts(state="status"),
    "agent:heartbeat": SearchFacts(state="status", agent=("agent", "instanceId")),
    "execution:status": SearchFacts(text=("message", "output"), state="status"),
    "span:start": SearchFacts(text=("name",), messages=("systemInstructions", "inputMessages")),
    "span:end": SearchFacts(
        text=("name", "output", "error"),
        messages=("systemInstructions", "inputMessages", "outputMessages"),
        state="state",
    ),
    "watch:alert": SearchFacts(text=("message",), state="alert", agent=("agent", "instanceId")),
    "watch:clear": SearchFacts(text=("message",)),
}
"""Per stream event type: what search indexes and where its typed filters read."""

MESSAGE_SKIPPED_KEYS: Final = ("role", "type", "id")
"""Keys of a conversation message whose strings are not text anyone searches for."""

ERROR_STATES: Final = frozenset({"error", "failed"})
"""States that make an execution one "with errors" (a tool or span in error, a failed run)."""

FILTERS: Final = ("execution", "type", "tool", "state", "agent")
"""The typed filters of ``GET /api/search`` and of a live query, by wire name."""

# --------------------------------------------------------------------------- reading events

_CAMEL: Final = re.compile(r"[A-Z]")


def _attribute_path(path: str) -> tuple[str, ...]:
    return tuple(_CAMEL.sub(lambda m: "_" + m.group(0).lower(), part) for part in path.split("."))


_ATTRIBUTES: Final[dict[str, tuple[str, ...]]] = {
    path: _attribute_path(path)
    for facts in SEARCH_FACTS.values()
    for path in (
        *facts.text,
        *facts.messages,
        *facts.agent,
        *([facts.state] if facts.state else []),
    )
}


def value_at(event: ev.StreamEvent, path: str) -> Any:
    """The value at a wire path of ``event`` (None where absent)."""
    value: Any = event
    for name in _ATTRIBUTES.get(path) or _attribute_path(path):
        value = getattr(value, name, None)
        if value is None:
            return None
    return value


def state_of(event: ev.StreamEvent) -> str | None:
    """The event's state word (SEARCH_FACTS), if it has one."""
    facts = SEARCH_FACTS.get(event.type)
    if facts is None or facts.state is None:
        return None
    value = value_at(event, facts.state)
    return value if isinstance(value, str) else None


def agent_of(event: ev.StreamEvent) -> str | None:
    """The event's agent (SEARCH_FACTS), if it names one."""
    facts = SEARCH_FACTS.get(event.type)
    for path in facts.agent if facts is not None else ("agent",):
        value = value_at(event, path)
        if isinstance(value, str) and value:
            return value
    return None


# --------------------------------------------------------------------------- the index

TAG_PREFIXES: Final = {"execution": "ex", "type": "ty", "tool": "tl", "state": "st", "agent": "ag"}
"""The typed filters' words in the index: this prefix, then the hex of the value's UTF-8
(one word whatever the value holds, and the tokenizer folds its case)."""


def tag(name: str, value: str) -> str:
    """The index's word for ``value`` of the typed filter ``name``."""
    return TAG_PREFIXES[name] + value.encode().hex()


_HEX: dict[str, str] = {}
"""The hex of values seen lately (an execution's id, its tools and agents come again)."""
_HEX_KEPT: Final = 4096


def _hex(value: str) -> str:
    found = _HEX.get(value)
    if found is None:
        if len(_HEX) >= _HEX_KEPT:
            _HEX.clear()
        found = _HEX[value] = value.encode().hex()
    return found


_Path: TypeAlias = tuple[str, ...]
_Plan: TypeAlias = tuple[tuple[_Path, ...], tuple[_Path, ...], _Path | None, tuple[_Path, ...]]
"""Attribute names of: the text, the messages, the state, the agents."""


def _plan(facts: SearchFacts, path: Callable[[str], _Path]) -> _Plan:
    return (
        tuple(path(p) for p in facts.text),
        tuple(path(p) for p in facts.messages),
        path(facts.state) if facts.state else None,
        tuple(path(p) for p in facts.agent),
    )


_PLANS: Final = {
    kind: _plan(facts, _ATTRIBUTES.__getitem__) for kind, facts in SEARCH_FACTS.items()
}
"""SEARCH_FACTS as attribute names (of the typed events), per type."""
_WIRE_PLANS: Final = {
    kind: _plan(facts, lambda p: tuple(p.split("."))) for kind, facts in SEARCH_FACTS.items()
}
"""SEARCH_FACTS as keys (of the events' wire JSON), per type."""
_NO_PLAN: Final[_Plan] = ((), (), None, (("agent",),))
_TYPE, _EXECUTION, _TOOL, _STATE, _AGENT = (
    TAG_PREFIXES[name] for name in ("type", "execution", "tool", "state", "agent")
)


def _at(event: Any, names: _Path) -> Any:
    for name in names:
        event = getattr(event, name, None)
        if event is None:
            return None
    return event


def _key_at(obj: Any, keys: _Path) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
        if obj is None:
            return None
    return obj


def _strings(value: Any, out: list[str]) -> None:
    """Every string in a conversation's messages, but those under the skipped keys."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not (key in MESSAGE_SKIPPED_KEYS and isinstance(item, str)):
                _strings(item, out)


_Indexer: TypeAlias = Callable[[Any, "str | None"], tuple[str, str]]


def _indexer(kind: str, plan: _Plan) -> _Indexer:
    """:func:`_index` for the typed events of one type, as one function without loops
    (each path one nested ``getattr``): it runs for every event stored."""
    text_paths, message_paths, state_path, agent_paths = plan

    def get(path: _Path) -> str:
        expression = "event"
        for name in path:
            expression = f"getattr({expression}, {name!r}, None)"
        return expression

    lines = [
        "def index(event, tool):",
        f"    words = [{_TYPE + kind.encode().hex()!r}]",
        "    value = event.execution_id",
        "    if value:",
        "        words.append(_EXECUTION + _hex(value))",
        "    if tool:",
        "        words.append(_TOOL + _hex(tool))",
    ]
    if state_path is not None:
        lines += [
            f"    value = {get(state_path)}",
            "    if isinstance(value, str) and value:",
            "        words.append(_STATE + _hex(value))",
        ]
    indent = "    "
    for path in agent_paths:  # the first present
        lines += [
            f"{indent}value = {get(path)}",
            f"{indent}if isinstance(value, str) and value:",
            f"{indent}    words.append(_AGENT + _hex(value))",
            f"{indent}else:",
        ]
        indent += "    "
    lines.append(f"{indent}pass")
    lines.append("    text = []")
    for path in text_paths:
        lines += [
            f"    value = {get(path)}",
            "    if isinstance(value, str) and value:",
            "        text.append(value)",
        ]
    lines += [f"    _strings({get(path)}, text)" for path in message_paths]
    lines.append("    return ' '.join(text), ' '.join(words)")
    scope: dict[str, Any] = {
        "_hex": _hex, "_strings": _strings, "_EXECUTION": _EXECUTION, "_TOOL": _TOOL,
        "_STATE": _STATE, "_AGENT": _AGENT,
    }  # fmt: skip
    exec("\n".join(lines), scope)  # our own table (as attrs and cattrs make methods)
    made: _Indexer = scope["index"]
    return made


_INDEXERS: Final = {kind: _indexer(kind, plan) for kind, plan in _PLANS.items()}
"""index_text per stream event type."""


def index_text(event: ev.StreamEvent, tool: str | None) -> tuple[str, str]:
    """What the index holds of ``event`` (``tool``: its tool, as the ledger resolved it):
    its text (SEARCH_FACTS) and its tags (one word per typed filter it has a value for:
    :func:`tag`; the state and agent are :func:`state_of` and :func:`agent_of`)."""
    made = _INDEXERS.get(event.type)
    if made is not None:
        return made(event, tool)
    return _index(_NO_PLAN, event.type, event.execution_id, tool, functools.partial(_at, event))


def index_text_of_json(obj: dict[str, Any], tool: str | None) -> tuple[str, str]:
    """:func:`index_text` of the event whose wire JSON is ``obj`` (a stored row: no typed
    event made of it)."""
    kind, execution = obj.get("type"), obj.get("executionId")
    if not isinstance(kind, str):
        return "", ""
    plan = _WIRE_PLANS.get(kind, _NO_PLAN)
    execution = execution if isinstance(execution, str) else ""
    return _index(plan, kind, execution, tool, functools.partial(_key_at, obj))


def _index(
    plan: _Plan, kind: str, execution: str, tool: str | None, at: Callable[[_Path], Any]
) -> tuple[str, str]:
    text_paths, message_paths, state_path, agent_paths = plan
    words = [_TYPE + _hex(kind)]
    if execution:
        words.append(_EXECUTION + _hex(execution))
    if tool:
        words.append(_TOOL + _hex(tool))
    if state_path is not None:
        state = at(state_path)
        if isinstance(state, str) and state:
            words.append(_STATE + _hex(state))
    for path in agent_paths:
        agent = at(path)
        if isinstance(agent, str) and agent:
            words.append(_AGENT + _hex(agent))
            break
    text: list[str] = []
    for path in text_paths:
        value = at(path)
        if isinstance(value, str) and value:
            text.append(value)
    for path in message_paths:
        _strings(at(path), text)
    return " ".join(text), " ".join(words)


# --------------------------------------------------------------------------- queries


@attrs.frozen(kw_only=True)
class TypedFilters:
    """The typed filters of a search or a live query (None: any)."""

    execution: str | None = None
    type: str | None = None
    tool: str | None = None
    state: str | None = None
    agent: str | None = None

    def __bool__(self) -> bool:
        return self != NO_TYPED_FILTERS

    def accepts(self, event: ev.StreamEvent, tool: str | None) -> bool:
        """Whether ``event`` passes (``tool``: its tool, as the ledger resolved it)."""
        if self.execution is not None and event.execution_id != self.execution:
            return False
        if self.type is not None and event.type != self.type:
            return False
        if self.tool is not None and tool != self.tool:
            return False
        if self.state is not None and state_of(event) != self.state:
            return False
        return self.agent is None or agent_of(event) == self.agent


NO_TYPED_FILTERS: Final = TypedFilters()


@attrs.frozen(kw_only=True)
class RunFilters:
    """Filters of the execution list (SPEC §14): its last status, an agent, errors."""

    state: str | None = None
    """Only executions whose last status is this."""
    agent: str | None = None
    """Only executions with an event of this agent (or heartbeat instance)."""
    errors: bool = False
    """Only executions with an event in an error state (:data:`ERROR_STATES`)."""

    def __bool__(self) -> bool:
        return self != RunFilters()


def typed_filters_from(param: Callable[[str], str | None]) -> TypedFilters:
    """The typed filters among query parameters (``param(name)``; empty means any)."""
    return TypedFilters(**{name: param(name) or None for name in FILTERS})


def typed_filters(filters: ev.Filters) -> TypedFilters:
    """The typed filters (SPEC §14) among a subscription's filters."""
    return TypedFilters(
        execution=filters.execution,
        type=filters.type,
        tool=filters.tool,
        state=filters.state,
        agent=filters.agent,
    )


@attrs.frozen(kw_only=True)
class SearchQuery:
    """One search: the user's text, its FTS5 form, the typed filters and the page."""

    text: str
    match: str
    """The FTS5 expression :func:`compile_query` made of :attr:`text`."""
    filters: TypedFilters = NO_TYPED_FILTERS
    limit: int = 50
    before: int | None = None
    """Only hits with a position below this (the previous page's ``next``)."""


def search_query(
    text: str | None,
    *,
    filters: TypedFilters = NO_TYPED_FILTERS,
    limit: int = 50,
    before: int | None = None,
) -> SearchQuery:
    """A checked :class:`SearchQuery`; :class:`InvalidInput` says what is wrong, in a sentence."""
    if text is None or not text.strip():
        raise InvalidInput("q is required: the words to search for", INVALID_QUERY)
    check_filters(filters)
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise InvalidInput(f"limit must be from 1 to {MAX_SEARCH_LIMIT}", INVALID_QUERY)
    return SearchQuery(
        text=text, match=compile_query(text), filters=filters, limit=limit, before=before
    )


def live_query(filters: ev.Filters, limit: int) -> SearchQuery:
    """The search a subscription's live query (``filters.q``, set) makes."""
    assert filters.q is not None, "only a subscription with a live query searches"
    return SearchQuery(
        text=filters.q, match=compile_query(filters.q), filters=typed_filters(filters), limit=limit
    )


def check_filters(filters: TypedFilters) -> None:
    """Refuse a ``type`` no event has (the other filters take any value)."""
    if filters.type is not None and filters.type not in ev.STREAM_EVENT_TYPES:
        known = ", ".join(sorted(ev.STREAM_EVENT_TYPES))
        raise InvalidInput(
            f"type {filters.type!r} is not an event type; expected one of: {known}",
            INVALID_QUERY,
        )


_TOKEN: Final = re.compile(r'\s*(?:(")([^"]*)("?)(\*?)|([()])|([^\s"()]+))')
_OPERATORS: Final = frozenset({"AND", "OR", "NOT"})


def _words(text: str) -> list[tuple[str, str]]:
    """``(kind, value)`` tokens: ``phrase``, ``prefix`` (a phrase ending in ``*``), ``(``,
    ``)`` and the operators."""
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m is not None  # every non-space character starts one of the alternatives
        pos = m.end()
        quote, phrase, closed, star, paren, word = m.groups()
        if quote:
            if not closed:
                raise InvalidInput(
                    'q has a quote that is not closed: put the phrase between two " marks',
                    INVALID_QUERY,
                )
            out.append(("prefix" if star else "phrase", phrase))
        elif paren:
            out.append((paren, paren))
        elif word in _OPERATORS:
            out.append((word, word))
        elif word.endswith("*") and len(word) > 1:
            out.append(("prefix", word.rstrip("*")))
        else:
            out.append(("phrase", word))
    return out


def _searchable(text: str) -> bool:
    """Whether a phrase holds a character the index keeps (letters and digits)."""
    return any(c.isalnum() for c in text)


_ENDS: Final = frozenset({None, ")", "OR", "AND", "NOT"})
"""What cannot start an operand."""


class _Parser:
    """Recursive descent over :func:`_words`: OR binds loosest, then AND, then NOT."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.at = 0
        self.terms = 0

    def peek(self) -> str | None:
        return self.tokens[self.at][0] if self.at < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def operator(self, name: str) -> None:
        """Take the operator ``name``, which needs an operand after it."""
        self.take()
        if self.peek() in _ENDS:
            raise _operand(name)

    def binary(self, name: str, operand: Callable[[], str | None]) -> str | None:
        """``operand (name operand)*``, grouped from the left."""
        left = operand()
        while self.peek() == name:
            self.operator(name)
            right = operand()
            if left is None or right is None:
                raise _operand(name)
            left = f"({left} {name} {right})"
        return left

    def either(self) -> str | None:
        return self.binary("OR", self.both)

    def both(self) -> str | None:
        parts: list[str] = []
        explicit = False
        while self.peek() not in (None, ")", "OR"):
            if self.peek() == "AND":
                if not parts:
                    raise _operand("AND")
                self.operator("AND")
                explicit = True
                continue
            part = self.without()
            if part is not None:
                parts.append(part)
        if explicit and len(parts) < 2:
            raise _operand("AND")
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def without(self) -> str | None:
        if self.peek() == "NOT":
            raise InvalidInput(
                "NOT needs words before it (a NOT b finds a without b)", INVALID_QUERY
            )
        return self.binary("NOT", self.unit)

    def unit(self) -> str | None:
        kind, value = self.take()
        if kind == "(":
            inner = self.either()
            if self.peek() != ")":
                raise InvalidInput("q has a ( that is not closed", INVALID_QUERY)
            self.take()
            if inner is None:
                raise InvalidInput("q has parentheses with nothing to search", INVALID_QUERY)
            return inner
        if not _searchable(value):
            return None  # punctuation alone: the index keeps no such word
        self.terms += 1
        phrase = '"' + value.replace('"', '""') + '"'
        return phrase + "*" if kind == "prefix" else phrase


def _operand(what: str) -> InvalidInput:
    if what == ")":
        return InvalidInput("q has a ) without its (", INVALID_QUERY)
    return InvalidInput(f"{what} needs words on both sides", INVALID_QUERY)


def compile_query(text: str) -> str:
    """The FTS5 expression of a query in the language of this module; :class:`InvalidInput`
    with a sentence when it cannot be read (an unclosed quote, a lone operator, ...)."""
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidInput(f"q is longer than {MAX_QUERY_CHARS} characters", INVALID_QUERY)
    parser = _Parser(_words(text))
    expression = parser.either()
    if parser.peek() == ")":
        raise _operand(")")
    if parser.terms > MAX_QUERY_TERMS:
        raise InvalidInput(f"q has more than {MAX_QUERY_TERMS} words", INVALID_QUERY)
    if expression is None:
        raise InvalidInput(
            "q has no letters or digits to search for (punctuation alone is not indexed)",
            INVALID_QUERY,
        )
    return expression


# --------------------------------------------------------------------------- hits

MARK_OPEN: Final = "<mark>"
MARK_CLOSE: Final = "</mark>"
"""What surrounds each match in a hit's snippet (the rest of the snippet is plain text)."""
ELLIPSIS: Final = "…"


@attrs.frozen(kw_only=True)
class SearchHit:
    """One event that matched: where it is, and the text around the match."""

    execution_id: str
    seq: int
    pos: int
    type: str
    timestamp: str
    snippet: str


@attrs.frozen(kw_only=True)
class SearchResult:
    """A page of hits, newest first, and whether the index covers every stored event."""

    hits: list[SearchHit]
    next: int | None
    """``before`` for the next page (None: this was the last)."""
    complete: bool = True
    """False while the index of events stored before it existed is being built."""
    note: str | None = None
    """Why the answer may be incomplete, in a sentence."""
