"""The project's exceptions: one small hierarchy rooted in :class:`TrioObsError`."""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

ErrorCode: TypeAlias = Literal[
    "INVALID_MESSAGE", "INVALID_TOPIC", "INVALID_FILTER", "INVALID_EVENT"
]

INVALID_MESSAGE: Final = "INVALID_MESSAGE"
INVALID_TOPIC: Final = "INVALID_TOPIC"
INVALID_FILTER: Final = "INVALID_FILTER"
INVALID_EVENT: Final = "INVALID_EVENT"


class TrioObsError(Exception):
    """Base class of every error trio-obs raises on purpose."""


class InvalidInput(TrioObsError):
    """Foreign input (a client message or a posted event) that cannot be accepted.

    ``code`` is the machine-readable code of SPEC §3/§5; ``str(err)`` is a sentence
    saying what was wrong.
    """

    def __init__(self, message: str, code: ErrorCode = "INVALID_MESSAGE") -> None:
        super().__init__(message)
        self.code: ErrorCode = code


class StoreError(TrioObsError):
    """The store could not persist or read events (disk full, closed store, ...)."""


class SubscriptionEnded(TrioObsError):
    """A subscription was ended by the broker; ``reason`` says why (e.g. ``slow consumer``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"subscription ended: {reason}")
        self.reason = reason


SLOW_CONSUMER: Final = "slow consumer"
