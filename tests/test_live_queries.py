"""Live queries (SPEC §14): a search that stays open on an ``all`` connection.

``subscribe`` with ``filters.q`` (or ``q=`` in the handshake) pushes each new matching
event as it is stored; with ``since_pos`` it first sends the stored matches after that
position, then goes on live, with no gap and no duplicate.
"""

from __future__ import annotations

from typing import Any

import orjson
import trio
from trio_websocket import WebSocketConnection

from support import TIMEOUT, running_server, ws_client
from test_search import transcript


def ended(execution: str, use: str, status: str) -> dict[str, Any]:
    return {"type": "tool:end", "executionId": execution, "toolUseId": use,
            "resultStatus": status, "durationMs": 5,
            "outputSummary": f"deploy {status}"}  # fmt: skip


async def messages(ws: WebSocketConnection, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT):
        while len(out) < n:
            out.append(orjson.loads(await ws.get_message()))
    return out


async def events(ws: WebSocketConnection, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        out += [m for m in await messages(ws, 1) if not m["type"].startswith("observability:")]
    return out


async def test_a_live_query_pushes_each_new_match_as_it_is_stored() -> None:
    async with running_server() as srv, ws_client(srv.ws_url("all")) as ws:
        await ws.send_message(
            orjson.dumps(
                {"action": "subscribe", "topic": "all", "filters": {"q": "deploy"}}
            ).decode()
        )
        assert (await messages(ws, 1))[0]["type"] == "observability:subscribed"
        batch = [
            transcript("e1", "lunch", 1),
            transcript("e2", "deploy started", 1),
            transcript("e1", "tea", 2),
        ]
        await srv.http.post("/api/events", json=batch)
        await srv.http.post("/api/events", json=[ended("e3", "u1", "error")])
        got = await events(ws, 2)
        assert [(e["executionId"], e["type"]) for e in got] == [
            ("e2", "transcript:entry"),
            ("e3", "tool:end"),
        ]
        # Clearing the query: everything again, from the next event on.
        await ws.send_message(
            orjson.dumps({"action": "subscribe", "topic": "all", "filters": {"q": None}}).decode()
        )
        assert (await messages(ws, 1))[0]["type"] == "observability:subscribed"
        await srv.http.post("/api/events", json=[transcript("e1", "coffee", 3)])
        assert (await events(ws, 1))[0]["entry"]["summary"] == "coffee"


async def test_a_live_query_with_typed_filters_resumes_with_since_pos() -> None:
    async with running_server() as srv:
        await srv.http.post("/api/events", json=[ended("e1", "u0", "error")])
        async with ws_client(srv.ws_url("all", q="deploy", state="error")) as ws:
            await srv.http.post(
                "/api/events", json=[ended("e1", "u1", "done"), ended("e1", "u2", "error")]
            )
            first = await events(ws, 1)
        assert first[0]["toolUseId"] == "u2"
        last = first[0]["pos"]
        # While away: matches and non-matches, in several executions.
        await srv.http.post(
            "/api/events",
            json=[ended(f"e{i % 3}", f"v{i}", "error" if i % 2 else "done") for i in range(8)],
        )
        epoch = (await srv.http.get("/api/health")).json()["epoch"]
        url = srv.ws_url("all", q="deploy", state="error", since_pos=last, epoch=epoch)
        async with ws_client(url) as ws:
            await srv.http.post("/api/events", json=[ended("e9", "w", "error")])
            resumed = await events(ws, 5)
        assert [e["toolUseId"] for e in resumed] == ["v1", "v3", "v5", "v7", "w"]
        positions = [e["pos"] for e in resumed]
        assert positions == sorted(positions) and positions[0] > last


async def test_typed_filters_on_all_work_without_a_query() -> None:
    async with running_server() as srv, ws_client(srv.ws_url("all", type="tool:end")) as ws:
        await srv.http.post(
            "/api/events", json=[transcript("e1", "deploy", 1), ended("e1", "u1", "done")]
        )
        assert [e["type"] for e in await events(ws, 1)] == ["tool:end"]


async def test_a_bad_live_query_is_refused_and_the_connection_stays_open() -> None:
    async with running_server() as srv:
        async with ws_client(srv.ws_url("all")) as ws:
            await ws.send_message(
                orjson.dumps(
                    {"action": "subscribe", "topic": "all", "filters": {"q": "a AND"}}
                ).decode()
            )
            error = (await messages(ws, 1))[0]
            assert error["type"] == "observability:error" and error["code"] == "INVALID_FILTER"
            assert "AND needs words on both sides" in error["error"]
            await ws.send_message('{"type": "ping"}')
            assert (await messages(ws, 1))[0]["type"] == "pong"
        async with ws_client(srv.ws_url("e1")) as ws:
            await ws.send_message(
                orjson.dumps(
                    {"action": "subscribe", "topic": "all", "filters": {"q": "x"}}
                ).decode()
            )
            error = (await messages(ws, 1))[0]
            assert error["code"] == "INVALID_FILTER" and "'all' connection" in error["error"]
        answer = await srv.http.get("/ws", params={"observability": "all", "q": '"open'})
        assert answer.status_code in (400, 426)
