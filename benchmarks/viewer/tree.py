"""The viewer's span tree under load (issue 22; SPEC §8): a 10,000-span run, then live spans.

Starts its own ``trio-obs serve`` (as ``run.py`` does), posts a run of N spans (an agent,
sub-agents, model calls and tool calls, as ``span:start``/``span:end`` and ``tool:*`` pairs),
then opens ``/?execution=…&view=tree`` in headless Chromium and measures:

- first paint: from navigation to the first frame with tree rows on screen, and to the
  frame where all N spans are in the tree;
- the longest task (PerformanceObserver "longtask") and the most DOM nodes meanwhile
  (target: the timeline's budget, 5,000);
- while the tree is open, ``--live`` spans posted one at a time (one request each, every
  ``--gap`` ms): the time from sending each ``span:start`` to its bar in the tree's viewport
  (p50, p99, max; target p99 <= 50 ms), and the longest task meanwhile; that time split
  into the server's part (sending the POST to the event's arrival on the page's WebSocket)
  and the page's (arrival to the bar seen), the page's part again into arrival to the end of
  the animation-frame callback that put the row in the DOM, and that to the next frame, where
  the bar is seen laid out in the viewport (the frame the browser paints it in is then on
  screen); and how long the page's callback of that frame ran.

With ``--against CHECKOUT`` it runs ``--rounds`` times each, alternating, the installed
trio-obs and the one in ``CHECKOUT/src`` (page and server), and prints the medians of both.

    python benchmarks/viewer/tree.py [--spans 10000] [--live 200] [--gap 50] [--json-out FILE]
        [--profile FILE] [--trace FILE] [--against CHECKOUT --rounds N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).parent))
from run import (
    CHROMIUM_ARGS,
    PROBE,
    browser_processes,
    cpu_seconds,
    longtasks,
    post_burst,
    server,
    summarize_profile,
)

TARGETS = {"live_p99_ms": 50.0, "dom_nodes": 5000, "longest_task_ms": 200.0}

# Before the page's scripts: when each live span's event reaches the page (its WebSocket),
# and the end of the first animation-frame callback after which its row is in the tree's DOM
# (the page drew it; the browser paints that frame next). No layout is read here.
ARRIVALS = r"""
window.__arrived = {};
window.__drawn = {};
window.__waiting = 0;
const OrigWS = window.WebSocket;
window.WebSocket = class extends OrigWS {
  constructor(...a) {
    super(...a);
    this.addEventListener("message", (m) => {
      if (typeof m.data !== "string" || !m.data.includes('"live-')) return;
      const now = performance.timeOrigin + performance.now();
      for (const x of m.data.matchAll(/"spanId":\s*"(live-\d+)"/g)) {
        if (window.__arrived[x[1]] === undefined) {
          window.__arrived[x[1]] = now;
          window.__waiting += 1;
        }
      }
    });
  }
};
window.__drawMs = {};
const origRaf = window.requestAnimationFrame.bind(window);
window.requestAnimationFrame = (cb) => origRaf((ts) => {
  const t0 = performance.now();
  cb(ts);
  if (!window.__waiting) return;
  const tree = document.getElementById("spans");
  if (!tree) return;
  const t1 = performance.now();
  for (const r of tree.querySelectorAll('[data-span-id^="live-"]')) {
    const id = r.dataset.spanId;
    if (window.__drawn[id] === undefined && window.__arrived[id] !== undefined) {
      window.__drawn[id] = performance.timeOrigin + t1;
      window.__drawMs[id] = t1 - t0;
      window.__waiting -= 1;
    }
  }
});
"""

# In the page: the first frame each live span's bar is inside the tree's viewport.
WATCH = """
() => {
  window.__seen = {};
  const tree = document.getElementById("spans");
  const look = () => {
    const box = tree.getBoundingClientRect();
    for (const r of tree.querySelectorAll('[data-span-id^="live-"]')) {
      const id = r.dataset.spanId;
      if (window.__seen[id]) continue;
      const b = r.querySelector(".sbar")?.getBoundingClientRect();
      if (b && b.top >= box.top - 1 && b.bottom <= box.bottom + 1) {
        window.__seen[id] = performance.timeOrigin + performance.now();
      }
    }
    requestAnimationFrame(look);
  };
  look();
}
"""


TRACE_CATEGORIES = [
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "disabled-by-default-devtools.timeline.frame",
    "blink.user_timing",
]

# The renderer main thread's work per kind (trace event names), summed over the live phase.
WORK = {
    "script": ("FunctionCall", "FireAnimationFrame", "TimerFire", "EventDispatch", "RunMicrotasks"),
    "style": ("UpdateLayoutTree", "RecalculateStyles"),
    "layout": ("Layout",),
    "paint": ("PrePaint", "Paint", "Layerize", "UpdateLayer"),
}


def trace_summary(path: Path, live: int) -> dict[str, Any]:
    """The page's main-thread CPU time (the trace's thread times, steadier than wall times on a
    loaded machine) over the live phase: in all, per live span, and per kind of work (a kind's
    events counted once, not again when nested in one of the same kind); and the animation
    frames' callbacks (FireAnimationFrame): how many, their p50/p99/max CPU time."""
    raw = json.loads(path.read_text())
    evs = raw["traceEvents"] if isinstance(raw, dict) else raw
    main = {
        (e["pid"], e["tid"])
        for e in evs
        if e.get("name") == "thread_name" and e.get("args", {}).get("name") == "CrRendererMain"
    }
    mine = sorted(
        (e for e in evs if (e.get("pid"), e.get("tid")) in main and e.get("ph") == "X"),
        key=lambda e: (e["ts"], -e.get("dur", 0)),
    )
    kind_of = {name: kind for kind, names in WORK.items() for name in names}
    total: dict[str, float] = dict.fromkeys(WORK, 0.0)
    busy = 0.0
    raf: list[float] = []
    open_until: dict[str, float] = {}  # kind -> end (µs) of the outermost event counted
    task_end = 0.0
    for e in mine:
        cpu = e.get("tdur", e.get("dur", 0)) / 1000
        if e["name"] == "RunTask" and e["ts"] >= task_end:
            busy += cpu
            task_end = e["ts"] + e.get("dur", 0)
        kind = kind_of.get(e["name"])
        if kind and e["ts"] >= open_until.get(kind, 0.0):
            total[kind] += cpu
            open_until[kind] = e["ts"] + e.get("dur", 0)
        if e["name"] == "FireAnimationFrame":
            raf.append(cpu)
    return {
        "main_thread_cpu_ms": round(busy, 1),
        "main_thread_cpu_per_live_span_ms": round(busy / max(1, live), 2),
        "by_kind_cpu_ms": {k: round(v, 1) for k, v in total.items()},
        "animation_frames": len(raf),
        "raf_p50_ms": round(statistics.median(raf), 2) if raf else None,
        "raf_p99_ms": round(pct(raf, 99), 2) if raf else None,
        "raf_max_ms": round(max(raf), 2) if raf else None,
    }


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def span_run(e: str, n: int) -> list[dict[str, Any]]:
    """N spans: one agent, sub-agents of 100 spans each (model calls and tools, 1 in 50 failed)."""
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    out: list[dict[str, Any]] = [
        {"type": "execution:status", "executionId": e, "status": "running", "spanId": "root",
         "timestamp": iso(t0 - timedelta(minutes=1))},
        {"type": "span:start", "executionId": e, "spanId": "main", "parentSpanId": "root",
         "kind": "agent", "name": "orchestrator", "agent": "orchestrator",
         "timestamp": iso(t0)},
    ]  # fmt: skip
    made = 1
    sub = 0
    while made < n:
        sub += 1
        a = f"sub{sub}"
        ta = t0 + timedelta(milliseconds=sub * 300)
        out.append({"type": "span:start", "executionId": e, "spanId": a, "parentSpanId": "main",
                    "kind": "agent", "name": f"worker {sub}", "agent": f"worker {sub}",
                    "timestamp": iso(ta)})  # fmt: skip
        made += 1
        for j in range(min(99, n - made)):
            ts = ta + timedelta(milliseconds=j * 3)
            sid = f"{a}.{j}"
            if j % 2:
                out += [
                    {"type": "tool:start", "executionId": e, "toolUseId": sid, "parentSpanId": a,
                     "tool": "Bash", "inputSummary": f"npm test -- {j}", "timestamp": iso(ts)},
                    {"type": "tool:end", "executionId": e, "toolUseId": sid,
                     "resultStatus": "error" if j % 50 == 1 else "done", "durationMs": 2.0,
                     "timestamp": iso(ts + timedelta(milliseconds=2))},
                ]  # fmt: skip
            else:
                out += [
                    {"type": "span:start", "executionId": e, "spanId": sid, "parentSpanId": a,
                     "kind": "llm", "name": "chat gpt-4o", "model": "gpt-4o",
                     "timestamp": iso(ts)},
                    {"type": "span:end", "executionId": e, "spanId": sid, "state": "done",
                     "durationMs": 2.0, "usage": {"inputTokens": 900, "outputTokens": 40},
                     "timestamp": iso(ts + timedelta(milliseconds=2))},
                ]  # fmt: skip
            made += 1
        end = iso(ta + timedelta(milliseconds=300))
        out.append({"type": "span:end", "executionId": e, "spanId": a, "state": "done",
                    "durationMs": 300.0, "timestamp": end})  # fmt: skip
    return out


def spread(
    name: str, start: dict[str, float], end: dict[str, float], *, with_max: bool = False
) -> dict[str, float]:
    """p50 and p99 (and max) in ms of end - start over the live spans in both."""
    d = [end[k] - start[k] for k in start if k in end]
    if not d:
        return {}
    out = {f"{name}p50_ms": round(statistics.median(d), 1), f"{name}p99_ms": round(pct(d, 99), 1)}
    if with_max:
        out[f"{name}max_ms"] = round(max(d), 1)
    return out


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def run(
    n: int,
    live: int,
    gap_ms: float,
    chromium: str,
    profile: Path | None = None,
    trace: Path | None = None,
    src: Path | None = None,
) -> dict[str, Any]:
    e = f"tree-{int(time.time() * 1000) % 10**8:08d}"
    result: dict[str, Any] = {"spans": n, "live_spans": live, "gap_ms": gap_ms}
    with (
        tempfile.TemporaryDirectory() as tmp,
        # The run is stamped minutes ago (the live spans open before its main): a watchdog
        # that judges them slow would store an alert per live span, which no live run does.
        server(Path(tmp) / "bench.db", "--slow-after", "86400", src=src) as (base, server_pid),
    ):
        evs = span_run(e, n)
        post_burst(base, [evs[i : i + 500] for i in range(0, len(evs), 500)], 2)
        result["events"] = len(evs)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.add_init_script(PROBE)
            context.add_init_script(ARRIVALS)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            t0 = time.time()
            page.goto(f"{base}/?execution={e}&view=tree")
            page.wait_for_function(
                "document.querySelector('#spans [data-testid=span-row][data-kind=agent]')",
                polling="raf",
            )
            t1 = time.time()
            page.wait_for_function(f"window.__trioObs.tree().spans >= {n}", polling="raf")
            t2 = time.time()
            page.wait_for_timeout(500)
            result["first_paint"] = {
                "rows_on_screen_s": round(t1 - t0, 3),
                "all_spans_in_tree_s": round(t2 - t0, 3),
                **longtasks(page),
                "max_dom_nodes": page.evaluate("window.__bench.maxNodes"),
                "tree": page.evaluate("window.__trioObs.tree()"),
            }
            # Live: each span starts before every other under the orchestrator (after the
            # root: the axis stays), so its row comes right under it, in view.
            page.evaluate(WATCH)
            from_ms = page.evaluate("performance.now()")
            cdp = None
            if profile:
                cdp = context.new_cdp_session(page)
                cdp.send("Profiler.enable")
                cdp.send("Profiler.start")
            if trace:
                browser.start_tracing(page=page, path=str(trace), categories=TRACE_CATEGORIES)
            sent: dict[str, float] = {}
            accepted: dict[str, float] = {}
            procs = browser_processes()
            server_proc = psutil.Process(server_pid)
            cpu0 = (cpu_seconds(procs), cpu_seconds([server_proc]))
            main_start = datetime.fromisoformat(evs[1]["timestamp"].replace("Z", "+00:00"))
            first = main_start - timedelta(seconds=30)
            with httpx.Client(timeout=10) as client:
                for i in range(live):
                    sid = f"live-{i}"
                    ev = {"type": "span:start", "executionId": e, "spanId": sid,
                          "parentSpanId": "main", "kind": "llm", "name": f"live call {i}",
                          "timestamp": iso(first - timedelta(milliseconds=i))}  # fmt: skip
                    sent[sid] = time.time()
                    client.post(f"{base}/api/events", json=[ev]).raise_for_status()
                    accepted[sid] = time.time()
                    time.sleep(gap_ms / 1000)
            page.wait_for_function(
                f"Object.keys(window.__seen).length >= {live}", polling=100, timeout=30_000
            )
            seen: dict[str, float] = page.evaluate("window.__seen")
            cpu1 = (cpu_seconds(procs), cpu_seconds([server_proc]))
            if trace:
                browser.stop_tracing()
                result["frames"] = trace_summary(trace, live)
            if cdp is not None and profile is not None:
                prof = cdp.send("Profiler.stop")["profile"]
                profile.write_text(json.dumps(prof))
                result["profile_top"] = summarize_profile(prof)
            arrived: dict[str, float] = page.evaluate("window.__arrived")
            drawn: dict[str, float] = page.evaluate("window.__drawn")
            draw_ms: dict[str, float] = page.evaluate("window.__drawMs")
            sent_ms = {k: t * 1000 for k, t in sent.items()}
            result["live"] = {
                "shown": len(seen),
                **spread("", sent_ms, seen, with_max=True),
                **spread("page_", arrived, seen),
                **spread("server_", sent_ms, arrived),
                **spread("post_202_", sent_ms, {k: t * 1000 for k, t in accepted.items()}),
                **spread("drawn_", arrived, drawn),
                **spread("drawn_to_seen_", drawn, seen),
                **spread("draw_callback_", dict.fromkeys(draw_ms, 0.0), draw_ms),
                **longtasks(page, from_ms),
                "max_dom_nodes": page.evaluate("window.__bench.maxNodes"),
                # CPU time (all Chromium processes; the server) per live span: what a loaded
                # machine's figures depend on, and steadier than them.
                "browser_cpu_per_span_ms": round((cpu1[0] - cpu0[0]) * 1000 / live, 2),
                "server_cpu_per_span_ms": round((cpu1[1] - cpu0[1]) * 1000 / live, 2),
            }
            result["console_errors"] = errors
            browser.close()
    f, lv = result["first_paint"], result["live"]
    result["targets"] = {
        "live_p99_ms": [lv["p99_ms"], TARGETS["live_p99_ms"]],
        "dom_nodes": [max(f["max_dom_nodes"], lv["max_dom_nodes"]), TARGETS["dom_nodes"]],
        "longest_task_ms": [
            max(f["longest_task_ms"], lv["longest_task_ms"]),
            TARGETS["longest_task_ms"],
        ],
    }
    result["ok"] = all(got <= want for got, want in result["targets"].values()) and not errors
    return result


SUMMARY = ("p50_ms", "p99_ms", "page_p50_ms", "page_p99_ms", "server_p50_ms", "server_p99_ms",
           "drawn_p50_ms", "drawn_p99_ms", "draw_callback_p50_ms", "draw_callback_p99_ms",
           "longest_task_ms", "browser_cpu_per_span_ms", "server_cpu_per_span_ms")  # fmt: skip


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Both builds ``--rounds`` times, alternating (this one first): each run and the medians."""
    runs: dict[str, list[dict[str, Any]]] = {"this": [], "against": []}
    for i in range(args.rounds):
        for side, src in (("this", None), ("against", args.against / "src")):
            trace = (
                args.trace.with_name(f"{args.trace.stem}-{side}-{i + 1}.json")
                if args.trace
                else None
            )
            r = run(args.spans, args.live, args.gap, args.chromium, trace=trace, src=src)
            runs[side].append(r)
            lv, fp = r["live"], r["first_paint"]
            figures = " ".join(f"{k}={lv.get(k)}" for k in SUMMARY)
            print(f"round {i + 1} {side:8s} {figures} dom={lv['max_dom_nodes']} "
                  f"first_rows_s={fp['rows_on_screen_s']} first_task_ms={fp['longest_task_ms']} "
                  f"errors={len(r['console_errors'])}", file=sys.stderr, flush=True)  # fmt: skip
            if "frames" in r:
                print(f"         {side:8s} {r['frames']}", file=sys.stderr, flush=True)
    median = {
        side: {k: statistics.median(r["live"][k] for r in rs if k in r["live"]) for k in SUMMARY}
        for side, rs in runs.items()
    }
    return {"against": str(args.against), "rounds": args.rounds, "median": median, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=10_000)
    parser.add_argument("--live", type=int, default=200, help="spans posted one at a time")
    parser.add_argument("--gap", type=float, default=50.0, help="ms between live spans")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--profile", type=Path, help="a CPU profile of the live phase here")
    parser.add_argument("--trace", type=Path, help="a Chrome trace of the live phase here")
    parser.add_argument("--against", type=Path, help="another checkout, run alternately")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each with --against")
    args = parser.parse_args()
    if args.against:
        result = compare(args)
    else:
        result = run(args.spans, args.live, args.gap, args.chromium, args.profile, args.trace)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    sys.exit(0 if result.get("ok", True) else 1)


if __name__ == "__main__":
    main()
