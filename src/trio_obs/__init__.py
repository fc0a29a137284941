"""trio-obs: real-time observability streaming for agent runners, on trio.

Open everything with :func:`open_observability`, record through its services, and
subscribe through its broker; serve WebSocket and HTTP clients with :func:`serve`.
:func:`open_redis_observability` opens one node of several sharing a Redis instead.
The layout (DESIGN.md §5): ``core`` holds every rule, socket- and clock-free; ``hub``
orders, stores and fans out; ``producers`` builds events; ``server`` and ``client``
are thin drivers; ``demo`` plays a simulated run. Agents instrumented with OpenTelemetry
export to the server's ``/v1/traces``; ``trio_obs.otel.LiveSpanProcessor`` (the ``otel``
extra, not imported here) makes their span starts visible at once.
"""

from ._version import __version__
from .client.common import PostRejected, StreamClosed, StreamRefused
from .client.post import HttpPublisher, post_events
from .client.stream import EventStream, open_stream
from .core.errors import (
    InvalidInput,
    StoreError,
    SubscriptionEnded,
    TrioObsError,
    UncertainOutcome,
)
from .core.events import (
    AgentHeartbeatEvent,
    AssertionResult,
    AssertionResultEvent,
    ClientMessage,
    ConnectedEvent,
    ErrorEvent,
    ExecutionStatusEvent,
    ExecutionSummary,
    Filters,
    MessageBusEvent,
    MessageBusLogEntry,
    Ping,
    PongEvent,
    ResetEvent,
    ServerEvent,
    SkillEndEvent,
    SkillStartEvent,
    StreamEvent,
    Subscribe,
    SubscribedEvent,
    ToolEndEvent,
    ToolOutputEvent,
    ToolStartEvent,
    TranscriptEntry,
    TranscriptEntryEvent,
    Unsubscribe,
    UnsubscribedEvent,
    WaveStatusEvent,
)
from .core.protocol import ALL, GLOBAL
from .core.routing import Envelope
from .core.wire import decode_events, decode_server_event, decode_stream_event, encode
from .hub.base import Hub, Subscription
from .hub.dispatch import LiveSubscription
from .hub.local import LocalHub
from .hub.sqlite import Store, open_store
from .producers import (
    AssertionService,
    Broker,
    ExecutionService,
    MessageBusService,
    Observability,
    Services,
    SkillService,
    ToolUseService,
    TranscriptService,
    open_observability,
    open_redis_observability,
)
from .server.app import ServerConfig, serve

__all__ = [
    "ALL",
    "GLOBAL",
    "AgentHeartbeatEvent",
    "AssertionResult",
    "AssertionResultEvent",
    "AssertionService",
    "Broker",
    "ClientMessage",
    "ConnectedEvent",
    "Envelope",
    "ErrorEvent",
    "EventStream",
    "ExecutionService",
    "ExecutionStatusEvent",
    "ExecutionSummary",
    "Filters",
    "HttpPublisher",
    "Hub",
    "InvalidInput",
    "LiveSubscription",
    "LocalHub",
    "MessageBusEvent",
    "MessageBusLogEntry",
    "MessageBusService",
    "Observability",
    "Ping",
    "PongEvent",
    "PostRejected",
    "ResetEvent",
    "ServerConfig",
    "ServerEvent",
    "Services",
    "SkillEndEvent",
    "SkillService",
    "SkillStartEvent",
    "Store",
    "StoreError",
    "StreamClosed",
    "StreamEvent",
    "StreamRefused",
    "Subscribe",
    "SubscribedEvent",
    "Subscription",
    "SubscriptionEnded",
    "ToolEndEvent",
    "ToolOutputEvent",
    "ToolStartEvent",
    "ToolUseService",
    "TranscriptEntry",
    "TranscriptEntryEvent",
    "TranscriptService",
    "TrioObsError",
    "UncertainOutcome",
    "Unsubscribe",
    "UnsubscribedEvent",
    "WaveStatusEvent",
    "__version__",
    "decode_events",
    "decode_server_event",
    "decode_stream_event",
    "encode",
    "open_observability",
    "open_redis_observability",
    "open_store",
    "open_stream",
    "post_events",
    "serve",
]
