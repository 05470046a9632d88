"""What an agent's console is shown: the login snapshot, agents, offers and queue statistics.

Reads of routing's state and the open conversations, shaped as the protocol's views; nothing
here changes anything. Queue statistics also go out by themselves, once a second, to the
consoles that asked for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import HostConfig
from core.model import OFFLINE, ChannelMode, InteractionState, Offer, WorkItem
from core.protocol import (
    AgentList,
    AgentLoad,
    AgentView,
    Detail,
    ListAgents,
    ListOnlineAgents,
    OfferView,
    Ok,
    OnlineAgents,
    QueueStats,
    QueueStatsEvent,
    ServerFrame,
    SlaCrossing,
    Snapshot,
    SubscribeQueueStats,
)
from core.routing.records import current
from core.service.conversations import Conversations
from core.service.details import item_details
from core.service.errors import InboxError
from core.service.floor import Floor
from core.service.routing import RoutingService
from core.service.sessions import AgentSession
from core.sla import QueueSla

STATS_SLICES = 10
# What queue figures may cost a floor, in frames a second: one frame is a socket write (~30 µs
# here), so 2,000 agents updated every second were most of an idle host's CPU. Past it the
# agents' updates thin out (2,000 subscribed agents: each every 4 s); supervisors keep 1 s.
STATS_FRAMES_PER_S = 500


@dataclass
class Views:
    config: HostConfig
    routing: RoutingService
    conversations: Conversations
    floor: Floor
    clock: Callable[[], float]
    # The invitations an agent has not answered (the records' part owns them).
    invitations_of: Callable[[str], dict[str, str]] = field(default=lambda agent: {})
    # (declined, expired) of an agent's offers today (the day's part owns them).
    offers_today: Callable[[str], tuple[int, int]] = field(default=lambda agent: (0, 0))
    # The queues' service-level marks and the clocks past near or target now (sla_watch.py).
    sla_marks: Callable[[float], dict[str, QueueSla]] = field(default=lambda now: {})
    sla_crossings: Callable[[float], list[SlaCrossing]] = field(default=lambda now: [])
    _last_stats: dict[str, QueueStats] = field(default_factory=dict, init=False)
    _round: int = field(default=0, init=False)
    # The round in which each queue's figures last changed.
    _changed_in: dict[str, int] = field(default_factory=dict, init=False)

    def agent_view(self, agent: str) -> AgentView:
        router = self.routing.router
        a = router.agents[agent]
        return AgentView(
            id=agent,
            display_name=a.display_name or agent,
            role=a.role,
            presence=router.status[agent].presence,
            queues=router.queues_of(agent),
        )

    def details(self, item: WorkItem) -> list[Detail]:
        return item_details(item, self.config.details.get(item.channel))

    def offer_view(self, offer: Offer, item: WorkItem) -> OfferView:
        record = self.conversations.open_record(item.interaction or "")
        conv = self.conversations.open.get(item.interaction or "")
        return OfferView(
            offer=offer,
            item=item,
            customer_name=record.customer_name if record else "",
            interaction=item.interaction,
            first_message=conv.opening if conv else "",
            details=self.details(item),
        )

    def _my_queues(self, session: AgentSession) -> list[str]:
        router = self.routing.router
        return list(router.queues) if session.supervisor else router.queues_of(session.agent)

    def snapshot(self, session: AgentSession) -> Snapshot:
        router = self.routing.router
        offers = [
            self.offer_view(o, router.items[o.item])
            for o in router.offers.values()
            if o.agent == session.agent
        ]
        if session.supervisor:
            mine = [
                c.record
                for c in self.conversations.open.values()
                if session.agent in current(c.record) or c.record.state != InteractionState.NEW
            ]
        else:
            mine = self.conversations.of_agent(session.agent)
        queues = self._my_queues(session)
        session.stats_round = self._round  # the snapshot carries this round's figures
        known = {session.agent} | {p.agent for r in mine for p in r.participants}
        templates = [
            t
            for t in self.config.templates
            if t.scope == "global"
            or t.scope == f"agent:{session.agent}"
            or t.scope.removeprefix("queue:") in queues
        ]
        return Snapshot(
            me=self.agent_view(session.agent),
            presences=list(self.config.presences),
            async_channels=[c.name for c in self.config.channels if c.mode == ChannelMode.ASYNC],
            reply_by={
                r.number: due
                for r in mine
                if (item := router.items.get(r.item)) is not None
                and (due := item.reply_by) is not None
                and item.agent == session.agent
            },
            invitations=self.invitations_of(session.agent),
            details={
                r.number: self.details(item)
                for r in mine
                if (item := router.items.get(r.item)) is not None
            },
            offers=offers,
            interactions=mine,
            ongoing=self.conversations.ongoing(session.agent),
            queue_stats=[s for q, s in self.latest_queue_stats().items() if q in queues],
            # Everyone for supervisors; an agent gets the colleagues in their conversations
            # (names to show) and asks for the rest when needed: a floor logging in would
            # otherwise cost O(agents²).
            agents=[
                self.agent_view(a)
                for a in sorted(
                    router.agents if session.supervisor else known & router.agents.keys()
                )
            ],
            templates=templates,
            queues=queues,
            sla_crossings=self.sla_crossings(self.clock()) if session.supervisor else [],
        )

    async def list_agents(self, session: AgentSession, frame: ListAgents) -> ServerFrame:
        if not session.supervisor:
            raise InboxError("forbidden", "only supervisors see every agent's load")
        router = self.routing.router
        loads = []
        for a in sorted(router.agents):
            used = router.used(a)
            declined, expired = self.offers_today(a)
            loads.append(
                AgentLoad(
                    agent=self.agent_view(a),
                    active=used.total,
                    capacity=router.agents[a].universal_capacity,
                    offers=used.pending,
                    presence_since=router.status[a].presence_since,
                    load_by_channel={c: n for c, n in sorted(used.per_channel.items()) if n},
                    declined_today=declined,
                    expired_today=expired,
                )
            )
        return AgentList(ref=frame.ref, agents=loads)

    async def list_online(self, session: AgentSession, frame: ListOnlineAgents) -> ServerFrame:
        router = self.routing.router
        online = [a for a in sorted(router.agents) if router.status[a].presence != OFFLINE]
        return OnlineAgents(ref=frame.ref, agents=[self.agent_view(a) for a in online])

    # ------------------------------------------------------------------ queue statistics

    def queue_stats(self) -> dict[str, QueueStats]:
        router = self.routing.router
        now = self.clock()
        active = router.active
        sla = self.sla_marks(now)
        out = {}
        for name, queue in router.queues.items():
            waits = [now - i.enqueued_at for i in router.waiting_items(name)]
            out[name] = QueueStats(
                queue=name,
                channel=queue.channel,
                waiting=len(waits),
                active=active.get(name, 0),
                average_wait=round(sum(waits) / len(waits), 1) if waits else 0.0,
                longest_wait=round(max(waits), 1) if waits else 0.0,
                agents_available=sum(
                    1
                    for a in router.members(name)
                    if queue.channel in router.presences[router.status[a].presence].channels
                    and a not in router.detached
                ),
                sla=sla.get(name),
            )
        return out

    def latest_queue_stats(self) -> dict[str, QueueStats]:
        """What the last statistics update sent (at most a second old): a login's snapshot
        takes these instead of computing them again for each of a floor of logins."""
        return self._last_stats or self.queue_stats()

    async def subscribe_stats(
        self, session: AgentSession, frame: SubscribeQueueStats
    ) -> ServerFrame:
        session.wants_queue_stats = frame.subscribe
        return Ok(ref=frame.ref)

    async def stats_loop(self) -> None:
        """A round a second: each subscribed console due in it gets the figures of its queues
        that changed since its last update, as one unnumbered event (QueueStatsEvent is
        replaced by the next one, so it is neither numbered nor kept for resume).

        Supervisors are due every round; agents every round until there are more of them than
        STATS_FRAMES_PER_S, then each in one round of every ceil(agents / STATS_FRAMES_PER_S),
        staggered so the rounds carry equal shares. A round's work is spread over its second
        in STATS_SLICES slices, each looking at its share of the sessions: a floor of consoles
        all updated at once blocked the loop for tens of milliseconds, and with 2,000 consoles
        even choosing who was due (a pass over every session) was a stall of several
        milliseconds each second that the messages routed in that moment waited behind
        (docs/performance.md)."""
        loop = asyncio.get_running_loop()
        while True:
            next_round = loop.time() + 1.0
            self._round += 1
            stats = self.queue_stats()
            for q, figures in stats.items():
                if self._last_stats.get(q) != figures:
                    self._changed_in[q] = self._round
            self._last_stats = stats
            latest = max(self._changed_in.values(), default=0)
            sessions = [s for group in self.floor.sessions.values() for s in group]
            agents = sum(
                1
                for s in sessions
                if s.wants_queue_stats and s.outgoing is not None and not s.supervisor
            )
            every = -(-agents // STATS_FRAMES_PER_S)
            events: dict[tuple[str, ...], QueueStatsEvent] = {}
            for i in range(STATS_SLICES):
                if i:
                    await asyncio.sleep(1.0 / STATS_SLICES)
                for session in sessions[i::STATS_SLICES]:
                    if self._due(session, latest, every):
                        self._update(session, stats, events)
            await asyncio.sleep(max(0.0, next_round - loop.time()))

    def _due(self, session: AgentSession, latest: int, every: int) -> bool:
        """Whether a subscribed, attached console without the `latest` change gets its
        figures in this round."""
        return (
            session.wants_queue_stats
            and session.outgoing is not None
            and session.stats_round < latest
            and (every <= 1 or session.supervisor or (session.stagger + self._round) % every == 0)
        )

    def _update(
        self,
        session: AgentSession,
        stats: dict[str, QueueStats],
        events: dict[tuple[str, ...], QueueStatsEvent],
    ) -> None:
        """Send the console the figures of its queues that changed since it last had any;
        consoles with the same changes share one event."""
        seen = session.stats_round
        changed = tuple(q for q in self._my_queues(session) if self._changed_in.get(q, 0) > seen)
        if changed:
            event = events.get(changed)
            if event is None:
                event = events[changed] = QueueStatsEvent(stats=[stats[q] for q in changed])
            session.show(event)
        session.stats_round = self._round
