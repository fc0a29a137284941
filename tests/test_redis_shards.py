"""Nodes on a Redis Cluster (SPEC §10): executions spread over the shards, every node reads
every partition, a batch across shards answered truly, a shard failover under load.

The module starts its own cluster (three shards of a primary and a replica each, on free
loopback ports); tests keep to their own executions, or to their own key prefix.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from failover_support import (
    Producer,
    Watcher,
    check_history,
    health,
    nodes_in_process,
    start_nodes,
    stored,
)
from redis_support import CALM, Cluster, RedisServer, needs_redis
from support import TIMEOUT, Address, command, environment
from test_redis_hub import outcome, publish, scenario
from trio_obs import InvalidInput, StoreError, open_observability
from trio_obs.core.protocol import GLOBAL
from trio_obs.hub.redis_scripts import CLUSTER_PARTITIONS, Layout, hash_slot
from trio_obs.producers import open_redis_observability

pytestmark = needs_redis


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    found = Cluster(tmp_path_factory.mktemp("cluster"))
    yield found
    found.stop()


@pytest.fixture
def cluster(shared_cluster: Cluster) -> Cluster:
    """The module's cluster, once it is whole again after what the last test did to it."""
    shared_cluster.wait_whole()
    return shared_cluster


def execution_on(cluster: Cluster, primary: RedisServer, tag: str) -> str:
    """An execution id whose partition lives on ``primary``."""
    layout = Layout.cluster("trio-obs:")
    for n in range(10_000):
        candidate = f"{tag}-{n}"
        keys = layout.partitions[layout.of(candidate)]
        if cluster.primary_of(hash_slot(keys.epoch)) is primary:
            return candidate
    raise AssertionError("no execution id found for that shard")


async def post(node: Address, body: Any, *, key: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/json"} | ({"idempotency-key": key} if key else {})
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
        return await http.post(node.url("/api/events"), content=orjson.dumps(body), headers=headers)


def beats(e: str, n: int, tag: str = "i") -> list[dict[str, Any]]:
    return [{"type": "agent:heartbeat", "executionId": e, "instanceId": f"{tag}{i}",
             "status": "idle"} for i in range(n)]  # fmt: skip


# --------------------------------------------------------------------------- the layout


def test_the_partitions_spread_evenly_over_the_slot_range() -> None:
    layout = Layout.cluster("trio-obs:")
    slots = [hash_slot(k.epoch) for k in layout.partitions]
    width = 16384 // CLUSTER_PARTITIONS
    assert [s // width for s in slots] == list(range(CLUSTER_PARTITIONS))
    for keys, slot in zip(layout.partitions, slots, strict=True):  # one slot per partition
        assert {hash_slot(keys.fan), hash_slot(keys.stream("x-1")), hash_slot(keys.epoch)} == {slot}
    assert layout.of(GLOBAL) == 0
    with pytest.raises(ValueError, match="hash tag"):
        Layout.cluster("my{tag}:")


def unpositioned(found: Any) -> Any:
    """``found`` without global positions (a cluster's ``all`` has none: README)."""
    if isinstance(found, bytes):
        return re.sub(rb',"pos":\d+', b"", found)
    if isinstance(found, list):
        return [unpositioned(x) for x in found]
    if isinstance(found, tuple):
        return tuple(unpositioned(x) for x in found)
    if attrs.has(type(found)) and hasattr(found, "pos"):
        return attrs.evolve(found, pos=None)
    return found


async def test_the_history_rules_give_what_the_single_node_ledger_gives(cluster: Cluster) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    batches = scenario(random.Random(2027))
    async with (
        open_observability() as single,
        open_redis_observability(cluster.url, prefix=prefix, redis_timeout=CALM) as a,
        open_redis_observability(cluster.url, prefix=prefix, redis_timeout=CALM) as b,
    ):
        assert len({a.hub.layout.of(k) for k in ["e1", "e2", "e3", "e4"]}) > 1  # type: ignore[attr-defined]
        for i, batch in enumerate(batches):
            results: list[Any] = []
            for hub in (single.hub, (a.hub, b.hub)[i % 2]):
                try:
                    results.append(unpositioned(outcome(await publish(hub, batch))))
                except InvalidInput as exc:
                    results.append(str(exc))
            assert results[1] == results[0], f"batch {i}"
        for key in ["e1", "e2", "e3", "e4", GLOBAL]:
            kept = unpositioned(await single.hub.read(key, limit=10_000))
            assert await a.hub.read(key, limit=10_000) == kept, key
            assert await b.hub.read(key, limit=10_000) == kept, key
        # Across shards "most recently active" is by Redis's clock: the same set, the same rows.
        listing = await single.hub.executions()
        assert sorted(await a.hub.executions(), key=str) == sorted(listing, key=str)


# --------------------------------------------------------------------------- as users run it


async def test_executions_spread_over_the_shards_and_every_node_delivers_every_event(
    cluster: Cluster,
) -> None:
    tag = uuid.uuid4().hex[:6]
    processes = await start_nodes("--redis", cluster.url, n=1)
    try:
        async with nodes_in_process(cluster.url, 1) as [here]:
            a, b = processes[0], here
            executions = [f"{tag}-{i}" for i in range(12)]
            watchers = [Watcher(b, "all"), Watcher(a, executions[0]), Watcher(b, GLOBAL)]
            async with trio.open_nursery() as nursery:
                for w in watchers:
                    nursery.start_soon(w.run)
                    await w.wait_until(lambda w=w: w.connections > 0)
                for i, e in enumerate(executions):
                    batch = [*beats(e, 2), {"type": "execution:status", "executionId": e,
                                            "status": "running"}]  # fmt: skip
                    answer = await post((a, b)[i % 2], batch)
                    assert answer.json() == {"accepted": 3, "seqs": [1, 2, 3]}
                for e in executions:  # every execution on every node, once, in order
                    await watchers[0].wait_until(lambda e=e: 3 in watchers[0].seen(
                        watchers[0].epoch or "", e))  # fmt: skip
                await watchers[1].wait_for(lambda: watchers[1].epoch, executions[0], 3)
                await watchers[2].wait_for(lambda: watchers[2].epoch, GLOBAL, 12)
                nursery.cancel_scope.cancel()
            for e in executions:
                assert sorted(watchers[0].seen(watchers[0].epoch or "", e)) == [1, 2, 3]
                assert await stored(a, e) == await stored(b, e)
            health_a, health_b = await health(a), await health(b)
            assert health_a["status"] == health_b["status"] == "ok"
            assert health_a["epoch"] == health_b["epoch"]  # one epoch, the same on every node
    finally:
        processes[0].stop()
    assert "Traceback" not in "".join(processes[0].stderr)
    for primary in cluster.primaries:  # the keys are on every shard
        assert int(primary.call("DBSIZE").strip() or 0) > 0, primary.port


def test_a_plain_url_at_a_cluster_node_says_to_use_redis_cluster(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    before = [n.call("DBSIZE") for n in cluster.primaries]
    done = subprocess.run(
        command("serve", "--port", "0", "--redis", node.url),
        capture_output=True, text=True, timeout=TIMEOUT * 3, env=environment(),
    )  # fmt: skip
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "is a node of a Redis Cluster: name it as redis+cluster://HOST:PORT" in line
    assert [n.call("DBSIZE") for n in cluster.primaries] == before  # nothing written


# --------------------------------------------------------------------------- faults


async def test_a_batch_across_shards_says_which_events_are_stored_and_a_retry_completes_it(
    cluster: Cluster,
) -> None:
    tag = uuid.uuid4().hex[:6]
    stopped, other = cluster.primaries[0], cluster.primaries[1]
    there, fine = execution_on(cluster, stopped, tag), execution_on(cluster, other, tag)
    batch = [*beats(fine, 2, "f"), *beats(there, 2, "t"), *beats(fine, 1, "g")]
    key = f"k-{tag}"
    # The stopped shard never answers, whatever the timeout; the others must answer within
    # it on a loaded machine (with 0.5 s, at load 14 none did).
    async with nodes_in_process(cluster.url, 1, redis_timeout=3.0) as [node]:
        assert stopped.process is not None
        stopped.process.send_signal(signal.SIGSTOP)  # a shard that does not answer
        try:
            answer = await post(node, batch, key=key)
        finally:
            stopped.process.send_signal(signal.SIGCONT)
        assert answer.status_code == 504, answer.text
        body = answer.json()
        assert body["code"] == "OUTCOME_UNKNOWN"
        assert body["seqs"] == [1, 2, None, None, 3]  # what is known stored, and where
        assert body["unknown"] == [2, 3]  # what may be: the shard that did not answer
        with trio.fail_after(TIMEOUT * 2):  # the retry the answer asks for (the shard may
            while (again := await post(node, batch, key=key)).status_code != 202:  # fail over)
                assert again.status_code in (503, 504), again.text
                await trio.sleep(0.05)
        assert again.json()["seqs"] == [1, 2, 1, 2, 3]
        assert sorted(await stored(node, fine)) == [1, 2, 3]  # nothing twice
        assert sorted(await stored(node, there)) == [1, 2]


async def test_a_failed_start_leaves_no_key_behind(cluster: Cluster) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    stopped = cluster.primaries[2]
    assert stopped.process is not None
    stopped.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(StoreError, match="cannot reach Redis"):
            async with open_redis_observability(cluster.url, prefix=prefix, redis_timeout=0.5):
                pass
    finally:
        stopped.process.send_signal(signal.SIGCONT)
    for node in cluster.nodes:
        assert node.call("--scan", "--pattern", f"{prefix}*").strip() == "", node.port


async def test_a_shard_failover_under_load_loses_nothing_acknowledged_with_replicas(
    cluster: Cluster,
) -> None:
    tag = uuid.uuid4().hex[:6]
    victim = cluster.primaries[1]
    executions = [
        execution_on(cluster, victim, tag),
        execution_on(cluster, cluster.primaries[0], tag),
    ]
    async with nodes_in_process(cluster.url, 2, replicas=1) as servers:
        first = (await health(servers[0]))["epoch"]
        producers = [Producer(servers, e, f"p{k}") for k, e in enumerate(executions)]
        watchers = [Watcher(s, e) for s in servers for e in executions]
        async with trio.open_nursery() as nursery:
            for w in watchers:
                nursery.start_soon(w.run)
            async with trio.open_nursery() as producing:
                for p in producers:
                    producing.start_soon(p.run, 25)
                with trio.fail_after(TIMEOUT):
                    while len(producers[0].acked) < 16:  # noqa: ASYNC110 - under load
                        await trio.sleep(0.01)
                await trio.to_thread.run_sync(cluster.fail_over, victim)  # killed: replaced
                # The old primary back, as a supervisor would restart it: a replica again.
                await trio.to_thread.run_sync(victim.start)
            epoch = (await health(servers[0]))["epoch"]
            histories = {e: await stored(servers[1], e) for e in executions}
            for w in watchers:
                await w.wait_for(lambda w=w: w.epoch, w.stream, max(histories[w.stream]))
            nursery.cancel_scope.cancel()
    for p in producers:
        assert len(p.acked) == 50 and p.refused == 0
        assert sorted(histories[p.execution]) == list(range(1, 51))
        assert all(histories[p.execution][seq] == name for name, seq in p.acked.items())
    check_history(watchers, producers, histories, epoch, first)


async def test_all_on_a_cluster_has_no_position_and_every_node_searches_alike(
    cluster: Cluster,
) -> None:
    """A cluster's ``all`` has no single order (README): no ``pos`` is sent, ``since_pos`` is
    told ``observability:reset``; each node's search index still finds every event."""
    tag = uuid.uuid4().hex[:6]
    executions = [f"{tag}-{i}" for i in range(6)]
    async with nodes_in_process(cluster.url, 2) as (a, b):
        for i, e in enumerate(executions):
            said = {"type": "tool:start", "executionId": e, "toolUseId": f"u{i}", "tool": "Bash",
                    "inputSummary": f"needle{tag} {i}"}  # fmt: skip
            assert (await post((a, b)[i % 2], [said])).status_code == 202
        with trio.fail_after(TIMEOUT):
            async with open_websocket_url(b.ws_url("all", since_pos=3)) as ws:
                connected = orjson.loads(await ws.get_message())
                reset = orjson.loads(await ws.get_message())
                assert reset["type"] == "observability:reset"
                assert reset["epoch"] == connected["epoch"]
                await post(a, beats(executions[0], 1))
                live = orjson.loads(await ws.get_message())
        assert (live["executionId"], live["seq"]) == (executions[0], 2)
        assert "pos" not in live
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
            for node in (a, b):
                with trio.fail_after(TIMEOUT):
                    while True:  # each node's index holds what its readers dispatched
                        answer = (await http.get(node.url(f"/api/search?q=needle{tag}"))).json()
                        if len(answer["hits"]) == 6:
                            break
                        await trio.sleep(0.05)
                assert {h["executionId"] for h in answer["hits"]} == set(executions)
