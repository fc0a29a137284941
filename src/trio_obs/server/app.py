"""The server: one listener, one port, the route table, WebSocket accepts and shutdown.

``port = await nursery.start(serve, obs, ServerConfig(port=0))`` serves clients from
a runner's own nursery; ``trio-obs serve`` does the same from the command line.
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import ipaddress
import logging
import mimetypes
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from typing import Final, overload

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection
from wsproto.events import Request as WsRequest
from wsproto.utilities import RemoteProtocolError

from .._version import __version__
from ..core.errors import InvalidInput, StoreError
from ..core.events import FilterUpdate
from ..core.facts import facts_js
from ..core.prices import SHIPPED_PRICES, Prices
from ..core.protocol import (
    ALL,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_STALL_TIMEOUT,
    GOING_AWAY,
    INVALID_PARAMETER,
    MAX_BODY,
    MAX_EVENTS_LIMIT,
    MAX_ID_BYTES,
    MAX_INT_DIGITS,
    MAX_SEARCH_LIMIT,
    SHUTTING_DOWN,
)
from ..core.search import FILTERS, RunFilters, search_query, typed_filters_from
from ..core.session import greeting
from ..core.watchdog import DEFAULT_THRESHOLDS, Thresholds
from ..core.wire import events_json, parse_filters, search_json, summaries_json, to_json
from ..hub.clock import now_iso
from ..producers import Observability
from .flush import Flusher
from .http import HttpConnection, HttpError, Request
from .ingest import UnknownFieldLog, ingest_events, unavailable
from .listen import ConnectionCap, serve_listeners
from .metrics import ServerMetrics
from .otlp import OtlpReceiver, receive_logs, receive_traces
from .routes import Response, Route, RouteTable
from .transport import SocketTransport, StreamTransport, Transport
from .trees import TreeCache
from .watch import Watchdog
from .websocket import WebSocketConnection

log = logging.getLogger("trio_obs.server")


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
    """Open sockets at most (HTTP and WebSocket alike); beyond it, 503 and close."""
    ping_interval: float = 20.0
    queue_size: int | None = None
    """How far an ``all`` connection may fall behind in memory before it is served from
    the store by position; None = the hub's queue size."""
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    """Seconds a connection with data waiting may accept no bytes before it is closed (4008)."""
    close_grace: float = 2.0
    """Seconds a closing connection gets to take its last frame and close frame."""
    idle_timeout: float = 10.0
    """Seconds a keep-alive HTTP connection may send nothing before it is closed."""
    read_timeout: float = DEFAULT_READ_TIMEOUT
    """Seconds from a request's first byte to the end of its body (else 408), and seconds
    a client gets to take its answer. A request being handled is always answered."""
    max_body: int = MAX_BODY
    shutdown_timeout: float = 3.0
    """At a stop: seconds WebSocket clients get to close, and requests being read get to
    arrive (a request that arrived is handled and answered whatever it takes)."""
    watch: Thresholds | None = DEFAULT_THRESHOLDS
    """The watchdog's thresholds (SPEC §13: ``--lost-after``, ``--slow-after``,
    ``--idle-after``); None: no watchdog on this server."""
    alert_webhook: str | None = None
    """A URL each ``watch:alert`` and ``watch:clear`` this server stores is POSTed to."""
    prices: Prices = attrs.field(factory=lambda: dict(SHIPPED_PRICES))
    """Model prices for the runs' cost (the shipped table, or ``--prices FILE``'s)."""
    tune_gc: bool = True
    """While serving: the cyclic GC's thresholds :data:`GC_THRESHOLDS` (not Python's 700 /
    10 / 10) and what exists at the start frozen out of it (issue 25). The process's
    previous thresholds come back when the last server stops."""


_MAX_SEQ: Final = 10**MAX_INT_DIGITS - 1


@attrs.frozen
class _Handshake:
    """What a WebSocket handshake asks for (SPEC §3, §14)."""

    stream: str
    since: int | None
    epoch: str | None
    since_pos: int | None
    filters: FilterUpdate
    """Filters given in the query (``q`` and the typed filters), applied before any event."""


def run_filters(request: Request) -> RunFilters | None:
    """The execution list's filters (``state``, ``agent``, ``errors=true``), if any."""
    errors = request.param("errors") or "false"
    if errors not in ("true", "false", "1", "0"):
        raise HttpError(
            400, f"errors must be true or false, got {errors!r}", code=INVALID_PARAMETER
        )
    filters = RunFilters(
        state=request.param("state") or None,
        agent=request.param("agent") or None,
        errors=errors in ("true", "1"),
    )
    return filters or None


def _query_filters(param: Callable[[str], str | None]) -> FilterUpdate:
    """The live query and typed filters of a handshake's query string; 400 when invalid."""
    given = {name: value for name in ("q", *FILTERS) if (value := param(name))}
    try:
        return parse_filters(given)
    except InvalidInput as exc:
        raise HttpError(400, str(exc), code=exc.code) from None


@overload
def int_param(request: Request, name: str, default: int, *, maximum: int = ...) -> int: ...
@overload
def int_param(request: Request, name: str, default: None, *, maximum: int = ...) -> int | None: ...
def int_param(
    request: Request, name: str, default: int | None, *, maximum: int = _MAX_SEQ
) -> int | None:
    """A non-negative integer query parameter of at most 18 ASCII digits, capped at ``maximum``."""
    text = request.param(name)
    if text is None or (text == "" and default is not None):
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_INT_DIGITS:
        shown = text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"
        raise HttpError(
            400,
            f"{name} must be a non-negative integer of at most {MAX_INT_DIGITS} digits, "
            f"got {shown!r}",
            code=INVALID_PARAMETER,
        )
    return min(int(text), maximum)


def _load_static() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    folder = resources.files("trio_obs.server") / "static"
    if folder.is_dir():
        for item in folder.iterdir():
            if item.is_file():
                kind = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
                if kind.startswith("text/") or kind.endswith("javascript"):
                    kind += "; charset=utf-8"
                files[item.name] = (item.read_bytes(), kind)
    files["facts.js"] = (facts_js().encode(), "text/javascript; charset=utf-8")
    files.setdefault(
        "index.html",
        (b"<!doctype html><title>trio-obs</title><p>viewer not installed", "text/html"),
    )
    return files


_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` (an address or a name) stays on this machine's loopback."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in _LOOPBACK_HOSTS


def _loopback_names(host: str) -> frozenset[str] | None:
    """The ``Host`` names a loopback-bound server answers to; None when bound beyond loopback."""
    return _LOOPBACK_HOSTS | {host.lower()} if is_loopback(host) else None


class _Server:
    def __init__(self, obs: Observability, config: ServerConfig) -> None:
        self.obs = obs
        self.hub = obs.hub
        self.config = config
        self.connections: set[WebSocketConnection] = set()
        self.cap = ConnectionCap(config.max_connections)
        self.metrics = ServerMetrics(self.hub, lambda: len(self.connections), self.cap)
        self.flusher = Flusher(self.metrics)
        self.trees = TreeCache(self.hub, config.prices)
        self.watchdog = (
            Watchdog(self.hub, config.watch, webhook=config.alert_webhook)
            if config.watch is not None
            else None
        )
        if self.watchdog is not None:
            self.metrics.watched = self.watchdog.judge_counts
        self.static = _load_static()
        self.otlp = OtlpReceiver(obs, max_body=config.max_body)
        self.unknown_fields = UnknownFieldLog()
        self._token = config.token.encode() if config.token else None
        self._loopback_names = _loopback_names(config.host)
        self._idle = trio.Event()
        self._idle.set()
        self.requests: set[HttpConnection] = set()
        """HTTP connections (before a WebSocket upgrade), told to hurry at a stop."""

    # ------------------------------------------------------------------ per TCP connection

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one TCP connection; nothing it does can reach the listener."""
        try:
            await self._handle(stream)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; nothing to tell anyone
        except* Exception:
            log.exception("unexpected error while serving a connection")
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        http = HttpConnection(
            stream, idle_timeout=self.config.idle_timeout, read_timeout=self.config.read_timeout
        )
        self.requests.add(http)
        try:
            await self._serve_http(http)
        finally:
            self.requests.discard(http)

    async def _serve_http(self, http: HttpConnection) -> None:
        while True:
            request = await http.next_request()
            if request is None:
                return
            if request.path == "/ws" and request.is_websocket_upgrade:
                self.requests.discard(http)
                accepted = await self._accept_websocket(http, request)
                # Idle connections must be small: keep nothing of the HTTP phase.
                del http, request
                if accepted is not None:
                    await self._serve_websocket(*accepted)
                return
            # A request that has begun is answered, however long it takes and even when
            # the server is stopping: a producer whose batch was stored must hear so (or
            # it retries and stores twice). Only reading it has a deadline (408).
            with trio.CancelScope(shield=True):
                try:
                    # The body is read first, so an error answer leaves the connection usable.
                    body = await http.read_body(request, self.config.max_body)
                    self._check_host(request)
                    route, parameter = ROUTES.find(request)
                    self._authorize(request, route.auth)
                    response = await route.handler(self, request, parameter, body)
                    await http.respond(
                        response.status,
                        response.body,
                        response.content_type,
                        list(response.headers),
                    )
                except HttpError as err:
                    await http.send_error(err)
            if not http.reusable:
                return

    def _check_host(self, request: Request) -> None:
        """Bound to loopback, only a loopback ``Host`` is served (no DNS rebinding)."""
        if self._loopback_names is None:
            return
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.lower().strip("[]") not in self._loopback_names:
            raise HttpError(
                421,
                f"this server answers to its loopback address only, not to Host {host!r}",
            )

    def _check_origin(self, request: Request) -> None:
        """Only the listed origins, or with none listed, the server's own (same-origin)."""
        origin = request.headers.get("origin")
        if origin is None:
            return  # not a browser (tail, scripts): held to the token instead
        allowed = self.config.allowed_origins
        if allowed:
            if origin not in allowed:
                raise HttpError(403, f"origin {origin} is not allowed")
            return
        own = f"http://{request.headers.get('host', '')}"
        if origin.lower() != own.lower():
            raise HttpError(
                403,
                f"origin {origin} is not this server's ({own}); allow it with --allowed-origin",
            )

    def _authorize(self, request: Request, auth: str) -> None:
        if self._token is None or auth == "none":
            return
        offered = None
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            offered = header[7:].strip()
        elif auth == "header-or-query":
            offered = request.param("token")
        if offered is None or not hmac.compare_digest(offered.encode(), self._token):
            raise HttpError(
                401,
                "missing or wrong token",
                headers=[("www-authenticate", 'Bearer realm="trio-obs"')],
            )

    # ------------------------------------------------------------------ HTTP handlers

    async def static_file(self, request: Request, name: str, body: bytes) -> Response:
        found = self.static.get(name or "index.html")
        if found is None:
            raise HttpError(404, f"no route for {request.path}")
        return Response(200, *found)

    async def upgrade_required(self, request: Request, _: str, body: bytes) -> Response:
        raise HttpError(
            426, "this path takes a WebSocket upgrade", headers=[("upgrade", "websocket")]
        )

    async def health(self, request: Request, _: str, body: bytes) -> Response:
        problem = await self.hub.problem()
        healthy = problem is None
        answer = {
            "status": "ok" if healthy else "degraded",
            **({} if healthy else {"reason": problem}),
            "connections": len(self.connections),
            "uptimeSeconds": round(self.metrics.uptime, 3),
            "version": __version__,
            "epoch": self.hub.epoch,
        }
        return Response(200 if healthy else 503, to_json(answer))

    async def metrics_text(self, request: Request, _: str, body: bytes) -> Response:
        return Response(200, self.metrics.exposition(), "text/plain; version=0.0.4")

    async def ingest(self, request: Request, _: str, body: bytes) -> Response:
        return await ingest_events(self.obs, request, body, self.unknown_fields)

    async def executions(self, request: Request, _: str, body: bytes) -> Response:
        limit = int_param(request, "limit", 100, maximum=MAX_EVENTS_LIMIT)
        filters = run_filters(request)
        try:
            summaries = await self.hub.executions(limit, filters)
            if self.watchdog is not None:  # a run whose producers are all lost says so
                summaries = [self.watchdog.judge.with_state(s) for s in summaries]
            return Response(200, summaries_json(summaries, self.config.prices))
        except StoreError as exc:
            raise unavailable(exc) from None

    async def search(self, request: Request, _: str, body: bytes) -> Response:
        try:
            query = search_query(
                request.param("q"),
                filters=typed_filters_from(request.param),
                limit=int_param(request, "limit", 50, maximum=MAX_SEARCH_LIMIT),
                before=int_param(request, "before", None),
            )
            return Response(200, search_json(await self.hub.search(query)))
        except InvalidInput as exc:
            raise HttpError(400, str(exc), code=exc.code) from None
        except StoreError as exc:
            raise unavailable(exc) from None

    async def running(self, request: Request, _: str, body: bytes) -> Response:
        """Open spans of running executions with their age (SPEC §13, ``tail --running``)."""
        answer = (
            self.watchdog.running()
            if self.watchdog is not None
            else {"watching": False, "spans": [], "alerts": []}
        )
        return Response(200, to_json(answer))

    async def execution_events(self, request: Request, execution_id: str, body: bytes) -> Response:
        since = int_param(request, "since", 0)
        limit = int_param(request, "limit", 1000, maximum=MAX_EVENTS_LIMIT)
        try:
            rows = await self.hub.read(execution_id, after=since, limit=limit)
        except StoreError as exc:
            raise unavailable(exc) from None
        return Response(200, events_json(rows))

    async def execution_tree(self, request: Request, execution_id: str, body: bytes) -> Response:
        try:
            return Response(200, await self.trees.answer(execution_id))
        except StoreError as exc:
            raise unavailable(exc) from None

    # ------------------------------------------------------------------ WebSocket

    def _check_handshake(self, request: Request) -> _Handshake:
        stream_key = request.param("observability")
        if not stream_key:
            raise HttpError(
                400,
                "missing observability parameter: use ?observability=<executionId>|all",
                code=INVALID_PARAMETER,
            )
        if len(stream_key.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise HttpError(
                400,
                f"observability names an execution id over {MAX_ID_BYTES:,} bytes; "
                "no execution has one (ids are refused beyond it)",
                code=INVALID_PARAMETER,
            )
        since = int_param(request, "since", None)
        since_pos = int_param(request, "since_pos", None)
        epoch = request.param("epoch") or None
        filters = _query_filters(request.param)
        if stream_key != ALL and (since_pos is not None or "q" in filters.changes):
            raise HttpError(
                400,
                "since_pos and q are for ?observability=all (one execution resumes with since=)",
                code=INVALID_PARAMETER,
            )
        self._check_host(request)
        self._authorize(request, "header-or-query")
        self._check_origin(request)
        return _Handshake(stream_key, since, epoch, since_pos, filters)

    async def _accept_websocket(
        self, http: HttpConnection, request: Request
    ) -> tuple[WebSocketConnection, bytes, bytes] | None:
        """Check and accept a handshake: the connection, the bytes to send first and those
        the client sent after its head (frames in the same write), or None if refused."""
        try:
            asked = self._check_handshake(request)
        except HttpError as err:
            await self._refuse(http, err)
            return None
        stream_key = asked.stream
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
            await self._refuse(http, HttpError(400, f"bad WebSocket handshake: {reason}"))
            return None
        try:
            sub, resume = await self.hub.open_subscription(
                stream_key,
                since=asked.since,
                epoch=asked.epoch,
                queue_size=self.config.queue_size,
                waker=self.flusher,
                since_pos=asked.since_pos,
            )
        except StoreError as exc:
            await self._refuse(http, unavailable(exc))
            return None
        if asked.filters.changes:  # before the first event: a resumed live query has no seam
            sub.state.filter(asked.filters)
        accept = ws.send(AcceptConnection(extensions=[]))  # no compression: frames are prebuilt
        assert ws.connection is not None
        first = greeting(
            stream_key,
            replayed=sub.replay_count,
            epoch=self.hub.epoch,
            reset=resume.reset,
            now=now_iso(),
            pos=sub.cursor,
        )
        stream = http.stream
        transport: Transport = (
            SocketTransport(stream)
            if isinstance(stream, trio.SocketStream)
            else StreamTransport(stream)
        )
        conn = WebSocketConnection(
            transport,
            ws.connection,
            sub,
            self.metrics,
            ping_interval=self.config.ping_interval,
            stall_timeout=self.config.stall_timeout,
            close_grace=self.config.close_grace,
        )
        # wsproto's server does not keep what followed the head: hand it over ourselves.
        return conn, accept + first, request.raw[request.head_size :]

    async def _refuse(self, http: HttpConnection, err: HttpError) -> None:
        self.metrics.refused[err.status] += 1
        log.info("refused a WebSocket handshake with %d: %s", err.status, err)
        await http.send_error(err)

    async def _serve_websocket(
        self, conn: WebSocketConnection, first: bytes, received: bytes
    ) -> None:
        self.connections.add(conn)
        self.flusher.attach(conn)
        if self._idle.is_set():
            self._idle = trio.Event()
        try:
            await conn.run(first, received)
        finally:
            self.flusher.detach(conn)
            self.connections.discard(conn)
            if not self.connections:
                self._idle.set()

    # ------------------------------------------------------------------ shutdown

    async def close_all(self) -> None:
        """Give requests being read until the shutdown timeout; close every WebSocket with
        1001 and wait (bounded) for them to finish."""
        deadline = trio.current_time() + self.config.shutdown_timeout
        for http in self.requests:
            http.hurry(deadline)
        for conn in list(self.connections):
            conn.shutdown(GOING_AWAY, SHUTTING_DOWN, patience=self.config.close_grace)
        with trio.move_on_after(self.config.shutdown_timeout):
            await self._idle.wait()


ROUTES: Final[RouteTable[_Server]] = RouteTable(
    [
        Route("/", ("GET",), _Server.static_file),
        Route("/static/{}", ("GET",), _Server.static_file),
        Route("/ws", ("GET",), _Server.upgrade_required),
        Route("/api/health", ("GET",), _Server.health),
        Route("/api/events", ("POST",), _Server.ingest, auth="header"),
        Route("/v1/traces", ("POST",), receive_traces, auth="header"),
        Route("/v1/logs", ("POST",), receive_logs, auth="header"),
        Route("/api/executions", ("GET",), _Server.executions, auth="header-or-query"),
        Route("/api/search", ("GET",), _Server.search, auth="header-or-query"),
        Route(
            "/api/executions/{}/events",
            ("GET",),
            _Server.execution_events,
            auth="header-or-query",
        ),
        Route(
            "/api/executions/{}/tree",
            ("GET",),
            _Server.execution_tree,
            auth="header-or-query",
        ),
        Route("/api/running", ("GET",), _Server.running, auth="header-or-query"),
        Route("/metrics", ("GET",), _Server.metrics_text),
    ]
)
"""Every HTTP route of the server (SPEC §5): one line each."""


GC_THRESHOLDS: Final = (5_000, 200, 100)
"""The cyclic GC's thresholds while a server runs (``ServerConfig.tune_gc``): the young
generation collected every 5,000 allocations, the middle one every 200 of those (1,000,000
allocations, as often as 50,000 / 20 did). A young collection walks what is still alive;
5,000 of them are still in the caches, 50,000 were not: a collection of a grown heap took
50-125 ms (the live span starts' max) and more CPU per event than ten of 5,000 (measured:
benchmarks/README.md, "The GC's thresholds")."""
_gc_users: list[tuple[int, int, int]] = []


@contextlib.contextmanager
def tuned_gc(enabled: bool) -> Iterator[None]:
    """:data:`GC_THRESHOLDS` and a frozen heap for the time of the block (nests)."""
    if not enabled:
        yield
        return
    _gc_users.append(gc.get_threshold())
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()  # objects of the start (modules, the store, routes) are never scanned
    try:
        yield
    finally:
        previous = _gc_users.pop()
        if not _gc_users:
            gc.unfreeze()
            gc.set_threshold(*previous)


async def open_listeners(config: ServerConfig) -> list[trio.SocketListener]:
    """The listening sockets of ``config`` (an ``OSError`` if the port is taken)."""
    return await trio.open_tcp_listeners(config.port, host=config.host)


async def serve(
    obs: Observability,
    config: ServerConfig | None = None,
    *,
    listeners: Sequence[trio.SocketListener] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP and WebSocket clients of ``obs`` until cancelled; reports the bound port.

    ``listeners`` (from :func:`open_listeners`) are used if given, so that a command can
    bind its port before it opens a store. On cancellation it stops accepting, closes
    every WebSocket with 1001 and returns within ``config.shutdown_timeout`` seconds or so.
    """
    config = config or ServerConfig()
    server = _Server(obs, config)
    listeners = list(listeners) if listeners is not None else await open_listeners(config)
    port: int = listeners[0].socket.getsockname()[1]
    try:
        with tuned_gc(config.tune_gc):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.flusher.run)
                nursery.start_soon(serve_listeners, server.handle, listeners, server.cap)
                if server.watchdog is not None:
                    await nursery.start(server.watchdog.run)
                task_status.started(port)
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        for listener in listeners:
                            await listener.aclose()
                        await server.close_all()
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
