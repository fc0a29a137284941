"""The sections of a run against servers, in the order they run: memory, the 1,000-client
loads, 100 x 1,000 (with the slow consumer and the independent client right after),
1 x 1,000, the profile, ingest. Each load runs against every server in turn, so a change
in what else the machine runs falls on all of them alike.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from harness import HERE, Child, ChildError, Deployment, ServerSpec
from suite import measure
from suite.judge import full, within_bar
from suite.measure import Run, Target
from suite.model import Independent, Load, MaxRate, StepSummary

SEARCH_RATES = (20, 50, 100, 200, 400, 700, 1000, 1500, 2000, 3000, 5000)
"""Events/s tried at 1,000 clients, up to the first that fails."""
FIXED_RATES = (100, 1000)
"""Rates at 1,000 clients measured (and tabled) whatever the search found."""
INDEPENDENT = HERE / "independent" / "wsclient.js"


def want(run: Run, name: str) -> bool:
    """Whether section ``name`` is selected (``--only``)."""
    return run.args.only is None or name in run.args.only


def servers_sections(run: Run, specs: list[ServerSpec]) -> None:
    """Every section that needs servers; memory first, on fresh processes."""
    quick = run.quick
    targets: dict[str, Target] = {}
    for spec in specs:
        try:
            targets[spec.name] = Target(run, spec)
        except ChildError as exc:
            run.skip(f"{spec.name}: could not start: {exc}")
    main = targets.get("trio-obs")
    # Quick runs measure memory and the slow consumer on trio-obs (and the ceiling) only.
    some = {k: t for k, t in targets.items() if not quick or t.spec.program != "ws-broadcast"}
    some = {k: t for k, t in some.items() if not quick or t.spec.program != "node-plan"}
    try:
        if want(run, "memory"):
            run.say("memory: 1,000 idle connections")
            for target in some.values():
                measure.memory(run, target)
        if want(run, "e2e") and not quick:
            run.say("1,000 clients: max-rate search and fixed loads")
            thousand_clients(run, targets)
        if want(run, "e2e") or want(run, "slow") or want(run, "repro"):
            run.say("100 clients x 1,000 events/s, the same with one stalled client, and the")
            run.say("same load under the independent client")
            for kind, target in targets.items():
                healthy = target.load(
                    clients=100, rate=1000, seconds=run.seconds(8, 3), label="100x1000"
                )
                run.results.loads.append(healthy)
                # Right after, so each sees the same machine as the healthy run.
                if want(run, "slow") and kind in some and target.spec.program != "ceiling":
                    measure.slow_consumer(run, target, healthy)
                baseline = target.spec.program in ("ws-broadcast", "node-plan")
                if want(run, "repro") and "@" not in kind and (baseline or not quick):
                    independent(run, target, healthy)
        if want(run, "e2e") and not quick:
            run.say("1 client x 1,000 events/s")
            for target in targets.values():
                run.results.loads.append(
                    target.load(clients=1, rate=1000, seconds=run.seconds(5, 2), label="1x1000")
                )
        if main is not None and run.args.profile and not quick and want(run, "e2e"):
            run.say("profile: pyinstrument on trio-obs during 100 x 1,000")
            measure.profile(run, main)
        if want(run, "ingest"):
            floors = [measure.floor(run)]
            for kind, target in targets.items():
                if target.spec.program == "trio-obs":
                    run.say(f"ingest: POST /api/events ({kind})")
                    if kind == "trio-obs":
                        measure.ingest(run, target)
                    else:
                        ingest_other(run, target)
                    run.say(f"ingest: the realistic mix, JSON and OTLP ({kind})")
                    measure.ingest_mixes(run, target)
                    run.say(f"ingest: span starts at 1,000/s in batches of 10 ({kind})")
                    measure.ingest_live(run, target)
            floors.append(measure.floor(run))
            keep_floor(run, [f for f in floors if f])
    finally:
        for target in targets.values():
            target.stop()


def keep_floor(run: Run, floors: list[dict[str, Any]]) -> None:
    """The floor of the run (the best of its measurements before and after the servers')."""
    if not floors:
        return
    best = {
        kind: max((f[kind] for f in floors), key=lambda x: float(x["events_per_s"]))
        for kind in ("json", "otlp")
    }
    run.results.meta["ingest_floor"] = best
    run.say(
        f"  floor: JSON {best['json']['events_per_s']:.0f} events/s"
        f" ({best['json']['cpu_us_per_event']:.1f} µs), OTLP {best['otlp']['events_per_s']:.0f}"
        f" spans/s ({best['otlp']['cpu_us_per_event']:.1f} µs)"
    )


def ingest_other(run: Run, target: Target) -> None:
    """Ingest on a second trio-obs (``--compare``): kept beside the main one."""
    try:
        out, _ = measure.ingest_once(run, target, 100 if run.quick else 600)
    except (ChildError, OSError) as exc:
        run.skip(f"ingest {target.kind}: {exc}")
        return
    run.results.meta.setdefault("ingest_other", {})[target.kind] = {
        "stored_per_s": out.stored_per_s,
        "delivered_per_s": out.delivered_per_s,
        "cpu_us_per_event": out.cpu_us_per_event,
        "p99_ms": out.p99_ms,
    }
    run.say(f"  ingest {target.kind}: stored {out.stored_per_s:.0f}/s")


def search_step(run: Run, target: Target, rate: int, seconds: float) -> Load:
    """One step of the search at 1,000 clients; a near miss (>= 90 % delivered) is tried
    once more, since one stall of a shared machine can cost a step."""
    label = f"1000x{rate}"
    load = target.load(clients=1000, rate=rate, seconds=seconds, label=label)
    load.search = True
    run.results.loads.append(load)
    if not full(load) and load.ok and load.delivered_pct >= 90:
        load.superseded = True
        load = target.load(clients=1000, rate=rate, seconds=seconds, label=label)
        load.search = True
        load.retry = True
        run.results.loads.append(load)
    return load


def thousand_clients(run: Run, targets: dict[str, Target]) -> None:
    """1,000 clients: rising rates up to the first not delivered in full (the max-rate
    search), and the fixed loads 1000x100 and 1000x1000, each against every server in turn."""
    searching = dict(targets)
    tried: dict[str, set[int]] = {kind: set() for kind in targets}
    first_miss: dict[str, Load] = {}
    for rate in SEARCH_RATES:
        seconds = run.seconds(5, 2) if rate in FIXED_RATES else run.seconds(3, 2)
        if not searching:
            break
        if not run.budget.allows(len(searching) * (2 * seconds + 12) + 150):
            run.skip(f"1000x{rate} and above (time budget)")
            break
        for kind, target in list(searching.items()):
            load = search_step(run, target, rate, seconds)
            tried[kind].add(rate)
            if not full(load):
                first_miss[kind] = load
                del searching[kind]
    for rate in FIXED_RATES:
        for kind, target in targets.items():
            if rate in tried[kind] or not run.budget.allows(run.seconds(5, 2) + 120):
                continue
            load = target.load(
                clients=1000, rate=rate, seconds=run.seconds(5, 2), label=f"1000x{rate}"
            )
            load.search = True
            run.results.loads.append(load)
    for kind in targets:
        steps = [
            ld for ld in run.results.loads
            if ld.server == kind and ld.search and not ld.superseded
        ]  # fmt: skip
        out = MaxRate()
        in_full = [ld for ld in steps if full(ld)]
        best = max(in_full, key=lambda ld: ld.rate) if in_full else first_miss.get(kind)
        if best is not None and best.ok:
            # Nothing delivered in full: what it delivered overloaded bounds what it can do.
            out.passed = bool(in_full)
            out.label, out.rate, out.deliveries_per_s = best.label, best.rate, best.deliveries_per_s
            out.p99_ms, out.loadgen_saturated = best.p99_ms, best.loadgen_saturated
        within = [ld for ld in in_full if within_bar(ld)]
        if within:
            top = max(within, key=lambda ld: ld.rate)
            out.within_bar = StepSummary(
                top.label, top.rate, top.deliveries_per_s, top.p99_ms, top.loadgen_saturated
            )
        run.results.max_rate[kind] = out


def independent(run: Run, target: Target, ours: Load) -> None:
    """The same load on the same server process, right after ours, under the independent
    client (``independent/wsclient.js``: plain ``ws``, one process, JSON.parse per message).

    A full run alternates ours and the independent client for 3 rounds (the first of ours
    is the 100x1000 load itself) and compares the medians of each side: on a shared
    machine, one round of each can land on a quiet and a busy second.
    """
    rounds = 1 if run.quick else 3
    out = Independent(
        server=target.kind, clients=ours.clients, rate=ours.rate, seconds=ours.seconds,
        rounds=rounds,
    )  # fmt: skip
    run.results.reproduction.append(out)
    mine: list[Load] = [ours]
    theirs: list[dict[str, Any]] = []
    try:
        for i in range(rounds):
            if i:
                load = target.load(
                    clients=ours.clients, rate=ours.rate, seconds=ours.seconds, label="repro"
                )
                mine.append(load)
            theirs.append(independent_once(run, target.server, target, ours))
    except ChildError as exc:
        out.error = str(exc)
        run.say(f"  independent client on {target.kind}: FAILED: {exc}")
        return
    got = {k: median([t[k] for t in theirs]) for k in ("p50Ms", "p99Ms", "maxMs", "cpuPct")}
    out.count = sum(t["count"] for t in theirs)
    out.expected = sum(t["expected"] for t in theirs)
    out.delivered_pct = 100.0 * out.count / max(1, out.expected)
    out.p50_ms, out.p99_ms, out.max_ms = got["p50Ms"], got["p99Ms"], got["maxMs"]
    out.client_cpu_pct = got["cpuPct"] or 0.0
    out.server_cpu_pct = median([t["serverCpuPct"] for t in theirs]) or 0.0
    out.emitter = {"worstLagMs": median([t["emitter"]["worstLagMs"] for t in theirs])}
    ok = [ld for ld in mine if ld.ok]
    if rounds > 1 and ok:
        out.ours_p50_ms = median([ld.p50_ms for ld in ok])
        out.ours_p99_ms = median([ld.p99_ms for ld in ok])
        out.ours_delivered_pct = median([ld.delivered_pct for ld in ok])
        out.ours_lag_ms = median([ld.emitter.get("worstLagMs") for ld in ok])
    run.say(
        f"  {'independent':>10} {target.kind:<14} p50 {out.p50_ms or 0:.3g} p99"
        f" {out.p99_ms or 0:.3g} ms, delivered {out.delivered_pct:.2f} %, client CPU"
        f" {out.client_cpu_pct:.0f} % (median of {rounds})"
    )


def median(values: list[Any]) -> float | None:
    """The median of the figures that exist (None if none does)."""
    present = sorted(v for v in values if v is not None)
    return statistics.median(present) if present else None


def independent_once(run: Run, server: Deployment, target: Target, ours: Load) -> dict[str, Any]:
    """One round of the independent client: its RESULT, plus the server's side."""
    target.pool.connect(server.subscribe_urls, 0)  # our clients leave
    server.wait_count(0, 10)
    count = max(1, round(ours.rate * ours.seconds))
    warm = max(1, round(ours.rate * min(1.0, ours.seconds / 3)))
    run_id = run.next_run()
    client = Child(
        f"independent-{target.kind}-{run_id}",
        ["node", str(INDEPENDENT), server.subscribe_urls[0], str(ours.clients), run_id,
         str(count), str(ours.seconds + 25)],
        log_dir=run.log_dir,
    )  # fmt: skip
    try:
        client.expect("OPEN", 60)
        server.wait_count(ours.clients, 30)
        server.emit(f"w{run.next_run()}", ours.rate, warm, warm / ours.rate * 1.5 + 1)
        time.sleep(0.3)
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        emitter = server.emit(run_id, ours.rate, count, ours.seconds * 1.5 + 2)
        got: dict[str, Any] = json.loads(client.expect("RESULT", ours.seconds + 30))
        got["serverCpuPct"] = 100 * (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        got["emitter"] = emitter
    finally:
        client.stop()
    return got
