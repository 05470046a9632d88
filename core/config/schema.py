"""The file's tables as msgspec Structs: what msgspec checks for us.

Unknown keys, types and limits are refused by msgspec.convert against `FileTable`;
enumerations, references and cross-table rules are checked afterwards, by hand, for messages
that list the choices (core.config.validate). The shape is documented in core.config.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec
from msgspec import Meta, Struct

from core.config.locate import KeyPath
from core.config.settings import (
    DEFAULT_LISTEN,
    DEFAULT_UPLOAD_EXTENSIONS,
    DEFAULT_UPLOAD_TYPES,
    MAX_MAIL_BYTES,
)
from core.model import (
    DEFAULT_REOPEN_WINDOW,
    MAX_ATTACHMENT_BYTES,
    MAX_WEIGHT,
    AssignmentRule,
    Label,
    Name,
    Role,
)
from core.sla import DEFAULT_NEAR

# Ten years: long enough for any real deadline, short enough that `now + x` stays meaningful.
MAX_SECONDS = 10 * 366 * 24 * 3600
MAX_SKILL_LEVEL = 10
MAX_CAPACITY = MAX_WEIGHT

Seconds = Annotated[float, Meta(gt=0, le=MAX_SECONDS)]
Level = Annotated[int, Meta(ge=1, le=MAX_SKILL_LEVEL)]
NonEmptyBody = Annotated[str, Meta(min_length=1, max_length=16_000)]


class Table(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class HostTable(Table, frozen=True):
    listen: str = DEFAULT_LISTEN
    data_dir: Annotated[str, Meta(min_length=1)] | None = None
    synchronous: str = "FULL"
    session_ttl: Seconds = 12 * 3600.0
    max_pending_offers: Annotated[int, Meta(ge=1, le=100)] = 1
    allowed_origins: list[str] = []
    # postgresql://… : the shared database of a cluster of hosts; empty: SQLite in data_dir.
    store: Annotated[str, Meta(max_length=1000)] = ""
    # nats://… : the bus of a cluster, so every host serves; empty: only the router serves.
    bus: Annotated[str, Meta(max_length=1000)] = ""
    day_retention_days: Annotated[int, Meta(ge=1, le=3660)] = 35


class WidgetTable(Table, frozen=True):
    title: Label = "Support"
    greeting: Label = "Hi! How can we help?"
    accent: str = "#2f6fde"
    max_message_length: Annotated[int, Meta(ge=1, le=16_000)] = 2000
    channel: Name | None = None
    new_chats_per_address: Annotated[int, Meta(ge=1, le=1_000_000)] = 20
    embed_origins: list[str] = []
    identity_secret_file: Annotated[str, Meta(min_length=1)] | None = None


class DetailTable(Table, frozen=True):
    attribute: str
    label: Label = ""


class EmailTable(Table, frozen=True):
    listen: str
    address: Annotated[str, Meta(max_length=254)]
    smarthost: str
    max_bytes: Annotated[int, Meta(ge=1024, le=MAX_MAIL_BYTES)] = MAX_MAIL_BYTES


class DeliveryTable(Table, frozen=True):
    """[channel.delivery]: where the channel's outbound messages and events go
    (core/service/outbox.py)."""

    url: Annotated[str, Meta(min_length=1, max_length=2000)]
    secret_file: Annotated[str, Meta(min_length=1)]
    # "webhook", the one transport a [channel.delivery] names (e-mail channels get "smtp").
    transport: str = "webhook"
    timeout: Annotated[float, Meta(gt=0, le=300)] = 10.0
    backoff_base: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    backoff_cap: Annotated[float, Meta(gt=0, le=MAX_SECONDS)] = 300.0
    give_up_after: Seconds = 3 * 24 * 3600.0


class ChannelTable(Table, frozen=True):
    name: Name
    mode: str
    label: Label = ""
    customer_attributes: list[str] = []
    reopen_window: Annotated[float, Meta(ge=0, le=MAX_SECONDS)] = DEFAULT_REOPEN_WINDOW
    language: str = "en"  # checked by hand, like the notices, for the message
    notices: dict[str, Any] = {}
    details: list[DetailTable] | None = None
    weight: int = 1
    email: EmailTable | None = None
    delivery: DeliveryTable | None = None
    # A key the channel's provider signs its REST intake with, as deliveries are signed.
    inbound_secret_file: Annotated[str, Meta(min_length=1)] | None = None


class PresenceTable(Table, frozen=True):
    name: Name
    channels: list[Name] | None = None
    label: Label = ""


class GroupTable(Table, frozen=True):
    name: Name
    label: Label = ""


class SkillTable(Table, frozen=True):
    name: Name
    level: Level = 1


class SlaTable(Table, frozen=True):
    """[queue.sla]: the queue's service-level targets (core/sla.py)."""

    wait: Seconds | None = None
    first_reply: Seconds | None = None
    near: Annotated[float, Meta(gt=0, lt=1)] = DEFAULT_NEAR


class QueueTable(Table, frozen=True):
    name: Name
    channel: Name
    condition: str = ""
    order: int = 100
    rule: str = AssignmentRule.MOST_CAPACITY.value
    skills: list[SkillTable] = []
    prefer_skill_level: bool = False
    groups: list[Name] = []
    offer_timeout: Seconds = 30.0
    timeout_presence: Name | None = None
    max_wait: Seconds | None = None
    overflow: Name | None = None
    reply_deadline: Seconds | None = None
    wrap_up_time: Seconds | None = None
    affinity_window: Seconds | None = None
    abandon_after: Seconds | None = None
    sla: SlaTable | None = None


class AgentTable(Table, frozen=True):
    id: Name
    display_name: Label = ""
    role: str = Role.AGENT.value
    # Maps are checked by hand: msgspec reports a bad map value without its key.
    skills: dict[str, Any] = {}
    capacity: dict[str, Any] = {}
    universal_capacity: Annotated[int, Meta(ge=0, le=MAX_CAPACITY)] = 10
    groups: list[Name] = []
    disabled: bool = False
    password: str | None = None  # checked by check_password_rules, for its message


class TemplateTable(Table, frozen=True):
    shortcut: Name
    text: NonEmptyBody
    title: Label = ""
    scope: str = "global"


class RecordKindTable(Table, frozen=True):
    # Empty: the kind keeps its default states (core.config.settings.DEFAULT_RECORD_STATES).
    states: Annotated[list[Name], Meta(max_length=32)] = []


class RecordsTable(Table, frozen=True):
    case: RecordKindTable = msgspec.field(default_factory=RecordKindTable)
    incident: RecordKindTable = msgspec.field(default_factory=RecordKindTable)


class AttachmentsTable(Table, frozen=True):
    max_bytes: Annotated[int, Meta(ge=1, le=MAX_ATTACHMENT_BYTES)] = MAX_ATTACHMENT_BYTES
    allowed_types: Annotated[list[str], Meta(max_length=200)] = msgspec.field(
        default_factory=lambda: list(DEFAULT_UPLOAD_TYPES)
    )
    allowed_extensions: Annotated[list[str], Meta(max_length=200)] = msgspec.field(
        default_factory=lambda: list(DEFAULT_UPLOAD_EXTENSIONS)
    )
    link_ttl: Annotated[float, Meta(ge=10, le=7 * 24 * 3600)] = 900.0


class FileTable(Table, frozen=True):
    host: HostTable = msgspec.field(default_factory=HostTable)
    widget: WidgetTable = msgspec.field(default_factory=WidgetTable)
    records: RecordsTable = msgspec.field(default_factory=RecordsTable)
    attachments: AttachmentsTable = msgspec.field(default_factory=AttachmentsTable)
    channel: list[ChannelTable] = []
    presence: list[PresenceTable] = []
    group: list[GroupTable] = []
    queue: list[QueueTable] = []
    agent: list[AgentTable] = []
    template: list[TemplateTable] = []


# Array tables and the key that names each entry in messages.
ARRAY_TABLES = {
    "channel": "name",
    "presence": "name",
    "group": "name",
    "queue": "name",
    "agent": "id",
    "template": "shortcut",
}
PLAIN_TABLES = ("host", "widget", "records", "attachments")


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or origin is types.UnionType:
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def table_at(path: KeyPath) -> type[Struct] | None:
    """The schema table at `path`, for "did you mean" suggestions."""
    tp: Any = FileTable
    for step in path:
        tp = _unwrap(tp)
        if isinstance(step, int):
            if get_origin(tp) is not list:
                return None
            tp = get_args(tp)[0]
        elif isinstance(tp, type) and issubclass(tp, Struct):
            fields = {f.name: f.type for f in msgspec.structs.fields(tp)}
            if step not in fields:
                return None
            tp = fields[step]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, Struct) else None
