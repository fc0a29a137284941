"""The project's exceptions: one small hierarchy rooted in :class:`TrioObsError`."""

from __future__ import annotations

from collections.abc import Sequence

from .protocol import INVALID_MESSAGE, OUTCOME_UNKNOWN, ErrorCode


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
    """The store could not persist or read events (disk full, closed store, Redis down...).

    Raised by a publish, it means nothing of the batch was stored, unless it is an
    :class:`UncertainOutcome`.
    """


class UncertainOutcome(StoreError):
    """A batch not known to be stored whole: some of it is, or may be (Redis only).

    ``seqs[i]`` is the seq of the batch's event ``i`` if it is known stored, else None;
    ``unknown`` lists the events whose outcome is not known (they may be stored). ``code``
    says which case: ``OUTCOME_UNKNOWN`` (no answer in time), ``NOT_REPLICATED`` (stored on
    the primary, not confirmed by the replicas asked for) or ``PARTIALLY_STORED`` (a shard
    of a Redis Cluster failed). A retry with the same ``Idempotency-Key`` completes the
    batch and stores nothing twice.
    """

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode = OUTCOME_UNKNOWN,
        seqs: Sequence[int | None] = (),
        unknown: Sequence[int] = (),
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.seqs = list(seqs)
        self.unknown = list(unknown)


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
