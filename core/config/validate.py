"""From the parsed TOML document to a `HostConfig`, or the first mistake as a `ConfigError`.

Two passes: msgspec checks the document against core.config.schema (its messages reworded and
placed at their key), then the tables are checked against each other and built into the
domain model. The queue rules the routing engine depends on are checked by calling
core.routing.queues, their one home, so the engine never refuses what the loader accepted.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn, get_args
from urllib.parse import urlsplit

import msgspec

from core.auth import PasswordError, check_password_rules
from core.config.locate import BARE_KEY, KeyPath, Locator
from core.config.schema import (
    ARRAY_TABLES,
    MAX_CAPACITY,
    MAX_SKILL_LEVEL,
    PLAIN_TABLES,
    AgentTable,
    AttachmentsTable,
    ChannelTable,
    FileTable,
    GroupTable,
    HostTable,
    PresenceTable,
    QueueTable,
    RecordsTable,
    TemplateTable,
    WidgetTable,
    table_at,
)
from core.config.settings import (
    DEFAULT_RECORD_STATES,
    MEDIA_TYPE,
    AttachmentSettings,
    ConfigError,
    DeliverySettings,
    EmailSettings,
    Group,
    HostConfig,
    HostSettings,
    RecordSettings,
    Secret,
    WidgetSettings,
    normalize_origin,
    split_listen,
)
from core.model import (
    AVAILABLE,
    AWAY,
    MAX_WEIGHT,
    OFFLINE,
    Agent,
    AssignmentRule,
    ChannelMode,
    Name,
    PresenceState,
    Queue,
    RecordKind,
    Role,
    ServiceChannel,
    SkillRequirement,
    Template,
    attribute_label,
)
from core.notices import NOTICE_MAX, NOTICES, is_language
from core.routing.queues import (
    RoutingConfigError,
    check_overflow_cycles,
    check_queue,
    unknown_name,
)
from core.sla import SlaTargets

# The fields a template may use; the service fills exactly these when it renders one. A typo
# such as {customer.nmae} would otherwise reach customers verbatim.
TEMPLATE_FIELDS = frozenset(
    {"customer.name", "customer.contact", "agent.name", "interaction.number", "queue.name"}
)

_SYNCHRONOUS = ("FULL", "NORMAL")
_EXTENSION = re.compile(r"[a-z0-9]{1,16}")
# An e-mail address as replies are sent from it: local part, "@", a host name.
_MAIL_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}")
_ACCENT = re.compile(r"#[0-9A-Fa-f]{6}")  # used with fullmatch: "$" would allow a newline
# Anything shaped like a field is checked, so {Customer.Name} is caught, while braces around
# other text ({1234}, "{ }") are left alone, as render_template leaves them.
_TEMPLATE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
# The model's rule for a Name; map keys (skills) are checked by hand against it.
_NAME = get_args(Name)[1]
# The widget protocol's attribute keys (core/host/widget.py ATTRIBUTE_KEY).
_ATTRIBUTE_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
# Item attributes a channel shows agents: an offer card has a line for them, not a page.
MAX_DETAILS = 20
# Attributes only the host sets (from a signed identity): allowing customers to type them
# would defeat the signature.
RESERVED_ATTRIBUTES = frozenset({"email_verified", "verified_id"})
MIN_SECRET_BYTES = 32
MAX_SECRET_BYTES = 4096


def validate(
    name: str, text: str, doc: dict[str, Any], base_dir: Path | None, path: Path | None
) -> HostConfig:
    """Check `doc`, the document tomllib made of `text` (kept to find lines for messages).
    `name` is the file name used in messages; `base_dir` anchors relative file names (the
    current directory when None); `path` becomes HostConfig.path."""
    return _Loader(name, text, doc, base_dir, path).load()


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
    def locator(self) -> Locator:
        # Built only when there is something to report: a valid file never pays for it.
        return Locator(self.text)

    # -- reporting

    def fail(self, path: KeyPath, reason: str) -> NoReturn:
        raise ConfigError(self.name, self.locator.line(path), self._where(path), reason)

    def bad(self, path: KeyPath, what: str) -> NoReturn:
        """Fail with the key (relative to its table) leading the reason."""
        self.fail(path, f"{self._key(path)} {what}")

    def _entity_len(self, path: KeyPath) -> int:
        if len(path) >= 2 and path[0] in ARRAY_TABLES and isinstance(path[1], int):
            return 2
        if len(path) >= 2 and path[0] in PLAIN_TABLES:
            return 1
        return 0

    def _where(self, path: KeyPath) -> str:
        n = self._entity_len(path)
        if n == 1:
            return f"[{path[0]}]"
        if n == 2:
            kind, index = str(path[0]), int(path[1])
            entry = self._value(path[:2])
            label = entry.get(ARRAY_TABLES[kind]) if isinstance(entry, dict) else None
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
                key = step if BARE_KEY.fullmatch(step) else _show(step)
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

    def _structure(self) -> FileTable:
        try:
            return msgspec.convert(self.doc, FileTable)
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
            table = table_at(path)
            known = [f.name for f in msgspec.structs.fields(table)] if table else []
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {_show(close[0])}?)" if close else ""
            self.fail((*path, key), f"unknown key {_show(key)}{hint}")
        if missing := re.fullmatch(r"Object missing required field `(.*)`", reason):
            self.fail(path, f"missing required key {_show(missing.group(1))}")
        if typed := re.fullmatch(r"Expected `(.*?)`, got `(.*?)`", reason):
            expected, got = typed.groups()
            if len(path) == 1 and path[0] in ARRAY_TABLES and expected.startswith("array"):
                self.bad(path, f"must be written [[{path[0]}]] (an array of tables)")
            if len(path) == 1 and path[0] in PLAIN_TABLES and got == "array":
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
            if pattern.group(1) == _NAME.pattern:
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
        details = self._details(raw.channel)
        deliveries = self._deliveries(raw.channel)
        inbound_secrets = {
            t.name: self._secret(("channel", i, "inbound_secret_file"), t.inbound_secret_file)
            for i, t in enumerate(raw.channel)
            if t.inbound_secret_file is not None
        }
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
            attachments=self._attachments(raw.attachments),
            details=details,
            records=self._records(raw.records),
            email=self._email(raw.channel, channels),
            deliveries=deliveries,
            inbound_secrets=inbound_secrets,
            slas=self._slas(raw.queue),
        )
        return config

    def _slas(self, tables: list[QueueTable]) -> dict[str, SlaTargets]:
        slas = {}
        for i, t in enumerate(tables):
            if t.sla is None:
                continue
            if t.sla.wait is None and t.sla.first_reply is None:
                self.bad(("queue", i, "sla"), "sets no target: give wait, first_reply or both")
            slas[t.name] = SlaTargets(
                wait=t.sla.wait, first_reply=t.sla.first_reply, near=t.sla.near
            )
        return slas

    def _deliveries(self, tables: list[ChannelTable]) -> dict[str, DeliverySettings]:
        deliveries = {}
        for i, t in enumerate(tables):
            d = t.delivery
            if d is None:
                continue
            at: KeyPath = ("channel", i, "delivery")
            parts = urlsplit(d.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.bad((*at, "url"), f"must be an http:// or https:// URL, got {_show(d.url)}")
            if d.backoff_cap < d.backoff_base:
                self.bad((*at, "backoff_cap"), "must be at least backoff_base")
            if t.email is not None:
                self.bad(at, "an e-mail channel's replies go out by SMTP ([channel.email])")
            deliveries[t.name] = DeliverySettings(
                transport=self._enum((*at, "transport"), d.transport, ("webhook",)),
                url=d.url,
                secret=self._secret((*at, "secret_file"), d.secret_file),
                timeout=d.timeout,
                backoff_base=d.backoff_base,
                backoff_cap=d.backoff_cap,
                give_up_after=d.give_up_after,
            )
        for t in tables:
            if t.email is not None:
                # Replies to e-mail go through the same durable outbox, by SMTP to the
                # smarthost (core/service/mail.py ReplyByMail); nothing to sign.
                deliveries[t.name] = DeliverySettings(
                    transport="smtp", url=f"smtp://{t.email.smarthost}", secret=Secret(b"")
                )
        return deliveries

    def _host(self, t: HostTable) -> HostSettings:
        try:
            split_listen(t.listen)
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
            store=self._store_url(t.store),
            bus=self._bus_url(t.bus, t.store),
            day_retention_days=t.day_retention_days,
        )

    def _bus_url(self, url: str, store: str) -> str | None:
        if not url:
            return None
        if not all(u.strip().startswith(("nats://", "tls://")) for u in url.split(",")):
            self.fail(
                ("host", "bus"),
                f"host.bus: {_show(url)} is not a nats:// URL (or several, comma-separated)",
            )
        elif not store:
            self.fail(
                ("host", "bus"),
                "host.bus needs host.store: the hosts on a bus share one PostgreSQL database",
            )
        return url

    def _store_url(self, url: str) -> str | None:
        if not url:
            return None
        if not url.startswith(("postgresql://", "postgres://")):
            self.fail(
                ("host", "store"),
                f"host.store: {_show(url)} is not a postgresql:// URL (omit it for SQLite)",
            )
        return url

    def _origins(self, path: KeyPath, origins: list[str]) -> tuple[str, ...]:
        normalized: list[str] = []
        for i, origin in enumerate(origins):
            try:
                normalized.append(normalize_origin(origin))
            except ValueError as e:
                self.fail((*path, i), f"{self._key(path)}: {_show(origin)} {e}")
        return tuple(dict.fromkeys(normalized))

    def _customer_attributes(self, tables: list[ChannelTable]) -> dict[str, tuple[str, ...]]:
        allowed: dict[str, tuple[str, ...]] = {}
        for i, t in enumerate(tables):
            for j, key in enumerate(t.customer_attributes):
                path = ("channel", i, "customer_attributes", j)
                self._attribute_key(path, key)
                if key in RESERVED_ATTRIBUTES:
                    self.bad(path, f"{_show(key)} is set only from a signed identity")
            if t.customer_attributes:
                allowed[t.name] = tuple(dict.fromkeys(t.customer_attributes))
        return allowed

    def _attribute_key(self, path: KeyPath, key: str) -> None:
        if not _ATTRIBUTE_KEY.fullmatch(key):
            self.bad(path, f"must be a key like [A-Za-z][A-Za-z0-9_]{{0,31}}, got {_show(key)}")

    def _details(self, tables: list[ChannelTable]) -> dict[str, tuple[tuple[str, str], ...]]:
        shown: dict[str, tuple[tuple[str, str], ...]] = {}
        for i, t in enumerate(tables):
            if t.details is None:
                continue
            if len(t.details) > MAX_DETAILS:
                self.bad(("channel", i, "details"), f"at most {MAX_DETAILS}, got {len(t.details)}")
            pairs: dict[str, str] = {}
            for j, d in enumerate(t.details):
                path = ("channel", i, "details", j, "attribute")
                self._attribute_key(path, d.attribute)
                if d.attribute in pairs:
                    self.bad(path, f"{_show(d.attribute)} is listed twice")
                pairs[d.attribute] = d.label or attribute_label(d.attribute)
            shown[t.name] = tuple(pairs.items())
        return shown

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

    def _channels(self, tables: list[ChannelTable]) -> list[ServiceChannel]:
        if not tables:
            self.fail((), "no [[channel]] tables: declare at least one service channel")
        self._unique("channel", [t.name for t in tables])
        modes = [m.value for m in ChannelMode]
        return [
            ServiceChannel(
                name=t.name,
                mode=ChannelMode(self._enum(("channel", i, "mode"), t.mode, modes)),
                label=t.label,
                weight=self._weight(("channel", i, "weight"), t.weight),
                reopen_window=t.reopen_window,
                language=self._language(("channel", i, "language"), t.language),
                notices=self._notices(("channel", i, "notices"), t.notices),
            )
            for i, t in enumerate(tables)
        ]

    def _weight(self, path: KeyPath, weight: int) -> int:
        if not 1 <= weight <= MAX_WEIGHT:
            self.bad(
                path,
                f"must be from 1 to {MAX_WEIGHT} (the capacity one item uses), got {weight}",
            )
        return weight

    def _language(self, path: KeyPath, tag: object) -> str:
        if not isinstance(tag, str) or not is_language(tag):
            self.bad(path, f'must be a language tag like "en" or "fr-CA", got {_show(tag)}')
        return tag

    def _notices(self, path: KeyPath, notices: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        """notice name -> language tag -> text: names of core/notices.py, texts of at most
        NOTICE_MAX characters."""
        out: dict[str, dict[str, str]] = {}
        for name, texts in notices.items():
            at = (*path, name)
            if name not in NOTICES:
                self.bad(at, unknown_name("notice", name, list(NOTICES)))
            if not isinstance(texts, dict):
                self.bad(at, f"must be a table of language = text, got {_show(texts)}")
            out[name] = {}
            for tag, text in texts.items():
                self._language((*at, tag), tag)
                if not isinstance(text, str) or not text.strip():
                    self.bad((*at, tag), f"must be a text, got {_show(text)}")
                if len(text) > NOTICE_MAX:
                    too_long = f"must be at most {NOTICE_MAX} characters, got {len(text)}"
                    self.bad((*at, tag), too_long)
                out[name][tag] = text
        return out

    def _known(self, path: KeyPath, kind: str, name: str, known: Sequence[str]) -> None:
        if name not in known:
            self.bad(path, unknown_name(kind, name, known))

    def _presences(self, tables: list[PresenceTable], channels: list[str]) -> list[PresenceState]:
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

    def _groups(self, tables: list[GroupTable]) -> list[Group]:
        self._unique("group", [t.name for t in tables])
        return [Group(name=t.name, label=t.label) for t in tables]

    def _queues(
        self,
        tables: list[QueueTable],
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
            elif not re.fullmatch(_NAME.pattern, key) or len(key) > _NAME.max_length:
                self.bad(at, "is not a valid name: use letters, digits and . _ @ + -")
            # bool is an int in Python, but `french = true` is a mistake, not level 1.
            if isinstance(value, bool) or not isinstance(value, int):
                self.bad(at, f"must be an integer from {lo} to {hi}, got {_show(value)}")
            if not lo <= value <= hi:
                self.bad(at, f"must be from {lo} to {hi}, got {value}")
            out[key] = value
        return out

    def _agents(
        self, tables: list[AgentTable], channels: list[str], groups: list[Group]
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
        self, tables: list[TemplateTable], queues: list[Queue], agents: list[Agent]
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

    def _records(self, t: RecordsTable) -> RecordSettings:
        states: dict[RecordKind, tuple[str, ...]] = {}
        for kind in RecordKind:
            names = getattr(t, kind.value).states
            seen: set[str] = set()
            for i, name in enumerate(names):
                if name in seen:
                    self.bad(("records", kind.value, "states", i), f"repeats {_show(name)}")
                seen.add(name)
            if names:
                states[kind] = tuple(names)
        return RecordSettings(states={**DEFAULT_RECORD_STATES, **states})

    def _email(
        self, tables: list[ChannelTable], channels: list[ServiceChannel]
    ) -> dict[str, EmailSettings]:
        email: dict[str, EmailSettings] = {}
        listening: dict[str, str] = {}
        for i, (t, channel) in enumerate(zip(tables, channels, strict=True)):
            if t.email is None:
                continue
            path: KeyPath = ("channel", i, "email")
            if channel.mode != ChannelMode.ASYNC:
                self.bad(("channel", i, "mode"), 'an e-mail channel is async: set mode = "async"')
            for key in ("listen", "smarthost"):
                try:
                    _, port = split_listen(getattr(t.email, key))
                except ValueError as e:
                    self.bad((*path, key), f"{e}, got {_show(getattr(t.email, key))}")
                if key == "smarthost" and port == 0:
                    self.bad((*path, key), "needs the smarthost's port, e.g. 127.0.0.1:25")
            if t.email.listen in listening and not t.email.listen.endswith(":0"):
                self.bad(
                    (*path, "listen"),
                    f"{_show(t.email.listen)} is channel {listening[t.email.listen]}'s already",
                )
            listening[t.email.listen] = t.name
            if not _MAIL_ADDRESS.fullmatch(t.email.address):
                self.bad(
                    (*path, "address"),
                    f"must be an address like support@example.com, got {_show(t.email.address)}",
                )
            email[t.name] = EmailSettings(
                listen=t.email.listen,
                address=t.email.address,
                smarthost=t.email.smarthost,
                max_bytes=t.email.max_bytes,
            )
        return email

    def _attachments(self, t: AttachmentsTable) -> AttachmentSettings:
        for i, kind in enumerate(t.allowed_types):
            if not MEDIA_TYPE.fullmatch(kind):
                self.bad(
                    ("attachments", "allowed_types", i),
                    f"must be a lower-case type/subtype such as image/png, got {_show(kind)}",
                )
        for i, ext in enumerate(t.allowed_extensions):
            if not _EXTENSION.fullmatch(ext):
                self.bad(
                    ("attachments", "allowed_extensions", i),
                    f"must be lower-case letters and digits without the dot, got {_show(ext)}",
                )
        return AttachmentSettings(
            max_bytes=t.max_bytes,
            allowed_types=tuple(dict.fromkeys(t.allowed_types)),
            allowed_extensions=tuple(dict.fromkeys(t.allowed_extensions)),
            link_ttl=t.link_ttl,
        )

    def _widget(self, t: WidgetTable, channels: list[ServiceChannel]) -> WidgetSettings:
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
