// One event as a timeline row: its kind, text and badges (event data only ever as text).
// The wave progress bar and the metrics text serve the panels and the detail pane too.

import { isErr, topicOf } from "./events.js";
import { MISSING, agentOf, taskOf } from "./model.js";
import { appendAnsi } from "./ansi.js";
import { badge, clock, el, ms, pct, preview } from "./dom.js";

function kindCell(label, cls = "kind") {
  return el("span", cls, label);
}

function taskTag(task) {
  return task ? el("span", "task", task) : "";
}

function extra(label, value) {
  if (value === undefined || value === null) return "";
  return el("span", "extra", `${label} ${preview(value, 120)}`);
}

/** A chunk on one line: outer line breaks dropped, inner ones shown as ⏎. */
function chunkSpan(ev) {
  const span = el("span", ev.isStderr ? "chunk stderr" : "chunk");
  const one = (ev.chunk ?? "").replace(/^[\r\n]+|[\r\n]+$/g, "").replace(/\r?\n/g, " ⏎ ");
  appendAnsi(span, one);
  return span;
}

export function fillRow(v, node, s) {
  const ev = v.ev[s];
  node.dataset.seq = String(s);
  // An option of the timeline's listbox; the focused list points at it (activedescendant).
  node.id = `ev-${s}`;
  node.setAttribute("role", "option");
  node.setAttribute("aria-selected", String(s === v.selected));
  if (ev === undefined || ev === MISSING) {
    node.className = "row ph";
    node.dataset.testid = "event-placeholder";
    node.dataset.type = "";
    node.replaceChildren(el("span", "ts", ""), el("span", "seq", `#${s}`),
      el("span", "kind", ""), el("span", "body muted",
        ev === MISSING ? "not in the store" : s > v.ceil ? "…" : "loading…"));
    return;
  }
  const topic = topicOf(ev);
  let cls = `row t-${topic}`;
  if (s === v.selected) cls += " sel";
  if (isErr(ev)) cls += " err";
  if (ev.requiresAction) cls += " action";
  node.className = cls;
  node.dataset.testid = "event-row";
  node.dataset.type = ev.type ?? "";
  node.dataset.topic = topic;
  if (ev.toolUseId) node.dataset.toolUseId = ev.toolUseId;
  else delete node.dataset.toolUseId;
  const [kind, ...body] = rowParts(v, ev);
  // Which agent the row belongs to (SPEC §12), unless the row names it already.
  const agent = ev.type === "agent:heartbeat" || ev.type === "transcript:entry" ? null : agentOf(v, ev);
  node.dataset.agent = agent ?? "";
  node.replaceChildren(el("span", "ts", clock(ev.timestamp)), el("span", "seq", `#${s}`),
    kind, el("span", "body", agent ? el("span", "atag", agent) : "", ...body));
}

function rowParts(v, ev) {
  const task = taskOf(v, ev);
  switch (ev.type) {
    case "tool:start": {
      const t = v.tools.get(ev.toolUseId);
      const st = t?.status ?? "running";
      return [kindCell("tool"), el("b", "", ev.tool), " ", el("code", "", ev.inputSummary ?? ""),
        " ", badge(st), " ", t?.dur !== null ? ms(t?.dur) : "", " ", taskTag(task)];
    }
    case "tool:output": {
      const t = v.tools.get(ev.toolUseId);
      return [kindCell(ev.isStderr ? "stderr" : "stdout", `kind ${ev.isStderr ? "k-stderr" : "k-stdout"}`),
        el("span", "muted", t?.tool ? `${t.tool} ▸ ` : "▸ "), chunkSpan(ev)];
    }
    case "tool:end": {
      const t = v.tools.get(ev.toolUseId);
      const name = t?.tool ? el("b", "", t.tool) : el("code", "muted", ev.toolUseId);
      return [kindCell("tool"), "→ ", name, " ", badge(ev.resultStatus), " ", ms(ev.durationMs),
        " ", ev.outputSummary ?? "", " ", taskTag(task)];
    }
    case "assertion:result": {
      const a = ev.assertion ?? {};
      const sign = { pass: "✓", fail: "✗", skip: "–", warn: "!" }[a.result] ?? "?";
      return [kindCell("assert"), el("span", `sign s-${a.result}`, sign), " ",
        el("b", "", a.category), " ", a.description, " ", taskTag(task),
        el("span", "muted", ` pass rate ${pct(ev.runningPassRate ?? 0)}`), " ",
        extra("evidence", a.evidence)];
    }
    case "messagebus:event": {
      const e = ev.entry ?? {};
      return [kindCell("bus"), badge(e.severity), " ", ev.requiresAction ? badge("needs action", "action") : "",
        " ", el("b", "", e.source), " ", el("span", "muted", e.eventType), " ", e.humanSummary,
        " ", taskTag(task), " ", extra("payload", e.payload)];
    }
    case "wave:status":
      return [kindCell("wave"), `wave ${ev.waveNumber} `, badge(ev.status), " ", progress(ev)];
    case "agent:heartbeat":
      return [kindCell("agent"), el("b", "", ev.instanceId), " ", badge(ev.status), " ",
        taskTag(task), " ", el("span", "muted", metricsText(ev.metrics))];
    case "execution:status":
      return [kindCell("exec"), `execution ${ev.executionId} `, badge(ev.status), " ",
        ev.message ?? ""];
    case "transcript:entry": {
      const e = ev.entry ?? {};
      return [kindCell("log"), el("b", "", e.instanceId), " ",
        el("span", "muted", `${e.entryType}/${e.category}`), " ", e.summary, " ",
        taskTag(task), " ", extra("details", e.details)];
    }
    case "skill:start":
      return [kindCell("skill"), el("b", "", ev.skillName), " ",
        el("span", "muted", `${ev.skillFile}:${ev.lineNumber}`), " ", taskTag(task)];
    case "skill:end":
      return [kindCell("skill"), el("b", "", ev.skillName), " ", badge(ev.status), " ",
        ms(ev.durationMs), " ", taskTag(task)];
    case "span:start":
      return [kindCell(ev.kind === "llm" ? "model" : ev.kind ?? "span"), el("b", "", ev.name), " ",
        ev.model ? el("span", "muted", ev.model) : ""];
    case "span:end": {
      const u = ev.usage;
      const name = ev.name ?? v.tree.nodes.get(ev.spanId)?.name ?? ev.spanId;
      return [kindCell(ev.kind === "llm" ? "model" : ev.kind ?? "span"), "→ ", el("b", "", name), " ",
        badge(ev.state), " ", ms(ev.durationMs), " ",
        u ? el("span", "muted", `${u.inputTokens ?? 0}→${u.outputTokens ?? 0} tok`) : "", " ",
        ev.error ?? ""];
    }
    default: // a type newer than this page: still show it, as text
      return [kindCell(ev.type ?? "?"), preview(ev, 300)];
  }
}

export function progress(ev) {
  const n = Math.max(ev.taskCount || 0, 1);
  const done = el("span", "done");
  const failed = el("span", "failed");
  done.style.width = `${(100 * ev.completedCount) / n}%`;
  failed.style.width = `${(100 * ev.failedCount) / n}%`;
  const bar = el("span", "bar", done, failed);
  bar.title = `${ev.completedCount} completed, ${ev.failedCount} failed of ${ev.taskCount}`;
  return el("span", "progress", bar,
    el("span", "muted", ` ${ev.completedCount}✓ ${ev.failedCount}✗ / ${ev.taskCount}`));
}

export function metricsText(m) {
  if (!m || typeof m !== "object") return "";
  return Object.entries(m).map(([k, val]) => `${k} ${Math.round(val * 10) / 10}`).join(" · ");
}
