"""The ledger alone: every derived field, decided once, without a store (SPEC §2, §5)."""

from __future__ import annotations

import attrs
import pytest

from trio_obs.core import events as ev
from trio_obs.core.errors import InvalidInput
from trio_obs.core.ledger import Ledger, StreamCounters, complete, complete_batch
from trio_obs.core.protocol import GLOBAL, MAX_ID_BYTES
from trio_obs.core.routing import Envelope
from trio_obs.core.spanrules import SpanRecord

NOW = "2026-12-01T10:00:00.000Z"


def status(e: str, state: ev.ExecutionState = "running") -> ev.ExecutionStatusEvent:
    return ev.ExecutionStatusEvent(execution_id=e, status=state)


def output(e: str, tool_use_id: str = "tu") -> ev.ToolOutputEvent:
    return ev.ToolOutputEvent(execution_id=e, tool_use_id=tool_use_id, chunk="x")


def start(e: str, tool_use_id: str, tool: str, task: str) -> ev.ToolStartEvent:
    return ev.ToolStartEvent(
        execution_id=e, tool_use_id=tool_use_id, tool=tool, input_summary="i", task_id=task
    )


def end(e: str, tool_use_id: str, result: ev.ToolResultStatus = "done") -> ev.ToolEndEvent:
    return ev.ToolEndEvent(
        execution_id=e, tool_use_id=tool_use_id, result_status=result, duration_ms=1
    )


def assertion(e: str, result: ev.AssertionOutcome, task: str = "t1") -> ev.AssertionResultEvent:
    record = ev.AssertionResult(
        id="a", task_id=task, execution_id=e, category="c", description="d",
        result=result, timestamp=NOW,
    )  # fmt: skip
    return ev.AssertionResultEvent(execution_id=e, task_id=task, assertion=record)


def bus(owner: str | None, severity: ev.Severity = "info", **top: object) -> ev.MessageBusEvent:
    entry = ev.MessageBusLogEntry(
        id="m", event_id="e", timestamp=NOW, source="s", event_type="t", human_summary="h",
        severity=severity, category="c", created_at=NOW, execution_id=owner,
    )  # fmt: skip
    return ev.MessageBusEvent(entry=entry, **top)  # type: ignore[arg-type]


def staged(ledger: Ledger, *batches: list[ev.StreamEvent]) -> list[list[tuple[str, int]]]:
    stage = ledger.stage([complete_batch(b, NOW) for b in batches], wall=1.0)
    ledger.commit(stage)
    return [
        [(env.key, env.seq) for env in r] if not isinstance(r, InvalidInput) else []
        for r in stage.results
    ]


# --------------------------------------------------------------------------- complete


def test_a_missing_timestamp_is_stamped_and_a_given_one_kept() -> None:
    assert complete(status("e1"), NOW).timestamp == NOW
    given = attrs.evolve(status("e1"), timestamp="2020-01-01T00:00:00.000Z")
    assert complete(given, NOW).timestamp == "2020-01-01T00:00:00.000Z"


def test_requires_action_follows_the_severity_and_may_be_raised_in_process() -> None:
    for severity, expected in [("debug", False), ("info", False), ("warning", False),
                               ("error", True), ("critical", True)]:  # fmt: skip
        assert complete(bus("e1", severity), NOW).requires_action is expected  # type: ignore[union-attr]
    raised = complete(bus("e1", "info", requires_action=True), NOW)
    assert raised.requires_action is True  # type: ignore[union-attr]


def test_tool_end_flags_follow_its_result_status() -> None:
    for result, flags in [("done", (False, False)), ("error", (True, False)),
                          ("blocked", (False, True))]:  # fmt: skip
        done = complete(end("e1", "t", result), NOW)  # type: ignore[arg-type]
        assert (done.is_error, done.is_blocked) == flags  # type: ignore[union-attr]
    lie = attrs.evolve(end("e1", "t", "done"), is_error=True)
    assert complete(lie, NOW).is_error is False  # type: ignore[union-attr]


def test_the_stream_of_a_message_bus_event_is_decided_here() -> None:
    assert complete(bus(None), NOW).execution_id == GLOBAL
    assert complete(bus("e7"), NOW).execution_id == "e7"
    assert complete(bus(None, execution_id="e8"), NOW).execution_id == "e8"
    assert complete(bus("e9", execution_id="e9"), NOW).execution_id == "e9"


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (status(""), "non-empty executionId"),
        (status("all"), "reserved"),
        (status("global"), "reserved"),
        (bus("global"), "reserved"),
        (bus(None, execution_id="all"), "reserved"),
        (bus("e1", execution_id="e2"), "belongs to"),
        (attrs.evolve(assertion("e1", "pass"), task_id="t2"), "taskId"),
        (attrs.evolve(assertion("e1", "pass"), execution_id="e2"), "executionId"),
    ],
)  # fmt: skip
def test_inconsistent_or_reserved_ids_are_refused(event: ev.StreamEvent, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        complete_batch([status("ok"), event], NOW)
    assert info.value.code == "INVALID_EVENT"
    assert words in str(info.value)
    assert "event 1" in str(info.value)


LONG = "x" * (MAX_ID_BYTES + 1)


@pytest.mark.parametrize(
    ("event", "name"),
    [
        (status(LONG), "executionId"),
        (end("e1", LONG, "done"), "toolUseId"),
        (assertion("e1", "pass", task=LONG), "taskId"),
        (attrs.evolve(bus("e1"), entry=attrs.evolve(bus("e1").entry, correlation_id=LONG)),
         "entry.correlationId"),
        (status("\u00e9" * (MAX_ID_BYTES // 2 + 1)), "executionId"),  # bytes, not characters
    ],
)  # fmt: skip
def test_an_id_over_the_limit_is_refused_naming_it(event: ev.StreamEvent, name: str) -> None:
    [refused] = Ledger().stage([complete_batch([status("ok"), event], NOW)]).results
    assert isinstance(refused, InvalidInput)
    assert refused.code == "INVALID_EVENT"
    assert f"has a {name} of " in str(refused) and "event 1" in str(refused)
    assert f"at most {MAX_ID_BYTES:,} bytes" in str(refused)


def test_an_id_at_the_limit_is_taken() -> None:
    events = [status("\u00e9" * (MAX_ID_BYTES // 2)), status("x" * MAX_ID_BYTES)]
    results = Ledger().stage([complete_batch([e], NOW) for e in events]).results
    assert not any(isinstance(r, InvalidInput) for r in results)


def test_a_fresh_event_is_completed_in_place_and_a_stored_one_copied() -> None:
    fresh = status("e1")
    assert complete(fresh, NOW) is fresh
    stored = attrs.evolve(status("e1"), seq=4)
    copy = complete(stored, NOW)
    assert copy is not stored and stored.timestamp == "" and copy.timestamp == NOW


# --------------------------------------------------------------------------- stage


def test_seq_is_per_key_gap_free_and_the_global_copy_has_its_own() -> None:
    ledger = Ledger()
    assert staged(ledger, [output("a"), output("b"), output("a")]) == [
        [("a", 1), ("b", 1), ("a", 2)]
    ]
    [[own, copy]] = staged(ledger, [status("a")])
    assert own == ("a", 3) and copy == (GLOBAL, 1)
    assert staged(ledger, [bus(None)]) == [[(GLOBAL, 2)]]
    assert (ledger.last_seq("a"), ledger.last_seq("b"), ledger.last_seq(GLOBAL)) == (3, 1, 2)


def test_running_pass_rate_counts_this_assertion_and_earlier_ones_of_its_execution() -> None:
    ledger = Ledger()
    stage = ledger.stage(
        [complete_batch([assertion("a", r) for r in ("pass", "fail", "pass")], NOW)]
    )
    rates = [env.event.running_pass_rate for env in stage.envelopes]  # type: ignore[union-attr]
    assert rates == [1.0, 0.5, pytest.approx(2 / 3)]
    ledger.commit(stage)
    other = ledger.stage([complete_batch([assertion("b", "fail")], NOW)])
    assert other.envelopes[0].event.running_pass_rate == 0.0  # type: ignore[union-attr]


def test_tool_end_and_output_carry_the_tool_and_task_of_their_start() -> None:
    ledger = Ledger()
    staged(ledger, [start("a", "tu1", "Read", "task-1")])
    stage = ledger.stage(
        [complete_batch([output("a", "tu1"), end("a", "tu1"), end("b", "tu1")], NOW)]
    )
    facts = [(env.tool, env.task_id) for env in stage.envelopes]
    assert facts == [("Read", "task-1"), ("Read", "task-1"), (None, None)]


def test_a_span_the_ledger_forgot_is_asked_of_the_store() -> None:
    ledger = Ledger(span_cache_size=1)
    staged(ledger, [start("a", "tu1", "Read", "k1")], [start("a", "tu2", "Bash", "k2")])
    batch = complete_batch([end("a", "tu1"), end("a", "tu2")], NOW)
    assert ledger.unknown_spans([batch]) == [("a", "tu1")]
    read = SpanRecord("tool", "Read", "k1", open_seq=1)
    ledger.learn_spans({("a", "tu1"): read})  # evicts tu2 from the cache...
    ledger.learn_spans({("a", "tu2"): SpanRecord("tool", "Bash", "k2", open_seq=2)})
    assert ledger.unknown_spans([batch]) == []  # ...but what was learned stays for this stage
    stage = ledger.stage([batch])
    assert [env.tool for env in stage.envelopes] == ["Read", "Bash"]


def test_the_spans_of_a_key_new_to_the_store_are_not_asked_of_it() -> None:
    # Issue 25: a run's new tool uses were looked up in the store, batch after batch.
    ledger = Ledger()  # a new store: a key the ledger has not seen has nothing stored
    staged(ledger, [start("a", "tu1", "Read", "k1")])
    assert ledger.unknown_spans([complete_batch([start("a", "tu2", "Bash", "k2")], NOW)]) == []
    old = Ledger(complete=False)  # a store with history: the store says what it has
    batch = complete_batch([start("new", "tu1", "Read", "k"), end("old", "tu1")], NOW)
    assert old.unknown_streams([batch]) == ["new", "old", GLOBAL]
    old.learn_streams({"new": None, "old": StreamCounters(last_seq=4, event_count=4), GLOBAL: None})
    assert old.unknown_spans([batch]) == [("old", "tu1")]


def test_a_key_whose_span_left_the_cache_is_asked_of_the_store_again() -> None:
    ledger = Ledger(span_cache_size=2)
    staged(ledger, [start("a", "tu1", "Read", "k1"), start("a", "tu2", "Read", "k2")])
    assert ledger.unknown_spans([complete_batch([end("a", "tu1")], NOW)]) == []
    staged(ledger, [start("b", "tu3", "Read", "k3")])  # evicts a's tu1
    assert ledger.unknown_spans([complete_batch([end("a", "tu1")], NOW)]) == [("a", "tu1")]
    assert ledger.unknown_spans([complete_batch([end("b", "tu4")], NOW)]) == []


def test_a_bad_batch_fails_alone_and_leaves_no_trace() -> None:
    ledger = Ledger()
    huge = ev.TranscriptEntryEvent(
        execution_id="a",
        entry=ev.TranscriptEntry(
            id="t", timestamp=NOW, sequence=2**70, execution_id="a", instance_id="i",
            entry_type="x", category="c", summary="s",
        ),
    )  # fmt: skip
    stage = ledger.stage(
        [complete_batch([output("a")], NOW), complete_batch([output("a"), huge], NOW)]
    )
    assert [e.seq for e in stage.results[0]] == [1]  # type: ignore[union-attr]
    assert isinstance(stage.results[1], InvalidInput)
    ledger.commit(stage)
    assert ledger.last_seq("a") == 1  # the bad batch took no seq


def test_nothing_changes_until_commit() -> None:
    ledger = Ledger()
    ledger.stage([complete_batch([output("a")], NOW)])
    assert ledger.last_seq("a") == 0
    assert staged(ledger, [output("a")]) == [[("a", 1)]]


def test_counters_are_a_bounded_cache_that_the_store_fills() -> None:
    ledger = Ledger(stream_cache_size=3)
    for key in "abcdef":
        staged(ledger, [output(key)])
    assert len(ledger) == 3
    assert not ledger.knows("a") and ledger.knows("f")
    batch = complete_batch([output("a")], NOW)
    assert ledger.unknown_streams([batch]) == ["a"]
    with pytest.raises(RuntimeError, match="not loaded"):
        ledger.stage([batch])
    ledger.learn_streams({"a": StreamCounters(last_seq=1, event_count=1)})
    assert staged(ledger, [output("a")]) == [[("a", 2)]]


def test_activity_orders_keys_and_the_wall_clock_is_the_hubs() -> None:
    ledger = Ledger(activity=10)
    stage = ledger.stage([complete_batch([output("a"), output("b"), output("a")], NOW)], wall=42.0)
    assert stage.streams["b"].activity < stage.streams["a"].activity
    assert {s.updated for s in stage.streams.values()} == {42.0}
    assert stage.streams["b"].activity == 11


def test_forget_drops_keys_and_their_spans() -> None:
    ledger = Ledger(complete=False)
    ledger.learn_streams({"a": None, GLOBAL: None})
    staged(ledger, [start("a", "tu1", "Read", "k")])
    ledger.forget(["a"])
    assert ledger.counters("a") is None
    assert ledger.unknown_spans([complete_batch([end("a", "tu1")], NOW)]) == [("a", "tu1")]
    # A new store's ledger knows the store holds nothing of a deleted key: its end is
    # staged as one that closes no span it knows.
    new = Ledger()
    staged(new, [start("a", "tu1", "Read", "k")])
    new.forget(["a"])
    [[ended]] = new.stage([complete_batch([end("a", "tu1")], NOW)]).results
    assert isinstance(ended, Envelope) and ended.seq == 1 and ended.tool is None
