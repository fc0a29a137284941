"""``trio-obs serve``: the standalone server, with clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys

import trio

from ..core.errors import StoreError
from ..producers import open_observability, open_redis_observability
from .app import ServerConfig, serve

log = logging.getLogger("trio_obs")


def _display_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def _main(args: argparse.Namespace) -> None:
    config = ServerConfig(
        host=args.host,
        port=args.port,
        token=args.token or None,
        allowed_origins=tuple(args.allowed_origin),
        max_connections=args.max_connections,
        ping_interval=args.ping_interval,
        queue_size=args.queue_size,
    )
    # Signals are caught from the very start, so a stop request never kills us mid-start.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        sizes = {"buffer_size": args.buffer_size, "queue_size": args.queue_size}
        opening = (
            open_redis_observability(args.redis, replicas=args.redis_replicas, **sizes)
            if args.redis
            else open_observability(args.db, **sizes)
        )
        async with opening as obs, trio.open_nursery() as nursery:
            port = await nursery.start(serve, obs, config)
            base = f"http://{_display_host(args.host)}:{port}"
            log.info(
                "trio-obs listening on %s (viewer: %s/ , WebSocket: ws://%s:%d/ws?observability=all,"
                " store: %s%s)",
                base, base, _display_host(args.host), port, _store(args),
                ", token required" if config.token else "",
            )  # fmt: skip
            if args.demo:
                from ..demo.play import run_in_process

                nursery.start_soon(run_in_process, obs, True)
                log.info("demo: simulated agent executions are streaming; watch them at %s/", base)
            async for signum in signals:
                log.info("trio-obs stopping (%s)", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    log.info("trio-obs stopped")


def _store(args: argparse.Namespace) -> str:
    """Where the events are stored, for the start line (never a password)."""
    if not args.redis:
        return str(args.db)
    from ..hub.redis import redacted

    return f"Redis at {redacted(args.redis)}"


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first leaf exception of a (possibly nested) exception group."""
    exc: Exception | BaseExceptionGroup[Exception] = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def run_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM; returns the exit status."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    status = 0
    try:
        trio.run(_main, args)
    except* KeyboardInterrupt:  # a second Ctrl-C during shutdown
        status = 130
    except* StoreError as group:
        log.error("cannot start: %s", _first(group))
        status = 1
    except* OSError as group:
        exc = _first(group)
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            log.error(
                "cannot start: port %s on %s is in use; pick another with --port",
                args.port,
                args.host,
            )
        else:
            log.error("cannot start: %s", exc)
        status = 1
    return status
