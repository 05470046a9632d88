"""The day at a glance: each queue's figures per minute, and each agent's offers declined and
expired today, counted from the committed routing steps and kept in the store.

Counting is a routing listener and does no I/O: the hot path of a message pays a few dict
updates. Once a minute `flush` writes every minute finished since the last one, all queues
and the agents whose counts changed, as one store write, so a host restart (or a takeover by
another router) loses at most the minute in progress, and a supervisor who connects at noon
reads the morning from the store. A minute with nothing to show for a queue (no item
waiting, nothing happened) is not written; readers take a missing minute as all zeros.

What a minute's figures count, per queue (QueueMinute, docs/protocol.md):

- waiting: items no agent has accepted yet (state queued or offered) at the minute's end;
  most_waiting: the most at any moment of the minute.
- arrivals: items that came into the queue: new ones, and those moved in from another queue
  (overflow, a transfer to the queue).
- answered: items an agent accepted (`assigned`).
- abandoned: items cancelled while waiting: the customer left, or the case was withdrawn,
  before any agent accepted it.
- handled: items that ended after an agent had accepted them (closed, or a messaging
  conversation whose customer stopped answering).
- average_wait / longest_wait over `waits` waits: of each item answered in the minute, from
  its `enqueued_at` to the answer, and of each item still waiting at the minute's end, from
  its `enqueued_at` to that end. `enqueued_at` is the queue figures' own: kept when an offer
  expires or the item overflows, so a wait is the customer's, not the last offer's.

Agents' counts: an offer rejected counts as declined, one left to run out as expired
(transfers to them included); "today" is since midnight in the host's local time zone.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from core.model import AgentDay, ItemState, OfferState, QueueMinute, WorkItem
from core.protocol import MAX_DAY_MINUTES, DayFigures, GetDay, ServerFrame
from core.routing.decisions import ItemChanged, OfferEnded, OfferMade
from core.service.errors import InboxError
from core.service.routing import RoutingService, Step
from core.service.sessions import AgentSession
from store.base import Store, StoreError

log = logging.getLogger("inbox_tui.day")

MINUTE = 60
# A longer gap between flushes (a frozen loop, a suspended machine) is not filled in
# minute by minute: those minutes are lost, as they are while the host is down.
MAX_GAP_MINUTES = 1440
DEFAULT_RETENTION_DAYS = 35
_WAITING = (ItemState.QUEUED, ItemState.OFFERED)


def local_midnight(at: float) -> int:
    """Epoch seconds of the local midnight that starts the day of `at`."""
    day = datetime.datetime.fromtimestamp(at).date()
    return int(datetime.datetime.combine(day, datetime.time()).timestamp())


def minute_of(at: float) -> int:
    return int(at // MINUTE) * MINUTE


@dataclass
class _Counts:
    """One queue's figures of the minute in progress."""

    most_waiting: int = 0
    arrivals: int = 0
    answered: int = 0
    abandoned: int = 0
    handled: int = 0
    answer_waits: list[float] = field(default_factory=list)


class Day:
    def __init__(
        self,
        routing: RoutingService,
        store: Store,
        clock: Callable[[], float],
        retention_days: int = DEFAULT_RETENTION_DAYS,
    ) -> None:
        self.routing = routing
        self.store = store
        self.clock = clock
        self.retention_days = retention_days
        self._minute = minute_of(clock())
        self._counts: dict[str, _Counts] = {}
        # Open items: their queue, and (queue, enqueued_at) of those not yet accepted.
        self._queue_of: dict[str, str] = {}
        self._waiting: dict[str, tuple[str, float]] = {}
        self._waiting_in: dict[str, int] = {}
        self._finished: list[QueueMinute] = []
        self._finished_days: list[AgentDay] = []
        self._today = local_midnight(clock())
        self._declined: dict[str, int] = {}
        self._expired: dict[str, int] = {}
        self._changed_agents: set[str] = set()

    async def start(self) -> None:
        """Take the open items from routing (after its rebuild) and today's counts from the
        store; every step committed from now on is counted."""
        now = self.clock()
        self._minute = minute_of(now)
        self._today = local_midnight(now)
        for item in self.routing.router.items.values():
            self._track(item)
        # Those were here before: not arrivals of this minute, but waiting in it.
        self._counts = {q: _Counts(most_waiting=n) for q, n in self._waiting_in.items() if n}
        for counted in await self.store.agent_days(self._today):
            self._declined[counted.agent] = counted.declined
            self._expired[counted.agent] = counted.expired

    # ------------------------------------------------------------------ counting

    def observe(self, step: Step) -> None:
        """A routing listener: count the step's decisions into the minute of each."""
        for d in step.decisions:
            if not isinstance(d, OfferMade | OfferEnded | ItemChanged):
                continue
            self.roll(d.at)
            if isinstance(d, OfferEnded):
                self._offer_ended(d)
            if isinstance(d, ItemChanged):
                self._item_changed(d)
            self._track(d.item)

    def _offer_ended(self, d: OfferEnded) -> None:
        counts = {OfferState.REJECTED: self._declined, OfferState.EXPIRED: self._expired}
        tally = counts.get(d.offer.state)
        if tally is not None:
            agent = d.offer.agent
            tally[agent] = tally.get(agent, 0) + 1
            self._changed_agents.add(agent)

    def _item_changed(self, d: ItemChanged) -> None:
        item = d.item
        queue = item.queue or self._queue_of.get(item.id)
        if queue is None:
            return
        counts = self._counts_of(queue)
        if d.change == "assigned":
            counts.answered += 1
            counts.answer_waits.append(max(0.0, d.at - item.enqueued_at))
        elif d.change == "cancelled" and item.id in self._waiting:
            counts.abandoned += 1
        elif d.change in ("closed", "abandoned") and item.agent is not None:
            counts.handled += 1

    def _track(self, item: WorkItem) -> None:
        """Follow the item's queue and whether it waits, counting arrivals and the most
        waiting."""
        was = self._waiting.pop(item.id, None)
        if was is not None:
            self._waiting_in[was[0]] -= 1
        if item.state not in (*_WAITING, ItemState.ACCEPTED, ItemState.WRAP_UP):
            self._queue_of.pop(item.id, None)
            return
        if item.queue is None:
            return
        if self._queue_of.get(item.id) != item.queue:
            self._queue_of[item.id] = item.queue
            self._counts_of(item.queue).arrivals += 1
        if item.state in _WAITING:
            self._waiting[item.id] = (item.queue, item.enqueued_at)
            n = self._waiting_in[item.queue] = self._waiting_in.get(item.queue, 0) + 1
            counts = self._counts_of(item.queue)
            counts.most_waiting = max(counts.most_waiting, n)

    def _counts_of(self, queue: str) -> _Counts:
        counts = self._counts.get(queue)
        if counts is None:
            counts = self._counts[queue] = _Counts()
        return counts

    # ------------------------------------------------------------------ minutes

    def roll(self, now: float) -> None:
        """Close every minute that ended by `now` (in memory; `flush` stores them)."""
        last = minute_of(now)
        if last <= self._minute:
            return
        self._close(self._minute)
        for start in range(
            max(self._minute + MINUTE, last - MAX_GAP_MINUTES * MINUTE), last, MINUTE
        ):
            self._close(start)
        self._minute = last
        today = local_midnight(now)
        if today != self._today:
            # Yesterday's last counts are stored with the next flush, under yesterday.
            self._finished_days += self._agent_days(self._changed_agents)
            self._today = today
            self._declined.clear()
            self._expired.clear()
            self._changed_agents.clear()

    def _close(self, start: int) -> None:
        end = start + MINUTE
        waits: dict[str, list[float]] = {}
        for queue, enqueued_at in self._waiting.values():
            waits.setdefault(queue, []).append(max(0.0, end - enqueued_at))
        for queue in sorted(set(self._counts) | set(waits)):
            counts = self._counts.get(queue, _Counts())
            measured = counts.answer_waits + waits.get(queue, [])
            figures = QueueMinute(
                queue=queue,
                minute=start,
                waiting=self._waiting_in.get(queue, 0),
                most_waiting=counts.most_waiting,
                arrivals=counts.arrivals,
                answered=counts.answered,
                abandoned=counts.abandoned,
                handled=counts.handled,
                waits=len(measured),
                average_wait=round(sum(measured) / len(measured), 1) if measured else 0.0,
                longest_wait=round(max(measured), 1) if measured else 0.0,
            )
            if figures != QueueMinute(queue=queue, minute=start):
                self._finished.append(figures)
        # The next minute starts with what waits now.
        self._counts = {q: _Counts(most_waiting=n) for q, n in self._waiting_in.items() if n}

    def _agent_days(self, agents: set[str]) -> list[AgentDay]:
        return [
            AgentDay(
                agent=a,
                day=self._today,
                declined=self._declined.get(a, 0),
                expired=self._expired.get(a, 0),
            )
            for a in sorted(agents)
        ]

    async def flush(self) -> None:
        """Store every minute finished by now, and the agents' counts that changed."""
        self.roll(self.clock())
        minutes, self._finished = self._finished, []
        changed, self._changed_agents = self._changed_agents, set()
        days, self._finished_days = self._finished_days + self._agent_days(changed), []
        keep_since = minute_of(self.clock()) - self.retention_days * 24 * 3600
        try:
            await self.store.save_day(minutes, days, keep_since)
        except BaseException:
            # Kept for the next flush: nothing counted is dropped for a failed write.
            self._finished = minutes + self._finished
            self._finished_days = days + self._finished_days
            raise

    async def run(self) -> None:
        """Flush just after each minute ends."""
        while True:
            await asyncio.sleep(max(0.0, self._minute + MINUTE - self.clock()) + 0.05)
            try:
                await self.flush()
            except StoreError as e:
                log.error("event=day_figures_not_stored error=%s; retrying next minute", e)

    # ------------------------------------------------------------------ reads

    def offers_today(self, agent: str) -> tuple[int, int]:
        """(declined, expired) of the agent's offers today."""
        if local_midnight(self.clock()) != self._today:
            return 0, 0
        return self._declined.get(agent, 0), self._expired.get(agent, 0)

    async def figures(self, since: float, until: float, queue: str | None = None) -> DayFigures:
        """The stored minutes from `since`'s minute to `until`'s (not included), of `queue` or
        every queue; InboxError for an unknown queue or a range that is empty, reversed or
        longer than MAX_DAY_MINUTES. The supervisor check is the caller's."""
        queues = list(self.routing.router.queues)
        if queue is not None and queue not in queues:
            raise InboxError("unknown_queue", f"no queue {queue!r}")
        start, end = minute_of(since), minute_of(until)
        if not start < end <= start + MAX_DAY_MINUTES * MINUTE:
            raise InboxError(
                "bad_range",
                f"until must be one to {MAX_DAY_MINUTES} minutes after since, "
                f"got since={since:.0f} and until={until:.0f}",
            )
        return DayFigures(
            ref=0,
            since=start,
            until=end,
            queues=[queue] if queue is not None else queues,
            minutes=await self.store.queue_minutes(start, end, queue),
        )

    async def get_day(self, session: AgentSession, frame: GetDay) -> ServerFrame:
        if not session.supervisor:
            raise InboxError("forbidden", "only supervisors see the day's figures")
        figures = await self.figures(frame.since, frame.until, frame.queue)
        return msgspec.structs.replace(figures, ref=frame.ref)
