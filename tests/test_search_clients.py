"""The clients of search (SPEC §14): ``trio_obs.search``, ``trio-obs search``, a live query
followed with ``open_stream`` (across a server restart) and ``trio-obs tail --query``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from rich.text import Text

import trio_obs
from support import START_TIMEOUT, command, environment, free_port, running_server
from test_client import start_server, take
from test_tail import interrupt, tail
from trio_obs import SearchRefused, search
from trio_obs.client.search_cli import highlighted, render_hit
from trio_obs.core.events import ToolEndEvent, ToolStartEvent, TranscriptEntry, TranscriptEntryEvent
from trio_obs.core.search import SearchHit

TS = "2026-01-01T12:00:00.000Z"
TIMEOUT = START_TIMEOUT  # a hang guard for tests that start processes, never about speed


def said(execution: str, seq: int, summary: str) -> TranscriptEntryEvent:
    entry = TranscriptEntry(
        id=f"t{seq}", timestamp=TS, sequence=seq, execution_id=execution,
        instance_id="instance-1", entry_type="message", category="talk", summary=summary,
    )  # fmt: skip
    return TranscriptEntryEvent(execution_id=execution, entry=entry)


def ended(execution: str, use: str, status: Any, output: str) -> ToolEndEvent:
    return ToolEndEvent(
        execution_id=execution, tool_use_id=use, result_status=status, duration_ms=3,
        output_summary=output,
    )  # fmt: skip


async def test_the_typed_client_pages_and_explains_refusals() -> None:
    async with running_server() as srv:
        url = srv.url()
        await trio_obs.post_events(url, [said("e1", i, f"deploy step {i}") for i in range(5)])
        first = await search(url, "deploy", limit=2)
        assert [h.seq for h in first.hits] == [5, 4] and first.next is not None
        rest = await search(url, "deploy", before=first.next)
        assert [h.seq for h in rest.hits] == [3, 2, 1] and rest.next is None
        assert first.hits[0].snippet == "<mark>deploy</mark> step 4"
        with pytest.raises(SearchRefused, match="quote that is not closed") as info:
            await search(url, '"deploy')
        assert (info.value.status, info.value.code) == (400, "INVALID_QUERY")


def test_a_hit_is_one_line_with_its_match_in_bold() -> None:
    hit = SearchHit(
        execution_id="exec-7f3a9c21e5b04d2f", seq=12, pos=99, type="tool:end",
        timestamp=TS, snippet="…permission <mark>denied</mark>\non build/",
    )  # fmt: skip
    line = render_hit(hit, local_time=False)
    assert line.plain == "12:00:00.000 exec-…04d2f #12 tool:end  …permission denied on build/"
    marked = highlighted("a <mark>b</mark> c")
    assert isinstance(marked, Text) and marked.plain == "a b c"
    assert any(str(s.style) == "bold yellow" for s in marked.spans)


async def run(*args: str) -> tuple[int, str, str]:
    with trio.fail_after(TIMEOUT):  # each command: a hang guard, not a speed test
        done = await trio.run_process(
            command(*args), capture_stdout=True, capture_stderr=True, check=False,
            env=environment(unbuffered=False), stdin=subprocess.DEVNULL,
        )  # fmt: skip
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_trio_obs_search_prints_hits_and_exits_as_grep() -> None:
    async with running_server() as srv:
        url = srv.url()
        await trio_obs.post_events(
            url, [ended("e1", "u1", "error", "permission denied"), said("e2", 1, "all good")]
        )
        status, out, err = await run("search", "denied", "--url", url)
        assert status == 0, err
        assert out.splitlines()[0].endswith("e1 #1 tool:end  permission denied")
        status, out, _ = await run("search", "denied", "--url", url, "--json")
        assert [orjson.loads(line)["executionId"] for line in out.splitlines()] == ["e1"]
        status, out, _ = await run("search", "denied", "--url", url, "--state", "done")
        assert (status, out) == (1, "")
        status, _, err = await run("search", "a AND", "--url", url)
        assert status == 2 and "AND needs words on both sides" in err
    status, _, err = await run("search", "x", "--url", f"http://127.0.0.1:{free_port()}")
    assert status == 2 and "cannot reach" in err


async def test_a_live_query_is_followed_across_a_restart_with_nothing_twice(
    tmp_path: Path,
) -> None:
    db, port = str(tmp_path / "obs.db"), free_port()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, db, port=port)
            async with trio_obs.open_stream(
                server.url, "all", filters={"q": "deploy", "state": "error"}
            ) as stream:
                await trio_obs.post_events(
                    server.url, [ended("e1", "u1", "done", "deploy ok"),
                                 ended("e1", "u2", "error", "deploy failed")]
                )  # fmt: skip
                got = await take(stream, 1)
                await server.shutdown()
                async with trio_obs.open_observability(db) as obs:  # stored while it was down
                    await obs.ingest(
                        [ended("e2", f"v{i}", "error", f"deploy {i}") for i in range(3)]
                    )
                    await obs.ingest([ended("e2", "w", "done", "deploy fine")])
                server = await start_server(nursery, db, port=port)
                await trio_obs.post_events(server.url, [ended("e3", "x", "error", "deploy again")])
                got += await take(stream, 4)
                assert stream.reconnects == 1
            await server.shutdown()
    assert [e.tool_use_id for e in got if isinstance(e, ToolEndEvent)] == [
        "u2", "v0", "v1", "v2", "x"
    ]  # fmt: skip
    positions = [e.pos for e in got]
    assert positions == sorted(positions)


async def test_tail_query_follows_new_matches() -> None:
    with trio.fail_after(TIMEOUT):
        async with running_server() as srv:
            url = srv.url()
            async with tail("all", "--url", url, "--query", "denied", "--json") as (
                process, out, err,
            ):  # fmt: skip
                # Until tail is connected (a live query has no past). Not the hub's listener
                # count: the server's watchdog listens to every event too.
                while not (await srv.http.get("/api/health")).json()["connections"]:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                await trio_obs.post_events(
                    url,
                    [ToolStartEvent(execution_id="e1", tool_use_id="u", tool="Bash",
                                    input_summary="rm -rf /"),
                     ended("e1", "u", "error", "permission denied")],
                )  # fmt: skip
                line = (await out.take(1))[0]
                status, _ = await interrupt(process, err)
    assert status == 0
    assert orjson.loads(line)["type"] == "tool:end"
