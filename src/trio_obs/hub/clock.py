"""The wall clock as events carry it: ISO-8601 UTC with milliseconds (``...Z``).

The one place that reads it for timestamps (the core is clock-free and formats only).
Formatting the date and time of day is done once per second, as it changes.
"""

from __future__ import annotations

import time

_second = -1
_prefix = ""


def now_iso() -> str:
    """The current time, as events carry it."""
    global _second, _prefix
    now = time.time()
    second = int(now)
    if second != _second:
        _prefix = iso_utc_prefix(second)
        _second = second
    return f"{_prefix}.{int((now - second) * 1000):03d}Z"


def iso_utc_prefix(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a Unix second (as ``core.events.iso_utc`` starts)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


__all__ = ["now_iso"]
