"""The search section (``--only search``): SPEC §8's search targets.

Two parts, in the same run:

- ``benchmarks/search/run.py`` as a child: search p50/p99 over 1,000,000 stored events of
  the demo's mix (a cached store), ingest with vs without the index in process (the
  harshest ratio: no HTTP around it), and the time to index the whole store again;
- ingest over HTTP (the ingest section's load: POST /api/events in batches of 100, one
  ``all`` client receiving everything) against trio-obs with the index and the same
  server with ``--no-search-index``, alternated; the ratio of the medians is the target's.

The child also measures the tree of a 10,000-span execution (SPEC §8's search line):
``GET /api/executions/<id>/tree`` while the run grows, unchanged, and cold.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from typing import Any

from harness import HERE, ChildError, ServerSpec
from suite.measure import Run, Target, ingest_once
from suite.viewer import _last_json

SCRIPT = HERE / "search" / "run.py"
ROUNDS = 9
"""Rounds of ingest with and without the index; each round runs both, the side that goes
first alternating (the first server of a pair measured slower on a drifting machine). Five
rounds of 400 batches gave pair ratios from 0.64 to 1.02 on an idle machine: nine of 1,000."""
BATCHES = 1000
"""Batches of 100 events per side and round (~10 s each)."""


def search(run: Run) -> None:
    """Both parts; the figures go to ``run.results.search``."""
    out = run.log_dir / "search.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(SCRIPT), "--json-out", str(out)] + (["--quick"] if run.quick else [])
    run.say("search: " + " ".join(cmd[1:]))
    data: dict[str, Any]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=1800, cwd=HERE.parent, check=False
        )
        (run.log_dir / "search.log").write_text(done.stderr, encoding="utf-8")
        data = _last_json(out.read_text(encoding="utf-8") if out.exists() else done.stdout) or {}
        if done.returncode != 0:
            data["skipped"] = f"exit {done.returncode} (see results/logs/search.log)"
            run.skip(f"search: {data['skipped']}")
    except (OSError, subprocess.SubprocessError) as exc:
        data = {"skipped": f"could not run: {exc}"}
        run.skip(f"search: {exc}")
    data["http_ingest"] = http_ingest(run)
    run.results.search = data


def http_ingest(run: Run) -> dict[str, Any]:
    """Ingest over HTTP with and without the index, ``ROUNDS`` pairs (the first side
    alternating); the ratio is the median of the pairs' ratios."""
    specs = {
        "with": ServerSpec(name="trio-obs", program="trio-obs"),
        "without": ServerSpec(
            name="trio-obs-noindex", program="trio-obs", args=("--no-search-index",)
        ),
    }
    figures: dict[str, list[dict[str, float]]] = {"with": [], "without": []}
    rounds = 2 if run.quick else ROUNDS
    for i in range(rounds):
        for side in ("with", "without") if i % 2 == 0 else ("without", "with"):
            spec = specs[side]
            try:
                target = Target(run, spec)
            except ChildError as exc:
                run.skip(f"search: ingest {side} the index: {exc}")
                return {"error": str(exc)}
            try:
                result, _ = ingest_once(run, target, 100 if run.quick else BATCHES)
            except (ChildError, OSError) as exc:
                run.skip(f"search: ingest {side} the index: {exc}")
                return {"error": str(exc)}
            finally:
                target.stop()
            figures[side].append(
                {
                    "stored_per_s": result.stored_per_s,
                    "delivered_per_s": result.delivered_per_s,
                    "cpu_us_per_event": result.cpu_us_per_event or 0.0,
                }
            )
            run.say(f"  ingest {side} the index: stored {result.stored_per_s:,.0f}/s")
    out: dict[str, Any] = {"rounds": rounds, "batch": 100}
    for side, values in figures.items():
        for key in ("stored_per_s", "delivered_per_s", "cpu_us_per_event"):
            out[f"{side}_{key}"] = round(statistics.median(v[key] for v in values), 2)

    def rate(figure: dict[str, float]) -> float:
        return min(figure["stored_per_s"], figure["delivered_per_s"])

    pairs = zip(figures["with"], figures["without"], strict=True)
    out["pair_ratios"] = [round(rate(w) / rate(wo), 3) for w, wo in pairs]
    out["ratio"] = round(statistics.median(out["pair_ratios"]), 3)
    out["cpu_ratio"] = round(out["with_cpu_us_per_event"] / out["without_cpu_us_per_event"], 3)
    return out
