"""``trio-obs tail --tree EXECUTION``: an execution's span tree, printed once.

:func:`fetch_tree` GETs ``/api/executions/<id>/tree`` (SPEC §12); :func:`render_tree`
is a pure function of its JSON: one line per span, drawn as a tree, with its state,
duration, tokens and cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from rich.text import Text

from ..core.errors import TrioObsError
from .common import auth_headers, endpoints, error_text
from .tail_render import (
    STATUS_STYLE,
    call_label,
    format_duration,
    format_tokens,
    one_line,
    span_title,
)


class TreeUnavailable(TrioObsError):
    """The server did not give the tree: ``status`` is its HTTP status (None: unreachable)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


async def fetch_tree(
    url: str, execution_id: str, token: str | None = None, http_timeout: float = 10.0
) -> dict[str, Any]:
    """The tree of one execution (the JSON of ``GET /api/executions/<id>/tree``).

    Raises :class:`TreeUnavailable` with a sentence a person can act on.
    """
    base = endpoints(url).http
    try:
        async with httpx.AsyncClient(
            timeout=http_timeout, trust_env=False, headers=auth_headers(token)
        ) as http:
            response = await http.get(f"{base}/api/executions/{quote(execution_id, safe='')}/tree")
    except httpx.HTTPError as exc:
        raise TreeUnavailable(
            f"cannot reach the server at {url} ({exc or type(exc).__name__}). Is it running?"
        ) from None
    status = response.status_code
    if status == 404:
        raise TreeUnavailable(f"{url} has no execution {execution_id!r}", status)
    if status != 200:
        raise TreeUnavailable(
            f"{url} answered {status}: {error_text(response.text)}"
            + (" (give the server's --token)" if status == 401 else ""),
            status,
        )
    try:
        tree = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise TreeUnavailable(f"{url} did not answer JSON for the tree", status) from None
    if not isinstance(tree, dict):
        raise TreeUnavailable(f"{url} did not answer a tree object", status)
    return tree


def format_cost(cost: object) -> str:
    """``$0.0123``; ``cost unknown`` for a model without a price; empty when not given."""
    if cost == "unknown":
        return "cost unknown"
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        return f"${cost:.4f}" if cost < 1 else f"${cost:.2f}"
    return ""


def _elapsed_ms(start: object, now: datetime | None) -> float | None:
    if not isinstance(start, str) or now is None:
        return None
    try:
        began = datetime.fromisoformat(start)
    except ValueError:
        return None
    if began.tzinfo is None or now.tzinfo is None:
        return None
    return max(0.0, (now - began).total_seconds() * 1000)


def _facts(span: Mapping[str, Any], now: datetime | None) -> Text:
    """`` done 1.3 s · 1,200 in / 85 out tokens · $0.0040 — error``."""
    text = Text()
    state = span.get("state")
    if span.get("placeholder"):
        text.append(" (not seen yet)", "grey50")
    elif isinstance(state, str):
        text.append(f" {state}", STATUS_STYLE.get(state, ""))
    duration = span.get("durationMs")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        text.append(f" {format_duration(duration)}", "grey70")
    elif state == "running" and (elapsed := _elapsed_ms(span.get("start"), now)) is not None:
        text.append(f" {format_duration(elapsed)} so far", "grey70")
    usage = span.get("usage")
    if isinstance(usage, dict) and (tokens := format_tokens(usage)):
        text.append(f" · {tokens}", "grey70")
    if cost := format_cost(span.get("cost")):
        text.append(f" · {cost}", "grey70")
    error = span.get("error")
    if isinstance(error, str) and error:
        text.append(f" — {one_line(error)}", "red")
    return text


def _title(span: Mapping[str, Any]) -> Text:
    kind = span.get("kind") if isinstance(span.get("kind"), str) else None
    name = span.get("name") if isinstance(span.get("name"), str) else None
    span_id = str(span.get("spanId"))
    tool_use_id = span.get("toolUseId")
    if kind == "tool" and isinstance(tool_use_id, str):
        return Text.assemble(("tool ", "grey70"), (call_label(name, tool_use_id), "bold cyan"))
    model = span.get("model") if isinstance(span.get("model"), str) else None
    return span_title(kind, name, model, span_id)  # the agent: the nearest agent above


def _totals(totals: Mapping[str, Any]) -> str:
    parts = []
    for key, one, many in (
        ("modelCalls", "model call", "model calls"),
        ("toolCalls", "tool call", "tool calls"),
        ("errors", "error", "errors"),
    ):
        count = totals.get(key)
        if isinstance(count, int) and (count or key != "errors"):
            parts.append(f"{count:,} {one if count == 1 else many}")
    if tokens := format_tokens(totals):
        parts.append(tokens)
    if cost := format_cost(totals.get("cost")):
        parts.append(cost)
    return " · ".join(parts)


def render_tree(tree: Mapping[str, Any], *, now: datetime | None = None) -> list[Text]:
    """The lines of ``tree`` (the tree route's JSON): a heading, then one line per span.

    Children are drawn under their parent (``├─``, ``└─``) in the order the server gave
    (start, then arrival); a span whose parent is not in the tree is drawn at the top.
    ``now`` (aware) lets a running span say how long it has run so far.
    """
    execution_id = str(tree.get("executionId", ""))
    name = tree.get("name")
    heading = Text.assemble(
        (str(name) if isinstance(name, str) and name else execution_id, "bold"), " "
    )
    state = tree.get("state")
    if isinstance(state, str):
        heading.append(state, STATUS_STYLE.get(state, "bold"))
    if name and name != execution_id:
        heading.append(f"  {execution_id}", "grey50")
    lines = [heading]
    totals = tree.get("totals")
    if isinstance(totals, dict) and (summary := _totals(totals)):
        lines.append(Text(summary, "grey70"))

    raw = tree.get("spans")
    spans = [s for s in raw if isinstance(s, dict)] if isinstance(raw, list) else []
    ids = {s.get("spanId") for s in spans}
    children: dict[object, list[Mapping[str, Any]]] = {}
    tops: list[Mapping[str, Any]] = []
    for span in spans:
        parent = span.get("parentSpanId")
        if parent is None or parent not in ids or parent == span.get("spanId"):
            tops.append(span)
        else:
            children.setdefault(parent, []).append(span)

    seen: set[object] = set()

    def draw(span: Mapping[str, Any], lead: str, branch: str) -> None:
        span_id = span.get("spanId")
        if span_id in seen:  # a cycle in a broken tree: each span once
            return
        seen.add(span_id)
        lines.append(Text(lead + branch, "grey50") + _title(span) + _facts(span, now))
        below = children.get(span_id, [])
        inner = lead + ("│  " if branch == "├─ " else "   " if branch else "")
        for i, child in enumerate(below):
            draw(child, inner, "└─ " if i == len(below) - 1 else "├─ ")

    for top in tops:
        draw(top, "", "")
    for span in spans:  # a cycle in a broken answer: drawn from where it is entered
        if span.get("spanId") not in seen:
            draw(span, "", "")
    return lines
