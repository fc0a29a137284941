"""When a SQLite store checkpoints its write-ahead log, so the WAL stays a few MiB.

SQLite's autocheckpoint runs in the committing thread (an fsync on the trio thread), so
the store checkpoints itself, in a worker thread: when the WAL has grown past
:data:`WAL_CHECKPOINT_BYTES` (its size is read every few commits: a commit of one small
event writes several pages, so rows alone say little), and after each pause in writes
(``TRUNCATE``: the file shrinks to nothing). ``journal_size_limit`` caps what a WAL that
was reset keeps on disk.
"""

from __future__ import annotations

import os
from typing import Final, Literal, TypeAlias

WAL_CHECKPOINT_BYTES: Final = 4 * 1024 * 1024
"""A WAL larger than this is checkpointed (``RESTART``: the next commits reuse it)."""
WAL_SIZE_LIMIT: Final = 4 * 1024 * 1024
"""``journal_size_limit``: a WAL that was reset is cut down to this size."""
WAL_QUIET_SECONDS: Final = 1.0
"""A store that wrote nothing for this long checkpoints with ``TRUNCATE``."""
CHECK_EVERY: Final = 16
"""Commits between two readings of the WAL's size."""

CheckpointMode: TypeAlias = Literal["PASSIVE", "RESTART", "TRUNCATE"]


class WalWatch:
    """Counts a store's commits and says when its WAL wants a checkpoint."""

    __slots__ = ("_commits", "_since_look", "dirty", "empty", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.dirty = False
        """Something was written since the last complete checkpoint."""
        self.empty = False
        """The WAL file was cut to nothing since the last write."""
        self._commits = 0
        self._since_look = 0

    def size(self) -> int:
        """The WAL's size in bytes now (0 when there is none)."""
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

    def wrote(self, *, large: bool = False) -> bool:
        """One commit (``large``: many rows or bytes); True when the WAL should be checkpointed."""
        self.dirty = True
        self.empty = False
        self._commits += 1
        self._since_look += 1
        if self._since_look < CHECK_EVERY and not large:
            return False
        self._since_look = 0
        return self.size() > WAL_CHECKPOINT_BYTES

    def paused(self) -> bool:
        """Whether writes paused (nothing written since the last call) with a WAL left to cut."""
        commits, self._commits = self._commits, 0
        return commits == 0 and not self.empty

    def checkpointed(self, mode: CheckpointMode, *, complete: bool) -> None:
        """A checkpoint ran; ``complete``: every frame of the WAL is in the database now."""
        if complete:
            self.dirty = False
            self.empty = mode == "TRUNCATE"
