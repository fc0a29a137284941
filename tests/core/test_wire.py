"""The codec: typed events <-> the exact wire JSON of SPEC §2 and §3."""

from __future__ import annotations

import math
from typing import Any, get_args

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import to_wire
from trio_obs.core import events as ev
from trio_obs.core import wire as wire_module
from trio_obs.core.errors import InvalidInput
from trio_obs.core.wire import (
    camel,
    converter,
    decode_server_event,
    decode_stream_event,
    encode,
    encode_client_message,
    encode_kept,
    parse_client_message,
)

# --------------------------------------------------------------------------- strategies

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=16)
ids = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12)
ints = st.integers(-(2**53), 2**53)
floats = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | ints | floats | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
json_dicts = st.dictionaries(text, json_values, max_size=4)
seqs = st.none() | st.integers(1, 2**62)


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def one_of(literal: Any) -> st.SearchStrategy[str]:
    return st.sampled_from(get_args(literal))


transcript_entries = st.builds(
    ev.TranscriptEntry,
    id=ids,
    timestamp=text,
    sequence=ints,
    execution_id=ids,
    instance_id=ids,
    entry_type=text,
    category=text,
    summary=text,
    task_id=opt(ids),
    wave_number=opt(ints),
    details=opt(json_dicts),
    duration_ms=opt(floats),
)
assertion_results = st.builds(
    ev.AssertionResult,
    id=ids,
    task_id=ids,
    execution_id=ids,
    category=text,
    description=text,
    result=one_of(ev.AssertionOutcome),
    timestamp=text,
    chain_id=opt(ids),
    evidence=opt(json_dicts),
    duration_ms=opt(floats),
)
message_bus_entries = st.builds(
    ev.MessageBusLogEntry,
    id=ids,
    event_id=ids,
    timestamp=text,
    source=text,
    event_type=text,
    human_summary=text,
    severity=one_of(ev.Severity),
    category=text,
    created_at=text,
    correlation_id=opt(ids),
    transcript_entry_id=opt(ids),
    task_id=opt(ids),
    execution_id=opt(ids),
    payload=opt(json_dicts),
)

common = {
    "execution_id": ids,
    "timestamp": text,
    "seq": seqs,
    "span_id": opt(ids),
    "parent_span_id": opt(ids),
    "agent": opt(text),
}
usages = st.dictionaries(text, st.integers(0, 2**53), max_size=4)
messages = st.lists(json_dicts, max_size=3)
span_common = {k: v for k, v in common.items() if k != "span_id"}
STREAM_EVENTS: dict[str, st.SearchStrategy[Any]] = {
    "transcript:entry": st.builds(
        ev.TranscriptEntryEvent, entry=transcript_entries, is_latest=st.booleans(), **common
    ),
    "tool:start": st.builds(
        ev.ToolStartEvent,
        tool_use_id=ids,
        tool=text,
        input_summary=text,
        task_id=opt(ids),
        **common,
    ),
    "tool:end": st.builds(
        ev.ToolEndEvent,
        tool_use_id=ids,
        result_status=one_of(ev.ToolResultStatus),
        duration_ms=floats,
        output_summary=opt(text),
        is_error=opt(st.booleans()),
        is_blocked=opt(st.booleans()),
        **common,
    ),
    "tool:output": st.builds(
        ev.ToolOutputEvent, tool_use_id=ids, chunk=text, is_stderr=st.booleans(), **common
    ),
    "assertion:result": st.builds(
        ev.AssertionResultEvent,
        task_id=ids,
        assertion=assertion_results,
        running_pass_rate=st.floats(0, 1),
        **common,
    ),
    "skill:start": st.builds(
        ev.SkillStartEvent,
        skill_trace_id=ids,
        skill_name=text,
        skill_file=text,
        line_number=ints,
        task_id=opt(ids),
        **common,
    ),
    "skill:end": st.builds(
        ev.SkillEndEvent,
        skill_trace_id=ids,
        skill_name=text,
        status=one_of(ev.SkillStatus),
        duration_ms=floats,
        **common,
    ),
    "messagebus:event": st.builds(
        ev.MessageBusEvent, entry=message_bus_entries, requires_action=st.booleans(), **common
    ),
    "wave:status": st.builds(
        ev.WaveStatusEvent,
        wave_number=ints,
        status=one_of(ev.WaveState),
        task_count=ints,
        completed_count=ints,
        failed_count=ints,
        **common,
    ),
    "agent:heartbeat": st.builds(
        ev.AgentHeartbeatEvent,
        instance_id=ids,
        status=one_of(ev.AgentState),
        current_task_id=opt(ids),
        metrics=opt(st.dictionaries(text, floats, max_size=4)),
        **common,
    ),
    "execution:status": st.builds(
        ev.ExecutionStatusEvent,
        status=one_of(ev.ExecutionState),
        message=opt(text),
        output=opt(text),
        usage=opt(usages),
        **common,
    ),
    "span:start": st.builds(
        ev.SpanStartEvent,
        span_id=ids,
        kind=one_of(ev.SpanKind),
        name=text,
        task_id=opt(ids),
        operation=opt(text),
        model=opt(text),
        provider=opt(text),
        conversation_id=opt(text),
        input_messages=opt(messages),
        system_instructions=opt(messages),
        details=opt(json_dicts),
        **span_common,
    ),
    "span:end": st.builds(
        ev.SpanEndEvent,
        span_id=ids,
        state=one_of(ev.SpanEndState),
        duration_ms=opt(floats),
        kind=opt(one_of(ev.SpanKind)),
        name=opt(text),
        model=opt(text),
        usage=opt(usages),
        finish_reasons=opt(st.lists(text, max_size=3)),
        input_messages=opt(messages),
        output_messages=opt(messages),
        output=opt(text),
        cut=opt(st.integers(0, 2**40)),
        error=opt(text),
        details=opt(json_dicts),
        **span_common,
    ),
    "watch:alert": st.builds(
        ev.WatchAlertEvent,
        alert_id=ids,
        alert=one_of(ev.AlertKind),
        since=text,
        message=text,
        instance_id=opt(ids),
        tool_use_id=opt(ids),
        inferred=st.booleans(),
        **common,
    ),
    "watch:clear": st.builds(ev.WatchClearEvent, alert_id=ids, message=text, **common),
}
any_stream_event = st.one_of(*STREAM_EVENTS.values())


def test_every_stream_event_type_has_a_strategy() -> None:
    assert set(STREAM_EVENTS) == set(ev.STREAM_EVENT_TYPES)
    assert len(ev.PLAN_EVENT_TYPES) == 11 and set(STREAM_EVENTS) > ev.PLAN_EVENT_TYPES


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", sorted(STREAM_EVENTS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_stream_event_round_trip(kind: str, data: st.DataObject) -> None:
    event = data.draw(STREAM_EVENTS[kind])
    wire = encode(event)
    assert decode_stream_event(wire) == event
    assert decode_server_event(wire) == event
    assert orjson.loads(wire)["type"] == kind


@pytest.mark.parametrize("kind", sorted(STREAM_EVENTS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_plain_encoding_is_byte_for_byte_the_converters(kind: str, data: st.DataObject) -> None:
    # encode() unstructures stream events by generated code (issue 25): same bytes as cattrs.
    event = data.draw(STREAM_EVENTS[kind])
    assert encode(event) == orjson.dumps(converter.unstructure(event)) == encode_kept(event)


_ODD_VALUES: list[Any] = [
    None, 0, -1, 1.5, True, False, "", "x", "done", "2026-01-31T12:00:00+02:00", [], ["x"],
    {}, {"a": 1}, 2**70,
]  # fmt: skip


def _variants(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """``obj``, and copies with one key gone or holding an odd value (records too)."""
    out = [obj]
    for key, value in obj.items():
        out.append({k: v for k, v in obj.items() if k != key})
        out += [{**obj, key: odd} for odd in _ODD_VALUES]
        if isinstance(value, dict):
            out += [{**obj, key: inner} for inner in _variants(value)[1:]]
    return out


def _outcome(fn: Any, obj: Any) -> Any:
    try:
        return fn(obj)
    except Exception:
        return "refused"


@pytest.mark.parametrize("kind", sorted(STREAM_EVENTS))
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_plain_structuring_takes_only_what_the_converter_takes(
    kind: str, data: st.DataObject
) -> None:
    # The ingest path's generated structuring (issue 25): whatever it accepts, the converter
    # accepts as an equal event; whatever it refuses goes to the converter, which decides.
    cls = ev.STREAM_EVENT_TYPES[kind]
    wire = orjson.loads(encode(data.draw(STREAM_EVENTS[kind])))
    for posted in (False, True):
        fast = wire_module._PLAIN_STRUCTURE[posted][cls]
        slow = wire_module._fast_posted if posted else wire_module._fast
        for variant in _variants(wire):
            got = _outcome(fast, variant)
            if got != "refused":
                assert got == slow.structure(variant, cls)
    assert _outcome(wire_module._PLAIN_STRUCTURE[False][cls], wire) != "refused"


@pytest.mark.parametrize("posted", [False, True])
def test_plain_structuring_runs_the_validators_as_init_does(posted: bool) -> None:
    # It sets the slots itself (issue 25): a value attrs' validators refuse is refused.
    fast = wire_module._PLAIN_STRUCTURE[posted]
    end = {"executionId": "e", "toolUseId": "t", "resultStatus": "done", "durationMs": 1.5}
    assert fast[ev.ToolEndEvent](end) == ev.ToolEndEvent(
        execution_id="e", tool_use_id="t", result_status="done", duration_ms=1.5
    )
    with pytest.raises(ValueError, match="finite"):
        fast[ev.ToolEndEvent]({**end, "durationMs": math.inf})
    beat = {"executionId": "e", "instanceId": "i", "status": "idle", "metrics": {"x": math.nan}}
    with pytest.raises(ValueError, match="finite"):
        fast[ev.AgentHeartbeatEvent](beat)
    assert fast[ev.AgentHeartbeatEvent]({**beat, "metrics": {"x": 1}}).metrics == {"x": 1.0}


@settings(max_examples=100, deadline=None)
@given(record=st.one_of(transcript_entries, assertion_results, message_bus_entries))
def test_record_round_trip(record: Any) -> None:
    from trio_obs.core.wire import converter

    wire = orjson.dumps(converter.unstructure(record))
    assert converter.structure(orjson.loads(wire), type(record)) == record


def _assert_wire_shape(obj: Any, wire: dict[str, Any]) -> None:
    """Keys are the camelCase attribute names; None values (and an unset "" timestamp or
    execution, which the ledger fills when the event is stored) are left out, others kept."""
    expected = {
        camel(a.name)
        for a in attrs.fields(type(obj))
        if getattr(obj, a.name) is not None and not (a.default == "" and getattr(obj, a.name) == "")
    }
    assert set(wire) == expected
    for a in attrs.fields(type(obj)):
        value = getattr(obj, a.name)
        if attrs.has(type(value)):
            _assert_wire_shape(value, wire[camel(a.name)])


@settings(max_examples=200, deadline=None)
@given(event=any_stream_event)
def test_wire_keys_are_camel_case_type_first_and_absent_fields_left_out(event: Any) -> None:
    wire = orjson.loads(encode(event))
    assert next(iter(wire)) == "type"
    assert all("_" not in key for key in wire)
    _assert_wire_shape(event, wire)
    assert ("seq" in wire) == (event.seq is not None)
    if event.seq is not None:
        assert wire["seq"] == event.seq


# Keys of SPEC §2 (stream events) plus the record fields of OBS-603/605/607.
SPEC_EVENT_KEYS = {
    "type",
    "timestamp",
    "executionId",
    "toolUseId",
    "inputSummary",
    "resultStatus",
    "durationMs",
    "outputSummary",
    "isError",
    "isBlocked",
    "chunk",
    "isStderr",
    "taskId",
    "assertion",
    "runningPassRate",
    "skillTraceId",
    "skillName",
    "skillFile",
    "lineNumber",
    "entry",
    "requiresAction",
    "waveNumber",
    "taskCount",
    "completedCount",
    "failedCount",
    "instanceId",
    "currentTaskId",
    "metrics",
    "status",
    "message",
    "isLatest",
    "tool",
    "seq",
}


def _full_tool_end() -> ev.ToolEndEvent:
    return ev.ToolEndEvent(
        execution_id="e1",
        tool_use_id="tu1",
        result_status="error",
        duration_ms=12.5,
        output_summary="boom",
        is_error=True,
        is_blocked=False,
        timestamp="2025-01-01T00:00:00.000Z",
        seq=7,
    )


def test_exact_wire_keys_of_a_full_and_a_minimal_event() -> None:
    full = to_wire(_full_tool_end())
    assert next(iter(full)) == "type"
    assert set(full) == {
        "type",
        "executionId",
        "toolUseId",
        "resultStatus",
        "durationMs",
        "outputSummary",
        "isError",
        "isBlocked",
        "timestamp",
        "seq",
    }
    assert set(full) <= SPEC_EVENT_KEYS
    minimal = to_wire(
        ev.ToolEndEvent(
            execution_id="e1", tool_use_id="tu1", result_status="done", duration_ms=1, timestamp="t"
        )
    )
    assert next(iter(minimal)) == "type"
    assert set(minimal) == {
        "type",
        "executionId",
        "toolUseId",
        "resultStatus",
        "durationMs",
        "timestamp",
    }
    unstamped = ev.ToolEndEvent(
        execution_id="e1", tool_use_id="t", result_status="done", duration_ms=1
    )
    assert "timestamp" not in to_wire(unstamped)  # the ledger stamps it when it is stored


def test_nested_record_keys_are_camel_case() -> None:
    entry = ev.TranscriptEntry(
        id="t1",
        timestamp="ts",
        sequence=3,
        execution_id="e1",
        instance_id="i1",
        entry_type="phase_start",
        category="lifecycle",
        summary="Starting",
        task_id="task-1",
        wave_number=2,
        details={"snake_key": 1},
        duration_ms=5.0,
    )
    wire = to_wire(ev.TranscriptEntryEvent(execution_id="e1", entry=entry))
    assert set(wire["entry"]) == {
        "id",
        "timestamp",
        "sequence",
        "executionId",
        "instanceId",
        "entryType",
        "category",
        "summary",
        "taskId",
        "waveNumber",
        "details",
        "durationMs",
    }
    # Free-form JSON is passed through untouched, not camel-cased.
    assert wire["entry"]["details"] == {"snake_key": 1}
    assert set(wire) <= SPEC_EVENT_KEYS


def test_boolean_flags_with_defaults_are_always_present() -> None:
    out = to_wire(ev.ToolOutputEvent(execution_id="e1", tool_use_id="tu", chunk="x"))
    assert out["isStderr"] is False
    entry = ev.TranscriptEntry(
        id="t",
        timestamp="ts",
        sequence=1,
        execution_id="e1",
        instance_id="i",
        entry_type="x",
        category="c",
        summary="s",
    )
    assert to_wire(ev.TranscriptEntryEvent(execution_id="e1", entry=entry))["isLatest"] is True
    assert (
        to_wire(ev.TranscriptEntryEvent(execution_id="e1", entry=entry, is_latest=False))[
            "isLatest"
        ]
        is False
    )
    status = to_wire(ev.ExecutionStatusEvent(execution_id="e1", status="running"))
    assert "message" not in status
    assert "seq" not in status


# --------------------------------------------------------------------------- client messages


def _client_error(body: Any, code: str) -> InvalidInput:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(InvalidInput) as info:
        parse_client_message(raw)
    assert info.value.code == code, str(info.value)
    return info.value


def test_parse_ping() -> None:
    assert parse_client_message(b'{"type":"ping"}') == ev.Ping()
    assert encode_client_message(ev.Ping()) == b'{"type":"ping"}'


def test_parse_subscribe_with_filters() -> None:
    msg = parse_client_message(
        orjson.dumps(
            {
                "action": "subscribe",
                "topic": "tools",
                "filters": {
                    "tools": ["Read", "Bash"],
                    "taskId": "task-1",
                    "severity": ["error", "critical"],
                    "entryTypes": [],
                    "categories": None,
                },
            }
        )
    )
    assert msg == ev.Subscribe(
        topic="tools",
        filters=ev.FilterUpdate(
            {
                "tools": frozenset({"Read", "Bash"}),
                "task_id": "task-1",
                "severity": frozenset({"error", "critical"}),
                "entry_types": None,
                "categories": None,
            }
        ),
    )
    assert parse_client_message(encode_client_message(msg)) == msg


def test_parse_subscribe_and_unsubscribe_without_filters() -> None:
    assert parse_client_message(b'{"action":"subscribe","topic":"all"}') == ev.Subscribe(
        topic="all"
    )
    msg = parse_client_message(b'{"action":"unsubscribe","topic":"waves","executionId":"e1"}')
    assert msg == ev.Unsubscribe(topic="waves", execution_id="e1")
    assert parse_client_message(encode_client_message(msg)) == msg


def test_parse_refuses_bad_messages() -> None:
    assert "not valid JSON" in str(_client_error(b"{{", "INVALID_MESSAGE"))
    assert "JSON object" in str(_client_error([1, 2], "INVALID_MESSAGE"))
    err = _client_error({"action": "explode", "topic": "all"}, "INVALID_MESSAGE")
    assert "explode" in str(err)
    assert "'pong'" in str(_client_error({"type": "pong"}, "INVALID_MESSAGE"))
    _client_error({}, "INVALID_MESSAGE")


def test_parse_refuses_unknown_or_missing_topic() -> None:
    assert "nope" in str(_client_error({"action": "subscribe", "topic": "nope"}, "INVALID_TOPIC"))
    _client_error({"action": "subscribe"}, "INVALID_TOPIC")
    _client_error({"action": "unsubscribe", "topic": 5}, "INVALID_TOPIC")


@pytest.mark.parametrize(
    ("filters", "named"),
    [
        ({"colour": ["red"]}, "colour"),
        ({"tools": "Read"}, "tools"),
        ({"tools": [1, 2]}, "tools"),
        ({"taskId": 5}, "taskId"),
        ({"taskId": ""}, "taskId"),
        ({"severity": ["loud"]}, "loud"),
        ("tools", "filters"),
    ],
)
def test_parse_refuses_bad_filters(filters: Any, named: str) -> None:
    err = _client_error(
        {"action": "subscribe", "topic": "all", "filters": filters}, "INVALID_FILTER"
    )
    assert named in str(err)


# --------------------------------------------------------------------------- server events


@pytest.mark.parametrize(
    "event",
    [
        ev.ConnectedEvent(
            execution_id="e1", message="Connected to execution e1", buffered_event_count=3
        ),
        ev.SubscribedEvent(topic="tools", execution_id="e1"),
        ev.SubscribedEvent(topic="all"),
        ev.UnsubscribedEvent(topic="waves"),
        ev.ErrorEvent(error="unknown topic 'x'", code="INVALID_TOPIC"),
        ev.PongEvent(),
    ],
    ids=lambda e: e.type,
)
def test_decode_server_event_for_connection_events(event: Any) -> None:
    wire = encode(event)
    assert decode_server_event(wire) == event
    assert next(iter(orjson.loads(wire))) == "type"


def test_connection_event_wire_keys() -> None:
    connected = ev.ConnectedEvent(
        execution_id="all", message="m", buffered_event_count=0, timestamp="t"
    )
    assert list(to_wire(connected)) == [
        "type",
        "executionId",
        "message",
        "bufferedEventCount",
        "timestamp",
    ]
    assert "executionId" not in to_wire(ev.SubscribedEvent(topic="all"))
    assert list(to_wire(ev.PongEvent(timestamp="t"))) == ["type", "timestamp"]
    with_epoch = to_wire(attrs.evolve(connected, epoch="e"))
    assert list(with_epoch) == [*list(to_wire(connected))[:-1], "epoch", "timestamp"]
    reset = ev.ResetEvent(epoch="e2", last_seq=7, timestamp="t")
    assert to_wire(reset) == {
        "type": "observability:reset",
        "epoch": "e2",
        "lastSeq": 7,
        "timestamp": "t",
    }


def test_decode_server_event_refuses_a_broken_connection_event() -> None:
    with pytest.raises(InvalidInput) as info:
        decode_server_event(b'{"type":"observability:connected","executionId":"e1"}')
    assert info.value.code == "INVALID_MESSAGE"
    assert "bufferedEventCount" in str(info.value)


def test_an_event_the_server_sent_is_read_as_it_is_whatever_its_time() -> None:
    # Times are checked where producers post them (core.intake); a client still reads
    # what an older server stored before they were.
    stored = b'{"type":"execution:status","executionId":"e1","status":"running","seq":3,' \
             b'"timestamp":"yesterday"}'  # fmt: skip
    event = decode_stream_event(stored)
    assert (event.timestamp, event.seq) == ("yesterday", 3)
