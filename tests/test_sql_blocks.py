"""Rows inserted in blocks (hub/sql_blocks.py) land exactly as ``executemany`` puts them."""

from __future__ import annotations

import sqlite3

import pytest

from trio_obs.hub.sql_blocks import BLOCKS, insert_rows

SCHEMA = "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT, n REAL)"


def fresh() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute(SCHEMA)
    return db


@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 63, 64, 65, 100, 1024, 1027])
def test_every_row_in_order_as_executemany_puts_them(count: int) -> None:
    rows = [(i, f"v{i}", i / 3) for i in range(count)]
    blocked, many = fresh(), fresh()
    insert_rows(blocked, "INSERT INTO t VALUES (?, ?, ?)", iter(rows))
    many.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    expected = many.execute("SELECT * FROM t ORDER BY k").fetchall()
    assert blocked.execute("SELECT * FROM t ORDER BY k").fetchall() == expected
    assert len(expected) == count


def test_later_rows_of_a_block_replace_earlier_ones_as_in_sequence() -> None:
    db = fresh()
    rows = [(i % 5, f"v{i}", float(i)) for i in range(BLOCKS[0] + 7)]
    insert_rows(db, "INSERT OR REPLACE INTO t (k, v, n) VALUES (?,?,?)", rows)
    last = {k: (k, v, n) for k, v, n in rows}
    assert db.execute("SELECT * FROM t ORDER BY k").fetchall() == sorted(last.values())


def test_a_failing_row_fails_the_statement_and_the_transaction_keeps_nothing() -> None:
    db = fresh()
    for at in (10, BLOCKS[-1] * 2 + 5):  # in a block, in the rows left after the blocks
        rows = [(i, "v", 0.0) for i in range(BLOCKS[-1] * 2 + 9)]
        rows[at] = (3, "again", 0.0)
        db.execute("BEGIN")
        with pytest.raises(sqlite3.IntegrityError):
            insert_rows(db, "INSERT INTO t VALUES (?,?,?)", rows)
        db.execute("ROLLBACK")
        assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_statements_that_are_not_one_values_group_run_row_by_row() -> None:
    db = fresh()
    insert_rows(db, "INSERT INTO t VALUES (?,?,?)", [(1, "a", 1.0), (2, "b", 2.0)])
    insert_rows(db, "INSERT INTO t SELECT k + 10, v, n FROM t WHERE k = ?", [(1,), (2,)])
    insert_rows(db, "DELETE FROM t WHERE k = ?", [(1,)])
    assert db.execute("SELECT k FROM t ORDER BY k").fetchall() == [(2,), (11,), (12,)]


def test_blocks_stay_within_the_connections_limit_of_parameters() -> None:
    db = fresh()
    db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 50)  # 16 rows of 3 (SQLite before 3.32: 999)
    rows = [(i, "v", 0.0) for i in range(300)]
    insert_rows(db, "INSERT INTO t VALUES (?,?,?)", rows)
    assert db.execute("SELECT k FROM t ORDER BY k").fetchall() == [(i,) for i in range(300)]
