"""The fan-out readers: per node, one task per partition reads its fan-out stream and dispatches it.

Each reads ``XREAD BLOCK`` from its cursor (the position of the last entry it read), so
it loses nothing across a Redis outage or failover, and it notices what it could not read:

- a gap in positions: entries were trimmed past the cursor (the node fell too far
  behind); logged once, and the subscribers behind read the execution streams;
- a changed epoch: Redis lost its data, or lost writes that a node had seen (a failover
  to a replica that had not received them, a restart from an older persistence file:
  the fence of :mod:`~trio_obs.hub.redis_scripts` finds it); the dispatcher ends every
  subscription, whose clients resume and are told (SPEC §10), and the reader goes on from
  where the new history stands.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, cast

import trio
from coredis.exceptions import RedisError
from coredis.response.types import StreamEntry

from ..core.errors import StoreError
from ..core.routing import Envelope
from .dispatch import Dispatcher
from .redis_codec import envelope_of

log = logging.getLogger("trio_obs.hub")

READ_COUNT: Final = 1000
"""Fan-out entries read at most per ``XREAD``."""
RESTARTED: Final = (
    "the event history changed (Redis lost some or all of it); reconnect to start over"
)

Failure: Final = (RedisError, OSError, trio.TooSlowError)
"""What a Redis call raises when Redis cannot answer (TimeoutError is an OSError)."""
_UNAVAILABLE: Final = (StoreError, *Failure)
"""What the reader's calls raise then (the hub's own calls say it with StoreError)."""


LEFT_KEPT: Final = 8
"""Epochs a node remembers having left, per partition."""


def new_token() -> str:
    """A fresh random id: an epoch, or the token of a batch."""
    return secrets.token_hex(8)


class Fence:
    """The newest fan-out entry of one partition this node knows of (read or written).

    Passed to every script, which starts a new epoch if Redis no longer holds that entry.
    """

    __slots__ = ("pos", "token")

    def __init__(self) -> None:
        self.pos = 0
        self.token = ""

    def saw(self, pos: int, token: str) -> None:
        """The entry at ``pos`` carries ``token`` (kept if it is the newest known)."""
        if pos > self.pos:
            self.pos, self.token = pos, token

    def forget(self) -> None:
        """A new history: nothing of the old one is known to hold."""
        self.pos, self.token = 0, ""


class Epoch:
    """The epochs of this node's partitions; a change in any restarts the dispatcher.

    The epoch clients see is the partition's own with one partition, else a digest of all
    of them (the same on every node).
    """

    def __init__(self, dispatcher: Dispatcher, partitions: int = 1) -> None:
        self.dispatcher = dispatcher
        self.values = [""] * partitions
        self.left: list[list[str]] = [[] for _ in range(partitions)]
        """The epochs each partition had before (the newest :data:`LEFT_KEPT`): if Redis
        names one again, it is a stale copy, and the scripts start a new epoch."""
        self.generations = [0] * partitions
        """Bumped by every change of a partition's epoch, so its reader can tell."""
        self.fences = [Fence() for _ in range(partitions)]
        self.candidate = new_token()
        """Offered to Redis whenever a partition needs a new epoch (it keeps the first)."""

    @property
    def value(self) -> str:
        """The epoch clients are given."""
        if len(self.values) == 1:
            return self.values[0]
        return hashlib.sha256("\n".join(self.values).encode()).hexdigest()[:16]

    def named(self, partition: int) -> str:
        """The scripts' argument: the partition's epoch, then those it left (commas)."""
        return ",".join([self.values[partition], *self.left[partition]])

    def adopt(self, epoch: str, partition: int = 0) -> None:
        """Redis says partition ``partition``'s epoch is ``epoch``: if it changed, start over."""
        old = self.values[partition]
        if epoch == old:
            return
        if epoch in self.left[partition]:
            # A stale copy of a history this node left: never adopted. The reader reads
            # nothing more of it; its next script (before any read) starts a new epoch.
            self.generations[partition] += 1
            return
        self.values[partition] = epoch
        if old:
            self.left[partition] = [old, *self.left[partition][: LEFT_KEPT - 1]]
        self.generations[partition] += 1
        self.fences[partition].forget()
        self.candidate = new_token()
        if old:
            log.warning("Redis's history changed (epoch %s -> %s): clients start over", old, epoch)
            self.dispatcher.restart(RESTARTED)


State = Callable[[], Awaitable[tuple[str, int]]]
"""Reads the partition's (epoch, fan-out position), checking the fence."""
Heads = Callable[[list[str]], Awaitable[dict[str, int]]]
"""Reads the last seq of stream keys."""


def entry_position(entry: StreamEntry) -> int:
    """The first part of an entry's ID: a seq (execution streams) or a position (fan-out)."""
    identifier = entry.identifier
    text = identifier.decode() if isinstance(identifier, bytes) else identifier
    return int(text.partition("-")[0])


def entry_fields(entry: StreamEntry) -> Mapping[bytes, bytes]:
    """An entry's fields (the clients decode nothing: keys and values are bytes)."""
    return cast(Mapping[bytes, bytes], entry.field_values)


class FanoutReader:
    """Reads one partition's fan-out stream from a cursor and dispatches what it reads."""

    def __init__(
        self,
        xread: Callable[[str, int, int], Awaitable[Sequence[StreamEntry]]],
        fan: str,
        dispatcher: Dispatcher,
        epoch: Epoch,
        *,
        partition: int = 0,
        state: State,
        heads: Heads,
        keys_here: Callable[[str], bool] = lambda key: True,
        place: Callable[[list[Envelope]], None] | None = None,
        block: float = 1.0,
    ) -> None:
        self._xread = xread
        self.fan = fan
        self.dispatcher = dispatcher
        self.epoch = epoch
        self.partition = partition
        self.fence = epoch.fences[partition]
        self._state, self._heads, self._here = state, heads, keys_here
        self._place = place
        """Gives the events their positions on ``all`` (where the entries have none)."""
        self.block = block
        self.cursor = 0
        """The position of the last fan-out entry read."""
        self._generation = -1
        self.trimmed = 0
        """Entries this node could not read because they were trimmed (for tests, metrics)."""
        self.outages = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and dispatch until cancelled; reports readiness once it holds a cursor."""
        wait = 0.05
        while True:
            try:
                await self._resync(tell=False)
                break
            except _UNAVAILABLE:
                await trio.sleep(wait)
                wait = min(wait * 2, 1.0)
        task_status.started()
        down_since: float | None = None
        while True:
            try:
                if down_since is not None or self._generation != self._current:
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

    @property
    def _current(self) -> int:
        return self.epoch.generations[self.partition]

    async def _resync(self, *, tell: bool = True) -> None:
        """Take Redis's epoch and read on from where its history stands now.

        What was stored meanwhile is in the execution streams: the subscribers behind it
        (all of them new, since a changed epoch ended the others) are told to read there.
        """
        epoch, pos = await self._state()
        self.epoch.adopt(epoch, self.partition)
        self._generation, self.cursor = self._current, pos
        if tell:
            await self._missed()

    async def _read(self) -> list[StreamEntry] | None:
        """The next entries after the cursor ([] if they belong to a history now gone)."""
        generation = self._current
        reply = await self._xread(self.fan, self.cursor, int(self.block * 1000))
        if generation != self._current:
            return []  # read under the old epoch: read again from the new one
        if not reply:
            return None
        return list(reply)

    async def _check(self) -> None:
        """Compare Redis's epoch and history with this node's (when idle, after an outage).

        A connection lost in the middle of an ``XREAD BLOCK`` may look like a read that
        timed out, so a restart or failover of Redis is not always seen as an outage: check
        anyway. The state script checks the fence: a history that went back is a new epoch.
        """
        if self._generation != self._current:
            await self._resync()
            return
        epoch, _ = await self._state()
        self.epoch.adopt(epoch, self.partition)
        if self._generation != self._current:
            await self._resync()

    async def _missed(self) -> None:
        keys = sorted(
            {s.stream for s in self.dispatcher.subscriptions() if self._here(s.stream)} - {"all"}
        )
        self.dispatcher.missed(await self._heads(keys) if keys else {})

    async def _deliver(self, entries: list[StreamEntry]) -> None:
        """Dispatch the envelopes of ``entries`` in order; deal with gaps, deletions, epochs."""
        envelopes: list[Envelope] = []
        missed = 0
        born = time.perf_counter()
        for entry in entries:
            pos = entry_position(entry)
            if pos != self.cursor + 1:
                missed += pos - self.cursor - 1
            self.cursor = pos
            fields = entry_fields(entry)
            token = fields.get(b"b")
            if token is not None:
                self.fence.saw(pos, token.decode())
            if b"e" in fields:  # a new epoch (a rollback was found): the clients start over
                self._dispatch(envelopes)
                envelopes = []
                named = fields[b"e"].decode()
                self.epoch.adopt(named, self.partition)
                if self.epoch.values[self.partition] != named:
                    return  # a stale copy of a history left before: read no more of it
                self.fence.saw(pos, named)
                self._generation = self._current
                continue
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
            await self._missed()

    def _dispatch(self, envelopes: list[Envelope]) -> None:
        if envelopes:
            if self._place is not None:
                self._place(envelopes)
            self.dispatcher.dispatch(envelopes, trio.current_time())
