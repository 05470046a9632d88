"""Service levels on the floor: the queues' marks, and the supervisors' alerts.

A queue with targets ([queue.sla], core/sla.py) has a clock for each of its conversations
still running against one: a waiting item's wait (since `enqueued_at`) and an accepted
conversation's first reply (since its owner accepted it, until the item is `replied`). The
queue figures count them (`marks`); `run` looks at them at least once a second, and at the
moment a known clock is due to cross, and each clock that has reached a higher level than
this process last saw becomes one `SlaAlert` to every supervisor's session. Agents never get
one. A clock jumping from ok past its target within one look is alerted once, as breached.

What was seen is kept per clock (item, target, start) until the item leaves routing, so each
crossing is alerted once: a reclaimed item's wait keeps its start and is not alerted again;
a new owner's first reply is a new clock.

Only the routing host runs this: it lives in the Inbox, which in a cluster runs on the router
alone. What it has seen is memory. After a restart or a takeover its first look takes the
levels as they are without alerting: a previous router alerted those crossings, or they came
while none ran and no console could hear. Every supervisor's login snapshot carries the clocks
near or past target now (`Snapshot.sla_crossings`), and the console alerts those it has not
shown (tui/state.py): a crossing during a restart reaches the supervisor when their console
is back, and one they were already shown is not shown again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from core.model import ItemState, WorkItem
from core.protocol import MAX_SLA_CROSSINGS, SlaAlert, SlaCrossing
from core.routing.records import owner_of
from core.service.conversations import Conversations
from core.service.floor import Floor
from core.service.routing import RoutingService
from core.sla import (
    QueueSla,
    SlaLevel,
    SlaTarget,
    SlaTargets,
    clock_level,
    crossed_at,
    queue_sla,
    worst,
)

ROUND = 1.0  # seconds between looks at most: how late an alert for a new clock may be

_WAITING = (ItemState.QUEUED, ItemState.OFFERED)


@dataclass(frozen=True, slots=True)
class Clock:
    queue: str
    item: str
    interaction: str | None
    target: SlaTarget
    started: float

    @property
    def key(self) -> tuple[str, SlaTarget, float]:
        return (self.item, self.target, self.started)


class SlaWatch:
    def __init__(
        self,
        slas: Mapping[str, SlaTargets],
        routing: RoutingService,
        conversations: Conversations,
        floor: Floor,
        clock: Callable[[], float],
    ) -> None:
        self.slas = slas
        self.routing = routing
        self.conversations = conversations
        self.floor = floor
        self.clock = clock
        self._seen: dict[tuple[str, SlaTarget, float], SlaLevel] | None = None

    # ------------------------------------------------------------------ reading

    def clocks(self) -> Iterator[Clock]:
        """Every clock running now, in queues with targets."""
        if not self.slas:
            return
        for item in self.routing.router.items.values():
            clock = self.clock_of(item)
            if clock is not None:
                yield clock

    def clock_of(self, item: WorkItem) -> Clock | None:
        """The item's clock running now against its queue's targets, if one is (the floor's
        rows show the same clock: core/service/supervision.py)."""
        targets = self.slas.get(item.queue or "")
        if targets is None or item.queue is None:
            return None
        if item.state in _WAITING and targets.wait is not None:
            return Clock(item.queue, item.id, item.interaction, "wait", item.enqueued_at)
        if item.state == ItemState.ACCEPTED and not item.replied and targets.first_reply:
            accepted = self._accepted_at(item)
            if accepted is not None:
                return Clock(item.queue, item.id, item.interaction, "first_reply", accepted)
        return None

    def _accepted_at(self, item: WorkItem) -> float | None:
        """When the item's owner joined its conversation: the acceptance the routing step
        recorded on the interaction record."""
        record = self.conversations.open_record(item.interaction or "")
        if record is None:
            return None
        owner = owner_of(record)
        for p in record.participants:
            if p.agent == owner and p.left_at is None:
                return p.joined_at
        return None

    def level(self, clock: Clock, now: float) -> SlaLevel:
        targets = self.slas[clock.queue]
        return clock_level(targets.seconds(clock.target), targets.near, clock.started, None, now)

    def marks(self, now: float) -> dict[str, QueueSla]:
        """Each queue with targets: how many of its clocks are near or past them."""
        waiting: dict[str, list[float]] = {q: [] for q in self.slas}
        unanswered: dict[str, list[float]] = {q: [] for q in self.slas}
        for c in self.clocks():
            (waiting if c.target == "wait" else unanswered)[c.queue].append(c.started)
        return {
            q: queue_sla(t, waiting_since=waiting[q], unanswered_since=unanswered[q], now=now)
            for q, t in self.slas.items()
        }

    def crossing(self, clock: Clock, level: SlaLevel) -> SlaCrossing:
        targets = self.slas[clock.queue]
        return SlaCrossing(
            queue=clock.queue,
            item=clock.item,
            interaction=clock.interaction,
            target=clock.target,
            level=level,
            since=crossed_at(targets, clock.target, level, clock.started),
            seconds=targets.seconds(clock.target) or 0.0,
        )

    def standing(self, now: float) -> list[SlaCrossing]:
        """The clocks near or past their target now, oldest crossing first: a supervisor's
        snapshot."""
        found = [
            self.crossing(c, level)
            for c in self.clocks()
            if (level := self.level(c, now)) != SlaLevel.OK
        ]
        found.sort(key=lambda x: x.since)
        return found[:MAX_SLA_CROSSINGS]

    # ------------------------------------------------------------------ alerting

    def look(self, now: float) -> tuple[list[SlaCrossing], float | None]:
        """The crossings since the last look (none on the first), and when the next known one
        is due."""
        first = self._seen is None
        before = self._seen or {}
        seen: dict[tuple[str, SlaTarget, float], SlaLevel] = {}
        new: list[SlaCrossing] = []
        due: float | None = None
        for c in self.clocks():
            level = self.level(c, now)
            was = before.get(c.key, SlaLevel.OK)
            seen[c.key] = worst(level, was)
            if not first and worst(level, was) != was:
                new.append(self.crossing(c, level))
            if level != SlaLevel.BREACHED:
                nxt = SlaLevel.NEAR if level == SlaLevel.OK else SlaLevel.BREACHED
                at = crossed_at(self.slas[c.queue], c.target, nxt, c.started)
                due = at if due is None else min(due, at)
        # Stopped clocks keep what they reached while their item is open, so a wait that
        # starts again with the same start (a reclaim) is not alerted twice.
        items = self.routing.router.items
        for key, level in before.items():
            if key not in seen and key[0] in items:
                seen[key] = level
        self._seen = seen
        return new, due

    async def run(self) -> None:
        if not self.slas:
            return
        while True:
            now = self.clock()
            new, due = self.look(now)
            for crossing in new:
                # "" is no agent's id: every supervisor's session hears it.
                self.floor.push_supervisors(SlaAlert(crossing=crossing), but="")
            pause = ROUND if due is None else min(ROUND, max(0.0, due - now) + 0.001)
            await asyncio.sleep(pause)
