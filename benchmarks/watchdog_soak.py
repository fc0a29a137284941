"""The watchdog under a soak (SPEC §13; not CI): simulated agents, some killed with SIGKILL.

Starts ``trio-obs serve`` (a fresh SQLite file, ``--lost-after``), then ``--agents``
agent processes (stdlib only, so 50 of them stay light). Each agent runs executions one
after another: ``started``, tool calls (``tool:start`` ... ``tool:end``, 0.2-2 s each)
and, from a thread of its own (an agent's heartbeat task), an ``agent:heartbeat`` every
``--interval`` seconds (declared as ``intervalSeconds``), then ``completed``. Every so
often the soak SIGKILLs one agent (``--kills`` in all, spread over the run) and starts a
fresh one in its place. After ``--minutes`` the agents are stopped (each finishes its
execution), and the store is read back:

- every killed agent's execution has one ``watch:alert`` lost, stored within
  ``max(3 x interval, lost-after) + 2 s`` of the kill, and its open tool call closed lost;
- no other execution has any alert (0 false alerts);
- every execution that ended has no tool call left open (each start has its end).

Prints the figures as JSON; exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

AGENT = r"""
import http.client, json, random, signal, sys, threading, time, uuid
port, name, interval, seed = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
stopping = False
current = None  # the execution the heartbeat thread beats for
def stop(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, stop)
def poster():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    def post(*events):
        nonlocal conn
        body = json.dumps(list(events))
        for _ in range(5):
            try:
                conn.request("POST", "/api/events", body, {"content-type": "application/json"})
                r = conn.getresponse(); r.read()
                if r.status == 202:
                    return
            except OSError:
                time.sleep(0.2)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    return post
def beats():
    # an agent's heartbeat task: its own connection, whatever the work is doing
    post = poster()
    while True:
        e = current
        if e is not None:
            post({"type": "agent:heartbeat", "executionId": e, "instanceId": name,
                  "status": "working", "metrics": {"intervalSeconds": interval}})
        time.sleep(interval)
post = poster()
threading.Thread(target=beats, daemon=True).start()
while not stopping:
    e = f"{name}-{uuid.uuid4().hex[:8]}"
    print(e, flush=True)
    post({"type": "execution:status", "executionId": e, "status": "started"},
         {"type": "agent:heartbeat", "executionId": e, "instanceId": name, "status": "working",
          "metrics": {"intervalSeconds": interval}})
    current = e
    for i in range(rng.randint(5, 20)):
        tu = f"{e}-t{i}"
        post({"type": "tool:start", "executionId": e, "toolUseId": tu, "tool": "work",
              "inputSummary": f"step {i}"})
        took = rng.uniform(0.2, 2.0)
        time.sleep(took)
        post({"type": "tool:end", "executionId": e, "toolUseId": tu, "resultStatus": "done",
              "durationMs": took * 1000})
        if stopping:
            break
    post({"type": "execution:status", "executionId": e, "status": "completed"})
    current = None  # beats until its end is stored, as an agent alive until then does
"""

LISTENING = re.compile(r"listening on http://\S+?:(\d+)")
SERVER_LOG: list[str] = []


def seconds_of(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


class Agent:
    def __init__(self, port: int, name: str, interval: float, seed: int) -> None:
        self.name = name
        self.executions: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-c", AGENT, str(port), name, str(interval), str(seed)],
            stdout=subprocess.PIPE,
            text=True,
        )
        os.set_blocking(self.process.stdout.fileno(), False)  # type: ignore[union-attr]
        self.killed_at: float | None = None

    def read(self) -> None:
        assert self.process.stdout is not None
        while line := self.process.stdout.readline():
            self.executions.append(line.strip())


def start_server(db: Path, lost_after: float) -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen(
        [sys.executable, "-m", "trio_obs", "serve", "--port", "0", "--db", str(db),
         "--lost-after", str(lost_after), "--log-level", "info"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stderr is not None
    for line in server.stderr:
        if match := LISTENING.search(line):
            # keep draining its log, so a full pipe never holds the server up
            threading.Thread(target=SERVER_LOG.extend, args=(server.stderr,), daemon=True).start()
            return server, int(match[1])
    raise SystemExit("the server did not start")


def longest_silence(events: list[dict[str, Any]]) -> float:
    """The longest gap between two stored heartbeats of the run."""
    times = [seconds_of(x["timestamp"]) for x in events if x["type"] == "agent:heartbeat"]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def read_all(http: httpx.Client, execution: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        page = http.get(
            f"/api/executions/{execution}/events",
            params={"since": events[-1]["seq"] if events else 0, "limit": 10000},
        ).json()
        events += page
        if len(page) < 10000:
            return events


def main(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        server, port = start_server(Path(folder) / "soak.db", args.lost_after)
        try:
            return soak(args, rng, port)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)


def soak(args: argparse.Namespace, rng: random.Random, port: int) -> int:
    agents = [
        Agent(port, f"agent{i}", args.interval, rng.randrange(2**31)) for i in range(args.agents)
    ]
    everyone = list(agents)
    duration = args.minutes * 60
    started = time.monotonic()
    kill_times = sorted(rng.uniform(10, duration - 15) for _ in range(args.kills))
    killed: list[Agent] = []
    while (elapsed := time.monotonic() - started) < duration:
        for agent in agents:
            agent.read()
        if kill_times and elapsed >= kill_times[0]:
            kill_times.pop(0)
            victim = rng.choice([a for a in agents if a.executions])
            victim.process.send_signal(signal.SIGKILL)
            victim.killed_at = time.time()
            victim.process.wait()
            victim.read()
            killed.append(victim)
            agents.remove(victim)
            fresh = Agent(port, f"agent{len(everyone)}", args.interval, rng.randrange(2**31))
            agents.append(fresh)
            everyone.append(fresh)
        time.sleep(0.1)
    for agent in agents:
        agent.process.send_signal(signal.SIGTERM)
    for agent in agents:
        agent.process.wait(60)
        agent.read()
    # the last judgements of the killed ones may still be under way
    time.sleep(max(3 * args.interval, args.lost_after) + 3)
    limit = max(3 * args.interval, args.lost_after) + 2
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False) as http:
        delays: list[float] = []
        missed: list[str] = []
        unjudgeable: list[str] = []
        lost_closings_missing = 0
        for victim in killed:
            e = victim.executions[-1]
            events = read_all(http, e)
            if not any(x["type"] == "agent:heartbeat" for x in events):
                unjudgeable.append(e)  # killed before its first heartbeat: nothing to miss
                continue
            alerts = [x for x in events if x["type"] == "watch:alert" and x["alert"] == "lost"]
            if len(alerts) != 1:
                missed.append(f"{e}: {len(alerts)} lost alerts")
                continue
            assert victim.killed_at is not None
            delays.append(seconds_of(alerts[0]["timestamp"]) - victim.killed_at)
            opened = {x["toolUseId"] for x in events if x["type"] == "tool:start"}
            closed = {x["toolUseId"] for x in events if x["type"] == "tool:end"}
            lost = {x["spanId"] for x in events if x["type"] == "span:end" and x["state"] == "lost"}
            lost_closings_missing += len(opened - closed - lost)
        false_alerts = 0
        false_samples: list[dict[str, Any]] = []
        open_after_end = 0
        executions = 0
        killed_runs = {v.executions[-1] for v in killed}
        for agent in everyone:
            for e in agent.executions:
                executions += 1
                events = read_all(http, e)
                if e not in killed_runs:
                    wrong = [x for x in events if x["type"] == "watch:alert"]
                    false_alerts += len(wrong)
                    for x in wrong[:2]:
                        false_samples.append(
                            {"alert": x["alert"], "message": x["message"],
                             "longest_silence_s": round(longest_silence(events), 2)}
                        )  # fmt: skip
                if any(
                    x["type"] == "execution:status" and x["status"] == "completed" for x in events
                ):
                    opened = {x["toolUseId"] for x in events if x["type"] == "tool:start"}
                    closed = {x["toolUseId"] for x in events if x["type"] == "tool:end"}
                    open_after_end += len(opened - closed)
        metrics = http.get("/metrics").text
    result = {
        "minutes": args.minutes,
        "agents": args.agents,
        "interval_s": args.interval,
        "lost_after_s": args.lost_after,
        "limit_s": limit,
        "executions": executions,
        "killed": len(killed),
        "judged_lost": len(delays),
        "killed_before_first_heartbeat": len(unjudgeable),
        "missed": missed,
        "kill_to_alert_s": {
            "min": round(min(delays), 2) if delays else None,
            "max": round(max(delays), 2) if delays else None,
            "mean": round(sum(delays) / len(delays), 2) if delays else None,
        },
        "killed_spans_not_closed_lost": lost_closings_missing,
        "false_alerts": false_alerts,
        "false_alert_samples": false_samples[:10],
        "open_spans_after_final_status": open_after_end,
        "server_errors": [line for line in SERVER_LOG if "ERROR" in line or "Traceback" in line],
        "gauges": [line for line in metrics.splitlines() if line.startswith("trio_obs_spans")],
    }
    print(json.dumps(result, indent=2))
    ok = (
        not missed
        and len(delays) == len(killed) - len(unjudgeable)
        and all(d <= limit for d in delays)
        and false_alerts == 0
        and open_after_end == 0
        and lost_closings_missing == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat interval (s)")
    parser.add_argument(
        "--lost-after", type=float, default=1.0, help="the server's (1: 3 x interval decides)"
    )
    parser.add_argument("--seed", type=int, default=1)
    sys.exit(main(parser.parse_args()))
