"""The lock file beside a SQLite store: one owner, removed on a clean close, and its mark."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trio_obs import StoreError, open_observability
from trio_obs.hub import lockfile
from trio_obs.hub.lockfile import Mark, StoreLock, boot_id


def test_a_second_owner_is_refused_naming_the_lock(tmp_path: Path) -> None:
    db = str(tmp_path / "obs.db")
    first = StoreLock(db)
    try:
        with pytest.raises(StoreError, match="in use by another trio-obs server") as caught:
            StoreLock(db)
        assert f"{db}.lock" in str(caught.value)
    finally:
        first.release()


def test_release_removes_the_file_and_frees_it(tmp_path: Path) -> None:
    db = str(tmp_path / "obs.db")
    StoreLock(db).release()
    assert not os.path.exists(f"{db}.lock")
    StoreLock(db).release()  # and the next owner takes it


def test_a_lock_on_a_file_removed_meanwhile_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race of a clean close: a second server opens the lock file, then the owner
    # removes it and lets go, then the second locks what it opened: a lock on a removed
    # file, which would let a third server in too. The second must take the one at the path.
    db = str(tmp_path / "obs.db")
    owner = StoreLock(db)
    opened_before_the_close = os.open(f"{db}.lock", os.O_RDWR)
    owner.release()
    real_open = os.open
    calls: list[str] = []

    def racing_open(path: str, flags: int, mode: int = 0o777) -> int:
        calls.append(path)
        return opened_before_the_close if len(calls) == 1 else real_open(path, flags, mode)

    monkeypatch.setattr(lockfile.os, "open", racing_open)
    second = StoreLock(db)
    monkeypatch.undo()
    try:
        assert len(calls) == 2  # the stale file was let go, the one at the path taken
        held, named = os.fstat(second._fd), os.stat(f"{db}.lock")
        assert (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)
        with pytest.raises(StoreError, match="in use"):
            StoreLock(db)  # a third server is refused
    finally:
        second.release()


def test_the_mark_is_found_by_the_next_owner_unless_released(tmp_path: Path) -> None:
    db = str(tmp_path / "obs.db")
    first = StoreLock(db)
    assert first.previous is None
    first.mark(Mark("e1", 7, "normal", boot_id()))
    first.advance(12)
    # A process that dies leaves its mark (the page cache keeps it): read it as the next would.
    with open(f"{db}.lock", "rb") as f:
        assert Mark.decode(f.read()) == Mark("e1", 12, "normal", boot_id())
    first.release(remove=False)
    second = StoreLock(db)
    assert second.previous == Mark("e1", 12, "normal", boot_id())
    second.release()
    third = StoreLock(db)
    assert third.previous is None  # a clean close leaves nothing behind
    third.release()


def test_garbage_is_no_mark() -> None:
    assert Mark.decode(b"") is None
    assert Mark.decode(b"trio-obs-lock 1 e1 full boot 00000000x2\n") is None
    assert Mark.decode(b"something else\n") is None
    mark = Mark("abc", 3, "full", "boot")
    assert Mark.decode(mark.encode() + b"\0" * 40) == mark


async def test_a_store_closed_cleanly_leaves_no_lock_file(tmp_path: Path) -> None:
    db = tmp_path / "obs.db"
    async with open_observability(str(db)) as obs:
        await obs.broker.emit_agent_heartbeat("e1", "i1", "working")
        assert (tmp_path / "obs.db.lock").exists()
    assert not (tmp_path / "obs.db.lock").exists()
    async with open_observability(str(db)) as obs:  # and it opens again
        assert obs.broker.last_seq("e1") == 1
