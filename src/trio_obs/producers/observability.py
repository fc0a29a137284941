"""An open trio-obs: a hub and its services, opened in a nursery of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from ..core import events as ev
from ..core.protocol import DEFAULT_BUFFER_BYTES, DEFAULT_BUFFER_SIZE, DEFAULT_QUEUE_SIZE
from ..hub.base import Hub
from ..hub.sqlite import Store, open_store
from .emitting import EmittingHub
from .services import Services


@attrs.frozen
class Observability(Services[Hub]):
    """An open trio-obs: a hub and every service, ready to use (``Observability.over(hub)``)."""

    @property
    def broker(self) -> EmittingHub:
        """The in-process hub with the plan's emit methods (SQLite mode)."""
        if not isinstance(self.hub, EmittingHub):
            raise TypeError("this trio-obs runs on another hub; use .hub (the Hub protocol)")
        return self.hub

    @property
    def store(self) -> Store:
        """The SQLite store under the in-process hub."""
        return self.broker.store

    async def ingest(
        self, events: Sequence[ev.StreamEvent], *, idempotency_key: str | None = None
    ) -> list[ev.StreamEvent]:
        """Store foreign events (already decoded) as one atomic batch; the stored events."""
        envelopes = await self.hub.publish(events, idempotency_key=idempotency_key)
        return [env.event for env in envelopes if not env.is_copy]


@asynccontextmanager
async def open_observability(
    db: str = ":memory:",
    *,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    max_buffers: int = 1000,
    buffer_grace: float = 300.0,
) -> AsyncIterator[Observability]:
    """Open the store, the hub and the services in a nursery of their own.

    ``db`` is a SQLite file path or ``:memory:``. On exit, queued writes are
    committed and the store is closed.
    """
    async with open_store(db) as store, trio.open_nursery() as nursery:
        hub = EmittingHub(
            store,
            buffer_size=buffer_size,
            queue_size=queue_size,
            buffer_bytes=buffer_bytes,
            max_buffers=max_buffers,
            buffer_grace=buffer_grace,
        )
        await nursery.start(hub.run)
        try:
            yield Observability.over(hub)
        finally:
            hub.close()


@asynccontextmanager
async def open_redis_observability(
    url: str,
    *,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    max_buffers: int = 1000,
    buffer_grace: float = 300.0,
    prefix: str = "trio-obs:",
    fanout_maxlen: int | None = None,
    redis_timeout: float | None = None,
    replicas: int = 0,
    index: str = ":memory:",
) -> AsyncIterator[Observability]:
    """Like :func:`open_observability`, as one node of several sharing Redis at ``url``.

    ``url`` is ``redis://[:PASSWORD@]HOST:PORT/DB`` (``rediss://`` for TLS); ``prefix``
    names the keys (nodes with the same prefix are one server); ``fanout_maxlen`` (how
    far a node may fall behind) and ``redis_timeout`` (seconds a Redis call may take)
    default to the hub's (:mod:`trio_obs.hub.redis`); with ``replicas=N`` a batch is
    acknowledged only once N replicas have it (Redis ``WAIT``); ``index`` is the node's
    own search index (SPEC §14), a SQLite file or ``:memory:`` (copied from Redis at each
    start, in the background). Raises
    :class:`~trio_obs.StoreError` with one sentence if the URL is bad or Redis does not
    answer; once open, a Redis outage makes publishing raise it until Redis is back.
    """
    from ..hub import redis  # coredis is imported only by those who use it

    tuning = {"fanout_maxlen": fanout_maxlen, "redis_timeout": redis_timeout}
    async with redis.open_redis_hub(
        url,
        buffer_size=buffer_size,
        queue_size=queue_size,
        buffer_bytes=buffer_bytes,
        max_buffers=max_buffers,
        buffer_grace=buffer_grace,
        prefix=prefix,
        replicas=replicas,
        index=index,
        **{k: v for k, v in tuning.items() if v is not None},
    ) as hub:
        yield Observability.over(hub)
