"""The one table of event facts (DESIGN.md §6), and the page's copy generated from it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from trio_obs.core import events as ev
from trio_obs.core import facts
from trio_obs.core.protocol import TOPIC_OF_TYPE, TOPICS

SAMPLES: list[dict[str, Any]] = [
    {"type": "tool:start", "executionId": "e", "toolUseId": "u1", "tool": "Bash",
     "inputSummary": "ls", "taskId": "t1"},
    {"type": "tool:end", "executionId": "e", "toolUseId": "u1", "resultStatus": "done",
     "durationMs": 1},
    {"type": "tool:end", "executionId": "e", "toolUseId": "u1", "resultStatus": "blocked",
     "durationMs": 1},
    {"type": "tool:end", "executionId": "e", "toolUseId": "u1", "resultStatus": "done",
     "isError": True, "durationMs": 1},
    {"type": "tool:output", "executionId": "e", "toolUseId": "u1", "chunk": "x",
     "isStderr": True},
    {"type": "skill:start", "executionId": "e", "skillTraceId": "k1", "skillName": "s",
     "skillFile": "f", "lineNumber": 1, "taskId": "t2"},
    {"type": "skill:end", "executionId": "e", "skillTraceId": "k1", "skillName": "s",
     "status": "failed", "durationMs": 2},
    {"type": "assertion:result", "executionId": "e", "taskId": "t1",
     "assertion": {"result": "fail"}},
    {"type": "assertion:result", "executionId": "e", "taskId": "t1",
     "assertion": {"result": "pass"}},
    {"type": "messagebus:event", "entry": {"severity": "warning", "taskId": "t3"},
     "requiresAction": True},
    {"type": "messagebus:event", "entry": {"severity": "critical"}},
    {"type": "transcript:entry", "executionId": "e", "entry": {"entryType": "error"}},
    {"type": "wave:status", "executionId": "e", "status": "failed"},
    {"type": "agent:heartbeat", "executionId": "e", "status": "error", "currentTaskId": "t4",
     "spanId": "s9"},
    {"type": "execution:status", "executionId": "e", "status": "failed", "spanId": "r"},
    {"type": "execution:status", "executionId": "e", "status": "completed"},
    {"type": "span:start", "executionId": "e", "spanId": "s1", "kind": "llm", "name": "gpt"},
    {"type": "span:end", "executionId": "e", "spanId": "s1", "state": "error"},
    {"type": "span:end", "executionId": "e", "spanId": "s1", "state": "done", "kind": "agent"},
    {"type": "observability:connected"},
]  # fmt: skip


def test_every_stream_type_has_its_facts_and_topics_derive_from_them() -> None:
    assert set(facts.FACTS) == set(ev.STREAM_EVENT_TYPES)
    assert {t: f.topic for t, f in facts.FACTS.items()} == TOPIC_OF_TYPE
    assert set(TOPIC_OF_TYPE.values()) <= TOPICS


def test_errors_and_alerts_as_the_rules_say() -> None:
    errors = [facts.is_error(s) for s in SAMPLES]
    actions = [facts.needs_action(s) for s in SAMPLES]
    assert errors == [False, False, True, True, False, False, True, True, False, True, True,
                      True, True, True, True, False, False, True, False, False]  # fmt: skip
    assert actions == [False, False, True, False, False, False, False, True, False, True,
                       False, False, False, False, True, False, False, False, False,
                       False]  # fmt: skip


def test_typed_events_read_their_span_task_and_tool_from_the_table() -> None:
    start = ev.ToolStartEvent(execution_id="e", tool_use_id="u", tool="Bash",
                              input_summary="ls", task_id="t")  # fmt: skip
    assert (facts.span_id_of(start), facts.own_task_id(start), facts.tool_of(start)) == (
        "u", "t", "Bash")  # fmt: skip
    assert facts.span_kind_of(start) == "tool" and facts.role_of(start) == "opens"
    span = ev.SpanStartEvent(execution_id="e", span_id="s", kind="agent", name="a")
    assert (facts.span_id_of(span), facts.span_kind_of(span)) == ("s", "agent")
    beat = ev.AgentHeartbeatEvent(execution_id="e", instance_id="i", status="idle",
                                  current_task_id="t9")  # fmt: skip
    assert (facts.span_id_of(beat), facts.own_task_id(beat), facts.span_kind_of(beat)) == (
        None, "t9", None)  # fmt: skip


def test_the_generated_module_carries_the_table() -> None:
    js = facts.facts_js()
    table = js[js.index("export const FACTS = ") + 21 : js.index("};\n") + 1]
    assert json.loads(table) == facts.facts_json()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_page_judges_events_as_python_does(tmp_path: Path) -> None:
    (tmp_path / "facts.mjs").write_text(facts.facts_js())
    (tmp_path / "check.mjs").write_text(
        'import * as f from "./facts.mjs";\n'
        f"const samples = {json.dumps(SAMPLES)};\n"
        "console.log(JSON.stringify({topics: f.TOPIC_OF_TYPE, rows: samples.map((s) => "
        "[f.topicOf(s), f.isError(s), f.needsAction(s), f.spanIdOf(s), f.taskIdOf(s),"
        " f.spanKindOf(s), f.roleOf(s)])}));\n"
    )
    out = subprocess.run(
        ["node", str(tmp_path / "check.mjs")], capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout)
    assert got["topics"] == TOPIC_OF_TYPE

    def python_row(s: dict[str, Any]) -> list[Any]:
        fact = facts.fact_of(s)
        if fact is None:
            return ["other", False, False, None, None, None, "content"]
        kind = fact.span_kind or (s.get("kind") if fact.role in ("opens", "closes") else None)
        return [fact.topic, facts.is_error(s), facts.needs_action(s), s.get(fact.span_id),
                facts._at(s, fact.task_id) if fact.task_id else None, kind, fact.role]  # fmt: skip

    assert got["rows"] == [python_row(s) for s in SAMPLES]
