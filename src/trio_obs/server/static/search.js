// Search across runs (SPEC §14): the box in the top bar asks GET /api/search and lists the
// hits under it, newest first, each with the text around the match; choosing one opens the
// event in its run. "More" pages on with before=. Hit text reaches the DOM as text only: the
// server's <mark> spans are split out and made <mark> elements, never parsed as markup.

import { state } from "./state.js";
import { authRequired } from "./token.js";
import { $ } from "./page.js";
import { clock, el } from "./dom.js";

const PAGE = 50;
const OPEN = "<mark>";
const CLOSE = "</mark>";

let openRun = null; // run.js: select(), given to initSearch
let asked = null; // the query of the hits shown: { q, next }
let generation = 0; // answers to an older query are dropped

/** A snippet as nodes: text, and each match in a <mark> element. */
export function snippetNodes(snippet) {
  const out = [];
  let rest = snippet;
  for (let start = rest.indexOf(OPEN); start >= 0; start = rest.indexOf(OPEN)) {
    const end = rest.indexOf(CLOSE, start);
    if (end < 0) break;
    if (start) out.push(rest.slice(0, start));
    out.push(el("mark", "", rest.slice(start + OPEN.length, end)));
    rest = rest.slice(end + CLOSE.length);
  }
  if (rest) out.push(rest);
  return out;
}

async function ask(q, before) {
  const query = new URLSearchParams({ q, limit: String(PAGE) });
  if (before) query.set("before", String(before));
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const res = await fetch(`/api/search?${query}`, { headers, cache: "no-store" });
  if (res.status === 401) authRequired();
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error ?? `the server answered HTTP ${res.status}`);
  return body;
}

function hitItem(hit) {
  const li = el("li", "hit");
  const button = el(
    "button", "hit-open",
    el("span", "hit-where", `${hit.executionId} #${hit.seq}`),
    el("span", "hit-type muted", hit.type),
    el("span", "hit-time muted", clock(hit.timestamp)),
    el("span", "hit-text", ...snippetNodes(hit.snippet.replace(/\s+/g, " "))),
  );
  button.type = "button";
  button.dataset.testid = "hit";
  button.dataset.executionId = hit.executionId;
  button.dataset.seq = String(hit.seq);
  li.append(button);
  return li;
}

function show(result, { append }) {
  const list = $("found-list");
  if (!append) list.replaceChildren();
  list.append(...result.hits.map(hitItem));
  const count = list.childElementCount;
  $("found-count").textContent = count
    ? `${count}${result.next ? "+" : ""} hit${count === 1 && !result.next ? "" : "s"}, newest first`
    : "Nothing matches.";
  $("found-note").hidden = result.complete;
  $("found-note").textContent = result.note ?? "";
  $("found-more").hidden = !result.next;
  open();
}

/** Show the results just under the top bar (whose height depends on the screen's width). */
function open() {
  const found = $("found");
  found.style.top = `${document.querySelector(".topbar").getBoundingClientRect().bottom + 4}px`;
  found.hidden = false;
}

function showError(message) {
  $("found-list").replaceChildren();
  $("found-count").textContent = message;
  $("found-note").hidden = true;
  $("found-more").hidden = true;
  open();
}

async function run(q, before) {
  const mine = ++generation;
  try {
    const result = await ask(q, before);
    if (mine !== generation) return;
    asked = { q, next: result.next };
    show(result, { append: Boolean(before) });
  } catch (err) {
    if (mine === generation) showError(err.message);
  }
}

export function closeSearch() {
  $("found").hidden = true;
}

export function initSearch(select) {
  openRun = select;
  $("find").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("find-q").value.trim();
    if (q) run(q, null);
    else closeSearch();
  });
  $("found-more").addEventListener("click", () => {
    if (asked?.next) run(asked.q, asked.next);
  });
  $("found-close").addEventListener("click", closeSearch);
  $("found-list").addEventListener("click", (e) => {
    const button = e.target.closest("button.hit-open");
    if (!button) return;
    closeSearch();
    openRun(button.dataset.executionId, { user: true, seq: Number(button.dataset.seq) });
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("found").hidden) closeSearch();
  });
}
