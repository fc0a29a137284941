// The execution list in the side bar: the server's figures (GET /api/executions), kept
// right by the "all" stream and a periodic refetch; its search, status filter and
// keyboard walk; follow mode.

import { state } from "./state.js";
import { api } from "./net.js";
import { $, params, writeUrl } from "./page.js";
import { schedule } from "./frame.js";
import { ago, el, fmt, setClass, setText, text, textOf } from "./dom.js";

const LIST_LIMIT = 200; // executions listed
const LIST_SHOWN = 150; // execution items in the DOM (search finds the others)

const TOTALS_CHANGE = new Set(["span:start", "span:end", "tool:end", "execution:status"]);

let listOrder = []; // entries in list order (what the keyboard walks)
let idCounter = 0;
let selectRun = null; // run.js: select(), given to initList

/** GET the execution list: the list, or null if the server refused (401) or is down. */
export async function probe(limit = LIST_LIMIT) {
  try {
    return await api(`/api/executions?limit=${limit}`);
  } catch {
    return null;
  }
}

export function entryOf(id) {
  let e = state.executions.get(id);
  if (!e) {
    e = {
      executionId: id, lastStatus: null, statusSeq: 0, eventCount: 0, lastSeq: 0,
      firstTimestamp: null, lastTimestamp: null, li: null,
      name: null, conversationId: null, agents: [], state: null, totals: null,
    };
    state.executions.set(id, e);
  }
  return e;
}

/** Take the server's list; a listed figure older than what the streams told is kept. */
export function mergeListing(list, { force = false } = {}) {
  const fresh = [];
  for (const s of list) {
    const known = state.executions.has(s.executionId);
    const e = entryOf(s.executionId);
    if (force || s.lastSeq >= e.lastSeq) {
      e.eventCount = s.eventCount;
      e.lastSeq = s.lastSeq;
      e.lastTimestamp = s.lastTimestamp ?? e.lastTimestamp;
    }
    e.firstTimestamp = s.firstTimestamp ?? e.firstTimestamp;
    // CONTRACT D: the run's name, conversation, agents, state and totals (kept per run).
    if (force || s.lastSeq >= e.namedSeq || e.namedSeq === undefined) {
      e.namedSeq = s.lastSeq;
      e.name = s.name ?? e.name;
      e.conversationId = s.conversationId ?? e.conversationId;
      e.agents = s.agents ?? e.agents;
      e.state = s.state ?? e.state;
      e.totals = s.totals ?? e.totals;
    }
    // The listed status is the one as of its lastSeq.
    if (force || s.lastSeq >= e.statusSeq) {
      e.lastStatus = s.lastStatus ?? e.lastStatus;
      e.statusSeq = s.lastSeq;
    }
    if (!known) fresh.push(e);
  }
  state.listDirty = true;
  schedule();
  return fresh;
}

let refreshing = null;
export function refreshExecutions(opts) {
  refreshing ??= probe()
    .then((list) => {
      if (list === null) return;
      const fresh = mergeListing(list, opts);
      if (fresh.length && state.listReady) onNewRuns(fresh);
    })
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

let refreshSoonTimer = null;
function refreshSoon() {
  if (refreshSoonTimer) return;
  refreshSoonTimer = setTimeout(() => {
    refreshSoonTimer = null;
    refreshExecutions();
  }, 400);
}

/** A stored event seen on any stream: the list's figures follow it. */
export function noteEvent(ev) {
  const id = ev.executionId;
  if (!id || id === "global") return;
  const isNew = !state.executions.has(id);
  const e = entryOf(id);
  if (ev.seq > e.lastSeq) {
    // Seqs are 1, 2, 3… per execution: the count follows the last seq.
    e.eventCount += ev.seq - e.lastSeq;
    e.lastSeq = ev.seq;
    e.lastTimestamp = ev.timestamp ?? e.lastTimestamp;
    if (ev.seq === 1) e.firstTimestamp = ev.timestamp;
    state.listDirty = true;
  }
  // Totals and names are the server's (CONTRACT D): asked again after events that change them.
  if (TOTALS_CHANGE.has(ev.type) && state.listReady) refreshSoon();
  if (ev.type === "execution:status" && ev.seq > e.statusSeq) {
    e.lastStatus = ev.status;
    e.statusSeq = ev.seq;
    state.listDirty = true;
  }
  if (isNew) {
    if (e.lastStatus === null || ev.seq > 1) refreshSoon(); // what the stream cannot tell
    if (state.listReady) onNewRuns([e]);
  }
  if (state.listDirty) schedule();
}

/** Follow mode: a run that starts is shown at once. */
function onNewRuns(entries) {
  if (!state.follow) return;
  const latest = entries.reduce((a, b) => ((b.lastTimestamp ?? "") > (a.lastTimestamp ?? "") ? b : a));
  const cur = state.view && state.executions.get(state.view.id);
  if (!cur || (latest.lastTimestamp ?? "") >= (cur.lastTimestamp ?? "")) {
    selectRun(latest.executionId, { user: false });
  }
}

export function sortedEntries() {
  return [...state.executions.values()].sort(
    (a, b) =>
      (b.lastTimestamp ?? "").localeCompare(a.lastTimestamp ?? "") ||
      a.executionId.localeCompare(b.executionId),
  );
}

function makeItem(e) {
  const li = el("li", "exec");
  li.id = `exec-item-${++idCounter}`;
  li.setAttribute("role", "option");
  li.setAttribute("aria-selected", "false");
  li.tabIndex = -1;
  li.dataset.testid = "execution-item";
  li.dataset.executionId = e.executionId;
  e.tStatus = text();
  e.tCount = text();
  e.tAge = text();
  e.tName = text();
  e.tSub = text();
  e.tTotals = text();
  e.tErrors = text();
  e.badgeNode = el("span", "badge", e.tStatus);
  e.errNode = el("span", "bad", e.tErrors);
  // Three lines of fixed height: nothing that arrives later (a name, totals, the watchdog's
  // badges at the end of the meta line) changes an item's height under the pointer.
  li.append(
    el("div", "exec-name", el("span", "exec-label", e.tName), el("span", "exec-id", e.tSub)),
    el("div", "exec-meta", e.badgeNode, el("span", "muted", e.tCount),
      el("span", "muted age", e.tAge)),
    el("div", "exec-totals", el("span", "muted", e.tTotals), e.errNode),
  );
  li.title = e.executionId;
  e.li = li;
  return li;
}

/** "1.2k" for token counts. */
function short(n) {
  if (n < 1000) return String(n);
  return n < 1e6 ? `${+(n / 1000).toFixed(1)}k` : `${+(n / 1e6).toFixed(1)}M`;
}

/** The run's tokens and cost, as the list shows them. */
export function totalsText(t) {
  if (!t) return "";
  const tok = (t.inputTokens ?? 0) + (t.outputTokens ?? 0);
  if (!t.modelCalls && !tok) return "";
  const cost = t.cost === "unknown" ? "cost unknown" : typeof t.cost === "number"
    ? `$${t.cost.toFixed(t.cost < 0.1 ? 4 : 2)}` : "";
  return `${short(tok)} tok${cost ? ` · ${cost}` : ""}`;
}

/** The run's name as a person reads it (CONTRACT D), else its id. */
export const runName = (e) => e?.name || e?.executionId || "";

function updateItem(e) {
  const status = e.state ?? e.lastStatus ?? "–";
  setText(e.tName, runName(e));
  setText(e.tSub, e.name ? (e.conversationId ? `${e.conversationId} · ${e.executionId}` : e.executionId) : "");
  setText(e.tTotals, totalsText(e.totals));
  const errs = e.totals?.errors ?? 0;
  setText(e.tErrors, errs ? `${fmt(errs)} error${errs === 1 ? "" : "s"}` : "");
  if (e.li.title !== e.executionId) e.li.title = e.executionId;
  e.li.setAttribute("aria-label", `${runName(e)}, ${status}${errs ? `, ${errs} errors` : ""}`);
  setText(e.tStatus, status);
  setClass(e.badgeNode, `badge s-${status}`);
  setText(e.tCount, `${fmt(e.eventCount)} events`);
  setText(e.tAge, e.lastTimestamp ? ago(e.lastTimestamp) : "");
  const selected = state.view?.id === e.executionId;
  if (e.li.classList.contains("selected") !== selected) {
    e.li.classList.toggle("selected", selected);
    e.li.setAttribute("aria-selected", String(selected));
  }
  if (e.li.hidden) e.li.hidden = false;
}

// The list holds still while the pointer is over the side bar, or the keyboard is in it:
// counts change in place, but nothing moves under a press or a focused item.
const listHold = { pointer: false, keyboard: false };

export function renderList() {
  state.listDirty = false;
  const ul = $("executions");
  const sorted = sortedEntries();
  const hold = listHold.pointer || listHold.keyboard;
  const q = $("exec-search").value.trim().toLowerCase();
  const st = $("exec-status-filter").value;
  const agentQ = $("exec-agent-filter").value.trim().toLowerCase();
  const errorsOnly = $("exec-errors-filter").checked;
  const matches = sorted.filter((e) =>
    (q === "" || e.executionId.toLowerCase().includes(q) ||
      (e.name ?? "").toLowerCase().includes(q) || (e.conversationId ?? "").toLowerCase().includes(q)) &&
    (st === "" || (e.state ?? e.lastStatus) === st || e.lastStatus === st) &&
    (state.runIds === null || state.runIds.has(e.executionId) ||
      (!errorsOnly && agentQ !== "" && e.agents.some((a) => a.toLowerCase().includes(agentQ)))));
  // The DOM holds at most LIST_SHOWN items (plus the selected and the focused one).
  const keep = new Set(matches.slice(0, LIST_SHOWN));
  const cur = state.view && state.executions.get(state.view.id);
  if (cur && matches.includes(cur)) keep.add(cur);
  for (const e of sorted) {
    if (e.li && e.li === document.activeElement) keep.add(e);
  }
  for (const e of sorted) {
    if (keep.has(e)) {
      if (!e.li) makeItem(e);
      if (!e.li.isConnected) ul.append(e.li); // at the end while held, sorted below
      updateItem(e);
    } else if (e.li?.isConnected && !hold) e.li.remove();
    else if (e.li?.isConnected) e.li.hidden = true;
  }
  if (!hold) {
    // Move only the items out of place (a node that stays is never detached).
    let ref = ul.firstElementChild;
    for (const e of sorted) {
      if (!keep.has(e)) continue;
      if (e.li === ref) ref = ref.nextElementSibling;
      else ul.insertBefore(e.li, ref);
    }
  }
  listOrder = [...ul.children].map((li) => state.executions.get(li.dataset.executionId));
  // Roving tabindex: one item is in the tab order (the focused, the selected or the first).
  const active = ul.querySelector("li:focus") ??
    (cur?.li?.isConnected ? cur.li : null) ?? ul.querySelector("li:not([hidden])");
  for (const li of ul.children) {
    const t = li === active ? 0 : -1;
    if (li.tabIndex !== t) li.tabIndex = t;
  }
  setText(textOf($("exec-count")), String(state.executions.size));
  if (cur) {
    setText(textOf($("exec-name")), cur.name ?? "");
    setText(textOf($("run-totals")), totalsText(cur.totals) || "–");
  }
  const empty = $("exec-empty");
  const more = matches.length - keep.size;
  empty.hidden = matches.length > 0 && more <= 0;
  if (!matches.length) {
    empty.textContent = state.executions.size
      ? "No execution matches."
      : "No executions yet. Post events to /api/events, or run trio-obs demo.";
  } else if (more > 0) {
    empty.textContent = `${fmt(more)} more: search by id to find them.`;
  }
}

function visibleItems() {
  return listOrder.filter((e) => e.li && !e.li.hidden).map((e) => e.li);
}

export function initList(select) {
  selectRun = select;
  const ul = $("executions");
  ul.addEventListener("click", (e) => {
    const li = e.target.closest("li.exec");
    if (li) selectRun(li.dataset.executionId, { user: true });
  });
  // Held while the pointer is anywhere over the side bar: still by the time one aims.
  const side = $("side");
  side.addEventListener("pointerenter", (e) => {
    if (e.pointerType !== "touch") listHold.pointer = true;
  });
  side.addEventListener("pointerleave", () => {
    listHold.pointer = false;
    state.listDirty = true;
    schedule(true);
  });
  let pressedAt = -Infinity;
  ul.addEventListener("pointerdown", () => {
    listHold.keyboard = false;
    pressedAt = performance.now();
  });
  ul.addEventListener("focusout", (e) => {
    if (!ul.contains(e.relatedTarget)) {
      listHold.keyboard = false;
      state.listDirty = true;
      schedule(true);
    }
  });
  ul.addEventListener("keydown", (e) => {
    const items = visibleItems();
    if (!items.length) return;
    const i = items.indexOf(document.activeElement);
    let next = null;
    if (e.key === "ArrowDown") next = items[Math.min(i + 1, items.length - 1)];
    else if (e.key === "ArrowUp") next = items[Math.max(i - 1, 0)];
    else if (e.key === "Home") next = items[0];
    else if (e.key === "End") next = items[items.length - 1];
    else if ((e.key === "Enter" || e.key === " ") && i >= 0) {
      e.preventDefault();
      selectRun(items[i].dataset.executionId, { user: true });
      return;
    } else return;
    e.preventDefault();
    listHold.keyboard = true;
    for (const li of items) li.tabIndex = li === next ? 0 : -1;
    next.focus();
    next.scrollIntoView({ block: "nearest" });
  });
  // Focus that no press brought (keys, a script, assistive tools): the list holds still, so
  // that the focused item is never moved (moving a node takes its focus away).
  ul.addEventListener("focusin", () => {
    if (performance.now() - pressedAt > 500) listHold.keyboard = true;
  });
  for (const id of ["exec-search", "exec-status-filter"]) {
    $(id).addEventListener("input", () => {
      state.listDirty = true;
      schedule(true);
    });
  }
  $("follow").addEventListener("change", (e) => {
    state.follow = e.target.checked;
    if (state.follow) {
      params.delete("execution");
      params.delete("seq");
      writeUrl();
      const latest = sortedEntries()[0];
      if (latest) selectRun(latest.executionId, { user: false });
    }
  });
}

export function setFollow(on) {
  state.follow = on;
  $("follow").checked = on;
}
