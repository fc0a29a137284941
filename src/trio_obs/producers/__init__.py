"""Producers: the one event builder (the plan's services; the hub's emits delegate to it).

:func:`open_observability` opens a store, a hub and every service;
:func:`open_redis_observability` the same as one node of several on Redis.
"""

from .emitting import Broker, EmittingHub
from .observability import Observability, open_observability, open_redis_observability
from .services import (
    AssertionService,
    ExecutionService,
    MessageBusService,
    Publisher,
    Services,
    SkillService,
    SpanService,
    ToolUseService,
    TranscriptService,
    new_id,
)

__all__ = [
    "AssertionService",
    "Broker",
    "EmittingHub",
    "ExecutionService",
    "MessageBusService",
    "Observability",
    "Publisher",
    "Services",
    "SkillService",
    "SpanService",
    "ToolUseService",
    "TranscriptService",
    "new_id",
    "open_observability",
    "open_redis_observability",
]
