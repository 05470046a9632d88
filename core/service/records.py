"""Interaction records: the commands that change who holds a conversation or what it is, and
what follows a record's change once committed.

An open record has one writer, the routing step (core/routing/records.py works its change out
of the item's, in the same transaction): ending, closing and transferring are routing events;
an invitation answered and a case or incident linked are amendments in turn with the steps.
The system line a change writes ("Alice joined", `line_of`) is stored in the same commit; after
it, `announce` tells the participants and the customer and delivers the line; a closed
conversation leaves memory there.

Invitations are stored before the invitee hears of one and deleted once answered or
withdrawn, so a restart (`load`) still has every unanswered one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from msgspec.structs import replace

from core.config.settings import RecordSettings
from core.model import (
    OFFLINE,
    InteractionRecord,
    InteractionState,
    Invitation,
    ItemState,
    Message,
    Participant,
    RecordKind,
    SenderKind,
    WorkItem,
)
from core.protocol import (
    AnswerInvitation,
    Archive,
    CloseRecord,
    CreateRecord,
    Detail,
    EndChat,
    GetPrefill,
    InteractionEvent,
    InvitationDeclined,
    InvitationEvent,
    InvitationWithdrawn,
    InviteAgent,
    Ok,
    Prefill,
    RecordCreated,
    ServerFrame,
    TransferToAgent,
    TransferToQueue,
)
from core.routing import events as ev
from core.routing.decisions import ItemChanged
from core.routing.records import RecordChange, current, owner_of
from core.service.access import Access
from core.service.conversations import Conversation, Conversations
from core.service.details import DESCRIPTIONS
from core.service.errors import InboxError
from core.service.floor import Floor
from core.service.routing import RoutingService
from core.service.sessions import AgentSession
from store.base import Store

PREFILL_LINES = 40
# Item changes the customer is told of, and the notice (core/notices.py) that tells them.
_NOTICES = {"notice": "busy", "overflowed": "overflow"}


@dataclass
class Records:
    routing: RoutingService
    conversations: Conversations
    access: Access
    floor: Floor
    store: Store
    clock: Callable[[], float]
    # What an item is about, shown with a chat that opens on a console (Views.details).
    details: Callable[[WorkItem], list[Detail]] = field(default=lambda item: [])
    # The states of cases and incidents: a new one takes its kind's first.
    record_states: RecordSettings = field(default_factory=RecordSettings)
    # number -> {invited agent: who invited them}, while the invitation is unanswered
    invitations: dict[str, dict[str, str]] = field(default_factory=dict, init=False)

    async def load(self) -> None:
        """The stored invitations to open conversations; those to conversations closed while
        the host was down (their deletion had not followed the close) are deleted."""
        stale = set()
        for invitation in await self.store.load_invitations():
            number = invitation.interaction
            if number in self.conversations.open:
                self.invitations.setdefault(number, {})[invitation.agent] = invitation.inviter
            else:
                stale.add(number)
        for number in stale:
            await self.store.delete_invitations(number)

    def invitations_of(self, agent: str) -> dict[str, str]:
        """number -> who invited `agent`, for each invitation `agent` has not answered."""
        return {
            number: inviter
            for number, pending in self.invitations.items()
            if (inviter := pending.get(agent)) is not None
        }

    # ------------------------------------------------------------------ who holds it

    async def invite(self, session: AgentSession, frame: InviteAgent) -> ServerFrame:
        conv = self.access.writable(session, frame.interaction)
        router = self.routing.router
        if frame.agent not in router.agents:
            raise InboxError("unknown_agent", f"no agent {frame.agent!r}")
        if frame.agent in current(conv.record):
            raise InboxError("already_participant", f"{frame.agent} is already in this chat")
        online = router.status[frame.agent].presence != OFFLINE
        if not (online and self.floor.sessions.get(frame.agent)):
            raise InboxError("agent_unavailable", f"{frame.agent} is not online")
        await self.store.save_invitation(
            Invitation(
                interaction=conv.record.number,
                agent=frame.agent,
                inviter=session.agent,
                created_at=self.clock(),
            )
        )
        self.invitations.setdefault(conv.record.number, {})[frame.agent] = session.agent
        self.floor.push(
            frame.agent, InvitationEvent(interaction=conv.record, from_agent=session.agent)
        )
        name = self.floor.name
        await self.conversations.system(
            conv, f"{name(session.agent)} invited {name(frame.agent)}", note=True
        )
        return Ok(ref=frame.ref)

    async def answer_invitation(
        self, session: AgentSession, frame: AnswerInvitation
    ) -> ServerFrame:
        pending = self.invitations.get(frame.interaction, {})
        conv = self.conversations.open.get(frame.interaction)
        if session.agent not in pending or conv is None:
            raise InboxError("not_invited", f"no invitation to {frame.interaction} for you")
        await self.store.delete_invitations(frame.interaction, session.agent)
        inviter = pending.pop(session.agent, None)
        if inviter is None:
            raise InboxError("not_invited", f"{frame.interaction}: answered meanwhile")
        name = self.floor.name(session.agent)
        if not frame.accept:
            self.floor.push(
                inviter, InvitationDeclined(interaction=conv.record.number, agent=session.agent)
            )
            await self.conversations.system(conv, f"{name} declined to join", note=True)
            return Ok(ref=frame.ref)
        joined = Participant(agent=session.agent, role="invited", joined_at=self.clock())
        record = await self.routing.amend(
            conv.record.number, lambda r: replace(r, participants=(*r.participants, joined))
        )
        if record is None:
            raise InboxError("not_invited", f"{frame.interaction} was closed meanwhile")
        item = self.routing.router.items.get(record.item)
        details = self.details(item) if item is not None else []
        self.floor.push(
            session.agent, InteractionEvent(change="opened", record=record, details=details)
        )
        self.floor.push(inviter, InteractionEvent(change="updated", record=record))
        await self.conversations.system(conv, f"{name} joined")
        return Ok(ref=frame.ref)

    async def transfer_to_agent(self, session: AgentSession, frame: TransferToAgent) -> ServerFrame:
        conv = self.access.owned(session, frame.interaction)
        await self.routing.submit(ev.TransferToAgent(item=conv.item, to_agent=frame.agent))
        name = self.floor.name
        await self.conversations.system(
            conv, f"{name(session.agent)} asked {name(frame.agent)} to take over", note=True
        )
        return Ok(ref=frame.ref)

    async def transfer_to_queue(self, session: AgentSession, frame: TransferToQueue) -> ServerFrame:
        conv = self.access.owned(session, frame.interaction)
        await self.routing.submit(ev.TransferToQueue(item=conv.item, queue=frame.queue))
        return Ok(ref=frame.ref)

    # ------------------------------------------------------------------ ending it

    async def end_chat(self, session: AgentSession, frame: EndChat) -> ServerFrame:
        conv = self.access.owned(session, frame.interaction)
        await self.routing.submit(ev.ChatEnded(item=conv.item))
        return Ok(ref=frame.ref)

    async def close(self, session: AgentSession, frame: CloseRecord) -> ServerFrame:
        conv = self.access.owned(session, frame.interaction)
        await self.routing.submit(ev.ItemClosed(item=conv.item))
        return Ok(ref=frame.ref)

    async def archive(self, session: AgentSession, frame: Archive) -> ServerFrame:
        record = await self.access.readable(session, frame.interaction)
        if record.state not in (
            InteractionState.CLOSED_COMPLETE,
            InteractionState.CLOSED_ABANDONED,
        ):
            raise InboxError("bad_state", f"{record.number} is {record.state}: close it first")
        archived = replace(record, archived=True)
        await self.store.save_interaction(archived)
        self.floor.push(session.agent, InteractionEvent(change="updated", record=archived))
        return Ok(ref=frame.ref)

    # ------------------------------------------------------------------ cases and incidents

    async def prefill(self, session: AgentSession, frame: GetPrefill) -> ServerFrame:
        """A case or incident's fields, drafted from the conversation."""
        record = await self.access.readable(session, frame.interaction)
        messages = await self.store.list_messages(record.number, limit=1000)
        said = [m for m in messages if m.kind == "message" and m.sender_kind != SenderKind.SYSTEM]
        first = next((m.body for m in said if m.sender_kind == SenderKind.CUSTOMER), "")
        item = self.routing.router.items.get(record.item) or await self.store.get_item(record.item)
        details = self.details(item) if item is not None else []
        # What the item says it is about (a case's summary), else what the customer first said.
        about = next(
            (str(item.attributes[k]) for k in DESCRIPTIONS if item and k in item.attributes), ""
        )
        short = " ".join((about or first).split())[:160] or f"Follow-up of {record.number}"
        customer = record.customer_name or "Customer"
        lines = [
            f"{self.floor.name(m.sender) if m.sender_kind == SenderKind.AGENT else customer}: "
            f"{m.body}"
            for m in said[-PREFILL_LINES:]
        ]
        about_lines = [f"{d.label}: {d.value}" for d in details]
        description = "\n".join(
            [f"From interaction {record.number} ({record.channel}).", *about_lines, *lines]
        )
        return Prefill(ref=frame.ref, short_description=short, description=description[:16_000])

    async def create_record(self, session: AgentSession, frame: CreateRecord) -> ServerFrame:
        record = await self.access.readable(session, frame.interaction)
        created = await self.store.create_record(
            frame.kind,
            frame.short_description,
            frame.description,
            frame.priority,
            record.number,
            session.agent,
            self.clock(),
            state=self.record_states.states_of(frame.kind)[0],
            # Whoever raises it works it until they hand it over: it is in their "mine" list.
            assignee=session.agent,
        )
        field_name = "case" if frame.kind == RecordKind.CASE else "incident"

        def link(r: InteractionRecord) -> InteractionRecord:
            return replace(r, **{field_name: created.number})

        conv = self.conversations.open.get(record.number)
        linked = await self.routing.amend(record.number, link) if conv is not None else None
        if conv is None or linked is None:
            # Closed, before or meanwhile: routing writes it no more, the store has the newest.
            linked = link(await self.store.get_interaction(record.number) or record)
            await self.store.save_interaction(linked)
        else:
            await self.conversations.system(
                conv, f"{self.floor.name(session.agent)} created {created.number}", note=True
            )
            self.floor.push_participants(linked, InteractionEvent(change="updated", record=linked))
        return RecordCreated(ref=frame.ref, record=created, interaction=linked)

    # ------------------------------------------------------------------ after a routing step

    def line_of(self, change: RecordChange) -> Message | None:
        """The system line a record change writes in the transcript ("Alice joined"), if any:
        committed with the routing step (RoutingService.lines), delivered by `announce`."""
        d, record, name = change.cause, change.before, self.floor.name
        if not isinstance(d, ItemChanged):
            return None
        owner, agent = owner_of(record), d.item.agent or ""
        what = _what_changed(d, owner)
        if what == "transferred":
            text = f"Transferred from {name(owner or '')} to {name(agent)}"
        elif what == "assigned":
            text = f"{name(agent)} joined"
        elif what == "requeued":
            text = f"{name(owner or '')} left; finding another agent ({d.reason})"
        elif what == "wrap_up":
            text = self.conversations.notice(record, "closed")
        elif what == "notice":
            text = self.conversations.notice(record, _NOTICES[d.change])
        else:
            return None
        return self.conversations.system_line(record.number, text)

    async def announce(
        self, conv: Conversation, d: ItemChanged, change: RecordChange, line: Message | None
    ) -> None:
        """Tell who must know of a committed change, and deliver its system line (stored
        with it), in the conversation's order of changes."""
        async with conv.lock:
            if self.conversations.open.get(conv.record.number) is conv:
                await self._announce(conv, d, change.before, change.after)
                if line is not None:
                    await self.conversations.delivered(conv, line)

    async def _announce(
        self,
        conv: Conversation,
        d: ItemChanged,
        record: InteractionRecord,
        updated: InteractionRecord,
    ) -> None:
        item, floor = d.item, self.floor
        owner = owner_of(record)
        what = _what_changed(d, owner)
        if what in ("assigned", "transferred") and item.agent:
            if owner and owner != item.agent:
                floor.push(owner, InteractionEvent(change="left", record=updated))
            floor.push(
                item.agent,
                InteractionEvent(
                    change="opened",
                    record=updated,
                    reply_by=item.reply_by,
                    details=self.details(item),
                ),
            )
            floor.push_customer(record.number, InteractionEvent(change="updated", record=updated))
            if self.conversations.is_async(record):
                self.conversations.push_ongoing(item.agent)
        elif what == "requeued":
            for p in record.participants:
                if p.left_at is None:
                    floor.push(p.agent, InteractionEvent(change="left", record=updated))
            floor.push_customer(record.number, InteractionEvent(change="updated", record=updated))
        elif what == "wrap_up":
            floor.push_participants(updated, InteractionEvent(change="updated", record=updated))
            floor.push_customer(record.number, InteractionEvent(change="updated", record=updated))
        elif what == "closed":
            floor.push_participants(updated, InteractionEvent(change="closed", record=updated))
            floor.push_customer(record.number, InteractionEvent(change="closed", record=updated))
            self.conversations.forget(record.number)
            invitees = self.invitations.pop(record.number, {})
            if invitees:
                await self.store.delete_invitations(record.number)
            for invitee in invitees:
                floor.push(
                    invitee,
                    InvitationWithdrawn(interaction=record.number, reason="the chat closed"),
                )
            if self.conversations.is_async(record):
                for agent in current(updated):
                    self.conversations.push_ongoing(agent)
        elif what == "ongoing" and item.agent:
            self.conversations.push_ongoing(item.agent)


def _what_changed(d: ItemChanged, owner: str | None) -> str | None:
    """What a committed item change is to its conversation, the cases told apart in this
    order: `line_of` writes its line in the transcript, `_announce` tells who must know."""
    if d.change in ("assigned", "transferred") and d.item.agent:
        return d.change
    if d.item.state == ItemState.QUEUED and owner is not None:
        return "requeued"
    if d.change == "wrap_up":
        return "wrap_up"
    if d.change in ("closed", "cancelled", "abandoned"):
        return "closed"
    if d.change in _NOTICES:
        return "notice"
    if d.change in ("on_hold", "resumed", "awaiting_capacity") and d.item.agent:
        return "ongoing"
    return None
