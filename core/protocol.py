"""The agent protocol: msgpack frames of tagged msgspec Structs over the /agent WebSocket.

Every client frame carries `ref`, echoed by the server's reply (`Ok`, `Error` or a typed
result) so a client can match answers to requests. Every server *event* carries `seq`, numbered
per session from 1; a reconnecting client sends `Resume(token, last_seq)` and gets exactly the
events after it, or a `Resync` with a fresh snapshot when the server no longer holds them.
docs/protocol.md describes each message, field by field; tests/test_protocol_docs.py fails
when a Struct here (or a record in core/model.py that a frame carries) and its table there
differ, so change both together.

Unknown tags, wrong types and values over their limits fail decoding with a message naming the
field, which the host returns as `Error(code="bad_frame")`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from core.model import (
    MAX_ATTACHMENT_BYTES,
    Attachment,
    AuditEntry,
    Body,
    ClientMsgId,
    DeliveryState,
    InteractionRecord,
    Label,
    Message,
    Name,
    Offer,
    PresenceState,
    QueueMinute,
    RecordKind,
    RecordNote,
    Role,
    ServiceRecord,
    Template,
    WorkItem,
)
from core.sla import QueueSla, SlaLevel, SlaTarget

PROTOCOL_VERSION = 1
MAX_SLA_CROSSINGS = 200  # in a snapshot; more than a supervisor reads, fewer than a floor has
MAX_FRAME_BYTES = MAX_ATTACHMENT_BYTES + 64 * 1024
# WebSocket close codes the host drops a console with (docs/protocol.md).
CLOSE_NOT_READING = 1008  # its queue filled: resume to catch up
CLOSE_REPLACED = 4001  # another console resumed the same session: do not reconnect
CLOSE_SESSION_ENDED = 4002  # logged out or expired: log in again

# Every integer a client sends has an upper bound: the store binds them as SQLite INTEGERs
# (signed 64-bit), and 2**63 or more raised OverflowError there. 2**53 is also the largest
# integer a JSON or JavaScript client holds exactly.
MAX_INT = 2**53
Ref = Annotated[int, Meta(ge=0, le=MAX_INT)]
Seq = Annotated[int, Meta(ge=0, le=MAX_INT)]  # an event or message number, or an offset
Number = Annotated[str, Meta(min_length=1, max_length=32)]
Secret = Annotated[str, Meta(min_length=1, max_length=1024)]
Reason = Annotated[str, Meta(max_length=200)]


# ---------------------------------------------------------------------------- client → host


class ClientFrame(Struct, frozen=True, gc=False, kw_only=True, tag_field="t"):
    ref: Ref = 0


class Hello(ClientFrame, tag="hello", frozen=True, kw_only=True):
    version: Annotated[int, Meta(ge=0, le=MAX_INT)]
    client: Label = ""


class Login(ClientFrame, tag="login", frozen=True, kw_only=True):
    username: Name
    password: Secret


class Authenticate(ClientFrame, tag="authenticate", frozen=True, kw_only=True):
    """Log in with a saved session token or an API token."""

    token: Secret


class Resume(ClientFrame, tag="resume", frozen=True, kw_only=True):
    token: Secret
    last_seq: Seq


class Logout(ClientFrame, tag="logout", frozen=True, kw_only=True):
    pass


class Ping(ClientFrame, tag="ping", frozen=True, kw_only=True):
    pass


class SetPresence(ClientFrame, tag="set_presence", frozen=True, kw_only=True):
    presence: Name


class AcceptOffer(ClientFrame, tag="accept_offer", frozen=True, kw_only=True):
    offer: Number


class RejectOffer(ClientFrame, tag="reject_offer", frozen=True, kw_only=True):
    offer: Number
    reason: Reason = ""


class SendMessage(ClientFrame, tag="send_message", frozen=True, kw_only=True):
    interaction: Number
    body: Body
    client_msg_id: ClientMsgId


class Typing(ClientFrame, tag="typing", frozen=True, kw_only=True):
    interaction: Number


class MarkRead(ClientFrame, tag="mark_read", frozen=True, kw_only=True):
    interaction: Number
    seq: Seq


class AttachFile(ClientFrame, tag="attach_file", frozen=True, kw_only=True):
    interaction: Number
    name: Label
    content_type: Label = "application/octet-stream"
    data: Annotated[bytes, Meta(max_length=MAX_ATTACHMENT_BYTES)]


class GetAttachment(ClientFrame, tag="get_attachment", frozen=True, kw_only=True):
    """The bytes of one of the interaction's files, for whoever may read its transcript."""

    interaction: Number
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]


class UseTemplate(ClientFrame, tag="use_template", frozen=True, kw_only=True):
    """Render a template with the interaction's fields; the agent edits and sends the text."""

    interaction: Number
    shortcut: Name


class InviteAgent(ClientFrame, tag="invite_agent", frozen=True, kw_only=True):
    interaction: Number
    agent: Name


class AnswerInvitation(ClientFrame, tag="answer_invitation", frozen=True, kw_only=True):
    interaction: Number
    accept: bool


class TransferToAgent(ClientFrame, tag="transfer_to_agent", frozen=True, kw_only=True):
    interaction: Number
    agent: Name


class TransferToQueue(ClientFrame, tag="transfer_to_queue", frozen=True, kw_only=True):
    interaction: Number
    queue: Name


class EndChat(ClientFrame, tag="end_chat", frozen=True, kw_only=True):
    interaction: Number


class CloseRecord(ClientFrame, tag="close_record", frozen=True, kw_only=True):
    """Close the interaction (ends wrap-up and frees the capacity it held)."""

    interaction: Number


class Archive(ClientFrame, tag="archive", frozen=True, kw_only=True):
    interaction: Number


class AddWorkNote(ClientFrame, tag="add_work_note", frozen=True, kw_only=True):
    interaction: Number
    body: Body
    client_msg_id: ClientMsgId


class GetPrefill(ClientFrame, tag="get_prefill", frozen=True, kw_only=True):
    """The create-incident / create-case form, prefilled from the transcript."""

    interaction: Number
    kind: RecordKind


class CreateRecord(ClientFrame, tag="create_record", frozen=True, kw_only=True):
    interaction: Number
    kind: RecordKind
    short_description: Label
    description: Body = ""
    priority: Annotated[int, Meta(ge=1, le=5)] = 3


class SubscribeQueueStats(ClientFrame, tag="subscribe_queue_stats", frozen=True, kw_only=True):
    subscribe: bool = True


class GetTranscript(ClientFrame, tag="get_transcript", frozen=True, kw_only=True):
    """Messages after `after_seq`, oldest first; with `newest`, the last `limit` instead."""

    interaction: Number
    after_seq: Seq = 0
    limit: Annotated[int, Meta(ge=1, le=1000)] = 500
    newest: bool = False


class ListInteractions(ClientFrame, tag="list_interactions", frozen=True, kw_only=True):
    archived: bool | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 200
    offset: Seq = 0


class ListAgents(ClientFrame, tag="list_agents", frozen=True, kw_only=True):
    """Supervisors: every agent's presence and load."""


class ListOnlineAgents(ClientFrame, tag="list_online_agents", frozen=True, kw_only=True):
    """Colleagues not Offline, with their presence: whom a chat can go to."""


class GetAudit(ClientFrame, tag="get_audit", frozen=True, kw_only=True):
    """Why did this go to that agent: the item's routing decisions with their reasons."""

    item: Number  # a work item's id, or its interaction's number


# Epoch seconds a client may ask about: from 1970 to 2**53.
Instant = Annotated[float, Meta(ge=0, le=MAX_INT)]
# The most minutes one `get_day` (or REST /minutes) answers: a whole day.
MAX_DAY_MINUTES = 1440


class GetDay(ClientFrame, tag="get_day", frozen=True, kw_only=True):
    """Supervisors: the queues' stored figures per minute between `since` and `until`."""

    since: Instant
    until: Instant
    queue: Name | None = None  # None: every queue


# ---- cases and incidents, worked (core/service/cases.py)

# An assignment to set: an agent id or a group name, or "" to clear it.
Assignment = Annotated[str, Meta(max_length=64, pattern=r"^[A-Za-z0-9_.@+-]*$")]
ShortDescription = Annotated[str, Meta(min_length=1, max_length=200)]
NoteBody = Annotated[str, Meta(min_length=1, max_length=16_000)]


class GetRecord(ClientFrame, tag="get_record", frozen=True, kw_only=True):
    number: Number


class ListRecords(ClientFrame, tag="list_records", frozen=True, kw_only=True):
    """Cases and incidents, newest first: `scope` picks whose, the other fields filter."""

    scope: Literal["mine", "groups", "all"] = "mine"
    kind: RecordKind | None = None
    state: Name | None = None
    assignee: Name | None = None
    group: Name | None = None
    text: Label | None = None
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    offset: Seq = 0


class UpdateRecord(ClientFrame, tag="update_record", frozen=True, kw_only=True):
    """Set the fields given; None leaves a field as it is."""

    number: Number
    short_description: ShortDescription | None = None
    description: Body | None = None
    priority: Annotated[int, Meta(ge=1, le=5)] | None = None
    state: Name | None = None
    assignee: Assignment | None = None
    assignment_group: Assignment | None = None


class AddRecordNote(ClientFrame, tag="add_record_note", frozen=True, kw_only=True):
    number: Number
    body: NoteBody


class LinkRecord(ClientFrame, tag="link_record", frozen=True, kw_only=True):
    number: Number
    interaction: Number


# ---- supervisors: the floor, monitoring, stepping in (core/service/supervision.py)

# Why a supervisor stepped in: required, and kept in the item's routing audit trail.
StepReason = Annotated[str, Meta(min_length=1, max_length=500)]


class ListFloor(ClientFrame, tag="list_floor", frozen=True, kw_only=True):
    """Every open conversation as a floor row; `subscribe` also sends `floor` events with the
    rows that change, once a second, until a `list_floor` with subscribe false."""

    subscribe: bool = True


class Monitor(ClientFrame, tag="monitor", frozen=True, kw_only=True):
    """Receive an open conversation's messages as they are written, without joining it
    (`on` false stops). Read its past with get_transcript."""

    interaction: Number
    on: bool = True


class TakeOver(ClientFrame, tag="take_over", frozen=True, kw_only=True):
    interaction: Number
    reason: StepReason


class Reassign(ClientFrame, tag="reassign", frozen=True, kw_only=True):
    """Give the conversation straight to `agent`, without an offer."""

    interaction: Number
    agent: Name
    reason: StepReason


class MoveToQueue(ClientFrame, tag="move_to_queue", frozen=True, kw_only=True):
    interaction: Number
    queue: Name
    reason: StepReason


class CloseConversation(ClientFrame, tag="close_conversation", frozen=True, kw_only=True):
    interaction: Number
    reason: StepReason


class ForcePresence(ClientFrame, tag="force_presence", frozen=True, kw_only=True):
    agent: Name
    presence: Name
    reason: StepReason


AnyClientFrame = (
    Hello
    | Login
    | Authenticate
    | Resume
    | Logout
    | Ping
    | SetPresence
    | AcceptOffer
    | RejectOffer
    | SendMessage
    | Typing
    | MarkRead
    | AttachFile
    | GetAttachment
    | UseTemplate
    | InviteAgent
    | AnswerInvitation
    | TransferToAgent
    | TransferToQueue
    | EndChat
    | CloseRecord
    | Archive
    | AddWorkNote
    | GetPrefill
    | CreateRecord
    | SubscribeQueueStats
    | GetTranscript
    | ListInteractions
    | ListAgents
    | ListOnlineAgents
    | GetAudit
    | GetDay
    | GetRecord
    | ListRecords
    | UpdateRecord
    | AddRecordNote
    | LinkRecord
    | ListFloor
    | Monitor
    | TakeOver
    | Reassign
    | MoveToQueue
    | CloseConversation
    | ForcePresence
)


# ---------------------------------------------------------------------------- shared views


class AgentView(Struct, frozen=True, gc=False, kw_only=True):
    id: str
    display_name: str
    role: Role
    presence: str
    queues: list[str] = []


class QueueStats(Struct, frozen=True, gc=False, kw_only=True):
    queue: str
    channel: str
    waiting: int
    active: int  # items accepted or in wrap-up
    average_wait: float  # seconds, over the items waiting now
    longest_wait: float
    agents_available: int  # members whose presence includes the channel
    # The queue's targets and how many of its running clocks are near or past them; None
    # when the queue has no [queue.sla].
    sla: QueueSla | None = None


class SlaCrossing(Struct, frozen=True, gc=False, kw_only=True):
    """A conversation's clock reached `level` of its queue's `target` (core/sla.py)."""

    queue: str
    item: str
    interaction: str | None
    target: SlaTarget
    level: SlaLevel  # near | breached
    since: float  # when it reached the level (epoch seconds)
    seconds: float  # the target


class OngoingCard(Struct, frozen=True, gc=False, kw_only=True):
    """One asynchronous conversation in the ongoing-messages tray."""

    interaction: str
    customer_name: str
    last_update: float
    unread: int  # customer messages after the agent's last reply or read mark
    preview: str = ""


class AgentLoad(Struct, frozen=True, gc=False, kw_only=True):
    agent: AgentView
    active: int  # capacity in use: accepted, wrap-up and offered items
    capacity: int  # universal capacity
    offers: int  # routed offers pending
    presence_since: float = 0.0  # when they went into their presence state
    load_by_channel: dict[str, int] = {}  # capacity in use per channel, as `active` counts
    declined_today: int = 0  # offers they rejected since the host's local midnight
    expired_today: int = 0  # offers they let run out since then


class Detail(Struct, frozen=True, gc=False, kw_only=True):
    """One thing the item is about, as its channel shows it to agents: "Severity: 2"."""

    label: str
    value: str


class Snapshot(Struct, frozen=True, gc=False, kw_only=True):
    """Everything a console needs to draw itself from nothing."""

    me: AgentView
    presences: list[PresenceState]
    offers: list[OfferView]
    interactions: list[InteractionRecord]
    ongoing: list[OngoingCard]
    queue_stats: list[QueueStats]
    agents: list[AgentView]
    templates: list[Template]
    queues: list[str]
    # The asynchronous (messaging) channels by name: the console shows the ongoing tray when
    # any presence state lists one, without knowing the host's channel names.
    async_channels: list[str] = []
    # First-reply deadlines of my live chats not yet answered: interaction -> epoch seconds.
    reply_by: dict[str, float] = {}
    # Invitations to join a chat that wait for my answer: interaction -> inviting agent.
    invitations: dict[str, str] = {}
    # What each of `interactions` is about (interaction -> details), for the record pane.
    details: dict[str, list[Detail]] = {}
    # Supervisors: the conversations whose clocks are near or past their queue's target now,
    # oldest crossing first (at most MAX_SLA_CROSSINGS): what was alerted before this login.
    sla_crossings: list[SlaCrossing] = []


class OfferView(Struct, frozen=True, gc=False, kw_only=True):
    offer: Offer
    item: WorkItem
    customer_name: str = ""
    interaction: str | None = None
    # The customer's first message (up to 200 characters), once it has arrived: the offer is
    # sent again when it does.
    first_message: str = ""
    # What the item is about: its attributes as the channel shows them (labels, order).
    details: list[Detail] = []


class FloorRow(Struct, frozen=True, gc=False, kw_only=True):
    """One open conversation as the supervisors' floor shows it. Times are epoch seconds; the
    console works waiting and handle times out of them, so they tick without asking."""

    interaction: str
    item: str
    channel: str
    queue: str | None
    agent: str | None  # the owner; None while it waits
    others: list[str]  # the other agents in it now (invited)
    state: str  # the work item's: queued | offered | accepted | wrap_up
    on_hold: bool  # messaging, waiting on the customer
    customer_name: str
    priority: int
    arrived_at: float  # the item's arrival
    accepted_at: float | None  # its first owner's, since the arrival
    first_reply_at: float | None  # the first agent message since the arrival
    last_customer_at: float | None  # the customer's last message
    unanswered: bool  # the customer's last message has no agent message after it
    # The service-level clock running now in a queue with targets (core/sla.py), and since
    # when: the wait until an agent accepts, then the first reply; None when none runs.
    sla_target: SlaTarget | None = None
    sla_since: float | None = None


# ---------------------------------------------------------------------------- host → client


class ServerFrame(Struct, frozen=True, gc=False, kw_only=True, tag_field="t"):
    pass


class Welcome(ServerFrame, tag="welcome", frozen=True, kw_only=True):
    version: int
    server: str
    heartbeat: float


class Error(ServerFrame, tag="error", frozen=True, kw_only=True):
    ref: int = 0
    code: str
    message: str


class Ok(ServerFrame, tag="ok", frozen=True, kw_only=True):
    ref: int


class LoggedIn(ServerFrame, tag="logged_in", frozen=True, kw_only=True):
    ref: int
    token: str  # session token: keep it to resume or log in again without the password
    expires_at: float
    seq: int  # the session's current event number; events after it follow
    snapshot: Snapshot


class MessageAck(ServerFrame, tag="message_ack", frozen=True, kw_only=True):
    """The message is committed; `duplicate` when the client_msg_id was already stored."""

    ref: int
    message: Message
    duplicate: bool = False


class AttachmentAck(ServerFrame, tag="attachment_ack", frozen=True, kw_only=True):
    ref: int
    attachment: Attachment
    message: Message


class AttachmentData(ServerFrame, tag="attachment_data", frozen=True, kw_only=True):
    """The answer to GetAttachment: the record and its content, at most 10 MiB."""

    ref: int
    attachment: Attachment
    data: Annotated[bytes, Meta(max_length=MAX_ATTACHMENT_BYTES)]


class TemplateText(ServerFrame, tag="template_text", frozen=True, kw_only=True):
    ref: int
    text: str


class Prefill(ServerFrame, tag="prefill", frozen=True, kw_only=True):
    ref: int
    short_description: str
    description: str


class RecordCreated(ServerFrame, tag="record_created", frozen=True, kw_only=True):
    ref: int
    record: ServiceRecord
    interaction: InteractionRecord


class Transcript(ServerFrame, tag="transcript", frozen=True, kw_only=True):
    ref: int
    interaction: InteractionRecord
    messages: list[Message]
    attachments: list[Attachment]
    # Agent messages' outbound delivery by seq, on a channel that delivers (docs/channels.md).
    deliveries: dict[int, DeliveryState] = {}


class InteractionList(ServerFrame, tag="interaction_list", frozen=True, kw_only=True):
    ref: int
    interactions: list[InteractionRecord]


class AgentList(ServerFrame, tag="agent_list", frozen=True, kw_only=True):
    ref: int
    agents: list[AgentLoad]


class OnlineAgents(ServerFrame, tag="online_agents", frozen=True, kw_only=True):
    ref: int
    agents: list[AgentView]


class AuditTrail(ServerFrame, tag="audit_trail", frozen=True, kw_only=True):
    ref: int
    item: str
    interaction: str | None
    entries: list[AuditEntry]  # oldest first; the newest 500 of a longer trail


class DayFigures(ServerFrame, tag="day_figures", frozen=True, kw_only=True):
    ref: int
    since: int  # the first minute asked about (`since` rounded down to its minute)
    until: int  # the end of the last (`until` rounded down to its minute)
    queues: list[str]  # the queues asked about: every queue, or the one named
    minutes: list[QueueMinute]  # oldest first, then by queue; a minute missing is all zeros


class RecordView(ServerFrame, tag="record_view", frozen=True, kw_only=True):
    ref: int
    record: ServiceRecord
    notes: list[RecordNote]
    interactions: list[str]
    states: list[str]


class RecordList(ServerFrame, tag="record_list", frozen=True, kw_only=True):
    ref: int
    records: list[ServiceRecord]


class FloorList(ServerFrame, tag="floor", frozen=True, kw_only=True):
    ref: int
    rows: list[FloorRow]
    at: float  # the host's clock when the rows were read


class Event(ServerFrame, frozen=True, kw_only=True):
    seq: int = 0  # set by the session when the event is queued for it


class OfferEvent(Event, tag="offer", frozen=True, kw_only=True):
    view: OfferView


class OfferClosed(Event, tag="offer_closed", frozen=True, kw_only=True):
    offer: str
    item: str
    state: str  # accepted | rejected | expired | rescinded
    reason: str


class InteractionEvent(Event, tag="interaction", frozen=True, kw_only=True):
    change: Literal["opened", "updated", "closed", "left"]
    record: InteractionRecord
    # On "opened" of a live chat: when the host takes it back unless the agent has replied
    # (epoch seconds, the queue's reply_deadline after accepting); None when there is none.
    reply_by: float | None = None
    # On "opened": what the item is about, as on its offer; empty on the other changes.
    details: list[Detail] = []


class MessageEvent(Event, tag="message", frozen=True, kw_only=True):
    message: Message


class ReadEvent(Event, tag="read", frozen=True, kw_only=True):
    interaction: str
    reader: str
    read_seq: int


class TypingEvent(Event, tag="typing", frozen=True, kw_only=True):
    interaction: str
    who: str


class OngoingEvent(Event, tag="ongoing", frozen=True, kw_only=True):
    cards: list[OngoingCard]
    unread_conversations: int


class QueueStatsEvent(Event, tag="queue_stats", frozen=True, kw_only=True):
    stats: list[QueueStats]


class PresenceEvent(Event, tag="presence", frozen=True, kw_only=True):
    agent: AgentView
    reason: str = ""


class InvitationEvent(Event, tag="invitation", frozen=True, kw_only=True):
    interaction: InteractionRecord
    from_agent: str


class TransferDeclined(Event, tag="transfer_declined", frozen=True, kw_only=True):
    """A transfer the agent asked for did not happen; the chat stays theirs."""

    interaction: str | None
    item: str
    to_agent: str
    state: str  # rejected | expired | rescinded
    reason: str


class InvitationDeclined(Event, tag="invitation_declined", frozen=True, kw_only=True):
    """An agent the recipient invited into a chat said no."""

    interaction: str
    agent: str


class InvitationWithdrawn(Event, tag="invitation_withdrawn", frozen=True, kw_only=True):
    """An invitation the recipient had not answered is void: the chat closed."""

    interaction: str
    reason: str


class RecordEvent(Event, tag="record", frozen=True, kw_only=True):
    record: ServiceRecord
    note: RecordNote | None = None


class Resync(Event, tag="resync", frozen=True, kw_only=True):
    """The events after the client's last one are gone: redraw from this snapshot."""

    snapshot: Snapshot


class DeliveryEvent(Event, tag="delivery", frozen=True, kw_only=True):
    """An agent message's outbound delivery to the channel's provider changed state."""

    interaction: str
    message_seq: int
    state: DeliveryState


class FloorEvent(Event, tag="floor_changed", frozen=True, kw_only=True):
    """The floor rows that changed since the last one, and the conversations gone from it."""

    rows: list[FloorRow]
    gone: list[str]
    at: float


class SteppedIn(Event, tag="stepped_in", frozen=True, kw_only=True):
    """A supervisor changed a conversation the recipient is in, or the recipient's presence."""

    action: Literal["take_over", "reassign", "move_to_queue", "close", "presence"]
    by: str
    reason: str
    interaction: str | None = None  # None for a presence change
    to: str = ""  # the agent, queue or presence it went to


class SlaAlert(Event, tag="sla_alert", frozen=True, kw_only=True):
    """Supervisors: a conversation's clock has just come near or past its queue's target."""

    crossing: SlaCrossing


AnyServerFrame = (
    Welcome
    | Error
    | Ok
    | LoggedIn
    | MessageAck
    | AttachmentAck
    | AttachmentData
    | TemplateText
    | Prefill
    | RecordCreated
    | Transcript
    | InteractionList
    | AgentList
    | OnlineAgents
    | AuditTrail
    | DayFigures
    | RecordView
    | RecordList
    | OfferEvent
    | OfferClosed
    | InteractionEvent
    | MessageEvent
    | ReadEvent
    | TypingEvent
    | OngoingEvent
    | QueueStatsEvent
    | PresenceEvent
    | InvitationEvent
    | TransferDeclined
    | InvitationDeclined
    | InvitationWithdrawn
    | RecordEvent
    | Resync
    | DeliveryEvent
    | FloorList
    | FloorEvent
    | SteppedIn
    | SlaAlert
)

encoder = msgspec.msgpack.Encoder()
client_decoder = msgspec.msgpack.Decoder(AnyClientFrame)
server_decoder = msgspec.msgpack.Decoder(AnyServerFrame)
