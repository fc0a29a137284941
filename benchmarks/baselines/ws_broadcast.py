"""Baseline: a Python ``websockets`` server built the usual way (encode once, ``broadcast()``).

Same control protocol, event and schedule as ``benchmarks/servers/trio_obs_server.py``
(see there): ``READY <port>``, ``COUNT``, ``EMIT <run> <rate> <count> <max_seconds>``,
``QUIT``. Each event is a ~400-byte ``tool:output`` JSON object with the same fields
as trio-obs sends (``seq`` included), encoded once with orjson and pushed to every
connection with ``websockets.asyncio.server.broadcast``. No store: this is the
fan-out alone, which is what a hand-rolled server usually is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for schedule
from schedule import Schedule

EXECUTION = "bench-exec"
TOOL_USE = "toolu_bench_0001"
CONNECTIONS: set[ServerConnection] = set()


def say(line: str) -> None:
    """One reply line to the runner."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def utc_now_iso() -> str:
    """ISO-8601 UTC with milliseconds, as trio-obs and the plan stamp events."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def event(run: str, scheduled: float, pad: int, seq: int) -> dict[str, object]:
    """The event: same keys, order and size as the trio-obs ``tool:output`` event."""
    return {
        "type": "tool:output",
        "executionId": EXECUTION,
        "toolUseId": TOOL_USE,
        "chunk": f"R{run}:{scheduled:.6f}:" + "x" * pad,
        "isStderr": False,
        "timestamp": utc_now_iso(),
        "seq": seq,
    }


def pad_for(event_bytes: int) -> int:
    """How many pad characters make an event's JSON ``event_bytes`` long."""
    return max(0, event_bytes - len(orjson.dumps(event("0", 0.0, 0, 100000))))


async def handler(conn: ServerConnection) -> None:
    """One client: greet it, then keep it in the broadcast set until it closes."""
    connected = {
        "type": "observability:connected",
        "executionId": "all",
        "message": "Connected to all observability events",
        "bufferedEventCount": 0,
        "timestamp": utc_now_iso(),
    }
    await conn.send(orjson.dumps(connected).decode())
    CONNECTIONS.add(conn)
    try:
        async for _ in conn:  # client messages are ignored
            pass
    except ConnectionClosed:
        pass  # a client that drops without a close frame is no error here
    finally:
        CONNECTIONS.discard(conn)


class Pacer:
    """A thread that wakes the event loop at each scheduled time (coalescing wake-ups)."""

    def __init__(self, t0: float, rate: float, count: int) -> None:
        self.t0, self.rate, self.count = t0, rate, count
        self.pending = False
        self.stop = threading.Event()
        self.loop = asyncio.get_running_loop()
        self.woken = asyncio.Event()
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
                    self.loop.call_soon_threadsafe(self.woken.set)
                except RuntimeError:  # the loop is closed
                    return

    async def wait(self) -> None:
        """Until the next wake-up."""
        await self.woken.wait()
        self.woken.clear()
        self.pending = False


async def emit(
    run: str, rate: float, count: int, max_seconds: float, pad: int, seq: list[int]
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
            for i in due:
                seq[0] += 1
                message = orjson.dumps(event(run, schedule.scheduled(i), pad, seq[0]))
                broadcast(CONNECTIONS, message, text=True)
                schedule.emitted = i + 1
                if schedule.past_deadline:
                    break
            schedule.batches += 1
            await asyncio.sleep(0)  # let the connections write, as a producer would
    finally:
        pacer.stop.set()
    say(schedule.report(run))


async def control(pad: int) -> None:
    """Read commands from stdin until QUIT or end of input."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:  # a daemon thread, so a blocked read never holds up exit
        for raw in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, raw)
        loop.call_soon_threadsafe(lines.put_nowait, "")

    threading.Thread(target=read_stdin, daemon=True).start()
    seq = [0]
    tasks: set[asyncio.Task[None]] = set()
    while True:
        raw = await lines.get()
        if not raw:
            return
        parts = raw.split()
        if not parts:
            continue
        cmd, args = parts[0], parts[1:]
        if cmd == "COUNT":
            say(f"COUNT {len(CONNECTIONS)}")
        elif cmd == "EMIT":
            run, rate, count, max_seconds = args[0], float(args[1]), int(args[2]), float(args[3])
            task = asyncio.create_task(emit(run, rate, count, max_seconds, pad, seq))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif cmd == "QUIT":
            return
        else:
            say(f"ERROR unknown command {cmd}")


async def main(args: argparse.Namespace) -> None:
    async with serve(handler, "127.0.0.1", 0, compression=None, backlog=4096) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        say(f"READY {port}")
        await control(pad_for(args.event_bytes))
        server.close(close_connections=False)
        for conn in list(CONNECTIONS):
            conn.transport.abort()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--event-bytes", type=int, default=400)
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="hard lifetime limit")
    cli = parser.parse_args()
    with contextlib.suppress(TimeoutError, KeyboardInterrupt):
        asyncio.run(asyncio.wait_for(main(cli), cli.max_seconds))
