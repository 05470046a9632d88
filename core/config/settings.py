"""What loading a config yields: `HostConfig` and its parts, or a `ConfigError`.

Also the two value rules the settings rely on after loading: `normalize_origin` (the host
compares browser origins with it) and `split_listen` (HostSettings.listen_host / listen_port).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Struct

from core.model import (
    MAX_ATTACHMENT_BYTES,
    Agent,
    Label,
    Name,
    PresenceState,
    Queue,
    RecordKind,
    ServiceChannel,
    Template,
)
from core.routing.engine import RoutingConfig
from core.sla import SlaTargets

DEFAULT_LISTEN = "127.0.0.1:8600"
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ConfigError(ValueError):
    """A config file mistake: `file:line: where: reason`.

    `line` is None only for problems with the file as a whole; `where` names the table the
    mistake is in (`queue "french"`, `[host]`) and is empty at the top level.
    """

    def __init__(self, file: str, line: int | None, where: str, reason: str) -> None:
        self.file = file
        self.line = line
        self.where = where
        self.reason = reason
        location = file if line is None else f"{file}:{line}"
        super().__init__(f"{location}: {where}: {reason}" if where else f"{location}: {reason}")


class Secret(bytes):
    """Key bytes that never show in a repr, a log line or a traceback."""

    def __repr__(self) -> str:
        return "Secret(...)"

    __str__ = __repr__


class Group(Struct, frozen=True, kw_only=True):
    name: Name
    label: Label = ""


# A kind's states when the config names none; the first is a new record's.
DEFAULT_RECORD_STATES: dict[RecordKind, tuple[str, ...]] = {
    RecordKind.INCIDENT: ("new", "in_progress", "on_hold", "resolved", "closed"),
    RecordKind.CASE: ("new", "in_progress", "awaiting_customer", "resolved", "closed"),
}


class RecordSettings(Struct, frozen=True, kw_only=True):
    """[records.<kind>]: the states a case or an incident may be in, in workflow order."""

    states: dict[RecordKind, tuple[str, ...]] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_RECORD_STATES)
    )

    def states_of(self, kind: RecordKind) -> tuple[str, ...]:
        return self.states.get(kind) or DEFAULT_RECORD_STATES[kind]


class HostSettings(Struct, frozen=True, kw_only=True):
    listen: str = DEFAULT_LISTEN
    data_dir: Path | None = None  # None: the host picks its default data directory
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    session_ttl: float = 12 * 3600.0
    max_pending_offers: int = 1
    # Browser origins besides the host's own that may open /agent (normalised, see
    # normalize_origin); a page from any other origin could act with an agent's login.
    allowed_origins: tuple[str, ...] = ()
    # A postgresql:// URL: several hosts share it and elect one router; None: SQLite.
    store: str | None = None
    # A nats:// URL (with a store): every host serves, relaying to the router; None: the
    # hosts that do not route stand by.
    bus: str | None = None
    # Days the day-at-a-glance figures (core/service/day.py) are kept before they are pruned.
    day_retention_days: int = 35

    @property
    def listen_host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return split_listen(self.listen)[1]


class WidgetSettings(Struct, frozen=True, kw_only=True):
    title: str = "Support"
    greeting: str = "Hi! How can we help?"
    accent: str = "#2f6fde"
    max_message_length: int = 2000
    channel: str | None = None  # where widget chats arrive; None when there is no channel
    new_chats_per_address: int = 20  # a minute, from one client address
    embed_origins: tuple[str, ...] = ()  # normalised; empty: any origin, framing by 'self'
    # The key that signs customer identities (the file's text, surrounding whitespace removed);
    # None: no identity is accepted. Secret keeps it out of reprs and tracebacks.
    identity_secret: Secret | None = None


# A media type without parameters, as RFC 6838 names them, in lower case (used with fullmatch).
MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")

# What customers may upload unless [attachments] says otherwise: common documents and images,
# nothing a browser would run (no HTML, SVG or scripts).
DEFAULT_UPLOAD_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
    "text/csv",
    "application/zip",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
)
DEFAULT_UPLOAD_EXTENSIONS = (
    "png", "jpg", "jpeg", "gif", "webp", "pdf", "txt", "log", "csv", "zip", "docx", "xlsx",
)  # fmt: skip


class AttachmentSettings(Struct, frozen=True, kw_only=True):
    """[attachments]: files from anyone are at most max_bytes and are what their declared type
    says; files from customers (widget, REST) must also have an allowed type and extension."""

    max_bytes: int = MAX_ATTACHMENT_BYTES
    allowed_types: tuple[str, ...] = DEFAULT_UPLOAD_TYPES  # lower case, no parameters
    allowed_extensions: tuple[str, ...] = DEFAULT_UPLOAD_EXTENSIONS  # lower case, no dot
    link_ttl: float = 900.0  # seconds a widget customer's download link stays valid


# The largest mail an e-mail channel accepts, as SMTP counts it (headers, encoded parts).
MAX_MAIL_BYTES = 10 * 2**20


class EmailSettings(Struct, frozen=True, kw_only=True):
    """[[channel]] email: an asynchronous channel fed by mail (docs/email.md)."""

    listen: str  # host:port of the host's SMTP server, where the MTA relays the domain's mail
    address: str  # the From of replies, e.g. support@example.com
    smarthost: str  # host:port of the SMTP server replies are handed to
    max_bytes: int = MAX_MAIL_BYTES


# The outbox's transports by the name [channel.delivery] transport gives
# (core/service/outbox.py registers their implementations).
TRANSPORTS = ("webhook", "smtp")


class DeliverySettings(Struct, frozen=True, kw_only=True):
    """[channel.delivery]: how a channel's outbound deliveries reach its provider. Seconds
    throughout; a failed try is retried after backoff_base * 2**(attempts-1), at most
    backoff_cap, less up to half of it at random; given up give_up_after the delivery was
    enqueued."""

    url: str
    secret: Secret
    transport: str = "webhook"
    timeout: float = 10.0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    give_up_after: float = 3 * 24 * 3600.0


class HostConfig(Struct, frozen=True, kw_only=True):
    channels: list[ServiceChannel]
    presences: list[PresenceState]
    groups: list[Group]
    queues: list[Queue]
    agents: list[Agent]
    # Demo logins only, agent id -> password; kept off Agent so it never reaches the wire.
    seed_passwords: dict[str, str]
    templates: list[Template]
    widget: WidgetSettings
    host: HostSettings
    path: Path | None = None
    # Channel -> the attribute keys a widget customer may set for routing ([[channel]]
    # customer_attributes); a channel missing here allows none.
    customer_attributes: dict[str, tuple[str, ...]] = {}
    attachments: AttachmentSettings = msgspec.field(default_factory=AttachmentSettings)
    # Channel -> the item attributes agents see on offers and in the record pane, in order,
    # as (attribute, label) ([[channel]] details); a channel missing here shows them all.
    details: dict[str, tuple[tuple[str, str], ...]] = {}
    records: RecordSettings = msgspec.field(default_factory=RecordSettings)
    # Channel -> its e-mail settings ([[channel]] email); only e-mail channels are here.
    email: dict[str, EmailSettings] = {}
    # Channel -> its outbound delivery ([channel.delivery]); a channel missing here sends none.
    deliveries: dict[str, DeliverySettings] = {}
    # Channel -> the key its REST intake must be signed with ([[channel]]
    # inbound_secret_file); a channel missing here takes unsigned intake.
    inbound_secrets: dict[str, Secret] = {}
    # Queue -> its service-level targets ([queue.sla]); a queue missing here has none.
    slas: dict[str, SlaTargets] = {}

    def routing_config(self) -> RoutingConfig:
        return RoutingConfig(
            channels=tuple(self.channels),
            presences=tuple(self.presences),
            queues=tuple(self.queues),
            agents=tuple(self.agents),
            max_pending_offers=self.host.max_pending_offers,
        )


def normalize_origin(text: str) -> str:
    """`scheme://host[:port]` as browsers send it in `Origin`: lower case, the scheme's
    default port left out. ValueError says what is wrong (a path, "null", another scheme)."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"is not scheme://host[:port] ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise ValueError("must be http://host[:port] or https://host[:port]")
    if parts.path or parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError("must be an origin only, scheme://host[:port], with no path")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain a user name or password")
    host = (parts.hostname or "").lower()
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"has a bad IPv6 address {host!r}") from None
        host = f"[{host}]"
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"has a bad host name {host!r}")
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    if port == 0:
        raise ValueError("port must be 1 to 65535")
    return f"{scheme}://{host}:{port}"


def split_listen(listen: str) -> tuple[str, int]:
    """Split "host:port" into (host, port); raises ValueError with a reason."""
    if listen.startswith("["):
        host, sep, port = listen[1:].partition("]:")
        if not sep:
            raise ValueError("an IPv6 address is written [address]:port")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port = listen.rpartition(":")
        if not sep or not host:
            raise ValueError("must be host:port, e.g. 127.0.0.1:8600")
        if ":" in host:
            raise ValueError("write an IPv6 address in brackets: [::1]:8600")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host!r} is not a host name or IPv4 address")
    # Port 0 asks the OS for any free port, which tests and throwaway demos rely on.
    if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port!r}")
    return host, int(port)
