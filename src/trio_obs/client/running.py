"""``trio-obs tail --running``: the open spans of running executions, with their age, live.

It asks the server's watchdog (``GET /api/running``) once a second. On a terminal the
table is redrawn in place; otherwise each change is printed as a block (``--json``: one
object per open span per round), so a script can read it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Final, TextIO

import httpx
import orjson
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .common import auth_headers, endpoints, error_text
from .tail import short_id

REFRESH: Final = 1.0
_ALERT_STYLE: Final = {"slow": "yellow", "lost": "bold red"}


def age_text(ms: int) -> str:
    """``ms`` as a person reads an age: 850ms, 12.3s, 4m05s, 2h03m."""
    if ms < 1000:
        return f"{ms}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def running_table(spans: list[dict[str, Any]]) -> Table | Text:
    """The open spans, oldest first: execution, kind, name, agent, age, the watchdog's word."""
    if not spans:
        return Text("no open spans", "grey50")
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in ("execution", "kind", "name", "agent", "age", "alert"):
        table.add_column(column, justify="right" if column == "age" else "left")
    for span in spans:
        alert = span.get("alert") or ""
        table.add_row(
            short_id(span["executionId"]),
            span["kind"],
            span["name"],
            span.get("agent") or "",
            age_text(int(span["ageMs"])),
            Text(alert, _ALERT_STYLE.get(alert, "")),
        )
    return table


async def fetch_running(http: httpx.AsyncClient, url: str, token: str | None) -> list[Any]:
    """The open spans the server's watchdog knows (raises on an error answer)."""
    response = await http.get(f"{endpoints(url).http}/api/running", headers=auth_headers(token))
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {error_text(response.text)}")
    answer = response.json()
    if not answer.get("watching"):
        raise RuntimeError("this server runs no watchdog")
    spans: list[Any] = answer["spans"]
    return spans


async def run_running(
    args: argparse.Namespace, out: TextIO, err: TextIO, *, rounds: int | None = None
) -> int:
    """Show the open spans until interrupted (or for ``rounds`` refreshes); exit status."""
    console = Console(file=out, highlight=False, soft_wrap=True, emoji=False)
    live = Live(console=console, auto_refresh=False) if out.isatty() and not args.json else None
    last: list[Any] | None = None
    done = 0
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        if live is not None:
            live.start()
        try:
            while rounds is None or done < rounds:
                try:
                    spans = await fetch_running(http, args.url, args.token or None)
                except (httpx.HTTPError, RuntimeError) as exc:
                    err.write(f"trio-obs tail --running: {args.url}: {exc}\n")
                    return 2
                done += 1
                if args.json:
                    for span in spans:
                        out.write(orjson.dumps(span).decode() + "\n")
                    out.flush()
                elif live is not None:
                    live.update(Group(running_table(spans)), refresh=True)
                elif spans != last:
                    console.print(running_table(spans))
                    console.print()
                last = spans
                if rounds is None or done < rounds:
                    await trio.sleep(REFRESH)
        finally:
            if live is not None:
                live.stop()
    return 0


def run_running_cli(args: argparse.Namespace) -> int:
    """``trio-obs tail --running``."""
    try:
        return trio.run(run_running, args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 130
