// Loading a run's history over HTTP: one loader per run fetches, in order of need, the rows
// in view, the starts of tool calls in view, what the server skipped while narrowed, then
// the past (up to the run's bgCap).

import { state } from "./state.js";
import { HttpStatusError, api, eventsPath, sleep } from "./net.js";
import { noteEvent } from "./list.js";
import { markMissing, take } from "./model.js";
import { schedule } from "./frame.js";

const FG_PAGE = 1000; // events fetched for rows that scroll into view
const BG_PAGE = 5000; // events per background page

const alive = (v, gen) => state.view === v && v.gen === gen;

export function startLoader(v) {
  const gen = v.gen;
  loader(v, gen).catch((err) => console.warn("trio-obs: history loader stopped:", err));
}

export function kick(v) {
  const w = v.wake;
  v.wake = null;
  w?.();
}

async function loader(v, gen) {
  let failures = 0;
  while (alive(v, gen)) {
    const job = nextJob(v);
    if (!job) {
      await new Promise((resolve) => {
        v.wake = resolve;
      });
      continue;
    }
    let page;
    try {
      page = await api(eventsPath(v.id, job.since, job.limit));
    } catch (err) {
      if (err instanceof HttpStatusError && err.status === 401) return;
      failures += 1;
      await sleep(Math.min(500 * 2 ** failures, 5000));
      continue;
    }
    failures = 0;
    if (!alive(v, gen)) return;
    applyPage(v, job, page);
  }
}

function applyPage(v, job, page) {
  let expect = job.since + 1;
  let last = job.since;
  for (const ev of page) {
    if (typeof ev?.seq !== "number") continue;
    for (; expect < ev.seq && expect <= v.ceil; expect++) markMissing(v, expect);
    expect = ev.seq + 1;
    last = ev.seq;
    noteEvent(ev);
    take(v, ev);
  }
  const short = page.length < job.limit;
  if (short) {
    const upTo = Math.min(job.since + job.limit, v.ceil);
    for (; expect <= upTo; expect++) markMissing(v, expect);
  }
  if (job.fill) {
    v.ceil = Math.max(v.ceil, last);
    if (short) v.fills.shift();
    else job.fill.from = last;
  }
  v.dirty = true;
  schedule();
}

/** The next page to fetch: rows in view first, then tool starts, gaps, then the past. */
function nextJob(v) {
  if (v.rows === null) {
    const [a, b] = v.visible;
    const top = Math.min(b, v.ceil);
    let lo = 0;
    let hi = 0;
    for (let s = Math.max(1, a); s <= top; s++) {
      if (v.ev[s] === undefined) {
        if (!lo) lo = s;
        hi = s;
      }
    }
    if (lo) {
      if (v.scrollDown) return { since: lo - 1, limit: Math.min(FG_PAGE, v.ceil - lo + 1) };
      const since = Math.max(0, hi - FG_PAGE);
      return { since, limit: hi - since };
    }
  }
  for (const s of v.needStart) {
    v.needStart.delete(s);
    for (let h = Math.min(s - 1, v.ceil); h >= Math.max(1, s - 3 * FG_PAGE); h--) {
      if (v.ev[h] === undefined) {
        const since = Math.max(0, h - FG_PAGE);
        return { since, limit: h - since };
      }
    }
  }
  if (v.fills.length) return { since: v.fills[0].from, limit: BG_PAGE, fill: v.fills[0] };
  if (v.loaded < v.bgCap) {
    for (let s = v.ceil; s >= 1; s--) {
      if (v.ev[s] === undefined) {
        const since = Math.max(0, s - BG_PAGE);
        return { since, limit: s - since };
      }
    }
  }
  return null;
}

export function fullyLoaded(v) {
  const key = `${v.loaded}:${v.missing}:${v.known}:${v.ceil}:${v.wsSeq}`;
  if (v.fullKey === key) return v.full;
  let full = v.wsSeq >= v.known || v.loaded + v.missing >= v.known;
  for (let s = Math.min(v.ceil, v.known); full && s >= 1; s--) if (v.ev[s] === undefined) full = false;
  v.fullKey = key;
  v.full = full;
  return full;
}
