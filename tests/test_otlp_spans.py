"""One start, one end per span, whatever OTLP copies arrive (SPEC §12), end to end.

Hand-built OTLP (protobuf and JSON) posted to a server: children before their parents
and across requests, start copies and end copies, a root that ends first, a parent that
never comes, retries. Between requests the server may restart on the same file: its
in-memory record of what it sent is gone, so only the store's rules (the ledger) keep
one opening and one closing per span, as on another node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from support import running_server

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
EXEC = TRACE.hex()
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}


def sid(n: int) -> str:
    return f"{n:016x}"


def span(n: int, name: str, parent: int | None, start: int, end: int | None, **a: Any) -> Span:
    """Span ``n`` from ``start`` to ``end`` ms (None: a start copy, still running)."""
    return Span(
        trace_id=TRACE,
        span_id=n.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        start_time_unix_nano=T0 + start * MS,
        end_time_unix_nano=T0 + end * MS if end is not None else 0,
        attributes=[KeyValue(key=k.replace("__", "."), value=_value(v)) for k, v in a.items()],
    )


def _value(v: Any) -> AnyValue:
    if isinstance(v, int):
        return AnyValue(int_value=v)
    return AnyValue(string_value=str(v))


def agent(n: int, name: str, parent: int | None, start: int, end: int | None, **a: Any) -> Span:
    return span(n, f"invoke_agent {name}", parent, start, end, gen_ai__operation__name="invoke_agent", gen_ai__agent__name=name, **a)  # fmt: skip  # noqa: E501


def tool(n: int, name: str, parent: int | None, start: int, end: int | None, **a: Any) -> Span:
    return span(n, f"execute_tool {name}", parent, start, end, gen_ai__operation__name="execute_tool", gen_ai__tool__name=name, **a)  # fmt: skip  # noqa: E501


def chat(n: int, parent: int, start: int, end: int | None, **a: Any) -> Span:
    return span(n, "chat gpt-4o", parent, start, end, gen_ai__operation__name="chat", gen_ai__request__model="gpt-4o", **a)  # fmt: skip  # noqa: E501


def protobuf(*spans: Span) -> bytes:
    resource = Resource(attributes=[KeyValue(key="service.name", value=_value("agent-svc"))])
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    ).SerializeToString()


def json_body(*spans: Span) -> bytes:
    """The same spans in OTLP/JSON (hex ids, as the OTLP/JSON encoding has them)."""
    from google.protobuf import json_format

    doc = json_format.MessageToDict(ExportTraceServiceRequest.FromString(protobuf(*spans)))
    for resource in doc["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for s in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:
                        s[key] = _b64_to_hex(s[key])
    return orjson.dumps(doc)


def _b64_to_hex(text: str) -> str:
    import base64

    return base64.b64decode(text).hex()


async def post(srv: Any, body: bytes, headers: dict[str, str]) -> None:
    answer = await srv.http.post("/v1/traces", content=body, headers=headers)
    assert answer.status_code == 200, answer.text


async def events(srv: Any) -> list[dict[str, Any]]:
    answer = await srv.http.get(f"/api/executions/{EXEC}/events")
    assert answer.status_code == 200
    found: list[dict[str, Any]] = answer.json()
    return found


def openings_and_closings(stored: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    opened = [e["spanId"] for e in stored if e["type"] in ("span:start", "tool:start")]
    closed = [e["spanId"] for e in stored if e["type"] in ("span:end", "tool:end")]
    return opened, closed


async def test_copies_child_first_across_requests_and_restarts_give_one_of_each(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "store.db")
    # Node "A": a tool under a sub-agent that is not known yet, a model call's start copy.
    async with running_server(db) as srv:
        await post(srv, protobuf(tool(3, "lookup", 2, 3, 5), chat(4, 2, 6, None)), PROTOBUF)
    # Node "B" (or A after a restart: no memory of what it sent), the exporter's copies.
    second = json_body(chat(4, 2, 6, 9, gen_ai__usage__input_tokens=10,
                            gen_ai__usage__output_tokens=2),
                       agent(2, "researcher", 1, 2, 10), tool(3, "lookup", 2, 3, 5))  # fmt: skip
    async with running_server(db) as srv:
        await post(srv, second, JSON)
        await post(srv, second, JSON)  # an exporter's retry (no Idempotency-Key)
    async with running_server(db) as srv:
        await post(srv, second, JSON)  # a third copy, elsewhere
        await post(srv, protobuf(agent(1, "planner", None, 0, 12, final_result="all done")),
                   PROTOBUF)  # fmt: skip
        await post(srv, protobuf(tool(3, "lookup", 2, 3, 5)), PROTOBUF)  # after the end
        stored = await events(srv)
        tree = (await srv.http.get(f"/api/executions/{EXEC}/tree")).json()
    statuses = [(e["status"], e.get("spanId")) for e in stored if e["type"] == "execution:status"]
    assert [s for s, _ in statuses] == ["started", "completed"]
    assert stored[0]["type"] == "execution:status" and stored[-1]["status"] == "completed"
    assert stored[-1]["output"] == "all done" and stored[-1]["spanId"] == sid(1)
    opened, closed = openings_and_closings(stored)
    assert sorted(opened) == sorted(closed) == [sid(2), sid(3), sid(4)]
    [model_end] = [e for e in stored if e["type"] == "span:end" and e["kind"] == "llm"]
    assert model_end["usage"] == {"inputTokens": 10, "outputTokens": 2}
    nodes = {n["spanId"]: n for n in tree["spans"]}
    assert nodes[sid(3)]["parentSpanId"] == sid(2) and not nodes[sid(2)]["placeholder"]
    assert nodes[sid(2)]["kind"] == "agent" and nodes[sid(4)]["kind"] == "llm"
    assert tree["state"] not in ("running", None)  # the run is over


async def test_a_root_that_ends_first_completes_only_when_its_children_end() -> None:
    async with running_server() as srv:
        # the root ended (its end copy), a child still runs (its start copy)
        await post(srv, protobuf(agent(1, "planner", None, 0, 4), tool(2, "slow", 1, 1, None)),
                   PROTOBUF)  # fmt: skip
        so_far = await events(srv)
        assert [e["type"] for e in so_far] == ["execution:status", "tool:start"]
        assert so_far[0]["status"] == "started"
        summary = (await srv.http.get("/api/executions")).json()
        assert [s["state"] for s in summary if s["executionId"] == EXEC] != ["completed"]
        await post(srv, json_body(tool(2, "slow", 1, 1, 30)), JSON)
        stored = await events(srv)
    assert [e["type"] for e in stored] == [
        "execution:status", "tool:start", "tool:end", "execution:status",
    ]  # fmt: skip
    assert stored[-1]["status"] == "completed"
    assert stored[-1]["seq"] > stored[2]["seq"]  # after the last child's end


async def test_a_parent_that_never_comes_is_a_placeholder_and_the_root_still_ends() -> None:
    async with running_server() as srv:
        await post(srv, protobuf(chat(5, 0x99, 1, 2), agent(1, "planner", None, 0, 3)), PROTOBUF)
        stored = await events(srv)
        tree = (await srv.http.get(f"/api/executions/{EXEC}/tree")).json()
    [opening] = [e for e in stored if e["type"] == "span:start"]
    assert opening["parentSpanId"] == sid(0x99)
    nodes = {n["spanId"]: n for n in tree["spans"]}
    assert nodes[sid(0x99)]["placeholder"] is True
    assert [e["status"] for e in stored if e["type"] == "execution:status"] == [
        "started", "completed",
    ]  # fmt: skip


async def test_logfire_pending_spans_then_the_real_spans() -> None:
    # Logfire: at each start a pending span (its parent is the real span); at the end the
    # real span. One opening at the start, one closing at the end.
    pending_root = agent(0x101, "planner", 1, 0, 0, logfire__span_type="pending_span")
    pending_tool = tool(
        0x102, "slow", 2, 1, 1, logfire__span_type="pending_span",
        logfire__pending_parent_id=sid(1), logfire__msg="running tool: slow",
    )  # fmt: skip
    async with running_server() as srv:
        await post(srv, protobuf(pending_root), PROTOBUF)
        await post(srv, protobuf(pending_tool), PROTOBUF)
        live = await events(srv)
        assert [(e["type"], e.get("spanId")) for e in live] == [
            ("execution:status", sid(1)), ("tool:start", sid(2)),
        ]  # fmt: skip
        assert live[1]["parentSpanId"] == sid(1) and live[1]["agent"] == "planner"
        await post(srv, protobuf(tool(2, "slow", 1, 1, 8), agent(1, "planner", None, 0, 9)),
                   PROTOBUF)  # fmt: skip
        stored = await events(srv)
    assert [e["type"] for e in stored] == [
        "execution:status", "tool:start", "tool:end", "execution:status",
    ]  # fmt: skip
    assert stored[2]["durationMs"] == 7.0


async def run_name(srv: Any) -> str | None:
    summary = (await srv.http.get("/api/executions")).json()
    [found] = [s for s in summary if s["executionId"] == EXEC]
    name: str | None = found["name"]
    return name


async def test_a_run_with_no_agent_is_named_by_its_root_span_even_child_first() -> None:
    """SPEC §12 "Totals and names": no agent, so the root span's title names the run, not
    the model call that arrived before it."""
    async with running_server() as srv:
        await post(srv, protobuf(chat(2, 1, 1, 2)), PROTOBUF)
        await post(srv, protobuf(span(1, "weather job", None, 0, 3)), PROTOBUF)
        assert await run_name(srv) == "weather job"
        stored = await events(srv)
    assert stored[-1]["status"] == "completed" and stored[-1]["name"] == "weather job"


async def test_an_agent_under_the_root_names_the_run_over_the_roots_title() -> None:
    async with running_server() as srv:
        await post(srv, protobuf(chat(3, 2, 2, 3)), PROTOBUF)
        await post(srv, protobuf(span(1, "weather job", None, 0, 5),
                                 agent(2, "forecaster", 1, 1, 4)), PROTOBUF)  # fmt: skip
        assert await run_name(srv) == "forecaster"
