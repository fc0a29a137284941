"""The README's Python examples run as written, twice in a row (against a temporary store)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from support import ServerProcess, environment

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment(),
    )


def test_the_embedding_example_runs_and_prints_what_it_says_twice(tmp_path: Path) -> None:
    block = next(b for b in python_blocks() if "open_observability" in b)
    script = block.replace('"runs.db"', repr(str(tmp_path / "runs.db")))
    for _ in range(2):  # the second run prints its own events, not the first run's
        done = run(script)
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


def test_the_open_stream_example_runs_against_the_demo_twice() -> None:
    block = next(b for b in python_blocks() if "open_stream" in b)
    server = ServerProcess("--demo", "--db", ":memory:")
    try:
        script = block.replace("http://127.0.0.1:3001", server.url())
        for _ in range(2):
            done = run(script)
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            assert lines and lines[-1].endswith(" tool:end")
            assert all(line.split()[2].startswith("tool:") for line in lines)
    finally:
        assert server.stop() == 0


def test_the_search_example_runs_against_the_demo() -> None:
    block = next(b for b in python_blocks() if "trio_obs.search" in b)
    server = ServerProcess("--demo", "--db", ":memory:")
    try:
        done = run(block.replace("http://127.0.0.1:3001", server.url()))
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith("live: ")
        found = [line for line in lines if line.startswith("found: ")]
        assert 1 <= len(found) <= 3 and all("<mark>" in line for line in found)
    finally:
        assert server.stop() == 0
