"""A node's own search index, for hubs whose store has no search (Redis; DESIGN.md §6).

Every node of a cluster reads the whole fan-out stream already: the :class:`LocalIndex`
is an observer of its dispatcher that keeps what is dispatched in a local SQLite store
(same schema and index as the single node's, so the same searches answer alike on every
node), forgets deleted streams, and starts over when the history is replaced (a new
epoch). At start it copies what the shared store holds and it lacks (``history``), in
the background: searches say the index is incomplete until the copy is done.

Live queries read it too, so it tells the dispatcher how far it holds the stream
(:meth:`~trio_obs.hub.dispatch.Dispatcher.indexed`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final, TypeAlias

import trio

from ..core.errors import StoreError
from ..core.routing import Envelope
from ..core.search import SearchQuery, SearchResult
from .dispatch import Dispatcher
from .indexing import build_index
from .sqlite import Store

log = logging.getLogger("trio_obs.hub")

History: TypeAlias = Callable[[dict[str, int]], AsyncIterator[list[Envelope]]]
"""Pages of what the shared store holds after each stream key's given last seq."""

_EPOCH: Final = "shared_epoch"
"""The local store's record of the epoch its copy belongs to."""
_RETRY: Final = 1.0
MAX_PENDING: Final = 100_000
"""Events waiting to be written at most: beyond, they are dropped and copied from the shared
store instead (memory stays bounded if the local disk cannot keep up)."""


class _Forget:
    def __init__(self, key: str) -> None:
        self.key = key


class _Restart:
    pass


_Work: TypeAlias = Envelope | _Forget | _Restart


class LocalIndex:
    """What a node's dispatcher fans out, kept and indexed in a local store."""

    def __init__(self, store: Store, dispatcher: Dispatcher, history: History) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.history = history
        self._work: list[_Work] = []
        self._ready = trio.Event()
        self._copying = True
        """The copy of the shared store's history is not done yet."""
        self._copy_again = trio.Event()
        dispatcher.observers.append(self)

    # ------------------------------------------------------------------ observer

    def dispatched(self, envelopes: Sequence[Envelope]) -> None:
        """Keep what was dispatched (in order, never blocking)."""
        self._work.extend(envelopes)
        self._ready.set()
        if len(self._work) > MAX_PENDING:
            log.warning(
                "local search index: over %d events wait to be written; copying them from the"
                " shared store instead",
                MAX_PENDING,
            )
            self._work = [w for w in self._work if not isinstance(w, Envelope)]
            self._copy_again.set()

    def forgot(self, key: str) -> None:
        """A stream was deleted: delete it here too."""
        self._work.append(_Forget(key))
        self._ready.set()

    def restarted(self) -> None:
        """The history was replaced: what is held here is void."""
        self._work = [_Restart()]
        self._ready.set()

    # ------------------------------------------------------------------ running

    async def run(
        self,
        epoch: Callable[[], str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Write what is dispatched, and copy the history, until cancelled.

        ``epoch()`` says the shared store's epoch: a local copy of another one is wiped.
        """
        if self.store.meta_text(_EPOCH) != epoch():
            await self.store.wipe()
            self.store.set_meta_text(_EPOCH, epoch())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._copy, epoch)
            nursery.start_soon(build_index, self.store)
            task_status.started()
            await self._write(epoch)

    async def _write(self, epoch: Callable[[], str]) -> None:
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            work, self._work = self._work, []
            try:
                await self._apply(work, epoch)
            except StoreError as exc:  # pragma: no cover - a local disk failure
                log.error("local search index: %s; it misses what was dispatched meanwhile", exc)

    async def _apply(self, work: list[_Work], epoch: Callable[[], str]) -> None:
        batch: list[Envelope] = []
        for item in [*work, None]:
            if isinstance(item, Envelope):
                batch.append(item)
                continue
            if batch:
                await self.store.add_envelopes(batch)
                last = max((env.pos for env in batch), default=0)
                self.dispatcher.indexed(last)
                batch = []
            if isinstance(item, _Forget):
                await self.store.delete_streams([item.key])
            elif isinstance(item, _Restart):
                await self.store.wipe()
                self.store.set_meta_text(_EPOCH, epoch())
                self._copy_again.set()

    async def _copy(self, epoch: Callable[[], str]) -> None:
        """Copy what the shared store holds that is not here (at start, after a restart)."""
        while True:
            self._copying = True
            try:
                copied = 0
                async for page in self.history(await self.store.last_seqs()):
                    await self.store.add_envelopes(page)
                    copied += len(page)
                if copied:
                    log.info("local search index: copied %d stored events", copied)
                self._copying = False
                await self._copy_again.wait()
                self._copy_again = trio.Event()
            except StoreError as exc:
                log.warning("local search index: copying the history failed (%s); retrying", exc)
                await trio.sleep(_RETRY)

    # ------------------------------------------------------------------ reading

    async def search(self, query: SearchQuery) -> SearchResult:
        """Search this node's copy; incomplete while the history is being copied."""
        result = await self.store.search(query)
        if self._copying:
            return SearchResult(
                hits=result.hits,
                next=result.next,
                complete=False,
                note="this node is still copying the stored events into its search index",
            )
        return result
