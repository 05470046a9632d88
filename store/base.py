"""The one persistence interface, and the errors and stats every implementation shares.

Callers (core/service, the host, tests, benches) depend on `Store` only. Everything here is
async and speaks in core.model records, so a PostgreSQL implementation can replace SQLite
without touching a caller: numbers and message sequence numbers are allocated by the store,
never by the caller, and no database type crosses this boundary.

Durability contract: an awaited write has been committed when it returns. The service relies on
this to acknowledge a message only after it is stored ("persist first, then send").
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from msgspec import Struct

from core.model import (
    Agent,
    AgentDay,
    AgentStatus,
    Attachment,
    AuditEntry,
    Delivery,
    DeliveryState,
    InteractionRecord,
    InteractionState,
    Invitation,
    Label,
    MailId,
    Message,
    Offer,
    Participant,
    PresenceState,
    Queue,
    QueueMinute,
    RecordKind,
    RecordNote,
    Role,
    SenderKind,
    ServiceChannel,
    ServiceRecord,
    Template,
    WorkItem,
)


class StoreError(Exception):
    """Base of every error a store raises; the message says what failed and where."""


class StoreClosed(StoreError):
    """The store is not open (never opened, or closing)."""


class StoreLocked(StoreError):
    """Another process already owns the data directory; `pid` is that process, if known."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class StoreVersionError(StoreError):
    """The database was written by a newer inbox-tui than this one."""


class StoreUnavailable(StoreError):
    """The database cannot be read or written (I/O error, read-only file system, missing)."""


class StoreFull(StoreUnavailable):
    """The disk (or the database's size limit) is full; nothing of the failed write was kept."""


class StoreConflict(StoreError):
    """A write broke a constraint, e.g. a second pending offer for one work item."""


class NotFound(StoreError):
    """The record the write refers to does not exist."""


class StoreFenced(StoreUnavailable):
    """A routing write from a process that no longer holds the routing role (another took
    it over, or its lease ended): nothing of it was stored. The process stops routing and
    does not retry; to the client whose request it was, like any StoreUnavailable, this host
    cannot store that now: retry (on the host that routes)."""


def _bucket(size: int) -> int:
    # Smallest power of two >= size: cheap, bounded histogram keys (1, 2, 4, ... 1024).
    return 1 << (size - 1).bit_length()


SLOW_COMMIT_S = 0.025


@dataclass
class StoreStats:
    """Write-path counters for /metrics; updated on the event loop only, so no locking
    (writer_cpu_seconds aside: only the writer thread adds to it)."""

    commits: int = 0
    failed_commits: int = 0
    ops: int = 0
    max_batch: int = 0
    write_seconds: float = 0.0
    # Commits slower than SLOW_COMMIT_S (each one delays every write queued behind it).
    slow_commits: int = 0
    max_commit_seconds: float = 0.0
    # Committed batches by size; key = inclusive power-of-two upper bound of the batch size.
    batch_sizes: dict[int, int] = field(default_factory=dict)
    # Why the latest commit failed, until one succeeds again: what /healthz reports.
    failing: str | None = None
    # CPU seconds of a writer that runs on a thread of its own (SQLite); None: the writer
    # runs on the event loop (PostgreSQL), whose CPU it shares.
    writer_cpu_seconds: float | None = None

    def record_batch(
        self, size: int, seconds: float, *, committed: bool, error: str | None = None
    ) -> None:
        self.write_seconds += seconds
        if not committed:
            self.failed_commits += 1
            self.failing = error or "a commit failed"
            return
        self.failing = None
        self.commits += 1
        self.ops += size
        if seconds > SLOW_COMMIT_S:
            self.slow_commits += 1
        self.max_commit_seconds = max(self.max_commit_seconds, seconds)
        self.max_batch = max(self.max_batch, size)
        key = _bucket(size)
        self.batch_sizes[key] = self.batch_sizes.get(key, 0) + 1


@dataclass(frozen=True)
class RecordQuery:
    """Which cases and incidents list_records returns: every filter given must hold.

    `groups` keeps records assigned to one of them (empty: none). `reader`, with
    `reader_groups`, keeps what that agent may read: records assigned to them or one of
    their groups, created by them, or linked to an interaction they took part in."""

    kind: RecordKind | None = None
    state: str | None = None
    assignee: str | None = None
    groups: tuple[str, ...] | None = None
    text: str | None = None  # in the short description, case-insensitive
    reader: str | None = None
    reader_groups: tuple[str, ...] = ()


class SessionRecord(Struct, frozen=True, kw_only=True):
    """A login session. Only the sha256 of its token is kept: a copy of the database (a
    backup, a support bundle) must not let anyone log in."""

    token_digest: str
    agent: str
    role: Role
    created_at: float
    expires_at: float
    revoked_at: float | None = None


class ApiToken(Struct, frozen=True, kw_only=True):
    """A long-lived token for scripts and other systems, bound to an agent or to none."""

    id: str  # "tok_...": what admins list and revoke; never the secret
    token_digest: str
    name: Label
    role: Role
    created_at: float
    agent: str | None = None
    expires_at: float | None = None  # None: until revoked
    revoked_at: float | None = None
    # The service channels its integration may write to; None: any channel for new items,
    # but only into the conversations this token created (docs/security.md).
    channels: tuple[str, ...] | None = None


# How long a REST client may retry a request under the same Idempotency-Key; older keys are
# forgotten (and pruned a bounded number at a time as new ones are stored).
IDEMPOTENCY_TTL = 24 * 3600.0
IDEMPOTENCY_PRUNE_BATCH = 100


class IdempotencyKey(Struct, frozen=True, kw_only=True):
    """A client's key for one request, stored in the transaction that did the work, so a
    retry after a crash finds either both or neither. `fingerprint` is the request body's
    digest: the same key with another body is a client bug, not a retry."""

    scope: str  # whose key: the calling token's id, so two integrations never collide
    key: str
    fingerprint: str
    created_at: float
    interaction: str = ""  # filled in by the store when it commits the interaction


_PATH_SEPARATORS = re.compile(r"[/\\]")


def sanitize_attachment_name(name: str) -> str:
    """A display name for an upload: the last path part, printable, at most 200 characters.

    The name is a label only and never becomes a path (content lives under its sha256), but
    it is shown to other users, so path parts and control characters are dropped anyway.
    """
    last = _PATH_SEPARATORS.split(name)[-1]
    cleaned = "".join(ch for ch in last if unicodedata.category(ch)[0] != "C").strip()
    if cleaned in ("", ".", ".."):
        return "attachment"
    return cleaned[:200]


# The names of the secrets a cluster's hosts share (RouterLease.shared_secret), and their sizes.
WIDGET_KEY = "widget.key"  # signs the widget's tickets; a SQLite data dir's file of that name
WIDGET_KEY_BYTES = 32
CLUSTER_ID = "bus subjects"  # the cluster's subjects on the bus are under its hex
CLUSTER_ID_BYTES = 6


@runtime_checkable
class RouterLease(Protocol):
    """A store several hosts share (PostgreSQL) elects the one host that routes: the role is
    held while a lease lasts, and every routing commit is fenced by its epoch (StoreFenced)."""

    router_lost_reason: str | None

    @property
    def router_lost(self) -> asyncio.Event:
        """Set while this store does not hold the role; a new Event for each term."""
        ...

    async def acquire_router(self, holder: str) -> int | None:
        """Try once; the new fencing epoch, or None while another host holds the role."""
        ...

    async def release_router(self) -> None: ...

    async def shared_secret(self, name: str, size: int) -> bytes:
        """A secret every host of the cluster uses alike: `size` random bytes, made once."""
        ...


class Store(Protocol):
    """Persistence for the host. Every method is a coroutine; writes return once committed."""

    stats: StoreStats

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Take ownership of the data, migrate the schema, start the writer."""
        ...

    async def close(self) -> None:
        """Commit every write already submitted, then release everything. Idempotent."""
        ...

    # -- configuration ----------------------------------------------------------------------

    async def upsert_channels(self, channels: Iterable[ServiceChannel]) -> None: ...

    async def list_channels(self) -> list[ServiceChannel]: ...

    async def upsert_presence_states(self, states: Iterable[PresenceState]) -> None: ...

    async def upsert_queues(self, queues: Iterable[Queue]) -> None: ...

    async def upsert_agents(self, agents: Iterable[Agent]) -> None:
        """Insert or replace agents; a stored password hash is kept. Agents are disabled
        (Agent.disabled), never deleted, because history refers to them."""
        ...

    async def list_agents(self) -> list[Agent]: ...

    async def get_agent(self, agent_id: str) -> Agent | None: ...

    async def set_agent_password_hash(self, agent_id: str, password_hash: str | None) -> None:
        """Raises NotFound for an unknown agent."""
        ...

    async def get_agent_password_hash(self, agent_id: str) -> str | None: ...

    # -- sessions and API tokens ------------------------------------------------------------

    async def save_session(self, session: SessionRecord) -> None:
        """NotFound for an unknown agent; StoreConflict for a digest already stored."""
        ...

    async def get_session(self, token_digest: str) -> SessionRecord | None:
        """The session, revoked or expired ones included: the caller tells them apart."""
        ...

    async def revoke_session(self, token_digest: str, at: float) -> bool:
        """True if this call ended a session that was not yet revoked."""
        ...

    async def revoke_agent_sessions(self, agent_id: str, at: float) -> int:
        """End every unrevoked session of an agent (password changed); returns how many."""
        ...

    async def prune_sessions(self, now: float) -> int:
        """Delete sessions expired or revoked by `now`; returns how many."""
        ...

    async def save_api_token(self, token: ApiToken) -> None:
        """NotFound for an unknown agent; StoreConflict for an id or digest already stored."""
        ...

    async def get_api_token(self, token_digest: str) -> ApiToken | None: ...

    async def list_api_tokens(self) -> list[ApiToken]:
        """Every token, revoked and expired ones included, oldest first."""
        ...

    async def revoke_api_token(self, token_id: str, at: float) -> bool:
        """True if this call revoked a token that was not yet revoked."""
        ...

    async def upsert_templates(self, templates: Iterable[Template]) -> None:
        """Templates are keyed by (scope, shortcut): an agent may shadow a global shortcut."""
        ...

    # -- routing state ----------------------------------------------------------------------

    async def load_open_items(self) -> list[WorkItem]:
        """Items in queued, offered, accepted or wrap_up, in first-saved order."""
        ...

    async def load_open_conversations(
        self, customer_lines: int, channels: Collection[str]
    ) -> list[tuple[InteractionRecord, list[Message]]]:
        """The interaction of every open item; for those of `channels`, also its newest
        `customer_lines` customer messages and its newest message of any kind, oldest first.
        What a restarted inbox needs for the ongoing tray's unread counts and previews, in a
        few queries rather than two per conversation."""
        ...

    async def recent_lines(
        self, numbers: Sequence[str], customer_lines: int
    ) -> dict[str, list[Message]]:
        """Of each of `numbers` that has lines: its newest `customer_lines` customer messages
        and its newest message of any kind, oldest first (as load_open_conversations gives
        them). For reads that can go a slice of conversations at a time."""
        ...

    async def get_item(self, item_id: str) -> WorkItem | None: ...

    async def load_pending_offers(self) -> list[Offer]: ...

    async def load_agent_statuses(self) -> list[AgentStatus]: ...

    async def load_affinity(self) -> dict[str, tuple[str, float]]:
        """customer -> (agent who last served them, when)."""
        ...

    async def audit_trail(self, item_id: str, limit: int = 500) -> list[AuditEntry]:
        """Why routing did what it did with one item: its newest `limit` audit entries,
        oldest first."""
        ...

    async def apply_routing(
        self,
        *,
        items: Iterable[WorkItem] = (),
        offers: Iterable[Offer] = (),
        statuses: Iterable[AgentStatus] = (),
        audit: Iterable[AuditEntry] = (),
        affinity: Mapping[str, tuple[str, float]] | None = None,
        interactions: Iterable[InteractionRecord] = (),
        deliveries: Iterable[Delivery] = (),
        created: Collection[str] = (),
        lines: Sequence[Message] = (),
    ) -> list[Message]:
        """Persist routing decisions all-or-nothing; `affinity` is customer -> (agent who
        last served them, when); `interactions` are the records that follow the items,
        replaced as save_interaction does (NotFound likewise), except those whose numbers are
        in `created`: new interactions (numbers from reserve_numbers), inserted with their
        participants (StoreConflict if the number is stored already); `deliveries` go into
        the outbox, in order, after every one enqueued before; `lines` (system lines such as
        "Alice joined", each with a client_msg_id of its own) are appended as append_message
        does, in order, after the records. Returns the lines as stored, with their seqs.

        Items are written before their offers (NotFound for an offer of an unknown item), and
        offers leaving `pending` before new pending ones: at most one pending offer per item
        (StoreConflict otherwise), so ending one and making the next in one call is fine."""
        ...

    # -- interactions -----------------------------------------------------------------------

    async def create_interaction(
        self,
        *,
        item: str,
        channel: str,
        customer: str,
        opened_at: float,
        queue: str | None = None,
        state: InteractionState = InteractionState.NEW,
        customer_name: str = "",
        customer_contact: str = "",
        participants: tuple[Participant, ...] = (),
        created_by: str | None = None,
        idempotency: IdempotencyKey | None = None,
        previous: str | None = None,
        language: str = "",
        number: str | None = None,
    ) -> InteractionRecord:
        """Store a new interaction under the next number (IMS0001001, IMS0001002, ...), or
        under `number` if given (one from reserve_numbers; StoreConflict if it is stored).

        With `idempotency`, the key is stored in the same transaction; StoreConflict (and
        nothing stored) if that (scope, key) is already stored and younger than
        IDEMPOTENCY_TTL."""
        ...

    async def reserve_numbers(self, prefix: str, count: int) -> list[str]:
        """`count` numbers under `prefix` ("IMS"), the next in order, committed as used before
        this returns: no other caller, in any process, is given them. For interactions created
        in their item's routing step (apply_routing's `created`), or by create_interaction
        with its `number`."""
        ...

    async def release_numbers(self, prefix: str, first: str, last: str) -> bool:
        """Give back the numbers `first`..`last` reserved and never used, if nobody reserved
        any after them (the counter still stands at `last`): the next one reserved is then
        `first`. Returns whether they were given back."""
        ...

    async def get_idempotency_key(self, scope: str, key: str, now: float) -> IdempotencyKey | None:
        """The stored key, unless it is older than IDEMPOTENCY_TTL at `now`."""
        ...

    async def save_mail_id(self, mail: MailId) -> None:
        """Remember an e-mail's Message-ID in its conversation; one stored already stays."""
        ...

    async def find_mail_ids(self, message_ids: Sequence[str]) -> list[MailId]:
        """The stored ones among `message_ids` (at most MAX_MAIL_IDS are looked up)."""
        ...

    async def last_mail_ids(self, interaction: str, limit: int) -> list[MailId]:
        """The conversation's newest `limit` Message-IDs, oldest first."""
        ...

    async def save_invitation(self, invitation: Invitation) -> None:
        """Store a pending invitation (replacing one to the same agent and interaction)."""
        ...

    async def delete_invitations(self, interaction: str, agent: str | None = None) -> None:
        """Forget the interaction's invitation to `agent`, or all of its invitations."""
        ...

    async def load_invitations(self) -> list[Invitation]:
        """Every stored invitation, oldest first."""
        ...

    async def save_interaction(self, record: InteractionRecord) -> None:
        """Replace a created interaction; raises NotFound for a number never allocated."""
        ...

    async def get_interaction(self, number: str) -> InteractionRecord | None: ...

    async def list_interactions(
        self,
        *,
        agent: str | None = None,
        archived: bool | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[InteractionRecord]:
        """Newest first; `agent` keeps interactions the agent is (or was) a participant of."""
        ...

    # -- messages ---------------------------------------------------------------------------

    async def append_message(
        self,
        interaction: str,
        sender_kind: SenderKind,
        sender: str,
        body: str,
        client_msg_id: str,
        created_at: float,
        kind: Literal["message", "work_note"] = "message",
        attachment: str | None = None,
        delivery: Delivery | None = None,
    ) -> tuple[Message, bool]:
        """Store a message under the interaction's next seq; returns (message, duplicate).

        A retry with a client_msg_id already stored for this interaction stores nothing and
        returns the original message with duplicate=True. NotFound for an unknown interaction.
        `delivery`, for a new message only, goes into the outbox in the same transaction, its
        `message` the message as stored.
        """
        ...

    # -- the outbox (core/service/outbox.py) ----------------------------------------------

    async def due_deliveries(self, limit: int = 500) -> list[Delivery]:
        """Of each conversation, its oldest delivery neither sent nor failed; the `limit`
        oldest of those, in the order enqueued."""
        ...

    async def save_delivery(self, delivery: Delivery) -> None:
        """Store a delivery's new state, attempts and next try (by its id)."""
        ...

    async def message_deliveries(self, interaction: str) -> dict[int, DeliveryState]:
        """Message seq -> the state of its delivery, for the interaction's delivered messages."""
        ...

    async def outbox_backlog(self) -> int:
        """How many deliveries are neither sent nor failed."""
        ...

    async def list_messages(
        self, interaction: str, after_seq: int = 0, limit: int = 500
    ) -> list[Message]: ...

    async def last_messages(self, interaction: str, limit: int = 500) -> list[Message]:
        """The newest `limit` messages, in seq order: what a console shows first."""
        ...

    # -- attachments ------------------------------------------------------------------------

    async def put_attachment(
        self,
        interaction: str,
        name: str,
        content_type: str,
        data: bytes,
        uploaded_by: str,
        created_at: float,
    ) -> Attachment:
        """Store content once per sha256; ValueError above model.MAX_ATTACHMENT_BYTES.

        Uploading the same content to the same interaction again returns the first record.
        """
        ...

    async def list_attachments(self, interaction: str) -> list[Attachment]: ...

    async def read_attachment(
        self, interaction: str, sha256: str
    ) -> tuple[Attachment, bytes] | None:
        """The attachment of this interaction with that digest and its content; None when the
        interaction has no such attachment (content another interaction holds included)."""
        ...

    # -- cases and incidents ----------------------------------------------------------------

    async def create_record(
        self,
        kind: RecordKind,
        short_description: str,
        description: str = "",
        priority: int = 3,
        source_interaction: str | None = None,
        created_by: str = "",
        created_at: float = 0.0,
        state: str = "new",
        assignee: str | None = None,
    ) -> ServiceRecord:
        """Store a case (CS0001001, ...) or incident (INC0001001, ...) under the next number,
        in `state`, assigned to `assignee`, linked to its source interaction (record_links).

        Linking it onto the source interaction's own fields is the caller's save_interaction.
        """
        ...

    async def get_record(self, number: str) -> ServiceRecord | None: ...

    async def save_record(self, record: ServiceRecord) -> ServiceRecord:
        """Replace a record read at `record.version`; returns it as stored, version + 1.

        StoreConflict when it was saved meanwhile (another version is stored): read it again
        and redo the change. NotFound for a number never created.
        """
        ...

    async def list_records(
        self, query: RecordQuery, limit: int = 50, offset: int = 0
    ) -> list[ServiceRecord]:
        """Newest first (created_at, then number), filtered as `query` says."""
        ...

    async def add_record_note(
        self, record: str, author: str, body: str, created_at: float
    ) -> RecordNote:
        """Append a work note; NotFound for an unknown record."""
        ...

    async def list_record_notes(self, record: str, limit: int = 500) -> list[RecordNote]:
        """The newest `limit` notes, oldest first."""
        ...

    async def link_record(self, record: str, interaction: str, linked_at: float) -> None:
        """Link an interaction to a record (again: nothing); NotFound if either is unknown."""
        ...

    async def record_links(self, record: str) -> list[str]:
        """The interactions linked to the record, in the order they were linked."""
        ...

    # -- the day at a glance (core/service/day.py) ------------------------------------------

    async def save_day(
        self, minutes: Iterable[QueueMinute], agents: Iterable[AgentDay], keep_since: int
    ) -> None:
        """Store finished minutes and agents' counts of a day in one transaction, each
        replacing the one stored for the same (minute, queue) or (day, agent); then forget
        the minutes and days before `keep_since` (epoch seconds)."""
        ...

    async def queue_minutes(
        self, since: int, until: int, queue: str | None = None
    ) -> list[QueueMinute]:
        """The stored minutes with since <= minute < until (of `queue`, or of every queue),
        oldest first, then by queue."""
        ...

    async def agent_days(self, day: int) -> list[AgentDay]:
        """Every agent's counts stored for the day starting at `day`, by agent."""
        ...
