"""The viewer benchmark (SPEC §8, last point): a burst of events into an open page.

Starts its own ``trio-obs serve`` on a free port over a temporary database, opens the page
in headless Chromium (Playwright) and measures, for N events posted in a burst (HTTP
batches of 100):

- the time from the last batch's acceptance (its 202) to every event being on screen with
  the right count (the header shows N and the last row is in view): target <= 3 s;
- the longest task of the page (PerformanceObserver "longtask"): target <= 200 ms;
- the DOM node count, sampled every 100 ms (the largest): target <= 5,000;
- after a reload: the time to show the tail, the time to reach seq 1 by scrolling to the
  top, and the time until the whole run is loaded in the background;
- the time to export the run as NDJSON.

Prints a JSON result and a short table. Not a test: timing figures belong here.

    python benchmarks/viewer/run.py [--events 20000] [--json-out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from playwright.sync_api import Page, sync_playwright

LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TARGETS = {"on_screen_s": 3.0, "longest_task_ms": 200.0, "dom_nodes": 5000}

# Installed before the page's own scripts: long tasks and the DOM size, sampled.
PROBE = """
window.__bench = { longtasks: [], maxNodes: 0, samples: 0 };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__bench.longtasks.push([e.startTime, e.duration]);
}).observe({ type: "longtask", buffered: true });
setInterval(() => {
  const n = document.getElementsByTagName("*").length;
  if (n > window.__bench.maxNodes) window.__bench.maxNodes = n;
  window.__bench.samples += 1;
}, 100);
"""

# Resolves with Date.now() in the first frame where the condition holds.
WAIT_IN_PAGE = """
([count, seq]) => new Promise((resolve) => {
  const check = () => {
    const shown = document.getElementById("event-count")?.textContent === count;
    const row = document.querySelector(`#timeline [data-testid=event-row][data-seq="${seq}"]`);
    if (shown && row) {
      const box = row.getBoundingClientRect();
      const tl = document.getElementById("timeline").getBoundingClientRect();
      if (box.bottom <= tl.bottom + 1 && box.top >= tl.top - 1) return resolve(Date.now());
    }
    requestAnimationFrame(check);
  };
  check();
})
"""


@contextmanager
def server(db: Path, *extra: str, src: Path | None = None) -> Iterator[tuple[str, int]]:
    """``trio-obs serve`` on a free loopback port (``extra``: more of its options; ``src``:
    the ``src`` folder of another checkout to run instead of the installed one); its base URL
    and its pid."""
    env = {k: v for k, v in os.environ.items() if k != "TRIO_OBS_TOKEN"}
    env["PYTHONUNBUFFERED"] = "1"
    if src is not None:
        env["PYTHONPATH"] = str(src.resolve())
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_obs", "serve", "--port", "0", "--db", str(db), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    port = 0
    for line in proc.stderr:
        if match := LISTENING.search(line):
            port = int(match[1])
            break
    if not port:
        proc.kill()
        raise SystemExit("the server did not start")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def events(e: str, n: int) -> list[dict[str, Any]]:
    """``n`` events of a plausible agent run: tool calls with output, logs, checks, heartbeats."""
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < n:
        i += 1
        task = f"T-{100 + i % 12}"
        agent = f"instance-{1 + i % 3}"
        tid = f"toolu_{i:08x}"
        ts = _now()
        entry = {
            "id": f"t{i}", "timestamp": ts, "sequence": i, "executionId": e,
            "instanceId": agent, "entryType": "tool_use", "category": "action",
            "summary": f"Bash npm test -- src/module{i % 40}.test.ts", "taskId": task,
            "details": {"tool": "Bash"},
        }  # fmt: skip
        out += [
            {"type": "transcript:entry", "executionId": e, "entry": entry},
            {"type": "tool:start", "executionId": e, "toolUseId": tid, "tool": "Bash",
             "inputSummary": f"npm test -- src/module{i % 40}.test.ts", "taskId": task},
            {"type": "tool:output", "executionId": e, "toolUseId": tid,
             "chunk": "\n> web@2.4.0 test\n> jest\n\n", "isStderr": False},
            {"type": "tool:output", "executionId": e, "toolUseId": tid,
             "chunk": f"\x1b[32mPASS\x1b[0m src/module{i % 40}.test.ts\n", "isStderr": True},
            {"type": "tool:end", "executionId": e, "toolUseId": tid, "resultStatus": "done",
             "durationMs": 1200.0 + i % 900, "outputSummary": "exit 0: 3 passed"},
            {"type": "assertion:result", "executionId": e, "taskId": task, "assertion": {
                "id": f"a{i}", "taskId": task, "executionId": e, "category": "tests_pass",
                "description": "unit tests pass", "result": "fail" if i % 50 == 0 else "pass",
                "timestamp": ts, "evidence": {"passed": 3, "total": 3}}},
            {"type": "agent:heartbeat", "executionId": e, "instanceId": agent,
             "status": "working", "currentTaskId": task,
             "metrics": {"cpuPercent": 20.0 + i % 60, "memoryMb": 200.0 + i % 90}},
        ]  # fmt: skip
        if i % 25 == 0:
            out.append({"type": "messagebus:event", "executionId": e, "entry": {
                "id": f"m{i}", "eventId": f"ev{i}", "timestamp": ts, "source": "policy-guard",
                "eventType": "task.blocked", "humanSummary": f"{agent} was blocked on {task}",
                "severity": "error" if i % 100 == 0 else "info", "category": "task",
                "createdAt": ts, "executionId": e, "payload": {"task": task}}})  # fmt: skip
    return out[:n]


def post_burst(base: str, batches: list[list[dict[str, Any]]], workers: int) -> dict[str, float]:
    """Post every batch (``workers`` at a time); when the first and the last were accepted."""
    local = threading.local()
    done: list[float] = []
    lock = threading.Lock()

    def post(batch: list[dict[str, Any]]) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=30)
        r = client.post(f"{base}/api/events", json=batch)
        r.raise_for_status()
        with lock:
            done.append(time.time())

    start = time.time()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(post, batches))
    return {"start": start, "last_accepted": max(done)}


def summarize_profile(prof: dict[str, Any], top: int = 15) -> list[list[Any]]:
    """The functions with the most self time in a CDP CPU profile: [name, url:line, ms]."""
    nodes = {n["id"]: n for n in prof["nodes"]}
    self_us: dict[int, float] = {}
    deltas = prof.get("timeDeltas", [])
    for sample, dt in zip(prof.get("samples", []), deltas, strict=False):
        self_us[sample] = self_us.get(sample, 0.0) + dt
    by_fn: dict[tuple[str, str], float] = {}
    for nid, us in self_us.items():
        cf = nodes[nid]["callFrame"]
        where = f"{cf['url'].rsplit('/', 1)[-1]}:{cf['lineNumber'] + 1}"
        key = (cf["functionName"] or "(anonymous)", where)
        by_fn[key] = by_fn.get(key, 0.0) + us
    ranked = sorted(by_fn.items(), key=lambda kv: -kv[1])[:top]
    return [[name, where, round(us / 1000, 1)] for (name, where), us in ranked]


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU time of ``procs`` (those still running)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def browser_processes() -> list[psutil.Process]:
    """The Chromium processes this script started (through Playwright's driver)."""
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if "chrom" in p.name().lower() or "headless_shell" in p.name().lower()
    ]


def longtasks(page: Page, since_ms: float = 0.0) -> dict[str, float]:
    tasks: list[list[float]] = page.evaluate("window.__bench.longtasks")
    durations = [d for start, d in tasks if start >= since_ms]
    return {
        "longest_task_ms": round(max(durations, default=0.0), 1),
        "long_tasks": len(durations),
        "long_task_total_ms": round(sum(durations), 1),
    }


def run(n: int, workers: int, chromium: str, profile: Path | None = None) -> dict[str, Any]:
    e = f"bench-{int(time.time() * 1000) % 10**8:08d}"
    result: dict[str, Any] = {"events": n, "batch": 100, "post_workers": workers}
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp) / "bench.db") as (base, server_pid):
        httpx.post(
            f"{base}/api/events",
            json=[{"type": "execution:status", "executionId": e, "status": "running"}],
        ).raise_for_status()
        total = n + 1
        batch_list = [b for b in (events(e, n)[i : i + 100] for i in range(0, n, 100)) if b]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.add_init_script(PROBE)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(base + "/")  # follow mode: the page picks the run itself
            page.wait_for_function(f"window.__trioObs?.selected() === {json.dumps(e)}")
            page.wait_for_function("document.getElementById('conn').textContent === 'live'")
            page.wait_for_function("window.__trioObs.stats().wsSeq >= 1")
            burst_from = page.evaluate("performance.now()")

            # 1. The burst, into the open page.
            cdp = None
            if profile:
                cdp = context.new_cdp_session(page)
                cdp.send("Profiler.enable")
                cdp.send("Profiler.setSamplingInterval", {"interval": 200})
                cdp.send("Profiler.start")
            browsers = browser_processes()
            server_proc = psutil.Process(server_pid)
            cpu0 = cpu_seconds(browsers), cpu_seconds([server_proc])
            sent = post_burst(base, batch_list, workers)
            shown_at = page.evaluate(WAIT_IN_PAGE, [f"{total:,}", total]) / 1000
            cpu1 = cpu_seconds(browsers), cpu_seconds([server_proc])
            page.wait_for_timeout(1000)  # let the page settle: its tasks count too
            if cdp is not None and profile is not None:
                prof = cdp.send("Profiler.stop")["profile"]
                profile.write_text(json.dumps(prof))
                result["profile_top"] = summarize_profile(prof)
            st = page.evaluate("window.__trioObs.stats()")
            listed = httpx.get(f"{base}/api/executions").json()
            server_count = next(x["eventCount"] for x in listed if x["executionId"] == e)
            result["burst"] = {
                "post_s": round(sent["last_accepted"] - sent["start"], 3),
                "ingest_events_per_s": round(n / (sent["last_accepted"] - sent["start"])),
                "on_screen_after_last_accept_s": round(shown_at - sent["last_accepted"], 3),
                "browser_cpu_s": round(cpu1[0] - cpu0[0], 2),
                "server_cpu_s": round(cpu1[1] - cpu0[1], 2),
                **longtasks(page, burst_from),
                "max_dom_nodes": page.evaluate("window.__bench.maxNodes"),
                "dom_nodes_after": st["domNodes"],
                "header_count": page.inner_text("#event-count"),
                "server_count": server_count,
                "loaded": st["loaded"],
                "socket_duplicates": st["wsDuplicates"],
                "socket_closes": {"execution": st["closes"], "all": st["allCloses"]},
                "js_heap_mb": round(page.evaluate("performance.memory.usedJSHeapSize") / 2**20, 1),
            }

            # 2. A reload: the tail, then the first event by scrolling to the top.
            t0 = time.time()
            page.reload()
            page.wait_for_function(f"window.__trioObs?.selected() === {json.dumps(e)}")
            tail_at = page.evaluate(WAIT_IN_PAGE, [f"{total:,}", total]) / 1000
            reload_from = page.evaluate("performance.now()")
            t1 = time.time()
            page.eval_on_selector("#timeline", "el => { el.scrollTop = 0; }")
            page.wait_for_function(
                "document.querySelector('#timeline [data-testid=event-row][data-seq=\"1\"]')",
                polling="raf",
            )
            t2 = time.time()
            page.wait_for_function("window.__trioObs.stats().fullyLoaded", polling=50)
            t3 = time.time()
            page.wait_for_timeout(500)
            result["reload"] = {
                "tail_on_screen_s": round(tail_at - t0, 3),
                "seq1_after_scroll_to_top_s": round(t2 - t1, 3),
                "whole_run_loaded_s": round(t3 - t0, 3),
                **longtasks(page, reload_from),
                "max_dom_nodes": page.evaluate("window.__bench.maxNodes"),
            }

            # 3. Export the run as NDJSON (every page from the events route).
            with page.expect_download() as info:
                t4 = time.time()
                page.click("#export")
            path = info.value.path()
            t5 = time.time()
            lines = Path(path).read_text().splitlines()
            result["export"] = {"s": round(t5 - t4, 3), "lines": len(lines)}
            result["console_errors"] = errors
            browser.close()
    b, r = result["burst"], result["reload"]
    result["targets"] = {
        "on_screen_s": [b["on_screen_after_last_accept_s"], TARGETS["on_screen_s"]],
        "longest_task_ms": [
            max(b["longest_task_ms"], r["longest_task_ms"]),
            TARGETS["longest_task_ms"],
        ],
        "dom_nodes": [max(b["max_dom_nodes"], r["max_dom_nodes"]), TARGETS["dom_nodes"]],
    }
    result["ok"] = all(got <= want for got, want in result["targets"].values()) and (
        b["header_count"] == f"{total:,}" and b["server_count"] == total
    )
    return result


def table(result: dict[str, Any]) -> str:
    b, r, x = result["burst"], result["reload"], result["export"]
    rows = [
        ("events posted (batches of 100)", f"{result['events']:,}", ""),
        ("posting took", f"{b['post_s']} s", f"{b['ingest_events_per_s']:,} events/s"),
        ("on screen after the last 202", f"{b['on_screen_after_last_accept_s']} s", "<= 3 s"),
        ("CPU: browser / server (burst)", f"{b['browser_cpu_s']} / {b['server_cpu_s']} s", ""),
        ("longest task (burst)", f"{b['longest_task_ms']} ms", "<= 200 ms"),
        ("long tasks (burst)", f"{b['long_tasks']}, {b['long_task_total_ms']} ms", ""),
        ("DOM nodes (max sampled)", f"{b['max_dom_nodes']:,}", "<= 5,000"),
        ("header count / server count", f"{b['header_count']} / {b['server_count']:,}", "equal"),
        ("JS heap after the burst", f"{b['js_heap_mb']} MiB", ""),
        ("reload: tail on screen", f"{r['tail_on_screen_s']} s", ""),
        ("reload: seq 1 after scroll to top", f"{r['seq1_after_scroll_to_top_s']} s", ""),
        ("reload: whole run loaded", f"{r['whole_run_loaded_s']} s", ""),
        ("longest task (reload)", f"{r['longest_task_ms']} ms", "<= 200 ms"),
        ("export NDJSON", f"{x['s']} s, {x['lines']:,} lines", ""),
    ]
    w = max(len(a) for a, _, _ in rows)
    v = max(len(b_) for _, b_, _ in rows)
    lines = [f"{a:<{w}}  {b_:>{v}}  {c}" for a, b_, c in rows]
    lines.append(f"{'all targets met':<{w}}  {result['ok']!s:>{v}}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="concurrent POSTs")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    parser.add_argument(
        "--profile", type=Path, help="write a CPU profile of the burst (.cpuprofile) here"
    )
    args = parser.parse_args()
    result = run(args.events, args.workers, args.chromium, args.profile)
    text = json.dumps(result, indent=2)
    print(text)
    print()
    print(table(result))
    if args.json_out:
        args.json_out.write_text(text + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
