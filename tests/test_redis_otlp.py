"""OTLP copies of one span reaching different nodes of a Redis cluster (SPEC §11, §12):
each node translates what it gets with nothing shared but Redis, and the publish
script keeps one start and one end per span, one ``started`` per execution, and the
root's closing held until the last open span ends. Real ``redis-server``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from redis_support import CALM, RedisServer, needs_redis
from test_otlp_spans import EXEC, agent, chat, sid, tool
from trio_obs.core.otlp import translate_traces
from trio_obs.core.otlp_memory import SpanMemory
from trio_obs.hub.redis import RedisHub
from trio_obs.producers import open_redis_observability

pytestmark = needs_redis
NOW = "2030-01-01T00:00:00.000Z"


@asynccontextmanager
async def nodes(url: str, n: int = 2) -> AsyncIterator[list[tuple[RedisHub, SpanMemory]]]:
    """``n`` nodes on one Redis, each with its own OTLP memory."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    async with AsyncExitStack() as stack:
        out = []
        for _ in range(n):
            obs = await stack.enter_async_context(
                open_redis_observability(url, prefix=prefix, redis_timeout=CALM)
            )
            assert isinstance(obs.hub, RedisHub)
            out.append((obs.hub, SpanMemory()))
        yield out


async def export(node: tuple[RedisHub, SpanMemory], *spans: Span) -> None:
    """What a node's OTLP receiver does with one request."""
    hub, memory = node
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )
    t = translate_traces(request, memory, now=NOW)
    await hub.publish(t.events)
    memory.learn(t)


async def stored(node: tuple[RedisHub, SpanMemory]) -> list[dict[str, Any]]:
    return [orjson.loads(j) for j in await node[0].read(EXEC, limit=10_000)]


async def test_copies_on_two_nodes_are_one_start_and_one_end_and_one_run(
    redis: RedisServer,
) -> None:
    async with nodes(redis.url) as (a, b):
        # node A: the live start copies (a Logfire pending span for the tool)
        pending = tool(0x102, "slow", 2, 1, 1, logfire__span_type="pending_span",
                       logfire__pending_parent_id=sid(1))  # fmt: skip
        await export(a, agent(0x101, "planner", 1, 0, 0, logfire__span_type="pending_span"))
        await export(a, pending, chat(3, 1, 2, None))
        # node B: the exporter's end copies, the root first, children after
        await export(b, agent(1, "planner", None, 0, 9, final_result="done"))
        held = await stored(b)
        assert [e["type"] for e in held] == ["execution:status", "tool:start", "span:start"]
        await export(b, tool(2, "slow", 1, 1, 8), chat(3, 1, 2, 4))
        await export(a, tool(2, "slow", 1, 1, 8))  # and again on A
        events = await stored(a)
    assert [(e["type"], e.get("spanId")) for e in events] == [
        ("execution:status", sid(1)), ("tool:start", sid(2)), ("span:start", sid(3)),
        ("span:end", sid(3)), ("tool:end", sid(2)), ("execution:status", sid(1)),
    ]  # fmt: skip
    assert events[-1]["status"] == "completed" and events[-1]["output"] == "done"
    assert events[1]["agent"] == events[2]["agent"] == "planner"
