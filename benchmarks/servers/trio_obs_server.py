"""The trio-obs server embedded in one process, emitting events on a steady schedule.

Driven line by line over stdin by ``benchmarks/run.py`` (replies on stdout):

- prints ``READY <port>`` once it listens;
- ``COUNT`` -> ``COUNT <n>``: open subscriptions (connected clients);
- ``EMIT <run> <rate> <count> <max_seconds>`` -> ``EMITTED <json>``: emits ``count``
  ``tool:output`` events at ``rate`` per second through ``broker.publish``, each
  stamped (in its chunk) with its *scheduled* emit time, so a producer that falls
  behind shows as latency; gives up at ``max_seconds`` past the start;
- ``COMMITS RESET`` -> ``OK``; ``COMMITS`` -> ``COMMITS <json>``: the store's group commits
  since the reset (count, events, p50 / p99 / max / mean seconds), observed in-process;
- ``PROFILE START`` / ``PROFILE STOP <path>`` -> ``PROFILED <json>``: pyinstrument on
  the trio thread; the text tree goes to ``path``, the hottest functions in the reply;
- ``QUIT``.

``--no-search-index`` leaves the search index out of every write (the same store
otherwise): the search section measures ingest with and without it in the same run.

A pacer thread sleeps until each scheduled time and wakes the trio loop, so the
schedule is held to tens of microseconds instead of the event loop's 1 ms timer grain.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import trio

import trio_obs
from trio_obs import ServerConfig
from trio_obs.core.events import ToolOutputEvent, ToolStartEvent
from trio_obs.core.wire import encode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for schedule
from schedule import Schedule

EXECUTION = "bench-exec"
TOOL_USE = "toolu_bench_0001"


def say(line: str) -> None:
    """One reply line to the runner."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def pad_for(event_bytes: int) -> int:
    """How many pad characters make an emitted event's JSON ``event_bytes`` long."""
    probe = ToolOutputEvent(
        execution_id=EXECUTION, tool_use_id=TOOL_USE, chunk=chunk_of("0", 0.0, 0), seq=100000
    )
    return max(0, event_bytes - len(encode(probe)))


def chunk_of(run: str, scheduled: float, pad: int) -> str:
    """The chunk the load generator reads: run id, scheduled monotonic time, padding."""
    return f"R{run}:{scheduled:.6f}:" + "x" * pad


class Pacer:
    """A thread that wakes the trio loop at each scheduled time (coalescing wake-ups)."""

    def __init__(self, t0: float, rate: float, count: int) -> None:
        self.t0, self.rate, self.count = t0, rate, count
        self.pending = False
        self.stop = threading.Event()
        self.token = trio.lowlevel.current_trio_token()
        self.send, self.receive = trio.open_memory_channel[None](1)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for i in range(self.count):
            delay = self.t0 + i / self.rate - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return
            if self.stop.is_set():
                return
            if not self.pending:
                self.pending = True
                try:
                    self.token.run_sync_soon(self._wake)
                except trio.RunFinishedError:
                    return

    def _wake(self) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self.send.send_nowait(None)

    async def wait(self) -> None:
        """Until the next wake-up."""
        await self.receive.receive()
        self.pending = False


async def emit(
    obs: trio_obs.Observability, run: str, rate: float, count: int, max_seconds: float, pad: int
) -> None:
    """Emit ``count`` events at ``rate``/s, each stamped with its scheduled time."""
    schedule = Schedule(rate, count, max_seconds)
    pacer = Pacer(schedule.t0, rate, count)
    pacer.thread.start()
    try:
        while not schedule.finished:
            due = schedule.due()
            if not due:
                await pacer.wait()
                continue
            events = [
                ToolOutputEvent(
                    execution_id=EXECUTION,
                    tool_use_id=TOOL_USE,
                    chunk=chunk_of(run, schedule.scheduled(i), pad),
                )
                for i in due
            ]
            # The producer awaits its own batch's durability (and nothing else).
            await obs.broker.publish(events)
            schedule.emitted = due.stop
            schedule.batches += 1
    finally:
        pacer.stop.set()
    say(schedule.report(run))


class Commits:
    """Durations of the store's group commits, chained after the server's own observer."""

    def __init__(self, store: Any) -> None:
        self.seconds: list[float] = []
        self.events = 0
        # Optional: where the store has no commit observer, COMMITS reports none, and the
        # runner reads the commit histogram from /metrics instead.
        self._next = getattr(store, "commit_observer", None)
        if hasattr(store, "commit_observer"):
            store.commit_observer = self.observe

    def observe(self, seconds: float, events: int) -> None:
        self.seconds.append(seconds)
        self.events += events
        if self._next is not None:
            self._next(seconds, events)

    def reset(self) -> None:
        self.seconds.clear()
        self.events = 0

    def stats(self) -> dict[str, Any]:
        ordered = sorted(self.seconds)
        n = len(ordered)
        if not n:
            return {"commits": 0}
        return {
            "commits": n,
            "events": self.events,
            "p50": ordered[n // 2],
            "p99": ordered[min(n - 1, int(n * 0.99))],
            "max": ordered[-1],
            "mean": sum(ordered) / n,
        }


class Profile:
    """pyinstrument on the trio thread, on demand."""

    def __init__(self) -> None:
        self.profiler: Any = None

    def start(self) -> None:
        from pyinstrument import Profiler

        self.profiler = Profiler(interval=0.0005, async_mode="disabled")
        self.profiler.start()

    def stop(self, path: str) -> dict[str, Any]:
        if self.profiler is None:
            return {"error": "not started"}
        session = self.profiler.stop()
        self.profiler = None
        with open(path, "w", encoding="utf-8") as out:
            from pyinstrument.renderers import ConsoleRenderer

            out.write(ConsoleRenderer(unicode=False, color=False, short_mode=False).render(session))
        own: Counter[str] = Counter()
        idle = 0.0
        root = session.root_frame(trim_stem=False)
        stack = [root] if root is not None else []
        while stack:
            frame = stack.pop()
            stack.extend(frame.children)
            if frame.function == "epoll.poll":
                idle += frame.total_self_time
            elif frame.function and not frame.is_synthetic:
                where = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
                own[where] += frame.total_self_time
        total = session.duration or 1.0
        return {
            "note": "wall-clock samples of the trio thread; % of the profiled time, idle"
            " (epoll.poll) left out",
            "seconds": round(session.duration, 3),
            "cpuSeconds": round(session.cpu_time or 0.0, 3),
            "idlePct": round(100 * idle / total, 1),
            "topSelf": [[name, round(100 * t / total, 1)] for name, t in own.most_common(15)],
        }


async def control(obs: trio_obs.Observability, nursery: trio.Nursery, pad: int) -> None:
    """Read commands from stdin until QUIT or end of input."""
    profile = Profile()
    commits = Commits(obs.store)
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    while True:
        data = await stdin.receive_some(65536)
        if not data:
            return
        buffer += data
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            parts = raw.decode().split()
            if not parts:
                continue
            cmd, args = parts[0], parts[1:]
            if cmd == "COUNT":
                say(f"COUNT {obs.broker.connection_count()}")
            elif cmd == "EMIT":
                run, rate, count, max_seconds = (
                    args[0],
                    float(args[1]),
                    int(args[2]),
                    float(args[3]),
                )
                nursery.start_soon(emit, obs, run, rate, count, max_seconds, pad)
            elif cmd == "COMMITS" and args[:1] == ["RESET"]:
                commits.reset()
                say("OK")
            elif cmd == "COMMITS":
                say("COMMITS " + orjson.dumps(commits.stats()).decode())
            elif cmd == "PROFILE" and args[0] == "START":
                profile.start()
                say("OK")
            elif cmd == "PROFILE" and args[0] == "STOP":
                say("PROFILED " + orjson.dumps(profile.stop(args[1])).decode())
            elif cmd == "QUIT":
                return
            else:
                say(f"ERROR unknown command {cmd}")


async def main(args: argparse.Namespace) -> None:
    config = ServerConfig(
        host="127.0.0.1", port=0, max_connections=20000, queue_size=args.queue_size
    )
    with trio.move_on_after(args.max_seconds):
        async with (
            trio_obs.open_observability(args.db, queue_size=args.queue_size) as obs,
            trio.open_nursery() as nursery,
        ):
            port = await nursery.start(trio_obs.serve, obs, config)
            # The tool use whose output is streamed (its start names the tool).
            start = ToolStartEvent(
                execution_id=EXECUTION, tool_use_id=TOOL_USE, tool="Bash", input_summary="bench"
            )
            await obs.broker.publish([start])
            say(f"READY {port}")
            await control(obs, nursery, pad_for(args.event_bytes))
            nursery.cancel_scope.cancel()


def without_search_index() -> None:
    """Leave the search index's statement out of every write (benchmarks only)."""
    from trio_obs.hub import search_sql
    from trio_obs.hub.sqlite import Store

    statements = Store._statements

    def unindexed(stage: Any) -> Any:
        return [s for s in statements(stage) if s[0] != search_sql.INDEX_ROWS]

    Store._statements = staticmethod(unindexed)  # type: ignore[method-assign]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=":memory:")
    parser.add_argument("--queue-size", type=int, default=1024)
    parser.add_argument("--event-bytes", type=int, default=400)
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="hard lifetime limit")
    parser.add_argument("--no-search-index", action="store_true", help="write no search index")
    arguments = parser.parse_args()
    if arguments.no_search_index:
        without_search_index()
    trio.run(main, arguments)
