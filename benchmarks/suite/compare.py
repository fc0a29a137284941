"""``--compare REV``: trio-obs of another revision, side by side in the same run.

REV is a git revision of this repository (exported with ``git archive`` into
``benchmarks/.cache/compare/<commit>/src``: no worktree is registered, nothing in the
repository changes) or the path of another checkout. Either gets a venv of its own
(``.../venv``, ``pip install -e``), made once and reused. The benchmark's own server
script (``servers/trio_obs_server.py``, which imports only what every revision has)
runs with that venv's Python, so old and new are driven by exactly the same harness code.
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path
from typing import Any

from harness import CACHE, HERE, ChildError, ServerSpec
from suite.measure import Run, git_out
from suite.model import Comparison, Results

ROOT = HERE.parent


def prepare(rev: str, say: Any) -> tuple[ServerSpec, str]:
    """A :class:`ServerSpec` for trio-obs at ``rev`` (a revision or a checkout's path)."""
    path = Path(rev).expanduser()
    if path.is_dir() and (path / "pyproject.toml").exists():
        src = path.resolve()
        commit = git_out("rev-parse", "--short", "HEAD", cwd=src) or "?"
        home = CACHE / "compare" / ("path-" + "-".join(src.parts[-2:]))
    else:
        full = git_out("rev-parse", "--verify", f"{rev}^{{commit}}", cwd=ROOT)
        if not full:
            raise ChildError(f"{rev!r} is neither a git revision here nor a checkout's path")
        commit = full[:7]
        home = CACHE / "compare" / full[:12]
        src = home / "src"
        if not (src / "pyproject.toml").exists():
            say(f"compare: exporting {rev} ({commit}) to {src}")
            src.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", "--format=tar", full],
                capture_output=True, check=True, timeout=120,
            )  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    env_dir = home / "venv"
    python = env_dir / "bin" / "python"
    marker = env_dir / ".installed"
    if not marker.exists():
        say(f"compare: making a venv for {commit} in {env_dir}")
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", str(src), "pyinstrument>=4.6"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if done.returncode != 0:
            raise ChildError(f"pip install of {commit} failed: {done.stderr[-1500:]}")
        marker.write_text(commit, encoding="utf-8")
    return ServerSpec(name=f"trio-obs@{rev}", program="trio-obs", python=str(python)), commit


def micro_broker(run: Run, python: str) -> dict[str, Any] | None:
    """The in-process broker figures measured with the other revision's trio-obs."""
    cmd = [python, str(HERE / "micro.py"), "--only", "broker"]
    if run.quick:
        cmd.append("--quick")
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=240, check=True, cwd=HERE.parent
        )
    except (subprocess.SubprocessError, OSError) as exc:
        run.skip(f"compare: broker of the other revision: {exc}")
        return None
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def figures(res: Results, name: str, old_broker: dict[str, Any] | None) -> list[list[Any]]:
    """[figure, old, new, unit, better] for the figures the team compares on."""
    rows: list[list[Any]] = []
    new, old = res.load("trio-obs", "100x1000"), res.load(name, "100x1000")
    if new and old:
        rows.append(["p99 at 100 x 1,000", old.p99_ms, new.p99_ms, "ms", "lower"])
        rows.append(["p50 at 100 x 1,000", old.p50_ms, new.p50_ms, "ms", "lower"])
        rows.append([
            "server CPU / delivery at 100 x 1,000", old.cpu_us_per_delivery,
            new.cpu_us_per_delivery, "µs", "lower",
        ])  # fmt: skip
    for label in ("1000x100", "1000x1000"):
        new_l, old_l = res.load("trio-obs", label), res.load(name, label)
        if new_l and old_l:
            rows.append([f"p99 at {label}", old_l.p99_ms, new_l.p99_ms, "ms", "lower"])
    if "trio-obs" in res.max_rate and name in res.max_rate:
        rows.append([
            "max deliveries/s at 1,000 clients", res.max_rate[name].deliveries_per_s,
            res.max_rate["trio-obs"].deliveries_per_s, "/s", "higher",
        ])  # fmt: skip

    def producer(broker: list[dict[str, Any]], subs: int, field: str) -> float | None:
        for b in broker:
            if b["subscribers"] == subs and field in b:
                return float(b[field]["p50"])
        return None

    new_b = res.micro.get("broker", [])
    old_b = (old_broker or {}).get("broker", [])
    for label, field, subs, unit in (
        ("producer's own time / emit, 0 subscribers", "producer_us", 0, "µs"),
        ("producer's own time / emit, 0 subscribers, caches evicted", "producer_cold_us", 0,
         "µs"),
        ("producer's own time / emit, 1000 subscribers", "producer_us", 1000, "µs"),
        ("producer's calls / emit, 1000 subscribers", "producer_calls", 1000, "calls"),
    ):  # fmt: skip
        o, n = producer(old_b, subs, field), producer(new_b, subs, field)
        if o is not None and n is not None:
            rows.append([label, o, n, unit, "lower"])
    other = res.meta.get("ingest_other", {}).get(name)
    if res.ingest is not None and other:
        rows.append(["ingest stored/s", other["stored_per_s"], res.ingest.stored_per_s, "/s",
                     "higher"])  # fmt: skip
        rows.append(["server CPU / ingested event", other["cpu_us_per_event"],
                     res.ingest.cpu_us_per_event, "µs", "lower"])  # fmt: skip
    mixes = res.meta.get("ingest_mix") or {}
    for kind, unit in (("json", "events"), ("otlp", "spans")):
        o, n = mixes.get(name, {}).get(kind), mixes.get("trio-obs", {}).get(kind)
        if o and n:
            rows.append([f"mix {kind}: {unit} stored/s", o["units_per_s"], n["units_per_s"],
                         "/s", "higher"])  # fmt: skip
            rows.append([f"mix {kind}: server CPU / {unit[:-1]}", o["cpu_us_per_unit"],
                         n["cpu_us_per_unit"], "µs", "lower"])  # fmt: skip
            rows.append([f"mix {kind}: p99 POST → `all` client", o["p99_ms"], n["p99_ms"],
                         "ms", "lower"])  # fmt: skip
    live = res.meta.get("ingest_live") or {}
    if name in live and "trio-obs" in live:
        for q in ("p50", "p99"):
            rows.append([f"live span starts (1,000/s): {q} POST → client", live[name][f"{q}_ms"],
                         live["trio-obs"][f"{q}_ms"], "ms", "lower"])  # fmt: skip
    stable = {(s.server, s.what): s.per_unit for s in res.stable if not s.error}
    for what in ("delivery", "ingested event"):
        o, n = stable.get((name, what)), stable.get(("trio-obs", what))
        if o and n:
            rows.append([f"instructions / {what} (callgrind)", o, n, "", "lower"])
    return rows


def compare(run: Run, rev: str, spec: ServerSpec, commit: str, old_broker: Any) -> None:
    """Fill ``results.compare`` once the run measured both."""
    run.results.compare = Comparison(
        rev=rev, commit=commit, figures=figures(run.results, spec.name, old_broker)
    )
