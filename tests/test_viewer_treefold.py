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


# After each event, the rows kept by patchRows (new spans put in at their place) against a
# walk of the whole tree; prints the first difference, or the rows at the end.
PATCH = """
import { newTree, foldEvent, flatten, patchRows } from "./tree.js";
const [runs, folded] = JSON.parse(process.argv[2]);
const walk = (t, collapsed) => {
  const out = [];
  const go = (n, d) => {
    out.push([n, d]);
    if (!collapsed.has(n.id)) for (const k of n.kids) go(k, d + 1);
  };
  go(t.root, 0);
  return out;
};
const out = runs.map((events) => {
  const t = newTree();
  const collapsed = new Set(folded);
  let rows = flatten(t, collapsed);
  let patched = 0;
  for (const ev of events) {
    foldEvent(t, ev, () => null);
    const before = t.flat;
    rows = patchRows(t, rows, collapsed);
    if (t.flat === before) patched += 1;
    const want = walk(t, collapsed);
    const got = rows.map((n, i) => [n.id, n.depth, n.row === i, n.flat === t.flat]);
    const exp = want.map(([n, d]) => [n.id, d, true, true]);
    if (JSON.stringify(got) !== JSON.stringify(exp)) return { seq: ev.seq, got, exp };
  }
  return { rows: rows.map((n) => n.id), patched };
});
console.log(JSON.stringify(out));
"""


def patch(tmp_path: Path, runs: list[list[dict[str, Any]]], folded: list[str]) -> list[Any]:
    for name in ("tree.js", "events.js"):
        shutil.copy(STATIC / name, tmp_path / name)
    (tmp_path / "facts.js").write_text(facts.facts_js())
    (tmp_path / "patch.mjs").write_text(PATCH)
    out = subprocess.run(
        ["node", str(tmp_path / "patch.mjs"), json.dumps([runs, folded])],
        capture_output=True,
        text=True,
        check=True,
    )
    result: list[Any] = json.loads(out.stdout)
    return result


def start(sid: str, parent: str, ms: int, seq: int) -> dict[str, Any]:
    return {"type": "span:start", "executionId": E, "spanId": sid, "parentSpanId": parent,
            "kind": "llm", "name": sid, "timestamp": ts(ms), "seq": seq}  # fmt: skip


def test_new_spans_are_put_in_place_as_a_walk_of_the_tree_would(tmp_path: Path) -> None:
    # Spans that start under shown nodes, before, between and after their siblings, deep and
    # shallow, under a folded node, under a parent not seen yet; a run in any order.
    b = {**AGENT, "spanId": "b", "name": "coder", "timestamp": ts(50), "seq": 3}
    live = [ROOT, AGENT, b]
    live += [start("m1", "a", 20, 4), start("m0", "a", 15, 5), start("m2", "a", 30, 6),
             start("bb", "b", 60, 7), start("x1", "m1", 21, 8), start("late", "r", 90, 9),
             start("early", "r", 5, 10), start("f1", "b", 55, 11), start("orphan", "p?", 70, 12),
             start("o2", "p?", 71, 13), {**LLM_END, "spanId": "m1", "seq": 14},
             start("m3", "a", 40, 15)]  # fmt: skip
    runs = [live, live[::-1], live + live, RUN, RUN[::-1]]
    for folded in ([], ["b"], ["a", "p?"]):
        results = patch(tmp_path, runs, folded)
        for r in results:
            assert "got" not in r, (folded, r)
        # The live run in order: most spans went in without a walk of the whole tree.
        assert results[0]["patched"] >= 8, (folded, results[0])
    (in_order, *_) = patch(tmp_path, [live], [])
    assert in_order["rows"][1:6] == ["early", "a", "m0", "m1", "x1"]


def test_a_plan_task_runs_while_its_spans_do_and_ends_with_its_wave(tmp_path: Path) -> None:
    # As the server's tree has it (core/spantree.py): a task runs while one of its spans
    # does, failed if one did, else done; one with no spans yet ends with its wave.
    def entry(task: str, ms: int, seq: int) -> dict[str, Any]:
        return {"type": "transcript:entry", "executionId": E, "timestamp": ts(ms), "seq": seq,
                "entry": {"taskId": task, "waveNumber": 1, "summary": "working"}}  # fmt: skip

    def tool(tid: str, task: str, ms: int, seq: int, end: str | None = None) -> dict[str, Any]:
        if end:
            return {"type": "tool:end", "executionId": E, "toolUseId": tid, "resultStatus": end,
                    "durationMs": 5.0, "timestamp": ts(ms), "seq": seq}  # fmt: skip
        return {"type": "tool:start", "executionId": E, "toolUseId": tid, "tool": "Bash",
                "inputSummary": "make", "taskId": task, "timestamp": ts(ms),
                "seq": seq}  # fmt: skip

    wave = {"type": "wave:status", "executionId": E, "waveNumber": 1, "status": "running",
            "timestamp": ts(1), "seq": 2}  # fmt: skip
    run = [ROOT, wave, entry("T1", 2, 3), entry("T2", 3, 4), entry("T3", 4, 5),
           tool("u1", "T1", 10, 6), tool("u2", "T2", 11, 7), tool("u1", "T1", 15, 8, "done"),
           tool("u2", "T2", 16, 9, "error")]  # fmt: skip
    done = {**wave, "status": "completed", "timestamp": ts(30), "seq": 10}
    again = tool("u3", "T1", 40, 11)
    during, ended, rerun = fold(tmp_path, run[:6], [*run, done], [*run, done, again])

    def state(r: dict[str, Any], sid: str) -> str:
        (row,) = [x for x in r["rows"] if x[0] == sid]
        return str(row[3])

    assert [state(during, t) for t in ("task:T1", "task:T2", "task:T3")] == ["running"] * 3
    assert [state(ended, t) for t in ("task:T1", "task:T2", "task:T3")] == ["done", "error", "done"]
    assert state(rerun, "task:T1") == "running"  # a span of it starts again
