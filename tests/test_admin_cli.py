"""`inbox-tui admin` as an operator runs it: the installed command in a subprocess, on a real
data directory that the test then opens itself to check what the command left behind."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from msgspec.structs import replace

from core.auth import Authenticator, AuthError, Principal
from core.demo import demo_config_path
from core.host.widget import load_key
from core.model import (
    AgentDay,
    AgentStatus,
    AuditEntry,
    ChannelMode,
    Delivery,
    Invitation,
    ItemState,
    Offer,
    OfferState,
    Participant,
    PresenceState,
    Queue,
    QueueMinute,
    RecordKind,
    Role,
    SenderKind,
    ServiceChannel,
    Template,
    WorkItem,
)
from store import SQLiteStore, Store, open_store
from store.base import WIDGET_KEY, WIDGET_KEY_BYTES, IdempotencyKey, RecordQuery
from store.postgres import PostgresStore
from tests.store_helpers import attachment_contents, offers_of, rows

PASSWORD = "tr0ub4dor&3"


def inbox_tui() -> str:
    found = shutil.which("inbox-tui", path=str(Path(sys.executable).parent))
    assert found, "inbox-tui is not installed in this environment"
    return found


def isolated_env(root: Path) -> dict[str, str]:
    # Nothing may reach the real home directory: every XDG base points into `root`.
    home = root / "home"
    home.mkdir()
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
    }


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def admin(
    env: dict[str, str], data: Path | None, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    where = ["--data", str(data)] if data is not None else []
    return subprocess.run(
        [inbox_tui(), "admin", *where, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stderr
    return run.stdout


def one_line_error(run: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert run.returncode == code, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inbox-tui: "), run.stderr
    return lines[0]


def add_agent(env: dict[str, str], data: Path, name: str, *args: str) -> str:
    return ok(admin(env, data, "agent", "add", name, *args, "--password-stdin", stdin=PASSWORD))


def table(text: str) -> list[dict[str, str]]:
    """Rows of a printed table keyed by header; cells are split on runs of 2+ spaces."""
    lines = text.strip().splitlines()
    headers = lines[0].split()
    return [dict(zip(headers, re.split(r" {2,}", line), strict=True)) for line in lines[1:]]


# -- agents -----------------------------------------------------------------------------------


async def test_agent_add_then_list_then_login(env: dict[str, str], data: Path) -> None:
    out = add_agent(
        env,
        data,
        "bob",
        "--display-name",
        "Bob Okafor",
        "--role",
        "supervisor",
        "--capacity",
        "chat=3,messaging=5",
        "--skills",
        "french=2",
        "--groups",
        "tier1,tier2",
    )
    assert out == f"added supervisor bob to {data}\n"
    add_agent(env, data, "carol")
    rows = table(ok(admin(env, data, "agent", "list")))
    assert rows == [
        {
            "ID": "bob",
            "NAME": "Bob Okafor",
            "ROLE": "supervisor",
            "GROUPS": "tier1,tier2",
            "CAPACITY": "chat=3,messaging=5",
            "DISABLED": "no",
            "PASSWORD": "yes",
        },
        {
            "ID": "carol",
            "NAME": "-",
            "ROLE": "agent",
            "GROUPS": "-",
            "CAPACITY": "-",
            "DISABLED": "no",
            "PASSWORD": "yes",
        },
    ]
    async with SQLiteStore(data / "inbox.db", data) as store:
        bob = await store.get_agent("bob")
        assert bob is not None and bob.skills == {"french": 2}
        stored = await store.get_agent_password_hash("bob")
        assert stored is not None and stored.startswith("$argon2id$")
        session = await Authenticator(store, session_ttl=60).login("bob", PASSWORD, None)
        assert session.role == Role.SUPERVISOR


def test_agent_add_refuses_a_second_agent_of_the_same_name(env: dict[str, str], data: Path) -> None:
    add_agent(env, data, "bob")
    run = admin(env, data, "agent", "add", "bob", "--password-stdin", stdin=PASSWORD)
    assert "agent bob already exists" in one_line_error(run)


async def test_passwd_changes_the_password_and_ends_sessions(
    env: dict[str, str], data: Path
) -> None:
    add_agent(env, data, "bob")
    async with SQLiteStore(data / "inbox.db", data) as store:
        old = await Authenticator(store, session_ttl=60).login("bob", PASSWORD, None)
    run = admin(env, data, "agent", "passwd", "bob", "--password-stdin", stdin="a new secret\n")
    assert ok(run) == "changed the password of bob; ended 1 session\n"
    async with SQLiteStore(data / "inbox.db", data) as store:
        auth = Authenticator(store, session_ttl=60)
        with pytest.raises(AuthError, match="bad_token"):
            await auth.authenticate(old.token, None)
        with pytest.raises(AuthError, match="bad_credentials"):
            await auth.login("bob", PASSWORD, None)
        await auth.login("bob", "a new secret", None)


async def test_disable_and_enable(env: dict[str, str], data: Path) -> None:
    add_agent(env, data, "bob")
    assert ok(admin(env, data, "agent", "disable", "bob")) == "disabled bob; ended 0 sessions\n"
    assert ok(admin(env, data, "agent", "disable", "bob")) == "bob is already disabled\n"
    assert table(ok(admin(env, data, "agent", "list")))[0]["DISABLED"] == "yes"
    async with SQLiteStore(data / "inbox.db", data) as store:
        with pytest.raises(AuthError, match="disabled"):
            await Authenticator(store, session_ttl=60).login("bob", PASSWORD, None)
    assert ok(admin(env, data, "agent", "enable", "bob")) == "enabled bob\n"
    assert table(ok(admin(env, data, "agent", "list")))[0]["DISABLED"] == "no"


def test_the_password_prompt_asks_twice_without_echo(env: dict[str, str], data: Path) -> None:
    add_agent(env, data, "bob")
    code, output = with_terminal(env, data, ["agent", "passwd", "bob"], ["one thing", "another"])
    assert code == 2 and "the passwords do not match" in output
    code, output = with_terminal(
        env, data, ["agent", "passwd", "bob"], ["same words", "same words"]
    )
    assert code == 0, output
    assert "New password for bob:" in output and "Repeat it:" in output
    assert "same words" not in output  # not echoed
    assert "changed the password of bob" in output


def with_terminal(
    env: dict[str, str], data: Path, args: list[str], answers: list[str]
) -> tuple[int, str]:
    """Run the command on a pseudo-terminal, answering each password prompt in turn."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the command, with the pty as its controlling terminal
        exe = inbox_tui()
        os.execve(exe, [exe, "admin", "--data", str(data), *args], env)
    output = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no progress; output so far: {output!r}")
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the command exited and the terminal closed
                break
            if not chunk:
                break
            output += chunk
            prompts = output.count(b"password for") + output.count(b"Repeat it")
            while pending and len(answers) - len(pending) < prompts:
                os.write(fd, pending.pop(0).encode() + b"\n")
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


# -- API tokens -------------------------------------------------------------------------------


async def test_token_create_prints_a_token_that_authenticates(
    env: dict[str, str], data: Path
) -> None:
    add_agent(env, data, "bob", "--role", "supervisor")
    run = admin(env, data, "token", "create", "crm-sync", "--agent", "bob", "--ttl-days", "30")
    token = ok(run).strip()
    assert token.startswith("api_") and "\n" not in token
    assert "only time the token is shown" in run.stderr
    [listed] = table(ok(admin(env, data, "token", "list")))
    assert listed["NAME"] == "crm-sync" and listed["AGENT"] == "bob"
    assert listed["ROLE"] == "supervisor" and listed["STATUS"] == "active"
    token_id = listed["ID"]
    assert token not in ok(admin(env, data, "token", "list"))
    async with SQLiteStore(data / "inbox.db", data) as store:
        principal = await Authenticator(store, session_ttl=60).authenticate(token, None)
    assert principal == Principal("bob", Role.SUPERVISOR, "api", token_id)
    assert ok(admin(env, data, "token", "revoke", token_id)) == f"revoked {token_id}\n"
    assert ok(admin(env, data, "token", "revoke", token_id)) == f"{token_id} was already revoked\n"
    assert table(ok(admin(env, data, "token", "list")))[0]["STATUS"].startswith("revoked ")
    async with SQLiteStore(data / "inbox.db", data) as store:
        with pytest.raises(AuthError, match="bad_token"):
            await Authenticator(store, session_ttl=60).authenticate(token, None)


def test_a_token_without_an_agent(env: dict[str, str], data: Path) -> None:
    token = ok(admin(env, data, "token", "create", "metrics", "--role", "admin")).strip()
    assert token.startswith("api_")
    [listed] = table(ok(admin(env, data, "token", "list")))
    assert listed["AGENT"] == "-" and listed["ROLE"] == "admin" and listed["EXPIRES"] == "never"


# -- queues -----------------------------------------------------------------------------------

DEMO_QUEUES = [
    ("vip", "chat", "5", "least_recent", 'tier in ("gold", "platinum")', "tier2"),
    ("french", "chat", "10", "most_capacity", 'language == "fr"', "french"),
    ("general", "chat", "100", "most_capacity", "-", "tier1,tier2"),
    ("messaging", "messaging", "100", "most_capacity", "-", "tier1,tier2"),
    ("cases", "case", "100", "round_robin", "-", "tier1,tier2"),
    ("incidents", "incident", "100", "least_recent", "-", "tier2"),
]


def test_queue_list_shows_the_demo_queues_in_routing_order(env: dict[str, str]) -> None:
    out = ok(admin(env, None, "queue", "list", "--config", str(demo_config_path())))
    rows = [tuple(r.values()) for r in table(out)]
    assert rows == DEMO_QUEUES


def test_queue_list_without_a_config_says_how_to_make_one(env: dict[str, str]) -> None:
    message = one_line_error(admin(env, None, "queue", "list"))
    assert "no config at" in message and "inbox-tui admin init" in message


def test_queue_list_reports_a_broken_config_at_its_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "inbox.toml"
    bad.write_text('[[channel]]\nname = "chat"\nmode = "sink"\n')
    message = one_line_error(admin(env, None, "queue", "list", "--config", str(bad)))
    assert f"{bad}:3" in message


# -- refusals ---------------------------------------------------------------------------------


async def test_a_host_that_left_no_admin_file_is_named_and_left_alone(
    env: dict[str, str], data: Path
) -> None:
    add_agent(env, data, "bob")
    # This test process plays a host that holds the data but says nowhere how to reach it
    # (a host of an older version): the command must not guess, nor touch the data.
    store = await open_store(data)
    try:
        for args in (("agent", "list"), ("token", "create", "x")):
            message = one_line_error(admin(env, data, *args), code=3)
            assert f"(pid {os.getpid()}) owns {data}" in message
            assert "admin.json" in message and "stop that host" in message
        run = admin(env, data, "agent", "add", "eve", "--password-stdin", stdin=PASSWORD)
        one_line_error(run, code=3)
    finally:
        await store.close()
    assert [r["ID"] for r in table(ok(admin(env, data, "agent", "list")))] == ["bob"]


def test_agent_list_of_data_without_agents_is_an_empty_table(
    env: dict[str, str], data: Path
) -> None:
    ok(admin(env, data, "token", "create", "first"))  # data, but no agent yet
    out = ok(admin(env, data, "agent", "list"))
    assert out.split() == ["ID", "NAME", "ROLE", "GROUPS", "CAPACITY", "DISABLED", "PASSWORD"]


@pytest.fixture(scope="module")
def with_bob(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    """One data directory with agent bob, shared by tests that must leave it unchanged."""
    root = tmp_path_factory.mktemp("with-bob")
    env, data = isolated_env(root), root / "data"
    add_agent(env, data, "bob")
    return env, data


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (("agent", "add", "x", "--capacity", "chat"), "", "expected name=number pairs"),
        (("agent", "add", "x", "--capacity", "chat=5000"), "", "must be from 0 to 1000"),
        (("agent", "add", "x", "--skills", "french=0"), "", "must be from 1 to 10"),
        (("agent", "add", "x y"), "", "not a valid name"),
        (("agent", "add", "x", "--groups", "a,b c"), "", "not a valid name"),
        (("agent", "add", "x"), "short\n", "too short"),
        (("agent", "add", "x"), "", "stdin is empty"),
        (("agent", "passwd", "ghost"), "long enough\n", "no agent 'ghost'"),
        (("agent", "disable", "ghost"), None, "no agent 'ghost'"),
        (("token", "create", "t", "--agent", "ghost"), None, "no agent 'ghost'"),
        (("token", "create", "t", "--agent", "bob", "--role", "admin"), None, "above agent"),
        (("token", "create", "t", "--ttl-days", "0"), None, "--ttl-days must be"),
        (("token", "revoke", "tok_nope"), None, "no API token 'tok_nope'"),
    ],
)
def test_mistakes_get_one_line_and_exit_code_2(
    with_bob: tuple[dict[str, str], Path], args: tuple[str, ...], stdin: str | None, says: str
) -> None:
    env, data = with_bob
    if "--password-stdin" not in args and stdin is not None:
        args = (*args, "--password-stdin")
    assert says in one_line_error(admin(env, data, *args, stdin=stdin))
    assert [r["ID"] for r in table(ok(admin(env, data, "agent", "list")))] == ["bob"]


def test_reading_commands_want_existing_data(env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    for args in (("agent", "list"), ("token", "list"), ("agent", "disable", "bob")):
        assert "no inbox-tui data in" in one_line_error(admin(env, empty, *args))
    # A command that may create the data is still refused before touching it.
    run = admin(env, empty, "agent", "add", "x", "--capacity", "chat", "--password-stdin")
    assert "expected name=number pairs" in one_line_error(run)
    assert not empty.exists()


def test_the_default_data_directory_follows_xdg(env: dict[str, str]) -> None:
    ok(admin(env, None, "agent", "add", "bob", "--password-stdin", stdin=PASSWORD))
    assert (Path(env["XDG_DATA_HOME"]) / "inbox-tui" / "inbox.db").exists()
    assert table(ok(admin(env, None, "agent", "list")))[0]["ID"] == "bob"
    # --data may also follow the command words.
    data = Path(env["XDG_DATA_HOME"]) / "inbox-tui"
    run = subprocess.run(
        [inbox_tui(), "admin", "agent", "list", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert table(ok(run))[0]["ID"] == "bob"


def test_without_a_command_the_help_is_shown_as_before(env: dict[str, str]) -> None:
    run = subprocess.run(
        [inbox_tui()], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert run.returncode == 2 and "--demo" in run.stdout and "admin" in run.stdout
    run = subprocess.run(
        [inbox_tui(), "admin"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert run.returncode == 2 and "required: TOPIC" in run.stderr


# -- copy-to ----------------------------------------------------------------------------------

COPIED_TABLES = (
    "counters",
    "channels",
    "presence_states",
    "queues",
    "agents",
    "templates",
    "work_items",
    "offers",
    "agent_statuses",
    "audit",
    "affinity",
    "interactions",
    "participants",
    "messages",
    "attachments",
    "service_records",
    "record_notes",
    "record_links",
    "sessions",
    "api_tokens",
    "idempotency_keys",
    "invitations",
    "outbox",
    "queue_minutes",
    "agent_days",
)


async def populate(env: dict[str, str], data: Path) -> tuple[str, str]:
    """A host's data with a row in every table; returns (a login token, an API token)."""
    add_agent(env, data, "bob", "--role", "supervisor", "--capacity", "chat=3")
    add_agent(env, data, "carol")
    api_token = ok(admin(env, data, "token", "create", "crm", "--agent", "bob")).strip()
    ok(admin(env, data, "token", "create", "cases", "--channels", "case,incident"))
    async with SQLiteStore(data / "inbox.db", data) as store:
        login = (await Authenticator(store, session_ttl=3600).login("carol", PASSWORD, None)).token
        await store.upsert_channels([ServiceChannel(name="chat", mode=ChannelMode.SYNC)])
        await store.upsert_presence_states([PresenceState(name="Available", channels=("chat",))])
        await store.upsert_queues([Queue(name="general", channel="chat")])
        await store.upsert_templates([Template(shortcut="hi", text="Hello!")])
        numbers = []
        for i in range(30):
            key = IdempotencyKey(scope="tok_x", key=f"k{i}", fingerprint="f", created_at=1e9)
            record = await store.create_interaction(
                item=f"w{i}",
                channel="chat",
                customer=f"cust-{i}",
                opened_at=float(i),
                participants=(Participant(agent="bob"),),
                idempotency=key if i % 3 == 0 else None,
            )
            numbers.append(record.number)
            for n in range(i % 5 + 1):
                await store.append_message(
                    record.number, SenderKind.CUSTOMER, f"cust-{i}", f"line {n}", f"m{n}", 2.0
                )
        await store.apply_routing(
            deliveries=[
                Delivery(id=id, channel="chat", conversation=numbers[0], event=event, created_at=3)
                for id, event in (("d1", "assigned"), ("d2", "closed"))
            ]
        )
        await store.put_attachment(numbers[0], "a.pdf", "application/pdf", b"%PDF", "bob", 3.0)
        await store.put_attachment(numbers[1], "a.pdf", "application/pdf", b"%PDF", "bob", 3.0)
        await store.put_attachment(numbers[1], "b.bin", "x/y", bytes(range(256)) * 9, "bob", 4.0)
        case = await store.create_record(
            RecordKind.CASE, "Refund", source_interaction=numbers[0], created_by="bob"
        )
        await store.save_record(replace(case, state="in_progress", assignee="carol"))
        await store.add_record_note(case.number, "carol", "Refund sent", 6.0)
        await store.link_record(case.number, numbers[1], 7.0)
        await store.create_record(RecordKind.INCIDENT, "Outage")
        await store.save_invitation(
            Invitation(interaction=numbers[1], agent="carol", inviter="bob", created_at=4.0)
        )
        items = [
            WorkItem(
                id=f"w{i}",
                channel="chat",
                customer=f"cust-{i}",
                created_at=float(i),
                interaction=numbers[i],
                state=ItemState.QUEUED if i % 2 else ItemState.CLOSED,
            )
            for i in range(30)
        ]
        offers = [
            Offer(id="o1", item="w1", agent="bob", created_at=5.0, deadline=6.0),
            Offer(
                id="o0",
                item="w3",
                agent="bob",
                created_at=1.0,
                deadline=2.0,
                state=OfferState.EXPIRED,
            ),
        ]
        await store.apply_routing(
            items=items,
            offers=offers,
            statuses=[AgentStatus(agent="bob", presence="Available")],
            audit=[AuditEntry(at=1.0, kind="offer_made", item="w1", offer="o1")],
            affinity={"cust-1": ("bob", 5.0)},
        )
        await store.save_day(
            [QueueMinute(queue="general", minute=1_000_020, arrivals=2)],
            [AgentDay(agent="bob", day=1_000_020, declined=1)],
            keep_since=0,
        )
    return login, api_token


async def counts(store: Store) -> dict[str, int]:
    return {t: (await rows(store, f"SELECT count(*) FROM {t}"))[0][0] for t in COPIED_TABLES}


async def test_copy_to_moves_everything_into_postgresql_and_numbering_continues(
    env: dict[str, str], data: Path, postgres_url: str
) -> None:
    login, api_token = await populate(env, data)
    key = load_key(data)  # as the SQLite host made it for its widget
    run = admin(env, data, "copy-to", postgres_url)
    out = ok(run)
    assert "the widget's ticket key (widget.key): copied" in out
    assert f"copying {data / 'inbox.db'} to {postgres_url}" in out
    assert "  messages: 90\n" in out and "  attachment_blobs: 2 (the attachment files)" in out
    assert "the next numbers are CS0001002, IMS0001031, INC0001002" in out

    async with (
        SQLiteStore(data / "inbox.db", data) as source,
        PostgresStore(postgres_url) as target,
    ):
        assert await counts(target) == await counts(source)
        assert await attachment_contents(target) == await attachment_contents(source)
        for number in ("IMS0001001", "IMS0001002", "IMS0001030"):
            assert await target.get_interaction(number) == await source.get_interaction(number)
            assert await target.list_messages(number) == await source.list_messages(number)
            assert await target.list_attachments(number) == await source.list_attachments(number)
        assert await target.list_interactions(agent="bob", limit=100) == (
            await source.list_interactions(agent="bob", limit=100)
        )
        assert await target.load_open_items() == await source.load_open_items()
        assert await target.load_pending_offers() == await source.load_pending_offers()
        assert await offers_of(target, "w3") == await offers_of(source, "w3")
        assert await target.load_agent_statuses() == await source.load_agent_statuses()
        assert await target.load_affinity() == await source.load_affinity()
        assert await target.load_invitations() == await source.load_invitations()
        assert await target.due_deliveries() == await source.due_deliveries()
        assert await target.list_api_tokens() == await source.list_api_tokens()
        assert await target.list_agents() == await source.list_agents()
        for number in ("CS0001001", "INC0001001"):
            assert await target.get_record(number) == await source.get_record(number)
            assert await target.list_record_notes(number) == await source.list_record_notes(number)
            assert await target.record_links(number) == await source.record_links(number)
        mine = RecordQuery(reader="carol")
        assert [r.number for r in await target.list_records(mine)] == ["CS0001001"]
        assert await target.get_idempotency_key("tok_x", "k3", 1e9) == (
            await source.get_idempotency_key("tok_x", "k3", 1e9)
        )
        # Logins carry over: the session, the API token, the password.
        auth = Authenticator(target, session_ttl=3600)
        assert (await auth.authenticate(login, None)).agent == "carol"
        assert (await auth.authenticate(api_token, None)).agent == "bob"
        assert (await auth.login("bob", PASSWORD, None)).role == Role.SUPERVISOR
        # Numbering and seqs continue where SQLite stopped.
        made = await target.create_interaction(
            item="new", channel="chat", customer="c", opened_at=99.0
        )
        assert made.number == "IMS0001031"
        case = await target.create_record(RecordKind.CASE, "Another")
        assert case.number == "CS0001002"
        message, _ = await target.append_message(
            "IMS0001005", SenderKind.AGENT, "bob", "hello", "a1", 5.0
        )
        assert message.seq == 6
        # The outbox's order continues too: a new delivery goes after the copied ones.
        await target.apply_routing(
            deliveries=[
                Delivery(
                    id="d3", channel="chat", conversation="IMS0001005", event="closed", created_at=9
                )
            ]
        )
        assert [d.id for d in await target.due_deliveries()] == ["d1", "d3"]
        # The widget's ticket key goes too: chats open at the move resume on the cluster.
        assert await target.shared_secret(WIDGET_KEY, WIDGET_KEY_BYTES) == key

    # The data directory is untouched, and the target is no longer empty.
    assert ok(admin(env, data, "agent", "list")).count("\n") == 3
    message = one_line_error(admin(env, data, "copy-to", postgres_url))
    assert "already holds inbox-tui data" in message and "nothing was changed" in message


async def test_copy_to_refuses_a_running_host_a_foreign_database_and_other_urls(
    env: dict[str, str], data: Path, postgres_url: str
) -> None:
    add_agent(env, data, "bob")
    assert "is not" not in ok(admin(env, data, "agent", "list"))
    store = await open_store(data)  # this test process plays the host
    try:
        message = one_line_error(admin(env, data, "copy-to", postgres_url))
        assert f"(pid {os.getpid()}) owns {data}: stop it, then copy" in message
    finally:
        await store.close()
    message = one_line_error(admin(env, data, "copy-to", "mysql://h/db"))
    assert "expected a postgresql:// URL" in message
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("CREATE TABLE crm_contacts (id integer)")
    finally:
        await conn.close()
    message = one_line_error(admin(env, data, "copy-to", postgres_url))
    assert "not inbox-tui's (crm_contacts)" in message
