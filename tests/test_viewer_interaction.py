"""The execution list under a live stream: real mouse presses, the keyboard, follow mode."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from test_viewer_browser import (
    Streamer,
    execution_item,
    list_order,
    status,
    transcript,
)
from viewer_fixtures import Server

EXECUTIONS = [f"exec-{i}" for i in range(8)]


def selected(page: Page) -> str | None:
    sel: str | None = page.evaluate("window.__trioObs.selected()")
    return sel


def test_real_mouse_presses_select_while_events_stream(viewer_server: Server, page: Page) -> None:
    for e in EXECUTIONS:
        viewer_server.post([status(e, "running"), transcript(e, "hello")])
    page.goto(viewer_server.url())
    expect(page.get_by_test_id("execution-item")).to_have_count(8)
    with Streamer(viewer_server, EXECUTIONS, rate=50) as streamer:
        expect(execution_item(page, EXECUTIONS[0])).not_to_contain_text(" 2 events")
        hits = 0
        for _ in range(8):
            # Like a person: into the side bar (the list then holds still), aim, press.
            page.mouse.move(100, 60, steps=3)
            page.wait_for_function("() => new Promise(r => requestAnimationFrame(r))")
            current = selected(page)
            target = next(e for e in reversed(list_order(page)) if e != current)
            item = execution_item(page, target)
            b = item.bounding_box()
            assert b is not None
            page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=4)
            page.mouse.down()
            # Held like a person's press (100-200 ms at this rate) while the stream goes on:
            # until a whole post begun after the press has returned (one may be in flight).
            streamer.wait_posted(streamer.posted + 2 * streamer.per_tick)
            page.mouse.up()
            expect(item).to_have_attribute("aria-selected", "true")
            hits += selected(page) == target
            page.mouse.move(900, 700, steps=2)  # leave the list: it may reorder again
        assert hits == 8
        assert streamer.posted > 0
    # Still the server's figures: each item's count equals what the server stored.
    listed = {e["executionId"]: e["eventCount"] for e in server_listing(viewer_server)}
    for e in EXECUTIONS:
        expect(execution_item(page, e)).to_contain_text(f"{listed[e]:,} events")


def server_listing(srv: Server) -> list[dict[str, object]]:
    result: list[dict[str, object]] = httpx.get(
        srv.url("/api/executions?limit=1000"), timeout=10
    ).json()
    return result


def test_keyboard_selection_while_events_stream(viewer_server: Server, page: Page) -> None:
    for e in EXECUTIONS[:6]:
        viewer_server.post([status(e, "running"), transcript(e, "hello")])
    page.goto(viewer_server.url())
    expect(page.get_by_test_id("execution-item")).to_have_count(6)
    with Streamer(viewer_server, EXECUTIONS[:6], rate=50) as streamer:
        page.get_by_test_id("exec-status-filter").focus()
        page.keyboard.press("Tab")  # into the list: one item is in the tab order
        focused = page.evaluate("document.activeElement.dataset.executionId")
        assert focused in EXECUTIONS
        # Focus stays on the item while events stream (the list is updated in place): wait
        # until 30 more events were posted and a frame has drawn them.
        streamer.wait_posted(streamer.posted + 30)
        page.wait_for_function("() => new Promise(r => requestAnimationFrame(r))")
        assert page.evaluate("document.activeElement.dataset.executionId") == focused
        picks = 0
        for _ in range(5):
            page.keyboard.press("ArrowDown")
            target = page.evaluate("document.activeElement.dataset.executionId")
            page.keyboard.press("Enter")
            expect(execution_item(page, target)).to_have_attribute("aria-selected", "true")
            picks += selected(page) == target
        assert picks == 5
        page.keyboard.press("Home")
        first = page.evaluate("document.activeElement.dataset.executionId")
        assert first == list_order(page)[0]


def test_follows_the_latest_run_until_one_is_picked(viewer_server: Server, page: Page) -> None:
    viewer_server.post([status("run-1", "completed"), transcript("run-1", "done")])
    viewer_server.post([status("run-2", "running"), transcript("run-2", "working")])
    page.goto(viewer_server.url())
    # Nothing chosen: the most recently active run is shown, and follow mode is on.
    expect(page.get_by_test_id("exec-title")).to_have_text("run-2")
    expect(page.get_by_test_id("follow")).to_be_checked()
    expect(page.locator("#timeline [data-testid=event-row]", has_text="working")).to_be_visible()
    # A new run starts: the page switches to it.
    viewer_server.post([status("run-3", "started"), transcript("run-3", "next run")])
    expect(page.get_by_test_id("exec-title")).to_have_text("run-3")
    expect(page.locator("#timeline [data-testid=event-row]", has_text="next run")).to_be_visible()
    assert "execution=" not in page.url  # a reload follows again
    # The user picks one: following stops, and a new run no longer takes over.
    execution_item(page, "run-1").click()
    expect(page.get_by_test_id("follow")).not_to_be_checked()
    viewer_server.post([status("run-4", "started")])
    expect(execution_item(page, "run-4")).to_be_visible()
    expect(page.get_by_test_id("exec-title")).to_have_text("run-1")
    assert page.url.endswith("?execution=run-1")
    # Turning it back on goes to the latest run.
    page.get_by_test_id("follow").check()
    expect(page.get_by_test_id("exec-title")).to_have_text("run-4")


def test_search_by_id_and_status_filter(viewer_server: Server, page: Page) -> None:
    viewer_server.post([status("alpha-1", "completed")])
    viewer_server.post([status("alpha-2", "failed")])
    viewer_server.post([status("beta-1", "running")])
    page.goto(viewer_server.url())
    expect(page.get_by_test_id("execution-item")).to_have_count(3)
    page.get_by_test_id("exec-search").fill("alpha")
    expect(page.locator("[data-testid=execution-item]:visible")).to_have_count(2)
    page.get_by_test_id("exec-status-filter").select_option("failed")
    expect(page.locator("[data-testid=execution-item]:visible")).to_have_count(1)
    expect(execution_item(page, "alpha-2")).to_be_visible()
    page.get_by_test_id("exec-search").fill("beta")
    expect(page.locator("[data-testid=execution-item]:visible")).to_have_count(0)
    expect(page.locator("#exec-empty")).to_have_text("No execution matches.")
    page.get_by_test_id("exec-status-filter").select_option("")
    expect(execution_item(page, "beta-1")).to_be_visible()


def test_a_long_list_keeps_the_dom_small(viewer_server: Server, page: Page) -> None:
    viewer_server.post([status(f"many-{i:03d}", "completed") for i in range(400)])
    page.goto(viewer_server.url())
    expect(page.locator("#exec-count")).to_have_text("200")  # the listing's first page
    viewer_server.post([status(f"new-{i:03d}", "running") for i in range(100)])  # from the stream
    expect(page.locator("#exec-count")).to_have_text("300")
    assert page.get_by_test_id("execution-item").count() <= 151
    expect(page.locator("#exec-empty")).to_contain_text("more: search by id")
    rendered = set(
        page.get_by_test_id("execution-item").evaluate_all(
            "items => items.map(i => i.dataset.executionId)"
        )
    )
    listed = [str(e["executionId"]) for e in server_listing(viewer_server)]
    hidden = next(e for e in listed if e not in rendered)
    page.get_by_test_id("exec-search").fill(hidden)
    expect(page.locator("[data-testid=execution-item]:visible")).to_have_count(1)
    expect(execution_item(page, hidden)).to_be_visible()
    expect(page.locator("#exec-empty")).to_be_hidden()


def test_focused_items_take_enter_while_events_stream(viewer_server: Server, page: Page) -> None:
    """Issue 19 item 13: an item focused any way (here by script, as assistive tools do)
    keeps its focus while the stream reorders the list, and Enter selects it: 5 of 5."""
    for e in EXECUTIONS[:6]:
        viewer_server.post([status(e, "running"), transcript(e, "hello")])
    page.goto(viewer_server.url())
    expect(page.get_by_test_id("execution-item")).to_have_count(6)
    with Streamer(viewer_server, EXECUTIONS[:6], rate=100) as streamer:
        picks = 0
        for _ in range(5):
            current = selected(page)
            target = next(e for e in list_order(page)[::-1] if e != current)
            page.mouse.click(700, 20)  # the last input was a press elsewhere (not keys)
            execution_item(page, target).focus()
            # Let the stream reorder the list for a few frames before the key is pressed.
            streamer.wait_posted(streamer.posted + 10)
            assert page.evaluate("document.activeElement.dataset.executionId") == target
            page.keyboard.press("Enter")
            expect(execution_item(page, target)).to_have_attribute("aria-selected", "true")
            picks += selected(page) == target
        assert picks == 5
        assert streamer.posted > 0
