"""The browser tests' server, browser and page: the helpers and the fixtures, in one place.

Registered as a plugin by ``conftest`` (``pytest_plugins``), so every ``test_viewer_*``
module has the fixtures ``viewer_server`` (a ``trio-obs serve`` subprocess over a fresh
store), ``browser`` (one headless Chromium a module) and ``page`` (a page of a fresh
context that fails its test on any uncaught or console error). A module whose server or page
differs (other options, one server a module) defines its own fixture of that name.

Playwright is imported only when a browser is started: the other tests never need it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from support import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TABLET = {"width": 820, "height": 1180}
# What the browser itself logs when a request fails (a stopped server, a 401): tests that
# cause these on purpose allow them; any other console error fails the test.
NETWORK_ERROR = re.compile(r"^(Failed to load resource|WebSocket connection to .* failed)")


def need_chromium() -> None:
    """Skip (fail on CI) where Chromium is not installed; at a module's top, the whole module."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing (apt-get install chromium)", pytrace=False)
        pytest.skip("chromium is not installed", allow_module_level=True)


# --------------------------------------------------------------------------- a real server


class Server(ServerProcess):
    """``trio-obs serve --db DB`` in a subprocess, posted to as an external producer would."""

    def __init__(self, db: Path, port: int = 0, *extra: str) -> None:
        super().__init__("--db", str(db), *extra, port=port)

    def post(self, events: list[dict[str, Any]], token: str | None = None) -> list[int]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx.post(self.url("/api/events"), json=events, headers=headers, timeout=10)
        assert r.status_code == 202, r.text
        seqs: list[int] = r.json()["seqs"]
        return seqs


@contextmanager
def running(db: Path, *extra: str) -> Iterator[Server]:
    srv = Server(db, 0, *extra)
    try:
        yield srv
    finally:
        srv.stop()


# --------------------------------------------------------------------------- a real browser


@contextmanager
def open_browser() -> Iterator[Browser]:
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield b
        finally:
            b.close()


_network_errors_allowed: set[int] = set()


def allow_network_errors(page: Page) -> None:
    """This test stops a server or gets a 401 on purpose: the browser's own logs are expected."""
    _network_errors_allowed.add(id(page))


@contextmanager
def open_page(browser: Browser, viewport: dict[str, int] = DESKTOP, **kw: Any) -> Iterator[Page]:
    """A page of a fresh context; on exit, no uncaught error and no console error happened."""
    context = browser.new_context(viewport=viewport, **kw)  # type: ignore[arg-type]
    pg = context.new_page()
    errors: list[str] = []
    console: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    try:
        yield pg
    finally:
        allowed = id(pg) in _network_errors_allowed
        _network_errors_allowed.discard(id(pg))
        context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"
    if allowed:
        console = [c for c in console if not NETWORK_ERROR.match(c)]
    assert console == [], f"console errors: {console}"


# --------------------------------------------------------------------------- the fixtures


@pytest.fixture
def viewer_server(tmp_path: Path) -> Iterator[Server]:
    """``trio-obs serve`` over a fresh store under ``tmp_path``."""
    with running(tmp_path / "obs.db") as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module's tests."""
    with open_browser() as b:
        yield b


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A desktop-sized page of a fresh context (see ``open_page``)."""
    with open_page(browser) as pg:
        yield pg
