"""The README's Python examples run as written (against a temporary store)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_the_embedding_example_runs_and_prints_what_it_says(tmp_path: Path) -> None:
    block = next(b for b in python_blocks() if "open_observability" in b)
    script = block.replace('"runs.db"', repr(str(tmp_path / "runs.db")))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("watch at http://127.0.0.1:")
    assert lines[1:] == [
        "1 execution:status",
        "2 tool:start",
        "3 tool:output",
        "4 tool:end",
        "5 assertion:result",
    ]
    assert (tmp_path / "runs.db").exists()
