"""What the stream and post clients share: server URLs, the token header, and their errors."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import attrs
import orjson

from ..core.errors import TrioObsError


class StreamRefused(TrioObsError):
    """The server refused the WebSocket handshake for good (400, 401, 403, 404, ...).

    ``status`` is the HTTP status, ``body`` the response body (usually JSON with an
    ``error`` sentence). Retrying would not help: fix the URL, token or origin.
    """

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        hint = {
            401: "pass the server's token: token=, --token or $TRIO_OBS_TOKEN",
            403: "the server does not allow this client's Origin",
            404: "is this a trio-obs server? give its base URL, e.g. http://127.0.0.1:3001",
        }.get(status)
        text = f"the server refused the stream with HTTP {status}: {error_text(body)}"
        super().__init__(f"{text}; {hint}" if hint else text)


class StreamClosed(TrioObsError):
    """The server closed the stream with a code that a reconnect would not fix."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"the server closed the stream with code {code}: {reason or 'no reason'}")


class PostRejected(TrioObsError):
    """``POST /api/events`` answered something other than 202.

    After a 4xx or a 503 nothing was stored; a 504 says some of the batch is, or may be,
    stored (``code`` says which: ``OUTCOME_UNKNOWN``, ``NOT_REPLICATED``,
    ``PARTIALLY_STORED``), and a retry with the same ``Idempotency-Key`` completes it.
    """

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        self.code = _code(body)
        super().__init__(f"the server rejected the events with HTTP {status}: {error_text(body)}")


class SearchRefused(TrioObsError):
    """``GET /api/search`` answered something other than 200 (``status``, ``body``).

    ``code`` is ``INVALID_QUERY`` for a query the server cannot read; the message says why.
    """

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        self.code = _code(body)
        super().__init__(f"the server refused the search with HTTP {status}: {error_text(body)}")


def _code(body: str) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    code = data.get("code") if isinstance(data, dict) else None
    return code if isinstance(code, str) else None


def error_text(body: str) -> str:
    """The ``error`` sentence of an error answer, or the start of its body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return body.strip()[:200] or "no details"


# --------------------------------------------------------------------------- URLs


@attrs.frozen
class Endpoints:
    """The HTTP and WebSocket base URLs of one server."""

    http: str
    """Base URL for HTTP routes, without a trailing slash."""
    ws: str
    """Base URL for ``/ws``, without a trailing slash."""


def endpoints(url: str) -> Endpoints:
    """The endpoints of a server given as ``http://host:port`` (or ``ws://…``, or ``host:port``)."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ValueError(f"not a server URL: {url!r}; expected e.g. http://127.0.0.1:3001")
    path = parts.path.rstrip("/")
    if path.endswith("/ws"):
        path = path[:-3]
    http = urlunsplit(("https" if secure else "http", parts.netloc, path, "", ""))
    ws = urlunsplit(("wss" if secure else "ws", parts.netloc, path, "", ""))
    return Endpoints(http, ws)


def auth_headers(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header carrying ``token`` (none without one)."""
    return {"authorization": f"Bearer {token}"} if token else {}
