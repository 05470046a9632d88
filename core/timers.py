"""Deadlines as absolute times, sans-I/O.

The router owns one `Deadlines`; the service asks it for `next_at()` to know how long to sleep
and feeds the clock back through `Router.tick`. Because every deadline also lives on its item or
offer record, a restarted host rebuilds this heap from the store and re-arms everything.
"""

from __future__ import annotations

import heapq
from enum import StrEnum


class DeadlineKind(StrEnum):
    OFFER_EXPIRY = "offer_expiry"
    MAX_WAIT = "max_wait"
    FIRST_REPLY = "first_reply"
    WRAP_UP = "wrap_up"
    ABANDON = "abandon"
    # Keyed by agent, not item: how long a rebuilt engine keeps the offers of an agent whose
    # console has not rejoined it yet (Router.__init__).
    REJOIN = "rejoin"


Key = tuple[DeadlineKind, str]


class Deadlines:
    """A heap with lazy deletion: cancelling or moving a deadline is O(1); stale heap entries
    are skipped when they surface, which keeps re-arming on every routing step cheap."""

    def __init__(self) -> None:
        self._at: dict[Key, float] = {}
        self._heap: list[tuple[float, int, DeadlineKind, str]] = []
        self._counter = 0

    def __len__(self) -> int:
        return len(self._at)

    def set(self, kind: DeadlineKind, key: str, at: float | None) -> None:
        """Arm (or move) a deadline; `None` cancels it."""
        if at is None:
            self._at.pop((kind, key), None)
            return
        if self._at.get((kind, key)) == at:
            return
        self._at[(kind, key)] = at
        self._counter += 1
        heapq.heappush(self._heap, (at, self._counter, kind, key))

    def get(self, kind: DeadlineKind, key: str) -> float | None:
        return self._at.get((kind, key))

    def next_at(self) -> float | None:
        heap = self._heap
        while heap:
            at, _, kind, key = heap[0]
            if self._at.get((kind, key)) == at:
                return at
            heapq.heappop(heap)
        return None

    def pop_next(self, now: float) -> tuple[DeadlineKind, str] | None:
        """The earliest deadline at or before `now`, disarmed; None when nothing is due."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, kind, key = heapq.heappop(heap)
            if self._at.get((kind, key)) == at:
                del self._at[(kind, key)]
                return kind, key
        return None
