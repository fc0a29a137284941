"""On Redis an answer says only what is known (SPEC §10): stored (202), nothing stored (503),
or some of it is or may be stored (504: a retry with the same ``Idempotency-Key`` is safe);
health tries a write and says why writes fail; a ``since`` beyond the head is told.

Servers run in this process on a private ``redis-server`` that the tests pause (SIGSTOP),
fill or give a replica.
"""

from __future__ import annotations

import logging
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from failover_support import health, nodes_in_process, stored, until_healthy
from redis_support import RedisServer, needs_redis
from support import TIMEOUT, Address
from trio_obs import post_events
from trio_obs.core.events import AgentHeartbeatEvent

pytestmark = needs_redis


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    if server.process is not None:
        server.process.send_signal(signal.SIGCONT)
    server.stop()


def beats(e: str, n: int) -> list[dict[str, Any]]:
    return [{"type": "agent:heartbeat", "executionId": e, "instanceId": f"i{i}",
             "status": "idle"} for i in range(n)]  # fmt: skip


async def post(node: Address, body: Any, *, key: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/json"} | ({"idempotency-key": key} if key else {})
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
        return await http.post(node.url("/api/events"), content=orjson.dumps(body), headers=headers)


async def test_a_paused_redis_is_answered_not_known_and_a_retry_with_the_key_is_safe(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trio_obs.client")
    execution = f"x-{uuid.uuid4().hex[:8]}"
    async with nodes_in_process(redis.url, 1, redis_timeout=0.5) as [node]:
        assert redis.process is not None
        redis.process.send_signal(signal.SIGSTOP)  # the script will run, later
        answer = await post(node, beats(execution, 2), key="k1")
        assert answer.status_code == 504
        body = answer.json()
        assert body["code"] == "OUTCOME_UNKNOWN" and "not known" in body["error"]
        assert (body["seqs"], body["unknown"]) == ([None, None], [0, 1])  # never "nothing stored"
        # The project's client retries a 504 with the same key (until Redis is back).
        events = [AgentHeartbeatEvent(execution_id=execution, instance_id=f"i{i}", status="idle")
                  for i in range(2)]  # fmt: skip
        async with trio.open_nursery() as nursery:
            seqs: list[int] = []

            async def retry() -> None:
                seqs.extend(await post_events(node.url(), events, idempotency_key="k1", attempts=9))

            nursery.start_soon(retry)
            with trio.fail_after(TIMEOUT):
                while not any("answered 504" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
                    await trio.sleep(0.05)  # the log is what says it was retried
            redis.process.send_signal(signal.SIGCONT)
        assert seqs == [1, 2]  # the batch the first request stored, answered again
        assert sorted(await stored(node, execution)) == [1, 2]  # once


async def test_replicas_short_is_answered_stored_on_the_primary_with_the_seqs(
    redis: RedisServer, tmp_path: Path
) -> None:
    execution = f"x-{uuid.uuid4().hex[:8]}"
    async with nodes_in_process(redis.url, 1, replicas=1, redis_timeout=0.5) as [node]:
        problem = await health(node)
        assert problem["status"] == "degraded"
        assert "fewer than 1 Redis replica(s)" in problem["reason"]
        redis.call("SCRIPT", "FLUSH")  # as on a replica just promoted: the scripts load again
        answer = await post(node, beats(execution, 3), key="k2")
        assert answer.status_code == 504
        body = answer.json()
        assert body["code"] == "NOT_REPLICATED"
        assert "stored on the Redis primary" in body["error"]
        assert (body["seqs"], body["unknown"], body["accepted"]) == ([1, 2, 3], [], 3)
        replica = RedisServer(tmp_path / "replica", replica_of=redis.port)
        try:
            await trio.to_thread.run_sync(redis.wait_replicas, 1)
            with trio.fail_after(TIMEOUT):  # Redis hears from a new replica within a second
                while (again := await post(node, beats(execution, 3), key="k2")).status_code != 202:
                    assert again.json()["code"] == "NOT_REPLICATED"
                    await trio.sleep(0.05)
            assert again.json() == {"accepted": 3, "seqs": [1, 2, 3]}
            await until_healthy(node)
        finally:
            replica.stop()
        assert sorted(await stored(node, execution)) == [1, 2, 3]


async def test_a_redis_out_of_memory_is_degraded_and_the_refusal_says_why(
    redis: RedisServer,
) -> None:
    execution = f"x-{uuid.uuid4().hex[:8]}"
    async with nodes_in_process(redis.url, 1) as [node]:
        assert (await post(node, beats(execution, 1))).status_code == 202
        assert (await health(node))["status"] == "ok"
        redis.call("CONFIG", "SET", "maxmemory-policy", "noeviction")
        redis.call("CONFIG", "SET", "maxmemory", "1")  # below what it uses: every write refused
        try:
            problem = await health(node)
            assert problem["status"] == "degraded"
            assert (
                problem["reason"] == "Redis is out of memory (maxmemory reached) and refuses writes"
            )
            answer = await post(node, beats(execution, 1))
            assert answer.status_code == 503
            assert answer.json()["code"] == "UNAVAILABLE"
            assert "out of memory" in answer.json()["error"]
            assert "nothing was stored" in answer.json()["error"]
        finally:
            redis.call("CONFIG", "SET", "maxmemory", "0")
        assert (await health(node))["status"] == "ok"
        assert (await post(node, beats(execution, 1))).json()["seqs"] == [2]


async def test_a_since_beyond_the_head_is_told_with_a_reset_on_redis(redis: RedisServer) -> None:
    execution = f"x-{uuid.uuid4().hex[:8]}"
    async with nodes_in_process(redis.url, 1) as [node]:
        await post(node, beats(execution, 2))
        epoch = (await health(node))["epoch"]
        with trio.fail_after(TIMEOUT):
            async with open_websocket_url(node.ws_url(execution, since=5, epoch=epoch)) as ws:
                frames = [orjson.loads(await ws.get_message()) for _ in range(4)]
        assert [f["type"] for f in frames] == ["observability:connected", "observability:reset",
                                               "agent:heartbeat", "agent:heartbeat"]  # fmt: skip
        assert (frames[1]["epoch"], frames[1]["lastSeq"]) == (epoch, 2)
        assert [f["seq"] for f in frames[2:]] == [1, 2]
