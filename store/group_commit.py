"""Group commit: the writes queued in one loop tick share one transaction and one commit.

Every write is an op queued with a future. One writer task takes the first op, drains whatever
else is already queued (up to `max_batch`) and hands the whole batch to the backend's `commit`,
which runs it in ONE transaction with each op inside its own savepoint, and reports per op
(ok, result-or-exception) and whether the transaction committed. Only then are the futures
resolved, so an awaited write is durable: what "persist first, then send" relies on.

- An op that fails on its own (a constraint, an unknown interaction) is rolled back to its
  savepoint and fails its own caller; the rest of its batch commits.
- A failed COMMIT fails every op of its batch and acknowledges none. The writer keeps going,
  so later batches succeed once the cause (say, a full disk) is gone.
- A caller that stopped waiting before its batch began gets no write: it cannot have acted on a
  result it never received.

Database-neutral: SQLite runs `commit` in its writer thread (store/sqlite.py); a PostgreSQL
backend runs it on one connection as a transaction with a nested transaction per op.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from store.base import StoreClosed, StoreStats

Op = TypeVar("Op")
# Per op: (True, its result) or (False, the exception its caller gets).
Outcome = tuple[bool, Any]
Commit = Callable[[list[Op]], Awaitable[tuple[list[Outcome], bool]]]


class _Queued:
    __slots__ = ("future", "op")

    def __init__(self, op: Any, future: asyncio.Future[Any]) -> None:
        self.op = op
        self.future = future


_STOP = object()


class GroupCommit(Generic[Op]):
    """The one writer of a store. `where` names the database in error messages."""

    def __init__(
        self, commit: Commit[Op], stats: StoreStats, *, max_batch: int, where: str
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._commit = commit
        self._stats = stats
        self._max_batch = max_batch
        self._where = where
        self._queue: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def started(self) -> bool:
        """From start() until stop() has returned."""
        return self._task is not None

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-writer")

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Queue `op` for the next batch; the future resolves once that batch has committed."""
        queue, task = self._queue, self._task
        if queue is None or task is None or self._stopping or task.done():
            raise StoreClosed(f"{self._where} is not open")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # Unbounded on purpose: each caller awaits its own op, so the queue never holds more
        # than the number of concurrent callers.
        queue.put_nowait(_Queued(op, future))
        return future

    async def stop(self) -> None:
        """Commit every op already submitted, then end the writer; later submits fail."""
        if self._task is None or self._queue is None or self._stopping:
            return
        self._stopping = True
        self._queue.put_nowait(_STOP)
        try:
            # wait, not await: a writer cancelled under a batch (a host torn down mid-commit)
            # has ended already, and its cancellation is not this caller's to raise.
            await asyncio.wait({self._task})
            if not self._task.cancelled():
                self._task.result()  # a writer that broke says so
        finally:
            self._task = None
            self._queue = None

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        try:
            while True:
                first = await queue.get()
                if first is _STOP:
                    return
                batch: list[_Queued] = [first]
                stop = False
                while len(batch) < self._max_batch and not queue.empty():
                    queued = queue.get_nowait()
                    if queued is _STOP:
                        stop = True
                        break
                    batch.append(queued)
                live = [queued for queued in batch if not queued.future.done()]
                if live:
                    await self._commit_batch(live)
                if stop:
                    return
        finally:
            # Only reached with ops still queued if the writer is cancelled or broken.
            while not queue.empty():
                queued = queue.get_nowait()
                if queued is not _STOP and not queued.future.done():
                    queued.future.set_exception(StoreClosed(f"{self._where}: the writer stopped"))

    async def _commit_batch(self, batch: list[_Queued]) -> None:
        started = time.perf_counter()
        try:
            outcomes, committed = await self._commit([queued.op for queued in batch])
        except BaseException:
            # Cancelled while the backend ran: the batch may still commit, but it is not
            # acknowledged, which is allowed (retries are deduplicated).
            for queued in batch:
                if not queued.future.done():
                    queued.future.set_exception(StoreClosed(f"{self._where}: the writer stopped"))
            raise
        error = None if committed or not outcomes else str(outcomes[0][1])
        self._stats.record_batch(
            len(batch), time.perf_counter() - started, committed=committed, error=error
        )
        for queued, (ok, value) in zip(batch, outcomes, strict=True):
            if queued.future.done():
                continue
            if ok:
                queued.future.set_result(value)
            else:
                queued.future.set_exception(value)
