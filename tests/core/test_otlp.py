"""The OTLP rule (SPEC §11): official OTLP messages in, stream events out, no sockets."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
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


def kinds(t: Translation) -> list[tuple[str, str]]:
    """Each event's type and the span it opens or closes (or the status it says)."""
    out = []
    for e in wire(t):
        if e["type"] == "execution:status":
            out.append((e["type"], e["status"]))
        else:
            out.append((e["type"], e.get("spanId", "")[-2:]))
    return out


# ----------------------------------------------------------------- the root, the execution


def test_started_first_then_each_span_opened_and_closed_then_the_root_closes() -> None:
    # BatchSpanProcessor sends spans as they end: the tool and the LLM call before the agent.
    t = translate(
        traces(
            tool(2, start=2, end=7, gen_ai__tool__call__arguments='{"city": "Paris"}',
                 gen_ai__tool__call__result="sunny, 21 C"),
            span(3, "chat gpt-4o", parent=1, start=8, end=9, gen_ai__operation__name="chat",
                 gen_ai__request__model="gpt-4o"),
            agent(1, start=0, end=10),
        )
    )  # fmt: skip
    assert t.rejected == 0 and t.message == ""
    assert kinds(t) == [
        ("execution:status", "started"), ("tool:start", "02"), ("tool:end", "02"),
        ("span:start", "03"), ("span:end", "03"), ("execution:status", "completed"),
    ]  # fmt: skip
    started, start, end, chat, _, completed = wire(t)
    assert {e["executionId"] for e in wire(t)} == {EXEC}
    assert started["message"] == "planner started"
    assert started["spanId"] == "0000000000000001" and started["agent"] == "planner"
    assert started["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert start == {
        "type": "tool:start", "executionId": EXEC, "toolUseId": "0000000000000002",
        "tool": "get_weather", "inputSummary": '{"city": "Paris"}',
        "spanId": "0000000000000002", "parentSpanId": "0000000000000001", "agent": "planner",
        "timestamp": "2023-11-14T22:13:20.002Z",
    }  # fmt: skip
    assert end == {
        "type": "tool:end", "executionId": EXEC, "toolUseId": "0000000000000002",
        "resultStatus": "done", "durationMs": 5.0, "outputSummary": "sunny, 21 C",
        "isError": False, "isBlocked": False, "spanId": "0000000000000002",
        "parentSpanId": "0000000000000001", "agent": "planner",
        "timestamp": "2023-11-14T22:13:20.007Z",
    }  # fmt: skip
    assert (chat["kind"], chat["name"], chat["model"], chat["agent"]) == (
        "llm", "gpt-4o", "gpt-4o", "planner",
    )  # fmt: skip
    assert completed["message"] == "planner completed (conversation conv-7)"
    assert completed["spanId"] == "0000000000000001"
    assert completed["timestamp"] == "2023-11-14T22:13:20.010Z"


def test_started_is_at_the_earliest_start_even_without_the_root() -> None:
    t = translate(traces(tool(2, start=5, end=7), tool(3, start=3, end=4)))
    started = wire(t)[0]
    assert started["status"] == "started" and started["spanId"] == EXEC  # no root yet
    assert started["timestamp"] == "2023-11-14T22:13:20.003Z"
    # every request gives its candidate: the ledger keeps the first
    again = translate(traces(tool(4, start=8, end=9)))
    assert kinds(again)[0] == ("execution:status", "started")


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


def test_a_sub_agent_is_a_span_and_only_the_root_ends_the_execution() -> None:
    t = translate(
        traces(
            agent(3, parent=2, start=2, end=5, gen_ai__agent__name="researcher",
                  final_result="Paris: sunny", gen_ai__aggregated_usage__input_tokens=40),
            tool(2, start=1, end=6, gen_ai__tool__name="delegate_research"),
            agent(1, start=0, end=10, final_result="It is sunny",
                  gen_ai__aggregated_usage__input_tokens=90,
                  gen_ai__aggregated_usage__output_tokens=7),
        )
    )  # fmt: skip
    assert kinds(t) == [
        ("execution:status", "started"), ("tool:start", "02"), ("span:start", "03"),
        ("span:end", "03"), ("tool:end", "02"), ("execution:status", "completed"),
    ]  # fmt: skip
    events = wire(t)
    sub_start, sub_end = events[2], events[3]
    assert (sub_start["kind"], sub_start["name"], sub_start["agent"]) == (
        "agent", "researcher", "researcher",
    )  # fmt: skip
    assert sub_start["parentSpanId"] == "0000000000000002"
    assert events[1]["agent"] == "planner"  # the tool is the planner's
    assert sub_end["output"] == "Paris: sunny"
    assert "usage" not in sub_end  # an aggregate: never added to its model calls
    assert sub_end["details"]["aggregatedUsage"] == {"inputTokens": 40}
    completed = events[-1]
    assert completed["output"] == "It is sunny"
    assert completed["usage"] == {"inputTokens": 90, "outputTokens": 7}


def test_an_agent_under_a_span_that_is_no_agent_is_a_span_and_the_root_is_the_execution() -> None:
    # e.g. a web request's server span: the root is the execution, the agent a span in it
    t = translate(
        traces(agent(2, parent=1, start=1, end=8, final_result="done it"),
               span(1, "POST /chat", start=0, end=9))
    )  # fmt: skip
    assert kinds(t) == [
        ("execution:status", "started"), ("span:start", "02"), ("span:end", "02"),
        ("execution:status", "completed"),
    ]  # fmt: skip
    started, _, _, completed = wire(t)
    assert started["message"] == "planner started" and started["agent"] == "planner"
    # the outermost agent's result, its name in the message
    assert completed["output"] == "done it"
    assert completed["message"] == "planner completed"


def test_a_trace_without_an_agent_is_one_execution() -> None:
    t = translate(
        traces(span(2, "chat gpt-4o", parent=1, gen_ai__operation__name="chat"),
               span(3, "chat gpt-4o", parent=1, gen_ai__operation__name="chat"),
               span(1, "batch job"))
    )  # fmt: skip
    statuses = [e for e in wire(t) if e["type"] == "execution:status"]
    assert [s["status"] for s in statuses] == ["started", "completed"]
    assert statuses[1]["message"] == "batch job completed"
    assert {e["executionId"] for e in wire(t)} == {EXEC}


def test_a_root_that_ends_first_still_closes_with_its_children_open() -> None:
    # The closing status is a candidate: the ledger holds it while spans are open.
    memory = SpanMemory()
    first = translate(traces(agent(1, start=0, end=3), tool(2, start=1, end=None)), memory)
    assert kinds(first) == [
        ("execution:status", "started"), ("tool:start", "02"), ("execution:status", "completed"),
    ]  # fmt: skip
    later = translate(traces(tool(2, start=1, end=9)), memory)
    # what this server already stored is left out (the ledger would drop it anyway)
    assert kinds(later) == [("tool:end", "02")]
    assert wire(later)[0]["agent"] == "planner"  # remembered from the first request
    # another node, without this one's memory, gives every candidate
    elsewhere = translate(traces(tool(2, start=1, end=9)))
    assert kinds(elsewhere) == [
        ("execution:status", "started"), ("tool:start", "02"), ("tool:end", "02"),
    ]  # fmt: skip


def test_a_child_first_across_requests_names_its_parent_and_learns_its_agent_late() -> None:
    memory = SpanMemory()
    child = translate(traces(span(3, "chat m", parent=2, start=2, end=3,
                                  gen_ai__operation__name="chat")), memory)  # fmt: skip
    opened = wire(child)[1]
    assert opened["parentSpanId"] == "0000000000000002"  # a placeholder until it comes
    assert "agent" not in opened  # not known yet: the ledger fills it when the parent is
    parent = translate(traces(agent(2, parent=1, start=1, end=4)), memory)
    assert wire(parent)[1]["agent"] == "planner"


def test_a_missing_parent_is_kept_as_the_parent() -> None:
    t = translate(traces(tool(2, parent=0x99)))
    assert wire(t)[1]["parentSpanId"] == "0000000000000099"


# --------------------------------------------------------------------------- copies of one span


def test_every_copy_gives_its_candidates_and_the_live_exporters_copy_adds_nothing() -> None:
    marked = tool(2, end=None, **{LIVE_SPAN: True})
    ended = tool(2, **{LIVE_SPAN: True})
    start_copy = copy(marked, **{LIVE_COPY: "start"})
    end_copy = copy(ended, **{LIVE_COPY: "end"})
    assert [k for k, _ in kinds(translate(traces(start_copy)))] == [
        "execution:status", "tool:start",
    ]  # fmt: skip
    assert [k for k, _ in kinds(translate(traces(end_copy)))] == [
        "execution:status", "tool:start", "tool:end",
    ]  # fmt: skip
    assert translate(traces(ended)).events == []  # the exporter's copy of a live span


def test_a_logfire_pending_span_opens_the_real_span_under_its_real_parent() -> None:
    # Logfire sends, at each start, a pending span: its parent is the real span, and the
    # real span's parent is in logfire.pending_parent_id.
    pending = tool(0x77, parent=2, start=1, end=1, logfire__span_type="pending_span",
                   logfire__pending_parent_id="0000000000000001",
                   logfire__msg="running tool: get_weather")  # fmt: skip
    t = translate(traces(pending))
    assert kinds(t) == [("execution:status", "started"), ("tool:start", "02")]
    opened = wire(t)[1]
    assert opened["parentSpanId"] == "0000000000000001"
    assert opened["toolUseId"] == opened["spanId"] == "0000000000000002"
    root_pending = agent(0x78, parent=1, end=0, logfire__span_type="pending_span")
    assert kinds(translate(traces(root_pending))) == [("execution:status", "started")]


def test_what_was_not_stored_is_not_remembered() -> None:
    memory = SpanMemory()
    translate_traces(traces(agent(1, end=None)), memory, now=NOW)  # the store failed
    t = translate(traces(tool(2)), memory)
    assert "agent" not in wire(t)[1]
    assert kinds(translate(traces(tool(2)), memory)) == []  # this one was stored


def test_a_copy_this_server_stored_gives_nothing_again() -> None:
    memory = SpanMemory()
    request = traces(tool(2), agent(1))
    assert len(translate(request, memory).events) == 4
    assert translate(request, memory).events == []


def test_the_memory_is_bounded() -> None:
    memory = SpanMemory(size=2)
    for n in (2, 3, 4):
        translate(traces(tool(n)), memory)
    assert len(memory) == 2


# --------------------------------------------------------------------------- model calls


def test_a_model_call_opens_with_its_model_and_closes_with_usage_and_the_conversation() -> None:
    given = '[{"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}]'
    said = '[{"role": "assistant", "parts": [{"type": "text", "content": "It is sunny."}], "finish_reason": "stop"}]'  # noqa: E501
    t = translate(
        traces(
            agent(1, end=None),
            span(3, "chat claude-sonnet-4", parent=1, start=1, end=4,
                 gen_ai__operation__name="chat", gen_ai__request__model="claude-sonnet-4",
                 gen_ai__response__model="claude-sonnet-4-20250514",
                 gen_ai__provider__name="anthropic", gen_ai__usage__input_tokens=120,
                 gen_ai__usage__output_tokens=8, gen_ai__input__messages=given,
                 gen_ai__output__messages=said, gen_ai__system_instructions="Be brief."),
        )
    )  # fmt: skip
    _, start, end = wire(t)
    assert start["type"] == "span:start" and start["kind"] == "llm"
    assert (start["model"], start["provider"], start["agent"]) == (
        "claude-sonnet-4", "anthropic", "planner",
    )  # fmt: skip
    assert end["model"] == "claude-sonnet-4-20250514"
    assert end["usage"] == {"inputTokens": 120, "outputTokens": 8}
    assert end["finishReasons"] == ["stop"]
    assert end["inputMessages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}
    ]
    assert end["systemInstructions"] == [{"type": "text", "content": "Be brief."}]
    assert end["outputMessages"][0]["parts"] == [{"type": "text", "content": "It is sunny."}]
    assert end["output"] == "It is sunny."
    assert end["durationMs"] == 3.0 and end["state"] == "done"
    assert "gen_ai.input.messages" not in end["details"]["attributes"]


def test_a_conversation_over_256_kib_is_cut_from_the_middle_of_its_longest_message() -> None:
    long = "a" * 200_000 + "MIDDLE" + "z" * 200_000
    given = orjson.dumps([
        {"role": "user", "parts": [{"type": "text", "content": "short question"}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": long}]},
    ]).decode()  # fmt: skip
    t = translate(traces(span(3, "chat m", parent=1, gen_ai__operation__name="chat",
                              gen_ai__input__messages=given)))  # fmt: skip
    end = wire(t)[-1]
    size = len(orjson.dumps(end["inputMessages"]))
    assert size <= 256 * 1024
    kept = end["inputMessages"][1]["parts"][0]["response"]
    assert kept.startswith("aaa") and kept.endswith("zzz") and "MIDDLE" not in kept
    assert f"[{end['cut']} bytes cut]" in kept
    assert end["cut"] == len(long) - (
        len(kept.encode()) - len(f"\u2026[{end['cut']} bytes cut]\u2026".encode())
    )
    assert end["inputMessages"][0]["parts"][0]["content"] == "short question"


def test_any_other_span_is_a_span_with_its_attributes() -> None:
    t = translate(traces(span(5, "SELECT users", parent=1, **{"db.system.name": "sqlite"})))
    _, start, end = wire(t)
    assert (start["kind"], start["name"]) == ("span", "SELECT users")
    assert start["details"] == {
        "spanName": "SELECT users", "service": "agent-svc",
        "attributes": {"db.system.name": "sqlite"},
    }  # fmt: skip
    assert end["state"] == "done"


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
        "execution:status", "tool:start", "messagebus:event", "transcript:entry", "tool:end",
    ]  # fmt: skip
    bus = events[2]
    assert bus["executionId"] == EXEC and bus["spanId"] == "0000000000000002"
    assert bus["requiresAction"] is True
    assert bus["entry"]["severity"] == "error"
    assert bus["entry"]["humanSummary"] == "ValueError: no city (in execute_tool get_weather)"
    assert bus["entry"]["source"] == "agent-svc"
    assert events[3]["entry"]["entryType"] == "retry"
    assert events[3]["spanId"] == "0000000000000002"


def test_bad_ids_are_refused_and_the_rest_is_taken() -> None:
    bad = span(2, "execute_tool x", trace=b"\x01\x02")
    zero = span(3, "execute_tool y", trace=bytes(16))
    t = translate(traces(bad, zero, tool(4)))
    assert t.rejected == 2
    assert t.message.startswith("2 of 3 spans refused: span 'execute_tool x': its trace id has 2")
    assert types(t) == ["execution:status", "tool:start", "tool:end"]


# --------------------------------------------------------------------------- logs


def logs(*records: LogRecord) -> ExportLogsServiceRequest:
    resource = Resource(attributes=pairs({"service.name": "agent-svc"}))
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=records)])]
    )


def test_log_records_are_transcript_entries_of_their_span_or_global_messages() -> None:
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
    assert entry["spanId"] == "0000000000000002"
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
    t = translate(traces(span(5, "work", parent=1, blob=big, many=list(range(500)))))
    event = t.events[1]
    assert isinstance(event, ev.SpanStartEvent)
    assert event.details is not None
    kept = event.details["attributes"]
    assert len(kept["blob"]) == 2000 and len(kept["many"]) == 100
    assert attrs.has(type(event))


def test_genai_events_sent_as_log_records_give_their_messages_structured() -> None:
    # opentelemetry-instrumentation-openai-v2 without span content: the messages come as
    # log records of the model call's span (v1.30-era events, or the details event).
    call = (3).to_bytes(8, "big")
    user = LogRecord(trace_id=TRACE, span_id=call, event_name="gen_ai.user.message",
                     body=value({"content": "Weather?"}))  # fmt: skip
    answer = {"role": "assistant", "content": "Sunny."}
    said = value({"index": 0, "finish_reason": "stop", "message": answer})
    choice = LogRecord(trace_id=TRACE, span_id=call, event_name="gen_ai.choice", body=said)
    details = LogRecord(
        trace_id=TRACE, span_id=call, event_name="gen_ai.client.inference.operation.details",
        attributes=pairs({"gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]'}),  # noqa: E501
    )  # fmt: skip
    t = translate_logs(logs(user, choice, details), SpanMemory(), now=NOW)
    first, second, third = wire(t)
    assert first["spanId"] == "0000000000000003" and first["entry"]["category"] == "llm"
    assert first["entry"]["details"]["inputMessages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather?"}]}
    ]
    assert second["entry"]["details"]["outputMessages"] == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Sunny."}],
         "finish_reason": "stop"}
    ]  # fmt: skip
    assert second["entry"]["summary"] == "Sunny."
    assert third["entry"]["details"]["inputMessages"][0]["parts"][0]["content"] == "Hi"
