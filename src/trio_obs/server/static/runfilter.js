// The execution list's filters that need the server (SPEC §14): runs with an agent's events,
// runs with errors. The server answers which executions pass (GET /api/executions with
// agent= and errors=true, from its search index); the list shows those only. The status
// filter needs no server: the list has each run's last status.

import { state } from "./state.js";
import { api } from "./net.js";
import { $ } from "./page.js";
import { schedule } from "./frame.js";

const LIMIT = 10_000; // executions asked for at most (the list shows far fewer)
const REFRESH_MS = 10_000;

let asking = 0; // answers to older filters are dropped

function wanted() {
  const agent = $("exec-agent-filter").value.trim();
  const errors = $("exec-errors-filter").checked;
  return agent || errors ? { agent, errors } : null;
}

/** Ask the server which runs pass the filters (none set: every run, no request). */
export async function refreshRunFilter() {
  const mine = ++asking;
  const w = wanted();
  if (!w) {
    state.runIds = null;
  } else {
    const q = new URLSearchParams({ limit: String(LIMIT) });
    if (w.agent) q.set("agent", w.agent);
    if (w.errors) q.set("errors", "true");
    try {
      const list = await api(`/api/executions?${q}`);
      if (mine !== asking) return;
      state.runIds = new Set(list.map((s) => s.executionId));
    } catch {
      return; // the server is away: keep what was shown
    }
  }
  state.listDirty = true;
  schedule(true);
}

export function initRunFilter() {
  let timer = null;
  $("exec-agent-filter").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refreshRunFilter, 250);
  });
  $("exec-errors-filter").addEventListener("change", refreshRunFilter);
  setInterval(() => {
    if (wanted()) refreshRunFilter();
  }, REFRESH_MS);
}
