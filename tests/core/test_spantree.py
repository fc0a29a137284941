"""The span tree of an execution, folded from its events alone (SPEC §12, CONTRACT D)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from trio_obs.core.prices import SHIPPED_PRICES
from trio_obs.core.spantree import SpanTree

SPAN_KEYS = {"spanId", "parentSpanId", "kind", "name", "agent", "state", "start", "end",
             "durationMs", "model", "usage", "cost", "error", "placeholder", "openSeq",
             "closeSeq"}  # fmt: skip


def at(second: float) -> str:
    return f"2026-12-01T10:00:{second:06.3f}Z"


def fold(*events: dict[str, Any]) -> dict[str, Any]:
    numbered = [{"executionId": "x", "seq": i, **e} for i, e in enumerate(events, 1)]
    return SpanTree("x").add_all(numbered).to_json(SHIPPED_PRICES, epoch="ep")


def by_id(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["spanId"]: s for s in tree["spans"]}


def test_an_agent_run_with_a_sub_agent_a_model_call_and_a_tool() -> None:
    tree = fold(
        {"type": "execution:status", "status": "started", "spanId": "x", "timestamp": at(0)},
        {
            "type": "span:start",
            "spanId": "a1",
            "parentSpanId": "root",
            "kind": "agent",
            "name": "orchestrator",
            "agent": "orchestrator",
            "timestamp": at(0.1),
        },
        {
            "type": "span:start",
            "spanId": "m1",
            "parentSpanId": "a1",
            "kind": "llm",
            "name": "chat gpt-4o",
            "model": "gpt-4o",
            "timestamp": at(0.2),
        },
        {
            "type": "span:end",
            "spanId": "m1",
            "state": "done",
            "model": "gpt-4o-2024-08-06",
            "usage": {"inputTokens": 1000, "outputTokens": 100},
            "durationMs": 800,
            "timestamp": at(1),
        },
        {
            "type": "tool:start",
            "toolUseId": "call_1",
            "spanId": "t1",
            "parentSpanId": "a1",
            "tool": "delegate_research",
            "inputSummary": "{}",
            "timestamp": at(1.1),
        },
        {
            "type": "span:start",
            "spanId": "a2",
            "parentSpanId": "t1",
            "kind": "agent",
            "name": "research_agent",
            "timestamp": at(1.2),
        },
        {"type": "span:end", "spanId": "a2", "state": "error", "error": "boom", "timestamp": at(2)},
        {
            "type": "tool:end",
            "toolUseId": "call_1",
            "resultStatus": "done",
            "durationMs": 950,
            "timestamp": at(2.05),
        },
    )
    assert (tree["executionId"], tree["seq"], tree["epoch"]) == ("x", 8, "ep")
    assert (tree["name"], tree["state"]) == ("orchestrator", "running")
    spans = by_id(tree)
    # The root span's id is not known yet: its children hang under a placeholder.
    assert tree["rootSpanId"] == "x" and spans["root"]["placeholder"] is True
    assert spans["root"]["parentSpanId"] == "x" and spans["x"]["parentSpanId"] is None
    assert all(set(s) >= SPAN_KEYS for s in tree["spans"])
    assert set(spans["call_1"]) == SPAN_KEYS | {"toolUseId"}
    m1 = spans["m1"]
    assert (m1["parentSpanId"], m1["kind"], m1["model"], m1["state"], m1["durationMs"]) == (
        "a1", "llm", "gpt-4o-2024-08-06", "done", 800)  # fmt: skip
    assert m1["cost"] == pytest.approx(1000 * 2.5 / 1e6 + 100 * 10 / 1e6)
    # The sub-agent names the tool's spanId as its parent: it hangs under the tool.
    assert spans["a2"]["parentSpanId"] == "call_1"
    assert (spans["a2"]["state"], spans["a2"]["error"]) == ("error", "boom")
    assert spans["call_1"]["state"] == "done" and spans["call_1"]["toolUseId"] == "call_1"
    assert [s["spanId"] for s in tree["spans"]] == ["x", "root", "a1", "m1", "call_1", "a2"]
    assert tree["totals"] == {
        "modelCalls": 1, "inputTokens": 1000, "outputTokens": 100,
        "cost": pytest.approx(0.0035), "toolCalls": 1, "errors": 1,
    }  # fmt: skip


def test_the_root_ends_and_fills_its_placeholder() -> None:
    tree = fold(
        {
            "type": "span:start",
            "spanId": "c",
            "parentSpanId": "p",
            "kind": "span",
            "name": "child",
            "timestamp": at(1),
        },
        {"type": "execution:status", "status": "started", "spanId": "r", "timestamp": at(0)},
        {
            "type": "span:start",
            "spanId": "p",
            "parentSpanId": "r",
            "kind": "agent",
            "name": "planner",
            "timestamp": at(0.5),
        },
        {"type": "span:end", "spanId": "c", "state": "done", "timestamp": at(2)},
        {"type": "span:end", "spanId": "p", "state": "done", "timestamp": at(3)},
        {
            "type": "execution:status",
            "status": "completed",
            "spanId": "r",
            "agent": "boss",
            "usage": {"inputTokens": 5},
            "timestamp": at(4),
        },
    )
    spans = by_id(tree)
    assert tree["rootSpanId"] == "r" and tree["state"] == "done" and tree["name"] == "boss"
    assert spans["p"]["placeholder"] is False and spans["p"]["parentSpanId"] == "r"
    assert spans["c"]["parentSpanId"] == "p"
    root = spans["r"]
    assert (root["kind"], root["start"], root["end"], root["durationMs"]) == (
        "agent", at(0), at(4), 4000)  # fmt: skip
    assert [s["spanId"] for s in tree["spans"]] == ["r", "p", "c"]


def test_a_lost_closing_gives_way_to_the_real_one_and_copies_change_nothing() -> None:
    tree = fold(
        {"type": "span:start", "spanId": "s", "kind": "llm", "name": "m", "timestamp": at(0)},
        {"type": "span:start", "spanId": "s", "kind": "llm", "name": "copy", "timestamp": at(1)},
        {"type": "span:end", "spanId": "s", "state": "lost", "timestamp": at(5)},
        {
            "type": "span:end",
            "spanId": "s",
            "state": "done",
            "timestamp": at(6),
            "usage": {"inputTokens": 1, "outputTokens": 1},
            "model": "my-model",
        },
        {"type": "span:end", "spanId": "s", "state": "error", "timestamp": at(7)},
    )
    s = by_id(tree)["s"]
    assert (s["name"], s["state"], s["openSeq"], s["closeSeq"], s["cost"]) == (
        "m", "done", 1, 4, "unknown")  # fmt: skip
    assert tree["totals"]["cost"] == "unknown"


def test_plan_tools_and_skills_hang_under_their_task_else_under_the_execution() -> None:
    tree = fold(
        {"type": "execution:status", "status": "running", "timestamp": at(0)},
        {
            "type": "tool:start",
            "toolUseId": "tu1",
            "tool": "Read",
            "inputSummary": "a",
            "taskId": "t1",
            "timestamp": at(1),
        },
        {
            "type": "skill:start",
            "skillTraceId": "k1",
            "skillName": "plan",
            "skillFile": "f",
            "lineNumber": 1,
            "taskId": "t1",
            "timestamp": at(2),
        },
        {
            "type": "tool:start",
            "toolUseId": "tu2",
            "tool": "Bash",
            "inputSummary": "b",
            "timestamp": at(3),
        },
        {
            "type": "tool:end",
            "toolUseId": "tu1",
            "resultStatus": "error",
            "durationMs": 10,
            "outputSummary": "no such file",
            "timestamp": at(4),
        },
        {
            "type": "skill:end",
            "skillTraceId": "k1",
            "skillName": "plan",
            "status": "success",
            "durationMs": 3000,
            "timestamp": at(5),
        },
        {
            "type": "tool:end",
            "toolUseId": "never-started",
            "resultStatus": "done",
            "durationMs": 5,
            "timestamp": at(6),
        },
    )
    spans = by_id(tree)
    assert tree["rootSpanId"] == "x" and tree["name"] is None
    task = spans["task:t1"]
    assert (task["kind"], task["parentSpanId"], task["state"], task["taskId"]) == (
        "task", "x", "error", "t1")  # fmt: skip
    assert (task["start"], task["end"]) == (at(1), at(5))
    assert spans["tu1"]["parentSpanId"] == "task:t1" and spans["tu1"]["error"] == "no such file"
    assert (spans["k1"]["parentSpanId"], spans["k1"]["state"]) == ("task:t1", "done")
    assert spans["tu2"]["parentSpanId"] == "x" and spans["tu2"]["state"] == "running"
    assert spans["tu2"]["end"] is None and spans["tu2"]["durationMs"] is None
    late = spans["never-started"]
    assert (late["openSeq"], late["closeSeq"], late["start"], late["kind"]) == (
        None, 7, at(6), "tool")  # fmt: skip
    assert tree["totals"]["toolCalls"] == 3 and tree["totals"]["errors"] == 1


def test_a_span_that_names_itself_as_parent_is_not_a_loop() -> None:
    tree = fold({"type": "span:start", "spanId": "s", "parentSpanId": "s", "kind": "span",
                 "name": "odd", "timestamp": at(0)})  # fmt: skip
    assert by_id(tree)["s"]["parentSpanId"] == "x"


# --------------------------------------------------------------------------- 10,000 spans


def big_run(top: int = 20, under: int = 4, calls: int = 50) -> list[dict[str, Any]]:
    """An execution of ``1 + top * (1 + under) * 2 * calls`` spans (10,001 by default):
    agents under the root's and under those, each with model calls and a tool after each
    call but the last; seqs and timestamps in order."""
    out: list[dict[str, Any]] = []

    def add(**event: Any) -> None:
        n = len(out) + 1
        out.append({"executionId": "x", "seq": n, "timestamp": at(n / 1000), **event})

    def agent(span: str, parent: str) -> None:
        add(type="span:start", spanId=span, parentSpanId=parent, kind="agent", name=span,
            agent=span)  # fmt: skip
        for c in range(calls):
            llm = f"{span}.m{c}"
            add(type="span:start", spanId=llm, parentSpanId=span, kind="llm", name="chat",
                model="gpt-4o")  # fmt: skip
            add(type="span:end", spanId=llm, state="done", model="gpt-4o",
                usage={"inputTokens": 100, "outputTokens": 10})  # fmt: skip
            if c < calls - 1:
                tool = f"{span}.t{c}"
                add(type="tool:start", toolUseId=tool, spanId=tool, parentSpanId=llm,
                    tool="Bash", inputSummary="ls")  # fmt: skip
                add(type="tool:end", toolUseId=tool, spanId=tool, durationMs=1,
                    resultStatus="error" if c % 10 == 3 else "done")  # fmt: skip
        add(type="span:end", spanId=span, state="done")

    add(type="execution:status", status="started", spanId="root", agent="boss")
    for a in range(top):
        agent(f"a{a}", "root")
        for b in range(under):
            agent(f"a{a}.{b}", f"a{a}")
    add(type="execution:status", status="completed", spanId="root", agent="boss")
    return out


def test_a_tree_of_10000_spans_has_every_span_under_its_parent() -> None:
    events = big_run()
    tree = SpanTree("x").add_all(events).to_json(SHIPPED_PRICES, epoch="ep")
    spans = tree["spans"]
    assert (len(events), len(spans), tree["seq"]) == (20_002, 10_001, 20_002)
    assert (tree["name"], tree["state"], tree["rootSpanId"]) == ("boss", "done", "root")
    kinds: dict[str, int] = {}
    for span in spans:
        kinds[span["kind"]] = kinds.get(span["kind"], 0) + 1
    assert kinds == {"agent": 1 + 100, "llm": 5_000, "tool": 4_900}
    assert tree["totals"] == {
        "modelCalls": 5_000, "inputTokens": 500_000, "outputTokens": 50_000,
        "cost": pytest.approx(500_000 * 2.5 / 1e6 + 50_000 * 10 / 1e6), "toolCalls": 4_900,
        "errors": 100 * 5,
    }  # fmt: skip
    found = by_id(tree)
    assert not any(s["placeholder"] for s in spans)
    assert all(s["state"] in ("done", "error") for s in spans)
    assert found["a7.2"]["parentSpanId"] == "a7" and found["a7"]["parentSpanId"] == "root"
    assert found["a7.2.m3"]["parentSpanId"] == "a7.2"
    assert found["a7.2.t3"]["parentSpanId"] == "a7.2.m3"
    assert (found["a7.2.t3"]["agent"], found["a7.2.t3"]["state"]) == (None, "error")
    # Every parent is in the tree and comes before its children.
    place = {s["spanId"]: i for i, s in enumerate(spans)}
    assert all(place[s["parentSpanId"]] < place[s["spanId"]] for s in spans[1:])


def test_a_tree_answered_then_folding_more_answers_as_a_fold_of_all() -> None:
    """The server keeps a tree and folds what came since: the answer must not differ."""
    whole = big_run(top=2, under=2, calls=5)
    for events in (whole, whole[1:]):  # with the root's start, and without (its start inferred)
        kept, done = SpanTree("x"), 0
        for cut in (1, 2, 7, 30, 31, 55, len(events) - 1, len(events)):
            kept.add_all(events[done:cut])
            done = cut
            fresh = SpanTree("x").add_all(events[:cut]).to_json(SHIPPED_PRICES, epoch="ep")
            assert kept.to_json(SHIPPED_PRICES, epoch="ep") == fresh


def test_a_lost_span_runs_again_when_its_alert_is_cleared() -> None:
    start = {"type": "tool:start", "toolUseId": "t", "tool": "Bash", "inputSummary": "ls",
             "timestamp": at(0)}  # fmt: skip
    lost = {"type": "span:end", "spanId": "t", "state": "lost", "timestamp": at(5),
            "details": {"inferred": True, "alertId": "lost-1"}}  # fmt: skip
    clear = {"type": "watch:clear", "alertId": "lost-1", "message": "back", "timestamp": at(6)}
    other = {**clear, "alertId": "lost-2"}
    assert by_id(fold(start, lost))["t"]["state"] == "lost"
    assert by_id(fold(start, lost, other))["t"]["state"] == "lost"
    t = by_id(fold(start, lost, clear))["t"]
    assert (t["state"], t["end"], t["closeSeq"]) == ("running", None, None)
    end = {"type": "tool:end", "toolUseId": "t", "resultStatus": "done", "durationMs": 9000,
           "timestamp": at(9)}  # fmt: skip
    assert by_id(fold(start, lost, clear, end))["t"]["state"] == "done"
    # A tree kept while the alert comes and goes answers as a fresh fold each time.
    kept, events = SpanTree("x"), ({**start, "parentSpanId": "agent-1"}, lost, clear, end)
    for seq, event in enumerate(events, 1):
        kept.add({"executionId": "x", "seq": seq, **event})
        assert kept.to_json(SHIPPED_PRICES, epoch="ep") == fold(*events[:seq])


def random_run(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """``n`` events of every kind the fold reads, in any order: spans opened and closed
    (or not), parents named before they are seen, tools with a span id of their own
    (aliases), plan tasks, a root span named late, lost closings and their clearing."""
    spans = [f"s{i}" for i in range(12)]
    out: list[dict[str, Any]] = []
    for seq in range(1, n + 1):
        span = rng.choice(spans)
        base = {"executionId": "x", "seq": seq, "timestamp": at(rng.randrange(60))}
        roll = rng.randrange(12)
        if roll == 0:
            status = rng.choice(["started", "running", "completed", "failed"])
            root = rng.choice([{}, {"spanId": "r"}, {"spanId": rng.choice(spans)}])
            out.append(base | root | {"type": "execution:status", "status": status,
                                      "agent": rng.choice([None, "boss"])})  # fmt: skip
        elif roll == 1:
            out.append(base | {"type": "watch:clear", "alertId": rng.choice(["a1", "a2"])})
        elif roll in (2, 3):
            tool = base | {"toolUseId": span, "tool": "Bash",
                           "taskId": rng.choice([None, "t1", "t2"])}  # fmt: skip
            if rng.random() < 0.3:
                tool["spanId"] = "own-" + span
            if rng.random() < 0.5:
                tool["parentSpanId"] = rng.choice([*spans, "own-s1", "x", "r", "task:t1"])
            if roll == 2:
                out.append(tool | {"type": "tool:start", "inputSummary": "ls"})
            else:
                out.append(tool | {"type": "tool:end", "durationMs": rng.choice([5, None]),
                                   "resultStatus": rng.choice(["done", "error"])})  # fmt: skip
        elif roll == 4:
            out.append(base | {"type": "skill:end", "skillTraceId": span, "skillName": "plan",
                               "status": "failed", "taskId": "t1"})  # fmt: skip
        else:
            opening = roll < 8
            event = base | {"type": "span:start" if opening else "span:end", "spanId": span}
            if rng.random() < 0.6:
                event["parentSpanId"] = rng.choice([*spans, "ghost", "own-s2", "r"])
            event["kind"] = rng.choice(["llm", "agent", "span", None])
            if event["kind"] == "llm":
                event["model"] = rng.choice(["gpt-4o", "who-knows", ""])
                if not opening:
                    event["usage"] = {"inputTokens": rng.randrange(99), "outputTokens": 3}
            if not opening:
                event["state"] = rng.choice(["done", "error", "lost"])
                if event["state"] == "lost":
                    event["details"] = {"alertId": rng.choice(["a1", "a2"])}
            out.append(event)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_a_kept_tree_answers_as_a_fresh_fold_after_every_event(seed: int) -> None:
    """The kept answer re-encodes only what changed: after each event, byte for byte what
    a fold of every event so far answers."""
    rng = random.Random(seed)
    events = random_run(rng, 120)
    kept = SpanTree("x")
    for cut, event in enumerate(events, 1):
        kept.add(event)
        if rng.random() < 0.5:  # answered now and then: several events between two answers
            fresh = SpanTree("x").add_all(events[:cut]).answer(SHIPPED_PRICES, epoch="ep")
            assert kept.answer(SHIPPED_PRICES, epoch="ep") == fresh, (seed, cut)
