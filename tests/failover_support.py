"""What users run against a Redis that fails over: producers that retry, watchers that resume.

A :class:`Producer` posts batches of heartbeats (each event named by its ``instanceId``)
with an ``Idempotency-Key`` per batch through the project's own client, which retries 503
and 504 with the same key, and records what was acknowledged. A :class:`Watcher` is a raw
WebSocket client of one stream that resumes with ``since`` and ``epoch`` after every close,
as the viewer does, and records every event and ``observability:reset`` it gets.
:func:`check_history` then holds them against what the nodes finally store (SPEC §10):
nothing acknowledged lost unless the epoch changed, no watcher shown an event under seq S
of an epoch that the store holds otherwise, no duplicate or step back within an epoch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import httpx
import orjson
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from support import TIMEOUT, Address, ServerProcess
from trio_obs import ServerConfig, post_events, serve
from trio_obs.client.common import PostRejected
from trio_obs.core.events import AgentHeartbeatEvent
from trio_obs.producers import open_redis_observability

RETRY_FOR = 30
"""Seconds a producer retries one batch (a failover takes a few)."""


@attrs.define
class Node(Address):
    """A server in this process on Redis (one node of several): its port."""

    port: int


@asynccontextmanager
async def nodes_in_process(url: str, n: int = 2, **options: Any) -> AsyncIterator[list[Node]]:
    """``n`` servers in this process on the Redis at ``url`` (``options`` go to the hub)."""
    async with AsyncExitStack() as stack:
        found: list[Node] = []
        for _ in range(n):
            obs = await stack.enter_async_context(open_redis_observability(url, **options))
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            found.append(Node(await nursery.start(serve, obs, ServerConfig(port=0))))
        yield found


async def start_nodes(*args: str, n: int = 2) -> list[ServerProcess]:
    """``n`` ``trio-obs serve ARGS`` processes, started side by side."""
    started: list[ServerProcess] = []

    async def one() -> None:
        started.append(await trio.to_thread.run_sync(lambda: ServerProcess(*args)))

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return started


@attrs.define
class Producer:
    """Posts ``batch`` heartbeats at a time to ``execution``, on the nodes in turn."""

    nodes: list[Address]
    execution: str
    name: str
    batch: int = 2
    acked: dict[str, int] = attrs.field(factory=dict)
    """instanceId -> the seq its 202 gave."""
    refused: int = 0
    """Batches given up on (not acknowledged in time)."""
    retries: int = 0
    sent: int = 0

    async def post(self, http: httpx.AsyncClient) -> None:
        """Post one batch (retried with its key until acknowledged or out of attempts)."""
        node = self.nodes[self.sent % len(self.nodes)]
        names = [f"{self.name}-{self.sent}-{j}" for j in range(self.batch)]
        events = [AgentHeartbeatEvent(execution_id=self.execution, instance_id=n, status="working")
                  for n in names]  # fmt: skip
        key = f"{self.execution}-{self.name}-{self.sent}"
        self.sent += 1
        with trio.move_on_after(RETRY_FOR):
            while True:  # as post_events retries (503, 504), at a steady pace
                try:
                    seqs = await post_events(
                        node.url(), events, client=http, idempotency_key=key, attempts=1
                    )
                except PostRejected as exc:
                    assert exc.status in (503, 504), exc
                    self.retries += 1
                    await trio.sleep(0.05)
                    continue
                self.acked.update(zip(names, seqs, strict=True))
                return
        self.refused += 1

    async def run(self, batches: int) -> None:
        """Post ``batches`` batches, one after the other."""
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
            for _ in range(batches):
                await self.post(http)


@attrs.define
class Watcher:
    """One resuming WebSocket client of ``stream`` on ``node``."""

    node: Address
    stream: str
    epoch: str | None = None
    last: dict[str, int] = attrs.field(factory=dict)
    received: list[tuple[str, str, int, str]] = attrs.field(factory=list)
    """(epoch, execution, seq, instanceId) of every event, in the order received."""
    resets: list[dict[str, Any]] = attrs.field(factory=list)
    connections: int = 0
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def run(self) -> None:
        """Watch until cancelled, reconnecting after every close."""
        while True:
            params: dict[str, object] = {}
            since = self.last.get(self.stream)
            if self.stream != "all" and since is not None:
                params["since"] = since
            if self.epoch is not None and (since is not None or self.stream == "all"):
                params["epoch"] = self.epoch
            try:
                async with open_websocket_url(self.node.ws_url(self.stream, **params)) as ws:
                    self.connections += 1
                    while True:
                        self._take(orjson.loads(await ws.get_message()))
            except (ConnectionClosed, HandshakeError, OSError):
                await trio.sleep(0.05)

    def _take(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "observability:connected":
            self.epoch = frame.get("epoch")
        elif kind == "observability:reset":
            self.resets.append(frame)
            self.epoch = frame["epoch"]
            self.last.clear()
        elif "seq" in frame:
            assert self.epoch is not None
            key = frame["executionId"] if self.stream == "all" else self.stream
            self.received.append((self.epoch, key, frame["seq"], frame.get("instanceId", "")))
            self.last[key] = frame["seq"]
        self.changed.set()
        self.changed = trio.Event()

    def seen(self, epoch: str, execution: str) -> dict[int, str]:
        """seq -> instanceId of what this watcher received of ``execution`` under ``epoch``."""
        return {s: i for e, k, s, i in self.received if e == epoch and k == execution}

    async def wait_for(self, epoch_of: Any, execution: str, last_seq: int) -> None:
        """Until this watcher holds seq ``last_seq`` of ``execution`` under the current epoch."""
        await self.wait_until(lambda: last_seq in self.seen(epoch_of(), execution))

    async def wait_until(self, check: Any) -> None:
        """Until ``check()`` holds of what this watcher got (checked at each frame)."""
        with trio.fail_after(TIMEOUT * 3):
            while not check():
                await self.changed.wait()


async def stored(node: Address, execution: str) -> dict[int, str]:
    """seq -> instanceId of what ``node`` says is stored of ``execution``."""
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
        answer = await http.get(node.url(f"/api/executions/{execution}/events?limit=10000"))
    answer.raise_for_status()
    return {e["seq"]: e.get("instanceId", "") for e in answer.json()}


async def health(node: Address) -> dict[str, Any]:
    """``GET /api/health`` of a node."""
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
        answer = await http.get(node.url("/api/health"))
    body: dict[str, Any] = answer.json()
    return body


async def until_healthy(node: Address) -> None:
    """Until ``/api/health`` of ``node`` says ``ok``: after a failover, or a replica that
    joined, a write's ``WAIT`` may still time out now and then on a loaded machine (the
    replica resyncing), and health says ``degraded`` for that moment. Fails with the last
    answer after :data:`~support.TIMEOUT` (polled: nothing tells when Redis is in sync)."""
    body: dict[str, Any] = {}
    with trio.move_on_after(TIMEOUT):
        while (body := await health(node))["status"] != "ok":  # noqa: ASYNC110 - polled
            await trio.sleep(0.1)
        return
    raise AssertionError(f"{node.url('/api/health')} not ok after {TIMEOUT} s: {body}")


def check_history(
    watchers: list[Watcher],
    producers: list[Producer],
    history: dict[str, dict[int, str]],
    epoch: str,
    first_epoch: str,
) -> None:
    """Hold what was acknowledged and what each watcher saw against the final ``history``
    (execution -> seq -> instanceId) under ``epoch`` (SPEC §10: never silent)."""
    for p in producers:
        kept = history[p.execution]
        lost = {name: seq for name, seq in p.acked.items() if kept.get(seq) != name}
        # An acknowledged event is kept under its seq, unless the history changed.
        assert not lost or epoch != first_epoch, f"lost under the same epoch: {lost}"
    for w in watchers:
        by_epoch: dict[tuple[str, str], list[int]] = {}
        for e, key, seq, _ in w.received:
            by_epoch.setdefault((e, key), []).append(seq)
        for (e, _key), seqs in by_epoch.items():
            assert seqs == sorted(set(seqs)), f"a duplicate or a step back under {e}: {seqs}"
        for key, kept in history.items():
            shown = w.seen(epoch, key)
            wrong = {s: (i, kept.get(s)) for s, i in shown.items() if kept.get(s) != i}
            assert not wrong, f"shown under epoch {epoch} but stored otherwise: {wrong}"
        epochs = [e for e, *_ in w.received]
        if any(e != epoch for e in epochs):
            assert w.resets, "the history changed under this watcher without a reset"
