"""The one form of a stored time, and the ISO-8601 times producers send turned into it.

Every time the server stores is ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC (what
:func:`~trio_obs.core.events.iso_utc` makes): fixed width, so times sort as strings.
A posted time may be any ISO-8601 date and time; :func:`utc_time` brings it to that form.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from .events import iso_utc

TIME_FIELDS: Final = frozenset({"timestamp", "created_at"})
"""Attributes that hold a time, wherever they stand (an event or one of its records)."""
EXAMPLE: Final = "2026-01-31T12:00:00.000Z"
"""A time in the stored form, for messages."""

_parse: Final = datetime.fromisoformat  # also checks every range: no 13th month, no 25th hour


def utc_time(text: str) -> str | None:
    """``text`` as the stored form of a time, or None if it is no ISO-8601 date and time.

    An offset is applied (``-08:00``, ``+02:00``); a time without one is taken as UTC;
    a fraction is cut to milliseconds. A date without a time is refused.
    """
    try:
        moment = _parse(text)
    except ValueError:
        return None
    # Already the stored form (what every producer of ours sends)? Valid, 24 characters,
    # "T" at 10, "." at 19 and "Z" last can only be YYYY-MM-DDTHH:MM:SS.mmmZ, or the week
    # date YYYY-Www-D; an hour of 24 (which a Python may read as the next midnight) is not.
    if (
        len(text) == 24
        and text[23] == "Z"
        and text[19] == "."
        and text[10] == "T"
        and text[5] != "W"
        and text[11:13] != "24"
    ):
        return text
    if len(text) <= 10:  # 2026-01-31, 20260131, 2026-W05-6: a day, not a time
        return None
    try:
        utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first UTC year
        return None
    return iso_utc(utc)
