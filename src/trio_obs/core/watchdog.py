"""The watchdog's judge (SPEC §13): stored events and ``now`` in, alerts and clears out.

Pure: no clock, no I/O. A driver (``server.watch``) feeds it every stored event in
each stream's seq order and asks it, now and then, what to store. What it answers
depends on the stored events alone (never on which node asks, or when it started), so
every node of a cluster and every restart names the same condition with the same
``alertId``, and the hub's idempotency stores it once.

- **lost**: an instance that sent ``agent:heartbeat`` (the live span processor's
  keep-alive is one) silent for ``max(3 x its own interval, lost_after)``. Its interval
  is ``metrics.intervalSeconds`` when the heartbeat says it, else the gap between its
  last two heartbeats. When every heartbeating instance of a run is lost, the run's
  open spans close with ``span:end`` state ``lost`` (provisional: the real end is still
  stored later), in the same batch as the alert.
- **slow**: an open tool call (``tool:start``) or model call (``span:start`` kind ``llm``)
  older than ``max(3 x p95 of that tool's (model's) durations seen, slow_after)``; once.
- **idle**: a running execution with no event for ``idle_after``; its next event clears.

Nothing is judged for an execution that has ended; its alerts are cleared as it ends.
A judge that starts (a restart, a new node) gives every silence it finds the full
threshold from its start, so a server that was down does not call its producers lost.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final, Literal, cast

import attrs

from . import events as ev
from .facts import ROLE_OF, span_id_of, span_kind_of
from .protocol import ENDED_STATES

RUNNING_STATES: Final = frozenset({"started", "running", "paused"})
P95_SAMPLES: Final = 200
"""Durations kept per tool (model) for its p95."""
P95_MIN_SAMPLES: Final = 5
"""Fewer durations than this: the tool has no p95 yet (``slow_after`` alone)."""
ENDED_MEMORY: Final = 10_000
"""Ended executions remembered, so that their late events open nothing."""
INTERVAL_FIELD: Final = "intervalSeconds"
"""The heartbeat metric that declares a producer's own interval (seconds)."""
KEEPALIVE: Final = "trio_obs.keepalive"
"""On an OTLP log record (no span, no body) from :class:`~trio_obs.otel.LiveSpanProcessor`:
its keep-alive interval in seconds. The record's trace is the execution it keeps alive."""
PRODUCER: Final = "trio_obs.producer"
"""On a keep-alive record: the id of the process (the processor) that sent it."""


def keepalive_heartbeat(
    trace_id: str, attributes: dict[str, object], service: str | None
) -> ev.AgentHeartbeatEvent | None:
    """The ``agent:heartbeat`` an OTLP keep-alive record stands for, or None if it is none.

    Its instance is ``otel:<service>:<producer>``; its interval is declared
    (``intervalSeconds``); it takes the server's time when stored (a producer's clock
    may be off, and silence is measured against the server's).
    """
    interval = attributes.get(KEEPALIVE)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
        return None
    producer = attributes.get(PRODUCER)
    who = f"otel:{service or 'otel'}:{producer if isinstance(producer, str) else 'process'}"
    return ev.AgentHeartbeatEvent(
        execution_id=trace_id,
        instance_id=who[:200],
        status="working",
        metrics={INTERVAL_FIELD: float(interval)},
    )


@attrs.frozen
class Thresholds:
    """The serve flags ``--lost-after``, ``--slow-after`` and ``--idle-after`` (seconds)."""

    lost_after: float = 30.0
    slow_after: float = 60.0
    idle_after: float = 600.0


DEFAULT_THRESHOLDS: Final = Thresholds()


def seconds_of(timestamp: str) -> float | None:
    """A stored time (``...Z``) as seconds since the epoch, or None if there is none."""
    if not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return None


def alert_id(kind: str, *parts: object) -> str:
    """The id of one condition: the same wherever and whenever it is judged."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]
    return f"{kind}-{digest}"


def idempotency_key(alert: str, what: Literal["alert", "clear"]) -> str:
    """The ``Idempotency-Key`` the driver stores a judgement with (one per condition)."""
    return f"watch:{what}:{alert}"


@attrs.define
class OpenSpan:
    """A span opened and not (really) closed yet."""

    span_id: str
    kind: ev.SpanKind
    name: str
    start: float
    tool_use_id: str | None = None
    agent: str | None = None
    lost_by: str | None = None
    """The lost alert its provisional ``lost`` closing names, while it is not cleared."""


@attrs.define
class Producer:
    """One instance that sends heartbeats for a run."""

    instance_id: str
    last: float
    last_seq: int
    interval: float | None = None
    alert: str | None = None
    """Its active (or pending) lost alert."""


@attrs.define
class Run:
    """What the judge knows of one execution."""

    execution_id: str
    status: str | None = None
    last: str = ""
    """The stored time of its last event that is not the watchdog's."""
    last_seq: int = 0
    """The seq of its last event that is not the watchdog's (idle's condition)."""
    fed_seq: int = 0
    """The last seq fed (events at or before it were seen: a replay's overlap)."""
    spans: dict[str, OpenSpan] = attrs.field(factory=dict)
    producers: dict[str, Producer] = attrs.field(factory=dict)
    alerts: dict[str, ev.WatchAlertEvent] = attrs.field(factory=dict)
    """Active alerts (stored, not cleared) by id."""
    idle_alert: str | None = None
    lost_due: float = 0.0
    """No producer of it without an alert can be judged lost before this time (a lower
    bound): the ticks before it skip its producers (issue 25: a run's every heartbeat
    instance was looked at every tick)."""
    oldest: float = math.inf
    """At or before the start of every open span (the earliest, after a tick looked at them
    all): while it is younger than ``slow_after``, no span of the run is looked at."""


@attrs.frozen
class Judgement:
    """Events to store together, under one idempotency key."""

    execution_id: str
    alert_id: str
    key: str
    events: tuple[ev.StreamEvent, ...]


@attrs.frozen
class OpenSpanView:
    """An open span as ``/api/running`` and ``tail --running`` show it."""

    execution_id: str
    span_id: str
    kind: str
    name: str
    start: float
    tool_use_id: str | None
    agent: str | None
    alert: str | None
    """``slow`` or ``lost`` while such an alert is active on it."""


_TIMED: Final = frozenset({"tool", "llm"})
"""Kinds of span judged slow (and whose durations make their p95)."""
_WATCH_TYPES: Final = frozenset({"watch:alert", "watch:clear"})


def _span_of(event: ev.StreamEvent, span_id: str) -> tuple[ev.SpanKind, str, str | None]:
    """(kind, name, tool use id) of an opening event (kind as the facts table says)."""
    kind = cast("ev.SpanKind", span_kind_of(event) or "span")
    if isinstance(event, ev.ToolStartEvent):
        return kind, event.tool, event.tool_use_id
    if isinstance(event, ev.SkillStartEvent):
        return kind, event.skill_name, None
    if isinstance(event, ev.SpanStartEvent):
        return kind, event.model if kind == "llm" and event.model else event.name, None
    return kind, kind, None


def _p95(values: Iterable[float]) -> float | None:
    ordered = sorted(values)
    if len(ordered) < P95_MIN_SAMPLES:
        return None
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class Judge:
    """Decides the watchdog's alerts and clears from the stored events (SPEC §13)."""

    def __init__(self, thresholds: Thresholds, *, started: float) -> None:
        self.thresholds = thresholds
        self.started = started
        """When this judge began to watch: no silence counts from before it."""
        self.runs: dict[str, Run] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._durations: dict[str, deque[float]] = {}
        self._pending: set[str] = set()
        """Alerts and clears handed out whose stored copy has not been fed yet."""

    # ------------------------------------------------------------------ feeding

    def feed(self, key: str, event: ev.StreamEvent) -> None:
        """One stored event of stream ``key`` (in seq order; a repeated seq is ignored)."""
        self.feed_all(((key, event),))

    def feed_all(self, stored: Iterable[tuple[str, ev.StreamEvent]]) -> None:
        """Stored events with their stream keys, in order (a repeated seq is ignored).

        Called for every stored event, a dispatched group at a time: the common path is a
        few dict lookups (times are kept as the stored strings, which sort, and read as
        numbers only where judged).
        """
        ended, runs, roles = self._ended, self.runs, ROLE_OF
        for key, event in stored:
            if key in ended:
                continue
            run = runs.get(key)
            if run is None:
                run = runs[key] = Run(key)
            seq = event.seq or 0
            if seq and seq <= run.fed_seq:
                continue
            if seq > run.fed_seq:
                run.fed_seq = seq
            kind = event.type
            if kind in _WATCH_TYPES:
                self._watched(run, event)
                continue
            role = roles[kind]
            if role == "closes" and isinstance(event, ev.SpanEndEvent) and event.state == "lost":
                self._lost(run, event)
                continue
            stamp = event.timestamp
            if stamp > run.last:
                run.last = stamp
            run.last_seq = seq
            if role != "content" or kind == "agent:heartbeat":  # else: heard of, that is all
                self._spans_and_states(key, run, seq, role, event)

    @staticmethod
    def _lost(run: Run, event: ev.SpanEndEvent) -> None:
        # A provisional closing (ours): the span stays open until its real end.
        span = run.spans.get(event.span_id)
        by = (event.details or {}).get("alertId")
        if span is not None and isinstance(by, str) and by in run.alerts:
            span.lost_by = by

    def _spans_and_states(
        self, key: str, run: Run, seq: int, role: str, event: ev.StreamEvent
    ) -> None:
        stamp = event.timestamp
        if role == "opens":
            span_id = span_id_of(event)
            if span_id is not None and span_id not in run.spans:
                opened = _span_of(event, span_id)
                at = seconds_of(stamp) or 0.0
                run.spans[span_id] = OpenSpan(
                    span_id, opened[0], opened[1], at, opened[2], event.agent
                )
                if at < run.oldest:
                    run.oldest = at
        elif role == "closes":
            span = run.spans.pop(span_id_of(event) or "", None)
            if span is not None and span.kind in _TIMED:
                duration: float | None = getattr(event, "duration_ms", None)
                if duration is not None:
                    self._durations.setdefault(
                        f"{span.kind}:{span.name}", deque(maxlen=P95_SAMPLES)
                    ).append(duration / 1000)
        elif isinstance(event, ev.AgentHeartbeatEvent):
            self._heartbeat(run, event, seconds_of(stamp) or 0.0, seq)
        elif isinstance(event, ev.ExecutionStatusEvent):
            run.status = event.status
            if event.status in ENDED_STATES:
                self._end(key)

    def _watched(self, run: Run, event: ev.StreamEvent) -> None:
        if isinstance(event, ev.WatchAlertEvent):
            self._pending.discard(event.alert_id)
            self._alerted(run, event)
        elif isinstance(event, ev.WatchClearEvent):
            self._pending.discard(idempotency_key(event.alert_id, "clear"))
            self._cleared(run, event.alert_id)

    def _heartbeat(self, run: Run, event: ev.AgentHeartbeatEvent, at: float, seq: int) -> None:
        producer = run.producers.get(event.instance_id)
        declared = (event.metrics or {}).get(INTERVAL_FIELD)
        if producer is None:
            producer = run.producers[event.instance_id] = Producer(
                event.instance_id, at, seq, declared if declared and declared > 0 else None
            )
        else:
            if declared and declared > 0:
                producer.interval = declared
            elif at > producer.last:
                producer.interval = at - producer.last
            producer.last = max(producer.last, at)
            producer.last_seq = seq
        run.lost_due = min(run.lost_due, self._lost_due(producer))

    def _lost_limit(self, producer: Producer) -> float:
        """Seconds of silence after which ``producer`` is lost."""
        return max(3 * (producer.interval or 0.0), self.thresholds.lost_after)

    def _lost_due(self, producer: Producer) -> float:
        """When ``producer`` is lost if it stays silent (a microsecond early: rounding never
        makes a tick skip it when it is due)."""
        return max(producer.last, self.started) + self._lost_limit(producer) - 1e-6

    def _alerted(self, run: Run, alert: ev.WatchAlertEvent) -> None:
        run.alerts[alert.alert_id] = alert
        if alert.alert == "lost" and alert.instance_id in run.producers:
            run.producers[alert.instance_id].alert = alert.alert_id
        elif alert.alert == "idle":
            run.idle_alert = alert.alert_id

    def _cleared(self, run: Run, alert: str) -> None:
        gone = run.alerts.pop(alert, None)
        if gone is None:
            return
        for producer in run.producers.values():
            if producer.alert == alert:
                producer.alert = None
                run.lost_due = 0.0  # it may be judged lost again
        if run.idle_alert == alert:
            run.idle_alert = None
        if gone.alert == "lost":  # a producer is back: the run's spans are not lost
            for span in run.spans.values():
                span.lost_by = None

    def _end(self, key: str) -> None:
        """The execution ended: it is judged no more (its active alerts are cleared first,
        by :meth:`judge`, while the run is kept for that)."""
        run = self.runs[key]
        if not run.alerts:
            self._forget(key)

    def _forget(self, key: str) -> None:
        self.runs.pop(key, None)
        self._ended[key] = None
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    def forget(self, key: str) -> None:
        """Stream ``key`` was deleted (retention): nothing of it is judged any more."""
        self.runs.pop(key, None)

    def failed(self, judgement: Judgement) -> None:
        """Storing ``judgement`` failed (or was put off): judge it again at the next call."""
        self._pending.discard(judgement.key)
        self._pending.discard(judgement.alert_id)

    # ------------------------------------------------------------------ judging

    def judge(self, now: float) -> list[Judgement]:
        """What to store now: new alerts (with any lost closings) and clears."""
        out: list[Judgement] = []
        for run in list(self.runs.values()):
            out += self._judge_run(run, now)
        return out

    def _judge_run(self, run: Run, now: float) -> list[Judgement]:
        out: list[Judgement] = []
        ended = run.status in ENDED_STATES
        # Clears: the condition of an active alert no longer holds.
        for alert in list(run.alerts.values()):
            why = "the execution ended" if ended else self._still(run, alert)
            if why is not None:
                key = idempotency_key(alert.alert_id, "clear")
                if key not in self._pending:
                    self._pending.add(key)
                    clear = ev.WatchClearEvent(
                        execution_id=run.execution_id,
                        alert_id=alert.alert_id,
                        message=why,
                        span_id=alert.span_id,
                    )
                    out.append(Judgement(run.execution_id, alert.alert_id, key, (clear,)))
        if ended:
            if not run.alerts:
                self._forget(run.execution_id)
            return out
        t = self.thresholds
        # lost
        lost_now: list[ev.WatchAlertEvent] = []
        due = math.inf
        for producer in run.producers.values() if now >= run.lost_due else ():
            if producer.alert is not None:
                continue
            due = min(due, self._lost_due(producer))
            limit = self._lost_limit(producer)
            if now - max(producer.last, self.started) < limit:
                continue
            aid = alert_id("lost", run.execution_id, producer.instance_id, producer.last_seq)
            if aid in self._pending:
                continue
            lost_now.append(
                ev.WatchAlertEvent(
                    execution_id=run.execution_id,
                    alert_id=aid,
                    alert="lost",
                    since=ev_time(producer.last),
                    instance_id=producer.instance_id,
                    message=f"{producer.instance_id} silent for {_ago(now - producer.last)} "
                    f"(judged lost after {_ago(limit)})",
                )
            )
        if now >= run.lost_due:
            run.lost_due = due
        closing: set[str] = set()
        if lost_now:
            all_lost = all(
                p.alert is not None or any(a.instance_id == p.instance_id for a in lost_now)
                for p in run.producers.values()
            )
            for i, alert in enumerate(lost_now):
                events: list[ev.StreamEvent] = [alert]
                if all_lost and i == len(lost_now) - 1:
                    closings = self._lost_closings(run, alert, now)
                    closing.update(c.span_id for c in closings)
                    events += closings
                self._pending.add(alert.alert_id)
                out.append(
                    Judgement(
                        run.execution_id,
                        alert.alert_id,
                        idempotency_key(alert.alert_id, "alert"),
                        tuple(events),
                    )
                )
        # slow (no limit is below slow_after: a run whose spans are all younger is passed by)
        spans = run.spans.values() if now - run.oldest >= t.slow_after else ()
        if spans:
            run.oldest = min(span.start for span in spans)
        for span in spans:
            if span.kind not in _TIMED or span.lost_by or span.span_id in closing:
                continue
            if now - span.start < t.slow_after:
                continue  # young: the common case, cheaply
            aid = alert_id("slow", run.execution_id, span.span_id)
            if aid in run.alerts or aid in self._pending:
                continue
            limit = self.slow_limit(span)
            if now - span.start < limit:
                continue
            self._pending.add(aid)
            slow = ev.WatchAlertEvent(
                execution_id=run.execution_id,
                alert_id=aid,
                alert="slow",
                since=ev_time(span.start),
                span_id=span.span_id,
                tool_use_id=span.tool_use_id,
                agent=span.agent,
                message=f"{span.kind} {span.name} running for {_ago(now - span.start)} "
                f"(slow after {_ago(limit)})",
            )
            out.append(Judgement(run.execution_id, aid, idempotency_key(aid, "alert"), (slow,)))
        # idle
        if (
            run.status in RUNNING_STATES
            and run.idle_alert is None
            and now - max(seconds_of(run.last) or 0.0, self.started) >= t.idle_after
        ):
            aid = alert_id("idle", run.execution_id, run.last_seq)
            if aid not in self._pending:
                self._pending.add(aid)
                idle = ev.WatchAlertEvent(
                    execution_id=run.execution_id,
                    alert_id=aid,
                    alert="idle",
                    since=run.last,
                    message=f"no event for {_ago(now - (seconds_of(run.last) or now))}",
                )
                out.append(Judgement(run.execution_id, aid, idempotency_key(aid, "alert"), (idle,)))
        return out

    def slow_limit(self, span: OpenSpan) -> float:
        """Seconds after which ``span`` is slow: max(3 x its tool's p95, ``slow_after``)."""
        p95 = _p95(self._durations.get(f"{span.kind}:{span.name}", ()))
        return max(3 * p95 if p95 is not None else 0.0, self.thresholds.slow_after)

    def _still(self, run: Run, alert: ev.WatchAlertEvent) -> str | None:
        """Why ``alert`` is over (the clear's message), or None while it holds."""
        if alert.alert == "lost":
            producer = run.producers.get(alert.instance_id or "")
            if (
                producer is not None
                and alert_id("lost", run.execution_id, producer.instance_id, producer.last_seq)
                != alert.alert_id
            ):
                return f"{producer.instance_id} is heard from again"
            return None
        if alert.alert == "slow":
            if alert.span_id not in run.spans:
                return "the call ended"
            return None
        if alert.alert_id != alert_id("idle", run.execution_id, run.last_seq):
            return "the execution is active again"
        return None

    def _lost_closings(
        self, run: Run, alert: ev.WatchAlertEvent, now: float
    ) -> list[ev.SpanEndEvent]:
        closings: list[ev.SpanEndEvent] = []
        for span in run.spans.values():
            if span.lost_by is not None:
                continue  # (marked when the stored closing is fed back)
            closings.append(
                ev.SpanEndEvent(
                    execution_id=run.execution_id,
                    span_id=span.span_id,
                    state="lost",
                    kind=span.kind,
                    name=span.name,
                    agent=span.agent,
                    duration_ms=round(max(0.0, now - span.start) * 1000, 3),
                    details={"inferred": True, "alertId": alert.alert_id},
                )
            )
        return closings

    # ------------------------------------------------------------------ reading

    def open_spans(self) -> list[OpenSpanView]:
        """Every open span of a running execution, oldest first."""
        views: list[OpenSpanView] = []
        for run in self.runs.values():
            slow = {a.span_id for a in run.alerts.values() if a.alert == "slow"}
            for span in run.spans.values():
                mark = "lost" if span.lost_by else ("slow" if span.span_id in slow else None)
                views.append(
                    OpenSpanView(
                        run.execution_id,
                        span.span_id,
                        span.kind,
                        span.name,
                        span.start,
                        span.tool_use_id,
                        span.agent,
                        mark,
                    )
                )
        return sorted(views, key=lambda v: v.start)

    def is_lost(self, execution_id: str) -> bool:
        """Whether every producer of a running execution is judged lost (its state: ``lost``)."""
        run = self.runs.get(execution_id)
        return (
            run is not None
            and run.status not in ENDED_STATES
            and bool(run.producers)
            and all(p.alert is not None for p in run.producers.values())
        )

    def with_state(self, summary: ev.ExecutionSummary) -> ev.ExecutionSummary:
        """``summary`` with the state ``lost`` while the run is lost (SPEC §13)."""
        if self.is_lost(summary.execution_id):
            return attrs.evolve(summary, state="lost")
        return summary

    def active_alerts(self) -> list[ev.WatchAlertEvent]:
        """Every stored alert not cleared yet, oldest first."""
        alerts = [a for run in self.runs.values() for a in run.alerts.values()]
        return sorted(alerts, key=lambda a: (a.timestamp, a.alert_id))

    def counts(self) -> dict[str, int]:
        """Open, slow and lost spans (``/metrics``)."""
        views = self.open_spans()
        return {
            "open": sum(v.alert != "lost" for v in views),
            "slow": sum(v.alert == "slow" for v in views),
            "lost": sum(v.alert == "lost" for v in views),
        }


def ev_time(seconds: float) -> str:
    """Seconds since the epoch as a stored time."""
    return ev.iso_utc(datetime.fromtimestamp(seconds, UTC))
