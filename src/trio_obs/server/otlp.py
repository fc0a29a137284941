"""OTLP/HTTP in (SPEC §11): ``POST /v1/traces`` and ``POST /v1/logs`` on the server's port.

The HTTP side only: content types (protobuf, or the OTLP/JSON mapping with hex ids),
``Content-Encoding: gzip`` (bounded after decompression too), parsing with the
official ``opentelemetry-proto`` messages, and the answers of the OTLP/HTTP
specification in the request's own encoding: 200 with an export response (partial
success filled when items were refused), 400 with a ``google.rpc.Status`` for a body
that does not parse, 413, 415, and 503 with ``Retry-After`` when the store cannot take
the events. The rule that turns spans into events is ``core.otlp``; what it gives goes
through the hub as one atomic batch, like a ``POST /api/events``, under the request's
``Idempotency-Key`` or, as exporters send none, a hash of the body (a retry is one batch).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import zlib
from collections.abc import Callable
from typing import Any, Final, Protocol

import attrs
import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc.code_pb2 import Code
from google.rpc.error_details_pb2 import BadRequest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ..core.errors import InvalidInput, StoreError, UncertainOutcome
from ..core.otlp import translate_logs, translate_traces
from ..core.otlp_memory import SpanMemory, Translation
from ..core.protocol import MAX_JSON_DEPTH
from ..core.wire import depth_exceeds
from ..hub.clock import now_iso
from ..producers import Observability
from .http import HttpError, Request
from .ingest import idempotency_key, unavailable, uncertain_error
from .routes import Response

log = logging.getLogger("trio_obs.server")

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
RETRY_AFTER: Final = "1"
"""Seconds a client is asked to wait before retrying when the store is unavailable."""

_HEX: Final = re.compile(r"(?:[0-9a-fA-F]{2})*")
_CODES: Final = {
    400: Code.INVALID_ARGUMENT,
    413: Code.RESOURCE_EXHAUSTED,
    415: Code.UNIMPLEMENTED,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


# --------------------------------------------------------------------------- body


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent before its ``Content-Encoding``; 413 beyond ``limit`` bytes.

    Inflates at most ``limit + 1`` bytes, so a small body that would inflate to gigabytes
    (a "gzip bomb") costs no more memory than an honest one.
    """
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise HttpError(415, f"Content-Encoding {encoding!r} is not supported; use gzip")
    # gzip (RFC 1952), possibly several members; deflate is the zlib format (RFC 9110 8.4.1.2)
    wbits = 16 + zlib.MAX_WBITS if coding != "deflate" else zlib.MAX_WBITS
    out = bytearray()
    data = body
    try:
        while data:
            inflater = zlib.decompressobj(wbits)
            out += inflater.decompress(data, limit + 1 - len(out))
            while inflater.unconsumed_tail and len(out) <= limit:
                out += inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(out))
            if len(out) > limit:
                raise HttpError(413, f"the body inflates to more than {limit} bytes")
            if not inflater.eof:
                raise HttpError(400, f"the {coding} body is cut short")
            data = inflater.unused_data if coding != "deflate" else b""
    except zlib.error as exc:
        raise HttpError(400, f"the body is not valid {coding}: {exc}") from None
    return bytes(out)


def _items(node: Any, *keys: str) -> list[Any]:
    """``node[key]`` (the lowerCamelCase key, else the proto name) if it is a list."""
    if isinstance(node, dict):
        for key in keys:
            found = node.get(key)
            if isinstance(found, list):
                return found
    return []


_ID_KEYS: Final = (
    ("traceId", "trace_id"),
    ("spanId", "span_id"),
    ("parentSpanId", "parent_span_id"),
)


def _ids_to_base64(record: Any, where: str) -> None:
    """Turn the OTLP/JSON hex ids of ``record`` into the proto3 JSON mapping's base64."""
    if not isinstance(record, dict):
        return
    for keys in _ID_KEYS:
        for key in keys:
            text = record.get(key)
            if not isinstance(text, str):
                continue  # absent, or a type json_format will refuse with its own message
            if not _HEX.fullmatch(text):
                raise HttpError(
                    400, f"{where}.{keys[0]} must be hex digits (OTLP/JSON), got {text[:40]!r}"
                )
            record[key] = base64.b64encode(bytes.fromhex(text)).decode()


def _spans_json(doc: Any) -> None:
    for r, resource in enumerate(_items(doc, "resourceSpans", "resource_spans")):
        for s, scope in enumerate(_items(resource, "scopeSpans", "scope_spans")):
            for n, span in enumerate(_items(scope, "spans")):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{n}]"
                _ids_to_base64(span, where)
                for k, link in enumerate(_items(span, "links")):
                    _ids_to_base64(link, f"{where}.links[{k}]")


def _logs_json(doc: Any) -> None:
    for r, resource in enumerate(_items(doc, "resourceLogs", "resource_logs")):
        for s, scope in enumerate(_items(resource, "scopeLogs", "scope_logs")):
            for n, record in enumerate(_items(scope, "logRecords", "log_records")):
                _ids_to_base64(record, f"resourceLogs[{r}].scopeLogs[{s}].logRecords[{n}]")


def parse(data: bytes, content_type: str, message: Message, hex_ids: Callable[[Any], None]) -> None:
    """Fill ``message`` from a protobuf or OTLP/JSON body; 400 when it does not parse."""
    if content_type == PROTOBUF:
        try:
            message.ParseFromString(data)
        except (DecodeError, RecursionError) as exc:
            raise HttpError(
                400, f"the body is not a valid protobuf {_name(message)}: {exc}"
            ) from None
        return
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"the body is not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise HttpError(400, f"the body must be a JSON object (an {_name(message)})")
    if depth_exceeds(doc, MAX_JSON_DEPTH):
        raise HttpError(400, f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    hex_ids(doc)
    try:
        # OTLP/JSON receivers ignore fields they do not know (newer senders may add some).
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError) as exc:
        raise HttpError(400, f"the body is not a valid OTLP/JSON {_name(message)}: {exc}") from None


def _name(message: Message) -> str:
    return message.DESCRIPTOR.name


# --------------------------------------------------------------------------- answers


def encoded(message: Message, content_type: str) -> bytes:
    """``message`` in the request's encoding (OTLP answers in the encoding it was sent)."""
    if content_type == PROTOBUF:
        return message.SerializeToString()
    return orjson.dumps(json_format.MessageToDict(message))


def failure(status: int, message: str, content_type: str = JSON, **headers: str) -> Response:
    """An OTLP failure: ``status`` with a ``google.rpc.Status`` saying why."""
    body = Status(code=_CODES.get(status, Code.UNKNOWN), message=message)
    if status == 400:
        violation = BadRequest.FieldViolation(field="body", description=message)
        body.details.add().Pack(BadRequest(field_violations=[violation]))
    return Response(
        status,
        encoded(body, content_type),
        content_type,
        [(name.replace("_", "-"), value) for name, value in headers.items()],
    )


@attrs.frozen
class Signal:
    """One OTLP signal this server takes: its request, its answer, and its rule."""

    name: str
    request: Callable[[], Message]
    answer: Callable[[Translation], Message]
    hex_ids: Callable[[Any], None]
    translate: Callable[[Any, SpanMemory, str], Translation]


def _traces_answer(t: Translation) -> Message:
    if not t.rejected:
        return ExportTraceServiceResponse()
    partial = ExportTracePartialSuccess(rejected_spans=t.rejected, error_message=t.message)
    return ExportTraceServiceResponse(partial_success=partial)


def _logs_answer(t: Translation) -> Message:
    if not t.rejected:
        return ExportLogsServiceResponse()
    partial = ExportLogsPartialSuccess(rejected_log_records=t.rejected, error_message=t.message)
    return ExportLogsServiceResponse(partial_success=partial)


TRACES: Final = Signal(
    "traces",
    ExportTraceServiceRequest,
    _traces_answer,
    _spans_json,
    lambda request, memory, now: translate_traces(request, memory, now=now),
)
LOGS: Final = Signal(
    "logs",
    ExportLogsServiceRequest,
    _logs_answer,
    _logs_json,
    lambda request, memory, now: translate_logs(request, memory, now=now),
)


def body_key(signal: Signal, data: bytes) -> str:
    """The idempotency key of an export sent without one: a hash of what it says.

    OTLP exporters send no ``Idempotency-Key`` and retry what was not answered: the same
    body again is the same batch, stored once (issue 20, item 2).
    """
    return f"otlp-{signal.name}-{hashlib.sha256(data).hexdigest()}"


def content_type_of(request: Request) -> str | None:
    """``application/x-protobuf`` or ``application/json`` (parameters aside), else None."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media if media in (PROTOBUF, JSON) else None


class OtlpReceiver:
    """The OTLP/HTTP receiver of one server; it owns the memory of spans turned into events."""

    def __init__(self, obs: Observability, *, max_body: int, memory: SpanMemory | None = None):
        self.obs = obs
        self.max_body = max_body
        self.memory = memory or SpanMemory()

    async def receive(self, signal: Signal, request: Request, body: bytes) -> Response:
        """Answer one export request of ``signal``; its events are stored, all or none."""
        content_type = content_type_of(request)
        if content_type is None:
            shown = request.headers.get("content-type", "none")
            return failure(
                415, f"Content-Type {shown!r} is not OTLP; send {PROTOBUF} or {JSON}", JSON
            )
        try:
            key = idempotency_key(request)
            data = decompress(body, request.headers.get("content-encoding", ""), self.max_body)
            message = signal.request()
            parse(data, content_type, message, signal.hex_ids)
        except HttpError as err:  # answered with a google.rpc.Status, as OTLP/HTTP says
            return failure(err.status, str(err), content_type)
        key = key or body_key(signal, data)
        translation = signal.translate(message, self.memory, now_iso())
        if translation.events:
            try:
                await self.obs.ingest(translation.events, idempotency_key=key)
            except InvalidInput as exc:
                return failure(400, str(exc), content_type)
            except StoreError as exc:
                answer = (
                    uncertain_error(exc)
                    if isinstance(exc, UncertainOutcome)
                    else unavailable(exc, writing=True)
                )
                return failure(answer.status, str(answer), content_type, retry_after=RETRY_AFTER)
            self.memory.learn(translation)
        if translation.rejected:
            log.info("OTLP %s: %s", signal.name, translation.message)
        return Response(200, encoded(signal.answer(translation), content_type), content_type)


class OtlpServer(Protocol):
    """A server with an OTLP receiver (what the route handlers below need of it)."""

    otlp: OtlpReceiver


async def receive_traces(server: OtlpServer, request: Request, _: str, body: bytes) -> Response:
    """``POST /v1/traces``."""
    return await server.otlp.receive(TRACES, request, body)


async def receive_logs(server: OtlpServer, request: Request, _: str, body: bytes) -> Response:
    """``POST /v1/logs``."""
    return await server.otlp.receive(LOGS, request, body)
