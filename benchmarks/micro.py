"""In-process figures: the codec per event type, and the broker's cost per emit.

Run by ``benchmarks/run.py`` in a child process (``python benchmarks/micro.py``);
prints one JSON object on stdout. ``--quick`` does fewer iterations.

- codec: microseconds to ``encode`` and to ``decode_stream_event`` one event of each of
  the 11 stream types, timed in batches (p50 / p99 / max are of the batch means).
- broker, at 0 / 10 / 100 / 1,000 subscribers whose channels are drained by tasks:
  the dispatch path alone (``broker.dispatcher.dispatch([envelope], now)``, what each commit costs
  the writer per event), and end to end ``await broker.publish([event])`` (a SQLite
  commit, then dispatch), with the emit -> receive latency of the subscribers; and the
  producer's own cost per emit, as its task's CPU time and as the calls its task makes
  (a count of work that the state of the caches does not move). At 0 subscribers, also
  the producer's time when one subscriber evicts the caches after each emit (what 1,000
  subscribers' steps do between two of the producer's): see ``producer_cold_us``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
import trio.testing

import trio_obs
from trio_obs.core import events as ev  # modules that every revision has (--compare)
from trio_obs.core.protocol import ALL
from trio_obs.core.routing import Envelope
from trio_obs.core.wire import decode_stream_event, encode
from trio_obs.hub.dispatch import LiveSubscription

EXECUTION = "bench-exec"
TASK = "task-007"


def sample_events() -> list[ev.StreamEvent]:
    """One realistic event of each of the 11 stream types (as stored: with ``seq``)."""
    ts = "2025-01-15T10:30:00.123Z"
    entry = ev.TranscriptEntry(
        id="te-5f0c2a", timestamp=ts, sequence=42, execution_id=EXECUTION,
        instance_id="agent-1", entry_type="tool_use", category="action",
        summary="Ran the unit tests of the parser module; 3 failures in test_tokens.py",
        task_id=TASK, wave_number=2, details={"command": "pytest -q tests/parser"},
        duration_ms=1234.5,
    )  # fmt: skip
    assertion = ev.AssertionResult(
        id="as-77d1", task_id=TASK, execution_id=EXECUTION, category="tests",
        description="all parser tests pass", result="fail", timestamp=ts,
        chain_id="chain-3", evidence={"failed": 3, "passed": 120}, duration_ms=88.0,
    )  # fmt: skip
    bus = ev.MessageBusLogEntry(
        id="mb-19a0", event_id="evt-2201", timestamp=ts, source="scheduler",
        event_type="task.blocked", human_summary="task-007 is blocked on a missing credential",
        severity="error", category="scheduling", created_at=ts, correlation_id="corr-88",
        task_id=TASK, execution_id=EXECUTION, payload={"reason": "missing secret"},
    )  # fmt: skip
    common: dict[str, Any] = {"execution_id": EXECUTION, "timestamp": ts, "seq": 1234}
    return [
        ev.TranscriptEntryEvent(entry=entry, **common),
        ev.ToolStartEvent(
            tool_use_id="toolu_01ABC",
            tool="Bash",
            input_summary="pytest -q tests/parser --maxfail=5",
            task_id=TASK,
            **common,
        ),
        ev.ToolEndEvent(
            tool_use_id="toolu_01ABC",
            result_status="error",
            duration_ms=1234.5,
            output_summary="3 failed, 120 passed in 1.23s",
            is_error=True,
            **common,
        ),
        ev.ToolOutputEvent(
            tool_use_id="toolu_01ABC",
            chunk="tests/parser/test_tokens.py::test_ws FAILED\n",
            is_stderr=False,
            **common,
        ),
        ev.AssertionResultEvent(
            task_id=TASK, assertion=assertion, running_pass_rate=0.875, **common
        ),
        ev.SkillStartEvent(
            skill_trace_id="sk-42",
            skill_name="write-tests",
            skill_file="skills/tests.md",
            line_number=12,
            task_id=TASK,
            **common,
        ),
        ev.SkillEndEvent(
            skill_trace_id="sk-42",
            skill_name="write-tests",
            status="partial",
            duration_ms=5321.0,
            **common,
        ),
        ev.MessageBusEvent(entry=bus, requires_action=True, **common),
        ev.WaveStatusEvent(
            wave_number=2,
            status="running",
            task_count=12,
            completed_count=7,
            failed_count=1,
            **common,
        ),
        ev.AgentHeartbeatEvent(
            instance_id="agent-1",
            status="working",
            current_task_id=TASK,
            metrics={"cpu": 0.42, "memoryMb": 312.0, "tokens": 18234.0},
            **common,
        ),
        ev.ExecutionStatusEvent(status="running", message="wave 2 of 4", **common),
    ]


def summary(values: list[float]) -> dict[str, float]:
    """p50 / p99 / max / mean of a list of figures (same unit as the figures)."""
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
    ordered = sorted(values)
    return {
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def time_batches(fn: Callable[[], object], batches: int, per_batch: int) -> dict[str, float]:
    """Microseconds per call, as the mean of each batch of calls."""
    for _ in range(per_batch):  # warm up
        fn()
    means = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(per_batch):
            fn()
        means.append((time.perf_counter_ns() - start) / per_batch / 1000)
    return summary(means)


def codec(quick: bool) -> dict[str, Any]:
    """Encode and decode costs per event type."""
    batches, per_batch = (40, 50) if quick else (200, 100)
    out: dict[str, Any] = {}
    gc.disable()
    try:
        for event in sample_events():
            data = encode(event)
            decoded = decode_stream_event(data)
            assert decoded == event, f"{event.type} does not round-trip"
            out[event.type] = {
                "bytes": len(data),
                "encode_us": time_batches(lambda e=event: encode(e), batches, per_batch),
                "decode_us": time_batches(
                    lambda d=data: decode_stream_event(d), batches, per_batch
                ),
            }
    finally:
        gc.enable()
    return out


class TaskTime(trio.abc.Instrument):
    """CPU time spent running one task's own steps: what that task itself pays.

    The trio thread's CPU clock, so waiting for the GIL (held by the store's worker
    thread) does not count as the producer's work.
    """

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.total = 0.0
        self._started: float | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self._started = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task and self._started is not None:
            self.total += time.thread_time() - self._started
            self._started = None


class TaskCalls(trio.abc.Instrument):
    """Python and C calls made in one task's own steps: the work it does, as a count.

    Unlike a time, a count does not grow when other tasks' steps leave the caches cold:
    work done per subscriber on the producer's path shows here as calls per subscriber.
    """

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.total = 0

    def _count(self, _frame: types.FrameType, event: str, _arg: object) -> None:
        if event in ("call", "c_call"):
            self.total += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            sys.setprofile(self._count)

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            sys.setprofile(None)


EVICT_BYTES = 4 << 20
"""What the cache-evicting subscriber touches per event: more than a core's L2 here."""


@asynccontextmanager
async def subscribed(
    subscribers: int, drain: Callable[[LiveSubscription], Awaitable[None]], *, evict: bool
) -> AsyncIterator[Any]:
    """A fresh in-memory broker with ``subscribers`` drained ``all`` subscribers (and,
    with ``evict``, one more whose handler touches :data:`EVICT_BYTES` per event)."""
    memory = bytearray(EVICT_BYTES)

    async def evicting(sub: LiveSubscription) -> None:
        async for _env in sub:
            for i in range(0, EVICT_BYTES, 64):  # a write to every cache line (a copy may not)
                memory[i] ^= 1

    async with trio_obs.open_observability(":memory:", queue_size=4096) as obs:
        broker = obs.broker
        subs = [broker.subscribe(ALL) for _ in range(subscribers)]
        async with trio.open_nursery() as nursery:
            for sub in subs:
                nursery.start_soon(drain, sub)
            if evict:
                subs.append(broker.subscribe(ALL))
                nursery.start_soon(evicting, subs[-1])
            await trio.testing.wait_all_tasks_blocked()
            yield broker
            with trio.move_on_after(30):
                await trio.testing.wait_all_tasks_blocked()  # the subscribers drain
            for sub in subs:
                sub.close()


async def broker_at(subscribers: int, quick: bool, *, evict: bool = False) -> dict[str, Any]:
    """The broker's costs and latency with ``subscribers`` drained subscribers.

    The dispatch path and publishing are measured on two brokers, so that the envelopes
    dispatched directly (positions of their own) are not delivered again with the
    published ones. ``evict``: see :func:`subscribed` (only the producer's time is kept).
    """
    if quick:
        n_dispatch, n_publish = (600, 300) if subscribers <= 100 else (200, 80)
    else:
        n_dispatch, n_publish = (2000, 1000) if subscribers <= 100 else (600, 300)
    pad = "x" * 300
    emitted_at: list[float] = []
    latencies: list[float] = []
    received = [0]

    async def drain(sub: LiveSubscription) -> None:
        async for env in sub:
            now = time.perf_counter()
            received[0] += 1
            chunk = env.event.chunk  # type: ignore[union-attr]
            index = int(chunk[: chunk.index(":")])
            if index >= 0:
                latencies.append(now - emitted_at[index])

    # 1. The dispatch path alone: what the writer spends per committed event.
    async with subscribed(subscribers, drain, evict=evict) as broker:
        envelopes = [
            Envelope.of(
                EXECUTION,
                ev.ToolOutputEvent(
                    execution_id=EXECUTION, tool_use_id="toolu_1", chunk=f"-1:{pad}",
                    seq=i + 1, pos=i + 1,
                ),
            )
            for i in range(n_dispatch)
        ]  # fmt: skip
        for env in envelopes:
            env.born = time.perf_counter()
        dispatch = broker.dispatcher.dispatch
        per_event: list[float] = []
        chunk = 200
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for start in range(0, n_dispatch, chunk):
            batch = envelopes[start : start + chunk]
            t0 = time.perf_counter_ns()
            for env in batch:
                dispatch([env], trio.current_time())
            per_event.append((time.perf_counter_ns() - t0) / len(batch) / 1000)
            await trio.testing.wait_all_tasks_blocked()  # the subscribers drain
        dispatch_cpu = time.process_time() - cpu0
        dispatch_wall = time.perf_counter() - wall0
        dispatch_received = received[0]

    # 2. End to end: publish = SQLite commit + dispatch, per emit.
    received[0] = 0
    async with subscribed(subscribers, drain, evict=evict) as broker:
        publish_us: list[float] = []
        producer_us: list[float] = []
        # The producer's own cost: the time its task runs, not the time it waits
        # while the writer and the subscribers (other tasks) do their part.
        own = TaskTime(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(own)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(n_publish):
            event = ev.ToolOutputEvent(
                execution_id=EXECUTION, tool_use_id="toolu_1", chunk=f"{i}:{pad}"
            )
            t0, own0 = time.perf_counter(), own.total
            emitted_at.append(t0)
            await broker.publish([event])
            publish_us.append((time.perf_counter() - t0) * 1e6)
            producer_us.append((own.total - own0) * 1e6)
        trio.lowlevel.remove_instrument(own)
        with trio.move_on_after(30):
            await trio.testing.wait_all_tasks_blocked()  # the subscribers drain
        publish_cpu = time.process_time() - cpu0
        publish_wall = time.perf_counter() - wall0
        publish_received = received[0]

        # 3. The producer's work as a count: calls its task makes per emit.
        calls = TaskCalls(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(calls)
        producer_calls: list[float] = []
        for _ in range(50):
            event = ev.ToolOutputEvent(
                execution_id=EXECUTION, tool_use_id="toolu_1", chunk=f"-1:{pad}"
            )
            before = calls.total
            await broker.publish([event])
            producer_calls.append(calls.total - before)
        trio.lowlevel.remove_instrument(calls)
        sys.setprofile(None)  # removed within the producer's step: its end is not seen
    return {
        "subscribers": subscribers,
        "dispatch_us": summary(per_event),
        "dispatch_events": n_dispatch,
        "dispatch_delivered_pct": 100.0 * dispatch_received / (n_dispatch * subscribers)
        if subscribers
        else 100.0,
        "dispatch_cpu_pct": 100 * dispatch_cpu / dispatch_wall,
        "publish_us": summary(publish_us),
        "producer_us": summary(producer_us),
        "producer_calls": summary(producer_calls),
        "publish_events": n_publish,
        "latency_ms": summary([x * 1000 for x in latencies]),
        "delivered_pct": 100.0 * publish_received / (n_publish * subscribers)
        if subscribers
        else 100.0,
        "cpu_pct": 100 * publish_cpu / publish_wall,
    }


async def broker(quick: bool) -> list[dict[str, Any]]:
    """The broker at each subscriber count."""
    counts = (0, 100, 1000) if quick else (0, 10, 100, 1000)
    out = [await broker_at(n, quick) for n in counts]
    cold = await broker_at(0, quick, evict=True)
    out[0]["producer_cold_us"] = cold["producer_us"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["codec", "broker"], default=None)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if args.only in (None, "codec"):
        out["codec"] = codec(args.quick)
    if args.only in (None, "broker"):
        out["broker"] = trio.run(broker, args.quick)
    sys.stdout.write(orjson.dumps(out).decode() + "\n")


if __name__ == "__main__":
    main()
