"""The agents of one queue who could take an offer now, kept in the queue's ranking order.

The engine used to rebuild this list and sort it for every item it dispatched; at thousands of
agents that made each routing event cost milliseconds. Kept sorted instead, an offer costs a
binary search plus a list insert, and the best agent is at the front.

An entry is the agent's rank key with the agent id as its last element, so entries are unique
and compare without ties: most_capacity (tier, -spare, recency, id), least_recent
(tier, recency, id), round_robin (tier, id). `tier` is minus the agent's summed skill level when
the queue prefers skill level, else 0.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from typing import Any

Entry = tuple[Any, ...]


class ReadyIndex:
    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._entry_of: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, agent: object) -> bool:
        return agent in self._entry_of

    def put(self, entry: Entry) -> None:
        agent = entry[-1]
        old = self._entry_of.get(agent)
        if old == entry:
            return
        if old is not None:
            del self._entries[bisect.bisect_left(self._entries, old)]
        bisect.insort(self._entries, entry)
        self._entry_of[agent] = entry

    def discard(self, agent: str) -> None:
        old = self._entry_of.pop(agent, None)
        if old is not None:
            del self._entries[bisect.bisect_left(self._entries, old)]

    def ranked(self) -> Iterator[str]:
        """Best first: the order of most_capacity and least_recent."""
        for entry in self._entries:
            yield entry[-1]

    def rotated(self, after: str) -> Iterator[str]:
        """Round robin: within each tier, the agents after `after` in id order, then the
        ones up to it (entries are (tier, id))."""
        entries = self._entries
        lo = 0
        while lo < len(entries):
            tier = entries[lo][0]
            hi = bisect.bisect_left(entries, (tier + 1,), lo)
            start = bisect.bisect_right(entries, (tier, after), lo, hi)
            for i in itertools.chain(range(start, hi), range(lo, start)):
                yield entries[i][-1]
            lo = hi
