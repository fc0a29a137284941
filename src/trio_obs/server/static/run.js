// The selected run: choosing one (from the list, a link, follow mode), its WebSocket
// (resumed with since= and epoch=), its live events, and starting over when the server's
// history is reset.

import { state } from "./state.js";
import { LiveSocket, api } from "./net.js";
import { seedTree } from "./tree.js";
import { setConn } from "./token.js";
import { entryOf, noteEvent, refreshExecutions, setFollow } from "./list.js";
import { isWide, rebuildRows, runData, take } from "./model.js";
import { onPong, resetSelect, syncFilters } from "./filters.js";
import { startLoader } from "./history.js";
import { jumpTo, scrollTimelineTo, setPaused } from "./timeline.js";
import { resetPanels } from "./panels.js";
import { closeDetail } from "./detail.js";
import { showNotice } from "./notices.js";
import { $, narrow, params, setDrawer, writeUrl } from "./page.js";
import { schedule } from "./frame.js";

const TAIL = 200;
const TREE_FIRST = 2000; // a run this long gets its tree from the server first (one request)
const OPENS = new Set(["span:start", "tool:start", "skill:start"]); // events the socket replays when a run is opened; older ones come over HTTP

function newRun(id) {
  const entry = state.executions.get(id);
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

export function select(id, { user = false, seq = 0 } = {}) {
  if (user) {
    setFollow(false);
    params.set("execution", id);
    if (seq) params.set("seq", String(seq));
    else params.delete("seq");
    writeUrl();
    if (narrow.matches) setDrawer(null);
  }
  if (state.view?.id === id) {
    if (seq) jumpTo(seq);
    return;
  }
  state.view?.socket?.close();
  if (state.view) state.view.wake?.();
  const v = (state.view = newRun(id));
  v.focusSeq = seq;
  state.timeline.reset();
  state.spanList.reset();
  resetPanels();
  closeDetail();
  $("exec-title").textContent = id;
  $("timeline-empty").hidden = true;
  document.title = `${id} · trio-obs`;
  for (const s of ["type-filter", "tool-filter", "agent-filter"]) resetSelect($(s));
  setPaused(Boolean(seq));
  if (seq) scrollTimelineTo(seq);
  state.listDirty = true;
  v.dirty = true;
  rebuildRows(v);
  if (!state.authBlocked) openViewSocket(v);
  startLoader(v);
  if (v.known >= TREE_FIRST) loadTree(v);
  schedule(true);
}

export function openViewSocket(v) {
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
    onState: (s, detail) => state.view === v && setConn("view", s, detail),
    onPong: () => onPong(v),
  });
}

function onSocketEvent(v, ev) {
  if (state.view !== v) return;
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
  // An event new since the run was opened, while paused: counted on the Resume button.
  if (take(v, ev) && state.paused && ev.seq > v.notifyFrom) state.unseen += 1;
  // A span that starts is drawn in the next frame while the tree is shown (SPEC §8: 50 ms).
  schedule(OPENS.has(ev.type) && !$("spans").hidden);
}

/**
 * GET the run's span tree (CONTRACT D) into its fold: a long run's tree is on screen before
 * its events are loaded, with what only the server knows (prices). Events fold on top.
 */
export async function loadTree(v) {
  if (v.treeAsked && performance.now() - v.treeAsked < 2000) return; // at most every 2 s
  v.treeAsked = performance.now();
  try {
    const snap = await api(`/api/executions/${encodeURIComponent(v.id)}/tree`);
    if (state.view !== v || (snap.epoch !== undefined && v.epoch !== null && snap.epoch !== v.epoch)) return;
    seedTree(v.tree, snap);
    v.dirty = true;
    schedule(true);
  } catch {
    // no tree from the server: the events alone build it
  }
}

/** SPEC §10: the server's history changed under us (a new epoch): start the run over. */
function resetRun(v, msg, oldEpoch) {
  if (state.view !== v) return;
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
  state.timeline.reset();
  state.spanList.reset();
  resetPanels();
  closeDetail();
  rebuildRows(v);
  v.dirty = true;
  state.listDirty = true;
  showNotice(
    `The server's history of ${v.id} was reset (epoch ${oldEpoch ?? "–"} → ${v.epoch ?? "–"}): ` +
      `its events were discarded here and are being reloaded from the start.`,
  );
  refreshExecutions({ force: true });
  startLoader(v);
  schedule(true);
}
