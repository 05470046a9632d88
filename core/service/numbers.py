"""Interaction numbers handed out before the commit that stores them.

A new conversation's interaction is stored in its item's first routing step: one commit for an
arrival, not two (the interaction's, then the step's, each an fsync in series). The engine
decides that step before the writer runs, so the number must be known before: it comes from a
block the store has already committed as used (`Store.reserve_numbers`), unique across
processes like any other number. The next block is reserved while half of this one is left.
A reservation is a write like any other, so on a busy writer it waits its turn for a while:
when arrivals use up the half that was left before the next block comes, every arrival would
queue behind the reservations (measured on a saturated PostgreSQL writer: arrivals took 10 s
instead of 0.8). So a block that came too late doubles the next one, up to MAX_BLOCK, and one
that came with most of the last still unused halves it again, down to BLOCK.

A process that stops gives back what it holds of its last block, unless another process has
reserved numbers since (`Store.release_numbers`), so a restart does not skip numbers. The ones
a process held when it died, or held of an earlier block, are never used: numbers can skip
after a crash or a takeover, never repeat.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from store.base import Store, StoreClosed, StoreError

log = logging.getLogger("inbox_tui.numbers")

# Numbers per reservation while arrivals do not outrun them: one commit per BLOCK arrivals, and
# at most BLOCK - 1 + BLOCK / 2 skipped when a process dies (MAX_BLOCK - 1 + MAX_BLOCK / 2
# under a load that needs the largest blocks).
BLOCK = 32
MAX_BLOCK = 4096


class NumberBlocks:
    def __init__(self, store: Store, prefix: str, size: int = BLOCK) -> None:
        self.store = store
        self.prefix = prefix
        self.base = size  # the smallest block
        self.size = size  # the next block's
        self._free: collections.deque[str] = collections.deque()
        self._reserving: asyncio.Task[None] | None = None
        self._late = False  # an arrival waited for a block reserved ahead
        self._last: list[str] = []  # the last block reserved
        self._stopped = False

    async def next(self) -> str:
        """The next number, in order. Raises StoreError if a reservation it waits for failed
        (the next call tries again)."""
        while not self._free:
            if self._stopped:
                raise StoreClosed("no numbers: the host is stopping")
            self._late = self._late or self._reserving is not None
            await asyncio.shield(self._reserve())
        number = self._free.popleft()
        if len(self._free) < self.size // 2:
            self._reserve()
        return number

    async def stop(self) -> None:
        """Hand out nothing more, and give back what is left of the last block (a
        reservation in flight is cancelled): the store is about to close."""
        self._stopped = True
        task = self._reserving
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StoreError):
                await task
        # Only the last block's rest runs up to the counter; an earlier block's rest may have
        # another process's numbers after it.
        last = set(self._last)
        unused = [n for n in self._free if n in last]
        self._free.clear()
        if unused and unused[-1] == self._last[-1]:
            try:
                await self.store.release_numbers(self.prefix, unused[0], unused[-1])
            except StoreError as e:
                log.warning("event=numbers_not_released error=%s", e)

    def _reserve(self) -> asyncio.Task[None]:
        if self._reserving is None:
            self._reserving = asyncio.get_running_loop().create_task(self._fill())
            self._reserving.add_done_callback(_log_failure)
        return self._reserving

    async def _fill(self) -> None:
        try:
            if self._late:
                self.size, self._late = min(self.size * 2, MAX_BLOCK), False
            # Blocks are reserved one after another, so each is above the one before it.
            block = await self.store.reserve_numbers(self.prefix, self.size)
            if len(self._free) > self.size * 3 // 8 and not self._late:
                # Less than a quarter of what was left went while this one was reserved.
                self.size = max(self.size // 2, self.base)
            self._free.extend(block)
            self._last = block
        finally:
            self._reserving = None


def _log_failure(task: asyncio.Task[None]) -> None:
    # Whoever waited for it was told; one reserving ahead has nobody to tell. Either way the
    # next arrival that needs a number tries again.
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("event=numbers_not_reserved error=%s", exc)
