"""The protocol's names and numbers, each in one table (SPEC §2-§6).

Topics, pseudo-streams, close codes and reasons, error codes and limits live here
and nowhere else; the server, the client and the tests read them from this module.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

from .facts import TOPIC_OF_TYPE as TOPIC_OF_TYPE  # the table lives in core.facts

GLOBAL: Final = "global"
"""The pseudo-execution that gets execution-less message-bus events and a copy of
every ``execution:status`` event."""
ALL: Final = "all"
"""Subscribe to every execution (no replay)."""
RESERVED_STREAMS: Final = frozenset({ALL, GLOBAL})

Topic: TypeAlias = Literal[
    "all", "transcript", "tools", "assertions", "skills", "messagebus", "waves", "agents",
    "execution", "spans", "alerts",
]  # fmt: skip
TOPICS: Final[frozenset[str]] = frozenset(Topic.__args__)  # type: ignore[attr-defined]


Severity: TypeAlias = Literal["debug", "info", "warning", "error", "critical"]
SEVERITIES: Final[frozenset[str]] = frozenset(Severity.__args__)  # type: ignore[attr-defined]
ACTION_SEVERITIES: Final[frozenset[str]] = frozenset({"error", "critical"})
"""Message-bus severities whose events carry ``requiresAction``."""
ENDED_STATES: Final[frozenset[str]] = frozenset({"completed", "failed"})
"""Execution states after which an execution is over."""

# --------------------------------------------------------------------------- close codes

NORMAL_CLOSURE: Final = 1000
GOING_AWAY: Final = 1001
PROTOCOL_ERROR: Final = 1002
UNSUPPORTED_DATA: Final = 1003
ABNORMAL_CLOSURE: Final = 1006
MESSAGE_TOO_BIG: Final = 1009
INTERNAL_ERROR: Final = 1011
SLOW_CONSUMER_CODE: Final = 4008

SLOW_CONSUMER: Final = "slow consumer"
"""The reason sent with 4008 (and the reason a subscription is ended with)."""
SHUTTING_DOWN: Final = "server shutting down"

RECONNECT_CODES: Final = frozenset(
    {GOING_AWAY, ABNORMAL_CLOSURE, INTERNAL_ERROR, SLOW_CONSUMER_CODE}
)
"""Close codes after which a client reconnects and resumes with ``since=``."""

# --------------------------------------------------------------------------- error codes

ErrorCode: TypeAlias = Literal[
    "INVALID_MESSAGE", "INVALID_TOPIC", "INVALID_FILTER", "INVALID_EVENT", "INVALID_QUERY",
    "INVALID_REQUEST", "INVALID_PARAMETER", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND",
    "METHOD_NOT_ALLOWED", "TIMEOUT", "BODY_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE",
    "MISDIRECTED_REQUEST", "UPGRADE_REQUIRED", "HEAD_TOO_LARGE", "UNAVAILABLE",
    "OUTCOME_UNKNOWN", "NOT_REPLICATED", "PARTIALLY_STORED",
]  # fmt: skip
"""The ``code`` of every error a client can meet: ``observability:error`` frames and HTTP
error answers (``{"error": <a sentence>, "code": ...}``)."""
INVALID_MESSAGE: Final = "INVALID_MESSAGE"
"""A client message that is not JSON, not an object, or has an unknown action or type."""
INVALID_TOPIC: Final = "INVALID_TOPIC"
INVALID_FILTER: Final = "INVALID_FILTER"
INVALID_EVENT: Final = "INVALID_EVENT"
"""A posted body that is not a valid event or array of events (nothing of it is stored)."""
INVALID_QUERY: Final = "INVALID_QUERY"
"""A search query (``q``, SPEC §14) that cannot be read, or a filter no event can have."""
INVALID_PARAMETER: Final = "INVALID_PARAMETER"
"""A query parameter that is missing or not what the route takes (``since``, ``limit``...)."""
UNAVAILABLE: Final = "UNAVAILABLE"
"""503: the store could not take the batch; nothing of it was stored (retry at will)."""
OUTCOME_UNKNOWN: Final = "OUTCOME_UNKNOWN"
"""504: the store did not answer in time; the batch may be stored (retry with the same key)."""
NOT_REPLICATED: Final = "NOT_REPLICATED"
"""504: stored on the Redis primary, not confirmed by the replicas asked for in time."""
PARTIALLY_STORED: Final = "PARTIALLY_STORED"
"""504: some events of the batch were stored, others not (a Redis Cluster shard failed)."""
UNCERTAIN_STATUS: Final = 504
"""The status of an answer that says some of a batch may be stored: a retry is safe only
with the same ``Idempotency-Key`` (503 says nothing was stored)."""

ERROR_CODE_OF_STATUS: Final[dict[int, ErrorCode]] = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "TIMEOUT",
    413: "BODY_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    421: "MISDIRECTED_REQUEST",
    426: "UPGRADE_REQUIRED",
    431: "HEAD_TOO_LARGE",
    503: "UNAVAILABLE",
    504: "OUTCOME_UNKNOWN",
}
"""The code of an HTTP error answer that names no more precise one (a 400 may say
``INVALID_EVENT`` or ``INVALID_PARAMETER`` instead of ``INVALID_REQUEST``)."""

# --------------------------------------------------------------------------- limits

MAX_CLIENT_MESSAGE: Final = 64 * 1024
"""A client message (all its fragments) over this many bytes closes with 1009."""
MAX_HEAD: Final = 16 * 1024
"""A request head over this many bytes is answered 431."""
MAX_BODY: Final = 1024 * 1024
"""A request body over this many bytes is answered 413."""
MAX_INT_DIGITS: Final = 18
"""Integer query parameters have at most this many digits (else 400)."""
MAX_JSON_DEPTH: Final = 64
"""JSON nested deeper than this is refused with 400."""
MAX_ID_BYTES: Final = 1024
"""Bytes (UTF-8) of an id at most: ``executionId``, ``toolUseId``, ``taskId``,
``skillTraceId``, ``instanceId`` and every other field named ``id`` or ``...Id`` of an
event or its record. Longer, the event is refused (400): an execution's id travels in
URLs, whose request head is capped at :data:`MAX_HEAD`."""
MAX_IDEMPOTENCY_KEY: Final = 200
"""Characters of an ``Idempotency-Key`` header at most."""
MAX_WARNINGS: Final = 100
"""Warnings listed in one ``202`` answer at most (a last one counts the rest)."""
MAX_EVENTS_LIMIT: Final = 10_000
"""The largest ``limit`` of the events and executions routes."""
MAX_SEARCH_LIMIT: Final = 500
"""The largest ``limit`` of ``GET /api/search``."""
MAX_QUERY_CHARS: Final = 1000
"""Characters of a search query (``q``) at most."""
MAX_QUERY_TERMS: Final = 32
"""Words and phrases of a search query at most."""
REPLAY_PAGE: Final = 500
"""Events read from the store per page when a connection is served from it (at most)."""
PAGE_BYTES: Final = 256 * 1024
"""Bytes of event JSON a connection takes at once, from the store or from memory (at
least one event): what a slow reader holds while the socket drains is bounded by it."""

DEFAULT_BUFFER_SIZE: Final = 100
"""Events replayed to a new connection without ``since``."""
DEFAULT_QUEUE_SIZE: Final = 1024
"""Events a connection may fall behind in memory before it is served from the store."""
DEFAULT_BUFFER_BYTES: Final = 64 * 1024 * 1024
"""Bytes of recent events kept in memory, all streams together."""
DEFAULT_READ_TIMEOUT: Final = 30.0
"""Seconds from a request's first byte to the end of its body (else 408), and to take its answer."""
DEFAULT_STALL_TIMEOUT: Final = 10.0
"""Seconds a connection with data waiting may accept nothing before it is closed (4008)."""
