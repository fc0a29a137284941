"""One agent working on one task of the demo: explore, edit, verify (tool calls, output,
skills, assertions, transcript and message-bus traffic), through the services."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ..core import events as ev
from ..core.protocol import Severity
from .scenario import (
    CHECKS_SKILL,
    FORBIDDEN,
    MISMATCHES,
    SKILLS,
    TS_ERRORS,
    Agent,
    Skill,
    Task,
    hex_id,
)

if TYPE_CHECKING:
    from .play import Run


class Work:
    """One agent working on one task: explore, edit, verify."""

    def __init__(self, run: Run, agent: Agent, task: Task) -> None:
        self.run_ = run
        self.agent = agent
        self.task = task
        self.t = task.template
        self.rng = random.Random(task.seed)
        self.problem = ""
        """What the last failing check reported."""
        self.span_id = f"agent_{task.task_id}"
        """The agent span this work runs in (SPEC §12): its model call, tools and skills."""
        self.tokens = random.Random(f"{task.seed}-tokens")
        """Token counts of the model call (apart, so the scenario's draws stay as they were)."""

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
        await run.svc.spans.start(
            run.exec_id, "agent", agent.instance_id, span_id=self.span_id, task_id=task.task_id
        )
        await self.say("phase_start", "lifecycle", f"Starting {task.task_id}: {t.title}")
        await self.note(f"{task.task_id} assigned to {agent.instance_id}", kind="task.assigned")
        await self.think()

        skill = SKILLS[t.skill]
        trace = await self.skill_start(skill)
        await self.tool("Read", t.source, 0.2, f"{rng.randint(40, 380)} lines")
        matches = f"{rng.randint(2, 14)} matches in {rng.randint(1, 6)} files"
        await self.tool("Grep", f"'{t.symbol}' in src/ (*.ts, *.tsx)", 0.4, matches)
        await self.tool("Read", t.test, 0.15, f"{rng.randint(30, 220)} lines")
        plan = f"Change {t.symbol} in {t.source}, then cover it in {t.test}"
        await self.model_call(plan)
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
        await run.svc.spans.end(
            run.exec_id,
            self.span_id,
            "done" if ok else "error",
            output="All checks pass" if ok else None,
            error=None if ok else "tests still fail after a fix",
        )
        await self.think(0.2, 0.6)
        agent.status, agent.task_id = "idle", None
        return ok

    async def model_call(self, answer: str) -> None:
        """The agent asks its model what to do (a ``span:start`` and ``span:end`` of kind llm)."""
        run = self.run_
        model = "claude-sonnet-4-5"
        call = await run.svc.spans.start(
            run.exec_id, "llm", f"chat {model}", parent_span_id=self.span_id,
            model=model, provider="anthropic", task_id=self.task.task_id,
        )  # fmt: skip
        await self.think(0.4, 1.0)
        usage = {
            "inputTokens": self.tokens.randint(1_500, 9_000),
            "outputTokens": self.tokens.randint(80, 600),
        }
        await run.svc.spans.end(
            run.exec_id, call.span_id, model=model, usage=usage, output=answer,
            finish_reasons=["end_turn"],
        )  # fmt: skip

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
            run.exec_id,
            tool,
            input_summary,
            tool_use_id=tool_use_id,
            task_id=self.task.task_id,
            parent_span_id=self.span_id,
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
            parent_span_id=self.span_id,
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
