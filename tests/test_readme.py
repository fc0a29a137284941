"""The README's Python examples run as written, twice in a row (against a temporary store)."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import httpx

from support import ServerProcess, environment
from trio_obs.core.protocol import ERROR_CODE_OF_STATUS, ErrorCode

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


RUN_BY_A_TEST = ("open_observability", "open_stream", "LiveSpanProcessor", "trio_obs.search")
"""What tells each Python example of the README apart: each is run below."""


def block_with(marker: str, *, but_not: str | None = None) -> str:
    [block] = [b for b in python_blocks() if marker in b and not (but_not and but_not in b)]
    return block


def run(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` on its own: no variable of the README's shell blocks is set."""
    env = {k: v for k, v in environment().items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_every_python_example_is_run_by_a_test() -> None:
    for block in python_blocks():
        assert [m for m in RUN_BY_A_TEST if m in block], block


def test_the_embedding_example_runs_and_prints_what_it_says_twice(tmp_path: Path) -> None:
    block = block_with("open_observability")
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
    block = block_with("open_stream", but_not="trio_obs.search")
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


def test_the_status_table_lists_every_error_code() -> None:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("### Close codes and HTTP statuses") : text.index("### Security")]
    http_codes = set(typing.get_args(ErrorCode)) - {"INVALID_MESSAGE", "INVALID_TOPIC",
                                                   "INVALID_FILTER"}  # fmt: skip
    for code in http_codes:
        assert f"`{code}`" in table, code
    for status, code in ERROR_CODE_OF_STATUS.items():
        assert f"| {status} `{code}`" in table or f"/ {status} `{code}`" in table, status


def test_the_opentelemetry_example_streams_into_the_server_on_its_own() -> None:
    server = ServerProcess("--db", ":memory:")
    try:
        done = run(block_with("LiveSpanProcessor").replace("http://127.0.0.1:3001", server.url()))
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # both exporters reached the server: none retried, none failed
        with httpx.Client(base_url=server.url(), trust_env=False) as http:
            [run_] = http.get("/api/executions").json()
            events = http.get(f"/api/executions/{run_['executionId']}/events").json()
    finally:
        assert server.stop() == 0
    assert [
        (e["type"], e.get("status") or e.get("tool") or e.get("resultStatus")) for e in events
    ] == [
        ("execution:status", "started"),
        ("tool:start", "get_weather"),
        ("tool:end", "done"),
        ("execution:status", "completed"),
    ]
    assert events[1]["inputSummary"] == '{"city": "Paris"}'
    assert events[0]["message"] == "planner started"


def test_the_search_example_runs_against_the_demo() -> None:
    block = block_with("trio_obs.search")
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
