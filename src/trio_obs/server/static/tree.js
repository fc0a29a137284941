// The run's span tree (SPEC §12), folded from its events as they arrive in any order, and
// seeded from GET /api/executions/<id>/tree (CONTRACT D) for what is not loaded. The fold
// is idempotent per span: an event or a tree node taken twice changes nothing.
//
// A node: {id, parent, kind, name, agent, state, start, end, dur, model, usage, cost, error,
// placeholder, openSeq, closeSeq, toolUseId, taskId, slow, kids[], ver}. Times are ms since
// the epoch (end null while running). Children are kept sorted by start, then openSeq.

import { spanRole } from "./events.js";

export const ROOT = "\u0000root"; // the root's key until an event names its span id
const FINAL = { completed: "done", failed: "error", success: "done", partial: "done" };

export function newTree() {
  return {
    nodes: new Map(), // id -> node (the root under ROOT and, once known, its span id)
    root: node(ROOT, null, "agent", ""),
    rootId: null, // the root's span id, once an execution:status names it
    gen: 0, // bumped when the structure or an order changes (rows to rebuild)
    running: 0, // open spans (their bars grow)
    t0: Infinity, t1: -Infinity,
    count: 0, // spans (the root excluded)
    // What changed in the shape since the rows were last derived (flatten, patchRows): the
    // nodes made since ("fresh"), and whether any other node moved, came or went.
    made: [], moved: false,
  };
}

function node(id, parent, kind, name) {
  return {
    id, parent, kind, name, agent: null, state: "running", start: NaN, end: null, dur: null,
    model: null, usage: null, cost: null, error: null, placeholder: true, openSeq: 0,
    closeSeq: 0, toolUseId: null, taskId: null, slow: false, kids: [], ver: 0,
  };
}

const byStart = (a, b) =>
  (Number.isFinite(a.start) ? a.start : Infinity) - (Number.isFinite(b.start) ? b.start : Infinity) ||
  (a.openSeq || Infinity) - (b.openSeq || Infinity) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

function get(t, id) {
  if (id === null || id === undefined || id === ROOT || id === t.rootId) return t.root;
  return t.nodes.get(id);
}

/** The node of span `id`, made (a placeholder under the root) if not seen yet. */
function ensure(t, id) {
  let n = get(t, id);
  if (!n) {
    n = node(id, t.root, "span", id);
    if (t.made.length < PATCH_MAX) {
      n.fresh = true;
      t.made.push(n);
    } else t.moved = true; // too many for patchRows: the rows are derived again
    t.nodes.set(id, n);
    t.count += 1;
    insertKid(t.root, n);
    t.gen += 1;
  }
  return n;
}

function insertKid(parent, n) {
  const kids = parent.kids;
  let i = kids.length;
  while (i > 0 && byStart(kids[i - 1], n) > 0) i -= 1;
  kids.splice(i, 0, n);
}

function removeKid(parent, n) {
  const i = parent.kids.indexOf(n);
  if (i >= 0) parent.kids.splice(i, 1);
}

/** Hang `n` under `parentId` (made as a placeholder if unknown); never under itself. */
function reparent(t, n, parentId) {
  const p = parentId === undefined ? t.root : ensure(t, parentId);
  if (p === n.parent || p === n) return;
  for (let a = p; a; a = a.parent) if (a === n) return; // a cycle: keep where it is
  if (!n.fresh) t.moved = true;
  if (n.parent) removeKid(n.parent, n);
  n.parent = p;
  insertKid(p, n);
  t.gen += 1;
}

/** The start moved: keep the siblings ordered. */
function setStart(t, n, ms) {
  if (!Number.isFinite(ms) || ms === n.start) return;
  n.start = ms;
  if (ms < t.t0) t.t0 = ms;
  if (n.parent) {
    if (!n.fresh) t.moved = true;
    removeKid(n.parent, n);
    insertKid(n.parent, n);
  }
  t.gen += 1;
}

function open(n, t) {
  if (n.end === null && n.state === "running" && !n.counted) {
    n.counted = true;
    t.running += 1;
  }
}

function close(t, n, state, endMs, dur) {
  if (n.counted) {
    n.counted = false;
    t.running -= 1;
  }
  // A provisional "lost" gives way to a real end (CONTRACT B); a real end is final.
  if (n.end !== null && n.state !== "lost") return;
  n.state = state;
  n.dur = Number.isFinite(dur) ? dur : n.dur;
  if (!Number.isFinite(n.start) && Number.isFinite(endMs) && Number.isFinite(dur)) {
    setStart(t, n, endMs - dur);
  }
  n.end = Number.isFinite(n.start) && Number.isFinite(n.dur) ? n.start + n.dur
    : Number.isFinite(endMs) ? endMs : n.start;
  if (n.end > t.t1) t.t1 = n.end;
}

const stateOf = (s) => FINAL[s] ?? (["done", "error", "blocked", "lost"].includes(s) ? s : "done");

/** The task node of a plan tool/skill without a parent span (under its wave when known). */
function taskNode(t, taskId, wave) {
  const id = `task:${taskId}`;
  let n = t.nodes.get(id);
  if (!n) {
    n = ensure(t, id);
    n.kind = "task";
    n.name = taskId;
    n.placeholder = false;
    n.taskId = taskId;
  }
  if (wave !== undefined && wave !== null) reparent(t, n, waveNode(t, wave).id);
  return n;
}

function waveNode(t, wave) {
  const id = `wave:${wave}`;
  let n = t.nodes.get(id);
  if (!n) {
    n = ensure(t, id);
    n.kind = "wave";
    n.name = `wave ${wave}`;
    n.placeholder = false;
  }
  return n;
}

/**
 * A plan task's state, as the server's tree has it (core/spantree.py, _task_node): it runs
 * while one of its spans does, failed if one did, else done, ending with the last of them
 * (and of its transcript). A task of no spans yet runs until its wave or the run ends.
 */
function settleTask(t, task) {
  let open = false;
  let failed = false;
  let end = task.last ?? -Infinity;
  for (const k of task.kids) {
    if (k.end === null && k.state === "running") open = true;
    else {
      if (k.state === "error") failed = true;
      if (Number.isFinite(k.end) && k.end > end) end = k.end;
    }
  }
  if (!task.kids.length) open = false;
  const state = open ? "running" : failed ? "error" : "done";
  const e = open ? null : Number.isFinite(end) ? end : task.start;
  if (state === task.state && e === task.end) return;
  task.state = state;
  task.end = e;
  if (e !== null && e > t.t1) t.t1 = e;
  task.ver += 1;
}

/** The wave (or the run, `under` null) is over: its tasks are settled, none runs on. */
function endTasks(t, under) {
  for (const n of under ? under.kids : t.nodes.values()) {
    if (n.kind === "task" && n.end === null) settleTask(t, n);
  }
}

/** Widen a derived node (task) to cover a child's time. */
function cover(t, n, ms) {
  if (!Number.isFinite(ms)) return;
  if (!Number.isFinite(n.start) || ms < n.start) setStart(t, n, ms);
  if (n.last === undefined || ms > n.last) n.last = ms;
  n.ver += 1;
}

/** Fold one stored event into tree `t` (`agentOfTask`: the plan's task -> agent, if known). */
export function foldEvent(t, ev, agentOfTask) {
  const ts = Date.parse(ev.timestamp);
  if (ts > t.t1) t.t1 = ts;
  const role = spanRole(ev);
  if (ev.type === "execution:status") return foldStatus(t, ev, ts);
  if (ev.type === "wave:status") {
    const w = waveNode(t, ev.waveNumber);
    if (!Number.isFinite(w.start)) setStart(t, w, ts);
    if (!w.openSeq) w.openSeq = ev.seq;
    if (ev.status === "completed" || ev.status === "failed") {
      close(t, w, stateOf(ev.status), ts, NaN);
      endTasks(t, w);
    } else open(w, t);
    w.ver += 1;
    return;
  }
  if (ev.type === "watch:alert" || ev.type === "watch:clear") return foldAlert(t, ev);
  if (ev.type === "transcript:entry" && ev.entry?.taskId && !ev.parentSpanId) {
    cover(t, taskNode(t, ev.entry.taskId, ev.entry.waveNumber), ts);
    return;
  }
  if (!role) return;
  const id = role.id;
  if (!id) return;
  const n = ensure(t, id);
  if (role.role === "opens") {
    if (n.openSeq && n.openSeq !== ev.seq && !n.placeholder) return; // a later copy
    const first = n.placeholder;
    n.placeholder = false;
    n.openSeq = ev.seq ?? n.openSeq;
    n.kind = role.kind ?? ev.kind ?? n.kind;
    n.name = ev.name ?? ev.tool ?? ev.skillName ?? n.name;
    if (ev.tool && ev.inputSummary) n.name = `${ev.tool} ${ev.inputSummary}`;
    n.model = ev.model ?? n.model;
    n.toolUseId = ev.toolUseId ?? n.toolUseId;
    n.taskId = ev.taskId ?? n.taskId;
    setStart(t, n, ts);
    if (ev.parentSpanId) reparent(t, n, ev.parentSpanId);
    else if (n.taskId && (n.kind === "tool" || n.kind === "skill")) {
      const task = taskNode(t, n.taskId);
      reparent(t, n, task.id);
      cover(t, task, ts);
      settleTask(t, task); // it runs (again) while this span does
    }
    n.agent = ev.agent ?? (n.kind === "agent" ? n.name : null) ?? n.agent;
    if (!n.agent && n.taskId && agentOfTask) n.agent = agentOfTask(n.taskId) ?? null;
    if (!n.agent) n.agent = n.parent?.agent ?? null;
    if (first && n.end === null) open(n, t);
    t.gen += first ? 1 : 0;
  } else if (role.role === "closes") {
    if (n.closeSeq && n.state !== "lost") return;
    n.closeSeq = ev.seq ?? n.closeSeq;
    if (n.placeholder && ev.kind) n.kind = ev.kind;
    if (n.placeholder && role.kind) n.kind = role.kind;
    if (ev.name && n.placeholder) n.name = ev.name;
    n.model = ev.model ?? n.model;
    n.usage = ev.usage ?? n.usage;
    n.error = ev.error ?? n.error;
    n.agent = n.agent ?? ev.agent ?? null;
    const st = ev.type === "tool:end"
      ? ev.isError === true && ev.resultStatus === "done" ? "error" : ev.resultStatus
      : ev.type === "skill:end" ? ev.status : ev.state;
    if (ev.parentSpanId && n.placeholder) reparent(t, n, ev.parentSpanId);
    close(t, n, stateOf(st), ts, ev.durationMs);
    // The watchdog's "lost" names its alert: a clear of it gives the span back its run.
    n.lostBy = st === "lost" ? ev.details?.alertId ?? null : null;
    const task = n.taskId ? t.nodes.get(`task:${n.taskId}`) : null;
    if (task && n.parent === task) {
      cover(t, task, n.end);
      settleTask(t, task);
    }
    t.gen += 1; // its row and its running siblings' rows change
  } else if (role.role === "content") {
    if (n.kind === "tool" && n.taskId) cover(t, t.nodes.get(`task:${n.taskId}`) ?? n, ts);
  }
  n.ver += 1;
}

function foldStatus(t, ev, ts) {
  const r = t.root;
  if (ev.spanId && !t.rootId) {
    t.rootId = ev.spanId;
    t.moved = true;
    const ph = t.nodes.get(ev.spanId);
    if (ph) {
      // A placeholder under that id (its children came first): the root takes them.
      removeKid(ph.parent, ph);
      for (const k of ph.kids) {
        k.parent = r;
        insertKid(r, k);
      }
      t.nodes.delete(ph.id);
      t.count -= 1;
    }
    t.gen += 1;
  }
  if (!Number.isFinite(r.start) || ts < r.start) {
    r.start = ts;
    if (ts < t.t0) t.t0 = ts;
  }
  if (!r.openSeq) r.openSeq = ev.seq;
  r.placeholder = false;
  if (ev.agent && !r.agent) r.agent = ev.agent;
  if (ev.status === "completed" || ev.status === "failed") {
    r.state = FINAL[ev.status];
    r.end = ts;
    r.closeSeq = ev.seq;
    if (ev.usage) r.usage = ev.usage;
    endTasks(t, null);
  } else {
    r.state = "running";
    r.end = null;
  }
  r.ver += 1;
  t.gen += 1;
}

function foldAlert(t, ev) {
  if (ev.type === "watch:alert" && ev.alert === "slow") {
    const n = get(t, ev.spanId ?? ev.toolUseId);
    if (n) {
      n.slow = ev.alertId ?? true;
      n.ver += 1;
    }
  } else if (ev.type === "watch:clear") {
    for (const n of t.nodes.values()) {
      if (n.slow && n.slow === ev.alertId) {
        n.slow = false;
        n.ver += 1;
      }
      if (n.lostBy && n.lostBy === ev.alertId && n.state === "lost") {
        // its producer is heard from again: the span runs on until its real end
        n.lostBy = null;
        n.state = "running";
        n.end = null;
        n.closeSeq = 0;
        open(n, t);
        n.ver += 1;
        t.gen += 1;
      }
    }
  }
}

const when = (x) => (typeof x === "number" ? x : Date.parse(x));

/** Take the tree endpoint's answer: nodes not known here are added; known ones kept. */
export function seedTree(t, snap) {
  for (const s of snap.spans ?? []) {
    if (s.parentSpanId === null || s.parentSpanId === undefined) {
      if (!t.rootId && s.spanId !== snap.executionId) t.rootId = s.spanId;
      const r = t.root;
      if (!Number.isFinite(r.start)) r.start = when(s.start);
      if (r.end === null && s.end) {
        r.end = when(s.end);
        r.state = s.state;
      }
      r.name = r.name || s.name || "";
      r.usage = r.usage ?? s.usage ?? null;
      r.placeholder = false;
      r.ver += 1;
      continue;
    }
    const known = get(t, s.spanId);
    if (known && !known.placeholder) {
      // Known from its events: the server adds what only it knows (price, filled agent).
      if (s.cost !== undefined && s.cost !== null) known.cost = s.cost;
      if (!known.agent && s.agent) known.agent = s.agent;
      known.ver += 1;
      continue;
    }
    const n = ensure(t, s.spanId);
    Object.assign(n, {
      kind: s.kind ?? n.kind, name: s.name ?? n.name, agent: s.agent ?? n.agent,
      model: s.model ?? null, usage: s.usage ?? null, cost: s.cost ?? null, error: s.error ?? null,
      placeholder: Boolean(s.placeholder), openSeq: s.openSeq ?? 0, closeSeq: s.closeSeq ?? 0,
      toolUseId: s.toolUseId ?? null, taskId: s.taskId ?? null,
    });
    setStart(t, n, when(s.start));
    reparent(t, n, s.parentSpanId);
    if (s.end) close(t, n, s.state, when(s.end), s.durationMs);
    else if (s.state && s.state !== "running") close(t, n, s.state, NaN, s.durationMs);
    else open(n, t);
    n.ver += 1;
  }
  t.gen += 1;
}

/** Nodes made since the rows were derived that patchRows still places one by one. */
const PATCH_MAX = 32;

/** The rows derived: nothing fresh, nothing moved. */
function settled(t) {
  for (const n of t.made) n.fresh = false;
  t.made = [];
  t.moved = false;
}

/**
 * The rows shown: the nodes in depth-first order, children of collapsed nodes left out.
 * Each row's node gets its `depth` (the root 0) and `row` (its index), stamped `flat`.
 */
export function flatten(t, collapsed) {
  settled(t);
  const rows = [];
  const stamp = (t.flat = (t.flat ?? 0) + 1);
  const stack = [t.root];
  const depths = [0];
  while (stack.length) {
    const n = stack.pop();
    const d = depths.pop();
    n.depth = d;
    n.row = rows.length;
    n.flat = stamp;
    rows.push(n);
    if (collapsed.has(n.id)) continue;
    for (let i = n.kids.length - 1; i >= 0; i--) {
      stack.push(n.kids[i]);
      depths.push(d + 1);
    }
  }
  return rows;
}

/**
 * `rows` (what flatten gave, with the same `collapsed`) brought up to date in place, when
 * the only change in the shape since is new leaves under nodes that were there (a span
 * starts): each is put in at its place and the rows after it renumbered, instead of a walk
 * of the whole tree. Anything else (a node moved, a new node's parent new too, too many
 * new nodes): the rows derived again by flatten. Returns the rows.
 */
export function patchRows(t, rows, collapsed) {
  const stamp = t.flat;
  if (t.moved || rows[0] !== t.root || t.root.flat !== stamp || t.made.some((n) => n.parent?.fresh)) {
    return flatten(t, collapsed);
  }
  for (const n of t.made) {
    const p = n.parent;
    if (!p || p.flat !== stamp || collapsed.has(p.id)) continue; // not shown
    const at = placeOf(p, p.kids.indexOf(n), stamp, rows.length);
    rows.splice(at, 0, n);
    n.depth = p.depth + 1;
    n.flat = stamp;
    for (let i = at; i < rows.length; i++) rows[i].row = i;
  }
  settled(t);
  return rows;
}

/** The row index a new kid at `i` of shown node `p` goes to: where the next shown node is. */
function placeOf(p, i, stamp, end) {
  for (let a = p, k = i; a; k = a.parent ? a.parent.kids.indexOf(a) : -1, a = a.parent) {
    const kids = a.kids;
    for (let j = k + 1; j < kids.length; j++) if (kids[j].flat === stamp) return kids[j].row;
  }
  return end;
}

/** The node of span `id` (the root under ROOT or its span id), or undefined. */
export const nodeOf = (t, id) => get(t, id);

/** The span an event belongs to (its own, else its parent for events that open none). */
export function spanIdOf(ev) {
  return spanRole(ev)?.id ?? ev.parentSpanId ?? null;
}

/** The agent that span `id` belongs to (the nearest known), or null. */
export function agentOfSpan(t, id) {
  for (let n = get(t, id); n; n = n.parent) if (n.agent) return n.agent;
  return null;
}
