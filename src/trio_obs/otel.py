"""Span starts, live: a span processor that sends each span to trio-obs when it starts.

OpenTelemetry SDKs export a span when it ends, so a tool call shows only once it is
over. :class:`LiveSpanProcessor` (``pip install 'trio-obs[otel]'``) sits beside the
runner's usual exporter and sends each span's start at once and its end when it ends,
to the server's ``POST /v1/traces``::

    from opentelemetry.sdk.trace import TracerProvider
    from trio_obs.otel import LiveSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(LiveSpanProcessor("http://127.0.0.1:3001"))
    provider.add_span_processor(usual_batch_processor)  # unchanged

The instrumented code never waits for the network: ``on_start`` and ``on_end`` put the
span in a bounded buffer and return; one worker thread posts OTLP protobuf batches,
each with an ``Idempotency-Key``, and retries with backoff while the server is away
(it drops spans only when the buffer is full, and counts them). The processor marks
each span it handles (attribute ``trio_obs.live_span``), so the server takes that span's
start and end from this processor alone and the usual exporter's copy of it adds no
second ``tool:start``.

While spans are open it also says, every ``keepalive_interval`` seconds, that the
process is alive (SPEC §13): one OTLP log record per trace with open spans, posted to
``/v1/logs``, with no body and no span, and two attributes: ``trio_obs.keepalive`` (the
interval, seconds) and ``trio_obs.producer`` (this processor's id). The server stores it
as an ``agent:heartbeat`` of that execution; when they stop (the process died, hung
with the GIL held, lost its network) for ``max(3 x interval, --lost-after)``, the
watchdog judges the producer ``lost``. A keep-alive that cannot be sent is not retried
(the next one follows), and none is sent while no span is open.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from typing import Final

import httpx
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, attach, set_value
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .client.common import auth_headers, endpoints
from .core.otlp import LIVE_COPY, LIVE_SPAN
from .core.watchdog import KEEPALIVE, PRODUCER

log = logging.getLogger("trio_obs.otel")

RETRY_STATUSES: Final = frozenset({408, 429, 502, 503, 504})
"""Answers after which a batch is sent again (OTLP/HTTP's retryable codes, and 408)."""
_FIRST_WAIT: Final = 0.1
_MAX_WAIT: Final = 5.0
_IDLE_CHECK: Final = 0.5
"""Seconds between the idle worker's looks at whether the program is exiting."""

_SpanKey = tuple[int, int]


class LiveSpanProcessor(SpanProcessor):
    """Sends each span's start at once and its end when it ends, to a trio-obs server.

    ``url`` is the server (``http://host:port``) or its ``/v1/traces`` endpoint;
    ``token`` its bearer token. At most ``max_queue_size`` spans wait to be sent (a
    span's start also keeps room for its end); beyond that new spans are left to the
    usual exporter and counted in :attr:`dropped`. ``timeout`` bounds each request;
    :meth:`shutdown` sends what is left for at most ``shutdown_timeout`` seconds.
    ``keepalive_interval``: seconds between keep-alives while spans are open (0: none).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        max_queue_size: int = 2048,
        max_batch_size: int = 512,
        timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
        keepalive_interval: float = 5.0,
    ) -> None:
        if max_queue_size < 2 or max_batch_size < 1:
            raise ValueError("max_queue_size must be >= 2 and max_batch_size >= 1")
        if keepalive_interval < 0:
            raise ValueError("keepalive_interval must be >= 0 (0: no keep-alive)")
        base = endpoints(url).http
        self.endpoint = base if base.endswith("/v1/traces") else f"{base}/v1/traces"
        self.logs_endpoint = self.endpoint.removesuffix("/v1/traces") + "/v1/logs"
        self.keepalive_interval = keepalive_interval
        self.producer_id = uuid.uuid4().hex[:16]
        self.keepalives = 0
        """Keep-alive requests the server took."""
        self._resource: Resource | None = None
        self.max_queue_size = max_queue_size
        self.max_batch_size = max_batch_size
        self.timeout = timeout
        self.shutdown_timeout = shutdown_timeout
        self._headers = {"content-type": "application/x-protobuf", **auth_headers(token)}
        self._cond = threading.Condition()
        self._queue: deque[ReadableSpan] = deque()
        self._open: set[_SpanKey] = set()
        """Marked spans whose end is still to come (each holds a place in the buffer)."""
        self._sending = 0
        """Spans taken from the queue whose delivery is not over yet (still in memory)."""
        self._queued = 0
        """Spans put in the buffer so far."""
        self._done = 0
        """Spans taken from the buffer whose delivery is over (sent or given up)."""
        self._dropped = 0
        self._stopping = False
        self._deadline = 0.0
        self._warned_full = False
        self._unreachable = False
        self._told: set[str] = set()
        self._stopped = threading.Event()
        """Set with the shutdown: a retry waiting for its turn goes at once."""
        self._worker = threading.Thread(target=self._run, name="trio-obs-live-spans")
        self._worker.start()
        self._keeper: threading.Thread | None = None
        if keepalive_interval > 0:
            self._keeper = threading.Thread(
                target=self._keep_alive, name="trio-obs-keepalive", daemon=True
            )
            self._keeper.start()

    @property
    def dropped(self) -> int:
        """Spans not sent: the buffer was full, the server refused them, or time ran out."""
        return self._dropped

    # ------------------------------------------------------------------ SpanProcessor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Queue a copy of ``span`` as it is now (in progress); never blocks."""
        context = span.get_span_context()
        with self._cond:
            if self._stopping:
                return
            if self._held() + 2 > self.max_queue_size:
                self._drop_full()
                return  # not marked: the usual exporter's copy will show it whole
            span.set_attribute(LIVE_SPAN, True)
            attributes = dict(span.attributes or {})
            if attributes.get(LIVE_SPAN) is not True:
                return  # the span's attribute limit is reached: leave it unmarked
            self._open.add((context.trace_id, context.span_id))
            if self._resource is None:
                self._resource = _resource_of(span)
            self._put(
                ReadableSpan(
                    name=span.name,
                    context=context,
                    parent=span.parent,
                    resource=span.resource,
                    attributes=attributes,
                    links=span.links,
                    kind=span.kind,
                    status=span.status,
                    start_time=span.start_time,
                    instrumentation_scope=span.instrumentation_scope,
                )
            )

    def on_end(self, span: ReadableSpan) -> None:
        """Queue the ended ``span``; never blocks."""
        context = span.get_span_context()
        if context is None:
            return
        with self._cond:
            if self._stopping:
                return
            key = (context.trace_id, context.span_id)
            if key in self._open:
                self._open.discard(key)  # its place was kept at the start
            elif self._held() + 1 > self.max_queue_size:
                self._drop_full()
                return
            self._put(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until every span queued so far was sent (or given up); False on timeout."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._cond:
            target = self._queued
            while self._done < target and self._worker.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def shutdown(self) -> None:
        """Send what is queued for at most ``shutdown_timeout`` seconds, then stop the worker."""
        with self._cond:
            if not self._stopping:
                self._begin_stop()
        if self._worker is not threading.current_thread():
            self._worker.join(self.shutdown_timeout + 1.0)

    # ------------------------------------------------------------------ the buffer

    def _held(self) -> int:
        """Spans in memory: queued, being sent, and the places kept for ends to come."""
        return len(self._queue) + self._sending + len(self._open)

    def _put(self, span: ReadableSpan) -> None:
        self._queue.append(span)
        self._queued += 1
        self._cond.notify_all()

    def _drop_full(self) -> None:
        self._dropped += 1
        if not self._warned_full:
            self._warned_full = True
            log.warning(
                "LiveSpanProcessor: %d spans wait for %s already; dropping new ones "
                "(counted in .dropped; the usual exporter still sends them when they end)",
                self.max_queue_size,
                self.endpoint,
            )

    def _begin_stop(self) -> None:
        self._stopping = True
        self._deadline = time.monotonic() + self.shutdown_timeout
        self._stopped.set()
        self._cond.notify_all()

    def _take(self) -> list[ReadableSpan] | None:
        """The next batch; None when stopped and nothing is left."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait(_IDLE_CHECK)
                if not threading.main_thread().is_alive() and not self._stopping:
                    # The program is exiting without a shutdown(): send what is left, then
                    # end, so the interpreter is not kept waiting for this thread.
                    self._begin_stop()
            if not self._queue:
                return None
            count = min(len(self._queue), self.max_batch_size)
            self._sending = count
            return [self._queue.popleft() for _ in range(count)]

    def _finished(self, count: int) -> None:
        with self._cond:
            self._done += count
            self._sending = 0
            self._cond.notify_all()

    # ------------------------------------------------------------------ the worker

    def _run(self) -> None:
        # Our own requests must not become spans (an instrumented httpx would feed them
        # back to us without end); the SDK's processors suppress the same way.
        attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        with httpx.Client(timeout=self.timeout, trust_env=False) as client:
            while (batch := self._take()) is not None:
                try:
                    self._deliver(client, batch)
                except Exception:  # one bad batch must not end the worker
                    log.exception("LiveSpanProcessor: could not send %d spans", len(batch))
                    self._count_dropped(len(batch))
                finally:
                    self._finished(len(batch))

    def _time_left(self) -> float | None:
        """Seconds the next request may take; None once a shutdown's time is up."""
        with self._cond:
            if not self._stopping and not threading.main_thread().is_alive():
                self._begin_stop()
            if not self._stopping:
                return self.timeout
            left = self._deadline - time.monotonic()
            return min(left, self.timeout) if left > 0 else None

    def _deliver(self, client: httpx.Client, batch: list[ReadableSpan]) -> None:
        body = encode(batch)
        # One key per batch: a retry after a lost answer is stored once (SPEC §5).
        headers = {**self._headers, "idempotency-key": uuid.uuid4().hex}
        wait = _FIRST_WAIT
        while True:
            left = self._time_left()
            if left is None:
                self._give_up(
                    batch, "the shutdown timeout ran out before the server took them", "timeout"
                )
                return
            try:
                response = client.post(self.endpoint, content=body, headers=headers, timeout=left)
            except httpx.TransportError as exc:
                reason = str(exc) or type(exc).__name__
            else:
                status = response.status_code
                if status == 200:
                    self._answered(response.content)
                    return
                if status == 413 and len(batch) > 1:  # too big for the server: halve it
                    half = len(batch) // 2
                    self._deliver(client, batch[:half])
                    self._deliver(client, batch[half:])
                    return
                if status not in RETRY_STATUSES:
                    why = f"the server refused them: HTTP {status} {response.text}"
                    self._give_up(batch, why, str(status))
                    return
                reason = f"HTTP {status}"
                wait = max(wait, _retry_after(response))
            if not self._unreachable:
                self._unreachable = True
                log.warning(
                    "LiveSpanProcessor: %s did not take %d spans (%s); retrying",
                    self.endpoint,
                    len(batch),
                    reason,
                )
            delay = min(wait, self._time_left() or 0.0)
            if self._stopped.is_set():
                time.sleep(delay)  # shutting down: keep backing off until the deadline
            else:
                self._stopped.wait(delay)  # a shutdown ends the wait: one more try now
            wait = min(wait * 2, _MAX_WAIT)

    # ------------------------------------------------------------------ keep-alive

    def _open_traces(self) -> list[int]:
        with self._cond:
            return sorted({trace for trace, _ in self._open})

    def _keep_alive(self) -> None:
        """Every interval while spans are open: one record per open trace to ``/v1/logs``."""
        attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        with httpx.Client(timeout=min(self.timeout, self.keepalive_interval), trust_env=False) as c:
            while not self._stopped.wait(self.keepalive_interval):
                if not threading.main_thread().is_alive():
                    return
                traces = self._open_traces()
                if not traces:
                    continue
                body = keepalive_request(
                    traces, self.keepalive_interval, self.producer_id, self._resource
                )
                try:
                    response = c.post(self.logs_endpoint, content=body, headers=self._headers)
                except httpx.HTTPError:
                    continue  # the next one follows; the spans' own retries say the rest
                if response.status_code == 200:
                    self.keepalives += 1

    def _answered(self, content: bytes) -> None:
        if self._unreachable:
            self._unreachable = False
            log.info("LiveSpanProcessor: %s takes spans again", self.endpoint)
        answer = ExportTraceServiceResponse.FromString(content)
        if answer.partial_success.rejected_spans:
            log.warning(
                "LiveSpanProcessor: %s refused %d spans: %s",
                self.endpoint,
                answer.partial_success.rejected_spans,
                answer.partial_success.error_message,
            )

    def _count_dropped(self, count: int) -> None:
        with self._cond:
            self._dropped += count

    def _give_up(self, batch: list[ReadableSpan], why: str, kind: str) -> None:
        self._count_dropped(len(batch))
        # Once per kind of failure (a wrong token would otherwise log every batch).
        level = logging.DEBUG if kind in self._told else logging.ERROR
        self._told.add(kind)
        log.log(level, "LiveSpanProcessor: dropped %d spans: %s", len(batch), why)


def encode(batch: list[ReadableSpan]) -> bytes:
    """The OTLP protobuf request of ``batch``; marked spans say which copy they are.

    A copy without an end time is the start (``trio_obs.live_copy = "start"``), the
    others are the end; unmarked spans (the buffer was full at their start) go as they are.
    """
    request = encode_spans(batch)
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if any(kv.key == LIVE_SPAN for kv in span.attributes):
                    phase = "end" if span.end_time_unix_nano else "start"
                    span.attributes.append(
                        KeyValue(key=LIVE_COPY, value=AnyValue(string_value=phase))
                    )
    return request.SerializeToString()


def keepalive_request(
    traces: list[int], interval: float, producer: str, resource: Resource | None
) -> bytes:
    """The OTLP logs request of one keep-alive: a record per trace, no span, no body."""
    now = time.time_ns()
    attributes = [
        KeyValue(key=KEEPALIVE, value=AnyValue(double_value=interval)),
        KeyValue(key=PRODUCER, value=AnyValue(string_value=producer)),
    ]
    records = [
        LogRecord(
            time_unix_nano=now,
            observed_time_unix_nano=now,
            trace_id=trace.to_bytes(16, "big"),
            attributes=attributes,
        )
        for trace in traces
    ]
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=resource or Resource(), scope_logs=[ScopeLogs(log_records=records)]
            )
        ]
    )
    return request.SerializeToString()


def _resource_of(span: Span) -> Resource:
    """The span's resource as OTLP (its attributes; the service name is what is read)."""
    pairs = []
    for key, value in (span.resource.attributes if span.resource else {}).items():
        if isinstance(value, str):
            pairs.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    return Resource(attributes=pairs)


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", "0")), 0.0), _MAX_WAIT)
    except ValueError:
        return 0.0
