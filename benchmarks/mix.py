"""The realistic ingest mix: request bodies the ingest section posts and ``floor.py`` eats.

Two kinds of body, each a TEMPLATE with two placeholders that the poster fills in place
(same length, so a protobuf body stays valid):

- ``STAMP`` (17 bytes): the poster's monotonic clock when it sends the body, seconds with
  6 decimals, zero-padded (``00001234.567890``-like); with ``~R<run>:`` before it and ``:``
  after it, every stored event's frame carries ``~R<run>:<seconds>:`` in one of its strings,
  which is what the WebSocket client times (see ``loadgen.js``);
- ``BATCH`` (8 bytes): the batch's number, zero-padded decimal, in every id that must be new
  in each batch (tool use ids, skill trace ids, OTLP trace ids), so that no event of a later
  batch is a copy the ledger drops.

JSON (``POST /api/events``): 100 plan events of all 11 types over 16 executions, ~380 bytes
each (as the producers of the plan send them). OTLP (``POST /v1/traces``, protobuf): 512
finished GenAI spans in 4 traces (an agent, its model calls and tool calls).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Final

import orjson

STAMP: Final = b"<" * 17
BATCH: Final = b">" * 8
EXECUTIONS: Final = 16
JSON_BATCH: Final = 100
OTLP_BATCH: Final = 512
OTLP_TRACES: Final = 4

_TS = "2026-12-06T10:30:00.123Z"
_PAD = "the quick brown fox jumps over the lazy dog; " * 3


def _marker(run: str) -> str:
    return f"~R{run}:{STAMP.decode()}:"


def fill(template: bytes, stamp_s: float, batch: int) -> bytes:
    """``template`` with its placeholders filled (what the poster does, in Python)."""
    stamp = f"{stamp_s:017.6f}".encode()
    return template.replace(STAMP, stamp).replace(BATCH, b"%08d" % (batch % 100_000_000))


def json_events(run: str) -> list[dict[str, Any]]:
    """The 100 events of one JSON batch (with placeholders), in the order they are posted."""
    m = _marker(run)
    b = BATCH.decode()
    out: list[dict[str, Any]] = []

    def ex(j: int) -> str:
        return f"mix{run}-{j % EXECUTIONS:02d}"

    # 12 tool uses (start, 2-3 outputs, end), each in its own execution: 12 + 30 + 12 events.
    for k in range(12):
        e, tu, task = ex(k), f"toolu_{b}_{k:02d}", f"task-{k % 5}"
        out.append({"type": "tool:start", "executionId": e, "toolUseId": tu, "tool": "Bash",
                    "inputSummary": f"{m}pytest -q tests/parser --maxfail=5 {_PAD[:60]}",
                    "taskId": task, "timestamp": _TS})  # fmt: skip
        for n in range(3 if k < 6 else 2):
            out.append({"type": "tool:output", "executionId": e, "toolUseId": tu,
                        "chunk": f"{m}tests/parser/test_tokens.py::test_ws{n} FAILED {_PAD}",
                        "isStderr": n == 1, "timestamp": _TS})  # fmt: skip
        out.append({"type": "tool:end", "executionId": e, "toolUseId": tu,
                    "resultStatus": "error" if k % 4 == 0 else "done", "durationMs": 1234.5,
                    "outputSummary": f"{m}3 failed, 120 passed in 1.23s {_PAD[:80]}",
                    "isError": k % 4 == 0, "timestamp": _TS})  # fmt: skip
    # 16 transcript entries
    for k in range(16):
        out.append({"type": "transcript:entry", "executionId": ex(k), "timestamp": _TS,
                    "entry": {"id": f"te-{b}-{k}", "timestamp": _TS, "sequence": k,
                              "executionId": ex(k), "instanceId": f"agent-{k % 4}",
                              "entryType": "tool_use", "category": "action",
                              "summary": f"{m}Ran the unit tests of the parser module {_PAD[:70]}",
                              "taskId": f"task-{k % 5}", "waveNumber": 2,
                              "details": {"command": "pytest -q tests/parser"},
                              "durationMs": 1234.5}})  # fmt: skip
    # 6 assertions
    for k in range(6):
        out.append({"type": "assertion:result", "executionId": ex(k + 3), "taskId": f"task-{k}",
                    "timestamp": _TS,
                    "assertion": {"id": f"as-{b}-{k}", "taskId": f"task-{k}",
                                  "executionId": ex(k + 3), "category": "tests",
                                  "description": f"{m}all parser tests pass {_PAD[:90]}",
                                  "result": "fail" if k == 0 else "pass", "timestamp": _TS,
                                  "chainId": "chain-3", "evidence": {"failed": 3, "passed": 120},
                                  "durationMs": 88.0}})  # fmt: skip
    # 3 skills (start, end)
    for k in range(3):
        sk = f"sk-{b}-{k}"
        out.append({"type": "skill:start", "executionId": ex(k + 5), "skillTraceId": sk,
                    "skillName": f"{m}write-tests", "skillFile": "skills/tests.md",
                    "lineNumber": 12, "taskId": f"task-{k}", "timestamp": _TS})  # fmt: skip
        out.append({"type": "skill:end", "executionId": ex(k + 5), "skillTraceId": sk,
                    "skillName": f"{m}write-tests", "status": "partial", "durationMs": 5321.0,
                    "timestamp": _TS})  # fmt: skip
    # 6 message bus entries
    for k in range(6):
        out.append({"type": "messagebus:event", "executionId": ex(k + 8), "timestamp": _TS,
                    "entry": {"id": f"mb-{b}-{k}", "eventId": f"evt-{b}-{k}", "timestamp": _TS,
                              "source": "scheduler", "eventType": "task.progress",
                              "humanSummary": f"{m}task-007 moved on to its tests {_PAD[:60]}",
                              "severity": "error" if k == 0 else "info", "category": "scheduling",
                              "createdAt": _TS, "correlationId": "corr-88", "taskId": "task-007",
                              "executionId": ex(k + 8),
                              "payload": {"reason": "progress"}}})  # fmt: skip
    # 4 wave statuses, 6 heartbeats, 2 execution statuses
    for k in range(4):
        out.append({"type": "wave:status", "executionId": ex(k + 10), "waveNumber": 2,
                    "status": "running", "taskCount": 12, "completedCount": 7, "failedCount": 1,
                    "agent": f"{m}planner", "timestamp": _TS})  # fmt: skip
    for k in range(6):
        out.append({"type": "agent:heartbeat", "executionId": ex(k + 12),
                    "instanceId": f"{m}agent-{k}", "status": "working",
                    "currentTaskId": "task-007",
                    "metrics": {"cpu": 0.42, "memoryMb": 312.0, "tokens": 18234.0},
                    "timestamp": _TS})  # fmt: skip
    for k in range(2):
        out.append({"type": "execution:status", "executionId": ex(k + 14), "status": "running",
                    "message": f"{m}wave 2 of 4 {_PAD[:100]}", "timestamp": _TS})  # fmt: skip
    assert len(out) == JSON_BATCH and len({e["type"] for e in out}) == 11
    return out


def json_template(run: str) -> bytes:
    """One JSON batch body with placeholders."""
    return orjson.dumps(json_events(run))


def otlp_template(run: str) -> bytes:
    """One OTLP/protobuf ``ExportTraceServiceRequest`` of 512 finished spans, placeholders in."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    def kv(key: str, value: str | int) -> KeyValue:
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        return KeyValue(key=key, value=AnyValue(string_value=value))

    m = _marker(run)
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", "bench-agent")])
    scope = rs.scope_spans.add()
    scope.scope.name = "bench"
    per_trace = OTLP_BATCH // OTLP_TRACES
    t0 = 1_765_000_000_000_000_000
    for t in range(OTLP_TRACES):
        trace_id = BATCH + struct.pack(">II", zlib.crc32(run.encode()), t)
        root_id = struct.pack(">Q", 0x100 + t * 1000)
        for i in range(per_trace):
            span = Span(trace_id=trace_id, span_id=struct.pack(">Q", 0x100 + t * 1000 + i))
            span.kind = Span.SPAN_KIND_INTERNAL
            start = t0 + i * 1_000_000
            span.start_time_unix_nano = start
            span.end_time_unix_nano = start + 900_000 if i else t0 + per_trace * 1_000_000
            if i == 0:
                span.name = f"{m}invoke_agent planner"
                span.attributes.extend([
                    kv("gen_ai.operation.name", "invoke_agent"),
                    kv("gen_ai.agent.name", "planner"),
                    kv("gen_ai.conversation.id", f"conv-{t}"),
                ])  # fmt: skip
            elif i % 2:
                span.parent_span_id = root_id
                span.name = f"{m}chat gpt-4o"
                span.attributes.extend([
                    kv("gen_ai.operation.name", "chat"),
                    kv("gen_ai.provider.name", "openai"),
                    kv("gen_ai.request.model", "gpt-4o"),
                    kv("gen_ai.usage.input_tokens", 1200 + i),
                    kv("gen_ai.usage.output_tokens", 80 + i),
                ])  # fmt: skip
            else:
                span.parent_span_id = root_id
                span.name = f"{m}execute_tool run_tests"
                span.attributes.extend([
                    kv("gen_ai.operation.name", "execute_tool"),
                    kv("gen_ai.tool.name", "run_tests"),
                    kv("gen_ai.tool.call.id", f"call_{i}"),
                ])  # fmt: skip
            scope.spans.append(span)
    body = request.SerializeToString()
    assert body.count(BATCH) == OTLP_BATCH, "a placeholder met by chance: change the ids"
    return body


LIVE_BATCH: Final = 10
"""Span starts per batch of the live load (the live processor's small batches)."""


def live_template(run: str, start_ns: int) -> bytes:
    """One OTLP/protobuf request of 10 span starts as ``LiveSpanProcessor`` sends them (marked
    live, no end time), in a trace of its own, the span name carrying the marker.

    ``start_ns`` (Unix nanoseconds) is when the spans started: give the time of the load, as
    a live processor does. Spans that started long ago are open past the watchdog's
    ``--slow-after`` at once, and its ``slow`` alerts (which name the tool, marker and all)
    would be timed as span starts seconds late."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    trace_id = BATCH + struct.pack(">II", zlib.crc32(run.encode()), 7)
    for i in range(LIVE_BATCH):
        span = Span(trace_id=trace_id, span_id=struct.pack(">Q", 0x200 + i))
        span.name = f"execute_tool run_tests {_marker(run)}"  # the tool's name: timed
        span.start_time_unix_nano = start_ns + i * 1000
        if i:
            span.parent_span_id = struct.pack(">Q", 0x200)
        span.attributes.extend([
            KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="execute_tool")),
            KeyValue(key="trio_obs.live_span", value=AnyValue(bool_value=True)),
            KeyValue(key="trio_obs.live_copy", value=AnyValue(string_value="start")),
        ])  # fmt: skip
        scope.spans.append(span)
    return request.SerializeToString()
