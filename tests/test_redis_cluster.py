"""Several ``trio-obs serve --redis`` processes as one server (SPEC §10), as users run them.

Every node is a real subprocess on its own port, every Redis a private ``redis-server``;
the clients are the project's own (``open_stream``, ``post_events``) and plain HTTP and
WebSocket ones. A :class:`~redis_support.Relay` stands for a load balancer in front.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from redis_support import RedisServer, Relay, needs_redis
from support import (
    START_TIMEOUT,
    TIMEOUT,
    ServerProcess,
    command,
    environment,
    heartbeats,
    ws_client,
)
from trio_obs import open_stream, post_events
from trio_obs.core.events import AgentHeartbeatEvent

pytestmark = needs_redis


def stop_all(nodes: list[ServerProcess]) -> None:
    for n in nodes:
        if n.process.poll() is None:
            n.stop()


@pytest.fixture(scope="module")
def cluster(redis: RedisServer) -> Iterator[list[ServerProcess]]:
    """Three nodes on one Redis, shared by the tests that neither kill nor stop anything."""
    nodes = [ServerProcess("--redis", redis.url) for _ in range(3)]
    yield nodes
    stop_all(nodes)
    for n in nodes:
        assert "Traceback" not in "".join(n.stderr), n.stderr


@pytest.fixture
def execution() -> str:
    return f"x-{uuid.uuid4().hex[:8]}"


async def post(
    srv: ServerProcess, body: Any, *, key: str | None = None, expect: int = 202
) -> dict[str, Any]:
    headers = {"content-type": "application/json"} | ({"idempotency-key": key} if key else {})
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
        response = await http.post(
            srv.url("/api/events"), content=orjson.dumps(body), headers=headers
        )
    assert response.status_code == expect, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def get(srv: ServerProcess, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
        return await http.get(srv.url(path))


async def frames(ws: Any, n: int) -> list[dict[str, Any]]:
    """The next ``n`` stream events of a WebSocket (connection messages skipped)."""
    out: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT):
        while len(out) < n:
            frame = orjson.loads(await ws.get_message())
            if "seq" in frame:
                out.append(frame)
    return out


def beat(e: str, i: int) -> AgentHeartbeatEvent:
    return AgentHeartbeatEvent(execution_id=e, instance_id=f"i{i}", status="working")


# --------------------------------------------------------------------------- one server


async def test_posted_on_one_node_every_client_on_every_node_gets_it_once(
    cluster: list[ServerProcess], execution: str
) -> None:
    a, b, c = cluster
    async with (
        ws_client(b.ws_url(execution)) as on_b,
        ws_client(c.ws_url(execution)) as on_c,
        ws_client(b.ws_url("all")) as all_b,
        ws_client(c.ws_url("all")) as all_c,
    ):
        for i in range(20):
            await post((a, b, c)[i % 3], heartbeats(execution, 3))
        got = [await frames(ws, 60) for ws in (on_b, on_c)]
        assert [f["seq"] for f in got[0]] == list(range(1, 61))
        assert got[1] == got[0]
        for ws in (all_b, all_c):
            mine = [f for f in await frames(ws, 60) if f["executionId"] == execution]
            assert mine == got[0]
    stored = [(await get(n, f"/api/executions/{execution}/events")).content for n in cluster]
    assert stored[0] == stored[1] == stored[2]
    assert orjson.loads(stored[0]) == got[0]
    for n in cluster:
        [summary] = [s for s in (await get(n, "/api/executions")).json()
                     if s["executionId"] == execution]  # fmt: skip
        assert (summary["lastSeq"], summary["eventCount"]) == (60, 60)


async def test_every_node_says_the_same_epoch(cluster: list[ServerProcess]) -> None:
    epochs = set()
    for n in cluster:
        health = await get(n, "/api/health")
        assert (health.status_code, health.json()["status"]) == (200, "ok")
        epochs.add(health.json()["epoch"])
        with trio.fail_after(TIMEOUT):
            async with open_websocket_url(n.ws_url("all")) as ws:
                connected = orjson.loads(await ws.get_message())
        assert connected["type"] == "observability:connected"
        epochs.add(connected["epoch"])
    assert len(epochs) == 1


async def test_concurrent_producers_on_two_nodes_get_one_gapless_sequence(
    cluster: list[ServerProcess], execution: str
) -> None:
    seqs: list[list[int]] = []

    async def producer(srv: ServerProcess) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
            for i in range(15):
                batch = [beat(execution, i), beat(execution, i + 1)]
                seqs.append(await post_events(srv.url(), batch, client=http))

    async with trio.open_nursery() as nursery:
        for k in range(6):
            nursery.start_soon(producer, cluster[k % 2])
    assert sorted(s for batch in seqs for s in batch) == list(range(1, 181))
    assert all(batch[1] == batch[0] + 1 for batch in seqs)


async def test_an_idempotent_retry_on_another_node_stores_nothing_twice(
    cluster: list[ServerProcess], execution: str
) -> None:
    a, b, _ = cluster
    first = await post(a, heartbeats(execution, 3), key="k-" + execution)
    again = await post(b, heartbeats(execution, 3), key="k-" + execution)
    assert first == again == {"accepted": 3, "seqs": [1, 2, 3]}
    assert len((await get(b, f"/api/executions/{execution}/events")).json()) == 3


async def test_an_invalid_batch_is_refused_and_stored_nowhere(
    cluster: list[ServerProcess], execution: str
) -> None:
    a, b, c = cluster
    bad = [*heartbeats(execution, 2), {"type": "agent:heartbeat", "executionId": execution}]
    answer = await post(a, bad, expect=400)
    assert answer["code"] == "INVALID_EVENT"
    for n in (b, c):
        assert (await get(n, f"/api/executions/{execution}/events")).json() == []
    assert (await post(c, heartbeats(execution, 1)))["seqs"] == [1]


async def test_resume_on_another_node_through_a_balancer(
    cluster: list[ServerProcess], execution: str
) -> None:
    a, b, c = cluster
    async with trio.open_nursery() as nursery:
        balancer = Relay(a.port)
        await nursery.start(balancer.run)
        await post(c, heartbeats(execution, 5))
        seen: list[int] = []
        async with open_stream(f"http://127.0.0.1:{balancer.port}", execution) as stream:
            with trio.fail_after(TIMEOUT):
                async for event in stream:
                    assert event.seq is not None
                    seen.append(event.seq)
                    if event.seq == 5:
                        balancer.target = b.port  # the balancer sends the next connection to b
                        balancer.cut()
                        await post(c, heartbeats(execution, 5))
                    if event.seq == 10:
                        break
            assert stream.reconnects == 1
        assert seen == list(range(1, 11))
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- faults


async def test_a_node_killed_under_load_loses_nothing_it_acknowledged(
    own_redis: RedisServer, execution: str
) -> None:
    a, b = ServerProcess("--redis", own_redis.url), ServerProcess("--redis", own_redis.url)
    acked: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            balancer = Relay(a.port)
            await nursery.start(balancer.run)
            killed = trio.Event()

            async def producer(k: int) -> None:
                async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
                    for i in range(40):
                        key = f"{execution}-{k}-{i}"
                        for srv in (a, b) if not killed.is_set() else (b,):
                            try:  # a retry of the same batch on the other node is safe
                                acked.extend(await post_events(
                                    srv.url(), [beat(execution, i)], client=http,
                                    attempts=1, idempotency_key=key,
                                ))  # fmt: skip
                                break
                            except httpx.TransportError:
                                continue
                        await trio.sleep(0.005)

            seen: list[int] = []
            async with open_stream(f"http://127.0.0.1:{balancer.port}", execution) as stream:
                with trio.fail_after(TIMEOUT * 3):
                    async with trio.open_nursery() as producers:
                        for k in range(4):
                            producers.start_soon(producer, k)
                        async for event in stream:
                            assert event.seq is not None
                            seen.append(event.seq)
                            if len(seen) == 40:
                                balancer.target = b.port
                                a.process.send_signal(signal.SIGKILL)
                                a.process.wait(TIMEOUT)
                                killed.set()
                            if len(seen) == 160:
                                break
                    # Every producer has its answers now (the last batch may be on the
                    # stream before its POST's answer is back: cancelling there lost acks).
            nursery.cancel_scope.cancel()
        stored = [e["seq"] for e in (await get(b, f"/api/executions/{execution}/events")).json()]
        assert stored == list(range(1, 161))
        assert sorted(acked) == stored  # every acknowledged batch is there, each once
        assert seen == stored
    finally:
        stop_all([a, b])


async def test_redis_down_answers_503_and_clients_stay_until_it_is_back(
    own_redis: RedisServer, execution: str
) -> None:
    a, b = ServerProcess("--redis", own_redis.url), ServerProcess("--redis", own_redis.url)
    try:
        await post(a, heartbeats(execution, 2))
        async with ws_client(b.ws_url(execution)) as ws:
            assert [f["seq"] for f in await frames(ws, 2)] == [1, 2]
            own_redis.stop()
            answer = await post(a, heartbeats(execution, 1), expect=503)
            assert answer["code"] == "UNAVAILABLE" and answer["error"].endswith("try again")
            health = await get(a, "/api/health")
            assert (health.status_code, health.json()["status"]) == (503, "degraded")
            own_redis.start()
            with trio.fail_after(TIMEOUT):
                while (await get(a, "/api/health")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert (await post(a, heartbeats(execution, 3)))["seqs"] == [3, 4, 5]
            assert [f["seq"] for f in await frames(ws, 3)] == [3, 4, 5]  # same connection
        log = "".join(b.stderr)
        assert log.count("Redis is unavailable") == 1
        assert "Redis is back" in log
    finally:
        stop_all([a, b])


async def test_redis_restarted_without_its_data_makes_clients_start_over(
    own_redis: RedisServer, execution: str
) -> None:
    a, b = ServerProcess("--redis", own_redis.url), ServerProcess("--redis", own_redis.url)
    try:
        await post(a, heartbeats(execution, 3))
        seen: list[tuple[int | None, str]] = []
        async with open_stream(b.url(), execution) as stream:
            with trio.fail_after(TIMEOUT):
                async for event in stream:
                    seen.append((event.seq, event.instance_id))  # type: ignore[union-attr]
                    if len(seen) == 3:
                        own_redis.restart(keep_data=False)
                        await post(a, [heartbeats(execution, 9)[8]])
                    if len(seen) == 4:
                        break
            assert any("history changed" in notice for notice in stream.notices)
        assert seen == [(1, "i0"), (2, "i1"), (3, "i2"), (1, "i8")]
    finally:
        stop_all([a, b])


async def test_retention_on_one_node_deletes_idle_executions_for_every_node(
    own_redis: RedisServer, execution: str
) -> None:
    a = ServerProcess("--redis", own_redis.url, "--retention", "1s")
    b = ServerProcess("--redis", own_redis.url)
    try:
        await post(b, heartbeats(execution, 2))

        async def listed() -> set[str]:
            return {s["executionId"] for s in (await get(b, "/api/executions")).json()}

        assert execution in await listed()
        with trio.fail_after(TIMEOUT):
            while execution in await listed():  # noqa: ASYNC110 - awaiting the next round
                await trio.sleep(0.1)
        assert (await get(b, f"/api/executions/{execution}/events")).json() == []
        assert (await post(b, heartbeats(execution, 1)))["seqs"] == [1]  # it starts over
        assert "retention: deleted 1 execution(s)" in "".join(a.stderr)
    finally:
        stop_all([a, b])


# --------------------------------------------------------------------------- the command


def refusal(url: str, how: str) -> str:
    """The one line ``serve`` says when it cannot start on ``url`` (given by flag or env)."""
    args = ["serve", "--port", "0"] + (["--redis", url] if how == "flag" else [])
    extra = {"TRIO_OBS_REDIS": url} if how == "environment" else {}
    done = subprocess.run(
        command(*args),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        env=environment(**extra),
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_an_unreachable_redis_is_one_line_and_exit_1(how: str) -> None:
    line = refusal("redis://:hunter2@127.0.0.1:1/0", how)
    assert "cannot start: cannot reach Redis at redis://:***@127.0.0.1:1/0" in line
    assert "hunter2" not in line


def test_help_never_shows_a_redis_url_from_the_environment() -> None:
    done = subprocess.run(
        command("serve", "--help"), capture_output=True, text=True, timeout=START_TIMEOUT,
        env=environment(TRIO_OBS_REDIS="redis://:hunter2@10.0.0.1:6379/0"),
    )  # fmt: skip
    assert "--redis" in done.stdout and "hunter2" not in done.stdout


@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_a_port_in_use_is_one_line_with_redis_too(store: str, redis: RedisServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        extra = ["--redis", redis.url] if store == "redis" else ["--db", ":memory:"]
        done = subprocess.run(
            command("serve", "--port", str(port), *extra),
            capture_output=True, text=True, timeout=START_TIMEOUT, env=environment(),
        )  # fmt: skip
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert f"cannot start: port {port} on 127.0.0.1 is in use; pick another with --port" in line


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_database_that_is_not_a_number_is_refused_naming_the_flag(
    how: str, redis: RedisServer
) -> None:
    url = f"redis://127.0.0.1:{redis.port}/abc"
    flag = "--redis" if how == "flag" else "TRIO_OBS_REDIS"
    assert f"cannot start: {flag}: the Redis URL {url} names database 'abc'" in refusal(url, how)


def test_a_password_redis_does_not_ask_for_is_warned_about(redis: RedisServer) -> None:
    url = f"redis://:hunter2@127.0.0.1:{redis.port}/0"
    node = ServerProcess("--redis", url)
    try:
        log = "".join(node.stderr)
    finally:
        node.stop()
    assert "has a password, but Redis takes none: anyone who can reach it can read" in log
    assert "hunter2" not in log
