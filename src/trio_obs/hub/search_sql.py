"""The SQL of the search index (SPEC §14), generated from the core's table of search facts.

The index is an SQLite FTS5 table over the ``events`` table itself (external content):
the text of an event is read out of its stored JSON by the expression :data:`BODY`,
made from :data:`~trio_obs.core.search.SEARCH_FACTS`, when a row is indexed, when it is
deleted and when a snippet is shown, so the three always agree and no text is stored
twice. The document id is the event's global position ``pos``. Both SQLite stores use
it: the single node's store, and a Redis node's local index (``hub/local_index.py``).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from ..core.search import (
    ELLIPSIS,
    INDEXED_TYPES,
    MARK_CLOSE,
    MARK_OPEN,
    MESSAGE_SKIPPED_KEYS,
    SEARCH_FACTS,
    SearchQuery,
)

_DATA: Final = "CAST(e.data AS TEXT)"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json(path: str) -> str:
    return f"json_extract({_DATA}, {_quote('$.' + path)})"


def _messages(path: str) -> str:
    skipped = ", ".join(map(_quote, MESSAGE_SKIPPED_KEYS))
    return (
        f"(SELECT group_concat(value, ' ') FROM json_tree({_DATA}, {_quote('$.' + path)})"
        f" WHERE type = 'text' AND key NOT IN ({skipped}))"
    )


def _case(by_type: dict[str, str], otherwise: str = "NULL") -> str:
    arms = " ".join(f"WHEN {_quote(kind)} THEN {sql}" for kind, sql in by_type.items())
    return f"(CASE e.type {arms} ELSE {otherwise} END)"


def _body() -> str:
    texts: dict[str, str] = {}
    for kind, facts in SEARCH_FACTS.items():
        parts = [_json(p) for p in facts.text] + [_messages(p) for p in facts.messages]
        if parts:
            texts[kind] = " || ' ' || ".join(f"coalesce({part}, '')" for part in parts)
    return _case(texts, "''")


BODY: Final = _body()
"""The indexed text of the event row ``e`` (its JSON read where SEARCH_FACTS says)."""
STATE: Final = _case({k: _json(f.state) for k, f in SEARCH_FACTS.items() if f.state})
"""The state word of the event row ``e`` (NULL for types without one)."""
AGENT: Final = _case(
    {
        k: "coalesce(" + ", ".join(_json(p) for p in f.agent) + ")"
        for k, f in SEARCH_FACTS.items()
        if f.agent != ("agent",)
    },
    _json("agent"),
)
"""The agent of the event row ``e``."""
_TYPES: Final = "(" + ", ".join(map(_quote, sorted(INDEXED_TYPES))) + ")"
_TOKENIZER: Final = "unicode61 remove_diacritics 2"

VERSION: Final = hashlib.sha256(f"{BODY}|{_TOKENIZER}".encode()).hexdigest()[:16]
"""Names what the index holds: a store whose index has another version builds it again."""

CREATE: Final = (
    f"CREATE VIEW IF NOT EXISTS search_content(pos, body) AS SELECT e.pos, {BODY}"
    f" FROM events e WHERE e.pos IS NOT NULL AND e.type IN {_TYPES}",
    "CREATE VIRTUAL TABLE IF NOT EXISTS search USING fts5(body, content='search_content',"
    f" content_rowid='pos', columnsize=0, tokenize={_quote(_TOKENIZER)})",
)
"""The index, and the view it reads an event's text through (for snippets)."""
DROP: Final = ("DROP TABLE IF EXISTS search", "DROP VIEW IF EXISTS search_content")

INDEX_RANGE: Final = (
    f"INSERT INTO search(rowid, body) SELECT e.pos, {BODY} FROM events e"
    f" WHERE e.pos BETWEEN ? AND ? AND e.type IN {_TYPES}"
)
"""Index the events with ``? <= pos <= ?`` (rows already indexed must not be in it)."""
INDEX_ONE: Final = (
    f"INSERT INTO search(rowid, body) SELECT e.pos, {BODY} FROM events e"
    f" WHERE e.pos = ? AND e.type IN {_TYPES}"
)
"""Index the event at one position."""
UNINDEX_STREAM: Final = (
    f"INSERT INTO search(search, rowid, body) SELECT 'delete', e.pos, {BODY} FROM events e"
    f" WHERE e.stream_key = ? AND e.pos > ? AND e.type IN {_TYPES}"
)
"""Take the events of one stream key out of the index (those above the unindexed mark)."""
UNINDEX_ALL: Final = "INSERT INTO search(search) VALUES ('delete-all')"


def _filters(query: SearchQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    f = query.filters
    for column, value in (
        ("e.execution_id", f.execution),
        ("e.type", f.type),
        ("e.tool", f.tool),
        (STATE, f.state),
        (AGENT, f.agent),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    return where, params


def hits(query: SearchQuery, below: int | None) -> tuple[str, list[Any]]:
    """A page of hits, newest first: (execution, seq, pos, type, timestamp, snippet);
    ``below``: only positions under it (the page's ``before``)."""
    where, params = _filters(query)
    if below is not None:
        where.insert(0, "search.rowid < ?")
        params.insert(0, below)
    sql = (
        "SELECT e.execution_id, e.seq, e.pos, e.type, e.timestamp,"
        f" snippet(search, 0, {_quote(MARK_OPEN)}, {_quote(MARK_CLOSE)}, {_quote(ELLIPSIS)}, 16)"
        " FROM search JOIN events e ON e.pos = search.rowid WHERE search MATCH ?"
        + "".join(f" AND {w}" for w in where)
        + " ORDER BY search.rowid DESC LIMIT ?"
    )
    return sql, [query.match, *params, query.limit]


def matches_after(query: SearchQuery, after: int, upto: int) -> tuple[str, list[Any]]:
    """The stored rows matching a live query with ``after < pos <= upto``, oldest first:
    (stream key, seq, task, tool, is copy, data)."""
    where, params = _filters(query)
    sql = (
        "SELECT e.stream_key, e.seq, e.task_id, e.tool, e.is_copy, e.data"
        " FROM search JOIN events e ON e.pos = search.rowid"
        " WHERE search MATCH ? AND search.rowid > ? AND search.rowid <= ?"
        + "".join(f" AND {w}" for w in where)
        + " ORDER BY search.rowid LIMIT ?"
    )
    return sql, [query.match, after, upto, *params, query.limit]
