// Export: the whole run, read page by page from the events route, saved as NDJSON.

import { state } from "./state.js";
import { api, eventsPath } from "./net.js";
import { showNotice } from "./notices.js";
import { $ } from "./page.js";
import { el, fmt } from "./dom.js";

export const config = { exportPage: 10_000 }; // test hook: window.__trioObs.config

export async function exportRun() {
  const v = state.view;
  if (!v) return;
  const button = $("export");
  button.disabled = true;
  const lines = [];
  try {
    for (let since = 0; ;) {
      button.textContent = `Exporting… ${fmt(lines.length)}`;
      const page = await api(eventsPath(v.id, since, config.exportPage));
      for (const ev of page) lines.push(JSON.stringify(ev));
      if (page.length < config.exportPage) break;
      since = page[page.length - 1].seq;
    }
    const blob = new Blob(lines.length ? [lines.join("\n"), "\n"] : [], { type: "application/x-ndjson" });
    const a = el("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${v.id.replace(/[^\w.-]+/g, "_")}.ndjson`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
  } catch (err) {
    showNotice(`Export failed: ${err.message}`);
  } finally {
    button.disabled = false;
    button.textContent = "Export";
  }
}
