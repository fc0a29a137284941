"""The viewer section (``--only viewer``): ``benchmarks/viewer/run.py``, written and owned by
the viewer's own work, run as a child; its JSON is tabled as it comes.

Contract: ``python benchmarks/viewer/run.py --json-out FILE [--events N]`` writes one JSON
object to FILE (a quick run posts 5,000 events instead of 20,000); it also prints
(its last line that parses as a JSON object is taken) and exits 0. If the script is
absent, the section is skipped with a note.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from harness import HERE
from suite.measure import Run

SCRIPT = HERE / "viewer" / "run.py"


def viewer(run: Run) -> None:
    """Run the viewer's benchmark and keep its JSON."""
    if not SCRIPT.exists():
        run.results.viewer = {"skipped": f"{SCRIPT.relative_to(HERE.parent)} does not exist yet"}
        run.skip(f"viewer: {SCRIPT.relative_to(HERE.parent)} does not exist yet")
        return
    out = run.log_dir / "viewer.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(SCRIPT), "--json-out", str(out)]
    if run.quick:
        cmd += ["--events", "5000"]
    run.say("viewer: " + " ".join(cmd[1:]))
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, cwd=HERE.parent, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        run.results.viewer = {"skipped": f"could not run: {exc}"}
        run.skip(f"viewer: {exc}")
        return
    (run.log_dir / "viewer.log").write_text(done.stderr, encoding="utf-8")
    data = _last_json(out.read_text(encoding="utf-8") if out.exists() else done.stdout)
    if done.returncode != 0 or data is None:
        why = f"exit {done.returncode}, {'no JSON' if data is None else 'JSON kept'}"
        run.skip(f"viewer: {why} (see results/logs/viewer.log)")
        data = {**(data or {}), "skipped": why}
    run.results.viewer = data


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
