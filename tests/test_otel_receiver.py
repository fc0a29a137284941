"""OTLP/HTTP in (SPEC §11): the real OpenTelemetry SDK and exporter into a `trio-obs serve`.

An agent instrumented with OpenTelemetry and nothing of ours, its exporter pointed at
the server, streams into a WebSocket client; OTLP/JSON bodies made per the spec (Python's
exporter has no JSON) go the same way; the answers are those of the OTLP/HTTP spec.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import trio
from google.rpc.error_details_pb2 import BadRequest
from google.rpc.status_pb2 import Status
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_support import WEATHER_RUN, receive, shape, stored, tracer_provider, weather_run
from support import TIMEOUT, ServerProcess, running_server, serving, ws_client
from trio_obs.otel import LiveSpanProcessor

PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}
TRACE = "5B8EFFF798038103D269B633813FC60C"  # upper case: OTLP/JSON hex is case-insensitive


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with serving("--db", ":memory:") as srv:
        yield srv


def exporter(server: ServerProcess, **kw: Any) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=server.url("/v1/traces"), **kw)


def export_weather_run(server: ServerProcess, execution: list[str], **kw: Any) -> None:
    """The instrumented agent: the SDK's BatchSpanProcessor with the OTLP/HTTP exporter."""
    with tracer_provider(BatchSpanProcessor(exporter(server, **kw))) as (provider, ids):
        execution.append(ids.draw())
        weather_run(provider.get_tracer("weather-agent"))


def json_span(span_id: str, name: str, start: int, end: int, **extra: Any) -> dict[str, Any]:
    """A span as OTLP/JSON has it: hex ids, integer enums, 64-bit integers as strings."""
    return {
        "traceId": TRACE,
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(1_700_000_000_000_000_000 + start * 1_000_000),
        "endTimeUnixNano": str(1_700_000_000_000_000_000 + end * 1_000_000),
        **extra,
    }


def json_request(*spans: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [
                            {"key": "service.name", "value": {"stringValue": "json-agent"}}
                        ]
                    },
                    "scopeSpans": [{"scope": {"name": "hand-made"}, "spans": list(spans)}],
                    "someFieldFromTheFuture": {"ignored": True},
                }
            ]
        }
    )


def attribute(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


TOOL_JSON = json_span(
    "EEE19B7EC3C1B174",
    "execute_tool lookup",
    2,
    5,
    parentSpanId="EEE19B7EC3C1B173",
    attributes=[
        attribute("gen_ai.operation.name", "execute_tool"),
        attribute("gen_ai.tool.name", "lookup"),
    ],
    status={"code": 2, "message": "not found"},
)


# --------------------------------------------------------------------------- the SDK's exporter


async def test_an_sdk_instrumented_agent_streams_into_a_websocket(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    with tracer_provider() as (_, ids):
        execution = ids.draw()  # know the trace id before the spans exist, to watch it
    async with ws_client(server.ws_url(execution)) as ws:

        def agent() -> None:
            processor = BatchSpanProcessor(exporter(server))
            with tracer_provider(processor) as (provider, preset):
                preset.queued.append(int(execution, 16))
                weather_run(provider.get_tracer("weather-agent"))

        await trio.to_thread.run_sync(agent)
        events = await receive(ws, len(WEATHER_RUN))
    assert [shape(e) for e in events] == WEATHER_RUN
    assert [e["seq"] for e in events] == list(range(1, len(WEATHER_RUN) + 1))
    assert {e["executionId"] for e in events} == {execution}
    started, chat, chat_end, weather, weather_end, book, exception, book_end, completed = events
    assert started["message"] == "weather-bot started"
    assert (chat["name"], chat["model"], chat["agent"]) == ("gpt-4o", "gpt-4o", "weather-bot")
    assert chat_end["usage"] == {"inputTokens": 812, "outputTokens": 37}
    assert weather["inputSummary"] == '{"city": "Paris"}'
    assert weather["toolUseId"] == weather["spanId"] == weather_end["toolUseId"]
    assert weather["parentSpanId"] == started["spanId"] and weather["agent"] == "weather-bot"
    assert weather_end["outputSummary"] == "sunny, 21 C"
    assert weather_end["isError"] is False and weather_end["durationMs"] >= 0
    assert book["toolUseId"] == book_end["toolUseId"] != weather["toolUseId"]
    assert exception["entry"]["humanSummary"].startswith("LookupError: no table free at 20:00")
    assert exception["requiresAction"] is True
    assert book_end["isError"] is True and book_end["resultStatus"] == "error"
    assert completed["message"] == "weather-bot completed (conversation conv-42)"
    # stored as posted events are: the same events come back from the store
    assert [shape(e) for e in await stored(http, execution)] == WEATHER_RUN


async def test_gzip_from_the_sdk(server: ServerProcess, http: httpx.AsyncClient) -> None:
    execution: list[str] = []
    await trio.to_thread.run_sync(
        lambda: export_weather_run(server, execution, compression=Compression.Gzip)
    )
    assert [shape(e) for e in await stored(http, execution[0])] == WEATHER_RUN


async def test_otel_events_replay_filter_and_resume_like_posted_ones(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    execution: list[str] = []
    await trio.to_thread.run_sync(lambda: export_weather_run(server, execution))
    e = execution[0]
    async with ws_client(server.ws_url(e, since=5)) as ws:
        assert [(x["seq"], *shape(x)) for x in await receive(ws, 4)] == [
            (6, *WEATHER_RUN[5]), (7, *WEATHER_RUN[6]), (8, *WEATHER_RUN[7]), (9, *WEATHER_RUN[8]),
        ]  # fmt: skip
    async with ws_client(server.ws_url(e, since=9)) as ws:
        subscribe = {"action": "subscribe", "topic": "tools", "filters": {"tools": ["book_table"]}}
        await ws.send_message(orjson.dumps(subscribe).decode())
        assert (await receive(ws, 1))[0]["type"] == "observability:subscribed"
        await trio.to_thread.run_sync(  # the same agent again, into the same execution
            lambda: export_more_of(server, e)
        )
        # only book_table's start and end pass the filter (the tool:end is matched by its use)
        got = await receive(ws, 2)
        assert [(x["type"], x["tool"] if x["type"] == "tool:start" else "") for x in got] == [
            ("tool:start", "book_table"),
            ("tool:end", ""),
        ]
        assert got[0]["toolUseId"] == got[1]["toolUseId"]
        assert got[0]["seq"] < got[1]["seq"]


def export_more_of(server: ServerProcess, execution: str) -> None:
    with tracer_provider(BatchSpanProcessor(exporter(server))) as (provider, ids):
        ids.queued.append(int(execution, 16))
        weather_run(provider.get_tracer("weather-agent"), calls="-again")


async def test_logs_from_the_sdk_join_the_trace_they_were_written_in(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    execution: list[str] = []

    def agent() -> None:
        logs = LoggerProvider(resource=Resource.create({"service.name": "weather-agent"}))
        logs.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=server.url("/v1/logs")))
        )
        logger = logs.get_logger("weather-agent")
        try:
            with tracer_provider() as (provider, ids):
                execution.append(ids.draw())
                with provider.get_tracer("t").start_as_current_span("invoke_agent weather-bot"):
                    logger.emit(  # the current context: the span's trace and span ids
                        severity_number=SeverityNumber.WARN,
                        severity_text="WARN",
                        body="rate limited by the weather API; retrying in 2 s",
                    )
            logger.emit(severity_number=SeverityNumber.ERROR, body="the cache is unreachable")
        finally:
            logs.shutdown()

    async with ws_client(server.ws_url("global", since=0)) as glob:
        await trio.to_thread.run_sync(agent)
        [log] = await stored(http, execution[0])
        assert log["type"] == "transcript:entry"
        assert log["entry"]["entryType"] == "log"
        assert log["entry"]["summary"] == "rate limited by the weather API; retrying in 2 s"
        assert log["entry"]["details"]["severity"] == "WARN"
        assert log["entry"]["instanceId"] == "weather-agent"
        with trio.fail_after(TIMEOUT):
            while (untraced := (await receive(glob, 1))[0])["type"] != "messagebus:event":
                pass  # the global copies of other tests' execution statuses
    assert untraced["entry"]["severity"] == "error"
    assert untraced["entry"]["humanSummary"] == "the cache is unreachable"
    assert untraced["entry"]["source"] == "weather-agent"


# --------------------------------------------------------------------------- OTLP/JSON


async def test_otlp_json_made_per_the_spec(http: httpx.AsyncClient) -> None:
    agent = json_span(
        "EEE19B7EC3C1B173",
        "invoke_agent lookup-bot",
        0,
        9,
        attributes=[attribute("gen_ai.operation.name", "invoke_agent")],
    )
    response = await http.post("/v1/traces", content=json_request(TOOL_JSON, agent), headers=JSON)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}  # full success: no partialSuccess
    events = await stored(http, TRACE.lower())
    assert [shape(e) for e in events] == [
        ("execution:status", "started"),
        ("tool:start", "lookup"),
        ("tool:end", "error"),
        ("execution:status", "completed"),
    ]
    assert events[1]["toolUseId"] == "eee19b7ec3c1b174"
    assert events[2]["outputSummary"] == "not found"
    assert events[0]["timestamp"] == "2023-11-14T22:13:20.000Z"


async def test_gzipped_json(http: httpx.AsyncClient) -> None:
    tool = {**TOOL_JSON, "traceId": "0af7651916cd43dd8448eb211c80319c"}
    response = await http.post(
        "/v1/traces",
        content=gzip.compress(json_request(tool)),
        headers={**JSON, "content-encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert len(await stored(http, "0af7651916cd43dd8448eb211c80319c")) == 3


async def test_refused_spans_are_a_partial_success(http: httpx.AsyncClient) -> None:
    good = {**TOOL_JSON, "traceId": "4bf92f3577b34da6a3ce929d0e0e4736"}
    bad = {**TOOL_JSON, "traceId": "4bf92f35"}  # hex, but 4 bytes: parses, then is refused
    response = await http.post("/v1/traces", content=json_request(good, bad), headers=JSON)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"  # int64: a string in proto3 JSON
    assert "trace id has 4 bytes" in partial["errorMessage"]
    assert len(await stored(http, "4bf92f3577b34da6a3ce929d0e0e4736")) == 3
    # the same in protobuf, answered in protobuf
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[Span(trace_id=b"x")])])]
    )
    response = await http.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1


async def test_an_empty_request_succeeds(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/traces", content=b"", headers=PROTOBUF)
    assert (response.status_code, response.content) == (200, b"")
    response = await http.post("/v1/logs", content=b"{}", headers=JSON)
    assert (response.status_code, response.json()) == (200, {})


# --------------------------------------------------------------------------- refusals


def tool_in(trace: str, **changes: Any) -> bytes:
    """A request with a good tool span in ``trace`` and another span with ``changes``."""
    return json_request({**TOOL_JSON, "traceId": trace}, {**TOOL_JSON, **changes})


GZIP = {**JSON, "content-encoding": "gzip"}
MALFORMED: list[Any] = [
    pytest.param(PROTOBUF, lambda t: b"\xff\xff\xff\xff", "not a valid protobuf", id="protobuf"),
    pytest.param(JSON, lambda t: tool_in(t)[:-3], "not valid JSON", id="json-syntax"),
    pytest.param(JSON, lambda t: b"[1, 2]", "must be a JSON object", id="json-array"),
    pytest.param(
        JSON, lambda t: tool_in(t, traceId="not-hex"), "traceId must be hex digits", id="id-not-hex"
    ),
    pytest.param(
        JSON,
        lambda t: tool_in(t, startTimeUnixNano="soon"),
        "not a valid OTLP/JSON",
        id="json-wrong-type",
    ),
    pytest.param(GZIP, lambda t: tool_in(t), "not valid gzip", id="not-gzip"),
    pytest.param(GZIP, lambda t: gzip.compress(tool_in(t))[:-12], "cut short", id="cut-gzip"),
]


@pytest.mark.parametrize(("headers", "body", "why"), MALFORMED)
async def test_a_body_that_does_not_parse_is_400_and_nothing_is_stored(
    http: httpx.AsyncClient, headers: dict[str, str], body: Callable[[str], bytes], why: str
) -> None:
    trace = uuid.uuid4().hex  # the good span's trace: none of it may be stored
    response = await http.post("/v1/traces", content=body(trace), headers=headers)
    assert response.status_code == 400
    kind = response.headers["content-type"]
    assert kind == headers["content-type"]
    if kind == PROTOBUF["content-type"]:
        status = Status.FromString(response.content)
        message = status.message
        detail = BadRequest()
        assert status.details[0].Unpack(detail)
        assert detail.field_violations[0].description == message
    else:
        message = response.json()["message"]
        assert response.json()["details"][0]["@type"].endswith("google.rpc.BadRequest")
    assert why in message
    assert await stored(http, trace) == []
    # the same request, well formed, is stored: the refusal was about the body alone
    if headers is JSON:
        good = await http.post("/v1/traces", content=tool_in(trace, traceId=trace), headers=JSON)
        assert good.status_code == 200
        assert len(await stored(http, trace)) == 3  # started, the tool's start and end


async def test_unsupported_types_and_encodings_are_415(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/traces", content=b"{}", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "application/x-protobuf" in response.json()["message"]
    response = await http.post(
        "/v1/logs", content=b"{}", headers={**JSON, "content-encoding": "br"}
    )
    assert response.status_code == 415
    assert "gzip" in response.json()["message"]


async def test_a_gzip_bomb_is_413_and_costs_no_memory(
    server: ServerProcess, http: httpx.AsyncClient
) -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # 64 MiB in ~64 KiB
    assert len(bomb) < 1024 * 1024
    response = await http.post(
        "/v1/traces", content=bomb, headers={**PROTOBUF, "content-encoding": "gzip"}
    )
    assert response.status_code == 413
    assert "inflates to more than 1048576 bytes" in Status.FromString(response.content).message
    assert (await http.get("/api/health")).status_code == 200


async def test_a_body_over_the_limit_is_413(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/traces", content=b"\0" * (1024 * 1024 + 1), headers=PROTOBUF)
    assert response.status_code == 413


async def test_wrong_methods_are_405(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/traces")
    assert (response.status_code, response.headers["allow"]) == (405, "POST")


async def test_the_token_guards_otlp_as_it_guards_api_events() -> None:
    srv = ServerProcess("--db", ":memory:", "--token", "s3cret")
    try:
        async with httpx.AsyncClient(base_url=srv.url(), trust_env=False) as client:
            body = json_request(TOOL_JSON)
            response = await client.post("/v1/traces", content=body, headers=JSON)
            assert response.status_code == 401
            auth = {"authorization": "Bearer s3cret"}
            response = await client.post("/v1/traces", content=body, headers={**JSON, **auth})
            assert response.status_code == 200
            assert response.json() == {}

        def export() -> None:  # the SDK's exporter sends it as a header too
            headers = {"authorization": "Bearer s3cret"}
            with tracer_provider(BatchSpanProcessor(exporter(srv, headers=headers))) as (p, _):
                weather_run(p.get_tracer("weather-agent"))

        await trio.to_thread.run_sync(export)

        def live(token: str | None) -> int:  # the live processor: refused spans are counted
            processor = LiveSpanProcessor(srv.url(), token=token)
            with tracer_provider(processor) as (p, _):
                weather_run(p.get_tracer("weather-agent"))
                assert processor.force_flush(TIMEOUT * 1000)  # a 401 is not retried
            return processor.dropped

        assert await trio.to_thread.run_sync(live, None) == 8  # four spans, start and end
        assert await trio.to_thread.run_sync(live, "s3cret") == 0
    finally:
        assert srv.stop() == 0


async def test_a_store_that_cannot_take_the_events_is_503_with_retry_after() -> None:
    async with running_server() as srv:
        srv.obs.broker.close()  # the hub takes no more events
        response = await srv.http.post("/v1/traces", content=json_request(TOOL_JSON), headers=JSON)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "nothing was stored" in response.json()["message"]


async def test_an_export_sent_again_without_a_key_is_stored_once(http: httpx.AsyncClient) -> None:
    # OTLP exporters send no Idempotency-Key: the body's hash is the key, so a retry of a
    # request whose answer was lost stores nothing twice (log records are not spans: no
    # span rule would drop their copies).
    trace = uuid.uuid4().hex
    record = {
        "traceId": trace,
        "timeUnixNano": "1700000000000000000",
        "body": {"stringValue": "rate limited; retrying"},
    }
    body = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]})
    for _ in range(2):
        response = await http.post("/v1/logs", content=body, headers=JSON)
        assert response.status_code == 200
    assert len(await stored(http, trace)) == 1
    # the same record sent gzipped is the same batch too (the key is of what it says)
    gzipped = await http.post("/v1/logs", content=gzip.compress(body), headers=GZIP)
    assert gzipped.status_code == 200
    assert len(await stored(http, trace)) == 1
    # another body is another batch
    other = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record, record]}]}]})
    assert (await http.post("/v1/logs", content=other, headers=JSON)).status_code == 200
    assert len(await stored(http, trace)) == 3
