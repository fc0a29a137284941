"""Posted batches (``core.intake``): decoded all or nothing, times made UTC, unknown fields said."""

from __future__ import annotations

import typing
from typing import Any

import attrs
import orjson
import pytest

from trio_obs.core import events as ev
from trio_obs.core.errors import InvalidInput
from trio_obs.core.intake import decode_batch, decode_events
from trio_obs.core.ledger import complete
from trio_obs.core.protocol import GLOBAL, MAX_WARNINGS
from trio_obs.core.times import utc_time
from trio_obs.core.wire import camel, encode

# --------------------------------------------------------------------------- decode_events


def _status(**extra: Any) -> dict[str, Any]:
    return {"type": "execution:status", "executionId": "e1", "status": "running", **extra}


def _raises(body: Any, code: str) -> InvalidInput:
    raw = body if isinstance(body, bytes | str) else orjson.dumps(body)
    with pytest.raises(InvalidInput) as info:
        decode_events(raw)
    assert info.value.code == code, str(info.value)
    return info.value


def test_decode_single_object_and_array() -> None:
    [one] = decode_events(orjson.dumps(_status()))
    assert one == ev.ExecutionStatusEvent(
        execution_id="e1", status="running", timestamp=one.timestamp
    )
    many = decode_events(orjson.dumps([_status(), _status(status="completed", message="done")]))
    assert [(e.status, e.message) for e in many] == [("running", None), ("completed", "done")]  # type: ignore[union-attr]


def test_decode_ignores_seq_and_leaves_a_missing_timestamp_to_the_ledger() -> None:
    [event] = decode_events(orjson.dumps(_status(seq=99)))
    assert event.seq is None
    assert event.timestamp == ""  # stamped when stored: tests/core/test_ledger.py
    [kept] = decode_events(orjson.dumps(_status(timestamp="2025-01-01T00:00:00.000Z")))
    assert kept.timestamp == "2025-01-01T00:00:00.000Z"


def test_decode_rejects_bad_bodies() -> None:
    assert "empty array" in str(_raises(b"[]", "INVALID_EVENT"))
    assert "not valid JSON" in str(_raises(b"{nope", "INVALID_EVENT"))
    assert "JSON object" in str(_raises(b"5", "INVALID_EVENT"))
    assert "JSON object" in str(_raises(b'"text"', "INVALID_EVENT"))
    err = _raises({"type": "tool:explode", "executionId": "e1"}, "INVALID_EVENT")
    assert "tool:explode" in str(err) and "tool:start" in str(err)
    assert "unknown type" in str(_raises({"executionId": "e1"}, "INVALID_EVENT"))
    # An empty executionId is the ledger's to refuse (tests/core/test_ledger.py).


def test_decode_names_a_missing_field_in_camel_case() -> None:
    body = {"type": "tool:start", "executionId": "e1", "toolUseId": "tu1", "tool": "Read"}
    err = _raises(body, "INVALID_EVENT")
    assert "inputSummary" in str(err)
    assert "input_summary" not in str(err)


def test_decode_names_a_missing_nested_field_in_camel_case() -> None:
    entry = {
        "id": "t1",
        "timestamp": "2025-01-01T00:00:00.000Z",
        "sequence": 1,
        "executionId": "e1",
        "instanceId": "i",
        "category": "c",
        "summary": "s",
    }
    body = {"type": "transcript:entry", "executionId": "e1", "entry": entry}
    err = _raises(body, "INVALID_EVENT")
    assert "entry.entryType" in str(err)


def test_decode_refuses_a_string_for_an_int() -> None:
    body = {
        "type": "skill:start",
        "executionId": "e1",
        "skillTraceId": "s1",
        "skillName": "n",
        "skillFile": "f.md",
        "lineNumber": "5",
    }
    err = _raises(body, "INVALID_EVENT")
    assert "lineNumber" in str(err)
    assert "int" in str(err)


@pytest.mark.parametrize(
    ("field", "value"),
    [("durationMs", "12"), ("durationMs", True), ("isError", 1), ("toolUseId", 5)],
)
def test_decode_refuses_wrong_json_types(field: str, value: Any) -> None:
    body = {
        "type": "tool:end",
        "executionId": "e1",
        "toolUseId": "tu1",
        "resultStatus": "done",
        "durationMs": 3,
        field: value,
    }
    assert field in str(_raises(body, "INVALID_EVENT"))


def test_decode_refuses_a_bad_literal_value() -> None:
    body = {
        "type": "tool:end",
        "executionId": "e1",
        "toolUseId": "tu1",
        "resultStatus": "nope",
        "durationMs": 3,
    }
    err = _raises(body, "INVALID_EVENT")
    assert "resultStatus" in str(err)
    assert "'nope'" in str(err)
    assert "'done'" in str(err)


def test_decode_is_all_or_nothing_and_names_the_bad_index() -> None:
    body = [_status(), _status(), _status(status="exploded")]
    err = _raises(body, "INVALID_EVENT")
    assert "event 2" in str(err)
    assert "status" in str(err)


def test_decode_message_bus_leaves_its_stream_to_the_ledger() -> None:
    entry = {
        "id": "m1",
        "eventId": "ev1",
        "timestamp": "2025-01-01T00:00:00.000Z",
        "source": "bus",
        "eventType": "x",
        "humanSummary": "h",
        "severity": "info",
        "category": "c",
        "createdAt": "2025-01-01T00:00:00.000Z",
    }
    [event] = decode_events(orjson.dumps({"type": "messagebus:event", "entry": entry}))
    assert event.execution_id == ""  # the ledger routes it to global
    assert complete(event, "now").execution_id == GLOBAL
    owned = {**entry, "executionId": "e7"}
    [event] = decode_events(orjson.dumps({"type": "messagebus:event", "entry": owned}))
    assert complete(event, "now").execution_id == "e7"
    for bad_id in ([], {}, None, 5):
        body = {"type": "messagebus:event", "executionId": bad_id, "entry": entry}
        assert "executionId" in str(_raises(body, "INVALID_EVENT"))
    bad = {**entry, "severity": "loud"}
    assert "entry.severity" in str(
        _raises({"type": "messagebus:event", "entry": bad}, "INVALID_EVENT")
    )


# --------------------------------------------------------------------------- times

CANONICAL = "2026-03-08T09:30:00.250Z"


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (CANONICAL, CANONICAL),
        ("2026-03-08T01:30:00.250-08:00", CANONICAL),
        ("2026-03-08T11:30:00.250+02:00", CANONICAL),
        ("2026-03-08T09:30:00.250+00:00", CANONICAL),
        ("2026-03-08T09:30:00.250999Z", CANONICAL),  # microseconds: cut to milliseconds
        ("2026-03-08T09:30:00Z", "2026-03-08T09:30:00.000Z"),  # no fraction
        ("2026-03-08T09:30:00", "2026-03-08T09:30:00.000Z"),  # no offset: taken as UTC
        ("2026-03-08 09:30:00.250Z", CANONICAL),
        ("2026-03-07T23:30:00-10:00", "2026-03-08T09:30:00.000Z"),  # across midnight
        ("20260308T093000.25Z", CANONICAL),  # the basic format
    ],
)
def test_times_with_offsets_fractions_or_none_are_stored_in_utc(sent: str, stored: str) -> None:
    assert utc_time(sent) == stored


@pytest.mark.parametrize(
    "sent",
    ["yesterday", "2026-13-45T99:99:99Z", "2026-02-30T00:00:00.000Z", "2026-03-08T24:00:00.000Z",
     "2026-03-08", "", "12:00", "2026-03-08T09:30:00.250Zjunk", "0001-01-01T00:00:00+01:00",
     "\uff12\uff10\uff12\uff16-03-08T09:30:00Z"],
)  # fmt: skip
def test_what_is_not_an_iso_8601_date_and_time_is_refused(sent: str) -> None:
    assert utc_time(sent) is None


def test_a_canonical_time_is_kept_as_it_came() -> None:
    assert utc_time(CANONICAL) is CANONICAL  # the fast path builds nothing


def test_stored_times_sort_as_strings_in_time_order() -> None:
    sent = ["2026-03-08T03:00:00-08:00", "2026-03-08T12:00:00Z", "2026-03-08T12:30:00+02:00"]
    stored = [utc_time(t) for t in sent]  # 11:00, 12:00 and 10:30 UTC
    assert sorted(stored) == [stored[2], stored[0], stored[1]]  # type: ignore[type-var]


def _entry(**extra: Any) -> dict[str, Any]:
    return {"id": "t1", "timestamp": CANONICAL, "sequence": 1, "executionId": "e1",
            "instanceId": "i", "entryType": "tool_use", "category": "c", "summary": "s",
            **extra}  # fmt: skip


def _transcript(**entry: Any) -> dict[str, Any]:
    return {"type": "transcript:entry", "executionId": "e1", "entry": _entry(**entry)}


def _assertion(**record: Any) -> dict[str, Any]:
    assertion = {"id": "a1", "taskId": "t1", "executionId": "e1", "category": "tests",
                 "description": "d", "result": "pass", "timestamp": CANONICAL,
                 **record}  # fmt: skip
    return {"type": "assertion:result", "executionId": "e1", "taskId": "t1",
            "assertion": assertion}  # fmt: skip


def _bus(**record: Any) -> dict[str, Any]:
    entry = {"id": "m1", "eventId": "ev1", "timestamp": CANONICAL, "source": "bus",
             "eventType": "x", "humanSummary": "h", "severity": "info", "category": "c",
             "createdAt": CANONICAL, **record}  # fmt: skip
    return {"type": "messagebus:event", "entry": entry}


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (_status(timestamp="yesterday"), "timestamp"),
        (_status(timestamp="2026-13-45T99:99:99Z"), "timestamp"),
        (_transcript(timestamp="yesterday"), "entry.timestamp"),
        (_transcript(timestamp=""), "entry.timestamp"),  # a record's time is required
        (_assertion(timestamp="2026-13-45T99:99:99Z"), "assertion.timestamp"),
        (_bus(timestamp="soon"), "entry.timestamp"),
        (_bus(createdAt="2026-03-08"), "entry.createdAt"),
    ],
)
def test_a_time_that_is_not_iso_8601_refuses_the_batch_naming_event_and_field(
    event: dict[str, Any], field: str
) -> None:
    err = str(_raises([_status(), event], "INVALID_EVENT"))
    assert err.startswith(f"event 1 ({event['type']}) is invalid: expected an ISO-8601 date")
    assert err.endswith(f" @ $.{field}")


def test_every_time_of_a_posted_event_and_its_records_is_stored_in_utc() -> None:
    offset = "2026-03-08T01:30:00.250-08:00"
    transcript, assertion, bus = decode_events(orjson.dumps([
        {**_transcript(timestamp=offset), "timestamp": offset},
        _assertion(timestamp=offset),
        _bus(timestamp=offset, createdAt="2026-03-08T09:30:00.250Z"),
    ]))  # fmt: skip
    assert isinstance(transcript, ev.TranscriptEntryEvent)
    assert (transcript.timestamp, transcript.entry.timestamp) == (CANONICAL, CANONICAL)
    assert isinstance(assertion, ev.AssertionResultEvent)
    assert assertion.assertion.timestamp == CANONICAL
    assert isinstance(bus, ev.MessageBusEvent)
    assert (bus.entry.timestamp, bus.entry.created_at) == (CANONICAL, CANONICAL)


# --------------------------------------------------------------------------- unknown fields


def test_an_unknown_field_is_no_refusal_but_a_warning_naming_event_and_field() -> None:
    batch = decode_batch(orjson.dumps([_status(), _status(taskID="T-1", colour="blue")]))
    assert len(batch.events) == 2
    assert batch.warnings() == [
        "event 1 (execution:status): unknown field 'taskID' ignored",
        "event 1 (execution:status): unknown field 'colour' ignored",
    ]


def test_a_near_miss_of_a_known_field_is_named() -> None:
    body = {"type": "tool:start", "executionId": "e1", "toolUseId": "t", "tool": "Bash",
            "inputSummary": "ls", "taskID": "T-1", "tool_use_id": "t",
            "inputSumary": "ls"}  # fmt: skip
    batch = decode_batch(orjson.dumps(body))
    assert batch.warnings() == [
        "event (tool:start): unknown field 'taskID' ignored; did you mean 'taskId'?",
        "event (tool:start): unknown field 'tool_use_id' ignored; did you mean 'toolUseId'?",
        "event (tool:start): unknown field 'inputSumary' ignored; did you mean 'inputSummary'?",
    ]
    assert batch.events[0].task_id is None  # type: ignore[union-attr]  # not guessed: said


def test_unknown_fields_inside_records_are_named_by_their_path() -> None:
    batch = decode_batch(orjson.dumps([_transcript(taskID="T-1"), _bus(severty="info")]))
    assert batch.warnings() == [
        "event 0 (transcript:entry): unknown field 'entry.taskID' ignored; "
        "did you mean 'entry.taskId'?",
        "event 1 (messagebus:event): unknown field 'entry.severty' ignored; "
        "did you mean 'entry.severity'?",
    ]


def test_what_the_server_computes_is_dropped_without_a_warning() -> None:
    body = _status(requiresAction=True, seq=7)
    assert decode_batch(orjson.dumps(body)).warnings() == []


def test_warnings_are_bounded_and_count_the_rest() -> None:
    body = [_status(**{f"x{i}": 1 for i in range(3)}) for _ in range(MAX_WARNINGS)]
    warnings = decode_batch(orjson.dumps(body)).warnings()
    assert len(warnings) == MAX_WARNINGS + 1
    assert warnings[-1] == f"and {2 * MAX_WARNINGS} more unknown field(s), not listed"


def _full(cls: type) -> Any:
    """An instance of ``cls`` with every field set (so every key is on the wire)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in attrs.fields(cls):
        if not field.init:
            continue
        kind = hints[field.name]
        options = [t for t in typing.get_args(kind) if t is not type(None)]
        if typing.get_origin(kind) is not typing.Literal and options and len(options) == 1:
            kind = options[0]  # X | None
        values[field.name] = _value(field.name, kind)
    return cls(**values)


def _value(name: str, kind: Any) -> Any:
    if name in ("timestamp", "created_at"):
        return CANONICAL
    if typing.get_origin(kind) is typing.Literal:
        return typing.get_args(kind)[0]
    if attrs.has(kind):
        return _full(kind)
    samples: dict[Any, Any] = {str: "x", int: 1, float: 1.5, bool: True, Any: "x"}
    if typing.get_origin(kind) is dict:  # metrics, usage, details...: one entry of its kind
        return {"k": samples[typing.get_args(kind)[1]]}
    if typing.get_origin(kind) is list:
        return [_value(name, typing.get_args(kind)[0])]
    return samples[kind]


@pytest.mark.parametrize("kind", sorted(ev.STREAM_EVENT_TYPES))
def test_every_field_of_every_event_type_is_known(kind: str) -> None:
    # Read from the attrs classes: a field or event type added there is known at once.
    event = _full(ev.STREAM_EVENT_TYPES[kind])
    wire = orjson.loads(encode(event))
    assert set(wire) == {camel(a.name) for a in attrs.fields(type(event))}
    batch = decode_batch(orjson.dumps(wire))
    assert batch.warnings() == []
    # seq, pos and requiresAction are the server's to decide: a producer's are dropped.
    posted = {"seq": None, "pos": None}
    posted |= {"requires_action": False} if kind == "messagebus:event" else {}
    assert batch.events == [attrs.evolve(event, **posted)]


def test_an_array_decodes_each_event_as_one_posted_alone_would() -> None:
    # The array's inline path (issue 25) and the single event's path agree, also on what
    # takes the slow path: a producer's seq and pos, requiresAction, a null timestamp.
    events = [
        _status(timestamp="2026-03-08T11:30:00.250+02:00", seq=4, pos=9),
        _status(timestamp="2026-03-08T11:30:00.250+02:00"),  # the same time again
        _status(requiresAction=True, timestamp=None),
        {"type": "tool:end", "executionId": "e1", "toolUseId": "t", "resultStatus": "done",
         "durationMs": 5, "timestamp": "2026-03-08T09:30:00.250Z", "extra": 1},
    ]  # fmt: skip
    batch = decode_batch(orjson.dumps(events))
    assert batch.events == [decode_events(orjson.dumps(e))[0] for e in events]
    assert [e.timestamp for e in batch.events] == [CANONICAL, CANONICAL, "", CANONICAL]
    assert all(e.seq is None and e.pos is None for e in batch.events)
    assert batch.warnings() == ["event 3 (tool:end): unknown field 'extra' ignored"]


def test_a_bad_time_after_the_same_good_one_is_still_refused() -> None:
    good = _status(timestamp="2026-03-08T11:30:00.250+02:00")
    err = _raises([good, good, _status(timestamp="2026-03-08T24:00:00.000Z")], "INVALID_EVENT")
    assert "event 2" in str(err) and "timestamp" in str(err)
