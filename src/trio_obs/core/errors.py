"""The project's exceptions: one small hierarchy rooted in :class:`TrioObsError`."""

from __future__ import annotations

from .protocol import INVALID_MESSAGE, ErrorCode


class TrioObsError(Exception):
    """Base class of every error trio-obs raises on purpose."""


class InvalidInput(TrioObsError):
    """Foreign input (a client message or a posted event) that cannot be accepted.

    ``code`` is the machine-readable code of SPEC §3/§5; ``str(err)`` is a sentence
    saying what was wrong.
    """

    def __init__(self, message: str, code: ErrorCode = INVALID_MESSAGE) -> None:
        super().__init__(message)
        self.code: ErrorCode = code


class StoreError(TrioObsError):
    """The store could not persist or read events (disk full, closed store, Redis down...)."""


class SubscriptionEnded(TrioObsError):
    """A subscription was ended by the hub; ``reason`` says why (e.g. ``slow consumer``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"subscription ended: {reason}")
        self.reason = reason


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf exception of a (possibly nested) exception group: the one to tell."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
