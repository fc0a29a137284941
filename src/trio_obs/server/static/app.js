// trio-obs live viewer. Plain ES modules, no dependencies, works offline.
//
// Safety rule: event data only ever reaches the DOM as text (text nodes, textContent).
// Nothing here uses innerHTML, so a summary holding markup shows that markup.
//
// Shape of the page:
// - The execution list comes from GET /api/executions and is kept right by the "all"
//   stream; counts and status are the server's, never what happens to be loaded.
// - The selected execution ("run") keeps its events in memory, by seq. Its timeline is a
//   virtual list (only the rows in view are in the DOM) over every seq 1…N: rows not loaded
//   yet are fetched from the events route when they scroll into view, and the whole run is
//   loaded in the background (up to BG_CAP events), so search, filters, alerts and the span
//   view see all of it. The live tail comes over the execution's WebSocket, resumed with
//   since=<last seq> (and epoch=<epoch>, SPEC §10) after any disconnect.
// - All DOM work happens once per animation frame, however many events arrive.

import { VirtualList } from "./virtual.js";
import { appendAnsi, ansiState, stripAnsi } from "./ansi.js";
import { buildSpans } from "./spans.js";
import {
  ago, badge, clock, el, fmt, lowerBound, ms, pct, preview, setClass, setText, text,
} from "./dom.js";

// Event type -> topic, as SPEC §3 (plan OBS-602) maps them.
const TOPIC_OF_TYPE = {
  "transcript:entry": "transcript", "tool:start": "tools", "tool:end": "tools",
  "tool:output": "tools", "assertion:result": "assertions", "skill:start": "skills",
  "skill:end": "skills", "messagebus:event": "messagebus", "wave:status": "waves",
  "agent:heartbeat": "agents", "execution:status": "execution",
};
const TOPICS = [...new Set(Object.values(TOPIC_OF_TYPE))];
const topicOf = (ev) => TOPIC_OF_TYPE[ev.type] ?? "other";

const ROW_H = 24; // px, one timeline row (style.css: .vlist .row)
const SPAN_ROW_H = 26;
const TAIL = 200; // events the socket replays when a run is opened; older ones come over HTTP
const FG_PAGE = 1000; // events fetched for rows that scroll into view
const BG_PAGE = 5000; // events per background page
const BG_CAP = 100_000; // events loaded in the background; more only as scrolled to
const LIST_LIMIT = 200; // executions listed
const LIST_SHOWN = 150; // execution items in the DOM (search finds the others)
const OPTIONS_SHOWN = 200; // options of each quick-filter select
const AGENTS_SHOWN = 50; // agent items in the DOM
const REFRESH_MS = 10_000; // periodic refetch of the execution list
const ALERTS_SHOWN = 100; // alert items in the DOM (the count covers them all)
const OUTPUT_CHUNKS_SHOWN = 400; // output chunks of one tool call in the detail pane
const MISSING = Object.freeze({ missing: true }); // a seq the store does not have

const config = { exportPage: 10_000 }; // test hook: window.__trioObs.config
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const wide = window.matchMedia("(min-width: 1200px)");
const narrow = window.matchMedia("(max-width: 759px)");

// ---------------------------------------------------------------- token

const TOKEN_KEY = "trio-obs.token";
let token = null;
const memoryStore = new Map(); // when sessionStorage is unavailable

function storeToken(value) {
  token = value;
  try {
    if (value === null) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, value);
  } catch {
    memoryStore.set(TOKEN_KEY, value);
  }
}

function initToken() {
  const fromUrl = params.get("token");
  if (fromUrl !== null) {
    storeToken(fromUrl);
    params.delete("token"); // never left in the address bar, the history or a shared link
    writeUrl();
  } else {
    try {
      token = sessionStorage.getItem(TOKEN_KEY);
    } catch {
      token = memoryStore.get(TOKEN_KEY) ?? null;
    }
  }
}

function writeUrl() {
  const q = params.toString();
  history.replaceState(null, "", q ? `?${q}` : location.pathname);
}

// ---------------------------------------------------------------- network

class HttpStatusError extends Error {
  constructor(path, status) {
    super(`${path.split("?")[0]}: HTTP ${status}`);
    this.status = status;
  }
}

async function api(path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const res = await fetch(path, { headers, cache: "no-store" });
  if (!res.ok) {
    if (res.status === 401) authRequired();
    throw new HttpStatusError(path, res.status);
  }
  return res.json();
}

const eventsPath = (id, since, limit) =>
  `/api/executions/${encodeURIComponent(id)}/events?since=${since}&limit=${limit}`;

function wsUrl(stream, since, epoch) {
  const q = new URLSearchParams({ observability: stream });
  if (since !== null && since !== undefined) q.set("since", String(since));
  if (epoch) q.set("epoch", epoch);
  if (token) q.set("token", token); // a browser WebSocket cannot send an Authorization header
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}/ws?${q}`;
}

const sleep = (t) => new Promise((r) => setTimeout(r, t));

// Socket messages are queued as they arrive and handled in slices of at most SLICE_MS, in
// tasks of their own: a burst of thousands of frames never makes one long task, and the
// browser's socket drains at once (the server sees a fast reader).
const SLICE_MS = 8;
const inbox = []; // handler, data, handler, data…
let inboxHead = 0;
let pumping = false;
const pumpChannel = new MessageChannel();
pumpChannel.port1.onmessage = pump;

function enqueue(handler, data) {
  inbox.push(handler, data);
  if (!pumping) {
    pumping = true;
    pumpChannel.port2.postMessage(0);
  }
}

function pump() {
  const deadline = performance.now() + SLICE_MS;
  let i = inboxHead;
  while (i < inbox.length) {
    const [handler, data] = [inbox[i], inbox[i + 1]];
    inbox[i] = inbox[i + 1] = undefined;
    i += 2;
    try {
      handler(data);
    } catch (err) {
      console.warn("trio-obs: a message could not be handled:", err);
    }
    if ((i & 63) === 0 && performance.now() > deadline) break;
  }
  if (i >= inbox.length) {
    inbox.length = 0;
    inboxHead = 0;
    pumping = false;
  } else {
    inboxHead = i;
    if (inboxHead > 65536) {
      inbox.splice(0, inboxHead);
      inboxHead = 0;
    }
    pumpChannel.port2.postMessage(0);
  }
}

/**
 * A WebSocket that reconnects with backoff (0.5 s doubling to 5 s) whatever the close code
 * (4008 slow consumer, 1001 server restart, network loss), asking for `since=<last seq>`
 * (and the epoch it was given) so the server replays exactly what was missed.
 */
class LiveSocket {
  constructor(stream, handlers) {
    Object.assign(this, { stream, ...handlers });
    this.delay = 500;
    this.closed = false;
    this.unacked = 0; // subscribe/unsubscribe messages the server has not answered yet
    this.timer = null;
    this.epoch = null;
    this.closes = []; // close codes seen (the latest 20), for diagnostics
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const askedEpoch = this.epoch; // the history we resume; a reset says it is gone
    const ws = (this.ws = new WebSocket(wsUrl(this.stream, this.since(), askedEpoch)));
    this.unacked = 0;
    const handle = (data) => {
      if (this.closed) return;
      let msg;
      try {
        msg = JSON.parse(data);
      } catch {
        return;
      }
      if (typeof msg.seq === "number") {
        this.onEvent(msg);
        return;
      }
      switch (msg.type) {
        case "observability:connected":
          this.delay = 500; // only a real handshake resets the backoff
          if (typeof msg.epoch === "string" && msg.epoch) this.epoch = msg.epoch;
          this.onState("live");
          this.onConnected?.(this, msg);
          break;
        case "observability:reset":
          if (typeof msg.epoch === "string" && msg.epoch) this.epoch = msg.epoch;
          this.onReset?.(msg, askedEpoch);
          break;
        case "observability:subscribed":
        case "observability:unsubscribed":
          this.unacked = Math.max(0, this.unacked - 1);
          break;
        case "pong":
          this.onPong?.();
          break;
        case "observability:error":
          this.unacked = Math.max(0, this.unacked - 1);
          console.warn("trio-obs:", msg.error, msg.code);
          break;
        default:
      }
    };
    ws.onmessage = (m) => enqueue(handle, m.data);
    // In the same queue as the messages: a reconnect asks for since=<last seq handled>.
    ws.onclose = (e) => enqueue(onclose, e);
    const onclose = (e) => {
      if (this.closed || ws !== this.ws) return;
      this.closes.push(e.code);
      if (this.closes.length > 20) this.closes.shift();
      this.onState("reconnecting", `closed ${e.code} ${e.reason ?? ""}`.trim());
      // 4008: the server is up and we fell behind: back at once, since=<last seq>. Else
      // back off, with jitter, so that many viewers of a restarted server do not all
      // return at once.
      const behind = e.code === 4008;
      const wait = behind ? 20 : this.delay * (0.8 + 0.4 * Math.random());
      if (!behind) this.delay = Math.min(this.delay * 2, 5000);
      this.timer = setTimeout(async () => {
        // Ask over HTTP first: a handshake refused for its token shows only as 1006, and a
        // failed handshake makes the browser log its URL (which holds the token).
        if ((await serverReady()) && !this.closed) this.connect();
      }, wait);
    };
  }

  send(obj) {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify(obj));
    if (obj.action) this.unacked += 1;
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws.close(1000);
  }
}

// ---------------------------------------------------------------- connection state

const connState = { all: "connecting", view: null };
let authBlocked = false;

function setConn(which, state, detail = "") {
  connState[which] = state;
  showConn(detail);
}

function showConn(detail = "") {
  const shown = authBlocked ? "auth" : view ? connState.view : connState.all;
  const node = $("conn");
  node.textContent = {
    live: "live", reconnecting: "reconnecting…", auth: "token needed",
  }[shown] ?? "connecting…";
  node.className = `conn ${shown}`;
  if (detail) node.title = detail;
}

// ---------------------------------------------------------------- token prompt

let allSocket = null;
let authWaiters = [];

function authRequired() {
  if (authBlocked) return;
  authBlocked = true;
  allSocket?.close();
  allSocket = null;
  if (view?.socket) {
    view.socket.close();
    view.socket = null;
  }
  const form = $("token-form");
  form.hidden = false;
  $("token-error").hidden = token === null;
  $("token-input").value = "";
  $("token-input").focus();
  showConn();
}

let readyCheck = null;
/** Wait until the server answers HTTP; false if it wants a (new) token (the form is shown). */
function serverReady() {
  readyCheck ??= (async () => {
    for (let delay = 250; !authBlocked; delay = Math.min(delay * 2, 4000)) {
      try {
        const headers = token ? { Authorization: `Bearer ${token}` } : {};
        const res = await fetch("/api/executions?limit=1", { headers, cache: "no-store" });
        if (res.status === 401) {
          authRequired();
          return false;
        }
        return true;
      } catch {
        await sleep(delay); // down: try again
      }
    }
    return false;
  })().finally(() => {
    readyCheck = null;
  });
  return readyCheck;
}

/** GET the execution list: the list, or null if the server refused (401) or is down. */
async function probe(limit = LIST_LIMIT) {
  try {
    return await api(`/api/executions?limit=${limit}`);
  } catch {
    return null;
  }
}

function onTokenSubmit(e) {
  e.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  storeToken(value);
  authBlocked = false;
  $("token-form").hidden = true;
  showConn();
  probe().then((list) => {
    if (list === null) return; // refused again: authRequired() showed the form
    mergeListing(list);
    for (const w of authWaiters.splice(0)) w(list);
    openAllSocket();
    if (view && !view.socket) openViewSocket(view);
  });
}

/** The execution list, once the server answers it (after a token is entered if needed). */
async function firstListing() {
  for (let delay = 500; ; delay = Math.min(delay * 2, 5000)) {
    const list = await probe();
    if (list !== null) return list;
    if (authBlocked) return new Promise((resolve) => authWaiters.push(resolve));
    setConn("all", "reconnecting", "the server does not answer");
    await sleep(delay);
  }
}

// ---------------------------------------------------------------- execution list

const executions = new Map(); // executionId -> entry (the server's figures, kept live)
let follow = false;
let listDirty = false;
let listOrder = []; // entries in list order (what the keyboard walks)
let idCounter = 0;

function entryOf(id) {
  let e = executions.get(id);
  if (!e) {
    e = {
      executionId: id, lastStatus: null, statusSeq: 0, eventCount: 0, lastSeq: 0,
      firstTimestamp: null, lastTimestamp: null, li: null,
    };
    executions.set(id, e);
  }
  return e;
}

/** Take the server's list; a listed figure older than what the streams told is kept. */
function mergeListing(list, { force = false } = {}) {
  const fresh = [];
  for (const s of list) {
    const known = executions.has(s.executionId);
    const e = entryOf(s.executionId);
    if (force || s.lastSeq >= e.lastSeq) {
      e.eventCount = s.eventCount;
      e.lastSeq = s.lastSeq;
      e.lastTimestamp = s.lastTimestamp ?? e.lastTimestamp;
    }
    e.firstTimestamp = s.firstTimestamp ?? e.firstTimestamp;
    // The listed status is the one as of its lastSeq.
    if (force || s.lastSeq >= e.statusSeq) {
      e.lastStatus = s.lastStatus ?? e.lastStatus;
      e.statusSeq = s.lastSeq;
    }
    if (!known) fresh.push(e);
  }
  listDirty = true;
  schedule();
  return fresh;
}

let refreshing = null;
function refreshExecutions(opts) {
  refreshing ??= probe()
    .then((list) => {
      if (list === null) return;
      const fresh = mergeListing(list, opts);
      if (fresh.length && listReady) onNewRuns(fresh);
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
function noteEvent(ev) {
  const id = ev.executionId;
  if (!id || id === "global") return;
  const isNew = !executions.has(id);
  const e = entryOf(id);
  if (ev.seq > e.lastSeq) {
    // Seqs are 1, 2, 3… per execution: the count follows the last seq.
    e.eventCount += ev.seq - e.lastSeq;
    e.lastSeq = ev.seq;
    e.lastTimestamp = ev.timestamp ?? e.lastTimestamp;
    if (ev.seq === 1) e.firstTimestamp = ev.timestamp;
    listDirty = true;
  }
  if (ev.type === "execution:status" && ev.seq > e.statusSeq) {
    e.lastStatus = ev.status;
    e.statusSeq = ev.seq;
    listDirty = true;
  }
  if (isNew) {
    if (e.lastStatus === null || ev.seq > 1) refreshSoon(); // what the stream cannot tell
    if (listReady) onNewRuns([e]);
  }
  if (listDirty) schedule();
}

let listReady = false;

/** Follow mode: a run that starts is shown at once. */
function onNewRuns(entries) {
  if (!follow) return;
  const latest = entries.reduce((a, b) => ((b.lastTimestamp ?? "") > (a.lastTimestamp ?? "") ? b : a));
  const cur = view && executions.get(view.id);
  if (!cur || (latest.lastTimestamp ?? "") >= (cur.lastTimestamp ?? "")) {
    select(latest.executionId, { user: false });
  }
}

function sortedEntries() {
  return [...executions.values()].sort(
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
  e.badgeNode = el("span", "badge", e.tStatus);
  li.append(
    el("div", "exec-id", e.executionId),
    el("div", "exec-meta", e.badgeNode, el("span", "muted", e.tCount),
      el("span", "muted age", e.tAge)),
  );
  li.title = e.executionId;
  e.li = li;
  return li;
}

function updateItem(e) {
  const status = e.lastStatus ?? "–";
  setText(e.tStatus, status);
  setClass(e.badgeNode, `badge s-${status}`);
  setText(e.tCount, `${fmt(e.eventCount)} events`);
  setText(e.tAge, e.lastTimestamp ? ago(e.lastTimestamp) : "");
  const selected = view?.id === e.executionId;
  if (e.li.classList.contains("selected") !== selected) {
    e.li.classList.toggle("selected", selected);
    e.li.setAttribute("aria-selected", String(selected));
  }
  if (e.li.hidden) e.li.hidden = false;
}

// The list holds still while the pointer is over the side bar, or the keyboard is in it:
// counts change in place, but nothing moves under a press or a focused item.
const listHold = { pointer: false, keyboard: false };

function renderList() {
  listDirty = false;
  const ul = $("executions");
  const sorted = sortedEntries();
  const hold = listHold.pointer || listHold.keyboard;
  const q = $("exec-search").value.trim().toLowerCase();
  const st = $("exec-status-filter").value;
  const matches = sorted.filter((e) =>
    (q === "" || e.executionId.toLowerCase().includes(q)) && (st === "" || e.lastStatus === st));
  // The DOM holds at most LIST_SHOWN items (plus the selected and the focused one).
  const keep = new Set(matches.slice(0, LIST_SHOWN));
  const cur = view && executions.get(view.id);
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
  listOrder = [...ul.children].map((li) => executions.get(li.dataset.executionId));
  // Roving tabindex: one item is in the tab order (the focused, the selected or the first).
  const active = ul.querySelector("li:focus") ??
    (cur?.li?.isConnected ? cur.li : null) ?? ul.querySelector("li:not([hidden])");
  for (const li of ul.children) {
    const t = li === active ? 0 : -1;
    if (li.tabIndex !== t) li.tabIndex = t;
  }
  setText(textOf($("exec-count")), String(executions.size));
  const empty = $("exec-empty");
  const more = matches.length - keep.size;
  empty.hidden = matches.length > 0 && more <= 0;
  if (!matches.length) {
    empty.textContent = executions.size
      ? "No execution matches."
      : "No executions yet. Post events to /api/events, or run trio-obs demo.";
  } else if (more > 0) {
    empty.textContent = `${fmt(more)} more: search by id to find them.`;
  }
}

function visibleItems() {
  return listOrder.filter((e) => e.li && !e.li.hidden).map((e) => e.li);
}

function initList() {
  const ul = $("executions");
  ul.addEventListener("click", (e) => {
    const li = e.target.closest("li.exec");
    if (li) select(li.dataset.executionId, { user: true });
  });
  // Held while the pointer is anywhere over the side bar: still by the time one aims.
  const side = $("side");
  side.addEventListener("pointerenter", (e) => {
    if (e.pointerType !== "touch") listHold.pointer = true;
  });
  side.addEventListener("pointerleave", () => {
    listHold.pointer = false;
    listDirty = true;
    schedule(true);
  });
  ul.addEventListener("pointerdown", () => {
    listHold.keyboard = false;
  });
  ul.addEventListener("focusout", (e) => {
    if (!ul.contains(e.relatedTarget)) {
      listHold.keyboard = false;
      listDirty = true;
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
      select(items[i].dataset.executionId, { user: true });
      return;
    } else return;
    e.preventDefault();
    listHold.keyboard = true;
    for (const li of items) li.tabIndex = li === next ? 0 : -1;
    next.focus();
    next.scrollIntoView({ block: "nearest" });
  });
  ul.addEventListener("focusin", () => {
    if (document.activeElement?.matches?.("li.exec:focus-visible")) listHold.keyboard = true;
  });
  for (const id of ["exec-search", "exec-status-filter"]) {
    $(id).addEventListener("input", () => {
      listDirty = true;
      schedule(true);
    });
  }
  $("follow").addEventListener("change", (e) => {
    follow = e.target.checked;
    if (follow) {
      params.delete("execution");
      params.delete("seq");
      writeUrl();
      const latest = sortedEntries()[0];
      if (latest) select(latest.executionId, { user: false });
    }
  });
}

function setFollow(on) {
  follow = on;
  $("follow").checked = on;
}

// ---------------------------------------------------------------- the selected run

let view = null; // the run being watched
let paused = false;
let unseen = 0;
const filter = {
  topics: new Set(TOPICS), task: "", q: "", errors: false, type: "", tool: "", agent: "",
};

function runData() {
  return {
    ev: [], // ev[seq]: the event, MISSING, or undefined (not loaded)
    ver: [], // ver[seq]: bumped when the row of seq must be redrawn
    txt: [], // txt[seq]: lower-case search text, made when first searched
    loaded: 0, missing: 0,
    known: 0, // highest seq known to exist: the unfiltered timeline shows 1…known
    ceil: 0, // highest seq the HTTP loader may fetch (above it the socket brings them)
    wsSeq: 0, wsDupes: 0, maxTaken: 0, firstLoaded: Infinity,
    tools: new Map(), skills: new Map(), tasks: new Map(), taskAgent: new Map(),
    waves: new Map(), waveSpans: new Map(), agents: new Map(),
    alerts: [], actions: [], // seqs, ascending
    types: new Set(), toolNames: new Set(), agentIds: new Set(),
    pass: null, passSeq: 0, execStatus: null, execStatusSeq: 0,
    t0: Infinity, t1: -Infinity,
    rows: null, rowsStale: false, // the filtered timeline: seqs, ascending (null: unfiltered)
    fills: [], needStart: new Set(), visible: [1, 0], scrollDown: false,
    bgCap: BG_CAP, wake: null, fullKey: null, full: false,
  };
}

function newRun(id) {
  const entry = executions.get(id);
  const last = entry?.lastSeq ?? 0;
  const v = {
    id, gen: 0, socket: null, epoch: null, selected: 0, focusSeq: 0,
    notifyFrom: last, // events after this one arrived while watching: they may notify
    server: { topics: null, implicit: true, task: "" }, // what the server filters, as we set it
    // Seq from which the server may have skipped events because of our filters (null: none).
    gapFrom: null, pendingBackfill: null,
    ...runData(),
  };
  // The socket replays the last TAIL events; the ones before come over HTTP.
  v.since0 = last ? Math.max(0, last - TAIL) : null;
  v.known = last;
  v.ceil = v.since0 ?? 0;
  return v;
}

const alive = (v, gen) => view === v && v.gen === gen;

function select(id, { user = false, seq = 0 } = {}) {
  if (user) {
    setFollow(false);
    params.set("execution", id);
    if (seq) params.set("seq", String(seq));
    else params.delete("seq");
    writeUrl();
    if (narrow.matches) setDrawer(null);
  }
  if (view?.id === id) {
    if (seq) jumpTo(seq);
    return;
  }
  view?.socket?.close();
  if (view) view.wake?.();
  const v = (view = newRun(id));
  v.focusSeq = seq;
  timeline.reset();
  spanList.reset();
  for (const k of ["alerts", "agents", "waves"]) $(k).replaceChildren();
  panelNodes.waves.clear();
  panelNodes.agents.clear();
  panelNodes.alerts.clear();
  closeDetail();
  $("exec-title").textContent = id;
  $("timeline-empty").hidden = true;
  document.title = `${id} · trio-obs`;
  for (const s of ["type-filter", "tool-filter", "agent-filter"]) resetSelect($(s));
  setPaused(Boolean(seq));
  if (seq) scrollTimelineTo(seq);
  listDirty = true;
  v.dirty = true;
  rebuildRows(v);
  if (!authBlocked) openViewSocket(v);
  startLoader(v);
  schedule(true);
}

function openViewSocket(v) {
  setConn("view", "connecting");
  // A narrowed connection may skip events: the first replayed event opens the gap.
  v.gapFrom = isWide() ? null : -1;
  v.socket = new LiveSocket(v.id, {
    since: () => (v.wsSeq ? v.wsSeq : v.since0),
    onEvent: (ev) => onSocketEvent(v, ev),
    onConnected: (sock, msg) => {
      v.epoch = sock.epoch;
      v.server = { topics: null, implicit: true, task: "" }; // a new connection starts wide
      syncFilters(v);
    },
    onReset: (msg, askedEpoch) => resetRun(v, msg, askedEpoch),
    onState: (s, detail) => view === v && setConn("view", s, detail),
    onPong: () => onPong(v),
  });
}

function onSocketEvent(v, ev) {
  if (view !== v) return;
  noteEvent(ev);
  if (ev.seq <= v.wsSeq) {
    v.wsDupes += 1; // the server promises none (resume with since=): counted for the tests
    return;
  }
  if (v.wsSeq === 0 && v.since0 === null) v.ceil = Math.max(v.ceil, ev.seq - 1);
  // A seq skipped on this connection (our server-side filters): the HTTP loader's to fetch.
  if (ev.seq > v.wsSeq + 1 && v.wsSeq > 0) v.ceil = Math.max(v.ceil, ev.seq - 1);
  v.wsSeq = ev.seq;
  if (v.gapFrom === -1) v.gapFrom = ev.seq - 1;
  if (take(v, ev) && paused && ev.seq > v.notifyFrom) unseen += 1; // new since it was opened
  schedule();
}

/** SPEC §10: the server's history changed under us (a new epoch): start the run over. */
function resetRun(v, msg, oldEpoch) {
  if (view !== v) return;
  v.gen += 1;
  v.wake?.();
  Object.assign(v, runData());
  v.epoch = msg.epoch ?? null;
  const last = typeof msg.lastSeq === "number" ? msg.lastSeq : 0;
  v.known = last;
  v.ceil = 0; // the server now replays the history from its first event
  v.since0 = 0;
  v.notifyFrom = last;
  const e = entryOf(v.id);
  Object.assign(e, { lastSeq: last, eventCount: last, statusSeq: 0 });
  timeline.reset();
  spanList.reset();
  for (const k of ["alerts", "agents", "waves"]) $(k).replaceChildren();
  panelNodes.waves.clear();
  panelNodes.agents.clear();
  panelNodes.alerts.clear();
  closeDetail();
  rebuildRows(v);
  v.dirty = true;
  listDirty = true;
  showNotice(
    `The server's history of ${v.id} was reset (epoch ${oldEpoch ?? "–"} → ${v.epoch ?? "–"}): ` +
      `its events were discarded here and are being reloaded from the start.`,
  );
  refreshExecutions({ force: true });
  startLoader(v);
  schedule(true);
}

// ---------------------------------------------------------------- the run's model

const bump = (v, s) => {
  if (s) v.ver[s] = (v.ver[s] | 0) + 1;
};

function toolRec(v, id) {
  let t = v.tools.get(id);
  if (!t) {
    t = {
      start: null, end: null, outputs: [], tool: null, input: "", task: "", status: null,
      dur: null, summary: null, t0: NaN, t1: NaN,
    };
    v.tools.set(id, t);
  }
  return t;
}

function skillRec(v, id) {
  let s = v.skills.get(id);
  if (!s) {
    s = { start: null, end: null, name: null, task: "", status: null, t0: NaN, t1: NaN };
    v.skills.set(id, s);
  }
  return s;
}

function insertSorted(arr, s) {
  if (!arr.length || arr[arr.length - 1] < s) arr.push(s);
  else {
    const i = lowerBound(arr, s);
    if (arr[i] !== s) arr.splice(i, 0, s);
  }
}

/** The task an event belongs to, as the server's taskId filter sees it. */
function taskOf(v, ev) {
  const t = ev.type;
  if (t === "transcript:entry" || t === "messagebus:event") return ev.entry?.taskId ?? "";
  if (t === "tool:end" || t === "tool:output") return v.tools.get(ev.toolUseId)?.task ?? "";
  if (t === "skill:end") return v.skills.get(ev.skillTraceId)?.task ?? "";
  return (t === "agent:heartbeat" ? ev.currentTaskId : ev.taskId) ?? "";
}

function toolOf(v, ev) {
  if (ev.type === "tool:start") return ev.tool;
  if (ev.type === "tool:end" || ev.type === "tool:output") return v.tools.get(ev.toolUseId)?.tool;
  return undefined;
}

function agentOf(v, ev) {
  if (ev.type === "agent:heartbeat") return ev.instanceId;
  if (ev.type === "transcript:entry") return ev.entry?.instanceId;
  const task = taskOf(v, ev);
  return task ? v.taskAgent.get(task) : undefined;
}

const BAD = new Set(["error", "failed", "fail", "blocked", "critical"]);
function isErr(ev) {
  switch (ev.type) {
    case "tool:end": return BAD.has(ev.resultStatus) || ev.isError === true;
    case "assertion:result": return ev.assertion?.result === "fail";
    case "messagebus:event": return BAD.has(ev.entry?.severity) || ev.requiresAction === true;
    case "transcript:entry": return ev.entry?.entryType === "error";
    case "tool:output": return false; // stderr is not an error
    default: return BAD.has(ev.status);
  }
}

function isAlert(ev) {
  switch (ev.type) {
    case "tool:end": return ev.resultStatus === "error" || ev.resultStatus === "blocked";
    case "assertion:result": return ev.assertion?.result === "fail";
    case "messagebus:event": return ev.requiresAction === true;
    case "execution:status": return ev.status === "failed";
    default: return false;
  }
}

/** Take one stored event (live, replayed or fetched) into run `v`, once. */
function take(v, ev) {
  const s = ev.seq;
  const had = v.ev[s];
  if (had !== undefined && had !== MISSING) return false;
  if (had === MISSING) v.missing -= 1;
  v.ev[s] = ev;
  v.loaded += 1;
  bump(v, s);
  if (s > v.known) v.known = s;
  if (s < v.firstLoaded) v.firstLoaded = s;
  derive(v, ev, s);
  if (v.rows !== null && !v.rowsStale) {
    if (s > v.maxTaken) {
      if (passes(v, s)) v.rows.push(s);
    } else v.rowsStale = true;
  }
  if (s > v.maxTaken) v.maxTaken = s;
  v.dirty = true;
  return true;
}

function markMissing(v, s) {
  if (v.ev[s] !== undefined) return;
  v.ev[s] = MISSING;
  v.missing += 1;
  bump(v, s);
}

function touchTask(v, task, ts, s, ev) {
  if (!task) return;
  let t = v.tasks.get(task);
  if (!t) {
    t = { start: ts, end: ts, wave: null, seq: s, failed: false };
    v.tasks.set(task, t);
  }
  if (ts < t.start) {
    t.start = ts;
    t.seq = s;
  }
  if (ts > t.end) t.end = ts;
  const wave = ev.entry?.waveNumber;
  if (typeof wave === "number") t.wave = wave;
}

function derive(v, ev, s) {
  if (!v.types.has(ev.type)) v.types.add(ev.type);
  const ts = Date.parse(ev.timestamp);
  if (Number.isFinite(ts)) {
    if (ts < v.t0) v.t0 = ts;
    if (ts > v.t1) v.t1 = ts;
  }
  switch (ev.type) {
    case "tool:start": {
      const t = toolRec(v, ev.toolUseId);
      t.start = s;
      t.tool = ev.tool;
      t.input = ev.inputSummary ?? "";
      t.task = ev.taskId ?? "";
      t.t0 = ts;
      bump(v, t.end); // the end's row names its tool now
      for (const o of t.outputs) bump(v, o);
      if (t.end !== null || t.outputs.length) v.rowsStale ||= v.rows !== null;
      v.toolNames.add(ev.tool);
      break;
    }
    case "tool:output": {
      const t = toolRec(v, ev.toolUseId);
      insertSorted(t.outputs, s);
      break;
    }
    case "tool:end": {
      const t = toolRec(v, ev.toolUseId);
      t.end = s;
      t.status = ev.resultStatus;
      t.dur = ev.durationMs;
      t.summary = ev.outputSummary ?? null;
      t.t1 = ts;
      bump(v, t.start); // the start's row shows the result
      break;
    }
    case "skill:start": {
      const k = skillRec(v, ev.skillTraceId);
      Object.assign(k, { start: s, name: ev.skillName, task: ev.taskId ?? "", t0: ts });
      break;
    }
    case "skill:end": {
      const k = skillRec(v, ev.skillTraceId);
      Object.assign(k, {
        end: s, name: k.name ?? ev.skillName, status: ev.status, t1: ts, dur: ev.durationMs,
      });
      if (!Number.isFinite(k.t0) && typeof ev.durationMs === "number") k.t0 = ts - ev.durationMs;
      break;
    }
    case "assertion:result": {
      if (s > v.passSeq && typeof ev.runningPassRate === "number") {
        v.passSeq = s;
        v.pass = ev.runningPassRate;
      }
      const task = v.tasks.get(ev.taskId);
      if (task && s >= (task.assertSeq ?? 0)) {
        task.assertSeq = s;
        task.failed = ev.assertion?.result === "fail";
      }
      break;
    }
    case "wave:status": {
      const known = v.waves.get(ev.waveNumber);
      if (!known || known.seq < s) v.waves.set(ev.waveNumber, ev);
      let w = v.waveSpans.get(ev.waveNumber);
      if (!w) {
        w = { first: ts, last: ts, status: ev.status, seq: s, statusSeq: s };
        v.waveSpans.set(ev.waveNumber, w);
      }
      if (ts < w.first) {
        w.first = ts;
        w.seq = s;
      }
      if (ts > w.last) w.last = ts;
      if (s >= w.statusSeq) {
        w.status = ev.status;
        w.statusSeq = s;
      }
      break;
    }
    case "agent:heartbeat": {
      const known = v.agents.get(ev.instanceId);
      if (!known || known.seq < s) v.agents.set(ev.instanceId, ev);
      if (ev.currentTaskId) v.taskAgent.set(ev.currentTaskId, ev.instanceId);
      v.agentIds.add(ev.instanceId);
      break;
    }
    case "execution:status":
      if (s > v.execStatusSeq) {
        v.execStatusSeq = s;
        v.execStatus = ev.status;
      }
      break;
    case "transcript:entry": {
      const e = ev.entry;
      if (e?.instanceId) {
        v.agentIds.add(e.instanceId);
        if (e.taskId) v.taskAgent.set(e.taskId, e.instanceId);
      }
      break;
    }
    default:
  }
  const task = taskOf(v, ev);
  if (task && Number.isFinite(ts)) touchTask(v, task, ts, s, ev);
  if (isAlert(ev)) {
    insertSorted(v.alerts, s);
    if (ev.requiresAction === true) {
      insertSorted(v.actions, s);
      if (s > v.notifyFrom) notifyAction(v, ev);
    }
  }
}

// ---------------------------------------------------------------- filters

const isWide = () => filter.topics.size === TOPICS.length && !filter.task;
const isFiltered = () =>
  !isWide() || filter.q !== "" || filter.errors || filter.type !== "" || filter.tool !== "" ||
  filter.agent !== "";

function searchText(v, s) {
  let t = v.txt[s];
  if (t === undefined) {
    t = stripAnsi(JSON.stringify(v.ev[s])).toLowerCase();
    v.txt[s] = t;
  }
  return t;
}

function passes(v, s) {
  const ev = v.ev[s];
  if (ev === undefined || ev === MISSING) return false;
  const f = filter;
  if (f.topics.size !== TOPICS.length) {
    const t = topicOf(ev);
    if (TOPICS.includes(t) && !f.topics.has(t)) return false;
  }
  if (f.task) {
    const t = taskOf(v, ev); // like the server: an event of no task passes a task filter
    if (t && t !== f.task) return false;
  }
  if (f.errors && !isErr(ev)) return false;
  if (f.type && ev.type !== f.type) return false;
  if (f.tool && toolOf(v, ev) !== f.tool) return false;
  if (f.agent && agentOf(v, ev) !== f.agent) return false;
  if (f.q && !searchText(v, s).includes(f.q)) return false;
  return true;
}

function rebuildRows(v) {
  v.rowsStale = false;
  if (!isFiltered()) {
    v.rows = null;
    return;
  }
  const out = [];
  const top = Math.max(v.known, v.maxTaken);
  for (let s = 1; s <= top; s++) if (passes(v, s)) out.push(s);
  v.rows = out;
}

/**
 * Tell the server the topic and task filters (SPEC §3 subscribe/unsubscribe), changing its
 * state step by step so that a topic that stays wanted is never briefly dropped. Rows are
 * filtered here too, because a replay after reconnect arrives before the server has them.
 */
function syncFilters(v) {
  if (!v.socket) return;
  const s = v.server;
  const want = filter.topics;
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
  if (s.task !== filter.task) {
    // Filters ride on a subscribe; one to a topic that is already wanted changes no topic.
    let carrier = msgs.find((m) => m.action === "subscribe");
    if (!carrier && (everything || want.size)) sub(everything ? "all" : [...want][0]);
    carrier = msgs.find((m) => m.action === "subscribe");
    if (carrier) {
      carrier.filters = { taskId: filter.task || null };
      s.task = filter.task;
    }
  }
  for (const m of msgs) v.socket.send(m);
  if (msgs.length) s.implicit = false;
  s.topics = everything ? null : new Set(want);
  // The server handles our messages in order, so its pong means the filters now apply:
  // an HTTP read made after that, plus the live stream, leaves no gap.
  if (v.pendingBackfill !== null) v.socket.send({ type: "ping" });
}

function onPong(v) {
  if (v !== view || v.pendingBackfill === null) return;
  v.fills.push({ from: v.pendingBackfill });
  v.pendingBackfill = null;
  v.wake?.();
}

/** Apply the filters; `widened`: something hidden may now be shown (it may need fetching). */
function filtersChanged(widened = true, serverSide = false) {
  showMoreCount();
  const v = view;
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
  timeline.reset();
  restoreAnchor(v, anchor);
  v.dirty = true;
  schedule(true);
}

function buildFilters() {
  const box = $("topics");
  for (const t of TOPICS) {
    const input = Object.assign(el("input"), { type: "checkbox", checked: true, value: t });
    input.addEventListener("change", () => {
      if (input.checked) filter.topics.add(t);
      else filter.topics.delete(t);
      filtersChanged(input.checked, true);
    });
    box.append(el("label", `topic t-${t}`, input, t));
  }
  let taskTimer = null;
  $("task-filter").addEventListener("input", (e) => {
    clearTimeout(taskTimer);
    taskTimer = setTimeout(() => {
      const widened = filter.task !== "";
      filter.task = e.target.value.trim();
      filtersChanged(widened, true);
    }, 300);
  });
  let searchTimer = null;
  $("search").addEventListener("input", (e) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      filter.q = e.target.value.trim().toLowerCase();
      filtersChanged();
    }, 150);
  });
  $("errors-only").addEventListener("change", (e) => {
    filter.errors = e.target.checked;
    filtersChanged();
  });
  for (const [id, key] of [["type-filter", "type"], ["tool-filter", "tool"], ["agent-filter", "agent"]]) {
    $(id).addEventListener("change", (e) => {
      filter[key] = e.target.value;
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
  const n = TOPICS.length - filter.topics.size + (filter.task ? 1 : 0);
  $("more-count").textContent = n ? String(n) : "";
}

function resetSelect(sel) {
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

function syncSelects(v) {
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

// ---------------------------------------------------------------- loading history

function startLoader(v) {
  const gen = v.gen;
  loader(v, gen).catch((err) => console.warn("trio-obs: history loader stopped:", err));
}

function kick(v) {
  const w = v.wake;
  v.wake = null;
  w?.();
}

async function loader(v, gen) {
  let failures = 0;
  while (alive(v, gen)) {
    const job = nextJob(v);
    if (!job) {
      await new Promise((resolve) => {
        v.wake = resolve;
      });
      continue;
    }
    let page;
    try {
      page = await api(eventsPath(v.id, job.since, job.limit));
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 401) return;
      failures += 1;
      await sleep(Math.min(500 * 2 ** failures, 5000));
      continue;
    }
    failures = 0;
    if (!alive(v, gen)) return;
    applyPage(v, job, page);
  }
}

function applyPage(v, job, page) {
  let expect = job.since + 1;
  let last = job.since;
  for (const ev of page) {
    if (typeof ev?.seq !== "number") continue;
    for (; expect < ev.seq && expect <= v.ceil; expect++) markMissing(v, expect);
    expect = ev.seq + 1;
    last = ev.seq;
    noteEvent(ev);
    take(v, ev);
  }
  const short = page.length < job.limit;
  if (short) {
    const upTo = Math.min(job.since + job.limit, v.ceil);
    for (; expect <= upTo; expect++) markMissing(v, expect);
  }
  if (job.fill) {
    v.ceil = Math.max(v.ceil, last);
    if (short) v.fills.shift();
    else job.fill.from = last;
  }
  v.dirty = true;
  schedule();
}

/** The next page to fetch: rows in view first, then tool starts, gaps, then the past. */
function nextJob(v) {
  if (v.rows === null) {
    const [a, b] = v.visible;
    const top = Math.min(b, v.ceil);
    let lo = 0;
    let hi = 0;
    for (let s = Math.max(1, a); s <= top; s++) {
      if (v.ev[s] === undefined) {
        if (!lo) lo = s;
        hi = s;
      }
    }
    if (lo) {
      if (v.scrollDown) return { since: lo - 1, limit: Math.min(FG_PAGE, v.ceil - lo + 1) };
      const since = Math.max(0, hi - FG_PAGE);
      return { since, limit: hi - since };
    }
  }
  for (const s of v.needStart) {
    v.needStart.delete(s);
    for (let h = Math.min(s - 1, v.ceil); h >= Math.max(1, s - 3 * FG_PAGE); h--) {
      if (v.ev[h] === undefined) {
        const since = Math.max(0, h - FG_PAGE);
        return { since, limit: h - since };
      }
    }
  }
  if (v.fills.length) return { since: v.fills[0].from, limit: BG_PAGE, fill: v.fills[0] };
  if (v.loaded < v.bgCap) {
    for (let s = v.ceil; s >= 1; s--) {
      if (v.ev[s] === undefined) {
        const since = Math.max(0, s - BG_PAGE);
        return { since, limit: s - since };
      }
    }
  }
  return null;
}

function fullyLoaded(v) {
  const key = `${v.loaded}:${v.missing}:${v.known}:${v.ceil}:${v.wsSeq}`;
  if (v.fullKey === key) return v.full;
  let full = v.wsSeq >= v.known || v.loaded + v.missing >= v.known;
  for (let s = Math.min(v.ceil, v.known); full && s >= 1; s--) if (v.ev[s] === undefined) full = false;
  v.fullKey = key;
  v.full = full;
  return full;
}

// ---------------------------------------------------------------- timeline rows

const timelineSource = {
  count: () => (view ? (view.rows ? view.rows.length : view.known) : 0),
  key: (i) => (view.rows ? view.rows[i] : i + 1),
  version: (s) => ((view.ver[s] | 0) << 1) | (s === view.selected ? 1 : 0),
  fill: (node, s) => fillRow(view, node, s),
};

let timeline; // VirtualList
let spanList; // VirtualList

function onTimelineRange(first, last) {
  const v = view;
  if (!v) return;
  const sf = v.rows ? v.rows[first] ?? 1 : first + 1;
  const sl = v.rows ? v.rows[last] ?? 0 : last + 1;
  const before = v.visible;
  v.visible = [sf, sl];
  if (sf !== before[0]) v.scrollDown = sf > before[0];
  let wanted = false;
  if (!v.rows) {
    for (let s = sf; s <= Math.min(sl, v.ceil); s++) {
      if (v.ev[s] === undefined) {
        wanted = true;
        break;
      }
    }
  }
  // Tool rows whose start is not loaded: fetch the events before them.
  for (let i = first; i <= last; i++) {
    const s = v.rows ? v.rows[i] : i + 1;
    const ev = v.ev[s];
    if (ev && (ev.type === "tool:end" || ev.type === "tool:output")) {
      const t = v.tools.get(ev.toolUseId);
      if (t && t.start === null && !t.asked) {
        t.asked = true;
        v.needStart.add(s);
        wanted = true;
      }
    }
  }
  if (wanted) kick(v);
}

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

function fillRow(v, node, s) {
  const ev = v.ev[s];
  node.dataset.seq = String(s);
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
  node.replaceChildren(el("span", "ts", clock(ev.timestamp)), el("span", "seq", `#${s}`),
    kind, el("span", "body", ...body));
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
    default: // a type newer than this page: still show it, as text
      return [kindCell(ev.type ?? "?"), preview(ev, 300)];
  }
}

function progress(ev) {
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

function metricsText(m) {
  if (!m || typeof m !== "object") return "";
  return Object.entries(m).map(([k, val]) => `${k} ${Math.round(val * 10) / 10}`).join(" · ");
}

// ---------------------------------------------------------------- scrolling

function setPaused(on) {
  paused = on;
  unseen = 0;
  const b = $("pause");
  b.textContent = paused ? "Resume scroll" : "Pause scroll";
  b.setAttribute("aria-pressed", String(paused));
  if (!paused) schedule(true);
}

let lastUserInput = 0;
let lastTop = 0;

function onTimelineScroll() {
  const sc = $("timeline");
  const top = sc.scrollTop;
  const user = performance.now() - lastUserInput < 800;
  if (user) {
    if (top < lastTop - 2 && !paused) setPaused(true);
    else if (paused && top > lastTop && timeline.atEnd()) setPaused(false);
  }
  lastTop = top;
  schedule(true);
}

/** The seq at the top of the view and its offset, to keep it in place across a rebuild. */
function anchorSeq(v) {
  if (!paused) return null;
  if (v.selected && isShown(v, v.selected)) return { seq: v.selected, center: true };
  const i = timeline.firstVisible();
  const s = v.rows ? v.rows[i] : i + 1;
  return s ? { seq: s, offset: $("timeline").scrollTop - i * ROW_H } : null;
}

function restoreAnchor(v, a) {
  if (!a) return;
  const i = indexOfSeq(v, a.seq);
  if (i < 0) return;
  if (a.center) timeline.scrollToIndex(i, "center");
  else $("timeline").scrollTop = i * ROW_H + a.offset;
}

function indexOfSeq(v, s) {
  if (!v.rows) return s >= 1 && s <= v.known ? s - 1 : -1;
  const i = lowerBound(v.rows, s);
  return v.rows[i] === s ? i : -1;
}

const isShown = (v, s) => indexOfSeq(v, s) >= 0;

function scrollTimelineTo(s) {
  const v = view;
  const i = indexOfSeq(v, s);
  if (i >= 0) timeline.scrollToIndex(i, "center");
}

/** Show event `s`: scroll to it (loading it if needed) and open it in the detail pane. */
function jumpTo(s) {
  const v = view;
  if (!v) return;
  setPaused(true);
  if (v.rows && !isShown(v, s) && v.ev[s] && v.ev[s] !== MISSING) {
    // Filtered out: show it anyway, in the detail pane.
    openDetail(v, s);
    return;
  }
  v.focusSeq = s;
  showTab("timeline");
  scrollTimelineTo(s);
  schedule(true);
}

function settleFocus(v) {
  const s = v.focusSeq;
  if (!s) return;
  if (s > v.known) return; // not known yet: the listing or the socket will tell
  const i = indexOfSeq(v, s);
  if (i >= 0) timeline.scrollToIndex(i, "center");
  const ev = v.ev[s];
  if (ev !== undefined) {
    v.focusSeq = 0;
    if (ev !== MISSING) {
      openDetail(v, s);
      flash(s);
    }
  }
}

function flash(s) {
  requestAnimationFrame(() => {
    const row = $("timeline").querySelector(`.row[data-seq="${Number(s)}"]`);
    if (!row) return;
    row.classList.add("flash");
    setTimeout(() => row.classList.remove("flash"), 1200);
  });
}

// ---------------------------------------------------------------- summary and side panels

const panelNodes = { waves: new Map(), agents: new Map(), alerts: new Map() };

function renderSummary(v) {
  const e = executions.get(v.id);
  const status = e?.lastStatus ?? v.execStatus;
  const st = $("exec-status");
  if (st.dataset.value !== (status ?? "")) {
    st.dataset.value = status ?? "";
    st.replaceChildren(status ? badge(status) : "–");
  }
  setText(textOf($("event-count")), fmt(Math.max(e?.eventCount ?? 0, v.known)));
  const loadedText = v.loaded >= v.known ? fmt(v.loaded) : `${fmt(v.loaded)} of ${fmt(v.known)}`;
  setText(textOf($("loaded-count")), loadedText);
  const pr = $("pass-rate");
  setText(textOf(pr), v.pass === null ? "–" : pct(v.pass));
  setClass(pr, v.pass === null ? "" : v.pass < 1 ? "s-fail" : "s-pass");
  for (const [n, ev] of [...v.waves.entries()].sort((a, b) => a[0] - b[0])) {
    const known = panelNodes.waves.get(n);
    if (known?.seq === ev.seq) continue;
    const node = el("div", "wave", el("span", "", `wave ${n}`), badge(ev.status), progress(ev));
    if (known) known.node.replaceWith(node);
    else {
      const after = [...panelNodes.waves.entries()].filter(([k]) => k > n).sort((a, b) => a[0] - b[0])[0];
      $("waves").insertBefore(node, after ? after[1].node : null);
    }
    panelNodes.waves.set(n, { seq: ev.seq, node });
  }
  // The load note: filters see what is loaded.
  const note = $("load-note");
  const complete = fullyLoaded(v);
  const show = v.rows !== null && !complete;
  note.hidden = !show;
  if (show) {
    const capped = v.loaded >= v.bgCap;
    setText(textOf($("load-note-text")),
      `Filters apply to the ${fmt(v.loaded)} loaded events of ${fmt(v.known)}` +
        (capped ? "." : "; loading the rest…"));
    $("load-all").hidden = !capped;
  }
}

function textOf(node) {
  if (node.firstChild?.nodeType !== Node.TEXT_NODE || node.childNodes.length !== 1) {
    node.replaceChildren(text());
  }
  return node.firstChild;
}

function renderAgents(v) {
  const ul = $("agents");
  let agents = [...v.agents];
  if (agents.length > AGENTS_SHOWN) {
    agents = agents.sort((a, b) => b[1].seq - a[1].seq).slice(0, AGENTS_SHOWN);
    const keep = new Set(agents.map(([id]) => id));
    for (const [id, a] of panelNodes.agents) {
      if (!keep.has(id)) {
        a.li.remove();
        panelNodes.agents.delete(id);
      }
    }
  }
  for (const [id, ev] of agents) {
    let a = panelNodes.agents.get(id);
    if (!a) {
      a = { seq: -1, tAge: text(), ts: "" };
      a.head = el("div", "");
      a.task = text();
      a.metrics = text();
      a.li = el("li", "agent", a.head, el("div", "muted", a.task), el("div", "muted", a.metrics));
      a.li.dataset.testid = "agent";
      a.li.dataset.instanceId = id;
      ul.append(a.li);
      panelNodes.agents.set(id, a);
    }
    if (a.seq !== ev.seq) {
      a.seq = ev.seq;
      a.ts = ev.timestamp;
      a.head.replaceChildren(el("b", "", id), " ", badge(ev.status), el("span", "muted age", a.tAge));
      setText(a.task, ev.currentTaskId ? `task ${ev.currentTaskId}` : "no task");
      setText(a.metrics, metricsText(ev.metrics));
    }
    setText(a.tAge, ago(a.ts));
  }
}

function alertTitle(v, ev) {
  switch (ev.type) {
    case "tool:end": {
      const t = v.tools.get(ev.toolUseId);
      return [`${t?.tool ?? "tool"} ${ev.resultStatus}`, ev.outputSummary || t?.input || ""];
    }
    case "assertion:result":
      return [`✗ ${ev.assertion?.category}`, `${ev.assertion?.description ?? ""} (${ev.taskId})`];
    case "messagebus:event":
      return [`${ev.entry?.severity} from ${ev.entry?.source}`, ev.entry?.humanSummary ?? ""];
    case "execution:status":
      return ["execution failed", ev.message ?? ""];
    default:
      return [ev.type, ""];
  }
}

function renderAlerts(v) {
  const ul = $("alerts");
  const wanted = v.alerts.slice(-ALERTS_SHOWN).reverse(); // newest first
  const keep = new Set(wanted);
  for (const [s, li] of panelNodes.alerts) {
    if (!keep.has(s)) {
      li.remove();
      panelNodes.alerts.delete(s);
    }
  }
  let ref = ul.firstElementChild;
  for (const s of wanted) {
    let li = panelNodes.alerts.get(s);
    const ev = v.ev[s];
    const [title, body] = alertTitle(v, ev);
    if (!li) {
      li = el("li", `alert t-${topicOf(ev)}`);
      li.dataset.testid = "alert";
      li.dataset.seq = String(s);
      li.title = "show in the timeline";
      li.tabIndex = 0;
      panelNodes.alerts.set(s, li);
    }
    if (li._title !== title + body) {
      li._title = title + body;
      li.replaceChildren(
        el("div", "", el("span", "seq", `#${s}`), " ", el("b", "", title),
          el("span", "muted", ` ${clock(ev.timestamp)}`)),
        el("div", "", body));
    }
    if (li !== ref) ul.insertBefore(li, ref);
    else ref = ref.nextElementSibling;
  }
  const n = v.alerts.length;
  const label = n ? (fullyLoaded(v) ? fmt(n) : `${fmt(n)}+`) : "";
  setText(textOf($("alert-count")), label);
  setText(textOf($("panel-count")), label);
  const note = ul.nextElementSibling?.classList?.contains("more") ? ul.nextElementSibling : null;
  if (n > ALERTS_SHOWN && !note) ul.after(el("p", "more muted", `the latest ${ALERTS_SHOWN} are shown`));
  if (n <= ALERTS_SHOWN && note) note.remove();
}

// ---------------------------------------------------------------- action notifications

let toastSeq = 0;
let toastTimer = null;

function notifyAction(v, ev) {
  if (v !== view) return;
  toastSeq = ev.seq;
  const e = ev.entry ?? {};
  $("toast-text").textContent = `Needs action: ${e.severity ?? ""} from ${e.source ?? "?"}: ${e.humanSummary ?? ""}`;
  $("toast").hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    $("toast").hidden = true;
  }, 10_000);
}

let shownTitle = "";
function renderNotify(v) {
  const n = v.actions.length;
  const b = $("notify");
  b.hidden = n === 0;
  if (n) {
    setText(textOf(b), narrow.matches ? `⚠ ${fmt(n)}` : `⚠ ${fmt(n)} need${n === 1 ? "s" : ""} action`);
    b.title = `${fmt(n)} event${n === 1 ? "" : "s"} of this run need action: show the latest`;
  }
  const title = `${n ? `(${n}) ` : ""}${v.id} · trio-obs`;
  if (shownTitle !== title) document.title = shownTitle = title;
}

// ---------------------------------------------------------------- detail pane

function openDetail(v, s) {
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
  if (!follow) writeUrl();
  v.dirty = true;
  schedule(true);
}

/** The open event's pane follows its tool call (output, end) as they arrive. */
function detailSignature(v, ev) {
  const t = ev.toolUseId ? v.tools.get(ev.toolUseId) : null;
  const k = ev.skillTraceId ? v.skills.get(ev.skillTraceId) : null;
  return `${v.selected}:${t ? `${t.start}:${t.end}:${t.outputs.length}` : ""}:${k ? `${k.start}:${k.end}` : ""}`;
}

function refreshDetail(v) {
  if (!v.selected || $("detail").hidden) return;
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

function closeDetail() {
  $("detail").hidden = true;
  $("ptab-detail").disabled = true;
  showPanelTab("overview");
  if (view) {
    const prev = view.selected;
    view.selected = 0;
    bump(view, prev);
  }
  if (params.has("seq")) {
    params.delete("seq");
    if (!follow) writeUrl();
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
      field(dl, "input", t.input);
      field(dl, "status", t.status ? badge(t.status) : t.start ? badge("running") : null);
      field(dl, "duration", ms(t.dur ?? undefined));
      field(dl, "output", t.summary);
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
        const state = { out: ansiState(), err: ansiState() };
        const shown = t.outputs.slice(0, OUTPUT_CHUNKS_SHOWN);
        for (const s of shown) {
          const o = v.ev[s];
          if (!o || o === MISSING) continue;
          const span = el("span", o.isStderr ? "chunk stderr" : "chunk");
          if (o.isStderr) span.title = "stderr";
          appendAnsi(span, o.chunk ?? "", o.isStderr ? state.err : state.out);
          pre.append(span);
        }
        const head = el("h3", "", "Output ", el("span", "legend", el("span", "chunk", "stdout"), " ",
          el("span", "chunk stderr", "stderr")));
        out.push(el("div", "block", head, pre));
        if (t.outputs.length > shown.length) {
          out.push(el("p", "muted", `${fmt(t.outputs.length - shown.length)} more chunks are not shown`));
        }
      }
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

// ---------------------------------------------------------------- span view

let spanData = { rows: [], t0: 0, t1: 1 };
let spansBuiltAt = 0;
let spansGen = 0;

const spanSource = {
  count: () => spanData.rows.length,
  key: (i) => spanData.rows[i].key,
  version: () => spansGen,
  fill: (node, key, i) => fillSpan(node, spanData.rows[i]),
};

function fillSpan(node, r) {
  const { t0, t1 } = spanData;
  const span = t1 - t0;
  node.className = `row span k-${r.kind}${r.seq && r.seq === view?.selected ? " sel" : ""}`;
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
  spanList.render();
}
let spansPending = false;

function showTab(which) {
  const spans = which === "spans";
  $("timeline").hidden = spans;
  $("spans").hidden = !spans;
  $("tab-timeline").setAttribute("aria-selected", String(!spans));
  $("tab-spans").setAttribute("aria-selected", String(spans));
  if (spans && view) renderSpans(view, true);
  schedule(true);
}

// ---------------------------------------------------------------- export

async function exportRun() {
  const v = view;
  if (!v) return;
  const button = $("export");
  button.disabled = true;
  const lines = [];
  try {
    for (let since = 0; ;) {
      button.textContent = `Exporting… ${fmt(lines.length)}`;
      const page = await api(eventsPath(v.id, since, config.exportPage));
      for (const ev of page) lines.push(JSON.stringify(ev));
      if (page.length < config.exportPage) break;
      since = page[page.length - 1].seq;
    }
    const blob = new Blob(lines.length ? [lines.join("\n"), "\n"] : [], { type: "application/x-ndjson" });
    const a = el("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${v.id.replace(/[^\w.-]+/g, "_")}.ndjson`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
  } catch (err) {
    showNotice(`Export failed: ${err.message}`);
  } finally {
    button.disabled = false;
    button.textContent = "Export";
  }
}

// ---------------------------------------------------------------- notices, drawers

function showNotice(message) {
  $("notice-text").textContent = message;
  $("notice").hidden = false;
}

let drawer = null; // "side" | "panel" | null

function setDrawer(which) {
  drawer = which;
  document.body.classList.toggle("drawer-side", which === "side");
  document.body.classList.toggle("drawer-panel", which === "panel");
  $("backdrop").hidden = which === null;
  $("open-list").setAttribute("aria-expanded", String(which === "side"));
  $("open-panel").setAttribute("aria-expanded", String(which === "panel"));
  schedule(true);
}

// ---------------------------------------------------------------- the frame

// While events stream in, the DOM is updated at most every STREAM_FRAME_MS; anything the
// user does (scroll, click, keys, filters) is shown in the next animation frame.
const STREAM_FRAME_MS = 50;
let scheduled = false;
let urgent = false;
let lastFrame = 0;
let frameTimer = null;

function schedule(now = false) {
  if (now) urgent = true;
  if (scheduled) return;
  scheduled = true;
  if (document.hidden) {
    setTimeout(frame, 250);
    return;
  }
  const wait = urgent ? 0 : lastFrame + STREAM_FRAME_MS - performance.now();
  if (wait <= 1) requestAnimationFrame(frame);
  else frameTimer = setTimeout(() => requestAnimationFrame(frame), wait);
}

function frame() {
  scheduled = false;
  urgent = false;
  clearTimeout(frameTimer);
  lastFrame = performance.now();
  const v = view;
  if (listDirty) renderList();
  if (!v) return;
  if (v.rowsStale) {
    const anchor = anchorSeq(v);
    rebuildRows(v);
    restoreAnchor(v, anchor);
  }
  if (!$("timeline").hidden) {
    timeline.render(!paused);
    settleFocus(v);
    if (paused) {
      const b = $("pause");
      const label = unseen ? `Resume scroll (${fmt(unseen)} new)` : "Resume scroll";
      if (b.textContent !== label) b.textContent = label;
    }
  } else if (v.dirty || spansPending) renderSpans(v);
  if (v.dirty) {
    v.dirty = false;
    refreshDetail(v);
    renderSummary(v);
    renderAgents(v);
    renderAlerts(v);
    renderNotify(v);
    syncSelects(v);
  }
}

// ---------------------------------------------------------------- start

function openAllSocket() {
  if (allSocket || authBlocked) return;
  // The "all" stream keeps the execution list and its counters live; a refetch after every
  // (re)connect and every 10 s corrects whatever the stream could not tell.
  allSocket = new LiveSocket("all", {
    since: () => null,
    onEvent: noteEvent,
    onConnected: () => refreshExecutions(),
    onReset: () => refreshExecutions({ force: true }),
    onState: (s, detail) => setConn("all", s, detail),
  });
}

function initUi() {
  buildFilters();
  initList();
  timeline = new VirtualList($("timeline"), ROW_H, timelineSource, { onRange: onTimelineRange });
  spanList = new VirtualList($("spans"), SPAN_ROW_H, spanSource);
  const tl = $("timeline");
  tl.addEventListener("scroll", onTimelineScroll, { passive: true });
  for (const t of ["wheel", "touchstart", "touchmove", "pointerdown", "keydown"]) {
    tl.addEventListener(t, () => {
      lastUserInput = performance.now();
    }, { passive: true });
  }
  timeline.sizer.addEventListener("click", (e) => {
    const row = e.target.closest(".row");
    const s = Number(row?.dataset.seq);
    if (!view || !s || !view.ev[s] || view.ev[s] === MISSING) return;
    setPaused(true); // the chosen row stays where it is while the stream goes on
    openDetail(view, s);
  });
  tl.addEventListener("keydown", (e) => {
    const v = view;
    if (!v || !["ArrowDown", "ArrowUp", "Enter", "Escape"].includes(e.key)) return;
    e.preventDefault();
    if (e.key === "Escape") return closeDetail();
    const n = timelineSource.count();
    let i = v.selected ? indexOfSeq(v, v.selected) : timeline.firstVisible();
    if (e.key === "ArrowDown") i = Math.min(n - 1, i + 1);
    else if (e.key === "ArrowUp") i = Math.max(0, i - 1);
    const s = timelineSource.key(i);
    setPaused(true);
    timeline.scrollToIndex(i, "nearest");
    if (v.ev[s] && v.ev[s] !== MISSING) openDetail(v, s);
  });
  $("spans").addEventListener("click", (e) => {
    const s = Number(e.target.closest(".row")?.dataset.seq);
    if (view && s) openDetail(view, s);
  });
  $("spans").addEventListener("scroll", () => spanList.render(), { passive: true });
  new ResizeObserver(() => schedule(true)).observe(tl);
  $("pause").addEventListener("click", () => setPaused(!paused));
  $("to-start").addEventListener("click", () => {
    setPaused(true);
    showTab("timeline");
    tl.scrollTop = 0;
    schedule(true);
  });
  $("export").addEventListener("click", () => exportRun());
  $("load-all").addEventListener("click", () => {
    if (!view) return;
    view.bgCap = Infinity;
    kick(view);
  });
  $("tab-timeline").addEventListener("click", () => showTab("timeline"));
  $("tab-spans").addEventListener("click", () => showTab("spans"));
  $("ptab-overview").addEventListener("click", () => showPanelTab("overview"));
  $("ptab-detail").addEventListener("click", () => showPanelTab("detail"));
  $("detail-copy").addEventListener("click", async () => {
    const ok = await copyText($("detail-json").textContent);
    $("detail-copy").textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => {
      $("detail-copy").textContent = "Copy JSON";
    }, 1500);
  });
  $("detail-link").addEventListener("click", (e) => {
    e.preventDefault(); // the page is already there: show it, keep the URL to share
    const s = Number(new URL($("detail-link").href).searchParams.get("seq"));
    if (s) jumpTo(s);
  });
  $("alerts").addEventListener("click", (e) => {
    const s = Number(e.target.closest("li")?.dataset.seq);
    if (s) jumpTo(s);
  });
  $("alerts").addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    const s = Number(e.target.closest("li")?.dataset.seq);
    if (s) jumpTo(s);
  });
  $("notify").addEventListener("click", () => {
    const a = view?.actions;
    if (a?.length) jumpTo(a[a.length - 1]);
  });
  $("toast-show").addEventListener("click", () => {
    $("toast").hidden = true;
    if (toastSeq) jumpTo(toastSeq);
  });
  $("toast-close").addEventListener("click", () => {
    $("toast").hidden = true;
  });
  $("notice-close").addEventListener("click", () => {
    $("notice").hidden = true;
  });
  $("token-form").addEventListener("submit", onTokenSubmit);
  $("open-list").addEventListener("click", () => setDrawer(drawer === "side" ? null : "side"));
  $("close-list").addEventListener("click", () => setDrawer(null));
  $("open-panel").addEventListener("click", () => setDrawer(drawer === "panel" ? null : "panel"));
  $("close-panel").addEventListener("click", () => setDrawer(null));
  $("backdrop").addEventListener("click", () => setDrawer(null));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && drawer) setDrawer(null);
  });
  wide.addEventListener("change", () => setDrawer(null));
  narrow.addEventListener("change", () => setDrawer(null));
  document.addEventListener("visibilitychange", () => schedule(true));
  setInterval(() => {
    for (const e of executions.values()) if (e.li) setText(e.tAge, e.lastTimestamp ? ago(e.lastTimestamp) : "");
    if (view) renderAgents(view);
  }, 1000);
}

async function start() {
  initToken();
  initUi();
  const preset = params.get("execution");
  setFollow(!preset);
  const list = await firstListing();
  mergeListing(list);
  listReady = true;
  renderList();
  openAllSocket();
  setInterval(() => refreshExecutions(), REFRESH_MS);
  if (preset) {
    const seq = Number(params.get("seq")) || 0;
    select(preset, { user: true, seq });
  } else {
    const latest = sortedEntries()[0];
    if (latest) select(latest.executionId, { user: false });
    else $("timeline-empty").textContent =
      "No executions yet. Follow mode is on: the first run to start is shown here.";
  }
}

window.__trioObs = {
  config,
  lastSeq: (executionId) => (view && view.id === executionId ? view.wsSeq : 0),
  eventCount: () => (view ? view.loaded : 0),
  // Filter messages of the open execution not yet acknowledged (0: the server applies them).
  pendingAcks: () => (view?.socket ? view.socket.unacked : 0),
  selected: () => view?.id ?? null,
  seqs: () => {
    const out = [];
    if (view) for (let s = 1; s < view.ev.length; s++) if (view.ev[s] && view.ev[s] !== MISSING) out.push(s);
    return out;
  },
  stats: () => ({
    id: view?.id ?? null, loaded: view?.loaded ?? 0, known: view?.known ?? 0,
    wsSeq: view?.wsSeq ?? 0, wsDuplicates: view?.wsDupes ?? 0, epoch: view?.epoch ?? null,
    fullyLoaded: view ? fullyLoaded(view) : false, rows: timelineSource.count(),
    alerts: view?.alerts.length ?? 0, domNodes: document.getElementsByTagName("*").length,
    follow, paused, closes: view?.socket?.closes ?? [], allCloses: allSocket?.closes ?? [],
  }),
};

start();
