"""trio-obs: real-time observability streaming for agent runners, on trio.

The public names, all documented here and importable from ``trio_obs``:

- Open and record: :func:`open_observability` (SQLite) or
  :func:`open_redis_observability` (one node of several) gives an :class:`Observability`:
  its services (``obs.tools``, ``obs.transcripts``, ...: a :class:`Services`) store
  each record and emit its event; ``obs.broker`` is the :class:`EmittingHub`, the SQLite
  hub with the plan's ``emit_*`` methods and ``subscribe``; ``obs.hub`` is the
  :class:`Hub` it runs on. :func:`serve` with a :class:`ServerConfig` serves WebSocket
  and HTTP clients from the same nursery.
- From another process: :func:`post_events` and :class:`HttpPublisher` post to a server
  (``Services.over(HttpPublisher(url))`` builds events as in process);
  :func:`open_stream` gives an :class:`EventStream` that follows one (``ALL``, ``GLOBAL``
  or an execution id), across reconnects; :func:`search` searches its stored events
  (SPEC §14) and gives a :class:`SearchResult` (hits newest first; the query language and
  the hit's fields are in :mod:`trio_obs.core.search`).
- Records and events: :data:`StreamEvent` (what subscribers receive: the event classes
  are in :mod:`trio_obs.core.events`, the spans of agents and model calls among them as
  ``SpanStartEvent`` and ``SpanEndEvent``, the watchdog's judgements as ``WatchAlertEvent``
  and ``WatchClearEvent``), and the records a service or ``emit_*`` takes:
  :class:`TranscriptEntry`, :class:`AssertionResult`, :class:`MessageBusLogEntry`.
- Errors: :class:`TrioObsError` and below it :class:`InvalidInput`, :class:`StoreError`
  (and its :class:`UncertainOutcome`: on Redis, a batch some of which is or may be
  stored), :class:`SubscriptionEnded`, :class:`PostRejected`, :class:`StreamClosed`,
  :class:`StreamRefused`, :class:`SearchRefused`.

Everything else lives in its module: the layout is in the README's "Development"
section (``core`` holds every rule, socket- and clock-free; ``hub`` orders, stores and
fans out; ``producers`` builds events; ``server`` and ``client`` are thin drivers).
Agents instrumented with OpenTelemetry export to the server's ``/v1/traces``;
``trio_obs.otel.LiveSpanProcessor`` (the ``otel`` extra, not imported here) makes their
span starts visible at once.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Final

from ._version import __version__
from .client.common import PostRejected, SearchRefused, StreamClosed, StreamRefused
from .client.post import HttpPublisher, post_events
from .client.search import search
from .client.stream import EventStream, open_stream
from .core.errors import (
    InvalidInput,
    StoreError,
    SubscriptionEnded,
    TrioObsError,
    UncertainOutcome,
)
from .core.events import AssertionResult, MessageBusLogEntry, StreamEvent, TranscriptEntry
from .core.protocol import ALL, GLOBAL
from .core.search import SearchResult
from .hub.base import Hub
from .producers import (
    EmittingHub,
    Observability,
    Services,
    open_observability,
    open_redis_observability,
)
from .server.app import ServerConfig, serve

__all__ = [
    "ALL",
    "GLOBAL",
    "AssertionResult",
    "EmittingHub",
    "EventStream",
    "HttpPublisher",
    "Hub",
    "InvalidInput",
    "MessageBusLogEntry",
    "Observability",
    "PostRejected",
    "SearchRefused",
    "SearchResult",
    "ServerConfig",
    "Services",
    "StoreError",
    "StreamClosed",
    "StreamEvent",
    "StreamRefused",
    "SubscriptionEnded",
    "TranscriptEntry",
    "TrioObsError",
    "UncertainOutcome",
    "__version__",
    "open_observability",
    "open_redis_observability",
    "open_stream",
    "post_events",
    "search",
    "serve",
]

_MOVED: Final[dict[str, str]] = {
    name: module
    for module, names in {
        "trio_obs.core.events": """AgentHeartbeatEvent AssertionResultEvent ClientMessage
            ConnectedEvent ErrorEvent ExecutionStatusEvent ExecutionSummary Filters
            MessageBusEvent Ping PongEvent ResetEvent ServerEvent SkillEndEvent SkillStartEvent
            Subscribe SubscribedEvent ToolEndEvent ToolOutputEvent ToolStartEvent
            TranscriptEntryEvent Unsubscribe UnsubscribedEvent WaveStatusEvent""",
        "trio_obs.core.routing": "Envelope",
        "trio_obs.core.intake": "decode_events",
        "trio_obs.core.wire": "decode_server_event decode_stream_event encode",
        "trio_obs.hub.base": "Subscription",
        "trio_obs.hub.dispatch": "LiveSubscription",
        "trio_obs.hub.local": "LocalHub",
        "trio_obs.hub.sqlite": "Store open_store",
        "trio_obs.producers.services": """AssertionService ExecutionService MessageBusService
            SkillService ToolUseService TranscriptService""",
        "trio_obs.producers.emitting": "Broker",
    }.items()
    for name in names.split()
}
"""Names this package exported before its public surface was made small: still found,
with a warning that says where they live."""


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'trio_obs' has no attribute {name!r}")
    warnings.warn(
        f"trio_obs.{name} is not a public name any more: import it from {module}",
        DeprecationWarning,
        stacklevel=2,
    )
    found = globals()[name] = getattr(importlib.import_module(module), name)  # warned once
    return found
