"""Config loading: the example works, and every mistake is reported at its file and line.

Fixture files are small and written out literally so the expected line numbers can be read off
them; `write` strips only the first newline, so line 1 is the first line after the quotes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import msgspec
import pytest

from core.config import (
    MAX_CONFIG_BYTES,
    ConfigError,
    EmailSettings,
    HostConfig,
    HostSettings,
    WidgetSettings,
    default_config_path,
    example_config_path,
    load_config,
    parse_config,
    schema,
)
from core.config.settings import DeliverySettings
from core.demo import DEMO_PASSWORD, demo_config, demo_config_path
from core.model import (
    AVAILABLE,
    AWAY,
    OFFLINE,
    Agent,
    AssignmentRule,
    ChannelMode,
    PresenceState,
    Queue,
    RecordKind,
    Role,
    ServiceChannel,
    Template,
    render_template,
)
from core.routing.engine import Router, RoutingConfig
from core.routing.queues import RoutingConfigError


def write(tmp_path: Path, text: str, name: str = "inbox.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).removeprefix("\n"), encoding="utf-8")
    return path


def error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


CHANNELS = """
[[channel]]
name = "chat"
mode = "sync"

[[channel]]
name = "messaging"
mode = "async"
"""  # 7 lines, so fixture tables that follow it start on line 8


def with_channels(tmp_path: Path, text: str) -> Path:
    return write(tmp_path, CHANNELS + textwrap.dedent(text).removeprefix("\n"))


# ---------------------------------------------------------------------------- the example


def test_the_demo_config_loads_and_builds_a_router() -> None:
    path = demo_config_path()
    assert path.is_file()
    assert path.parent.name == "examples"
    config = load_config(path)

    assert [(c.name, c.mode) for c in config.channels] == [
        ("chat", ChannelMode.SYNC),
        ("messaging", ChannelMode.ASYNC),
        ("case", ChannelMode.RECORD),
        ("incident", ChannelMode.RECORD),
    ]
    presences = {p.name: p for p in config.presences}
    assert [p.name for p in config.presences][:3] == [AVAILABLE, AWAY, OFFLINE]
    assert set(presences[AVAILABLE].channels) == {"chat", "messaging", "case", "incident"}
    assert presences[AWAY].channels == () and presences[OFFLINE].channels == ()
    assert presences["Messaging-only"].label == "Messaging only"
    assert [g.name for g in config.groups] == ["tier1", "tier2", "french"]

    queues = {q.name: q for q in config.queues}
    assert set(queues) == {"french", "vip", "general", "messaging", "cases", "incidents"}
    french = queues["french"]
    assert french.condition == 'language == "fr"'
    assert [(s.name, s.level) for s in french.skills] == [("french", 2)]
    assert (french.overflow, french.max_wait) == ("general", 90)
    assert queues["vip"].order < queues["french"].order < queues["general"].order
    assert queues["vip"].rule is AssignmentRule.LEAST_RECENT
    assert queues["general"].condition == ""
    assert queues["general"].timeout_presence == AWAY
    assert (queues["general"].reply_deadline, queues["general"].wrap_up_time) == (120, 60)
    assert queues["messaging"].abandon_after == 172800
    assert queues["messaging"].affinity_window == 86400
    assert {queues["cases"].channel, queues["incidents"].channel} == {"case", "incident"}

    agents = {a.id: a for a in config.agents}
    assert set(agents) == {"alice", "bob", "chloe", "dan", "admin"}
    assert agents["chloe"].skills == {"french": 3}
    assert agents["dan"].role is Role.SUPERVISOR and agents["admin"].role is Role.ADMIN
    # On disk the demo names no password: started as a real host, it lets nobody log in.
    assert config.seed_passwords == {}
    assert demo_config().seed_passwords == dict.fromkeys(agents, DEMO_PASSWORD)

    assert [t.shortcut for t in config.templates] == ["greet", "wait", "bye", "case-created"]
    fields = {"customer.name": "Ana", "agent.name": "Alice", "interaction.number": "IMS0001001"}
    for template in config.templates:
        assert "{" not in render_template(template.text, fields)

    assert config.widget.channel == "chat"
    assert config.host.listen_host == "127.0.0.1" and config.host.listen_port == 8600

    router = Router(config.routing_config())
    assert router.members("french") == ["chloe"]
    assert "admin" not in router.members("general")


def test_the_init_config_has_no_agent_and_no_password_and_routes() -> None:
    """What `inbox-tui admin init` writes: a real host's start, every queue reachable."""
    config = load_config(example_config_path())
    assert config.agents == [] and config.seed_passwords == {}
    assert [c.name for c in config.channels] == ["chat", "messaging", "case", "incident"]
    assert {q.channel for q in config.queues} == {c.name for c in config.channels}
    assert all(q.groups == ("support",) for q in config.queues)
    assert config.host.listen_host == "127.0.0.1"
    Router(config.routing_config())


def test_a_config_password_obeys_the_password_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[channel]]
        name = "chat"
        mode = "sync"

        [[agent]]
        id = "admin"
        role = "admin"
        password = "demo"
        """,
    )
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.line == 8
    assert "too short: use at least 8 characters" in str(e.value)


def test_config_is_frozen() -> None:
    config = load_config(example_config_path())
    with pytest.raises(AttributeError):
        config.queues = []  # type: ignore[misc]


def test_file_tables_cover_every_model_field() -> None:
    # The loader copies table fields into the model by name; a field added to the model but
    # not to the file schema would silently never be configurable.
    def names(cls: type[msgspec.Struct]) -> set[str]:
        return {f.name for f in msgspec.structs.fields(cls)}

    # sla is the supervisors' business, not routing's: kept in HostConfig.slas.
    assert names(schema.QueueTable) == names(Queue) | {"sla"}
    assert names(schema.AgentTable) == names(Agent) | {"password"}
    # customer_attributes is the widget's business, kept in HostConfig.customer_attributes;
    # details are what consoles show, kept in HostConfig.details; email is kept in
    # HostConfig.email; delivery and inbound_secret_file are the outbox's and the REST
    # intake's, in HostConfig.deliveries and HostConfig.inbound_secrets.
    assert names(schema.ChannelTable) == names(ServiceChannel) | {
        "customer_attributes",
        "details",
        "email",
        "delivery",
        "inbound_secret_file",
    }
    assert names(schema.EmailTable) == names(EmailSettings)
    assert names(schema.DeliveryTable) - {"secret_file"} == names(DeliverySettings) - {"secret"}
    assert names(schema.PresenceTable) == names(PresenceState)
    assert names(schema.TemplateTable) == names(Template)
    assert names(schema.HostTable) == names(HostSettings)
    # The file names the secret's file; the settings hold the secret read from it.
    assert names(schema.WidgetTable) - {"identity_secret_file"} == names(WidgetSettings) - {
        "identity_secret"
    }


def test_an_e_mail_channel_is_loaded_with_its_settings(tmp_path: Path) -> None:
    config = load_config(
        with_channels(
            tmp_path,
            """
            [channel.email]
            listen = "127.0.0.1:2525"
            address = "support@example.com"
            smarthost = "mx.example.com:25"
            """,
        )
    )
    settings = config.email["messaging"]
    assert settings.listen == "127.0.0.1:2525"
    assert settings.smarthost == "mx.example.com:25"
    assert settings.address == "support@example.com"
    assert settings.max_bytes == 10 * 2**20
    assert list(config.email) == ["messaging"]


@pytest.mark.parametrize(
    ("mode", "email", "message"),
    [
        ("sync", "", 'an e-mail channel is async: set mode = "async"'),
        ("async", 'address = "support"', "must be an address like support@example.com"),
        ("async", 'smarthost = "mx.example.com:0"', "needs the smarthost's port"),
        ("async", 'listen = "nowhere"', "must be host:port"),
        ("async", "max_bytes = 20971520", "max_bytes"),
    ],
)
def test_e_mail_settings_are_checked(tmp_path: Path, mode: str, email: str, message: str) -> None:
    keys = {"listen": '"127.0.0.1:2525"', "address": '"a@b.c"', "smarthost": '"127.0.0.1:25"'}
    key, _, value = email.partition(" = ")
    if key:
        keys[key] = value
    table = "\n".join(f"{k} = {v}" for k, v in keys.items())
    path = write(
        tmp_path, f'[[channel]]\nname = "mail"\nmode = "{mode}"\n\n[channel.email]\n{table}\n'
    )
    assert message in str(error(path))


# ---------------------------------------------------------------------------- paths


def test_default_config_path_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_config_path() == tmp_path / "xdg" / "inbox-tui" / "inbox.toml"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # the XDG spec says: ignore
    assert default_config_path() == tmp_path / "home" / ".config" / "inbox-tui" / "inbox.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert default_config_path() == tmp_path / "home" / ".config" / "inbox-tui" / "inbox.toml"


def test_relative_data_dir_is_taken_from_the_config_directory(tmp_path: Path) -> None:
    path = with_channels(tmp_path, '[host]\ndata_dir = "data"\n')
    assert load_config(path).host.data_dir == tmp_path / "data"


# ---------------------------------------------------------------------------- defaults


def test_minimal_config_gets_default_presences_and_settings(tmp_path: Path) -> None:
    config = load_config(with_channels(tmp_path, ""))
    assert isinstance(config, HostConfig)
    assert config.presences == [
        PresenceState(name=AVAILABLE, channels=("chat", "messaging")),
        PresenceState(name=AWAY),
        PresenceState(name=OFFLINE),
    ]
    assert config.host.listen == "127.0.0.1:8600"
    assert config.host.synchronous == "FULL"
    assert config.host.max_pending_offers == 1
    assert config.host.data_dir is None
    assert config.widget.channel == "chat"  # the first sync channel
    assert config.queues == [] and config.agents == [] and config.seed_passwords == {}
    Router(config.routing_config())


def test_declared_presences_keep_theirs_and_missing_ones_get_defaults(tmp_path: Path) -> None:
    path = with_channels(
        tmp_path,
        """
        [[presence]]
        name = "Lunch"

        [[presence]]
        name = "Available"
        label = "Ready"

        [[presence]]
        name = "Away"
        channels = ["messaging"]
        """,
    )
    presences = load_config(path).presences
    assert presences == [
        # Declared without channels: Available still means every channel.
        PresenceState(name=AVAILABLE, channels=("chat", "messaging"), label="Ready"),
        PresenceState(name=AWAY, channels=("messaging",)),
        PresenceState(name=OFFLINE),
        PresenceState(name="Lunch"),
    ]


def test_templates_are_loaded_with_scopes(tmp_path: Path) -> None:
    path = with_channels(
        tmp_path,
        """
        [[queue]]
        name = "general"
        channel = "chat"

        [[agent]]
        id = "alice"

        [[template]]
        shortcut = "greet"
        text = "Hello {customer.name}"

        [[template]]
        shortcut = "greet"
        text = "Bonjour {customer.name}, ici {agent.name}"
        scope = "queue:general"

        [[template]]
        shortcut = "sig"
        title = "Signature"
        text = "{agent.name}"
        scope = "agent:alice"
        """,
    )
    templates = load_config(path).templates
    assert [(t.shortcut, t.scope) for t in templates] == [
        ("greet", "global"),
        ("greet", "queue:general"),
        ("sig", "agent:alice"),
    ]
    assert templates[2].title == "Signature"


# ---------------------------------------------------------------------------- errors


def test_unknown_key_in_a_queue(tmp_path: Path) -> None:
    path = with_channels(
        tmp_path,
        """
        [[queue]]
        name = "french"
        channel = "chat"
        ofer_timeout = 30
        """,
    )
    e = error(path)
    assert (e.line, e.where) == (11, 'queue "french"')
    assert str(e) == (
        f'{path}:11: queue "french": unknown key "ofer_timeout" (did you mean "offer_timeout"?)'
    )


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("[[queues]]\nname = 'x'\n", 8, 'unknown key "queues" (did you mean "queue"?)'),
        ("[host]\nlisten = '127.0.0.1:1'\nport = 1\n", 10, '[host]: unknown key "port"'),
        (
            "[[agent]]\nid = 'a'\nskills = { x = 1 }\nskill = { x = 1 }\n",
            11,
            'agent "a": unknown key "skill" (did you mean "skills"?)',
        ),
        (
            "[[queue]]\nname = 'q'\nchannel = 'chat'\nskills = [{ name = 'x', lvl = 2 }]\n",
            11,
            'queue "q": unknown key "lvl" (did you mean "level"?)',
        ),
    ],
)
def test_unknown_keys_anywhere(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = with_channels(tmp_path, text)
    assert str(error(path)) == f"{path}:{line}: {message}"


def test_toml_syntax_error_keeps_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[channel]]
        name = "chat"
        mode = sync
        """,
    )
    e = error(path)
    assert e.line == 3
    assert str(e) == f"{path}:3: TOML syntax error: Invalid value (column 8)"


def test_toml_duplicate_table_is_a_syntax_error(tmp_path: Path) -> None:
    path = with_channels(tmp_path, "[host]\n[widget]\n[host]\n")
    e = error(path)
    assert e.line == 10 and "Cannot declare ('host',) twice" in e.reason


def test_missing_required_key_points_at_the_table(tmp_path: Path) -> None:
    path = with_channels(tmp_path, '[[queue]]\nname = "general"\norder = 3\n')
    assert str(error(path)) == f'{path}:8: queue "general": missing required key "channel"'


def test_entry_without_a_name_is_called_by_its_position(tmp_path: Path) -> None:
    path = with_channels(tmp_path, '[[queue]]\nname = "a"\nchannel = "chat"\n\n[[queue]]\n')
    assert str(error(path)) == f'{path}:12: queue #2: missing required key "name"'


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("offer_timeout = '30'\n", 10, 'offer_timeout must be a number, got "30"'),
        ("offer_timeout = 0\n", 10, "offer_timeout must be > 0, got 0"),
        ("max_wait = -5\n", 10, "max_wait must be > 0, got -5"),
        ("wrap_up_time = -0.5\n", 10, "wrap_up_time must be > 0, got -0.5"),
        ("abandon_after = inf\n", 10, "abandon_after must be <= 316224000, got inf"),
        ("order = 1.5\n", 10, "order must be an integer, got 1.5"),
        ("groups = 'tier1'\n", 10, 'groups must be an array, got "tier1"'),
        ("groups = [1]\n", 10, "groups[0] must be a string, got 1"),
        ("skills = [{ name = 'fr', level = 0 }]\n", 10, "skills[0].level must be >= 1, got 0"),
        ("prefer_skill_level = 'yes'\n", 10, 'prefer_skill_level must be true or false, got "yes"'),
        ("condition = { a = 1 }\n", 10, "condition must be a string, got a table"),
    ],
)
def test_wrong_types_and_limits(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = with_channels(tmp_path, '[[queue]]\nname = "q"\n' + text + 'channel = "chat"\n')
    assert str(error(path)) == f'{path}:{line}: queue "q": {message}'


def test_invalid_name(tmp_path: Path) -> None:
    path = with_channels(tmp_path, '[[group]]\nname = "tier 1"\n')
    assert str(error(path)) == (
        f'{path}:9: group "tier 1": name must be a name of letters, digits and . _ @ + -'
        ' (no spaces), got "tier 1"'
    )


def test_bad_rule_lists_the_choices(tmp_path: Path) -> None:
    path = with_channels(
        tmp_path,
        """
        [[queue]]
        name = "x"
        channel = "chat"
        order = 10
        rule = "fastest"
        """,
    )
    assert str(error(path)) == (
        f'{path}:12: queue "x": rule must be one of most_capacity, least_recent, round_robin,'
        ' got "fastest"'
    )


def test_array_table_written_as_a_single_table(tmp_path: Path) -> None:
    path = write(tmp_path, '[channel]\nname = "chat"\nmode = "sync"\n')
    assert str(error(path)) == f"{path}:1: channel must be written [[channel]] (an array of tables)"
    path = with_channels(tmp_path, "[[host]]\n")
    assert (
        str(error(path)) == f"{path}:8: host must be written [host] (a single table), not [[host]]"
    )


@pytest.mark.parametrize(
    ("kind", "first", "second"),
    [
        ("channel", 1, 5),  # the two channels of CHANNELS renamed alike
        ("queue", 8, 12),
        ("group", 8, 11),
    ],
)
def test_duplicate_names(tmp_path: Path, kind: str, first: int, second: int) -> None:
    if kind == "channel":
        path = write(tmp_path, CHANNELS.replace('"messaging"', '"chat"'))
    else:
        extra = '\nchannel = "chat"' if kind == "queue" else ""
        table = f'[[{kind}]]\nname = "dup"{extra}\n'
        path = with_channels(tmp_path, table + "\n" + table)
    e = error(path)
    assert e.line == second
    assert f"already used on line {first}" in e.reason


def test_duplicate_agent_id(tmp_path: Path) -> None:
    path = with_channels(tmp_path, '[[agent]]\nid = "a"\n\n[[agent]]\nid = "a"\n')
    assert str(error(path)) == f'{path}:11: agent "a": duplicate name "a", already used on line 8'


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            '[[queue]]\nname = "q"\nchannel = "voice"\n',
            10,
            'queue "q": channel names unknown channel "voice" (known: chat, messaging)',
        ),
        (
            '[[queue]]\nname = "q"\nchannel = "chat"\ngroups = ["tier9"]\n',
            11,
            'queue "q": groups[0] names unknown group "tier9" (known: none are declared)',
        ),
        (
            '[[queue]]\nname = "q"\nchannel = "chat"\ntimeout_presence = "Gone"\n',
            11,
            'queue "q": timeout_presence names unknown presence "Gone"'
            " (known: Available, Away, Offline)",
        ),
        (
            '[[queue]]\nname = "q"\nchannel = "chat"\nmax_wait = 5\noverflow = "nowhere"\n',
            12,
            'queue "q": overflow names unknown queue "nowhere" (known: q)',
        ),
        (
            '[[group]]\nname = "t1"\n\n[[agent]]\nid = "a"\ngroups = ["t1", "t2"]\n',
            13,
            'agent "a": groups[1] names unknown group "t2" (known: t1)',
        ),
        (
            '[[agent]]\nid = "a"\ncapacity = { chat = 2, voice = 1 }\n',
            10,
            'agent "a": capacity.voice names unknown channel "voice" (known: chat, messaging)',
        ),
        (
            '[[presence]]\nname = "Busy"\nchannels = ["chat", "fax"]\n',
            10,
            'presence "Busy": channels[1] names unknown channel "fax" (known: chat, messaging)',
        ),
        (
            '[[template]]\nshortcut = "hi"\ntext = "hi"\nscope = "queue:nope"\n',
            11,
            'template "hi": scope names unknown queue "nope" (known: none are declared)',
        ),
        (
            '[widget]\nchannel = "sms"\n',
            9,
            '[widget]: channel names unknown channel "sms" (known: chat, messaging)',
        ),
    ],
)
def test_unknown_references(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = with_channels(tmp_path, text)
    assert str(error(path)) == f"{path}:{line}: {message}"


def test_overflow_cycle_is_named(tmp_path: Path) -> None:
    path = with_channels(
        tmp_path,
        """
        [[queue]]
        name = "a"
        channel = "chat"
        max_wait = 10
        overflow = "b"

        [[queue]]
        name = "b"
        channel = "chat"
        max_wait = 10
        overflow = "c"

        [[queue]]
        name = "c"
        channel = "chat"
        max_wait = 10
        overflow = "b"
        """,
    )
    assert str(error(path)) == f'{path}:18: queue "b": overflow cycle b -> c -> b'


def test_overflow_to_itself(tmp_path: Path) -> None:
    path = with_channels(
        tmp_path, '[[queue]]\nname = "a"\nchannel = "chat"\nmax_wait = 1\noverflow = "a"\n'
    )
    assert str(error(path)) == f'{path}:12: queue "a": overflow cycle a -> a'


def test_overflow_needs_max_wait_and_the_same_channel(tmp_path: Path) -> None:
    queues = (
        '[[queue]]\nname = "a"\nchannel = "chat"\noverflow = "b"\n'
        '\n[[queue]]\nname = "b"\nchannel = "{channel}"\n'
    )
    path = with_channels(tmp_path, queues.format(channel="chat"))
    assert str(error(path)) == (
        f'{path}:11: queue "a": overflow needs max_wait: the wait that triggers it'
    )
    path = with_channels(tmp_path, queues.format(channel="messaging"))
    assert 'names queue "b" on channel "messaging"' in error(path).reason


def test_bad_condition_reports_its_column(tmp_path: Path) -> None:
    path = with_channels(
        tmp_path,
        """
        [[queue]]
        name = "vip"
        channel = "chat"
        condition = 'tier == gold'
        """,
    )
    e = error(path)
    assert e.line == 11
    assert e.reason.startswith("condition is invalid: ")
    assert e.reason.endswith("at column 9")
    assert str(e).startswith(f'{path}:11: queue "vip": condition is invalid: ')


@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        ("8600", "must be host:port, e.g. 127.0.0.1:8600"),
        ("localhost:http", "port must be a number from 0 to 65535, got 'http'"),
        ("localhost:70000", "port must be a number from 0 to 65535, got '70000'"),
        ("::1:8600", "write an IPv6 address in brackets: [::1]:8600"),
        ("[::zz]:8600", "'::zz' is not an IPv6 address"),
        ("bad_host!:8600", "'bad_host!' is not a host name or IPv4 address"),
    ],
)
def test_bad_listen_address(tmp_path: Path, listen: str, reason: str) -> None:
    path = with_channels(tmp_path, f'[host]\nsynchronous = "NORMAL"\nlisten = "{listen}"\n')
    assert str(error(path)) == f'{path}:10: [host]: listen {reason}, got "{listen}"'


def test_good_listen_addresses(tmp_path: Path) -> None:
    path = with_channels(tmp_path, '[host]\nlisten = "[::1]:0"\n')
    host = load_config(path).host
    assert (host.listen_host, host.listen_port) == ("::1", 0)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            '[host]\nsynchronous = "OFF"\n',
            9,
            '[host]: synchronous must be one of FULL, NORMAL, got "OFF"',
        ),
        ("[host]\nsession_ttl = 0\n", 9, "[host]: session_ttl must be > 0, got 0"),
        ("[host]\nmax_pending_offers = 0\n", 9, "[host]: max_pending_offers must be >= 1, got 0"),
        (
            '[widget]\ntitle = "Help"\naccent = "blue"\n',
            10,
            '[widget]: accent must be a colour written #rrggbb, got "blue"',
        ),
        (
            '[widget]\naccent = "#12345"\n',
            9,
            '[widget]: accent must be a colour written #rrggbb, got "#12345"',
        ),
        (
            "[widget]\nmax_message_length = 100000\n",
            9,
            "[widget]: max_message_length must be <= 16000, got 100000",
        ),
        (
            '[[channel]]\nname = "fax"\nmode = "paper"\n',
            10,
            'channel "fax": mode must be one of sync, async, record, got "paper"',
        ),
        (
            '[[agent]]\nid = "a"\nrole = "boss"\n',
            10,
            'agent "a": role must be one of agent, supervisor, admin, got "boss"',
        ),
        (
            '[[agent]]\nid = "a"\nskills = { french = 11 }\n',
            10,
            'agent "a": skills.french must be from 1 to 10, got 11',
        ),
        (
            '[[agent]]\nid = "a"\nskills = { french = true }\n',
            10,
            'agent "a": skills.french must be an integer from 1 to 10, got true',
        ),
        (
            '[[agent]]\nid = "a"\nskills = { "fr ench" = 2 }\n',
            10,
            'agent "a": skills."fr ench" is not a valid name: use letters, digits and . _ @ + -',
        ),
        (
            '[[agent]]\nid = "a"\ncapacity = { chat = -1 }\n',
            10,
            'agent "a": capacity.chat must be from 0 to 1000, got -1',
        ),
        (
            '[[presence]]\nname = "Offline"\nchannels = ["chat"]\n',
            10,
            'presence "Offline": channels must be empty: Offline takes no work',
        ),
        (
            '[[queue]]\nname = "q"\nchannel = "chat"\nskills = [{ name = "x" }, { name = "x" }]\n',
            11,
            'queue "q": skills[1] repeats skill "x"',
        ),
    ],
)
def test_bad_values(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = with_channels(tmp_path, text)
    assert str(error(path)) == f"{path}:{line}: {message}"


def test_no_channels(tmp_path: Path) -> None:
    path = write(tmp_path, "[host]\n")
    assert str(error(path)) == (
        f"{path}:1: no [[channel]] tables: declare at least one service channel"
    )


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            '[[template]]\nshortcut = "hi"\ntext = "Hi {customer.nmae}"\n',
            10,
            'template "hi": text uses unknown field {customer.nmae} (known: agent.name,'
            " customer.contact, customer.name, interaction.number, queue.name)",
        ),
        ('[[template]]\nshortcut = "hi"\ntext = ""\n', 10, 'template "hi": text must not be empty'),
        (
            '[[template]]\nshortcut = "hi"\ntext = "x"\nscope = "team"\n',
            11,
            'template "hi": scope must be "global", "queue:<name>" or "agent:<id>", got "team"',
        ),
        (
            '[[template]]\nshortcut = "hi"\ntext = "x"\n\n'
            '[[template]]\nshortcut = "hi"\ntext = "y"\n',
            13,
            'template "hi": duplicate shortcut "hi" in scope global, already used on line 8',
        ),
    ],
)
def test_bad_templates(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = with_channels(tmp_path, text)
    assert str(error(path)) == f"{path}:{line}: {message}"


# ---------------------------------------------------------------------------- the line locator


def test_lines_inside_strings_and_arrays_are_not_taken_for_tables(tmp_path: Path) -> None:
    path = with_channels(
        tmp_path,
        '''
        [[template]]
        shortcut = "t"
        text = """
        [[queue]]
        offer_timeout = 1
        """
        title = "has [[queue]] in it" # [[queue]]

        [[presence]]
        name = "Busy"
        channels = [
          "chat",
          # [[queue]]
        ]

        [[queue]]  # see [docs] and [[queue]]
        name = "q"
        channel = "chat"
        offer_timeout = -1
        ''',
    )
    assert str(error(path)) == f'{path}:26: queue "q": offer_timeout must be > 0, got -1'


def test_sub_tables_of_array_entries_are_located(tmp_path: Path) -> None:
    path = with_channels(
        tmp_path,
        """
        [[queue]]
        name = "a"
        channel = "chat"

        [[queue]]
        name = "b"
        channel = "chat"

        [[queue.skills]]
        name = "x"

        [[queue.skills]]
        name = "y"
        level = 0
        """,
    )
    assert str(error(path)) == f'{path}:21: queue "b": skills[1].level must be >= 1, got 0'


def test_dotted_and_quoted_keys_are_located(tmp_path: Path) -> None:
    # Keys before the first header belong to the root table, so they come first here.
    path = write(tmp_path, 'host.listen = "127.0.0.1:1"\n"widget".accent = "red"\n' + CHANNELS)
    assert (
        str(error(path))
        == f'{path}:2: [widget]: accent must be a colour written #rrggbb, got "red"'
    )


def test_the_loader_and_the_engine_refuse_a_queue_for_the_same_reason(tmp_path: Path) -> None:
    # One source for the rules: what the file is refused for is what the engine would say.
    path = with_channels(
        tmp_path, '[[queue]]\nname = "q"\nchannel = "chat"\ntimeout_presence = "Gone"\n'
    )
    queue = Queue(name="q", channel="chat", timeout_presence="Gone")
    channels = [ServiceChannel(name="chat", mode=ChannelMode.SYNC)]
    presences = [PresenceState(name=p) for p in (AVAILABLE, AWAY, OFFLINE)]
    with pytest.raises(RoutingConfigError) as caught:
        Router(RoutingConfig(channels=channels, presences=presences, queues=[queue]))
    assert error(path).reason == caught.value.reason


# ---------------------------------------------------------------------------- the file itself


def test_oversize_file(tmp_path: Path) -> None:
    path = tmp_path / "inbox.toml"
    path.write_bytes(CHANNELS.encode() + b"#" * MAX_CONFIG_BYTES)
    e = error(path)
    assert e.line is None
    assert str(e) == f"{path}: file is larger than 1 MiB; is it the right file?"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert str(error(path)) == f"{path}: cannot read the file: No such file or directory"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "inbox.toml"
    path.write_bytes(CHANNELS.removeprefix("\n").encode() + b'[widget]\ntitle = "caf\xe9"\n')
    assert str(error(path)) == f"{path}:9: the file is not valid UTF-8"


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
    e = ConfigError("f.toml", 3, 'queue "q"', "bad")
    assert (str(e), e.file, e.line, e.where, e.reason) == (
        'f.toml:3: queue "q": bad',
        "f.toml",
        3,
        'queue "q"',
        "bad",
    )


def test_syntax_error_at_end_of_file_names_the_last_line(tmp_path: Path) -> None:
    path = with_channels(tmp_path, '[widget]\ntitle = "Sup')
    assert str(error(path)) == f"{path}:9: TOML syntax error at end of file: Unterminated string"


def test_condition_that_is_too_long(tmp_path: Path) -> None:
    condition = " or ".join(["vip"] * 600)
    path = with_channels(
        tmp_path, f'[[queue]]\nname = "q"\nchannel = "chat"\ncondition = "{condition}"\n'
    )
    assert str(error(path)) == (
        f'{path}:11: queue "q": condition is too long: {len(condition)} characters,'
        " at most 2000 allowed"
    )


def test_braces_that_are_not_fields_are_left_alone(tmp_path: Path) -> None:
    path = with_channels(tmp_path, '[[template]]\nshortcut = "c"\ntext = "Code {1234} { }"\n')
    assert load_config(path).templates[0].text == "Code {1234} { }"


def test_parse_config_names_the_source_in_errors() -> None:
    text = '[[channel]]\nname = "chat"\nmode = "live"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, name="demo.toml")
    assert (
        str(info.value)
        == 'demo.toml:3: channel "chat": mode must be one of sync, async, record, got "live"'
    )


# ---------------------------------------------------------------------------- cross-site keys


def test_origins_are_normalised_as_browsers_send_them(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [host]
        allowed_origins = ["https://Agents.Example.com:443", "http://127.0.0.1:8080"]

        [[channel]]
        name = "chat"
        mode = "sync"
        customer_attributes = ["language", "topic", "language"]

        [widget]
        embed_origins = ["http://[::1]:80", "https://shop.example.com"]
        """,
    )
    config = load_config(path)
    assert config.host.allowed_origins == ("https://agents.example.com", "http://127.0.0.1:8080")
    assert config.widget.embed_origins == ("http://[::1]", "https://shop.example.com")
    assert config.customer_attributes == {"chat": ("language", "topic")}
    assert config.widget.identity_secret is None


def chat_and(tmp_path: Path, text: str) -> Path:
    """A file of one chat channel (lines 1-3), then `text` from line 4."""
    return write(tmp_path, '[[channel]]\nname = "chat"\nmode = "sync"\n' + textwrap.dedent(text))


@pytest.mark.parametrize(
    ("origin", "reason"),
    [
        ("https://a.example/", "must be an origin only, scheme://host[:port], with no path"),
        ("https://a.example/chat", "must be an origin only, scheme://host[:port], with no path"),
        ("https://a.example?x=1", "must be an origin only, scheme://host[:port], with no path"),
        ("null", "must be http://host[:port] or https://host[:port]"),
        ("*", "must be http://host[:port] or https://host[:port]"),
        ("ftp://a.example", "must be http://host[:port] or https://host[:port]"),
        ("https://user@a.example", "must not contain a user name or password"),
        ("https://a_b.example", "has a bad host name"),
        ("https://a.example:0", "port must be 1 to 65535"),
        ("https://a.example:99999", "is not scheme://host[:port]"),
    ],
)
def test_bad_origins_name_their_line(tmp_path: Path, origin: str, reason: str) -> None:
    path = chat_and(
        tmp_path,
        f"""
        [widget]
        embed_origins = [
          "https://fine.example",
          "{origin}",
        ]
        """,
    )
    e = error(path)
    assert e.line == 6 and e.where == "[widget]"  # the key's line: arrays are located whole
    assert f'embed_origins: "{origin}" {reason}' in str(e)
    host = write(tmp_path, f'[host]\nallowed_origins = ["{origin}"]\n{CHANNELS}', "host.toml")
    assert "host.toml:2: [host]: allowed_origins: " in str(error(host))


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("1st", 'must be a key like [A-Za-z][A-Za-z0-9_]{0,31}, got "1st"'),
        ("email_verified", '"email_verified" is set only from a signed identity'),
        ("verified_id", '"verified_id" is set only from a signed identity'),
    ],
)
def test_bad_customer_attributes(tmp_path: Path, key: str, reason: str) -> None:
    path = chat_and(
        tmp_path,
        f"""
        customer_attributes = ["language", "{key}"]
        """,
    )
    e = error(path)
    assert str(e) == f'{path}:5: channel "chat": customer_attributes[1] {reason}'


def identity_config(tmp_path: Path) -> Path:
    return chat_and(
        tmp_path,
        """
        [widget]
        identity_secret_file = "keys/identity.secret"
        """,
    )


def test_identity_secret_is_read_relative_to_the_config(tmp_path: Path) -> None:
    path = identity_config(tmp_path)
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "identity.secret"
    key.write_text("ab" * 32 + "\n")  # `openssl rand -hex 32 > file`: the text is the key
    key.chmod(0o640)
    secret = load_config(path).widget.identity_secret
    assert secret == b"ab" * 32
    assert "ab" not in repr(secret) and "ab" not in repr(load_config(path).widget)


@pytest.mark.parametrize(
    ("content", "mode", "reason"),
    [
        (None, 0o600, "cannot read"),
        ("short", 0o600, "holds 5 bytes; a secret is 32 to 4096 bytes (make one: openssl rand"),
        ("ab" * 32, 0o644, "is readable by every user: chmod o-r (or 600) it"),
    ],
)
def test_bad_identity_secrets_refuse_to_start(
    tmp_path: Path, content: str | None, mode: int, reason: str
) -> None:
    path = identity_config(tmp_path)
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "identity.secret"
    if content is not None:
        key.write_text(content)
        key.chmod(mode)
    e = error(path)
    assert e.line == 6 and e.where == "[widget]"
    assert str(e).startswith(f"{path}:6: [widget]: identity_secret_file ")
    assert str(key) in str(e) and reason in str(e)


def delivery_config(tmp_path: Path, delivery: str) -> Path:
    key = tmp_path / "hook.key"
    key.write_text("cd" * 32)
    key.chmod(0o600)
    return write(
        tmp_path,
        CHANNELS
        + 'inbound_secret_file = "hook.key"\n[channel.delivery]\nsecret_file = "hook.key"\n'
        + textwrap.dedent(delivery),
    )


def test_a_channel_delivery_is_read_with_its_secrets_and_backoff(tmp_path: Path) -> None:
    path = delivery_config(
        tmp_path, 'url = "https://sms.example.com/hook"\nbackoff_base = 2\nbackoff_cap = 60\n'
    )
    config = load_config(path)
    delivery = config.deliveries["messaging"]
    assert (delivery.transport, delivery.url) == ("webhook", "https://sms.example.com/hook")
    assert (delivery.backoff_base, delivery.backoff_cap, delivery.timeout) == (2, 60, 10)
    assert delivery.secret == b"cd" * 32 and "cd" not in repr(delivery)
    assert config.inbound_secrets == {"messaging": b"cd" * 32}
    assert "chat" not in config.deliveries  # a channel without [channel.delivery] sends none


@pytest.mark.parametrize(
    ("delivery", "line", "reason"),
    [
        ('url = "ftp://x/y"\n', 11, 'url must be an http:// or https:// URL, got "ftp://x/y"'),
        ('url = "http://x/y"\ntransport = "pigeon"\n', 12, "transport must be one of"),
        ('url = "http://x/y"\nbackoff_base = 9\nbackoff_cap = 3\n', 13, "at least backoff_base"),
    ],
)
def test_a_bad_channel_delivery_is_refused_with_its_line(
    tmp_path: Path, delivery: str, line: int, reason: str
) -> None:
    path = delivery_config(tmp_path, delivery)
    e = error(path)
    assert e.line == line, str(e)
    assert reason in str(e)


# ---------------------------------------------------------------------------- cluster keys


def test_a_cluster_names_its_database_and_its_bus(tmp_path: Path) -> None:
    url = "postgresql://inbox@db.example:5432/inbox"
    bus = "nats://n1.example:4222, nats://n2.example:4222"
    path = write(tmp_path, f'[host]\nstore = "{url}"\nbus = "{bus}"\n{CHANNELS}')
    config = load_config(path)
    assert (config.host.store, config.host.bus) == (url, bus)


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        ('bus = "redis://r:6379"', 'host.bus: "redis://r:6379" is not a nats:// URL'),
        ('bus = "nats://n:4222,http://x"', "is not a nats:// URL (or several, comma-separated)"),
        ('bus = "nats://n:4222"', "host.bus needs host.store: the hosts on a bus share one"),
    ],
)
def test_a_bus_needs_nats_urls_and_a_shared_store(tmp_path: Path, keys: str, reason: str) -> None:
    path = write(tmp_path, f"[host]\n{keys}\n{CHANNELS}")
    assert reason in str(error(path))


def test_reopen_window_defaults_to_a_week_and_is_checked(tmp_path: Path) -> None:
    chat = load_config(with_channels(tmp_path, "")).channels[0]
    assert chat.reopen_window == 7 * 24 * 3600
    path = write(tmp_path, CHANNELS.replace('mode = "async"', 'mode = "async"\nreopen_window = 0'))
    assert load_config(path).channels[1].reopen_window == 0
    path = write(tmp_path, CHANNELS.replace('mode = "sync"', 'mode = "sync"\nreopen_window = -1'))
    assert str(error(path)) == f'{path}:4: channel "chat": reopen_window must be >= 0, got -1'


def test_record_states_default_per_kind_are_replaced_by_the_config_and_checked(
    tmp_path: Path,
) -> None:
    default = load_config(with_channels(tmp_path, "")).records
    assert default.states_of(RecordKind.INCIDENT)[0] == "new"
    assert "on_hold" in default.states_of(RecordKind.INCIDENT)
    path = with_channels(tmp_path, '[records.case]\nstates = ["open", "done"]\n')
    config = load_config(path).records
    assert config.states_of(RecordKind.CASE) == ("open", "done")
    assert config.states_of(RecordKind.INCIDENT) == default.states_of(RecordKind.INCIDENT)
    for text, message in (
        ('[records.case]\nstates = ["open", "open"]\n', 'case.states[1] repeats "open"'),
        ('[records.case]\nstates = ["in progress"]\n', "case.states[0] must be a name of letters"),
        ('[records.problem]\nstates = ["new"]\n', 'unknown key "problem"'),
    ):
        assert message in str(error(with_channels(tmp_path, text))), text
