// trio-obs live viewer. Plain ES modules, no dependencies, works offline. This module wires
// the parts together, says what each animation frame draws, and starts the page.
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
//
// The modules: state (shared mutable state), page (lookup, URL, drawers), frame (schedule),
// token, net (HTTP, LiveSocket), list (execution list), run (the selected run), model (its
// events and what is derived), filters, history (loading pages), rows, timeline, treeview,
// panels, notices, detail, export, search (across runs), runfilter (the list's agent and
// errors filters), alerts (the watchdog's); helpers: events, dom, ansi, virtual; the tree:
// tree (the fold), treeview, chat.

import { state } from "./state.js";
import { $, initDrawers, params } from "./page.js";
import { onFrame, schedule } from "./frame.js";
import { initToken, initTokenForm, setConn } from "./token.js";
import { LiveSocket, sleep } from "./net.js";
import {
  initList, mergeListing, noteEvent, probe, refreshExecutions, renderList, setFollow,
  sortedEntries,
} from "./list.js";
import { openViewSocket, select } from "./run.js";
import { MISSING, rebuildRows } from "./model.js";
import { buildFilters, syncSelects } from "./filters.js";
import { fullyLoaded, kick } from "./history.js";
import {
  anchorSeq, initTimeline, jumpTo, renderTimeline, restoreAnchor, settleFocus, timelineSource,
} from "./timeline.js";
import { initTreeView, renderTree, showTab, treeStats } from "./treeview.js";
import { renderAgents, renderAlerts, renderSummary } from "./panels.js";
import { initNotices, renderNotify } from "./notices.js";
import { initDetail, refreshDetail } from "./detail.js";
import { initSearch } from "./search.js";
import { initRunFilter } from "./runfilter.js";
import { config, exportRun } from "./export.js";
import { ago, setText } from "./dom.js";
import { initWatch, noteWatch } from "./alerts.js";

const REFRESH_MS = 10_000; // periodic refetch of the execution list
const authWaiters = []; // firstListing() calls waiting for a token to be entered

// ---------------------------------------------------------------- the frame

function frame() {
  const v = state.view;
  if (state.listDirty) renderList();
  if (!v) return;
  if (v.rowsStale) {
    const anchor = anchorSeq(v);
    rebuildRows(v);
    restoreAnchor(v, anchor);
  }
  if (!$("timeline").hidden) renderTimeline(v);
  else {
    renderTree(v);
    settleFocus(v); // a link's ?seq= opens its event here too
  }
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

onFrame(frame);

// ---------------------------------------------------------------- start

function openAllSocket() {
  if (state.allSocket || state.authBlocked) return;
  // The "all" stream keeps the execution list and its counters live; a refetch after every
  // (re)connect and every 10 s corrects whatever the stream could not tell.
  state.allSocket = new LiveSocket("all", {
    since: () => null,
    onEvent: (ev) => { noteEvent(ev); noteWatch(ev); },
    onConnected: () => refreshExecutions(),
    onReset: () => refreshExecutions({ force: true }),
    onState: (s, detail) => setConn("all", s, detail),
  });
}

/** A token was entered in the form: try it, and on success open what it was needed for. */
function onTokenAccepted() {
  probe().then((list) => {
    if (list === null) return; // refused again: authRequired() showed the form
    mergeListing(list);
    for (const w of authWaiters.splice(0)) w(list);
    openAllSocket();
    if (state.view && !state.view.socket) openViewSocket(state.view);
  });
}

/** The execution list, once the server answers it (after a token is entered if needed). */
async function firstListing() {
  for (let delay = 500; ; delay = Math.min(delay * 2, 5000)) {
    const list = await probe();
    if (list !== null) return list;
    if (state.authBlocked) return new Promise((resolve) => authWaiters.push(resolve));
    setConn("all", "reconnecting", "the server does not answer");
    await sleep(delay);
  }
}

function initUi() {
  buildFilters();
  initList(select);
  initRunFilter();
  initSearch(select);
  initTimeline();
  initTreeView();
  initWatch();
  if (params.get("view") === "tree") showTab("spans");
  new ResizeObserver(() => schedule(true)).observe($("timeline"));
  $("export").addEventListener("click", () => exportRun());
  $("load-all").addEventListener("click", () => {
    if (!state.view) return;
    state.view.bgCap = Infinity;
    kick(state.view);
  });
  initDetail(jumpTo);
  $("alerts").addEventListener("click", (e) => {
    const s = Number(e.target.closest("li")?.dataset.seq);
    if (s) jumpTo(s);
  });
  $("alerts").addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    const s = Number(e.target.closest("li")?.dataset.seq);
    if (s) jumpTo(s);
  });
  initNotices(jumpTo);
  initTokenForm(onTokenAccepted);
  initDrawers();
  document.addEventListener("visibilitychange", () => schedule(true));
  setInterval(() => {
    for (const e of state.executions.values()) {
      if (e.li) setText(e.tAge, e.lastTimestamp ? ago(e.lastTimestamp) : "");
    }
    if (state.view) renderAgents(state.view);
  }, 1000);
}

async function start() {
  initToken();
  initUi();
  const preset = params.get("execution");
  setFollow(!preset);
  const list = await firstListing();
  mergeListing(list);
  state.listReady = true;
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

// The test hook.
window.__trioObs = {
  config,
  lastSeq: (executionId) => (state.view && state.view.id === executionId ? state.view.wsSeq : 0),
  eventCount: () => (state.view ? state.view.loaded : 0),
  // Filter messages of the open execution not yet acknowledged (0: the server applies them).
  pendingAcks: () => (state.view?.socket ? state.view.socket.unacked : 0),
  selected: () => state.view?.id ?? null,
  tree: () => treeStats(),
  seqs: () => {
    const out = [];
    const v = state.view;
    if (v) for (let s = 1; s < v.ev.length; s++) if (v.ev[s] && v.ev[s] !== MISSING) out.push(s);
    return out;
  },
  stats: () => {
    const v = state.view;
    return {
      id: v?.id ?? null, loaded: v?.loaded ?? 0, known: v?.known ?? 0,
      wsSeq: v?.wsSeq ?? 0, wsDuplicates: v?.wsDupes ?? 0, epoch: v?.epoch ?? null,
      fullyLoaded: v ? fullyLoaded(v) : false, rows: timelineSource.count(),
      alerts: v?.alerts.length ?? 0, domNodes: document.getElementsByTagName("*").length,
      follow: state.follow, paused: state.paused, closes: v?.socket?.closes ?? [],
      allCloses: state.allSocket?.closes ?? [],
    };
  },
};

start();
