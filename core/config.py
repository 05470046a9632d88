"""The routing host's configuration file: TOML in, a validated `HostConfig` out.

The file is read once at start-up, so every mistake in it is worth a precise message: a
`ConfigError` always names the file, the line and the key, e.g.::

    inbox.toml:23: queue "french": unknown key "ofer_timeout" (did you mean "offer_timeout"?)
    inbox.toml:4: [host]: synchronous must be one of FULL, NORMAL, got "OFF"
    inbox.toml:31: queue "a": overflow cycle a -> b -> a

The first mistake found is reported; fix it and load again. Problems with the file as a whole
(missing, unreadable, over 1 MiB) carry no line, because no line is to blame.

Shape of the file (core/examples/inbox.toml, what `inbox-tui admin init` writes, is a
commented example; core/examples/demo.toml is the demo's)::

    [host]                         # optional; every key has a default
    listen = "127.0.0.1:8600"      # host:port, IPv6 as [::1]:8600; port 0 = any free port
    data_dir = "/var/lib/inbox"    # optional; relative to the config file's directory
    synchronous = "FULL"           # SQLite durability: "FULL" or "NORMAL"
    session_ttl = 43200            # seconds an agent session stays valid
    max_pending_offers = 1         # routed offers one agent may have pending at once
    allowed_origins = ["https://agents.example.com"]  # browser origins, besides the host's
                                   # own, that may open /agent; scheme://host[:port], no path

    [[channel]]                    # at least one
    name = "chat"                  # unique; letters, digits and . _ @ + -
    mode = "sync"                  # sync | async | record
    label = "Web chat"             # optional
    customer_attributes = ["language"]  # widget attributes a customer may set for routing
                                   # (default none; others are dropped, see core/host/widget.py)

    [[presence]]                   # optional; Available, Away and Offline always exist
    name = "Available"
    channels = ["chat"]            # channels an agent in this state can be offered
    label = ""                     # optional

    [[group]]                      # agent groups: queues take the agents of their groups
    name = "tier1"
    label = "Tier 1"               # optional

    [[queue]]
    name = "french"                # unique
    channel = "chat"               # a declared channel
    condition = 'language == "fr"' # core.routing.condition; empty matches everything
    order = 10                     # lower is tried first (default 100)
    rule = "most_capacity"         # most_capacity | least_recent | round_robin
    skills = [{ name = "french", level = 2 }]  # required skills, level 1..10 (default 1)
    prefer_skill_level = false     # prefer higher summed skill levels before the rule
    groups = ["tier1"]             # declared groups; none = every enabled agent
    offer_timeout = 30             # seconds to accept an offer (default 30)
    timeout_presence = "Away"      # presence an agent is moved to after missing an offer
    max_wait = 120                 # seconds in queue before overflow (or a notice)
    overflow = "general"           # queue on the same channel; needs max_wait
    reply_deadline = 60            # seconds for the first reply before the item is reclaimed
    wrap_up_time = 60              # seconds of wrap-up after a chat ends
    affinity_window = 3600         # seconds a returning customer prefers their last agent
    abandon_after = 172800         # seconds of customer silence before abandonment

    [[agent]]                      # seed agents (created at first start)
    id = "alice"
    display_name = "Alice Martin"
    role = "agent"                 # agent | supervisor | admin
    skills = { french = 3 }        # skill -> level 1..10
    capacity = { chat = 3 }        # channel -> concurrent items; a missing channel = none
    universal_capacity = 6         # items across all channels
    groups = ["tier1"]
    disabled = false
    password = "..."               # 8 to 1024 characters; sets a login at first start.
                                   # Better: inbox-tui admin agent passwd (no secret in a file)

    [[template]]
    shortcut = "greet"             # unique within its scope
    title = "Greeting"
    text = "Hello {customer.name}, I'm {agent.name}."   # fields: see TEMPLATE_FIELDS
    scope = "global"               # global | queue:<name> | agent:<id>

    [widget]                       # the customer chat widget; every key has a default
    title = "Support"
    greeting = "Hi! How can we help?"
    accent = "#2f6fde"             # #rrggbb
    max_message_length = 2000      # characters, at most 16000
    channel = "chat"               # default: the first sync channel
    new_chats_per_address = 20     # new chats one client address may start a minute
    embed_origins = ["https://www.example.com"]  # sites that may frame /widget and open
                                   # /widget/ws; default none: any origin may open the socket,
                                   # only the host itself may frame the page
    identity_secret_file = "widget-identity.secret"  # HMAC key of signed customer identities;
                                   # relative to the config's directory; at least 32 bytes,
                                   # not world-readable (make one: openssl rand -hex 32)

Presence defaults: a missing Available lists every channel, a missing Away or Offline lists
none; a declared Available without `channels` also lists every channel. Offline can never
list channels. HostConfig.presences holds Available, Away, Offline first, then custom ones.

Durations are seconds (integer or float), greater than 0 and at most ten years.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import stat
import tomllib
import types
from collections.abc import Mapping, Sequence
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Union, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct

from core.auth import PasswordError, check_password_rules
from core.model import (
    AVAILABLE,
    AWAY,
    OFFLINE,
    Agent,
    AssignmentRule,
    ChannelMode,
    Label,
    Name,
    PresenceState,
    Queue,
    Role,
    ServiceChannel,
    SkillRequirement,
    Template,
)
from core.routing.engine import RoutingConfig
from core.routing.queues import (
    RoutingConfigError,
    check_overflow_cycles,
    check_queue,
    unknown_name,
)

__all__ = [
    "MAX_CONFIG_BYTES",
    "TEMPLATE_FIELDS",
    "ConfigError",
    "Group",
    "HostConfig",
    "HostSettings",
    "Secret",
    "WidgetSettings",
    "default_config_path",
    "example_config_path",
    "load_config",
    "normalize_origin",
    "parse_config",
]

MAX_CONFIG_BYTES = 1 << 20
# Ten years: long enough for any real deadline, short enough that `now + x` stays meaningful.
MAX_SECONDS = 10 * 366 * 24 * 3600
MAX_SKILL_LEVEL = 10
MAX_CAPACITY = 1000
DEFAULT_LISTEN = "127.0.0.1:8600"

# The fields a template may use; the service fills exactly these when it renders one. A typo
# such as {customer.nmae} would otherwise reach customers verbatim.
TEMPLATE_FIELDS = frozenset(
    {"customer.name", "customer.contact", "agent.name", "interaction.number", "queue.name"}
)

_SYNCHRONOUS = ("FULL", "NORMAL")
_ACCENT = re.compile(r"#[0-9A-Fa-f]{6}")  # used with fullmatch: "$" would allow a newline
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_HOST_LABEL}(?:\.{_HOST_LABEL})*")
# Anything shaped like a field is checked, so {Customer.Name} is caught, while braces around
# other text ({1234}, "{ }") are left alone, as render_template leaves them.
_TEMPLATE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_NAME_PATTERN = get_args(Name)[1].pattern
_DEFAULT_PORTS = {"http": 80, "https": 443}
# The widget protocol's attribute keys (core/host/widget.py ATTRIBUTE_KEY).
_ATTRIBUTE_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
# Attributes only the host sets (from a signed identity): allowing customers to type them
# would defeat the signature.
RESERVED_ATTRIBUTES = frozenset({"email_verified", "verified_id"})
MIN_SECRET_BYTES = 32
MAX_SECRET_BYTES = 4096


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


# ---------------------------------------------------------------------------- results


class Secret(bytes):
    """Key bytes that never show in a repr, a log line or a traceback."""

    def __repr__(self) -> str:
        return "Secret(...)"

    __str__ = __repr__


class Group(Struct, frozen=True, kw_only=True):
    name: Name
    label: Label = ""


class HostSettings(Struct, frozen=True, kw_only=True):
    listen: str = DEFAULT_LISTEN
    data_dir: Path | None = None  # None: the host picks its default data directory
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    session_ttl: float = 12 * 3600.0
    max_pending_offers: int = 1
    # Browser origins besides the host's own that may open /agent (normalised, see
    # normalize_origin); a page from any other origin could act with an agent's login.
    allowed_origins: tuple[str, ...] = ()

    @property
    def listen_host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return _split_listen(self.listen)[1]


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

    def routing_config(self) -> RoutingConfig:
        return RoutingConfig(
            channels=tuple(self.channels),
            presences=tuple(self.presences),
            queues=tuple(self.queues),
            agents=tuple(self.agents),
            max_pending_offers=self.host.max_pending_offers,
        )


# ---------------------------------------------------------------------------- file schema
# What msgspec checks for us: unknown keys, types and limits. Enumerations, references and
# cross-table rules are checked afterwards, by hand, for messages that list the choices.

Seconds = Annotated[float, Meta(gt=0, le=MAX_SECONDS)]
Level = Annotated[int, Meta(ge=1, le=MAX_SKILL_LEVEL)]
NonEmptyBody = Annotated[str, Meta(min_length=1, max_length=16_000)]


class _Table(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class _HostTable(_Table):
    listen: str = DEFAULT_LISTEN
    data_dir: Annotated[str, Meta(min_length=1)] | None = None
    synchronous: str = "FULL"
    session_ttl: Seconds = 12 * 3600.0
    max_pending_offers: Annotated[int, Meta(ge=1, le=100)] = 1
    allowed_origins: list[str] = []


class _WidgetTable(_Table):
    title: Label = "Support"
    greeting: Label = "Hi! How can we help?"
    accent: str = "#2f6fde"
    max_message_length: Annotated[int, Meta(ge=1, le=16_000)] = 2000
    channel: Name | None = None
    new_chats_per_address: Annotated[int, Meta(ge=1, le=1_000_000)] = 20
    embed_origins: list[str] = []
    identity_secret_file: Annotated[str, Meta(min_length=1)] | None = None


class _ChannelTable(_Table):
    name: Name
    mode: str
    label: Label = ""
    customer_attributes: list[str] = []


class _PresenceTable(_Table):
    name: Name
    channels: list[Name] | None = None
    label: Label = ""


class _GroupTable(_Table):
    name: Name
    label: Label = ""


class _SkillTable(_Table):
    name: Name
    level: Level = 1


class _QueueTable(_Table):
    name: Name
    channel: Name
    condition: str = ""
    order: int = 100
    rule: str = AssignmentRule.MOST_CAPACITY.value
    skills: list[_SkillTable] = []
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


class _AgentTable(_Table):
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


class _TemplateTable(_Table):
    shortcut: Name
    text: NonEmptyBody
    title: Label = ""
    scope: str = "global"


class _FileTable(_Table):
    host: _HostTable = msgspec.field(default_factory=_HostTable)
    widget: _WidgetTable = msgspec.field(default_factory=_WidgetTable)
    channel: list[_ChannelTable] = []
    presence: list[_PresenceTable] = []
    group: list[_GroupTable] = []
    queue: list[_QueueTable] = []
    agent: list[_AgentTable] = []
    template: list[_TemplateTable] = []


# Array tables and the key that names each entry in messages.
_ARRAY_TABLES = {
    "channel": "name",
    "presence": "name",
    "group": "name",
    "queue": "name",
    "agent": "id",
    "template": "shortcut",
}
_PLAIN_TABLES = ("host", "widget")

KeyPath = tuple[str | int, ...]


# ---------------------------------------------------------------------------- public API


def default_config_path() -> Path:
    """$XDG_CONFIG_HOME/inbox-tui/inbox.toml, else ~/.config/inbox-tui/inbox.toml."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says to ignore a relative value: it would depend on the current directory.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "inbox-tui" / "inbox.toml"


def example_config_path() -> Path:
    """The commented config for a real host, shipped in the package; `inbox-tui admin init`
    copies it. It names no agent and no password (the demo's is core.demo)."""
    # The package is always installed as a directory (never zipped), so this is a real file.
    return Path(str(resources.files("core").joinpath("examples", "inbox.toml")))


def load_config(path: Path) -> HostConfig:
    """Read, parse and validate a config file; every problem is a ConfigError."""
    path = Path(path)
    name = str(path)
    try:
        with path.open("rb") as f:
            # Read one byte past the limit so an oversize file is never read whole.
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(name, None, "", f"cannot read the file: {e.strerror or e}") from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            name,
            None,
            "",
            f"file is larger than {MAX_CONFIG_BYTES >> 20} MiB; is it the right file?",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(name, line, "", "the file is not valid UTF-8") from e
    return parse_config(text, name=name, base_dir=path.parent, path=path)


def parse_config(
    text: str,
    *,
    name: str = "<config>",
    base_dir: Path | None = None,
    path: Path | None = None,
) -> HostConfig:
    """Validate config text; `name` is the file name used in messages, `base_dir` anchors a
    relative data_dir (the current directory when None)."""
    if len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise ConfigError(name, None, "", f"config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _syntax_error(name, str(e), text) from e
    except RecursionError as e:
        # tomllib recurses per nested array or inline table; a few thousand fit in the file.
        line = _first_deep_line(text)
        raise ConfigError(name, line, "", "arrays or inline tables nested too deeply") from e
    return _Loader(name, text, doc, base_dir, path).load()


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


def _first_deep_line(text: str, limit: int = 100) -> int | None:
    """The line where brackets first nest `limit` deep (quoted text aside, roughly): where to
    look, since tomllib gives no position with a RecursionError."""
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        for char in re.sub(r'"[^"]*"|\'[^\']*\'', "", line.split("#", 1)[0]):
            depth += (char in "[{") - (char in "]}")
            if depth >= limit:
                return number
    return None


_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_END = re.compile(r"\s*\(at end of document\)$")


def _syntax_error(name: str, message: str, text: str) -> ConfigError:
    if m := _TOML_AT.search(message):
        reason = f"TOML syntax error: {message[: m.start()]} (column {m.group(2)})"
        return ConfigError(name, int(m.group(1)), "", reason)
    if m := _TOML_END.search(message):
        last = text.count("\n") + (0 if text.endswith("\n") else 1)
        reason = f"TOML syntax error at end of file: {message[: m.start()]}"
        return ConfigError(name, max(last, 1), "", reason)
    return ConfigError(name, None, "", f"TOML syntax error: {message}")


def _split_listen(listen: str) -> tuple[str, int]:
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


# ---------------------------------------------------------------------------- line locator


class _Section:
    __slots__ = ("keys", "line")

    def __init__(self, line: int) -> None:
        self.line = line
        self.keys: dict[tuple[str, ...], int] = {}


_HEADER_ARRAY = re.compile(r"^\s*\[\[(.*?)\]\]\s*(?:#.*)?$")
_HEADER_TABLE = re.compile(r"^\s*\[(.*?)\]\s*(?:#.*)?$")
_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_KEY_LINE = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def _key_parts(text: str) -> tuple[str, ...] | None:
    if '"' not in text and "'" not in text:
        return tuple(p.strip() for p in text.split("."))
    # Quoted keys are rare; let tomllib do the unquoting rather than re-implement escapes.
    try:
        node: Any = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError:
        return None
    parts: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        (key,) = node
        parts.append(key)
        node = node[key]
    return tuple(parts)


def _advance(line: str, ml: str | None, depth: int) -> tuple[str | None, int]:
    """Carry the multi-line string and bracket state past one line, so that text inside a
    string or a multi-line array is never taken for a header or a key."""
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ml == '"""':
            if ch == "\\":
                i += 2
            elif line.startswith('"""', i):
                ml, i = None, i + 3
            else:
                i += 1
        elif ml == "'''":
            end = line.find("'''", i)
            if end < 0:
                break
            ml, i = None, end + 3
        elif ch == "#":
            break
        elif line.startswith('"""', i) or line.startswith("'''", i):
            ml, i = line[i : i + 3], i + 3
        elif ch == '"':
            i += 1
            while i < n and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
        elif ch == "'":
            end = line.find("'", i + 1)
            i = n if end < 0 else end + 1
        elif ch in "[{":
            depth, i = depth + 1, i + 1
        elif ch in "]}":
            depth, i = max(0, depth - 1), i + 1
        else:
            i += 1
    return ml, depth


class _Locator:
    """Finds the line of a key path such as ("queue", 2, "offer_timeout") in the raw text.

    tomllib keeps no positions, so this rescans the text: table headers (an array table's
    entries counted in order, as tomllib builds the list) and the `key =` lines inside each.
    A path it cannot place exactly falls back to its table's header, then to line 1.
    """

    def __init__(self, text: str) -> None:
        self.sections: dict[KeyPath, _Section] = {(): _Section(1)}
        arrays: dict[KeyPath, int] = {}  # array table path -> entries seen so far
        current = self.sections[()]
        ml: str | None = None
        depth = 0
        for number, line in enumerate(text.splitlines(), start=1):
            if ml is None and depth == 0:
                header = _HEADER_ARRAY.match(line) or _HEADER_TABLE.match(line)
                if header is not None:
                    parts = _key_parts(header.group(1).strip())
                    if parts:
                        is_array = header.re is _HEADER_ARRAY
                        path = self._canonical(parts, is_array, arrays)
                        current = self.sections.setdefault(path, _Section(number))
                        # So that a path naming the table itself, ("queue",), finds a line.
                        for end in range(1, len(parts) + 1):
                            self.sections[()].keys.setdefault(parts[:end], number)
                    continue
                key = _KEY_LINE.match(line)
                if key is not None and (parts := _key_parts(key.group(1))):
                    for end in range(1, len(parts) + 1):
                        current.keys.setdefault(parts[:end], number)
            ml, depth = _advance(line, ml, depth)

    @staticmethod
    def _canonical(parts: tuple[str, ...], is_array: bool, arrays: dict[KeyPath, int]) -> KeyPath:
        path: list[str | int] = []
        for i, part in enumerate(parts):
            path.append(part)
            key = tuple(path)
            if i == len(parts) - 1 and is_array:
                arrays[key] = arrays.get(key, 0) + 1
                path.append(arrays[key] - 1)
            elif key in arrays:  # [[queue.skills]] belongs to the latest [[queue]]
                path.append(arrays[key] - 1)
        return tuple(path)

    def line(self, path: KeyPath) -> int:
        for cut in range(len(path), -1, -1):
            section = self.sections.get(path[:cut])
            if section is None:
                continue
            rest = path[cut:]
            for end in range(len(rest), 0, -1):
                keys = rest[:end]
                if all(isinstance(k, str) for k in keys) and keys in section.keys:
                    return section.keys[keys]  # type: ignore[index]
            return section.line
        return 1


# ---------------------------------------------------------------------------- validation


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "an array",
    "object": "a table",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time",
}
_MSGSPEC_AT = re.compile(
    r"^(?P<reason>.*?)(?: - at `key` in `(?P<keyof>[^`]*)`| - at `(?P<at>[^`]*)`)?$", re.S
)
_MSGSPEC_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\[\.\.\.\]")


def _parse_msgspec_path(text: str) -> KeyPath:
    steps: list[str | int] = []
    for m in _MSGSPEC_STEP.finditer(text.removeprefix("$")):
        if m.group(1) is not None:
            steps.append(m.group(1))
        elif m.group(2) is not None:
            steps.append(int(m.group(2)))
        else:
            break  # a map value: msgspec does not say which key; stop at the map
    return tuple(steps)


def _type_words(spec: str) -> str:
    words = [_TYPE_WORDS.get(t.strip(), t.strip()) for t in spec.split("|") if t.strip() != "null"]
    return " or ".join(words)


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _number(text: str) -> str:
    return text[:-2] if text.endswith(".0") else text


def _choices(values: Sequence[str]) -> str:
    return ", ".join(values)


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


def _struct_at(path: KeyPath) -> type[Struct] | None:
    """The schema table at `path`, for "did you mean" suggestions."""
    tp: Any = _FileTable
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


class _Loader:
    def __init__(
        self,
        name: str,
        text: str,
        doc: dict[str, Any],
        base_dir: Path | None,
        path: Path | None,
    ) -> None:
        self.name = name
        self.text = text
        self.doc = doc
        self.base_dir = base_dir
        self.path = path

    @cached_property
    def locator(self) -> _Locator:
        # Built only when there is something to report: a valid file never pays for it.
        return _Locator(self.text)

    # -- reporting

    def fail(self, path: KeyPath, reason: str) -> NoReturn:
        raise ConfigError(self.name, self.locator.line(path), self._where(path), reason)

    def bad(self, path: KeyPath, what: str) -> NoReturn:
        """Fail with the key (relative to its table) leading the reason."""
        self.fail(path, f"{self._key(path)} {what}")

    def _entity_len(self, path: KeyPath) -> int:
        if len(path) >= 2 and path[0] in _ARRAY_TABLES and isinstance(path[1], int):
            return 2
        if len(path) >= 2 and path[0] in _PLAIN_TABLES:
            return 1
        return 0

    def _where(self, path: KeyPath) -> str:
        n = self._entity_len(path)
        if n == 1:
            return f"[{path[0]}]"
        if n == 2:
            kind, index = str(path[0]), int(path[1])
            entry = self._value(path[:2])
            label = entry.get(_ARRAY_TABLES[kind]) if isinstance(entry, dict) else None
            if isinstance(label, str) and label:
                return f"{kind} {_show(label)}"
            return f"{kind} #{index + 1}"
        return ""

    def _key(self, path: KeyPath) -> str:
        text = ""
        for step in path[self._entity_len(path) :]:
            if isinstance(step, int):
                text += f"[{step}]"
            else:
                # Quote keys that TOML would need quoted, so the path reads back unambiguously.
                key = step if _BARE_KEY.fullmatch(step) else _show(step)
                text += f".{key}" if text else key
        return text

    def _value(self, path: KeyPath) -> object:
        node: Any = self.doc
        for step in path:
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                return None
        return node

    # -- structure (msgspec)

    def _structure(self) -> _FileTable:
        try:
            return msgspec.convert(self.doc, _FileTable)
        except msgspec.ValidationError as e:
            self._translate(str(e))

    def _translate(self, message: str) -> NoReturn:
        m = _MSGSPEC_AT.match(message)
        assert m is not None  # the pattern matches any text
        reason = m.group("reason")
        path = _parse_msgspec_path(m.group("at") or m.group("keyof") or "")
        value = self._value(path)

        if unknown := re.fullmatch(r"Object contains unknown field `(.*)`", reason):
            key = unknown.group(1)
            table = _struct_at(path)
            known = [f.name for f in msgspec.structs.fields(table)] if table else []
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {_show(close[0])}?)" if close else ""
            self.fail((*path, key), f"unknown key {_show(key)}{hint}")
        if missing := re.fullmatch(r"Object missing required field `(.*)`", reason):
            self.fail(path, f"missing required key {_show(missing.group(1))}")
        if typed := re.fullmatch(r"Expected `(.*?)`, got `(.*?)`", reason):
            expected, got = typed.groups()
            if len(path) == 1 and path[0] in _ARRAY_TABLES and expected.startswith("array"):
                self.bad(path, f"must be written [[{path[0]}]] (an array of tables)")
            if len(path) == 1 and path[0] in _PLAIN_TABLES and got == "array":
                self.bad(path, f"must be written [{path[0]}] (a single table), not [[{path[0]}]]")
            shown = _show(value) if got not in ("object", "array") else _type_words(got)
            self.bad(path, f"must be {_type_words(expected)}, got {shown}")
        if bound := re.fullmatch(r"Expected `(\w+)` (>=|>|<=|<) (\S+)", reason):
            _, op, limit = bound.groups()
            self.bad(path, f"must be {op} {_number(limit)}, got {_show(value)}")
        if length := re.fullmatch(r"Expected `(\w+)` of length (>=|<=) (\d+)", reason):
            kind, op, limit = length.groups()
            if op == ">=" and limit == "1":
                self.bad(path, "must not be empty")
            unit = "characters" if kind == "str" else "entries"
            size = len(value) if isinstance(value, str | list | dict) else "?"
            self.bad(path, f"is too long: {size} {unit}, at most {limit}")
        if pattern := re.fullmatch(r"Expected `str` matching regex '(.*)'", reason, re.S):
            if pattern.group(1) == _NAME_PATTERN:
                self.bad(
                    path,
                    "must be a name of letters, digits and . _ @ + - (no spaces), "
                    f"got {_show(value)}",
                )
            self.bad(path, f"must match {pattern.group(1)}, got {_show(value)}")
        if path:
            self.bad(path, f"is invalid: {reason}")
        self.fail(path, reason)

    # -- semantics

    def _enum(self, path: KeyPath, value: str, choices: Sequence[str]) -> str:
        if value not in choices:
            self.bad(path, f"must be one of {_choices(choices)}, got {_show(value)}")
        return value

    def _unique(self, kind: str, names: Sequence[str]) -> None:
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in seen:
                first = self.locator.line((kind, seen[name]))
                self.fail((kind, i), f"duplicate name {_show(name)}, already used on line {first}")
            seen[name] = i

    def load(self) -> HostConfig:
        raw = self._structure()
        host = self._host(raw.host)
        channels = self._channels(raw.channel)
        channel_names = [c.name for c in channels]
        presences = self._presences(raw.presence, channel_names)
        groups = self._groups(raw.group)
        queues = self._queues(raw.queue, channels, presences, groups)
        agents, passwords = self._agents(raw.agent, channel_names, groups)
        templates = self._templates(raw.template, queues, agents)
        widget = self._widget(raw.widget, channels)
        customer_attributes = self._customer_attributes(raw.channel)
        config = HostConfig(
            channels=channels,
            presences=presences,
            groups=groups,
            queues=queues,
            agents=agents,
            seed_passwords=passwords,
            templates=templates,
            widget=widget,
            host=host,
            path=self.path,
            customer_attributes=customer_attributes,
        )
        return config

    def _host(self, t: _HostTable) -> HostSettings:
        try:
            _split_listen(t.listen)
        except ValueError as e:
            self.bad(("host", "listen"), f"{e}, got {_show(t.listen)}")
        synchronous = self._enum(("host", "synchronous"), t.synchronous, _SYNCHRONOUS)
        data_dir = None
        if t.data_dir is not None:
            data_dir = Path(t.data_dir).expanduser()
            if not data_dir.is_absolute():
                data_dir = (self.base_dir or Path.cwd()) / data_dir
        return HostSettings(
            listen=t.listen,
            data_dir=data_dir,
            synchronous=synchronous,  # type: ignore[arg-type]
            session_ttl=t.session_ttl,
            max_pending_offers=t.max_pending_offers,
            allowed_origins=self._origins(("host", "allowed_origins"), t.allowed_origins),
        )

    def _origins(self, path: KeyPath, origins: list[str]) -> tuple[str, ...]:
        normalized: list[str] = []
        for i, origin in enumerate(origins):
            try:
                normalized.append(normalize_origin(origin))
            except ValueError as e:
                self.fail((*path, i), f"{self._key(path)}: {_show(origin)} {e}")
        return tuple(dict.fromkeys(normalized))

    def _customer_attributes(self, tables: list[_ChannelTable]) -> dict[str, tuple[str, ...]]:
        allowed: dict[str, tuple[str, ...]] = {}
        for i, t in enumerate(tables):
            for j, key in enumerate(t.customer_attributes):
                path = ("channel", i, "customer_attributes", j)
                if not _ATTRIBUTE_KEY.fullmatch(key):
                    self.bad(
                        path, f"must be a key like [A-Za-z][A-Za-z0-9_]{{0,31}}, got {_show(key)}"
                    )
                if key in RESERVED_ATTRIBUTES:
                    self.bad(path, f"{_show(key)} is set only from a signed identity")
            if t.customer_attributes:
                allowed[t.name] = tuple(dict.fromkeys(t.customer_attributes))
        return allowed

    def _secret(self, path: KeyPath, name: str) -> Secret:
        file = Path(name).expanduser()
        if not file.is_absolute():
            file = (self.base_dir or Path.cwd()) / file
        try:
            # Its mode is read from the open file, so the file checked is the file read.
            with file.open("rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                data = f.read(MAX_SECRET_BYTES + 1)
        except OSError as e:
            self.bad(path, f"cannot read {file}: {e.strerror or e}")
        if not stat.S_ISREG(mode):
            self.bad(path, f"{file} is not a regular file")
        if mode & stat.S_IROTH:
            self.bad(path, f"{file} is readable by every user: chmod o-r (or 600) it")
        secret = data.strip()
        if len(secret) < MIN_SECRET_BYTES or len(secret) > MAX_SECRET_BYTES:
            self.bad(
                path,
                f"{file} holds {len(secret)} bytes; a secret is {MIN_SECRET_BYTES} to "
                f"{MAX_SECRET_BYTES} bytes (make one: openssl rand -hex 32 > {file.name})",
            )
        return Secret(secret)

    def _channels(self, tables: list[_ChannelTable]) -> list[ServiceChannel]:
        if not tables:
            self.fail((), "no [[channel]] tables: declare at least one service channel")
        self._unique("channel", [t.name for t in tables])
        modes = [m.value for m in ChannelMode]
        return [
            ServiceChannel(
                name=t.name,
                mode=ChannelMode(self._enum(("channel", i, "mode"), t.mode, modes)),
                label=t.label,
            )
            for i, t in enumerate(tables)
        ]

    def _known(self, path: KeyPath, kind: str, name: str, known: Sequence[str]) -> None:
        if name not in known:
            self.bad(path, unknown_name(kind, name, known))

    def _presences(self, tables: list[_PresenceTable], channels: list[str]) -> list[PresenceState]:
        self._unique("presence", [t.name for t in tables])
        declared: dict[str, PresenceState] = {}
        for i, t in enumerate(tables):
            for j, channel in enumerate(t.channels or ()):
                self._known(("presence", i, "channels", j), "channel", channel, channels)
            if t.name == OFFLINE and t.channels:
                self.bad(("presence", i, "channels"), "must be empty: Offline takes no work")
            listed = tuple(channels) if t.channels is None and t.name == AVAILABLE else ()
            declared[t.name] = PresenceState(
                name=t.name, channels=tuple(t.channels or ()) or listed, label=t.label
            )
        standard = [
            declared.get(AVAILABLE) or PresenceState(name=AVAILABLE, channels=tuple(channels)),
            declared.get(AWAY) or PresenceState(name=AWAY),
            declared.get(OFFLINE) or PresenceState(name=OFFLINE),
        ]
        custom = [p for name, p in declared.items() if name not in (AVAILABLE, AWAY, OFFLINE)]
        return standard + custom

    def _groups(self, tables: list[_GroupTable]) -> list[Group]:
        self._unique("group", [t.name for t in tables])
        return [Group(name=t.name, label=t.label) for t in tables]

    def _queues(
        self,
        tables: list[_QueueTable],
        channels: list[ServiceChannel],
        presences: list[PresenceState],
        groups: list[Group],
    ) -> list[Queue]:
        self._unique("queue", [t.name for t in tables])
        channel_names = [c.name for c in channels]
        presence_names = [p.name for p in presences]
        group_names = [g.name for g in groups]
        by_name = {t.name: (i, t) for i, t in enumerate(tables)}
        rules = [r.value for r in AssignmentRule]
        queues: list[Queue] = []
        for i, t in enumerate(tables):
            at: KeyPath = ("queue", i)
            rule = self._enum((*at, "rule"), t.rule, rules)
            queue = Queue(
                name=t.name,
                channel=t.channel,
                condition=t.condition,
                order=t.order,
                rule=AssignmentRule(rule),
                skills=tuple(SkillRequirement(name=s.name, level=s.level) for s in t.skills),
                prefer_skill_level=t.prefer_skill_level,
                groups=tuple(t.groups),
                offer_timeout=t.offer_timeout,
                timeout_presence=t.timeout_presence,
                max_wait=t.max_wait,
                overflow=t.overflow,
                reply_deadline=t.reply_deadline,
                wrap_up_time=t.wrap_up_time,
                affinity_window=t.affinity_window,
                abandon_after=t.abandon_after,
            )
            try:
                check_queue(queue, channel_names, presence_names, by_name)
            except RoutingConfigError as e:
                self.fail((*at, e.field), e.reason)
            seen_skills: set[str] = set()
            for j, skill in enumerate(t.skills):
                if skill.name in seen_skills:
                    self.bad((*at, "skills", j), f"repeats skill {_show(skill.name)}")
                seen_skills.add(skill.name)
            for j, group in enumerate(t.groups):
                self._known((*at, "groups", j), "group", group, group_names)
            if t.overflow is not None:
                target = by_name[t.overflow][1]
                if target.channel != t.channel:
                    self.bad(
                        (*at, "overflow"),
                        f"names queue {_show(target.name)} on channel {_show(target.channel)};"
                        f" an item keeps its channel, so overflow stays on {_show(t.channel)}",
                    )
                if t.max_wait is None:
                    self.bad((*at, "overflow"), "needs max_wait: the wait that triggers it")
            queues.append(queue)
        try:
            check_overflow_cycles(queues)
        except RoutingConfigError as e:
            self.fail(("queue", by_name[e.queue][0], e.field), e.reason)
        return queues

    def _int_map(
        self,
        path: KeyPath,
        mapping: Mapping[str, Any],
        lo: int,
        hi: int,
        keys: Sequence[str] | None,
    ) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, value in mapping.items():
            at = (*path, key)
            if keys is not None:
                self._known(at, "channel", key, keys)
            elif not re.fullmatch(_NAME_PATTERN, key) or len(key) > 64:
                self.bad(at, "is not a valid name: use letters, digits and . _ @ + -")
            # bool is an int in Python, but `french = true` is a mistake, not level 1.
            if isinstance(value, bool) or not isinstance(value, int):
                self.bad(at, f"must be an integer from {lo} to {hi}, got {_show(value)}")
            if not lo <= value <= hi:
                self.bad(at, f"must be from {lo} to {hi}, got {value}")
            out[key] = value
        return out

    def _agents(
        self, tables: list[_AgentTable], channels: list[str], groups: list[Group]
    ) -> tuple[list[Agent], dict[str, str]]:
        self._unique("agent", [t.id for t in tables])
        group_names = [g.name for g in groups]
        roles = [r.value for r in Role]
        agents: list[Agent] = []
        passwords: dict[str, str] = {}
        for i, t in enumerate(tables):
            at: KeyPath = ("agent", i)
            role = self._enum((*at, "role"), t.role, roles)
            skills = self._int_map((*at, "skills"), t.skills, 1, MAX_SKILL_LEVEL, None)
            capacity = self._int_map((*at, "capacity"), t.capacity, 0, MAX_CAPACITY, channels)
            for j, group in enumerate(t.groups):
                self._known((*at, "groups", j), "group", group, group_names)
            agents.append(
                Agent(
                    id=t.id,
                    display_name=t.display_name,
                    role=Role(role),
                    skills=skills,
                    capacity=capacity,
                    universal_capacity=t.universal_capacity,
                    groups=tuple(t.groups),
                    disabled=t.disabled,
                )
            )
            if t.password is not None:
                try:
                    check_password_rules(t.password)
                except PasswordError as e:
                    self.fail(
                        (*at, "password"), f"{e} (the rules of `inbox-tui admin agent passwd`)"
                    )
                passwords[t.id] = t.password
        return agents, passwords

    def _templates(
        self, tables: list[_TemplateTable], queues: list[Queue], agents: list[Agent]
    ) -> list[Template]:
        queue_names = [q.name for q in queues]
        agent_ids = [a.id for a in agents]
        seen: dict[tuple[str, str], int] = {}
        templates: list[Template] = []
        for i, t in enumerate(tables):
            at: KeyPath = ("template", i)
            kind, _, target = t.scope.partition(":")
            if t.scope == "global":
                pass
            elif kind == "queue" and target:
                self._known((*at, "scope"), "queue", target, queue_names)
            elif kind == "agent" and target:
                self._known((*at, "scope"), "agent", target, agent_ids)
            else:
                self.bad(
                    (*at, "scope"),
                    f'must be "global", "queue:<name>" or "agent:<id>", got {_show(t.scope)}',
                )
            key = (t.scope, t.shortcut)
            if key in seen:
                first = self.locator.line(("template", seen[key]))
                self.fail(
                    (*at, "shortcut"),
                    f"duplicate shortcut {_show(t.shortcut)} in scope {t.scope},"
                    f" already used on line {first}",
                )
            seen[key] = i
            for field in _TEMPLATE_FIELD.findall(t.text):
                if field not in TEMPLATE_FIELDS:
                    self.bad(
                        (*at, "text"),
                        f"uses unknown field {{{field}}}"
                        f" (known: {_choices(sorted(TEMPLATE_FIELDS))})",
                    )
            templates.append(
                Template(shortcut=t.shortcut, text=t.text, scope=t.scope, title=t.title)
            )
        return templates

    def _widget(self, t: _WidgetTable, channels: list[ServiceChannel]) -> WidgetSettings:
        if not _ACCENT.fullmatch(t.accent):
            self.bad(
                ("widget", "accent"), f"must be a colour written #rrggbb, got {_show(t.accent)}"
            )
        channel = t.channel
        if channel is not None:
            self._known(("widget", "channel"), "channel", channel, [c.name for c in channels])
        else:
            live = [c.name for c in channels if c.mode is ChannelMode.SYNC]
            channel = live[0] if live else None
        return WidgetSettings(
            title=t.title,
            greeting=t.greeting,
            accent=t.accent,
            max_message_length=t.max_message_length,
            channel=channel,
            new_chats_per_address=t.new_chats_per_address,
            embed_origins=self._origins(("widget", "embed_origins"), t.embed_origins),
            identity_secret=(
                None
                if t.identity_secret_file is None
                else self._secret(("widget", "identity_secret_file"), t.identity_secret_file)
            ),
        )
