"""Search across runs (SPEC §14): ``GET /api/search`` on a single node's SQLite FTS5 index.

Everything goes through a real server and a real SQLite store: events posted (or stored
by an older trio-obs) are found newest first, with snippets, typed filters and paging;
bad queries are 400 with a sentence; retention takes events out of the index too.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from support import TIMEOUT, running_server
from trio_obs.core.search import index_text, index_text_of_json, search_query
from trio_obs.core.wire import decode_stream_event
from trio_obs.demo.play import simulate
from trio_obs.hub import search_sql
from trio_obs.hub.indexing import build_index
from trio_obs.hub.sqlite import open_store
from trio_obs.producers import Services

TS = "2026-01-01T00:00:00.000Z"


def tool(execution: str, use: str, name: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "tool:start", "executionId": execution, "toolUseId": use, "tool": name,
            "inputSummary": text, **extra}  # fmt: skip


def tool_end(execution: str, use: str, status: str, output: str) -> dict[str, Any]:
    return {"type": "tool:end", "executionId": execution, "toolUseId": use,
            "resultStatus": status, "durationMs": 5, "outputSummary": output}  # fmt: skip


def transcript(execution: str, summary: str, seq: int = 1) -> dict[str, Any]:
    return {
        "type": "transcript:entry",
        "executionId": execution,
        "entry": {"id": f"t{seq}", "timestamp": TS, "sequence": seq, "executionId": execution,
                  "instanceId": "instance-1", "entryType": "message", "category": "talk",
                  "summary": summary},
    }  # fmt: skip


def span_end(execution: str, span: str, agent: str, words: str) -> dict[str, Any]:
    return {
        "type": "span:end",
        "executionId": execution,
        "spanId": span,
        "state": "done",
        "kind": "llm",
        "name": "chat gpt-4o",
        "agent": agent,
        "outputMessages": [{"role": "assistant", "parts": [{"type": "text", "content": words}]}],
    }


RUN = [
    tool("e1", "u1", "Bash", "rm -rf build/"),
    tool_end("e1", "u1", "error", "permission denied on build/cache"),
    transcript("e1", "The cleanup failed: permission denied"),
    tool("e2", "u2", "Read", "src/api/users.ts"),
    tool_end("e2", "u2", "done", "120 lines"),
    span_end("e2", "s1", "planner", "I will add cursor pagination to listUsers"),
    {"type": "execution:status", "executionId": "e2", "status": "failed",
     "message": "tests_pass failed twice"},
]  # fmt: skip


async def search(srv: Any, **params: Any) -> dict[str, Any]:
    answer = await srv.http.get("/api/search", params=params)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def where(result: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(h["executionId"], h["seq"], h["type"]) for h in result["hits"]]


async def test_posted_events_are_found_newest_first_with_snippets() -> None:
    async with running_server() as srv:
        assert (await srv.http.post("/api/events", json=RUN)).status_code == 202
        # Written with the rows: found as soon as the POST is answered.
        found = await search(srv, q="permission denied")
        assert where(found) == [("e1", 3, "transcript:entry"), ("e1", 2, "tool:end")]
        hit = found["hits"][0]
        assert hit["snippet"] == "The cleanup failed: <mark>permission</mark> <mark>denied</mark>"
        assert hit["pos"] > found["hits"][1]["pos"] and hit["timestamp"]
        assert found["complete"] is True and found["next"] is None
        # What people type is not FTS5 syntax, and still works.
        assert where(await search(srv, q="rm -rf")) == [("e1", 1, "tool:start")]
        assert where(await search(srv, q="src/api/users.ts")) == [("e2", 1, "tool:start")]
        # Model-call messages and execution messages are text too; roles are not.
        assert where(await search(srv, q="pagination")) == [("e2", 3, "span:end")]
        assert where(await search(srv, q="assistant")) == []
        assert where(await search(srv, q="tests_pass")) == [("e2", 4, "execution:status")]


async def test_typed_filters_narrow_the_hits() -> None:
    async with running_server() as srv:
        await srv.http.post("/api/events", json=RUN)
        assert where(await search(srv, q="denied", type="tool:end")) == [("e1", 2, "tool:end")]
        assert where(await search(srv, q="denied", execution="e2")) == []
        assert where(await search(srv, q="build", tool="Bash")) == [
            ("e1", 2, "tool:end"),
            ("e1", 1, "tool:start"),
        ]
        assert where(await search(srv, q="lines OR denied", state="error")) == [
            ("e1", 2, "tool:end")
        ]
        assert where(await search(srv, q="pagination", agent="planner")) == [("e2", 3, "span:end")]
        assert where(await search(srv, q="pagination", agent="coder")) == []
        assert where(await search(srv, q="failed", state="failed")) == [
            ("e2", 4, "execution:status")
        ]


async def test_before_pages_on_newest_first() -> None:
    async with running_server() as srv:
        await srv.http.post(
            "/api/events", json=[transcript("e1", f"deploy step {i}", i) for i in range(1, 8)]
        )
        pages: list[list[int]] = []
        params: dict[str, Any] = {"q": "deploy", "limit": 3}
        while True:
            page = await search(srv, **params)
            pages.append([h["seq"] for h in page["hits"]])
            if page["next"] is None:
                break
            params["before"] = page["next"]
        assert pages == [[7, 6, 5], [4, 3, 2], [1]]


@pytest.mark.parametrize(
    ("params", "why", "code"),
    [
        ({}, "q is required", "INVALID_QUERY"),
        ({"q": '"permission'}, "quote that is not closed", "INVALID_QUERY"),
        ({"q": "AND denied"}, "AND needs words on both sides", "INVALID_QUERY"),
        ({"q": "x", "type": "tool:begin"}, "not an event type", "INVALID_QUERY"),
        ({"q": "x", "limit": "0"}, "limit must be from 1 to 500", "INVALID_QUERY"),
        ({"q": "x", "limit": "-1"}, "non-negative integer", "INVALID_PARAMETER"),
        ({"q": "x", "before": "soon"}, "non-negative integer", "INVALID_PARAMETER"),
    ],
)
async def test_bad_searches_are_400_with_a_sentence(
    params: dict[str, str], why: str, code: str
) -> None:
    async with running_server() as srv:
        answer = await srv.http.get("/api/search", params=params)
        assert answer.status_code == 400
        assert why in answer.json()["error"]
        assert answer.json()["code"] == code


async def test_a_wrong_method_and_the_token() -> None:
    async with running_server(token="s3cret") as srv:
        assert (await srv.http.post("/api/search?q=x", content=b"{}")).status_code == 405
        assert (await srv.http.get("/api/search", params={"q": "x"})).status_code == 401
        ok = await srv.http.get("/api/search", params={"q": "x", "token": "s3cret"})
        assert ok.status_code == 200


def integrity(db: Path) -> None:
    """FTS5's own check that the index matches the events it was built from."""
    with sqlite3.connect(db) as con:
        search_sql.register(con)  # the index reads the events through the store's functions
        con.execute("INSERT INTO search(search) VALUES ('integrity-check')")


async def test_retention_takes_executions_out_of_the_index(tmp_path: Path) -> None:
    db = tmp_path / "obs.db"
    async with running_server(str(db)) as srv:
        await srv.http.post("/api/events", json=RUN)
        assert len((await search(srv, q="denied OR lines"))["hits"]) == 3
        deleted = await srv.obs.hub.retain(0)
        assert set(deleted) == {"e1", "e2"}
        assert (await search(srv, q="denied OR lines"))["hits"] == []
        await srv.http.post("/api/events", json=[transcript("e3", "permission denied again")])
        assert where(await search(srv, q="denied")) == [("e3", 1, "transcript:entry")]
    integrity(db)


# --------------------------------------------------------------------------- older stores


def make_old_store(db: Path) -> None:
    """A store as trio-obs wrote it before positions and the index: rows, no ``pos``."""
    with sqlite3.connect(db) as con:
        con.execute("DROP INDEX events_by_pos")
        con.execute("DROP TABLE search")
        con.execute("DROP VIEW search_content")
        con.execute("DROP TABLE position_backfill")
        con.execute("ALTER TABLE events DROP COLUMN pos")
        con.execute("DELETE FROM meta WHERE name != 'epoch'")


async def test_an_older_store_is_indexed_in_the_background(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    async with running_server(str(db)) as srv:
        await srv.http.post("/api/events", json=RUN)
        await srv.http.post("/api/events", json=[transcript("e3", "deploy done", 1)])
    make_old_store(db)
    async with open_store(str(db)) as store:
        assert store.unindexed() > 0  # opening did not index anything: nothing waits for it
        before = await store.search(search_query("denied"))
        assert before.complete is False and before.note and before.hits == []
        with trio.fail_after(TIMEOUT):
            await build_index(store, batch=2)  # several batches
        after = await store.search(search_query("denied OR deploy"))
        assert after.complete is True
        hits = [(h.execution_id, h.seq) for h in after.hits]
        assert sorted(hits) == [("e1", 2), ("e1", 3), ("e3", 1)]
        # The old events got positions below any new one, each once.
        positions = [h.pos for h in after.hits]
        assert len(set(positions)) == 3 and all(p <= store.last_pos() for p in positions)
    integrity(db)
    # A server on it goes on numbering above the old events, and finds both.
    async with running_server(str(db)) as srv:
        await srv.http.post("/api/events", json=[transcript("e4", "permission denied")])
        found = await search(srv, q="denied")
        assert where(found)[0] == ("e4", 1, "transcript:entry")
        assert len(found["hits"]) == 3


async def test_an_index_of_another_version_is_built_again(tmp_path: Path) -> None:
    db = tmp_path / "obs.db"
    async with running_server(str(db)) as srv:
        await srv.http.post("/api/events", json=RUN)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value = 'older' WHERE name = 'search_version'")
    async with running_server(str(db)) as srv:
        with trio.fail_after(TIMEOUT):
            while not (found := await search(srv, q="denied"))["complete"]:  # noqa: ASYNC110
                await trio.sleep(0.01)  # the background build finishes on its own
        assert len(found["hits"]) == 2
    integrity(db)


# --------------------------------------------------------------------------- the run list


async def test_the_execution_list_filters_by_state_agent_and_errors() -> None:
    beat = {"type": "agent:heartbeat", "executionId": "e3", "instanceId": "instance-7",
            "status": "working"}  # fmt: skip
    async with running_server() as srv:
        await srv.http.post("/api/events", json=[*RUN, beat, transcript("e4", "all fine")])

        async def listed(**params: str) -> list[str]:
            answer = await srv.http.get("/api/executions", params=params)
            assert answer.status_code == 200, answer.text
            return sorted(s["executionId"] for s in answer.json())

        assert await listed() == ["e1", "e2", "e3", "e4"]
        assert await listed(errors="true") == ["e1", "e2"]  # a tool error; a failed run
        assert await listed(state="failed") == ["e2"]
        assert await listed(agent="planner") == ["e2"]
        assert await listed(agent="instance-7") == ["e3"]  # a heartbeat's instance
        assert await listed(agent="planner", errors="true", state="failed") == ["e2"]
        assert await listed(agent="planner", state="running") == []
        bad = await srv.http.get("/api/executions", params={"errors": "maybe"})
        assert bad.status_code == 400 and "errors must be true or false" in bad.json()["error"]


async def test_a_demo_run_indexed_as_stored_matches_its_events_and_leaves_whole(
    tmp_path: Path,
) -> None:
    """Events being stored are indexed from their typed events; the index reads stored rows
    through the same function (FTS5's check compares them), and deletes them exactly."""
    db = tmp_path / "obs.db"
    async with running_server(str(db)) as srv:
        hub = srv.obs.hub
        execution = await simulate(Services.over(hub), speed=1000, rng=random.Random(3))
        integrity(db)
        with sqlite3.connect(db) as con:
            rows = con.execute("SELECT data, tool FROM events").fetchall()
        kinds = set()
        for data, tool in rows:  # the typed event and its stored JSON give the same words
            event = decode_stream_event(data)
            kinds.add(event.type)
            assert index_text(event, tool) == index_text_of_json(orjson.loads(data), tool)
        assert {"span:start", "span:end", "tool:end", "messagebus:event"} <= kinds
        found = await search(srv, q="instance", execution=execution)
        assert found["hits"] and all(h["executionId"] == execution for h in found["hits"])
        assert set(await hub.retain(0)) >= {execution}
        assert (await search(srv, q="instance"))["hits"] == []
    integrity(db)
