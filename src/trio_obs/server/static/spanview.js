// The span view: the run's spans (spans.js builds them) on one time axis, a virtual list
// rebuilt at most every 500 ms while events arrive; the tabs between it and the timeline.

import { state } from "./state.js";
import { VirtualList } from "./virtual.js";
import { buildSpans } from "./spans.js";
import { openDetail } from "./detail.js";
import { $ } from "./page.js";
import { schedule } from "./frame.js";
import { el, ms } from "./dom.js";

const SPAN_ROW_H = 26;

let spanData = { rows: [], t0: 0, t1: 1 };
let spansBuiltAt = 0;
let spansGen = 0;
let spansPending = false; // a rebuild was put off (at most one every 500 ms)

const spanSource = {
  count: () => spanData.rows.length,
  key: (i) => spanData.rows[i].key,
  version: () => spansGen,
  fill: (node, key, i) => fillSpan(node, spanData.rows[i]),
};

function fillSpan(node, r) {
  const { t0, t1 } = spanData;
  const span = t1 - t0;
  node.className = `row span k-${r.kind}${r.seq && r.seq === state.view?.selected ? " sel" : ""}`;
  node.dataset.testid = "span-row";
  node.dataset.kind = r.kind;
  node.dataset.seq = String(r.seq ?? "");
  const bar = el("span", `sbar s-${r.status}${r.open ? " open" : ""}`);
  bar.style.left = `${(100 * (r.start - t0)) / span}%`;
  bar.style.width = `${Math.max(0.2, (100 * (r.end - r.start)) / span)}%`;
  const label = el("span", "slabel", r.label);
  label.style.paddingLeft = `${r.depth * 14}px`;
  const dur = el("span", "sdur", r.open ? `${ms(r.end - r.start)}…` : ms(r.end - r.start));
  node.replaceChildren(label, el("span", "strack", bar), dur);
  node.title = `${r.kind} ${r.label}: ${ms(r.end - r.start)}${r.open ? " so far" : ""}`;
}

function renderSpans(v, force = false) {
  const now = performance.now();
  if (!force && now - spansBuiltAt < 500) {
    spansPending = true;
    return;
  }
  spansPending = false;
  spansBuiltAt = now;
  spanData = buildSpans(v);
  spansGen += 1;
  state.spanList.render();
}

export function showTab(which) {
  const spans = which === "spans";
  $("timeline").hidden = spans;
  $("spans").hidden = !spans;
  $("tab-timeline").setAttribute("aria-selected", String(!spans));
  $("tab-spans").setAttribute("aria-selected", String(spans));
  if (spans && state.view) renderSpans(state.view, true);
  schedule(true);
}

/** In a frame while the span view is shown: rebuilt if the run changed. */
export function refreshSpans(v) {
  if (v.dirty || spansPending) renderSpans(v);
}

/** The span view's list, its clicks, and the two tabs. */
export function initSpanView() {
  state.spanList = new VirtualList($("spans"), SPAN_ROW_H, spanSource);
  $("spans").addEventListener("click", (e) => {
    const s = Number(e.target.closest(".row")?.dataset.seq);
    if (state.view && s) openDetail(state.view, s);
  });
  $("spans").addEventListener("scroll", () => state.spanList.render(), { passive: true });
  $("tab-timeline").addEventListener("click", () => showTab("timeline"));
  $("tab-spans").addEventListener("click", () => showTab("spans"));
}
