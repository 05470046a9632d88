"""What the console knows, rebuilt from a snapshot and kept current by events. No Textual here:
widgets read this and redraw when `apply` says their area changed, so it is tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from core.model import (
    Attachment,
    DeliveryState,
    InteractionRecord,
    InteractionState,
    Message,
    PresenceState,
    SenderKind,
    ServiceRecord,
    Template,
)
from core.protocol import (
    AgentView,
    DeliveryEvent,
    Detail,
    Event,
    FloorEvent,
    FloorRow,
    InteractionEvent,
    InvitationDeclined,
    InvitationEvent,
    InvitationWithdrawn,
    MessageEvent,
    OfferClosed,
    OfferEvent,
    OfferView,
    OngoingCard,
    OngoingEvent,
    PresenceEvent,
    QueueStats,
    QueueStatsEvent,
    ReadEvent,
    RecordEvent,
    Resync,
    SlaAlert,
    SlaCrossing,
    Snapshot,
    SteppedIn,
    TransferDeclined,
    TypingEvent,
)
from core.sla import SlaLevel, worst

OPEN_STATES = (InteractionState.NEW, InteractionState.WORK_IN_PROGRESS, InteractionState.WRAP_UP)
# Replies typed while the host is away wait here; past this many the composer says no rather
# than letting an agent type into a pile that grows without a bound.
MAX_OUTBOX = 100
# Cases and incidents this console has been told of; the oldest told go first past this many.
MAX_RECORDS = 1000
# Service-level crossings remembered as shown, so a snapshot after a reconnect or a host
# restart alerts only the new ones; the oldest are forgotten past this many.
MAX_SLA_SHOWN = 5000
# More crossings than this in one snapshot are alerted as one summary, not a toast each.
SLA_ALERTS_AT_ONCE = 3


@dataclass
class Outgoing:
    """A reply the host has not acknowledged yet; `failed` when it refused it for good."""

    interaction: str
    body: str
    client_msg_id: str
    failed: str = ""


LIVE_STATES = (InteractionState.NEW, InteractionState.WORK_IN_PROGRESS)  # the customer is there


@dataclass
class Chat:
    record: InteractionRecord
    messages: dict[int, Message] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    loaded: bool = False  # the transcript was fetched; before that only live messages are here
    typing: str = ""
    unread: int = 0  # customer messages since I last replied (live chats count them too)
    reply_by: float | None = None  # the host takes the chat back then unless I have replied
    details: list[Detail] = field(default_factory=list)  # what the item is about
    # My messages' way to the channel's provider by seq, where the channel delivers.
    deliveries: dict[int, DeliveryState] = field(default_factory=dict)

    @property
    def number(self) -> str:
        return self.record.number

    def ordered(self) -> list[Message]:
        return [self.messages[s] for s in sorted(self.messages)]


@dataclass
class ConsoleState:
    me: AgentView | None = None
    presences: list[PresenceState] = field(default_factory=list)
    async_channels: list[str] = field(default_factory=list)  # messaging-based channels
    offers: dict[str, OfferView] = field(default_factory=dict)
    chats: dict[str, Chat] = field(default_factory=dict)
    ongoing: list[OngoingCard] = field(default_factory=list)
    unread_conversations: int = 0
    queue_stats: dict[str, QueueStats] = field(default_factory=dict)
    agents: dict[str, AgentView] = field(default_factory=dict)
    templates: list[Template] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    invitations: dict[str, str] = field(default_factory=dict)  # interaction -> inviter
    notes: list[str] = field(default_factory=list)  # one-line notices for toasts
    outbox: dict[str, Outgoing] = field(default_factory=dict)  # client_msg_id -> reply
    # The routing priority of the items I was offered, by interaction: `n` answers the more
    # urgent customer first (records do not carry it).
    priorities: dict[str, int] = field(default_factory=dict)
    # Cases and incidents as last told (a record event, or a view the console asked for).
    records: dict[str, ServiceRecord] = field(default_factory=dict)
    # Supervisors: every open conversation as the floor shows it, once asked for (list_floor).
    floor: dict[str, FloorRow] = field(default_factory=dict)
    # The host's clock minus this console's, from the floor's last answer: times tick locally.
    floor_skew: float = 0.0
    # The conversations this console monitors, with the messages it has of them.
    monitored: dict[str, dict[int, Message]] = field(default_factory=dict)
    # Supervisors: service-level alerts to show (level, text), like `notes` but louder; and
    # the crossings already alerted, by (item, target, level, since).
    sla_alerts: list[tuple[SlaLevel, str]] = field(default_factory=list)
    sla_shown: dict[tuple[str, str, str, float], None] = field(default_factory=dict)

    # ------------------------------------------------------------------ reading

    def name(self, agent: str) -> str:
        view = self.agents.get(agent)
        return view.display_name if view else agent

    def open_chats(self) -> list[Chat]:
        """My chats: those in progress first, newest first; wrap-ups at the end."""
        return sorted(
            (c for c in self.chats.values() if c.record.state in OPEN_STATES),
            key=lambda c: (c.record.state == InteractionState.WRAP_UP, -c.record.opened_at),
        )

    def sorted_offers(self) -> list[OfferView]:
        return sorted(self.offers.values(), key=lambda o: o.offer.deadline)

    def has_messaging(self) -> bool:
        """The ongoing-messages tray shows when any presence state I may use includes a
        messaging-based (asynchronous) channel: whatever my presence is now, so it stays while
        I am Away, when unread piles up. Conversations already in it keep it shown too (a host
        that predates `async_channels` names none)."""
        if self.me is None:
            return False
        tray = set(self.async_channels)
        return bool(self.ongoing) or any(tray.intersection(p.channels) for p in self.presences)

    def unanswered_since(self, chat: Chat) -> float | None:
        """When a live chat's customer started waiting for an answer: the first of the
        customer's messages after the last agent's reply, or None when the last message the
        customer can see is not theirs (work notes and system lines do not count)."""
        if chat.record.channel in self.async_channels or chat.record.state not in LIVE_STATES:
            return None
        since = None
        for m in reversed(chat.ordered()):
            if m.kind != "message" or m.sender_kind == SenderKind.SYSTEM:
                continue
            if m.sender_kind != SenderKind.CUSTOMER:
                break
            since = m.created_at
        return since

    def next_unread(self, after: str | None) -> str | None:
        """The next chat needing a reply after `after`, wrapping around (weechat's smart jump):
        live chats whose customer's question is unanswered first (higher routing priority,
        then the longest waiting), then chats with unread messages, then messaging
        conversations with news in the ongoing tray's order."""
        asked = []
        for chat in self.open_chats():
            since = self.unanswered_since(chat)
            if since is not None:
                asked.append((-self.priorities.get(chat.number, 0), since, chat.number))
        waiting = [number for _, _, number in sorted(asked)]
        waiting += [c.number for c in self.open_chats() if c.unread and c.number not in waiting]
        waiting += [
            c.interaction for c in self.ongoing if c.unread and c.interaction not in waiting
        ]
        if not waiting:
            return None
        if after in waiting:
            return waiting[(waiting.index(after) + 1) % len(waiting)]
        return waiting[0]

    def pending(self, number: str) -> list[Outgoing]:
        """Replies to `number` not yet acknowledged by the host, oldest first."""
        return [o for o in self.outbox.values() if o.interaction == number]

    # ------------------------------------------------------------------ writing

    def queue_reply(self, number: str, body: str, client_msg_id: str) -> bool:
        """Keep a reply until the host acks it; False (and nothing kept) when the outbox is
        full."""
        if len(self.outbox) >= MAX_OUTBOX:
            return False
        self.outbox[client_msg_id] = Outgoing(number, body, client_msg_id)
        return True

    def reply_sent(self, client_msg_id: str) -> set[str]:
        """The host stored it (its ack, or the message event another console of mine gets)."""
        sent = self.outbox.pop(client_msg_id, None)
        return {f"chat:{sent.interaction}"} if sent else set()

    def own_message(self, message: Message) -> set[str]:
        """A line of mine the host acked: the ack is all this console hears of it (the event
        goes to my other consoles)."""
        return self._message(message)

    def reply_failed(self, client_msg_id: str, why: str) -> set[str]:
        failed = self.outbox.get(client_msg_id)
        if failed is None:
            return set()
        failed.failed = why
        return {f"chat:{failed.interaction}"}

    def load(self, snapshot: Snapshot) -> None:
        self.me = snapshot.me
        self.presences = list(snapshot.presences)
        self.async_channels = list(snapshot.async_channels)
        self.offers = {o.offer.id: o for o in snapshot.offers}
        for o in snapshot.offers:
            if o.interaction:
                self.priorities[o.interaction] = o.item.priority
        kept = self.chats
        self.chats = {}
        for record in snapshot.interactions:
            chat = kept.get(record.number) or Chat(record=record)
            chat.record = record
            chat.reply_by = snapshot.reply_by.get(record.number)
            chat.details = snapshot.details.get(record.number, chat.details)
            self.chats[record.number] = chat
        self.invitations = dict(snapshot.invitations)
        offered = {o.interaction for o in snapshot.offers}
        self.priorities = {
            n: p for n, p in self.priorities.items() if n in self.chats or n in offered
        }
        self.ongoing = list(snapshot.ongoing)
        self.unread_conversations = sum(1 for c in self.ongoing if c.unread)
        for card in self.ongoing:
            if card.interaction in self.chats:
                self.chats[card.interaction].unread = card.unread
        self.queue_stats = {s.queue: s for s in snapshot.queue_stats}
        self.agents = {a.id: a for a in snapshot.agents}
        self.templates = list(snapshot.templates)
        self.queues = list(snapshot.queues)
        fresh = [c for c in snapshot.sla_crossings if self._sla_new(c)]
        if len(fresh) > SLA_ALERTS_AT_ONCE:
            level = worst(*(c.level for c in fresh))
            queues = ", ".join(sorted({c.queue for c in fresh}))
            self.sla_alerts.append(
                (level, f"{len(fresh)} conversations near or past their targets in {queues}")
            )
        else:
            self.sla_alerts += [(c.level, sla_text(c)) for c in fresh]

    def apply(self, event: Event) -> set[str]:
        """Fold one event in; returns the areas that changed ("offers", "chats",
        "chat:<number>", "ongoing", "queues", "me", "agents", "invitations", "records",
        "record:<number>")."""
        if isinstance(event, Resync):
            self.load(event.snapshot)
            return {"all"}
        if isinstance(event, OfferEvent):
            self.offers[event.view.offer.id] = event.view
            if event.view.interaction:
                self.priorities[event.view.interaction] = event.view.item.priority
            return {"offers"}
        if isinstance(event, OfferClosed):
            view = self.offers.pop(event.offer, None)
            if view is not None and event.state in ("expired", "rescinded"):
                who = view.customer_name or view.item.customer
                self.notes.append(f"Offer for {who} {event.state}: {event.reason}")
            return {"offers"}
        if isinstance(event, InteractionEvent):
            return self._interaction(event)
        if isinstance(event, MessageEvent):
            return self._message(event.message)
        if isinstance(event, TypingEvent):
            chat = self.chats.get(event.interaction)
            if chat is None:
                return set()
            chat.typing = event.who
            return {f"chat:{chat.number}"}
        if isinstance(event, DeliveryEvent):
            chat = self.chats.get(event.interaction)
            if chat is None:
                return set()
            chat.deliveries[event.message_seq] = event.state
            return {f"chat:{chat.number}"}
        if isinstance(event, ReadEvent):
            chat = self.chats.get(event.interaction)
            if chat is not None and self.me is not None and event.reader == self.me.id:
                chat.unread = sum(
                    1
                    for m in chat.messages.values()
                    if m.sender_kind == "customer" and m.seq > event.read_seq
                )
                return {"chats", f"chat:{chat.number}"}
            return set()
        if isinstance(event, OngoingEvent):
            self.ongoing = list(event.cards)
            self.unread_conversations = event.unread_conversations
            for card in event.cards:
                chat = self.chats.get(card.interaction)
                if chat is not None:
                    chat.unread = card.unread
            return {"ongoing", "chats"}
        if isinstance(event, QueueStatsEvent):
            for s in event.stats:
                self.queue_stats[s.queue] = s
            return {"queues"}
        if isinstance(event, PresenceEvent):
            self.agents[event.agent.id] = event.agent
            if self.me is not None and event.agent.id == self.me.id:
                self.me = event.agent
                if event.reason and event.reason != "set by agent":
                    self.notes.append(f"Presence set to {event.agent.presence}: {event.reason}")
                return {"me", "agents"}
            return {"agents"}
        if isinstance(event, InvitationEvent):
            self.invitations[event.interaction.number] = event.from_agent
            self.notes.append(
                f"{self.name(event.from_agent)} invites you to {event.interaction.number}"
            )
            return {"invitations"}
        if isinstance(event, TransferDeclined):
            self.notes.append(
                f"Transfer of {event.interaction or event.item} to {self.name(event.to_agent)} "
                f"{event.state}: {event.reason}; the chat stays yours"
            )
            return set()
        if isinstance(event, InvitationWithdrawn):
            if self.invitations.pop(event.interaction, None) is not None:
                self.notes.append(f"The invitation to {event.interaction} is void: {event.reason}")
            return {"invitations"}
        if isinstance(event, InvitationDeclined):
            self.notes.append(f"{self.name(event.agent)} declined to join {event.interaction}")
            return set()
        if isinstance(event, RecordEvent):
            return self.record_told(event.record)
        if isinstance(event, FloorEvent):
            return self.floor_told(event.rows, event.gone)
        if isinstance(event, SteppedIn):
            where = f" {event.interaction}" if event.interaction else ""
            what = {
                "take_over": f"took over{where}",
                "reassign": f"gave{where} to {self.name(event.to)}",
                "move_to_queue": f"moved{where} to {event.to}",
                "close": f"closed{where}",
                "presence": f"set you {event.to}",
            }[event.action]
            self.notes.append(f"{self.name(event.by)} {what}: {event.reason}")
            return set()
        if isinstance(event, SlaAlert):
            if self._sla_new(event.crossing):
                self.sla_alerts.append((event.crossing.level, sla_text(event.crossing)))
            return set()
        return set()

    def floor_told(self, rows: list[FloorRow], gone: list[str], *, whole: bool = False) -> set[str]:
        """Floor rows as the host has them now ("floor", "monitor:<number>" for those
        monitored); `whole`: these are every row (list_floor's answer)."""
        if whole:
            self.floor = {}
        for row in rows:
            self.floor[row.interaction] = row
        for number in gone:
            self.floor.pop(number, None)
        return {"floor"} | {f"monitor:{n}" for n in [r.interaction for r in rows] + gone}

    def _sla_new(self, crossing: SlaCrossing) -> bool:
        """Whether the crossing was not alerted yet; remembers it as alerted."""
        key = (crossing.item, crossing.target, crossing.level, crossing.since)
        if key in self.sla_shown:
            return False
        self.sla_shown[key] = None
        if len(self.sla_shown) > MAX_SLA_SHOWN:
            del self.sla_shown[next(iter(self.sla_shown))]
        return True

    def record_told(self, record: ServiceRecord) -> set[str]:
        """A case or incident as the host has it now ("records", "record:<number>")."""
        self.records.pop(record.number, None)
        self.records[record.number] = record
        if len(self.records) > MAX_RECORDS:
            del self.records[next(iter(self.records))]
        return {"records", f"record:{record.number}"}

    def _interaction(self, event: InteractionEvent) -> set[str]:
        number = event.record.number
        if event.change == "left":
            self.chats.pop(number, None)
            self.priorities.pop(number, None)
            # Transferred away (or taken over): the host does not send this console the
            # tray again, so its card goes here.
            cards = [c for c in self.ongoing if c.interaction != number]
            if len(cards) != len(self.ongoing):
                self.ongoing = cards
                self.unread_conversations = sum(1 for c in cards if c.unread)
                return {"chats", f"chat:{number}", "ongoing"}
            return {"chats", f"chat:{number}"}
        chat = self.chats.get(number)
        if chat is None:
            chat = self.chats[number] = Chat(record=event.record)
        chat.record = event.record
        if event.change == "opened":
            chat.reply_by = event.reply_by
            chat.details = event.details
        if self.invitations.pop(number, None) is not None:
            return {"chats", f"chat:{number}", "invitations"}
        return {"chats", f"chat:{number}"}

    def _message(self, message: Message) -> set[str]:
        sent = self.reply_sent(message.client_msg_id) if message.client_msg_id else set()
        monitored = self.monitored.get(message.interaction)
        if monitored is not None:
            monitored[message.seq] = message
            sent = sent | {f"monitor:{message.interaction}"}
        chat = self.chats.get(message.interaction)
        if chat is None:
            return sent
        chat.messages[message.seq] = message
        chat.typing = ""
        if message.attachment and all(a.sha256 != message.attachment for a in chat.attachments):
            # A file came (from either side): the attachments list, name and size, comes with
            # the transcript, so fetch it again when this chat is next shown.
            chat.loaded = False
        if message.sender_kind == "customer":
            chat.unread += 1
        elif self.me is not None and message.sender == self.me.id:
            chat.unread = 0
            if message.kind == "message":
                chat.reply_by = None  # answered: the host stops its clock too
        return {"chats", f"chat:{chat.number}"}

    def set_transcript(
        self,
        number: str,
        messages: list[Message],
        attachments: list[Attachment],
        deliveries: Mapping[int, DeliveryState] | None = None,
    ) -> None:
        chat = self.chats.get(number)
        if chat is None:
            return
        for m in messages:
            chat.messages.setdefault(m.seq, m)
        chat.attachments = list(attachments)
        # A delivery event that came while the transcript was on its way is newer.
        chat.deliveries = {**(deliveries or {}), **chat.deliveries}
        chat.loaded = True


def sla_text(crossing: SlaCrossing) -> str:
    """One line for a crossing: "general: IMS0001001 has waited past the 30s target"."""
    who = crossing.interaction or crossing.item
    target = f"{crossing.seconds:g}s"
    if crossing.target == "wait":
        if crossing.level == SlaLevel.BREACHED:
            return f"{crossing.queue}: {who} has waited past the {target} target"
        return f"{crossing.queue}: {who} is near the {target} wait target"
    if crossing.level == SlaLevel.BREACHED:
        return f"{crossing.queue}: {who} has had no first reply within {target}"
    return f"{crossing.queue}: {who} is near the {target} first-reply target"
