"""The Redis hub in process, on a real ``redis-server``: several hubs in one process are
several nodes of one server (SPEC §10). Same rules as the SQLite ledger, exactly-once
fan-out between nodes, exact seams on any node, faults of Redis and of the network."""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from redis_support import RedisServer, Relay, needs_redis, nodes
from support import T0, TIMEOUT
from trio_obs import (
    ALL,
    GLOBAL,
    InvalidInput,
    StoreError,
    SubscriptionEnded,
    UncertainOutcome,
    open_observability,
)
from trio_obs.core import events as ev
from trio_obs.core.intake import decode_events
from trio_obs.core.protocol import SLOW_CONSUMER
from trio_obs.core.routing import Envelope
from trio_obs.hub.base import Hub, Subscription
from trio_obs.hub.redis import RedisHub
from trio_obs.hub.redis_reader import RESTARTED
from trio_obs.producers import open_redis_observability

pytestmark = needs_redis

QUICK = 5.0
"""Redis's timeout where a test wants a quick answer while it is down (with 0.5 s, and
once with 2 s at load 12, a node failed to connect at all on a loaded machine)."""


def wire(kind: str, e: str, i: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "executionId": e, "timestamp": f"2026-01-01T00:{i // 60:02d}:"
            f"{i % 60:02d}.000Z", **fields}  # fmt: skip


def beats(e: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [wire("agent:heartbeat", e, start + i, instanceId=f"i{i}", status="idle")
            for i in range(n)]  # fmt: skip


async def publish(hub: Hub, batch: list[dict[str, Any]], **kw: Any) -> list[Envelope]:
    return await hub.publish(decode_events(_json(batch)), **kw)


def _json(batch: list[dict[str, Any]]) -> bytes:
    import orjson

    return orjson.dumps(batch)


async def seqs_until(sub: Subscription, last: int, key: str | None = None) -> list[int]:
    """The seqs ``sub`` yields (of ``key``, for ``all``) until seq ``last`` of that key."""
    got: list[int] = []
    with trio.fail_after(TIMEOUT):
        async for env in sub:
            if key is None or env.key == key:
                got.append(env.seq)
                if env.seq >= last:
                    return got
    return got


# --------------------------------------------------------------------------- the ledger's rules


def scenario(rnd: random.Random) -> list[list[dict[str, Any]]]:
    """Batches that exercise every history rule, and one the ledger must refuse."""

    def assertion(e: str, i: int, result: str) -> dict[str, Any]:
        record = {"id": f"a{i}", "taskId": "t1", "executionId": e, "category": "tests",
                  "description": "d", "result": result, "timestamp": T0,
                  "evidence": {"runningPassRate": 9}}  # fmt: skip
        return wire("assertion:result", e, i, taskId="t1", assertion=record)

    def bus(e: str | None, i: int, severity: str) -> dict[str, Any]:
        entry = {"id": f"m{i}", "eventId": "x", "timestamp": T0, "source": "s",
                 "eventType": "t", "humanSummary": "h", "severity": severity,
                 "category": "c", "createdAt": T0, "executionId": e}  # fmt: skip
        return {
            "type": "messagebus:event",
            "entry": entry,
            "timestamp": f"2026-02-01T00:00:{i % 60:02d}Z",
        }

    def tool(kind: str, e: str, i: int, tu: str, **more: Any) -> dict[str, Any]:
        return wire(kind, e, i, toolUseId=tu, **more)

    start = {"tool": "Bash", "inputSummary": "ls", "taskId": "t1"}
    end = {"resultStatus": "error", "durationMs": 5}
    batches = [
        [wire("execution:status", "e1", 1, status="started"),
         tool("tool:start", "e1", 2, "u1", **start),
         tool("tool:output", "e1", 3, "u1", chunk="out")],
        [tool("tool:end", "e1", 4, "u1", **end), tool("tool:output", "e1", 5, "nobody", chunk="?"),
         assertion("e1", 6, "pass")],
        [assertion("e1", 7, "fail"), assertion("e1", 8, "skip"),
         wire("skill:start", "e1", 9, skillTraceId="s1", skillName="k", skillFile="f",
              lineNumber=1, taskId="t2"),
         wire("skill:end", "e1", 10, skillTraceId="s1", skillName="k", status="success",
              durationMs=1),
         wire("skill:end", "e1", 11, skillTraceId="s9", skillName="k", status="failed",
              durationMs=1)],
        [bus(None, 12, "info"), bus("e2", 13, "error"),
         wire("execution:status", "e2", 14, status="running")],
        [tool("tool:start", "e2", 15, "u1", tool="Read", inputSummary="f"),
         tool("tool:end", "e2", 16, "u1", resultStatus="done", durationMs=1)],
        [wire("execution:status", "e3", 17, status="started"),
         tool("tool:start", ALL, 18, "u2", **start)],  # refused: nothing of it is stored
        [wire("transcript:entry", "e3", 19, entry={
            "id": "t", "timestamp": T0, "sequence": 1, "executionId": "e3", "instanceId": "i",
            "entryType": "phase_start", "category": "c", "summary": "s", "taskId": "t3"}),
         wire("wave:status", "e3", 20, waveNumber=1, status="running", taskCount=2,
              completedCount=0, failedCount=0),
         wire("agent:heartbeat", "e3", 21, instanceId="i", status="working", currentTaskId="t3"),
         wire("execution:status", "e1", 22, status="completed", message="done")],
    ]  # fmt: skip
    tools = [f"u{k}" for k in range(4)]
    for i in range(23, 263):
        e = rnd.choice(["e1", "e2", "e3", "e4"])
        pick = rnd.randrange(7)
        if pick == 0:
            event = tool("tool:start", e, i, rnd.choice(tools), tool=rnd.choice("ABC"),
                         inputSummary="x", taskId=rnd.choice(["t1", "t2", None]))  # fmt: skip
        elif pick == 1:
            event = tool("tool:end", e, i, rnd.choice(tools), **end)
        elif pick == 2:
            event = tool("tool:output", e, i, rnd.choice(tools), chunk=str(i))
        elif pick == 3:
            event = assertion(e, i, rnd.choice(["pass", "fail", "warn"]))
        elif pick == 4:
            event = wire("execution:status", e, i, status=rnd.choice(["running", "paused"]))
        elif pick == 5:
            event = bus(rnd.choice([e, None]), i, rnd.choice(["debug", "critical"]))
        else:
            event = wire("agent:heartbeat", e, i, instanceId="i", status="idle")
        if not batches[-1] or len(batches[-1]) >= rnd.randint(1, 6):
            batches.append([])
        batches[-1].append(event)
    return batches


def outcome(envs: Sequence[Envelope]) -> list[tuple[Any, ...]]:
    return [(e.key, e.seq, e.data, e.task_id, e.tool, e.is_copy, e.topic, e.event) for e in envs]


async def test_the_history_rules_give_what_the_single_node_ledger_gives(
    redis: RedisServer, prefix: str
) -> None:
    batches = scenario(random.Random(2026))
    async with open_observability() as single, nodes(redis.url, prefix, 2) as (a, b):
        for i, batch in enumerate(batches):
            results: list[Any] = []
            for hub in (single.hub, (a, b)[i % 2]):  # the Redis side alternates between nodes
                try:
                    results.append(outcome(await publish(hub, batch)))
                except InvalidInput as exc:
                    results.append(str(exc))
            assert results[1] == results[0], f"batch {i}"
        for key in ["e1", "e2", "e3", "e4", GLOBAL]:
            stored = await single.hub.read(key, limit=10_000)
            assert len(stored) > 3
            assert await a.read(key, limit=10_000) == stored, key
            assert await b.read(key, limit=10_000) == stored, key
        listing = await single.hub.executions()
        assert len(listing) == 4
        assert await a.executions() == await b.executions() == listing
        assert await b.executions(2) == listing[:2]


# --------------------------------------------------------------------------- fan-out


async def test_each_node_delivers_every_event_exactly_once_in_order(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 3) as hubs:
        subs = [await h.open_subscription(s) for h in hubs for s in ("e1", GLOBAL, ALL)]
        for i in range(30):
            batch = [*beats("e1", 2, 2 * i), wire("execution:status", "e1", i, status="running")]
            await publish(hubs[i % 3], batch)
        for sub, _ in subs:
            if sub.stream == "e1":
                assert await seqs_until(sub, 90) == list(range(1, 91))
            elif sub.stream == GLOBAL:
                assert await seqs_until(sub, 30) == list(range(1, 31))
            else:  # `all`: every event once, originals only
                assert await seqs_until(sub, 90, "e1") == list(range(1, 91))
                assert sub.take_nowait() == []


async def test_every_node_serves_the_same_bytes(redis: RedisServer, prefix: str) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        sub, _ = await b.open_subscription("e1")
        posted = await publish(
            a, [*beats("e1", 3), wire("execution:status", "e1", 9, status="failed")]
        )
        received = []
        with trio.fail_after(TIMEOUT):
            async for env in sub:
                received.append(env.data)
                if env.seq == 4:
                    break
        originals = [e.data for e in posted if not e.is_copy]
        assert received == originals == await b.read("e1") == await a.read("e1")


async def test_replay_meets_live_exactly_on_a_node_that_never_saw_the_posts(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 1) as (a,):
        for i in range(10):
            await publish(a, beats("e1", 5, 5 * i))

        async def keep_posting() -> None:
            for i in range(10, 20):
                await publish(a, beats("e1", 5, 5 * i))
                await trio.lowlevel.checkpoint()

        async with nodes(redis.url, prefix, 1) as (b,), trio.open_nursery() as nursery:
            nursery.start_soon(keep_posting)
            since_sub, resume = await b.open_subscription("e1", since=20)
            last_sub, _ = await b.open_subscription("e1")  # the last 100 (the buffer), then live
            assert resume.reset is None
            assert await seqs_until(since_sub, 100) == list(range(21, 101))
            got = await seqs_until(last_sub, 100)
            assert got == list(range(got[0], 101))


async def test_concurrent_producers_on_two_nodes_get_seqs_without_gap_or_duplicate(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 2) as hubs:
        subs = [(await h.open_subscription("e1"))[0] for h in hubs]
        batches: list[list[int]] = []

        async def producer(hub: RedisHub, k: int) -> None:
            for i in range(15):
                envs = await publish(hub, beats("e1", 3, 100 * k + 3 * i))
                batches.append([e.seq for e in envs])

        async with trio.open_nursery() as nursery:
            for k in range(8):
                nursery.start_soon(producer, hubs[k % 2], k)
        assert sorted(s for b in batches for s in b) == list(range(1, 361))
        assert all(b == list(range(b[0], b[0] + 3)) for b in batches)  # a batch is contiguous
        for sub in subs:
            assert await seqs_until(sub, 360) == list(range(1, 361))


async def test_an_idempotency_key_is_answered_again_on_any_node(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        batch = [*beats("e1", 2), wire("execution:status", "e1", 3, status="started")]
        first = await publish(a, batch, idempotency_key="retry-me")
        again = await publish(b, beats("e1", 1), idempotency_key="retry-me")
        assert outcome(again) == outcome([e for e in first if not e.is_copy])
        assert [e.seq for e in await publish(b, beats("e1", 1))] == [4]
        assert len(await a.read("e1")) == 4


async def test_an_invalid_batch_stores_nothing_anywhere(redis: RedisServer, prefix: str) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        with pytest.raises(InvalidInput, match="event 1"):
            await publish(a, [beats("e1", 1)[0], wire("tool:start", GLOBAL, 1, toolUseId="u",
                                                        tool="t", inputSummary="i")])  # fmt: skip
        entry = ev.TranscriptEntry(
            id="t", timestamp="x", sequence=2**70, execution_id="e1", instance_id="i",
            entry_type="x", category="c", summary="s",
        )  # fmt: skip
        unencodable = ev.TranscriptEntryEvent(execution_id="e1", entry=entry)
        with pytest.raises(InvalidInput, match="cannot be stored"):
            await b.publish([*decode_events(_json(beats("e1", 1))), unencodable])
        assert await a.read("e1") == await b.read("e1") == []
        assert await b.executions() == []
        assert [e.seq for e in await publish(b, beats("e1", 1))] == [1]


# --------------------------------------------------------------------------- faults


async def test_redis_down_refuses_posts_and_back_it_goes_on_where_it_was(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trio_obs")
    async with nodes(own_redis.url, prefix, 2, redis_timeout=QUICK) as (a, b):
        sub, _ = await b.open_subscription("e1")
        await publish(a, beats("e1", 2))
        epoch = a.epoch
        own_redis.stop()
        with trio.fail_after(4 * QUICK):  # a bounded refusal: a few Redis timeouts at most
            # On a connection Redis dropped, whether a batch ran is not known (a 504 says
            # so); once there is no connection, nothing was stored (a 503 says so).
            with pytest.raises(StoreError):
                await publish(a, beats("e1", 1))
            with pytest.raises(StoreError, match="could not store the events") as refused:
                await publish(a, beats("e1", 1))
            assert not isinstance(refused.value, UncertainOutcome)
            assert await a.problem() is not None

        def outages() -> int:
            return sum("fan-out reader retries" in r.getMessage() for r in caplog.records)

        with trio.fail_after(TIMEOUT):  # both readers notice (and say so) before it is back
            while outages() < 2:  # noqa: ASYNC110 - the log is all there is to wait on
                await trio.sleep(0.05)
        own_redis.start()
        with trio.fail_after(TIMEOUT):
            while await a.problem() is not None:  # noqa: ASYNC110 - nothing to await but Redis
                await trio.sleep(0.05)
        assert [e.seq for e in await publish(a, beats("e1", 1, 2))] == [3]
        assert await seqs_until(sub, 3) == [1, 2, 3]
        assert a.epoch == b.epoch == epoch
        assert not sub.closed

        def back() -> int:
            return sum("Redis is back" in r.getMessage() for r in caplog.records)

        with trio.fail_after(TIMEOUT):  # node a's reader may still be in its back-off
            while back() < 2:  # noqa: ASYNC110 - the log is all there is to wait on
                await trio.sleep(0.05)
    assert outages() == 2  # once per node, however long the outage
    assert back() == 2  # once per node


async def test_a_catch_up_read_waits_for_redis_and_carries_on(
    own_redis: RedisServer, prefix: str
) -> None:
    async with nodes(own_redis.url, prefix, 1) as (a,):
        await publish(a, beats("e1", 5))
    async with nodes(own_redis.url, prefix, 1, redis_timeout=QUICK) as (b,):
        sub, _ = await b.open_subscription("e1", since=0)  # all of it is in Redis only
        own_redis.stop()
        got: list[int] = []

        async def read() -> None:
            got.extend(await seqs_until(sub, 5))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(0.5)
            assert got == []
            own_redis.start()
        assert got == [1, 2, 3, 4, 5]
        closing, _ = await b.open_subscription("e1", since=0)
        own_redis.stop()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(closing.read_behind)
            await trio.sleep(0.2)
            closing.close()  # the server closing its connection: the wait ends


async def test_redis_restarted_without_its_data_starts_a_new_epoch(
    own_redis: RedisServer, prefix: str
) -> None:
    async with nodes(own_redis.url, prefix, 2) as (a, b):
        sub, _ = await b.open_subscription("e1")
        await publish(a, beats("e1", 4))
        assert await seqs_until(sub, 4) == [1, 2, 3, 4]
        old = b.epoch
        own_redis.restart(keep_data=False)
        with trio.fail_after(TIMEOUT):
            with pytest.raises(SubscriptionEnded, match="history changed"):
                async for _ in sub:
                    pass
        assert sub.end_reason == RESTARTED
        assert b.epoch != old
        [env] = await publish(a, beats("e1", 1))
        assert (env.seq, a.epoch) == (1, b.epoch)
        resumed, resume = await a.open_subscription("e1", since=4, epoch=old)
        assert resume.reset is not None
        assert (resume.reset.epoch, resume.reset.last_seq) == (b.epoch, 1)
        assert await seqs_until(resumed, 1) == [1]


async def test_redis_back_from_an_older_file_is_a_new_epoch(
    own_redis: RedisServer, prefix: str, tmp_path: Path
) -> None:
    async with nodes(own_redis.url, prefix, 1) as (a,):
        sub, _ = await a.open_subscription("e1")
        await publish(a, beats("e1", 2))
        assert await seqs_until(sub, 2) == [1, 2]
        saved = tmp_path / "older"
        shutil.copytree(own_redis.folder, saved)
        await publish(a, beats("e1", 3))
        assert await seqs_until(sub, 5) == [3, 4, 5]
        old = a.epoch
        own_redis.stop()
        shutil.rmtree(own_redis.folder)
        shutil.copytree(saved, own_redis.folder)
        own_redis.start()  # it lost what this node had read (as appendfsync everysec may)
        with trio.fail_after(TIMEOUT):
            with pytest.raises(SubscriptionEnded):
                async for _ in sub:
                    pass
        assert a.epoch != old
        resumed, resume = await a.open_subscription("e1", since=5, epoch=old)
        assert resume.reset is not None and resume.reset.last_seq == 2
        assert await seqs_until(resumed, 2) == [1, 2]


async def test_an_epoch_once_left_never_comes_back(
    own_redis: RedisServer, prefix: str, tmp_path: Path
) -> None:
    """A second failover to a replica promoted before it had synced brings an older copy
    back, with its epoch: the node left that epoch, so its clients get a new one (the
    seqs of the old one may have been shown otherwise meanwhile)."""
    saved = tmp_path / "older"
    async with nodes(own_redis.url, prefix, 1) as (a,):
        sub, _ = await a.open_subscription("e1")
        await publish(a, beats("e1", 2))
        first = a.epoch
        shutil.copytree(own_redis.folder, saved)
        own_redis.restart(keep_data=False)
        await until_ended(sub)
        second = a.epoch
        sub, _ = await a.open_subscription("e1")
        assert [env.seq for env in await publish(a, beats("e1", 1))] == [1]
        own_redis.stop()
        shutil.rmtree(own_redis.folder)
        shutil.copytree(saved, own_redis.folder)
        own_redis.start()  # the copy of the first epoch's history
        await until_ended(sub)
        assert a.epoch not in (first, second)
        [env] = await publish(a, beats("e1", 1))
        assert env.seq == 3 and a.epoch not in (first, second)
        _, resume = await a.open_subscription("e1", since=2, epoch=first)
        assert resume.reset is not None and resume.reset.epoch == a.epoch


async def until_ended(sub: Subscription) -> None:
    """Until ``sub`` ends because the history changed."""
    with trio.fail_after(TIMEOUT):
        with pytest.raises(SubscriptionEnded, match="history changed"):
            async for _ in sub:
                pass


async def test_a_rollback_of_events_a_node_served_from_the_streams_alone_is_a_new_epoch(
    own_redis: RedisServer, prefix: str, tmp_path: Path
) -> None:
    """Node b's client got seqs 3-5 by a replay (b's reader, started after them, never read
    them from the fan-out); Redis comes back without them, and another node stores other
    events under seqs 3-5: b still tells its clients the history changed (SPEC §10)."""
    saved = tmp_path / "older"
    async with nodes(own_redis.url, prefix, 1) as (a,):
        await publish(a, beats("e1", 2))
        shutil.copytree(own_redis.folder, saved)
        await publish(a, beats("e1", 3))
    async with nodes(own_redis.url, prefix, 1) as (b,):
        sub, resume = await b.open_subscription("e1", since=0)
        assert resume.reset is None
        assert await seqs_until(sub, 5) == [1, 2, 3, 4, 5]
        old = b.epoch
        own_redis.stop()
        shutil.rmtree(own_redis.folder)
        shutil.copytree(saved, own_redis.folder)
        own_redis.start()
        async with nodes(own_redis.url, prefix, 1) as (c,):
            refilled = await publish(c, beats("e1", 3, 10))
        assert [env.seq for env in refilled] == [3, 4, 5]
        with trio.fail_after(TIMEOUT):
            with pytest.raises(SubscriptionEnded, match="history changed"):
                async for _ in sub:
                    pass
        assert b.epoch != old
        _, resume = await b.open_subscription("e1", since=5, epoch=old)
        assert resume.reset is not None and resume.reset.epoch == b.epoch


async def test_a_node_behind_the_trimmed_fanout_serves_its_subscribers_from_the_streams(
    redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as nursery:
        relay = Relay(redis.port)
        await nursery.start(relay.run)
        async with (
            nodes(redis.url, prefix, 1, fanout_maxlen=20) as (a,),
            nodes(f"redis://127.0.0.1:{relay.port}/0", prefix, 1, redis_timeout=5) as (b,),
        ):
            sub, _ = await b.open_subscription("e1")
            everything, _ = await b.open_subscription(ALL)
            await trio.sleep(0.1)  # b's reader waits in XREAD BLOCK
            relay.pause()  # b stops hearing from Redis (a network stall, a frozen VM...)
            for i in range(60):
                await publish(a, beats("e1", 10, 10 * i))
            relay.resume()
            assert await seqs_until(sub, 600) == list(range(1, 601))
            assert b.trimmed > 0
            with pytest.raises(SubscriptionEnded, match=SLOW_CONSUMER):
                while True:
                    await everything.take()
        nursery.cancel_scope.cancel()
    trims = [r for r in caplog.records if "were trimmed" in r.getMessage()]
    # Once per reader that fell behind: b's, and a's own when a loaded machine slowed it too.
    assert len(trims) == 1 + (a.trimmed > 0)


async def test_retain_deletes_idle_executions_on_every_node(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        sub, _ = await b.open_subscription("old")
        await publish(a, beats("old", 3))
        assert await seqs_until(sub, 3) == [1, 2, 3]
        assert "old" in b.dispatcher.logs
        await trio.sleep(0.6)
        await publish(a, beats("new", 1))
        assert await a.retain(0.5) == ["old"]
        assert await a.retain(0.5) == []
        assert await b.read("old") == []
        assert [s.execution_id for s in await b.executions()] == ["new"]
        with trio.fail_after(TIMEOUT):
            while "old" in b.dispatcher.logs:  # noqa: ASYNC110 - told through the fan-out
                await trio.sleep(0.01)
        assert [e.seq for e in await publish(b, beats("old", 1))] == [1]


async def test_with_replicas_a_batch_is_acknowledged_once_a_replica_has_it(
    own_redis: RedisServer, prefix: str, tmp_path: Path
) -> None:
    async with (
        nodes(own_redis.url, prefix, 1, replicas=1, redis_timeout=0.5) as (impatient,),
        # Redis may take up to its 1 s replication cron to hear from a replica just attached.
        nodes(own_redis.url, prefix, 1, replicas=1, redis_timeout=8) as (patient,),
    ):
        with pytest.raises(StoreError, match="fewer than 1 replica"):
            await publish(impatient, beats("e1", 1), idempotency_key="k")
        replica = RedisServer(tmp_path / "replica", replica_of=own_redis.port)
        try:
            await trio.to_thread.run_sync(own_redis.wait_replicas, 1)
            again = await publish(patient, beats("e1", 1), idempotency_key="k")
            assert [e.seq for e in again] == [1]  # the retry is answered, nothing stored twice
            assert [e.seq for e in await publish(patient, beats("e1", 1))] == [2]
        finally:
            replica.stop()


# --------------------------------------------------------------------------- opening


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:6379", "must look like redis://HOST:PORT/DB"),
        ("redis://127.0.0.1:notaport/0", "does not parse"),
        ("redis://:hunter2@127.0.0.1:1/0", r"cannot reach Redis at redis://:\*\*\*@127.0.0.1:1/0"),
    ],
)
async def test_a_bad_url_or_an_unreachable_redis_fails_with_one_sentence(
    url: str, message: str
) -> None:
    with pytest.raises(StoreError, match=message) as caught:
        async with open_redis_observability(url):
            pass
    assert "hunter2" not in str(caught.value)
