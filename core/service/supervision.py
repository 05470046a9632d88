"""Supervisors: the floor (every open conversation, live), monitoring one, and stepping in.

The floor is a row per open conversation (`FloorRow`), read from routing's items and the open
records, plus four times routing does not keep (first agent reply, last customer and agent
message), noted here as messages are delivered. A supervisor's console asks for every row once
(`list_floor`) and then hears only the rows that changed: a routing step or a message marks its
conversation, and once a second the marked rows go out as one `floor_changed` event to each
subscribed supervisor session. The cost is the changes, not the floor: a few thousand open
conversations cost nothing while quiet, and a busy second costs one frame per supervisor. The
clock-driven columns (waiting, handle time) are the console's to tick from the times.

Monitoring adds a supervisor session to a conversation's audience for its messages only: the
record is not touched, so the supervisor is no participant and the customer is told nothing.

Stepping in goes through the routing engine (core/routing/engine.py, `ItemReassigned`,
`ItemMoved`, `ItemClosedBy`, `PresenceForced`), each with who did it and why, which the engine
writes into the item's audit trail; the agents who were in the conversation are told by a
`stepped_in` event, and the transcript gets a work note. Every command here is a supervisor's:
anyone else gets `forbidden`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from core.model import Message, SenderKind, WorkItem
from core.protocol import (
    CloseConversation,
    FloorEvent,
    FloorList,
    FloorRow,
    ForcePresence,
    ListFloor,
    MessageEvent,
    Monitor,
    MoveToQueue,
    Ok,
    Reassign,
    ServerFrame,
    SteppedIn,
    TakeOver,
)
from core.routing import events as ev
from core.routing.decisions import ItemChanged, ItemUnroutable, OfferEnded, OfferMade
from core.routing.records import current, owner_of
from core.service.conversations import Conversation, Conversations
from core.service.errors import InboxError
from core.service.floor import Floor
from core.service.routing import RoutingService, Step
from core.service.sessions import AgentSession
from core.service.sla_watch import Clock
from store.base import Store

FLOOR_PERIOD = 1.0  # seconds between floor updates: a supervisor reads a table, not a stream
# Messages per conversation a restart reads back to know who spoke last.
RESTART_LINES = 5
# Conversations whose lines one read brings back (docs/scaling.md).
FLOOR_SLICE = 2_000

Action = Literal["take_over", "reassign", "move_to_queue", "close"]


@dataclass
class _Times:
    """What routing does not keep of a conversation: when who last spoke."""

    first_reply_at: float | None = None
    last_customer_at: float | None = None
    last_agent_at: float | None = None


@dataclass
class Supervision:
    routing: RoutingService
    conversations: Conversations
    floor: Floor
    store: Store
    clock: Callable[[], float]
    times: dict[str, _Times] = field(default_factory=dict, init=False)
    # Supervisor sessions that asked for the floor's changes.
    watching: set[AgentSession] = field(default_factory=set, init=False)
    # number -> the supervisor sessions monitoring it.
    monitors: dict[str, set[AgentSession]] = field(default_factory=dict, init=False)
    _changed: set[str] = field(default_factory=set, init=False)
    # The item's service-level clock running now (SlaWatch.clock_of), set by the inbox.
    sla_clock: Callable[[WorkItem], Clock | None] = field(default=lambda item: None, init=False)

    async def load(self) -> None:
        """After a restart: who spoke last in each open conversation, from its newest lines
        (the first reply is known again only if it is among them).

        Run beside routing, not before it: reading the newest lines of every open
        conversation doubled a rebuild (50,000 open chats: 1.1 s more before routing again,
        docs/scaling.md), and only the floor's rows show these times. Read a slice at a time,
        so that the consoles rejoining a new router and the customers arriving meanwhile are
        served between slices: read whole, the decoding held the event loop for most of a
        second. Lines delivered meanwhile are newer than the ones read, so _note keeps the
        newest of each."""
        numbers = list(self.conversations.open)
        loaded: list[str] = []
        for start in range(0, len(numbers), FLOOR_SLICE):
            part = [n for n in numbers[start : start + FLOOR_SLICE] if n in self.conversations.open]
            recent = await self.store.recent_lines(part, RESTART_LINES)
            for number, lines in recent.items():
                # One closed while the read ran is gone: its times would never be dropped.
                if number in self.conversations.open:
                    loaded.append(number)
                    for message in lines:
                        self._note(number, message)
        if self.watching:
            # Supervisors who asked before the times were in get their rows again; a later
            # list_floor has them anyway.
            self._changed.update(loaded)

    # ------------------------------------------------------------------ the floor

    def row(self, conv: Conversation) -> FloorRow | None:
        """The conversation's floor row; None once its item has left routing (closed)."""
        item = self.routing.router.items.get(conv.item)
        if item is None:
            return None
        record = conv.record
        owner = owner_of(record)
        times = self.times.get(record.number, _Times())
        accepted = [
            p.joined_at
            for p in record.participants
            if p.role == "owner" and p.joined_at >= item.created_at
        ]
        last_customer = times.last_customer_at
        sla = self.sla_clock(item)
        return FloorRow(
            interaction=record.number,
            item=item.id,
            channel=item.channel,
            queue=item.queue,
            agent=owner,
            others=[a for a in current(record) if a != owner],
            state=item.state,
            on_hold=item.on_hold,
            customer_name=record.customer_name or record.customer,
            priority=item.priority,
            arrived_at=item.created_at,
            accepted_at=min(accepted) if accepted else None,
            first_reply_at=times.first_reply_at,
            last_customer_at=last_customer,
            unanswered=last_customer is not None
            and (times.last_agent_at is None or times.last_agent_at < last_customer),
            sla_target=None if sla is None else sla.target,
            sla_since=None if sla is None else sla.started,
        )

    def rows(self, numbers: Iterable[str] | None = None) -> list[FloorRow]:
        open_ = self.conversations.open
        convs = open_.values() if numbers is None else (open_[n] for n in numbers if n in open_)
        return [row for conv in convs if (row := self.row(conv)) is not None]

    def step_committed(self, step: Step) -> None:
        """A routing step marks the conversations whose items it changed."""
        for d in step.decisions:
            kinds = ItemChanged | ItemUnroutable | OfferMade | OfferEnded
            if isinstance(d, kinds) and d.item.interaction is not None:
                self._changed.add(d.item.interaction)

    def message_delivered(self, conv: Conversation, message: Message) -> None:
        number = conv.record.number
        self._note(number, message)
        self._changed.add(number)
        watchers = self.monitors.get(number)
        if watchers:
            inside = set(current(conv.record))
            event = MessageEvent(message=message)
            for session in list(watchers):
                if session.closed:
                    watchers.discard(session)
                elif session.agent not in inside:  # a participant has it already
                    session.push(event)

    def _note(self, number: str, message: Message) -> None:
        if message.kind != "message":
            return  # work notes and files' captions are not what the customer waits for
        times = self.times.setdefault(number, _Times())
        at = message.created_at
        if message.sender_kind == SenderKind.CUSTOMER:
            times.last_customer_at = max(at, times.last_customer_at or at)
        elif message.sender_kind == SenderKind.AGENT:
            times.last_agent_at = max(at, times.last_agent_at or at)
            times.first_reply_at = min(at, times.first_reply_at or at)

    def publish(self) -> None:
        """Send the marked rows (and the conversations gone) to every watching session."""
        changed, self._changed = self._changed, set()
        self.watching = {s for s in self.watching if not s.closed}
        open_, items = self.conversations.open, self.routing.router.items
        # Gone: closed, or its item out of routing (no row). Worked out without the rows,
        # which are built only for someone watching.
        gone = sorted(n for n in changed if n not in open_ or open_[n].item not in items)
        for number in gone:
            self.times.pop(number, None)
            self.monitors.pop(number, None)
        if not self.watching:
            return
        rows = self.rows(changed.difference(gone))
        if not (rows or gone):
            return
        event = FloorEvent(rows=rows, gone=gone, at=self.clock())
        for session in self.watching:
            session.push(event)

    async def publish_loop(self) -> None:
        while True:
            await asyncio.sleep(FLOOR_PERIOD)
            self.publish()

    # ------------------------------------------------------------------ commands

    async def list_floor(self, session: AgentSession, frame: ListFloor) -> ServerFrame:
        _supervisor(session)
        if frame.subscribe:
            self.watching.add(session)
        else:
            self.watching.discard(session)
        return FloorList(ref=frame.ref, rows=self.rows(), at=self.clock())

    async def monitor(self, session: AgentSession, frame: Monitor) -> ServerFrame:
        _supervisor(session)
        if not frame.on:
            self.monitors.get(frame.interaction, set()).discard(session)
            return Ok(ref=frame.ref)
        self._open(frame.interaction)
        self.monitors.setdefault(frame.interaction, set()).add(session)
        return Ok(ref=frame.ref)

    async def take_over(self, session: AgentSession, frame: TakeOver) -> ServerFrame:
        _supervisor(session)
        conv = self._open(frame.interaction)
        step = ev.ItemReassigned(
            item=conv.item, to_agent=session.agent, by=session.agent, reason=frame.reason
        )
        await self._step_in(session, conv, step, "take_over", session.agent, frame.reason)
        return Ok(ref=frame.ref)

    async def reassign(self, session: AgentSession, frame: Reassign) -> ServerFrame:
        _supervisor(session)
        conv = self._open(frame.interaction)
        step = ev.ItemReassigned(
            item=conv.item, to_agent=frame.agent, by=session.agent, reason=frame.reason
        )
        await self._step_in(session, conv, step, "reassign", frame.agent, frame.reason)
        return Ok(ref=frame.ref)

    async def move_to_queue(self, session: AgentSession, frame: MoveToQueue) -> ServerFrame:
        _supervisor(session)
        conv = self._open(frame.interaction)
        step = ev.ItemMoved(
            item=conv.item, queue=frame.queue, by=session.agent, reason=frame.reason
        )
        await self._step_in(session, conv, step, "move_to_queue", frame.queue, frame.reason)
        return Ok(ref=frame.ref)

    async def close(self, session: AgentSession, frame: CloseConversation) -> ServerFrame:
        _supervisor(session)
        conv = self._open(frame.interaction)
        step = ev.ItemClosedBy(item=conv.item, by=session.agent, reason=frame.reason)
        await self._step_in(session, conv, step, "close", "", frame.reason)
        return Ok(ref=frame.ref)

    async def force_presence(self, session: AgentSession, frame: ForcePresence) -> ServerFrame:
        _supervisor(session)
        if not frame.reason.strip():
            raise InboxError("bad_reason", "say why you step in: the reason goes into the audit")
        await self.routing.submit(
            ev.PresenceForced(
                agent=frame.agent, presence=frame.presence, by=session.agent, reason=frame.reason
            )
        )
        # The presence event carries the reason too; this one says it was a supervisor's doing
        # in the same words as the other step-ins.
        self.floor.push(
            frame.agent,
            SteppedIn(action="presence", by=session.agent, reason=frame.reason, to=frame.presence),
        )
        return Ok(ref=frame.ref)

    async def _step_in(
        self,
        session: AgentSession,
        conv: Conversation,
        step: ev.ItemReassigned | ev.ItemMoved | ev.ItemClosedBy,
        action: Action,
        to: str,
        reason: str,
    ) -> None:
        if not reason.strip():
            raise InboxError("bad_reason", "say why you step in: the reason goes into the audit")
        were = [a for a in current(conv.record) if a != session.agent]
        await self.routing.submit(step)
        told = SteppedIn(
            action=action,
            by=session.agent,
            reason=reason,
            interaction=conv.record.number,
            to=to,
        )
        for agent in were:
            self.floor.push(agent, told)
        name = self.floor.name
        what = {
            "take_over": "took over",
            "reassign": f"gave it to {name(to)}",
            "move_to_queue": f"moved it to {to}",
            "close": "closed it",
        }[action]
        # A closed conversation has left memory by now: its audit trail says why.
        if self.conversations.open.get(conv.record.number) is conv:
            await self.conversations.system(
                conv, f"{name(session.agent)} {what}: {reason}", note=True
            )

    def _open(self, number: str) -> Conversation:
        conv = self.conversations.open.get(number)
        if conv is None or conv.item not in self.routing.router.items:
            raise InboxError("not_found", f"no open interaction {number}")
        return conv


def _supervisor(session: AgentSession) -> None:
    if not session.supervisor:
        raise InboxError("forbidden", "only supervisors watch the floor and step in")
