"""What the OTLP translation remembers between requests: the spans it turned into events
(so a copy that arrives again adds nothing) and each trace's transcript count.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import attrs

from . import events as ev
from .otlp_values import SpanRef

MEMORY_SIZE: Final = 100_000
"""Spans a :class:`SpanMemory` remembers (the oldest are forgotten first)."""


@attrs.frozen
class Seen:
    """What was turned into events for one span, and what later copies of it need."""

    started: bool = False
    ended: bool = False
    agent: str | None = None
    """The agent's name when the span is an ``invoke_agent`` span."""
    tool_use_id: str | None = None
    """The tool use id its ``tool:start`` carried (a later copy may name it differently)."""


_NOT_SEEN: Final = Seen()


@attrs.frozen
class Translation:
    """The events one OTLP request gives, what was refused, and what to remember."""

    events: list[ev.StreamEvent]
    rejected: int
    """Spans or log records refused (OTLP's ``rejected_spans``/``rejected_log_records``)."""
    message: str
    """Why they were refused (OTLP's partial-success ``error_message``); "" if none was."""
    spans: dict[SpanRef, Seen]
    """What :meth:`SpanMemory.learn` records once the events are stored."""
    entries: dict[str, int]
    """The transcript entry count of each trace after these events."""


class SpanMemory:
    """Recent spans this server turned into events, and transcript counts per trace.

    Bounded: beyond ``size`` spans (or traces) the least recently used are forgotten.
    A translation reads it; the server calls :meth:`learn` once the events are stored,
    so a request that could not be stored is not remembered and its retry gives them.
    """

    def __init__(self, size: int = MEMORY_SIZE) -> None:
        self._size = size
        self._spans: OrderedDict[SpanRef, Seen] = OrderedDict()
        self._entries: OrderedDict[str, int] = OrderedDict()

    def seen(self, ref: SpanRef) -> Seen:
        """What was turned into events for span ``ref`` (nothing, if it is not known)."""
        return self._spans.get(ref, _NOT_SEEN)

    def entries(self, trace_id: str) -> int:
        """The transcript entries made for trace ``trace_id`` so far."""
        return self._entries.get(trace_id, 0)

    def learn(self, translation: Translation) -> None:
        """The events of ``translation`` are stored: remember what they say."""
        _remember(self._spans, translation.spans, self._size)
        _remember(self._entries, translation.entries, self._size)

    def __len__(self) -> int:
        return len(self._spans)


def _remember(memory: OrderedDict[Any, Any], new: Mapping[Any, Any], size: int) -> None:
    for key, value in new.items():
        memory[key] = value
        memory.move_to_end(key)
    while len(memory) > size:
        memory.popitem(last=False)
