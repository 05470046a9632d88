"""The open conversations: their records, their messages as they arrive, what is unread.

One `Conversation` per open interaction, kept from the moment its work item is routed until
its record closes. Its record is the committed one: routing changes it, in the step that
changes its item (`OpenRecords`, core/service/routing.py). Every message passes through
`delivered` once committed, which fans it out and keeps the unread counts and previews of the
ongoing tray (asynchronous channels) that a console shows.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from core.model import (
    ChannelMode,
    InteractionRecord,
    Message,
    SenderKind,
    ServiceChannel,
    WorkItem,
)
from core.notices import notice_text
from core.protocol import MessageEvent, OngoingCard, OngoingEvent, ReadEvent
from core.routing.records import current
from core.service.floor import Floor
from core.service.sessions import AgentSession
from store.base import Store

UNREAD_CAP = 50  # like the peers, count at most this many unread messages per conversation
OPENING_CHARS = 200  # of the first message, for the offer card: enough to say what it is about


@dataclass
class Conversation:
    """What the inbox keeps in memory about an open interaction besides its record."""

    record: InteractionRecord
    item: str
    customer_seqs: list[int] = field(default_factory=list)
    last_update: float = 0.0
    preview: str = ""
    # The customer's first message: what an offer card says the customer wants.
    opening: str = ""
    # Opened by this process (not loaded at a rebuild), so every message of it is counted in
    # `noted` before anyone is sent it: with none noted, its transcript is empty.
    opened_here: bool = False
    noted: int = 0
    # Held while what follows a record change is announced and written (pushes, system
    # lines), so one conversation's announcements keep the order of its changes.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Conversations:
    def __init__(
        self,
        store: Store,
        floor: Floor,
        channels: Iterable[ServiceChannel],
        clock: Callable[[], float],
        timed: Callable[[str, float], None],
    ) -> None:
        self.store = store
        self.floor = floor
        self.clock = clock
        self.timed = timed
        self.channels = {c.name: c for c in channels}
        self.open: dict[str, Conversation] = {}
        # Told when a conversation's first customer message arrives (the inbox sends the
        # pending offer again with it).
        self.on_opening: Callable[[Conversation], None] | None = None
        # Told of every message delivered, after its participants (the supervisors' floor).
        self.message_observers: list[Callable[[Conversation, Message], None]] = []
        # agent -> the open conversations they are in now, in the order they joined: the
        # tray and a login's snapshot look only at these, never at the whole floor's.
        self.open_of_agent: dict[str, dict[str, None]] = {}
        self.read_marks: dict[tuple[str, str], int] = {}

    async def load(self) -> None:
        """The conversations open in the store, with what the tray needs of their messages."""
        # Only the ongoing tray (asynchronous channels) shows unread counts and previews.
        tray = [c.name for c in self.channels.values() if c.mode == ChannelMode.ASYNC]
        for record, recent in await self.store.load_open_conversations(UNREAD_CAP, tray):
            conv = self.add(record, record.opened_at)
            for m in recent:
                self._note_message(conv, m)

    async def load_openings(self, waiting: Iterable[WorkItem]) -> list[Conversation]:
        """Give the conversations of `waiting` items (queued or offered: on an offer card,
        now or soon) what the customer wrote first since the item was queued, else since it
        was created (of their newest UNREAD_CAP lines); those whose opening this changed.
        Queued, not created: a reopened conversation's item is dated from the first opening,
        and its card should say what the customer wrote to reopen it, as it does live. `load`
        reads lines only for the tray's channels, and takes the oldest it read. One read for
        all of them, after the rebuild rather than in it, so routing starts no later for it."""
        items = {item.interaction: item for item in waiting if item.interaction in self.open}
        if not items:
            return []
        lines = await self.store.recent_lines(list(items), UNREAD_CAP)
        found = []
        for number, item in items.items():
            conv = self.open.get(number)
            said = [
                m
                for m in lines.get(number, ())
                if m.sender_kind == SenderKind.CUSTOMER and m.kind == "message"
            ]
            queued = item.enqueued_at or item.created_at
            first = next((m for m in said if m.created_at >= queued), None) or next(
                (m for m in said if m.created_at >= item.created_at), None
            )
            if conv is None or first is None:
                continue
            # A line that came in meanwhile may have set it already: the stored one is as old
            # or older (the read saw every line committed before it).
            if conv.opening != (opening := first.body[:OPENING_CHARS]):
                conv.opening = opening
                found.append(conv)
        return found

    def add(
        self, record: InteractionRecord, now: float, *, opened_here: bool = False
    ) -> Conversation:
        conv = Conversation(
            record=record, item=record.item, last_update=now, opened_here=opened_here
        )
        self.open[record.number] = conv
        self._file(record.number, current(record), joined=True)
        return conv

    def forget(self, number: str) -> None:
        """The conversation is over (or never began): it leaves memory, the store keeps it."""
        conv = self.open.pop(number, None)
        if conv is not None:
            self._file(number, current(conv.record), joined=False)

    def notice(self, record: InteractionRecord, name: str) -> str:
        """The customer notice `name` in the conversation's language (core/notices.py)."""
        return notice_text(self.channels[record.channel], name, record.language)

    def is_async(self, record: InteractionRecord) -> bool:
        return self.channels[record.channel].mode == ChannelMode.ASYNC

    def of_agent(self, agent: str) -> list[InteractionRecord]:
        """The records of the open conversations the agent is in now, in the order joined."""
        return [self.open[n].record for n in self.open_of_agent.get(agent, ())]

    # ------------------------------------------------------------------ records (OpenRecords)

    def open_record(self, number: str) -> InteractionRecord | None:
        conv = self.open.get(number)
        return conv.record if conv is not None else None

    def record_committed(self, record: InteractionRecord) -> None:
        conv = self.open.get(record.number)
        if conv is None:
            return
        before = set(current(conv.record))
        conv.record = record
        after = set(current(record))
        self._file(record.number, after - before, joined=True)
        self._file(record.number, before - after, joined=False)

    def _file(self, number: str, agents: Iterable[str], *, joined: bool) -> None:
        for agent in agents:
            if joined:
                self.open_of_agent.setdefault(agent, {})[number] = None
            else:
                numbers = self.open_of_agent.get(agent, {})
                numbers.pop(number, None)
                if not numbers:
                    self.open_of_agent.pop(agent, None)

    # ------------------------------------------------------------------ messages

    async def delivered(
        self, conv: Conversation, message: Message, *, but: AgentSession | None = None
    ) -> None:
        """A committed message goes out: to the participants, the customer (not work notes),
        and the tray. `but`: the session that wrote it, whose ack carries the message (its
        agent's other consoles still get the event)."""
        self.timed("message", max(0.0, self.clock() - message.created_at))
        opened = not conv.opening
        self._note_message(conv, message)
        if opened and conv.opening and self.on_opening is not None:
            self.on_opening(conv)
        event = MessageEvent(message=message)
        self.floor.push_participants(conv.record, event, but=but)
        if message.kind == "message":
            self.floor.push_customer(conv.record.number, event)
        if self.is_async(conv.record):
            for agent in current(conv.record):
                self.push_ongoing(agent)
        for observer in self.message_observers:
            observer(conv, message)

    def _note_message(self, conv: Conversation, message: Message) -> None:
        conv.noted += 1
        conv.last_update = message.created_at
        if message.sender_kind == SenderKind.CUSTOMER:
            conv.customer_seqs.append(message.seq)
            del conv.customer_seqs[:-UNREAD_CAP]
            conv.preview = message.body[:80]
            if not conv.opening and message.kind == "message":
                conv.opening = message.body[:OPENING_CHARS]

    def system_line(self, number: str, text: str, *, note: bool = False) -> Message:
        """A system line for the transcript of `number` ("Alice joined"), not yet numbered:
        appended alone by `system`, or with its routing step (Records.line_of)."""
        return Message(
            interaction=number,
            seq=0,
            sender_kind=SenderKind.SYSTEM,
            sender="system",
            body=text,
            client_msg_id=f"sys-{secrets.token_hex(8)}",
            created_at=self.clock(),
            kind="work_note" if note else "message",
        )

    async def system(self, conv: Conversation, text: str, *, note: bool = False) -> None:
        """A system line in the transcript, stored like any message."""
        line = self.system_line(conv.record.number, text, note=note)
        message, duplicate = await self.store.append_message(
            line.interaction,
            line.sender_kind,
            line.sender,
            line.body,
            line.client_msg_id,
            line.created_at,
            kind=line.kind,
        )
        if not duplicate:
            await self.delivered(conv, message)

    def read(
        self,
        conv: Conversation,
        agent: str,
        seq: int,
        *,
        announce: bool = True,
        but: AgentSession | None = None,
    ) -> None:
        """Move the agent's read mark to `seq`. `announce` False: moved by a reply, news only
        if it passes unread customer lines. `but`: the session that moved it by its reply,
        which learns as much from its reply's ack and is not told again."""
        key = (conv.record.number, agent)
        mark = self.read_marks.get(key, 0)
        if seq <= mark:
            return
        self.read_marks[key] = seq
        # A reply moves the mark past the agent's own line; it is news only if it also passes
        # customer lines that were unread (a read receipt per reply doubled the frames).
        if not announce and not (conv.customer_seqs and conv.customer_seqs[-1] > mark):
            return
        self.floor.push_participants(
            conv.record,
            ReadEvent(interaction=conv.record.number, reader=agent, read_seq=seq),
            but=but,
        )
        if self.is_async(conv.record):
            self.push_ongoing(agent)

    # ------------------------------------------------------------------ the ongoing tray

    def ongoing(self, agent: str) -> list[OngoingCard]:
        cards = []
        for number in self.open_of_agent.get(agent, ()):
            conv = self.open[number]
            if not self.is_async(conv.record):
                continue
            mark = self.read_marks.get((number, agent), 0)
            cards.append(
                OngoingCard(
                    interaction=number,
                    customer_name=conv.record.customer_name or conv.record.customer,
                    last_update=conv.last_update,
                    unread=sum(1 for s in conv.customer_seqs if s > mark),
                    preview=conv.preview,
                )
            )
        cards.sort(key=lambda c: (-(c.unread > 0), -c.last_update))
        return cards

    def push_ongoing(self, agent: str) -> None:
        cards = self.ongoing(agent)
        self.floor.push(
            agent,
            OngoingEvent(cards=cards, unread_conversations=sum(1 for c in cards if c.unread)),
        )
