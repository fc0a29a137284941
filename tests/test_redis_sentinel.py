"""Nodes on a Redis that Sentinel fails over (SPEC §10), as users run them.

Each test starts its own set -- a master, a replica, three Sentinels on free loopback
ports -- and two nodes on ``--redis redis+sentinel://...`` (a ``trio-obs serve`` process and
a server in this process, or two in this process); producers post
with ``Idempotency-Key``\\ s and retry as the project's client does, watchers resume with
``since`` and ``epoch``. The master is killed under load; what was acknowledged, what each
watcher received and what the nodes finally store are held against each other.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from failover_support import (
    Producer,
    Watcher,
    check_history,
    health,
    nodes_in_process,
    start_nodes,
    stored,
    until_healthy,
)
from redis_support import Relay, SentinelSet, needs_redis, wait_until
from support import TIMEOUT, Address

pytestmark = needs_redis


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    found = SentinelSet(tmp_path)
    yield found
    found.stop()


async def fail_over(sentinels: SentinelSet) -> None:
    """Kill the master; wait until the Sentinels have made the replica the master."""
    assert sentinels.replica is not None
    sentinels.master.stop(signal.SIGKILL)
    replica = sentinels.replica.port
    await trio.to_thread.run_sync(
        lambda: wait_until(
            lambda: sentinels.master_port() == replica,
            "the failover",
            notices=[(s, "+switch-master") for s in sentinels.sentinels],
        )
    )


async def test_nodes_follow_a_failover_and_lose_nothing_acknowledged_with_replicas(
    sentinels: SentinelSet,
) -> None:
    await trio.to_thread.run_sync(sentinels.start_replica)
    await trio.to_thread.run_sync(sentinels.start_sentinels)
    # A node as users run it (`trio-obs serve`), and one in this process.
    [process] = await start_nodes("--redis", sentinels.url, "--redis-replicas", "1", n=1)
    execution = f"x-{uuid.uuid4().hex[:8]}"
    try:
        async with nodes_in_process(sentinels.url, 1, replicas=1) as [here]:
            servers: list[Address] = [process, here]
            first = (await health(servers[0]))["epoch"]
            producers = [Producer(servers, execution, f"p{k}") for k in range(2)]
            watchers = [Watcher(s, execution) for s in servers] + [Watcher(servers[1], "all")]
            async with trio.open_nursery() as nursery:
                for w in watchers:
                    nursery.start_soon(w.run)
                async with trio.open_nursery() as producing:
                    for p in producers:
                        producing.start_soon(p.run, 40)
                    with trio.fail_after(TIMEOUT):
                        while sum(len(p.acked) for p in producers) < 40:  # noqa: ASYNC110
                            await trio.sleep(0.01)  # under load: posts keep coming
                    await fail_over(sentinels)
                    # The old master restarted as a supervisor would (asking the Sentinels where the
                    # master is): the replica it makes lets writes be acknowledged again.
                    sentinels.master.replica_of = sentinels.master_port()
                    await trio.to_thread.run_sync(sentinels.master.start)
                epoch = (await health(servers[0]))["epoch"]
                history = await stored(servers[1], execution)
                for w in watchers[:2]:
                    await w.wait_for(lambda w=w: w.epoch, execution, max(history))
                nursery.cancel_scope.cancel()
            assert sum(len(p.acked) for p in producers) == 160  # every batch acknowledged at last
            assert sorted(history) == list(range(1, 161))
            for p in producers:
                assert all(history[seq] == name for name, seq in p.acked.items())
            check_history(watchers, producers, {execution: history}, epoch, first)
            for node in servers:  # ingest answers again: the nodes found the new master themselves
                await until_healthy(node)
    finally:
        process.stop()
    assert "Traceback" not in "".join(process.stderr)


async def test_a_rollback_starts_a_new_epoch_and_every_watcher_is_told(
    sentinels: SentinelSet,
) -> None:
    """Without --redis-replicas: the master acknowledges what its replica never gets."""
    async with trio.open_nursery() as nursery:
        link = Relay(sentinels.master.port)  # the replication link, which the test can hold
        await nursery.start(link.run)
        await trio.to_thread.run_sync(lambda: sentinels.start_replica(via=link.port))
        await trio.to_thread.run_sync(sentinels.start_sentinels)
        execution = f"x-{uuid.uuid4().hex[:8]}"
        async with nodes_in_process(sentinels.url) as servers:
            first = (await health(servers[0]))["epoch"]
            producer = Producer(servers, execution, "p")
            watchers = [Watcher(s, execution) for s in servers] + [Watcher(servers[0], "all")]
            for w in watchers:
                nursery.start_soon(w.run)
            await producer.run(10)  # seqs 1-20, replicated
            # The replica has acknowledged every write so far.
            await trio.to_thread.run_sync(sentinels.master.wait_replicas, 1)
            link.pause()  # in flight from now on: never reaches the replica
            await producer.run(5)  # seqs 21-30: acknowledged by the master alone
            assert len(producer.acked) == 30
            for w in watchers:  # ... and seen by every watcher
                await w.wait_for(lambda: first, execution, 30)
            sentinels.master.stop(signal.SIGKILL)
            link.cut()
            replica = sentinels.replica
            assert replica is not None
            await trio.to_thread.run_sync(
                lambda: wait_until(
                    lambda: sentinels.master_port() == replica.port,
                    "failover",
                    notices=[(s, "+switch-master") for s in sentinels.sentinels],
                )
            )
            await producer.run(10)  # the same execution again: seqs 21-40 of other events
            epoch = (await health(servers[0]))["epoch"]
            history = await stored(servers[1], execution)
            assert sorted(history) == list(range(1, 41))
            for w in watchers[:2]:
                await w.wait_for(lambda w=w: w.epoch, execution, 40)
            await watchers[2].wait_until(lambda: watchers[2].epoch == epoch)  # `all`: no replay
            nursery.cancel_scope.cancel()
    assert epoch != first  # the history went back: a new epoch ...
    assert {w.epoch for w in watchers} == {epoch}
    for w in watchers:  # ... that every watcher was told of
        assert w.resets and w.resets[-1]["epoch"] == epoch
    lost = [name for name, seq in producer.acked.items() if history.get(seq) != name]
    assert len(lost) == 10  # what only the old master had
    check_history(watchers, [producer], {execution: history}, epoch, first)
