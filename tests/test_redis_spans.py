"""One start and one end per span on the Redis hub (SPEC §12, CONTRACT B): the publish
script keeps the spans' state with the events, so every node decides alike -- a start
posted to node A and its end to node B are one span -- and a node that restarts, or a
Redis that restarts with its data, carries on where it was. Real ``redis-server``s."""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio

from redis_support import Cluster, RedisServer, needs_redis, nodes
from support import TIMEOUT, ServerProcess
from trio_obs import GLOBAL, open_observability
from trio_obs.core.intake import decode_events
from trio_obs.core.routing import Envelope
from trio_obs.hub.base import Hub

pytestmark = needs_redis


def at(i: int) -> str:
    return f"2026-01-01T00:00:{i:02d}.000Z"


def start(e: str, span: str, i: int, **more: Any) -> dict[str, Any]:
    fields = {"kind": "llm", "name": "chat"} | more
    return {"type": "span:start", "executionId": e, "spanId": span, "timestamp": at(i), **fields}


def end(e: str, span: str, i: int, state: str = "done", **more: Any) -> dict[str, Any]:
    return {"type": "span:end", "executionId": e, "spanId": span, "state": state,
            "timestamp": at(i), **more}  # fmt: skip


def status(e: str, state: str, i: int, **more: Any) -> dict[str, Any]:
    return {"type": "execution:status", "executionId": e, "status": state,
            "timestamp": at(i), **more}  # fmt: skip


async def publish(hub: Hub, *batch: dict[str, Any]) -> list[Envelope]:
    """The envelopes stored (a dropped event is answered by one with no JSON)."""
    return [e for e in await answer(hub, *batch) if e.data]


async def answer(hub: Hub, *batch: dict[str, Any]) -> list[Envelope]:
    return await hub.publish(decode_events(orjson.dumps(list(batch))))


async def stored(hub: Hub, key: str) -> list[dict[str, Any]]:
    return [orjson.loads(j) for j in await hub.read(key, limit=10_000)]


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e.get("status") or e.get("spanId") or "") for e in events]


async def test_a_start_on_one_node_and_its_end_on_another_are_one_span(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix) as (a, b):
        assert len(await publish(a, start("e1", "s1", 1))) == 1
        echo = await answer(b, start("e1", "s1", 1))  # a copy: dropped, answered with seq 1
        assert [(e.seq, e.data, e.event.type) for e in echo] == [(1, b"", "span:start")]
        assert len(await publish(b, end("e1", "s1", 2))) == 1
        late = await answer(a, end("e1", "s1", 2), start("e1", "s1", 3))  # late copies
        assert [(e.seq, e.data) for e in late] == [(2, b""), (1, b"")]
        expected = [("span:start", "s1"), ("span:end", "s1")]
        assert kinds(await stored(a, "e1")) == kinds(await stored(b, "e1")) == expected
        assert [e["seq"] for e in await stored(b, "e1")] == [1, 2]


async def test_a_retried_batch_is_answered_alike_on_the_other_node(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix) as (a, b):
        await publish(a, start("e1", "s1", 1))
        batch = decode_events(orjson.dumps([start("e1", "s1", 1), end("e1", "s1", 2)]))
        first = await a.publish(batch, idempotency_key="k1")
        again = await b.publish(batch, idempotency_key="k1")
        assert [e.seq for e in first] == [e.seq for e in again] == [1, 2]
        assert len(await a.read("e1")) == 2


async def test_copies_within_one_batch_and_a_closing_never_opened(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix) as (a, b):
        tool = {"type": "tool:start", "executionId": "e1", "toolUseId": "u1", "tool": "Bash",
                "inputSummary": "ls", "timestamp": at(1)}  # fmt: skip
        done = {"type": "tool:end", "executionId": "e1", "toolUseId": "u1",
                "resultStatus": "done", "durationMs": 1, "timestamp": at(2)}  # fmt: skip
        envs = await publish(a, tool, tool, end("e1", "s9", 3), done, done)
        assert [(e.event.type, e.seq) for e in envs] == [
            ("tool:start", 1),
            ("span:end", 2),
            ("tool:end", 3),
        ]
        assert envs[2].tool == "Bash"  # the tool its start named, as before
        assert await publish(b, start("e1", "s9", 4)) == []  # a start after its end


async def test_a_lost_closing_is_provisional_until_the_real_one(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix) as (a, b):
        await publish(a, start("e1", "s1", 1), start("e1", "s2", 1))
        assert len(await publish(a, end("e1", "s1", 5, "lost"))) == 1
        assert await publish(b, end("e1", "s1", 6, "lost")) == []  # the watchdog again
        assert len(await publish(b, end("e1", "s1", 7))) == 1  # the real end still counts
        assert await publish(a, end("e1", "s1", 8), end("e1", "s1", 9, "lost")) == []
        await publish(b, end("e1", "s2", 3), end("e1", "s2", 9, "lost"))  # real, then lost
        states = [(e["spanId"], e["state"]) for e in await stored(a, "e1") if "state" in e]
        assert states == [("s1", "lost"), ("s1", "done"), ("s2", "done")]


async def test_the_roots_closing_status_waits_for_the_last_open_span_across_nodes(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix) as (a, b):
        sub, _ = await b.open_subscription(GLOBAL)
        await publish(a, status("e1", "started", 1, spanId="root"), start("e1", "s1", 2))
        assert await publish(b, status("e1", "started", 2, spanId="root")) == []  # once
        await publish(a, start("e1", "s2", 3, parentSpanId="s1"))
        held = await answer(b, status("e1", "completed", 4, spanId="root"))
        assert [(e.seq, e.data) for e in held] == [(3, b"")]  # held: the stream's last seq
        assert (await b.executions())[0].last_status == "started"
        await publish(a, end("e1", "s2", 5))
        assert [e["type"] for e in await stored(b, "e1")][-1] == "span:end"  # still held
        envs = await answer(b, end("e1", "s1", 6), end("e1", "s1", 6))
        assert [(e.seq, e.event.type, bool(e.data)) for e in envs] == [
            (5, "span:end", True),
            (5, "span:end", False),
        ]  # the released status is not an answer to this batch; it is stored after it
        released = (await stored(a, "e1"))[-1]
        assert released["status"] == "completed" and released["seq"] == 6
        assert released["timestamp"] == at(6)  # the closing's, the later of the two
        assert (await a.executions())[0].last_status == "completed"
        copies = []
        with trio.fail_after(TIMEOUT):
            async for env in sub:
                copies.append(env.event.status)  # type: ignore[union-attr]
                if len(copies) == 2:
                    break
        assert copies == ["started", "completed"]
        assert await publish(a, status("e1", "failed", 7, spanId="root")) == []  # ended once


async def test_a_held_failed_status_counts_in_the_errors_on_both_stores(
    redis: RedisServer, prefix: str
) -> None:
    batches = [
        [status("e1", "started", 1, spanId="root"), start("e1", "s1", 2)],
        [status("e1", "failed", 3, spanId="root")],  # held while s1 is open
        [end("e1", "s1", 4)],  # s1 closes: the failed status is stored, and is an error
    ]
    async with open_observability() as single, nodes(redis.url, prefix) as (a, b):
        for i, batch in enumerate(batches):
            await publish(single.hub, *batch)
            await publish((a, b)[i % 2], *batch)
        for store, hub in (("SQLite", single.hub), ("Redis", a), ("Redis", b)):
            (summary,) = await hub.executions()
            assert summary.totals is not None, store
            assert (summary.last_status, summary.totals["errors"]) == ("failed", 1), store


async def test_plan_statuses_without_a_span_id_are_stored_as_sent(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 1) as (a,):
        await publish(a, start("e1", "s1", 1))
        sent = [status("e1", s, i) for i, s in enumerate(["started", "started", "completed"])]
        envs = await publish(a, *sent)
        assert [(e.key, e.event.status) for e in envs] == [  # type: ignore[union-attr]
            ("e1", "started"), (GLOBAL, "started"), ("e1", "started"), (GLOBAL, "started"),
            ("e1", "completed"), (GLOBAL, "completed"),
        ]  # fmt: skip


async def test_the_agent_of_a_span_is_filled_from_its_parent_on_any_node(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix) as (a, b):
        await publish(a, start("e1", "a1", 1, kind="agent", name="orchestrator"))
        tool = {"type": "tool:start", "executionId": "e1", "toolUseId": "u1", "tool": "delegate",
                "inputSummary": "x", "parentSpanId": "a1", "timestamp": at(2)}  # fmt: skip
        envs = await publish(b, tool, start("e1", "a2", 3, kind="agent", name="research",
                                            parentSpanId="u1"))  # fmt: skip
        assert [e.event.agent for e in envs] == ["orchestrator", "research"]
        await publish(a, start("e1", "m1", 4, parentSpanId="a2"), end("e1", "m1", 5),
                      start("e1", "m2", 6, parentSpanId="nobody"),
                      start("e1", "m3", 7, parentSpanId="a1", agent="given"))  # fmt: skip
        events = await stored(b, "e1")
        assert [(e["spanId"] if "spanId" in e else e["toolUseId"], e.get("agent"))
                for e in events] == [
            ("a1", "orchestrator"), ("u1", "orchestrator"), ("a2", "research"),
            ("m1", "research"), ("m1", "research"), ("m2", None), ("m3", "given"),
        ]  # fmt: skip
        assert [e.data for e in envs] == await b.read("e1", after=1, limit=2)


async def test_the_roots_title_names_a_run_no_agent_named_on_every_node(
    redis: RedisServer, prefix: str
) -> None:
    """SPEC §12: a root status's ``name`` (its title) names the run over a top-level span's
    title that came first; an agent's name wins over it."""
    batches = [
        [start("e1", "s2", 1, parentSpanId="s1", name="chat gpt-4o"), end("e1", "s2", 2)],
        [status("e1", "completed", 3, spanId="s1", name="weather job")],
        [start("e2", "s2", 1, parentSpanId="s1", kind="agent", name="forecaster")],
        [status("e2", "started", 0, spanId="s1", name="weather job"), end("e2", "s2", 2)],
    ]
    async with open_observability() as single, nodes(redis.url, prefix) as (a, b):
        for i, batch in enumerate(batches):
            await publish(single.hub, *batch)
            await publish((a, b)[i % 2], *batch)
        for hub in (single.hub, a, b):
            names = {s.execution_id: s.name for s in await hub.executions()}
            assert names == {"e1": "weather job", "e2": "forecaster"}


async def test_a_restarted_node_and_a_restarted_redis_keep_the_spans(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    try:
        async with nodes(server.url, n=1) as (a,):
            await publish(a, status("e1", "started", 1, spanId="r"), start("e1", "s1", 2))
            await publish(a, status("e1", "completed", 3, spanId="r"))  # held
        async with nodes(server.url, n=1) as (a,):  # a new node: nothing in its memory
            assert await publish(a, start("e1", "s1", 2)) == []
        server.restart()  # its data kept (AOF)
        async with nodes(server.url, n=1) as (a,):
            await publish(a, end("e1", "s1", 4))
            assert [e["type"] for e in await stored(a, "e1")][-2:] == [
                "span:end", "execution:status"
            ]  # fmt: skip
            assert await publish(a, end("e1", "s1", 4)) == []
    finally:
        server.stop()


async def test_the_span_records_of_the_earlier_scripts_are_read_after_an_upgrade(
    redis: RedisServer, prefix: str
) -> None:
    """A store the earlier publish scripts wrote -- a hash field per fact and span: tool uses
    ``t<id>``/``T<id>`` and skills ``K<id>``; later ``k n T g m O C X`` -- is read by this
    one, its records made ``r<id>`` the first time a batch touches their execution."""
    tool = {"type": "tool:start", "executionId": "e1", "toolUseId": "u1", "tool": "Bash",
            "inputSummary": "ls", "taskId": "t1", "timestamp": at(1)}  # fmt: skip
    skill = {"type": "skill:start", "executionId": "e1", "skillTraceId": "k1", "skillName": "k",
             "skillFile": "f", "lineNumber": 1, "taskId": "t2", "timestamp": at(2)}  # fmt: skip
    async with nodes(redis.url, prefix, 1) as (a,):  # the events, as any version stored them
        await publish(a, tool, skill)
        await publish(a, start("e2", "a1", 1, kind="agent", name="planner"),
                      start("e2", "m1", 2, parentSpanId="a1", model="gpt-4o"))  # fmt: skip
    # The spans as the earlier scripts kept them, and the counters the first one kept.
    s1, s2, c1 = f"{prefix}s:e1", f"{prefix}s:e2", f"{prefix}c:e1"
    redis.call("DEL", s1, s2)
    redis.call("HSET", s1, "tu1", "Bash", "Tu1", "=t1", "Kk1", "=t2")  # "=": a value
    redis.call("HSET", s2, "ka1", "agent", "ga1", '"planner"', "Oa1", "1", "km1", "llm",
               "gm1", '"planner"', "mm1", "gpt-4o", "Om1", "2", "Xm1", "")  # fmt: skip
    for field in redis.call("HKEYS", c1).split():
        if field not in ("seq", "n", "first", "last", "status", "at", "ap"):
            redis.call("HDEL", c1, field)
    redis.call("HDEL", f"{prefix}c:e2", "sv")
    async with nodes(redis.url, prefix, 1) as (a,):  # this version
        output = {"type": "tool:output", "executionId": "e1", "toolUseId": "u1", "chunk": "x",
                  "timestamp": at(3)}  # fmt: skip
        done = {"type": "tool:end", "executionId": "e1", "toolUseId": "u1",
                "resultStatus": "done", "durationMs": 1, "timestamp": at(4)}  # fmt: skip
        ended = {"type": "skill:end", "executionId": "e1", "skillTraceId": "k1",
                 "skillName": "k", "status": "success", "durationMs": 1,
                 "timestamp": at(5)}  # fmt: skip
        envs = await publish(a, output, done, ended)
        assert [(e.tool, e.task_id) for e in envs] == [
            ("Bash", "t1"), ("Bash", "t1"), (None, "t2"),
        ]  # fmt: skip
        copy = start("e2", "m1", 2, parentSpanId="a1")  # dropped: answered with its seq
        envs = await answer(a, copy, end("e2", "m1", 3), start("e2", "t9", 4, parentSpanId="a1"))
        assert [(e.seq, bool(e.data), e.event.agent) for e in envs] == [
            (2, False, None), (3, True, "planner"), (4, True, "planner"),
        ]  # fmt: skip
        assert await publish(a, end("e2", "m1", 5)) == []  # ended once
    assert sorted(redis.call("HKEYS", s1).split()) == ["rk1", "ru1"]  # made records, once
    assert sorted(redis.call("HKEYS", s2).split()) == ["ra1", "rm1", "rt9"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    found = Cluster(tmp_path_factory.mktemp("cluster"))
    yield found
    found.stop()


@pytest.mark.parametrize("with_global", [True, False])
async def test_on_a_redis_cluster_two_nodes_decide_alike(
    cluster: Cluster, with_global: bool
) -> None:
    async with nodes(cluster.url) as (a, b):
        e = f"x-{uuid.uuid4().hex[:8]}"
        while (a.layout.of(e) == a.layout.of(GLOBAL)) != with_global:  # `global`'s slot or not
            e = f"x-{uuid.uuid4().hex[:8]}"
        await publish(a, status(e, "started", 1, spanId="r"), start(e, "s1", 2, kind="agent",
                                                                  name="boss"))  # fmt: skip
        assert await publish(b, start(e, "s1", 2)) == []
        assert await publish(b, status(e, "completed", 3, spanId="r")) == []
        envs = await publish(b, start(e, "m1", 4, parentSpanId="s1"), end(e, "m1", 5))
        assert [x.event.agent for x in envs] == ["boss", "boss"]
        envs = await publish(b, end(e, "s1", 6))
        assert [(x.key, x.event.type) for x in envs] == [(e, "span:end")]
        assert kinds(await stored(a, e)) == [
            ("execution:status", "started"), ("span:start", "s1"), ("span:start", "m1"),
            ("span:end", "m1"), ("span:end", "s1"), ("execution:status", "completed"),
        ]  # fmt: skip
        copies = [x for x in await stored(a, GLOBAL) if x["executionId"] == e]
        assert [x["status"] for x in copies] == ["started", "completed"]


# --------------------------------------------------------------------------- same as the ledger


def span_scenario(rnd: random.Random) -> list[list[dict[str, Any]]]:
    """Batches of spans arriving in any order, copied, retried, lost, child-first, with
    agents, tools, model calls and the root's statuses: what the ledger decides, the
    script must decide alike."""
    batches: list[list[dict[str, Any]]] = [[]]
    ids = [f"s{k}" for k in range(30)]
    kinds_ = ["agent", "llm", "span", "tool"]
    for i in range(300):
        e = rnd.choice(["e1", "e2", "e3"])
        span, parent = rnd.choice(ids), rnd.choice([*ids, None, None])
        more: dict[str, Any] = {"parentSpanId": parent} if parent else {}
        if rnd.random() < 0.2:
            more["agent"] = rnd.choice(["given", "other"])
        pick = rnd.randrange(12)
        if pick < 3:
            kind = rnd.choice(kinds_)
            event = start(e, span, i % 60, kind=kind, name=f"{kind}-{span}", **more)
            if kind == "llm":
                event |= {"model": rnd.choice(["gpt-4o", "m2"]), "conversationId": "c1"}
        elif pick < 6:
            state = rnd.choice(["done", "error", "lost", "lost"])
            event = end(e, span, i % 60, state, **more)
            if rnd.random() < 0.5:
                event |= {"kind": rnd.choice(kinds_), "usage": {"inputTokens": i,
                          "outputTokens": 2 * i}, "model": rnd.choice(["gpt-4o", ""])}  # fmt: skip
        elif pick == 6:
            tool = "tool:start" if rnd.random() < 0.5 else "tool:end"
            event = {"type": tool, "executionId": e, "toolUseId": span, "timestamp": at(i % 60),
                     **more}  # fmt: skip
            if tool == "tool:start":
                event |= {"tool": "Bash", "inputSummary": "x", "taskId": rnd.choice(["t1", None])}
            else:
                event |= {"resultStatus": "done", "durationMs": 1}
        elif pick == 7:
            event = {"type": "tool:output", "executionId": e, "toolUseId": span, "chunk": "o",
                     "timestamp": at(i % 60), **more}  # fmt: skip
        elif pick == 8:
            state = rnd.choice(["started", "completed", "failed", "running"])
            root = {"spanId": "root"} if rnd.random() < 0.8 else {}
            event = status(e, state, i % 60, **root, **({"agent": "boss"} if rnd.random() < 0.2
                                                       else {}))  # fmt: skip
            if rnd.random() < 0.5:  # the root span's title: names the run if no agent does
                event["name"] = rnd.choice(["job", "GET /x"])
        elif pick == 9:
            event = {"type": "agent:heartbeat", "executionId": e, "instanceId": "i",
                     "status": rnd.choice(["idle", "error"]), "timestamp": at(i % 60),
                     **more, **({"spanId": span} if rnd.random() < 0.5 else {})}  # fmt: skip
        elif pick == 10:
            kind = rnd.choice(["skill:start", "skill:end"])
            event = {"type": kind, "executionId": e, "skillTraceId": span, "skillName": "k",
                     "timestamp": at(i % 60), **more}  # fmt: skip
            if kind == "skill:start":
                event |= {"skillFile": "f", "lineNumber": 1, "taskId": rnd.choice(["t2", None])}
            else:
                event |= {"status": rnd.choice(["success", "failed"]), "durationMs": 1}
        else:
            entry = {"id": f"t{i}", "timestamp": at(0), "sequence": i, "executionId": e,
                     "instanceId": "i", "entryType": rnd.choice(["error", "note"]),
                     "category": "c", "summary": "s"}  # fmt: skip
            event = {"type": "transcript:entry", "executionId": e, "entry": entry,
                     "timestamp": at(i % 60), "spanId": span, **more}  # fmt: skip
        batches[-1].append(event)
        if len(batches[-1]) >= rnd.randint(1, 5):
            batches.append([])
    return [b for b in batches if b]


def outcome(envs: list[Envelope]) -> list[tuple[Any, ...]]:
    return [(e.key, e.seq, e.data, e.task_id, e.tool, e.is_copy, e.topic, e.event) for e in envs]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_script_decides_what_the_ledger_decides(
    redis: RedisServer, prefix: str, seed: int
) -> None:
    async with open_observability() as single, nodes(redis.url, prefix) as (a, b):
        for i, batch in enumerate(span_scenario(random.Random(seed))):
            local = outcome(await answer(single.hub, *batch))
            assert outcome(await answer((a, b)[i % 2], *batch)) == local, f"batch {i}: {batch}"
            # the summaries too, as they go (a later agent would hide a name decided apart)
            assert await a.executions() == await single.hub.executions(), f"batch {i}"
        for key in ["e1", "e2", "e3", GLOBAL]:
            expected = await single.hub.read(key, limit=10_000)
            assert await a.read(key, limit=10_000) == expected, key
        assert await a.executions() == await b.executions() == await single.hub.executions()


def unpositioned(found: Any) -> Any:
    """``found`` without global positions (a cluster's ``all`` has none: README)."""
    if isinstance(found, bytes):
        return re.sub(rb',"pos":\d+', b"", found)
    if isinstance(found, list | tuple):
        return type(found)(unpositioned(x) for x in found)
    if attrs.has(type(found)) and hasattr(found, "pos"):
        return attrs.evolve(found, pos=None)
    return found


async def test_on_a_redis_cluster_the_script_decides_what_the_ledger_decides(
    cluster: Cluster,
) -> None:
    """The same on a Cluster, but for the ``global`` copies of the statuses the script
    decides: written after their batch (``global`` lives in another slot), so their order
    in ``global`` may differ."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    async with open_observability() as single, nodes(cluster.url, prefix) as (a, b):
        assert len({a.layout.of(k) for k in ["e1", "e2", "e3"]}) > 1
        for i, batch in enumerate(span_scenario(random.Random(7))):
            local = [x for x in outcome(await answer(single.hub, *batch)) if not x[5]]
            got = [x for x in outcome(await answer((a, b)[i % 2], *batch)) if not x[5]]
            assert got == unpositioned(local), f"batch {i}: {batch}"
        for key in ["e1", "e2", "e3"]:
            expected = unpositioned(await single.hub.read(key, limit=10_000))
            assert await b.read(key, limit=10_000) == expected, key

        def statuses(found: list[bytes]) -> list[tuple[str, str, str]]:
            return sorted(
                (e["executionId"], e["status"], e["timestamp"]) for e in map(orjson.loads, found)
            )

        assert statuses(await a.read(GLOBAL, limit=10_000)) == statuses(
            await single.hub.read(GLOBAL, limit=10_000)
        )
        listing = await single.hub.executions()
        assert sorted(await a.executions(), key=str) == sorted(listing, key=str)


# --------------------------------------------------------------------------- as users run it


async def test_two_serve_processes_give_one_tree_and_one_summary(redis: RedisServer) -> None:
    """``trio-obs serve --redis``: a run posted half to one node, half to the other, is one
    tree and one summary on both (SPEC §12, the cluster part of issue 21)."""
    e = f"x-{uuid.uuid4().hex[:8]}"
    nodes_ = [ServerProcess("--redis", redis.url) for _ in range(2)]
    a, b = nodes_
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:

            async def post(node: ServerProcess, *batch: dict[str, Any]) -> list[int]:
                answer = await http.post(node.url("/api/events"), content=orjson.dumps(batch),
                                         headers={"content-type": "application/json"})  # fmt: skip
                assert answer.status_code == 202, answer.text
                seqs: list[int] = answer.json()["seqs"]
                return seqs

            boss = start(e, "a1", 1, kind="agent", name="orchestrator", parentSpanId="root")
            llm = start(e, "m1", 2, parentSpanId="a1", model="gpt-4o", conversationId="c9")
            assert await post(a, status(e, "started", 0, spanId="root"), boss, llm) == [1, 2, 3]
            assert await post(b, boss, llm) == [2, 3]  # an exporter's copies: one span each
            usage = {"inputTokens": 1000, "outputTokens": 100}
            await post(b, end(e, "m1", 3, model="gpt-4o", usage=usage, kind="llm"))
            assert await post(a, status(e, "completed", 5, spanId="root")) == [4]  # held
            await post(b, end(e, "a1", 4, kind="agent"))
            for node in nodes_:
                [run] = [r for r in (await http.get(node.url("/api/executions"))).json()
                         if r["executionId"] == e]  # fmt: skip
                assert (run["name"], run["agents"], run["conversationId"], run["state"]) == (
                    "orchestrator",
                    ["orchestrator"],
                    "c9",
                    "completed",
                )
                totals = run["totals"]
                assert (totals["modelCalls"], totals["inputTokens"], totals["outputTokens"]) == (
                    1,
                    1000,
                    100,
                )
                assert totals["cost"] == pytest.approx(1000 * 2.5e-6 + 100 * 10e-6)
                tree = (await http.get(node.url(f"/api/executions/{e}/tree"))).json()
                spans = {s["spanId"]: s for s in tree["spans"]}
                assert (tree["state"], tree["seq"], len(spans)) == ("done", 6, 3)
                assert (spans["a1"]["state"], spans["m1"]["state"]) == ("done", "done")
                assert spans["m1"]["agent"] == "orchestrator"
    finally:
        for node in nodes_:
            node.stop()
        for node in nodes_:
            assert "Traceback" not in "".join(node.stderr), node.stderr


def otlp(*spans: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]})


def otlp_span(trace: str, span: str, parent: str | None, start_ms: int, end_ms: int,
              **attributes: str) -> dict[str, Any]:  # fmt: skip
    return {
        "traceId": trace, "spanId": span, "name": attributes.get("gen_ai.operation.name", "x"),
        "kind": 1, **({"parentSpanId": parent} if parent else {}),
        "startTimeUnixNano": str(1_700_000_000_000_000_000 + start_ms * 1_000_000),
        "endTimeUnixNano": str(1_700_000_000_000_000_000 + end_ms * 1_000_000),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()],
    }  # fmt: skip


async def test_an_agent_calling_an_agent_exported_child_first_to_two_nodes(
    redis: RedisServer,
) -> None:
    """OTLP: the sub-agent's spans to one node, the tool that ran it to the other, the root
    last, one request sent twice: one execution, each span once, completed once at the end."""
    trace = uuid.uuid4().hex
    root = otlp_span(trace, "a" * 16, None, 0, 90, **{"gen_ai.operation.name": "invoke_agent",
                     "gen_ai.agent.name": "orchestrator"})  # fmt: skip
    tool = otlp_span(trace, "b" * 16, "a" * 16, 10, 80, **{"gen_ai.operation.name": "execute_tool",
                     "gen_ai.tool.name": "delegate_research"})  # fmt: skip
    sub = otlp_span(trace, "c" * 16, "b" * 16, 20, 70, **{"gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": "research_agent"})  # fmt: skip
    nodes_ = [ServerProcess("--redis", redis.url) for _ in range(2)]
    a, b = nodes_
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
            for node, body in [(a, otlp(sub)), (b, otlp(tool)), (a, otlp(tool)), (b, otlp(root))]:
                answer = await http.post(node.url("/v1/traces"), content=body,
                                         headers={"content-type": "application/json"})  # fmt: skip
                assert answer.status_code == 200, answer.text
            for node in nodes_:
                events = (await http.get(node.url(f"/api/executions/{trace}/events"))).json()
                shapes = [(e["type"], e.get("status") or e.get("spanId") or e.get("toolUseId"))
                          for e in events]  # fmt: skip
                assert shapes.count(("execution:status", "started")) == 1, shapes
                assert shapes.count(("execution:status", "completed")) == 1, shapes
                assert shapes[0] == ("execution:status", "started")
                assert shapes[-1] == ("execution:status", "completed")
                assert sorted(shapes[1:-1]) == sorted(set(shapes[1:-1])), shapes  # each once
                [run] = [r for r in (await http.get(node.url("/api/executions"))).json()
                         if r["executionId"] == trace]  # fmt: skip
                assert (run["name"], run["state"]) == ("orchestrator", "completed")
                assert set(run["agents"]) == {"orchestrator", "research_agent"}
    finally:
        for node in nodes_:
            node.stop()
        for node in nodes_:
            assert "Traceback" not in "".join(node.stderr), node.stderr
