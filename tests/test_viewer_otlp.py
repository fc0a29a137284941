"""The viewer's tree from a real OpenTelemetry SDK run (SPEC §12, issue 22): nested agents,
a tool running while the page is looked at, a model call read as a chat.

The agent runs in a thread with the SDK's ``BatchSpanProcessor`` + OTLP/HTTP exporter and
``trio_obs.otel.LiveSpanProcessor`` beside it, exporting to a real ``trio-obs serve``.
"""

from __future__ import annotations

import json
import threading

import pytest
from playwright.sync_api import Page, expect

from test_viewer_browser import (
    wait_for_events,
)
from viewer_fixtures import Server

otel = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from opentelemetry.trace import Tracer  # noqa: E402

from otel_support import tracer_provider  # noqa: E402
from trio_obs.otel import LiveSpanProcessor  # noqa: E402

TIMEOUT = 60.0  # a hang guard (a server and a browser on a loaded machine), never about speed


def messages(*items: tuple[str, dict[str, object]]) -> str:
    return json.dumps([{"role": role, "parts": [part]} for role, part in items])


def nested_run(tracer: Tracer, during_tool: threading.Event, may_end: threading.Event) -> None:
    """An orchestrator agent: a model call asking for a tool; the tool runs a researcher
    agent (a sub-agent) with its own model call; the page looks while the tool runs."""
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "orchestrator"}
    with tracer.start_as_current_span("invoke_agent orchestrator", attributes=agent):
        with tracer.start_as_current_span(
            "chat gpt-4o",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 300,
                "gen_ai.usage.output_tokens": 20,
                "gen_ai.response.finish_reasons": ("tool_calls",),
                "gen_ai.system_instructions": json.dumps(
                    [{"type": "text", "content": "Delegate research."}]
                ),
                "gen_ai.input.messages": messages(
                    ("user", {"type": "text", "content": "Find the tallest tower in Paris"})
                ),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "finish_reason": "tool_calls",
                            "parts": [
                                {
                                    "type": "tool_call",
                                    "id": "call_1",
                                    "name": "research",
                                    "arguments": {"topic": "towers"},
                                }
                            ],
                        }
                    ]
                ),
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool research",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "research",
                "gen_ai.tool.call.id": "call_1",
                "gen_ai.tool.call.arguments": '{"topic": "towers"}',
            },
        ) as tool:
            sub = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "researcher"}
            chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude"}
            with (
                tracer.start_as_current_span("invoke_agent researcher", attributes=sub),
                tracer.start_as_current_span("chat claude", attributes=chat),
            ):
                pass
            during_tool.set()
            assert may_end.wait(TIMEOUT)
            tool.set_attribute("gen_ai.tool.call.result", "Eiffel Tower")


def row(page: Page, **where: str) -> object:
    sel = "".join(f"[data-{k}='{v}']" for k, v in where.items())
    return page.locator(f"#spans [data-testid=span-row]{sel}")


def test_an_sdk_run_as_a_live_tree_and_a_chat(viewer_server: Server, page: Page) -> None:
    during_tool, may_end = threading.Event(), threading.Event()
    execution: list[str] = []

    def agent() -> None:
        live = LiveSpanProcessor(viewer_server.url())
        usual = BatchSpanProcessor(OTLPSpanExporter(endpoint=viewer_server.url("/v1/traces")))
        with tracer_provider(live, usual) as (provider, ids):
            execution.append(ids.draw())
            nested_run(provider.get_tracer("viewer-test"), during_tool, may_end)

    worker = threading.Thread(target=agent, daemon=True)
    worker.start()
    try:
        assert during_tool.wait(TIMEOUT)
        page.goto(viewer_server.url(f"/?execution={execution[0]}&view=tree"))
        rows = page.locator("#spans [data-testid=span-row]")
        # The tool runs: its bar is running, the researcher and its model call are inside it.
        tool = rows.filter(has_text="research").and_(page.locator("[data-kind=tool]"))
        expect(tool).to_have_attribute("data-state", "running")
        researcher = rows.filter(has_text="researcher").and_(page.locator("[data-kind=agent]"))
        expect(researcher).to_be_visible()
        levels = rows.evaluate_all(
            """rs => Object.fromEntries(rs.map(r => [r.dataset.kind + ':' +
                 r.querySelector('.sname').textContent, Number(r.getAttribute('aria-level'))]))"""
        )
        tool_level = levels[next(k for k in levels if k.startswith("tool:"))]
        agent_level = next(
            v for k, v in levels.items() if k.startswith("agent:") and k.endswith("researcher")
        )
        assert agent_level == tool_level + 1
        # The root span is the execution: its row is the run's, named by its agent.
        expect(rows.first).to_contain_text("orchestrator")
        assert tool_level == 2
    finally:
        may_end.set()
        worker.join(TIMEOUT)
    expect(tool).to_have_attribute("data-state", "done")
    # The orchestrator's model call, read as a chat.
    rows.filter(has_text="gpt-4o").first.click()
    chat = page.get_by_test_id("chat")
    expect(chat).to_contain_text("Delegate research.")
    expect(chat).to_contain_text("Find the tallest tower in Paris")
    expect(chat.get_by_test_id("chat-tool-call")).to_contain_text('"topic": "towers"')
    expect(page.get_by_test_id("detail")).to_contain_text("300 in · 20 out")
    wait_for_events(page, 1)
