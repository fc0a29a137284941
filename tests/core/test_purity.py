"""The core is socket-free and clock-free (DESIGN.md §5): a test checks it, not a promise."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import trio_obs.core

CORE = Path(trio_obs.core.__file__).parent
IO_MODULES = {
    "trio", "sqlite3", "socket", "h11", "wsproto", "coredis", "httpx", "trio_websocket",
    "asyncio", "anyio", "selectors", "ssl", "threading", "subprocess", "os", "time",
}  # fmt: skip
CLOCK_CALLS = {"now", "utcnow", "time", "monotonic", "perf_counter", "time_ns", "today"}


def _modules() -> list[Path]:
    return sorted(CORE.glob("*.py"))


def test_no_core_module_imports_io() -> None:
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in IO_MODULES, f"{path.name} imports {name}"


def test_no_core_module_reads_a_clock() -> None:
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in CLOCK_CALLS, f"{path.name}:{node.lineno} reads a clock"


def test_importing_the_core_loads_no_io_module() -> None:
    # The package's __init__ re-exports everything (servers included): stand a bare
    # package in for it, so only the core's own imports run.
    probe = (
        "import sys, types; pkg = types.ModuleType('trio_obs'); "
        f"pkg.__path__ = [{str(CORE.parent)!r}]; sys.modules['trio_obs'] = pkg; "
        "import trio_obs.core.ledger, trio_obs.core.session, trio_obs.core.resume, "
        "trio_obs.core.wire, trio_obs.core.routing, trio_obs.core.stats; "
        f"print(sorted(m for m in {sorted(IO_MODULES - {'os', 'time', 'threading'})!r} "
        "if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    assert loaded == "[]", loaded
