"""The dialects (SPEC §12): GenAI old and current, OpenInference, Logfire, onto one description."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from trio_obs.core.otlp_dialects import (
    DETAILS_EVENT,
    KIND_OF_OPENINFERENCE,
    MAX_CONVERSATION,
    cut_conversation,
    describe,
)
from trio_obs.core.otlp_values import operation_of


def about(name: str, attributes: dict[str, Any], events: list[Any] = (), **kw: Any) -> Any:  # type: ignore[assignment]
    return describe(name, attributes, events, operation=operation_of(name, attributes), **kw)


def text(content: str) -> dict[str, str]:
    return {"type": "text", "content": content}


# --------------------------------------------------------------------------- GenAI


def test_genai_current_names() -> None:
    d = about(
        "chat gpt-4o",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 20,
            "gen_ai.usage.cache_read.input_tokens": 64,
            "gen_ai.system_instructions": orjson.dumps([text("Be brief.")]).decode(),
            "gen_ai.input.messages": orjson.dumps(
                [{"role": "user", "parts": [text("Hi")]}]
            ).decode(),
            "gen_ai.output.messages": orjson.dumps(
                [{"role": "assistant", "parts": [text("Hello!")], "finish_reason": "stop"}]
            ).decode(),
        },
    )
    assert (d.kind, d.title, d.model, d.response_model, d.provider) == (
        "llm", "gpt-4o-2024-08-06", "gpt-4o", "gpt-4o-2024-08-06", "openai",
    )  # fmt: skip
    assert d.usage == {"inputTokens": 100, "outputTokens": 20, "cacheReadInputTokens": 64}
    assert not d.usage_is_aggregate
    assert d.system_instructions == [text("Be brief.")]
    assert d.input_messages == [{"role": "user", "parts": [text("Hi")]}]
    assert d.output == "Hello!" and d.finish_reasons == ["stop"]


def test_genai_v1_30_era_message_events_and_old_usage_names() -> None:
    events = [
        ("gen_ai.system.message", {"content": "Be brief."}),
        ("gen_ai.user.message", {"content": "Weather?"}),
        ("gen_ai.assistant.message", {"tool_calls": '[{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]'}),  # noqa: E501
        ("gen_ai.tool.message", {"id": "c1", "content": "sunny"}),
        ("gen_ai.choice", {"index": 0, "finish_reason": "stop",
                           "message": '{"role": "assistant", "content": "Sunny."}'}),
    ]  # fmt: skip
    d = about(
        "chat gpt-4",
        {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4",
         "gen_ai.usage.prompt_tokens": 30, "gen_ai.usage.completion_tokens": 5},
        events,
    )  # fmt: skip
    assert d.kind == "llm" and d.provider == "openai"
    assert d.usage == {"inputTokens": 30, "outputTokens": 5}
    assert d.system_instructions == [text("Be brief.")]
    assert [m["role"] for m in d.input_messages] == ["user", "assistant", "tool"]
    assert d.input_messages[1]["parts"] == [
        {"type": "tool_call", "id": "c1", "name": "get_weather", "arguments": {"city": "Paris"}}
    ]
    assert d.input_messages[2]["parts"] == [
        {"type": "tool_call_response", "id": "c1", "response": "sunny"}
    ]
    assert d.output_messages == [
        {"role": "assistant", "parts": [text("Sunny.")], "finish_reason": "stop"}
    ]
    assert d.finish_reasons == ["stop"]


def test_the_inference_details_event_is_folded_into_its_model_call() -> None:
    details = {
        "gen_ai.input.messages": [{"role": "user", "parts": [text("Hi")]}],
        "gen_ai.output.messages": [{"role": "assistant", "parts": [text("Hello")]}],
        "gen_ai.usage.input_tokens": 3,
    }
    d = about("chat m", {"gen_ai.operation.name": "chat"}, [(DETAILS_EVENT, details)])
    assert d.input_messages == [{"role": "user", "parts": [text("Hi")]}]
    assert d.output == "Hello" and d.usage == {"inputTokens": 3}
    assert d.model == "m"  # from the span name, "{operation} {model}"


def test_genai_tools_and_agents() -> None:
    t = about(
        "execute_tool get_weather",
        {"gen_ai.tool.call.id": "c1", "gen_ai.tool.call.arguments": {"city": "Paris"},
         "gen_ai.tool.call.result": "sunny", "gen_ai.agent.name": "planner"},
    )  # fmt: skip
    assert (t.kind, t.title, t.tool_name, t.tool_call_id) == (
        "tool", "get_weather", "get_weather", "c1",
    )  # fmt: skip
    assert (t.tool_arguments, t.tool_result, t.agent_name) == (
        '{"city":"Paris"}', "sunny", "planner",
    )  # fmt: skip
    a = about("invoke_agent planner", {"gen_ai.usage.input_tokens": 40})
    assert (a.kind, a.agent_name, a.title) == ("agent", "planner", "planner")
    assert a.usage_is_aggregate  # an agent's counts are its model calls' sum


def test_an_error_without_a_message_says_its_type() -> None:
    d = about("execute_tool x", {"error.type": "TimeoutError"}, error="")
    assert d.error == "TimeoutError"
    assert about("execute_tool x", {}, error="").error == "failed"
    assert about("execute_tool x", {}).error is None


# --------------------------------------------------------------------------- OpenInference


def test_openinference_llm_span() -> None:
    d = about(
        "ChatCompletion",
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-mini",
            "llm.provider": "openai",
            "llm.token_count.prompt": 12,
            "llm.token_count.completion": 4,
            "llm.token_count.total": 16,
            "llm.token_count.prompt_details.cache_read": 2,
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "Be brief.",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.contents.0.message_content.type": "text",
            "llm.input_messages.1.message.contents.0.message_content.text": "Weather?",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.tool_calls.0.tool_call.id": "c1",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": "{}",
            "input.value": '{"messages": []}',
        },
    )
    assert (d.kind, d.title, d.model, d.provider) == (
        "llm", "gpt-4o-mini", "gpt-4o-mini", "openai",
    )  # fmt: skip
    assert d.usage == {"inputTokens": 12, "outputTokens": 4, "totalTokens": 16,
                       "cacheReadInputTokens": 2}  # fmt: skip
    assert d.input_messages == [
        {"role": "system", "parts": [text("Be brief.")]},
        {"role": "user", "parts": [text("Weather?")]},
    ]
    assert d.output_messages == [
        {"role": "assistant", "parts": [
            {"type": "tool_call", "id": "c1", "name": "get_weather", "arguments": {}}]}
    ]  # fmt: skip


@pytest.mark.parametrize(("oi", "kind"), sorted(KIND_OF_OPENINFERENCE.items()))
def test_every_openinference_span_kind(oi: str, kind: str) -> None:
    assert about("step", {"openinference.span.kind": oi}).kind == kind


def test_openinference_tool_and_agent() -> None:
    tool = {"openinference.span.kind": "TOOL", "tool.name": "get_weather",
            "tool.parameters": '{"city": "Paris"}', "output.value": "sunny"}  # fmt: skip
    t = about("get_weather", tool)
    assert (t.kind, t.tool_name, t.tool_arguments, t.tool_result) == (
        "tool", "get_weather", '{"city": "Paris"}', "sunny",
    )  # fmt: skip
    a = about("Agent", {"openinference.span.kind": "AGENT", "output.value": "done it",
                        "agent.name": "researcher"})  # fmt: skip
    assert (a.kind, a.agent_name, a.output) == ("agent", "researcher", "done it")


# --------------------------------------------------------------------------- Logfire, pydantic-ai


def test_logfire_title_and_pending_span() -> None:
    d = about(
        "invoke_agent planner",
        {"logfire.msg": "planner run", "logfire.span_type": "pending_span",
         "logfire.pending_parent_id": "00000000000000aa", "gen_ai.agent.name": "planner"},
    )  # fmt: skip
    assert (d.title, d.agent_name, d.pending, d.real_parent) == (
        "planner run", "planner", True, "00000000000000aa",
    )  # fmt: skip
    root = about("x", {"logfire.span_type": "pending_span",
                       "logfire.pending_parent_id": "0000000000000000"})  # fmt: skip
    assert root.pending and root.real_parent is None


def test_pydantic_ai_agent_result_and_aggregated_usage() -> None:
    d = about(
        "invoke_agent orchestrator",
        {"gen_ai.agent.name": "orchestrator", "final_result": "It is sunny.",
         "gen_ai.aggregated_usage.input_tokens": 113, "gen_ai.aggregated_usage.output_tokens": 14,
         "pydantic_ai.all_messages": '[{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]'},  # noqa: E501
    )  # fmt: skip
    assert d.output == "It is sunny."
    assert d.usage == {"inputTokens": 113, "outputTokens": 14} and d.usage_is_aggregate
    assert d.input_messages == [{"role": "user", "parts": [text("Hi")]}]


def test_the_title_rule() -> None:
    assert about("chat m", {"logfire.msg": "asking m"}).title == "asking m"
    assert about("invoke_agent a", {}).title == "a"
    assert about("execute_tool t", {}).title == "t"
    assert about("chat gpt-4o", {"gen_ai.request.model": "gpt-4o"}).title == "gpt-4o"
    assert about("SELECT users", {}).title == "SELECT users"


# --------------------------------------------------------------------------- cutting


def test_a_conversation_within_the_limit_is_not_touched() -> None:
    given = [{"role": "user", "parts": [text("hi")]}]
    (out,), cut = cut_conversation(given)
    assert out is given and cut == 0


def test_the_longest_message_is_cut_from_its_middle() -> None:
    short = {"role": "user", "parts": [text("question")]}
    long = {"role": "tool", "parts": [text("a" * 300_000 + "z" * 300_000)]}
    (given, said), cut = cut_conversation(
        [short, long], [{"role": "assistant", "parts": [text("ok")]}]
    )
    assert given is not None and said is not None
    assert len(orjson.dumps(given)) + len(orjson.dumps(said)) <= MAX_CONVERSATION
    kept = given[1]["parts"][0]["content"]
    assert kept.startswith("aaa") and kept.endswith("zzz") and f"[{cut} bytes cut]" in kept
    assert given[0] == short and said[0]["parts"] == [text("ok")]
    assert long["parts"][0]["content"] == "a" * 300_000 + "z" * 300_000  # the input untouched
