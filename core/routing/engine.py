"""The routing engine: state + event + now -> decisions. Sans-I/O.

No sockets, no database, no clock: the caller passes `now` with every event and turns the
returned decisions into effects (persist first, then announce). The engine raises
`RoutingError` for an event that does not apply (accepting an offer twice, transferring to an
offline agent) before it changes anything, so a refused command leaves no trace.

Capacity is never counted by hand at the call sites: every change of an item or offer goes
through `_put_item` / `_put_offer`, which release what the old record held and charge what the
new one holds. Load is therefore a function of the records, which is what the property tests
recompute after every step.

Tie-breaking, documented because agents notice unfairness:
- items: priority (larger first), then `enqueued_at` (older first), then item id;
- agents: affinity (last agent of this customer within the queue's window, or the item's
  preferred agent) first; then, when the queue prefers skill level, the higher summed level of
  the queue's skills; then the rule — most_capacity: most spare capacity in the channel (spare =
  min(channel spare, universal spare)), then least recently offered, then agent id;
  least_recent: least recently offered (never offered first), then agent id; round_robin: the
  next member after the last one picked, in agent-id order.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from msgspec.structs import replace

from core.model import (
    MAX_WEIGHT,
    OFFLINE,
    OPEN_ITEM_STATES,
    Agent,
    AgentStatus,
    AssignmentRule,
    ChannelMode,
    ItemState,
    Offer,
    OfferKind,
    OfferState,
    PresenceState,
    Queue,
    ServiceChannel,
    WorkItem,
)
from core.routing.condition import Condition
from core.routing.decisions import (
    AnyDecision,
    ItemChanged,
    ItemUnroutable,
    OfferEnded,
    OfferMade,
    PresenceSet,
)
from core.routing.events import (
    AbandonDue,
    AgentConnected,
    AgentDisconnected,
    AgentLoggedOut,
    AgentReplied,
    AgentUpdated,
    AnyEvent,
    ChatEnded,
    CustomerReplied,
    FirstReplyMissed,
    ItemArrived,
    ItemCancelled,
    ItemClosed,
    ItemClosedBy,
    ItemMoved,
    ItemReassigned,
    MaxWaitReached,
    OfferAccepted,
    OfferExpired,
    OfferRejected,
    PresenceChanged,
    PresenceForced,
    RejoinMissed,
    TransferToAgent,
    TransferToQueue,
    WrapUpEnded,
)
from core.routing.queues import check_overflow_cycles, check_queue
from core.routing.ready import ReadyIndex
from core.timers import DeadlineKind, Deadlines

# How many excluded agents a reason names before it says "+N more": reasons stay one line.
REASON_NAMES = 3
# Seconds a rebuilt engine keeps the pending offers of an agent whose console has not
# rejoined it: as long as an edge tries to move a console to a new router
# (core/host/console_trail.py), and a console of its own reconnects well within it.
REJOIN_GRACE = 10.0


class RoutingError(Exception):
    """An event that does not apply to the current state. `code` is stable for the wire."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RoutingConfig:
    channels: Sequence[ServiceChannel]
    presences: Sequence[PresenceState]
    queues: Sequence[Queue]
    agents: Sequence[Agent] = ()
    # How many offers one agent may have pending at once; transfers do not count.
    max_pending_offers: int = 1


@dataclass
class _Load:
    per_channel: dict[str, int] = field(default_factory=dict)
    total: int = 0
    pending: int = 0  # routed offers pending


_ACTIVE = (ItemState.ACCEPTED, ItemState.WRAP_UP)


def _item_key(item: WorkItem) -> tuple[int, float, str]:
    return (-item.priority, item.enqueued_at, item.id)


class Router:
    def __init__(
        self,
        config: RoutingConfig,
        *,
        statuses: Iterable[AgentStatus] = (),
        items: Iterable[WorkItem] = (),
        offers: Iterable[Offer] = (),
        last_served: dict[str, tuple[str, float]] | None = None,
        detached: Iterable[str] = (),
    ) -> None:
        """Build the engine; pass the stored state to resume after a restart. Deadlines that
        passed while the host was down fire on the first `tick`. Queues it cannot route with
        raise RoutingConfigError (core.routing.queues).

        `detached`: agents known to have no console attached (after a host restart, all of
        them). Connection is a fact of the running host, never stored: an agent not named
        here counts as attached until `AgentDisconnected` says otherwise, so a caller that
        knows nothing of consoles (a replay, a test) routes as if everyone were at their desk.
        Pending offers to detached agents stand for REJOIN_GRACE seconds from the first step:
        a console back by then (a router moved, a host restarted) finds its offer and may
        accept it; for one that is not, they are rescinded (`RejoinMissed`), or expire first.
        Detached agents get no new offer meanwhile."""
        self.channels = {c.name: c for c in config.channels}
        self.presences = {p.name: p for p in config.presences}
        self.max_pending_offers = config.max_pending_offers
        self.queues: dict[str, Queue] = {}
        self._conditions: dict[str, Condition] = {}
        for q in sorted(config.queues, key=lambda q: (q.order, q.name)):
            self.queues[q.name] = q
        for q in self.queues.values():
            self._conditions[q.name] = check_queue(q, self.channels, self.presences, self.queues)
        check_overflow_cycles(list(self.queues.values()))
        self.agents: dict[str, Agent] = {a.id: a for a in config.agents}
        self.status: dict[str, AgentStatus] = {a: AgentStatus(agent=a) for a in self.agents}
        for s in statuses:
            if s.agent in self.agents:
                self.status[s.agent] = (
                    s if s.presence in self.presences else replace(s, presence=OFFLINE)
                )
        self.items: dict[str, WorkItem] = {}
        self.offers: dict[str, Offer] = {}  # pending only
        self.offer_of_item: dict[str, str] = {}
        self.offers_of_agent: dict[str, set[str]] = {}
        self.load: dict[str, _Load] = {a: _Load() for a in self.agents}
        self.waiting: dict[str, list[tuple[int, float, str]]] = {q: [] for q in self.queues}
        # Items accepted or in wrap-up, per queue: the queue pane's "active", kept as a count so
        # statistics never walk every open item.
        self.active: dict[str, int] = dict.fromkeys(self.queues, 0)
        self.awaiting_of_agent: dict[str, set[str]] = {}
        self.last_served: dict[str, tuple[str, float]] = dict(last_served or {})
        self.detached: set[str] = {a for a in detached if a in self.agents}
        self._rr_last: dict[str, str] = {}
        self.deadlines = Deadlines()
        self._members: dict[str, list[str]] = {}
        self._queues_of: dict[str, list[str]] = {}
        # Per queue: its pool (members present for its channel with its skills), the pool
        # members with room for an offer in ranking order, and the members without room.
        # Kept up to date agent by agent (`_touched`), so routing never walks a whole floor.
        self._pool: dict[str, set[str]] = {}
        self._ready: dict[str, ReadyIndex] = {}
        self._unready: dict[str, set[str]] = {}
        self._touched: set[str] = set()
        self._out: list[AnyDecision] = []
        self._dirty_queues: set[str] = set()
        self._dirty_agents: set[str] = set()
        self._index_members()
        for item in items:
            if item.state in OPEN_ITEM_STATES:
                self._put_item(item)
        for offer in offers:
            if offer.state == OfferState.PENDING and offer.item in self.items:
                self._put_offer(offer)
        self._refresh_touched()
        self._dirty_queues.update(self.queues)
        # Offers stored as pending may be to agents whose console is not (yet) back: the
        # first step gives each such agent REJOIN_GRACE to return.
        self._unattended = any(self.offers_of_agent.get(a) for a in self.detached)

    # ------------------------------------------------------------------ configuration

    def _index_members(self) -> None:
        self._members = {}
        self._queues_of = {a: [] for a in self.agents}
        for q in self.queues.values():
            members = sorted(
                a.id
                for a in self.agents.values()
                if not a.disabled and (not q.groups or set(q.groups) & set(a.groups))
            )
            self._members[q.name] = members
            for a in members:
                self._queues_of[a].append(q.name)
            self._pool[q.name] = set()
            self._ready[q.name] = ReadyIndex()
            self._unready[q.name] = set(members)
        self._touched.update(self.agents)

    def members(self, queue: str) -> list[str]:
        """Agents in the queue's groups (a queue with no groups takes every enabled agent)."""
        return self._members[queue]

    def queues_of(self, agent: str) -> list[str]:
        return self._queues_of.get(agent, [])

    # ------------------------------------------------------------------ public entry points

    def handle(self, event: AnyEvent, now: float) -> list[AnyDecision]:
        handler = self._handlers[type(event)]
        handler(self, event, now)
        return self._finish(now)

    def tick(self, now: float) -> list[AnyDecision]:
        """Fire every deadline at or before `now` through the ordinary event path."""
        out: list[AnyDecision] = []
        while (event := self.next_due_event(now)) is not None:
            out.extend(self.handle(event, now))
        return out

    def next_due_event(self, now: float) -> AnyEvent | None:
        """The earliest deadline at or before `now` as the event it stands for, disarmed.
        Taken one at a time because handling one can make the next stale."""
        while (due := self.deadlines.pop_next(now)) is not None:
            event = self._deadline_event(*due)
            if event is not None:
                return event
        return None

    def resume(self, now: float) -> list[AnyDecision]:
        """After a restart: fire what fell due while down, then route everything routable."""
        out = self.tick(now)
        self._dirty_queues.update(self.queues)
        self._dirty_agents.update(self.agents)
        out.extend(self._finish(now))
        return out

    def next_deadline(self) -> float | None:
        return self.deadlines.next_at()

    def select_queue(self, item: WorkItem) -> Queue | None:
        """First queue, by evaluation order, whose channel and condition match the item."""
        for q in self.queues.values():
            if q.channel == item.channel and self._conditions[q.name].matches(item.attributes):
                return q
        return None

    def used(self, agent: str) -> _Load:
        return self.load[agent]

    def waiting_items(self, queue: str) -> list[WorkItem]:
        return [self.items[k[2]] for k in self.waiting[queue]]

    # ------------------------------------------------------------------ record bookkeeping

    def _holds(self, item: WorkItem) -> bool:
        """Whether the item occupies its agent's capacity."""
        return (
            item.agent is not None
            and item.state in (ItemState.ACCEPTED, ItemState.WRAP_UP)
            and not item.on_hold
            and not item.awaiting_capacity
        )

    def _charge(self, agent: str, channel: str, weight: int) -> None:
        load = self.load[agent]
        load.per_channel[channel] = load.per_channel.get(channel, 0) + weight
        load.total += weight
        self._touched.add(agent)

    def _put_item(self, new: WorkItem) -> None:
        """Replace (or insert, or with a closed state remove) an item, keeping load, waiting
        lists and deadlines consistent with the record."""
        old = self.items.get(new.id)
        if old is not None:
            if old.state in _ACTIVE and old.queue in self.active:
                self.active[old.queue] -= 1
            if self._holds(old) and old.agent in self.load:
                self._charge(old.agent, old.channel, -old.weight)
                self._dirty_agents.add(old.agent)
            if old.state == ItemState.QUEUED and old.queue in self.waiting:
                lst = self.waiting[old.queue]
                i = bisect.bisect_left(lst, _item_key(old))
                if i < len(lst) and lst[i][2] == old.id:
                    del lst[i]
            if old.awaiting_capacity and old.agent is not None:
                self.awaiting_of_agent.get(old.agent, set()).discard(old.id)
                self._touched.add(old.agent)
        if new.state in OPEN_ITEM_STATES:
            self.items[new.id] = new
            if new.state in _ACTIVE and new.queue in self.active:
                self.active[new.queue] += 1
            if self._holds(new) and new.agent in self.load:
                self._charge(new.agent, new.channel, new.weight)
            if new.state == ItemState.QUEUED and new.queue in self.waiting:
                bisect.insort(self.waiting[new.queue], _item_key(new))
                self._dirty_queues.add(new.queue)
            if new.awaiting_capacity and new.agent is not None:
                self.awaiting_of_agent.setdefault(new.agent, set()).add(new.id)
                self._dirty_agents.add(new.agent)
                self._touched.add(new.agent)
        else:
            self.items.pop(new.id, None)
        alive = new.state in OPEN_ITEM_STATES
        # Max wait is a queued item's deadline: one that runs out during an offer is judged
        # when the item comes back (`_enqueue`). Armed only while queued, so the engine holds
        # exactly the deadlines an engine rebuilt from the records arms.
        waiting = new.state == ItemState.QUEUED
        self.deadlines.set(DeadlineKind.MAX_WAIT, new.id, new.max_wait_at if waiting else None)
        self.deadlines.set(DeadlineKind.FIRST_REPLY, new.id, new.reply_by if alive else None)
        self.deadlines.set(DeadlineKind.WRAP_UP, new.id, new.wrap_up_until if alive else None)
        self.deadlines.set(DeadlineKind.ABANDON, new.id, new.abandon_at if alive else None)

    def _put_offer(self, new: Offer) -> None:
        old = self.offers.get(new.id)
        item = self.items[new.item]
        if old is not None:
            self._charge(old.agent, item.channel, -item.weight)
            if old.kind == OfferKind.ROUTED:
                self.load[old.agent].pending -= 1
            self.offers_of_agent[old.agent].discard(old.id)
            del self.offers[old.id]
            del self.offer_of_item[old.item]
            self._dirty_agents.add(old.agent)
        if new.state == OfferState.PENDING:
            self._charge(new.agent, item.channel, item.weight)
            if new.kind == OfferKind.ROUTED:
                self.load[new.agent].pending += 1
            self.offers[new.id] = new
            self.offer_of_item[new.item] = new.id
            self.offers_of_agent.setdefault(new.agent, set()).add(new.id)
            self.deadlines.set(DeadlineKind.OFFER_EXPIRY, new.id, new.deadline)
        else:
            self.deadlines.set(DeadlineKind.OFFER_EXPIRY, new.id, None)

    def _emit_item(self, item: WorkItem, change: str, reason: str, now: float) -> None:
        self._put_item(item)
        self._out.append(ItemChanged(at=now, item=item, change=change, reason=reason))

    def _end_offer(self, offer: Offer, state: OfferState, why: str, now: float) -> Offer:
        ended = replace(offer, state=state, outcome_reason=why, closed_at=now)
        self._put_offer(ended)
        self._out.append(OfferEnded(at=now, offer=ended, item=self.items[offer.item], reason=why))
        return ended

    # ------------------------------------------------------------------ eligibility

    def _presence_has(self, agent: str, channel: str) -> bool:
        presence = self.presences.get(self.status[agent].presence)
        return presence is not None and channel in presence.channels

    def _spare(self, agent: str, channel: str) -> int:
        a = self.agents[agent]
        load = self.load[agent]
        return min(
            a.capacity.get(channel, 0) - load.per_channel.get(channel, 0),
            a.universal_capacity - load.total,
        )

    def _skills_ok(self, agent: str, queue: Queue) -> bool:
        skills = self.agents[agent].skills
        return all(skills.get(s.name, 0) >= s.level for s in queue.skills)

    def _in_pool(self, agent: str, queue: Queue) -> bool:
        """Could serve this queue's items if it had room: the set rejections are counted in.
        An agent without a console is out of it: otherwise their not having rejected an item
        yet would keep the rejections of everyone present counting, and strand the item."""
        return (
            not self.agents[agent].disabled
            and agent not in self.detached
            and self._presence_has(agent, queue.channel)
            and self._skills_ok(agent, queue)
        )

    def _has_room(self, agent: str, channel: str) -> bool:
        return (
            self.load[agent].pending < self.max_pending_offers
            and self._spare(agent, channel) > 0
            and not self.awaiting_of_agent.get(agent)
        )

    def _rank_key(self, agent: str, queue: Queue) -> tuple[object, ...]:
        tier = 0
        if queue.prefer_skill_level and queue.skills:
            skills = self.agents[agent].skills
            tier = -sum(skills.get(s.name, 0) for s in queue.skills)
        if queue.rule == AssignmentRule.MOST_CAPACITY:
            return (tier, -self._spare(agent, queue.channel), self._recency(agent), agent)
        if queue.rule == AssignmentRule.LEAST_RECENT:
            return (tier, self._recency(agent), agent)
        return (tier, agent)

    def _recency(self, agent: str) -> float:
        last = self.status[agent].last_assigned_at
        return float("-inf") if last is None else last

    def _refresh_touched(self) -> None:
        """Re-file every agent whose presence, load or offers changed in its queues' pools
        and ready lists."""
        touched, self._touched = self._touched, set()
        for agent in touched:
            for qname in self.queues_of(agent):
                queue = self.queues[qname]
                if self._in_pool(agent, queue):
                    self._pool[qname].add(agent)
                    if self._has_room(agent, queue.channel):
                        self._ready[qname].put(self._rank_key(agent, queue))
                        self._unready[qname].discard(agent)
                        continue
                else:
                    self._pool[qname].discard(agent)
                self._ready[qname].discard(agent)
                self._unready[qname].add(agent)

    def _counted_rejections(self, item: WorkItem, pool: set[str]) -> frozenset[str]:
        """Rejections count only while someone in the pool has not rejected the item yet."""
        rejected = frozenset(item.rejected_by)
        if rejected and pool <= rejected:
            return frozenset()
        return rejected

    def _why_not(self, agent: str, item: WorkItem, queue: Queue) -> str:
        a = self.agents[agent]
        if a.disabled:
            return "disabled"
        if agent in self.detached:
            return "no console"
        if not self._presence_has(agent, queue.channel):
            return self.status[agent].presence.lower()
        for s in queue.skills:
            if a.skills.get(s.name, 0) < s.level:
                return f"lacks skill {s.name}"
        if agent in item.rejected_by:
            return "rejected"
        if self.load[agent].pending >= self.max_pending_offers:
            return "has pending offer"
        if self.awaiting_of_agent.get(agent):
            return "owes a returning customer"
        return "full"

    # ------------------------------------------------------------------ choosing

    def _choose(self, item: WorkItem, queue: Queue, now: float) -> tuple[str, str] | None:
        """The agent to offer the item to (invariant 3), and the reason, or None."""
        ready = self._ready[queue.name]
        rejected = self._counted_rejections(item, self._pool[queue.name])
        weight = item.weight

        def fits(agent: str) -> bool:
            return (
                agent in ready
                and agent not in rejected
                and (weight == 1 or self._spare(agent, item.channel) >= weight)
            )

        chosen = None
        if item.preferred_agent is not None and fits(item.preferred_agent):
            chosen, why = item.preferred_agent, "preferred agent"
        elif queue.affinity_window is not None and item.customer in self.last_served:
            agent, at = self.last_served[item.customer]
            if fits(agent) and now - at <= queue.affinity_window:
                chosen, why = agent, "affinity"
        if chosen is None:
            if queue.rule == AssignmentRule.ROUND_ROBIN:
                order = ready.rotated(self._rr_last.get(queue.name, ""))
            else:
                order = ready.ranked()
            chosen = next((a for a in order if fits(a)), None)
            if chosen is None:
                return None
            if queue.rule == AssignmentRule.MOST_CAPACITY:
                why = f"most_capacity {self._spare(chosen, item.channel)} free"
            else:
                why = queue.rule.value
        # Ready agents have at least one free slot, so at weight 1 only rejections exclude.
        if weight == 1:
            fitting = len(ready) - sum(1 for a in rejected if a in ready)
        else:
            fitting = sum(1 for a in ready.ranked() if fits(a))
        return chosen, "; ".join(
            [
                f"offered to {chosen}: {why}",
                *_weight_note(item),
                *self._preferred_note(item, queue, chosen),
                *self._excluded_notes(item, queue, fits, fitting),
            ]
        )

    def _preferred_note(self, item: WorkItem, queue: Queue, chosen: str) -> list[str]:
        """Why the item's preferred agent did not get it, when they did not."""
        preferred = item.preferred_agent
        if preferred is None or preferred == chosen:
            return []
        if preferred not in self.members(queue.name):
            return [f"preferred {preferred} not in {queue.name}"]
        return [f"preferred {preferred} {self._why_not(preferred, item, queue)}"]

    def _excluded_notes(
        self, item: WorkItem, queue: Queue, fits: Callable[[str], bool], fitting: int
    ) -> list[str]:
        """Why the first few members (in id order) who could not have the item were passed
        over, and how many more there were: reasons stay one line at any size of floor."""
        members = self.members(queue.name)
        excluded = len(members) - fitting
        if excluded <= 0:
            return []
        unready = self._unready[queue.name]
        if item.weight == 1 and len(unready) < 64:
            # Few members without room: look only at them and at the ready ones who rejected.
            ready = self._ready[queue.name]
            rejecters = [a for a in item.rejected_by if a in ready and not fits(a)]
            named = sorted({*unready, *rejecters})[:REASON_NAMES]
        else:
            # Many: they are dense among the members, so a walk finds the first few soon.
            named = []
            for a in members:
                if not fits(a):
                    named.append(a)
                    if len(named) == REASON_NAMES:
                        break
        # The preferred agent's note says it already (_preferred_note).
        notes = [f"{a} {self._why_not(a, item, queue)}" for a in named if a != item.preferred_agent]
        if excluded > REASON_NAMES:
            notes.append(f"+{excluded - REASON_NAMES} more")
        return notes

    def _dispatch_queue(self, qname: str, now: float) -> None:
        waiting = self.waiting[qname]
        if not waiting:
            return
        queue = self.queues[qname]
        self._refresh_touched()
        ready = self._ready[qname]
        for key in list(waiting):
            if not ready:
                break
            item = self.items[key[2]]
            choice = self._choose(item, queue, now)
            if choice is None:
                continue
            agent, reason = choice
            self._offer(item, agent, queue, reason, now)
            self._refresh_touched()

    def _offer(self, item: WorkItem, agent: str, queue: Queue, reason: str, now: float) -> None:
        rejected = item.rejected_by
        if self._pool[queue.name] <= set(rejected):
            rejected = ()  # everyone said no: start over rather than strand the item
        offered = replace(
            item, state=ItemState.OFFERED, offers_made=item.offers_made + 1, rejected_by=rejected
        )
        self._put_item(offered)
        offer = Offer(
            id=f"{item.id}.{offered.offers_made}",
            item=item.id,
            agent=agent,
            created_at=now,
            deadline=now + queue.offer_timeout,
            reason=reason,
        )
        self._put_offer(offer)
        self.status[agent] = replace(self.status[agent], last_assigned_at=now)
        self._touched.add(agent)
        self._rr_last[queue.name] = agent
        self._out.append(OfferMade(at=now, offer=offer, item=offered, reason=reason))

    def _finish(self, now: float) -> list[AnyDecision]:
        """Spend freed capacity: first on returning customers owed to their agent, then on
        the queues. Repeats because each step can free or take room for the other."""
        if self._unattended:
            self._unattended = False
            for agent in sorted(self.detached):
                if self.offers_of_agent.get(agent):
                    self.deadlines.set(DeadlineKind.REJOIN, agent, now + REJOIN_GRACE)
        while self._dirty_agents or self._dirty_queues:
            agents, self._dirty_agents = self._dirty_agents, set()
            for agent in sorted(agents):
                self._reactivate(agent, now)
                self._dirty_queues.update(self.queues_of(agent))
            queues, self._dirty_queues = self._dirty_queues, set()
            for qname in self.queues:
                if qname in queues:
                    self._dispatch_queue(qname, now)
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------------ helpers per state

    def _enqueue(self, item: WorkItem, change: str, reason: str, now: float) -> None:
        """Put an item (back) in its queue, keeping its place; overflow if its wait ran out."""
        item = replace(
            item,
            state=ItemState.QUEUED,
            agent=None,
            on_hold=False,
            awaiting_capacity=False,
            replied=False,
            reply_by=None,
            wrap_up_until=None,
            abandon_at=None,
        )
        if item.max_wait_at is not None and item.max_wait_at <= now:
            item, change, more = self._max_wait_passed(item, now)
            reason = f"{reason}; {more}"
        self._emit_item(item, change, reason, now)

    def _queue_of(self, item: WorkItem) -> Queue:
        """The queue of an item the engine holds: an arrival no queue takes is refused, so a
        held item always has one."""
        if item.queue is None:  # a broken invariant, not a client's mistake
            raise RuntimeError(f"{item.id} is held but in no queue")
        return self.queues[item.queue]

    def _max_wait_passed(self, item: WorkItem, now: float) -> tuple[WorkItem, str, str]:
        queue = self._queue_of(item)
        waited = f"waited over {queue.max_wait:g}s in {queue.name}"
        if queue.overflow is None:
            return replace(item, max_wait_at=None, notice_sent=True), "notice", waited
        target = self.queues[queue.overflow]
        # The wait in the overflow queue counts from the move, its place from the arrival.
        deadline = None if target.max_wait is None else now + target.max_wait
        moved = replace(item, queue=target.name, max_wait_at=deadline)
        return moved, "overflowed", f"{waited}; moved to {target.name}"

    def _release_to_queue(self, item: WorkItem, change: str, reason: str, now: float) -> None:
        """Take an accepted item away from its agent and route it again from its old place."""
        offer_id = self.offer_of_item.get(item.id)
        if offer_id is not None:
            self._end_offer(self.offers[offer_id], OfferState.RESCINDED, reason, now)
        queue = self._queue_of(item)
        if item.max_wait_at is None and not item.notice_sent and queue.max_wait is not None:
            # Taken back from an agent (reclaimed, the agent gone), the customer waits in the
            # queue again: its max wait covers that wait as it covered the first, as a
            # transfer to a queue does. Without it the item waited with no deadline at all.
            item = replace(item, max_wait_at=now + queue.max_wait)
        self._enqueue(item, change, reason, now)

    def _reactivate(self, agent: str, now: float) -> None:
        for item_id in sorted(self.awaiting_of_agent.get(agent, ())):
            item = self.items[item_id]
            if self._gone(agent):
                self._release_to_queue(
                    replace(item, preferred_agent=None), "requeued", f"{agent} is offline", now
                )
            elif self._spare(agent, item.channel) >= item.weight:
                self._emit_item(
                    replace(item, awaiting_capacity=False),
                    "resumed",
                    f"{agent} has room again",
                    now,
                )

    def _gone(self, agent: str) -> bool:
        return self.status[agent].presence == OFFLINE or self.agents[agent].disabled

    def _set_presence(self, agent: str, presence: str, reason: str, now: float) -> None:
        self.status[agent] = replace(self.status[agent], presence=presence, presence_since=now)
        self._touched.add(agent)
        self._out.append(PresenceSet(at=now, agent=agent, presence=presence, reason=reason))
        self._dirty_agents.add(agent)
        for offer_id in sorted(self.offers_of_agent.get(agent, ())):
            offer = self.offers[offer_id]
            item = self.items[offer.item]
            if not self._presence_has(agent, item.channel):
                self._rescind(offer, f"{agent} went {presence}", now)

    def _rescind(self, offer: Offer, why: str, now: float) -> None:
        """Withdraw an offer through no fault of the agent: the item keeps its place and the
        agent is not counted as a rejecter."""
        self._end_offer(offer, OfferState.RESCINDED, why, now)
        if offer.kind == OfferKind.ROUTED:
            self._enqueue(self.items[offer.item], "requeued", why, now)

    def _rescind_transfer(self, item: WorkItem, why: str, now: float) -> None:
        offer_id = self.offer_of_item.get(item.id)
        if offer_id is not None:
            self._end_offer(self.offers[offer_id], OfferState.RESCINDED, why, now)

    def _close(self, item: WorkItem, state: ItemState, change: str, why: str, now: float) -> None:
        self._rescind_transfer(item, why, now)
        self._emit_item(
            replace(
                item,
                state=state,
                closed_at=now,
                reply_by=None,
                wrap_up_until=None,
                abandon_at=None,
                max_wait_at=None,
            ),
            change,
            why,
            now,
        )

    # ------------------------------------------------------------------ lookups that refuse

    def _item(self, item_id: str) -> WorkItem:
        item = self.items.get(item_id)
        if item is None:
            raise RoutingError("unknown_item", f"no open work item {item_id!r}")
        return item

    def _assigned(self, item_id: str) -> WorkItem:
        item = self._item(item_id)
        if item.state != ItemState.ACCEPTED:
            raise RoutingError("bad_state", f"work item {item_id} is {item.state}, not accepted")
        return item

    def _pending(self, offer_id: str) -> Offer:
        offer = self.offers.get(offer_id)
        if offer is None:
            raise RoutingError(
                "offer_not_pending",
                f"offer {offer_id!r} is not pending (already answered, expired or unknown)",
            )
        return offer

    def _agent(self, agent: str) -> Agent:
        a = self.agents.get(agent)
        if a is None:
            raise RoutingError("unknown_agent", f"no agent {agent!r}")
        return a

    # ------------------------------------------------------------------ event handlers

    def check_intake(self, channel: str, weight: int, preferred_agent: str | None) -> None:
        """What a new item's own fields must satisfy to be routed; RoutingError otherwise.
        Public so an intake can refuse a request before it stores anything."""
        if channel not in self.channels:
            raise RoutingError("unknown_channel", f"no service channel {channel!r}")
        if not 1 <= weight <= MAX_WEIGHT:
            raise RoutingError(
                "bad_weight",
                f"an item's weight must be from 1 to {MAX_WEIGHT} (the capacity it uses), "
                f"got {weight}",
            )
        if preferred_agent is not None and preferred_agent not in self.agents:
            raise RoutingError("unknown_agent", f"no agent {preferred_agent!r} to prefer")

    def _on_item_arrived(self, e: ItemArrived, now: float) -> None:
        item = e.item
        if item.id in self.items:
            raise RoutingError("duplicate_item", f"work item {item.id} is already open")
        self.check_intake(item.channel, item.weight, item.preferred_agent)
        if item.queue is not None:
            queue = self.queues.get(item.queue)
            if queue is None:
                raise RoutingError("unknown_queue", f"no queue {item.queue!r}")
            if queue.channel != item.channel:
                raise RoutingError(
                    "channel_mismatch",
                    f"queue {queue.name} takes {queue.channel}, not {item.channel}",
                )
            why = f"queued in {queue.name}: targeted"
        else:
            queue = self.select_queue(item)
            if queue is None:
                self._out.append(
                    ItemUnroutable(
                        at=now,
                        item=item,
                        reason=f"no queue for channel {item.channel} matches the attributes",
                    )
                )
                return
            why = f"queued in {queue.name}" + (f": {queue.condition}" if queue.condition else "")
        preferred = item.preferred_agent
        why = "; ".join(
            [why, *_weight_note(item), *([f"preferred agent {preferred}"] if preferred else [])]
        )
        queued = replace(
            item,
            state=ItemState.QUEUED,
            queue=queue.name,
            enqueued_at=item.enqueued_at or now,
            max_wait_at=None if queue.max_wait is None else now + queue.max_wait,
        )
        self._emit_item(queued, "queued", why, now)

    def _on_offer_accepted(self, e: OfferAccepted, now: float) -> None:
        offer = self._pending(e.offer)
        item = self.items[offer.item]
        queue = self._queue_of(item)
        live = self.channels[item.channel].mode == ChannelMode.SYNC
        reply_by = now + queue.reply_deadline if live and queue.reply_deadline else None
        self._end_offer(offer, OfferState.ACCEPTED, "accepted", now)
        self.last_served[item.customer] = (offer.agent, now)
        if offer.kind == OfferKind.ROUTED:
            accepted = replace(
                item,
                state=ItemState.ACCEPTED,
                agent=offer.agent,
                rejected_by=(),
                preferred_agent=None,
                max_wait_at=None,
                replied=False,
                reply_by=reply_by,
            )
            self._emit_item(accepted, "assigned", f"accepted by {offer.agent}", now)
        else:
            moved = replace(
                item, agent=offer.agent, awaiting_capacity=False, replied=False, reply_by=reply_by
            )
            self._emit_item(
                moved, "transferred", f"transferred from {offer.from_agent} to {offer.agent}", now
            )

    def _on_offer_rejected(self, e: OfferRejected, now: float) -> None:
        offer = self._pending(e.offer)
        why = f"{offer.agent} rejected" + (f": {e.reason}" if e.reason else "")
        self._refused(offer, OfferState.REJECTED, why, now)

    def _on_offer_expired(self, e: OfferExpired, now: float) -> None:
        offer = self._pending(e.offer)
        self._refused(offer, OfferState.EXPIRED, f"{offer.agent} did not answer in time", now)
        queue = self._queue_of(self.items[offer.item])
        agent = offer.agent
        presence = queue.timeout_presence
        if (
            offer.kind == OfferKind.ROUTED
            and presence is not None
            and self.status[agent].presence != presence
        ):
            self._set_presence(agent, presence, f"offer {offer.id} timed out", now)

    def _refused(self, offer: Offer, state: OfferState, why: str, now: float) -> None:
        self._end_offer(offer, state, why, now)
        if offer.kind == OfferKind.ROUTED:
            item = self.items[offer.item]
            self._enqueue(
                replace(item, rejected_by=(*item.rejected_by, offer.agent)), "requeued", why, now
            )

    def _on_presence_changed(self, e: PresenceChanged, now: float) -> None:
        self._agent(e.agent)
        if e.presence not in self.presences:
            raise RoutingError("unknown_presence", f"no presence state {e.presence!r}")
        if self.status[e.agent].presence != e.presence:
            self._set_presence(e.agent, e.presence, "set by agent", now)

    def _on_agent_logged_out(self, e: AgentLoggedOut, now: float) -> None:
        self._agent(e.agent)
        self._withdraw_agent(e.agent, "logged out", now)

    def _on_agent_disconnected(self, e: AgentDisconnected, now: float) -> None:
        self._agent(e.agent)
        if e.agent not in self.detached:
            self.detached.add(e.agent)
            self._touched.add(e.agent)
            self._dirty_agents.add(e.agent)
        # Also for an agent detached already: offers kept for a rejoin go with the console
        # that was to rejoin.
        self.deadlines.set(DeadlineKind.REJOIN, e.agent, None)
        self._rescind_all(e.agent, f"{e.agent}'s console disconnected", now)

    def _on_agent_connected(self, e: AgentConnected, now: float) -> None:
        self._agent(e.agent)
        self.deadlines.set(DeadlineKind.REJOIN, e.agent, None)
        if e.agent not in self.detached:
            return
        self.detached.discard(e.agent)
        self._touched.add(e.agent)
        self._dirty_agents.add(e.agent)

    def _on_rejoin_missed(self, e: RejoinMissed, now: float) -> None:
        if e.agent in self.detached:
            self._rescind_all(e.agent, f"{e.agent} has no console attached", now)

    def _rescind_all(self, agent: str, why: str, now: float) -> None:
        for offer_id in sorted(self.offers_of_agent.get(agent, ())):
            self._rescind(self.offers[offer_id], why, now)

    def _withdraw_agent(self, agent: str, why: str, now: float) -> None:
        """The agent is gone: live customers must not wait on them, records may."""
        self._rescind_all(agent, f"{agent} {why}", now)
        held = sorted((i for i in self.items.values() if i.agent == agent), key=lambda i: i.id)
        for item in held:
            mode = self.channels[item.channel].mode
            if item.state == ItemState.WRAP_UP:
                self._close(item, ItemState.CLOSED, "closed", f"{agent} {why}", now)
            elif mode == ChannelMode.SYNC or (mode == ChannelMode.ASYNC and not item.on_hold):
                self._release_to_queue(item, "requeued", f"{agent} {why}", now)
        if self.status[agent].presence != OFFLINE:
            self._set_presence(agent, OFFLINE, why, now)

    def _on_agent_updated(self, e: AgentUpdated, now: float) -> None:
        agent = e.agent
        if agent.id not in self.agents:
            self.status[agent.id] = AgentStatus(agent=agent.id, presence_since=now)
            self.load[agent.id] = _Load()
        before = set(self.queues_of(agent.id))
        self.agents[agent.id] = agent
        self._index_members()
        self._dirty_queues.update(before | set(self.queues_of(agent.id)))
        self._dirty_agents.add(agent.id)
        if agent.disabled:
            self._withdraw_agent(agent.id, "disabled", now)
            return
        for offer_id in sorted(self.offers_of_agent.get(agent.id, ())):
            offer = self.offers[offer_id]
            queue = self._queue_of(self.items[offer.item])
            if offer.kind == OfferKind.ROUTED and not (
                agent.id in self.members(queue.name) and self._skills_ok(agent.id, queue)
            ):
                self._rescind(offer, f"{agent.id} no longer serves {queue.name}", now)

    def _on_chat_ended(self, e: ChatEnded, now: float) -> None:
        item = self._assigned(e.item)
        self._end_chat(item, e.reason, now)

    def _end_chat(self, item: WorkItem, why: str, now: float) -> None:
        self._rescind_transfer(item, why, now)
        queue = self._queue_of(item)
        until = None if queue.wrap_up_time is None else now + queue.wrap_up_time
        self._emit_item(
            replace(
                item, state=ItemState.WRAP_UP, reply_by=None, wrap_up_until=until, abandon_at=None
            ),
            "wrap_up",
            why,
            now,
        )

    def _on_item_cancelled(self, e: ItemCancelled, now: float) -> None:
        item = self._item(e.item)
        if item.state == ItemState.QUEUED:
            self._close(item, ItemState.CANCELLED, "cancelled", e.reason, now)
        elif item.state == ItemState.OFFERED:
            self._end_offer(
                self.offers[self.offer_of_item[item.id]], OfferState.RESCINDED, e.reason, now
            )
            self._close(self.items[item.id], ItemState.CANCELLED, "cancelled", e.reason, now)
        elif item.state == ItemState.ACCEPTED:
            self._end_chat(item, e.reason, now)

    def _on_item_closed(self, e: ItemClosed, now: float) -> None:
        item = self._item(e.item)
        if item.state not in (ItemState.ACCEPTED, ItemState.WRAP_UP):
            raise RoutingError(
                "bad_state", f"work item {item.id} is {item.state}: cancel it, it is not assigned"
            )
        self._close(item, ItemState.CLOSED, "closed", "closed", now)

    def _on_wrap_up_ended(self, e: WrapUpEnded, now: float) -> None:
        item = self.items.get(e.item)
        if item is not None and item.state == ItemState.WRAP_UP:
            self._close(item, ItemState.CLOSED, "closed", "wrap-up time over", now)

    def _on_transfer_to_agent(self, e: TransferToAgent, now: float) -> None:
        item = self._assigned(e.item)
        target = self._agent(e.to_agent)
        if e.to_agent == item.agent:
            raise RoutingError("transfer_to_self", "the chat is already yours")
        if e.item in self.offer_of_item:
            raise RoutingError("transfer_pending", f"work item {e.item} has a transfer pending")
        if target.disabled or not self._presence_has(target.id, item.channel):
            raise RoutingError(
                "agent_unavailable",
                f"{target.id} is {self.status[target.id].presence}: transfers go only to agents "
                f"available for {item.channel}",
            )
        if target.id in self.detached:
            raise RoutingError(
                "agent_unavailable", f"{target.id} has no console attached: try again later"
            )
        if self._spare(target.id, item.channel) < item.weight:
            raise RoutingError("no_capacity", f"{target.id} has no room for another {item.channel}")
        queue = self._queue_of(item)
        numbered = replace(item, offers_made=item.offers_made + 1)
        self._put_item(numbered)
        reason = f"transfer from {item.agent} to {target.id}"
        offer = Offer(
            id=f"{item.id}.{numbered.offers_made}",
            item=item.id,
            agent=target.id,
            created_at=now,
            deadline=now + queue.offer_timeout,
            kind=OfferKind.TRANSFER,
            from_agent=item.agent,
            reason=reason,
        )
        self._put_offer(offer)
        self._out.append(OfferMade(at=now, offer=offer, item=numbered, reason=reason))

    def _on_transfer_to_queue(self, e: TransferToQueue, now: float) -> None:
        item = self._assigned(e.item)
        queue = self._queue_for(item, e.queue)
        moved = replace(
            item,
            queue=queue.name,
            # The sender is asked last, not never: if nobody else can take it, it comes back.
            rejected_by=(item.agent,) if item.agent else (),
            max_wait_at=None if queue.max_wait is None else now + queue.max_wait,
        )
        self._release_to_queue(moved, "requeued", f"{item.agent} transferred to {queue.name}", now)

    def _queue_for(self, item: WorkItem, name: str) -> Queue:
        """The queue a transfer or a supervisor moves `item` to: one that takes its channel."""
        queue = self.queues.get(name)
        if queue is None:
            raise RoutingError("unknown_queue", f"no queue {name!r}")
        if queue.channel != item.channel:
            raise RoutingError(
                "channel_mismatch", f"queue {queue.name} takes {queue.channel}, not {item.channel}"
            )
        return queue

    def _on_agent_replied(self, e: AgentReplied, now: float) -> None:
        item = self._item(e.item)
        if item.state != ItemState.ACCEPTED:
            return
        if self.channels[item.channel].mode == ChannelMode.ASYNC:
            if item.on_hold:
                return
            queue = self._queue_of(item)
            until = None if queue.abandon_after is None else now + queue.abandon_after
            held = replace(item, replied=True, reply_by=None, on_hold=True, abandon_at=until)
            self._emit_item(held, "on_hold", "waiting on the customer", now)
        elif not item.replied:
            self._emit_item(replace(item, replied=True, reply_by=None), "replied", "replied", now)

    def _on_customer_replied(self, e: CustomerReplied, now: float) -> None:
        item = self._item(e.item)
        if item.state != ItemState.ACCEPTED or not item.on_hold or item.agent is None:
            return
        agent = item.agent
        back = replace(item, on_hold=False, abandon_at=None)
        if self._gone(agent):
            # Their agent has left for the day: the customer goes to someone who is here. An
            # agent who is merely Away keeps the conversation and finds it unread on return.
            self._release_to_queue(
                replace(back, enqueued_at=now, rejected_by=()),
                "requeued",
                f"customer replied; {agent} is {self.status[agent].presence}",
                now,
            )
        elif self._spare(agent, item.channel) >= item.weight:
            self._emit_item(back, "resumed", "customer replied", now)
        else:
            self._emit_item(
                replace(back, awaiting_capacity=True),
                "awaiting_capacity",
                f"customer replied; {agent} is full, next free slot is theirs",
                now,
            )

    def _on_max_wait(self, e: MaxWaitReached, now: float) -> None:
        item = self.items.get(e.item)
        if item is None or item.state != ItemState.QUEUED:
            return  # an offered item is checked again if it comes back to the queue
        moved, change, why = self._max_wait_passed(item, now)
        self._emit_item(moved, change, why, now)

    def _on_first_reply_missed(self, e: FirstReplyMissed, now: float) -> None:
        item = self.items.get(e.item)
        if item is None or item.state != ItemState.ACCEPTED or item.replied or not item.agent:
            return
        queue = self._queue_of(item)
        self._release_to_queue(
            replace(item, rejected_by=(*item.rejected_by, item.agent)),
            "reclaimed",
            f"{item.agent} did not reply within {queue.reply_deadline:g}s",
            now,
        )

    def _on_abandon_due(self, e: AbandonDue, now: float) -> None:
        item = self.items.get(e.item)
        if item is None or not item.on_hold:
            return
        self._close(item, ItemState.ABANDONED, "abandoned", "no customer reply", now)

    # ------------------------------------------------------------------ supervisors step in

    def _stepped_in(self, item_id: str) -> WorkItem:
        """An item a supervisor may move: open and not in wrap-up (closing is what is left)."""
        item = self._item(item_id)
        if item.state == ItemState.WRAP_UP:
            raise RoutingError("bad_state", f"work item {item_id} is in wrap-up: close it")
        return item

    def _on_item_reassigned(self, e: ItemReassigned, now: float) -> None:
        item = self._stepped_in(e.item)
        target = self._agent(e.to_agent)
        if e.to_agent == item.agent:
            raise RoutingError("already_owner", f"{e.to_agent} already has work item {e.item}")
        if target.disabled:
            raise RoutingError("agent_unavailable", f"{target.id} is disabled")
        taking_over = e.to_agent == e.by
        # Given to someone else, the chat must reach a person at a console who can serve the
        # channel, as a transfer must; a supervisor taking it over is that person.
        if not taking_over and not self._presence_has(target.id, item.channel):
            raise RoutingError(
                "agent_unavailable",
                f"{target.id} is {self.status[target.id].presence}: only to agents available "
                f"for {item.channel}",
            )
        if not taking_over and target.id in self.detached:
            raise RoutingError("agent_unavailable", f"{target.id} has no console attached")
        offer_id = self.offer_of_item.get(item.id)
        pending = self.offers.get(offer_id) if offer_id is not None else None
        # Invariant 2 holds for supervisors too: the item is charged to whoever gets it. An
        # offer of this item to the target is room the target gets back first.
        freed = item.weight if pending is not None and pending.agent == target.id else 0
        if not item.on_hold and self._spare(target.id, item.channel) + freed < item.weight:
            raise RoutingError("no_capacity", f"{target.id} has no room for another {item.channel}")
        before = item.agent
        if taking_over:
            why = f"taken over by {e.by}" + (f" from {before}" if before else "")
        else:
            why = f"{e.by} gave it to {target.id}" + (f" from {before}" if before else "")
        why = f"{why}: {e.reason}"
        if pending is not None:
            self._end_offer(pending, OfferState.RESCINDED, why, now)
        item = self.items[item.id]
        live = self.channels[item.channel].mode == ChannelMode.SYNC
        queue = self._queue_of(item)
        # Someone handed a chat must answer it as after a transfer; the supervisor who took it
        # over is not timed by the host.
        reply_by = (
            now + queue.reply_deadline
            if live and queue.reply_deadline and not taking_over and not item.replied
            else None
        )
        self.last_served[item.customer] = (target.id, now)
        given = replace(
            item,
            state=ItemState.ACCEPTED,
            agent=target.id,
            rejected_by=(),
            preferred_agent=None,
            max_wait_at=None,
            awaiting_capacity=False,
            reply_by=reply_by,
        )
        self._emit_item(given, "transferred" if before else "assigned", why, now)

    def _on_item_moved(self, e: ItemMoved, now: float) -> None:
        item = self._stepped_in(e.item)
        queue = self._queue_for(item, e.queue)
        if item.agent is None and item.queue == queue.name:
            raise RoutingError("same_queue", f"work item {item.id} waits in {queue.name} already")
        why = f"{e.by} moved it to {queue.name}: {e.reason}"
        held = item.agent
        offer_id = self.offer_of_item.get(item.id)
        if offer_id is not None:
            self._end_offer(self.offers[offer_id], OfferState.RESCINDED, why, now)
        moved = replace(
            self.items[item.id],
            queue=queue.name,
            # Whoever held it is asked last, not never: if nobody else can take it, it returns.
            rejected_by=(held,) if held else (),
            max_wait_at=None if queue.max_wait is None else now + queue.max_wait,
        )
        # "queued" moves a waiting item's record to the new queue; "requeued" frees its owner.
        self._enqueue(moved, "requeued" if held else "queued", why, now)

    def _on_item_closed_by(self, e: ItemClosedBy, now: float) -> None:
        item = self._item(e.item)
        why = f"closed by {e.by}: {e.reason}"
        if item.state in (ItemState.QUEUED, ItemState.OFFERED):
            self._close(item, ItemState.CANCELLED, "cancelled", why, now)
        else:
            self._close(item, ItemState.CLOSED, "closed", why, now)

    def _on_presence_forced(self, e: PresenceForced, now: float) -> None:
        self._agent(e.agent)
        if e.presence not in self.presences:
            raise RoutingError("unknown_presence", f"no presence state {e.presence!r}")
        if self.status[e.agent].presence == e.presence:
            raise RoutingError("same_presence", f"{e.agent} is {e.presence} already")
        why = f"set by {e.by}: {e.reason}"
        if e.presence == OFFLINE:
            self._withdraw_agent(e.agent, why, now)
        else:
            self._set_presence(e.agent, e.presence, why, now)

    def _deadline_event(self, kind: DeadlineKind, key: str) -> AnyEvent | None:
        if kind == DeadlineKind.OFFER_EXPIRY:
            return OfferExpired(offer=key) if key in self.offers else None
        if kind == DeadlineKind.REJOIN:
            return RejoinMissed(agent=key) if key in self.detached else None
        if key not in self.items:
            return None
        due: dict[DeadlineKind, type[MaxWaitReached | FirstReplyMissed | WrapUpEnded | AbandonDue]]
        due = {
            DeadlineKind.MAX_WAIT: MaxWaitReached,
            DeadlineKind.FIRST_REPLY: FirstReplyMissed,
            DeadlineKind.WRAP_UP: WrapUpEnded,
            DeadlineKind.ABANDON: AbandonDue,
        }
        return due[kind](item=key)

    _handlers: ClassVar[dict[type, Callable[..., None]]] = {
        ItemArrived: _on_item_arrived,
        ItemCancelled: _on_item_cancelled,
        OfferAccepted: _on_offer_accepted,
        OfferRejected: _on_offer_rejected,
        OfferExpired: _on_offer_expired,
        PresenceChanged: _on_presence_changed,
        AgentLoggedOut: _on_agent_logged_out,
        AgentDisconnected: _on_agent_disconnected,
        AgentConnected: _on_agent_connected,
        RejoinMissed: _on_rejoin_missed,
        AgentUpdated: _on_agent_updated,
        ChatEnded: _on_chat_ended,
        ItemClosed: _on_item_closed,
        WrapUpEnded: _on_wrap_up_ended,
        TransferToAgent: _on_transfer_to_agent,
        TransferToQueue: _on_transfer_to_queue,
        AgentReplied: _on_agent_replied,
        CustomerReplied: _on_customer_replied,
        MaxWaitReached: _on_max_wait,
        FirstReplyMissed: _on_first_reply_missed,
        AbandonDue: _on_abandon_due,
        ItemReassigned: _on_item_reassigned,
        ItemMoved: _on_item_moved,
        ItemClosedBy: _on_item_closed_by,
        PresenceForced: _on_presence_forced,
    }


def _weight_note(item: WorkItem) -> list[str]:
    """An item heavier than one says so in its reasons: it needs that much room."""
    return [f"weight {item.weight}"] if item.weight != 1 else []
