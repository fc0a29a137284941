// trio-obs live viewer. Plain ES module, no dependencies, works offline.
//
// Safety rule: event data only ever reaches the DOM as text (Element.append with strings,
// textContent). Nothing here uses innerHTML, so a summary holding markup shows that markup.

// Event type -> topic, as SPEC §3 (plan OBS-602) maps them.
const TOPIC_OF_TYPE = {
  "transcript:entry": "transcript", "tool:start": "tools", "tool:end": "tools",
  "tool:output": "tools", "assertion:result": "assertions", "skill:start": "skills",
  "skill:end": "skills", "messagebus:event": "messagebus", "wave:status": "waves",
  "agent:heartbeat": "agents", "execution:status": "execution",
};
const TOPICS = [...new Set(Object.values(TOPIC_OF_TYPE))];
const topicOf = (ev) => TOPIC_OF_TYPE[ev.type] ?? "other";
const MAX_ROWS = 5000; // timeline rows kept in the DOM; older ones are dropped
const PAGE = 1000; // page size of HTTP backfill
const REFRESH_MS = 10000; // periodic refetch of the execution list

const params = new URLSearchParams(location.search);
const TOKEN = params.get("token");
const $ = (id) => document.getElementById(id);

/** An element with a class and children; strings become text nodes, never markup. */
function el(tag, cls, ...children) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  for (const c of children) {
    if (c !== null && c !== undefined && c !== false && c !== "") {
      node.append(c instanceof Node ? c : String(c)); // a string is appended as a text node
    }
  }
  return node;
}

function clock(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return "";
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
function ago(ts) {
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (!Number.isFinite(s)) return "";
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}
function ms(v) {
  if (typeof v !== "number") return "";
  return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${+v.toFixed(1)} ms`;
}
const pct = (r) => `${Math.round(r * 100)}%`;

/** `fn`, run at most once per animation frame however often it is asked for. */
function perFrame(fn) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      fn();
    });
  };
}

// ---------------------------------------------------------------- network

async function api(path) {
  const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
  const res = await fetch(path, { headers, cache: "no-store" });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function wsUrl(stream, since) {
  const q = new URLSearchParams({ observability: stream });
  if (since) q.set("since", String(since));
  if (TOKEN) q.set("token", TOKEN);
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}/ws?${q}`;
}

/**
 * A WebSocket that reconnects with backoff (0.5 s doubling to 5 s) whatever the close code
 * (4008 slow consumer, 1001 server restart, network loss), asking for `since=<last seq>`
 * so the server replays exactly what was missed.
 */
class LiveSocket {
  constructor(stream, { since, onEvent, onConnected, onState, onPong }) {
    Object.assign(this, { stream, since, onEvent, onConnected, onState, onPong });
    this.delay = 500;
    this.closed = false;
    this.unacked = 0; // subscribe/unsubscribe messages the server has not answered yet
    this.timer = null;
    this.connect();
  }

  connect() {
    const ws = (this.ws = new WebSocket(wsUrl(this.stream, this.since())));
    this.unacked = 0;
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data); // the server sends JSON objects only
      if (msg.type === "observability:connected") {
        this.delay = 500; // only a real handshake resets the backoff
        this.onState("live");
        this.onConnected(this);
      } else if (typeof msg.seq === "number") {
        this.onEvent(msg);
      } else if (msg.type === "observability:subscribed" ||
                 msg.type === "observability:unsubscribed") {
        this.unacked = Math.max(0, this.unacked - 1);
      } else if (msg.type === "pong") {
        this.onPong?.();
      } else if (msg.type === "observability:error") {
        this.unacked = Math.max(0, this.unacked - 1);
        console.warn("trio-obs:", msg.error, msg.code);
      }
    };
    ws.onclose = (e) => {
      if (this.closed || ws !== this.ws) return;
      this.onState("reconnecting", `closed ${e.code}; retry in ${this.delay / 1000} s`);
      // Jitter, so that many viewers of a restarted server do not all return at once.
      this.timer = setTimeout(() => this.connect(), this.delay * (0.8 + 0.4 * Math.random()));
      this.delay = Math.min(this.delay * 2, 5000);
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
function setConn(which, state, detail = "") {
  connState[which] = state;
  const shown = view ? connState.view : connState.all;
  const node = $("conn");
  node.textContent = { live: "live", reconnecting: "reconnecting…" }[shown] ?? "connecting…";
  node.className = `conn ${shown}`;
  if (detail) node.title = detail;
}

// ---------------------------------------------------------------- execution list

const executions = new Map(); // executionId -> summary as served by /api/executions
const execItems = new Map(); // executionId -> <li>

async function refreshExecutions() {
  try {
    for (const e of await api("/api/executions")) {
      const known = executions.get(e.executionId);
      // The live stream may already be ahead of this snapshot: keep the newer one.
      if (!known || known.lastSeq <= e.lastSeq) executions.set(e.executionId, e);
    }
    renderExecutions();
  } catch (err) {
    console.warn("trio-obs: cannot list executions:", err);
  }
}

function countEvent(ev) {
  const id = ev.executionId;
  if (!id || id === "global") return;
  const e = executions.get(id) ??
    { executionId: id, lastStatus: null, eventCount: 0, lastSeq: 0, lastTimestamp: null };
  if (ev.seq <= e.lastSeq) return; // counted already (snapshot or earlier frame)
  e.eventCount += 1;
  e.lastSeq = ev.seq;
  e.lastTimestamp = ev.timestamp;
  if (ev.type === "execution:status") e.lastStatus = ev.status;
  executions.set(id, e);
  renderExecutionsSoon();
}

// Many events arrive per frame: render the list at most once per frame.
const renderExecutionsSoon = perFrame(() => renderExecutions());

function renderExecutions() {
  const list = $("executions");
  const sorted = [...executions.values()].sort((a, b) =>
    (b.lastTimestamp ?? "").localeCompare(a.lastTimestamp ?? ""));
  for (const e of sorted) {
    let li = execItems.get(e.executionId);
    if (!li) {
      li = el("li", "exec");
      li.dataset.testid = "execution-item";
      li.dataset.executionId = e.executionId;
      li.tabIndex = 0;
      li.addEventListener("click", () => select(e.executionId));
      li.addEventListener("keydown", (k) => k.key === "Enter" && select(e.executionId));
      execItems.set(e.executionId, li);
    }
    const status = e.lastStatus ?? "–";
    li.replaceChildren(
      el("div", "exec-id", e.executionId),
      el("div", "exec-meta",
        el("span", `badge s-${status}`, status),
        el("span", "muted", `${e.eventCount} events`),
        el("span", "muted age", e.lastTimestamp ? ago(e.lastTimestamp) : "")),
    );
    li.dataset.ts = e.lastTimestamp ?? "";
    li.classList.toggle("selected", view?.id === e.executionId);
    list.append(li); // appending an existing node moves it: this keeps the sort order
  }
  $("exec-count").textContent = String(executions.size);
  // Until the view sees an execution:status itself (it may precede the replay), use the list's.
  const status = view && !view.statusSeq && executions.get(view.id)?.lastStatus;
  if (status) $("exec-status").replaceChildren(badge(status));
}

// ---------------------------------------------------------------- the selected execution

let view = null; // state of the execution being watched
let paused = false;
let unseen = 0;
const filter = { topics: new Set(TOPICS), task: "" };

/** Insert `node` among `parent`'s children ordered by data-order (descending if `desc`). */
function insertOrdered(parent, node, order, desc = false) {
  node.dataset.order = String(order);
  const after = (o) => (desc ? o < order : o > order);
  // Events nearly always arrive in order, so walking back from the end is short. A child
  // without data-order (a group's header) stops the walk: ordered children follow it.
  let ref = parent.lastElementChild;
  while (ref && ref.dataset.order !== undefined && after(Number(ref.dataset.order))) {
    ref = ref.previousElementSibling;
  }
  parent.insertBefore(node, ref ? ref.nextSibling : parent.firstChild);
}

function newView(id) {
  return {
    id, socket: null, seen: new Set(), lastSeq: 0, firstSeq: Infinity, passSeq: 0, statusSeq: 0,
    // Seq from which the server may have skipped events because of our filters (null: none).
    // Opened already narrowed: the replay is unfiltered, so the gap starts at its first event.
    gapFrom: isWide() ? null : -1,
    tools: new Map(), skills: new Map(), waves: new Map(), agents: new Map(),
    server: { topics: null, implicit: true, task: "" }, // what the server filters, as we set it
    pendingBackfill: null, // seq after which to refetch over HTTP once the server is wide again
  };
}

function select(id) {
  if (view?.id === id) return;
  view?.socket?.close();
  const v = (view = newView(id));
  $("timeline").replaceChildren();
  for (const k of ["alerts", "agents", "waves"]) $(k).replaceChildren();
  $("exec-title").textContent = id;
  $("exec-status").textContent = "–";
  $("pass-rate").textContent = "–";
  $("alert-count").textContent = "";
  updateCounts();
  renderExecutions();
  params.set("execution", id);
  history.replaceState(null, "", `?${params}`);
  setConn("view", "connecting");
  v.socket = new LiveSocket(id, {
    since: () => v.lastSeq || null,
    onEvent: (ev) => ingest(v, ev),
    onConnected: () => {
      v.server = { topics: null, implicit: true, task: "" }; // a new connection starts wide
      syncFilters(v);
    },
    onState: (s, detail) => view === v && setConn("view", s, detail),
    onPong: () => onPong(v),
  });
}

/** Take one stored event (live, replayed or backfilled) into the view, once. */
function ingest(v, ev) {
  if (v !== view || v.seen.has(ev.seq)) return;
  v.seen.add(ev.seq);
  if (ev.seq > v.lastSeq) v.lastSeq = ev.seq;
  if (ev.seq < v.firstSeq) v.firstSeq = ev.seq;
  if (v.gapFrom === -1) v.gapFrom = ev.seq - 1;
  render(v, ev);
  updateCounts();
  if (!paused) scheduleScroll();
  else $("pause").textContent = `Resume scroll (${++unseen} new)`;
}

function updateCounts() {
  $("event-count").textContent = String(view ? view.seen.size : 0);
  $("earlier").hidden = !(view?.firstSeq > 1 && view.firstSeq !== Infinity);
}

/** Older events than the replay brought (it holds the latest 100), a page at a time. */
async function loadEarlier() {
  const v = view;
  if (!v || v.firstSeq <= 1 || v.firstSeq === Infinity) return;
  const since = Math.max(0, v.firstSeq - 1 - PAGE);
  const rows = await api(`/api/executions/${encodeURIComponent(v.id)}/events?since=${since}` +
    `&limit=${v.firstSeq - 1 - since}`);
  for (const ev of rows) ingest(v, ev);
  if (v.firstSeq > since + 1) v.firstSeq = since + 1; // the store had nothing older there
  updateCounts();
  setPaused(true); // show what was loaded: stay at the top
  $("timeline").scrollTop = 0;
}

function setPaused(on) {
  paused = on;
  unseen = 0;
  $("pause").textContent = paused ? "Resume scroll" : "Pause scroll";
  $("pause").setAttribute("aria-pressed", String(paused));
  if (!paused) scheduleScroll();
}

const scheduleScroll = perFrame(() => {
  if (!paused) $("timeline").scrollTop = $("timeline").scrollHeight;
});

/** The task an event belongs to, as the server's taskId filter sees it. */
function taskOf(v, ev) {
  const t = ev.type;
  if (t === "transcript:entry" || t === "messagebus:event") return ev.entry?.taskId ?? "";
  if (t === "tool:end" || t === "tool:output") return v.tools.get(ev.toolUseId)?.task ?? "";
  if (t === "skill:end") return v.skills.get(ev.skillTraceId) ?? "";
  return (t === "agent:heartbeat" ? ev.currentTaskId : ev.taskId) ?? "";
}

/** A timeline line: time, seq, kind, then the body parts. */
function line(ev, kind, ...body) {
  const row = el("div", `row t-${topicOf(ev)}`,
    el("span", "ts", clock(ev.timestamp)), el("span", "seq", `#${ev.seq}`),
    el("span", "kind", kind), el("span", "body", ...body));
  return mark(row, ev);
}
function mark(node, ev) {
  node.dataset.testid = "event-row";
  node.dataset.seq = String(ev.seq);
  node.dataset.type = ev.type;
  return node;
}
const badge = (text, cls = text) => el("span", `badge s-${cls}`, text);

function addRow(v, row, ev, task) {
  row.dataset.topic = topicOf(ev);
  row.dataset.task = task;
  row.hidden = !visible(row);
  const timeline = $("timeline");
  insertOrdered(timeline, row, ev.seq);
  // Bound memory on long runs; a tool call whose row was dropped gets a fresh group.
  while (timeline.childElementCount > MAX_ROWS) {
    const old = timeline.firstElementChild;
    if (old.dataset.toolUseId) v.tools.delete(old.dataset.toolUseId);
    old.remove();
  }
}

/** The group row of a tool call; made from whichever of its events arrives first. */
function toolGroup(v, ev) {
  let t = v.tools.get(ev.toolUseId);
  if (t) return t;
  const status = badge("running");
  const header = el("div", "line");
  const out = el("pre", "out");
  out.hidden = true;
  const row = el("div", "row group t-tools", header, out);
  row.dataset.toolUseId = ev.toolUseId;
  t = { row, header, out, status, task: "", tool: "tool call", input: "" };
  toolHeader(t, ev, "", "(start not loaded)", ev.toolUseId, "");
  v.tools.set(ev.toolUseId, t);
  addRow(v, row, ev, "");
  return t;
}

function toolHeader(t, ev, seq, tool, input, taskTag) {
  t.header.replaceChildren(el("span", "ts", clock(ev.timestamp)), el("span", "seq", seq),
    el("span", "kind", "tool"),
    el("span", "body", el("b", "", tool), " ", el("code", "", input), " ", t.status, " ", taskTag));
}

function render(v, ev) {
  const task = taskOf(v, ev);
  const taskTag = task ? el("span", "task", task) : "";
  switch (ev.type) {
    case "tool:start": {
      const t = toolGroup(v, ev);
      Object.assign(t, { task, tool: ev.tool, input: ev.inputSummary ?? "" });
      toolHeader(t, ev, `#${ev.seq}`, ev.tool, t.input, taskTag);
      mark(t.row, ev);
      t.row.dataset.task = task;
      t.row.hidden = !visible(t.row);
      // The group may have been created by an output chunk that arrived first: re-place it.
      t.row.remove();
      insertOrdered($("timeline"), t.row, ev.seq);
      break;
    }
    case "tool:output": {
      const t = toolGroup(v, ev);
      const chunk = mark(el("span", ev.isStderr ? "chunk stderr" : "chunk", ev.chunk ?? ""), ev);
      if (ev.isStderr) chunk.title = "stderr";
      t.out.hidden = false;
      insertOrdered(t.out, chunk, ev.seq);
      break;
    }
    case "tool:end": {
      const t = toolGroup(v, ev);
      const st = ev.resultStatus;
      t.status.textContent = st;
      t.status.className = `badge s-${st}`;
      const end = mark(el("div", "end", "→ ", badge(st), " ", ms(ev.durationMs), " ",
        ev.outputSummary ?? ""), ev);
      insertOrdered(t.row, end, ev.seq);
      if (st === "error" || st === "blocked") {
        addAlert(v, ev, `${t.tool} ${st}`, ev.outputSummary || t.input);
      }
      break;
    }
    case "assertion:result": {
      const a = ev.assertion ?? {};
      const sign = { pass: "✓", fail: "✗", skip: "–", warn: "!" }[a.result] ?? "?";
      addRow(v, line(ev, "assert", el("span", `sign s-${a.result}`, sign), " ",
        el("b", "", a.category), " ", a.description, " ", taskTag,
        el("span", "muted", ` pass rate ${pct(ev.runningPassRate ?? 0)}`)), ev, task);
      if (ev.seq > v.passSeq && typeof ev.runningPassRate === "number") {
        v.passSeq = ev.seq;
        $("pass-rate").textContent = pct(ev.runningPassRate);
        $("pass-rate").className = ev.runningPassRate < 1 ? "s-fail" : "s-pass";
      }
      if (a.result === "fail") addAlert(v, ev, `✗ ${a.category}`, `${a.description} (${task})`);
      break;
    }
    case "messagebus:event": {
      const e = ev.entry ?? {};
      addRow(v, line(ev, "bus", badge(e.severity), " ", el("b", "", e.source), " ",
        el("span", "muted", e.eventType), " ", e.humanSummary, " ", taskTag), ev, task);
      if (ev.requiresAction) addAlert(v, ev, `${e.severity} from ${e.source}`, e.humanSummary);
      break;
    }
    case "wave:status":
      addRow(v, line(ev, "wave", `wave ${ev.waveNumber} `, badge(ev.status), " ",
        progress(ev)), ev, task);
      renderWave(v, ev);
      break;
    case "agent:heartbeat":
      addRow(v, line(ev, "agent", el("b", "", ev.instanceId), " ", badge(ev.status), " ",
        taskTag, " ", el("span", "muted", metricsText(ev.metrics))), ev, task);
      renderAgent(v, ev);
      break;
    case "execution:status":
      addRow(v, line(ev, "exec", `execution ${ev.executionId} `, badge(ev.status), " ",
        ev.message ?? ""), ev, task);
      if (ev.seq > v.statusSeq) {
        v.statusSeq = ev.seq;
        $("exec-status").replaceChildren(badge(ev.status));
      }
      if (ev.status === "failed") addAlert(v, ev, "execution failed", ev.message ?? "");
      break;
    case "transcript:entry": {
      const e = ev.entry ?? {};
      addRow(v, line(ev, "log", el("b", "", e.instanceId), " ",
        el("span", "muted", `${e.entryType}/${e.category}`), " ", e.summary, " ", taskTag),
      ev, task);
      break;
    }
    case "skill:start":
      v.skills.set(ev.skillTraceId, task);
      addRow(v, line(ev, "skill", el("b", "", ev.skillName), " ",
        el("span", "muted", `${ev.skillFile}:${ev.lineNumber}`), " ", taskTag), ev, task);
      break;
    case "skill:end":
      addRow(v, line(ev, "skill", el("b", "", ev.skillName), " ", badge(ev.status), " ",
        ms(ev.durationMs)), ev, task);
      break;
    default: // a type newer than this page: still show it, as text
      addRow(v, line(ev, ev.type ?? "?", JSON.stringify(ev)), ev, task);
  }
}

function progress(ev) {
  const n = Math.max(ev.taskCount || 0, 1);
  const bar = el("span", "bar", el("span", "done"), el("span", "failed"));
  bar.children[0].style.width = `${(100 * ev.completedCount) / n}%`;
  bar.children[1].style.width = `${(100 * ev.failedCount) / n}%`;
  bar.title = `${ev.completedCount} completed, ${ev.failedCount} failed of ${ev.taskCount}`;
  return el("span", "progress", bar,
    el("span", "muted", ` ${ev.completedCount}✓ ${ev.failedCount}✗ / ${ev.taskCount}`));
}

function renderWave(v, ev) {
  const known = v.waves.get(ev.waveNumber);
  if (known && known.seq > ev.seq) return; // an older state arrived late (backfill)
  const node = el("div", "wave", el("span", "", `wave ${ev.waveNumber}`), badge(ev.status),
    progress(ev));
  node.dataset.order = String(ev.waveNumber);
  if (known) known.node.replaceWith(node);
  else insertOrdered($("waves"), node, ev.waveNumber);
  v.waves.set(ev.waveNumber, { seq: ev.seq, node });
}

function metricsText(m) {
  if (!m) return "";
  return Object.entries(m).map(([k, val]) => `${k} ${Math.round(val * 10) / 10}`).join(" · ");
}

function renderAgent(v, ev) {
  const known = v.agents.get(ev.instanceId);
  if (known && known.ev.seq > ev.seq) return;
  const li = known?.li ?? el("li", "agent");
  li.dataset.testid = "agent";
  li.dataset.instanceId = ev.instanceId;
  li.replaceChildren(
    el("div", "", el("b", "", ev.instanceId), " ", badge(ev.status),
      el("span", "muted age", ago(ev.timestamp))),
    el("div", "muted", ev.currentTaskId ? `task ${ev.currentTaskId}` : "no task"),
    el("div", "muted", metricsText(ev.metrics)));
  li.dataset.ts = ev.timestamp;
  if (!known) insertOrdered($("agents"), li, v.agents.size);
  v.agents.set(ev.instanceId, { ev, li });
}

function addAlert(v, ev, title, text) {
  const li = el("li", `alert t-${topicOf(ev)}`,
    el("div", "", el("span", "seq", `#${ev.seq}`), " ", el("b", "", title),
      el("span", "muted", ` ${clock(ev.timestamp)}`)),
    el("div", "", text ?? ""));
  li.dataset.testid = "alert";
  li.dataset.seq = String(ev.seq);
  li.title = "show in timeline";
  li.addEventListener("click", () => {
    const row = $("timeline").querySelector(`[data-seq="${Number(ev.seq)}"]`);
    row?.scrollIntoView({ block: "center" });
    row?.classList.add("flash");
    setTimeout(() => row?.classList.remove("flash"), 1200);
  });
  insertOrdered($("alerts"), li, ev.seq, true); // newest first
  $("alert-count").textContent = String($("alerts").childElementCount);
}

// ---------------------------------------------------------------- filters

function visible(row) {
  const topic = row.dataset.topic;
  if (TOPICS.includes(topic) && !filter.topics.has(topic)) return false;
  // Like the server: an event of no task passes a task filter.
  return !filter.task || !row.dataset.task || row.dataset.task === filter.task;
}

/**
 * Tell the server the filters (SPEC §3 subscribe/unsubscribe), changing its state step by
 * step so that a topic that stays wanted is never briefly dropped. Rows are filtered here
 * too, because a replay after reconnect arrives before the server has our filters.
 */
function syncFilters(v) {
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

/** Fetch, over HTTP, the events the server skipped while the view was narrowed. */
async function backfill(v, after) {
  for (let page = 0; page < 20 && v === view; page++) {
    const id = encodeURIComponent(v.id);
    const rows = await api(`/api/executions/${id}/events?since=${after}&limit=${PAGE}`);
    for (const ev of rows) ingest(v, ev);
    if (rows.length < PAGE) return;
    after = rows[rows.length - 1].seq;
  }
}

function onPong(v) {
  if (v !== view || v.pendingBackfill === null) return;
  const from = v.pendingBackfill;
  v.pendingBackfill = null;
  backfill(v, from).catch((err) => console.warn("trio-obs: backfill failed:", err));
}

const isWide = () => filter.topics.size === TOPICS.length && !filter.task;

/** Apply the filters; `widened`: something hidden may now be shown (it may need fetching). */
function filtersChanged(widened) {
  for (const row of $("timeline").children) row.hidden = !visible(row);
  if (!paused) scheduleScroll();
  const v = view;
  if (!v) return;
  if (widened && v.gapFrom !== null) {
    v.pendingBackfill = Math.max(0, Math.min(v.pendingBackfill ?? Infinity, v.gapFrom));
  }
  // Narrowed since gapFrom: whatever the server skipped from then on may be wanted later.
  v.gapFrom = isWide() ? null : v.gapFrom ?? v.lastSeq;
  syncFilters(v);
}

function buildFilters() {
  const box = $("topics");
  for (const t of TOPICS) {
    const input = Object.assign(el("input"), { type: "checkbox", checked: true, value: t });
    input.addEventListener("change", () => {
      if (input.checked) filter.topics.add(t);
      else filter.topics.delete(t);
      filtersChanged(input.checked);
    });
    box.append(el("label", `topic t-${t}`, input, t));
  }
  let timer = null;
  $("task-filter").addEventListener("input", (e) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const widened = filter.task !== "";
      filter.task = e.target.value.trim();
      filtersChanged(widened);
    }, 300);
  });
}

// ---------------------------------------------------------------- start

function start() {
  buildFilters();
  $("earlier").addEventListener("click", () => {
    loadEarlier().catch((err) => console.warn("trio-obs: cannot load earlier events:", err));
  });
  $("pause").addEventListener("click", () => setPaused(!paused));
  // The "all" stream keeps the execution list and its counters live; a refetch after every
  // (re)connect and every 10 s corrects whatever the stream could not tell.
  new LiveSocket("all", {
    since: () => null,
    onEvent: countEvent,
    onConnected: refreshExecutions,
    onState: (s, detail) => setConn("all", s, detail),
  });
  refreshExecutions();
  setInterval(refreshExecutions, REFRESH_MS);
  setInterval(() => {
    for (const node of document.querySelectorAll("[data-ts]")) {
      const age = node.querySelector(".age");
      if (age && node.dataset.ts) age.textContent = ago(node.dataset.ts);
    }
  }, 1000);
  const preset = params.get("execution");
  if (preset) select(preset);
}

window.__trioObs = {
  lastSeq: (executionId) => (view && view.id === executionId ? view.lastSeq : 0),
  eventCount: () => (view ? view.seen.size : 0),
  // Filter messages of the open execution not yet acknowledged (0: the server applies them).
  pendingAcks: () => (view?.socket ? view.socket.unacked : 0),
};

start();
