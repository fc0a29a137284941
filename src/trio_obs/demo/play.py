"""Play the demo's scenario through the producer services, in process or over HTTP.

:func:`simulate` plays one execution (waves of tasks worked on by several agents at
once, with tool calls, streamed output, skills, assertions, message-bus traffic and
heartbeats) through :class:`~trio_obs.producers.Services`: the same builders a real
runner uses. ``trio-obs serve --demo`` plays it into the server's own hub
(:func:`run_in_process`); ``trio-obs demo`` posts it to a server
(:class:`~trio_obs.client.post.HttpPublisher`, :func:`run_demo_cli`).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Final

import httpx
import trio

from ..core import events as ev
from ..core.errors import StoreError, TrioObsError, first_error
from ..core.protocol import ENDED_STATES, Severity
from ..core.routing import Envelope
from ..producers import Observability, Publisher, Services
from .scenario import (
    GLOBAL_EVENTS,
    Agent,
    Plan,
    Task,
    hex_id,
    make_plan,
    new_execution_id,
)
from .work import Work

log = logging.getLogger("trio_obs.demo")

PAUSE_BETWEEN_RUNS: Final = 4.0
_HEARTBEAT_INTERVAL: Final = 1.0
_MIN_HEARTBEAT_WAIT: Final = 0.05
_FINAL_STATUS_TIMEOUT: Final = 2.0


# --------------------------------------------------------------------------- one execution


class Run:
    """One execution being played through the services."""

    def __init__(self, services: Services[Publisher], plan: Plan, speed: float) -> None:
        self.svc = services
        self.plan = plan
        self.exec_id = plan.execution_id
        self.speed = speed
        self.rng = random.Random(plan.seed)
        self.agents = [Agent(name, random.Random(self.rng.getrandbits(64))) for name in plan.agents]
        self.passed = 0
        self.total = 0
        self.ended = False
        """The execution's final status was stored."""

    async def pause(self, seconds: float) -> None:
        await trio.sleep(seconds / self.speed)

    def elapsed_ms(self, since: float) -> float:
        """Time since ``since`` as it would be at speed 1."""
        return round((trio.current_time() - since) * 1000 * self.speed, 1)

    async def say(
        self,
        agent: Agent | None,
        task: Task | None,
        entry_type: str,
        category: str,
        summary: str,
        *,
        rng: random.Random,
        details: ev.JSONDict | None = None,
        duration_ms: float | None = None,
    ) -> None:
        await self.svc.transcripts.record(
            self.exec_id,
            id=hex_id(rng, 16),
            instance_id=agent.instance_id if agent else "orchestrator",
            entry_type=entry_type,
            category=category,
            summary=summary,
            task_id=task.task_id if task else None,
            wave_number=task.wave if task else None,
            details=details,
            duration_ms=duration_ms,
        )

    async def message(
        self,
        summary: str,
        *,
        rng: random.Random,
        kind: str,
        severity: Severity = "info",
        source: str = "orchestrator",
        category: str = "lifecycle",
        task: Task | None = None,
        payload: ev.JSONDict | None = None,
        global_: bool = False,
    ) -> None:
        """A message-bus event; ``global_`` ones belong to no execution."""
        await self.svc.message_bus.log(
            id=hex_id(rng, 16),
            event_id=f"evt_{hex_id(rng, 12)}",
            source=source,
            event_type=kind,
            human_summary=summary,
            severity=severity,
            category=category,
            correlation_id=f"{self.exec_id}/{task.task_id}" if task else None,
            task_id=task.task_id if task else None,
            execution_id=None if global_ else self.exec_id,
            payload=payload,
        )

    async def status(self, status: ev.ExecutionState, message: str | None) -> None:
        await self.svc.executions.status(self.exec_id, status, message)
        self.ended = status in ENDED_STATES

    async def wave(
        self, n: int, status: ev.WaveState, tasks: int, done: int = 0, failed: int = 0
    ) -> None:
        await self.svc.executions.wave_status(
            self.exec_id, n, status, task_count=tasks, completed_count=done, failed_count=failed
        )

    async def heartbeat(self, agent: Agent) -> None:
        await self.svc.executions.heartbeat(
            self.exec_id,
            agent.instance_id,
            agent.status,
            current_task_id=agent.task_id,
            metrics=agent.metrics(),
        )

    async def execute(self) -> None:
        plan, rng = self.plan, self.rng
        n_tasks = sum(len(w) for w in plan.waves)
        shape = f"{len(plan.waves)} waves, {n_tasks} tasks, {len(plan.agents)} agents"
        await self.status("started", shape)
        for n, w in enumerate(plan.waves, 1):
            await self.wave(n, "pending", len(w))
        await self.pause(rng.uniform(0.3, 0.8))
        await self.status("running", None)
        await self.message(
            f"Execution {self.exec_id} started: {shape}", rng=rng, kind="run.started"
        )
        failure: str | None = None
        stop = trio.Event()
        async with trio.open_nursery() as background:
            for agent in self.agents:
                background.start_soon(self.beat, agent, stop)
            background.start_soon(self.platform_messages, stop)
            for n, tasks in enumerate(plan.waves, 1):
                failure = await self.run_wave(n, tasks)
                if failure is not None:
                    break
                await self.pause(rng.uniform(0.5, 1.5))
            # Background tasks finish the step they are in and leave: no send is ever cut
            # short, so the final status below really is the last event of the run.
            stop.set()
        rate = f"{self.passed}/{self.total} assertions passed"
        if failure is None:
            summary = f"Execution {self.exec_id} completed: {n_tasks} tasks, {rate}"
            await self.message(summary, rng=rng, kind="run.completed")
            await self.status("completed", f"all {n_tasks} tasks done; {rate}")
        else:
            summary = f"Execution {self.exec_id} failed: {failure}; a human should look"
            await self.message(summary, rng=rng, kind="run.failed", severity="critical")
            await self.status("failed", f"{failure}; {rate}")

    async def beat(self, agent: Agent, stop: trio.Event) -> None:
        """Heartbeats every ~1 s until ``stop``; a last one says the agent is idle."""
        while not stop.is_set():
            await self.heartbeat(agent)
            interval = agent.rng.uniform(0.9, 1.1) * _HEARTBEAT_INTERVAL / self.speed
            # At test speeds a heartbeat per millisecond would only flood the server.
            with trio.move_on_after(max(interval, _MIN_HEARTBEAT_WAIT)):
                await stop.wait()
        agent.status, agent.task_id = "idle", None
        await self.heartbeat(agent)

    async def platform_messages(self, stop: trio.Event) -> None:
        """Now and then a message of the platform itself: it belongs to ``global``."""
        rng = random.Random(self.rng.getrandbits(64))
        pick = GLOBAL_EVENTS[0]
        while not stop.is_set():
            source, kind, text, severity, category = pick
            summary = text.format(n=rng.randint(2, 40), m=rng.randint(1, 8))
            await self.message(
                summary,
                rng=rng,
                kind=kind,
                severity=severity,
                source=source,
                category=category,
                global_=True,
            )
            pick = rng.choice(GLOBAL_EVENTS)
            with trio.move_on_after(rng.uniform(5.0, 12.0) / self.speed):
                await stop.wait()

    async def run_wave(self, n: int, tasks: Sequence[Task]) -> str | None:
        """Run one wave's tasks on all agents at once; why it failed, or None."""
        done: list[Task] = []
        failed: list[Task] = []
        await self.wave(n, "running", len(tasks))
        await self.message(
            f"Wave {n} started: {len(tasks)} tasks over {len(self.agents)} agents",
            rng=self.rng,
            kind="wave.started",
            payload={"tasks": [t.task_id for t in tasks]},
        )
        send, receive = trio.open_memory_channel[Task](len(tasks))
        for task in tasks:
            send.send_nowait(task)
        send.close()

        async def worker(agent: Agent) -> None:
            async for task in receive:
                ok = await Work(self, agent, task).run()
                (done if ok else failed).append(task)
                await self.wave(n, "running", len(tasks), len(done), len(failed))

        async with trio.open_nursery() as nursery:
            for agent in self.agents:
                nursery.start_soon(worker, agent)
        status: ev.WaveState = "failed" if failed else "completed"
        await self.wave(n, status, len(tasks), len(done), len(failed))
        if failed:
            return f"wave {n} failed ({', '.join(t.task_id for t in failed)} did not pass)"
        return None


# --------------------------------------------------------------------------- entry points


class Tally:
    """A publisher that counts what goes through it and remembers each execution's status."""

    def __init__(self, inner: Publisher) -> None:
        self.inner = inner
        self.count = 0
        self.status: dict[str, str] = {}

    async def publish(
        self, events: Sequence[ev.StreamEvent], *, idempotency_key: str | None = None
    ) -> Sequence[Envelope]:
        stored = await self.inner.publish(events, idempotency_key=idempotency_key)
        self.count += len(events)
        for event in events:
            if isinstance(event, ev.ExecutionStatusEvent):
                self.status[event.execution_id] = event.status
        return stored


async def simulate(
    services: Services[Publisher],
    *,
    execution_id: str | None = None,
    speed: float = 1.0,
    rng: random.Random | None = None,
) -> str:
    """Play one simulated agent execution through ``services``; returns its execution id.

    It takes 30-60 s at ``speed=1``; every pause is divided by ``speed``. The same
    ``rng`` state gives the same plan: agents, waves, tasks and which checks fail. If it
    is cancelled before the end, the execution is marked ``failed`` (interrupted), so no
    viewer shows it running forever.
    """
    if not speed > 0:
        raise ValueError(f"speed must be positive, got {speed}")
    rng = rng or random.Random()
    run = Run(services, make_plan(rng, execution_id or new_execution_id(rng)), speed)
    try:
        await run.execute()
    finally:
        if not run.ended:
            # If the server is gone too, there is nothing more to tell it.
            with (
                trio.move_on_after(_FINAL_STATUS_TIMEOUT, shield=True),
                contextlib.suppress(TrioObsError, httpx.HTTPError),
            ):
                await services.executions.status(
                    run.exec_id, "failed", "interrupted: the demo was stopped"
                )
    return run.exec_id


async def run_in_process(
    obs: Observability, loop: bool = True, *, speed: float = 1.0, seed: int | None = None
) -> None:
    """Play simulated executions straight into ``obs`` (``trio-obs serve --demo``).

    With ``loop``, a new execution starts a few seconds after each one ends, until
    cancelled. A store failure stops the demo (and is logged), not the caller.
    """
    rng = random.Random(seed)
    tally = Tally(obs.hub)
    while True:
        execution_id = new_execution_id(rng)
        log.info("demo: starting execution %s", execution_id)
        failure: BaseException | None = None
        try:
            await simulate(Services.over(tally), execution_id=execution_id, speed=speed, rng=rng)
        except* StoreError as group:
            failure = first_error(group)
        if failure is not None:
            log.error("demo stopped: %s", failure)
            return
        log.info("demo: execution %s %s", execution_id, tally.status.get(execution_id, "ended"))
        if not loop:
            return
        await trio.sleep(PAUSE_BETWEEN_RUNS / speed)
