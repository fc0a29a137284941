"""The lock file beside a SQLite store: one owner at a time, and the mark of its last write.

``<db>.lock`` is held with ``flock`` while a server has the store open and removed when
it closes the store. While held it carries a :class:`Mark`: the store's epoch, the
position of the last write it acknowledged, how durable its commits are and which boot
of the machine wrote them. The mark lives in the page cache (a shared memory map, never
synced: it costs a memory write per commit) and survives the process, not the machine.
A server that finds a mark the database does not reach knows the database lost
acknowledged writes; one that finds the mark of another boot, left by a store whose
commits were not synced, cannot prove it lost none (SPEC §10: the epoch changes then).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
from pathlib import Path
from typing import Final

import attrs

from ..core.errors import StoreError

_SIZE: Final = 256
"""Bytes of the mark's page (a mark is one short line)."""
_MAGIC: Final = b"trio-obs-lock 1"
_DIGITS: Final = 20
_BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """Names this boot of the machine (Linux); ``unknown`` where the system does not say."""
    try:
        return _BOOT_ID.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@attrs.frozen
class Mark:
    """What the last owner of a store had acknowledged, and under which conditions."""

    epoch: str
    position: int
    """The store's activity counter after its last acknowledged commit."""
    durability: str
    boot: str

    def encode(self) -> bytes:
        """One line; the position last, at a fixed width, so a commit rewrites only it."""
        head = f" {self.epoch} {self.durability} {self.boot} ".encode()
        return _MAGIC + head + b"%0*d\n" % (_DIGITS, self.position)

    @classmethod
    def decode(cls, data: bytes) -> Mark | None:
        """The mark in ``data``, or None (empty, another format, or torn)."""
        line = data.split(b"\n", 1)[0]
        if not line.startswith(_MAGIC):
            return None
        parts = line[len(_MAGIC) :].split()
        if len(parts) != 4 or not parts[3].isdigit():
            return None
        epoch, durability, boot, position = (p.decode("ascii", "replace") for p in parts)
        return cls(epoch, int(position), durability, boot)


class StoreLock:
    """Holds ``<path>.lock`` (or raises :class:`StoreError` naming the holder's file)."""

    def __init__(self, path: str) -> None:
        self.path = f"{path}.lock"
        self._fd = self._claim(path)
        try:
            self.previous = Mark.decode(os.pread(self._fd, _SIZE, 0))
            """The mark the last owner left: None after a clean close (or a first start)."""
            os.ftruncate(self._fd, _SIZE)
            self._map: mmap.mmap | None = mmap.mmap(self._fd, _SIZE)
        except OSError as exc:
            os.close(self._fd)
            raise StoreError(f"cannot use {self.path}: {exc.strerror}") from exc
        self._position_at = 0

    def _claim(self, store: str) -> int:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(f"cannot open the store at {store!r}: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise StoreError(
                    f"the store {store!r} is in use by another trio-obs server "
                    f"(it holds {self.path}); stop it, or give this one another --db"
                ) from None
            # An owner removes the file, then unlocks it: a lock taken on a file that is
            # no longer at the path is a lock on nothing. Take the one at the path.
            with contextlib.suppress(FileNotFoundError):
                held, named = os.fstat(fd), os.stat(self.path)
                if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
                    return fd
            os.close(fd)

    def mark(self, mark: Mark) -> None:
        """Leave ``mark`` for the next owner (replacing the one before)."""
        if self._map is None:
            return
        line = mark.encode()
        self._map[: len(line)] = line
        self._map[len(line) :] = bytes(_SIZE - len(line))
        self._position_at = len(line) - 1 - _DIGITS

    def advance(self, position: int) -> None:
        """The store acknowledged writes up to ``position`` (after :meth:`mark`)."""
        if self._map is not None and self._position_at:
            at = self._position_at
            self._map[at : at + _DIGITS] = b"%0*d" % (_DIGITS, position)

    def release(self, *, remove: bool = True) -> None:
        """Give up the lock; with ``remove``, the file goes first (while it is still held)."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd < 0:
            return
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = -1
