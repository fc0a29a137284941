"""Helpers of the OpenTelemetry tests: real SDK tracers, GenAI-shaped spans, and readers."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import trio
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, Tracer, TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode
from trio_websocket import WebSocketConnection

from support import TIMEOUT


class PresetTraceIds(RandomIdGenerator):
    """Random ids, except that a test can draw (and so know) the next trace ids in advance."""

    def __init__(self) -> None:
        self.queued: deque[int] = deque()

    def draw(self) -> str:
        """The trace id of the next root span, as the execution id it will be."""
        trace_id = super().generate_trace_id()
        self.queued.append(trace_id)
        return f"{trace_id:032x}"

    def generate_trace_id(self) -> int:
        return self.queued.popleft() if self.queued else super().generate_trace_id()


@contextmanager
def tracer_provider(*processors: SpanProcessor) -> Iterator[tuple[TracerProvider, PresetTraceIds]]:
    """A provider with ``processors`` and preset trace ids; shut down (flushed) at the end."""
    ids = PresetTraceIds()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "weather-agent"}),
        id_generator=ids,
        shutdown_on_exit=False,
    )
    for processor in processors:
        provider.add_span_processor(processor)
    try:
        yield provider, ids
    finally:
        provider.shutdown()


def weather_run(
    tracer: Tracer, *, during_tool: Callable[[], object] | None = None, calls: str = ""
) -> None:
    """An agent run shaped as the GenAI conventions say: an agent, a model call, two tools.

    ``during_tool`` is called while the first tool runs. The second tool fails with an
    exception (recorded as the SDK does on an exception). ``calls`` ends the tool call ids
    (a tool call id names one call: a second run needs its own).
    """
    agent = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "weather-bot",
        "gen_ai.conversation.id": "conv-42",
        "gen_ai.provider.name": "openai",
    }
    root = tracer.start_as_current_span(
        "invoke_agent weather-bot", kind=SpanKind.CLIENT, attributes=agent
    )
    with root:
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
        ) as chat:
            chat.set_attribute("gen_ai.usage.input_tokens", 812)
            chat.set_attribute("gen_ai.usage.output_tokens", 37)
        with tracer.start_as_current_span(
            "execute_tool get_weather",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.call.id": f"call_weather_1{calls}",
                "gen_ai.tool.call.arguments": '{"city": "Paris"}',
            },
        ) as weather:
            if during_tool is not None:
                during_tool()
            weather.set_attribute("gen_ai.tool.call.result", "sunny, 21 C")
        try:
            with tracer.start_as_current_span(
                "execute_tool book_table",
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "book_table",
                    "gen_ai.tool.call.id": f"call_book_2{calls}",
                },
            ) as book:
                book.set_status(Status(StatusCode.ERROR, "no table free"))
                raise LookupError("no table free at 20:00")
        except LookupError:
            pass


WEATHER_RUN = [
    ("execution:status", "started"),
    ("span:start", "llm"),
    ("span:end", "done"),
    ("tool:start", "get_weather"),
    ("tool:end", "done"),
    ("tool:start", "book_table"),
    ("messagebus:event", "error"),
    ("tool:end", "error"),
    ("execution:status", "completed"),
]
"""What :func:`weather_run` gives, in order: each event's type and what tells it apart."""


def shape(event: dict[str, Any]) -> tuple[str, str]:
    """An event's type and its distinguishing field (see :data:`WEATHER_RUN`)."""
    match event["type"]:
        case "execution:status":
            return event["type"], event["status"]
        case "transcript:entry":
            return event["type"], event["entry"]["entryType"]
        case "tool:start":
            return event["type"], event["tool"]
        case "tool:end":
            return event["type"], event["resultStatus"]
        case "messagebus:event":
            return event["type"], event["entry"]["severity"]
        case "span:start":
            return event["type"], event["kind"]
        case "span:end":
            return event["type"], event["state"]
    return event["type"], ""


def keepalive(event: dict[str, Any]) -> bool:
    """Whether ``event`` is a live processor's keep-alive (not part of any run's shape)."""
    return event.get("type") == "agent:heartbeat" and str(event.get("instanceId")).startswith(
        "otel:"
    )


async def receive(ws: WebSocketConnection, count: int) -> list[dict[str, Any]]:
    """The next ``count`` frames of ``ws`` (keep-alives skipped)."""
    frames: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT):
        while len(frames) < count:
            frame = orjson.loads(await ws.get_message())
            if not keepalive(frame):
                frames.append(frame)
    return frames


async def stored(http: httpx.AsyncClient, execution_id: str) -> list[dict[str, Any]]:
    """Every stored event of ``execution_id``."""
    response = await http.get(f"/api/executions/{execution_id}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()
    return [e for e in events if not keepalive(e)]
