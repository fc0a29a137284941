"""Stamping: the wire JSON of a stored event from its JSON before the store numbered it.

A shared store (Redis) assigns ``seq`` and ``runningPassRate`` atomically, after the
event was encoded on whichever node received it. It keeps the event's *unstamped*
JSON (encoded without ``seq``) and the numbers; every node then makes the wire JSON
with :func:`stamp`, byte for byte what :func:`~trio_obs.core.wire.encode` gives for the
stamped event, so every node serves the same bytes without encoding again.
"""

from __future__ import annotations

import re
from typing import Final

import attrs
import orjson

from . import events as ev
from .wire import encode

_RATE_KEY: Final = b',"runningPassRate":'
"""Where an assertion's pass rate starts. The last one is the event's own: nested
records come before it, and inside a JSON string every quote is escaped."""
_NUMBER_END: Final = re.compile(rb"[,}]")


def unstamped(event: ev.StreamEvent) -> bytes:
    """The wire JSON of ``event`` without its ``seq`` and ``pos`` (the last two fields)."""
    if event.seq is not None or event.pos is not None:
        event = attrs.evolve(event, seq=None, pos=None)
    return encode(event)


def stamp(data: bytes, seq: int, pass_rate: float | None = None, pos: int | None = None) -> bytes:
    """The wire JSON of the stored event whose unstamped JSON is ``data``.

    ``seq`` (and ``pos``, its global position, where it has one) are appended as the last
    fields; ``pass_rate`` (assertion results only) replaces the ``runningPassRate`` the
    event was encoded with.
    """
    tail = b',"seq":%d,"pos":%d}' % (seq, pos) if pos else b',"seq":%d}' % seq
    if pass_rate is None:
        return data[:-1] + tail
    start = data.rindex(_RATE_KEY) + len(_RATE_KEY)
    found = _NUMBER_END.search(data, start)  # a number holds neither
    assert found is not None, "an assertion's JSON ends with a brace"
    end = found.start()
    return data[:start] + orjson.dumps(pass_rate) + data[end:-1] + tail
