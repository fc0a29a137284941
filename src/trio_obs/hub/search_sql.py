"""The SQL of the search index (SPEC §14), generated from the core's table of search facts.

The index is an SQLite FTS5 table over the ``events`` table itself (external content):
the text of an event is read out of its stored JSON by the expression :data:`BODY`,
made from :data:`~trio_obs.core.search.SEARCH_FACTS`, when a row is indexed, when it is
deleted and when a snippet is shown, so the three always agree and no text is stored
twice. The document id is the event's global position ``pos``. Both SQLite stores use
it: the single node's store, and a Redis node's local index (``hub/local_index.py``).

The typed filters are words of a second column, ``tags`` (:data:`TAGS`: the hex of each
value behind a short prefix, so a value is one exact word): a filter is one more term of
the query, and a rare filter costs as little as a rare word, whatever the text matched.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import attrs

from ..core.search import (
    ELLIPSIS,
    ERROR_STATES,
    MARK_CLOSE,
    MARK_OPEN,
    MESSAGE_SKIPPED_KEYS,
    SEARCH_FACTS,
    RunFilters,
    SearchQuery,
)

_DATA: Final = "CAST(e.data AS TEXT)"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json(path: str) -> str:
    # Parsing the JSON is the cost: a byte search first skips it where the key is absent
    # (most events have no ``agent``, for one; the stored JSON has no spaces).
    key = f'"{path.rsplit(".", 1)[-1]}":'.encode().hex()
    return (
        f"(CASE WHEN instr(e.data, x'{key}') THEN json_extract({_DATA}, {_quote('$.' + path)}) END)"
    )


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
_TAG_OF: Final = {
    "execution": ("ex", "e.execution_id"),
    "type": ("ty", "e.type"),
    "tool": ("tl", "e.tool"),
    "state": ("st", STATE),
    "agent": ("ag", AGENT),
}
"""Per typed filter: its tag's prefix, and where the event row ``e`` has its value."""
TAGS: Final = " || ".join(
    f"coalesce({_quote(' ' + prefix)} || nullif(hex({value}), ''), '')"
    for prefix, value in _TAG_OF.values()
)
"""The tags of the event row ``e``: one word per typed filter it has a value for."""


def tag(name: str, value: str) -> str:
    """The word :data:`TAGS` makes of ``value`` of the typed filter ``name``."""
    return _TAG_OF[name][0] + value.encode().hex()


_TOKENIZER: Final = "unicode61 remove_diacritics 2"

_MERGE: Final = "INSERT INTO search(search, rank) VALUES ('automerge', 8)"
"""Merge segments 8 at a time instead of 4: less work at each write (measured: about
0.4 µs of a 4.5 µs index write per event), a few more segments for a search to read."""

VERSION: Final = hashlib.sha256(f"{BODY}|{TAGS}|{_TOKENIZER}|{_MERGE}".encode()).hexdigest()[:16]
"""Names what the index holds: a store whose index has another version builds it again."""

CREATE: Final = (
    f"CREATE VIEW IF NOT EXISTS search_content(pos, body, tags) AS SELECT e.pos, {BODY},"
    f" {TAGS} FROM events e WHERE e.pos IS NOT NULL",
    "CREATE VIRTUAL TABLE IF NOT EXISTS search USING fts5(body, tags, content='search_content',"
    f" content_rowid='pos', columnsize=0, tokenize={_quote(_TOKENIZER)})",
    _MERGE,
)
"""The index, and the view it reads an event's text through (for snippets)."""
DROP: Final = ("DROP TABLE IF EXISTS search", "DROP VIEW IF EXISTS search_content")

INDEX_RANGE: Final = (
    f"INSERT INTO search(rowid, body, tags) SELECT e.pos, {BODY}, {TAGS} FROM events e"
    f" WHERE e.pos BETWEEN ? AND ?"
)
"""Index the events with ``? <= pos <= ?`` (rows already indexed must not be in it)."""
INDEX_ONE: Final = (
    f"INSERT INTO search(rowid, body, tags) SELECT e.pos, {BODY}, {TAGS} FROM events e"
    f" WHERE e.pos = ?"
)
"""Index the event at one position."""
UNINDEX_STREAM: Final = (
    f"INSERT INTO search(search, rowid, body, tags) SELECT 'delete', e.pos, {BODY}, {TAGS}"
    f" FROM events e WHERE e.stream_key = ? AND e.pos > ?"
)
"""Take the events of one stream key out of the index (those above the unindexed mark)."""
UNINDEX_ALL: Final = "INSERT INTO search(search) VALUES ('delete-all')"


def match(query: SearchQuery) -> str:
    """The full FTS5 query: the user's words in the text, each typed filter as a tag."""
    given = attrs.asdict(query.filters)
    tags = [f'tags : "{tag(name, value)}"' for name, value in given.items() if value is not None]
    return " AND ".join([f"body : ({query.match})", *tags])


RUN_IDS: Final = (
    "SELECT DISTINCT e.execution_id FROM search JOIN events e ON e.pos = search.rowid"
    " WHERE search MATCH ?"
)
"""The executions with an event the query (one of :func:`run_matches`) matches."""


def run_matches(filters: RunFilters) -> list[str]:
    """The searches an execution must each have a hit in to pass the list's filters: an
    event of the agent, an event in an error state."""
    matches = []
    if filters.agent is not None:
        matches.append(f'tags : "{tag("agent", filters.agent)}"')
    if filters.errors:
        matches.append(" OR ".join(f'tags : "{tag("state", s)}"' for s in sorted(ERROR_STATES)))
    return matches


def runs(filters: RunFilters) -> tuple[str, list[Any]]:
    """The SQL condition on a ``streams`` row of the execution list's filters, and its
    parameters."""
    matches = run_matches(filters)
    where, params = [f"stream_key IN ({RUN_IDS})"] * len(matches), list(matches)
    if filters.state is not None:
        where.append("last_status = ?")
        params.append(filters.state)
    return " AND ".join(where) or "1", params


def hits(query: SearchQuery, below: int | None) -> tuple[str, list[Any]]:
    """A page of hits, newest first: (execution, seq, pos, type, timestamp, snippet);
    ``below``: only positions under it (the page's ``before``)."""
    sql = (
        "SELECT e.execution_id, e.seq, e.pos, e.type, e.timestamp,"
        f" snippet(search, 0, {_quote(MARK_OPEN)}, {_quote(MARK_CLOSE)}, {_quote(ELLIPSIS)}, 16)"
        " FROM search JOIN events e ON e.pos = search.rowid WHERE search MATCH ?"
        + (" AND search.rowid < ?" if below is not None else "")
        + " ORDER BY search.rowid DESC LIMIT ?"
    )
    return sql, [match(query), *([below] if below is not None else []), query.limit]


def matches_after(query: SearchQuery, after: int, upto: int) -> tuple[str, list[Any]]:
    """The stored rows matching a live query with ``after < pos <= upto``, oldest first:
    (stream key, seq, task, tool, is copy, data)."""
    sql = (
        "SELECT e.stream_key, e.seq, e.task_id, e.tool, e.is_copy, e.data"
        " FROM search JOIN events e ON e.pos = search.rowid"
        " WHERE search MATCH ? AND search.rowid > ? AND search.rowid <= ?"
        " ORDER BY search.rowid LIMIT ?"
    )
    return sql, [match(query), after, upto, query.limit]
