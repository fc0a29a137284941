"""The live viewer page (SPEC §5 ``GET /``) in a real headless Chromium against a real server.

The server runs as a subprocess (``python -m trio_obs serve``) so that Playwright's sync API
owns this thread; events are posted over HTTP exactly as an external producer would.

This module also holds the helpers of the other ``test_viewer_*`` modules (wire events, a
background event streamer, page queries); their server, browser and page are
``viewer_fixtures``'.
"""

from __future__ import annotations

import itertools
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from support import TIMEOUT
from viewer_fixtures import Server, allow_network_errors, need_chromium, running

need_chromium()

from playwright.sync_api import Page, expect  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError  # noqa: E402

expect.set_options(timeout=10_000)  # a cold Chromium start on a busy CI box can be slow
XSS_SCRIPT = "<script>window.__pwned=1</script>"
XSS_IMG = '<img src=x onerror="window.__pwned=1">'


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


def assertion(
    e: str, task: str, result: str, evidence: dict[str, Any] | None = None
) -> dict[str, Any]:
    record = {
        "id": f"a{next(_ids)}", "taskId": task, "executionId": e, "category": "tests_pass",
        "description": "unit tests pass", "result": result, "timestamp": _now(),
    }  # fmt: skip
    if evidence is not None:
        record["evidence"] = evidence
    return {"type": "assertion:result", "executionId": e, "taskId": task, "assertion": record}


def bus(
    e: str, severity: str, summary: str, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    entry = {
        "id": f"m{next(_ids)}", "eventId": f"ev{next(_ids)}", "timestamp": _now(),
        "source": "build-monitor", "eventType": "task.blocked", "humanSummary": summary,
        "severity": severity, "category": "task", "createdAt": _now(), "executionId": e,
    }  # fmt: skip
    if payload is not None:
        entry["payload"] = payload
    return {"type": "messagebus:event", "executionId": e, "entry": entry}


def transcript(
    e: str,
    summary: str,
    task: str = "task-1",
    agent: str = "agent-1",
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    entry = {
        "id": f"t{next(_ids)}", "timestamp": _now(), "sequence": next(_ids), "executionId": e,
        "instanceId": agent, "entryType": "message", "category": "agent",
        "summary": summary, "taskId": task,
    }  # fmt: skip
    if details is not None:
        entry["details"] = details
    return {"type": "transcript:entry", "executionId": e, "entry": entry}


def wave(e: str, done: int, failed: int, status: str = "running") -> dict[str, Any]:
    return {
        "type": "wave:status", "executionId": e, "waveNumber": 1, "status": status,
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


class Streamer:
    """Posts ``rate`` events a second, spread over ``executions``, until stopped.

    ``posted`` counts the events the server has taken (a post has returned); each post
    notifies ``wait_posted``.
    """

    def __init__(self, srv: Server, executions: list[str], rate: int = 50) -> None:
        self.srv, self.executions, self.rate = srv, executions, rate
        self.tick = 0.1
        self.per_tick = max(1, round(rate * self.tick))  # the events of one post
        self.stop_event = threading.Event()
        self.posted = 0
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Streamer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(10)

    def wait_posted(self, n: int, timeout: float = TIMEOUT) -> None:
        """Block until ``n`` events in all have been posted (``timeout`` is a hang guard)."""
        with self.changed:
            done = self.changed.wait_for(lambda: self.posted >= n, timeout)
        assert done, f"the streamer posted {self.posted} events, not {n}, in {timeout} s"

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop_event.wait(self.tick):
                start = self.posted
                batch = [
                    transcript(self.executions[k % len(self.executions)], f"streamed {k}")
                    for k in range(start, start + self.per_tick)
                ]
                client.post(self.srv.url("/api/events"), json=batch)
                with self.changed:
                    self.posted += len(batch)
                    self.changed.notify_all()


# --------------------------------------------------------------------------- helpers


# Page-side values, as JS functions: read once (``rows``, ``list_order``) or waited on in
# the page (``wait_until``), the same expression either way.
ROWS = """() => [...document.querySelectorAll("#timeline [data-testid=event-row]")]
  .map(r => Number(r.dataset.seq))"""
LIST_ORDER = """() => [...document.querySelectorAll("[data-testid=execution-item]")]
  .filter(i => !i.hidden)
  .map(i => [i.getBoundingClientRect().top, i.dataset.executionId])
  .sort((a, b) => a[0] - b[0]).map(x => x[1])"""


def wait_until(page: Page, value: str, expected: Any, timeout: float = 10.0) -> None:
    """Wait in the page (each frame) until the JS function ``value`` returns ``expected``
    (compared as JSON); ``timeout`` is a hang guard, and its failure shows the last value."""
    same = f"want => JSON.stringify(({value})()) === JSON.stringify(want)"
    try:
        page.wait_for_function(same, arg=expected, timeout=timeout * 1000)
    except PlaywrightTimeoutError:
        got = page.evaluate(value)
        raise AssertionError(f"still {got!r}, not {expected!r}") from None


def rows(page: Page) -> list[int]:
    """The seq of every event row in the timeline's DOM (the rows in view), in order."""
    seqs: list[int] = page.evaluate(ROWS)
    return seqs


def loaded(page: Page) -> list[int]:
    """The seqs the page holds for the open execution, ascending."""
    seqs: list[int] = page.evaluate("window.__trioObs.seqs()")
    return seqs


def stats(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("window.__trioObs.stats()")
    return result


def wait_for_events(page: Page, n: int) -> None:
    page.wait_for_function("n => window.__trioObs.eventCount() >= n", arg=n)


def execution_item(page: Page, e: str) -> Any:
    return page.locator(f"[data-testid=execution-item][data-execution-id='{e}']")


def list_order(page: Page) -> list[str]:
    """The execution ids of the list, top to bottom as shown."""
    ids: list[str] = page.evaluate(LIST_ORDER)
    return ids


def open_timeline_row(page: Page, selector: str, **kw: Any) -> None:
    page.locator(f"#timeline [data-testid=event-row]{selector}", **kw).first.click()
    expect(page.get_by_test_id("detail")).to_be_visible()


# --------------------------------------------------------------------------- tests


def test_lists_executions_and_keeps_the_list_live(viewer_server: Server, page: Page) -> None:
    viewer_server.post(demo("exec-a"))
    page.goto(viewer_server.url())
    item = execution_item(page, "exec-a")
    expect(item).to_contain_text("10 events")
    expect(item).to_contain_text("running")
    expect(page.get_by_test_id("conn-state")).to_have_text("live")

    # Posted after the page opened: only the "all" stream can tell the page about these.
    viewer_server.post([status("exec-b", "started"), transcript("exec-b", "hello")])
    viewer_server.post([status("exec-a", "failed", "boom")])
    expect(execution_item(page, "exec-b")).to_contain_text("2 events")
    expect(execution_item(page, "exec-b")).to_contain_text("started")
    expect(item).to_contain_text("11 events")
    expect(item).to_contain_text("failed")
    # Most recently active first.
    page.mouse.move(900, 700)  # away from the list, which holds still under the pointer
    wait_until(page, LIST_ORDER, ["exec-a", "exec-b"])
    # The header and the list give the same, server-side figures.
    item.click()
    expect(page.get_by_test_id("event-count")).to_have_text("11")
    expect(page.locator("#exec-status")).to_have_text("failed")


def test_selected_execution_streams_its_timeline(viewer_server: Server, page: Page) -> None:
    viewer_server.post(demo("exec-live")[:3])
    viewer_server.post([transcript("other", "not this execution")])
    page.goto(viewer_server.url())
    execution_item(page, "exec-live").click()
    wait_for_events(page, 3)
    wait_until(page, ROWS, [1, 2, 3])  # drawn on the next frame, not when received
    assert page.url.endswith("?execution=exec-live")

    # Live, after the page is open.
    viewer_server.post(demo("exec-live")[3:])
    viewer_server.post(
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
    wait_until(page, ROWS, list(range(1, 18)))
    assert page.evaluate("window.__trioObs.lastSeq('exec-live')") == 17

    # A call's row shows its result; its output rows follow it, stderr marked as such.
    call = page.locator("#timeline [data-type='tool:start']", has_text="npm test")
    expect(call).to_contain_text("120.5 ms")
    expect(call).to_contain_text("done")
    outputs = page.locator("#timeline [data-type='tool:output'][data-tool-use-id=tu1]")
    expect(outputs.locator(".chunk")).to_have_text(["12 passed", "deprecation warning"])
    expect(outputs.locator(".chunk.stderr")).to_have_text("deprecation warning")
    # The call's detail holds its whole output, chunks in order.
    call.click()
    output = page.get_by_test_id("detail-output")
    expect(output.locator(".chunk")).to_have_text(["12 passed\n", "deprecation warning\n"])
    expect(output.locator(".chunk.stderr")).to_have_text("deprecation warning\n")
    # One alert per event that needs action: tool error, failed assertion, bus error, failure.
    expect(page.get_by_test_id("alert")).to_have_count(4)
    page.locator("#ptab-overview").click()
    expect(page.get_by_test_id("alert").first).to_contain_text("execution failed")
    expect(page.get_by_test_id("agent")).to_have_count(2)
    agent2 = page.locator("[data-testid=agent][data-instance-id=agent-2]")
    expect(agent2).to_contain_text("blocked")
    expect(page.locator("#pass-rate")).to_have_text("50%")
    expect(page.locator("#waves")).to_contain_text("1✓ 0✗ / 4")
    expect(page.locator("#exec-status")).to_have_text("failed")

    # Choosing a row paused the scroll (it stays in view); the button resumes and pauses.
    pause = page.get_by_test_id("pause")
    expect(pause).to_have_attribute("aria-pressed", "true")
    pause.click()
    expect(pause).to_have_attribute("aria-pressed", "false")
    pause.click()
    expect(pause).to_have_attribute("aria-pressed", "true")


def test_topic_and_task_filters(viewer_server: Server, page: Page) -> None:
    viewer_server.post(demo("exec-f"))
    page.goto(viewer_server.url("/?execution=exec-f"))
    wait_for_events(page, 10)

    page.get_by_test_id("more-filters").click()
    page.locator("#topics input[value=tools]").uncheck()
    expect(page.locator("#timeline [data-type='tool:start']")).to_have_count(0)
    expect(page.locator("#timeline [data-type='transcript:entry']")).to_have_count(1)
    # Once the server has acknowledged the unsubscribe, it no longer sends tool events.
    page.wait_for_function("window.__trioObs.pendingAcks() === 0")
    seqs = viewer_server.post(
        [tool_start("exec-f", "tu9", "Grep", "TODO"), transcript("exec-f", "after filter")]
    )
    expect(page.locator("[data-testid=event-row]", has_text="after filter")).to_be_visible()
    expect(page.locator("#timeline [data-type='tool:start']", has_text="Grep")).to_have_count(0)

    # Widening again brings back what the server skipped meanwhile (HTTP backfill), once.
    page.locator("#topics input[value=tools]").check()
    expect(page.locator("[data-testid=event-row]", has_text="Grep")).to_be_visible()
    wait_until(page, ROWS, list(range(1, seqs[-1] + 1)))
    assert loaded(page) == list(range(1, seqs[-1] + 1))

    viewer_server.post([transcript("exec-f", "second task", task="task-2")])
    expect(page.locator("[data-testid=event-row]", has_text="second task")).to_be_visible()
    page.locator("#task-filter").fill("task-2")
    expect(page.locator("[data-testid=event-row]", has_text="second task")).to_be_visible()
    expect(page.locator("[data-testid=event-row]", has_text="after filter")).to_have_count(0)
    expect(page.locator("#more-count")).to_have_text("1")


def test_resumes_after_server_restart_without_loss_or_duplicates(
    tmp_path: Path, page: Page
) -> None:
    allow_network_errors(page)
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
        wait_until(page, ROWS, list(range(1, 17)))  # in the DOM once each, in order
        assert page.evaluate("window.__trioObs.eventCount()") == 16
        # The server resumed at since=<last seq>: it sent no event twice.
        assert stats(page)["wsDuplicates"] == 0
    finally:
        second.stop()


def test_a_page_behind_is_served_from_the_store_without_loss(tmp_path: Path, page: Page) -> None:
    # A tiny queue and replay buffer make the page's execution connection fall behind
    # under a burst (a dispatch of 50 is more than memory keeps of the run): the server
    # serves it from the store (SPEC §4) and the page ends with every event exactly once.
    # (An `all` connection within its queue before a dispatch takes all of it from memory.)
    with running(tmp_path / "slow.db", "--queue-size", "2", "--buffer-size", "2") as srv:
        srv.post([status("exec-s", "running")])
        page.goto(srv.url("/?execution=exec-s"))
        wait_for_events(page, 1)
        for _ in range(4):
            srv.post([transcript("exec-s", "burst") for _ in range(50)])
        wait_for_events(page, 201)
        assert loaded(page) == list(range(1, 202))
        assert stats(page)["wsDuplicates"] == 0
        # The rows in view: the tail, each once, in order.
        tail = f"""() => (r => r.length > 0 && r.at(-1) === 201
                              && r.every((s, i) => s === r[0] + i))(({ROWS})())"""
        wait_until(page, tail, True)
        expect(page.get_by_test_id("event-count")).to_have_text("201")
        # A batch is handed to each queue at once, so 50 events overflow what is kept.
        metrics = httpx.get(srv.url("/metrics"), timeout=10).text
        catchups = re.search(r"^trio_obs_store_catchups_total (\S+)$", metrics, re.M)
        assert catchups is not None and float(catchups[1]) >= 1
        closes = re.search(r"^trio_obs_slow_consumer_closes_total (\S+)$", metrics, re.M)
        assert closes is not None and float(closes[1]) == 0
        assert stats(page)["allCloses"] == stats(page)["closes"] == []
        allow_network_errors(page)  # the server stops before the page is closed


def test_whole_history_is_reachable_by_scrolling(viewer_server: Server, page: Page) -> None:
    n = 3000
    for i in range(0, n, 500):
        viewer_server.post([transcript("exec-h", f"line {j}") for j in range(i, i + 500)])
    page.goto(viewer_server.url("/?execution=exec-h"))
    # The tail first, then everything, while the DOM holds only the rows in view.
    expect(page.locator("#timeline [data-testid=event-row][data-seq='3000']")).to_be_visible()
    expect(page.get_by_test_id("event-count")).to_have_text("3,000")
    page.get_by_test_id("to-start").click()
    first = page.locator("#timeline [data-testid=event-row][data-seq='1']")
    expect(first).to_be_visible()
    expect(first).to_contain_text("line 0")
    page.wait_for_function("window.__trioObs.stats().fullyLoaded")
    assert loaded(page) == list(range(1, n + 1))
    assert len(rows(page)) < 100
    assert stats(page)["domNodes"] < 2000
    # Scrolling down from the top goes through the history in order.
    page.locator("#timeline").hover()
    page.mouse.wheel(0, 24 * 1000)
    expect(page.locator("#timeline [data-seq='1001']")).to_be_visible()
    shown = rows(page)
    assert shown == list(range(shown[0], shown[0] + len(shown)))
    expect(page.get_by_test_id("pause")).to_have_attribute("aria-pressed", "true")


def test_event_text_is_never_markup(viewer_server: Server, page: Page) -> None:
    e = "exec-<b>x</b>"
    viewer_server.post(
        [
            tool_start(e, "tu1", "Bash", XSS_SCRIPT),
            tool_output(e, "tu1", XSS_IMG + "\x1b[31m" + XSS_SCRIPT + "\x1b[0m"),
            bus(e, "critical", XSS_IMG, payload={"html": XSS_SCRIPT}),
            transcript(e, XSS_SCRIPT + XSS_IMG, details={XSS_IMG: XSS_SCRIPT}),
        ]
    )
    page.goto(viewer_server.url())
    page.get_by_test_id("execution-item").filter(has_text=e).click()
    wait_for_events(page, 4)
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text(XSS_SCRIPT)
    expect(timeline).to_contain_text(XSS_IMG)
    expect(page.get_by_test_id("alert")).to_contain_text(XSS_IMG)
    for seq in (1, 2, 3, 4):
        page.locator(f"#timeline [data-testid=event-row][data-seq='{seq}']").click()
        expect(page.get_by_test_id("detail-json")).to_contain_text(f'"seq": {seq}')
    expect(page.get_by_test_id("detail")).to_contain_text(XSS_IMG)
    page.get_by_test_id("search").fill("<img")
    expect(page.locator("#timeline [data-testid=event-row]")).to_have_count(3)
    page.get_by_test_id("tab-spans").click()
    expect(page.get_by_test_id("span-row").first).to_be_visible()
    assert page.locator("img, script:not([src]), #executions b").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_token_from_the_page_url_is_used(tmp_path: Path, page: Page) -> None:
    allow_network_errors(page)  # the server stops before the page: its reconnect is refused
    with running(tmp_path / "token.db", "--token", "s3cret") as srv:
        srv.post(demo("exec-t"), token="s3cret")
        page.goto(srv.url("/?token=s3cret&execution=exec-t"))
        expect(page.get_by_test_id("execution-item")).to_have_count(1)
        wait_for_events(page, 10)
        expect(page.get_by_test_id("conn-state")).to_have_text("live")
        # Taken from the URL into this tab's session, and out of the address bar.
        assert "token" not in page.url
        assert page.url.endswith("?execution=exec-t")
        assert page.evaluate("sessionStorage.getItem('trio-obs.token')") == "s3cret"
        expect(page.get_by_test_id("token-form")).to_be_hidden()
