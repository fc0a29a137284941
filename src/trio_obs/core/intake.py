"""Posted batches: decoded, their times made UTC, their unknown fields reported (SPEC §2, §5).

Beyond the types the wire converter checks, a posted event must say when it happened
in ISO-8601, and every time is stored in the one form the server writes
(``YYYY-MM-DDTHH:MM:SS.mmmZ``, UTC; :func:`~trio_obs.core.events.iso_utc`), so times
sort as strings. A field the wire format does not know is never a refusal (producers
of other versions send fields we do not know) but is said back, as a warning.

Which fields are times and which keys each record knows are read from the attrs
classes of :mod:`~trio_obs.core.events`, so a new event type or field is known at once.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from . import events as ev
from .errors import InvalidInput
from .protocol import INVALID_EVENT, MAX_WARNINGS
from .wire import camel, decode_event, loads_json

TIME_FIELDS: Final = frozenset({"timestamp", "created_at"})
"""Attributes that hold a time, wherever they stand (an event or one of its records)."""
_EXAMPLE: Final = "2026-01-31T12:00:00.000Z"


# --------------------------------------------------------------------------- times


def _canonical(text: str) -> bool:
    """Whether a valid ISO-8601 ``text`` is already in the stored form (no parse needed)."""
    return (
        len(text) == 24
        and text[23] == "Z"
        and text[19] == "."
        and text[10] == "T"
        and text[4] == "-"
        and text[7] == "-"
        and text[13] == ":"
        and text[16] == ":"
        and text[11:13] != "24"  # should a Python read 24:00 as the next day's midnight
    )


def utc_time(text: str) -> str | None:
    """``text`` as the stored form of a time, or None if it is no ISO-8601 date and time.

    An offset is applied (``-08:00``, ``+02:00``); a time without one is taken as UTC;
    a fraction is cut to milliseconds. A date without a time is refused.
    """
    try:
        moment = datetime.fromisoformat(text)  # also checks every range (no 13th month)
    except ValueError:
        return None
    if _canonical(text):  # the form every producer of ours sends: nothing to build
        return text
    if len(text) <= 10:  # 2026-01-31, 20260131, 2026-W05-6: a day, not a time
        return None
    try:
        utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first UTC year
        return None
    return ev.iso_utc(utc)


# --------------------------------------------------------------------------- shapes


@attrs.frozen
class _Shape:
    """What one wire class knows: its keys, its time attributes, its nested records."""

    keys: frozenset[str]
    times: tuple[str, ...]
    records: tuple[tuple[str, str, _Shape], ...]
    """(wire key, attribute, shape) of each nested record (``entry``, ``assertion``)."""
    lower: Mapping[str, str]
    """Known keys by their lower-case form and by the camelCase of a snake_case key."""


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
    times = tuple(a.name for a in fields if a.name in TIME_FIELDS)
    return _Shape(keys, times, records, {k.lower(): k for k in keys})


_SHAPES: Final[dict[type, _Shape]] = {cls: _shape(cls) for cls in ev.STREAM_EVENT_TYPES.values()}


# --------------------------------------------------------------------------- unknown fields


@attrs.frozen
class UnknownField:
    """A field of a posted event that the wire format does not know: ignored, and said so."""

    where: str
    """``event 3`` (its index in the posted array), or ``event`` for a single one."""
    event_type: str
    field: str
    """Its wire path: ``taskID``, or ``entry.taskID`` inside a record."""
    known: str | None = None
    """The known field it is probably meant to be (a case or spelling slip)."""

    def sentence(self) -> str:
        """What the ``202`` answer's ``warnings`` say of it."""
        hint = f"; did you mean {self.known!r}?" if self.known else ""
        return f"{self.where} ({self.event_type}): unknown field {self.field!r} ignored{hint}"


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
        self, where: str, event: ev.StreamEvent, prefix: str, keys: Any, shape: _Shape
    ) -> None:
        """Note the ``keys`` of a record of ``event`` that ``shape`` does not know."""
        for key in keys:
            if key in shape.keys:
                continue
            if len(self.unknown) < MAX_WARNINGS:
                near = _near(key, shape)
                self.unknown.append(
                    UnknownField(where, event.type, prefix + key, prefix + near if near else None)
                )
            else:
                self.more_unknown += 1


# --------------------------------------------------------------------------- batches


def _refuse_time(where: str, event: ev.StreamEvent, path: str, value: str) -> InvalidInput:
    shown = repr(value) if len(value) <= 40 else f"{value[:32]!r}… ({len(value)} characters)"
    return InvalidInput(
        f"{where} ({event.type}): {path} {shown} is not an ISO-8601 date and time "
        f"(e.g. {_EXAMPLE})",
        INVALID_EVENT,
    )


def _times(
    where: str, event: ev.StreamEvent, record: object, prefix: str, names: tuple[str, ...]
) -> None:
    """Check the time attributes ``names`` of ``record`` and store them in UTC."""
    for name in names:
        value: str = getattr(record, name)
        if record is event and not value:
            continue  # an event without a time is stamped when it is stored
        utc = utc_time(value)
        if utc is None:
            raise _refuse_time(where, event, prefix + camel(name), value)
        if utc is not value:
            object.__setattr__(record, name, utc)  # decoded just now: nobody else holds it


def _posted(obj: Any, where: str, batch: Batch) -> ev.StreamEvent:
    # What the server computes is never taken from a producer (SPEC §5).
    if isinstance(obj, dict) and "requiresAction" in obj:
        obj = {k: v for k, v in obj.items() if k != "requiresAction"}
    event = decode_event(obj, where=where)
    shape = _SHAPES[type(event)]
    if not shape.keys.issuperset(obj):
        batch.note_unknown(where, event, "", obj, shape)
    _times(where, event, event, "", shape.times)
    for key, name, inner in shape.records:
        record = getattr(event, name)
        if record is None:
            continue
        raw = obj[key]
        if not inner.keys.issuperset(raw):
            batch.note_unknown(where, event, f"{key}.", raw, inner)
        _times(where, event, record, f"{key}.", inner.times)
    return event


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
        batch.events = [_posted(item, f"event {i}", batch) for i, item in enumerate(data)]
    else:
        batch.events = [_posted(data, "event", batch)]
    return batch


def decode_events(body: bytes | str) -> list[ev.StreamEvent]:
    """The stream events of a posted body, as :func:`decode_batch` checks them."""
    return decode_batch(body).events
