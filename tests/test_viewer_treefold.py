"""The page's span-tree fold (``static/tree.js``) under node: events in any order, copies."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from trio_obs.core import facts

STATIC = Path(__file__).parent.parent / "src" / "trio_obs" / "server" / "static"
pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

# Prints each tree as [id, parent, kind, state, placeholder] rows in depth-first order.
FOLD = """
import { newTree, foldEvent, flatten, ROOT } from "./tree.js";
const runs = JSON.parse(process.argv[2]);
const out = runs.map((events) => {
  const t = newTree();
  for (const ev of events) foldEvent(t, ev, () => null);
  const rows = flatten(t, new Set());
  return { running: t.running, count: t.count, rows: rows.map((n) =>
    [n === t.root ? "ROOT" : n.id, n.parent ? (n.parent === t.root ? "ROOT" : n.parent.id) : null,
     n.kind, n.slow ? "slow" : n.state, n.placeholder]) };
});
console.log(JSON.stringify(out));
"""


def fold(tmp_path: Path, *runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for name in ("tree.js", "events.js"):
        shutil.copy(STATIC / name, tmp_path / name)
    (tmp_path / "facts.js").write_text(facts.facts_js())
    (tmp_path / "fold.mjs").write_text(FOLD)
    out = subprocess.run(
        ["node", str(tmp_path / "fold.mjs"), json.dumps(runs)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


def ts(ms: int) -> str:
    return f"2026-01-01T00:00:00.{ms:03d}Z"


E = "e1"
ROOT = {"type": "execution:status", "executionId": E, "status": "started", "spanId": "r",
        "timestamp": ts(0), "seq": 1}  # fmt: skip
AGENT = {"type": "span:start", "executionId": E, "spanId": "a", "parentSpanId": "r",
         "kind": "agent", "name": "planner", "timestamp": ts(10), "seq": 2}  # fmt: skip
LLM = {"type": "span:start", "executionId": E, "spanId": "m", "parentSpanId": "a",
       "kind": "llm", "name": "chat", "timestamp": ts(20), "seq": 3}  # fmt: skip
LLM_END = {"type": "span:end", "executionId": E, "spanId": "m", "state": "done",
           "durationMs": 5.0, "timestamp": ts(25), "seq": 4}  # fmt: skip
TOOL = {"type": "tool:start", "executionId": E, "toolUseId": "t", "tool": "Bash",
        "inputSummary": "ls", "taskId": "T1", "timestamp": ts(30), "seq": 5}  # fmt: skip
LOST = {"type": "span:end", "executionId": E, "spanId": "a", "state": "lost",
        "timestamp": ts(40), "seq": 6}  # fmt: skip
AGENT_END = {"type": "span:end", "executionId": E, "spanId": "a", "state": "done",
             "durationMs": 35.0, "timestamp": ts(45), "seq": 7}  # fmt: skip
RUN = [ROOT, AGENT, LLM, LLM_END, TOOL, LOST, AGENT_END]
WANT = [
    ["ROOT", None, "agent", "running", False],
    ["a", "ROOT", "agent", "done", False],  # the real end replaced the provisional "lost"
    ["m", "a", "llm", "done", False],
    ["task:T1", "ROOT", "task", "running", False],  # a plan tool hangs under its task
    ["t", "task:T1", "tool", "running", False],
]


def test_any_order_and_copies_give_one_tree(tmp_path: Path) -> None:
    in_order, child_first, twice = fold(tmp_path, RUN, RUN[::-1], RUN + RUN)
    assert in_order["rows"] == WANT
    # Children before their parents: placeholders, filled when the parents come.
    assert child_first["rows"] == WANT
    # Every event taken twice: nothing changes.
    assert twice["rows"] == WANT
    assert in_order["running"] == twice["running"] == 1  # the tool
    assert in_order["count"] == 4


def test_a_parent_never_seen_is_a_placeholder(tmp_path: Path) -> None:
    (run,) = fold(tmp_path, [ROOT, LLM])
    assert run["rows"] == [
        ["ROOT", None, "agent", "running", False],
        ["a", "ROOT", "span", "running", True],
        ["m", "a", "llm", "running", False],
    ]


def test_a_lost_span_runs_again_when_its_alert_is_cleared(tmp_path: Path) -> None:
    lost = {**LOST, "details": {"inferred": True, "alertId": "lost-1"}}
    clear = {"type": "watch:clear", "executionId": E, "alertId": "lost-1", "message": "back",
             "timestamp": ts(42), "seq": 8}  # fmt: skip
    judged, cleared, ended = fold(
        tmp_path,
        [ROOT, AGENT, lost],
        [ROOT, AGENT, lost, clear],
        [ROOT, AGENT, lost, clear, {**AGENT_END, "seq": 9}],
    )
    assert judged["rows"][1] == ["a", "ROOT", "agent", "lost", False]
    assert cleared["rows"][1] == ["a", "ROOT", "agent", "running", False]
    assert cleared["running"] == 1
    assert ended["rows"][1] == ["a", "ROOT", "agent", "done", False]
    assert ended["running"] == 0


def test_a_slow_alert_marks_its_span_until_cleared(tmp_path: Path) -> None:
    alert = {"type": "watch:alert", "executionId": E, "alertId": "al1", "alert": "slow",
             "toolUseId": "t", "spanId": "t", "inferred": True, "seq": 6}  # fmt: skip
    clear = {"type": "watch:clear", "executionId": E, "alertId": "al1", "seq": 7}
    slow, cleared = fold(tmp_path, [ROOT, TOOL, alert], [ROOT, TOOL, alert, clear])
    assert slow["rows"][-1] == ["t", "task:T1", "tool", "slow", False]
    assert cleared["rows"][-1] == ["t", "task:T1", "tool", "running", False]
