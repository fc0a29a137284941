"""An execution's span tree (SPEC §12), folded from its stored events: pure, no I/O.

:class:`SpanTree` takes an execution's events in ``seq`` order, as the wire has them
(dicts), and gives ``GET /api/executions/<id>/tree``'s answer. What an event is (opens,
closes, its span id, task, error) is read from the table of event facts, so the page
and ``tail --tree`` can fold the same way. The root node is the execution: its span id
is the root span's (the ``spanId`` of its status events), else the execution id.
A parent not seen yet is a placeholder until its opening arrives. Tools and skills of
the plan's JSON without a ``parentSpanId`` hang under their task's node (``task:<id>``)
when they name a task, else under the root.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final, TypeAlias

import attrs
import orjson

from .facts import FACTS, holds
from .prices import Cost, Prices, cost
from .spanrules import LOST

_PLAN_KINDS: Final = frozenset({"tool", "skill", "task"})
"""Spans whose title never names a run (a run named "Read" says nothing)."""
_SKILL_STATE: Final = {"success": "done", "partial": "done", "failed": "error"}
_EXECUTION_STATE: Final = {
    "started": "running", "running": "running", "paused": "running",
    "completed": "done", "failed": "error",
}  # fmt: skip


@attrs.define(slots=True)
class Node:
    """One span of the tree, as the tree endpoint gives it."""

    span_id: str
    parent_span_id: str | None = None
    kind: str = "span"
    name: str | None = None
    agent: str | None = None
    state: str = "running"
    start: str | None = None
    end: str | None = None
    duration_ms: float | None = None
    model: str | None = None
    usage: dict[str, int] | None = None
    error: str | None = None
    placeholder: bool = False
    open_seq: int | None = None
    close_seq: int | None = None
    tool_use_id: str | None = None
    task_id: str | None = None
    explicit_parent: bool = False
    """The parent was named by the events (not inferred from a task, or the root)."""
    lost_by: str | None = None
    """The watchdog's alert its provisional ``lost`` closing names (SPEC §13)."""

    def under(self, parent: str | None) -> Node:
        """A copy of this node under ``parent`` (what ``attrs.evolve`` gives, without its
        per-call field walk: a tree of 10,000 spans makes 10,000 copies)."""
        copy = object.__new__(Node)
        for name in _SLOTS:
            object.__setattr__(copy, name, getattr(self, name))
        copy.parent_span_id = parent
        return copy

    def to_json(
        self, prices: Prices, costs: dict[tuple[str, int, int], Cost] | None = None
    ) -> dict[str, Any]:
        """The node as the tree endpoint gives it."""
        out: dict[str, Any] = {
            "spanId": self.span_id,
            "parentSpanId": self.parent_span_id,
            "kind": self.kind,
            "name": self.name,
            "agent": self.agent,
            "state": self.state,
            "start": self.start,
            "end": self.end,
            "durationMs": self.duration_ms,
            "model": self.model,
            "usage": self.usage,
            "cost": self.cost(prices, costs),
            "error": self.error,
            "placeholder": self.placeholder,
            "openSeq": self.open_seq,
            "closeSeq": self.close_seq,
        }
        if self.tool_use_id is not None:
            out["toolUseId"] = self.tool_use_id
        if self.task_id is not None:
            out["taskId"] = self.task_id
        return out

    def cost(
        self, prices: Prices, costs: dict[tuple[str, int, int], Cost] | None = None
    ) -> Cost | None:
        """A model call's cost (None for other spans, and before its usage is known);
        ``costs`` keeps the costs already computed, by model and tokens."""
        if self.kind != "llm" or not self.usage:
            return None
        key = (self.model or "", *_tokens(self.usage))
        if costs is None:
            return cost({key[0]: key[1:]}, prices)
        found = costs.get(key)
        if found is None:
            found = costs[key] = cost({key[0]: key[1:]}, prices)
        return found


_SLOTS: Final = tuple(a.name for a in attrs.fields(Node))


def _tokens(usage: Mapping[str, int]) -> tuple[int, int]:
    return usage.get("inputTokens", 0), usage.get("outputTokens", 0)


def _ms_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds() * 1000)


def _closing_state(event: Mapping[str, Any]) -> str:
    kind = event.get("type")
    if kind == "tool:end":
        return str(event.get("resultStatus") or "done")
    if kind == "skill:end":
        return _SKILL_STATE.get(str(event.get("status")), "done")
    return str(event.get("state") or "done")


def _name(event: Mapping[str, Any]) -> str | None:
    for field in ("tool", "skillName", "name"):
        value = event.get(field)
        if isinstance(value, str) and value:
            return value
    return None


class SpanTree:
    """The span tree of one execution, folded event by event (:meth:`add`)."""

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        self.seq = 0
        self.nodes: dict[str, Node] = {}
        self.aliases: dict[str, str] = {}
        """A tool's ``spanId`` when it is not its ``toolUseId`` (children may name either)."""
        self.root = Node(execution_id, kind="span", explicit_parent=True)
        self.root_agent: str | None = None
        self.first: str | None = None
        self.errors = 0
        self.folded = 0
        """Events folded (an answer is kept while no more are)."""
        self._declared: dict[str, set[str]] = {}
        """Span ids by the parent their events named (an alias learnt later moves them)."""
        self._dirty: set[str] = set()
        """Spans changed since the last answer."""
        self._view: _View | None = None

    # ------------------------------------------------------------------ folding

    def add_all(self, events: Iterable[Mapping[str, Any]]) -> SpanTree:
        """Fold ``events`` (in seq order); returns the tree."""
        for event in events:
            self.add(event)
        return self

    def add(self, event: Mapping[str, Any]) -> None:
        """Fold one stored event of the execution."""
        fact = FACTS.get(str(event.get("type")))
        if fact is None:
            return
        self.folded += 1
        seq = event.get("seq")
        if isinstance(seq, int):
            self.seq = max(self.seq, seq)
        when = event.get("timestamp")
        if isinstance(when, str) and (self.first is None or when < self.first):
            self.first = when
        if fact.error and holds(fact.error, event):
            self.errors += 1
        span_id = event.get(fact.span_id)
        if event.get("type") == "watch:clear":
            self._cleared(event.get("alertId"))
        elif fact.role == "status":
            self._status(event, span_id if isinstance(span_id, str) else None)
        elif fact.role in ("opens", "closes") and isinstance(span_id, str):
            node = self._node(span_id)
            self._dirty.add(node.span_id)
            if fact.role == "opens":
                self._open(node, event, fact.span_kind)
            else:
                self._close(node, event, fact.span_kind)
            own = event.get("spanId")
            if isinstance(own, str) and own != span_id and self.aliases.get(own) != span_id:
                self.aliases[own] = span_id
                self._dirty.update(self._declared.get(own, ()))  # their parent is another

    def _cleared(self, alert: object) -> None:
        """A ``watch:clear``: spans its ``lost`` closing named run on until their real end."""
        if not isinstance(alert, str):
            return
        for node in self.nodes.values():
            if node.lost_by == alert and node.state == LOST:
                node.lost_by = None
                node.state = "running"
                node.end = node.close_seq = node.duration_ms = None
                self._dirty.add(node.span_id)

    def _node(self, span_id: str) -> Node:
        span_id = self.aliases.get(span_id, span_id)
        node = self.nodes.get(span_id)
        if node is None:
            node = self.nodes[span_id] = Node(span_id)
        return node

    def _status(self, event: Mapping[str, Any], span_id: str | None) -> None:
        root = self.root
        if span_id is not None and span_id not in (root.span_id, self.execution_id):
            self._rename_root(span_id)
        status = str(event.get("status"))
        when = event.get("timestamp")
        agent = event.get("agent")
        if isinstance(agent, str) and agent and span_id is not None:
            self.root_agent = agent
            root.kind, root.agent = "agent", agent
        if status == "started":
            root.open_seq = root.open_seq or event.get("seq")
            root.start = root.start or (when if isinstance(when, str) else None)
        root.state = _EXECUTION_STATE.get(status, "running")
        if status in ("completed", "failed"):
            root.end = when if isinstance(when, str) else None
            root.close_seq = event.get("seq")
            usage = event.get("usage")
            if isinstance(usage, dict):
                root.usage = usage
            message = event.get("message")
            if status == "failed" and isinstance(message, str):
                root.error = message
        else:
            root.end, root.close_seq = None, None

    def _rename_root(self, span_id: str) -> None:
        """The root span's id became known: a placeholder of that id is the root."""
        self.root.span_id = span_id
        self.nodes.pop(span_id, None)
        self._view = None  # every span's parent may be another: the answer is made anew

    def _open(self, node: Node, event: Mapping[str, Any], kind: str | None) -> None:
        if node.open_seq is not None:
            return  # one opening (the store keeps one; a fold of copies keeps the first)
        node.placeholder = False
        node.kind = kind or str(event.get("kind") or "span")
        node.name = _name(event) or node.name
        node.open_seq = event.get("seq")
        when = event.get("timestamp")
        node.start = when if isinstance(when, str) else None
        self._fill(node, event)

    def _close(self, node: Node, event: Mapping[str, Any], kind: str | None) -> None:
        state = _closing_state(event)
        if node.close_seq is not None and (node.state != LOST or state == LOST):
            return
        if node.open_seq is None and node.close_seq is None:  # closed, never opened
            node.kind = kind or str(event.get("kind") or "span")
            node.name = _name(event) or node.name
        elif event.get("kind") and kind is None and node.kind == "span":
            node.kind = str(event["kind"])
        node.name = node.name or _name(event)
        node.state = state
        details = event.get("details")
        by = details.get("alertId") if isinstance(details, dict) else None
        node.lost_by = by if state == LOST and isinstance(by, str) else None
        when = event.get("timestamp")
        node.end = when if isinstance(when, str) else None
        node.close_seq = event.get("seq")
        duration = event.get("durationMs")
        if isinstance(duration, int | float):
            node.duration_ms = float(duration)
            if node.start is None and node.end is not None:
                node.start = node.end  # only the end is known: a point at its end
        else:
            node.duration_ms = _ms_between(node.start, node.end)
        if node.start is None:
            node.start = node.end
        usage = event.get("usage")
        if isinstance(usage, dict):
            node.usage = usage
        error = event.get("error")
        if isinstance(error, str):
            node.error = error
        elif state == "error" and isinstance(event.get("outputSummary"), str):
            node.error = event["outputSummary"]
        self._fill(node, event)

    def _fill(self, node: Node, event: Mapping[str, Any]) -> None:
        """What an opening or closing says of its span, where the span did not say it yet."""
        node.placeholder = False
        model = event.get("model")
        if isinstance(model, str) and model:
            node.model = model  # the end's (the response model) wins over the start's
        agent = event.get("agent")
        if isinstance(agent, str) and agent and node.agent is None:
            node.agent = agent
        task = event.get("taskId")
        if isinstance(task, str) and task and node.task_id is None:
            node.task_id = task
        if event.get("type", "").startswith("tool:"):
            node.tool_use_id = event.get("toolUseId")
        parent = event.get("parentSpanId")
        if isinstance(parent, str) and parent and not node.explicit_parent:
            node.parent_span_id, node.explicit_parent = parent, True
            self._declared.setdefault(parent, set()).add(node.span_id)

    # ------------------------------------------------------------------ answering

    def answer(self, prices: Prices, *, epoch: str | None = None) -> bytes:
        """The tree endpoint's answer (CONTRACT D), encoded: every node, the root first, then
        by start and opening seq; placeholders for parents not seen, task nodes for the
        plan's tools and skills.

        The answer's parts are kept: a tree that folds more events answers again by
        encoding only the spans that changed (and those their change moves: a placeholder,
        a task), as a fold of every event would answer. The tree itself is left as folded.
        """
        view = self._view
        if view is None or view.prices is not prices:
            view = self._view = _View(prices, self.root.span_id)
            self._dirty.clear()
            view.update(self, list(self.nodes), fresh=True)
        elif self._dirty:
            dirty, self._dirty = self._dirty, set()
            view.update(self, dirty, fresh=False)
        elif view.answer is not None and view.folded == self.folded and view.epoch == epoch:
            return view.answer
        root = self.root.under(None)
        root.start = root.start or self.first
        if root.state != "running" and root.end is not None:
            root.duration_ms = _ms_between(root.start, root.end)
        root.name = self.name()
        top = {
            "executionId": self.execution_id,
            "seq": self.seq,
            "epoch": epoch,
            "name": root.name,
            "state": root.state,
            "rootSpanId": self.root.span_id,
            "totals": view.totals(self.errors),
        }
        # One copy of the spans' JSON: the answer's head and its root go before the first
        # span's, its end after the last's.
        first = (
            orjson.dumps(top)[:-1] + b',"spans":[' + orjson.dumps(root.to_json(prices, view.costs))
        )
        parts = view.parts
        if parts:
            view.answer = b",".join([first, *parts[:-1], parts[-1] + b"]}"])
        else:
            view.answer = first + b"]}"
        view.folded, view.epoch = self.folded, epoch
        return view.answer

    def to_json(self, prices: Prices, *, epoch: str | None = None) -> dict[str, Any]:
        """The tree endpoint's answer (CONTRACT D), as data (:meth:`answer`, decoded)."""
        out: dict[str, Any] = orjson.loads(self.answer(prices, epoch=epoch))
        return out

    def parent_in_answer(self, node: Node) -> tuple[str, str | None]:
        """Where ``node`` stands in the answer: its parent, and the plan's task it hangs
        under (its parent is then that task's node)."""
        parent = node.parent_span_id if node.explicit_parent else None
        if parent is not None:
            parent = self.aliases.get(parent, parent)
        if parent == node.span_id:
            parent = None  # its own parent: a producer's mistake, not a loop
        if parent is None or parent == self.execution_id:
            if node.task_id and node.kind in ("tool", "skill"):
                return f"task:{node.task_id}", node.task_id
            return self.root.span_id, None
        return parent, None

    def name(self) -> str | None:
        """The run's name: its root agent, else its outermost agent, else a top span's title."""
        if self.root_agent:
            return self.root_agent
        agents = sorted(
            (n for n in self.nodes.values() if n.kind == "agent" and n.start),
            key=lambda n: (n.start or "", n.open_seq or 0),
        )
        for node in agents:
            if not self._agent_above(node) and (node.agent or node.name):
                return node.agent or node.name
        tops = sorted(
            (
                n
                for n in self.nodes.values()
                if n.name and not n.explicit_parent and n.start and n.kind not in _PLAN_KINDS
            ),
            key=lambda n: (n.start or "", n.open_seq or 0),
        )
        return tops[0].name if tops else None

    def _on_top(self, node: Node) -> bool:
        """Whether no span of the tree (but the root) is above ``node``."""
        parent = node.parent_span_id if node.explicit_parent else None
        if parent is None or parent in (self.root.span_id, self.execution_id):
            return True
        return self.aliases.get(parent, parent) not in self.nodes

    def _agent_above(self, node: Node) -> bool:
        seen: set[str] = set()
        parent = node.parent_span_id if node.explicit_parent else None
        while parent is not None and parent not in seen:
            seen.add(parent)
            above = self.nodes.get(self.aliases.get(parent, parent))
            if above is None:
                return False
            if above.kind == "agent":
                return True
            parent = above.parent_span_id if above.explicit_parent else None
        return False


_Key: TypeAlias = tuple[str, int, str, int]
"""Where a part stands in the answer: start, :func:`_order`, span id, 0 (a span) or 1 (a
plan task's node; a task's id may also be a span's)."""


class _View:
    """The parts of a tree's answer, kept between two answers (:meth:`SpanTree.answer`):
    each span's encoded JSON in the answer's order, where each span stands, the totals."""

    def __init__(self, prices: Prices, root_id: str) -> None:
        self.prices = prices
        self.root_id = root_id
        self.costs: dict[tuple[str, int, int], Cost] = {}
        self.parent: dict[str, str] = {}
        """Each span's parent in the answer."""
        self.under: dict[str, set[str]] = {}
        """The spans under each parent in the answer."""
        self.task: dict[str, str] = {}
        self.in_task: dict[str, set[str]] = {}
        """The spans hung under each plan task's node, by task id."""
        self.key: dict[tuple[str, int], _Key] = {}
        self.keys: list[_Key] = []
        self.parts: list[bytes] = []
        """Each part's place and its JSON, in the answer's order (``keys`` sorted)."""
        self.counted: dict[str, tuple[str, str, bool, int, int]] = {}
        """Each span's share of the totals: kind, model, whether it has usage, tokens."""
        self.counts = {"llm": 0, "tool": 0}
        self.models: dict[str, list[int]] = {}
        """Model calls with usage, input and output tokens, by model."""
        self.answer: bytes | None = None
        self.folded = 0
        self.epoch: str | None = None

    def update(self, tree: SpanTree, ids: Iterable[str], *, fresh: bool) -> None:
        """Take the spans ``ids`` again from ``tree`` (``fresh``: every span, none taken)."""
        self.answer = None
        parents: set[str] = set()
        tasks: set[str] = set()
        for span_id in ids:
            node = tree.nodes.get(span_id)
            self._count(span_id, node)
            old = self.parent.pop(span_id, None)
            if old is not None:
                self._leave(self.under, old, span_id)
                parents.add(old)
            old_task = self.task.pop(span_id, None)
            if old_task is not None:
                self._leave(self.in_task, old_task, span_id)
                tasks.add(old_task)
            parents.add(span_id)
            if node is None or span_id == self.root_id:
                continue
            parent, task = tree.parent_in_answer(node)
            self.parent[span_id] = parent
            self.under.setdefault(parent, set()).add(span_id)
            parents.add(parent)
            if task is not None:
                self.task[span_id] = task
                self.in_task.setdefault(task, set()).add(span_id)
                tasks.add(task)
        parents.update(f"task:{task}" for task in tasks)  # a parent so named is no placeholder
        for span_id in parents:
            self._put((span_id, 0), self._span(tree, span_id), fresh=fresh)
        for task in tasks:
            children = self.in_task.get(task)
            node = None
            if children:
                node = _task_node(task, self.root_id, [tree.nodes[c] for c in children])
            self._put((f"task:{task}", 1), node, fresh=fresh)
        if fresh:
            ordered = sorted(zip(self.keys, self.parts, strict=True))
            self.keys = [key for key, _ in ordered]
            self.parts = [part for _, part in ordered]

    @staticmethod
    def _leave(groups: dict[str, set[str]], group: str, span_id: str) -> None:
        members = groups[group]
        members.discard(span_id)
        if not members:
            del groups[group]

    def _span(self, tree: SpanTree, span_id: str) -> Node | None:
        """The answer's node of ``span_id``: the span, a placeholder, or none."""
        if span_id == self.root_id:
            return None
        node = tree.nodes.get(span_id)
        if node is not None:
            parent = self.parent[span_id]
            return node if node.parent_span_id == parent else node.under(parent)
        children = self.under.get(span_id)
        if not children or (span_id.startswith("task:") and span_id[5:] in self.in_task):
            return None
        starts = [s for c in children if (s := tree.nodes[c].start)]
        return Node(span_id, self.root_id, placeholder=True, start=min(starts, default=None))

    def _put(self, part: tuple[str, int], node: Node | None, *, fresh: bool) -> None:
        old = self.key.pop(part, None)
        if old is not None:
            at = bisect.bisect_left(self.keys, old)
            del self.keys[at], self.parts[at]
        if node is None:
            return
        key = self.key[part] = (node.start or "\uffff", _order(node), node.span_id, part[1])
        # A copy of its size (orjson's result keeps the whole buffer it grew).
        data = memoryview(orjson.dumps(node.to_json(self.prices, self.costs))).tobytes()
        if fresh:
            self.keys.append(key)
            self.parts.append(data)
        else:
            at = bisect.bisect_left(self.keys, key)
            self.keys.insert(at, key)
            self.parts.insert(at, data)

    def _count(self, span_id: str, node: Node | None) -> None:
        """The totals, ``span_id``'s old figures out and its new ones in."""
        old = self.counted.pop(span_id, None)
        if old is not None:
            self._add(*old, -1)
        if node is not None:
            tokens = _tokens(node.usage) if node.usage else (0, 0)
            new = self.counted[span_id] = (node.kind, node.model or "", bool(node.usage), *tokens)
            self._add(*new, 1)

    def _add(
        self, kind: str, model: str, usage: bool, tokens_in: int, tokens_out: int, sign: int
    ) -> None:
        if kind in self.counts:
            self.counts[kind] += sign
        if kind == "llm" and usage:
            figures = self.models.setdefault(model, [0, 0, 0])
            figures[0] += sign
            figures[1] += sign * tokens_in
            figures[2] += sign * tokens_out
            if not figures[0]:
                del self.models[model]

    def totals(self, errors: int) -> dict[str, Any]:
        """Model calls, tokens, cost, tool calls and errors of the events folded."""
        models = {m: (f[1], f[2]) for m, f in sorted(self.models.items())}
        return {
            "modelCalls": self.counts["llm"],
            "inputTokens": sum(t[0] for t in models.values()),
            "outputTokens": sum(t[1] for t in models.values()),
            "cost": cost(models, self.prices),
            "toolCalls": self.counts["tool"],
            "errors": errors,
        }


def _order(node: Node) -> int:
    """Among spans that start together: a placeholder before its children, then by seq."""
    if node.open_seq is not None:
        return node.open_seq
    return -1 if node.placeholder or node.kind == "task" else node.close_seq or 0


def _task_node(task_id: str, parent: str, children: list[Node]) -> Node:
    """A plan task's node: it spans its children, runs while one does, failed if one did."""
    starts = [c.start for c in children if c.start]
    node = Node(f"task:{task_id}", parent, "task", task_id, task_id=task_id,
                start=min(starts) if starts else None)  # fmt: skip
    states = {c.state for c in children}
    if "running" in states:
        node.state = "running"
    else:
        node.state = "error" if "error" in states else "done"
        ends = [c.end for c in children if c.end]
        node.end = max(ends) if ends else None
        node.duration_ms = _ms_between(node.start, node.end)
    return node
