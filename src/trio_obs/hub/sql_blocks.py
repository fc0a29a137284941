"""Rows inserted a block at a time: one statement per block of rows, not one per row.

``sqlite3``'s ``executemany`` steps once per row and lets go of the GIL around every step.
The store writes in a worker thread beside a busy trio thread, so each row's step ended in
a wait for the GIL (measured on the OTLP mix: the writer thread waited for the GIL about as
long as it worked; with a thread running Python beside it, 2.6 ms per row against 0.2 ms in
blocks of 64). A multi-row ``INSERT … VALUES (…), (…), …`` binds a block in one call and
steps once: the same rows, the same order, the same transaction, a GIL hand-off per block.

Blocks come in a few fixed sizes (:data:`BLOCKS`), so a handful of statements per table are
prepared and cached, whatever the number of rows; what is left under the smallest goes
through ``executemany``.
"""

from __future__ import annotations

import functools
import itertools
import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

BLOCKS: Final = (256, 64, 16)
"""The rows per statement, largest first. Fewer rows than the smallest go row by row, as
before (a small write, often made on the trio thread, is not cut into more statements). A
block never takes more parameters than the connection's SQLite allows (32,766 since 3.32,
999 before: 256 rows of 11 columns need 2,816)."""

_VALUES: Final = re.compile(r"^(.*\bVALUES\s*)(\((?:\s*\?\s*,)*\s*\?\s*\))\s*$", re.S | re.I)
"""An INSERT whose rows are one ``VALUES`` group of parameters (and nothing after it)."""


@functools.lru_cache(maxsize=64)
def _shape(sql: str) -> tuple[str, str, int] | None:
    """The head of ``sql``, its row group and the group's parameters; None if ``sql`` is not
    a plain ``INSERT … VALUES (?, …)``."""
    found = _VALUES.match(sql)
    if found is None:
        return None
    head, group = found.groups()
    return head, group, group.count("?")


@functools.lru_cache(maxsize=256)
def _block_sql(head: str, group: str, rows: int) -> str:
    return head + ",".join([group] * rows)


def insert_rows(db: sqlite3.Connection, sql: str, rows: Iterable[Sequence[Any]]) -> None:
    """Run ``sql`` for each of ``rows``, as ``db.executemany`` would, in blocks when ``sql``
    is an ``INSERT … VALUES (?, …)``."""
    todo = rows if isinstance(rows, list) else list(rows)
    shape = _shape(sql) if len(todo) >= BLOCKS[-1] else None
    if shape is None:  # a small write (often inline on the trio thread), or not a VALUES insert
        db.executemany(sql, todo)
        return
    head, group, marks = shape
    most = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // marks
    at, left = 0, len(todo)
    for size in BLOCKS:
        if left < size or size > most:
            continue
        block_sql = _block_sql(head, group, size)
        while left >= size:
            db.execute(block_sql, list(itertools.chain.from_iterable(todo[at : at + size])))
            at += size
            left -= size
    if left:
        db.executemany(sql, todo[at:])
