"""Rendering: the markdown tables and the targets of a :class:`Results` (no measuring)."""

from __future__ import annotations

import math
from typing import Any

from harness import SERVERS
from suite import judge
from suite.judge import CEILING, PLAN_BAR_MS, full, ratio
from suite.model import Load, MiB, Results

HOST_FULL_PCT = 90.0
"""Machine-wide CPU use (% of all cores) from which a load is noted as run on a full host."""
OTHERS_NOTE_PCT = 20.0
"""Other processes' CPU (% of one core) during a load from which the table notes it."""
ORDER = ["1x1000", "100x1000", "100x1000+1", "1000x100", "1000x1000"]


def fmt_ms(value: float | None) -> str:
    """Milliseconds with a precision that suits their size."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    return f"{value:.1f}"


def fmt_us(value: float | None) -> str:
    """Microseconds."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.2f} µs" if value < 100 else f"{value:,.0f} µs"


def fmt_rate(value: float | None) -> str:
    """Per-second rate, compact."""
    if value is None:
        return "—"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M/s"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k/s"
    return f"{value:.0f}/s"


def fmt_pct(value: float | None, digits: int = 1) -> str:
    """A percentage."""
    return "—" if value is None else f"{value:.{digits}f} %"


def fmt_x(value: float | None) -> str:
    """A ratio as ``1.23x``."""
    return "—" if value is None else f"{value:.2f}x"


def markdown(head: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def servers_of(res: Results) -> list[str]:
    """Server names in table order: trio-obs (and compared revisions), baselines, ceiling."""
    names: list[str] = []
    for load in res.loads:
        if load.server not in names:
            names.append(load.server)
    for name in list(res.memory) + list(res.max_rate):
        if name not in names:
            names.append(name)

    def rank(name: str) -> tuple[int, int, str]:
        if name.startswith("trio-obs@"):
            return 0, 1, name
        return (1, SERVERS.index(name), name) if name in SERVERS else (1, len(SERVERS), name)

    return sorted(names, key=rank)


def cpu_cell(load: Load | Any) -> str:
    """The load generator's CPU, flagged when it was the saturated one."""
    cpu = getattr(load, "loadgen_cpu_pct", None)
    if cpu is None:
        return "—"
    return f"{cpu:.0f} %" + (" ⚠ saturated" if load.loadgen_saturated else "")


HEAD = [
    "measure", "load", "server", "p50", "p99", "max", "delivered", "rate", "server CPU",
    "CPU / delivery", "loadgen CPU", "notes",
]  # fmt: skip


def table(res: Results, all_steps: bool = False) -> str:
    """One markdown table of every figure, with ÷ ceiling and trio-obs ÷ baseline rows."""
    rows: list[list[str]] = []
    rows += micro_rows(res)
    labels: list[str] = []
    for load in res.loads:
        if load.label not in labels:
            labels.append(load.label)
    labels.sort(key=lambda lb: (ORDER.index(lb) if lb in ORDER else len(ORDER), lb))
    for label in labels:
        if label not in ORDER and not all_steps:
            continue
        group = [ld for ld in res.loads if ld.label == label and not ld.superseded]
        measure = f"e2e {label}" if "+" not in label else "slow consumer"
        rows.extend(load_rows(res, measure, group))
    rows.extend(max_rate_rows(res))
    rows.extend(ingest_rows(res))
    rows.extend(memory_rows(res))
    return markdown(HEAD, rows)


_PRODUCER_ROWS: list[tuple[str, str, str, Any, str]] = [
    ("producer_us", "producer's own time / emit", "", fmt_us,
     "time the producer task itself runs per emit"),
    ("producer_cold_us", "producer's own time / emit", ", caches evicted", fmt_us,
     "a subscriber touches 4 MiB after each emit"),
    ("producer_calls", "producer's calls / emit", "", lambda v: f"{v:.0f}",
     "Python and C calls its task makes per emit"),
]  # fmt: skip
"""The producer's figures of the broker section, where measured: key, measure, load,
format, note."""


def micro_rows(res: Results) -> list[list[str]]:
    """The in-process figures (codec, broker)."""
    rows = []
    for kind, c in res.micro.get("codec", {}).items():
        e, d = c["encode_us"], c["decode_us"]
        rows.append([
            f"codec {kind}", f"encode / decode, {c['bytes']} B", "in-process",
            f"{e['p50']:.2f} / {d['p50']:.2f} µs", f"{e['p99']:.2f} / {d['p99']:.2f} µs",
            f"{e['max']:.2f} / {d['max']:.2f} µs", "—",
            f"{fmt_rate(1e6 / e['mean'])} / {fmt_rate(1e6 / d['mean'])}", "—", "—", "—", "",
        ])  # fmt: skip
    for b in res.micro.get("broker", []):
        n = b["subscribers"]
        ds, ps, lat = b["dispatch_us"], b["publish_us"], b["latency_ms"]
        rows.append([
            "broker dispatch / event", f"{n} subscribers", "in-process",
            fmt_us(ds["p50"]), fmt_us(ds["p99"]), fmt_us(ds["max"]),
            fmt_pct(b["dispatch_delivered_pct"]), fmt_rate(1e6 / ds["mean"]),
            fmt_pct(b["dispatch_cpu_pct"], 0), "—", "(same process)",
            f"{b['dispatch_events']} events",
        ])  # fmt: skip
        rows.append([
            "broker publish / emit", f"{n} subscribers", "in-process",
            fmt_us(ps["p50"]), fmt_us(ps["p99"]), fmt_us(ps["max"]),
            fmt_pct(b["delivered_pct"]), fmt_rate(1e6 / ps["mean"]),
            fmt_pct(b["cpu_pct"], 0), "—", "(same process)",
            f"emit→receive p50 {fmt_ms(lat['p50'])} p99 {fmt_ms(lat['p99'])} max"
            f" {fmt_ms(lat['max'])} ms" if n else "no subscribers",
        ])  # fmt: skip
        for key, measure, load, fmt, note in _PRODUCER_ROWS:
            if key in b:
                q = b[key]
                rows.append([
                    measure, f"{n} subscribers{load}", "in-process",
                    fmt(q["p50"]), fmt(q["p99"]), fmt(q["max"]), "—", "—", "—", "—",
                    "(same process)", note,
                ])  # fmt: skip
    return rows


def load_notes(ld: Load) -> str:
    """What the table says about a load beside its figures."""
    notes = []
    per_client = ld.offered // max(1, ld.clients)
    if ld.emitted < per_client:
        notes.append(f"emitter gave up: {ld.emitted} of {per_client}")
    if ld.emitter.get("worstLagMs", 0) > 5:
        notes.append(f"emitter lag ≤{ld.emitter['worstLagMs']:.0f} ms")
    if ld.closes:
        notes.append("closes " + ", ".join(f"{k}x{v}" for k, v in ld.closes.items()))
    if ld.stale:
        notes.append(f"{ld.stale} stale")
    if ld.negative:
        notes.append(f"{ld.negative} arrived before their scheduled time (clock?)")
    if ld.stalled:
        notes.append(f"peak RSS {ld.rss_peak / MiB:.0f} MiB")
    if ld.host_busy_pct >= HOST_FULL_PCT:
        notes.append(f"host CPU {ld.host_busy_pct:.0f} % busy")
    if ld.others_cpu_pct >= OTHERS_NOTE_PCT:
        notes.append(f"other processes {ld.others_cpu_pct:.0f} % CPU")
    if ld.nodes > 1:
        notes.append(f"{ld.nodes} nodes")
    return "; ".join(notes)


RATIO_FIGURES = (
    "p50_ms", "p99_ms", "max_ms", "delivered_pct", "deliveries_per_s", "server_cpu_pct",
    "cpu_us_per_delivery",
)  # fmt: skip


def ratio_row(measure: str, name: str, a: Load, b: Load) -> list[str]:
    """``a ÷ b`` for every figure of a load."""
    cells = [fmt_x(ratio(getattr(a, k), getattr(b, k))) for k in RATIO_FIGURES]
    return [measure, "", name, *cells[:6], cells[6], "", ""]


def load_rows(res: Results, measure: str, group: list[Load]) -> list[list[str]]:
    """A row per server of one load, then trio-obs ÷ each baseline and each ÷ the ceiling."""
    rows = []
    by_server = {ld.server: ld for ld in group}
    for kind in servers_of(res):
        ld = by_server.get(kind)
        if ld is None:
            continue
        who = "1 client" if ld.clients == 1 else f"{ld.clients} clients"
        load_text = f"{who} x {ld.rate:g}/s, {ld.seconds:g} s"
        if ld.stalled:
            load_text = f"{ld.clients} + {ld.stalled} stalled x {ld.rate:g}/s"
        if not ld.ok:
            rows.append([measure, load_text, kind, "", "", "", "", "", "", "", "",
                         f"error: {(ld.error or '')[:120]}"])  # fmt: skip
            continue
        rows.append([
            measure, load_text, kind, fmt_ms(ld.p50_ms), fmt_ms(ld.p99_ms), fmt_ms(ld.max_ms),
            fmt_pct(ld.delivered_pct, 2), fmt_rate(ld.deliveries_per_s),
            fmt_pct(ld.server_cpu_pct, 0), fmt_us(ld.cpu_us_per_delivery), cpu_cell(ld),
            load_notes(ld),
        ])  # fmt: skip
    ours = by_server.get("trio-obs")
    if ours and ours.ok:
        for kind in judge.BASELINES:
            theirs = by_server.get(kind)
            if theirs and theirs.ok:
                rows.append(ratio_row(measure, f"trio-obs ÷ {kind}", ours, theirs))
    ceiling = by_server.get(CEILING)
    if ceiling and ceiling.ok:
        for kind in servers_of(res):
            ld = by_server.get(kind)
            if kind != CEILING and ld is not None and ld.ok:
                rows.append(ratio_row(measure, f"{kind} ÷ ceiling", ld, ceiling))
    return rows


def search_trail(res: Results, kind: str) -> str:
    """The steps of the search, as rate: p99 (✗ and % delivered where one failed)."""
    parts = []
    for ld in res.loads:
        if ld.server != kind or not ld.search:
            continue
        if not ld.ok:
            parts.append(f"{ld.rate:g}: error")
            continue
        mark = "" if full(ld) else f" ✗ {ld.delivered_pct:.0f} %"
        if ld.superseded:
            mark += " (tried again)"
        parts.append(f"{ld.rate:g}: p99 {fmt_ms(ld.p99_ms)}{mark}")
    return "steps " + ", ".join(parts)


def max_rate_rows(res: Results) -> list[list[str]]:
    """The max-rate search at 1,000 clients: the highest rate each server delivered in
    full, and the highest it delivered in full within the plan's 100 ms p99."""
    rows = []
    measure = "max rate, 1000 clients"
    for kind in servers_of(res):
        r = res.max_rate.get(kind)
        if r is None:
            continue
        best = res.load(kind, r.label) if r.label else None
        if best is None:
            rows.append([measure, r.criterion, kind, "", "", "", "", "not measured", "", "",
                         "", search_trail(res, kind)])  # fmt: skip
            continue
        what = (
            f"in full up to {best.rate:g} events/s"
            if r.passed
            else f"none in full; at {best.rate:g} events/s"
        )
        w = r.within_bar
        bar = (
            f"p99 <= {PLAN_BAR_MS:.0f} ms up to {fmt_rate(w.deliveries_per_s)} ({w.label}); "
            if w
            else f"p99 <= {PLAN_BAR_MS:.0f} ms: none; "
        )
        rows.append([
            measure, what, kind, fmt_ms(best.p50_ms), fmt_ms(best.p99_ms), fmt_ms(best.max_ms),
            fmt_pct(best.delivered_pct, 2), f"**{fmt_rate(best.deliveries_per_s)}**",
            fmt_pct(best.server_cpu_pct, 0), fmt_us(best.cpu_us_per_delivery), cpu_cell(best),
            bar + search_trail(res, kind),
        ])  # fmt: skip
    rates = {k: v.deliveries_per_s for k, v in res.max_rate.items()}
    ours = rates.get("trio-obs")
    for kind in judge.BASELINES:
        if ours and rates.get(kind):
            rows.append([measure, "", f"trio-obs ÷ {kind}", "", "", "", "",
                         fmt_x(ratio(ours, rates[kind])), "", "", "", ""])  # fmt: skip
    if rates.get(CEILING):
        for kind in servers_of(res):
            if kind != CEILING and rates.get(kind):
                to_c = fmt_x(ratio(rates[kind], rates[CEILING]))
                rows.append([measure, "", f"{kind} ÷ ceiling", "", "", "", "", to_c,
                             "", "", "", ""])  # fmt: skip
    return rows


def ingest_rows(res: Results) -> list[list[str]]:
    """The ingest row."""
    ing = res.ingest
    if ing is None:
        return []
    c = ing.commit or {}
    commit = (
        f"commit p50 {fmt_ms(c.get('p50_ms'))} p99 {fmt_ms(c.get('p99_ms'))} mean"
        f" {fmt_ms(c.get('mean_ms'))} ms, {c.get('events_per_commit', 0):.0f} events/commit"
        if c
        else "no commit histogram"
    )
    return [[
        "ingest POST→WS", f"{ing.batches}x100 events, 8 in flight", "trio-obs",
        fmt_ms(ing.p50_ms), fmt_ms(ing.p99_ms), fmt_ms(ing.max_ms),
        fmt_pct(ing.delivered_pct, 2),
        f"stored {fmt_rate(ing.stored_per_s)}, delivered {fmt_rate(ing.delivered_per_s)}",
        fmt_pct(ing.server_cpu_pct, 0), fmt_us(ing.cpu_us_per_event) + " / event",
        cpu_cell(ing), commit,
    ]]  # fmt: skip


def memory_rows(res: Results) -> list[list[str]]:
    """RSS per idle connection, and trio-obs ÷ each baseline."""
    rows = []
    mem = res.memory
    for kind in servers_of(res):
        if kind in mem:
            m = mem[kind]
            rows.append([
                "memory / idle connection", f"{m.connections} idle", kind,
                "", "", "", "", "", "", "", "",
                f"**{m.kib_per_connection:.1f} KiB** (RSS {m.rss_before / MiB:.0f} →"
                f" {m.rss_after / MiB:.0f} MiB)",
            ])  # fmt: skip
    if "trio-obs" in mem:
        for kind in judge.BASELINES:
            if kind in mem:
                per = ratio(mem["trio-obs"].kib_per_connection, mem[kind].kib_per_connection)
                rows.append(["memory / idle connection", "", f"trio-obs ÷ {kind}",
                             "", "", "", "", "", "", "", "", fmt_x(per)])  # fmt: skip
    return rows


def reproduction_table(res: Results) -> str:
    """Each server at 100 x 1,000 under our harness and under the independent client."""
    if not res.reproduction:
        return ""
    head = [
        "server", "ours p50 / p99", "independent p50 / p99", "ours ÷ independent (p50, p99)",
        "delivered ours / independent", "emitter lag ours / independent", "client CPU",
    ]  # fmt: skip
    rows = []
    for ind in res.reproduction:
        ours = res.load(ind.server, "100x1000")
        if ours is None or not ours.ok or ind.error:
            rows.append([ind.server, "—", f"error: {(ind.error or '')[:80]}", "", "", "", ""])
            continue
        p50, p99, dl, lag = judge.ours_side(res, ind)
        rows.append(
            [
                ind.server + (f" (median of {ind.rounds})" if ind.rounds > 1 else ""),
                f"{fmt_ms(p50)} / {fmt_ms(p99)} ms",
                f"{fmt_ms(ind.p50_ms)} / {fmt_ms(ind.p99_ms)} ms",
                f"{fmt_x(ratio(p50, ind.p50_ms))}, {fmt_x(ratio(p99, ind.p99_ms))}",
                f"{fmt_pct(dl, 2)} / {fmt_pct(ind.delivered_pct, 2)}",
                f"{lag or 0:.1f} / {ind.emitter.get('worstLagMs') or 0:.1f} ms",
                f"{ours.loadgen_cpu_pct:.0f} / {ind.client_cpu_pct:.0f} %",
            ]
        )
    return markdown(head, rows)


def stable_table(res: Results) -> str:
    """Instructions per delivery / per ingested event, and each ÷ the ceiling's."""
    if not res.stable:
        return ""
    ceiling = next(
        (s.per_unit for s in res.stable if s.server == CEILING and s.what == "delivery"), None
    )
    rows = []
    for s in res.stable:
        if s.error:
            rows.append([s.server, s.what, s.load, "—", "—", f"error: {s.error[:100]}"])
            continue
        to_c = ratio(s.per_unit, ceiling) if s.what == "delivery" else None
        rows.append([
            s.server, f"instructions / {s.what}", s.load,
            f"{s.per_unit:,.0f}" if s.per_unit is not None else "—", fmt_x(to_c),
            f"{s.instructions:,} instructions over {s.units:,} ({s.tool})",
        ])  # fmt: skip
    return markdown(["server", "figure", "load", "value", "÷ ceiling", "notes"], rows)


def compare_table(res: Results) -> str:
    """Old vs new trio-obs (``--compare``), figures of the same run."""
    cmp = res.compare
    if cmp is None:
        return ""
    if cmp.error:
        return f"Compare with {cmp.rev}: not measured: {cmp.error}"
    rows = []
    for name, old, new, unit, better in cmp.figures:
        r = ratio(new, old)
        rows.append([name, _num(old, unit), _num(new, unit), fmt_x(r), f"{better} is better"])
    head = ["figure", f"old ({cmp.rev} = {cmp.commit})", "new (this checkout)", "new ÷ old", ""]
    return markdown(head, rows)


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "/s":
        return fmt_rate(value)
    return f"{value:,.2f} {unit}".rstrip()


def search_table(res: Results) -> str:
    """The search section: each query's p50/p99, ingest with and without the index."""
    data = res.search if isinstance(res.search, dict) else {}
    found = data.get("search")
    if not isinstance(found, dict):
        return data.get("skipped", "not measured")
    rows = [
        [
            f"`{q['q']}`" + "".join(f" {k}={v}" for k, v in q.get("filters", {}).items()),
            str(q["hits"]),
            fmt_ms(q["p50_ms"]),
            fmt_ms(q["p99_ms"]),
        ]
        for q in found.get("queries", [])
    ]
    rows.append(["**all queries**", "", fmt_ms(found["p50_ms"]), fmt_ms(found["p99_ms"])])
    store = data.get("store") or {}
    lines = [
        f"Over {store.get('events', 0):,} stored events of the demo's mix "
        f"({store.get('bytes', 0) / MiB:,.0f} MiB on disk).",
        "",
        markdown(["query", "hits", "p50 ms", "p99 ms"], rows),
    ]
    http, local = data.get("http_ingest") or {}, data.get("ingest") or {}
    ingest_rows = []
    if "ratio" in http:
        ingest_rows.append(
            ["HTTP, batches of 100 (stored/s)", fmt_rate(http["with_stored_per_s"]),
             fmt_rate(http["without_stored_per_s"]), fmt_x(http["ratio"])]
        )  # fmt: skip
    if "ratio" in local:
        ingest_rows.append(
            ["in process, batches of 100", fmt_rate(local["with_index_per_s"]),
             fmt_rate(local["without_index_per_s"]), fmt_x(local["ratio"])]
        )  # fmt: skip
    if ingest_rows:
        lines += ["", markdown(["ingest", "with index", "without", "ratio"], ingest_rows)]
    again = data.get("reindex")
    if isinstance(again, dict):
        lines += [
            "",
            f"Indexing the whole store again in the background (an older store's first start): "
            f"{again['events']:,} events in {again['build_s']} s; the store opened in "
            f"{again['open_s']} s.",
        ]
    return "\n".join(lines)


def mix_table(res: Results) -> str:
    """The realistic mix (JSON plan events, OTLP spans) per server, each ÷ the floor."""
    mixes = res.meta.get("ingest_mix") or {}
    floor = res.meta.get("ingest_floor") or {}
    rows = []
    for kind in ("json", "otlp"):
        fl = floor.get(kind)
        if fl:
            rows.append([
                kind, "floor (floor.py)", fmt_rate(fl["events_per_s"]),
                "1.00x", fmt_us(fl["cpu_us_per_event"]), "1.00x", "", "", "",
            ])  # fmt: skip
        for server, by_kind in mixes.items():
            m = by_kind.get(kind)
            if not m:
                continue
            cpu = m.get("cpu_us_per_unit")
            rows.append([
                kind, server, fmt_rate(m["units_per_s"]),
                fmt_x(m["units_per_s"] / fl["events_per_s"]) if fl else "—",
                fmt_us(cpu), fmt_x(fl["cpu_us_per_event"] / cpu) if fl and cpu else "—",
                fmt_pct(m.get("delivered_pct"), 2), fmt_ms(m.get("p50_ms")),
                fmt_ms(m.get("p99_ms")),
            ])  # fmt: skip
    for server, live in (res.meta.get("ingest_live") or {}).items():
        rows.append([
            "live", server, fmt_rate(live["spans_per_s"]), "", "", "",
            f"{live['timed']} span starts", fmt_ms(live.get("p50_ms")), fmt_ms(live.get("p99_ms")),
        ])  # fmt: skip
    if not rows:
        return ""
    head = ["mix", "server", "events (spans)/s", "÷ floor", "CPU / unit", "floor CPU ÷ this",
            "delivered to `all`", "p50 ms", "p99 ms"]  # fmt: skip
    note = (
        "\n\nJSON: batches of 100 plan events of all 11 types over 16 executions; OTLP:"
        " protobuf, 512 finished spans per batch; 8 requests in flight, one `all` client"
        " receiving every stored event (delivered = frames ÷ events stored); live: span starts"
        " at 1,000/s in the live processor's batches of 10, POST → `all` client (target"
        " ≤ 10 ms p99). The floor"
        " (`floor.py`): one thread doing only the unavoidable work on the same bodies."
    )
    return markdown(head, rows) + note


def viewer_table(res: Results) -> str:
    """The viewer section's JSON (``benchmarks/viewer/run.py``), flattened into a table."""
    v = res.viewer
    if not v:
        return ""
    if "skipped" in v:
        return f"Viewer: skipped: {v['skipped']}"
    rows = [[key, _cell(value)] for key, value in _flatten(v)]
    return markdown(["viewer figure", "value"], rows)


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        out: list[tuple[str, Any]] = []
        for k, val in obj.items():
            out += _flatten(val, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, obj)]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."


def targets_text(res: Results) -> str:
    """The targets as a markdown list."""
    lines = ["Targets (SPEC §8; judged on ratios measured in this run, absolute figures beside):"]
    for t in res.targets:
        mark = {True: "met", False: "NOT met", None: "not measured"}[t.met]
        implied = f" [this run's k: {t.k_implied:.2f}]" if t.k_implied else ""
        lines.append(f"- **{mark}**: {t.target} — {t.figure}{implied}")
    if res.skipped:
        lines.append("")
        lines.append("Skipped: " + "; ".join(res.skipped))
    return "\n".join(lines)


def everything(res: Results, all_steps: bool = False) -> str:
    """The whole report: the main table, the side tables, the targets."""
    parts = [table(res, all_steps)]
    for title, text in (
        ("Baselines under our harness vs under an independent client (same run)",
         reproduction_table(res)),
        ("Stable figures (instructions, callgrind; do not move with the machine)",
         stable_table(res)),
        ("trio-obs old vs new (same run)", compare_table(res)),
        ("Ingest, the realistic mix, against the floor (same run)", mix_table(res)),
        ("Viewer", viewer_table(res)),
        ("Search", search_table(res)),
    ):  # fmt: skip
        if text:
            parts.append(f"{title}:\n\n{text}")
    parts.append(targets_text(res))
    return "\n\n".join(parts)
