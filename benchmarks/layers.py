"""CPU per event by layer, out of py-spy's raw samples of a trio-obs server.

    py-spy record -p PID --format raw --threads -r 200 -o json.txt   # during a load
    python benchmarks/layers.py old.txt=65.5 new.txt=53.2           # file=µs of CPU per event

Each sample goes to the layer of its leaf-most frame that matches one (the SQLite worker
thread's samples to that thread; a worker thread idle between jobs is left out); a layer's
µs = its share of the samples times the CPU per event measured during the same load.
Prints one markdown row per layer, one column per file.
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

LAYERS: list[tuple[str, list[str]]] = [  # checked on each frame, leaf to root
    ("HTTP (h11 / fast path)", [r"\(h11/", r"HttpConnection\.", r"fast_head", r"Request\."]),
    (
        "encode (JSON of stored events)",
        [r"encode_kept", r"^unstructure \(<string>", r"unstructure_", r"\.unstructure "],
    ),
    (
        "OTLP parse and mapping",
        [r"trio_obs/core/otlp", r"trio_obs/server/otlp", r"google/protobuf", r"FromString"],
    ),
    (
        "decode and validation",
        [
            r"trio_obs/core/intake",
            r"decode_event",
            r"_structure_or_explain",
            r"^structure \(<string>",
            r"structure_",
            r"loads_json",
            r"depth_exceeds",
            r"utc_time",
            r"_time\.<locals>",
            r"_structure_",
            r"\.structure ",
            r"events\.\w+>\)$",
        ],
    ),
    ("ledger", [r"trio_obs/core/ledger", r"complete_batch"]),
    (
        "fan-out (logs, flush, WebSocket writes)",
        [
            r"trio_obs/hub/dispatch",
            r"trio_obs/core/routing",
            r"trio_obs/server/flush",
            r"trio_obs/server/websocket",
            r"trio_obs/server/transport",
            r"trio_obs/core/frames",
            r"trio_obs/server/metrics",
        ],
    ),
    ("hub (group commit, store calls)", [r"trio_obs/hub/local", r"trio_obs/hub/sqlite"]),
    ("trio loop, sockets, thread hand-offs", [r"trio/_", r"outcome/"]),
]
WORKER = "SQLite worker thread (off the trio thread)"
IDLE_WORKER = re.compile(r"^WorkerThread\._work \(")
"""The leaf frame of a thread of trio's cache with no job: idle, not charged to anything."""


def layer_of(frames: list[str]) -> str:
    """The layer a sample's stack (root first) is charged to."""
    if any("WorkerThread._work" in f for f in frames):
        return WORKER
    for frame in reversed(frames):
        for name, patterns in LAYERS:
            if any(re.search(p, frame) for p in patterns):
                return name
    return "other"


def load(path: str) -> tuple[collections.Counter[str], int]:
    """Samples per layer in one py-spy raw file, and their total."""
    counts: collections.Counter[str] = collections.Counter()
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if IDLE_WORKER.search(stack.rsplit(";", 1)[-1]):
            continue  # a worker thread waiting for a job (py-spy takes a lock wait for work)
        frames = [re.sub(r":\d+\)", ")", f) for f in stack.split(";")]
        frames = [re.sub(r"\((/[^)]*?)(site-packages/|src/)", "(", f) for f in frames]
        counts[layer_of(frames)] += int(n)
    return counts, sum(counts.values())


def main() -> None:
    cols = []
    for arg in sys.argv[1:]:
        path, us = arg.split("=")
        counts, total = load(path)
        cols.append((counts, total, float(us)))
    names = sorted({k for c, _, _ in cols for k in c}, key=lambda k: -cols[0][0][k])
    for name in names:
        cells = [f"{100 * c[name] / t:4.1f} % = {us * c[name] / t:5.1f} µs" for c, t, us in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
