"""Posted batches: decoded all or nothing, times made UTC, unknown fields said (SPEC §2, §5).

The wire converter's posted form checks the types and every time: an ISO-8601 date and
time, stored in the one form the server writes (:mod:`~trio_obs.core.times`). A field
the wire format does not know is never a refusal (producers of other versions send
fields we do not know) but is said back, as a warning.

Which keys each record knows is read from the attrs classes of
:mod:`~trio_obs.core.events`, so a new event type or field is known at once.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from typing import Any, Final

import attrs

from . import events as ev
from .errors import InvalidInput
from .protocol import INVALID_EVENT, MAX_WARNINGS
from .wire import POSTED_STRUCTURE, camel, decode_event, event_name, loads_json

# --------------------------------------------------------------------------- shapes


@attrs.frozen
class _Shape:
    """What one wire class knows: its keys and its nested records."""

    keys: frozenset[str]
    records: tuple[tuple[str, str, _Shape], ...]
    """(wire key, attribute, shape) of each nested record (``entry``, ``assertion``)."""
    lower: Mapping[str, str]
    """Known keys by their lower-case form (to name a near miss such as ``taskID``)."""


def _record_class(kind: Any) -> type | None:
    options = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
    found = [t for t in options if isinstance(t, type) and attrs.has(t)]
    return found[0] if len(found) == 1 else None


def _shape(cls: type) -> _Shape:
    hints = typing.get_type_hints(cls)
    fields = attrs.fields(cls)
    keys = frozenset(camel(a.name) for a in fields)
    records = tuple(
        (camel(a.name), a.name, _shape(record))
        for a in fields
        if (record := _record_class(hints[a.name])) is not None
    )
    return _Shape(keys, records, {k.lower(): k for k in keys})


_SHAPES: Final[dict[type, _Shape]] = {cls: _shape(cls) for cls in ev.STREAM_EVENT_TYPES.values()}
_SHAPES_BY_TYPE: Final[dict[str, _Shape]] = {
    kind: _SHAPES[cls] for kind, cls in ev.STREAM_EVENT_TYPES.items()
}


# --------------------------------------------------------------------------- unknown fields


@attrs.frozen
class UnknownField:
    """A field of a posted event that the wire format does not know: ignored, and said so."""

    index: int | None
    """The event's index in the posted array (None: the body was one event)."""
    event_type: str
    field: str
    """Its wire path: ``taskID``, or ``entry.taskID`` inside a record."""
    known: str | None = None
    """The known field it is probably meant to be (a case or spelling slip)."""

    def sentence(self) -> str:
        """What the ``202`` answer's ``warnings`` say of it."""
        hint = f"; did you mean {self.known!r}?" if self.known else ""
        where = event_name(self.index)
        return f"{where} ({self.event_type}): unknown field {self.field!r} ignored{hint}"


def _near(key: str, shape: _Shape) -> str | None:
    found = shape.lower.get(key.lower()) or shape.lower.get(camel(key).lower())
    if found is None:
        close = difflib.get_close_matches(key, shape.keys, n=1, cutoff=0.8)
        found = close[0] if close else None
    return found


@attrs.define
class Batch:
    """A decoded batch: its events, and what the producer should hear about them."""

    events: list[ev.StreamEvent] = attrs.field(factory=list)
    unknown: list[UnknownField] = attrs.field(factory=list)
    """Unknown fields, the first :data:`~trio_obs.core.protocol.MAX_WARNINGS` of them."""
    more_unknown: int = 0
    """Unknown fields beyond those."""

    def warnings(self) -> list[str]:
        """One sentence per unknown field (and one that counts those left out)."""
        said = [u.sentence() for u in self.unknown]
        if self.more_unknown:
            said.append(f"and {self.more_unknown} more unknown field(s), not listed")
        return said

    def note_unknown(
        self, index: int | None, event: ev.StreamEvent, prefix: str, keys: Any, shape: _Shape
    ) -> None:
        """Note the ``keys`` of a record of ``event`` that ``shape`` does not know."""
        for key in keys:
            if key in shape.keys:
                continue
            if len(self.unknown) < MAX_WARNINGS:
                near = _near(key, shape)
                self.unknown.append(
                    UnknownField(index, event.type, prefix + key, prefix + near if near else None)
                )
            else:
                self.more_unknown += 1


# --------------------------------------------------------------------------- batches


def _posted(obj: Any, index: int | None, batch: Batch) -> ev.StreamEvent:
    # What the server computes is never taken from a producer (SPEC §5).
    if isinstance(obj, dict) and "requiresAction" in obj:
        obj = {k: v for k, v in obj.items() if k != "requiresAction"}
    event = decode_event(obj, index=index, posted=True)
    _note_unknown(obj, index, event, _SHAPES[type(event)], batch)
    return event


def _note_unknown(
    obj: dict[str, Any], index: int | None, event: ev.StreamEvent, shape: _Shape, batch: Batch
) -> None:
    """Note in ``batch`` the fields of ``obj`` (and of its records) its type does not know."""
    if not shape.keys.issuperset(obj):
        batch.note_unknown(index, event, "", obj, shape)
    for key, name, inner in shape.records:
        raw = obj[key] if getattr(event, name) is not None else {}
        if not inner.keys.issuperset(raw):
            batch.note_unknown(index, event, f"{key}.", raw, inner)


def _posted_all(data: list[Any], batch: Batch) -> list[ev.StreamEvent]:
    """:func:`_posted` for each item of a posted array, the common event inline (issue 25):
    an object of a known type, without ``requiresAction`` or a null ``timestamp``, that the
    plain structuring takes. Anything else goes through :func:`_posted`, which decides."""
    structure_of, shapes = POSTED_STRUCTURE, _SHAPES_BY_TYPE
    events: list[ev.StreamEvent] = []
    append = events.append
    for index, obj in enumerate(data):
        kind = obj.get("type") if obj.__class__ is dict else None
        if not isinstance(kind, str) or (structure := structure_of.get(kind)) is None:
            append(_posted(obj, index, batch))
            continue
        if "requiresAction" in obj or obj.get("timestamp", "") is None:
            append(_posted(obj, index, batch))
            continue
        try:
            event = structure(obj)
        except Exception:  # the converter takes it, or says what is wrong
            append(_posted(obj, index, batch))
            continue
        if event.seq is not None or event.pos is not None:  # not the producer's to choose
            object.__setattr__(event, "seq", None)
            object.__setattr__(event, "pos", None)
        _note_unknown(obj, index, event, shapes[kind], batch)
        append(event)
    return events


def decode_batch(body: bytes | str) -> Batch:
    """The stream events of a posted body (one event or an array), checked and made UTC.

    All or nothing: the first invalid event raises :class:`~trio_obs.InvalidInput`
    (``INVALID_EVENT``), naming its index and field.
    """
    data = loads_json(body, "the body", INVALID_EVENT)
    batch = Batch()
    if isinstance(data, list):
        if not data:
            raise InvalidInput("the body is an empty array; send at least one event", INVALID_EVENT)
        batch.events = _posted_all(data, batch)
    else:
        batch.events = [_posted(data, None, batch)]
    return batch


def decode_events(body: bytes | str) -> list[ev.StreamEvent]:
    """The stream events of a posted body, as :func:`decode_batch` checks them."""
    return decode_batch(body).events
