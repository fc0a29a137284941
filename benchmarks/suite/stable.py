"""Stable figures: instructions per delivery and per ingested event, which do not move with
the machine the way a timing does.

``perf stat -e instructions`` needs the CPU's performance counters, which a virtual
machine often does not expose (this one answers ``<not supported>``); so each server runs
under ``valgrind --tool=callgrind --instr-atstart=no`` on a fixed small load, and
counting is switched on (``callgrind_control -i on``) only around the measured part:
start-up, imports, connecting and the warm-up are not counted. The load is light
enough that even a server slowed ~50x by valgrind keeps up, so each event goes out
alone in every run and the count is the same from run to run within a few percent.
Every thread of the server is counted (trio-obs's SQLite worker too).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path

import attrs

from harness import CACHE, ChildError, Deployment, ServerSpec
from suite.measure import Run, drain
from suite.model import Stable

CLIENTS = 10
RATE = 5
COUNT = 20
"""10 clients x 5 events/s x 4 s: 200 deliveries per window. Light on purpose: under
callgrind trio-obs spends ~20-50 ms of wall time per event here, so at 20 or 100 events/s
events overlapped now and then, went out in batches, and the count moved by up to 2.5x
from run to run. Each event must go out alone for the count to be the same."""
WINDOWS = 3
"""Counted windows per server (1 in a quick run); the figure is the lowest. What varies
between windows is added work (threads waiting for each other, the GIL), never less, so
the lowest is the steadiest estimate: trio-obs's windows spread by ~10-20 %."""
INGEST_BATCHES = 20
"""20 batches of 100 events, one request at a time."""
OUT = CACHE / "callgrind"


def available() -> str | None:
    """Why stable figures cannot be taken here (None: they can)."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install valgrind)"
    return None


def _control(pid: int, *args: str) -> None:
    done = subprocess.run(
        ["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0 or "OK" not in done.stdout:
        raise ChildError(f"callgrind_control {' '.join(args)}: {done.stdout[-300:]}")


def _toggle(pid: int, on: bool) -> None:
    _control(pid, "-i", "on" if on else "off")


def _dumped(pid: int, tag: str) -> int:
    """Dump the counters (``callgrind_control -d``) and read the dump's total."""
    before = set(OUT.glob(f"{tag}.{pid}.out*"))
    _control(pid, "-d")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for path in set(OUT.glob(f"{tag}.{pid}.out*")) - before:
            found = re.findall(r"^totals:\s*([0-9]+)", path.read_text(), re.M)
            if found:
                return int(found[0])
        time.sleep(0.1)
    raise ChildError(f"no callgrind dump for {tag}")


def _collected(log: Path, timeout: float = 60.0) -> int:
    """Instructions valgrind reports at exit (``Collected : N`` in its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = re.findall(r"Collected\s*:\s*([0-9]+)", text)
        if found:
            return int(found[-1])
        time.sleep(0.2)
    raise ChildError(f"no instruction count in {log}")


def _under_callgrind(spec: ServerSpec, tag: str) -> tuple[ServerSpec, Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"{tag}.log"
    log.unlink(missing_ok=True)
    prefix = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--log-file={log}",
        f"--callgrind-out-file={OUT / tag}.%p.out",
    ]  # fmt: skip
    if spec.program == "node-plan":
        prefix.append("--smc-check=all-non-file")  # V8 writes the code it runs
    # A fixed hash seed: with a random one, each process's dicts and sets hash (and
    # collide) differently, and trio-obs's count moved by ~35 % from process to process.
    env = (*spec.env, ("PYTHONHASHSEED", "0"))
    return attrs.evolve(spec, prefix=tuple(prefix), env=env), log


def fan_out(run: Run, spec: ServerSpec) -> Stable:
    """Instructions per delivery: CLIENTS clients, RATE events/s, COUNT events."""
    load = f"{CLIENTS} clients x {RATE}/s, {COUNT} events"
    out = Stable(server=spec.name, what="delivery", load=load)
    tag = f"{spec.name}-fanout"
    vg_spec, _log = _under_callgrind(spec, tag)
    server = pool = None
    try:
        server = Deployment(vg_spec, log_dir=run.log_dir, queue_size=run.args.queue_size)
        pool = run.new_pool(f"stable-{spec.name}")
        pool.connect(server.subscribe_urls, CLIENTS, timeout=120)
        if server.wait_count(CLIENTS, 60) != CLIENTS:
            raise ChildError("the clients did not all connect")
        server.emit(f"w{run.next_run()}", RATE, RATE, 30)  # warm-up, not counted
        time.sleep(1.0)  # its last deliveries are out before counting starts
        pid = server.publisher.child.proc.pid
        counts = []
        for _ in range(1 if run.quick else WINDOWS):
            run_id = run.next_run()
            pool.reset(run_id)
            _control(pid, "-z")
            _control(pid, "-i", "on")
            emitted = server.emit(run_id, RATE, COUNT, 60)
            reports = drain(pool, emitted["emitted"] * CLIENTS, timeout=60)
            _control(pid, "-i", "off")
            units = sum(r["count"] for r in reports)
            counts.append((_dumped(pid, tag) / units if units else math.inf, units))
        out.per_unit, out.units = min(counts)
        out.windows = [round(c) for c, _ in counts]
        out.instructions = round(out.per_unit * out.units)
    except (ChildError, OSError, subprocess.SubprocessError) as exc:
        out.error = str(exc)
    finally:
        if pool is not None:
            with contextlib.suppress(ChildError):
                pool.close()
            pool.stop()
        if server is not None:
            server.stop()
    return out


def ingested(run: Run, spec: ServerSpec) -> Stable:
    """Instructions per ingested event: INGEST_BATCHES POSTs of 100, one at a time, with one
    WebSocket client receiving them."""
    out = Stable(server=spec.name, what="ingested event", load=f"{INGEST_BATCHES}x100 events")
    vg_spec, log = _under_callgrind(spec, f"{spec.name}-ingest")
    server = pool = None
    try:
        server = Deployment(vg_spec, log_dir=run.log_dir, queue_size=run.args.queue_size)
        pool = run.new_pool(f"stable-ingest-{spec.name}")
        pool.connect(server.subscribe_urls, 1, timeout=120)
        server.wait_count(1, 60)
        http = server.publisher.http
        warm = run.next_run()
        pool.children[0].request(f"INGEST {http} {warm} 2 100 1 bench-ingest 60", "INGESTED", 120)
        run_id = run.next_run()
        pool.reset(run_id)
        pid = server.publisher.child.proc.pid
        _toggle(pid, True)
        reply = json.loads(
            pool.children[0].request(
                f"INGEST {http} {run_id} {INGEST_BATCHES} 100 1 bench-ingest 120", "INGESTED", 180
            )
        )
        drain(pool, reply["accepted"], timeout=60)
        _toggle(pid, False)
        out.units = reply["accepted"]
        server.stop()
        out.instructions = _collected(log)
        out.per_unit = out.instructions / out.units if out.units else None
    except (ChildError, OSError, subprocess.SubprocessError) as exc:
        out.error = str(exc)
    finally:
        if pool is not None:
            with contextlib.suppress(ChildError):
                pool.close()
            pool.stop()
        if server is not None:
            server.stop()
    return out


def stable(run: Run, specs: list[ServerSpec]) -> None:
    """The stable figures of every server (and trio-obs's ingest)."""
    why = available()
    if why:
        run.skip(f"stable figures: {why}")
        return
    for spec in specs:
        if run.quick and spec.program in ("ws-broadcast", "node-plan"):
            continue
        if not run.budget.allows(25 if run.quick else 60):
            run.skip(f"stable figures of {spec.name} (time budget)")
            continue
        run.say(f"stable: {spec.name} under callgrind ({CLIENTS} x {RATE}/s)")
        result = fan_out(run, spec)
        run.results.stable.append(result)
        _say(run, result)
        if spec.program == "trio-obs" and (run.args.only is None or "ingest" in run.args.only
                                           or "stable" in run.args.only):  # fmt: skip
            result = ingested(run, spec)
            run.results.stable.append(result)
            _say(run, result)


def _say(run: Run, s: Stable) -> None:
    if s.error:
        run.say(f"  {s.server}: {s.what}: FAILED: {s.error[:200]}")
    else:
        run.say(f"  {s.server}: {s.per_unit:,.0f} instructions / {s.what} (over {s.units})")
