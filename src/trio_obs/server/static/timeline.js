// The timeline: a virtual list over seqs 1…N (or the filtered rows), its scrolling and
// pausing, keeping the row in view across a rebuild, and jumping to one event.

import { state } from "./state.js";
import { VirtualList } from "./virtual.js";
import { MISSING } from "./model.js";
import { kick } from "./history.js";
import { fillRow } from "./rows.js";
import { closeDetail, openDetail } from "./detail.js";
import { showTab } from "./treeview.js";
import { $ } from "./page.js";
import { schedule } from "./frame.js";
import { fmt, lowerBound } from "./dom.js";

const ROW_H = 24; // px, one timeline row (style.css: .vlist .row)

export const timelineSource = {
  count: () => (state.view ? (state.view.rows ? state.view.rows.length : state.view.known) : 0),
  key: (i) => (state.view.rows ? state.view.rows[i] : i + 1),
  version: (s) => ((state.view.ver[s] | 0) << 1) | (s === state.view.selected ? 1 : 0),
  fill: (node, s) => fillRow(state.view, node, s),
};

function onTimelineRange(first, last) {
  const v = state.view;
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

export function setPaused(on) {
  state.paused = on;
  state.unseen = 0;
  const b = $("pause");
  b.textContent = state.paused ? "Resume scroll" : "Pause scroll";
  b.setAttribute("aria-pressed", String(state.paused));
  if (!state.paused) schedule(true);
}

let lastUserInput = 0;
let lastTop = 0;

function onTimelineScroll() {
  const sc = $("timeline");
  const top = sc.scrollTop;
  const user = performance.now() - lastUserInput < 800;
  if (user) {
    if (top < lastTop - 2 && !state.paused) setPaused(true);
    else if (state.paused && top > lastTop && state.timeline.atEnd()) setPaused(false);
  }
  lastTop = top;
  schedule(true);
}

/** The seq at the top of the view and its offset, to keep it in place across a rebuild. */
export function anchorSeq(v) {
  if (!state.paused) return null;
  if (v.selected && isShown(v, v.selected)) return { seq: v.selected, center: true };
  const i = state.timeline.firstVisible();
  const s = v.rows ? v.rows[i] : i + 1;
  return s ? { seq: s, offset: state.timeline.top - i * ROW_H } : null;
}

export function restoreAnchor(v, a) {
  if (!a) return;
  const i = indexOfSeq(v, a.seq);
  if (i < 0) return;
  if (a.center) state.timeline.scrollToIndex(i, "center");
  else state.timeline.setTop(i * ROW_H + a.offset);
}

function indexOfSeq(v, s) {
  if (!v.rows) return s >= 1 && s <= v.known ? s - 1 : -1;
  const i = lowerBound(v.rows, s);
  return v.rows[i] === s ? i : -1;
}

const isShown = (v, s) => indexOfSeq(v, s) >= 0;

export function scrollTimelineTo(s) {
  const v = state.view;
  const i = indexOfSeq(v, s);
  if (i >= 0) state.timeline.scrollToIndex(i, "center");
}

/** Show event `s`: scroll to it (loading it if needed) and open it in the detail pane. */
export function jumpTo(s) {
  const v = state.view;
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

export function settleFocus(v) {
  const s = v.focusSeq;
  if (!s) return;
  if (s > v.known) return; // not known yet: the listing or the socket will tell
  const i = indexOfSeq(v, s);
  if (i >= 0) state.timeline.scrollToIndex(i, "center");
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

/** In a frame: the rows in view (kept at the end unless paused), then a pending jump. */
export function renderTimeline(v) {
  state.timeline.render(!state.paused);
  settleFocus(v);
  const active = v.selected && $(`ev-${v.selected}`) ? `ev-${v.selected}` : "";
  const tl = $("timeline");
  if ((tl.getAttribute("aria-activedescendant") ?? "") !== active) {
    if (active) tl.setAttribute("aria-activedescendant", active);
    else tl.removeAttribute("aria-activedescendant");
  }
  if (state.paused) {
    const b = $("pause");
    const label = state.unseen ? `Resume scroll (${fmt(state.unseen)} new)` : "Resume scroll";
    if (b.textContent !== label) b.textContent = label;
  }
}

/** The timeline's list, and its scrolling, clicks and keys. */
export function initTimeline() {
  const tl = $("timeline");
  state.timeline = new VirtualList(tl, ROW_H, timelineSource, { onRange: onTimelineRange });
  tl.addEventListener("scroll", onTimelineScroll, { passive: true });
  for (const t of ["wheel", "touchstart", "touchmove", "pointerdown", "keydown"]) {
    tl.addEventListener(t, () => {
      lastUserInput = performance.now();
    }, { passive: true });
  }
  state.timeline.sizer.addEventListener("click", (e) => {
    const row = e.target.closest(".row");
    const s = Number(row?.dataset.seq);
    if (!state.view || !s || !state.view.ev[s] || state.view.ev[s] === MISSING) return;
    setPaused(true); // the chosen row stays where it is while the stream goes on
    openDetail(state.view, s);
  });
  tl.addEventListener("keydown", (e) => {
    const v = state.view;
    if (!v || !["ArrowDown", "ArrowUp", "Enter", "Escape"].includes(e.key)) return;
    e.preventDefault();
    if (e.key === "Escape") return closeDetail();
    const n = timelineSource.count();
    let i = v.selected ? indexOfSeq(v, v.selected) : state.timeline.firstVisible();
    if (e.key === "ArrowDown") i = Math.min(n - 1, i + 1);
    else if (e.key === "ArrowUp") i = Math.max(0, i - 1);
    const s = timelineSource.key(i);
    setPaused(true);
    state.timeline.scrollToIndex(i, "nearest");
    if (v.ev[s] && v.ev[s] !== MISSING) openDetail(v, s);
  });
  $("pause").addEventListener("click", () => setPaused(!state.paused));
  $("to-start").addEventListener("click", () => {
    setPaused(true);
    showTab("timeline");
    state.timeline.setTop(0);
    schedule(true);
  });
}
