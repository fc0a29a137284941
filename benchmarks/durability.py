"""What durable acks cost: the SQLite store with ``--durability full`` against ``normal``.

In one process, alternating, so both see the same machine: ``--producers`` tasks each
publish ``--batches`` batches of 100 ~400-byte events into a fresh SQLite file (what a
server's ingest does after parsing), ``--rounds`` times per durability. Prints the events
stored per second of each round, and the medians, as JSON. Not a test: figures, to compare
side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import trio_obs
from trio_obs.core.events import ToolOutputEvent


async def one_round(durability: str, producers: int, batches: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        db = str(Path(folder) / "obs.db")
        async with trio_obs.open_observability(db, durability=durability) as obs:  # type: ignore[arg-type]
            hub = obs.hub
            chunk = "x" * 300

            async def producer(n: int) -> None:
                for b in range(batches):
                    events = [
                        ToolOutputEvent(
                            execution_id=f"exec-{n}", tool_use_id="toolu_1", chunk=f"{b}:{chunk}"
                        )
                        for _ in range(100)
                    ]
                    await hub.publish(events)

            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for n in range(producers):
                    nursery.start_soon(producer, n)
            elapsed = time.perf_counter() - started
    return {"events_per_s": producers * batches * 100 / elapsed, "seconds": elapsed}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, float]]] = {"full": [], "normal": []}
    for _ in range(args.rounds):
        for durability in rounds:
            rounds[durability].append(await one_round(durability, args.producers, args.batches))
    medians = {d: statistics.median(r["events_per_s"] for r in rs) for d, rs in rounds.items()}
    return {
        "producers": args.producers,
        "batches_per_producer": args.batches,
        "events_per_s": {d: [round(r["events_per_s"]) for r in rs] for d, rs in rounds.items()},
        "median_events_per_s": {d: round(v) for d, v in medians.items()},
        "full_vs_normal": round(medians["full"] / medians["normal"], 3),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--producers", type=int, default=8)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    print(json.dumps(trio.run(main, p.parse_args()), indent=2))
