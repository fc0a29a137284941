// The tree view: the run's spans (tree.js) as a waterfall, a virtual list of treeitems on one
// time axis. Running bars and their elapsed time grow live; the row under the pointer (or
// the focused one) holds its place on screen while spans arrive; nodes fold and unfold;
// the keyboard walks it as an ARIA tree. The tabs between it and the timeline live here.

import { state } from "./state.js";
import { VirtualList } from "./virtual.js";
import { ROOT, flatten, nodeOf, patchRows } from "./tree.js";
import { closeDetail, openDetail } from "./detail.js";
import { loadTree } from "./run.js";
import { $, params, writeUrl } from "./page.js";
import { schedule } from "./frame.js";
import { el, fmt, ms, setClass, setText, textOf } from "./dom.js";

const ROW_H = 26; // px (style.css: .vlist .row.span)
const GROW_MS = 100; // running bars are redrawn at most this often

const view = {
  rows: [], gen: -1, tree: null,
  collapsed: new Set(), focusId: null, hoverId: null, t0: 0, t1: 1, paintedAt: 0,
  growTimer: null, // the next frame that grows the running bars
};

const source = {
  count: () => view.rows.length,
  key: (i) => view.rows[i].id,
  version: (id) => {
    const n = nodeOf(view.tree, id);
    const named = n === view.tree.root ? label(n) : "";
    return `${n.ver}:${n.kids.length}:${view.collapsed.has(id)}:${id === view.focusId}:${isSel(n)}:${named}`;
  },
  fill: (node, id, i) => fillRow(node, view.rows[i]),
};

/** The row index of span `id` in the rows shown, or undefined. */
function indexOf(id) {
  if (id === null || id === undefined || !view.tree) return undefined;
  const n = nodeOf(view.tree, id);
  return n && n.flat === view.tree.flat ? n.row : undefined;
}

const isSel = (n) => {
  const s = state.view?.selected;
  return Boolean(s) && (s === n.openSeq || s === n.closeSeq);
};

function label(n) {
  if (n.id === ROOT || n === view.tree?.root) {
    // The root is the execution: named as the run list names it (its outermost agent).
    const e = state.executions.get(state.view?.id);
    return e?.name || n.agent || n.name || `execution ${state.view?.id ?? ""}`;
  }
  return n.name || n.id;
}

function stateOf(n) {
  if (n.slow && n.end === null) return "slow";
  return n.state;
}

/**
 * The row's parts, made once per row and then changed in place: an element under the pointer
 * stays the same one while the row is filled again (a press on the twisty that spans a redraw
 * is still the twisty's click).
 */
function partsOf(node) {
  if (!node._parts) {
    const twisty = el("span", "twisty");
    twisty.setAttribute("aria-hidden", "true");
    const kind = el("span", "kicon");
    const name = el("span", "sname");
    const label = el("span", "slabel", twisty, kind, name);
    const bar = el("span", "sbar");
    const dur = el("span", "sdur");
    const state = el("span", "sstate");
    node.replaceChildren(label, el("span", "strack", bar), dur, state);
    node._parts = { twisty, kind, name, label, bar, dur, state };
  }
  return node._parts;
}

function fillRow(node, n) {
  const d = n.depth ?? 0;
  const st = stateOf(n);
  node.className = `row span k-${n.kind}${isSel(n) ? " sel" : ""}${n.placeholder ? " ph" : ""}`;
  node.dataset.testid = "span-row";
  node.dataset.kind = n === view.tree.root ? "execution" : n.kind;
  node.dataset.spanId = n.id;
  node.dataset.state = st;
  node.dataset.seq = String(n.openSeq || n.closeSeq || "");
  node.setAttribute("role", "treeitem");
  node.setAttribute("aria-level", String(d + 1));
  node.setAttribute("aria-selected", String(isSel(n)));
  if (n.kids.length) node.setAttribute("aria-expanded", String(!view.collapsed.has(n.id)));
  else node.removeAttribute("aria-expanded");
  node.tabIndex = n.id === (view.focusId ?? view.rows[0]?.id) ? 0 : -1;
  const p = partsOf(node);
  setText(textOf(p.twisty), n.kids.length ? (view.collapsed.has(n.id) ? "▸" : "▾") : "");
  setText(textOf(p.kind), n === view.tree.root ? "run" : n.kind);
  setText(textOf(p.name), label(n));
  const meta = [];
  // The agent, where the nesting does not already say it.
  if (n.agent && n.kind !== "agent" && n.agent !== n.parent?.agent && n.parent?.kind !== "agent") {
    meta.push(el("span", "sagent", n.agent));
  }
  if (n.kind === "llm") {
    if (n.model && !label(n).includes(n.model)) meta.push(el("span", "muted", n.model));
    const u = n.usage;
    if (u) meta.push(el("span", "muted", `${fmt(u.inputTokens ?? 0)}→${fmt(u.outputTokens ?? 0)} tok`));
  }
  if (n.collapsedCount) meta.push(el("span", "muted", `+${fmt(n.collapsedCount)}`));
  while (p.name.nextSibling) p.name.nextSibling.remove();
  p.label.append(...meta);
  p.label.style.paddingLeft = `${Math.min(d, 12) * 12}px`;
  setClass(p.state, `sstate s-${st}`);
  setText(textOf(p.state), st);
  node._n = n;
  paintBar(node, n, Date.now());
  node.title = `${n.kind} ${label(n)}${n.agent ? ` (agent ${n.agent})` : ""}: ${st}`;
}

/** A fraction as a percentage, in steps of 0.05. */
const percent = (f) => Math.round(f * 2000) / 20;

function paintBar(node, n, now) {
  const { t0, t1 } = view;
  const span = Math.max(1, t1 - t0);
  const open = n.end === null && n.state === "running";
  const start = Number.isFinite(n.start) ? n.start : t0;
  const end = open ? Math.max(start, Math.min(now, t1)) : n.end ?? start;
  const { bar, dur } = node._parts;
  const cls = `sbar s-${stateOf(n)}${open ? " open" : ""}`;
  if (bar.className !== cls) bar.className = cls;
  // In steps of 0.05% of the track (under a pixel on a wide screen): a bar that grows by
  // less than that is not laid out and painted again.
  const left = `${percent((start - t0) / span)}%`;
  const width = `${Math.max(0.2, percent((end - start) / span))}%`;
  if (bar._left !== left) bar.style.left = bar._left = left;
  if (bar._width !== width) bar.style.width = bar._width = width;
  const d = open ? now - start : Number.isFinite(n.dur) ? n.dur : end - start;
  const txt = Number.isFinite(d) ? (open ? `${ms(Math.max(0, d))}…` : ms(d)) : "";
  if (dur.textContent !== txt) dur.textContent = txt;
}

/**
 * The time axis. While spans run it reaches past now by a margin, so that it is rescaled
 * (every bar redrawn) only when now gets there, not in every frame; only running bars grow.
 */
function scale(t, now) {
  const t0 = Number.isFinite(t.t0) ? t.t0 : now;
  const last = Number.isFinite(t.t1) ? t.t1 : t0 + 1;
  if (t.running > 0 || t.root.end === null) {
    const want = Math.max(last, now);
    if (view.t0 !== t0 || want > view.t1 || view.t1 - want > 0.3 * (want - t0)) {
      view.t1 = want + 0.1 * (want - t0) + 1000;
    }
  } else view.t1 = Math.max(last, t0 + 1);
  view.t0 = t0;
}

/**
 * Bring the rows up to date, keeping the row under the pointer (or focused) where it is on
 * screen. New spans are put in at their place (patchRows); a fold or any other change of
 * shape (view.gen -1) derives them again.
 */
function rebuild(t) {
  const sc = $("spans");
  const list = state.spanList;
  // Read from the list, not the browser: no layout forced in the middle of the frame.
  const scrolled = list.top;
  const anchorId = view.hoverId ?? (sc.contains(document.activeElement) ? view.focusId : null) ??
    (scrolled > 0 ? view.rows[Math.floor(scrolled / ROW_H)]?.id : null);
  const before = anchorId !== null && indexOf(anchorId) !== undefined
    ? indexOf(anchorId) * ROW_H - scrolled : null;
  const rows = view.gen === -1 ? flatten(t, view.collapsed) : patchRows(t, view.rows, view.collapsed);
  view.rows = rows;
  view.gen = t.gen;
  list.slack = 0;
  if (before !== null && indexOf(anchorId) !== undefined) {
    const top = Math.max(0, indexOf(anchorId) * ROW_H - before);
    // Blank space below the rows if need be, so that the anchor can stay where it is.
    const vh = list.vh || sc.clientHeight;
    if (top + vh > rows.length * ROW_H) list.slack = top + vh - rows.length * ROW_H;
    list.render();
    list.setTop(top);
  }
}

/** In a frame while the tree is shown: new rows at once, running bars every GROW_MS. */
export function renderTree(v) {
  const t = v.tree;
  const now = Date.now();
  if (view.tree !== t) {
    view.tree = t;
    view.gen = -1;
    view.collapsed.clear();
    view.focusId = null;
    state.spanList.reset();
  }
  askCost(v);
  const changed = view.gen !== t.gen;
  if (changed) rebuild(t);
  scale(t, now);
  state.spanList.render();
  const rescaled = view.t0 !== view.paintedT0 || view.t1 !== view.paintedT1;
  if (changed || rescaled || now - view.paintedAt >= GROW_MS) {
    view.paintedAt = now;
    view.paintedT0 = view.t0;
    view.paintedT1 = view.t1;
    for (const node of state.spanList.nodes.values()) {
      const n = node._n;
      if (n && (changed || rescaled || n.end === null || node._painted !== n.ver)) {
        paintBar(node, n, now);
        node._painted = n.ver;
      }
    }
  }
  if ((t.running > 0 || t.root.end === null) && view.growTimer === null) {
    view.growTimer = setTimeout(() => {
      view.growTimer = null;
      schedule();
    }, GROW_MS);
  }
}

export function showTab(which) {
  const tree = which === "spans";
  $("timeline").hidden = tree;
  $("spans").hidden = !tree;
  $("tab-timeline").setAttribute("aria-selected", String(!tree));
  $("tab-spans").setAttribute("aria-selected", String(tree));
  document.body.classList.toggle("tree-view", tree); // the timeline's filters step aside
  if (tree) params.set("view", "tree");
  else params.delete("view");
  writeUrl();
  schedule(true);
}

/** Open a span in the detail pane: a tool call at its start, another span at its end. */
export function openSpan(v, n) {
  const first = n.kind === "tool" || n.kind === "skill" ? [n.openSeq, n.closeSeq] : [n.closeSeq, n.openSeq];
  const s = first.find((x) => x && v.ev[x] && v.ev[x].type);
  if (s) openDetail(v, s);
}

/** A model call's cost is the server's (its price table): asked once when it is opened. */
function askCost(v) {
  const ev = v.selected ? v.ev[v.selected] : null;
  if (!ev || !ev.type?.startsWith("span:")) return;
  const n = v.tree.nodes.get(ev.spanId);
  if (n && n.kind === "llm" && n.end !== null && n.cost === null && !n.costAsked) {
    n.costAsked = true;
    loadTree(v);
  }
}

function toggle(id) {
  if (view.collapsed.has(id)) view.collapsed.delete(id);
  else view.collapsed.add(id);
  view.gen = -1; // rebuild with this row as the anchor
  schedule(true);
}

function focusRow(i) {
  const n = view.rows[Math.max(0, Math.min(view.rows.length - 1, i))];
  if (!n) return;
  view.focusId = n.id;
  state.spanList.scrollToIndex(indexOf(n.id), "nearest");
  if (view.gen !== view.tree.gen) rebuild(view.tree);
  state.spanList.render();
  for (const node of state.spanList.nodes.values()) {
    node.tabIndex = node._n === n ? 0 : -1;
  }
  state.spanList.nodes.get(n.id)?.focus({ preventScroll: true });
}

function onKey(e) {
  const v = state.view;
  if (!v || !view.rows.length) return;
  const cur = indexOf(view.focusId) ?? 0;
  const n = view.rows[cur];
  let next = null;
  switch (e.key) {
    case "ArrowDown": next = cur + 1; break;
    case "ArrowUp": next = cur - 1; break;
    case "Home": next = 0; break;
    case "End": next = view.rows.length - 1; break;
    case "PageDown": next = cur + state.spanList.pageRows(); break;
    case "PageUp": next = cur - state.spanList.pageRows(); break;
    case "ArrowRight":
      if (n.kids.length && view.collapsed.has(n.id)) toggle(n.id);
      else if (n.kids.length) next = cur + 1;
      break;
    case "ArrowLeft":
      if (n.kids.length && !view.collapsed.has(n.id)) toggle(n.id);
      else if (n.parent) next = indexOf(n.parent.id) ?? cur;
      break;
    case "Enter":
      openSpan(v, n);
      break;
    case " ":
      if (n.kids.length) toggle(n.id);
      break;
    case "Escape":
      closeDetail();
      break;
    default:
      return;
  }
  e.preventDefault();
  if (next !== null) focusRow(next);
}

/** The tree's list, its pointer, taps and keys, and the two tabs. */
export function initTreeView() {
  const sc = $("spans");
  sc.setAttribute("role", "tree");
  sc.setAttribute("aria-label", "Spans of this run");
  state.spanList = new VirtualList(sc, ROW_H, source);
  sc.addEventListener("click", (e) => {
    const row = e.target.closest(".row");
    const n = row?._n;
    if (!n || !state.view) return;
    view.focusId = n.id;
    if (e.target.closest(".twisty") && n.kids.length) toggle(n.id);
    else openSpan(state.view, n);
  });
  sc.addEventListener("pointermove", (e) => {
    if (e.pointerType === "touch") return;
    view.hoverId = e.target.closest(".row")?._n?.id ?? null;
  }, { passive: true });
  sc.addEventListener("pointerleave", () => {
    view.hoverId = null;
  });
  sc.addEventListener("focusin", (e) => {
    const n = e.target.closest?.(".row")?._n;
    if (n) view.focusId = n.id;
  });
  sc.addEventListener("keydown", onKey);
  sc.addEventListener("scroll", () => schedule(true), { passive: true });
  $("tab-timeline").addEventListener("click", () => showTab("timeline"));
  $("tab-spans").addEventListener("click", () => showTab("spans"));
}

/** The tree's test hook: its rows as ids, depth and state. */
export function treeStats() {
  return {
    rows: view.rows.length, spans: view.tree?.count ?? 0, running: view.tree?.running ?? 0,
    gen: view.tree?.gen ?? 0,
  };
}
