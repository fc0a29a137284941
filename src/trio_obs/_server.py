"""The server: one listener, one port, HTTP routes (h11) and WebSocket streams (wsproto).

``port = await nursery.start(serve, obs, ServerConfig(port=0))`` serves clients from
a runner's own nursery; ``trio-obs serve`` does the same from the command line.
"""

from __future__ import annotations

import hmac
import logging
import mimetypes
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final, cast, overload
from urllib.parse import unquote

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection
from wsproto.events import Request as WsRequest
from wsproto.utilities import RemoteProtocolError

from . import _events as ev
from ._broker import Subscription
from ._codec import decode_events, encode
from ._errors import InvalidInput, StoreError
from ._events import GOING_AWAY
from ._http import HttpConnection, HttpError, Request
from ._metrics import ServerMetrics
from ._routing import Envelope, text_frame
from ._services import Observability
from ._wsconn import WebSocketConnection

log = logging.getLogger("trio_obs.server")

_EVENTS_PATH: Final = re.compile(r"^/api/executions/([^/]+)/events$")
_ROUTES: Final[dict[str, tuple[str, ...]]] = {
    "/": ("GET",),
    "/ws": ("GET",),
    "/api/health": ("GET",),
    "/api/events": ("POST",),
    "/api/executions": ("GET",),
    "/metrics": ("GET",),
}
_MAX_EVENTS_LIMIT: Final = 10_000


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Settings of one server (the flags of ``trio-obs serve``)."""

    host: str = "127.0.0.1"
    port: int = 3001
    token: str | None = None
    """When set, WebSocket handshakes and POSTs (and the data GETs) need it as a bearer token."""
    allowed_origins: Sequence[str] = ()
    """When non-empty, a WebSocket handshake whose ``Origin`` is not listed gets 403."""
    max_connections: int = 10_000
    ping_interval: float = 20.0
    queue_size: int | None = None
    """Per-connection queue; None = the broker's default."""
    head_timeout: float = 10.0
    max_body: int = 1024 * 1024
    shutdown_timeout: float = 3.0


class _Server:
    def __init__(self, obs: Observability, config: ServerConfig) -> None:
        self.obs = obs
        self.config = config
        self.connections: set[WebSocketConnection] = set()
        self._conn_of: dict[Subscription, WebSocketConnection] = {}
        self._ready: list[Subscription] = []
        self._flush_wanted = trio.Event()
        self.metrics = ServerMetrics(obs.broker, lambda: len(self.connections))
        self.static = _load_static()
        self._token = config.token.encode() if config.token else None
        self._idle = trio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ per TCP connection

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one TCP connection; nothing it does can reach the listener."""
        try:
            await self._handle(stream)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; nothing to tell anyone
        except* Exception:
            log.exception("unexpected error while serving a connection")
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle(self, stream: trio.SocketStream) -> None:
        http = HttpConnection(stream, head_timeout=self.config.head_timeout)
        while True:
            request = await http.next_request()
            if request is None:
                return
            if request.path == "/ws" and request.is_websocket_upgrade:
                accepted = await self._accept_websocket(http, request)
                # Idle connections must be small: keep nothing of the HTTP phase.
                del http, request
                if accepted is not None:
                    await self._serve_websocket(*accepted)
                return
            try:
                body = await http.read_body(request, self.config.max_body)
                await self._route(http, request, body)
            except HttpError as err:
                await http.send_error(err)
            if not http.reusable:
                return

    # ------------------------------------------------------------------ HTTP routes

    async def _route(self, http: HttpConnection, request: Request, body: bytes) -> None:
        path = request.path
        method = "GET" if request.method == "HEAD" else request.method
        match = _EVENTS_PATH.match(path)
        allowed = ("GET",) if match else _ROUTES.get(path)
        if allowed is None and path.startswith("/static/") and path[8:] in self.static:
            allowed = ("GET",)
        if allowed is None:
            raise HttpError(404, f"no route for {path}")
        if method not in allowed:
            raise HttpError(
                405, f"{method} is not allowed on {path}", headers=[("allow", ", ".join(allowed))]
            )
        if path == "/ws":
            raise HttpError(
                426, "this path takes a WebSocket upgrade", headers=[("upgrade", "websocket")]
            )
        if path == "/" or path.startswith("/static/"):
            name = "index.html" if path == "/" else path[8:]
            content, content_type = self.static[name]
            await http.respond(200, content, content_type)
        elif path == "/api/health":
            await http.send_json(200, {
                "status": "ok",
                "connections": len(self.connections),
                "uptimeSeconds": round(self.metrics.uptime, 3),
                "version": _version(),
            })  # fmt: skip
        elif path == "/metrics":
            await http.respond(200, self.metrics.exposition(), "text/plain; version=0.0.4")
        elif path == "/api/events":
            self._authorize(request, allow_query=False)
            await self._ingest(http, body)
        elif path == "/api/executions":
            self._authorize(request, allow_query=True)
            limit = _int_param(request, "limit", 100, maximum=_MAX_EVENTS_LIMIT)
            executions = await self._store_call(self.obs.broker.executions(limit))
            await http.send_json(200, [e.to_wire() for e in executions])
        else:
            assert match is not None
            self._authorize(request, allow_query=True)
            since = _int_param(request, "since", 0)
            limit = _int_param(request, "limit", 1000, maximum=_MAX_EVENTS_LIMIT)
            execution_id = unquote(match[1])
            rows = await self._store_call(
                self.obs.broker.read(execution_id, after=since, limit=limit)
            )
            await http.respond(200, b"[" + b",".join(rows) + b"]")

    async def _ingest(self, http: HttpConnection, body: bytes) -> None:
        try:
            events = decode_events(body)
        except InvalidInput as exc:
            raise HttpError(400, str(exc), code=exc.code) from None
        stored = await self._store_call(self.obs.ingest(events))
        await http.send_json(202, {"accepted": len(stored), "seqs": [e.seq for e in stored]})

    @staticmethod
    async def _store_call(call: Any) -> Any:
        try:
            return await call
        except StoreError as exc:
            log.error("store failure: %s", exc)
            raise HttpError(503, "the event store is unavailable; try again") from None

    def _authorize(self, request: Request, *, allow_query: bool) -> None:
        if self._token is None:
            return
        offered = None
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            offered = header[7:].strip()
        elif allow_query:
            offered = request.param("token")
        if offered is None or not hmac.compare_digest(offered.encode(), self._token):
            raise HttpError(
                401,
                "missing or wrong token",
                headers=[("www-authenticate", 'Bearer realm="trio-obs"')],
            )

    # ------------------------------------------------------------------ WebSocket

    async def _accept_websocket(
        self, http: HttpConnection, request: Request
    ) -> tuple[WebSocketConnection, bytes] | None:
        """Check and accept a handshake: the connection and its first bytes, or None if refused."""
        try:
            stream_key, since = self._check_handshake(request)
        except HttpError as err:
            self.metrics.refused[err.status] += 1
            await http.send_error(err)
            return None
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(request.raw)
            handshake = next((e for e in ws.events() if isinstance(e, WsRequest)), None)
        except RemoteProtocolError as exc:
            handshake = None
            reason = str(exc)
        else:
            reason = "incomplete WebSocket handshake"
        if handshake is None:
            self.metrics.refused[400] += 1
            await http.send_error(HttpError(400, f"bad WebSocket handshake: {reason}"))
            return None
        accept = ws.send(AcceptConnection(extensions=[]))  # no compression: frames are prebuilt
        assert ws.connection is not None
        sub = self.obs.broker.subscribe(
            stream_key, since=since, queue_size=self.config.queue_size, ready=self._ready
        )
        is_all = stream_key == ev.ALL
        connected = ev.ConnectedEvent(
            execution_id=stream_key,
            message="Connected to all observability events"
            if is_all
            else f"Connected to execution {stream_key}",
            buffered_event_count=sub.replay_count,
        )
        conn = WebSocketConnection(
            cast(trio.SocketStream, http.stream),
            ws.connection,
            sub,
            self.metrics,
            ping_interval=self.config.ping_interval,
            request_flush=self._request_flush,
        )
        return conn, accept + text_frame(encode(connected))

    async def _serve_websocket(self, conn: WebSocketConnection, first: bytes) -> None:
        self.connections.add(conn)
        self._conn_of[conn.sub] = conn
        if self._idle.is_set():
            self._idle = trio.Event()
        try:
            await conn.run(first)
        finally:
            self.connections.discard(conn)
            self._conn_of.pop(conn.sub, None)
            if not self.connections:
                self._idle.set()

    def _check_handshake(self, request: Request) -> tuple[str, int | None]:
        stream_key = request.param("observability")
        if not stream_key:
            raise HttpError(
                400, "missing observability parameter: use ?observability=<executionId>|all"
            )
        since = _int_param(request, "since", None)
        self._authorize(request, allow_query=True)
        # Browsers always send Origin; other clients (tail, scripts) send none and are
        # held to the token instead.
        origin = request.headers.get("origin")
        allowed = self.config.allowed_origins
        if allowed and origin is not None and origin not in allowed:
            raise HttpError(403, f"origin {origin} is not allowed")
        if len(self.connections) >= self.config.max_connections:
            raise HttpError(503, "too many connections; try again later")
        return stream_key, since

    # ------------------------------------------------------------------ fan-out

    def on_dispatch(self, envelopes: list[Envelope]) -> None:
        """Broker hook, after each dispatched batch: count it and wake the flusher."""
        self.metrics.count_in(envelopes)
        if self._ready:
            self._flush_wanted.set()

    def _request_flush(self, sub: Subscription) -> None:
        if not sub.flush_pending:
            sub.flush_pending = True
            self._ready.append(sub)
        self._flush_wanted.set()

    async def flusher(self) -> None:
        """Writes queued events to every connection that got some: one task, one write each."""
        conn_of = self._conn_of
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted = trio.Event()
            ready = self._ready[:]
            self._ready.clear()
            for sub in ready:
                sub.flush_pending = False
                conn = conn_of.get(sub)
                if conn is not None:
                    conn.flush()

    # ------------------------------------------------------------------ shutdown

    async def close_all(self) -> None:
        """Close every WebSocket with 1001 and wait (bounded) for them to finish."""
        for conn in list(self.connections):
            conn.shutdown(GOING_AWAY, "server shutting down")
        with trio.move_on_after(self.config.shutdown_timeout):
            await self._idle.wait()


_MAX_SEQ: Final = 2**62  # far beyond any real seq, and within SQLite's 64-bit integers


@overload
def _int_param(request: Request, name: str, default: int, *, maximum: int = ...) -> int: ...
@overload
def _int_param(request: Request, name: str, default: None, *, maximum: int = ...) -> int | None: ...
def _int_param(
    request: Request, name: str, default: int | None, *, maximum: int = _MAX_SEQ
) -> int | None:
    """A non-negative integer query parameter (ASCII digits), capped at ``maximum``."""
    text = request.param(name)
    if text is None or (text == "" and default is not None):
        return default
    if not (text.isascii() and text.isdigit()):
        raise HttpError(400, f"{name} must be a non-negative integer, got {text!r}")
    return min(int(text), maximum)


def _load_static() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    folder = resources.files("trio_obs") / "static"
    if folder.is_dir():
        for item in folder.iterdir():
            if item.is_file():
                kind = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
                if kind.startswith("text/") or kind.endswith("javascript"):
                    kind += "; charset=utf-8"
                files[item.name] = (item.read_bytes(), kind)
    files.setdefault(
        "index.html",
        (b"<!doctype html><title>trio-obs</title><p>viewer not installed", "text/html"),
    )
    return files


def _version() -> str:
    from . import __version__

    return __version__


async def serve(
    obs: Observability,
    config: ServerConfig | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP and WebSocket clients of ``obs`` until cancelled; reports the bound port.

    On cancellation it stops accepting, closes every WebSocket with 1001 and returns
    within ``config.shutdown_timeout`` seconds or so.
    """
    config = config or ServerConfig()
    server = _Server(obs, config)
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    port: int = listeners[0].socket.getsockname()[1]
    obs.broker.dispatch_hooks.append(server.on_dispatch)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.flusher)
            nursery.start_soon(trio.serve_listeners, server.handle, listeners)
            task_status.started(port)
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    for listener in listeners:
                        await listener.aclose()
                    await server.close_all()
    finally:
        obs.broker.dispatch_hooks.remove(server.on_dispatch)
        for listener in listeners:
            await trio.aclose_forcefully(listener)
