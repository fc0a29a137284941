"""Play the demo's scenario through the producer services, in process or over HTTP.

:func:`simulate` plays one execution (waves of tasks worked on by several agents at
once, with tool calls, streamed output, skills, assertions, message-bus traffic and
heartbeats) through :class:`~trio_obs.producers.Services`: the same builders a real
runner uses. ``trio-obs serve --demo`` plays it into the server's own hub
(:func:`run_in_process`); ``trio-obs demo`` posts it to a server
(:class:`~trio_obs.client.post.HttpPublisher`, :func:`run_demo_cli`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import signal
import sys
from collections.abc import Sequence
from typing import Final

import httpx
import trio

from ..client.common import PostRejected, error_text
from ..client.post import HttpPublisher
from ..core import events as ev
from ..core.errors import StoreError, TrioObsError
from ..core.protocol import ENDED_STATES, Severity
from ..core.routing import Envelope
from ..producers import Observability, Publisher, Services
from .scenario import (
    CHECKS_SKILL,
    FORBIDDEN,
    GLOBAL_EVENTS,
    MISMATCHES,
    SKILLS,
    TS_ERRORS,
    Agent,
    Plan,
    Skill,
    Task,
    hex_id,
    make_plan,
    new_execution_id,
)

log = logging.getLogger("trio_obs.demo")

PAUSE_BETWEEN_RUNS: Final = 4.0
_HEARTBEAT_INTERVAL: Final = 1.0
_MIN_HEARTBEAT_WAIT: Final = 0.05
_FINAL_STATUS_TIMEOUT: Final = 2.0


class DemoError(TrioObsError):
    """The demo cannot go on: the server is unreachable or refused the events."""


# --------------------------------------------------------------------------- one execution


class _Run:
    """One execution being played through the services."""

    def __init__(self, services: Services, plan: Plan, speed: float) -> None:
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
                ok = await _Work(self, agent, task).run()
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


# --------------------------------------------------------------------------- one task


class _Work:
    """One agent working on one task: explore, edit, verify."""

    def __init__(self, run: _Run, agent: Agent, task: Task) -> None:
        self.run_ = run
        self.agent = agent
        self.task = task
        self.t = task.template
        self.rng = random.Random(task.seed)
        self.problem = ""
        """What the last failing check reported."""

    async def think(self, low: float = 0.3, high: float = 1.0) -> None:
        await self.run_.pause(self.rng.uniform(low, high))

    async def say(
        self,
        entry_type: str,
        category: str,
        summary: str,
        *,
        details: ev.JSONDict | None = None,
        duration_ms: float | None = None,
    ) -> None:
        await self.run_.say(
            self.agent,
            self.task,
            entry_type,
            category,
            summary,
            rng=self.rng,
            details=details,
            duration_ms=duration_ms,
        )

    async def note(
        self,
        summary: str,
        *,
        kind: str,
        severity: Severity = "info",
        source: str = "orchestrator",
        category: str = "lifecycle",
        payload: ev.JSONDict | None = None,
    ) -> None:
        await self.run_.message(
            summary,
            rng=self.rng,
            kind=kind,
            severity=severity,
            source=source,
            category=category,
            task=self.task,
            payload=payload,
        )

    async def run(self) -> bool:
        """Work the task through; True when every check passed in the end."""
        run, agent, task, t, rng = self.run_, self.agent, self.task, self.t, self.rng
        started = trio.current_time()
        agent.status, agent.task_id = "working", task.task_id
        await self.say("phase_start", "lifecycle", f"Starting {task.task_id}: {t.title}")
        await self.note(f"{task.task_id} assigned to {agent.instance_id}", kind="task.assigned")
        await self.think()

        skill = SKILLS[t.skill]
        trace = await self.skill_start(skill)
        await self.tool("Read", t.source, 0.2, f"{rng.randint(40, 380)} lines")
        matches = f"{rng.randint(2, 14)} matches in {rng.randint(1, 6)} files"
        await self.tool("Grep", f"'{t.symbol}' in src/ (*.ts, *.tsx)", 0.4, matches)
        await self.tool("Read", t.test, 0.15, f"{rng.randint(30, 220)} lines")
        await self.think(0.4, 1.0)
        plan = f"Change {t.symbol} in {t.source}, then cover it in {t.test}"
        await self.say("decision", "planning", plan, details={"symbol": t.symbol})
        diff = f"+{rng.randint(8, 60)} -{rng.randint(0, 25)}"
        await self.tool("Edit", f"{t.source} ({diff})", 0.5, "1 file changed")
        await self.tool("Write", f"{t.test} ({rng.randint(30, 120)} lines)", 0.4, "file written")
        await self.skill_end(trace, skill, "success")

        if task.blocked:
            await self.blocked_command()
        checks = await self.skill_start(CHECKS_SKILL)
        ok = await self.verify()
        await self.skill_end(checks, CHECKS_SKILL, "success" if ok else "failed")

        took = run.elapsed_ms(started)
        if ok:
            await self.say("phase_end", "lifecycle", "All checks pass", duration_ms=took)
            await self.note(
                f"{task.task_id} completed by {agent.instance_id}", kind="task.completed"
            )
        else:
            agent.status = "error"
            await self.say("phase_end", "lifecycle", "Gave up: tests still fail", duration_ms=took)
            await self.note(
                f"{task.task_id} failed on {agent.instance_id}: tests still fail after a fix",
                kind="task.failed",
                severity="error",
            )
        await self.think(0.2, 0.6)
        agent.status, agent.task_id = "idle", None
        return ok

    async def blocked_command(self) -> None:
        command, policy = self.rng.choice(FORBIDDEN)
        self.agent.status = "blocked"
        await self.tool("Bash", command, 0.05, f"blocked by policy {policy}", status="blocked")
        await self.note(
            f"{self.agent.instance_id} tried `{command}` on {self.task.task_id}; "
            f"blocked by policy {policy}. Check the agent's instructions.",
            kind="policy.violation",
            severity="error",
            source="policy-guard",
            category="security",
            payload={"command": command, "policy": policy},
        )
        await self.think(0.8, 1.6)
        self.agent.status = "working"

    async def verify(self) -> bool:
        """Type-check, test and lint; a failing check gets one fix and a second run."""
        if not await self.typecheck(failing=self.task.flaky == "typecheck"):
            await self.fix()
            await self.typecheck(failing=False)
        if not await self.tests(failing=self.task.flaky == "tests" or self.task.doomed):
            await self.fix()
            if not await self.tests(failing=self.task.doomed):
                return False
        await self.lint()
        if self.rng.random() < 0.2:
            reason: ev.JSONDict = {"reason": "no browser in this sandbox"}
            await self.check("e2e_pass", "the Playwright smoke test passes", "skip", reason)
        return True

    async def typecheck(self, *, failing: bool) -> bool:
        t, rng = self.t, self.rng
        where = f"{t.source}({rng.randint(10, 200)},{rng.randint(3, 40)})"
        error = rng.choice(TS_ERRORS)
        chunks = [("\n> web@2.4.0 typecheck\n> tsc --noEmit\n\n", False)]
        if failing:
            chunks += [
                (f"{where}: {error}\n", False),
                (f"\nFound 1 error in {t.source}\n", False),
                ("npm error Lifecycle script `typecheck` failed\nnpm error code 2\n", True),
            ]
        summary = "exit 2: 1 error" if failing else "exit 0"
        status: ev.ToolResultStatus = "error" if failing else "done"
        seconds = rng.uniform(1.5, 2.5)
        await self.tool("Bash", "npm run typecheck", seconds, summary, status=status, chunks=chunks)
        evidence: ev.JSONDict = {"command": "npm run typecheck", "exitCode": 2 if failing else 0}
        if failing:
            evidence["firstError"] = f"{where}: {error}"
        description = "the project type-checks (tsc --noEmit)"
        await self.check(
            "typescript_compiles", description, "fail" if failing else "pass", evidence
        )
        self.problem = f"{error.split(': ', 1)[0].removeprefix('error ')} at {where}"
        return not failing

    async def tests(self, *, failing: bool) -> bool:
        t, rng = self.t, self.rng
        broken = rng.choice(t.tests)
        out = [f"{'FAIL' if failing else 'PASS'} {t.test}\n"]
        for name in t.tests:
            mark = "\u2715" if failing and name == broken else "\u2713"
            out.append(f"  {mark} {name} ({rng.randint(2, 120)} ms)\n")
        if failing:
            expected, received = rng.choice(MISMATCHES)
            out.append(
                f"\n  \u25cf {t.symbol} \u203a {broken}\n\n"
                f"    expect(received).toEqual(expected)\n\n"
                f"    Expected: {expected}\n    Received: {received}\n"
            )
        passed = len(t.tests) - failing
        tally = f"{'1 failed, ' if failing else ''}{passed} passed, {len(t.tests)} total"
        out.append(f"\nTests:       {tally}\nTime:        {rng.uniform(1.2, 4.8):.3f} s\n")
        # npm's banner goes to stdout, but jest reports on stderr.
        chunks = [(f"\n> web@2.4.0 test\n> jest {t.test}\n\n", False)]
        chunks += [(piece, True) for piece in out]
        command = f"npm test -- {t.test}"
        summary = f"exit 1: {tally}" if failing else f"exit 0: {tally}"
        status: ev.ToolResultStatus = "error" if failing else "done"
        await self.tool(
            "Bash", command, rng.uniform(2.0, 3.5), summary, status=status, chunks=chunks
        )
        evidence: ev.JSONDict = {"command": command, "passed": passed, "total": len(t.tests)}
        if failing:
            evidence["failing"] = broken
        await self.check("tests_pass", f"{t.test} passes", "fail" if failing else "pass", evidence)
        self.problem = f"test '{broken}' fails"
        return not failing

    async def lint(self) -> None:
        t, rng = self.t, self.rng
        warning = rng.random() < 0.3
        chunks = [(f"\n> web@2.4.0 lint\n> eslint {t.source}\n\n", False)]
        if warning:
            line = rng.randint(5, 90)
            chunks += [
                (
                    f"{t.source}\n  {line}:5  warning  Unexpected console statement  no-console\n",
                    False,
                ),
                ("\n\u2716 1 problem (0 errors, 1 warning)\n", False),
            ]
        summary = "exit 0: 1 warning" if warning else "exit 0: clean"
        await self.tool("Bash", f"npm run lint -- {t.source}", 1.0, summary, chunks=chunks)
        description = f"eslint reports nothing on {t.source}"
        result: ev.AssertionOutcome = "warn" if warning else "pass"
        await self.check("lint_clean", description, result, {"warnings": int(warning)})

    async def fix(self) -> None:
        """Report the failing check, then edit the source: the fix for :attr:`problem`."""
        await self.note(
            f"{self.task.task_id}: {self.problem}; {self.agent.instance_id} is on it",
            kind="assertion.failed",
            severity="warning",
            source="assertion-engine",
            category="quality",
        )
        await self.say("error", "recovery", f"Fixing: {self.problem}")
        await self.think(0.6, 1.4)
        diff = f"+{self.rng.randint(1, 6)} -{self.rng.randint(1, 4)}"
        await self.tool("Edit", f"{self.t.source} ({diff})", 0.4, "1 file changed")

    # ------------------------------------------------------------------ primitives

    async def tool(
        self,
        tool: str,
        input_summary: str,
        seconds: float,
        output_summary: str,
        *,
        status: ev.ToolResultStatus = "done",
        chunks: Sequence[tuple[str, bool]] = (),
    ) -> None:
        """One tool use: start, its output streamed in chunks, end."""
        run, rng, tools = self.run_, self.rng, self.run_.svc.tools
        tool_use_id = f"toolu_{hex_id(rng, 24)}"
        self.agent.tool_calls += 1
        seconds *= rng.uniform(0.7, 1.4)
        await tools.start(
            run.exec_id, tool, input_summary, tool_use_id=tool_use_id, task_id=self.task.task_id
        )
        await self.say("tool_use", "action", f"{tool} {input_summary}", details={"tool": tool})
        step = seconds / (len(chunks) + 1)
        for chunk, is_stderr in chunks:
            await run.pause(step)
            await tools.output(run.exec_id, tool_use_id, chunk, is_stderr=is_stderr)
        await run.pause(step)
        await tools.end(
            run.exec_id,
            tool_use_id,
            status,
            duration_ms=round(seconds * 1000, 1),
            output_summary=output_summary,
        )

    async def check(
        self, category: str, description: str, result: ev.AssertionOutcome, evidence: ev.JSONDict
    ) -> None:
        """Record one assertion (the ledger computes the running pass rate)."""
        run, task = self.run_, self.task
        self.agent.assertions += 1
        run.total += result != "skip"
        run.passed += result == "pass"
        await run.svc.assertions.record(
            run.exec_id,
            task.task_id,
            id=hex_id(self.rng, 16),
            category=category,
            description=description,
            result=result,
            chain_id=f"{task.task_id}-checks",
            evidence=evidence,
            duration_ms=round(self.rng.uniform(1, 40), 1),
        )
        await self.say("assertion", "validation", f"{category}: {result}", details=evidence)
        await self.think(0.1, 0.4)

    async def skill_start(self, skill: Skill) -> tuple[str, float]:
        trace_id = f"skill_{hex_id(self.rng, 16)}"
        run = self.run_
        await run.svc.skills.start(
            run.exec_id,
            skill.name,
            skill.file,
            skill.line,
            skill_trace_id=trace_id,
            task_id=self.task.task_id,
        )
        await self.say("skill_invoke", "skill", f"Using {skill.name} ({skill.file}:{skill.line})")
        return trace_id, trio.current_time()

    async def skill_end(
        self, trace: tuple[str, float], skill: Skill, status: ev.SkillStatus
    ) -> None:
        trace_id, started = trace
        run = self.run_
        await run.svc.skills.end(
            run.exec_id, trace_id, skill.name, status, duration_ms=run.elapsed_ms(started)
        )


# --------------------------------------------------------------------------- entry points


async def simulate(
    services: Services,
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
    run = _Run(services, make_plan(rng, execution_id or new_execution_id(rng)), speed)
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
    tally = _Tally(obs.hub)
    while True:
        execution_id = new_execution_id(rng)
        log.info("demo: starting execution %s", execution_id)
        failure: BaseException | None = None
        try:
            await simulate(Services.over(tally), execution_id=execution_id, speed=speed, rng=rng)
        except* StoreError as group:
            failure = _first(group)
        if failure is not None:
            log.error("demo stopped: %s", failure)
            return
        log.info("demo: execution %s %s", execution_id, tally.status.get(execution_id, "ended"))
        if not loop:
            return
        await trio.sleep(PAUSE_BETWEEN_RUNS / speed)


# --------------------------------------------------------------------------- over HTTP


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _say(text: str) -> None:
    print(f"trio-obs demo: {text}", file=sys.stderr, flush=True)


class _Tally:
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


def _explain(exc: BaseException, url: str) -> str:
    """A sentence for why the demo cannot post to ``url``."""
    if isinstance(exc, PostRejected):
        hint = " \u2014 pass --token or set TRIO_OBS_TOKEN" if exc.status == 401 else ""
        return (
            f"the server at {url} refused the events: HTTP {exc.status}: "
            f"{error_text(exc.body)}{hint}"
        )
    if isinstance(exc, httpx.ConnectError):
        return (
            f"cannot reach the server at {url}: {exc or 'connection failed'} "
            "\u2014 is `trio-obs serve` running?"
        )
    if isinstance(exc, httpx.TimeoutException):
        return f"the server at {url} did not answer in time"
    return f"lost the connection to the server at {url}: {exc!r}"


async def _check_server(client: httpx.AsyncClient, url: str) -> None:
    """Raise :class:`DemoError` unless a trio-obs server answers at ``url``."""
    try:
        response = await client.get(f"{url}/api/health")
    except httpx.HTTPError as exc:
        raise DemoError(_explain(exc, url)) from None
    if response.status_code not in (200, 503):
        raise DemoError(
            f"{url} does not look like a trio-obs server "
            f"(GET /api/health answered HTTP {response.status_code})"
        )


async def _demo(args: argparse.Namespace) -> int:
    """The body of ``trio-obs demo``: the exit status."""
    rng = random.Random(args.seed)
    interrupted = False
    status = 0
    url = args.url.rstrip("/")

    async def watch_sigint(
        cancel: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                interrupted = True
                cancel.cancel()
                return

    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        publisher = _Tally(HttpPublisher(url, token=args.token, client=client))
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(watch_sigint, nursery.cancel_scope)
                await _check_server(client, url)
                while True:
                    current = new_execution_id(rng)
                    _say(
                        f"streaming execution {current} into {url}; "
                        f"watch: {url}/ or `trio-obs tail {current}`"
                    )
                    publisher.count = 0
                    try:
                        await simulate(
                            Services.over(publisher),
                            execution_id=current,
                            speed=args.speed,
                            rng=rng,
                        )
                    except* (PostRejected, httpx.HTTPError) as group:
                        raise DemoError(_explain(_first(group), url)) from None
                    outcome = publisher.status.get(current, "ended")
                    _say(f"execution {current} {outcome} ({publisher.count} events)")
                    if not args.loop:
                        break
                    await trio.sleep(PAUSE_BETWEEN_RUNS / args.speed)
                nursery.cancel_scope.cancel()
        except* DemoError as group:
            _say(f"error: {_first(group)}")
            status = 1
    if interrupted:
        status = 130
    return status


def run_demo_cli(args: argparse.Namespace) -> int:
    """``trio-obs demo``: stream simulated executions into a server; the exit status.

    0 when done; 1 when the server is unreachable or refuses the events (with a
    sentence on stderr); 2 on a bad flag; 130 on Ctrl-C, after marking the execution
    failed.
    """
    if not args.speed > 0:
        _say(f"error: --speed must be positive, got {args.speed}")
        return 2
    if not args.url.startswith(("http://", "https://")):
        _say(f"error: --url must start with http:// or https://, got {args.url!r}")
        return 2
    status = 0
    try:
        status = trio.run(_demo, args)
    except* KeyboardInterrupt:
        status = 130
    return status
