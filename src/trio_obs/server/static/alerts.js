// The watchdog on the page (SPEC §13): its alerts appear live on their run's row and in a
// list of their own, and go when cleared; a running row shows how long it has been running.
// The alerts come over the "all" stream (watch:alert / watch:clear); GET /api/running says
// which are active when the page opens (and every few seconds, to correct what a
// disconnect missed). Text only ever reaches the DOM as text.

import { state } from "./state.js";
import { api } from "./net.js";
import { $ } from "./page.js";

const SYNC_MS = 5000;
const RUNNING = new Set(["started", "running", "paused"]);
const active = new Map(); // alertId -> the watch:alert event
const items = new Map(); // alertId -> its list item
let box = null;
let list = null;
let decorating = false; // a decorate() asked for the next animation frame

/** Build the alerts list (above the execution list) and start keeping it right. */
export function initWatch() {
  const executions = $("executions");
  box = document.createElement("section");
  box.className = "watch";
  box.dataset.testid = "watch-alerts";
  box.hidden = true;
  box.style.cssText = "border:1px solid var(--bad);border-radius:4px;margin:4px 0;padding:2px 6px";
  const title = document.createElement("h2");
  title.textContent = "Watchdog";
  list = document.createElement("ul");
  list.dataset.testid = "watch-list";
  list.style.cssText = "list-style:none;margin:0;padding:0";
  box.append(title, list);
  executions.parentNode.insertBefore(box, executions);
  sync();
  setInterval(sync, SYNC_MS);
  setInterval(decorate, 1000);
}

async function sync() {
  try {
    const answer = await api("/api/running");
    active.clear();
    for (const a of answer.alerts ?? []) active.set(a.alertId, a);
    draw();
  } catch {
    // no watchdog, or the server is away: the stream and the next sync tell the rest
  }
}

/** Every event of the "all" stream passes here; alerts and clears change the list. */
export function noteWatch(ev) {
  if (ev.type === "watch:alert") active.set(ev.alertId, ev);
  else if (ev.type === "watch:clear") active.delete(ev.alertId);
  else return;
  if (!list) return;
  place(ev.alertId);
  shown();
}

/** The whole list made like `active` (after a sync). */
function draw() {
  if (!list) return;
  for (const id of [...items.keys()]) place(id);
  for (const id of active.keys()) place(id);
  shown();
}

/**
 * The item of alert `id` made like `active`: only the items of alerts that came, went or
 * changed are touched (a burst of alerts costs an item each, not the whole list each).
 */
function place(id) {
  const a = active.get(id);
  const li = items.get(id);
  if (li && (!a || sig(a) !== li._sig)) {
    li.remove();
    items.delete(id);
  }
  if (a && !items.has(id)) {
    const made = item(a);
    items.set(id, made);
    list.append(made);
  }
}

/** The box shown while there are alerts; the run list's marks follow in the next frame. */
function shown() {
  box.hidden = active.size === 0;
  if (decorating) return;
  decorating = true;
  requestAnimationFrame(() => {
    decorating = false;
    decorate();
  });
}

/** What an item shows of its alert: an alert told again the same keeps its item. */
const sig = (a) => `${a.alert}\u0000${a.executionId}\u0000${a.message}\u0000${a.since}`;

function item(a) {
  const li = document.createElement("li");
  li._sig = sig(a);
  li.dataset.testid = "watch-alert";
  li.dataset.alert = a.alert;
  li.dataset.executionId = a.executionId;
  li.style.cssText = "cursor:pointer;padding:2px 0";
  const kind = document.createElement("b");
  kind.className = a.alert === "slow" ? "s-blocked" : "s-failed";
  kind.textContent = a.alert;
  li.append(kind, ` ${a.executionId.slice(0, 12)} · ${a.message}`);
  li.title = `${a.executionId}: ${a.message} (since ${a.since})`;
  li.addEventListener("click", () => {
    const row = [...$("executions").children].find(
      (x) => x.dataset.executionId === a.executionId,
    );
    row?.click();
  });
  return li;
}

/** Mark each execution row with its active alerts, and a running one with its age. */
function decorate() {
  const byRun = new Map();
  for (const a of active.values()) {
    if (!byRun.has(a.executionId)) byRun.set(a.executionId, new Set());
    byRun.get(a.executionId).add(a.alert);
  }
  for (const li of $("executions").children) {
    const id = li.dataset.executionId;
    const kinds = byRun.get(id);
    mark(li, "watch-badge", kinds ? [...kinds].sort().join(" ") : "", "s-failed");
    const e = state.executions.get(id);
    const running = e && RUNNING.has(e.lastStatus) && e.firstTimestamp;
    mark(li, "running-age", running ? `running ${age(e.firstTimestamp)}` : "", "muted");
  }
}

function mark(li, testid, text, cls) {
  let span = li.querySelector(`[data-testid="${testid}"]`);
  if (!text) {
    span?.remove();
    return;
  }
  if (!span) {
    span = document.createElement("span");
    span.dataset.testid = testid;
    span.className = cls;
    span.style.marginLeft = "6px";
    (li.querySelector(".exec-meta") ?? li).append(span);
  }
  if (span.textContent !== text) span.textContent = text;
}

function age(ts) {
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(ts)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
}
