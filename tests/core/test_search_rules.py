"""The rules of search (SPEC §14): the query language, the table of search facts, filters."""

from __future__ import annotations

import re

import pytest

from trio_obs.core import events as ev
from trio_obs.core.errors import InvalidInput
from trio_obs.core.protocol import INVALID_FILTER, INVALID_QUERY, MAX_QUERY_CHARS
from trio_obs.core.search import (
    SEARCH_FACTS,
    TypedFilters,
    agent_of,
    compile_query,
    search_query,
    state_of,
    value_at,
)
from trio_obs.core.wire import parse_filters

# --------------------------------------------------------------------------- the language


@pytest.mark.parametrize(
    ("text", "fts"),
    [
        ("checkout", '"checkout"'),
        ("rm -rf", '("rm" AND "-rf")'),  # no FTS5 syntax error for what people type
        ("src/api/users.ts", '"src/api/users.ts"'),
        ('"assigned to instance"', '"assigned to instance"'),
        ("test*", '"test"*'),
        ('"web hook"*', '"web hook"*'),
        ("a OR b", '("a" OR "b")'),
        ("a AND b OR c", '(("a" AND "b") OR "c")'),
        ("a NOT b", '("a" NOT "b")'),
        ("(a OR b) c", '(("a" OR "b") AND "c")'),
        ("and or not", '("and" AND "or" AND "not")'),  # operators are upper case only
        ("NEAR(a b)", '("NEAR" AND ("a" AND "b"))'),  # FTS5's own syntax is plain words
        ("it's", '"it\'s"'),
        ("a -- b", '("a" AND "b")'),  # punctuation alone is not indexed: dropped
    ],
)
def test_queries_compile_to_fts5(text: str, fts: str) -> None:
    assert compile_query(text) == fts


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('"unclosed', "quote that is not closed"),
        ("(a OR b", "( that is not closed"),
        ("a)", ") without its ("),
        ("AND a", "AND needs words on both sides"),
        ("a OR", "OR needs words on both sides"),
        ("a NOT", "NOT needs words on both sides"),
        ("NOT a", "NOT needs words before it"),
        ("a AND AND b", "AND needs words on both sides"),
        ("()", "nothing to search"),
        ("-- / ..", "no letters or digits"),
        ("x" * (MAX_QUERY_CHARS + 1), "longer than"),
        (" ".join(["w"] * 40), "more than 32 words"),
    ],
)
def test_bad_queries_are_refused_with_a_sentence(text: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(why)) as info:
        compile_query(text)
    assert info.value.code == INVALID_QUERY


def test_a_search_needs_words_a_known_type_and_a_sane_limit() -> None:
    with pytest.raises(InvalidInput, match="q is required"):
        search_query("   ")
    with pytest.raises(InvalidInput, match="not an event type; expected one of"):
        search_query("x", filters=TypedFilters(type="tool:begin"))
    with pytest.raises(InvalidInput, match="limit must be from 1 to 500"):
        search_query("x", limit=0)
    query = search_query("x", filters=TypedFilters(tool="Bash"), limit=7, before=99)
    assert (query.match, query.limit, query.before) == ('"x"', 7, 99)


def test_a_live_query_is_checked_when_it_is_asked_for() -> None:
    assert parse_filters({"q": "deploy*", "state": "error"}).changes == {
        "q": "deploy*",
        "state": "error",
    }
    with pytest.raises(InvalidInput, match="filter q: q has a quote") as info:
        parse_filters({"q": '"open'})
    assert info.value.code == INVALID_FILTER
    with pytest.raises(InvalidInput, match="filter type 'nope' is not an event type"):
        parse_filters({"type": "nope"})
    assert parse_filters({"q": None}).changes == {"q": None}  # null clears it


# --------------------------------------------------------------------------- the facts

TS = "2026-01-01T00:00:00.000Z"


def test_every_event_type_has_a_row_of_search_facts() -> None:
    assert set(SEARCH_FACTS) == set(ev.STREAM_EVENT_TYPES)


def test_state_and_agent_are_read_where_each_type_has_them() -> None:
    end = ev.ToolEndEvent(execution_id="e", tool_use_id="u", result_status="error", duration_ms=1)
    assert state_of(end) == "error"
    beat = ev.AgentHeartbeatEvent(execution_id="e", instance_id="instance-2", status="working")
    assert (state_of(beat), agent_of(beat)) == ("working", "instance-2")
    named = ev.AgentHeartbeatEvent(
        execution_id="e", instance_id="instance-2", status="idle", agent="planner"
    )
    assert agent_of(named) == "planner"  # the span's agent first, where the event has one
    span = ev.SpanEndEvent(execution_id="e", span_id="s", state="lost", agent="coder")
    assert (state_of(span), agent_of(span)) == ("lost", "coder")
    status = ev.ExecutionStatusEvent(execution_id="e", status="failed")
    assert (state_of(status), agent_of(status)) == ("failed", None)
    bus = ev.MessageBusEvent(
        entry=ev.MessageBusLogEntry(
            id="1", event_id="2", timestamp=TS, source="s", event_type="t",
            human_summary="deploy blocked", severity="error", category="c", created_at=TS,
        )
    )  # fmt: skip
    assert value_at(bus, "entry.humanSummary") == "deploy blocked"
    assert state_of(bus) is None


def test_typed_filters_accept_exact_values_only() -> None:
    end = ev.ToolEndEvent(execution_id="e1", tool_use_id="u", result_status="done", duration_ms=1)
    assert TypedFilters(execution="e1", type="tool:end", state="done").accepts(end, "Bash")
    assert TypedFilters(tool="Bash").accepts(end, "Bash")
    assert not TypedFilters(tool="Bas").accepts(end, "Bash")
    assert not TypedFilters(execution="e2").accepts(end, None)
    assert not TypedFilters(agent="coder").accepts(end, None)
    assert not TypedFilters()
    assert TypedFilters(state="x")
