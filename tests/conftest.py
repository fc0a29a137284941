"""Fixtures shared by the test modules; the plain helpers are in ``support``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

import trio_obs
from support import Server, running_server


@pytest.fixture
async def obs() -> AsyncIterator[trio_obs.Observability]:
    """A fresh in-memory store, broker and services."""
    async with trio_obs.open_observability() as o:
        yield o


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """A server on a free loopback port, over a fresh in-memory store."""
    async with running_server() as srv:
        yield srv


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
