"""An agent's commands on the messages of a conversation: write, note, type, read,
fill in a template, page through a transcript, list their interactions.

A message is acknowledged only once stored (`MessageAck` after the store's commit), and goes
out through Conversations.delivered. Who may do each is core/service/access.py's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from core.model import Message, SenderKind, Template, render_template
from core.protocol import (
    AddWorkNote,
    GetTranscript,
    InteractionList,
    ListInteractions,
    MarkRead,
    MessageAck,
    Ok,
    SendMessage,
    ServerFrame,
    TemplateText,
    Transcript,
    Typing,
    TypingEvent,
    UseTemplate,
)
from core.routing import events as ev
from core.routing.engine import RoutingError
from core.routing.records import current, owner_of
from core.service.access import Access
from core.service.conversations import Conversation, Conversations
from core.service.errors import InboxError
from core.service.floor import Floor
from core.service.outbox import Outbox
from core.service.routing import RoutingService
from core.service.sessions import AgentSession
from store.base import Store


@dataclass
class Messages:
    conversations: Conversations
    access: Access
    floor: Floor
    routing: RoutingService
    store: Store
    templates: Sequence[Template]
    clock: Callable[[], float]
    outbox: Outbox

    async def send(self, session: AgentSession, frame: SendMessage) -> ServerFrame:
        conv, message, duplicate = await self._write(
            session, frame.interaction, frame.body, frame.client_msg_id, "message"
        )
        if not duplicate:
            # Replying is what clears "unread": the customer has an answer.
            self.conversations.read(conv, session.agent, message.seq, announce=False, but=session)
        # A resend of a stored reply still counts as the first reply of a live chat: the host
        # that stored it may have died before routing it, and without it the chat would be
        # reclaimed from an agent who did answer (the engine takes it once). On a messaging
        # channel a reply puts the conversation on hold, so there only the first one counts.
        counts = not duplicate or not self.conversations.is_async(conv.record)
        if counts and session.agent == owner_of(conv.record):
            with contextlib.suppress(RoutingError):
                await self.routing.submit(ev.AgentReplied(item=conv.item))
        return MessageAck(ref=frame.ref, message=message, duplicate=duplicate)

    async def work_note(self, session: AgentSession, frame: AddWorkNote) -> ServerFrame:
        _, message, duplicate = await self._write(
            session, frame.interaction, frame.body, frame.client_msg_id, "work_note"
        )
        return MessageAck(ref=frame.ref, message=message, duplicate=duplicate)

    async def _write(
        self,
        session: AgentSession,
        number: str,
        body: str,
        client_msg_id: str,
        kind: Literal["message", "work_note"],
    ) -> tuple[Conversation, Message, bool]:
        conv = self.access.writable(session, number)
        delivery = self.outbox.for_message(conv.record) if kind == "message" else None
        message, duplicate = await self.store.append_message(
            number,
            SenderKind.AGENT,
            session.agent,
            body,
            client_msg_id,
            self.clock(),
            kind=kind,
            delivery=delivery,
        )
        if not duplicate:
            if delivery is not None:
                self.outbox.enqueued(delivery, message)
            # The writer's console draws its own line from the ack: an echo was one frame in
            # eight of a conversation (docs/performance.md).
            await self.conversations.delivered(conv, message, but=session)
        return conv, message, duplicate

    async def typing(self, session: AgentSession, frame: Typing) -> ServerFrame:
        conv = self.access.writable(session, frame.interaction)
        event = TypingEvent(interaction=frame.interaction, who=self.floor.name(session.agent))
        for agent in current(conv.record):
            if agent != session.agent:
                self.floor.push(agent, event)
        self.floor.push_customer(frame.interaction, event)
        return Ok(ref=frame.ref)

    async def mark_read(self, session: AgentSession, frame: MarkRead) -> ServerFrame:
        conv = self.access.writable(session, frame.interaction)
        self.conversations.read(conv, session.agent, frame.seq)
        return Ok(ref=frame.ref)

    async def use_template(self, session: AgentSession, frame: UseTemplate) -> ServerFrame:
        conv = self.access.writable(session, frame.interaction)
        record = conv.record
        scopes = ("global", f"queue:{record.queue}", f"agent:{session.agent}")
        found = [t for t in self.templates if t.shortcut == frame.shortcut and t.scope in scopes]
        if not found:
            raise InboxError("not_found", f"no template {frame.shortcut!r} for this interaction")
        # The most specific scope wins: an agent's own version over the queue's over the global.
        template = max(found, key=lambda t: scopes.index(t.scope))
        fields = {
            "customer.name": record.customer_name or record.customer,
            "customer.contact": record.customer_contact,
            "agent.name": self.floor.name(session.agent),
            "interaction.number": record.number,
            "queue.name": record.queue or "",
        }
        return TemplateText(ref=frame.ref, text=render_template(template.text, fields))

    async def transcript(self, session: AgentSession, frame: GetTranscript) -> ServerFrame:
        record = await self.access.readable(session, frame.interaction)
        if frame.newest:
            messages = await self.store.last_messages(record.number, frame.limit)
        else:
            messages = await self.store.list_messages(record.number, frame.after_seq, frame.limit)
        attachments = await self.store.list_attachments(record.number)
        deliveries = (
            await self.store.message_deliveries(record.number)
            if record.channel in self.outbox.deliveries
            else {}
        )
        return Transcript(
            ref=frame.ref,
            interaction=record,
            messages=messages,
            attachments=attachments,
            deliveries=deliveries,
        )

    async def list_interactions(
        self, session: AgentSession, frame: ListInteractions
    ) -> ServerFrame:
        records = await self.store.list_interactions(
            agent=None if session.supervisor else session.agent,
            archived=frame.archived,
            limit=frame.limit,
            offset=frame.offset,
        )
        return InteractionList(ref=frame.ref, interactions=records)
