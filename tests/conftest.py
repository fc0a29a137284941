"""Fixtures shared by the test modules; the plain helpers are in ``support``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

import trio_obs
from support import TIMEOUT, Address, Server, running_server
from trio_obs.cli import DEFAULT_DB

pytest_plugins = [
    "redis_support",  # redis, own_redis, prefix: private redis-servers
    "viewer_fixtures",  # the browser tests' server, browser and page
]


@pytest.fixture(autouse=True, scope="session")
def away_from_the_working_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests, and the servers they start, run in an empty directory of their own.

    So the default store of the directory pytest was started in (``trio-obs.db``, held
    by the quick start's ``serve --demo``, say) is never opened, locked or written.
    """
    home = Path.cwd()
    scratch = tmp_path_factory.mktemp("cwd")
    os.chdir(scratch)
    try:
        yield scratch
    finally:
        os.chdir(home)


@pytest.fixture(autouse=True)
def never_the_default_store(away_from_the_working_directory: Path) -> Iterator[None]:
    """A test that opens the default store (a server without ``--db``) fails, and says so."""
    yield
    made = sorted(away_from_the_working_directory.glob(f"{DEFAULT_DB}*"))
    for path in made:  # the next test starts clean
        path.unlink()
    assert not made, (
        f"this test opened the working directory's default store ({DEFAULT_DB}): "
        "give every server a --db (a file under tmp_path, or :memory:)"
    )


@pytest.fixture
async def obs() -> AsyncIterator[trio_obs.Observability]:
    """A fresh in-memory store, broker and services."""
    async with trio_obs.open_observability() as o:
        yield o


@pytest.fixture
def broker(obs: trio_obs.Observability) -> trio_obs.EmittingHub:
    """The ``obs`` fixture's hub, with the plan's emit methods."""
    return obs.broker


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """A server on a free loopback port, over a fresh in-memory store."""
    async with running_server() as srv:
        yield srv


@pytest.fixture
async def http(server: Address) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the test's ``server`` (this one's, or a module's own)."""
    async with httpx.AsyncClient(base_url=server.url(), timeout=TIMEOUT, trust_env=False) as c:
        yield c


@pytest.fixture
def no_server_errors(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Whatever a client does, the server logs no error (no traceback); use it per module."""
    yield
    if request.node.get_closest_marker("xfail"):
        return  # a known bug may log; its test says so itself
    records = [r for when in ("setup", "call") for r in caplog.get_records(when)]
    records += caplog.records  # teardown so far
    errors = [r for r in records if r.name.startswith("trio_obs") and r.levelno >= 40]
    assert not errors, [r.getMessage() for r in errors]
