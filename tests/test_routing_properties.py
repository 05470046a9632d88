"""Stateful property tests of the routing engine against ARCHITECTURE.md's invariants.

Hypothesis drives random events over random configurations. After every step the test checks
the engine against its own reference computations (eligibility, load), written here
independently of the engine so a shared mistake is less likely.

The same machine runs again on a real store (`test_routing_invariants_on_a_store`, on
PostgreSQL and SQLite): every step's decisions are committed as RoutingService commits them, a
`restart` rebuilds the engine from what the store loads as the service's reload does, and a
`host_restart` does so from a newly opened store, as a new process (or a router taking over)
does. The rebuilt engine must equal the running one.

Budget: INBOX_ROUTING_EXAMPLES x INBOX_ROUTING_STEPS, and INBOX_ROUTING_STORE_EXAMPLES x
INBOX_ROUTING_STORE_STEPS on each store (defaults keep CI quick). The step count of a run is
written to INBOX_ROUTING_REPORT when set; docs/testing.md records the long runs.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sqlite3
from collections import Counter
from collections.abc import Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from core.model import (
    OPEN_ITEM_STATES,
    Agent,
    AssignmentRule,
    ChannelMode,
    ItemState,
    Offer,
    OfferKind,
    OfferState,
    PresenceState,
    Queue,
    ServiceChannel,
    SkillRequirement,
    WorkItem,
)
from core.routing.decisions import OfferMade, PresenceSet
from core.routing.engine import REJOIN_GRACE, Router, RoutingConfig, RoutingError
from core.routing.events import (
    AgentConnected,
    AgentDisconnected,
    AgentLoggedOut,
    AgentReplied,
    AgentUpdated,
    ChatEnded,
    CustomerReplied,
    ItemArrived,
    ItemCancelled,
    ItemClosed,
    ItemClosedBy,
    ItemMoved,
    ItemReassigned,
    OfferAccepted,
    OfferRejected,
    PresenceChanged,
    PresenceForced,
    TransferToAgent,
    TransferToQueue,
)
from core.service.routing import read_routing, routing_write
from core.timers import DeadlineKind
from store import DB_FILENAME, Store, open_store

EXAMPLES = int(os.environ.get("INBOX_ROUTING_EXAMPLES", "150"))
STEPS = int(os.environ.get("INBOX_ROUTING_STEPS", "60"))
STORE_EXAMPLES = int(os.environ.get("INBOX_ROUTING_STORE_EXAMPLES", "20"))
STORE_STEPS = int(os.environ.get("INBOX_ROUTING_STORE_STEPS", "60"))
STEP_COUNTER: Counter[str] = Counter()

CHANNELS = [
    ServiceChannel(name="chat", mode=ChannelMode.SYNC),
    ServiceChannel(name="msg", mode=ChannelMode.ASYNC),
    ServiceChannel(name="case", mode=ChannelMode.RECORD),
]
MODE = {c.name: c.mode for c in CHANNELS}
PRESENCES = [
    PresenceState(name="Available", channels=("chat", "msg", "case")),
    PresenceState(name="ChatOnly", channels=("chat",)),
    PresenceState(name="Away"),
    PresenceState(name="Offline"),
]
PRESENCE_CHANNELS = {p.name: set(p.channels) for p in PRESENCES}
AGENT_IDS = ["ann", "bob", "cyd", "dee", "eve"]
GROUPS = ["g1", "g2"]
SKILLS = ["french", "billing"]
CONDITIONS = ["", 'lang == "fr"', 'tier in ("gold", "platinum")', "not vip", "size > 2"]


def _write_report() -> None:
    path = os.environ.get("INBOX_ROUTING_REPORT")
    if path:
        with open(path, "w") as f:
            f.write(f"steps={STEP_COUNTER['steps']} runs={STEP_COUNTER['runs']}\n")


atexit.register(_write_report)


@st.composite
def agents_st(draw: st.DrawFn) -> list[Agent]:
    n = draw(st.integers(1, len(AGENT_IDS)))
    out = []
    for aid in AGENT_IDS[:n]:
        out.append(
            Agent(
                id=aid,
                skills=draw(
                    st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 3))
                    | st.just({"french": 2, "billing": 1})
                ),
                capacity=draw(
                    st.fixed_dictionaries(
                        {},
                        optional={c: st.integers(0, 3) for c in ("chat", "msg", "case")},
                    )
                    | st.just({"chat": 2, "msg": 2, "case": 2})
                    | st.just({"chat": 3, "msg": 3, "case": 1})
                ),
                universal_capacity=draw(st.integers(1, 5)),
                groups=draw(
                    st.just(("g1", "g2"))
                    | st.lists(st.sampled_from(GROUPS), unique=True, max_size=2).map(tuple)
                ),
            )
        )
    return out


@st.composite
def queues_st(draw: st.DrawFn) -> list[Queue]:
    n = draw(st.integers(1, 4))
    queues: list[Queue] = []
    for i in range(n):
        channel = draw(st.sampled_from(["chat", "msg", "case"]))
        # Overflow only to a later queue of the same channel: acyclic by construction.
        later = [f"q{j}" for j in range(i + 1, n)]
        queues.append(
            Queue(
                name=f"q{i}",
                channel=channel,
                condition=draw(st.sampled_from(CONDITIONS)),
                order=i,
                rule=draw(st.sampled_from(list(AssignmentRule))),
                skills=tuple(
                    SkillRequirement(name=s, level=draw(st.integers(1, 2)))
                    for s in draw(st.lists(st.sampled_from(SKILLS), unique=True, max_size=1))
                ),
                prefer_skill_level=draw(st.booleans()),
                groups=tuple(draw(st.lists(st.sampled_from(GROUPS), unique=True, max_size=1))),
                offer_timeout=draw(st.sampled_from([5.0, 30.0])),
                timeout_presence=draw(st.sampled_from([None, "Away"])),
                max_wait=draw(st.sampled_from([None, 20.0, 60.0])),
                overflow=draw(st.sampled_from([None, *later])) if later else None,
                reply_deadline=draw(st.sampled_from([None, 15.0])),
                wrap_up_time=draw(st.sampled_from([None, 10.0])),
                affinity_window=draw(st.sampled_from([None, 300.0])),
                abandon_after=draw(st.sampled_from([None, 40.0])),
            )
        )
    # Usually a catch-all queue per channel at the end, so most items are routable.
    if draw(st.booleans()) or draw(st.booleans()):
        for channel in ("chat", "msg", "case"):
            queues.append(Queue(name=f"all_{channel}", channel=channel, order=99))
    # Overflow targets must take the same channel; drop the ones that do not.
    by_name = {q.name: q for q in queues}
    return [
        q
        if q.overflow is None or by_name[q.overflow].channel == q.channel
        else Queue(**{**{f: getattr(q, f) for f in q.__struct_fields__}, "overflow": None})
        for q in queues
    ]


class RoutingMachine(RuleBasedStateMachine):
    @initialize(
        agents=agents_st(),
        queues=queues_st(),
        max_pending=st.integers(1, 2),
        present=st.just(AGENT_IDS) | st.lists(st.sampled_from(AGENT_IDS), unique=True),
    )
    def setup(
        self, agents: list[Agent], queues: list[Queue], max_pending: int, present: list[str]
    ) -> None:
        STEP_COUNTER["runs"] += 1
        self.config = RoutingConfig(
            channels=CHANNELS,
            presences=PRESENCES,
            queues=queues,
            agents=agents,
            max_pending_offers=max_pending,
        )
        self.agents = {a.id: a for a in agents}
        self.queues = {q.name: q for q in queues}
        self.router = Router(self.config)
        self.now = 1000.0
        self.presence = {a: "Offline" for a in self.agents}
        self.detached: set[str] = set()  # agents with no console attached
        self.next_item = 0
        self.step_offers: list[OfferMade] = []
        for agent in (a for a in present if a in self.agents):
            self.apply(PresenceChanged(agent=agent, presence="Available"))

    # ---------------------------------------------------------------- plumbing

    def apply(self, event: object) -> None:
        before = self.snapshot()
        try:
            decisions = self.router.handle(event, self.now)  # type: ignore[arg-type]
        except RoutingError:
            # A refused event must leave no trace.
            assert self.snapshot() == before
            decisions = []
        self.observe(decisions)

    def observe(self, decisions: list) -> None:
        STEP_COUNTER["steps"] += 1
        if STEP_COUNTER["steps"] % 50_000 == 0:
            _write_report()  # long runs leave a trail even if they are stopped
        for d in decisions:
            if isinstance(d, PresenceSet):
                self.presence[d.agent] = d.presence
        self.step_offers = [d for d in decisions if isinstance(d, OfferMade)]
        self.check_offers_made()

    def snapshot(self) -> tuple:
        r = self.router
        return (
            dict(r.items),
            dict(r.offers),
            {a: (dict(ld.per_channel), ld.total, ld.pending) for a, ld in r.load.items()},
            dict(r.status),
        )

    def pick(self, data: st.DataObject, seq: list, label: str):
        return data.draw(st.sampled_from(sorted(seq)), label=label)

    def held(self, on_hold: bool | None = None) -> list[str]:
        """Accepted items: most interesting events only apply to these, so aim at them."""
        return [
            i.id
            for i in self.router.items.values()
            if i.state == ItemState.ACCEPTED and (on_hold is None or i.on_hold == on_hold)
        ]

    # ---------------------------------------------------------------- rules

    @rule(
        channel=st.sampled_from(["chat", "msg", "case"]),
        priority=st.integers(0, 2),
        weight=st.integers(1, 2),
        attrs=st.fixed_dictionaries(
            {},
            optional={
                "lang": st.sampled_from(["fr", "en"]),
                "tier": st.sampled_from(["gold", "silver"]),
                "vip": st.booleans(),
                "size": st.integers(0, 5),
            },
        ),
        customer=st.sampled_from(["c1", "c2", "c3", "c4"]),
    )
    def arrive(self, channel, priority, weight, attrs, customer) -> None:
        self.next_item += 1
        item = WorkItem(
            id=f"W{self.next_item}",
            channel=channel,
            customer=customer,
            created_at=self.now,
            attributes=attrs,
            priority=priority,
            weight=weight,
        )
        self.apply(ItemArrived(item=item))

    @rule(
        agent=st.sampled_from(AGENT_IDS),
        presence=st.sampled_from(["Available", "Available", "ChatOnly", "Away", "Offline"]),
    )
    def set_presence(self, agent, presence) -> None:
        self.apply(PresenceChanged(agent=agent, presence=presence))

    @precondition(lambda self: self.router.offers)
    @rule(data=st.data())
    def accept(self, data) -> None:
        self.apply(OfferAccepted(offer=self.pick(data, list(self.router.offers), "offer")))

    @precondition(lambda self: self.router.offers)
    @rule(data=st.data(), reason=st.sampled_from(["", "busy"]))
    def reject(self, data, reason) -> None:
        offer = self.pick(data, list(self.router.offers), "offer")
        self.apply(OfferRejected(offer=offer, reason=reason))

    @rule(offer=st.sampled_from(["W1.1", "W2.3", "nope"]))
    def answer_unknown_offer(self, offer) -> None:
        if offer not in self.router.offers:
            self.apply(OfferAccepted(offer=offer))

    @precondition(lambda self: self.router.items)
    @rule(data=st.data())
    def agent_replies(self, data) -> None:
        self.apply(AgentReplied(item=self.pick(data, list(self.router.items), "item")))

    @precondition(lambda self: self.router.items)
    @rule(data=st.data())
    def customer_replies(self, data) -> None:
        self.apply(CustomerReplied(item=self.pick(data, list(self.router.items), "item")))

    @precondition(lambda self: self.router.items)
    @rule(data=st.data())
    def end_chat(self, data) -> None:
        self.apply(ChatEnded(item=self.pick(data, list(self.router.items), "item")))

    @precondition(lambda self: self.router.items)
    @rule(data=st.data())
    def close(self, data) -> None:
        self.apply(ItemClosed(item=self.pick(data, list(self.router.items), "item")))

    @precondition(lambda self: self.router.items)
    @rule(data=st.data())
    def cancel(self, data) -> None:
        self.apply(ItemCancelled(item=self.pick(data, list(self.router.items), "item")))

    @precondition(lambda self: self.router.items)
    @rule(data=st.data(), to=st.sampled_from(AGENT_IDS))
    def transfer_to_agent(self, data, to) -> None:
        item = self.pick(data, list(self.router.items), "item")
        self.apply(TransferToAgent(item=item, to_agent=to))

    @precondition(lambda self: self.router.items)
    @rule(data=st.data(), queue=st.sampled_from(["q0", "q1", "q2", "q3", "all_chat", "all_msg"]))
    def transfer_to_queue(self, data, queue) -> None:
        item = self.pick(data, list(self.router.items), "item")
        self.apply(TransferToQueue(item=item, queue=queue))

    @precondition(lambda self: self.held())
    @rule(data=st.data(), what=st.sampled_from(["reply", "end", "close", "cancel", "transfer"]))
    def work_on_accepted(self, data, what) -> None:
        item = self.pick(data, self.held(), "item")
        if what == "reply":
            self.apply(AgentReplied(item=item))
        elif what == "end":
            self.apply(ChatEnded(item=item))
        elif what == "close":
            self.apply(ItemClosed(item=item))
        elif what == "cancel":
            self.apply(ItemCancelled(item=item))
        else:
            to = data.draw(st.sampled_from(sorted(self.agents)), label="to")
            self.apply(TransferToAgent(item=item, to_agent=to))

    # Hypothesis picks rules uniformly; doubling these keeps runs from drowning in arrivals.
    accept_again = accept
    work_on_accepted_again = work_on_accepted

    @precondition(lambda self: self.held(on_hold=True))
    @rule(data=st.data())
    def customer_returns(self, data) -> None:
        self.apply(CustomerReplied(item=self.pick(data, self.held(on_hold=True), "item")))

    # ---- a supervisor stepping in (by one of the agents: supervisors are agents to routing)

    @precondition(lambda self: self.router.items)
    @rule(data=st.data(), to=st.sampled_from(AGENT_IDS), by=st.sampled_from(AGENT_IDS))
    def supervisor_reassigns(self, data, to, by) -> None:
        item = self.pick(data, list(self.router.items), "item")
        taking_over = data.draw(st.booleans(), label="taking_over")
        before = self.router.items[item].agent
        self.apply(ItemReassigned(item=item, to_agent=by if taking_over else to, by=by, reason="r"))
        held = self.router.items.get(item)
        if held is not None and held.agent != before:
            # Given at once: accepted by the one it was given to, nothing left pending.
            assert held.state == ItemState.ACCEPTED and item not in self.router.offer_of_item

    @precondition(lambda self: self.router.items)
    @rule(data=st.data(), queue=st.sampled_from(["q0", "q1", "q2", "q3", "all_chat", "all_msg"]))
    def supervisor_moves(self, data, queue) -> None:
        item = self.pick(data, list(self.router.items), "item")
        self.apply(ItemMoved(item=item, queue=queue, by="ann", reason="r"))

    @precondition(lambda self: self.router.items)
    @rule(data=st.data())
    def supervisor_closes(self, data) -> None:
        item = self.pick(data, list(self.router.items), "item")
        self.apply(ItemClosedBy(item=item, by="ann", reason="r"))
        assert item not in self.router.items

    @rule(
        agent=st.sampled_from(AGENT_IDS),
        presence=st.sampled_from(["Available", "ChatOnly", "Away", "Offline"]),
    )
    def supervisor_sets_presence(self, agent, presence) -> None:
        self.apply(PresenceForced(agent=agent, presence=presence, by="ann", reason="r"))
        if agent in self.agents and presence == "Offline":
            # Gone from the floor: no live chat waits on them.
            assert not any(
                i.agent == agent and MODE[i.channel] == ChannelMode.SYNC
                for i in self.router.items.values()
                if i.state == ItemState.ACCEPTED
            )

    @rule(agent=st.sampled_from(AGENT_IDS))
    def log_out(self, agent) -> None:
        self.apply(AgentLoggedOut(agent=agent))

    @rule(agent=st.sampled_from(AGENT_IDS))
    def console_drops(self, agent) -> None:
        r = self.router
        offered = {
            o.item: (r.items[o.item].enqueued_at, r.items[o.item].priority)
            for o in r.offers.values()
            if o.agent == agent and o.kind == OfferKind.ROUTED
        }
        self.apply(AgentDisconnected(agent=agent))
        if agent not in self.agents:
            return
        self.detached.add(agent)
        assert not any(o.agent == agent for o in r.offers.values())
        for item_id, place in offered.items():
            # Rescinded, not rejected: the item keeps its place and the agent is no rejecter.
            item = r.items[item_id]
            assert (item.enqueued_at, item.priority) == place
            assert agent not in item.rejected_by

    @rule(agent=st.sampled_from(AGENT_IDS))
    def console_returns(self, agent) -> None:
        self.apply(AgentConnected(agent=agent))
        self.detached.discard(agent)

    @rule(
        agent=st.sampled_from(AGENT_IDS),
        skills=st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 3)),
        groups=st.lists(st.sampled_from(GROUPS), unique=True, max_size=2),
        extra=st.integers(0, 2),
        disabled=st.booleans(),
    )
    def update_agent(self, agent, skills, groups, extra, disabled) -> None:
        old = self.agents.get(agent)
        if old is None:
            return
        # Capacity only grows: lowering it below the current load is an admin's business and
        # deliberately does not evict conversations.
        new = Agent(
            id=agent,
            skills=skills,
            groups=tuple(groups),
            capacity={c: n + extra for c, n in old.capacity.items()},
            universal_capacity=old.universal_capacity + extra,
            disabled=disabled and not old.disabled,
        )
        self.agents[agent] = new
        self.apply(AgentUpdated(agent=new))

    @rule(dt=st.sampled_from([0.5, 3.0, 7.0, 16.0, 31.0, 45.0]))
    def advance(self, dt) -> None:
        self.now += dt
        # One deadline at a time so the checks see every intermediate state.
        while (event := self.router.next_due_event(self.now)) is not None:
            self.observe(self.router.handle(event, self.now))
            self.check_all()
        self.observe([])

    @rule()
    def restart(self) -> None:
        """Rebuild from what a store would hold; the new engine must agree with the old one."""
        r = self.router
        fresh = self.rebuilt(self.detached)
        decisions = fresh.resume(self.now)
        assert decisions == [], decisions
        assert self.snapshot_of(fresh) == self.snapshot_of(r)
        fresh._rr_last = dict(r._rr_last)  # round-robin position is advisory, not stored
        self.router = fresh
        self.observe([])

    def current_config(self) -> RoutingConfig:
        """The configuration as it is now (agents updated), as the service keeps it."""
        return RoutingConfig(
            channels=CHANNELS,
            presences=PRESENCES,
            queues=list(self.queues.values()),
            agents=list(self.agents.values()),
            max_pending_offers=self.config.max_pending_offers,
        )

    def rebuilt(self, detached: Iterable[str]) -> Router:
        """A new engine from what a store would hold."""
        r = self.router
        return Router(
            self.current_config(),
            statuses=r.status.values(),
            items=r.items.values(),
            offers=r.offers.values(),
            last_served=r.last_served,
            detached=detached,
        )

    @rule()
    def host_restart(self) -> None:
        """A host process starts with no console attached: the engine keeps every presence
        and every pending offer, each for REJOIN_GRACE (then rescinded, the items keeping
        their places), and offers nothing until consoles return."""
        r = self.router
        places = {i.id: (i.enqueued_at, i.priority) for i in r.items.values()}
        fresh = self.rebuilt(AGENT_IDS)
        # Before its first step it holds what the running one held, pending offers included.
        assert self.snapshot_of(fresh) == self.snapshot_of(r)
        self.router = fresh
        self.detached = set(self.agents)
        # Deadlines that fell due while down fire first, as `resume` does; one at a time so
        # the checks see every intermediate state.
        decisions = fresh.resume(self.now)
        assert not any(isinstance(d, OfferMade) for d in decisions), decisions
        # The offers still pending wait REJOIN_GRACE for their agent's console.
        for offer in fresh.offers.values():
            assert offer == r.offers[offer.id]
            assert fresh.deadlines.get(DeadlineKind.REJOIN, offer.agent) == self.now + REJOIN_GRACE
        for item in fresh.items.values():
            if item.id in places and item.state == ItemState.QUEUED:
                assert (item.enqueued_at, item.priority) == places[item.id]
        self.observe(decisions)

    @precondition(lambda self: self.router.offers)
    @rule()
    def host_restart_with_offers_pending(self) -> None:
        """The same, aimed at the moment it matters: offers pending are rarely there when
        `host_restart` comes by chance, and their grace is what is under test."""
        self.host_restart()

    def snapshot_of(self, r: Router) -> tuple:
        deadlines = {
            (kind, key): r.deadlines.get(kind, key)
            for kind in DeadlineKind
            for key in [*r.items, *r.offers]
            if r.deadlines.get(kind, key) is not None
        }
        return (
            dict(r.items),
            dict(r.offers),
            {
                a: ({c: n for c, n in ld.per_channel.items() if n}, ld.total, ld.pending)
                for a, ld in r.load.items()
            },
            deadlines,
            {q: list(v) for q, v in r.waiting.items()},
            dict(r.status),
            dict(r.last_served),
        )

    # ---------------------------------------------------------------- reference model

    def members(self, queue: Queue) -> list[str]:
        return [
            a.id
            for a in self.agents.values()
            if not a.disabled and (not queue.groups or set(queue.groups) & set(a.groups))
        ]

    def skilled(self, agent: str, queue: Queue) -> bool:
        skills = self.agents[agent].skills
        return all(skills.get(s.name, 0) >= s.level for s in queue.skills)

    def available_for(self, agent: str, channel: str) -> bool:
        """Present for the channel with a console attached: what an offer needs."""
        return channel in PRESENCE_CHANNELS[self.presence[agent]] and agent not in self.detached

    def may_hold(self, offer: Offer, channel: str) -> bool:
        """What a pending offer needs: its agent available, or present with a console a
        rebuilt engine still waits for, until a deadline no later than REJOIN_GRACE away."""
        if self.available_for(offer.agent, channel):
            return True
        rejoin_by = self.router.deadlines.get(DeadlineKind.REJOIN, offer.agent)
        return (
            channel in PRESENCE_CHANNELS[self.presence[offer.agent]]
            and rejoin_by is not None
            and self.now < rejoin_by <= self.now + REJOIN_GRACE
        )

    def reference_load(self) -> dict[str, Counter[str]]:
        load: dict[str, Counter[str]] = {a: Counter() for a in self.agents}
        for item in self.router.items.values():
            if (
                item.agent
                and item.state in (ItemState.ACCEPTED, ItemState.WRAP_UP)
                and not item.on_hold
                and not item.awaiting_capacity
            ):
                load[item.agent][item.channel] += item.weight
        for offer in self.router.offers.values():
            item = self.router.items[offer.item]
            load[offer.agent][item.channel] += item.weight
        return load

    def spare(self, load: dict[str, Counter[str]], agent: str, channel: str) -> int:
        a = self.agents[agent]
        return min(
            a.capacity.get(channel, 0) - load[agent][channel],
            a.universal_capacity - sum(load[agent].values()),
        )

    def reference_eligible(self, item: WorkItem, load: dict[str, Counter[str]]) -> list[str]:
        queue = self.queues[item.queue]  # type: ignore[index]
        pool = [
            a
            for a in self.members(queue)
            if self.available_for(a, queue.channel) and self.skilled(a, queue)
        ]
        all_rejected = all(a in item.rejected_by for a in pool)
        pending = Counter(
            o.agent for o in self.router.offers.values() if o.kind == OfferKind.ROUTED
        )
        owing = {i.agent for i in self.router.items.values() if i.awaiting_capacity and i.agent}
        return [
            a
            for a in pool
            if pending[a] < self.config.max_pending_offers
            and a not in owing
            and self.spare(load, a, item.channel) >= max(item.weight, 1)
            and (all_rejected or a not in item.rejected_by)
        ]

    # ---------------------------------------------------------------- invariants

    def check_offers_made(self) -> None:
        """Invariants 3 and 4 at the moment of each offer."""
        for d in self.step_offers:
            offer, item = d.offer, d.item
            if offer.kind == OfferKind.TRANSFER:
                assert self.available_for(offer.agent, item.channel)
                continue
            queue = self.queues[item.queue]  # type: ignore[index]
            assert offer.agent in self.members(queue), d.reason
            assert self.skilled(offer.agent, queue), d.reason
            assert offer.agent not in item.rejected_by, d.reason
            assert offer.reason.startswith(f"offered to {offer.agent}: ")
            if offer.id not in self.router.offers:
                continue
            # Invariant 4: no older or more urgent item the agent could have taken still waits.
            for waiting in self.router.waiting_items(queue.name):
                if (-waiting.priority, waiting.enqueued_at, waiting.id) < (
                    -item.priority,
                    item.enqueued_at,
                    item.id,
                ):
                    pool = [
                        a
                        for a in self.members(queue)
                        if self.available_for(a, queue.channel) and self.skilled(a, queue)
                    ]
                    counted = not all(a in waiting.rejected_by for a in pool)
                    assert waiting.weight > item.weight or (
                        counted and offer.agent in waiting.rejected_by
                    ), f"{waiting.id} waits while younger {item.id} went to {offer.agent}"

    @invariant()
    def check_all(self) -> None:
        if not hasattr(self, "router"):
            return
        r = self.router
        # Presence as reported by decisions matches the engine.
        for a in self.agents:
            assert r.status[a].presence == self.presence[a]
        # Invariant 1: at most one pending offer per item, and the item's state agrees.
        per_item = Counter(o.item for o in r.offers.values())
        assert all(n == 1 for n in per_item.values())
        for item in r.items.values():
            assert item.state in OPEN_ITEM_STATES
            routed = [
                o for o in r.offers.values() if o.item == item.id and o.kind == OfferKind.ROUTED
            ]
            assert (item.state == ItemState.OFFERED) == bool(routed), item
        # The queue pane's active counts, kept by the engine, match the records.
        active = Counter(
            i.queue for i in r.items.values() if i.state in (ItemState.ACCEPTED, ItemState.WRAP_UP)
        )
        assert {q: n for q, n in r.active.items() if n} == dict(active)
        # Invariant 2: capacity, recomputed from the records.
        load = self.reference_load()
        for a, used in load.items():
            assert dict(+used) == {c: n for c, n in r.load[a].per_channel.items() if n}
            agent = self.agents[a]
            for channel, n in used.items():
                assert n <= agent.capacity.get(channel, 0), (a, channel, n)
            assert sum(used.values()) <= agent.universal_capacity
        # Invariant 3 for offers still pending.
        for offer in r.offers.values():
            item = r.items[offer.item]
            assert offer.state == OfferState.PENDING
            assert self.may_hold(offer, item.channel)
            if offer.kind == OfferKind.ROUTED:
                queue = self.queues[item.queue]  # type: ignore[index]
                assert offer.agent in self.members(queue) and self.skilled(offer.agent, queue)
            # Invariant 8: every pending offer's deadline is armed.
            assert r.deadlines.get(DeadlineKind.OFFER_EXPIRY, offer.id) == offer.deadline
        # Invariant 5: work-conserving.
        for qname in self.queues:
            for item in r.waiting_items(qname):
                assert item.state == ItemState.QUEUED and item.queue == qname
                eligible = self.reference_eligible(item, load)
                assert not eligible, f"{item.id} waits while {eligible} could take it"
        # Returning customers owed to a full agent: the agent must be present and still full.
        for item in r.items.values():
            if item.awaiting_capacity:
                assert item.agent is not None
                assert self.presence[item.agent] != "Offline"
                assert not self.agents[item.agent].disabled
                assert self.spare(load, item.agent, item.channel) < item.weight
            # Invariant 8: item deadlines armed as recorded.
            for kind, at in (
                (
                    DeadlineKind.MAX_WAIT,
                    item.max_wait_at if item.state == ItemState.QUEUED else None,
                ),
                (DeadlineKind.FIRST_REPLY, item.reply_by),
                (DeadlineKind.WRAP_UP, item.wrap_up_until),
                (DeadlineKind.ABANDON, item.abandon_at),
            ):
                assert r.deadlines.get(kind, item.id) == at
            if item.state == ItemState.ACCEPTED and MODE[item.channel] == ChannelMode.SYNC:
                assert not item.on_hold


RoutingMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_routing_invariants = pytest.mark.filterwarnings("ignore")(RoutingMachine.TestCase)


# ------------------------------------------------------------------------ on a real store

T = TypeVar("T")

# What routing writes; emptied between examples (offers first: they refer to items).
ROUTING_TABLES = ("offers", "work_items", "agent_statuses", "audit", "affinity")


class StoreOnLoop:
    """A real store for a sync state machine: its own event loop (asyncio.Runner), one data
    location per test function. `empty` clears the routing tables between examples;
    `reopen` is the store a new process opens on the same data."""

    def __init__(self, location: str | Path) -> None:
        self.location = location
        self.runner = asyncio.Runner()
        self.store: Store = self.run(open_store(location))
        self._pg: asyncpg.Connection | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def reopen(self) -> None:
        self.run(self.store.close())
        self.store = self.run(open_store(self.location))

    def empty(self) -> None:
        if isinstance(self.location, Path):
            with sqlite3.connect(self.location / DB_FILENAME) as conn:
                for table in ROUTING_TABLES:
                    conn.execute(f"DELETE FROM {table}")
            conn.close()
            return

        async def delete() -> None:
            if self._pg is None:
                self._pg = await asyncpg.connect(str(self.location))
            async with self._pg.transaction():
                for table in ROUTING_TABLES:
                    await self._pg.execute(f"DELETE FROM {table}")

        self.run(delete())

    def close(self) -> None:
        try:
            self.run(self.store.close())
            if self._pg is not None:
                self.run(self._pg.close())
        finally:
            self.runner.close()


class StoredRoutingMachine(RoutingMachine):
    """The machine above on a real store: each step's decisions committed as RoutingService
    commits them (`routing_write`), engines rebuilt as it rebuilds them (`read_routing`)."""

    def __init__(self, db: StoreOnLoop) -> None:
        super().__init__()
        self.db = db
        db.empty()

    def observe(self, decisions: list) -> None:
        if decisions:
            write = routing_write(decisions, self.router.status)
            self.db.run(write.commit(self.db.store))
        super().observe(decisions)

    def rebuilt(self, detached: Iterable[str]) -> Router:
        config, detached = self.current_config(), list(detached)
        return self.db.run(read_routing(self.db.store)).router(config, lambda: detached)

    @rule()
    def host_restart(self) -> None:
        """A new process: a store opened afresh on the same data, then rebuilt from it."""
        self.db.reopen()
        super().host_restart()

    @invariant()
    def check_store(self) -> None:
        """After every step the store holds the engine: one rebuilt from it equals it."""
        if hasattr(self, "router"):
            fresh = self.rebuilt(self.detached)
            assert self.snapshot_of(fresh) == self.snapshot_of(self.router)


@pytest.fixture(params=["postgresql", "sqlite"])
def routing_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreOnLoop]:
    """One store per test function, emptied for each example (a database each would cost
    more than the example)."""
    if request.param == "postgresql":
        db = StoreOnLoop(request.getfixturevalue("postgres_url"))
    else:
        db = StoreOnLoop(tmp_path)
    try:
        yield db
    finally:
        db.close()


@pytest.mark.filterwarnings("ignore")
def test_routing_invariants_on_a_store(routing_store: StoreOnLoop) -> None:
    run_state_machine_as_test(
        lambda: StoredRoutingMachine(routing_store),
        settings=settings(
            max_examples=STORE_EXAMPLES,
            stateful_step_count=STORE_STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
