"""The dialects of agent spans (SPEC §12 "Dialects"), as tables onto one :class:`SpanDescription`.

Three ways of saying the same thing arrive over OTLP: the OpenTelemetry GenAI
conventions (the v1.30-era names and the current ones, attributes and span events),
OpenInference (Phoenix: ``openinference.span.kind``, ``llm.*``, ``input.value``...) and
Logfire (pending spans, ``logfire.msg``; pydantic-ai's ``final_result`` and
``gen_ai.aggregated_usage.*``). Each fact is read from the first attribute of its row
that a span has, so a new name is one line of a table, not a branch. Pure: attribute
dicts in, a description out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import attrs
import orjson

from .events import JSONDict, SpanKind, Usage
from .otlp_values import JSON, after_prefix, number_of, summary_of, text_of

MAX_CONVERSATION: Final = 256 * 1024
"""Bytes of one model call's messages (input, system instructions, output), at most."""

# --------------------------------------------------------------------------- kinds

KIND_OF_OPERATION: Final[dict[str, SpanKind]] = {
    "invoke_agent": "agent",
    "execute_tool": "tool",
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "embeddings": "llm",
}
"""GenAI ``gen_ai.operation.name`` (else the span name's first word): the span's kind."""

KIND_OF_OPENINFERENCE: Final[dict[str, SpanKind]] = {
    "AGENT": "agent",
    "LLM": "llm",
    "EMBEDDING": "llm",
    "TOOL": "tool",
    "CHAIN": "span",
    "RETRIEVER": "span",
    "RERANKER": "span",
    "GUARDRAIL": "span",
    "EVALUATOR": "span",
}
"""OpenInference ``openinference.span.kind``: the span's kind."""

KIND_OF_NAME: Final[dict[str, SpanKind]] = {
    "agent run": "agent",
    "running tool": "tool",
    "running tools": "span",
}
"""Span names of older pydantic-ai instrumentation (before the GenAI operation names)."""

# --------------------------------------------------------------------------- facts

FACTS: Final[dict[str, tuple[str, ...]]] = {
    "agent_name": ("gen_ai.agent.name", "agent.name", "agent_name", "logfire.agent_name"),
    "model": ("gen_ai.request.model", "llm.model_name", "gen_ai.response.model", "model_name"),
    "response_model": ("gen_ai.response.model", "llm.model_name"),
    "provider": ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
    "conversation_id": ("gen_ai.conversation.id", "session.id", "conversation.id"),
    "finish_reason": ("gen_ai.response.finish_reasons", "llm.finish_reason"),
    "tool_name": ("gen_ai.tool.name", "tool.name", "tool_name"),
    "tool_call_id": ("gen_ai.tool.call.id", "tool_call.id", "tool_call_id"),
    "tool_arguments": (
        "gen_ai.tool.call.arguments",
        "tool_arguments",
        "tool.parameters",
        "input.value",
    ),
    "tool_result": ("gen_ai.tool.call.result", "tool_response", "output.value"),
    "agent_output": ("final_result", "gen_ai.agent.output", "output.value"),
    "error_type": ("error.type", "exception.type"),
    "title": ("logfire.msg",),
}
"""Each fact, and the attributes it is read from, first found first."""

USAGE: Final[dict[str, str]] = {
    "gen_ai.usage.input_tokens": "inputTokens",
    "gen_ai.usage.prompt_tokens": "inputTokens",
    "gen_ai.usage.output_tokens": "outputTokens",
    "gen_ai.usage.completion_tokens": "outputTokens",
    "gen_ai.usage.cache_read.input_tokens": "cacheReadInputTokens",
    "gen_ai.usage.cache_read_input_tokens": "cacheReadInputTokens",
    "gen_ai.usage.cache_creation.input_tokens": "cacheCreationInputTokens",
    "gen_ai.usage.cache_creation_input_tokens": "cacheCreationInputTokens",
    "gen_ai.usage.reasoning_tokens": "reasoningTokens",
    "gen_ai.usage.details.reasoning_tokens": "reasoningTokens",
    "llm.token_count.prompt": "inputTokens",
    "llm.token_count.completion": "outputTokens",
    "llm.token_count.total": "totalTokens",
    "llm.token_count.prompt_details.cache_read": "cacheReadInputTokens",
    "llm.token_count.prompt_details.cache_write": "cacheCreationInputTokens",
    "llm.token_count.prompt_details.audio": "audioInputTokens",
    "llm.token_count.completion_details.reasoning": "reasoningTokens",
    "llm.token_count.completion_details.audio": "audioOutputTokens",
}
"""Token-count attributes: the camelCase name of ``usage`` they give. Other
``gen_ai.usage.*`` counts are kept under their own name in camelCase."""

USAGE_PREFIXES: Final = ("gen_ai.usage.", "gen_ai.aggregated_usage.")
AGGREGATE_PREFIX: Final = "gen_ai.aggregated_usage."
"""pydantic-ai's sum of an agent run's model calls: an aggregate, never added to them."""

MESSAGES_IN: Final = ("gen_ai.input.messages", "gen_ai.prompt", "pydantic_ai.all_messages")
MESSAGES_OUT: Final = ("gen_ai.output.messages", "gen_ai.completion")
SYSTEM: Final = ("gen_ai.system_instructions",)
OPENINFERENCE_IN: Final = "llm.input_messages."
OPENINFERENCE_OUT: Final = "llm.output_messages."
OLD_EVENTS_ATTRIBUTE: Final = "events"
"""pydantic-ai (instrumentation version 1): the GenAI message events as one JSON attribute."""

MESSAGE_EVENTS: Final[dict[str, str]] = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
    "gen_ai.choice": "output",
}
"""The v1.30-era GenAI message events (span events or log records): the role they give."""
DETAILS_EVENT: Final = "gen_ai.client.inference.operation.details"
"""The current conventions' event with a model call's messages; folded into the call."""

_MESSAGE_KEYS: Final = frozenset({*MESSAGES_IN, *MESSAGES_OUT, *SYSTEM, OLD_EVENTS_ATTRIBUTE})
_MESSAGE_PREFIXES: Final = (OPENINFERENCE_IN, OPENINFERENCE_OUT)
"""What :func:`_messages` reads a conversation from (span events aside)."""

PENDING: Final = "pending_span"
BULKY: Final = frozenset(
    {
        *MESSAGES_IN,
        *MESSAGES_OUT,
        *SYSTEM,
        OLD_EVENTS_ATTRIBUTE,
        "all_messages_events",
        "final_result",
        "logfire.json_schema",
        "input.value",
        "output.value",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "tool_arguments",
        "tool_response",
        "tool.parameters",
        "llm.invocation_parameters",
        "model_request_parameters",
    }
)
"""Attributes given structured (or too big to repeat): left out of a span's ``details``."""


@attrs.frozen(kw_only=True)
class SpanDescription:
    """What a span is, whatever dialect said it: the one shape OTLP ingest reads."""

    kind: SpanKind
    title: str
    operation: str | None = None
    agent_name: str | None = None
    model: str | None = None
    response_model: str | None = None
    provider: str | None = None
    conversation_id: str | None = None
    usage: Usage | None = None
    usage_is_aggregate: bool = False
    """True when ``usage`` repeats its children's sum (an agent's): never added to them."""
    finish_reasons: list[str] | None = None
    input_messages: list[JSONDict] | None = None
    system_instructions: list[JSONDict] | None = None
    output_messages: list[JSONDict] | None = None
    output: str | None = None
    """The text the span produced (an agent's final result, a model call's answer)."""
    tool_name: str | None = None
    tool_call_id: str | None = None
    tool_arguments: str | None = None
    tool_result: str | None = None
    error: str | None = None
    pending: bool = False
    """A Logfire pending span: a copy sent at the start; the real span is its parent."""
    real_parent: str | None = None
    """For a pending span: the real span's parent (hex), None for a root."""


# --------------------------------------------------------------------------- reading


def first(attributes: Mapping[str, JSON], keys: Iterable[str]) -> JSON:
    """The value of the first of ``keys`` that ``attributes`` has (not None or "")."""
    for key in keys:
        found = attributes.get(key)
        if found is not None and found != "":
            return found
    return None


def fact(attributes: Mapping[str, JSON], name: str) -> str | None:
    """Fact ``name`` of :data:`FACTS` as text (a structured value as its JSON)."""
    found = first(attributes, FACTS[name])
    if found is None:
        return None
    return found if isinstance(found, str) else orjson.dumps(found).decode()


def kind_of(name: str, attributes: Mapping[str, JSON], operation: str | None) -> SpanKind:
    """A span's kind: OpenInference's span kind, else the GenAI operation, else its name."""
    oi = text_of(attributes.get("openinference.span.kind"))
    if oi and oi.upper() in KIND_OF_OPENINFERENCE:
        return KIND_OF_OPENINFERENCE[oi.upper()]
    if operation in KIND_OF_OPERATION:
        return KIND_OF_OPERATION[operation]
    if name in KIND_OF_NAME:
        return KIND_OF_NAME[name]
    if operation is None and text_of(attributes.get("gen_ai.request.model")):
        return "llm"
    return "span"


def usage_of(attributes: Mapping[str, JSON]) -> tuple[Usage | None, bool]:
    """Token counts (camelCase) and whether they are an aggregate of children's."""
    usage: Usage = {}
    aggregate: Usage = {}
    for key, raw in attributes.items():
        if not key.startswith(USAGE_PREFIXES) and key not in USAGE:
            continue
        number = number_of(raw)
        if number is None or number < 0:
            continue
        if key.startswith(AGGREGATE_PREFIX):
            plain = "gen_ai.usage." + key.removeprefix(AGGREGATE_PREFIX)
            aggregate.setdefault(USAGE.get(plain) or _camel(plain), int(number))
        else:
            usage.setdefault(USAGE.get(key) or _camel(key), int(number))
    if aggregate:
        return aggregate, True
    return usage or None, False


def _camel(key: str) -> str:
    words = key.removeprefix("gen_ai.usage.").replace(".", "_").split("_")
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:] if w)


def _json(value: JSON) -> JSON:
    """An attribute that may hold JSON text, decoded (else as it is)."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _text_part(content: JSON) -> JSONDict:
    return {"type": "text", "content": content if isinstance(content, str) else _dumps(content)}


def _dumps(value: JSON) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _parts_of_old(message: Mapping[str, JSON]) -> list[JSONDict]:
    """The parts of an OpenAI-shaped (v1.30-era) message: content, tool calls, tool call id."""
    parts: list[JSONDict] = []
    content = message.get("content")
    if message.get("role") == "tool" or (
        message.get("tool_call_id") and "tool_calls" not in message
    ):
        return [
            {
                "type": "tool_call_response",
                "id": message.get("tool_call_id") or message.get("id"),
                "response": content,
            }
        ]
    if isinstance(content, list):
        for item in content:
            if isinstance(item, dict) and item.get("type") in ("text", "input_text", "output_text"):
                parts.append(_text_part(item.get("text", item.get("content"))))
            elif isinstance(item, dict) and "type" in item:
                parts.append(dict(item))
            elif item is not None:
                parts.append(_text_part(item))
    elif content is not None and content != "":
        parts.append(_text_part(content))
    for call in _json(message.get("tool_calls")) or []:
        if not isinstance(call, dict):
            continue
        function = call["function"] if isinstance(call.get("function"), dict) else call
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("id"),
                "name": function.get("name"),
                "arguments": _json(function.get("arguments")),
            }
        )
    return parts


def messages_of(value: JSON) -> list[JSONDict] | None:
    """GenAI JSON messages from an attribute: current-shaped (``parts``) or OpenAI-shaped."""
    value = _json(value)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return None if value is None else [{"role": "user", "parts": [_text_part(value)]}]
    out: list[JSONDict] = []
    for message in value:
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("parts"), list):
            out.append(dict(message))
        elif "message" in message and isinstance(message["message"], dict):  # gen_ai.choice
            out.append(_choice(message))
        else:
            role = text_of(message.get("role")) or "user"
            out.append({"role": role, "parts": _parts_of_old(message)})
    return out or None


def _choice(choice: Mapping[str, JSON]) -> JSONDict:
    message = _json(choice.get("message"))
    message = message if isinstance(message, dict) else {"content": message}
    out: JSONDict = {
        "role": text_of(message.get("role")) or "assistant",
        "parts": _parts_of_old(message),
    }
    if choice.get("finish_reason") is not None:
        out["finish_reason"] = choice["finish_reason"]
    return out


def system_of(value: JSON) -> list[JSONDict] | None:
    """``gen_ai.system_instructions``: a list of parts (text as a text part)."""
    value = _json(value)
    if value is None or value == "":
        return None
    items = value if isinstance(value, list) else [value]
    return [dict(p) if isinstance(p, dict) and "type" in p else _text_part(p) for p in items]


def _indexed(attributes: Mapping[str, JSON], prefix: str) -> list[JSONDict]:
    """OpenInference's flattened lists (``prefix.N.rest``) as one dict per index."""
    found: dict[int, JSONDict] = {}
    for key, value in attributes.items():
        if not key.startswith(prefix):
            continue
        index, _, rest = key[len(prefix) :].partition(".")
        if index.isdigit() and rest:
            found.setdefault(int(index), {})[rest] = value
    return [found[i] for i in sorted(found)]


def openinference_messages(attributes: Mapping[str, JSON], prefix: str) -> list[JSONDict] | None:
    """``llm.input_messages.N.*`` / ``llm.output_messages.N.*`` as GenAI JSON messages."""
    out: list[JSONDict] = []
    for flat in _indexed(attributes, prefix):
        role = text_of(flat.get("message.role")) or "user"
        parts: list[JSONDict] = []
        content = flat.get("message.content")
        if role == "tool":
            parts.append(
                {
                    "type": "tool_call_response",
                    "id": flat.get("message.tool_call_id"),
                    "response": content,
                }
            )
        elif content not in (None, ""):
            parts.append(_text_part(content))
        for item in _indexed(flat, "message.contents."):
            if item.get("message_content.type", "text") == "text":
                parts.append(_text_part(item.get("message_content.text", "")))
        for call in _indexed(flat, "message.tool_calls."):
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("tool_call.id"),
                    "name": call.get("tool_call.function.name"),
                    "arguments": _json(call.get("tool_call.function.arguments")),
                }
            )
        message: JSONDict = {"role": role, "parts": parts}
        if text_of(flat.get("message.name")):
            message["name"] = flat["message.name"]
        out.append(message)
    return out or None


def old_events_messages(
    events: Iterable[tuple[str, Mapping[str, JSON]]],
) -> tuple[list[JSONDict], list[JSONDict], list[JSONDict]]:
    """v1.30-era message events (name, attributes/body): (system, input, output) messages."""
    system: list[JSONDict] = []
    given: list[JSONDict] = []
    output: list[JSONDict] = []
    for name, body in events:
        role = MESSAGE_EVENTS.get(name) or MESSAGE_EVENTS.get(text_of(body.get("event.name")) or "")
        if role is None:
            continue
        if role == "output":
            output.append(_choice(body) if "message" in body else _choice({"message": body}))
            continue
        message = {"role": role, **{k: _json(v) for k, v in body.items() if k != "role"}}
        parts = _parts_of_old(message)
        if role == "system":
            system += parts
        else:
            given.append({"role": role, "parts": parts})
    return system, given, output


def output_text(messages: list[JSONDict] | None) -> str | None:
    """The text of the last output message (its text parts joined), if it has any."""
    for message in reversed(messages or []):
        texts = [
            p["content"]
            for p in message.get("parts") or []
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("content"), str)
        ]
        if texts:
            return "\n".join(texts)
    return None


def finish_reasons_of(
    attributes: Mapping[str, JSON], output: list[JSONDict] | None
) -> list[str] | None:
    found = _json(first(attributes, FACTS["finish_reason"]))
    if isinstance(found, list) and found:
        return [str(r) for r in found]
    if isinstance(found, str) and found:
        return [found]
    reasons = [str(m["finish_reason"]) for m in output or [] if m.get("finish_reason")]
    return reasons or None


# --------------------------------------------------------------------------- cutting


def cut_conversation(
    *lists: list[JSONDict] | None, limit: int = MAX_CONVERSATION
) -> tuple[tuple[list[JSONDict] | None, ...], int]:
    """The lists within ``limit`` bytes of JSON together, and how many bytes were cut.

    Cut from the middle of the longest text of the longest message, marked there, until
    they fit; a list that cannot be cut enough (no text left to cut) is dropped.
    """
    if not any(lists):  # the usual span: no conversation at all
        return lists, 0
    size = sum(len(orjson.dumps(m)) for m in lists if m)
    if size <= limit:
        return lists, 0
    out = [[_deep(m) for m in messages] if messages else messages for messages in lists]
    cut_bytes = 0
    while size > limit:
        biggest = _longest_text(out)
        if biggest is None:
            dropped = max(
                (i for i, m in enumerate(out) if m), key=lambda i: len(orjson.dumps(out[i]))
            )
            cut_bytes += len(orjson.dumps(out[dropped]))
            size -= len(orjson.dumps(out[dropped]))
            out[dropped] = None
            continue
        part, key = biggest
        text: str = part[key]
        data = text.encode()
        excess = size - limit
        keep = max(0, len(data) - excess - 64)
        head = data[: keep // 2].decode(errors="ignore")
        tail = data[len(data) - keep // 2 :].decode(errors="ignore") if keep // 2 else ""
        removed = len(data) - len(head.encode()) - len(tail.encode())
        marker = f"\u2026[{removed} bytes cut]\u2026"
        part[key] = head + marker + tail
        cut_bytes += removed
        size = sum(len(orjson.dumps(m)) for m in out if m)
    return tuple(out), cut_bytes


def _deep(value: JSON) -> JSON:
    if isinstance(value, dict):
        return {k: _deep(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep(v) for v in value]
    return value


def _longest_text(lists: list[list[JSONDict] | None]) -> tuple[JSONDict, str] | None:
    """The part (and its key) holding the longest string still worth cutting."""
    best: tuple[JSONDict, str] | None = None
    best_size = 200
    for messages in lists:
        for holder in _holders(messages or []):
            for key, value in holder.items():
                if isinstance(value, str) and len(value) > best_size:
                    best, best_size = (holder, key), len(value)
    return best


def _holders(value: JSON) -> Iterable[JSONDict]:
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _holders(v)
    elif isinstance(value, list):
        for v in value:
            yield from _holders(v)


# --------------------------------------------------------------------------- describing


def describe(
    name: str,
    attributes: Mapping[str, JSON],
    events: Iterable[tuple[str, Mapping[str, JSON]]] = (),
    *,
    operation: str | None,
    error: str | None = None,
) -> SpanDescription:
    """One span, whatever its dialect: ``events`` are its span events (name, attributes).

    ``operation`` is the GenAI operation (``gen_ai.operation.name``, else the name's first
    word); ``error`` the status message of a span that failed ("" if it gave none).
    """
    events = list(events)
    merged: Mapping[str, JSON] = attributes
    # the current conventions' messages, as an event
    details = [given for event_name, given in events if event_name == DETAILS_EVENT]
    if details:
        with_details = dict(attributes)
        for event_attributes in details:
            for key, value in event_attributes.items():
                with_details.setdefault(key, value)
        merged = with_details
    kind = kind_of(name, merged, operation)
    agent_name = fact(merged, "agent_name")
    if kind == "agent" and agent_name is None:
        agent_name = after_prefix(name, "invoke_agent") or (
            name if name and name != "agent run" else "agent"
        )
    usage, aggregate = usage_of(merged)
    if kind == "agent" and usage:
        aggregate = True  # an agent's counts are its model calls' sum
    if events or any(k in _MESSAGE_KEYS or k.startswith(_MESSAGE_PREFIXES) for k in merged):
        system, given, output = _messages(merged, events)
    else:  # the usual span: no attribute a conversation is read from
        system = given = output = None
    tool_name = fact(merged, "tool_name") if kind == "tool" else None
    if kind == "tool" and tool_name is None:
        tool_name = after_prefix(name, "execute_tool") or name or "tool"
    model = fact(merged, "model")
    if kind == "llm" and model is None and operation:
        # GenAI span names are "{operation} {model}": all a start may say of its model.
        model = after_prefix(name, operation)
    response_model = text_of(first(merged, FACTS["response_model"]))
    said = output_text(output)
    agent_output = fact(merged, "agent_output") if kind != "llm" else None
    title = (
        fact(merged, "title")
        or (agent_name if kind == "agent" else None)
        or (tool_name if kind == "tool" else None)
        or (response_model or model if kind == "llm" else None)
        or name
        or operation
        or kind
    )
    failure = None
    if error is not None:
        failure = error or fact(merged, "error_type") or "failed"
    pending = merged.get("logfire.span_type") == PENDING
    real_parent = text_of(merged.get("logfire.pending_parent_id")) if pending else None
    if real_parent is not None and not any(c not in "0" for c in real_parent):
        real_parent = None
    return SpanDescription(
        kind=kind,
        title=title,
        operation=operation or text_of(merged.get("openinference.span.kind")),
        agent_name=agent_name if kind == "agent" else text_of(merged.get("gen_ai.agent.name")),
        model=model if kind == "llm" else None,
        response_model=response_model if kind == "llm" else None,
        provider=fact(merged, "provider") if kind == "llm" else None,
        conversation_id=fact(merged, "conversation_id"),
        usage=usage,
        usage_is_aggregate=aggregate,
        finish_reasons=finish_reasons_of(merged, output) if kind == "llm" else None,
        input_messages=given or None,
        system_instructions=system or None,
        output_messages=output or None,
        output=agent_output if agent_output is not None else said,
        tool_name=tool_name,
        tool_call_id=fact(merged, "tool_call_id") if kind == "tool" else None,
        tool_arguments=_summary(merged, "tool_arguments") if kind == "tool" else None,
        tool_result=_summary(merged, "tool_result") if kind == "tool" else None,
        error=failure,
        pending=pending,
        real_parent=real_parent,
    )


def _summary(attributes: Mapping[str, JSON], name: str) -> str | None:
    return summary_of(first(attributes, FACTS[name])) or None


def event_messages(name: str, attributes: Mapping[str, JSON], body: JSON) -> dict[str, JSON] | None:
    """A GenAI event sent as a log record (the v1.30-era message events, or the inference
    details event): its messages structured, cut to :data:`MAX_CONVERSATION`; else None."""
    if name == DETAILS_EVENT:
        system, given, output = _messages(attributes, [])
    elif name in MESSAGE_EVENTS:
        fields = body if isinstance(body, dict) else {"content": body}
        system, given, output = old_events_messages([(name, {**attributes, **fields})])
    else:
        return None
    (system, given, output), cut = cut_conversation(system or None, given or None, output or None)
    found = {
        "systemInstructions": system,
        "inputMessages": given,
        "outputMessages": output,
        "output": output_text(output),
        "cut": cut or None,
    }
    return {k: v for k, v in found.items() if v}


def _messages(
    attributes: Mapping[str, JSON], events: list[tuple[str, Mapping[str, JSON]]]
) -> tuple[list[JSONDict] | None, list[JSONDict] | None, list[JSONDict] | None]:
    """(system instructions, input messages, output messages), from whichever dialect has them."""
    system = system_of(first(attributes, SYSTEM))
    given = messages_of(first(attributes, MESSAGES_IN))
    output = messages_of(first(attributes, MESSAGES_OUT))
    if given is None:
        given = openinference_messages(attributes, OPENINFERENCE_IN)
    if output is None:
        output = openinference_messages(attributes, OPENINFERENCE_OUT)
    old = list(events)
    packed = _json(attributes.get(OLD_EVENTS_ATTRIBUTE))
    if isinstance(packed, list):
        old += [(text_of(e.get("event.name")) or "", e) for e in packed if isinstance(e, dict)]
    if old and (given is None or output is None or system is None):
        old_system, old_given, old_output = old_events_messages(old)
        system = system or old_system or None
        given = given or old_given or None
        output = output or old_output or None
    return system, given, output
