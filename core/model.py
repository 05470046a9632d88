"""Domain records shared by every layer.

Records are frozen msgspec Structs: the routing engine replaces them instead of mutating, so a
record handed to the store or to a session can never change under its reader.
They are plain trees of data that can never form a reference cycle, so they are declared
gc=False: the garbage collector does not track them. A host keeps hundreds of thousands of
them (every session's resume buffer); tracked, they made each collection pass walk them all.
Times are absolute epoch seconds (float); the clock itself is always injected by the caller.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from msgspec import Meta, Struct

# Size limits shared by the wire, the store and the config loader.
Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@+-]+$")]
Label = Annotated[str, Meta(max_length=200)]
Body = Annotated[str, Meta(max_length=16_000)]
# No control characters: PostgreSQL's text cannot hold a NUL, and an id is not text to show.
ClientMsgId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
# Integers within ±2**53: exact as JSON numbers everywhere, and far inside SQLite's and
# msgpack's 64 bits (2**63 in an attribute used to reach the agent socket's encoder).
AttrInt = Annotated[int, Meta(ge=-(2**53), le=2**53)]
AttrValue = Label | AttrInt | float | bool
Attributes = Annotated[dict[Annotated[str, Meta(max_length=64)], AttrValue], Meta(max_length=64)]


def attribute_label(key: str) -> str:
    """How an item attribute is named to agents when the channel gives it no label:
    `short_description` -> "Short description"."""
    return key.replace("_", " ").strip().capitalize() or key


MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
# The heaviest work item: as much capacity as any agent can have (core.config MAX_CAPACITY).
MAX_WEIGHT = 1000


class ChannelMode(StrEnum):
    SYNC = "sync"  # live chat: the customer is waiting on the other end
    ASYNC = "async"  # messaging: replies may take hours
    RECORD = "record"  # cases and incidents raised by other systems


# A week: a customer answering a closing "anything else?" the next days lands in the same
# conversation, with its history, rather than in a new one.
DEFAULT_REOPEN_WINDOW = 7 * 24 * 3600.0


class ServiceChannel(Struct, frozen=True, gc=False, kw_only=True):
    name: Name
    mode: ChannelMode
    label: Label = ""
    weight: int = 1  # the capacity its items use, unless an item says otherwise
    # Seconds after the close within which a customer's message reopens the conversation;
    # later it starts a new one linked to it. 0: never reopened.
    reopen_window: Annotated[float, Meta(ge=0)] = DEFAULT_REOPEN_WINDOW
    # Customer notices (core/notices.py): the language they default to, and the channel's
    # texts, notice name -> language tag -> text, in place of the built-in English.
    language: str = "en"
    notices: dict[str, dict[str, str]] = {}


class PresenceState(Struct, frozen=True, gc=False, kw_only=True):
    """A presence state makes an agent available for exactly the channels it lists."""

    name: Name
    channels: tuple[Name, ...] = ()
    label: Label = ""


AVAILABLE = "Available"
AWAY = "Away"
OFFLINE = "Offline"


class Role(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class Agent(Struct, frozen=True, gc=False, kw_only=True):
    id: Name
    display_name: Label = ""
    role: Role = Role.AGENT
    skills: dict[Name, int] = {}
    # Capacity per channel name; a channel missing here means the agent cannot take it.
    capacity: dict[Name, int] = {}
    universal_capacity: int = 10
    groups: tuple[Name, ...] = ()
    disabled: bool = False


class AssignmentRule(StrEnum):
    MOST_CAPACITY = "most_capacity"
    LEAST_RECENT = "least_recent"
    ROUND_ROBIN = "round_robin"


class SkillRequirement(Struct, frozen=True, gc=False, kw_only=True):
    name: Name
    level: int = 1


class Queue(Struct, frozen=True, gc=False, kw_only=True):
    name: Name
    channel: Name
    # Expression over item attributes (core.routing.condition); empty matches everything.
    condition: str = ""
    order: int = 100
    rule: AssignmentRule = AssignmentRule.MOST_CAPACITY
    skills: tuple[SkillRequirement, ...] = ()
    prefer_skill_level: bool = False
    groups: tuple[Name, ...] = ()
    offer_timeout: float = 30.0
    timeout_presence: str | None = None
    max_wait: float | None = None
    overflow: str | None = None
    reply_deadline: float | None = None
    wrap_up_time: float | None = None
    affinity_window: float | None = None
    abandon_after: float | None = None


class ItemState(StrEnum):
    QUEUED = "queued"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    WRAP_UP = "wrap_up"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"


OPEN_ITEM_STATES = frozenset(
    {ItemState.QUEUED, ItemState.OFFERED, ItemState.ACCEPTED, ItemState.WRAP_UP}
)


class WorkItem(Struct, frozen=True, gc=False, kw_only=True):
    id: Name
    channel: Name
    customer: Name
    created_at: float
    attributes: Attributes = {}
    priority: int = 0  # larger is more urgent
    weight: int = 1
    state: ItemState = ItemState.QUEUED
    queue: str | None = None
    # Time that fixes the item's place in its queue; kept across expiry, overflow and reclaim
    # so an item never loses its place for something that was not its fault.
    enqueued_at: float = 0.0
    agent: str | None = None  # the agent holding it once accepted
    offers_made: int = 0  # also the suffix of the next offer id, so ids survive restarts
    rejected_by: tuple[str, ...] = ()
    preferred_agent: str | None = None
    interaction: str | None = None
    # Asynchronous conversations waiting on the customer hold no capacity.
    on_hold: bool = False
    # Accepted, customer replied, but the owner has no room: the owner's next free slot is theirs.
    awaiting_capacity: bool = False
    replied: bool = False
    notice_sent: bool = False
    # Absolute deadlines; None when not armed.
    max_wait_at: float | None = None
    reply_by: float | None = None
    wrap_up_until: float | None = None
    abandon_at: float | None = None
    closed_at: float | None = None


class OfferState(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EXPIRED = "expired"
    RESCINDED = "rescinded"


class OfferKind(StrEnum):
    ROUTED = "routed"
    TRANSFER = "transfer"


class Offer(Struct, frozen=True, gc=False, kw_only=True):
    id: str
    item: Name
    agent: Name
    created_at: float
    deadline: float
    state: OfferState = OfferState.PENDING
    kind: OfferKind = OfferKind.ROUTED
    # For a transfer: the agent handing the item over.
    from_agent: str | None = None
    to_queue: str | None = None
    reason: str = ""  # why the router chose this agent
    outcome_reason: str = ""  # why it ended (reject reason, expiry, rescind cause)
    closed_at: float | None = None


class InteractionState(StrEnum):
    NEW = "new"
    WORK_IN_PROGRESS = "work_in_progress"
    WRAP_UP = "wrap_up"
    CLOSED_COMPLETE = "closed_complete"
    CLOSED_ABANDONED = "closed_abandoned"


CLOSED_INTERACTION_STATES = frozenset(
    {InteractionState.CLOSED_COMPLETE, InteractionState.CLOSED_ABANDONED}
)


class Participant(Struct, frozen=True, gc=False, kw_only=True):
    agent: Name
    role: Literal["owner", "invited"] = "owner"
    joined_at: float = 0.0
    left_at: float | None = None


class InteractionRecord(Struct, frozen=True, gc=False, kw_only=True):
    number: str  # IMS0001001
    item: Name
    channel: Name
    customer: Name
    opened_at: float
    queue: str | None = None
    state: InteractionState = InteractionState.NEW
    archived: bool = False
    customer_name: Label = ""
    customer_contact: Label = ""
    participants: tuple[Participant, ...] = ()
    case: str | None = None
    incident: str | None = None
    closed_at: float | None = None
    # The API token (tok_...) whose integration created it; None for the widget and older
    # records. Integrations without channels write only into what they created.
    created_by: str | None = None
    # The closed interaction this one follows up: its customer wrote after its reopen window.
    previous: str | None = None
    # The customer's language tag (the widget's page or the integration said), for notices;
    # empty: not known, the channel's default language.
    language: str = ""


class Invitation(Struct, frozen=True, gc=False, kw_only=True):
    """An agent asked to join an open conversation, until they answer or it closes."""

    interaction: str
    agent: Name  # the invitee
    inviter: Name
    created_at: float


# The Message-IDs one mail's In-Reply-To and References are looked up by: the newest ones.
MAX_MAIL_IDS = 100


class MailId(Struct, frozen=True, gc=False, kw_only=True):
    """An e-mail's Message-ID in a conversation, received or sent: replies thread by it
    (core/service/mail.py)."""

    message_id: str  # without the angle brackets
    interaction: str
    outbound: bool  # sent by the host, not by the customer
    subject: str = ""
    created_at: float


class SenderKind(StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    SYSTEM = "system"


class Message(Struct, frozen=True, gc=False, kw_only=True):
    interaction: str
    seq: int  # per-interaction, monotonic from 1
    sender_kind: SenderKind
    sender: str
    body: Body
    client_msg_id: ClientMsgId
    created_at: float
    kind: Literal["message", "work_note"] = "message"
    attachment: str | None = None  # sha256 of an attachment shown with the message


# Outbound delivery (core/service/outbox.py): where an agent's reply or a conversation
# event stands on its way to the channel's provider. pending: not tried yet; retrying: the
# last try failed and another is due; sent: the provider took it; failed: given up on.
DeliveryState = Literal["pending", "retrying", "sent", "failed"]


class Delivery(Struct, frozen=True, gc=False, kw_only=True):
    """One outbox entry: a message or conversation event to POST to a channel's provider.

    Written in the same store transaction as what it delivers; `id` is what the receiver
    dedupes on, so a redelivery after a crash or a lost answer is harmless.
    """

    id: str
    channel: str
    conversation: str  # the interaction number: deliveries of one conversation go in order
    event: Literal["message", "assigned", "transferred", "closed"]
    created_at: float
    message: Message | None = None  # for event "message"
    agent: str = ""  # for assigned / transferred: who has the conversation now
    queue: str = ""  # for transferred to a queue
    state: DeliveryState = "pending"
    attempts: int = 0
    next_at: float = 0.0  # when the next try is due
    last_error: str = ""


class Attachment(Struct, frozen=True, gc=False, kw_only=True):
    interaction: str
    name: Label
    content_type: Label
    size: Annotated[int, Meta(ge=0, le=MAX_ATTACHMENT_BYTES)]
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
    created_at: float
    uploaded_by: str = ""


class Template(Struct, frozen=True, gc=False, kw_only=True):
    shortcut: Name
    text: Body
    # "global", "queue:<name>" or "agent:<id>"
    scope: str = "global"
    title: Label = ""


class RecordKind(StrEnum):
    CASE = "case"
    INCIDENT = "incident"


class ServiceRecord(Struct, frozen=True, gc=False, kw_only=True):
    """A case (CS…) or an incident (INC…) raised from an interaction."""

    number: str
    kind: RecordKind
    short_description: Label
    description: Body = ""
    priority: Annotated[int, Meta(ge=1, le=5)] = 3
    # One of its kind's states in the config ([records.<kind>] states), checked on each change.
    state: Name = "new"
    source_interaction: str | None = None
    created_at: float = 0.0
    created_by: str = ""
    assignee: Name | None = None  # an agent id
    assignment_group: Name | None = None  # a [[group]] name
    updated_at: float = 0.0
    updated_by: str = ""
    # Bumped by every stored change: a save from an older read is refused (StoreConflict).
    version: int = 0


class RecordNote(Struct, frozen=True, gc=False, kw_only=True):
    """A work note on a case or incident: internal, append-only."""

    record: str
    author: str
    body: Body
    created_at: float


NUMBER_PREFIX = {"interaction": "IMS", RecordKind.CASE: "CS", RecordKind.INCIDENT: "INC"}


def format_number(prefix: str, n: int) -> str:
    """IMS0001001-style numbers: seven digits, starting at 1001 like the seed's examples."""
    return f"{prefix}{n:07d}"


def parse_number(prefix: str, number: str) -> int:
    """What format_number(prefix, n) was made of: n. ValueError if it is not such a number."""
    digits = number.removeprefix(prefix)
    if digits == number or not digits.isdigit():
        raise ValueError(f"{number!r} is not a number under {prefix}")
    return int(digits)


_FIELD = re.compile(r"\{([a-z_]+(?:\.[a-z_]+)*)\}")


def render_template(text: str, fields: dict[str, str]) -> str:
    """Fill {customer.name}-style fields; unknown fields stay visible rather than vanish."""

    def replace(match: re.Match[str]) -> str:
        return fields.get(match.group(1), match.group(0))

    return _FIELD.sub(replace, text)


class AgentStatus(Struct, frozen=True, gc=False, kw_only=True):
    """The live, routing-relevant state of an agent, persisted so a restart resumes it."""

    agent: Name
    presence: str = OFFLINE
    presence_since: float = 0.0
    last_assigned_at: float | None = None


class AuditEntry(Struct, frozen=True, gc=False, kw_only=True):
    """One routing decision and why it was taken: the routing audit trail."""

    at: float
    kind: str  # the decision's tag, e.g. "offer_made", "item_overflowed"
    item: str | None = None
    agent: str | None = None
    offer: str | None = None
    reason: str = ""


class QueueMinute(Struct, frozen=True, gc=False, kw_only=True):
    """One queue's figures for one minute of the day, as the host counted them from its
    routing steps (core/service/day.py says what each counts)."""

    queue: Name
    minute: int  # epoch seconds of the minute's start, a multiple of 60
    waiting: int = 0  # items not yet accepted (queued or offered) at the minute's end
    most_waiting: int = 0  # the most there were at any moment of the minute
    arrivals: int = 0  # items that came into the queue: new, overflowed or transferred in
    answered: int = 0  # items an agent accepted
    abandoned: int = 0  # items cancelled while waiting (the customer left before an answer)
    handled: int = 0  # items that ended after an agent had accepted them
    waits: int = 0  # how many waits the two below cover: answered, and waiting at the end
    average_wait: float = 0.0  # seconds from enqueued_at to the answer, or to the minute's end
    longest_wait: float = 0.0


class AgentDay(Struct, frozen=True, gc=False, kw_only=True):
    """An agent's offers declined and left to expire in one day (the host's local day)."""

    agent: Name
    day: int  # epoch seconds of the day's local midnight
    declined: int = 0
    expired: int = 0
