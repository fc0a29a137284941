// The selected run's model: its events by seq and what is derived as each one is taken
// (tool calls, skills, tasks, waves, agents, alerts, the pass rate), and which seqs the
// filters pass (the rows of a filtered timeline).

import { state } from "./state.js";
import { TOPICS, isAlert, isErr, topicOf } from "./events.js";
import { notifyAction } from "./notices.js";
import { stripAnsi } from "./ansi.js";
import { lowerBound } from "./dom.js";
import { agentOfSpan, foldEvent, newTree, spanIdOf } from "./tree.js";

const BG_CAP = 100_000; // events loaded in the background; more only as scrolled to
export const MISSING = Object.freeze({ missing: true }); // a seq the store does not have

/** A run's loaded data: what a history reset (run.js: resetRun) starts over. */
export function runData() {
  return {
    ev: [], // ev[seq]: the event, MISSING, or undefined (not loaded)
    ver: [], // ver[seq]: bumped when the row of seq must be redrawn
    txt: [], // txt[seq]: lower-case search text, made when first searched
    loaded: 0, missing: 0,
    known: 0, // highest seq known to exist: the unfiltered timeline shows 1…known
    ceil: 0, // highest seq the HTTP loader may fetch (above it the socket brings them)
    wsSeq: 0, wsDupes: 0, maxTaken: 0, firstLoaded: Infinity,
    tools: new Map(), skills: new Map(), tasks: new Map(), taskAgent: new Map(),
    waves: new Map(), agents: new Map(),
    alerts: [], actions: [], // seqs, ascending
    types: new Set(), toolNames: new Set(), agentIds: new Set(),
    pass: null, passSeq: 0, execStatus: null, execStatusSeq: 0,
    t0: Infinity, t1: -Infinity,
    tree: newTree(), // the span tree (tree.js), folded from every event taken
    rows: null, rowsStale: false, // the filtered timeline: seqs, ascending (null: unfiltered)
    fills: [], needStart: new Set(), visible: [1, 0], scrollDown: false,
    bgCap: BG_CAP, wake: null, fullKey: null, full: false,
  };
}

export const bump = (v, s) => {
  if (s) v.ver[s] = (v.ver[s] | 0) + 1;
};

export function toolRec(v, id) {
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
export function taskOf(v, ev) {
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

/** The agent an event belongs to: its own field, its span's, else its task's. */
export function agentOf(v, ev) {
  if (ev.agent) return ev.agent;
  if (ev.type === "agent:heartbeat") return ev.instanceId;
  if (ev.type === "transcript:entry" && ev.entry?.instanceId) return ev.entry.instanceId;
  const sid = spanIdOf(ev);
  const a = sid ? agentOfSpan(v.tree, sid) : null;
  if (a) return a;
  const task = taskOf(v, ev);
  return task ? v.taskAgent.get(task) : undefined;
}

/** Take one stored event (live, replayed or fetched) into run `v`, once. */
export function take(v, ev) {
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

export function markMissing(v, s) {
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
  if (ev.agent && !v.agentIds.has(ev.agent)) v.agentIds.add(ev.agent);
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
  foldEvent(v.tree, ev, (id) => v.taskAgent.get(id));
  if (isAlert(ev)) {
    insertSorted(v.alerts, s);
    if (ev.requiresAction === true) {
      insertSorted(v.actions, s);
      if (s > v.notifyFrom) notifyAction(v, ev);
    }
  }
}

// Which events the filters pass (filters.js has the controls).

export const isWide = () => state.filter.topics.size === TOPICS.length && !state.filter.task;
const isFiltered = () => {
  const f = state.filter;
  return !isWide() || f.q !== "" || f.errors || f.type !== "" || f.tool !== "" || f.agent !== "";
};

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
  const f = state.filter;
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

export function rebuildRows(v) {
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
