"""The viewer's layout at phone, tablet and desktop sizes, in headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from test_viewer_browser import (
    demo,
    execution_item,
    transcript,
)
from viewer_fixtures import DESKTOP, PHONE, TABLET, Server, open_page, running


@pytest.fixture(scope="module")
def viewer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(Path(tmp_path_factory.mktemp("layout")) / "obs.db") as srv:
        srv.post(demo("exec-old"))
        srv.post(demo("exec-new"))
        yield srv


def box(page: Page, selector: str) -> dict[str, Any]:
    b = page.locator(selector).bounding_box()
    assert b is not None, f"{selector} is not laid out"
    return dict(b)


def no_horizontal_overflow(page: Page) -> None:
    width = page.viewport_size["width"] if page.viewport_size else 0
    scroll = page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
    )
    assert scroll <= width, f"the page is {scroll} px wide in a {width} px viewport"


def test_phone(viewer_server: Server, browser: Browser) -> None:
    with open_page(browser, PHONE, has_touch=True, is_mobile=True) as page:
        page.goto(viewer_server.url())
        # Follow mode shows the latest run; a posted event appears in the timeline.
        expect(page.get_by_test_id("exec-title")).to_have_text("exec-new")
        viewer_server.post([transcript("exec-new", "seen on a phone")])
        row = page.locator("#timeline [data-testid=event-row]", has_text="seen on a phone")
        expect(row).to_be_visible()
        assert box(page, "#timeline")["width"] >= 300
        assert box(page, "#timeline")["height"] >= 300
        no_horizontal_overflow(page)
        # The execution list is a drawer: closed, then opened, then closed by a choice.
        expect(page.locator("#executions")).to_be_hidden()
        page.get_by_test_id("open-list").tap()
        expect(execution_item(page, "exec-old")).to_be_visible()
        no_horizontal_overflow(page)
        execution_item(page, "exec-old").tap()
        expect(page.locator("#executions")).to_be_hidden()
        expect(page.get_by_test_id("exec-title")).to_have_text("exec-old")
        expect(page.locator("#timeline [data-testid=event-row]").first).to_be_visible()
        # An event's detail opens over the timeline and closes again.
        page.locator("#timeline [data-testid=event-row]").first.tap()
        expect(page.get_by_test_id("detail")).to_be_visible()
        no_horizontal_overflow(page)
        assert box(page, "#panel")["width"] <= 390
        page.locator("#close-panel").tap()
        expect(page.get_by_test_id("detail")).to_be_hidden()
        no_horizontal_overflow(page)


def test_tablet(viewer_server: Server, browser: Browser) -> None:
    with open_page(browser, TABLET) as page:
        page.goto(viewer_server.url())
        expect(page.get_by_test_id("exec-title")).to_have_text("exec-new")
        # Two columns: the list and the timeline; alerts and agents in a drawer.
        expect(execution_item(page, "exec-old")).to_be_visible()
        assert box(page, "#timeline")["width"] >= 500
        expect(page.locator("#alerts")).to_be_hidden()
        page.get_by_test_id("open-panel").click()
        expect(page.locator("#agents")).to_be_visible()
        page.locator("#close-panel").click()
        expect(page.locator("#agents")).to_be_hidden()
        no_horizontal_overflow(page)


def test_desktop(viewer_server: Server, browser: Browser) -> None:
    with open_page(browser, DESKTOP) as page:
        page.goto(viewer_server.url())
        expect(page.get_by_test_id("exec-title")).to_have_text("exec-new")
        side, timeline, panel = box(page, "#side"), box(page, "#timeline"), box(page, "#panel")
        assert side["x"] + side["width"] <= timeline["x"] + 1
        assert timeline["x"] + timeline["width"] <= panel["x"] + 1
        assert timeline["width"] >= 600
        expect(page.locator("#agents")).to_be_visible()
        expect(page.get_by_test_id("open-list")).to_be_hidden()
        no_horizontal_overflow(page)
