// The filter controls (topics, task, search, errors only, type, tool, agent) and what the
// server is told of them: SPEC §3 subscribe/unsubscribe, with a taskId filter.

import { state } from "./state.js";
import { TOPICS } from "./events.js";
import { isWide, rebuildRows } from "./model.js";
import { anchorSeq, restoreAnchor } from "./timeline.js";
import { $ } from "./page.js";
import { schedule } from "./frame.js";
import { el } from "./dom.js";

const OPTIONS_SHOWN = 200; // options of each quick-filter select

/**
 * Tell the server the topic and task filters (SPEC §3 subscribe/unsubscribe), changing its
 * state step by step so that a topic that stays wanted is never briefly dropped. Rows are
 * filtered here too, because a replay after reconnect arrives before the server has them.
 */
export function syncFilters(v) {
  if (!v.socket) return;
  const s = v.server;
  const want = state.filter.topics;
  const everything = want.size === TOPICS.length;
  const msgs = [];
  const sub = (topic) => msgs.push({ action: "subscribe", topic });
  if (everything) {
    if (s.topics !== null) sub("all");
  } else if (s.topics === null) {
    // The first subscribe would *replace* an implicit "all", dropping the other wanted
    // topics for a moment: make "all" explicit, add the wanted topics, then drop "all".
    if (s.implicit) sub("all");
    for (const t of want) sub(t);
    msgs.push({ action: "unsubscribe", topic: "all" });
  } else {
    for (const t of want) if (!s.topics.has(t)) sub(t);
    for (const t of s.topics) if (!want.has(t)) msgs.push({ action: "unsubscribe", topic: t });
  }
  if (s.task !== state.filter.task) {
    // Filters ride on a subscribe; one to a topic that is already wanted changes no topic.
    let carrier = msgs.find((m) => m.action === "subscribe");
    if (!carrier && (everything || want.size)) sub(everything ? "all" : [...want][0]);
    carrier = msgs.find((m) => m.action === "subscribe");
    if (carrier) {
      carrier.filters = { taskId: state.filter.task || null };
      s.task = state.filter.task;
    }
  }
  for (const m of msgs) v.socket.send(m);
  if (msgs.length) s.implicit = false;
  s.topics = everything ? null : new Set(want);
  // The server handles our messages in order, so its pong means the filters now apply:
  // an HTTP read made after that, plus the live stream, leaves no gap.
  if (v.pendingBackfill !== null) v.socket.send({ type: "ping" });
}

export function onPong(v) {
  if (v !== state.view || v.pendingBackfill === null) return;
  v.fills.push({ from: v.pendingBackfill });
  v.pendingBackfill = null;
  v.wake?.();
}

/** Apply the filters; `widened`: something hidden may now be shown (it may need fetching). */
function filtersChanged(widened = true, serverSide = false) {
  showMoreCount();
  const v = state.view;
  if (!v) return;
  const anchor = anchorSeq(v);
  rebuildRows(v);
  if (serverSide) {
    if (widened && v.gapFrom !== null) {
      v.pendingBackfill = Math.max(0, Math.min(v.pendingBackfill ?? Infinity, v.gapFrom));
    }
    // Narrowed since gapFrom: whatever the server skipped from then on may be wanted later.
    v.gapFrom = isWide() ? null : v.gapFrom ?? v.wsSeq;
    syncFilters(v);
  }
  state.timeline.reset();
  restoreAnchor(v, anchor);
  v.dirty = true;
  schedule(true);
}

export function buildFilters() {
  const box = $("topics");
  for (const t of TOPICS) {
    const input = Object.assign(el("input"), { type: "checkbox", checked: true, value: t });
    input.addEventListener("change", () => {
      if (input.checked) state.filter.topics.add(t);
      else state.filter.topics.delete(t);
      filtersChanged(input.checked, true);
    });
    box.append(el("label", `topic t-${t}`, input, t));
  }
  let taskTimer = null;
  $("task-filter").addEventListener("input", (e) => {
    clearTimeout(taskTimer);
    taskTimer = setTimeout(() => {
      const widened = state.filter.task !== "";
      state.filter.task = e.target.value.trim();
      filtersChanged(widened, true);
    }, 300);
  });
  let searchTimer = null;
  $("search").addEventListener("input", (e) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      state.filter.q = e.target.value.trim().toLowerCase();
      filtersChanged();
    }, 150);
  });
  $("errors-only").addEventListener("change", (e) => {
    state.filter.errors = e.target.checked;
    filtersChanged();
  });
  for (const [id, key] of [["type-filter", "type"], ["tool-filter", "tool"], ["agent-filter", "agent"]]) {
    $(id).addEventListener("change", (e) => {
      state.filter[key] = e.target.value;
      filtersChanged();
    });
  }
  // The popover closes on a click elsewhere.
  document.addEventListener("click", (e) => {
    const d = $("more-filters");
    if (d.open && !d.contains(e.target)) d.open = false;
  });
}

/** How many topic/task filters are on, beside the popover's button. */
function showMoreCount() {
  const n = TOPICS.length - state.filter.topics.size + (state.filter.task ? 1 : 0);
  $("more-count").textContent = n ? String(n) : "";
}

export function resetSelect(sel) {
  const keep = sel.value;
  sel._known = new Set();
  while (sel.options.length > 1) sel.remove(1);
  if (keep) addOption(sel, keep);
  sel.value = keep;
}

function addOption(sel, value) {
  sel._known ??= new Set();
  if (sel._known.has(value)) return;
  sel._known.add(value);
  sel.add(new Option(value, value)); // text, not markup
}

export function syncSelects(v) {
  for (const [id, set] of [["type-filter", v.types], ["tool-filter", v.toolNames], ["agent-filter", v.agentIds]]) {
    const sel = $(id);
    const have = sel._known?.size ?? 0;
    if (have >= OPTIONS_SHOWN || have >= set.size + (sel.value && !set.has(sel.value) ? 1 : 0)) continue;
    for (const x of [...set].sort()) {
      if (sel._known.size >= OPTIONS_SHOWN) break;
      addOption(sel, x);
    }
  }
}
