// The span view: execution → wave → task → skill / tool, each with its start and end, laid
// out on one time axis. Built from what the run has loaded (the whole run once loaded).

const FINAL_WAVE = new Set(["completed", "failed"]);
const FINAL_EXEC = new Set(["completed", "failed"]);

/**
 * Flatten run `v` into span rows: {key, depth, kind, label, start, end, open, status, seq}
 * (times in ms since the epoch; `open`: still running at `now`). Returns {rows, t0, t1}.
 */
export function buildSpans(v, now = Date.now()) {
  if (!Number.isFinite(v.t0)) return { rows: [], t0: 0, t1: 1 };
  const execOpen = !FINAL_EXEC.has(v.execStatus ?? "");
  const t0 = v.t0;
  const t1 = execOpen ? Math.max(v.t1, Math.min(now, v.t1 + 60_000)) : v.t1;
  const end = (x, open) => (open ? t1 : x);

  const waves = [...v.waveSpans.entries()].sort((a, b) => a[0] - b[0]);
  const waveOf = (task) => {
    if (task.wave !== null && v.waveSpans.has(task.wave)) return task.wave;
    for (const [n, w] of waves) {
      const wEnd = FINAL_WAVE.has(w.status) ? w.last : Infinity;
      if (task.start >= w.first && task.start <= wEnd) return n;
    }
    return null;
  };

  const childrenOfTask = new Map(); // taskId -> [span]
  const loose = []; // tools and skills of no (known) task
  const put = (task, span) => {
    const list = task && v.tasks.has(task) ? childrenOfTask.get(task) ?? [] : loose;
    if (list !== loose) childrenOfTask.set(task, list);
    list.push(span);
  };
  for (const [id, t] of v.tools) {
    if (!Number.isFinite(t.t0)) continue; // only its output is loaded
    const open = t.end === null;
    // The end's durationMs is the tool's own measure; timestamps may be the server's.
    const stop = open ? t1 : Number.isFinite(t.dur) ? t.t0 + t.dur : t.t1;
    put(t.task, {
      key: `tool:${id}`, kind: "tool", label: `${t.tool ?? "tool"} ${t.input ?? ""}`.trim(),
      start: t.t0, end: stop, open, status: open ? "running" : t.status, seq: t.start,
    });
  }
  for (const [id, s] of v.skills) {
    if (!Number.isFinite(s.t0)) continue;
    const open = s.end === null;
    put(s.task, {
      key: `skill:${id}`, kind: "skill", label: s.name ?? "skill", start: s.t0,
      end: open ? t1 : Number.isFinite(s.dur) ? s.t0 + s.dur : s.t1, open,
      status: open ? "running" : s.status, seq: s.start,
    });
  }

  const byWave = new Map(); // wave number | null -> [task span with children]
  for (const [id, task] of v.tasks) {
    const kids = (childrenOfTask.get(id) ?? []).sort((a, b) => a.start - b.start);
    const open = execOpen && v.t1 - task.end < 5000;
    const span = {
      key: `task:${id}`, kind: "task", label: id, start: task.start,
      end: end(Math.max(task.end, ...kids.map((k) => k.end)), open), open,
      status: task.failed ? "failed" : open ? "running" : "completed", seq: task.seq, kids,
    };
    const w = waveOf(task);
    const list = byWave.get(w) ?? [];
    list.push(span);
    byWave.set(w, list);
  }

  const rows = [];
  const execSpan = {
    key: "exec", kind: "execution", label: `execution ${v.id}`, start: t0, end: t1, depth: 0,
    open: execOpen, status: v.execStatus ?? "running", seq: v.firstLoaded,
  };
  rows.push(execSpan);
  const pushTasks = (tasks, depth) => {
    for (const t of tasks.sort((a, b) => a.start - b.start)) {
      rows.push({ ...t, depth });
      for (const k of t.kids) rows.push({ ...k, depth: depth + 1 });
    }
  };
  for (const [n, w] of waves) {
    const open = !FINAL_WAVE.has(w.status);
    const tasks = byWave.get(n) ?? [];
    rows.push({
      key: `wave:${n}`, kind: "wave", label: `wave ${n}`, start: w.first,
      end: end(w.last, open), open, status: w.status, seq: w.seq, depth: 1,
    });
    pushTasks(tasks, 2);
  }
  pushTasks(byWave.get(null) ?? [], 1);
  for (const s of loose.sort((a, b) => a.start - b.start)) rows.push({ ...s, depth: 1 });
  return { rows, t0, t1: Math.max(t1, t0 + 1) };
}
