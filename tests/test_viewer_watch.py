"""The watchdog on the page (SPEC §13): alerts live on their run's row and in their own list,
gone when cleared; a running row shows its age. Real Chromium, a real ``trio-obs serve``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from support import TIMEOUT
from test_viewer_browser import (
    execution_item,
    heartbeat,
    status,
    tool_end,
    tool_start,
)
from viewer_fixtures import Server, open_page, running

TIMEOUT_MS = TIMEOUT * 1000


@pytest.fixture
def viewer_server(tmp_path: Path) -> Iterator[Server]:
    with running(tmp_path / "obs.db", "--lost-after", "1", "--slow-after", "1") as srv:
        yield srv


def test_alerts_appear_live_and_go_when_cleared(viewer_server: Server, page: Page) -> None:
    viewer_server.post([status("calm", "running"), heartbeat("calm", "a", "working", "t")])
    page.goto(viewer_server.url())
    calm = execution_item(page, "calm")
    expect(calm.get_by_test_id("running-age")).to_contain_text("running ")
    # opened after the page: only the "all" stream can tell it of these alerts
    viewer_server.post([status("hung", "running"), tool_start("hung", "tu1", "build", "make")])
    alerts = page.get_by_test_id("watch-alerts")
    slow = alerts.locator("[data-testid=watch-alert][data-alert=slow]")
    expect(slow).to_contain_text("build")
    row = execution_item(page, "hung")
    expect(row.get_by_test_id("watch-badge")).to_have_text("slow")
    # calm's agent stopped sending heartbeats: it is judged lost
    expect(execution_item(page, "calm").get_by_test_id("watch-badge")).to_have_text("lost")
    viewer_server.post([tool_end("hung", "tu1", "done", 1500)])
    expect(slow).to_have_count(0)
    expect(row.get_by_test_id("watch-badge")).to_have_count(0)
    # its agent is back, and the run ends (so it is judged no more)
    viewer_server.post([heartbeat("calm", "a", "working", "t"), status("calm", "completed")])
    expect(calm.get_by_test_id("watch-badge")).to_have_count(0)
    expect(calm.get_by_test_id("running-age")).to_have_count(0)
    expect(alerts).to_be_hidden()


def test_a_page_opened_later_shows_the_active_alerts(
    viewer_server: Server, browser: Browser, page: Page
) -> None:
    viewer_server.post([status("old", "running"), tool_start("old", "tu1", "deploy", "ship")])
    # A first page sees the alert judged (live); the page under test is opened after that.
    with open_page(browser) as first:
        first.goto(viewer_server.url())
        # a hang guard, never about speed
        expect(first.get_by_test_id("watch-alert")).to_contain_text("deploy", timeout=TIMEOUT_MS)
    page.goto(viewer_server.url())
    expect(page.get_by_test_id("watch-alert")).to_contain_text("deploy")
    expect(execution_item(page, "old").get_by_test_id("watch-badge")).to_have_text("slow")


def test_a_full_meta_line_stays_inside_its_run_item(viewer_server: Server, page: Page) -> None:
    # State, count, age, the watchdog's badge and the running age on one line of the side
    # bar: what does not fit is cut inside the item (with an ellipsis), never past its edge.
    viewer_server.post([status("busy", "running"), tool_start("busy", "tu1", "build", "make all")])
    page.goto(viewer_server.url())
    row = execution_item(page, "busy")
    expect(row.get_by_test_id("watch-badge")).to_have_text("slow")
    expect(row.get_by_test_id("running-age")).to_contain_text("running ")
    past = row.evaluate(
        """li => {
          const line = li.querySelector(".exec-meta").getBoundingClientRect();
          return [...li.querySelectorAll(".exec-meta > *")]
            .filter((x) => x.getBoundingClientRect().right > line.right + 0.5)
            .map((x) => x.textContent);
        }"""
    )
    assert past == []
    # The state and the watchdog's badge are never the ones cut.
    whole = "b => b.scrollWidth <= b.clientWidth"
    assert row.get_by_test_id("watch-badge").evaluate(whole)
    assert row.locator(".exec-meta > .badge").evaluate(whole)
