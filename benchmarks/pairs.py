"""Old vs new ingest in alternated pairs: a change's ratio out of one run, with its spread.

``run.py --compare`` measures each load once per side; on this machine one measurement of
a 2-second load swings by a third between two servers of the same commit. This runs the
ingest loads of the bench (``suite.measure``) on trio-obs at ``--compare REV`` and on this
checkout, ``--rounds`` times, the side that goes first alternating, a fresh server per side
and round; it prints each pair's new ÷ old and the median of them.

Loads (``--loads``, comma-separated):

- ``mixes``: the realistic JSON and OTLP mixes (``mix.py``): units/s, CPU per unit, p99;
- ``live``: span starts at 1,000/s in batches of 10: p50 / p99 / max POST → ``all`` client
  (``--warm``: after the mixes on the same server, as in the ingest section);
- ``index``: ``POST /api/events`` (the ingest section's load) on each side with and without
  the search index (``--no-search-index``): the index's ratio on each side.

    python benchmarks/pairs.py --compare HEAD~1 [--rounds 9] [--loads mixes,live,index]
                               [--warm] [--store memory|file]
"""

from __future__ import annotations

import argparse
import statistics

import attrs

import run as bench
from harness import ServerSpec
from suite import compare, measure
from suite.measure import Run, Target


def _shown(value: float) -> str:
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _mixes(run: Run, target: Target) -> dict[str, float]:
    measure.ingest_mixes(run, target)
    mixes = run.results.meta["ingest_mix"][target.kind]
    out = {}
    for kind in ("json", "otlp"):
        m = mixes[kind]
        out |= {f"{kind}/s": m["units_per_s"], f"{kind} µs": m["cpu_us_per_unit"] or 0.0}
        out[f"{kind} p99 ms"] = m["p99_ms"]
    return out


def _live(run: Run, target: Target, warm: bool) -> dict[str, float]:
    if warm:
        measure.ingest_mixes(run, target)
    measure.ingest_live(run, target)
    live = run.results.meta["ingest_live"][target.kind]
    return {
        "live p50 ms": live["p50_ms"],
        "live p99 ms": live["p99_ms"],
        "live max ms": live["max_ms"],
    }


def _ingest(run: Run, spec: ServerSpec, batches: int) -> float:
    target = Target(run, spec)
    try:
        result, _ = measure.ingest_once(run, target, batches)
    finally:
        target.stop()
    return min(result.stored_per_s, result.delivered_per_s)


def measure_side(
    run: Run, spec: ServerSpec, loads: set[str], args: argparse.Namespace
) -> dict[str, float]:
    """One round of every load on one side."""
    out: dict[str, float] = {}
    if loads & {"mixes", "live"}:
        target = Target(run, spec)
        try:
            if "mixes" in loads:
                out |= _mixes(run, target)
            if "live" in loads:
                out |= _live(run, target, args.warm and "mixes" not in loads)
        finally:
            target.stop()
    if "index" in loads:
        without = attrs.evolve(spec, args=(*spec.args, "--no-search-index"))
        pair = [(spec, "with"), (without, "without")]
        rates = {name: _ingest(run, s, args.batches) for s, name in pair}
        out |= {f"index {k}/s": v for k, v in rates.items()}
        out["index ratio"] = rates["with"] / rates["without"]
    return out


LOWER_IS_BETTER = ("µs", "ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", required=True, help="the old side: a git revision or a checkout")
    p.add_argument("--rounds", type=int, default=9, help="pairs (default 9)")
    p.add_argument(
        "--loads", default="mixes,live", help="of mixes, live, index (default mixes,live)"
    )
    p.add_argument("--warm", action="store_true", help="live after the mixes on one server")
    p.add_argument("--batches", type=int, default=1000, help="batches of 100 for 'index'")
    p.add_argument(
        "--store", choices=("memory", "file"), default="memory", help="as run.py's --store"
    )
    args = p.parse_args()
    loads = set(args.loads.split(","))
    unknown = loads - {"mixes", "live", "index"}
    if unknown:
        p.error(f"unknown loads: {', '.join(sorted(unknown))} (mixes, live, index)")
    run = Run(bench.parser().parse_args(["--no-profile", "--store", args.store]))
    run.log_dir.mkdir(parents=True, exist_ok=True)
    old, commit = compare.prepare(args.compare, run.say)
    sides = {f"old ({commit})": old, "new": ServerSpec(name="trio-obs", program="trio-obs")}
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(args.rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            got = measure_side(run, sides[name], loads, args)
            figures[name].append(got)
            shown = ", ".join(f"{k} {_shown(v)}" for k, v in got.items())
            run.say(f"round {i + 1} {name}: {shown}")
    print(f"| figure | {' | '.join(names)} | new \u00f7 old: median (each pair) |")
    print("|---|---|---|---|")
    old_figs, new_figs = figures[names[0]], figures[names[1]]
    for key in old_figs[0] if old_figs else []:
        ratios = [n[key] / o[key] for o, n in zip(old_figs, new_figs, strict=True) if o[key]]
        medians = [_median([f[key] for f in figures[name]]) for name in names]
        better = "lower is better" if key.endswith(LOWER_IS_BETTER) else "higher is better"
        spread = ", ".join(f"{r:.2f}" for r in ratios)
        print(
            f"| {key} | {_shown(medians[0])} | {_shown(medians[1])} |"
            f" {_median(ratios):.2f}\u00d7 ({spread}; {better}) |"
        )


if __name__ == "__main__":
    main()
