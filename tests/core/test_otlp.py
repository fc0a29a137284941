"""The OTLP rule (SPEC §11): official OTLP messages in, stream events out, no sockets."""

from __future__ import annotations

from typing import Any

import attrs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from support import to_wire
from trio_obs.core import events as ev
from trio_obs.core.ledger import complete_batch
from trio_obs.core.otlp import LIVE_COPY, LIVE_SPAN, translate_logs, translate_traces
from trio_obs.core.otlp_memory import SpanMemory, Translation
from trio_obs.core.otlp_values import iso_of_nanos

NOW = "2030-01-01T00:00:00.000Z"
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
EXEC = TRACE.hex()
T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
MS = 1_000_000


def value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=pairs(v)))
    return AnyValue(string_value=v)


def pairs(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in attributes.items()]


def span(
    n: int,
    name: str,
    *,
    parent: int | None = None,
    start: int = 0,
    end: int | None = 10,
    error: str | None = None,
    events: list[Span.Event] | None = None,
    trace: bytes = TRACE,
    **attributes: Any,
) -> Span:
    """Span ``n`` (its id is ``n``), from ``start`` to ``end`` ms after T0 (None: in progress)."""
    return Span(
        trace_id=trace,
        span_id=n.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        start_time_unix_nano=T0 + start * MS,
        end_time_unix_nano=T0 + end * MS if end is not None else 0,
        attributes=pairs({k.replace("__", "."): v for k, v in attributes.items()}),
        status=Status(code=Status.STATUS_CODE_ERROR, message=error) if error is not None else None,
        events=events or [],
    )


def copy(s: Span, **attributes: Any) -> Span:
    out = Span()
    out.CopyFrom(s)
    out.attributes.extend(pairs(attributes))
    return out


def traces(*spans: Span, service: str = "agent-svc") -> ExportTraceServiceRequest:
    resource = Resource(attributes=pairs({"service.name": service}))
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )


def agent(n: int = 1, **kw: Any) -> Span:
    kw.setdefault("gen_ai__agent__name", "planner")
    kw.setdefault("gen_ai__conversation__id", "conv-7")
    return span(n, "invoke_agent planner", gen_ai__operation__name="invoke_agent", **kw)


def tool(n: int = 2, parent: int | None = 1, **kw: Any) -> Span:
    kw.setdefault("gen_ai__tool__name", "get_weather")
    kw.setdefault("gen_ai__tool__call__id", f"call_{n}")
    kw.setdefault("gen_ai__operation__name", "execute_tool")
    return span(n, "execute_tool get_weather", parent=parent, **kw)


def translate(request: ExportTraceServiceRequest, memory: SpanMemory | None = None) -> Translation:
    memory = memory if memory is not None else SpanMemory()
    t = translate_traces(request, memory, now=NOW)
    memory.learn(t)
    return t


def wire(t: Translation) -> list[dict[str, Any]]:
    # Every event is one the ledger accepts as a posted event would be.
    return [to_wire(e) for e in complete_batch(t.events, NOW)]


def types(t: Translation) -> list[str]:
    return [e.type for e in t.events]


# --------------------------------------------------------------------------- agents, tools


def test_an_exporters_child_first_batch_comes_out_in_the_order_it_happened() -> None:
    # BatchSpanProcessor sends spans as they end: the tool and the LLM call before the agent.
    t = translate(
        traces(
            tool(2, start=2, end=7, gen_ai__tool__call__arguments='{"city": "Paris"}',
                 gen_ai__tool__call__result="sunny, 21 C"),
            span(3, "chat gpt-4o", parent=1, start=8, end=9, gen_ai__operation__name="chat"),
            agent(1, start=0, end=10),
        )
    )  # fmt: skip
    assert t.rejected == 0 and t.message == ""
    events = wire(t)
    assert [e["type"] for e in events] == [
        "execution:status", "tool:start", "tool:end", "transcript:entry", "execution:status",
    ]  # fmt: skip
    started, start, end, _, completed = events
    assert {e["executionId"] for e in events} == {EXEC}
    assert started["status"] == "started"
    assert started["message"] == "planner started (conversation conv-7)"
    assert started["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert start == {
        "type": "tool:start", "executionId": EXEC, "toolUseId": "call_2", "tool": "get_weather",
        "inputSummary": '{"city": "Paris"}', "timestamp": "2023-11-14T22:13:20.002Z",
    }  # fmt: skip
    assert end == {
        "type": "tool:end", "executionId": EXEC, "toolUseId": "call_2", "resultStatus": "done",
        "durationMs": 5.0, "outputSummary": "sunny, 21 C", "isError": False, "isBlocked": False,
        "timestamp": "2023-11-14T22:13:20.007Z",
    }  # fmt: skip
    assert completed["status"] == "completed"
    assert completed["message"] == "planner completed (conversation conv-7)"
    assert completed["timestamp"] == "2023-11-14T22:13:20.010Z"


def test_a_tool_without_a_call_id_is_named_by_its_span_id_and_its_span_name() -> None:
    t = translate(traces(span(0xAB, "execute_tool search_docs")))
    start, end = wire(t)
    assert start["toolUseId"] == end["toolUseId"] == "00000000000000ab"
    assert start["tool"] == "search_docs"
    assert start["inputSummary"] == ""


def test_errors_fail_the_tool_and_the_execution() -> None:
    t = translate(traces(tool(2, error="timed out after 30 s"), agent(1, error="the tool failed")))
    events = {e["type"]: e for e in wire(t)}
    assert events["tool:end"]["resultStatus"] == "error"
    assert events["tool:end"]["isError"] is True
    assert events["tool:end"]["outputSummary"] == "timed out after 30 s"
    assert events["execution:status"]["status"] == "failed"
    assert events["execution:status"]["message"] == (
        "planner failed (conversation conv-7): the tool failed"
    )


def test_a_sub_agent_is_a_transcript_entry_and_only_the_outer_agent_ends_the_execution() -> None:
    t = translate(
        traces(
            agent(2, parent=1, start=1, end=5, gen_ai__agent__name="researcher"),
            agent(1, start=0, end=10),
        )
    )
    events = wire(t)
    assert [e["type"] for e in events] == [
        "execution:status", "transcript:entry", "transcript:entry", "execution:status",
    ]  # fmt: skip
    assert [e["entry"]["summary"] for e in events[1:3]] == [
        "agent researcher started (conversation conv-7)",
        "agent researcher completed (conversation conv-7)",
    ]
    assert {e["entry"]["entryType"] for e in events[1:3]} == {"invoke_agent"}
    assert events[2]["entry"]["details"]["parentAgent"] == "planner"


def test_an_agent_under_a_span_that_is_no_agent_is_the_execution() -> None:
    # e.g. Claude Code's `runner.start-build` root, or a web request's server span
    t = translate(traces(agent(2, parent=1), span(1, "POST /chat")))
    assert types(t) == ["execution:status", "execution:status", "transcript:entry"]
    assert [e.status for e in t.events if isinstance(e, ev.ExecutionStatusEvent)] == [
        "started",
        "completed",
    ]


# --------------------------------------------------------------------------- copies of one span


def test_the_live_processors_copies_give_one_start_and_one_end_even_on_different_nodes() -> None:
    marked = tool(2, end=None, **{LIVE_SPAN: True})
    ended = tool(2, **{LIVE_SPAN: True})
    start_copy = copy(marked, **{LIVE_COPY: "start"})
    end_copy = copy(ended, **{LIVE_COPY: "end"})
    exporters_copy = ended
    for order in (
        [start_copy, end_copy, exporters_copy],
        [exporters_copy, start_copy, end_copy],
        [start_copy, exporters_copy, end_copy],
    ):
        # Each copy reaches another node: nothing is shared but the spans themselves.
        got = [types(translate(traces(s), SpanMemory())) for s in order]
        assert sorted(t for each in got for t in each) == ["tool:end", "tool:start"], order
        assert got[order.index(exporters_copy)] == []


def test_an_unmarked_span_sent_twice_gives_its_events_once_per_server() -> None:
    memory = SpanMemory()
    request = traces(tool(2), agent(1))
    assert len(translate(request, memory).events) == 4
    assert translate(request, memory).events == []


def test_what_was_not_stored_is_not_remembered() -> None:
    memory = SpanMemory()
    request = traces(tool(2))
    first = translate_traces(request, memory, now=NOW)  # the store failed: no learn()
    assert types(first) == ["tool:start", "tool:end"]
    assert types(translate_traces(request, memory, now=NOW)) == ["tool:start", "tool:end"]


def test_an_in_progress_copy_then_the_ended_span_give_the_start_then_the_end() -> None:
    memory = SpanMemory()
    assert types(translate(traces(tool(2, end=None)), memory)) == ["tool:start"]
    assert types(translate(traces(tool(2)), memory)) == ["tool:end"]
    # a start that comes after its end says nothing new
    assert types(translate(traces(tool(2, end=None)), memory)) == []


def test_the_end_keeps_the_tool_use_id_its_start_had() -> None:
    memory = SpanMemory()
    (start,) = translate(traces(tool(2, end=None, gen_ai__tool__call__id="")), memory).events
    (end,) = translate(traces(tool(2, gen_ai__tool__call__id="call_late")), memory).events
    assert isinstance(start, ev.ToolStartEvent) and isinstance(end, ev.ToolEndEvent)
    assert start.tool_use_id == end.tool_use_id == "0000000000000002"


def test_a_start_and_its_end_in_one_request() -> None:
    marked = tool(2, **{LIVE_SPAN: True})
    start_copy = copy(tool(2, end=None, **{LIVE_SPAN: True}), **{LIVE_COPY: "start"})
    end_copy = copy(marked, **{LIVE_COPY: "end"})
    assert types(translate(traces(start_copy, end_copy))) == ["tool:start", "tool:end"]


def test_the_memory_is_bounded() -> None:
    memory = SpanMemory(size=2)
    for n in (2, 3, 4):
        translate(traces(tool(n)), memory)
    assert len(memory) == 2
    assert types(translate(traces(tool(2)), memory)) == ["tool:start", "tool:end"]  # forgotten
    assert translate(traces(tool(4)), memory).events == []  # remembered


# --------------------------------------------------------------------------- everything else


def test_an_llm_span_is_a_transcript_entry_with_model_and_usage() -> None:
    messages = '[{"role": "assistant", "parts": [{"type": "text", "content": "It is sunny."}]}]'
    t = translate(
        traces(
            agent(1, end=None),  # in progress: the chat span's entry still names its agent
            span(3, "chat claude-sonnet-4", parent=1, start=1, end=4,
                 gen_ai__operation__name="chat", gen_ai__request__model="claude-sonnet-4",
                 gen_ai__usage__input_tokens=120,
                 gen_ai__usage__output_tokens=8, gen_ai__output__messages=messages),
        )
    )  # fmt: skip
    (entry,) = [e["entry"] for e in wire(t) if e["type"] == "transcript:entry"]
    assert entry["entryType"] == "chat"
    assert entry["category"] == "llm"
    assert entry["instanceId"] == "planner"
    assert entry["summary"] == "chat claude-sonnet-4: It is sunny. (120 in, 8 out tokens)"
    assert entry["durationMs"] == 3.0
    assert entry["details"]["model"] == "claude-sonnet-4"
    assert entry["details"]["usage"] == {"input_tokens": 120, "output_tokens": 8}
    assert entry["details"]["spanId"] == "0000000000000003"
    assert entry["sequence"] == 1


def test_any_other_span_is_a_transcript_entry_of_its_own_type() -> None:
    t = translate(traces(span(5, "SELECT users", **{"db.system.name": "sqlite"})))
    (event,) = wire(t)
    assert event["type"] == "transcript:entry"
    entry = event["entry"]
    assert (entry["entryType"], entry["category"], entry["summary"]) == (
        "span",
        "span",
        "SELECT users",
    )
    assert entry["instanceId"] == "agent-svc"
    assert entry["details"]["attributes"] == {"db.system.name": "sqlite"}


def test_an_exception_event_is_an_error_on_the_message_bus() -> None:
    exception = Span.Event(
        name="exception",
        time_unix_nano=T0 + 3 * MS,
        attributes=pairs({"exception.type": "ValueError", "exception.message": "no city"}),
    )
    note = Span.Event(name="retry", time_unix_nano=T0 + 4 * MS)
    t = translate(traces(tool(2, error="no city", events=[exception, note])))
    events = wire(t)
    assert [e["type"] for e in events] == [
        "tool:start", "messagebus:event", "transcript:entry", "tool:end",
    ]  # fmt: skip
    bus = events[1]
    assert bus["executionId"] == EXEC
    assert bus["requiresAction"] is True
    assert bus["entry"]["severity"] == "error"
    assert bus["entry"]["humanSummary"] == "ValueError: no city (in execute_tool get_weather)"
    assert bus["entry"]["source"] == "agent-svc"
    assert events[2]["entry"]["entryType"] == "retry"


def test_bad_ids_are_refused_and_the_rest_is_taken() -> None:
    bad = span(2, "execute_tool x", trace=b"\x01\x02")
    zero = span(3, "execute_tool y", trace=bytes(16))
    t = translate(traces(bad, zero, tool(4)))
    assert t.rejected == 2
    assert t.message.startswith("2 of 3 spans refused: span 'execute_tool x': its trace id has 2")
    assert types(t) == ["tool:start", "tool:end"]


# --------------------------------------------------------------------------- logs


def logs(*records: LogRecord) -> ExportLogsServiceRequest:
    resource = Resource(attributes=pairs({"service.name": "agent-svc"}))
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=records)])]
    )


def test_log_records_are_transcript_entries_of_their_trace_or_global_messages() -> None:
    traced = LogRecord(
        time_unix_nano=T0 + 5 * MS,
        severity_number=13,
        severity_text="WARN",
        body=value("rate limited; retrying"),
        trace_id=TRACE,
        span_id=(2).to_bytes(8, "big"),
    )
    loose = LogRecord(severity_number=17, body=value({"msg": "disk full"}))
    bad = LogRecord(trace_id=b"\x01", body=value("?"))
    t = translate_logs(logs(traced, loose, bad), SpanMemory(), now=NOW)
    assert t.rejected == 1 and "log record 2" in t.message
    entry, message = wire(t)
    assert entry["type"] == "transcript:entry" and entry["executionId"] == EXEC
    assert entry["entry"]["entryType"] == "log"
    assert entry["entry"]["summary"] == "rate limited; retrying"
    assert entry["entry"]["details"]["severity"] == "WARN"
    assert entry["timestamp"] == "2023-11-14T22:13:20.005Z"
    assert message["type"] == "messagebus:event" and message["executionId"] == "global"
    assert message["entry"]["severity"] == "error"
    assert message["entry"]["humanSummary"] == '{"msg":"disk full"}'
    assert message["timestamp"] == NOW  # no time of its own


def test_times_are_iso_utc_milliseconds() -> None:
    assert iso_of_nanos(T0 + 1_234_567) == "2023-11-14T22:13:20.001Z"
    assert iso_of_nanos(0) is None


def test_details_stay_bounded() -> None:
    big = "x" * 10_000
    t = translate(traces(span(5, "work", blob=big, many=list(range(500)))))
    (event,) = t.events
    assert isinstance(event, ev.TranscriptEntryEvent)
    assert event.entry.details is not None
    kept = event.entry.details["attributes"]
    assert len(kept["blob"]) == 2000 and len(kept["many"]) == 100
    assert attrs.has(type(event))
