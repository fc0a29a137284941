"""One start, one end (SPEC §12): the span rules as the ledger applies them, no store."""

from __future__ import annotations

from typing import Any

from trio_obs.core import events as ev
from trio_obs.core.errors import InvalidInput
from trio_obs.core.ledger import Ledger, Stage, complete_batch
from trio_obs.core.protocol import GLOBAL
from trio_obs.core.spanrules import SpanRecord, takes_closing, takes_opening

NOW = "2026-12-01T10:00:00.000Z"
LATER = "2026-12-01T10:00:05.000Z"


def span_start(
    span: str, kind: ev.SpanKind = "llm", name: str = "gpt-4o", **kw: Any
) -> ev.SpanStartEvent:
    return ev.SpanStartEvent(execution_id="x", span_id=span, kind=kind, name=name, **kw)


def span_end(span: str, state: ev.SpanEndState = "done", **kw: Any) -> ev.SpanEndEvent:
    return ev.SpanEndEvent(execution_id="x", span_id=span, state=state, **kw)


def tool_start(use: str, **kw: Any) -> ev.ToolStartEvent:
    return ev.ToolStartEvent(
        execution_id="x", tool_use_id=use, tool="search", input_summary="q", **kw
    )


def tool_end(use: str, result: ev.ToolResultStatus = "done", **kw: Any) -> ev.ToolEndEvent:
    return ev.ToolEndEvent(
        execution_id="x", tool_use_id=use, result_status=result, duration_ms=1, **kw
    )


def status(
    state: ev.ExecutionState, span: str | None = "root", **kw: Any
) -> ev.ExecutionStatusEvent:
    return ev.ExecutionStatusEvent(execution_id="x", status=state, span_id=span, **kw)


def run(ledger: Ledger, *events: ev.StreamEvent, now: str = NOW) -> Stage:
    """Stage ``events`` as one batch and commit it."""
    stage = ledger.stage([complete_batch(list(events), now)])
    ledger.commit(stage)
    assert not isinstance(stage.results[0], InvalidInput)
    return stage


def answered(stage: Stage) -> list[int]:
    """The seqs the batch's answer gives (the ``global`` copies left out)."""
    result = stage.results[0]
    assert not isinstance(result, InvalidInput)
    return [env.seq for env in result if not env.is_copy]


def stored(stage: Stage) -> list[tuple[str, int, str]]:
    return [(env.key, env.seq, env.event.type) for env in stage.envelopes]


def test_the_rules_alone() -> None:
    assert takes_opening(None) and takes_closing(None, "done")
    opened = SpanRecord("llm", "m", open_seq=3)
    assert not takes_opening(opened) and takes_closing(opened, "done")
    assert not takes_opening(SpanRecord(close_seq=4))  # a start after the end
    lost = SpanRecord(open_seq=3, close_seq=5, close_state="lost")
    assert takes_closing(lost, "done") and not takes_closing(lost, "lost")
    assert not takes_closing(SpanRecord(open_seq=3, close_seq=5, close_state="done"), "error")


def test_one_opening_and_one_closing_whatever_copies_arrive() -> None:
    ledger = Ledger()
    first = run(ledger, span_start("s1"), span_start("s1"))
    assert stored(first) == [("x", 1, "span:start")]
    assert answered(first) == [1, 1]  # the copy is accepted, answered with the one stored
    again = run(ledger, span_start("s1"), span_end("s1"), span_end("s1", "error"))
    assert stored(again) == [("x", 2, "span:end")]
    assert answered(again) == [1, 2, 2]
    assert run(ledger, span_start("s1")).envelopes == []  # a start after the end


def test_a_lost_closing_is_provisional() -> None:
    ledger = Ledger()
    run(ledger, tool_start("tu"))
    lost = run(ledger, span_end("tu", "lost"), span_end("tu", "lost"))
    assert answered(lost) == [2, 2]
    real = run(ledger, tool_end("tu", "error"))
    assert stored(real) == [("x", 3, "tool:end")]
    assert run(ledger, tool_end("tu")).envelopes == []
    counters = ledger.counters("x")
    assert counters is not None and counters.open_spans == 0


def test_a_closing_never_opened_is_stored_and_a_late_opening_dropped() -> None:
    ledger = Ledger()
    assert stored(run(ledger, tool_end("tu"))) == [("x", 1, "tool:end")]
    late = run(ledger, tool_start("tu"))
    assert late.envelopes == [] and answered(late) == [1]


def test_agent_is_filled_from_the_agent_span_and_the_parent() -> None:
    ledger = Ledger()
    stage = run(
        ledger,
        span_start("a1", "agent", "planner"),
        span_start("m1", "llm", "gpt-4o", parent_span_id="a1"),
        tool_start("tu", parent_span_id="a1"),
        span_start("a2", "agent", "researcher", parent_span_id="tu"),
        span_end("m1", usage={"inputTokens": 10, "outputTokens": 2}),
    )
    assert [env.event.agent for env in stage.envelopes] == [
        "planner", "planner", "planner", "researcher", "planner"]  # fmt: skip
    # In another batch, from the spans the ledger keeps: a closing takes its span's agent.
    later = run(ledger, tool_end("tu"), span_end("a2"))
    assert [env.event.agent for env in later.envelopes] == ["planner", "researcher"]
    assert run(ledger, span_start("given", agent="mine")).envelopes[0].event.agent == "mine"


def test_started_once_and_completed_held_while_spans_are_open() -> None:
    ledger = Ledger()
    first = run(ledger, status("started"), span_start("a1", "agent", "planner"))
    assert stored(first) == [("x", 1, "execution:status"), (GLOBAL, 1, "execution:status"),
                             ("x", 2, "span:start")]  # fmt: skip
    # A second started (another OTLP request of the trace) is dropped.
    assert run(ledger, status("started", span="x")).envelopes == []
    held = run(ledger, status("completed", output="done", usage={"inputTokens": 5}))
    assert held.envelopes == []  # held: nothing stored yet
    assert answered(held) == [2]  # the stream's last seq: resume after it to get the status
    counters = ledger.counters("x")
    assert counters is not None and counters.last_status == "started"
    # The last open span closes: the status is stored right after it, stamped then.
    release = run(ledger, span_end("a1", timestamp=LATER))
    assert stored(release) == [("x", 3, "span:end"), ("x", 4, "execution:status"),
                               (GLOBAL, 2, "execution:status")]  # fmt: skip
    assert answered(release) == [3]
    done = release.envelopes[1].event
    assert isinstance(done, ev.ExecutionStatusEvent)
    assert (done.status, done.output, done.timestamp) == ("completed", "done", LATER)
    assert ledger.counters("x").last_status == "completed"  # type: ignore[union-attr]
    assert run(ledger, status("completed")).envelopes == []  # the root ends once


def test_a_held_failed_status_counts_as_an_error_once_stored() -> None:
    ledger = Ledger()
    run(ledger, status("started"), span_start("a1", "agent", "planner"))
    assert run(ledger, status("failed")).envelopes == []  # held: not stored, not counted
    assert ledger.counters("x").errors == 0  # type: ignore[union-attr]
    release = run(ledger, span_end("a1"))
    assert stored(release)[1] == ("x", 4, "execution:status")
    s = ledger.counters("x")
    assert s is not None and (s.last_status, s.errors) == ("failed", 1)  # as if never held


def test_plan_statuses_without_span_id_are_stored_as_sent() -> None:
    ledger = Ledger()
    stage = run(ledger, tool_start("tu"), status("started", span=None),
                status("started", span=None), status("completed", span=None))  # fmt: skip
    assert [env.seq for env in stage.envelopes if env.key == "x"] == [1, 2, 3, 4]


def test_totals_names_and_agents_of_the_run() -> None:
    ledger = Ledger()
    run(
        ledger,
        status("started", span="root"),
        span_start("a1", "agent", "orchestrator", conversation_id="c-1", timestamp=LATER),
        span_start("a0", "agent", "early", timestamp=NOW),  # earlier, and outermost
        span_start("m1", "llm", "chat", model="gpt-4o", parent_span_id="a1"),
        span_end("m1", model="gpt-4o-2024", usage={"inputTokens": 100, "outputTokens": 20}),
        span_start("m2", "llm", "chat", model="gpt-4o", parent_span_id="a1"),
        span_end("m2", usage={"inputTokens": 50, "outputTokens": 5}),
        span_end("m2", usage={"inputTokens": 50, "outputTokens": 5}),  # a copy: dropped
        tool_start("tu", parent_span_id="a1"),
        tool_end("tu", "error"),
        span_start("a2", "agent", "helper", parent_span_id="tu"),  # not outermost
        span_end("a1", usage={"inputTokens": 150, "outputTokens": 25}),  # an aggregate
    )
    s = ledger.counters("x")
    assert s is not None
    assert (s.name, s.conversation_id, s.agents) == (
        "early",
        "c-1",
        ("orchestrator", "early", "helper"),
    )
    assert (s.model_calls, s.input_tokens, s.output_tokens, s.tool_calls, s.errors) == (
        2,
        150,
        25,
        1,
        1,
    )
    assert s.models == {"gpt-4o-2024": (100, 20), "gpt-4o": (50, 5)}
    assert s.open_spans == 2  # a0 and a2
    # The root span is an agent: it names the run.
    run(ledger, status("running", agent="boss"))
    assert ledger.counters("x").name == "boss"  # type: ignore[union-attr]


def test_an_agent_is_named_by_its_agent_not_its_title() -> None:
    ledger = Ledger()
    run(ledger, span_start("a", "agent", "research_agent run", agent="research_agent"))
    s = ledger.counters("x")
    assert s is not None and (s.name, s.agents) == ("research_agent", ("research_agent",))
