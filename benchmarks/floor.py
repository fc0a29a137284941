"""The floor of any Python design on the ingest mix: only the unavoidable work, one thread.

On the same bodies the ingest section posts (``mix.py``), per batch: ``orjson.loads`` (or
the protobuf parse), a type check per event, a seq per execution, one ``orjson.dumps`` per
event, ``sqlite3`` ``executemany`` into the store's own ``events`` table, one transaction
per batch. No HTTP, no validation beyond the type, no fan-out: no Python server can ingest
faster on this machine, so trio-obs's figure ÷ this one, measured in the same run, is what
its design costs on top (the ingest section prints the ratio).

Run alone: ``python benchmarks/floor.py [--batches N] [--db PATH]``; prints one JSON object
(``json``: events/s, CPU µs per event; ``otlp``: the same per span; best of ``--rounds``).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from trio_obs.core.events import PLAN_EVENT_TYPES as PLAN_TYPES
from trio_obs.hub.sqlite import EVENTS_TABLE

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mix

INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)"


def _open(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    if path != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    db.execute(EVENTS_TABLE)
    return db


def json_floor(bodies: list[bytes], db: sqlite3.Connection) -> int:
    """Store every event of ``bodies`` (JSON arrays); returns the events stored."""
    seqs: dict[str, int] = {}
    pos = 0
    n = 0
    dumps, loads = orjson.dumps, orjson.loads
    for body in bodies:
        rows = []
        for e in loads(body):
            kind = e["type"]
            if kind not in PLAN_TYPES:
                raise ValueError(kind)
            key = e["executionId"]
            seq = seqs[key] = seqs.get(key, 0) + 1
            pos += 1
            e["seq"] = seq
            e["pos"] = pos
            rows.append(
                (key, seq, kind, key, e["timestamp"], e.get("taskId"), e.get("tool"), dumps(e), pos)
            )
        db.execute("BEGIN")
        db.executemany(INSERT, rows)
        db.execute("COMMIT")
        n += len(rows)
    return n


def otlp_floor(bodies: list[bytes], db: sqlite3.Connection) -> int:
    """Store each span of ``bodies`` (OTLP protobuf) as two events; returns the spans."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    seqs: dict[str, int] = {}
    pos = 0
    n = 0
    dumps = orjson.dumps
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        rows = []
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    key = span.trace_id.hex()
                    attrs: dict[str, Any] = {}
                    for kv in span.attributes:
                        v = kv.value
                        attrs[kv.key] = (
                            v.string_value if v.HasField("string_value") else v.int_value
                        )
                    span_id = span.span_id.hex()
                    # A finished span is stored as its opening and its closing.
                    opening = {
                        "type": "span:start",
                        "executionId": key,
                        "spanId": span_id,
                        "parentSpanId": span.parent_span_id.hex() or None,
                        "name": span.name,
                        "start": span.start_time_unix_nano,
                        "attributes": attrs,
                    }
                    closing = {
                        "type": "span:end",
                        "executionId": key,
                        "spanId": span_id,
                        "end": span.end_time_unix_nano,
                    }
                    for e in (opening, closing):
                        seq = seqs[key] = seqs.get(key, 0) + 1
                        pos += 1
                        e["seq"] = seq
                        e["pos"] = pos
                        rows.append((key, seq, e["type"], key, "", None, None, dumps(e), pos))
                    n += 1
        db.execute("BEGIN")
        db.executemany(INSERT, rows)
        db.execute("COMMIT")
    return n


def measure(kind: str, batches: int, db_path: str, rounds: int = 3) -> dict[str, float]:
    """The best of ``rounds`` runs over ``batches`` bodies (events/s, CPU µs per event)."""
    template = mix.json_template("F") if kind == "json" else mix.otlp_template("F")
    fn = json_floor if kind == "json" else otlp_floor
    best: dict[str, float] = {}
    for r in range(rounds):
        bodies = [mix.fill(template, 1.0, r * batches + i) for i in range(batches)]
        db = _open(db_path)
        db.execute("DELETE FROM events")
        c0, t0 = time.thread_time(), time.perf_counter()
        n = fn(bodies, db)
        c1, t1 = time.thread_time(), time.perf_counter()
        db.close()
        out = {"events": n, "events_per_s": n / (t1 - t0), "cpu_us_per_event": 1e6 * (c1 - c0) / n}
        if not best or out["events_per_s"] > best["events_per_s"]:
            best = out
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=200, help="JSON batches (OTLP: a fifth)")
    parser.add_argument("--db", default=":memory:", help="SQLite path (default :memory:)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = {
        "json": measure("json", args.batches, args.db, args.rounds),
        "otlp": measure("otlp", max(1, args.batches // 5), args.db, args.rounds),
    }
    print(orjson.dumps(out).decode())


if __name__ == "__main__":
    main()
