"""The ``trio-obs`` command: ``serve``, ``demo``, ``tail`` and ``search``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from ._version import __version__
from .core.events import STREAM_EVENT_TYPES
from .core.protocol import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_BUFFER_SIZE,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_STALL_TIMEOUT,
    SEVERITIES,
    TOPICS,
)
from .hub.sqlite import DEFAULT_DURABILITY, DURABILITIES

DEFAULT_URL = "http://127.0.0.1:3001"
SEARCH_HELP = """\
TEXT is words (all of them must be in an event: rm -rf, src/api/users.ts), "quoted
phrases", prefix* words, and the operators OR, NOT (a NOT b: a without b), AND and
parentheses, in capitals. Case and accents do not matter. Searched: transcript text,
tool input and output, model-call messages, assertion descriptions, message-bus text,
execution messages and span titles. Exit status: 0 when something matched, 1 when
nothing did, 2 when the search could not be made. To follow new matches as they
happen: trio-obs tail all --query TEXT."""
DEFAULT_DB: Final = "trio-obs.db"
"""The store of ``trio-obs serve`` without ``--db``: a file in the working directory."""
OTEL_DEMO_HELP = """\
With --otel, the same simulated run is told as an agent instrumented with
OpenTelemetry would tell it: spans of the GenAI semantic conventions
(invoke_agent for the run and for each task's agent, execute_tool for tool calls,
chat for the agents' words, exception events for errors), exported by the SDK's
BatchSpanProcessor and OTLP/HTTP exporter, with trio_obs.otel.LiveSpanProcessor
beside it so tool calls show while they run. The server turns them back into
stream events (the execution id is the trace id). Waves, heartbeats and tool
output have no OpenTelemetry counterpart and are left out."""


_DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_UNITS: Final = {
    prefix + suffix: 1024**power
    for power, prefix in enumerate(("", "k", "m", "g"))
    for suffix in (("", "b") if not prefix else ("", "b", "ib"))
}


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _int(text: str) -> int:
    if not text.strip().lstrip("-").isdigit() or len(text) > 19:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
    return int(text)


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m`` or ``45s`` (argparse type of ``--retention``)."""
    number, unit = text[:-1], text[-1:].lower()
    if unit not in _DURATION_UNITS or not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(
            f"must be a whole number followed by s, m, h or d (e.g. 30d), got {text!r}"
        )
    return float(int(number) * _DURATION_UNITS[unit])


def watch_seconds(text: str) -> float:
    """Seconds as ``45``, ``2.5``, ``45s``, ``10m`` or ``1h`` (the watchdog's thresholds)."""
    try:
        return duration(text) if text[-1:].isalpha() else _seconds(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of seconds, or a whole number with s, m or h "
            f"(e.g. 30s, 10m), got {text!r}"
        ) from None


def http_url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host (``--alert-webhook``)."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"must be an http:// or https:// URL, e.g. http://127.0.0.1:9000/hook, got {text!r}"
        )
    return text


def size(text: str) -> int:
    """Bytes in ``67108864``, ``64MiB``, ``512k`` or ``1G`` (the type of ``--buffer-bytes``)."""
    digits = text.rstrip("KkMmGgIiBb")
    unit = text[len(digits) :].lower()
    if not digits.isdigit() or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(
            f"must be a number of bytes, optionally with K, M or G (e.g. 64MiB), got {text!r}"
        )
    factor: int = _SIZE_UNITS[unit]
    return int(digits) * factor


def size_text(size: int) -> str:
    """``67108864`` -> ``64MiB``: the largest unit that divides it (the form :func:`size` reads)."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Says a flag's default once: only where its help does not already, and it has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="trio-obs",
        description="Real-time observability streaming for agent runners.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trio-obs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = _HelpFormatter

    serve = commands.add_parser(
        "serve", help="run the server (WebSocket + HTTP on one port)", formatter_class=fmt
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind; beyond loopback, set --token (a warning says so otherwise)",
    )
    serve.add_argument("--port", type=_port, default=3001, help="port (0 = any free)")
    serve.add_argument(
        "--db",
        default=None,
        metavar="PATH",
        help=f"SQLite file for the event store (one server at a time), or :memory: "
        f"(default: {DEFAULT_DB}); with --redis, this node's own search index, copied "
        "from Redis where it lacks events (default: :memory:, copied at each start)",
    )
    serve.add_argument(
        "--durability",
        choices=DURABILITIES,
        default=DEFAULT_DURABILITY,
        help="full: a 202 means the events are on disk (the SQLite WAL is synced at every "
        "commit); normal: faster, synced only at checkpoints, so a machine crash (not a "
        "process crash) may lose the last second or so of acknowledged events, and the "
        "store then starts a new epoch so resuming clients are told (not used with --redis)",
    )
    serve.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="run as one node of several sharing this Redis: redis://HOST:PORT/DB "
        "(rediss:// for TLS, redis://:PASSWORD@HOST:PORT/DB with a password), "
        "redis+sentinel://H1:P1,H2:P2,H3:P3?sentinel_master_name=NAME for a master that "
        "Sentinel fails over (followed by itself), or redis+cluster://H1:P1[,H2:P2...] for a "
        "Redis Cluster; the nodes share order, history and fan-out, and --db is only this "
        "node's search index "
        "(default: $TRIO_OBS_REDIS if set, else the SQLite store)",
    )
    serve.add_argument(
        "--redis-replicas",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="with --redis: acknowledge a POST only once N Redis replicas have it (WAIT), so "
        "a failover loses nothing acknowledged; without, a failover that loses writes starts "
        "a new epoch (clients are told)",
    )
    serve.add_argument(
        "--buffer-size",
        type=_non_negative_int,
        default=DEFAULT_BUFFER_SIZE,
        help="events replayed to a new connection that gives no since= (per execution)",
    )
    serve.add_argument(
        "--buffer-bytes",
        type=size,
        default=size_text(DEFAULT_BUFFER_BYTES),  # shown as the docs write it; parsed by size()
        metavar="SIZE",
        help="memory for recent events, all executions together (K, M or G: 512MiB, 1G); "
        "beyond it the least recently active go, and replay reads the store",
    )
    serve.add_argument(
        "--queue-size",
        type=_positive_int,
        default=DEFAULT_QUEUE_SIZE,
        help="events a connection may fall behind in memory; a connection further behind "
        "is served from the store (an 'all' one by position) until it is live again",
    )
    serve.add_argument(
        "--stall-timeout",
        type=_seconds,
        default=DEFAULT_STALL_TIMEOUT,
        metavar="SECONDS",
        help="a connection with data waiting that accepts no bytes for this long is "
        "closed with 4008 (slow consumer); it resumes with since= and loses nothing",
    )
    serve.add_argument(
        "--read-timeout",
        type=_seconds,
        default=DEFAULT_READ_TIMEOUT,
        metavar="SECONDS",
        help="an HTTP request whose head and body have not arrived this long after its first "
        "byte is answered 408 (TIMEOUT); a client gets as long to take an answer. "
        "A request that arrived is always handled and answered, however long that takes",
    )
    serve.add_argument(
        "--prices",
        default=None,
        metavar="FILE",
        help='model prices for the runs\' cost: a JSON object {"<model>": {"input": USD per '
        '1M input tokens, "output": USD per 1M output tokens}} that overrides and extends '
        'the shipped, dated table (a model with no price makes the cost "unknown")',
    )
    serve.add_argument(
        "--retention",
        type=duration,
        default=None,
        metavar="DURATION",
        help="delete executions idle for longer (units s, m, h, d; e.g. 30d); "
        "default: keep everything",
    )
    serve.add_argument(
        "--token",
        default=None,
        help="require this bearer token on WebSocket handshakes, POSTs and data reads "
        "(default: $TRIO_OBS_TOKEN if set, else none)",
    )
    serve.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="URL",
        help="allow browser WebSocket handshakes from this Origin (repeatable; "
        "default: the server's own origin only)",
    )
    serve.add_argument(
        "--max-connections",
        type=_positive_int,
        default=10_000,
        help="open sockets at most, HTTP and WebSocket alike; beyond, 503 and close",
    )
    serve.add_argument(
        "--ping-interval",
        type=_seconds,
        default=20.0,
        help="seconds between keepalive pings; a connection silent for two intervals is closed",
    )
    serve.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="info: one line per start/stop, refused handshake and slow-consumer close",
    )
    serve.add_argument(
        "--demo", action="store_true", help="also run the simulated agent execution, in a loop"
    )
    for flag, default, what in (
        ("--lost-after", "30s", "a producer silent for max(3 x its heartbeat interval, this) "
         "is lost"),
        ("--slow-after", "60s", "an open tool or model call older than max(3 x its tool's "
         "p95, this) is slow"),
        ("--idle-after", "10m", "a running execution with no event for this long is idle"),
    ):  # fmt: skip
        serve.add_argument(
            flag,
            type=watch_seconds,
            default=watch_seconds(default),
            metavar="DURATION",
            help=f"watchdog: {what} (seconds, or with s, m, h; default {default})",
        )
    serve.add_argument(
        "--alert-webhook",
        type=http_url,
        default=None,
        metavar="URL",
        help="POST each watchdog alert and clear to this URL as JSON (bounded retries; "
        "never holds up anything else)",
    )

    demo = commands.add_parser(
        "demo",
        help="stream a simulated agent execution into a server",
        formatter_class=fmt,
        epilog=OTEL_DEMO_HELP,
    )
    demo.add_argument("--url", default=DEFAULT_URL, help="base URL of the server")
    demo.add_argument(
        "--token", default=None, help="bearer token for POSTs (default: $TRIO_OBS_TOKEN)"
    )
    demo.add_argument("--speed", type=float, default=1.0, help="time scale (2 = twice as fast)")
    demo.add_argument("--loop", action="store_true", help="start a new execution when one ends")
    demo.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")
    demo.add_argument(
        "--otel",
        action="store_true",
        help="send the run through the OpenTelemetry SDK to /v1/traces instead of posting "
        "its events (needs: pip install 'trio-obs[otel]')",
    )

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
    tail.add_argument(
        "--topic",
        action="append",
        default=[],
        choices=sorted(TOPICS),
        help="only events of this topic (repeatable); without it, a filter below implies its own",
    )
    tail.add_argument(
        "--task", default=None, help="only events of this task id (every topic; others pass)"
    )
    tail.add_argument(
        "--tool",
        action="append",
        default=[],
        help="only tool events of this tool: its starts, output and ends (repeatable; "
        "implies --topic tools)",
    )
    tail.add_argument(
        "--severity",
        action="append",
        default=[],
        choices=sorted(SEVERITIES),
        help="only message-bus events of this severity (repeatable; implies --topic messagebus)",
    )
    tail.add_argument(
        "--category",
        action="append",
        default=[],
        help="only assertions of this category (repeatable; implies --topic assertions)",
    )
    tail.add_argument(
        "--entry-type",
        action="append",
        default=[],
        help="only transcript entries of this type (repeatable; implies --topic transcript)",
    )
    tail.add_argument(
        "--query",
        default=None,
        metavar="TEXT",
        help="with 'all': only events whose text matches (a live query; the words of "
        "'trio-obs search')",
    )
    _typed_filters(tail, tool=False)
    tail.add_argument(
        "--running",
        action="store_true",
        help="instead of events: the open spans of running executions with their age and "
        "the watchdog's word (slow, lost), redrawn every second",
    )
    tail.add_argument("--token", default=None, help="bearer token (default: $TRIO_OBS_TOKEN)")
    tail.add_argument("--json", action="store_true", help="print one JSON object per line")
    tail.add_argument(
        "--tree",
        default=None,
        metavar="EXECUTION",
        help="print this execution's span tree once (states, durations, tokens, cost) and exit",
    )
    tail.add_argument(
        "--no-wait",
        action="store_true",
        help="exit 1 if the server cannot be reached at start, instead of retrying until it "
        "answers",
    )

    search = commands.add_parser(
        "search",
        help="search the stored events of every run, newest first",
        formatter_class=fmt,
        epilog=SEARCH_HELP,
    )
    search.add_argument("text", metavar="TEXT", help="what to search for (see below)")
    search.add_argument("--url", default=DEFAULT_URL, help="base URL of the server")
    _typed_filters(search, tool=True)
    search.add_argument(
        "--limit", type=_positive_int, default=20, help="hits to show at most (newest first)"
    )
    search.add_argument(
        "--before",
        type=_non_negative_int,
        default=None,
        metavar="POS",
        help="only hits older than this position (the 'more with --before' of a previous search)",
    )
    search.add_argument("--token", default=None, help="bearer token (default: $TRIO_OBS_TOKEN)")
    search.add_argument("--json", action="store_true", help="print one JSON object per hit")
    return parser


def _typed_filters(command: argparse.ArgumentParser, *, tool: bool) -> None:
    """The typed filters of SPEC §14 (exact values), as flags of ``command``."""
    if tool:
        command.add_argument("--tool", default=None, help="only events of this tool")
        command.add_argument("--execution", default=None, help="only events of this execution")
    command.add_argument(
        "--type", default=None, choices=sorted(STREAM_EVENT_TYPES), help="only events of this type"
    )
    command.add_argument(
        "--state",
        default=None,
        help="only events in this state (a tool's done/error/blocked, a span's, an "
        "execution's completed/failed, an assertion's pass/fail, ...)",
    )
    command.add_argument(
        "--agent", default=None, help="only events of this agent (or heartbeat instance)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trio-obs`` console script."""
    args = build_parser().parse_args(argv)
    if args.token is None:  # read here, not as a default, so --help never shows the secret
        args.token = os.environ.get("TRIO_OBS_TOKEN") or None
    if args.command == "serve":
        args.redis_source = "--redis"
        if args.redis is None:  # like the token: --help never shows a password from the env
            args.redis = os.environ.get("TRIO_OBS_REDIS") or None
            args.redis_source = "TRIO_OBS_REDIS"
        from .server.cli import run_serve

        return run_serve(args)
    if args.command == "demo":
        from .demo.cli import run_demo_cli

        status: int = run_demo_cli(args)
        return status
    if args.command == "search":
        from .client.search_cli import run_search_cli

        return run_search_cli(args)
    if args.running:
        from .client.running import run_running_cli

        return run_running_cli(args)
    from .client.tail import run_tail_cli

    status = run_tail_cli(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
