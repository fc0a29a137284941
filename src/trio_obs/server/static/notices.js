// What the page tells the user beside the panels: the toast, the ⚠ button and the count in
// the tab's title for events that need action; notices (a reset history, a failed export).

import { state } from "./state.js";
import { $, narrow } from "./page.js";
import { fmt, setText, textOf } from "./dom.js";

export function showNotice(message) {
  $("notice-text").textContent = message;
  $("notice").hidden = false;
}

let toastSeq = 0;
let toastTimer = null;

export function notifyAction(v, ev) {
  if (v !== state.view) return;
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
export function renderNotify(v) {
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

/** The ⚠ button, the toast's and the notice's buttons; `jumpTo` shows an event. */
export function initNotices(jumpTo) {
  $("notify").addEventListener("click", () => {
    const a = state.view?.actions;
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
}
