"""The live viewer page (SPEC §5 ``GET /``) in a real headless Chromium against a real server.

The server runs as a subprocess (``python -m trio_obs serve``) so that Playwright's sync API
owns this thread; events are posted over HTTP exactly as an external producer would.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is missing (apt-get install chromium)", pytrace=False)
    pytest.skip("chromium is not installed", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

from support import ServerProcess  # noqa: E402

expect.set_options(timeout=10_000)  # a cold Chromium start on a busy CI box can be slow
XSS_SCRIPT = "<script>window.__pwned=1</script>"
XSS_IMG = '<img src=x onerror="window.__pwned=1">'

# --------------------------------------------------------------------------- a real server


class Server(ServerProcess):
    """``trio-obs serve --db DB`` in a subprocess, posted to as an external producer would."""

    def __init__(self, db: Path, port: int = 0, *extra: str) -> None:
        super().__init__("--db", str(db), *extra, port=port, start_timeout=20)

    def post(self, events: list[dict[str, Any]], token: str | None = None) -> list[int]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx.post(self.url("/api/events"), json=events, headers=headers, timeout=10)
        assert r.status_code == 202, r.text
        seqs: list[int] = r.json()["seqs"]
        return seqs


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "obs.db")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


# --------------------------------------------------------------------------- wire events

_ids = itertools.count(1)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def tool_start(e: str, tid: str, tool: str, summary: str, task: str = "task-1") -> dict[str, Any]:
    return {
        "type": "tool:start", "executionId": e, "toolUseId": tid, "tool": tool,
        "inputSummary": summary, "taskId": task,
    }  # fmt: skip


def tool_output(e: str, tid: str, chunk: str, stderr: bool = False) -> dict[str, Any]:
    return {
        "type": "tool:output", "executionId": e, "toolUseId": tid, "chunk": chunk,
        "isStderr": stderr,
    }  # fmt: skip


def tool_end(e: str, tid: str, status: str, duration: float) -> dict[str, Any]:
    return {
        "type": "tool:end", "executionId": e, "toolUseId": tid, "resultStatus": status,
        "durationMs": duration,
    }  # fmt: skip


def assertion(e: str, task: str, result: str) -> dict[str, Any]:
    record = {
        "id": f"a{next(_ids)}", "taskId": task, "executionId": e, "category": "tests_pass",
        "description": "unit tests pass", "result": result, "timestamp": _now(),
    }  # fmt: skip
    return {"type": "assertion:result", "executionId": e, "taskId": task, "assertion": record}


def bus(e: str, severity: str, summary: str) -> dict[str, Any]:
    entry = {
        "id": f"m{next(_ids)}", "eventId": f"ev{next(_ids)}", "timestamp": _now(),
        "source": "build-monitor", "eventType": "task.blocked", "humanSummary": summary,
        "severity": severity, "category": "task", "createdAt": _now(), "executionId": e,
    }  # fmt: skip
    return {"type": "messagebus:event", "executionId": e, "entry": entry}


def transcript(e: str, summary: str, task: str = "task-1") -> dict[str, Any]:
    entry = {
        "id": f"t{next(_ids)}", "timestamp": _now(), "sequence": next(_ids), "executionId": e,
        "instanceId": "agent-1", "entryType": "message", "category": "agent",
        "summary": summary, "taskId": task,
    }  # fmt: skip
    return {"type": "transcript:entry", "executionId": e, "entry": entry}


def wave(e: str, done: int, failed: int) -> dict[str, Any]:
    return {
        "type": "wave:status", "executionId": e, "waveNumber": 1, "status": "running",
        "taskCount": 4, "completedCount": done, "failedCount": failed,
    }  # fmt: skip


def heartbeat(e: str, agent: str, status: str, task: str) -> dict[str, Any]:
    return {
        "type": "agent:heartbeat", "executionId": e, "instanceId": agent, "status": status,
        "currentTaskId": task, "metrics": {"cpuPercent": 12.5},
    }  # fmt: skip


def status(e: str, state: str, message: str = "") -> dict[str, Any]:
    return {"type": "execution:status", "executionId": e, "status": state, "message": message}


def demo(e: str) -> list[dict[str, Any]]:
    """A small execution that touches every panel of the page."""
    return [
        status(e, "running", "2 waves, 4 tasks"),
        wave(e, 0, 0),
        heartbeat(e, "agent-1", "working", "task-1"),
        transcript(e, "reading package.json"),
        tool_start(e, "tu1", "Bash", "npm test"),
        tool_output(e, "tu1", "12 passed\n"),
        tool_output(e, "tu1", "deprecation warning\n", stderr=True),
        tool_end(e, "tu1", "done", 120.5),
        assertion(e, "task-1", "pass"),
        wave(e, 1, 0),
    ]


# --------------------------------------------------------------------------- helpers


def rows(page: Page) -> list[int]:
    """The seq of every event shown in the timeline, in document order."""
    seqs: list[str] = page.eval_on_selector_all(
        "#timeline [data-testid=event-row]", "rows => rows.map(r => r.dataset.seq)"
    )
    return [int(s) for s in seqs]


def wait_for_events(page: Page, n: int) -> None:
    page.wait_for_function("n => window.__trioObs.eventCount() >= n", arg=n)


# --------------------------------------------------------------------------- tests


def test_lists_executions_and_keeps_the_list_live(server: Server, page: Page) -> None:
    server.post(demo("exec-a"))
    page.goto(server.url())
    item = page.locator("[data-testid=execution-item][data-execution-id=exec-a]")
    expect(item).to_contain_text("10 events")
    expect(page.get_by_test_id("conn-state")).to_have_text("live")

    # Posted after the page opened: only the "all" stream can tell the page about these.
    server.post([status("exec-b", "started"), transcript("exec-b", "hello")])
    server.post([status("exec-a", "failed", "boom")])
    expect(page.locator("[data-execution-id=exec-b]")).to_contain_text("2 events")
    expect(item).to_contain_text("11 events")
    expect(item).to_contain_text("failed")
    # Most recently active first.
    ids = page.get_by_test_id("execution-item").evaluate_all(
        "items => items.map(i => i.dataset.executionId)"
    )
    assert ids == ["exec-a", "exec-b"]


def test_selected_execution_streams_its_timeline(server: Server, page: Page) -> None:
    server.post(demo("exec-live")[:3])
    server.post([transcript("other", "not this execution")])
    page.goto(server.url())
    page.locator("[data-execution-id=exec-live]").click()
    wait_for_events(page, 3)
    assert rows(page) == [1, 2, 3]
    assert page.url.endswith("?execution=exec-live")

    # Live, after the page is open.
    server.post(demo("exec-live")[3:])
    server.post(
        [
            tool_start("exec-live", "tu2", "Bash", "npm run build", task="task-2"),
            tool_output("exec-live", "tu2", "error TS2322\n", stderr=True),
            tool_end("exec-live", "tu2", "error", 3100.0),
            assertion("exec-live", "task-2", "fail"),
            bus("exec-live", "error", "build broken on task-2"),
            heartbeat("exec-live", "agent-2", "blocked", "task-2"),
            status("exec-live", "failed", "wave 1 failed"),
        ]
    )
    wait_for_events(page, 17)
    assert rows(page) == list(range(1, 18))
    assert page.evaluate("window.__trioObs.lastSeq('exec-live')") == 17

    # Output chunks sit under their call; stderr is marked.
    call = page.locator("[data-testid=event-row][data-type='tool:start']", has_text="npm test")
    expect(call.locator(".chunk")).to_have_text(["12 passed\n", "deprecation warning\n"])
    expect(call.locator(".chunk.stderr")).to_have_text("deprecation warning\n")
    expect(call).to_contain_text("120.5 ms")
    # One alert per event that needs action: tool error, failed assertion, bus error, failure.
    expect(page.get_by_test_id("alert")).to_have_count(4)
    expect(page.get_by_test_id("alert").first).to_contain_text("execution failed")
    expect(page.get_by_test_id("agent")).to_have_count(2)
    agent2 = page.locator("[data-testid=agent][data-instance-id=agent-2]")
    expect(agent2).to_contain_text("blocked")
    expect(page.locator("#pass-rate")).to_have_text("50%")
    expect(page.locator("#waves")).to_contain_text("1✓ 0✗ / 4")
    expect(page.locator("#exec-status")).to_have_text("failed")

    pause = page.get_by_test_id("pause")
    pause.click()
    expect(pause).to_have_attribute("aria-pressed", "true")
    pause.click()
    expect(pause).to_have_attribute("aria-pressed", "false")


def test_topic_and_task_filters(server: Server, page: Page) -> None:
    server.post(demo("exec-f"))
    page.goto(server.url("/?execution=exec-f"))
    wait_for_events(page, 10)

    page.locator("#topics input[value=tools]").uncheck()
    expect(page.locator("#timeline > [data-type='tool:start']")).to_be_hidden()
    # Once the server has acknowledged the unsubscribe, it no longer sends tool events.
    page.wait_for_function("window.__trioObs.pendingAcks() === 0")
    seqs = server.post(
        [tool_start("exec-f", "tu9", "Grep", "TODO"), transcript("exec-f", "after filter")]
    )
    expect(page.locator("[data-testid=event-row]", has_text="after filter")).to_be_visible()
    expect(page.locator("#timeline > [data-type='tool:start']", has_text="Grep")).to_have_count(0)

    # Widening again brings back what the server skipped meanwhile (HTTP backfill), once.
    page.locator("#topics input[value=tools]").check()
    expect(page.locator("[data-testid=event-row]", has_text="Grep")).to_be_visible()
    assert sorted(rows(page)) == list(range(1, seqs[-1] + 1))

    server.post([transcript("exec-f", "second task", task="task-2")])
    expect(page.locator("[data-testid=event-row]", has_text="second task")).to_be_visible()
    page.locator("#task-filter").fill("task-2")
    expect(page.locator("[data-testid=event-row]", has_text="second task")).to_be_visible()
    expect(page.locator("[data-testid=event-row]", has_text="after filter")).to_be_hidden()


def test_resumes_after_server_restart_without_loss_or_duplicates(
    tmp_path: Path, page: Page
) -> None:
    db = tmp_path / "restart.db"
    first = Server(db)
    port = first.port
    try:
        first.post(demo("exec-r"))
        page.goto(first.url("/?execution=exec-r"))
        wait_for_events(page, 10)
    finally:
        first.stop()
    expect(page.get_by_test_id("conn-state")).to_have_text("reconnecting…")

    second = Server(db, port)
    try:
        # These may land before or after the page reconnects: replay with since covers both.
        second.post([transcript("exec-r", f"after restart {i}") for i in range(5)])
        wait_for_events(page, 15)
        expect(page.get_by_test_id("conn-state")).to_have_text("live")
        second.post([transcript("exec-r", "live again")])
        expect(page.locator("[data-testid=event-row]", has_text="live again")).to_be_visible()
        assert rows(page) == list(range(1, 17))
        assert page.evaluate("window.__trioObs.eventCount()") == 16
    finally:
        second.stop()


def test_slow_consumer_close_resumes_without_loss(tmp_path: Path, page: Page) -> None:
    # A tiny queue makes the server close the page's connections with 4008 under a burst;
    # the page reconnects with since= and must end with every event exactly once.
    srv = Server(tmp_path / "slow.db", 0, "--queue-size", "2")
    try:
        srv.post([status("exec-s", "running")])
        page.goto(srv.url("/?execution=exec-s"))
        wait_for_events(page, 1)
        for _ in range(4):
            srv.post([transcript("exec-s", "burst") for _ in range(50)])
        wait_for_events(page, 201)
        assert rows(page) == list(range(1, 202))
        # A batch is handed to each queue at once, so 50 events overflow a queue of 2.
        metrics = httpx.get(srv.url("/metrics"), timeout=10).text
        closes = re.search(r"^trio_obs_slow_consumer_closes_total (\S+)$", metrics, re.M)
        assert closes is not None and float(closes[1]) >= 1
    finally:
        srv.stop()


def test_load_earlier_events_beyond_the_replay(server: Server, page: Page) -> None:
    server.post([transcript("exec-h", f"line {i}") for i in range(150)])
    page.goto(server.url("/?execution=exec-h"))
    wait_for_events(page, 100)
    assert rows(page) == list(range(51, 151))  # the replay: the latest 100
    page.get_by_role("button", name="Load earlier events").click()
    wait_for_events(page, 150)
    assert rows(page) == list(range(1, 151))
    expect(page.get_by_role("button", name="Load earlier events")).to_be_hidden()


def test_event_text_is_never_markup(server: Server, page: Page) -> None:
    e = "exec-<b>x</b>"
    server.post(
        [
            tool_start(e, "tu1", "Bash", XSS_SCRIPT),
            tool_output(e, "tu1", XSS_IMG),
            bus(e, "critical", XSS_IMG),
            transcript(e, XSS_SCRIPT + XSS_IMG),
        ]
    )
    page.goto(server.url())
    page.get_by_test_id("execution-item").filter(has_text=e).click()
    wait_for_events(page, 4)
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text(XSS_SCRIPT)
    expect(timeline).to_contain_text(XSS_IMG)
    expect(page.get_by_test_id("alert")).to_contain_text(XSS_IMG)
    assert page.locator("#timeline img, #timeline script, #alerts img, #executions b").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_token_from_the_page_url_is_used(tmp_path: Path, page: Page) -> None:
    srv = Server(tmp_path / "token.db", 0, "--token", "s3cret")
    try:
        srv.post(demo("exec-t"), token="s3cret")
        page.goto(srv.url("/?token=s3cret&execution=exec-t"))
        expect(page.get_by_test_id("execution-item")).to_have_count(1)
        wait_for_events(page, 10)
        expect(page.get_by_test_id("conn-state")).to_have_text("live")
    finally:
        srv.stop()
