"""The SQLite store's write-ahead log stays small under a long write load, and shrinks after."""

from __future__ import annotations

from pathlib import Path

import trio

from support import TIMEOUT
from trio_obs import open_observability
from trio_obs.core import events as ev
from trio_obs.hub.wal import WAL_CHECKPOINT_BYTES, WAL_SIZE_LIMIT, WalWatch


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def test_the_wal_stays_small_under_a_long_write_load(tmp_path: Path) -> None:
    # One small event per commit, as a trickle of producers posts them: each commit
    # writes several pages, so a WAL checkpointed by rows alone grew to 20x the data.
    path = tmp_path / "obs.db"
    wal = Path(f"{path}-wal")
    largest = 0
    async with open_observability(str(path), durability="normal") as obs:
        for i in range(8000):
            await obs.hub.publish([ev.AgentHeartbeatEvent(
                execution_id=f"e{i % 50}", instance_id=f"agent-{i}", status="working",
                timestamp="2026-01-01T00:00:00.000Z")])  # fmt: skip
            if i % 20 == 0:
                largest = max(largest, _size(wal))
        data = _size(path) + _size(wal)  # an upper bound of the data: what both hold
        # Once writes pause, the WAL is checkpointed and cut to nothing.
        with trio.fail_after(TIMEOUT):
            while _size(wal) > 0:  # noqa: ASYNC110 - the store's own task does it
                await trio.sleep(0.05)
    assert largest <= WAL_CHECKPOINT_BYTES + 1024 * 1024, f"the WAL reached {largest:,} bytes"
    assert largest <= 2 * max(data, WAL_SIZE_LIMIT)


def test_the_size_is_read_every_few_commits_and_after_large_ones(tmp_path: Path) -> None:
    wal = tmp_path / "obs.db-wal"
    wal.write_bytes(bytes(WAL_CHECKPOINT_BYTES + 1))
    watch = WalWatch(str(wal))
    assert not watch.wrote()  # not read yet
    assert watch.wrote(large=True)  # a large commit reads it at once
    assert not any(watch.wrote() for _ in range(15))
    assert watch.wrote()  # the 16th commit since the last reading
    assert not watch.paused()  # it wrote since the last look
    assert watch.paused()  # and then nothing: a pause
    watch.checkpointed("TRUNCATE", complete=False)  # readers were busy: it is still due
    assert watch.paused()
    watch.checkpointed("RESTART", complete=True)  # complete, but the file was not cut
    assert not watch.dirty and watch.paused()
    watch.checkpointed("TRUNCATE", complete=True)
    assert not watch.paused()
    watch.wrote()
    assert not watch.paused() and watch.paused()  # the next pause
