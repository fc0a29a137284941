// The summary and side panels of the selected run: its status, counts and pass rate, the
// waves, the load note, the agents and the alerts.

import { state } from "./state.js";
import { topicOf } from "./events.js";
import { fullyLoaded } from "./history.js";
import { metricsText, progress } from "./rows.js";
import { $ } from "./page.js";
import { ago, badge, clock, el, fmt, pct, setClass, setText, text, textOf } from "./dom.js";

const AGENTS_SHOWN = 50; // agent items in the DOM
const ALERTS_SHOWN = 100; // alert items in the DOM (the count covers them all)

const panelNodes = { waves: new Map(), agents: new Map(), alerts: new Map() };

export function renderSummary(v) {
  const e = state.executions.get(v.id);
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

export function renderAgents(v) {
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

export function renderAlerts(v) {
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

/** Empty the panels (another run, or the history was reset). */
export function resetPanels() {
  for (const k of ["alerts", "agents", "waves"]) $(k).replaceChildren();
  panelNodes.waves.clear();
  panelNodes.agents.clear();
  panelNodes.alerts.clear();
}
