"""A typed client of a trio-obs server: stream events over WebSocket, post them over HTTP.

``async with open_stream(url, "exec-1") as stream: async for event in stream: ...``
yields the typed stream events of one execution (or of ``all``) in ``seq`` order,
reconnects by itself after a disconnect and resumes without a gap or a duplicate.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

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

from . import _events as ev
from ._codec import _parse_filters, decode_event, encode, encode_client_message
from ._errors import INVALID_TOPIC, InvalidInput, TrioObsError
from ._routing import Envelope, SubscriptionState, own_task_id

log = logging.getLogger("trio_obs.client")

StreamState: TypeAlias = Literal["connecting", "live", "reconnecting", "closed"]

RECONNECT_CODES: Final = frozenset(
    {ev.GOING_AWAY, ev.ABNORMAL_CLOSURE, ev.INTERNAL_ERROR, ev.SLOW_CONSUMER_CODE}
)
"""Close codes after which the client reconnects (going away, abnormal, server error, slow)."""
_NORMAL_CLOSE: Final = ev.NORMAL_CLOSURE
_FIRST_BACKOFF: Final = 0.1
_KEEPALIVE: Final = 20.0
"""Seconds between our pings; a pong missing for as long means the connection is dead."""
_CONNECT_TIMEOUT: Final = 10.0
_DISCONNECT_TIMEOUT: Final = 2.0
_PAGE: Final = 1000
_LISTING_LIMIT: Final = 10_000
_SPANS_MAX: Final = 10_000
_RETRY_STATUSES: Final = frozenset({408, 429})


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
        text = f"the server refused the stream with HTTP {status}: {_error_text(body)}"
        super().__init__(f"{text}; {hint}" if hint else text)


class StreamClosed(TrioObsError):
    """The server closed the stream with a code that a reconnect would not fix."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"the server closed the stream with code {code}: {reason or 'no reason'}")


class PostRejected(TrioObsError):
    """``POST /api/events`` answered something other than 202; nothing was stored."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        self.code: str | None = None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("code"), str):
            self.code = data["code"]
        super().__init__(f"the server rejected the events with HTTP {status}: {_error_text(body)}")


def _error_text(body: str) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return body.strip()[:200] or "no details"


# --------------------------------------------------------------------------- URLs


@attrs.frozen
class _Endpoints:
    http: str
    """Base URL for HTTP routes, without a trailing slash."""
    ws: str
    """Base URL for ``/ws``, without a trailing slash."""


def _endpoints(url: str) -> _Endpoints:
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
    return _Endpoints(http, ws)


def _auth_headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


# --------------------------------------------------------------------------- the stream


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
        endpoints: _Endpoints,
        stream: str,
        *,
        since: int | None,
        messages: list[bytes],
        state: SubscriptionState,
        token: str | None,
        max_backoff: float,
        on_state: Callable[[str], None] | None,
        receive: trio.MemoryReceiveChannel[_Item],
    ) -> None:
        self._endpoints = endpoints
        self.stream = stream
        """The stream this follows: an execution id, ``global`` or ``all``."""
        self._messages = messages
        self._filter = state
        self._token = token
        self._max_backoff = max_backoff
        self._on_state = on_state
        self._receive = receive
        self.state: StreamState = "connecting"
        """``connecting``, ``live``, ``reconnecting`` or ``closed``."""
        self.last_error: str | None = None
        """Why the last connection attempt failed or the last connection ended."""
        self.reconnects = 0
        """How many times the server accepted the stream again after a lost connection."""
        self._last: dict[str, int] = {}
        if since is not None:
            self._last[stream] = since
        self._baseline: dict[str, int] | None = None
        self._spans: OrderedDict[tuple[str, str], tuple[str | None, str | None]] = OrderedDict()
        self._ever_live = False
        self._pending_confirmations = 0
        self._requested_since: int | None = None
        self._warned_reset = False
        self._http: httpx.AsyncClient | None = None
        self._heard = False
        self._delivering = False

    @property
    def url(self) -> str:
        """The WebSocket URL of the next connection (the token travels in a header)."""
        query: dict[str, str | int] = {"observability": self.stream}
        if self.stream != ev.ALL and (since := self._last.get(self.stream)) is not None:
            query["since"] = since
        return f"{self._endpoints.ws}/ws?{urlencode(query)}"

    def last_seq(self, execution_id: str | None = None) -> int | None:
        """The last ``seq`` received of an execution (default: this stream's), or None."""
        return self._last.get(execution_id or self.stream)

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
                if self._http is not None:
                    with trio.CancelScope(shield=True):
                        await self._http.aclose()

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
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _attempt(self, send: trio.MemorySendChannel[_Item]) -> str | None:
        """One connection: None when the stream ended normally, else why it must be retried."""
        if self.stream == ev.ALL and not self._ever_live:
            self._baseline = await self._snapshot()
        headers = [(k.encode(), v.encode()) for k, v in _auth_headers(self._token).items()]
        self._requested_since = self._last.get(self.stream) if self.stream != ev.ALL else None
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
            return f"handshake refused with HTTP {exc.status_code}: {_error_text(body)}"
        except ConnectionTimeout:
            return f"connecting to {self._endpoints.ws} timed out"
        except HandshakeError as exc:
            return str(exc.__cause__ or f"handshake with {self._endpoints.ws} failed")
        except (OSError, httpx.HTTPError, ValueError) as exc:  # ValueError: JSON from httpx
            return str(exc) or type(exc).__name__
        if code in RECONNECT_CODES:
            return f"the server closed the connection ({code}{' ' + text if text else ''})"
        if code == _NORMAL_CLOSE:
            return None
        raise StreamClosed(code, text)

    async def _session(
        self, ws: WebSocketConnection, send: trio.MemorySendChannel[_Item]
    ) -> tuple[int, str]:
        """Serve one open WebSocket until it closes; returns the close code and reason."""
        try:
            first = await ws.get_message()
            connected = _decode_connected(first)
            if connected is None:
                await ws.aclose(1002, "expected observability:connected first")
                return (
                    ev.ABNORMAL_CLOSURE,
                    "the server did not start with observability:connected",
                )
            if (
                self.stream != ev.ALL
                and self.stream not in self._last
                and connected.buffered_event_count == 0
            ):
                # Nothing to replay means the stream was empty: everything from seq 1 is new.
                self._last[self.stream] = 0
            reconnected = self._ever_live
            if reconnected:
                self.reconnects += 1
            self._pending_confirmations = len(self._messages)
            for message in self._messages:
                await ws.send_message(message.decode())
            if self.stream == ev.ALL and reconnected:
                await self._fill_gaps(send)
            self._ever_live = True
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
        return result[0] if result else (ev.ABNORMAL_CLOSURE, "no pong from the server")

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
        elif kind in ev.STREAM_EVENT_TYPES:
            event = _decode(obj)
            if event is not None:
                # Until the server confirms our subscribes, it may send what they exclude.
                await self._deliver(event, text, send, check=self._pending_confirmations > 0)
        elif kind in ("observability:subscribed", "observability:unsubscribed"):
            self._pending_confirmations = max(0, self._pending_confirmations - 1)
        elif kind == "observability:error":
            self._pending_confirmations = max(0, self._pending_confirmations - 1)
            log.warning(
                "stream %s: the server reported %s: %s",
                self.stream,
                obj.get("code"),
                obj.get("error"),
            )
        elif kind not in ("pong", "observability:connected"):
            log.debug("stream %s: ignored message of type %r", self.stream, kind)

    async def _deliver(
        self, event: ev.StreamEvent, text: str, send: trio.MemorySendChannel[_Item], *, check: bool
    ) -> None:
        """Hand ``event`` to the user unless already seen or excluded by the subscription."""
        key = ev.stream_key(event) if self.stream == ev.ALL else self.stream
        seq = event.seq
        last = self._last.get(key)
        if seq is not None and last is not None and seq <= last:
            self._maybe_warn_reset(key, seq)
            return
        task_id, tool = self._note_span(key, event)
        wanted = True
        if check and not self._filter.everything:
            env = Envelope(key, seq or 0, event, b"", ev.TOPIC_OF_TYPE[event.type], task_id, tool)
            wanted = self._filter.matches(env)
        if wanted:
            self._delivering = True
            try:
                await send.send((event, text))
            finally:
                self._delivering = False
        # Only now: an event whose hand-off was cancelled must be fetched again on resume.
        if seq is not None:
            self._last[key] = seq

    def _maybe_warn_reset(self, key: str, seq: int) -> None:
        # A single stream asked for seq > since: an older seq means the server lost its store.
        since = self._requested_since
        if self.stream != ev.ALL and since is not None and seq <= since and not self._warned_reset:
            self._warned_reset = True
            log.warning(
                "stream %s: the server sent seq %d after since=%d; was it restarted with an "
                "empty store? Events up to seq %d are skipped as already seen.",
                key,
                seq,
                since,
                since,
            )

    def _note_span(self, key: str, event: ev.StreamEvent) -> tuple[str | None, str | None]:
        """The (task, tool) of ``event``, remembering tool uses and skills to resolve ends."""
        match event:
            case ev.ToolStartEvent():
                return self._remember((key, event.tool_use_id), event.task_id, event.tool)
            case ev.SkillStartEvent():
                return self._remember((key, event.skill_trace_id), event.task_id, None)
            case ev.ToolEndEvent() | ev.ToolOutputEvent():
                return self._spans.get((key, event.tool_use_id), (None, None))
            case ev.SkillEndEvent():
                return self._spans.get((key, event.skill_trace_id), (None, None))
            case _:
                return own_task_id(event), None

    def _remember(
        self, span: tuple[str, str], task_id: str | None, tool: str | None
    ) -> tuple[str | None, str | None]:
        self._spans[span] = (task_id, tool)
        if len(self._spans) > _SPANS_MAX:
            self._spans.popitem(last=False)
        return task_id, tool

    # ------------------------------------------------------------------ `all`: gaps over HTTP

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self._endpoints.http,
                headers=_auth_headers(self._token),
                timeout=_CONNECT_TIMEOUT,
            )
        return self._http

    async def _get(self, path: str) -> Any:
        response = await self._client().get(path)
        response.raise_for_status()
        return response.json()

    async def _snapshot(self) -> dict[str, int] | None:
        """Each execution's last seq before an ``all`` stream starts (None if unavailable)."""
        try:
            listing = await self._get(f"/api/executions?limit={_LISTING_LIMIT}")
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("stream all: no execution listing (%s)", exc)
            return None
        return {item["executionId"]: item["lastSeq"] for item in listing}

    async def _fill_gaps(self, send: trio.MemorySendChannel[_Item]) -> None:
        """Yield what each execution stored while ``all`` was disconnected (no replay on WS).

        Runs after the new connection is open, so whatever is stored after this reads
        arrives live; the overlap is dropped by seq.
        """
        listing = await self._get(f"/api/executions?limit={_LISTING_LIMIT}")
        targets: list[tuple[str, int]] = []
        for item in listing:
            key, last_seq = item["executionId"], item["lastSeq"]
            start = self._last.get(key)
            if start is None:
                if self._baseline is None:
                    continue  # never seen and no baseline: we cannot tell what is new
                start = self._baseline.get(key, 0)
            if last_seq > start:
                targets.append((key, start))
        if ev.GLOBAL in self._last:  # the listing leaves `global` out
            targets.append((ev.GLOBAL, self._last[ev.GLOBAL]))
        for key, after in targets:
            while True:
                rows = await self._get(
                    f"/api/executions/{quote(key, safe='')}/events?since={after}&limit={_PAGE}"
                )
                for obj in rows:
                    event = _decode(obj)
                    # `global` also stores copies of execution:status; `all` gets the originals.
                    if event is not None and ev.stream_key(event) == key:
                        await self._deliver(event, orjson.dumps(obj).decode(), send, check=True)
                if len(rows) < _PAGE:
                    break
                after = rows[-1]["seq"]


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
        event = decode_event(obj)
    except InvalidInput as exc:
        log.warning("ignored an event the client cannot read: %s", exc)
        return None
    seq = obj.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool):
        event = attrs.evolve(event, seq=seq)
    return event


def _decode_connected(message: str | bytes) -> ev.ConnectedEvent | None:
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("type") != "observability:connected":
        return None
    count = obj.get("bufferedEventCount")
    return ev.ConnectedEvent(
        execution_id=str(obj.get("executionId", "")),
        message=str(obj.get("message", "")),
        buffered_event_count=count if isinstance(count, int) else -1,
    )


def _close_info(reason: CloseReason | None) -> tuple[int, str]:
    if reason is None:
        return (ev.ABNORMAL_CLOSURE, "")
    return (reason.code, reason.reason or "")


def _subscription(
    topics: Sequence[str], filters: Mapping[str, object] | None
) -> tuple[list[bytes], SubscriptionState]:
    """The client messages that set up ``topics``/``filters``, and the state they produce.

    Sent in an order whose every intermediate state lets through at least what the
    final one does: ``all`` with the filters first, then each topic (added to ``all``),
    then ``unsubscribe all``. So nothing wanted is dropped while the server applies them.
    """
    for topic in topics:
        if topic not in ev.TOPICS:
            raise InvalidInput(
                f"unknown topic {topic!r}; expected one of: {', '.join(sorted(ev.TOPICS))}",
                INVALID_TOPIC,
            )
    update = _parse_filters(dict(filters)) if filters else ev.FilterUpdate()
    state = SubscriptionState()
    messages: list[ev.ClientMessage] = []
    wanted = list(dict.fromkeys(topics))
    if not wanted and not update.changes:
        return [], state
    messages.append(ev.Subscribe(topic="all", filters=update))
    if "all" not in wanted:
        messages += [ev.Subscribe(topic=t) for t in wanted]  # type: ignore[arg-type]
        if wanted:
            messages.append(ev.Unsubscribe(topic="all"))
    for msg in messages:
        if isinstance(msg, ev.Subscribe):
            state.subscribe(msg.topic, msg.filters)
        elif isinstance(msg, ev.Unsubscribe):
            state.unsubscribe(msg.topic)
    return [encode_client_message(m) for m in messages], state


@asynccontextmanager
async def open_stream(
    url: str,
    stream: str = ev.ALL,
    *,
    since: int | None = None,
    topics: Sequence[str] = (),
    filters: Mapping[str, object] | None = None,
    token: str | None = None,
    max_backoff: float = 5.0,
    on_state: Callable[[str], None] | None = None,
) -> AsyncIterator[EventStream]:
    """Follow a stream of a trio-obs server; yields an :class:`EventStream` to iterate.

    ``url`` is the server's base URL (``http://host:port`` or ``ws://host:port``);
    ``stream`` an execution id, ``global`` or ``all``. ``since`` replays every stored
    event after that seq first (single streams only: ``all`` has no replay).
    ``topics`` and ``filters`` (wire keys: ``taskId``, ``tools``, ``entryTypes``,
    ``categories``, ``severity``) narrow the stream as SPEC §3 describes; until the
    server confirms them, the client applies the same rules to what arrives.

    After a close with 1001, 1006, 1011 or 4008, a lost network or a refused
    connection, it reconnects by itself (waiting 0.1 s, doubling up to
    ``max_backoff``) and resumes: a single stream with ``since=<last seq>``; ``all``
    by fetching what each execution stored meanwhile over HTTP before live events.
    (``all`` cannot recover events of the ``global`` stream it had not yet seen, nor
    of executions that began during an outage if the listing was unavailable at start.)
    Events are never yielded twice. ``on_state`` hears ``connecting``, ``live``,
    ``reconnecting`` (and ``closed``). The token is sent as an ``Authorization`` header.

    Raises :class:`StreamRefused` (from iteration) when the server refuses the
    handshake with a 4xx status, :class:`StreamClosed` after another close code, and
    :class:`~trio_obs.InvalidInput` here for an unknown topic or a bad filter.
    """
    if since is not None and since < 0:
        raise ValueError("since must be >= 0")
    if since is not None and stream == ev.ALL:
        raise ValueError("since needs a single execution: the 'all' stream has no replay")
    if not stream:
        raise ValueError("stream must be an execution id, 'global' or 'all'")
    endpoints = _endpoints(url)
    messages, state = _subscription(topics, filters)
    send, receive = trio.open_memory_channel[_Item](0)
    events = EventStream(
        endpoints,
        stream,
        since=since,
        messages=messages,
        state=state,
        token=token,
        max_backoff=max(max_backoff, _FIRST_BACKOFF),
        on_state=on_state,
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


async def post_events(
    url: str,
    events: ev.StreamEvent | Sequence[ev.StreamEvent],
    *,
    token: str | None = None,
) -> list[int]:
    """Post one event or a batch to ``POST /api/events``; returns the seqs they were stored as.

    The batch is atomic: on any answer but 202 nothing is stored and
    :class:`PostRejected` says why. An unreachable server raises ``httpx.TransportError``
    (a request times out after 10 s; use ``trio.fail_after`` for a shorter bound).
    """
    batch = [events] if not isinstance(events, Sequence) else list(events)
    if not batch:
        return []
    body = b"[" + b",".join(encode(e) for e in batch) + b"]"
    headers = {"content-type": "application/json", **_auth_headers(token)}
    async with httpx.AsyncClient(timeout=_CONNECT_TIMEOUT) as client:
        response = await client.post(
            f"{_endpoints(url).http}/api/events", content=body, headers=headers
        )
    if response.status_code != 202:
        raise PostRejected(response.status_code, response.text)
    seqs = response.json()["seqs"]
    return [int(s) for s in seqs]
