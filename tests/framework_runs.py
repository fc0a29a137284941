"""Agent runs with real frameworks, each in a process of its own (their instrumentation is
global state): ``python framework_runs.py SCENARIO SERVER_URL [MODEL_URL]``.

Prints the trace id of the run (the execution id) on its last line. No network: the
model is pydantic-ai's ``FunctionModel`` or the OpenAI-compatible server of
``frameworks_support`` on loopback.
"""

import contextlib
import os
import sys
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

GATE = "TRIO_OBS_TEST_GATE"
"""A FIFO the slow tool opens for reading (when set): it ends once the test has opened it
for writing, having seen the tool running."""
HANG_GUARD = 60.0
"""Seconds the slow tool waits at most for what it waits for (never reached when all is well)."""


class Delivery(SpanProcessor):
    """Spans ended and spans the batch exporter has sent, counted: it sends them in the
    order they end, so all those ended so far are sent once ``sent`` reaches ``ended``."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.ended = self.sent = 0

    def on_end(self, span: Any) -> None:
        with self.changed:
            self.ended += 1

    def count_sent(self, n: int) -> None:
        with self.changed:
            self.sent += n
            self.changed.notify_all()

    def wait_until_sent(self) -> None:
        """Until the spans ended so far have reached the server (by the exporter's timer)."""
        with self.changed:
            target = self.ended
            self.changed.wait_for(lambda: self.sent >= target, HANG_GUARD)


DELIVERY: Delivery | None = None
"""Of the provider below, when a run uses it."""


class CountedExporter(OTLPSpanExporter):
    def export(self, spans: Any) -> Any:
        result = super().export(spans)
        if DELIVERY is not None and result == SpanExportResult.SUCCESS:
            DELIVERY.count_sent(len(spans))
        return result


def provider(server: str, *, live: bool = False) -> TracerProvider:
    """The SDK as an agent sets it up: the batch exporter (sending every 50 ms, so a run
    spans several requests, children first), and our live processor if ``live``."""
    global DELIVERY
    tp = TracerProvider(resource=Resource.create({"service.name": "weather-agent"}))
    DELIVERY = Delivery()
    tp.add_span_processor(DELIVERY)
    exporter = CountedExporter(endpoint=f"{server}/v1/traces")
    tp.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    if live:
        from trio_obs.otel import LiveSpanProcessor

        tp.add_span_processor(LiveSpanProcessor(server))
    return tp


def agents() -> Any:
    """An orchestrator that asks a research agent through a tool, and a slow tool."""

    def research_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("Paris: sunny, 21 C")])

    def orchestrator_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returned = {
            p.tool_name
            for m in messages
            for p in getattr(m, "parts", [])
            if getattr(p, "part_kind", "") == "tool-return"
        }
        if "delegate_research" not in returned:
            return ModelResponse(parts=[ToolCallPart("delegate_research", {"question": "weather"})])
        if "slow_lookup" not in returned:
            return ModelResponse(parts=[ToolCallPart("slow_lookup", {"city": "Paris"})])
        return ModelResponse(parts=[TextPart("Take sunglasses: it is sunny in Paris.")])

    research = Agent(FunctionModel(research_model, model_name="research-model"),
                     name="research_agent")  # fmt: skip
    orchestrator = Agent(
        FunctionModel(orchestrator_model, model_name="orchestrator-model"),
        name="orchestrator",
        system_prompt="You plan trips.",
    )

    @orchestrator.tool
    async def delegate_research(ctx: RunContext[None], question: str) -> str:
        result = await research.run(question)
        return result.output

    @orchestrator.tool_plain
    def slow_lookup(city: str) -> str:
        # Slow enough that what ended before it (the research) reaches the server first,
        # in requests of its own, and, with a gate, that the test sees it running.
        if DELIVERY is not None:
            DELIVERY.wait_until_sent()
        gate = os.environ.get(GATE)
        if gate:
            wait_for_the_test(gate)
        return f"{city}: no rain"

    return orchestrator


def wait_for_the_test(gate: str) -> None:
    """Until the test opens the FIFO ``gate`` for writing (or the hang guard does)."""

    def open_it() -> None:  # as the test would (the tool has it open for reading by then)
        with contextlib.suppress(OSError):
            os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))

    guard = threading.Timer(HANG_GUARD, open_it)
    guard.daemon = True
    guard.start()
    os.close(os.open(gate, os.O_RDONLY))  # blocks until a writer opens it
    guard.cancel()


def run_pydantic_ai(server: str, *, live: bool) -> str:
    from pydantic_ai.models.instrumented import InstrumentationSettings

    tp = provider(server, live=live)
    Agent.instrument_all(InstrumentationSettings(tracer_provider=tp, include_content=True))
    orchestrator = agents()
    with _trace_ids(tp) as seen:
        orchestrator.run_sync("Shall I take sunglasses to Paris?")
    tp.shutdown()
    return f"{seen[0]:032x}"


class _trace_ids:
    """The trace ids of the root spans started inside the block."""

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self.seen: list[int] = []

    def __enter__(self) -> list[int]:
        from opentelemetry.sdk.trace import SpanProcessor

        seen = self.seen

        class Roots(SpanProcessor):
            def on_start(self, span: Any, parent_context: Any = None) -> None:
                if span.parent is None:
                    seen.append(span.context.trace_id)

        self.tp.add_span_processor(Roots())
        return seen

    def __exit__(self, *exc: object) -> None:
        pass


def run_openai(server: str, model_url: str, dialect: str) -> str:
    tp = provider(server)
    if dialect == "openai-v2":
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_ONLY"
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=tp)
    else:
        from openinference.instrumentation.openai import OpenAIInstrumentor as OI

        OI().instrument(tracer_provider=tp)
    import openai

    client = openai.OpenAI(base_url=model_url, api_key="not-a-key", max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    tracer = tp.get_tracer("weather-job")
    # No agent span: a job that calls the model twice and a tool between (one execution).
    with tracer.start_as_current_span("weather job") as job:
        trace_id = job.get_span_context().trace_id
        first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        with tracer.start_as_current_span(
            "execute_tool get_weather",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.call.id": call.id,
            },
        ):
            result = "sunny, 21 C"
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": result}]  # fmt: skip
        client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)
    tp.shutdown()
    return f"{trace_id:032x}"


def run_logfire(server: str) -> str:
    import logfire

    logfire.configure(
        send_to_logfire=True,
        token="pylf_v1_us_0000000000000000000000000000000000000000",
        advanced=logfire.AdvancedOptions(base_url=server),
        service_name="weather-agent",
        console=False,
        metrics=False,
        inspect_arguments=False,
    )
    logfire.instrument_pydantic_ai()
    orchestrator = agents()
    tp = trace.get_tracer_provider()
    with _trace_ids(tp) as seen:
        orchestrator.run_sync("Shall I take sunglasses to Paris?")
    logfire.force_flush()
    logfire.shutdown()
    return f"{seen[0]:032x}" if seen else ""


def main() -> None:
    scenario, server = sys.argv[1], sys.argv[2]
    if scenario in ("pydantic-ai", "pydantic-ai-live"):
        print(run_pydantic_ai(server, live=scenario.endswith("live")))
    elif scenario in ("openai-v2", "openinference"):
        print(run_openai(server, sys.argv[3], scenario))
    elif scenario == "logfire":
        print(run_logfire(server))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main()
