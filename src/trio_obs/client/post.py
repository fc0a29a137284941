"""Post events to a trio-obs server (``POST /api/events``), safely retried (SPEC §5)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Final

import anyio
import attrs
import httpx

from ..core import events as ev
from ..core.routing import Envelope
from ..core.wire import encode
from .common import PostRejected, auth_headers, endpoints

log = logging.getLogger("trio_obs.client")

_TIMEOUT: Final = 10.0
_RETRY_STATUSES: Final = frozenset({408, 429, 502, 503, 504})
_FIRST_WAIT: Final = 0.2


def encode_batch(events: Sequence[ev.StreamEvent]) -> bytes:
    """The JSON array a batch is posted as."""
    return b"[" + b",".join(encode(e) for e in events) + b"]"


async def post_events(
    url: str,
    events: ev.StreamEvent | Sequence[ev.StreamEvent],
    *,
    token: str | None = None,
    attempts: int = 5,
    client: httpx.AsyncClient | None = None,
    idempotency_key: str | None = None,
) -> list[int]:
    """Post one event or a batch; returns the seqs they were stored as.

    The batch is atomic: on a refusal (4xx) nothing is stored and :class:`PostRejected`
    says why. Every batch carries an ``Idempotency-Key`` (fresh unless given), so when
    an answer is lost (a broken connection, a restarting server, a 503) or says the outcome
    is not known or not whole (a 504: Redis did not answer in time, its replicas did not
    confirm, a cluster shard failed), the batch is sent again with the same key, up to
    ``attempts`` times with a doubling wait, and is stored once. When
    the attempts run out, the last error is raised (``httpx.TransportError`` if the
    server could not be reached, else :class:`PostRejected`). ``client`` reuses an
    ``httpx.AsyncClient`` of the caller's (e.g. for a demo that posts many batches).
    It runs under trio and under asyncio alike (AnyIO).
    """
    batch = [events] if not isinstance(events, Sequence) else list(events)
    if not batch:
        return []
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    body = encode_batch(batch)
    headers = {
        "content-type": "application/json",
        "idempotency-key": idempotency_key or uuid.uuid4().hex,
        **auth_headers(token),
    }
    target = f"{endpoints(url).http}/api/events"
    wait = _FIRST_WAIT
    own = client is None
    http = client or httpx.AsyncClient(timeout=_TIMEOUT, trust_env=False)
    try:
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = await http.post(target, content=body, headers=headers)
            except httpx.TransportError as exc:
                if last:
                    raise
                log.info("post to %s failed (%s); retrying in %.1f s", target, exc, wait)
            else:
                if response.status_code == 202:
                    return [int(s) for s in response.json()["seqs"]]
                if response.status_code not in _RETRY_STATUSES or last:
                    raise PostRejected(response.status_code, response.text)
                log.info(
                    "post to %s answered %d; retrying in %.1f s",
                    target,
                    response.status_code,
                    wait,
                )
            await anyio.sleep(wait)  # under trio or asyncio alike
            wait *= 2
    finally:
        if own:
            await http.aclose()
    raise AssertionError("unreachable")  # pragma: no cover


class HttpPublisher:
    """Publishes through a server's ``POST /api/events``: the services' publisher, remotely.

    ``Services.over(HttpPublisher(url))`` builds events exactly as in process and posts
    each batch (with an ``Idempotency-Key``, retried); what comes back carries its seq.
    """

    def __init__(
        self, url: str, *, token: str | None = None, client: httpx.AsyncClient | None = None
    ) -> None:
        self.url = endpoints(url).http
        self.token = token
        self.client = client

    async def publish(
        self, events: Sequence[ev.StreamEvent], *, idempotency_key: str | None = None
    ) -> list[Envelope]:
        """Post ``events``; envelopes of them as stored (seq set; JSON not kept)."""
        seqs = await post_events(
            self.url,
            events,
            token=self.token,
            client=self.client,
            idempotency_key=idempotency_key,
        )
        return [
            Envelope.of(e.execution_id, attrs.evolve(e, seq=seq), b"")
            for e, seq in zip(events, seqs, strict=True)
        ]
