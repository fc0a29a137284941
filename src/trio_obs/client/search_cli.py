"""``trio-obs search``: the stored events that match, newest first, in a terminal (SPEC §14).

One line per hit: time, execution, seq, type and the text around the match (the match in
bold); ``--json`` prints one JSON object per hit. Exit status as grep's: 0 when something
matched, 1 when nothing did, 2 when the search could not be made.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final, TextIO

import httpx
import orjson
import trio
from rich.console import Console
from rich.text import Text

from ..core.search import ELLIPSIS, MARK_CLOSE, MARK_OPEN, SearchHit
from ..core.wire import to_wire_hit
from .common import SearchRefused
from .search import search
from .tail_render import format_time, short_id

PAGE: Final = 500
"""Hits asked for per request at most."""


def highlighted(snippet: str) -> Text:
    """A snippet with its ``<mark>`` spans in bold (the rest as it is)."""
    text = Text()
    rest = snippet
    while (start := rest.find(MARK_OPEN)) >= 0:
        end = rest.find(MARK_CLOSE, start)
        if end < 0:
            break
        text.append(rest[:start])
        text.append(rest[start + len(MARK_OPEN) : end], "bold yellow")
        rest = rest[end + len(MARK_CLOSE) :]
    text.append(rest)
    return text


def render_hit(hit: SearchHit, *, local_time: bool = True) -> Text:
    """One line for a hit: when, where (execution and seq), what, and the matching text."""
    snippet = " ".join(hit.snippet.split()) or ELLIPSIS  # one line, whatever the text held
    return Text.assemble(
        (format_time(hit.timestamp, local_time=local_time), "grey50"),
        " ",
        (f"{short_id(hit.execution_id)} #{hit.seq}", "cyan"),
        " ",
        (hit.type, "grey70"),
        "  ",
        highlighted(snippet),
    )


async def run_search(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Search, print the hits; the exit status (0 found, 1 none, 2 failed)."""
    console = Console(file=out, highlight=False, soft_wrap=True, emoji=False)
    errors = Console(file=err, highlight=False, soft_wrap=True, emoji=False)
    shown, before, complete, note = 0, args.before, True, None
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        while shown < args.limit:
            try:
                result = await search(
                    args.url, args.text, execution=args.execution, type=args.type,
                    tool=args.tool, state=args.state, agent=args.agent,
                    limit=min(PAGE, args.limit - shown), before=before,
                    token=args.token or None, client=http,
                )  # fmt: skip
            except SearchRefused as exc:
                errors.print(Text(f"trio-obs search: {exc}", "bold red"))
                return 2
            except httpx.HTTPError as exc:
                errors.print(Text(f"trio-obs search: cannot reach {args.url}: {exc}", "bold red"))
                return 2
            complete, note = complete and result.complete, note or result.note
            for hit in result.hits:
                if args.json:
                    out.write(orjson.dumps(to_wire_hit(hit)).decode() + "\n")
                else:
                    console.print(render_hit(hit))
            shown += len(result.hits)
            before = result.next
            if before is None:
                break
    if not complete:
        errors.print(Text(f"trio-obs search: {note}", "yellow"))
    if before is not None and shown:
        errors.print(Text(f"trio-obs search: more with --before {before}", "grey50"))
    return 0 if shown else 1


def run_search_cli(args: argparse.Namespace) -> int:
    """``trio-obs search TEXT``."""
    try:
        return trio.run(run_search, args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 130
