"""Search and ``pos`` with several nodes on one Redis (SPEC §10, §14; DESIGN.md §6).

Redis 7 has no search module: every node indexes the fan-out stream it reads into a
local SQLite FTS file, so every node answers a search alike. ``pos`` is the fan-out
position, the same on every node: ``since_pos`` resumes ``all`` on any node.
"""

# The fixtures are test_redis_hub's, imported: their names are parameters of the tests.

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from redis_support import RedisServer, hub_of, needs_redis, nodes
from support import TIMEOUT
from test_redis_hub import publish, wire
from trio_obs import ALL, SubscriptionEnded
from trio_obs.core.protocol import SLOW_CONSUMER
from trio_obs.core.routing import Envelope
from trio_obs.core.search import RunFilters, SearchResult, TypedFilters, search_query
from trio_obs.hub.base import Subscription
from trio_obs.hub.redis import RedisHub
from trio_obs.producers import open_redis_observability

pytestmark = needs_redis


def said(execution: str, i: int, summary: str) -> dict[str, Any]:
    return wire("tool:start", execution, i, toolUseId=f"u{i}", tool="Bash", inputSummary=summary)


async def indexed(hub: RedisHub, pos: int) -> None:
    """Wait until ``hub``'s local index holds every event up to ``pos``."""
    with trio.fail_after(TIMEOUT):
        while hub.dispatcher.query_head < pos:  # noqa: ASYNC110 - the index tells no one else
            await trio.sleep(0.01)


def hits(result: SearchResult) -> list[tuple[str, int, int]]:
    return [(h.execution_id, h.seq, h.pos) for h in result.hits]


async def take(sub: Subscription, n: int) -> list[Envelope]:
    got: list[Envelope] = []
    with trio.fail_after(TIMEOUT):
        async for env in sub:
            got.append(env)
            if len(got) == n:
                break
    return got


async def test_every_node_answers_a_search_alike(redis: RedisServer, prefix: str) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        stored = await publish(a, [said("e1", 1, "rm -rf build"), said("e2", 2, "ls build")])
        stored += await publish(b, [said("e1", 3, "npm test")])
        for hub in (a, b):
            await indexed(hub, stored[-1].pos)
        query = search_query("build", filters=TypedFilters(tool="Bash"))
        with trio.fail_after(TIMEOUT):  # each node's copy of the history runs in the background
            while not all([(await hub.search(query)).complete for hub in (a, b)]):  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert hits(await a.search(query)) == hits(await b.search(query))
        assert hits(await b.search(query)) == [("e2", 1, stored[1].pos), ("e1", 1, stored[0].pos)]


async def test_pos_is_the_fan_out_position_and_since_pos_resumes_on_another_node(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        watching, _ = await a.open_subscription(ALL)
        stored = await publish(a, [said(f"e{i % 2}", i, "x") for i in range(6)])
        seen = await take(watching, 3)
        assert [env.pos for env in seen] == [env.pos for env in stored[:3]]
        resumed, resume = await b.open_subscription(ALL, since_pos=seen[-1].pos, epoch=a.epoch)
        assert resume.reset is None
        await publish(b, [said("e9", 9, "live")])
        rest = await take(resumed, 4)
        assert [(env.key, env.seq) for env in rest] == [
            (env.key, env.seq) for env in stored[3:]
        ] + [("e9", 1)]
        assert [env.data for env in rest[:3]] == [env.data for env in stored[3:]]  # same bytes


async def test_an_all_subscriber_behind_reads_the_fan_out_stream(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 1, queue_size=4) as (a,):
        slow, _ = await a.open_subscription(ALL)
        stored = await publish(a, [said("e1", i, "x") for i in range(40)])
        got = await take(slow, 40)
        assert [env.pos for env in got] == [env.pos for env in stored]
        assert slow.end_reason is None


async def test_a_since_pos_the_fan_out_no_longer_holds_is_told(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 1, fanout_maxlen=10) as (a,):
        for i in range(30):
            await publish(a, [said("e1", 10 * i + j, "x") for j in range(10)])
        sub, resume = await a.open_subscription(ALL, since_pos=1, epoch=a.epoch)
        assert resume.reset is not None  # the entries after position 1 were trimmed
        first = await take(sub, 1)
        assert first[0].pos == resume.cursor + 1
        # A subscription catching up from there is ended as a slow consumer, not left a gap.
        with pytest.raises(SubscriptionEnded, match=SLOW_CONSUMER):
            await a.read_positions(after=1, limit=10)


async def test_a_node_started_later_copies_the_history_into_its_index(
    redis: RedisServer, prefix: str, tmp_path: Path
) -> None:
    async with nodes(redis.url, prefix, 1) as (a,):
        await publish(a, [said("e1", i, f"deploy step {i}") for i in range(5)])
        await retain_nothing(a)
        async with open_redis_observability(
            redis.url, prefix=prefix, index=str(tmp_path / "b.db")
        ) as obs:
            b = hub_of(obs)
            with trio.fail_after(TIMEOUT):
                while not (found := await b.search(search_query("deploy"))).complete:  # noqa: ASYNC110
                    await trio.sleep(0.01)  # the copy runs in the background
            assert [h.seq for h in found.hits] == [5, 4, 3, 2, 1]
        # Its file keeps the copy: a restart copies nothing twice, and finds the same.
        async with open_redis_observability(
            redis.url, prefix=prefix, index=str(tmp_path / "b.db")
        ) as obs:
            again = await hub_of(obs).search(search_query("deploy"))
            assert [h.seq for h in again.hits] == [5, 4, 3, 2, 1]


async def retain_nothing(hub: RedisHub) -> None:
    assert await hub.retain(3600) == []


async def test_retention_takes_an_execution_out_of_every_index(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        stored = await publish(a, [said("old", 1, "deploy old"), said("new", 2, "deploy new")])
        for hub in (a, b):
            await indexed(hub, stored[-1].pos)
        await trio.sleep(0.3)
        kept = await publish(a, [said("new", 3, "deploy newer")])
        assert await a.retain(0.2) == ["old"]
        for hub in (a, b):
            await indexed(hub, kept[-1].pos)
            with trio.fail_after(TIMEOUT):
                while "old" in await executions_found(hub, "deploy"):  # noqa: ASYNC110
                    await trio.sleep(0.01)  # told through the fan-out stream
            assert await executions_found(hub, "deploy") == {"new"}


async def executions_found(hub: RedisHub, text: str) -> set[str]:
    return {h.execution_id for h in (await hub.search(search_query(text))).hits}


async def test_every_node_filters_the_execution_list_alike(redis: RedisServer, prefix: str) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        stored = await publish(
            a,
            [
                said("ok", 1, "fine"),
                wire("tool:end", "bad", 2, toolUseId="u", resultStatus="error", durationMs=1),
                wire("agent:heartbeat", "busy", 3, instanceId="instance-9", status="working"),
            ],
        )
        for hub in (a, b):
            await indexed(hub, stored[-1].pos)
            errors = await hub.executions(10, RunFilters(errors=True))
            assert [s.execution_id for s in errors] == ["bad"]
            agent = await hub.executions(10, RunFilters(agent="instance-9"))
            assert [s.execution_id for s in agent] == ["busy"]
            assert len(await hub.executions(10)) == 3
