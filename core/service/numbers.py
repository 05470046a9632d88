"""Interaction numbers handed out before the commit that stores them.

A new conversation's interaction is stored in its item's first routing step: one commit for an
arrival, not two (the interaction's, then the step's, each an fsync in series). The engine
decides that step before the writer runs, so the number must be known before: it comes from a
block the store has already committed as used (`Store.reserve_numbers`), unique across
processes like any other number. The next block is reserved while half of this one is left, so
an arrival waits for a reservation only when arrivals outrun it.

Numbers a process held and never handed out (it stopped, or lost the routing role) are never
used: numbers can skip after a restart or a takeover, never repeat.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from store.base import Store, StoreError

log = logging.getLogger("inbox_tui.numbers")

# Numbers per reservation: one commit per BLOCK arrivals, and at most BLOCK - 1 + BLOCK / 2
# skipped when a process stops.
BLOCK = 32


class NumberBlocks:
    def __init__(self, store: Store, prefix: str, size: int = BLOCK) -> None:
        self.store = store
        self.prefix = prefix
        self.size = size
        self._free: collections.deque[str] = collections.deque()
        self._reserving: asyncio.Task[None] | None = None

    async def next(self) -> str:
        """The next number, in order. Raises StoreError if a reservation it waits for failed
        (the next call tries again)."""
        while not self._free:
            await asyncio.shield(self._reserve())
        number = self._free.popleft()
        if len(self._free) < self.size // 2:
            self._reserve()
        return number

    async def stop(self) -> None:
        """Cancel a reservation in flight: the store is about to close."""
        task = self._reserving
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StoreError):
                await task

    def _reserve(self) -> asyncio.Task[None]:
        if self._reserving is None:
            self._reserving = asyncio.get_running_loop().create_task(self._fill())
            self._reserving.add_done_callback(_log_failure)
        return self._reserving

    async def _fill(self) -> None:
        try:
            # Blocks are reserved one after another, so each is above the one before it.
            self._free.extend(await self.store.reserve_numbers(self.prefix, self.size))
        finally:
            self._reserving = None


def _log_failure(task: asyncio.Task[None]) -> None:
    # Whoever waited for it was told; one reserving ahead has nobody to tell. Either way the
    # next arrival that needs a number tries again.
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("event=numbers_not_reserved error=%s", exc)
