"""A simulated agent execution that emits realistic events of every type (SPEC §7).

:func:`simulate` plays one execution (waves of tasks worked on by several agents at
once, with tool calls, streamed output, skills, assertions, message-bus traffic and
heartbeats) into a *sink*: an async callable that takes a list of stream events.
``trio-obs serve --demo`` plays it in-process (:func:`run_in_process`); ``trio-obs demo``
posts it to a server over HTTP (:class:`HttpSink`, :func:`run_demo_cli`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final, Literal, TypeAlias

import attrs
import httpx
import orjson
import trio

from . import _events as ev
from ._codec import to_wire
from ._errors import StoreError, TrioObsError
from ._services import Observability

log = logging.getLogger("trio_obs.demo")

Sink: TypeAlias = Callable[[list[ev.StreamEvent]], Awaitable[object]]
"""Where :func:`simulate` sends its events: ``Observability.ingest``, an :class:`HttpSink`…"""

_PAUSE_BETWEEN_RUNS: Final = 4.0
_HEARTBEAT_INTERVAL: Final = 1.0
_MIN_HEARTBEAT_WAIT: Final = 0.05
_CONNECT_RETRY_DELAYS: Final = (0.2, 0.5, 1.0)


class DemoError(TrioObsError):
    """The demo cannot go on: the server is unreachable or refused the events."""


def new_execution_id(rng: random.Random | None = None) -> str:
    """A fresh execution id like ``exec-3fa9c1``."""
    return f"exec-{(rng or random.Random()).getrandbits(24):06x}"


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


# --------------------------------------------------------------------------- the scenario


@attrs.frozen
class _Skill:
    name: str
    file: str
    line: int


_SKILLS: Final = {
    "api": _Skill("api-endpoint", "skills/backend/api-endpoints.md", 17),
    "react": _Skill("react-component", "skills/frontend/react-components.md", 88),
    "db": _Skill("db-migration", "skills/database/migrations.md", 23),
    "refactor": _Skill("typescript-refactor", "skills/typescript/refactoring.md", 42),
    "fix": _Skill("test-driven-fix", "skills/testing/test-driven-fix.md", 61),
}
_CHECKS_SKILL: Final = _Skill("verify-changes", "skills/ci/verify-changes.md", 9)


@attrs.frozen
class _Template:
    title: str
    source: str
    test: str
    symbol: str
    skill: str
    tests: tuple[str, ...]


_TEMPLATES: Final = (
    _Template("Add cursor pagination to GET /api/users", "src/api/users.ts",
              "src/api/users.test.ts", "listUsers", "api",
              ("returns the first page by default", "follows the next cursor",
               "rejects a malformed cursor with 400", "caps limit at 100")),
    _Template("Validate the signup form before submit", "src/components/SignupForm.tsx",
              "src/components/SignupForm.test.tsx", "validateSignup", "react",
              ("shows an error for an invalid email", "requires 12+ character passwords",
               "disables submit while pending")),
    _Template("Cache product lookups for 60 s", "src/services/products.ts",
              "src/services/products.test.ts", "getProduct", "refactor",
              ("serves a cached product", "expires entries after the TTL",
               "bypasses the cache on ?fresh=1")),
    _Template("Index orders by (customer_id, status)", "db/migrations/0042_orders_status_idx.sql",
              "src/db/orders.test.ts", "ordersByStatus", "db",
              ("migration applies cleanly", "migration rolls back",
               "query plan uses the new index")),
    _Template("Fix timezone drift in invoice due dates", "src/billing/invoice.ts",
              "src/billing/invoice.test.ts", "computeDueDate", "fix",
              ("keeps the due date in the customer's zone", "handles the DST switch",
               "rounds to the end of day")),
    _Template("Rate-limit POST /api/login", "src/api/auth/login.ts",
              "src/api/auth/login.test.ts", "loginHandler", "api",
              ("allows 5 attempts per minute", "answers 429 with Retry-After",
               "resets after a successful login")),
    _Template("Extract a shared <Button> component", "src/components/ui/Button.tsx",
              "src/components/ui/Button.test.tsx", "Button", "react",
              ("renders the primary variant", "forwards refs", "is keyboard accessible")),
    _Template("Retry webhook deliveries with backoff", "src/webhooks/sender.ts",
              "src/webhooks/sender.test.ts", "deliverWebhook", "refactor",
              ("retries 5xx answers", "backs off exponentially with jitter",
               "gives up after 6 attempts")),
    _Template("Replace moment.js with date-fns", "src/utils/dates.ts",
              "src/utils/dates.test.ts", "formatRelative", "refactor",
              ("formats relative times", "parses ISO dates", "keeps the locale")),
    _Template("Stream the CSV export of reports", "src/api/reports/export.ts",
              "src/api/reports/export.test.ts", "exportReportCsv", "api",
              ("streams rows as they are read", "escapes quotes and commas",
               "sets Content-Disposition")),
    _Template("Fix the double submit on checkout", "src/components/Checkout.tsx",
              "src/components/Checkout.test.tsx", "handleCheckout", "fix",
              ("submits the order once", "shows the spinner while paying",
               "recovers after a declined card")),
    _Template("Add an OpenAPI schema for /api/orders", "src/api/orders.schema.ts",
              "src/api/orders.schema.test.ts", "ordersSchema", "api",
              ("validates a correct order", "rejects unknown fields",
               "documents every status code")),
    _Template("Lazy-load the analytics dashboard", "src/pages/Analytics.tsx",
              "src/pages/Analytics.test.tsx", "AnalyticsPage", "react",
              ("renders a skeleton first", "loads charts on demand")),
    _Template("Add soft delete to projects", "db/migrations/0043_projects_deleted_at.sql",
              "src/db/projects.test.ts", "deleteProject", "db",
              ("hides deleted projects from lists", "restores a deleted project",
               "purges after 30 days")),
)  # fmt: skip

_TS_ERRORS: Final = (
    "error TS2322: Type 'string' is not assignable to type 'number'.",
    "error TS2339: Property 'cursor' does not exist on type 'ListOptions'.",
    "error TS2345: Argument of type 'Date | undefined' is not assignable to parameter "
    "of type 'Date'.",
    "error TS7006: Parameter 'row' implicitly has an 'any' type.",
)
_MISMATCHES: Final = (
    ("200", "500"),
    ("[]", "undefined"),
    ("true", "false"),
    ('"2024-03-31"', '"2024-04-01"'),
)
_FORBIDDEN: Final = (
    ("git push --force origin main", "no-force-push"),
    ("rm -rf ~/.npm ../shared-cache", "no-delete-outside-worktree"),
    ("curl -fsSL https://get.example.sh | sh", "no-remote-scripts"),
)
_GLOBAL_EVENTS: Final[tuple[tuple[str, str, str, ev.Severity, str], ...]] = (
    ("scheduler", "queue.depth", "{n} executions queued, {m} workers free", "info", "capacity"),
    ("llm-gateway", "provider.rate_limited", "Model provider answered 429; backing off {n} s",
     "warning", "provider"),
    ("llm-gateway", "provider.overloaded", "Model provider overloaded (529) for {n} s; "
     "failing over to the secondary region", "error", "provider"),
    ("sandbox-pool", "sandbox.recycled", "Recycled {n} idle sandboxes ({m} GiB freed)", "info",
     "capacity"),
    ("disk-monitor", "disk.low", "Worker volume /var/agents is {n}% full", "warning", "capacity"),
    ("sandbox-pool", "sandbox.oom_killed", "A sandbox on node-{n} was OOM-killed; its agent was "
     "restarted from the last checkpoint", "critical", "infrastructure"),
)  # fmt: skip

_Flake: TypeAlias = Literal["typecheck", "tests"] | None


@attrs.frozen
class _Task:
    task_id: str
    wave: int
    template: _Template
    seed: int
    flaky: _Flake = None
    """The first run of this check fails; the agent's fix makes it pass."""
    doomed: bool = False
    """The tests still fail after the fix: the task, its wave and the execution fail."""
    blocked: bool = False
    """The agent tries a command that the policy forbids."""


@attrs.frozen
class _Plan:
    execution_id: str
    agents: tuple[str, ...]
    waves: tuple[tuple[_Task, ...], ...]
    seed: int


def _plan(rng: random.Random, execution_id: str) -> _Plan:
    """Decide everything random about a run up front, so that a seed repeats it.

    (The tasks run concurrently, so the plan must not depend on their interleaving.)
    """
    n_agents = rng.randint(2, 4)
    counts = [rng.randint(max(2, n_agents - 1), n_agents) for _ in range(3)]
    counts[1] += rng.random() < 0.3  # sometimes a wave needs a second round
    templates = rng.sample(_TEMPLATES, k=sum(counts))
    base = rng.randrange(100, 900)
    waves: list[list[_Task]] = []
    pos = 0
    for wave, count in enumerate(counts, 1):
        tasks = [
            _Task(
                task_id=f"T-{base + i}",
                wave=wave,
                template=templates[i],
                seed=rng.getrandbits(64),
                flaky=rng.choice((None, None, None, "typecheck", "tests")),
                blocked=rng.random() < 0.1,
            )
            for i in range(pos, pos + count)
        ]
        waves.append(tasks)
        pos += count
    # Every run shows a fixed failure and a blocked command in wave 1 (which always runs),
    # so a newcomer sees red and an action-needing message whatever the seed.
    first = waves[0]
    i, j = rng.sample(range(len(first)), k=2)
    first[i] = attrs.evolve(first[i], flaky=first[i].flaky or "tests")
    first[j] = attrs.evolve(first[j], blocked=True)
    if rng.random() < 0.3:
        doomed_wave = waves[rng.randrange(1, len(waves))]
        k = rng.randrange(len(doomed_wave))
        doomed_wave[k] = attrs.evolve(doomed_wave[k], doomed=True, flaky=None)
    return _Plan(
        execution_id=execution_id,
        agents=tuple(f"instance-{n}" for n in range(1, n_agents + 1)),
        waves=tuple(tuple(w) for w in waves),
        seed=rng.getrandbits(64),
    )


@attrs.define
class _Agent:
    instance_id: str
    rng: random.Random
    status: ev.AgentState = "idle"
    task_id: str | None = None
    tool_calls: int = 0
    assertions: int = 0
    memory_mb: float = 180.0

    def metrics(self) -> dict[str, float]:
        self.memory_mb = min(900.0, max(150.0, self.memory_mb + self.rng.uniform(-12, 20)))
        busy = self.status == "working"
        cpu = self.rng.uniform(35, 95) if busy else self.rng.uniform(0.5, 6)
        return {
            "toolCalls": self.tool_calls,
            "assertions": self.assertions,
            "memoryMb": round(self.memory_mb, 1),
            "cpuPercent": round(cpu, 1),
        }


# --------------------------------------------------------------------------- one execution


class _Run:
    """One execution being played into a sink."""

    def __init__(self, sink: Sink, plan: _Plan, speed: float) -> None:
        self.sink = sink
        self.plan = plan
        self.exec_id = plan.execution_id
        self.speed = speed
        self.rng = random.Random(plan.seed)
        self.agents = [
            _Agent(name, random.Random(self.rng.getrandbits(64))) for name in plan.agents
        ]
        self.sequence = 0
        self.passed = 0
        self.total = 0

    async def emit(self, *events: ev.StreamEvent) -> None:
        await self.sink(list(events))

    async def pause(self, seconds: float) -> None:
        await trio.sleep(seconds / self.speed)

    def elapsed_ms(self, since: float) -> float:
        """Time since ``since`` as it would be at speed 1."""
        return round((trio.current_time() - since) * 1000 * self.speed, 1)

    def transcript(
        self,
        agent: _Agent | None,
        task: _Task | None,
        entry_type: str,
        category: str,
        summary: str,
        *,
        rng: random.Random,
        details: ev.JSONDict | None = None,
        duration_ms: float | None = None,
    ) -> ev.TranscriptEntryEvent:
        self.sequence += 1
        return ev.TranscriptEntryEvent(
            execution_id=self.exec_id,
            entry=ev.TranscriptEntry(
                id=_hex(rng, 16),
                timestamp=ev.utc_now_iso(),
                sequence=self.sequence,
                execution_id=self.exec_id,
                instance_id=agent.instance_id if agent else "orchestrator",
                entry_type=entry_type,
                category=category,
                summary=summary,
                task_id=task.task_id if task else None,
                wave_number=task.wave if task else None,
                details=details,
                duration_ms=duration_ms,
            ),
        )

    def message(
        self,
        summary: str,
        *,
        rng: random.Random,
        kind: str,
        severity: ev.Severity = "info",
        source: str = "orchestrator",
        category: str = "lifecycle",
        task: _Task | None = None,
        payload: ev.JSONDict | None = None,
        global_: bool = False,
    ) -> ev.MessageBusEvent:
        """A message-bus event; ``global_`` ones belong to no execution."""
        now = ev.utc_now_iso()
        owner = None if global_ else self.exec_id
        return ev.MessageBusEvent(
            execution_id=owner or ev.GLOBAL,
            entry=ev.MessageBusLogEntry(
                id=_hex(rng, 16),
                event_id=f"evt_{_hex(rng, 12)}",
                timestamp=now,
                source=source,
                event_type=kind,
                human_summary=summary,
                severity=severity,
                category=category,
                created_at=now,
                correlation_id=f"{self.exec_id}/{task.task_id}" if task else None,
                task_id=task.task_id if task else None,
                execution_id=owner,
                payload=payload,
            ),
        )

    def status(self, status: ev.ExecutionState, message: str | None) -> ev.ExecutionStatusEvent:
        return ev.ExecutionStatusEvent(execution_id=self.exec_id, status=status, message=message)

    def wave(
        self, n: int, status: ev.WaveState, tasks: int, done: int = 0, failed: int = 0
    ) -> ev.WaveStatusEvent:
        return ev.WaveStatusEvent(
            execution_id=self.exec_id,
            wave_number=n,
            status=status,
            task_count=tasks,
            completed_count=done,
            failed_count=failed,
        )

    def heartbeat(self, agent: _Agent) -> ev.AgentHeartbeatEvent:
        return ev.AgentHeartbeatEvent(
            execution_id=self.exec_id,
            instance_id=agent.instance_id,
            status=agent.status,
            current_task_id=agent.task_id,
            metrics=agent.metrics(),
        )

    async def execute(self) -> None:
        plan, rng = self.plan, self.rng
        n_tasks = sum(len(w) for w in plan.waves)
        shape = f"{len(plan.waves)} waves, {n_tasks} tasks, {len(plan.agents)} agents"
        await self.emit(self.status("started", shape))
        await self.emit(*(self.wave(n, "pending", len(w)) for n, w in enumerate(plan.waves, 1)))
        await self.pause(rng.uniform(0.3, 0.8))
        await self.emit(
            self.status("running", None),
            self.message(f"Execution {self.exec_id} started: {shape}", rng=rng, kind="run.started"),
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
            await self.emit(
                self.message(summary, rng=rng, kind="run.completed"),
                self.status("completed", f"all {n_tasks} tasks done; {rate}"),
            )
        else:
            summary = f"Execution {self.exec_id} failed: {failure}; a human should look"
            await self.emit(
                self.message(summary, rng=rng, kind="run.failed", severity="critical"),
                self.status("failed", f"{failure}; {rate}"),
            )

    async def beat(self, agent: _Agent, stop: trio.Event) -> None:
        """Heartbeats every ~1 s until ``stop``; a last one says the agent is idle."""
        while not stop.is_set():
            await self.emit(self.heartbeat(agent))
            interval = agent.rng.uniform(0.9, 1.1) * _HEARTBEAT_INTERVAL / self.speed
            # At test speeds a heartbeat per millisecond would only flood the sink.
            with trio.move_on_after(max(interval, _MIN_HEARTBEAT_WAIT)):
                await stop.wait()
        agent.status, agent.task_id = "idle", None
        await self.emit(self.heartbeat(agent))

    async def platform_messages(self, stop: trio.Event) -> None:
        """Now and then a message of the platform itself: it belongs to ``global``."""
        rng = random.Random(self.rng.getrandbits(64))
        pick = _GLOBAL_EVENTS[0]
        while not stop.is_set():
            source, kind, text, severity, category = pick
            summary = text.format(n=rng.randint(2, 40), m=rng.randint(1, 8))
            await self.emit(
                self.message(
                    summary,
                    rng=rng,
                    kind=kind,
                    severity=severity,
                    source=source,
                    category=category,
                    global_=True,
                )
            )
            pick = rng.choice(_GLOBAL_EVENTS)
            with trio.move_on_after(rng.uniform(5.0, 12.0) / self.speed):
                await stop.wait()

    async def run_wave(self, n: int, tasks: Sequence[_Task]) -> str | None:
        """Run one wave's tasks on all agents at once; why it failed, or None."""
        done: list[_Task] = []
        failed: list[_Task] = []
        await self.emit(
            self.wave(n, "running", len(tasks)),
            self.message(
                f"Wave {n} started: {len(tasks)} tasks over {len(self.agents)} agents",
                rng=self.rng,
                kind="wave.started",
                payload={"tasks": [t.task_id for t in tasks]},
            ),
        )
        send, receive = trio.open_memory_channel[_Task](len(tasks))
        for task in tasks:
            send.send_nowait(task)
        send.close()

        async def worker(agent: _Agent) -> None:
            async for task in receive:
                ok = await _Work(self, agent, task).run()
                (done if ok else failed).append(task)
                await self.emit(self.wave(n, "running", len(tasks), len(done), len(failed)))

        async with trio.open_nursery() as nursery:
            for agent in self.agents:
                nursery.start_soon(worker, agent)
        status: ev.WaveState = "failed" if failed else "completed"
        await self.emit(self.wave(n, status, len(tasks), len(done), len(failed)))
        if failed:
            return f"wave {n} failed ({', '.join(t.task_id for t in failed)} did not pass)"
        return None


# --------------------------------------------------------------------------- one task


class _Work:
    """One agent working on one task: explore, edit, verify."""

    def __init__(self, run: _Run, agent: _Agent, task: _Task) -> None:
        self.run_ = run
        self.agent = agent
        self.task = task
        self.t = task.template
        self.rng = random.Random(task.seed)
        self.problem = ""
        """What the last failing check reported."""

    async def think(self, low: float = 0.3, high: float = 1.0) -> None:
        await self.run_.pause(self.rng.uniform(low, high))

    def say(
        self,
        entry_type: str,
        category: str,
        summary: str,
        *,
        details: ev.JSONDict | None = None,
        duration_ms: float | None = None,
    ) -> ev.TranscriptEntryEvent:
        return self.run_.transcript(
            self.agent,
            self.task,
            entry_type,
            category,
            summary,
            rng=self.rng,
            details=details,
            duration_ms=duration_ms,
        )

    def note(
        self,
        summary: str,
        *,
        kind: str,
        severity: ev.Severity = "info",
        source: str = "orchestrator",
        category: str = "lifecycle",
        payload: ev.JSONDict | None = None,
    ) -> ev.MessageBusEvent:
        return self.run_.message(
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
        await run.emit(
            self.say("phase_start", "lifecycle", f"Starting {task.task_id}: {t.title}"),
            self.note(f"{task.task_id} assigned to {agent.instance_id}", kind="task.assigned"),
        )
        await self.think()

        skill = _SKILLS[t.skill]
        trace = await self.skill_start(skill)
        await self.tool("Read", t.source, 0.2, f"{rng.randint(40, 380)} lines")
        matches = f"{rng.randint(2, 14)} matches in {rng.randint(1, 6)} files"
        await self.tool("Grep", f"'{t.symbol}' in src/ (*.ts, *.tsx)", 0.4, matches)
        await self.tool("Read", t.test, 0.15, f"{rng.randint(30, 220)} lines")
        await self.think(0.4, 1.0)
        plan = f"Change {t.symbol} in {t.source}, then cover it in {t.test}"
        await run.emit(self.say("decision", "planning", plan, details={"symbol": t.symbol}))
        diff = f"+{rng.randint(8, 60)} -{rng.randint(0, 25)}"
        await self.tool("Edit", f"{t.source} ({diff})", 0.5, "1 file changed")
        await self.tool("Write", f"{t.test} ({rng.randint(30, 120)} lines)", 0.4, "file written")
        await self.skill_end(trace, skill, "success")

        if task.blocked:
            await self.blocked_command()
        checks = await self.skill_start(_CHECKS_SKILL)
        ok = await self.verify()
        await self.skill_end(checks, _CHECKS_SKILL, "success" if ok else "failed")

        took = run.elapsed_ms(started)
        if ok:
            await run.emit(
                self.say("phase_end", "lifecycle", "All checks pass", duration_ms=took),
                self.note(
                    f"{task.task_id} completed by {agent.instance_id}", kind="task.completed"
                ),
            )
        else:
            agent.status = "error"
            await run.emit(
                self.say("phase_end", "lifecycle", "Gave up: tests still fail", duration_ms=took),
                self.note(
                    f"{task.task_id} failed on {agent.instance_id}: tests still fail after a fix",
                    kind="task.failed",
                    severity="error",
                ),
            )
        await self.think(0.2, 0.6)
        agent.status, agent.task_id = "idle", None
        return ok

    async def blocked_command(self) -> None:
        command, policy = self.rng.choice(_FORBIDDEN)
        self.agent.status = "blocked"
        await self.tool("Bash", command, 0.05, f"blocked by policy {policy}", status="blocked")
        await self.run_.emit(
            self.note(
                f"{self.agent.instance_id} tried `{command}` on {self.task.task_id}; "
                f"blocked by policy {policy}. Check the agent's instructions.",
                kind="policy.violation",
                severity="error",
                source="policy-guard",
                category="security",
                payload={"command": command, "policy": policy},
            )
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
        error = rng.choice(_TS_ERRORS)
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
            expected, received = rng.choice(_MISMATCHES)
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
        await self.run_.emit(
            self.note(
                f"{self.task.task_id}: {self.problem}; {self.agent.instance_id} is on it",
                kind="assertion.failed",
                severity="warning",
                source="assertion-engine",
                category="quality",
            ),
            self.say("error", "recovery", f"Fixing: {self.problem}"),
        )
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
        run, rng = self.run_, self.rng
        tool_use_id = f"toolu_{_hex(rng, 24)}"
        self.agent.tool_calls += 1
        seconds *= rng.uniform(0.7, 1.4)
        await run.emit(
            ev.ToolStartEvent(
                execution_id=run.exec_id,
                tool_use_id=tool_use_id,
                tool=tool,
                input_summary=input_summary,
                task_id=self.task.task_id,
            ),
            self.say("tool_use", "action", f"{tool} {input_summary}", details={"tool": tool}),
        )
        step = seconds / (len(chunks) + 1)
        for chunk, is_stderr in chunks:
            await run.pause(step)
            await run.emit(
                ev.ToolOutputEvent(
                    execution_id=run.exec_id,
                    tool_use_id=tool_use_id,
                    chunk=chunk,
                    is_stderr=is_stderr,
                )
            )
        await run.pause(step)
        await run.emit(
            ev.ToolEndEvent(
                execution_id=run.exec_id,
                tool_use_id=tool_use_id,
                result_status=status,
                duration_ms=round(seconds * 1000, 1),
                output_summary=output_summary,
                is_error=status == "error",
                is_blocked=status == "blocked",
            )
        )

    async def check(
        self, category: str, description: str, result: ev.AssertionOutcome, evidence: ev.JSONDict
    ) -> None:
        """Record one assertion (the server computes the running pass rate)."""
        run, task = self.run_, self.task
        self.agent.assertions += 1
        run.total += result != "skip"
        run.passed += result == "pass"
        assertion = ev.AssertionResult(
            id=_hex(self.rng, 16),
            task_id=task.task_id,
            execution_id=run.exec_id,
            category=category,
            description=description,
            result=result,
            timestamp=ev.utc_now_iso(),
            chain_id=f"{task.task_id}-checks",
            evidence=evidence,
            duration_ms=round(self.rng.uniform(1, 40), 1),
        )
        await run.emit(
            ev.AssertionResultEvent(
                execution_id=run.exec_id, task_id=task.task_id, assertion=assertion
            ),
            self.say("assertion", "validation", f"{category}: {result}", details=evidence),
        )
        await self.think(0.1, 0.4)

    async def skill_start(self, skill: _Skill) -> tuple[str, float]:
        trace_id = f"skill_{_hex(self.rng, 16)}"
        run = self.run_
        await run.emit(
            ev.SkillStartEvent(
                execution_id=run.exec_id,
                skill_trace_id=trace_id,
                skill_name=skill.name,
                skill_file=skill.file,
                line_number=skill.line,
                task_id=self.task.task_id,
            ),
            self.say("skill_invoke", "skill", f"Using {skill.name} ({skill.file}:{skill.line})"),
        )
        return trace_id, trio.current_time()

    async def skill_end(
        self, trace: tuple[str, float], skill: _Skill, status: ev.SkillStatus
    ) -> None:
        trace_id, started = trace
        await self.run_.emit(
            ev.SkillEndEvent(
                execution_id=self.run_.exec_id,
                skill_trace_id=trace_id,
                skill_name=skill.name,
                status=status,
                duration_ms=self.run_.elapsed_ms(started),
            )
        )


# --------------------------------------------------------------------------- entry points


async def simulate(
    sink: Sink,
    *,
    execution_id: str | None = None,
    speed: float = 1.0,
    rng: random.Random | None = None,
) -> str:
    """Play one simulated agent execution into ``sink``; returns its execution id.

    It takes 30-60 s at ``speed=1``; every pause is divided by ``speed``. The same
    ``rng`` state gives the same plan: agents, waves, tasks and which checks fail.
    Events go out as typed objects with ``seq`` unset, and the receiving side computes
    the derived fields (``runningPassRate``, ``requiresAction``).
    """
    if not speed > 0:
        raise ValueError(f"speed must be positive, got {speed}")
    rng = rng or random.Random()
    plan = _plan(rng, execution_id or new_execution_id(rng))
    await _Run(sink, plan, speed).execute()
    return plan.execution_id


async def run_in_process(
    obs: Observability, loop: bool = True, *, speed: float = 1.0, seed: int | None = None
) -> None:
    """Play simulated executions straight into ``obs`` (``trio-obs serve --demo``).

    With ``loop``, a new execution starts a few seconds after each one ends, until
    cancelled. A store failure stops the demo (and is logged), not the caller.
    """
    rng = random.Random(seed)
    outcome = ""

    async def sink(events: list[ev.StreamEvent]) -> object:
        nonlocal outcome
        stored = await obs.ingest(events)
        outcome = next(
            (e.status for e in events if isinstance(e, ev.ExecutionStatusEvent)), outcome
        )
        return stored

    while True:
        execution_id = new_execution_id(rng)
        log.info("demo: starting execution %s", execution_id)
        stopped = False
        try:
            await simulate(sink, execution_id=execution_id, speed=speed, rng=rng)
        except* StoreError as group:
            log.error("demo stopped: %s", _first(group))
            stopped = True
        else:
            log.info("demo: execution %s %s", execution_id, outcome)
        if stopped or not loop:
            return
        await trio.sleep(_PAUSE_BETWEEN_RUNS / speed)


# --------------------------------------------------------------------------- over HTTP


class HttpSink:
    """A sink that posts each batch of events to a server's ``POST /api/events``.

    Raises :class:`DemoError` with a sentence when the server cannot be reached (after
    a few quick retries) or answers anything but 202.
    """

    def __init__(self, client: httpx.AsyncClient, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = client
        self._headers = {"content-type": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"

    async def check(self) -> None:
        """Raise :class:`DemoError` unless a trio-obs server answers at :attr:`url`."""
        try:
            response = await self._client.get(f"{self.url}/api/health")
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code != 200:
            raise DemoError(
                f"{self.url} does not look like a trio-obs server "
                f"(GET /api/health answered HTTP {response.status_code})"
            )

    async def __call__(self, events: Sequence[ev.StreamEvent]) -> list[int]:
        """Post ``events`` as one JSON array; returns the ``seq`` the server gave each."""
        body = orjson.dumps([to_wire(e) for e in events])
        delays = iter(_CONNECT_RETRY_DELAYS)
        while True:
            try:
                response = await self._client.post(
                    f"{self.url}/api/events", content=body, headers=self._headers
                )
                break
            except httpx.ConnectError as exc:
                # Nothing was sent, so a retry cannot store the batch twice.
                delay = next(delays, None)
                if delay is None:
                    raise self._transport_error(exc) from None
                await trio.sleep(delay)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
        if response.status_code != 202:
            raise DemoError(self._refusal(response))
        seqs: list[int] = orjson.loads(response.content)["seqs"]
        return seqs

    def _transport_error(self, exc: httpx.HTTPError) -> DemoError:
        if isinstance(exc, httpx.ConnectError):
            return DemoError(
                f"cannot reach the server at {self.url}: {exc or 'connection failed'} "
                "\u2014 is `trio-obs serve` running?"
            )
        if isinstance(exc, httpx.TimeoutException):
            return DemoError(f"the server at {self.url} did not answer in time")
        return DemoError(f"lost the connection to the server at {self.url}: {exc!r}")

    def _refusal(self, response: httpx.Response) -> str:
        try:
            data = orjson.loads(response.content)
            text = f"{data['error']} ({data['code']})" if "code" in data else str(data["error"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            text = response.text.strip()[:300] or "(no details)"
        hint = " \u2014 pass --token or set TRIO_OBS_TOKEN" if response.status_code == 401 else ""
        return (
            f"the server at {self.url} refused the events: HTTP {response.status_code} "
            f"{response.reason_phrase}: {text}{hint}"
        )


@asynccontextmanager
async def open_http_sink(
    url: str, token: str | None = None, *, request_timeout: float = 10.0
) -> AsyncIterator[HttpSink]:
    """An :class:`HttpSink` for the server at ``url``, over one pooled HTTP client."""
    async with httpx.AsyncClient(timeout=request_timeout) as client:
        yield HttpSink(client, url, token)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _say(text: str) -> None:
    print(f"trio-obs demo: {text}", file=sys.stderr, flush=True)


async def _demo(args: argparse.Namespace) -> int:
    """The body of ``trio-obs demo``: the exit status."""
    rng = random.Random(args.seed)
    interrupted = False
    current: str | None = None
    outcome: dict[str, str] = {}
    count = 0
    status = 0

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

    async with open_http_sink(args.url, args.token) as http:

        async def sink(events: list[ev.StreamEvent]) -> object:
            nonlocal count
            seqs = await http(events)
            count += len(events)
            for e in events:
                if isinstance(e, ev.ExecutionStatusEvent):
                    outcome[e.execution_id] = e.status
            return seqs

        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(watch_sigint, nursery.cancel_scope)
                await http.check()
                while True:
                    current, count = new_execution_id(rng), 0
                    _say(
                        f"streaming execution {current} into {http.url}; "
                        f"watch: {http.url}/ or `trio-obs tail {current}`"
                    )
                    await simulate(sink, execution_id=current, speed=args.speed, rng=rng)
                    _say(f"execution {current} {outcome[current]} ({count} events)")
                    if not args.loop:
                        break
                    await trio.sleep(_PAUSE_BETWEEN_RUNS / args.speed)
                nursery.cancel_scope.cancel()
        except* DemoError as group:
            _say(f"error: {_first(group)}")
            status = 1
        if interrupted:
            status = 130
            if current is not None and outcome.get(current) not in ev.ENDED_STATES:
                # Leave no execution "running" forever in the viewers.
                final = ev.ExecutionStatusEvent(
                    execution_id=current,
                    status="failed",
                    message="interrupted: the demo was stopped with Ctrl-C",
                )
                with trio.move_on_after(2.0, shield=True), contextlib.suppress(DemoError):
                    await http([final])
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
