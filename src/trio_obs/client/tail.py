"""``trio-obs tail``: the live stream in a terminal, one line per event (or NDJSON).

The lines are pure functions (:mod:`.tail_render`), tested without a terminal;
heartbeats are folded: a line only when an agent's status changes. ``--tree`` prints
an execution's span tree once (:mod:`.tail_tree`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Final, TextIO

import httpx
import orjson
import trio
from rich.console import Console
from rich.text import Text

from ..core import events as ev
from ..core.errors import InvalidInput
from ..core.protocol import ALL
from .common import StreamClosed, StreamRefused, auth_headers, endpoints
from .stream import EventStream, open_stream
from .tail_render import AgentBoard, SpanBook, render_event, render_heartbeat
from .tail_render import format_time as format_time  # where other clients found them
from .tail_render import short_id as short_id
from .tail_tree import TreeUnavailable, fetch_tree, render_tree

_LOOKUP_TIMEOUT: Final = 5.0
"""Seconds to wait for an execution's tree when a span's start came before the tail."""

# --------------------------------------------------------------------------- the command


class _BrokenOutput(Exception):
    """stdout was closed by the reader (``| head``): stop quietly."""


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich would raise SystemExit(1); a closed pipe (`| head`) is a normal way to stop.
        raise _BrokenOutput


class _Tail:
    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.out = out
        self.console = _Console(file=out, highlight=False, soft_wrap=True, emoji=False)
        self.errors = Console(file=err, highlight=False, soft_wrap=True, emoji=False)
        self.agents = AgentBoard()
        self.spans = SpanBook()
        self.stream: EventStream | None = None
        self.was_live = False
        self.failing = False
        """A connection attempt failed and the user was told; quiet until one succeeds."""
        self.unreachable: str | None = None
        """``--no-wait``: why the server could not be reached (the tail gives up)."""
        self.scope = trio.CancelScope()
        self.live = trio.Event()

    def note(self, message: str, style: str = "yellow") -> None:
        self.errors.print(Text(f"trio-obs tail: {message}", style))

    def on_state(self, state: str) -> None:
        stream = self.stream
        if state != "live":
            return
        if self.was_live:
            since = stream.last_seq() if stream and stream.stream != ALL else None
            self.note("resumed" if since is None else f"resumed after seq {since}", "green")
        elif self.failing:
            self.note(f"connected to {self.args.url}; following {self.args.execution}", "green")
        elif self.errors.is_terminal:
            self.note(f"following {self.args.execution} at {self.args.url}", "green")
        self.was_live = True
        self.failing = False
        self.live.set()

    def on_retry(self, reason: str, delay: float) -> None:
        """Say once why the server cannot be reached, then retry quietly until it answers."""
        if self.failing:
            return
        self.failing = True
        url = self.args.url
        if self.was_live:
            self.note(f"lost the connection to {url} ({reason}); reconnecting until it answers")
        elif self.args.no_wait:
            self.unreachable = reason
            self.scope.cancel()
        else:
            self.note(
                f"cannot reach the server at {url} ({reason}). Is it running? "
                "(trio-obs serve; --url names another). Retrying quietly until it answers; "
                "Ctrl-C stops."
            )

    async def explain_empty(self, stream: EventStream) -> None:
        """Following an execution with no events: say so, and name the recent ones."""
        if stream.stream in (ALL,) or stream.last_seq() != 0 or self.args.since:
            return
        try:
            async with httpx.AsyncClient(
                timeout=5.0, trust_env=False, headers=auth_headers(self.args.token or None)
            ) as http:
                response = await http.get(f"{endpoints(self.args.url).http}/api/executions?limit=5")
                recent = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            recent = None
        text = f"{stream.stream} has no events yet; waiting for them"
        if recent:
            names = ", ".join(
                f"{e['executionId']} ({e['lastStatus'] or 'no status'}, {e['eventCount']} events)"
                for e in recent
            )
            text += f". The most recent executions: {names}"
        elif recent == []:
            text += ". The server has no executions yet"
        self.note(text)

    async def show(self, event: ev.StreamEvent, text: str) -> None:
        try:
            if self.args.json:
                self.out.write(text + "\n")
                self.out.flush()
                return
            line: Text | None
            if isinstance(event, ev.AgentHeartbeatEvent):
                line = render_heartbeat(event) if self.agents.changed(event) else None
            elif self.spans.is_echo(event):
                line = None  # the tool start above already said it
            else:
                self.spans.learn(event)
                if self.spans.missing(event):
                    await self.look_up(event.execution_id)
                line = render_event(event, context=self.spans.context(event))
            if line is not None:
                self.console.print(line)
                self.out.flush()
        except BrokenPipeError:
            raise _BrokenOutput from None

    async def look_up(self, execution_id: str) -> None:
        """Learn an execution's spans from its tree, once: starts that came before the tail."""
        if execution_id in self.spans.looked_up:
            return
        self.spans.looked_up.add(execution_id)
        try:
            tree = await fetch_tree(
                self.args.url, execution_id, self.args.token or None, _LOOKUP_TIMEOUT
            )
        except TreeUnavailable as exc:  # an older server: the lines show ids instead
            logging.getLogger("trio_obs.client").info("no tree for %s: %s", execution_id, exc)
            return
        self.spans.learn_tree(tree)

    def subscription(self) -> tuple[list[str], dict[str, object]]:
        """The topics and filters the flags ask for; a filter implies its topic."""
        args = self.args
        filters: dict[str, object] = {}
        implied: list[str] = []
        for values, key, topic in (
            (args.tool, "tools", "tools"),
            (args.severity, "severity", "messagebus"),
            (args.category, "categories", "assertions"),
            (args.entry_type, "entryTypes", "transcript"),
        ):
            if values:
                filters[key] = list(values)
                implied.append(topic)
        if args.task:
            filters["taskId"] = args.task
        for key, value in (
            ("q", args.query), ("type", args.type), ("state", args.state), ("agent", args.agent)
        ):  # fmt: skip
            if value:
                filters[key] = value
        return (list(args.topic) or implied), filters

    async def run(self) -> int:
        args = self.args
        topics, filters = self.subscription()
        try:
            with self.scope:
                await self.follow(topics, filters)
        except (InvalidInput, ValueError) as exc:
            self.note(str(exc), "bold red")
            return 2
        except (StreamRefused, StreamClosed) as exc:
            self.note(str(exc), "bold red")
            return 1
        except _BrokenOutput:
            return 0
        if self.unreachable is not None:
            self.note(
                f"cannot reach the server at {args.url} ({self.unreachable}). Is it running?",
                "bold red",
            )
            return 1
        return 0

    async def follow(self, topics: list[str], filters: dict[str, object]) -> None:
        """Follow the stream until it ends, printing each event."""
        args = self.args
        async with open_stream(
            args.url,
            args.execution,
            since=args.since,
            topics=topics,
            filters=filters or None,
            token=args.token or None,
            on_state=self.on_state,
            on_retry=self.on_retry,
        ) as stream:
            self.stream = stream
            stream.on_notice = self.note
            explaining = trio.CancelScope()

            async def explain_once() -> None:
                with explaining:
                    await self.live.wait()
                    await self.explain_empty(stream)

            failure: Exception | None = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(explain_once)
                try:
                    async for event, text in stream.frames():
                        explaining.cancel()  # events came: nothing to explain
                        await self.show(event, text)
                except (StreamRefused, StreamClosed, _BrokenOutput) as exc:
                    failure = exc  # raised below, outside the nursery: not in a group
                explaining.cancel()
            if failure is not None:
                raise failure


async def _main(tail: _Tail) -> int:
    status = 0
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                nonlocal status
                status = await tail.run()
                nursery.cancel_scope.cancel()

            nursery.start_soon(follow)
            async for _ in signals:  # Ctrl-C: a normal way to stop following
                nursery.cancel_scope.cancel()
                break
    return status


async def _print_tree(tail: _Tail, execution_id: str) -> int:
    """``--tree``: print the execution's span tree once; 1 when the server cannot give it."""
    args = tail.args
    try:
        tree = await fetch_tree(args.url, execution_id, args.token or None)
    except TreeUnavailable as exc:
        tail.note(str(exc), "bold red")
        return 1
    try:
        if args.json:
            tail.out.write(orjson.dumps(tree).decode() + "\n")
        else:
            for line in render_tree(tree, now=datetime.now(UTC)):
                tail.console.print(line)
        tail.out.flush()
    except (BrokenPipeError, _BrokenOutput):
        pass
    return 0


def run_tail_cli(args: argparse.Namespace) -> int:
    """``trio-obs tail``: follow a stream until Ctrl-C; 1 if the server refuses it.

    ``--tree EXECUTION`` prints that execution's span tree once instead.
    """
    logging.basicConfig(
        level=logging.WARNING, format="trio-obs tail: %(message)s", stream=sys.stderr
    )
    tail = _Tail(args, sys.stdout, sys.stderr)
    try:
        if args.tree is not None:
            status = trio.run(_print_tree, tail, args.tree)
        else:
            status = trio.run(_main, tail)
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was installed
        status = 0
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status
