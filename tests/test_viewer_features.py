"""What the viewer offers beyond the stream: detail, links, search, filters, spans, export,
ANSI output, notifications, the token prompt and epoch resets (SPEC §10)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from test_viewer_browser import (
    ROWS,
    assertion,
    bus,
    demo,
    heartbeat,
    loaded,
    stats,
    status,
    tool_end,
    tool_output,
    tool_start,
    transcript,
    wait_for_events,
    wait_until,
)
from viewer_fixtures import Server, allow_network_errors, open_page, running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with open_page(browser, permissions=["clipboard-read", "clipboard-write"]) as pg:
        yield pg


def row(page: Page, seq: int) -> Any:
    return page.locator(f"#timeline [data-testid=event-row][data-seq='{seq}']")


def a_run(e: str) -> list[dict[str, Any]]:
    """Two agents, two tools (one fails), ANSI output on stdout and stderr, every payload."""
    return [
        status(e, "running", "1 wave"),  # 1
        transcript(e, "planning", details={"plan": ["read", "test"]}),  # 2
        heartbeat(e, "agent-1", "working", "task-1"),  # 3
        tool_start(e, "tu1", "Bash", "npm test"),  # 4
        tool_output(e, "tu1", "\x1b[1m> jest\x1b[0m\n"),  # 5
        tool_output(e, "tu1", "\x1b[32mPASS\x1b[0m src/a.test.ts\n", stderr=True),  # 6
        tool_end(e, "tu1", "done", 812.0),  # 7
        assertion(e, "task-1", "pass", evidence={"passed": 3, "total": 3}),  # 8
        heartbeat(e, "agent-2", "working", "task-2"),  # 9
        transcript(e, "fixing the build", task="task-2", agent="agent-2"),  # 10
        tool_start(e, "tu2", "Grep", "TODO", task="task-2"),  # 11
        tool_end(e, "tu2", "error", 40.0),  # 12
        bus(e, "critical", "disk almost full", payload={"volume": "/var", "pct": 97}),  # 13
    ]


def test_event_detail_copy_and_link(viewer_server: Server, page: Page) -> None:
    viewer_server.post(a_run("exec-d"))
    page.goto(viewer_server.url("/?execution=exec-d"))
    wait_for_events(page, 13)
    row(page, 4).click()
    detail = page.get_by_test_id("detail")
    expect(detail).to_contain_text("#4 tool:start")
    expect(detail).to_contain_text("812 ms")  # the call's end, found from its start
    full = json.loads(page.get_by_test_id("detail-json").inner_text())
    assert full["toolUseId"] == "tu1" and full["seq"] == 4
    page.get_by_test_id("detail-copy").click()
    expect(page.get_by_test_id("detail-copy")).to_have_text("Copied")
    assert json.loads(page.evaluate("navigator.clipboard.readText()")) == full
    link = page.get_by_test_id("detail-link").get_attribute("href")
    assert link == "/?execution=exec-d&seq=4"
    assert page.url.endswith("?execution=exec-d&seq=4")
    # details / evidence / payload are shown as JSON.
    row(page, 2).click()
    expect(page.get_by_test_id("detail-details")).to_contain_text('"plan"')
    row(page, 8).click()
    expect(page.get_by_test_id("detail-evidence")).to_contain_text('"total": 3')
    row(page, 13).click()
    expect(page.get_by_test_id("detail-payload")).to_contain_text('"pct": 97')
    # The row previews them too.
    expect(row(page, 13)).to_contain_text('payload {"volume":"/var","pct":97}')
    # Keyboard: up and down walk the events.
    page.keyboard.press("ArrowUp")
    expect(detail).to_contain_text("#12 tool:end")


def test_a_press_in_the_detail_outlasts_its_tool_output(viewer_server: Server, page: Page) -> None:
    # The open detail follows its running tool call. A press on its "start" link while an
    # output chunk arrives is still that link's click; the pane catches up on release.
    e = "exec-hold"
    viewer_server.post(
        [status(e, "running"), tool_start(e, "tu1", "Bash", "make"), tool_output(e, "tu1", "one\n")]
    )
    page.goto(viewer_server.url(f"/?execution={e}"))
    wait_for_events(page, 3)
    row(page, 3).click()
    expect(page.locator("#detail-title")).to_have_text("#3 tool:output")
    b = page.locator("#detail-body button.link", has_text="start").bounding_box()
    assert b is not None
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    page.mouse.down()
    viewer_server.post([tool_output(e, "tu1", "two\n")])
    wait_for_events(page, 4)
    # The frames that would have drawn the pane again under the pointer.
    page.wait_for_function(
        "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
    )
    page.mouse.up()
    expect(page.locator("#detail-title")).to_have_text("#2 tool:start")
    expect(page.get_by_test_id("detail-output").locator(".chunk")).to_have_text(["one\n", "two\n"])


def test_a_link_opens_the_page_at_its_event(viewer_server: Server, page: Page) -> None:
    e = "exec-link"
    for i in range(0, 3000, 500):
        viewer_server.post([transcript(e, f"line {j}") for j in range(i, i + 500)])
    page.goto(viewer_server.url(f"/?execution={e}&seq=1234"))
    target = row(page, 1234)
    expect(target).to_be_visible()
    expect(target).to_contain_text("line 1233")
    expect(target).to_have_class(re.compile(r"\bsel\b"))
    expect(page.get_by_test_id("detail")).to_contain_text("#1234 transcript:entry")
    expect(page.get_by_test_id("follow")).not_to_be_checked()
    expect(page.get_by_test_id("pause")).to_have_attribute("aria-pressed", "true")


def test_search_and_quick_filters(viewer_server: Server, page: Page) -> None:
    viewer_server.post(a_run("exec-q"))
    page.goto(viewer_server.url("/?execution=exec-q"))
    wait_for_events(page, 13)
    page.get_by_test_id("search").fill("disk almost")
    poll_rows(page, [13])
    page.get_by_test_id("search").fill("")
    poll_rows(page, list(range(1, 14)))
    page.get_by_test_id("errors-only").check()
    poll_rows(page, [12, 13])  # the failed tool, the critical message; stderr is not one
    page.get_by_test_id("errors-only").uncheck()
    page.get_by_test_id("tool-filter").select_option("Bash")
    poll_rows(page, [4, 5, 6, 7])  # start, output and end of the Bash call
    page.get_by_test_id("tool-filter").select_option("")
    page.get_by_test_id("agent-filter").select_option("agent-2")
    poll_rows(page, [9, 10, 11, 12])  # its heartbeat, its log, its task's tool call
    page.get_by_test_id("agent-filter").select_option("")
    page.get_by_test_id("type-filter").select_option("tool:output")
    poll_rows(page, [5, 6])
    page.get_by_test_id("type-filter").select_option("")
    poll_rows(page, list(range(1, 14)))


def poll_rows(page: Page, expected: list[int]) -> None:
    page.wait_for_function(
        """want => JSON.stringify(
             [...document.querySelectorAll('#timeline [data-testid=event-row]')]
               .map(r => +r.dataset.seq)) === JSON.stringify(want)""",
        arg=expected,
    )


def test_ansi_colours_and_stderr(viewer_server: Server, page: Page) -> None:
    viewer_server.post(a_run("exec-ansi"))
    page.goto(viewer_server.url("/?execution=exec-ansi"))
    wait_for_events(page, 13)
    # In the row: the escape codes are styled spans, not text.
    expect(row(page, 6).locator(".chunk")).to_have_text("PASS src/a.test.ts")
    expect(row(page, 6).locator(".chunk .a-f2")).to_have_text("PASS")
    assert "\x1b" not in page.locator("#timeline").inner_text()
    # stderr is marked as stderr, in the normal text colour (Jest writes PASS there).
    expect(row(page, 6)).to_contain_text("stderr")
    colours = page.evaluate(
        """[...document.querySelectorAll('#timeline .row')]
             .filter(r => r.dataset.seq === '6' || r.dataset.seq === '5')
             .map(r => getComputedStyle(r.querySelector('.chunk')).color)"""
    )
    assert len(set(colours)) == 1, colours
    assert "rgb(198, 40, 40)" not in colours  # --bad
    # In the call's detail, the whole output, styled.
    row(page, 4).click()
    out = page.get_by_test_id("detail-output")
    expect(out.locator(".chunk")).to_have_text(["> jest\n", "PASS src/a.test.ts\n"])
    expect(out.locator(".a-bold")).to_have_text("> jest")
    expect(out.locator(".chunk.stderr .a-f2")).to_have_text("PASS")


SPAN_KINDS = """() => {
  const kinds = [...document.querySelectorAll("[data-testid=span-row]")].map(r => r.dataset.kind);
  const count = kind => kinds.filter(k => k === kind).length;
  return [...kinds.slice(0, 2), count("task"), count("tool"), count("skill")];
}"""
"""The first two span rows' kinds, then how many task, tool and skill rows there are."""


def test_span_view(viewer_server: Server, page: Page) -> None:
    e = "exec-spans"
    events = a_run(e)
    events.insert(1, {
        "type": "wave:status", "executionId": e, "waveNumber": 1, "status": "running",
        "taskCount": 2, "completedCount": 0, "failedCount": 0,
    })  # fmt: skip
    events.append({
        "type": "skill:start", "executionId": e, "skillTraceId": "sk1", "skillName": "fix",
        "skillFile": "skills/fix.md", "lineNumber": 3, "taskId": "task-2",
    })  # fmt: skip
    events.append({
        "type": "skill:end", "executionId": e, "skillTraceId": "sk1", "skillName": "fix",
        "status": "success", "durationMs": 5.0,
    })  # fmt: skip
    viewer_server.post(events)
    page.goto(viewer_server.url(f"/?execution={e}"))
    wait_for_events(page, len(events))
    page.get_by_test_id("tab-spans").click()
    spans = page.get_by_test_id("span-row")
    # The rows are drawn in the frame after the click: wait for them, then read them.
    wait_until(page, SPAN_KINDS, ["execution", "wave", 2, 2, 1])
    bash = spans.filter(has_text="Bash npm test")
    expect(bash).to_contain_text("812 ms")
    expect(bash.locator(".sbar")).to_have_class(re.compile(r"\bs-done\b"))
    expect(spans.filter(has_text="Grep TODO").locator(".sbar")).to_have_class(
        re.compile(r"\bs-error\b")
    )
    width = bash.locator(".sbar").evaluate("b => b.getBoundingClientRect().width")
    assert width >= 1
    bash.click()
    expect(page.get_by_test_id("detail")).to_contain_text("tool:start")


def test_events_that_need_action_are_announced(viewer_server: Server, page: Page) -> None:
    viewer_server.post([status("exec-n", "running")])
    page.goto(viewer_server.url("/?execution=exec-n"))
    wait_for_events(page, 1)
    expect(page.get_by_test_id("notify")).to_be_hidden()
    viewer_server.post(
        [bus("exec-n", "error", "policy blocked rm -rf"), transcript("exec-n", "after")]
    )
    toast = page.get_by_test_id("toast")
    expect(toast).to_contain_text("policy blocked rm -rf")
    expect(page.get_by_test_id("notify")).to_have_text("⚠ 1 needs action")
    expect(page).to_have_title(re.compile(r"^\(1\) exec-n"))
    page.get_by_test_id("notify").click()
    expect(page.get_by_test_id("detail")).to_contain_text("#2 messagebus:event")


def test_export_fetches_every_page(viewer_server: Server, page: Page) -> None:
    e = "exec-x"
    viewer_server.post([transcript(e, f"line {i}") for i in range(120)])
    page.goto(viewer_server.url(f"/?execution={e}"))
    wait_for_events(page, 120)
    page.evaluate("window.__trioObs.config.exportPage = 50")  # three pages
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/events?" in r.url else None)
    with page.expect_download() as info:
        page.get_by_test_id("export").click()
    download = info.value
    assert download.suggested_filename == "exec-x.ndjson"
    lines = Path(download.path()).read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(1, 121))
    assert [re.search(r"since=(\d+)", u)[1] for u in requests] == ["0", "50", "100"]  # type: ignore[index]


def test_token_prompt(tmp_path: Path, page: Page) -> None:
    allow_network_errors(page)  # the 401 of the first probe
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    with running(tmp_path / "t.db", "--token", "s3cret") as srv:
        srv.post(demo("exec-t"), token="s3cret")
        page.goto(srv.url())
        form = page.get_by_test_id("token-form")
        expect(form).to_be_visible()
        expect(form).to_contain_text("401")
        expect(page.get_by_test_id("conn-state")).to_have_text("token needed")
        page.get_by_test_id("token-input").fill("wrong")
        page.get_by_test_id("token-submit").click()
        expect(page.get_by_test_id("token-error")).to_be_visible()
        page.get_by_test_id("token-input").fill("s3cret")
        page.get_by_test_id("token-submit").click()
        expect(form).to_be_hidden()
        expect(page.get_by_test_id("conn-state")).to_have_text("live")
        wait_for_events(page, 10)
        assert "s3cret" not in page.url
        # A reload keeps the token for this tab (sessionStorage), not in the URL.
        page.reload()
        wait_for_events(page, 10)
        expect(form).to_be_hidden()
        assert "token" not in page.url
    assert not any("s3cret" in m for m in messages), messages


def test_epoch_resume_and_reset(viewer_server: Server, page: Page) -> None:
    """SPEC §10 against a simulated cluster node: resume with since+epoch; a reset restarts."""
    e = "exec-epoch"
    connects: list[str] = []

    def frame(seq: int, text: str) -> str:
        ev = transcript(e, text)
        ev.update(seq=seq, timestamp="2026-01-01T00:00:00Z")
        return json.dumps(ev)

    def node(ws: WebSocketRoute) -> None:
        connects.append(ws.url)
        hello = {"type": "observability:connected", "executionId": e,
                 "message": f"Connected to execution {e}", "bufferedEventCount": 0}  # fmt: skip
        if len(connects) == 1:
            ws.send(json.dumps({**hello, "epoch": "A", "bufferedEventCount": 3}))
            for s in (1, 2, 3):
                ws.send(frame(s, f"old history {s}"))
            ws.close(code=1001, reason="node going away")
        elif len(connects) == 2:
            # The data behind epoch A is gone: a reset, then the history that exists.
            ws.send(json.dumps({**hello, "epoch": "B"}))
            ws.send(json.dumps({"type": "observability:reset", "epoch": "B", "lastSeq": 2}))
            for s in (1, 2):
                ws.send(frame(s, f"new history {s}"))
        else:
            ws.send(json.dumps({**hello, "epoch": "B"}))

    page.route_web_socket(re.compile(rf"/ws\?observability={e}\b"), node)
    page.goto(viewer_server.url(f"/?execution={e}"))
    expect(page.get_by_test_id("notice")).to_contain_text("reset")
    expect(row(page, 1)).to_contain_text("new history 1")
    expect(row(page, 2)).to_contain_text("new history 2")
    expect(page.locator("#timeline")).not_to_contain_text("old history")
    wait_until(page, ROWS, [1, 2])
    assert loaded(page) == [1, 2]
    assert "since=3" in connects[1] and "epoch=A" in connects[1]
    assert stats(page)["epoch"] == "B"
    expect(page.get_by_test_id("notice")).to_contain_text("epoch A → B")


def test_a_tool_end_finds_its_start(viewer_server: Server, page: Page) -> None:
    e = "exec-far"
    viewer_server.post([tool_start(e, "tu-far", "Bash", "make all")])
    viewer_server.post([transcript(e, f"line {i}") for i in range(400)])
    viewer_server.post([tool_end(e, "tu-far", "done", 61000.0)])
    page.goto(viewer_server.url(f"/?execution={e}"))
    # The socket brings the last 200 events; the start, far before, comes over HTTP.
    end = row(page, 402)
    expect(end).to_contain_text("Bash")
    expect(end).to_contain_text("1 min 1 s")
    end.click()
    expect(page.get_by_test_id("detail")).to_contain_text("make all")
