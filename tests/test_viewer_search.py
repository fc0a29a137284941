"""The viewer's search across runs (SPEC §14): the box in the top bar, its hits, and a hit
opening its event in its run; the hit's text is never markup."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from test_viewer_browser import (
    XSS_IMG,
    heartbeat,
    status,
    tool_end,
    tool_start,
    transcript,
)
from viewer_fixtures import Server, allow_network_errors


def test_a_hit_opens_its_event_in_its_run(viewer_server: Server, page: Page) -> None:
    viewer_server.post([transcript("exec-a", f"routine step {i}") for i in range(300)])
    viewer_server.post(
        [
            tool_start("exec-b", "tu1", "Bash", "rm -rf build/"),
            tool_end("exec-b", "tu1", "error", 5.0),
        ]
    )
    viewer_server.post([transcript("exec-a", "permission denied while cleaning " + XSS_IMG)])
    page.goto(viewer_server.url("/?execution=exec-b"))
    page.get_by_test_id("find-q").fill("rm -rf OR cleaning")
    page.get_by_test_id("find-q").press("Enter")
    hits = page.get_by_test_id("hit")
    expect(hits).to_have_count(2)
    expect(hits.first).to_contain_text("exec-a #301")  # newest first
    expect(hits.first.locator("mark")).to_have_text("cleaning")
    expect(hits.first).to_contain_text(XSS_IMG)  # as text: no <img> was made
    assert page.locator("#found img").count() == 0
    hits.first.click()
    expect(page.get_by_test_id("found")).to_be_hidden()
    expect(page.get_by_test_id("exec-title")).to_have_text("exec-a")
    target = page.locator("#timeline [data-testid=event-row][data-seq='301']")
    expect(target).to_be_visible()
    expect(target).to_have_class(re.compile(r"\bsel\b"))
    expect(page.get_by_test_id("detail")).to_contain_text("#301 transcript:entry")


def test_more_pages_on_and_a_bad_query_says_why(viewer_server: Server, page: Page) -> None:
    viewer_server.post([transcript("exec-p", f"deploy step {i}") for i in range(60)])
    page.goto(viewer_server.url("/?execution=exec-p"))
    page.get_by_test_id("find-q").fill("deploy")
    page.get_by_test_id("find-q").press("Enter")
    expect(page.get_by_test_id("hit")).to_have_count(50)
    expect(page.get_by_test_id("found-count")).to_have_text("50+ hits, newest first")
    page.get_by_test_id("found-more").click()
    expect(page.get_by_test_id("hit")).to_have_count(60)
    expect(page.get_by_test_id("found-more")).to_be_hidden()
    allow_network_errors(page)  # the browser logs the 400 it gets
    page.get_by_test_id("find-q").fill('"deploy')
    page.get_by_test_id("find-q").press("Enter")
    expect(page.get_by_test_id("found-count")).to_contain_text("quote that is not closed")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("found")).to_be_hidden()


def test_the_run_list_filters_by_agent_and_errors(viewer_server: Server, page: Page) -> None:
    viewer_server.post(
        [heartbeat("exec-calm", "agent-7", "working", "task-1"), status("exec-calm", "running")]
    )
    viewer_server.post(
        [tool_start("exec-bad", "tu1", "Bash", "make"), tool_end("exec-bad", "tu1", "error", 3.0)]
    )
    viewer_server.post([status("exec-done", "failed", "tests failed")])
    page.goto(viewer_server.url("/"))
    # While the pointer is over the side bar the list holds still: left items are hidden.
    items = page.locator("[data-testid=execution-item]:visible")
    expect(items).to_have_count(3)
    page.get_by_test_id("exec-errors-filter").check()
    expect(items).to_have_count(2)  # a tool in error, a failed run
    expect(items.filter(has_text="exec-calm")).to_have_count(0)
    page.get_by_test_id("exec-errors-filter").uncheck()
    page.get_by_test_id("exec-agent-filter").fill("agent-7")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("exec-calm")
    page.get_by_test_id("exec-agent-filter").fill("")
    page.get_by_test_id("exec-status-filter").select_option("failed")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("exec-done")
