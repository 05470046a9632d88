"""`inbox-tui admin`: agents, passwords and API tokens in a host's data directory.

    inbox-tui admin [--data DIR] agent add NAME [--display-name S] [--role ROLE]
                                     [--capacity chat=3,messaging=5] [--skills french=2]
                                     [--groups tier1,tier2] [--password-stdin]
    inbox-tui admin [--data DIR] agent list | disable NAME | enable NAME
    inbox-tui admin [--data DIR] agent passwd NAME [--password-stdin]
    inbox-tui admin queue list [--config FILE]
    inbox-tui admin [--data DIR] init [--config FILE]
    inbox-tui admin [--data DIR] token create NAME [--agent ID] [--role ROLE] [--ttl-days N]
                                                   [--channels case,incident]
    inbox-tui admin [--data DIR] token list | revoke ID
    inbox-tui admin [--data DIR] audit ITEM
    inbox-tui admin [--data DIR] copy-to postgresql://USER@HOST:PORT/DATABASE

On a stopped host it opens the data directory itself; while a host owns it, it asks that host
through its REST API (core/host/admin_api.py, with the secret the host keeps in
`<data_dir>/admin.json`), and the change takes effect at once, without a restart.
`inbox-tui admin init` writes a commented config and makes the first admin login.
`inbox-tui admin audit ITEM` shows why routing did what it did with a work item (its id or
its interaction's number): every decision with its reason, oldest first.
`inbox-tui admin copy-to URL` copies a stopped host's data into an empty PostgreSQL database
(store/copy_to_postgres.py); it refuses while a host owns the data directory.
Exit codes: 0 done, 2 a mistake in the request (one line on stderr says which), 3 the host
that owns the data directory cannot be reached, 130 interrupted. A user mistake never prints a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import re
import secrets
import shutil
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, get_args
from urllib.parse import quote

import aiohttp
import msgspec

from core.auth import Authenticator, check_password_rules
from core.config import (
    MAX_CAPACITY,
    MAX_SKILL_LEVEL,
    HostSettings,
    default_config_path,
    example_config_path,
    load_config,
)
from core.host.admin_api import (
    ADMIN_FILE,
    ADMIN_PREFIX,
    AddAgent,
    AgentList,
    AgentSwitched,
    CreateToken,
    PasswordSet,
    SetPassword,
    TokenCreated,
    TokenList,
    TokenRevoked,
)
from core.host.api import ErrorBody
from core.model import Agent, Name, Role
from core.paths import default_data_dir, load_secret
from core.service.admin import AdminError as RefusedError
from core.service.admin import Administration, AgentInfo, TokenInfo
from core.service.audit import ItemAudit
from store import DB_FILENAME, Store, StoreError, StoreLocked, is_postgres_url, open_store

T = TypeVar("T")

EXIT_OK = 0
EXIT_MISTAKE = 2
EXIT_LOCKED = 3
EXIT_INTERRUPTED = 130

# fullmatch, not match: the pattern's "$" would let a trailing newline through.
_NAME = re.compile(get_args(Name)[1].pattern)
_DIGITS = re.compile(r"[0-9]+")  # str.isdigit also takes "²", which int() refuses
_ROLES = [r.value for r in Role]
_DAY = 86_400.0
MAX_TTL_DAYS = 3660  # ten years, the longest duration the config accepts too


class AdminError(Exception):
    """A mistake in the request: the message is the whole story, shown as one line."""


class HostUnreachable(Exception):
    """A host owns the data directory but cannot be asked (its admin.json is missing, or it
    does not answer)."""


class RunningHost:
    """The operations of core.service.admin.Administration, asked of the host that owns the
    data directory; refusals come back as the same RefusedError."""

    TIMEOUT = 60.0  # a password hash and a commit: seconds at most, unless the host is stuck

    def __init__(self, url: str, secret: str, data_dir: Path) -> None:
        self.url = url.rstrip("/") + ADMIN_PREFIX
        self.headers = {"Authorization": f"Bearer {secret}"}
        self.where = f"the running host (data in {data_dir})"
        self.http: aiohttp.ClientSession | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def of(cls, data_dir: Path, pid: int | None) -> AsyncIterator[RunningHost]:
        holder = f" (pid {pid})" if pid is not None else ""
        try:
            text = load_secret(data_dir / ADMIN_FILE)
            found = json.loads(text) if text is not None else None
        except (OSError, ValueError) as e:
            raise HostUnreachable(f"cannot read {data_dir / ADMIN_FILE}: {e}") from None
        if not isinstance(found, dict) or not {"url", "token"} <= found.keys():
            raise HostUnreachable(
                f"a routing host{holder} owns {data_dir}, but {data_dir / ADMIN_FILE} "
                "(where it says how to reach it) is missing: stop that host, then run this again"
            )
        host = cls(str(found["url"]), str(found["token"]), data_dir)
        timeout = aiohttp.ClientTimeout(total=cls.TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout, headers=host.headers) as http:
            host.http = http
            yield host

    async def _call(self, method: str, path: str, answer: type[T], body: object = None) -> T:
        assert self.http is not None
        data = None if body is None else msgspec.json.encode(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            async with self.http.request(
                method, self.url + path, data=data, headers=headers
            ) as reply:
                raw = await reply.read()
                status = reply.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise HostUnreachable(
                f"the routing host owns the data directory but {self.url} does not answer: "
                f"{e or type(e).__name__}"
            ) from None
        if status >= 400:
            try:
                error = msgspec.json.decode(raw, type=ErrorBody).error
            except msgspec.DecodeError:
                raise HostUnreachable(f"the host answered {status} to {method} {path}") from None
            code = {404: "not_found", 409: "conflict"}.get(status, "invalid")
            raise RefusedError(code, error.message)  # type: ignore[arg-type]
        return msgspec.json.decode(raw, type=answer)

    async def check_new_agent(self, agent: Agent) -> None:
        await self._call("POST", "/agents", dict, AddAgent(agent=agent, dry_run=True))

    async def add_agent(self, agent: Agent, password: str) -> None:
        await self._call("POST", "/agents", AgentInfo, AddAgent(agent=agent, password=password))

    async def agents(self) -> list[AgentInfo]:
        return (await self._call("GET", "/agents", AgentList)).agents

    async def check_agent(self, agent_id: str) -> None:
        await self._call("GET", f"/agents/{quote(agent_id, safe='')}", AgentInfo)

    async def set_disabled(self, agent_id: str, disabled: bool) -> tuple[bool, int]:
        action = "disable" if disabled else "enable"
        done = await self._call(
            "POST", f"/agents/{quote(agent_id, safe='')}/{action}", AgentSwitched
        )
        return done.changed, done.ended_sessions

    async def set_password(self, agent_id: str, password: str) -> int:
        path = f"/agents/{quote(agent_id, safe='')}/password"
        return (
            await self._call("PUT", path, PasswordSet, SetPassword(password=password))
        ).ended_sessions

    async def create_token(
        self,
        name: str,
        agent: str | None,
        role: Role | None,
        ttl: float | None,
        channels: list[str] | None = None,
    ) -> tuple[str, TokenInfo]:
        body = CreateToken(name=name, agent=agent, role=role, ttl=ttl, channels=channels)
        created = await self._call("POST", "/tokens", TokenCreated, body)
        return created.token, created.info

    async def tokens(self) -> list[TokenInfo]:
        return (await self._call("GET", "/tokens", TokenList)).tokens

    async def revoke_token(self, token_id: str) -> bool:
        path = f"/tokens/{quote(token_id, safe='')}"
        return (await self._call("DELETE", path, TokenRevoked)).revoked

    async def audit(self, ref: str) -> ItemAudit:
        return await self._call("GET", f"/items/{quote(ref, safe='')}/audit", ItemAudit)


class _Local(Administration):
    """The store opened here: the host is stopped."""

    def __init__(self, store: Store, auth: Authenticator, data_dir: Path) -> None:
        super().__init__(store, auth)
        self.where = str(data_dir)


@dataclass(frozen=True)
class _Context:
    args: argparse.Namespace
    data_dir: Path
    admin: _Local | RunningHost
    password: str = ""  # for commands that ask for one

    @property
    def where(self) -> str:
        return self.admin.where


Handler = Callable[[_Context], Awaitable[None]]


@dataclass(frozen=True)
class _Command:
    """A command run with the store open."""

    run: Handler
    # Whether it may create the data directory; the others need existing data.
    creates: bool = False
    # Checks of the arguments alone, before the data directory is touched.
    validate: Callable[[argparse.Namespace], object] | None = None
    # For commands that set a password: what must hold before asking for it, so nobody types
    # a password for a request that fails anyway. `run` checks it again: the prompt happens
    # with the store closed (never inside the event loop, where Ctrl-C could not stop it).
    check: Handler | None = None


# -- parsing ----------------------------------------------------------------------------------


def add_admin_parser(commands: Any) -> None:
    """Add `admin` and its commands to the `inbox-tui` sub-command set `commands`."""
    # --data is accepted before or after the command words; SUPPRESS keeps a command's
    # missing --data from overwriting one given earlier.
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument(
        "--data",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="the host's data directory (default: $XDG_DATA_HOME/inbox-tui, "
        "else ~/.local/share/inbox-tui)",
    )
    admin = commands.add_parser(
        "admin",
        parents=[data],
        help="set up a host; manage agents, passwords and API tokens",
        description="Set up a host; manage agents, passwords and API tokens in a host's data "
        "directory, or through the host that runs on it.",
    )
    topics = admin.add_subparsers(dest="admin_topic", metavar="TOPIC", required=True)

    init = topics.add_parser(
        "init",
        parents=[data],
        help="write a commented config and make the first admin login (a new host)",
        description="Write a commented config (if there is none) and create the login "
        "`admin` with a random password, shown once (if no admin can log in yet).",
    )
    init.add_argument(
        "--config",
        dest="init_config",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write the config (default: $XDG_CONFIG_HOME/inbox-tui/inbox.toml)",
    )
    init.set_defaults(admin_command=_Command(_init, creates=True))

    agent = topics.add_parser("agent", help="add, list, disable agents; set passwords")
    actions = agent.add_subparsers(dest="admin_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", parents=[data], help="add an agent with a password")
    add.add_argument("name", metavar="NAME", help="the agent's login id, e.g. alice")
    add.add_argument("--display-name", default="", metavar="S", help="shown to colleagues")
    add.add_argument("--role", choices=_ROLES, default=Role.AGENT.value)
    add.add_argument(
        "--capacity",
        default="",
        metavar="C=N,...",
        help="items at once per channel, e.g. chat=3,messaging=5 (a channel left out: none)",
    )
    add.add_argument("--skills", default="", metavar="S=L,...", help="e.g. french=2 (1-10)")
    add.add_argument("--groups", default="", metavar="G,...", help="e.g. tier1,tier2")
    _password_stdin(add)
    add.set_defaults(
        admin_command=_Command(
            _agent_add, creates=True, validate=_agent_from_args, check=_agent_add_check
        )
    )

    listing = actions.add_parser("list", parents=[data], help="list agents")
    listing.set_defaults(admin_command=_Command(_agent_list))
    for action, run, words in (
        ("disable", _agent_disable, "disable an agent and end their sessions"),
        ("enable", _agent_enable, "enable a disabled agent again"),
    ):
        p = actions.add_parser(action, parents=[data], help=words)
        p.add_argument("name", metavar="NAME")
        p.set_defaults(admin_command=_Command(run))
    passwd = actions.add_parser(
        "passwd", parents=[data], help="set an agent's password and end their sessions"
    )
    passwd.add_argument("name", metavar="NAME")
    _password_stdin(passwd)
    passwd.set_defaults(admin_command=_Command(_agent_passwd, check=_existing))

    queue = topics.add_parser("queue", help="show the queues of a config file")
    queue_actions = queue.add_subparsers(dest="admin_action", metavar="ACTION", required=True)
    queues = queue_actions.add_parser("list", help="list queues in routing order")
    queues.add_argument(
        "--config",
        dest="queue_config",
        type=Path,
        default=None,
        metavar="FILE",
        help="the host config (default: $XDG_CONFIG_HOME/inbox-tui/inbox.toml)",
    )
    queues.set_defaults(admin_command=_queue_list)

    token = topics.add_parser("token", help="create, list and revoke API tokens")
    token_actions = token.add_subparsers(dest="admin_action", metavar="ACTION", required=True)
    create = token_actions.add_parser(
        "create", parents=[data], help="create an API token (shown once)"
    )
    create.add_argument("name", metavar="NAME", help="what the token is for, e.g. crm-sync")
    create.add_argument("--agent", default=None, metavar="ID", help="act as this agent")
    create.add_argument(
        "--role",
        choices=_ROLES,
        default=None,
        help="default: the agent's role, or agent without --agent",
    )
    create.add_argument(
        "--ttl-days", type=float, default=None, metavar="N", help="expire after N days"
    )
    create.add_argument(
        "--channels",
        type=lambda v: [c.strip() for c in v.split(",")],
        default=None,
        metavar="LIST",
        help="e.g. case,incident: create items and post only on these (docs/security.md)",
    )
    create.set_defaults(admin_command=_Command(_token_create, creates=True))
    tokens = token_actions.add_parser("list", parents=[data], help="list API tokens")
    tokens.set_defaults(admin_command=_Command(_token_list))
    revoke = token_actions.add_parser("revoke", parents=[data], help="revoke an API token")
    revoke.add_argument("token_id", metavar="ID", help="the token's tok_... id")
    revoke.set_defaults(admin_command=_Command(_token_revoke))

    audit = topics.add_parser(
        "audit",
        parents=[data],
        help="why routing did what it did with a work item",
        description="Every routing decision about one work item, oldest first, with its "
        "reason: where it was queued and why, whom it was offered to and why, who was passed "
        "over, rejections, expiries, acceptance, transfers, closing.",
    )
    audit.add_argument(
        "item", metavar="ITEM", help="the work item's id (W...) or its interaction's number"
    )
    audit.set_defaults(admin_command=_Command(_audit))

    copy = topics.add_parser(
        "copy-to",
        parents=[data],
        help="copy a stopped host's data into an empty PostgreSQL database",
        description="Copy everything in the data directory (agents and their passwords, "
        "sessions, API tokens, work items, offers, conversations, attachments, cases and "
        "incidents, the audit trail, numbering) into an empty PostgreSQL database, for hosts "
        "that will share it. Stop the host first. The password may come from PGPASSWORD or "
        "~/.pgpass instead of the URL.",
    )
    copy.add_argument("url", metavar="URL", help="postgresql://USER@HOST:PORT/DATABASE")
    copy.set_defaults(admin_command=_copy_to)


def _password_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password as one line from stdin instead of asking twice",
    )


def _pairs(text: str, option: str, lo: int, hi: int) -> dict[str, int]:
    """--capacity chat=3,messaging=5 -> {"chat": 3, "messaging": 5}."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key) or not _DIGITS.fullmatch(value.strip()):
            raise AdminError(f"{option}: expected name=number pairs like a=1,b=2, got {part!r}")
        number = int(value)
        if not lo <= number <= hi:
            raise AdminError(f"{option}: {key} must be from {lo} to {hi}, got {number}")
        if key in out:
            raise AdminError(f"{option}: {key} is given twice")
        out[key] = number
    return out


def _names(text: str, option: str) -> tuple[str, ...]:
    names = tuple(filter(None, (n.strip() for n in text.split(","))))
    for name in names:
        _check_name(name, option)
    return names


def _check_name(name: str, what: str) -> None:
    if len(name) > 64 or not _NAME.fullmatch(name):
        raise AdminError(
            f"{what}: {name!r} is not a valid name: use 1 to 64 letters, digits and . _ @ + -"
        )


# -- running ----------------------------------------------------------------------------------


def run_admin(args: argparse.Namespace) -> int:
    """Run a parsed `inbox-tui admin` command; returns the exit code."""
    command: _Command | Callable[[argparse.Namespace], None] = args.admin_command
    try:
        if not isinstance(command, _Command):
            command(args)
            return EXIT_OK
        if command.validate is not None:
            command.validate(args)
        if command.check is None:
            asyncio.run(_with_admin(args, command, command.run))
        else:
            asyncio.run(_with_admin(args, command, command.check))
            password = _read_password(args)
            asyncio.run(_with_admin(args, command, command.run, password))
        return EXIT_OK
    except KeyboardInterrupt:
        print("\ninbox-tui: interrupted; nothing more was changed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except HostUnreachable as e:
        _error(str(e))
        return EXIT_LOCKED
    except RefusedError as e:
        _error(e.message)
        return EXIT_MISTAKE
    except (AdminError, StoreError, ValueError) as e:
        # ValueError includes ConfigError, PasswordError and Authenticator's input checks.
        _error(str(e))
        return EXIT_MISTAKE


def _data_dir(args: argparse.Namespace) -> Path:
    data: Path | None = getattr(args, "data", None)
    return (data if data is not None else default_data_dir()).expanduser()


async def _with_admin(
    args: argparse.Namespace, command: _Command, run: Handler, password: str = ""
) -> None:
    """Run `run` on the data directory's store, or through the host that owns it."""
    data_dir = _data_dir(args) if command.creates else _existing_data(args)
    try:
        store = await open_store(data_dir)
    except StoreLocked as e:
        async with RunningHost.of(data_dir, e.pid) as host:
            await run(_Context(args, data_dir, host, password))
        return
    try:
        # Nobody logs in through the admin command; the ttl only satisfies the constructor.
        auth = Authenticator(store, session_ttl=HostSettings().session_ttl)
        await run(_Context(args, data_dir, _Local(store, auth, data_dir), password))
    finally:
        await store.close()


def _existing_data(args: argparse.Namespace) -> Path:
    data_dir = _data_dir(args)
    if not (data_dir / DB_FILENAME).exists():
        raise AdminError(
            f"no inbox-tui data in {data_dir}; give the host's data directory with --data"
        )
    return data_dir


def _error(message: str) -> None:
    print(f"inbox-tui: {message}", file=sys.stderr)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise AdminError("--password-stdin: stdin is empty; nothing was changed")
        password = line.removesuffix("\n").removesuffix("\r")
    else:
        if not sys.stdin.isatty():
            raise AdminError("no terminal to ask for the password on; use --password-stdin")
        password = getpass.getpass(f"New password for {args.name}: ")
        if getpass.getpass("Repeat it: ") != password:
            raise AdminError("the passwords do not match; nothing was changed")
    check_password_rules(password)
    return password


async def _existing(ctx: _Context) -> None:
    await ctx.admin.check_agent(ctx.args.name)


# -- init -------------------------------------------------------------------------------------

FIRST_ADMIN = Agent(id="admin", display_name="Administrator", role=Role.ADMIN)


async def _init(ctx: _Context) -> None:
    if isinstance(ctx.admin, RunningHost):
        raise AdminError(f"a routing host already runs on {ctx.data_dir}: init is for a new one")
    config = ctx.args.init_config or default_config_path()
    if config.exists():
        print(f"kept the config at {config}")
    else:
        config.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(example_config_path(), config)
        print(f"wrote a commented config to {config}: adapt it to your service desk")
    admins = [
        i.agent.id
        for i in await ctx.admin.agents()
        if i.agent.role == Role.ADMIN and i.has_password
    ]
    if admins:
        print(f"an admin login exists already in {ctx.data_dir} ({', '.join(admins)})")
    else:
        if await ctx.admin.store.get_agent(FIRST_ADMIN.id) is not None:
            raise AdminError(
                f"an agent {FIRST_ADMIN.id!r} exists without admin login in {ctx.data_dir}; "
                "add an admin with: inbox-tui admin agent add NAME --role admin"
            )
        password = secrets.token_urlsafe(12)
        await ctx.admin.add_agent(FIRST_ADMIN, password)
        print(
            f"created the login {FIRST_ADMIN.id!r} (role admin) in {ctx.data_dir}; its password "
            f"is\n\n    {password}\n\nIt is shown only this once and stored only as a hash. "
            f"Change it with: inbox-tui admin agent passwd {FIRST_ADMIN.id}"
        )
    start = ["inbox-tui", "--server"]
    if ctx.args.init_config is not None:
        start += ["--config", str(config)]
    if getattr(ctx.args, "data", None) is not None:
        start += ["--data", str(ctx.data_dir)]
    print(
        f"Start the host with: {' '.join(start)}\n"
        "Add agents with: inbox-tui admin agent add NAME --groups support "
        "--capacity chat=3,messaging=5 (also while the host runs)"
    )


# -- agent ------------------------------------------------------------------------------------


def _agent_from_args(args: argparse.Namespace) -> Agent:
    _check_name(args.name, "NAME")
    fields = {
        "id": args.name,
        "display_name": args.display_name,
        "role": args.role,
        "skills": _pairs(args.skills, "--skills", 1, MAX_SKILL_LEVEL),
        "capacity": _pairs(args.capacity, "--capacity", 0, MAX_CAPACITY),
        "groups": _names(args.groups, "--groups"),
    }
    try:
        return msgspec.convert(fields, Agent)
    except msgspec.ValidationError as e:
        raise AdminError(f"invalid agent: {e}") from None


async def _agent_add_check(ctx: _Context) -> None:
    await ctx.admin.check_new_agent(_agent_from_args(ctx.args))


async def _agent_add(ctx: _Context) -> None:
    agent = _agent_from_args(ctx.args)
    await ctx.admin.add_agent(agent, ctx.password)
    print(f"added {agent.role.value} {agent.id} to {ctx.where}")


async def _agent_list(ctx: _Context) -> None:
    rows = [
        [
            a.id,
            a.display_name,
            a.role.value,
            ",".join(a.groups),
            ",".join(f"{k}={v}" for k, v in a.capacity.items()),
            "yes" if a.disabled else "no",
            "yes" if info.has_password else "no",
        ]
        for info in await ctx.admin.agents()
        for a in [info.agent]
    ]
    headers = ["ID", "NAME", "ROLE", "GROUPS", "CAPACITY", "DISABLED", "PASSWORD"]
    _table(headers, rows)


async def _agent_disable(ctx: _Context) -> None:
    changed, ended = await ctx.admin.set_disabled(ctx.args.name, True)
    if not changed:
        print(f"{ctx.args.name} is already disabled")
        return
    print(f"disabled {ctx.args.name}; ended {_count(ended, 'session')}")


async def _agent_enable(ctx: _Context) -> None:
    changed, _ = await ctx.admin.set_disabled(ctx.args.name, False)
    print(f"enabled {ctx.args.name}" if changed else f"{ctx.args.name} is already enabled")


async def _agent_passwd(ctx: _Context) -> None:
    ended = await ctx.admin.set_password(ctx.args.name, ctx.password)
    print(f"changed the password of {ctx.args.name}; ended {_count(ended, 'session')}")


# -- queue ------------------------------------------------------------------------------------


def _queue_list(args: argparse.Namespace) -> None:
    path: Path | None = args.queue_config
    if path is None:
        path = default_config_path()
        if not path.exists():
            raise AdminError(
                f"no config at {path}; write one with `inbox-tui admin init`, "
                "or give one with --config FILE"
            )
    config = load_config(path)
    channel_order = {c.name: i for i, c in enumerate(config.channels)}
    # Grouped by channel, then in the order the router tries them: by `order`, then name.
    queues = sorted(config.queues, key=lambda q: (channel_order[q.channel], q.order, q.name))
    rows = [
        [q.name, q.channel, str(q.order), q.rule.value, q.condition, ",".join(q.groups)]
        for q in queues
    ]
    _table(["NAME", "CHANNEL", "ORDER", "RULE", "CONDITION", "GROUPS"], rows)


# -- token ------------------------------------------------------------------------------------


async def _token_create(ctx: _Context) -> None:
    args = ctx.args
    if args.ttl_days is not None and not 0 < args.ttl_days <= MAX_TTL_DAYS:
        raise AdminError(
            f"--ttl-days must be more than 0 and at most {MAX_TTL_DAYS}, not {args.ttl_days:g}"
        )
    ttl = None if args.ttl_days is None else args.ttl_days * _DAY
    role = None if args.role is None else Role(args.role)
    token, record = await ctx.admin.create_token(
        args.name, args.agent, role, ttl, channels=args.channels
    )
    expires = (
        "never expires" if record.expires_at is None else f"expires {_when(record.expires_at)}"
    )
    acting = f"agent {record.agent}" if record.agent is not None else "no agent"
    print(token)
    print(
        f"created API token {record.id} {record.name!r} ({record.role.value}, {acting}, "
        f"{expires}).\nThis is the only time the token is shown: store it now. "
        f"It cannot be shown again, only revoked (inbox-tui admin token revoke {record.id}).",
        file=sys.stderr,
    )


async def _token_list(ctx: _Context) -> None:
    now = time.time()
    rows = []
    for t in await ctx.admin.tokens():
        if t.revoked_at is not None:
            status = f"revoked {_when(t.revoked_at)}"
        elif t.expires_at is not None and t.expires_at <= now:
            status = "expired"
        else:
            status = "active"
        rows.append(
            [
                t.id,
                t.name,
                t.agent or "",
                t.role.value,
                _when(t.created_at),
                _when(t.expires_at) if t.expires_at is not None else "never",
                status,
                ",".join(t.channels) if t.channels is not None else "own items",
            ]
        )
    _table(["ID", "NAME", "AGENT", "ROLE", "CREATED", "EXPIRES", "STATUS", "CHANNELS"], rows)


async def _token_revoke(ctx: _Context) -> None:
    token_id = ctx.args.token_id
    if await ctx.admin.revoke_token(token_id):
        print(f"revoked {token_id}")
    else:
        print(f"{token_id} was already revoked")


# -- audit ------------------------------------------------------------------------------------


async def _audit(ctx: _Context) -> None:
    trail = await ctx.admin.audit(ctx.args.item)
    of = f" ({trail.interaction})" if trail.interaction is not None else ""
    print(f"work item {trail.item}{of}: {_count(len(trail.entries), 'routing decision')}")
    rows = [
        [
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at)),
            e.kind,
            e.agent or "",
            e.reason,
        ]
        for e in trail.entries
    ]
    _table(["TIME", "DECISION", "AGENT", "REASON"], rows)


# -- copy-to ----------------------------------------------------------------------------------


def _copy_to(args: argparse.Namespace) -> None:
    # Imported here: asyncpg is loaded only by those who move to PostgreSQL.
    from store.copy_to_postgres import copy_to_postgres
    from store.postgres import redact

    url: str = args.url
    if not is_postgres_url(url):
        raise AdminError(f"copy-to: expected a postgresql:// URL, got {redact(url)!r}")
    data_dir = _existing_data(args)
    try:
        report = asyncio.run(
            copy_to_postgres(
                data_dir, data_dir / DB_FILENAME, url, lambda line: print(line, flush=True)
            )
        )
    except StoreLocked as e:
        by = f" (pid {e.pid})" if e.pid is not None else ""
        raise AdminError(
            f"a routing host{by} owns {data_dir}: stop it, then copy (nothing was copied)"
        ) from None
    total = sum(report.rows.values())
    numbers = ", ".join(report.numbers[prefix] for prefix in sorted(report.numbers))
    print(
        f"copied {total:,} rows from {data_dir} into {redact(url)} in {report.seconds:.1f} s; "
        f"the next numbers are {numbers}.\nStart the hosts on it with --store URL, and keep "
        f"{data_dir} as it is until they run well: the copy did not change its data."
    )


# -- output -----------------------------------------------------------------------------------


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def _cell(text: str) -> str:
    # Names come from config files and other admins: a control character in one must not
    # reach the terminal as an escape sequence.
    cleaned = "".join("?" if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return cleaned or "-"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
