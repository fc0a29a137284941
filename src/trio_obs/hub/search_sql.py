"""The SQL of the search index (SPEC §14).

The index is an SQLite FTS5 table over the ``events`` table itself (external content): no
text is stored twice. What it holds of an event is :func:`~trio_obs.core.search.index_text`
of it (its text by :data:`~trio_obs.core.search.SEARCH_FACTS`, and its tags), one Python
function wherever it is needed, so the index, its deletes and its snippets always agree:
an event being stored is indexed with the text made of its typed event (no JSON read back,
:func:`index_rows`); a stored row is read through SQL functions (:func:`register`) that
read its JSON by the same table (:func:`~trio_obs.core.search.index_text_of_json`: the view
the index reads snippets and deletes through, the background index of an older store).
The document id is the event's global position ``pos``. Both SQLite stores use it: the
single node's store, and a Redis node's local index (``hub/local_index.py``).

The typed filters are words of a second column, ``tags`` (the hex of each value behind a
short prefix, so a value is one exact word): a filter is one more term of the query, and
a rare filter costs as little as a rare word, whatever the text matched.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any, Final

import attrs
import orjson

from ..core.routing import Envelope
from ..core.search import (
    ELLIPSIS,
    ERROR_STATES,
    MARK_CLOSE,
    MARK_OPEN,
    SEARCH_FACTS,
    TAG_PREFIXES,
    RunFilters,
    SearchQuery,
    index_text,
    index_text_of_json,
    tag,
)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


BODY_FUNCTION: Final = "trio_obs_search_body"
TAGS_FUNCTION: Final = "trio_obs_search_tags"
_INDEXED: Final = f"{BODY_FUNCTION}(e.data, e.tool), {TAGS_FUNCTION}(e.data, e.tool)"
"""The indexed columns of the event row ``e``: :func:`~trio_obs.core.search.index_text` of
its stored event, by the functions :func:`register` gives each connection."""

_last: tuple[bytes, str | None, tuple[str, str]] = (b"", None, ("", ""))
"""The last row the functions read (its text and tags are asked for one after the other)."""


def _indexed(data: bytes, tool: str | None) -> tuple[str, str]:
    global _last
    last = _last  # one read of the tuple: another thread may replace it
    if last[0] == data and last[1] == tool:
        return last[2]
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:  # pragma: no cover - every stored event was checked
        obj = None
    found = index_text_of_json(obj, tool) if isinstance(obj, dict) else ("", "")
    _last = (bytes(data), tool, found)
    return found


def register(db: sqlite3.Connection) -> None:
    """Give ``db`` the functions the index's statements and its view call."""
    db.create_function(BODY_FUNCTION, 2, lambda d, t: _indexed(d, t)[0], deterministic=True)
    db.create_function(TAGS_FUNCTION, 2, lambda d, t: _indexed(d, t)[1], deterministic=True)


def index_rows(envelopes: Iterable[Envelope]) -> Iterator[tuple[int, str, str]]:
    """The rows of :data:`INDEX_ROWS` for stored envelopes (those with a position)."""
    for env in envelopes:
        if env.pos:
            yield (env.pos, *index_text(env.event, env.tool))


_TOKENIZER: Final = "unicode61 remove_diacritics 2"

SETTINGS: Final = (
    "INSERT INTO search(search, rank) VALUES ('automerge', 16)",
    "INSERT INTO search(search, rank) VALUES ('crisismerge', 64)",
)
"""Merge segments 16 at a time instead of 4 (and all of a level past 64, not 16): less work
at each write (measured: the index's writes 17 % cheaper than at 8), a few more segments
for a search to read. Set at every start (an index built before keeps what it holds)."""

_FORM: Final = 2
"""What :func:`~trio_obs.core.search.index_text` makes of an event (raised when it changes:
the stores index again)."""
VERSION: Final = hashlib.sha256(
    f"{_FORM}|{_INDEXED}|{TAG_PREFIXES}|{SEARCH_FACTS}|{_TOKENIZER}".encode()
).hexdigest()[:16]
"""Names what the index holds: a store whose index has another version builds it again."""

CREATE: Final = (
    f"CREATE VIEW IF NOT EXISTS search_content(pos, body, tags) AS SELECT e.pos, {_INDEXED}"
    " FROM events e WHERE e.pos IS NOT NULL",
    "CREATE VIRTUAL TABLE IF NOT EXISTS search USING fts5(body, tags, content='search_content',"
    f" content_rowid='pos', columnsize=0, tokenize={_quote(_TOKENIZER)})",
)
"""The index, and the view it reads an event's text through (for snippets and deletes)."""
DROP: Final = ("DROP TABLE IF EXISTS search", "DROP VIEW IF EXISTS search_content")

INDEX_ROWS: Final = "INSERT INTO search(rowid, body, tags) VALUES (?, ?, ?)"
"""Index events being stored (:func:`index_rows`: their text made in Python, not read
back out of their JSON)."""
INDEX_RANGE: Final = (
    f"INSERT INTO search(rowid, body, tags) SELECT e.pos, {_INDEXED} FROM events e"
    " WHERE e.pos BETWEEN ? AND ?"
)
"""Index the stored events with ``? <= pos <= ?`` (rows already indexed must not be in it)."""
INDEX_ONE: Final = (
    f"INSERT INTO search(rowid, body, tags) SELECT e.pos, {_INDEXED} FROM events e WHERE e.pos = ?"
)
"""Index the event at one position."""
UNINDEX_STREAM: Final = (
    f"INSERT INTO search(search, rowid, body, tags) SELECT 'delete', e.pos, {_INDEXED}"
    " FROM events e WHERE e.stream_key = ? AND e.pos > ?"
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
