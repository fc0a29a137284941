"""``trio-obs serve``: the standalone server, with clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import logging
import platform
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Final

import trio

from ..cli import DEFAULT_DB
from ..core.errors import StoreError, first_error
from ..core.prices import SHIPPED_PRICES, Price, PriceFileError, parse_prices
from ..core.watchdog import Thresholds
from ..hub.redis_url import RedisUrlError
from ..producers import Observability, open_observability, open_redis_observability
from .app import ServerConfig, is_loopback, open_listeners, serve

log = logging.getLogger("trio_obs")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _retain(obs: Observability, max_idle: float) -> None:
    """Apply ``--retention`` now and then (every tenth of it, at most hourly)."""
    while True:
        try:
            deleted = await obs.hub.retain(max_idle)
        except StoreError as exc:
            log.error("retention failed: %s", exc)
        else:
            if deleted:
                log.info(
                    "retention: deleted %d execution(s) idle for over %s",
                    len(deleted),
                    _duration_text(max_idle),
                )
        await trio.sleep(min(3600.0, max(1.0, max_idle / 10)))


def _duration_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


async def _main(args: argparse.Namespace) -> None:
    config = ServerConfig(
        host=args.host,
        port=args.port,
        token=args.token or None,
        allowed_origins=tuple(args.allowed_origin),
        max_connections=args.max_connections,
        ping_interval=args.ping_interval,
        queue_size=args.queue_size,
        stall_timeout=args.stall_timeout,
        read_timeout=args.read_timeout,
        watch=Thresholds(
            lost_after=args.lost_after, slow_after=args.slow_after, idle_after=args.idle_after
        ),
        alert_webhook=args.alert_webhook,
        prices=args.price_table,
    )
    # Signals are caught from the very start, so a stop request never kills us mid-start.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        sizes = {
            "buffer_size": args.buffer_size,
            "queue_size": args.queue_size,
            "buffer_bytes": args.buffer_bytes,
        }
        # The port first: when it is taken, that is all there is to say (no store opened).
        listeners = await open_listeners(config)
        opening = (
            open_redis_observability(
                args.redis, replicas=args.redis_replicas, index=args.db or ":memory:", **sizes
            )
            if args.redis
            else open_observability(args.db or DEFAULT_DB, durability=args.durability, **sizes)
        )
        async with _closing(listeners), opening as obs, trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve, obs, config, listeners=listeners))
            _announce(args, config, port)
            if args.retention:
                nursery.start_soon(_retain, obs, args.retention)
            if args.demo:
                from ..demo.play import run_in_process

                nursery.start_soon(run_in_process, obs, True)
                log.info(
                    "demo: simulated agent executions are streaming; watch them at http://%s:%d/",
                    _url_host(_local_name(args.host)),
                    port,
                )
            async for signum in signals:
                log.info("trio-obs stopping (%s)", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    log.info("trio-obs stopped")


@asynccontextmanager
async def _closing(listeners: list[trio.SocketListener]) -> AsyncIterator[None]:
    """Close ``listeners`` on the way out (the server does, unless the store never opened)."""
    try:
        yield
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


def _local_name(host: str) -> str:
    """Where a browser on this machine reaches a server bound to ``host``."""
    return "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host


def _store(args: argparse.Namespace) -> str:
    """Where the events are stored, for the start line (never a password)."""
    if not args.redis:
        return str(args.db or DEFAULT_DB)
    from ..hub.redis_url import redacted

    return f"Redis at {redacted(args.redis)}"


def _announce(args: argparse.Namespace, config: ServerConfig, port: int) -> None:
    wildcard = args.host in ("", "0.0.0.0", "::")
    bound = f"http://{_url_host(args.host or '0.0.0.0')}:{port}"
    local = f"{_url_host(_local_name(args.host))}:{port}"
    log.info(
        "trio-obs listening on %s%s (viewer: http://%s/ , WebSocket: ws://%s/ws?observability=all,"
        " store: %s%s)",
        bound, " (every interface)" if wildcard else "", local, local, _store(args),
        ", token required" if config.token else "",
    )  # fmt: skip
    if not is_loopback(args.host) and not config.token:
        log.warning(
            "listening beyond loopback without a token: anyone who can reach port %d can "
            "read every event and post new ones; set --token (or $TRIO_OBS_TOKEN)",
            port,
        )


def _cannot_listen(exc: OSError, args: argparse.Namespace) -> str:
    """Why the server cannot listen, in one line that names the flag to change."""
    if isinstance(exc, socket.gaierror):
        return (
            f"--host {args.host!r} is not a name or address this machine can resolve "
            f"({exc.strerror}); use an address such as 127.0.0.1, or 0.0.0.0 for every interface"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"--host {args.host!r} is not an address of this machine ({exc.strerror}); "
            "use one of its addresses, such as 127.0.0.1, or 0.0.0.0 for every interface"
        )
    if exc.errno == errno.EADDRINUSE:
        return f"port {args.port} on {args.host} is in use; pick another with --port"
    if exc.errno == errno.EACCES:
        return f"port {args.port} needs privileges this user lacks; pick another with --port"
    return str(exc)


_M_MMAP_THRESHOLD: Final = -3
_MMAP_THRESHOLD: Final = 128 * 1024


def map_large_blocks() -> None:
    """Make glibc give every block of 128 KiB or more its own mapping, always.

    glibc raises that threshold whenever such a block is freed (up to 32 MiB), so after
    the first 1 MiB request body the JSON of 64 KiB events lands on the heap, where
    what is freed around it stays: 64 MiB of recent events held 280 MB of RSS, 55 MB
    with the threshold fixed (``benchmarks/slow_memory.py``). Embedders get the same
    with ``MALLOC_MMAP_THRESHOLD_=131072`` in the environment.
    """
    if platform.libc_ver()[0] != "glibc":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def load_prices(path: str) -> dict[str, Price]:
    """The price table of ``--prices FILE`` (:class:`PriceFileError` if it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PriceFileError(f"cannot read the price file {path!r}: {reason}") from None
    return parse_prices(text, f"the price file {path!r}")


def run_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM; returns the exit status."""
    level = getattr(logging, args.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if level > logging.DEBUG:
        # coredis logs what the hub reports itself, in one line (its tracebacks and retries
        # only at --log-level debug).
        logging.getLogger("coredis").setLevel(logging.CRITICAL)
    map_large_blocks()
    try:
        args.price_table = load_prices(args.prices) if args.prices else dict(SHIPPED_PRICES)
    except PriceFileError as bad:
        log.error("cannot start: %s", bad)
        return 1
    status = 0
    try:
        trio.run(_main, args)
    except* KeyboardInterrupt:  # a second Ctrl-C during shutdown
        status = 130
    except* RedisUrlError as group:
        source = getattr(args, "redis_source", "--redis")
        log.error("cannot start: %s: %s", source, first_error(group))
        status = 1
    except* StoreError as group:
        log.error("cannot start: %s", first_error(group))
        status = 1
    except* OSError as group:
        exc = first_error(group)
        assert isinstance(exc, OSError)
        log.error("cannot start: %s", _cannot_listen(exc, args))
        status = 1
    return status
