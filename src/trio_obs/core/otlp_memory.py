"""What the OTLP translation remembers between requests: the spans it has seen (their
kind, parent and agent, so a later child knows its agent), each trace's outermost agent
and its result, and each trace's transcript count.

Which copies of a span become events is the ledger's rule (one opening and one closing
per span, SPEC §12), across nodes and restarts. The memory only spares the ledger what
this server has already stored: an opening, a closing or a trace's ``started`` it made.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import attrs

from . import events as ev
from .otlp_values import SpanRef

MEMORY_SIZE: Final = 100_000
"""Spans (and traces) a :class:`SpanMemory` remembers (the least recently used go first)."""


@attrs.frozen
class Seen:
    """One span as far as later spans of its trace need it."""

    kind: ev.SpanKind
    parent: str | None
    """Its parent's span id (hex); None for a root."""
    agent: str | None = None
    """Its own name when it is an agent."""
    opened: bool = False
    """This server stored its opening (or, for a root, the trace's ``started``)."""
    closed: bool = False
    """This server stored its closing."""


@attrs.frozen
class Outer:
    """A trace's outermost agent so far: the earliest agent with no agent above it."""

    start: int
    name: str
    output: str | None = None
    usage: ev.Usage | None = None
    ended: bool = False


@attrs.frozen
class Translation:
    """The events one OTLP request gives, what was refused, and what to remember."""

    events: list[ev.StreamEvent]
    rejected: int
    """Spans or log records refused (OTLP's ``rejected_spans``/``rejected_log_records``)."""
    message: str
    """Why they were refused (OTLP's partial-success ``error_message``); "" if none was."""
    spans: dict[SpanRef, Seen] = attrs.field(factory=dict)
    """What :meth:`SpanMemory.learn` records once the events are stored."""
    entries: dict[str, int] = attrs.field(factory=dict)
    """The transcript entry count of each trace after these events."""
    outer: dict[str, Outer] = attrs.field(factory=dict)
    """Each trace's outermost agent after these events."""
    started: set[str] = attrs.field(factory=set)
    """The traces whose ``started`` these events carry."""


class SpanMemory:
    """Recent spans of this server's OTLP requests, per-trace counts and outermost agents.

    Bounded: beyond ``size`` spans (or traces) the least recently used are forgotten.
    A translation reads it; the server calls :meth:`learn` once the events are stored,
    so a request that could not be stored is not remembered.
    """

    def __init__(self, size: int = MEMORY_SIZE) -> None:
        self._size = size
        self._spans: OrderedDict[SpanRef, Seen] = OrderedDict()
        self._entries: OrderedDict[str, int] = OrderedDict()
        self._outer: OrderedDict[str, Outer] = OrderedDict()
        self._started: OrderedDict[str, bool] = OrderedDict()

    def seen(self, ref: SpanRef) -> Seen | None:
        """What is known of span ``ref``, if anything."""
        return self._spans.get(ref)

    def entries(self, trace_id: str) -> int:
        """The transcript entries made for trace ``trace_id`` so far."""
        return self._entries.get(trace_id, 0)

    def outer(self, trace_id: str) -> Outer | None:
        """The outermost agent of trace ``trace_id`` seen so far."""
        return self._outer.get(trace_id)

    def started(self, trace_id: str) -> bool:
        """Whether this server stored the ``started`` of trace ``trace_id``."""
        return trace_id in self._started

    def learn(self, translation: Translation) -> None:
        """The events of ``translation`` are stored: remember what they say."""
        _remember(self._spans, translation.spans, self._size)
        _remember(self._entries, translation.entries, self._size)
        _remember(self._outer, translation.outer, self._size)
        _remember(self._started, dict.fromkeys(translation.started, True), self._size)

    def __len__(self) -> int:
        return len(self._spans)


def _remember(memory: OrderedDict[Any, Any], new: Mapping[Any, Any], size: int) -> None:
    for key, value in new.items():
        memory[key] = value
        memory.move_to_end(key)
    while len(memory) > size:
        memory.popitem(last=False)
