// The detail pane: one event's fields, its tool call's output (ANSI colours kept) and its
// JSON, kept up to date as the tool call goes on; the panel's two tabs.

import { state } from "./state.js";
import { MISSING, bump, taskOf, toolRec } from "./model.js";
import { metricsText, progress } from "./rows.js";
import { $, params, setDrawer, wide, writeUrl } from "./page.js";
import { schedule } from "./frame.js";
import { appendAnsi, ansiState } from "./ansi.js";
import { badge, el, fmt, ms, pct } from "./dom.js";
import { spanParts } from "./chat.js";

const OUTPUT_CHUNKS_SHOWN = 400; // output chunks of one tool call in the detail pane
let jumpTo = null; // timeline.js: jumpTo(), given to initDetail (it opens this pane)
// A pointer is down in the pane: what it pressed (a link, a selection being dragged) stays
// until it is released, then the pane catches up.
let held = false;

export function openDetail(v, s) {
  const ev = v.ev[s];
  if (!ev || ev === MISSING) return;
  const prev = v.selected;
  v.selected = s;
  bump(v, prev);
  bump(v, s);
  const url = `${location.pathname}?execution=${encodeURIComponent(v.id)}&seq=${s}`;
  $("detail-title").textContent = `#${s} ${ev.type}`;
  const link = $("detail-link");
  link.href = url;
  link.title = "a link to this event";
  $("detail-json").textContent = JSON.stringify(ev, null, 2);
  $("detail-body").replaceChildren(...detailParts(v, ev));
  v.detailSig = detailSignature(v, ev);
  $("detail").hidden = false;
  $("ptab-detail").disabled = false;
  showPanelTab("detail");
  if (!wide.matches) setDrawer("panel");
  params.set("execution", v.id);
  params.set("seq", String(s));
  if (!state.follow) writeUrl();
  v.dirty = true;
  schedule(true);
}

/** The open event's pane follows its tool call (output, end) as they arrive. */
function detailSignature(v, ev) {
  const t = ev.toolUseId ? v.tools.get(ev.toolUseId) : null;
  const k = ev.skillTraceId ? v.skills.get(ev.skillTraceId) : null;
  const n = ev.type.startsWith("span:") ? v.tree.nodes.get(ev.spanId) : null;
  return `${v.selected}:${t ? `${t.start}:${t.end}:${t.outputs.length}` : ""}:${k ? `${k.start}:${k.end}` : ""}:${n ? `${n.closeSeq}:${n.cost}` : ""}`;
}

export function refreshDetail(v) {
  if (held || !v.selected || $("detail").hidden) return;
  const ev = v.ev[v.selected];
  if (!ev || ev === MISSING) return;
  const sig = detailSignature(v, ev);
  if (sig === v.detailSig) return;
  v.detailSig = sig;
  const pane = $("detail");
  const out = pane.querySelector(".out");
  const atEnd = out && out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
  const top = pane.scrollTop;
  $("detail-body").replaceChildren(...detailParts(v, ev));
  pane.scrollTop = top;
  const out2 = pane.querySelector(".out");
  if (out2 && atEnd) out2.scrollTop = out2.scrollHeight;
}

export function closeDetail() {
  $("detail").hidden = true;
  $("ptab-detail").disabled = true;
  showPanelTab("overview");
  if (state.view) {
    const prev = state.view.selected;
    state.view.selected = 0;
    bump(state.view, prev);
  }
  if (params.has("seq")) {
    params.delete("seq");
    if (!state.follow) writeUrl();
  }
}

function showPanelTab(which) {
  const detail = which === "detail" && !$("ptab-detail").disabled;
  $("overview").hidden = detail;
  $("detail").hidden = !detail;
  $("ptab-overview").setAttribute("aria-selected", String(!detail));
  $("ptab-detail").setAttribute("aria-selected", String(detail));
  document.body.classList.toggle("detail-open", detail);
}

function field(dl, label, value) {
  if (value === undefined || value === null || value === "") return;
  dl.append(el("dt", "", label), el("dd", "", value instanceof Node ? value : String(value)));
}

function jsonBlock(title, value, testid) {
  if (value === undefined || value === null) return null;
  const pre = el("pre", "json", JSON.stringify(value, null, 2));
  const box = el("div", "block", el("h3", "", title), pre);
  box.dataset.testid = testid;
  return box;
}

/** A block of text; JSON text is shown indented. */
function textBlock(title, value, testid) {
  let shown = value;
  try {
    const parsed = JSON.parse(value);
    if (parsed && typeof parsed === "object") shown = JSON.stringify(parsed, null, 2);
  } catch {
    // not JSON: as it is
  }
  const box = el("div", "block", el("h3", "", title), el("pre", "json", shown));
  box.dataset.testid = testid;
  return box;
}

function seqButton(s, label) {
  if (!s) return "";
  const b = el("button", "link", label ?? `#${s}`);
  b.type = "button";
  b.addEventListener("click", () => jumpTo(s));
  return b;
}

function detailParts(v, ev) {
  const dl = el("dl", "fields");
  field(dl, "time", ev.timestamp);
  field(dl, "execution", ev.executionId);
  field(dl, "task", taskOf(v, ev));
  const out = [dl];
  switch (ev.type) {
    case "tool:start":
    case "tool:end":
    case "tool:output": {
      const t = v.tools.get(ev.toolUseId) ?? toolRec(v, ev.toolUseId);
      field(dl, "tool", t.tool ?? "(its start is not loaded)");
      field(dl, "tool use", ev.toolUseId);
      field(dl, "agent", ev.agent);
      if (t.input) out.push(textBlock("Arguments", t.input, "detail-arguments"));
      field(dl, "status", t.status ? badge(t.status) : t.start ? badge("running") : null);
      field(dl, "duration", ms(t.dur ?? undefined));
      if (ev.type === "tool:end") {
        field(dl, "isError", ev.isError);
        field(dl, "isBlocked", ev.isBlocked);
      }
      if (ev.type === "tool:output") field(dl, "stream", ev.isStderr ? "stderr" : "stdout");
      const nav = el("dd", "", seqButton(t.start, "start"), " ", seqButton(t.end, "end"));
      dl.append(el("dt", "", "events"), nav);
      if (t.outputs.length) {
        const pre = el("pre", "out");
        pre.dataset.testid = "detail-output";
        const ansi = { out: ansiState(), err: ansiState() };
        const shown = t.outputs.slice(0, OUTPUT_CHUNKS_SHOWN);
        for (const s of shown) {
          const o = v.ev[s];
          if (!o || o === MISSING) continue;
          const span = el("span", o.isStderr ? "chunk stderr" : "chunk");
          if (o.isStderr) span.title = "stderr";
          appendAnsi(span, o.chunk ?? "", o.isStderr ? ansi.err : ansi.out);
          pre.append(span);
        }
        const head = el("h3", "", "Output ", el("span", "legend", el("span", "chunk", "stdout"), " ",
          el("span", "chunk stderr", "stderr")));
        out.push(el("div", "block", head, pre));
        if (t.outputs.length > shown.length) {
          out.push(el("p", "muted", `${fmt(t.outputs.length - shown.length)} more chunks are not shown`));
        }
      }
      if (t.summary) out.push(textBlock("Result", t.summary, "detail-result"));
      break;
    }
    case "assertion:result": {
      const a = ev.assertion ?? {};
      field(dl, "result", badge(a.result));
      field(dl, "category", a.category);
      field(dl, "description", a.description);
      field(dl, "pass rate", typeof ev.runningPassRate === "number" ? pct(ev.runningPassRate) : null);
      field(dl, "chain", a.chainId);
      field(dl, "duration", ms(a.durationMs));
      out.push(jsonBlock("evidence", a.evidence, "detail-evidence"));
      break;
    }
    case "messagebus:event": {
      const e = ev.entry ?? {};
      field(dl, "severity", badge(e.severity));
      field(dl, "needs action", ev.requiresAction ? "yes" : "no");
      field(dl, "source", e.source);
      field(dl, "event type", e.eventType);
      field(dl, "summary", e.humanSummary);
      field(dl, "category", e.category);
      field(dl, "correlation", e.correlationId);
      out.push(jsonBlock("payload", e.payload, "detail-payload"));
      break;
    }
    case "transcript:entry": {
      const e = ev.entry ?? {};
      field(dl, "agent", e.instanceId);
      field(dl, "entry", `${e.entryType}/${e.category}`);
      field(dl, "summary", e.summary);
      field(dl, "wave", e.waveNumber);
      field(dl, "duration", ms(e.durationMs));
      out.push(jsonBlock("details", e.details, "detail-details"));
      break;
    }
    case "skill:start":
    case "skill:end": {
      const k = v.skills.get(ev.skillTraceId);
      field(dl, "skill", ev.skillName);
      field(dl, "file", ev.skillFile ? `${ev.skillFile}:${ev.lineNumber}` : null);
      field(dl, "status", k?.status ? badge(k.status) : null);
      field(dl, "duration", ms(ev.durationMs));
      if (k) dl.append(el("dt", "", "events"), el("dd", "", seqButton(k.start, "start"), " ", seqButton(k.end, "end")));
      break;
    }
    case "wave:status":
      field(dl, "wave", ev.waveNumber);
      field(dl, "status", badge(ev.status));
      field(dl, "progress", progress(ev));
      break;
    case "agent:heartbeat":
      field(dl, "agent", ev.instanceId);
      field(dl, "status", badge(ev.status));
      field(dl, "metrics", metricsText(ev.metrics));
      break;
    case "execution:status":
      field(dl, "status", badge(ev.status));
      field(dl, "message", ev.message);
      if (ev.output) out.push(el("div", "block", el("h3", "", "Output"), el("pre", "out", ev.output)));
      break;
    case "span:start":
    case "span:end":
      out.push(...spanParts(v, ev, dl));
      break;
    default:
  }
  return out.filter(Boolean);
}

async function copyText(textValue) {
  try {
    await navigator.clipboard.writeText(textValue);
    return true;
  } catch {
    const ta = el("textarea", "offscreen");
    ta.value = textValue;
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand("copy");
    ta.remove();
    return ok;
  }
}

/** The panel's tabs and the pane's copy and link buttons; `jump` shows an event. */
export function initDetail(jump) {
  jumpTo = jump;
  $("ptab-overview").addEventListener("click", () => showPanelTab("overview"));
  $("ptab-detail").addEventListener("click", () => showPanelTab("detail"));
  $("detail-copy").addEventListener("click", async () => {
    const ok = await copyText($("detail-json").textContent);
    $("detail-copy").textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => {
      $("detail-copy").textContent = "Copy JSON";
    }, 1500);
  });
  $("detail").addEventListener("pointerdown", () => {
    held = true;
  });
  const release = () => {
    if (!held) return;
    held = false;
    if (state.view) state.view.dirty = true;
    schedule(true);
  };
  // Redrawn in the next frame: after the click that the release makes.
  window.addEventListener("pointerup", release);
  window.addEventListener("pointercancel", release);
  window.addEventListener("blur", release);
  $("detail-link").addEventListener("click", (e) => {
    e.preventDefault(); // the page is already there: show it, keep the URL to share
    const s = Number(new URL($("detail-link").href).searchParams.get("seq"));
    if (s) jumpTo(s);
  });
}
