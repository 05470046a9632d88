"""A real host's first start and its administration while it runs, as an admin does them: the
installed `inbox-tui` in subprocesses, a real host subprocess on loopback, real clients.

- A host with no config refuses to start and says how to make one; `inbox-tui admin init`
  writes one and makes the only login there is, with a password shown once.
- No demo login works on a real host, not even one started on the demo's config.
- `inbox-tui admin ...` against the data directory of a running host goes through the host and
  takes effect at once: a new agent is offered work, a changed password and a disabled agent
  end live sessions, a token works (and stops working) on its next request.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import aiohttp
import pytest

from bench.host_process import INBOX_TUI, HostProcess, console_env, start_host, stop_host
from core.client import ClientError, InboxClient
from core.demo import DEMO_PASSWORD, demo_config_path
from core.protocol import OfferEvent
from tests.test_admin_cli import admin as run_admin
from tests.test_admin_cli import ok as ok_exit

ERIN_PASSWORD = "erin's first password"


def admin(
    host: HostProcess | Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`inbox-tui admin --data <root>/data ...`, as the admin of that host runs it."""
    root = host.log.parent if isinstance(host, HostProcess) else host
    return run_admin(console_env(root / "admin-env"), root / "data", *args, stdin=stdin)


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in run.stderr
    return ok_exit(run)


async def login_error(host: HostProcess, user: str, password: str) -> str:
    async with InboxClient(host.agent_url) as client:
        with pytest.raises(ClientError) as refused:
            await client.login(user, password)
    return refused.value.code


async def wait_for_status(client: InboxClient, status: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while client.status != status:
            await asyncio.sleep(0.02)


# -- the first start --------------------------------------------------------------------------


def test_a_host_without_a_config_refuses_to_start_and_says_how_to_make_one(tmp_path: Path) -> None:
    env = console_env(tmp_path)  # XDG directories of its own: no config in them
    run = subprocess.run(
        [INBOX_TUI, "--server", "--listen", "127.0.0.1:0", "--data", tmp_path / "data"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "event=listening" not in run.stderr
    expected = Path(env["XDG_CONFIG_HOME"]) / "inbox-tui" / "inbox.toml"
    assert f"no config at {expected}" in run.stderr
    assert "inbox-tui admin init" in run.stderr


async def test_init_makes_a_host_whose_only_login_is_the_one_it_showed(tmp_path: Path) -> None:
    config = tmp_path / "inbox.toml"
    out = ok(admin(tmp_path, "init", "--config", str(config)))
    assert not re.search(r"^\[\[agent\]\]", config.read_text(), re.MULTILINE)  # commented out
    password = re.search(r"password is\s+(\S+)", out)
    assert password, out
    again = ok(admin(tmp_path, "init", "--config", str(config)))
    assert "kept the config" in again and "exists already" in again
    assert password.group(1) not in again  # shown only once

    host = await asyncio.to_thread(start_host, tmp_path, config=config)
    try:
        async with InboxClient(host.agent_url) as client:
            reply = await client.login("admin", password.group(1))
            assert reply.snapshot.me.role == "admin"
        for user, guess in (("admin", "demo"), ("admin", DEMO_PASSWORD), ("alice", DEMO_PASSWORD)):
            assert await login_error(host, user, guess) == "bad_credentials"
    finally:
        stop_host(host)


async def test_the_demo_config_on_a_real_host_lets_nobody_log_in(tmp_path: Path) -> None:
    host = await asyncio.to_thread(start_host, tmp_path, config=demo_config_path())
    try:
        for user in ("admin", "alice", "dan"):
            for guess in ("demo", DEMO_PASSWORD):
                assert await login_error(host, user, guess) == "bad_credentials"
    finally:
        stop_host(host)


# -- administration of a running host ---------------------------------------------------------


async def create_chat(http: aiohttp.ClientSession, host: HostProcess, token: str) -> str:
    body = {"channel": "chat", "customer": {"id": "c-1", "name": "Ana"}}
    async with http.post(
        f"{host.base_url}/api/v1/items", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as reply:
        assert reply.status == 201, await reply.text()
        return str((await reply.json())["interaction"])


async def test_admin_commands_take_effect_on_a_running_host_at_once(tmp_path: Path) -> None:
    host = await asyncio.to_thread(start_host, tmp_path)
    try:
        added = await asyncio.to_thread(
            admin,
            host,
            "agent",
            "add",
            "erin",
            "--groups",
            "tier1",
            "--capacity",
            "chat=2",
            "--password-stdin",
            stdin=ERIN_PASSWORD + "\n",
        )
        assert "to the running host" in ok(added)
        token = ok(await asyncio.to_thread(admin, host, "token", "create", "crm")).strip()
        listed = ok(await asyncio.to_thread(admin, host, "agent", "list"))
        assert re.search(r"^erin\s.*tier1\s+chat=2\s+no\s+yes$", listed, re.MULTILINE)

        # Erin can log in and is routed to, without a restart: she is the only agent online.
        erin = InboxClient(host.agent_url)
        await erin.connect()
        await erin.login("erin", ERIN_PASSWORD)
        await erin.set_presence("Available")
        async with aiohttp.ClientSession() as http:
            number = await create_chat(http, host, token)
            offer = await erin.next_event(OfferEvent, timeout=10)
            assert offer.view.interaction == number

            # A new password ends her live session; the old one no longer opens a new one.
            ok(
                await asyncio.to_thread(
                    admin,
                    host,
                    "agent",
                    "passwd",
                    "erin",
                    "--password-stdin",
                    stdin="erin's second password\n",
                )
            )
            await wait_for_status(erin, "logged out")
            await erin.close()
            assert await login_error(host, "erin", ERIN_PASSWORD) == "bad_credentials"

            # Disabled: the live session ends at once and the right password is refused.
            erin = InboxClient(host.agent_url)
            await erin.connect()
            await erin.login("erin", "erin's second password")
            ok(await asyncio.to_thread(admin, host, "agent", "disable", "erin"))
            await wait_for_status(erin, "logged out")
            await erin.close()
            assert await login_error(host, "erin", "erin's second password") == "disabled"

            # A revoked token is refused on its next request.
            token_id = re.search(r"^(tok_\S+)\s+crm\s", ok(admin(host, "token", "list")), re.M)
            assert token_id
            ok(await asyncio.to_thread(admin, host, "token", "revoke", token_id.group(1)))
            async with http.get(
                f"{host.base_url}/api/v1/queues", headers={"Authorization": f"Bearer {token}"}
            ) as reply:
                assert reply.status == 401
    finally:
        stop_host(host)
    assert not (tmp_path / "data" / "admin.json").exists()  # withdrawn at a clean stop


async def test_the_admin_api_takes_admin_tokens_only(tmp_path: Path) -> None:
    host = await asyncio.to_thread(start_host, tmp_path)
    try:
        tokens = {
            role: ok(admin(host, "token", "create", role, "--role", role)).strip()
            for role in ("admin", "supervisor")
        }
        async with aiohttp.ClientSession() as http:
            url = f"{host.base_url}/api/v1/admin/agents"
            for role, status in (("admin", 200), ("supervisor", 403)):
                headers = {"Authorization": f"Bearer {tokens[role]}"}
                async with http.get(url, headers=headers) as reply:
                    assert reply.status == status, await reply.text()
            async with http.get(url) as reply:
                assert reply.status == 401
            async with http.get(url, headers={"Authorization": "Bearer adm_guess"}) as reply:
                assert reply.status == 401
    finally:
        stop_host(host)


def test_a_host_that_stopped_cleanly_is_administered_offline(tmp_path: Path) -> None:
    host = start_host(tmp_path)
    stop_host(host)
    out = ok(admin(tmp_path, "agent", "add", "erin", "--password-stdin", stdin=ERIN_PASSWORD))
    assert f"to {tmp_path / 'data'}" in out
