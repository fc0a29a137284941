"""The coredis clients of a Redis hub: one Redis, a Sentinel-managed master, or a Cluster.

:func:`open_clients` makes them for a :class:`~trio_obs.hub.redis_url.RedisTarget` and
checks, before anything is written, that the target is what the URL says (a plain URL at a
cluster node is refused with one line naming ``redis+cluster://``). On Sentinel, the
clients ask the Sentinels where the master is for every new connection and drop their
connections when it moves (:func:`follow_master`), so a node follows each failover by
itself; a connection that reached a demoted (read-only) Redis is dropped too.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import AsyncIterator
from typing import Any, Final, TypeAlias, cast

import attrs
import trio
from coredis import Redis, RedisCluster, Sentinel
from coredis.connection import TCPLocation
from coredis.exceptions import RedisError, ResponseError
from coredis.pool import SentinelConnectionPool
from coredis.retry import NoRetryPolicy

from ..core.errors import StoreError
from .redis_url import RedisTarget, RedisUrlError

log = logging.getLogger("trio_obs.hub")

Client: TypeAlias = "Redis[bytes] | RedisCluster[bytes]"
"""A coredis client of the hub: Redis (one, or a Sentinel's master) or a Redis Cluster."""

FOLLOW_INTERVAL: Final = 0.5
"""Seconds between two questions to the Sentinels: where is the master now?"""


@attrs.frozen
class Clients:
    """The hub's two clients (one for calls, one for the fan-out readers' blocking reads)."""

    target: RedisTarget
    calls: Client
    reads: Client
    sentinel: Sentinel[bytes] | None = None

    @property
    def cluster(self) -> bool:
        """Whether this is a Redis Cluster."""
        return self.target.mode == "cluster"

    def drop_connections(self) -> None:
        """Close every pooled connection: the next call connects anew (to the master now)."""
        for client in (self.calls, self.reads):
            client.connection_pool.disconnect()


def _make(target: RedisTarget, *, timeout: float, block: float, readers: int) -> Clients:
    connect = min(timeout, 2.0)
    if target.mode == "single":
        try:
            calls: Client = Redis.from_url(
                target.url,
                decode_responses=False,
                stream_timeout=timeout,
                connect_timeout=connect,
                retry_policy=NoRetryPolicy(),
            )
            reads: Client = Redis.from_url(
                target.url,
                decode_responses=False,
                stream_timeout=timeout + block,
                connect_timeout=connect,
                retry_policy=NoRetryPolicy(),
            )
        except (ValueError, TypeError) as exc:
            raise RedisUrlError(f"the Redis URL {target.where} is not usable: {exc}") from None
        return Clients(target, calls, reads)
    hosts = [TCPLocation(host, port) for host, port in target.hosts]
    if target.mode == "cluster":

        def cluster(stream_timeout: float, **more: Any) -> RedisCluster[bytes]:
            return RedisCluster(
                startup_nodes=hosts,
                username=target.username,
                password=target.password,
                decode_responses=False,
                stream_timeout=stream_timeout,
                connect_timeout=connect,
                retry_policy=NoRetryPolicy(),
                **more,
            )

        # The reads: one blocking read per partition, each on a connection of its own.
        return Clients(
            target,
            cluster(timeout),
            cluster(timeout + block, max_connections=readers + 4, max_connections_per_node=True),
        )
    assert target.master_name is not None
    sentinel: Sentinel[bytes] = Sentinel(
        hosts,
        sentinel_kwargs={
            "password": target.sentinel_password,
            "stream_timeout": timeout,
            "connect_timeout": connect,
            "decode_responses": False,
        },
        decode_responses=False,
        retry_policy=NoRetryPolicy(),
        db=target.db,
        username=target.username,
        password=target.password,
        connect_timeout=connect,
    )
    name = target.master_name
    return Clients(
        target,
        sentinel.primary_for(name, stream_timeout=timeout),
        sentinel.primary_for(name, stream_timeout=timeout + block),
        sentinel,
    )


def _unreachable(target: RedisTarget, exc: BaseException) -> StoreError:
    why = str(exc) or type(exc).__name__
    if isinstance(exc, trio.TooSlowError):
        why = "no answer in time"
    if "cluster support disabled" in why:
        return RedisUrlError(
            f"Redis at {target.where} is not a Redis Cluster: use redis://HOST:PORT/DB for it"
        )
    return StoreError(f"cannot reach Redis at {target.where}: {why}")


@contextlib.asynccontextmanager
async def open_clients(
    target: RedisTarget,
    *,
    timeout: float,  # noqa: ASYNC109 - each Redis call's own bound, not this call's
    block: float,
    readers: int = 1,
) -> AsyncIterator[Clients]:
    """The clients of ``target``, open and checked; :class:`StoreError` (one sentence) if not.

    Nothing is written here: a start that fails leaves no key behind.
    """
    clients = _make(target, timeout=timeout, block=block, readers=readers)
    failure: StoreError | None = None
    async with contextlib.AsyncExitStack() as stack:
        try:
            # (No deadline around entering: a cancel scope may not enclose their task groups.)
            if clients.sentinel is not None:
                await stack.enter_async_context(clients.sentinel)
            await stack.enter_async_context(clients.calls)
            await stack.enter_async_context(clients.reads)
            with trio.fail_after(max(timeout, 2.0) * 2):
                await _check(clients)
        except StoreError as exc:
            failure = exc
        except Exception as exc:  # coredis may wrap what failed in exception groups
            leaf = _leaf(exc)
            if not isinstance(leaf, RedisError | OSError | trio.TooSlowError):
                raise
            failure = _unreachable(target, leaf)
        if failure is None:
            yield clients
    if failure is not None:  # raised out here: coredis's task groups would wrap it
        raise failure


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _check(clients: Clients) -> None:
    """Refuse a target that is not what its URL says; warn about a password not asked for."""
    target = clients.target
    if target.mode == "cluster":
        return
    info = await clients.calls.info("cluster")
    if info.get("cluster_enabled"):
        raise RedisUrlError(
            f"Redis at {target.where} is a node of a Redis Cluster: name it as "
            f"redis+cluster://HOST:PORT (any of its nodes)"
        )
    if target.password is not None and target.username is None:
        try:
            with warnings.catch_warnings():  # "use the password argument": it is used; this asks
                warnings.simplefilter("ignore")
                await clients.calls.auth(target.password)
        except ResponseError as exc:
            if "without any password configured" not in str(exc):
                raise
            log.warning(
                "the Redis URL %s has a password, but Redis takes none: anyone who can reach "
                "it can read and change the events; set requirepass on Redis (or drop the "
                "password from the URL)",
                target.where,
            )


async def follow_master(clients: Clients) -> None:
    """Ask the Sentinels where the master is, now and then; drop connections when it moved.

    coredis asks them for every new connection; this makes the existing ones follow too
    (a master demoted without being restarted keeps its clients, who would write to a
    read-only replica).
    """
    if clients.sentinel is None:
        return
    pools = [
        cast(SentinelConnectionPool, c.connection_pool) for c in (clients.calls, clients.reads)
    ]
    while True:
        await trio.sleep(FOLLOW_INTERVAL)
        for pool in pools:
            with contextlib.suppress(RedisError, OSError):
                await pool.get_primary_location()
