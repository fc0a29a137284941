"""HTTP/1.1 on one trio stream, parsed by h11: request heads, bodies and responses.

Keeps the raw bytes of the request head so a WebSocket upgrade can be handed, with
whatever followed it, to wsproto.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio

from ..core.protocol import ERROR_CODE_OF_STATUS, MAX_HEAD, ErrorCode
from ..core.wire import error_json

log = logging.getLogger("trio_obs.server")

_READ_SIZE: Final = 64 * 1024

REASONS: Final = {
    200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    413: "Content Too Large", 415: "Unsupported Media Type", 421: "Misdirected Request",
    426: "Upgrade Required", 431: "Request Header Fields Too Large", 503: "Service Unavailable",
    504: "Gateway Timeout",
}  # fmt: skip


class HttpError(Exception):
    """An HTTP error answer: status, a one-line explanation and its code.

    The code defaults to the status's (``core.protocol.ERROR_CODE_OF_STATUS``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: ErrorCode | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code: ErrorCode = code or ERROR_CODE_OF_STATUS[status]
        self.headers = headers or []


@attrs.frozen
class Request:
    """A parsed request head."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Lower-case names; repeated headers joined with ``, ``."""
    raw: bytes
    """The bytes read for this request so far: the head and whatever followed it."""
    head_size: int = 0
    """Bytes of the head in :attr:`raw` (what follows is the body, or WebSocket frames)."""
    framing_conflict: bool = False
    """Both Content-Length and Transfer-Encoding: answered, then the connection is closed
    (RFC 9112 §6.1), since a proxy may have framed it otherwise."""

    @classmethod
    def of(cls, event: h11.Request, raw: bytes, head_size: int = 0) -> Request:
        return cls.parts(event.method, event.target, event.headers, raw, head_size)

    @classmethod
    def parts(
        cls,
        method: bytes,
        raw_target: bytes,
        raw_headers: Iterable[tuple[bytes, bytes]],
        raw: bytes,
        head_size: int,
    ) -> Request:
        """A request out of its head's parts (h11's, or the fast path's)."""
        target = raw_target.decode("latin-1")
        parts = urlsplit(target)
        headers: dict[str, str] = {}
        for name, value in raw_headers:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return cls(
            method.decode("latin-1"),
            target,
            parts.path,
            parse_qs(parts.query, keep_blank_values=True),
            headers,
            raw,
            head_size,
            "content-length" in headers and "transfer-encoding" in headers,
        )

    def param(self, name: str) -> str | None:
        """The first value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def is_websocket_upgrade(self) -> bool:
        """Whether this is a WebSocket handshake request."""
        return "websocket" in self.headers.get("upgrade", "").lower()


_REQUEST_LINE: Final = re.compile(rb"POST ([!-~]+) HTTP/1\.1")
_HEADER_LINE: Final = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[!-~\x80-\xff](?:[ \t]*[!-~\x80-\xff])*)?)[ \t]*"
)
_NOT_FAST: Final = frozenset({"transfer-encoding", "expect", "upgrade", "te", "trailer"})
_NEED_MORE: Final = "need more"


def fast_head(raw: bytes | bytearray) -> tuple[Request, int] | str | None:
    """The common request, parsed without h11 (issue 25): a ``POST`` over HTTP/1.1 with
    one ``Host``, one ``Content-Length`` and nothing that changes the framing or the
    connection. Gives (the request, its body's length), or :data:`_NEED_MORE` while its
    head is incomplete, or None for anything else: h11 then reads it, and says what is
    wrong with it."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return _NEED_MORE if len(raw) < MAX_HEAD and b"\n\n" not in raw else None
    if end + 4 > MAX_HEAD:
        return None
    lines = bytes(raw[:end]).split(b"\r\n")
    first = _REQUEST_LINE.fullmatch(lines[0])
    if first is None:
        return None
    pairs: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        header = _HEADER_LINE.fullmatch(line)
        if header is None:
            return None
        pairs.append((header[1], header[2]))
    request = Request.parts(b"POST", first[1], pairs, bytes(raw), end + 4)
    headers = request.headers
    length = headers.get("content-length", "")
    hosts = sum(1 for name, _ in pairs if name.lower() == b"host")
    if (
        hosts != 1
        or not (length.isdigit() and length.isascii())
        or len(length) > 15
        or not _NOT_FAST.isdisjoint(headers)
        or headers.get("connection", "keep-alive").lower() != "keep-alive"
    ):
        return None
    return request, int(length)


class HttpConnection:
    """The server side of one HTTP/1.1 connection (keep-alive), driven by h11.

    Two clocks bound a client: ``idle_timeout`` between requests (a keep-alive connection
    that sends nothing more is closed without a word) and ``read_timeout`` from a
    request's first byte to the end of its body (then 408), which also bounds writing
    its answer. Reading and writing are shielded from the server's cancellation: at
    shutdown a request already begun is still read, handled and answered, bounded by
    :meth:`hurry`.
    """

    def __init__(
        self, stream: trio.abc.Stream, *, idle_timeout: float, read_timeout: float
    ) -> None:
        self.stream = stream
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._raw = bytearray()
        self._head_only = False  # answering a HEAD request: headers, no body
        self._must_close = False
        self._deadline = math.inf  # of the request being read
        self._latest = math.inf  # set by hurry(): no transfer goes past it
        self._transfer: trio.CancelScope | None = None
        self._closed_by_peer = False
        self._fed = 0
        """Bytes at the start of ``_raw`` that h11 already holds (what followed its last
        request); only with none may a request take the fast path."""
        self._fast: str | None = None
        """The fast path's request: ``"head"`` read, ``"body"`` read, ``"answered"``."""
        self._length = 0
        self._body_start = 0

    def hurry(self, deadline: float) -> None:
        """The server is stopping: no reading or writing goes on past ``deadline``."""
        self._latest = min(self._latest, deadline)
        if self._transfer is not None:
            self._transfer.deadline = min(self._transfer.deadline, deadline)

    def _scope(self, deadline: float) -> trio.CancelScope:
        """A shielded scope for one transfer, ending at ``deadline`` (or when hurried)."""
        self._transfer = trio.CancelScope(shield=True, deadline=min(deadline, self._latest))
        return self._transfer

    async def _receive(self, *, keep_raw: bool, feed: bool = True) -> None:
        data = await self.stream.receive_some(_READ_SIZE)
        if keep_raw:
            self._raw += data
        if feed:
            self.h11.receive_data(bytes(data))
        else:
            self._closed_by_peer = not data

    async def _next_event(self, *, keep_raw: bool) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            await self._receive(keep_raw=keep_raw)

    async def next_request(self) -> Request | None:
        """The next request head, or None when the peer closed, stayed idle or timed out."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self._raw = bytearray(self.h11.trailing_data[0])
            self._fed = len(self._raw)
        self._fast = None
        self._closed_by_peer = False
        fast = self._fed == 0  # h11 holds nothing of this request: the fast path may take it
        if not self._raw:
            # Between requests: waiting is not reading, and a stopping server stops it.
            with trio.move_on_after(self.idle_timeout):
                await self._receive(keep_raw=True, feed=not fast)
            if not self._raw:
                return None  # idle for too long, or closed: nothing to answer
        self._deadline = trio.current_time() + self.read_timeout
        if fast:
            with self._scope(self._deadline) as timeout:
                while (found := fast_head(self._raw)) == _NEED_MORE:
                    await self._receive(keep_raw=True, feed=False)
                    if self._closed_by_peer:
                        found = None  # h11 says what it makes of a head cut short
                        break
            if timeout.cancelled_caught:
                await self.send_error(self._timed_out("request head"))
                return None
            if isinstance(found, tuple):
                request, self._length = found
                self._body_start = request.head_size
                self._fast = "head"
                self._must_close = False
                self._head_only = False
                return request
            self.h11.receive_data(bytes(self._raw))  # h11 reads this one from its start
            if self._closed_by_peer:
                self.h11.receive_data(b"")
            self._fed = len(self._raw)
        with self._scope(self._deadline) as timeout:
            try:
                event = await self._next_event(keep_raw=True)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                reason = "request head too large" if status == 431 else f"malformed request: {exc}"
                await self.send_error(HttpError(status, reason))
                return None
        if timeout.cancelled_caught:
            await self.send_error(self._timed_out("request head"))
            return None
        if not isinstance(event, h11.Request):
            return None
        self._head_only = event.method == b"HEAD"
        self._must_close = False
        end = self._raw.find(b"\r\n\r\n")
        size = end + 4 if end >= 0 else self._raw.find(b"\n\n") + 2
        if size > MAX_HEAD:  # h11 bounds only heads that arrive in pieces
            await self.send_error(HttpError(431, f"request head over {MAX_HEAD} bytes"))
            return None
        request = Request.of(event, bytes(self._raw), size)
        self._must_close = request.framing_conflict
        return request

    def _timed_out(self, what: str) -> HttpError:
        if trio.current_time() >= self._latest:
            message = f"the server is stopping and the {what} did not arrive in time"
        else:
            message = f"the {what} did not arrive within {self.read_timeout:g} s"
        log.info("answered 408: %s", message)
        return HttpError(408, message)

    async def read_body(self, request: Request, limit: int) -> bytes:
        """The request body, refused with 413 beyond ``limit`` bytes (before reading if it can),
        and with 408 if it has not arrived by the request's read deadline."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise HttpError(413, f"body over {limit} bytes")
        if self._fast is not None:
            return await self._read_fast_body()
        body = bytearray()
        with self._scope(self._deadline):
            while True:
                try:
                    event = await self._next_event(keep_raw=False)
                except h11.RemoteProtocolError as exc:
                    raise HttpError(400, f"malformed request body: {exc}") from None
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > limit:
                        raise HttpError(413, f"body over {limit} bytes")
                elif isinstance(event, h11.EndOfMessage):
                    return bytes(body)
                else:
                    raise HttpError(400, "connection closed before the body ended")
        raise self._timed_out("request body")

    async def _read_fast_body(self) -> bytes:
        """The fast path's body: ``Content-Length`` bytes; what follows stays for the next
        request (a pipelining client's)."""
        raw = self._raw
        start, end = self._body_start, self._body_start + self._length
        with self._scope(self._deadline):
            while len(raw) < end:
                await self._receive(keep_raw=True, feed=False)
                if self._closed_by_peer:
                    raise HttpError(400, "connection closed before the body ended")
            body = bytes(raw[start:end])
            self._raw = bytearray(raw[end:])
            self._fast = "body"
            return body
        raise self._timed_out("request body")

    def _fast_response(self, status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
        """The bytes h11 would write for this response (a test holds them equal)."""
        head = [f"HTTP/1.1 {status} {REASONS.get(status, '')}".encode("latin-1")]
        for name, value in headers:
            line = f"{name}: {value}".encode("latin-1")
            if b"\r" in line or b"\n" in line:
                raise h11.LocalProtocolError("illegal header value")
            head.append(line)
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: list[tuple[str, str]] | None = None,
        *,
        close: bool = False,
    ) -> None:
        """Send a complete response."""
        all_headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
            *(headers or []),
        ]
        if close or self._must_close:
            all_headers.append(("connection", "close"))
        if self._fast is not None:
            if self._fast == "answered":
                raise h11.LocalProtocolError("this request was answered already")
            self._must_close = self._must_close or close
            out = self._fast_response(status, all_headers, body)
            self._fast = "answered"
        else:
            h = self.h11
            out = h.send(
                h11.Response(
                    status_code=status, headers=all_headers, reason=REASONS.get(status, "")
                )
            )
            out += h.send(h11.Data(data=body)) if body and not self._head_only else b""
            out += h.send(h11.EndOfMessage())
        # The answer gets as long as the request had; a client that takes nothing loses it.
        with self._scope(trio.current_time() + self.read_timeout) as sending:
            await self.stream.send_all(out)
        if sending.cancelled_caught:
            self._must_close = True
            raise trio.BrokenResourceError("the client did not take its answer in time")

    async def send_error(self, err: HttpError) -> None:
        """Send ``{"error": ..., "code": ...}``; close unless the request was read whole."""
        if self._fast is not None:
            if self._fast == "answered":
                return
            close = self._fast != "body"
        elif self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        else:
            close = self.h11.their_state is not h11.DONE
        body = error_json(str(err), err.code)
        with contextlib.suppress(
            h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            await self.respond(err.status, body, headers=err.headers, close=close)

    @property
    def reusable(self) -> bool:
        """Whether another request can follow on this connection."""
        if self._fast is not None:
            return self._fast == "answered" and not self._must_close
        return (
            self.h11.our_state is h11.DONE
            and self.h11.their_state is h11.DONE
            and not self._must_close
        )
