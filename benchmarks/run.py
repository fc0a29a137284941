"""trio-obs benchmarks: side by side with baseline servers and a ceiling, one load
generator, one run.

``python benchmarks/run.py`` runs the whole suite (about 10 minutes at most, loopback
only), prints the tables and the SPEC §8 targets, and writes every figure to
``benchmarks/results/latest.json`` and ``benchmarks/results/YYYY-MM-DD.json``.
``--quick`` runs a subset in about a minute (written to ``quick-latest.json``).
See ``benchmarks/README.md`` for what each figure means. The work is done by the
``suite`` package: measure (``measure``, ``sections``, ``stable``, ``compare``,
``viewer``, ``search``), judge, render, persist, over the typed result of ``suite.model``.

Exit status: 1 only when trio-obs's p99 at 100 clients x 1,000 events/s exceeds the
plan's 100 ms (or that load could not be measured at all); otherwise 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import (
    HERE,
    SERVERS,
    ChildError,
    ServerSpec,
    ensure_node_modules,
    node_available,
    stop_all,
)
from suite import compare, judge, measure, persist, render, sections, stable, viewer
from suite import search as search_section
from suite.measure import RESULTS, Run, git_out
from suite.model import Comparison

SECTIONS = (
    "codec", "broker", "e2e", "slow", "repro", "ingest", "memory", "stable", "viewer", "search",
)  # fmt: skip
NEEDS_SERVERS = {"e2e", "slow", "repro", "ingest", "memory"}


def meta(args: argparse.Namespace) -> dict[str, Any]:
    """Where and how this run ran."""

    def out(cmd: list[str]) -> str | None:
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    import trio_obs

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "node": out(["node", "--version"]),
        "cc": out(["cc", "--version"]).splitlines()[0] if out(["cc", "--version"]) else None,
        "trio_obs": trio_obs.__version__,
        "commit": git_out("rev-parse", "--short", "HEAD"),
        "dirty": bool(git_out("status", "--porcelain", "src", cwd=HERE.parent)),
        "args": vars(args),
    }


def loadgen_ready(run: Run, sections: str) -> bool:
    """Whether the Node load generator can run (else ``sections`` are skipped, saying why)."""
    if not node_available():
        run.skip(f"{sections}: the load generator needs node (and npm)")
        return False
    try:
        ensure_node_modules()
    except (ChildError, OSError, subprocess.SubprocessError) as exc:
        run.skip(f"{sections}: cannot install ws: {exc}")
        return False
    return True


def execute(args: argparse.Namespace) -> int:
    """Every selected section; then the tables, the targets and the results files."""
    run = Run(args)
    for old_log in run.log_dir.glob("*.log"):  # each run's logs only
        old_log.unlink()
    res = run.results
    res.meta = meta(args)
    only = set(args.only or SECTIONS)
    names = [s for s in args.servers.split(",") if s]
    if "node-plan" in names and not node_available():
        run.skip("node-plan: node is not installed")
        names.remove("node-plan")
    if "ceiling" in names and not (shutil.which("cc") or shutil.which("gcc")):
        run.skip("ceiling: no C compiler (cc) to build it")
        names.remove("ceiling")
    specs = [ServerSpec(name=name, program=name) for name in names]
    old: ServerSpec | None = None
    old_broker = None
    if args.compare:
        try:
            old, commit = compare.prepare(args.compare, run.say)
        except (ChildError, OSError, subprocess.SubprocessError) as exc:
            res.compare = Comparison(rev=args.compare, error=str(exc))
            run.skip(f"compare: {exc}")
        else:
            specs.insert(1 if specs and specs[0].name == "trio-obs" else 0, old)
    if {"codec", "broker"} & only:
        measure.micro(run)
        if old is not None and "broker" in only:
            old_broker = compare.micro_broker(run, old.python)
    if NEEDS_SERVERS & only and loadgen_ready(run, "e2e, slow, repro, ingest, memory"):
        sections.servers_sections(run, specs)
    if "stable" in only and node_available():
        stable.stable(run, specs)
    if "viewer" in only:
        viewer.viewer(run)
    if "search" in only and loadgen_ready(run, "search"):
        search_section.search(run)
    if old is not None:
        compare.compare(run, args.compare, old, commit, old_broker)
    res.meta["seconds"] = round(time.monotonic() - run.budget.start, 1)
    res.targets = judge.targets(res)
    res.table = render.table(res, args.all_steps)
    print(render.everything(res, args.all_steps))
    partial = args.only is not None or args.servers != ",".join(SERVERS)
    paths = persist.write(res, RESULTS, quick=run.quick, partial=partial)
    run.say("wrote " + " and ".join(str(p) for p in paths))
    return judge.exit_status(res)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        description="trio-obs benchmarks side by side with baseline servers and a ceiling."
    )
    p.add_argument("--quick", action="store_true", help="a subset in about a minute")
    p.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=None,
        help="comma-separated sections: " + ",".join(SECTIONS),
    )
    p.add_argument(
        "--servers", default=",".join(SERVERS), help=f"comma-separated, of {','.join(SERVERS)}"
    )
    p.add_argument(
        "--loadgen-procs",
        type=int,
        default=2 if (os.cpu_count() or 1) >= 2 else 1,
        help="Node load generator processes for the loads one cannot take",
    )
    p.add_argument("--queue-size", type=int, default=1024, help="trio-obs per-connection queue")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every load's length")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds (default 600, quick 100; 1.6 times that with --compare)",
    )
    p.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip the pyinstrument run"
    )
    p.add_argument(
        "--all-steps", action="store_true", help="also print every step of the max-rate search"
    )
    p.add_argument(
        "--compare",
        metavar="REV",
        help="also measure trio-obs at REV (a git revision, or another checkout's path)",
    )
    p.add_argument(
        "--render", metavar="JSON", help="print the tables and targets of a results file; no run"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.only:
        unknown = set(args.only) - set(SECTIONS)
        if unknown:
            parser().error(f"unknown sections: {','.join(sorted(unknown))}")
    if args.render:
        res = persist.read(Path(args.render))
        res.targets = judge.targets(res)
        print(render.everything(res, args.all_steps))
        return 0

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        return execute(args)
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
