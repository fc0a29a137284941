"""The viewer's span tree (SPEC §12, issue 22) in headless Chromium against a real server.

Runs are posted as producers post them: ``execution:status`` for the root, ``span:start`` /
``span:end`` for agents and model calls, ``tool:*`` for tools, some spans still running.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.sync_api import Browser, Page, expect

from test_viewer_browser import (
    tool_end,
    tool_output,
    tool_start,
    transcript,
    wait_for_events,
    wave,
)
from viewer_fixtures import PHONE, Server, open_page

# The runs' clock: a few seconds ago, reset by each run (a tool left running for a minute
# would be judged slow by the watchdog, and its alert would be an event of the run).
T0 = [datetime.now(UTC)]


def at(seconds: float) -> str:
    return (T0[0] + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def root(e: str, state: str = "started", t: float = 0) -> dict[str, Any]:
    return {
        "type": "execution:status", "executionId": e, "status": state, "spanId": "root",
        "timestamp": at(t),
    }  # fmt: skip


def span_start(
    e: str, sid: str, parent: str, kind: str, name: str, t: float, **kw: Any
) -> dict[str, Any]:
    return {
        "type": "span:start", "executionId": e, "spanId": sid, "parentSpanId": parent,
        "kind": kind, "name": name, "timestamp": at(t), **kw,
    }  # fmt: skip


def span_end(e: str, sid: str, state: str, t: float, dur: float, **kw: Any) -> dict[str, Any]:
    return {
        "type": "span:end", "executionId": e, "spanId": sid, "state": state,
        "durationMs": dur, "timestamp": at(t), **kw,
    }  # fmt: skip


def text(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": content}]}


def agent_run(e: str) -> list[dict[str, Any]]:
    """A planner agent: a model call that asks for a tool, the tool (still running), a
    sub-agent whose model call is running, and spans that ended in error, blocked, lost."""
    T0[0] = datetime.now(UTC) - timedelta(seconds=6)
    return [
        root(e),
        span_start(e, "a1", "root", "agent", "planner", 0.1, agent="planner"),
        span_start(e, "l1", "a1", "llm", "chat gpt-4o", 0.2, model="gpt-4o"),
        span_end(
            e,
            "l1",
            "done",
            1.2,
            1000.0,
            kind="llm",
            model="gpt-4o-2024-08-06",
            usage={"inputTokens": 1200, "outputTokens": 80},
            finishReasons=["tool_calls"],
            cut=4096,
            systemInstructions=[{"type": "text", "content": "You are a careful planner."}],
            inputMessages=[
                text("user", "What is the weather in Paris?"),
                {
                    "role": "assistant",
                    "parts": [{"type": "tool_call", "id": "c0", "name": "clock", "arguments": {}}],
                },
                {
                    "role": "tool",
                    "parts": [{"type": "tool_call_response", "id": "c0", "response": "12:00"}],
                },
            ],
            outputMessages=[
                {
                    "role": "assistant",
                    "finish_reason": "tool_calls",
                    "parts": [
                        {
                            "type": "tool_call",
                            "id": "c1",
                            "name": "search",
                            "arguments": {"q": "weather Paris"},
                        }
                    ],
                }
            ],
        ),
        {
            **tool_start(e, "tu1", "search", '{"q": "weather Paris"}'),
            "parentSpanId": "a1",
            "timestamp": at(1.3),
        },
        {**tool_output(e, "tu1", "fetching forecast…\n"), "timestamp": at(1.4)},
        span_start(e, "a2", "a1", "agent", "researcher", 1.5, agent="researcher"),
        span_start(e, "l2", "a2", "llm", "chat claude", 1.6, model="claude-sonnet-4"),
        span_start(e, "x1", "a2", "span", "parse page", 1.7),
        span_end(e, "x1", "error", 1.8, 100.0, error="ValueError: no table"),
        {**tool_start(e, "tu2", "rm", "-rf /"), "parentSpanId": "a2", "timestamp": at(1.9)},
        {**tool_end(e, "tu2", "blocked", 1.0), "timestamp": at(1.9)},
        span_start(e, "x2", "a2", "span", "fetch mirror", 2.0),
        span_end(e, "x2", "lost", 5.0, 3000.0),
    ]


def tree_row(page: Page, span_id: str) -> Any:
    return page.locator(f"#spans [data-testid=span-row][data-span-id='{span_id}']")


def open_tree(page: Page, srv: Server, e: str, n: int) -> None:
    page.goto(srv.url(f"/?execution={e}&view=tree"))
    wait_for_events(page, n)
    expect(page.get_by_test_id("spans")).to_be_visible()


def shown_tree(page: Page) -> list[tuple[str, int, str]]:
    """(span id, aria-level, state) of the tree's rows in the DOM, top to bottom."""
    out: list[list[Any]] = page.locator("#spans [data-testid=span-row]").evaluate_all(
        """rs => rs.map(r => [r.getBoundingClientRect().top, r.dataset.spanId,
                              Number(r.getAttribute('aria-level')), r.dataset.state])
             .sort((a, b) => a[0] - b[0]).map(x => x.slice(1))"""
    )
    return [(s, lvl, st) for s, lvl, st in out]


def test_nested_spans_states_and_live_growth(viewer_server: Server, page: Page) -> None:
    e = "exec-tree"
    events = agent_run(e)
    viewer_server.post(events)
    open_tree(page, viewer_server, e, len(events))
    expect(page.locator("#spans [data-testid=span-row]")).to_have_count(9)
    assert page.locator("#spans").get_attribute("role") == "tree"
    assert shown_tree(page) == [
        ("\x00root", 1, "running"),
        ("a1", 2, "running"),
        ("l1", 3, "done"),
        ("tu1", 3, "running"),
        ("a2", 3, "running"),
        ("l2", 4, "running"),
        ("x1", 4, "error"),
        ("tu2", 4, "blocked"),
        ("x2", 4, "lost"),
    ]
    # Each state is told apart by its colour class and its word.
    for sid, st in (("x1", "error"), ("tu2", "blocked"), ("x2", "lost"), ("l1", "done")):
        expect(tree_row(page, sid).locator(".sbar")).to_have_class(re.compile(rf"\bs-{st}\b"))
        expect(tree_row(page, sid).locator(".sstate")).to_have_text(st)
    expect(tree_row(page, "l1")).to_contain_text("1,200→80 tok")
    # The agent a span belongs to: said by the nesting, and in words where it is not.
    expect(tree_row(page, "tu1")).to_have_attribute("title", re.compile(r"\(agent planner\)"))
    expect(tree_row(page, "tu1").locator(".sagent")).to_have_count(0)
    # The running tool's elapsed time grows without any new event.
    dur = tree_row(page, "tu1").locator(".sdur")
    first = dur.text_content()
    assert first and first.endswith("…")
    expect(dur).not_to_have_text(first)
    # A span that starts is on screen; it ends, and its bar says so.
    viewer_server.post([span_start(e, "l3", "a2", "llm", "chat again", 5.0)])
    expect(tree_row(page, "l3")).to_have_attribute("data-state", "running")
    viewer_server.post([span_end(e, "l3", "done", 5.5, 500.0)])
    expect(tree_row(page, "l3")).to_have_attribute("data-state", "done")
    expect(tree_row(page, "l3").locator(".sdur")).to_have_text("500 ms")


def test_fold_and_unfold(viewer_server: Server, page: Page) -> None:
    e = "exec-fold"
    events = agent_run(e)
    viewer_server.post(events)
    open_tree(page, viewer_server, e, len(events))
    rows = page.locator("#spans [data-testid=span-row]")
    expect(rows).to_have_count(9)
    expect(tree_row(page, "a2")).to_have_attribute("aria-expanded", "true")
    tree_row(page, "a2").locator(".twisty").click()
    expect(tree_row(page, "a2")).to_have_attribute("aria-expanded", "false")
    expect(rows).to_have_count(5)
    expect(tree_row(page, "l2")).to_have_count(0)
    # A span that starts under a folded node stays folded away.
    viewer_server.post([span_start(e, "x3", "a2", "span", "late", 5.0)])
    wait_for_events(page, len(events) + 1)
    expect(tree_row(page, "x3")).to_have_count(0)
    tree_row(page, "a2").locator(".twisty").click()
    expect(rows).to_have_count(10)
    expect(tree_row(page, "x3")).to_be_visible()


def test_a_press_held_while_spans_arrive_still_folds(viewer_server: Server, page: Page) -> None:
    # The row is drawn again between the button going down and up (a span arrives under it):
    # the click is still the twisty's, and folds.
    e = "exec-fold-busy"
    events = agent_run(e)
    viewer_server.post(events)
    open_tree(page, viewer_server, e, len(events))
    b = tree_row(page, "a2").locator(".twisty").bounding_box()
    assert b is not None
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    page.mouse.down()
    viewer_server.post([span_start(e, "x4", "a2", "span", "arrives mid-press", 5.0)])
    expect(tree_row(page, "x4")).to_be_visible()
    page.mouse.up()
    expect(tree_row(page, "a2")).to_have_attribute("aria-expanded", "false")
    expect(tree_row(page, "x4")).to_have_count(0)
    expect(page.get_by_test_id("detail")).to_be_hidden()


def test_rows_hold_still_under_the_pointer(viewer_server: Server, page: Page) -> None:
    e = "exec-still"
    events = agent_run(e)
    viewer_server.post(events)
    open_tree(page, viewer_server, e, len(events))
    target = tree_row(page, "x2")
    expect(target).to_be_visible()
    b = target.bounding_box()
    assert b is not None
    page.mouse.move(b["x"] + 40, b["y"] + b["height"] / 2)
    # New spans sort above the pointed row: earlier starts, under the first agent.
    early = [span_start(e, f"n{i}", "a1", "span", f"early {i}", 0.15 + i / 1000) for i in range(5)]
    viewer_server.post(early)
    wait_for_events(page, len(events) + 5)
    expect(page.locator("#spans [data-testid=span-row]")).to_have_count(14)
    after = target.bounding_box()
    assert after is not None and abs(after["y"] - b["y"]) < 1
    page.mouse.move(5, 5)


def test_model_call_opens_as_a_chat_and_a_tool_with_its_output(
    viewer_server: Server, page: Page
) -> None:
    e = "exec-chat"
    events = agent_run(e)
    viewer_server.post(events)
    open_tree(page, viewer_server, e, len(events))
    tree_row(page, "l1").click()
    detail = page.get_by_test_id("detail")
    chat = page.get_by_test_id("chat")
    expect(chat).to_be_visible()
    roles = chat.get_by_test_id("chat-message").evaluate_all("ms => ms.map(m => m.dataset.role)")
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    expect(chat.get_by_test_id("chat-message").first).to_contain_text("You are a careful planner.")
    call = chat.get_by_test_id("chat-tool-call").last
    expect(call).to_contain_text("search")
    expect(call).to_contain_text('"q": "weather Paris"')  # arguments, readable
    expect(chat.get_by_test_id("chat-tool-result")).to_contain_text("12:00")
    expect(detail).to_contain_text("gpt-4o-2024-08-06")
    expect(detail).to_contain_text("1,200 in · 80 out")
    expect(detail).to_contain_text("tool_calls")
    expect(detail).to_contain_text("$0.0038")  # priced by the server
    expect(page.get_by_test_id("chat-cut")).to_contain_text("4,096 bytes were cut")
    # A tool call: its arguments, its output as it streams, then its result.
    tree_row(page, "tu1").click()
    expect(page.get_by_test_id("detail-arguments")).to_contain_text('"q": "weather Paris"')
    expect(page.get_by_test_id("detail-output")).to_contain_text("fetching forecast")
    viewer_server.post([tool_output(e, "tu1", "sunny, 21°C\n")])
    expect(page.get_by_test_id("detail-output")).to_contain_text("sunny, 21°C")
    viewer_server.post([{**tool_end(e, "tu1", "done", 2000.0), "outputSummary": "sunny"}])
    expect(page.get_by_test_id("detail-result")).to_contain_text("sunny")
    expect(tree_row(page, "tu1")).to_have_attribute("data-state", "done")


def test_keyboard_walks_the_tree(viewer_server: Server, page: Page) -> None:
    e = "exec-keys"
    events = agent_run(e)
    viewer_server.post(events)
    open_tree(page, viewer_server, e, len(events))
    expect(page.locator("#spans [data-testid=span-row]")).to_have_count(9)
    page.get_by_test_id("export").focus()
    page.keyboard.press("Tab")  # into the tree: its first row
    active = "document.activeElement.dataset.spanId"
    assert page.evaluate(active) == "\x00root"
    assert page.evaluate("document.activeElement.getAttribute('role')") == "treeitem"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.evaluate(active) == "l1"
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("chat")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("detail")).to_be_hidden()
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowLeft")  # fold the planner
    expect(tree_row(page, "a1")).to_have_attribute("aria-expanded", "false")
    expect(page.locator("#spans [data-testid=span-row]")).to_have_count(2)
    page.keyboard.press("ArrowRight")
    expect(page.locator("#spans [data-testid=span-row]")).to_have_count(9)
    page.keyboard.press("End")
    assert page.evaluate(active) == "x2"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # focus is visible


def test_phone_taps_the_tree(browser: Browser, viewer_server: Server) -> None:
    e = "exec-phone"
    events = agent_run(e)
    viewer_server.post(events)
    with open_page(browser, viewport=PHONE, has_touch=True, is_mobile=True) as page:
        open_tree(page, viewer_server, e, len(events))
        expect(page.locator("#spans [data-testid=span-row]")).to_have_count(9)
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]"
        )
        assert max(widths[:2]) <= widths[2], widths
        for sid in ("a2", "l2", "x2"):
            box = tree_row(page, sid).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        tree_row(page, "a2").locator(".twisty").tap()
        expect(page.locator("#spans [data-testid=span-row]")).to_have_count(5)
        tree_row(page, "l1").tap()
        expect(page.get_by_test_id("chat")).to_be_visible()
        expect(page.get_by_test_id("chat")).to_be_in_viewport()


def test_timeline_rows_say_their_agent(viewer_server: Server, page: Page) -> None:
    e = "exec-agents"
    events = agent_run(e)
    viewer_server.post(events)
    page.goto(viewer_server.url(f"/?execution={e}"))
    wait_for_events(page, len(events))
    timeline = page.locator("#timeline [data-testid=event-row]")
    expect(timeline).to_have_count(len(events))
    agents = timeline.evaluate_all("rs => rs.map(r => [r.dataset.type, r.dataset.agent])")
    assert agents[1:5] == [
        ["span:start", "planner"],
        ["span:start", "planner"],  # the model call inherits its agent
        ["span:end", "planner"],
        ["tool:start", "planner"],
    ]
    assert agents[7] == ["span:start", "researcher"]
    expect(timeline.nth(7).locator(".atag")).to_have_text("researcher")
    page.get_by_test_id("agent-filter").select_option("researcher")
    expect(timeline).to_have_count(8)


def test_keyboard_walks_the_timeline(viewer_server: Server, page: Page) -> None:
    e = "exec-tl-keys"
    events = agent_run(e)
    viewer_server.post(events)
    page.goto(viewer_server.url(f"/?execution={e}"))
    timeline = page.get_by_test_id("timeline")
    expect(timeline.locator("[data-testid=event-row]")).to_have_count(len(events))
    assert timeline.get_attribute("role") == "listbox"
    timeline.focus()
    page.keyboard.press("ArrowDown")
    expect(page.get_by_test_id("detail")).to_be_visible()
    # The list points at the option in the frame it draws the selection: wait for it.
    expect(timeline).to_have_attribute("aria-activedescendant", re.compile(r"\S"))
    active = timeline.get_attribute("aria-activedescendant")
    assert active
    row = page.locator(f"#{active}")
    expect(row).to_have_attribute("aria-selected", "true")
    expect(row).to_have_attribute("role", "option")
    page.keyboard.press("ArrowDown")
    expect(timeline).not_to_have_attribute("aria-activedescendant", active)
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("detail")).to_be_hidden()


def test_the_run_list_names_and_totals_each_run(viewer_server: Server, page: Page) -> None:
    viewer_server.post(agent_run("exec-planner"))
    viewer_server.post(
        [
            {**root("exec-writer"), "spanId": "r2"},
            span_start("exec-writer", "w", "r2", "agent", "writer", 0.1, agent="writer"),
            span_start("exec-writer", "m", "w", "llm", "chat", 0.2, model="no-such-model-x"),
            span_end(
                "exec-writer",
                "m",
                "done",
                0.5,
                300.0,
                kind="llm",
                model="no-such-model-x",
                usage={"inputTokens": 10, "outputTokens": 5},
            ),
            span_end("exec-writer", "w", "done", 0.9, 800.0),
            {**root("exec-writer", "completed", 1), "spanId": "r2"},
        ]
    )
    page.goto(viewer_server.url())
    planner = page.locator("[data-testid=execution-item][data-execution-id='exec-planner']")
    writer = page.locator("[data-testid=execution-item][data-execution-id='exec-writer']")
    expect(planner.locator(".exec-label")).to_have_text("planner")
    expect(planner).to_contain_text("1.3k tok · $0.0038")
    expect(planner).to_contain_text("2 errors")
    expect(writer.locator(".exec-label")).to_have_text("writer")
    expect(writer).to_contain_text("15 tok · cost unknown")
    expect(writer).to_contain_text("completed")
    expect(writer).not_to_contain_text("error")
    # Filters: by state, by agent (a sub-agent counts), by name.
    page.get_by_test_id("exec-status-filter").select_option("completed")
    expect(page.get_by_test_id("execution-item")).to_have_count(1)
    expect(writer).to_be_visible()
    page.get_by_test_id("exec-status-filter").select_option("")
    page.get_by_test_id("exec-agent-filter").fill("researcher")
    expect(page.locator("[data-testid=execution-item]:not([hidden])")).to_have_count(1)
    expect(planner).to_be_visible()
    page.get_by_test_id("exec-agent-filter").fill("")
    page.get_by_test_id("exec-search").fill("writ")
    expect(page.locator("[data-testid=execution-item]:not([hidden])")).to_have_count(1)
    page.get_by_test_id("exec-search").fill("")
    # Totals follow the stream.
    viewer_server.post(
        [
            span_start("exec-planner", "l9", "a1", "llm", "chat", 5.0, model="gpt-4o"),
            span_end(
                "exec-planner",
                "l9",
                "done",
                5.5,
                500.0,
                kind="llm",
                model="gpt-4o",
                usage={"inputTokens": 1000, "outputTokens": 0},
            ),
        ]
    )
    expect(planner).to_contain_text("2.3k tok")
    planner.click()
    expect(page.get_by_test_id("exec-name")).to_have_text("planner")
    expect(page.get_by_test_id("run-totals")).to_contain_text("2.3k tok")


def test_plan_tasks_end_with_their_spans_and_their_wave(viewer_server: Server, page: Page) -> None:
    # The plan's JSON: tasks of a wave, told by transcript entries and tool calls. A task
    # runs while one of its tools does, failed if one did; the wave over, none runs on.
    e = "exec-plan"
    entries = [transcript(e, "on it", task=t) for t in ("T1", "T2", "T3")]
    for x in entries:
        x["entry"]["waveNumber"] = 1
    events = [
        root(e, "running"), wave(e, 0, 0), *entries,
        tool_start(e, "u1", "Bash", "make", task="T1"),
        tool_start(e, "u2", "Bash", "test", task="T2"),
    ]  # fmt: skip
    viewer_server.post(events)
    open_tree(page, viewer_server, e, len(events))
    for t in ("T1", "T2", "T3"):
        expect(tree_row(page, f"task:{t}")).to_have_attribute("data-state", "running")
    viewer_server.post([tool_end(e, "u1", "done", 5.0), tool_end(e, "u2", "error", 5.0)])
    expect(tree_row(page, "task:T1")).to_have_attribute("data-state", "done")
    expect(tree_row(page, "task:T2")).to_have_attribute("data-state", "error")
    expect(tree_row(page, "task:T3")).to_have_attribute("data-state", "running")
    viewer_server.post([wave(e, 1, 1, status="completed")])
    expect(tree_row(page, "task:T3")).to_have_attribute("data-state", "done")
    expect(tree_row(page, "task:T3").locator(".sbar")).not_to_have_class(re.compile(r"\bopen\b"))
