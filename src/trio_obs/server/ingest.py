"""Ingest: producers' batches in, stored and broadcast, answered (SPEC §5).

The plan's JSON (``POST /api/events``) is decoded by the wire converter and goes
through the hub as one atomic batch; an ``Idempotency-Key`` makes a retry safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from ..core.errors import InvalidInput, StoreError, UncertainOutcome
from ..core.intake import UnknownField, decode_batch
from ..core.protocol import MAX_IDEMPOTENCY_KEY, UNCERTAIN_STATUS
from ..core.wire import accepted_json, uncertain_json
from ..producers import Observability
from .http import HttpError, Request
from .routes import Response

log = logging.getLogger("trio_obs.server")


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` (400 when it is longer than SPEC §5 allows)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise HttpError(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters long")
    return key


def unavailable(exc: StoreError, *, writing: bool = False) -> HttpError:
    """The 503 answer when the store cannot be used, saying why (the client may retry)."""
    log.error("store failure: %s", exc)
    stored = "nothing was stored; " if writing else ""
    return HttpError(503, f"the event store is unavailable ({exc}); {stored}try again")


def uncertain_error(exc: UncertainOutcome) -> HttpError:
    """The 504 error of a batch some of which is, or may be, stored: a retry with the same
    ``Idempotency-Key`` completes it (SPEC §10)."""
    log.error("store failure: %s", exc)
    return HttpError(UNCERTAIN_STATUS, str(exc), code=exc.code)


def uncertain(exc: UncertainOutcome) -> Response:
    """The 504 answer of ``POST /api/events``: also each event's seq where it is known stored
    (else null), and which events' outcome is not known."""
    err = uncertain_error(exc)
    return Response(err.status, uncertain_json(str(err), exc.code, exc.seqs, exc.unknown))


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON (a foreign page cannot send that without CORS)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        shown = kind or "none"
        raise HttpError(415, f"send the events as Content-Type: application/json (got {shown})")


class UnknownFieldLog:
    """Logs each unknown field name once, not once per event (a producer repeats itself)."""

    MAX_NAMES: Final = 1000
    """Names remembered at most; past them, one line says that no more are logged."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def note(self, unknown: Sequence[UnknownField]) -> None:
        """Log the fields of ``unknown`` whose names were not logged before."""
        for field in unknown:
            if field.field in self._seen or len(self._seen) > self.MAX_NAMES:
                continue
            self._seen.add(field.field)
            if len(self._seen) > self.MAX_NAMES:
                log.warning("more unknown fields in posted events; no longer logged")
                continue
            hint = f" (did you mean {field.known!r}?)" if field.known else ""
            log.warning(
                "posted %s events carry the unknown field %r%s: ignored, and said in the "
                "202 answer's warnings (logged once per field name)",
                field.event_type,
                field.field,
                hint,
            )


async def ingest_events(
    obs: Observability, request: Request, body: bytes, unknown: UnknownFieldLog
) -> Response:
    """``POST /api/events``: one event or an array, all stored or none."""
    require_json(request)
    key = idempotency_key(request)
    try:
        batch = decode_batch(body)
        stored = await obs.ingest(batch.events, idempotency_key=key)
    except InvalidInput as exc:
        raise HttpError(400, str(exc), code=exc.code) from None
    except UncertainOutcome as exc:
        return uncertain(exc)
    except StoreError as exc:
        raise unavailable(exc, writing=True) from None
    if batch.unknown:
        unknown.note(batch.unknown)
    seqs = [e.seq for e in stored if e.seq is not None]
    return Response(202, accepted_json(seqs, batch.warnings()))
