"""The ``trio-obs`` command: ``serve``, ``demo`` and ``tail``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

DEFAULT_URL = "http://127.0.0.1:3001"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="trio-obs",
        description="Real-time observability streaming for agent runners.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    serve = commands.add_parser(
        "serve", help="run the server (WebSocket + HTTP on one port)", formatter_class=fmt
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.add_argument("--port", type=_non_negative_int, default=3001, help="port (0 = any free)")
    serve.add_argument(
        "--db", default="trio-obs.db", help="SQLite file for the event store, or :memory:"
    )
    serve.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="run as one node of several sharing this Redis: redis://HOST:PORT/DB "
        "(rediss:// for TLS, redis://:PASSWORD@HOST:PORT/DB with a password); the nodes "
        "share order, history and fan-out, and --db is not used "
        "(default: $TRIO_OBS_REDIS if set, else the SQLite store)",
    )
    serve.add_argument(
        "--redis-replicas",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="with --redis: acknowledge a POST only once N Redis replicas have it (WAIT)",
    )
    serve.add_argument(
        "--buffer-size",
        type=_non_negative_int,
        default=100,
        help="events replayed to a new connection (per execution)",
    )
    serve.add_argument(
        "--queue-size",
        type=_positive_int,
        default=1024,
        help="events queued per connection before it is closed as a slow consumer (4008)",
    )
    serve.add_argument(
        "--token",
        default=None,
        help="require this bearer token on WebSocket handshakes and POSTs "
        "(default: $TRIO_OBS_TOKEN if set, else none)",
    )
    serve.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="URL",
        help="allow WebSocket handshakes from this Origin only (repeatable; default: any)",
    )
    serve.add_argument(
        "--max-connections",
        type=_positive_int,
        default=10_000,
        help="open WebSocket connections beyond which handshakes get 503",
    )
    serve.add_argument(
        "--ping-interval",
        type=float,
        default=20.0,
        help="seconds between keepalive pings; a connection silent for two intervals is closed",
    )
    serve.add_argument(
        "--demo", action="store_true", help="also run the simulated agent execution, in a loop"
    )

    demo = commands.add_parser(
        "demo", help="stream a simulated agent execution into a server", formatter_class=fmt
    )
    demo.add_argument("--url", default=DEFAULT_URL, help="base URL of the server")
    demo.add_argument(
        "--token", default=None, help="bearer token for POSTs (default: $TRIO_OBS_TOKEN)"
    )
    demo.add_argument("--speed", type=float, default=1.0, help="time scale (2 = twice as fast)")
    demo.add_argument("--loop", action="store_true", help="start a new execution when one ends")
    demo.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")

    tail = commands.add_parser(
        "tail", help="show the live stream in the terminal", formatter_class=fmt
    )
    tail.add_argument(
        "execution", nargs="?", default="all", help="execution id, 'global', or 'all'"
    )
    tail.add_argument("--url", default=DEFAULT_URL, help="base URL of the server")
    tail.add_argument(
        "--since", type=_non_negative_int, default=None, help="replay events after this seq"
    )
    tail.add_argument("--topic", action="append", default=[], help="only this topic (repeatable)")
    tail.add_argument("--task", default=None, help="only events of this task id")
    tail.add_argument("--tool", action="append", default=[], help="only this tool (repeatable)")
    tail.add_argument(
        "--severity", action="append", default=[], help="only this message-bus severity"
    )
    tail.add_argument("--token", default=None, help="bearer token (default: $TRIO_OBS_TOKEN)")
    tail.add_argument("--json", action="store_true", help="print one JSON object per line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trio-obs`` console script."""
    args = build_parser().parse_args(argv)
    if args.token is None:  # read here, not as a default, so --help never shows the secret
        args.token = os.environ.get("TRIO_OBS_TOKEN") or None
    if args.command == "serve":
        if args.redis is None:  # like the token: --help never shows a password from the env
            args.redis = os.environ.get("TRIO_OBS_REDIS") or None
        from .server.cli import run_serve

        return run_serve(args)
    if args.command == "demo":
        from .demo.cli import run_demo_cli

        status: int = run_demo_cli(args)
        return status
    from .client.tail import run_tail_cli

    status = run_tail_cli(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
