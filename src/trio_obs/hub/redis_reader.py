"""The fan-out reader: one task per node reads the shared fan-out stream and dispatches it.

It reads ``XREAD BLOCK`` from its cursor (the position of the last entry it read), so
it loses nothing across a Redis outage, and it notices what it could not read:

- a gap in positions: entries were trimmed past the cursor (the node fell too far
  behind); logged once, and the subscribers behind read the execution streams;
- a changed epoch: Redis lost its data; the history starts over (the dispatcher ends
  every subscription, whose clients resume and are told; SPEC §10);
- a history that went back (Redis restarted from a persistence file older than what
  this node read): a new epoch is made, since the old seqs no longer hold.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, cast

import trio
from coredis import Redis
from coredis.exceptions import RedisError
from coredis.response.types import StreamEntry

from ..core.errors import StoreError
from ..core.routing import Envelope
from .dispatch import Dispatcher
from .redis_codec import envelope_of

log = logging.getLogger("trio_obs.hub")

READ_COUNT: Final = 1000
"""Fan-out entries read at most per ``XREAD``."""
RESTARTED: Final = "the event history changed (Redis lost its data); reconnect to start over"

Failure: Final = (RedisError, OSError, trio.TooSlowError)
"""What a Redis call raises when Redis cannot answer (TimeoutError is an OSError)."""
_UNAVAILABLE: Final = (StoreError, *Failure)
"""What the reader's calls raise then (the hub's own calls say it with StoreError)."""


def new_epoch() -> str:
    """A fresh epoch id."""
    return secrets.token_hex(8)


class Epoch:
    """The epoch this node serves; adopting another one restarts the dispatcher."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.value = ""
        self.generation = 0
        """Bumped by every change, so a reader can tell its cursor belongs to the old history."""
        self.candidate = new_epoch()
        """Offered to Redis whenever it has none (it keeps the first one it gets)."""

    def adopt(self, epoch: str) -> None:
        """Redis says the epoch is ``epoch``: if it changed, start over."""
        if epoch == self.value:
            return
        old, self.value = self.value, epoch
        self.generation += 1
        self.candidate = new_epoch()
        if old:
            log.warning("Redis's history changed (epoch %s -> %s): clients start over", old, epoch)
            self.dispatcher.restart(RESTARTED)


State = Callable[[], Awaitable[tuple[str, int]]]
"""Reads Redis's (epoch, fan-out position)."""
Heads = Callable[[list[str]], Awaitable[dict[str, int]]]
"""Reads the last seq of stream keys."""
Bump = Callable[[str], Awaitable[str]]
"""Replaces an epoch Redis no longer holds the history of; returns the epoch now."""


def entry_position(entry: StreamEntry) -> int:
    """The first part of an entry's ID: a seq (execution streams) or a position (fan-out)."""
    identifier = entry.identifier
    text = identifier.decode() if isinstance(identifier, bytes) else identifier
    return int(text.partition("-")[0])


def entry_fields(entry: StreamEntry) -> Mapping[bytes, bytes]:
    """An entry's fields (the clients decode nothing: keys and values are bytes)."""
    return cast(Mapping[bytes, bytes], entry.field_values)


def _identity(fields: Mapping[bytes, bytes]) -> tuple[bytes, bytes]:
    """What tells one fan-out entry from another at the same position (another history)."""
    return fields[b"k"], fields.get(b"s", b"")


class FanoutReader:
    """Reads the fan-out stream from a cursor and dispatches what it reads, in order."""

    def __init__(
        self,
        client: Redis[bytes],
        fan: str,
        dispatcher: Dispatcher,
        epoch: Epoch,
        *,
        state: State,
        heads: Heads,
        bump: Bump,
        block: float = 1.0,
    ) -> None:
        self.client = client
        self.fan = fan
        self.dispatcher = dispatcher
        self.epoch = epoch
        self._state, self._heads, self._bump = state, heads, bump
        self.block = block
        self.cursor = 0
        """The position of the last fan-out entry read."""
        self._last: tuple[bytes, bytes] | None = None
        self._generation = -1
        self.trimmed = 0
        """Entries this node could not read because they were trimmed (for tests, metrics)."""
        self.outages = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and dispatch until cancelled; reports readiness once it holds a cursor."""
        wait = 0.05
        while True:
            try:
                epoch, pos = await self._state()
                break
            except _UNAVAILABLE:
                await trio.sleep(wait)
                wait = min(wait * 2, 1.0)
        self.epoch.adopt(epoch)
        self._generation, self.cursor = self.epoch.generation, pos
        task_status.started()
        down_since: float | None = None
        while True:
            try:
                if down_since is not None:
                    await self._check()
                entries = await self._read()
                if entries is None:
                    await self._check()
            except _UNAVAILABLE as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    self.outages += 1
                    log.warning(
                        "Redis is unavailable (%s); the fan-out reader retries from position %d",
                        exc or type(exc).__name__,
                        self.cursor,
                    )
                await trio.sleep(wait)
                wait = min(wait * 2, 1.0)
                continue
            if down_since is not None:
                log.info(
                    "Redis is back after %.1f s; reading on from position %d",
                    time.monotonic() - down_since,
                    self.cursor,
                )
                down_since, wait = None, 0.05
            if entries:
                await self._deliver(entries)

    def _sync(self) -> bool:
        """Start over from the new history's beginning if the epoch changed; True if it did."""
        if self._generation == self.epoch.generation:
            return False
        self._generation = self.epoch.generation
        self.cursor, self._last = 0, None
        return True

    async def _read(self) -> list[StreamEntry] | None:
        """The next entries after the cursor ([] if they belong to a history now gone)."""
        self._sync()
        generation = self.epoch.generation
        reply = await self.client.xread(
            {self.fan: f"{self.cursor}-0"}, count=READ_COUNT, block=int(self.block * 1000)
        )
        if generation != self.epoch.generation:
            return []  # read under the old epoch: read again from the new one's start
        if not reply:
            return None
        return list(next(iter(reply.values())))

    async def _check(self) -> None:
        """Compare Redis's epoch and position with ours (when idle, and after an outage).

        A connection lost in the middle of an ``XREAD BLOCK`` may look like a read that
        timed out, so a restart of Redis is not always seen as an outage: check anyway.
        """
        epoch, pos = await self._state()
        self.epoch.adopt(epoch)
        if self._sync() or not self.cursor:
            return
        # Same epoch: does Redis still hold what we read last?
        lost = pos < self.cursor
        if not lost and self._last is not None:
            found = await self.client.xrange(
                self.fan, f"{self.cursor}-0", f"{self.cursor}-0", count=1
            )
            if found:
                lost = _identity(entry_fields(found[0])) != self._last
        if lost:
            log.warning(
                "Redis came back without events this node had read (position %d, Redis at %d):"
                " it restarted from an older persistence file; starting a new epoch",
                self.cursor,
                pos,
            )
            self.epoch.adopt(await self._bump(self.epoch.value))
            self._sync()

    async def _deliver(self, entries: list[StreamEntry]) -> None:
        """Dispatch the envelopes of ``entries`` in order; deal with gaps and deletions."""
        envelopes: list[Envelope] = []
        missed = 0
        born = time.perf_counter()
        for entry in entries:
            pos = entry_position(entry)
            if pos != self.cursor + 1:
                missed += pos - self.cursor - 1
            self.cursor = pos
            fields = entry_fields(entry)
            self._last = _identity(fields)
            key = fields[b"k"].decode()
            if b"x" in fields:  # the stream was deleted (retention): forget what we hold
                self._dispatch(envelopes)
                envelopes = []
                self.dispatcher.forget(key)
                continue
            try:
                env = envelope_of(key, int(fields[b"s"]), fields)
            except Exception:  # pragma: no cover - only a foreign writer could cause it
                log.exception("skipped a fan-out entry that cannot be read (position %d)", pos)
                continue
            env.born = born
            envelopes.append(env)
        self._dispatch(envelopes)
        if missed:
            self.trimmed += missed
            log.warning(
                "%d fan-out entries were trimmed before this node read them (it fell behind);"
                " its subscribers read them from the execution streams",
                missed,
            )
            keys = sorted({s.stream for s in self.dispatcher.subscriptions()} - {"all"})
            self.dispatcher.missed(await self._heads(keys) if keys else {})

    def _dispatch(self, envelopes: list[Envelope]) -> None:
        if envelopes:
            self.dispatcher.dispatch(envelopes, trio.current_time())
