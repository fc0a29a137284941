"""Follow a stream of a trio-obs server over WebSocket, resuming without gaps or duplicates.

``async with open_stream(url, "exec-1") as stream: async for event in stream: ...``
yields the typed stream events of one execution (or of ``all``) in ``seq`` order,
reconnects by itself after a disconnect and resumes. What is new and where to resume
is decided by :class:`~trio_obs.core.resume.ResumeState`; this module does the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import urlencode

import attrs
import httpx
import orjson
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from ..core import events as ev
from ..core.errors import InvalidInput, TrioObsError
from ..core.protocol import (
    ABNORMAL_CLOSURE,
    ALL,
    NORMAL_CLOSURE,
    RECONNECT_CODES,
    TOPIC_OF_TYPE,
)
from ..core.resume import ResumeState, split_handshake_filters, subscription_messages
from ..core.routing import SubscriptionState
from ..core.wire import decode_event, decode_server_event
from .common import Endpoints, StreamClosed, StreamRefused, auth_headers, endpoints, error_text

log = logging.getLogger("trio_obs.client")

StreamState: TypeAlias = Literal["connecting", "live", "reconnecting", "closed"]

_FIRST_BACKOFF: Final = 0.1
_KEEPALIVE: Final = 20.0
"""Seconds between our pings; a pong missing for as long means the connection is dead."""
_CONNECT_TIMEOUT: Final = 10.0
_DISCONNECT_TIMEOUT: Final = 2.0
_PAGE: Final = 1000
_LISTING_LIMIT: Final = 10_000
_RETRY_STATUSES: Final = frozenset({408, 429})


@attrs.frozen
class _Failure:
    error: TrioObsError


_Item: TypeAlias = tuple[ev.StreamEvent, str] | _Failure


class EventStream:
    """The events of one stream (an execution, ``global`` or ``all``), as they happen.

    ``async for event in stream`` yields typed stream events in ``seq`` order (per
    execution for ``all``), never the same one twice, across any number of reconnects.
    It ends by raising :class:`StreamRefused` or :class:`StreamClosed` when the server
    refuses the stream for good. Made by :func:`open_stream`.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        stream: str,
        *,
        since: int | None,
        since_pos: int | None = None,
        handshake: Mapping[str, str] | None = None,
        messages: list[bytes],
        state: SubscriptionState,
        token: str | None,
        max_backoff: float,
        on_state: Callable[[str], None] | None,
        on_retry: Callable[[str, float], None] | None = None,
        receive: trio.MemoryReceiveChannel[_Item],
    ) -> None:
        self._endpoints = endpoints
        self.stream = stream
        """The stream this follows: an execution id, ``global`` or ``all``."""
        self._messages = messages
        self._resume = ResumeState(
            stream,
            since=since,
            since_pos=since_pos,
            filters=state,
            subscribe_messages=len(messages),
            handshake=handshake,
        )
        self._token = token
        self._max_backoff = max_backoff
        self._on_state = on_state
        self._on_retry = on_retry
        self._receive = receive
        self.state: StreamState = "connecting"
        """``connecting``, ``live``, ``reconnecting`` or ``closed``."""
        self.last_error: str | None = None
        """Why the last connection attempt failed or the last connection ended."""
        self.reconnects = 0
        """How many times the server accepted the stream again after a lost connection."""
        self.notices: list[str] = []
        """Things the user should know, newest last (e.g. the server's history changed)."""
        self.on_notice: Callable[[str], None] | None = None
        """Called with each notice as it happens."""
        self._heard = False
        self._delivering = False

    @property
    def url(self) -> str:
        """The WebSocket URL of the next connection (the token travels in a header)."""
        return f"{self._endpoints.ws}/ws?{urlencode(self._resume.query())}"

    @property
    def epoch(self) -> str | None:
        """The server's epoch, once it said one."""
        return self._resume.epoch

    def last_seq(self, execution_id: str | None = None) -> int | None:
        """The last ``seq`` received of an execution (default: this stream's), or None."""
        return self._resume.last_seq(execution_id)

    @property
    def last_pos(self) -> int | None:
        """``all``: the global position of the last event received (or where it began)."""
        return self._resume.last_pos

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ev.StreamEvent:
        item = await self._next_item()
        if item is None:
            raise StopAsyncIteration
        return item[0]

    def frames(self) -> AsyncIterator[tuple[ev.StreamEvent, str]]:
        """Like iterating the stream, but yields ``(event, its wire JSON as received)``."""
        return _Frames(self)

    async def _next_item(self) -> tuple[ev.StreamEvent, str] | None:
        try:
            item = await self._receive.receive()
        except trio.EndOfChannel:
            return None
        if isinstance(item, _Failure):
            raise item.error
        return item

    def _notice(self, text: str) -> None:
        self.notices.append(text)
        if self.on_notice is not None:
            self.on_notice(text)
        else:
            log.warning("stream %s: %s", self.stream, text)

    # ------------------------------------------------------------------ connection loop

    def _set_state(self, state: StreamState) -> None:
        if state != self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(state)

    async def _run(self, send: trio.MemorySendChannel[_Item]) -> None:
        async with send:
            try:
                if self._on_state is not None:
                    self._on_state("connecting")
                await self._connect_loop(send)
            except TrioObsError as exc:
                self._set_state("closed")
                await send.send(_Failure(exc))
            finally:
                self.state = "closed"

    async def _connect_loop(self, send: trio.MemorySendChannel[_Item]) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            problem = await self._attempt(send)
            if problem is None:
                return
            if self.state == "live":  # it did connect: start again from the shortest wait
                backoff = _FIRST_BACKOFF
            self.last_error = problem
            log.info("stream %s: %s; reconnecting in %.1f s", self.stream, problem, backoff)
            self._set_state("reconnecting")
            if self._on_retry is not None:
                self._on_retry(problem, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _attempt(self, send: trio.MemorySendChannel[_Item]) -> str | None:
        """One connection: None when the stream ended normally, else why it must be retried."""
        headers = [(k.encode(), v.encode()) for k, v in auth_headers(self._token).items()]
        try:
            async with open_websocket_url(
                self.url,
                extra_headers=headers,
                connect_timeout=_CONNECT_TIMEOUT,
                disconnect_timeout=_DISCONNECT_TIMEOUT,
            ) as ws:
                code, text = await self._session(ws, send)
        except ConnectionRejected as exc:
            body = (exc.body or b"").decode("utf-8", "replace")
            if exc.status_code < 500 and exc.status_code not in _RETRY_STATUSES:
                raise StreamRefused(exc.status_code, body) from None
            return f"handshake refused with HTTP {exc.status_code}: {error_text(body)}"
        except ConnectionTimeout:
            return f"connecting to {self._endpoints.ws} timed out"
        except HandshakeError as exc:
            return str(exc.__cause__ or f"handshake with {self._endpoints.ws} failed")
        except (OSError, httpx.HTTPError, ValueError) as exc:  # ValueError: JSON from httpx
            return str(exc) or type(exc).__name__
        if code in RECONNECT_CODES:
            return f"the server closed the connection ({code}{' ' + text if text else ''})"
        if code == NORMAL_CLOSURE:
            return None
        raise StreamClosed(code, text)

    async def _session(
        self, ws: WebSocketConnection, send: trio.MemorySendChannel[_Item]
    ) -> tuple[int, str]:
        """Serve one open WebSocket until it closes; returns the close code and reason."""
        try:
            connected = _decode_connected(await ws.get_message())
            if not isinstance(connected, ev.ConnectedEvent):
                await ws.aclose(1002, "expected observability:connected first")
                return (ABNORMAL_CLOSURE, "the server did not start with observability:connected")
            if self._resume.connected(connected):
                self.reconnects += 1
            for message in self._messages:
                await ws.send_message(message.decode())
            self._set_state("live")
        except ConnectionClosed as exc:
            return _close_info(exc.reason)

        result: list[tuple[int, str]] = []
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                result.append(await self._read(ws, send))
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            nursery.start_soon(self._keepalive, ws, nursery.cancel_scope)
        return result[0] if result else (ABNORMAL_CLOSURE, "no pong from the server")

    async def _keepalive(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        # A half-open connection sends nothing, ever: find out by pinging. Any message
        # received meanwhile proves the connection alive, and a reader blocked on a slow
        # user cannot read the pong, so neither case counts against the connection.
        while True:
            await trio.sleep(_KEEPALIVE)
            self._heard = False
            with trio.move_on_after(_KEEPALIVE) as timeout:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return  # the reader sees the close too
            if timeout.cancelled_caught and not self._heard and not self._delivering:
                scope.cancel()
                return

    async def _read(
        self, ws: WebSocketConnection, send: trio.MemorySendChannel[_Item]
    ) -> tuple[int, str]:
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as exc:
                return _close_info(exc.reason)
            self._heard = True
            if isinstance(message, str):
                await self._handle(message, send)

    async def _handle(self, text: str, send: trio.MemorySendChannel[_Item]) -> None:
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            log.warning("stream %s: ignored a frame that is not JSON: %.80s", self.stream, text)
            return
        kind = obj.get("type") if isinstance(obj, dict) else None
        if not isinstance(kind, str):
            log.warning("stream %s: ignored a frame without a type: %.80s", self.stream, text)
        elif kind in TOPIC_OF_TYPE:
            event = _decode(obj)
            if event is not None:
                await self._deliver(event, text, send)
        elif kind in ("observability:subscribed", "observability:unsubscribed"):
            self._resume.replied()
        elif kind == "observability:error":
            self._resume.replied()
            log.warning(
                "stream %s: the server reported %s: %s",
                self.stream,
                obj.get("code"),
                obj.get("error"),
            )
        elif kind == "observability:reset":
            try:
                reset = decode_server_event(text)
            except InvalidInput as exc:
                log.warning("stream %s: ignored a malformed reset: %s", self.stream, exc)
            else:
                if isinstance(reset, ev.ResetEvent):
                    self._notice(self._resume.reset(reset))
        elif kind not in ("pong", "observability:connected"):
            log.debug("stream %s: ignored message of type %r", self.stream, kind)

    async def _deliver(
        self, event: ev.StreamEvent, text: str, send: trio.MemorySendChannel[_Item]
    ) -> None:
        """Hand ``event`` to the user unless already seen or excluded by the subscription."""
        resume = self._resume
        if (warning := resume.stale_warning(event)) is not None:
            log.warning("stream %s: %s", self.stream, warning)
        if resume.accept(event):
            self._delivering = True
            try:
                await send.send((event, text))
            finally:
                self._delivering = False
        # Only now: an event whose hand-off was cancelled must be fetched again on resume.
        resume.delivered(event)


class _Frames:
    def __init__(self, stream: EventStream) -> None:
        self._stream = stream

    def __aiter__(self) -> _Frames:
        return self

    async def __anext__(self) -> tuple[ev.StreamEvent, str]:
        item = await self._stream._next_item()
        if item is None:
            raise StopAsyncIteration
        return item


def _decode(obj: dict[str, Any]) -> ev.StreamEvent | None:
    try:
        return decode_event(obj, keep_seq=True)
    except InvalidInput as exc:
        log.warning("ignored an event the client cannot read: %s", exc)
        return None


def _decode_connected(message: str | bytes) -> ev.ServerEvent | None:
    try:
        return decode_server_event(message)
    except InvalidInput:
        return None


def _close_info(reason: CloseReason | None) -> tuple[int, str]:
    if reason is None:
        return (ABNORMAL_CLOSURE, "")
    return (reason.code, reason.reason or "")


@asynccontextmanager
async def open_stream(
    url: str,
    stream: str = ALL,
    *,
    since: int | None = None,
    since_pos: int | None = None,
    topics: Sequence[str] = (),
    filters: Mapping[str, object] | None = None,
    token: str | None = None,
    max_backoff: float = 5.0,
    on_state: Callable[[str], None] | None = None,
    on_retry: Callable[[str, float], None] | None = None,
) -> AsyncIterator[EventStream]:
    """Follow a stream of a trio-obs server; yields an :class:`EventStream` to iterate.

    ``url`` is the server's base URL (``http://host:port`` or ``ws://host:port``);
    ``stream`` an execution id, ``global`` or ``all``. ``since`` replays every stored
    event of a single stream after that seq first; ``since_pos`` every stored event of
    ``all`` after that global position (SPEC §14: each event on ``all`` carries ``pos``).
    ``topics`` and ``filters`` (wire keys: ``taskId``, ``tools``, ``entryTypes``,
    ``categories``, ``severity``) narrow the stream as SPEC §3 describes; until the
    server confirms them, the client applies the same rules to what arrives. On ``all``,
    ``filters`` may also hold a live query, ``q`` (words to search for, as in
    :func:`trio_obs.search`), and the typed filters ``execution``, ``type``, ``tool``,
    ``state``, ``agent`` (exact values): they travel in the handshake, so they apply from
    the first event, replay included.

    After a close with 1001, 1006, 1011 or 4008, a lost network or a refused
    connection, it reconnects by itself (waiting 0.1 s, doubling up to
    ``max_backoff``) and resumes: a single stream with ``since=<last seq>``, ``all``
    with ``since_pos=<last pos>`` (and the server's epoch: if the server's history
    changed, the stream starts over from the new history and records a notice).
    Events are never yielded twice. ``on_state`` hears
    ``connecting``, ``live``, ``reconnecting`` and ``closed``; ``on_retry`` hears each
    retry's reason and wait in seconds. The token is sent as an ``Authorization`` header.

    Raises :class:`StreamRefused` (from iteration) when the server refuses the
    handshake with a 4xx status, :class:`StreamClosed` after another close code, and
    :class:`~trio_obs.InvalidInput` here for an unknown topic or a bad filter.
    """
    if since is not None and since < 0:
        raise ValueError("since must be >= 0")
    if since is not None and stream == ALL:
        raise ValueError("since needs a single execution: resume 'all' with since_pos")
    if since_pos is not None and (since_pos < 0 or stream != ALL):
        raise ValueError("since_pos must be >= 0, and is for the 'all' stream")
    if not stream:
        raise ValueError("stream must be an execution id, 'global' or 'all'")
    ends = endpoints(url)
    handshake, filters = split_handshake_filters(stream, filters)
    messages, state = subscription_messages(topics, filters)
    send, receive = trio.open_memory_channel[_Item](0)
    events = EventStream(
        ends,
        stream,
        since=since,
        since_pos=since_pos,
        handshake=handshake,
        messages=messages,
        state=state,
        token=token,
        max_backoff=max(max_backoff, _FIRST_BACKOFF),
        on_state=on_state,
        on_retry=on_retry,
        receive=receive,
    )
    user_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(events._run, send)
            try:
                yield events
            except BaseException as exc:
                user_error = exc
                raise
            finally:
                nursery.cancel_scope.cancel()
                receive.close()
    except BaseExceptionGroup as group:
        # Let the caller's own exception through unwrapped (the nursery is ours, not theirs).
        if user_error is not None and group.exceptions == (user_error,):
            raise user_error from None
        raise
