"""One node of the cluster benchmark: trio-obs serving on a free loopback port, on Redis
(``--redis URL``) or alone (SQLite ``:memory:``), emitting events when told.

Driven line by line over stdin by ``benchmarks/cluster/run.py`` (replies on stdout):

- prints ``READY <port>`` once it listens;
- ``COUNT`` -> ``COUNT <n>``: open subscriptions on this node;
- ``EMIT <run> <rate> <count> <max_seconds>`` -> ``EMITTED <json>``: publishes ``count``
  ``tool:output`` events at ``rate`` per second through the hub (the producer runs in
  this node's process, as an embedded runner's would), each stamped in its chunk with
  its *scheduled* time on the monotonic clock, which the Node load generator reads too;
- ``QUIT``.

A pacer thread sleeps until each scheduled time and wakes the trio loop, so the
schedule holds to tens of microseconds rather than the event loop's 1 ms timer grain.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import trio

import trio_obs
from trio_obs import ServerConfig
from trio_obs.core.events import ToolOutputEvent, ToolStartEvent
from trio_obs.core.wire import encode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the bench's own modules
from micro import TaskTime

EXECUTION = "bench-exec"
TOOL_USE = "toolu_bench_0001"
MAX_BATCH = 200


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def chunk(run: str, scheduled: float, pad: int) -> str:
    """What the load generator reads: ``R<run>:<scheduled monotonic seconds>:`` + padding."""
    return f"R{run}:{scheduled:.6f}:" + "x" * pad


def pad_for(size: int) -> int:
    """Padding that makes an event's JSON about ``size`` bytes."""
    probe = ToolOutputEvent(
        execution_id=EXECUTION, tool_use_id=TOOL_USE, chunk=chunk("0", 0.0, 0), seq=100_000,
        timestamp="2026-01-01T00:00:00.000Z",
    )  # fmt: skip
    return max(0, size - len(encode(probe)))


class Pacer:
    """A thread that wakes the trio loop at each scheduled time (wake-ups coalesce)."""

    def __init__(self, t0: float, rate: float, count: int) -> None:
        self.t0, self.rate, self.count = t0, rate, count
        self.stop = threading.Event()
        self.token = trio.lowlevel.current_trio_token()
        self.send, self.receive = trio.open_memory_channel[None](1)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for i in range(self.count):
            delay = self.t0 + i / self.rate - time.monotonic()
            if (delay > 0 and self.stop.wait(delay)) or self.stop.is_set():
                return
            try:
                self.token.run_sync_soon(self._wake)
            except trio.RunFinishedError:
                return

    def _wake(self) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self.send.send_nowait(None)


def execution_ids(n: int) -> list[str]:
    """The executions the events go to, in turn (one: the historical ``bench-exec``)."""
    return [EXECUTION] if n == 1 else [f"{EXECUTION}-{i}" for i in range(n)]


async def emit(
    hub: trio_obs.Hub,
    run: str,
    rate: float,
    count: int,
    max_seconds: float,
    pad: int,
    names: list[str],
) -> None:
    """Publish ``count`` events at ``rate``/s; the due ones go together as one batch."""
    t0 = time.monotonic() + 0.05
    deadline = t0 + max_seconds
    pacer = Pacer(t0, rate, count)
    pacer.thread.start()
    emitted = batches = 0
    worst = 0.0
    own = TaskTime(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(own)
    try:
        while emitted < count and time.monotonic() < deadline:
            now = time.monotonic()
            due = min(count, math.floor((now - t0) * rate) + 1, emitted + MAX_BATCH)
            if due <= emitted:
                await pacer.receive.receive()
                continue
            worst = max(worst, now - (t0 + emitted / rate))
            events = [
                ToolOutputEvent(
                    execution_id=names[i % len(names)],
                    tool_use_id=TOOL_USE,
                    chunk=chunk(run, t0 + i / rate, pad),
                )
                for i in range(emitted, due)
            ]
            await hub.publish(events)  # the producer waits for its own batch's durability only
            emitted, batches = due, batches + 1
    finally:
        pacer.stop.set()
        trio.lowlevel.remove_instrument(own)
    report = {
        "run": run,
        "emitted": emitted,
        "batches": batches,
        "worstLagMs": round(worst * 1000, 3),
        "seconds": round(time.monotonic() - t0, 3),
        # The producer task's own CPU: building the events and publishing them (on Redis,
        # the client's side of the script call; on SQLite, handing them to the writer).
        "producerCpuSeconds": round(own.total, 4),
    }
    say("EMITTED " + orjson.dumps(report).decode())


async def control(
    obs: trio_obs.Observability, nursery: trio.Nursery, pad: int, executions: int = 1
) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    started = False
    while data := await stdin.receive_some(65536):
        buffer += data
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            cmd, *args = raw.decode().split() or [""]
            if cmd == "COUNT":
                say(f"COUNT {len(obs.hub.subscriptions())}")
            elif cmd == "EMIT":
                names = execution_ids(executions)
                if not started:  # the tool uses whose output is streamed (their starts name them)
                    starts = [
                        ToolStartEvent(
                            execution_id=e, tool_use_id=TOOL_USE, tool="Bash", input_summary="b"
                        )
                        for e in names
                    ]
                    await obs.hub.publish(starts)
                    started = True
                run, rate, count, seconds = args[0], float(args[1]), int(args[2]), float(args[3])
                nursery.start_soon(emit, obs.hub, run, rate, count, seconds, pad, names)
            elif cmd == "QUIT":
                return
            elif cmd:
                say(f"ERROR unknown command {cmd}")


@asynccontextmanager
async def opened(redis: str | None, replicas: int) -> AsyncIterator[trio_obs.Observability]:
    if redis:
        options = {"replicas": replicas} if replicas else {}
        async with trio_obs.open_redis_observability(redis, **options) as obs:
            yield obs
    else:
        async with trio_obs.open_observability(":memory:") as obs:
            yield obs


async def main(args: argparse.Namespace) -> None:
    config = ServerConfig(host="127.0.0.1", port=0, max_connections=20_000)
    with trio.move_on_after(args.max_seconds):
        async with opened(args.redis, args.replicas) as obs, trio.open_nursery() as nursery:
            port = await nursery.start(trio_obs.serve, obs, config)
            say(f"READY {port}")
            await control(obs, nursery, pad_for(args.event_bytes), args.executions)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default=None, help="Redis URL (default: alone, on SQLite)")
    parser.add_argument("--event-bytes", type=int, default=400)
    parser.add_argument(
        "--replicas", type=int, default=0, help="acknowledge once N replicas have it (WAIT)"
    )
    parser.add_argument(
        "--executions", type=int, default=1,
        help="spread the events over N executions, in turn (a cluster's shards)",
    )  # fmt: skip
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="hard lifetime limit")
    trio.run(main, parser.parse_args())
