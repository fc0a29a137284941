"""``trio-obs demo``: the simulated run, posted to a server over HTTP."""

from __future__ import annotations

import argparse
import random
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio

from ..client.common import PostRejected, auth_headers, error_text
from ..client.post import HttpPublisher
from ..core.errors import TrioObsError, first_error
from ..producers import Publisher, Services
from .play import PAUSE_BETWEEN_RUNS, Tally, simulate
from .scenario import hex_id, new_execution_id


class DemoError(TrioObsError):
    """The demo cannot go on: the server is unreachable or refused the events."""


def _say(text: str) -> None:
    print(f"trio-obs demo: {text}", file=sys.stderr, flush=True)


def _explain(exc: BaseException, url: str) -> str:
    """A sentence for why the demo cannot post to ``url``."""
    if isinstance(exc, PostRejected):
        hint = " \u2014 pass --token or set TRIO_OBS_TOKEN" if exc.status == 401 else ""
        return (
            f"the server at {url} refused the events: HTTP {exc.status}: "
            f"{error_text(exc.body)}{hint}"
        )
    if isinstance(exc, httpx.ConnectError):
        return (
            f"cannot reach the server at {url}: {exc or 'connection failed'} "
            "\u2014 is `trio-obs serve` running?"
        )
    if isinstance(exc, httpx.TimeoutException):
        return f"the server at {url} did not answer in time"
    return f"lost the connection to the server at {url}: {exc!r}"


async def _check_server(client: httpx.AsyncClient, url: str) -> None:
    """Raise :class:`DemoError` unless a trio-obs server answers at ``url``."""
    try:
        response = await client.get(f"{url}/api/health")
    except httpx.HTTPError as exc:
        raise DemoError(_explain(exc, url)) from None
    if response.status_code not in (200, 503):
        raise DemoError(
            f"{url} does not look like a trio-obs server "
            f"(GET /api/health answered HTTP {response.status_code})"
        )


async def _check_otlp(client: httpx.AsyncClient, url: str, token: str | None) -> None:
    """Raise :class:`DemoError` unless the server takes OTLP (an empty export) from us."""
    headers = {"content-type": "application/x-protobuf", **auth_headers(token)}
    response = await client.post(f"{url}/v1/traces", content=b"", headers=headers)
    if response.status_code != 200:
        raise DemoError(_explain(PostRejected(response.status_code, response.text), url))


@asynccontextmanager
async def _publisher(
    args: argparse.Namespace, url: str, client: httpx.AsyncClient
) -> AsyncIterator[Publisher]:
    """Where the services' events go: ``POST /api/events``, or spans of the OpenTelemetry SDK."""
    if not args.otel:
        yield HttpPublisher(url, token=args.token, client=client)
        return
    from .otel import span_publisher  # the otel extra: imported only when asked for

    async with span_publisher(url, args.token) as spans:
        yield spans


async def _demo(args: argparse.Namespace) -> int:
    """The body of ``trio-obs demo``: the exit status."""
    rng = random.Random(args.seed)
    interrupted = False
    status = 0
    url = args.url.rstrip("/")

    async def watch_sigint(
        cancel: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                interrupted = True
                cancel.cancel()
                return

    async with (
        httpx.AsyncClient(timeout=10.0, trust_env=False) as client,
        _publisher(args, url, client) as inner,
    ):
        publisher = Tally(inner)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(watch_sigint, nursery.cancel_scope)
                await _check_server(client, url)
                if args.otel:
                    await _check_otlp(client, url, args.token)
                while True:
                    # Through OpenTelemetry the execution id is the trace id.
                    current = hex_id(rng, 32) if args.otel else new_execution_id(rng)
                    _say(
                        f"streaming execution {current} into {url}; "
                        f"watch: {url}/ or `trio-obs tail {current}`"
                    )
                    publisher.count = 0
                    try:
                        await simulate(
                            Services.over(publisher),
                            execution_id=current,
                            speed=args.speed,
                            rng=rng,
                        )
                    except* (PostRejected, httpx.HTTPError) as group:
                        raise DemoError(_explain(first_error(group), url)) from None
                    outcome = publisher.status.get(current, "ended")
                    _say(f"execution {current} {outcome} ({publisher.count} events)")
                    if not args.loop:
                        break
                    await trio.sleep(PAUSE_BETWEEN_RUNS / args.speed)
                nursery.cancel_scope.cancel()
        except* DemoError as group:
            _say(f"error: {first_error(group)}")
            status = 1
    if interrupted:
        status = 130
    return status


def run_demo_cli(args: argparse.Namespace) -> int:
    """``trio-obs demo``: stream simulated executions into a server; the exit status.

    0 when done; 1 when the server is unreachable or refuses the events (with a
    sentence on stderr); 2 on a bad flag; 130 on Ctrl-C, after marking the execution
    failed.
    """
    if not args.speed > 0:
        _say(f"error: --speed must be positive, got {args.speed}")
        return 2
    if not args.url.startswith(("http://", "https://")):
        _say(f"error: --url must start with http:// or https://, got {args.url!r}")
        return 2
    if args.otel:
        try:
            from . import otel  # noqa: F401
        except ImportError as exc:
            _say(f"error: --otel needs the otel extra ({exc}): pip install 'trio-obs[otel]'")
            return 2
    status = 0
    try:
        status = trio.run(_demo, args)
    except* KeyboardInterrupt:
        status = 130
    return status
