"""Logins against a real `inbox-tui --server` subprocess: a guesser slows down only its own
(username, address) pair, agents behind one address do not lock each other out, and the host
prunes ended sessions from its store.

Clients act from other loopback addresses by binding a source address (Linux routes all of
127.0.0.0/8 to lo), so the host sees them as other machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.host_process import HostProcess, start_host, stop_host
from core.auth import SESSION_PREFIX, new_token, token_digest
from core.client import InboxClient
from core.demo import DEMO_PASSWORD, demo_config
from core.model import Role
from core.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Error,
    Hello,
    LoggedIn,
    Login,
    ServerFrame,
    Welcome,
    encoder,
    server_decoder,
)
from store import DB_FILENAME, SessionRecord, open_store

ALICE_HOME = "127.0.0.1"
ATTACKER = "127.0.0.2"
OFFICE = "127.0.0.3"
FREE_FAILURES = 5  # security.md "Login rate limit"
REPLY_TIMEOUT = 30.0  # a login waits for an argon2 hash on a machine shared with other work


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    process = start_host(tmp_path_factory.mktemp("auth-host"))
    try:
        yield process
    finally:
        stop_host(process)


@contextlib.asynccontextmanager
async def agent_socket(host: HostProcess, source: str) -> AsyncIterator[Socket]:
    """An agent socket opened from `source`, past hello. core.client cannot choose its
    source address, so this speaks the protocol's frames itself."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.ws_connect(host.agent_url, max_msg_size=MAX_FRAME_BYTES) as ws,
    ):
        sock = Socket(ws)
        await ws.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION)))
        assert isinstance(await sock.receive(), Welcome)
        yield sock


class Socket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.refs = iter(range(1, 10_000))

    async def receive(self) -> ServerFrame:
        msg = await self.ws.receive(timeout=REPLY_TIMEOUT)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        return server_decoder.decode(msg.data)

    async def login(self, username: str, password: str) -> LoggedIn | Error:
        ref = next(self.refs)
        await self.ws.send_bytes(
            encoder.encode(Login(username=username, password=password, ref=ref))
        )
        while True:
            reply = await self.receive()
            if isinstance(reply, LoggedIn | Error) and reply.ref == ref:
                return reply


async def test_a_guesser_is_throttled_while_the_real_user_logs_in_at_once(
    host: HostProcess,
) -> None:
    async with agent_socket(host, ATTACKER) as attacker:
        replies = [await attacker.login("alice", f"guess-{i}") for i in range(FREE_FAILURES)]
        assert [r.code for r in replies if isinstance(r, Error)] == ["bad_credentials"] * 5
        # From here each failure doubles the pause (2 s, 4 s, ...): the guesser meets it at
        # once unless a single hash took that long.
        for i in range(5):
            limited = await attacker.login("alice", f"guess-more-{i}")
            assert isinstance(limited, Error)
            if limited.code == "rate_limited":
                break
        assert limited.code == "rate_limited" and "try again in" in limited.message
        still = await attacker.login("alice", DEMO_PASSWORD)  # even the right password
        assert isinstance(still, Error) and still.code == "rate_limited"
        async with agent_socket(host, ALICE_HOME) as alice:
            assert isinstance(await alice.login("alice", DEMO_PASSWORD), LoggedIn)
    # The host saw the two as different addresses, or this test would prove nothing.
    log = host.log_text()
    assert f"failed login for 'alice' from {ATTACKER}" in log
    assert f"login: alice from {ALICE_HOME}" in log


async def test_agents_behind_one_address_do_not_lock_each_other_out(host: HostProcess) -> None:
    # Five agents mistype four times each from one office address: twenty failures, which
    # used to shut the address for everyone. Each then logs in with the right password.
    typos = FREE_FAILURES - 1

    async def agent(name: str) -> LoggedIn | Error:
        async with agent_socket(host, OFFICE) as sock:
            for i in range(typos):
                wrong = await sock.login(name, f"typo-{i}")
                assert isinstance(wrong, Error) and wrong.code == "bad_credentials", wrong
            return await sock.login(name, DEMO_PASSWORD)

    names = ("alice", "bob", "chloe", "dan", "admin")
    replies = await asyncio.gather(*(agent(n) for n in names))
    assert [r.snapshot.me.id if isinstance(r, LoggedIn) else r for r in replies] == list(names)
    assert host.log_text().count(f"from {OFFICE}") >= len(names) * (typos + 1)


def stored_sessions(data_dir: Path) -> set[str]:
    # Read-only, beside the running host (WAL lets a reader in while it writes).
    db = sqlite3.connect(f"file:{data_dir / DB_FILENAME}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT token_digest FROM sessions")}
    finally:
        db.close()


async def test_the_host_prunes_ended_sessions_from_its_store(tmp_path: Path) -> None:
    now = time.time()
    valid = new_token(SESSION_PREFIX)

    def session(token: str, expires_at: float, revoked_at: float | None = None) -> SessionRecord:
        return SessionRecord(
            token_digest=token_digest(token),
            agent="alice",
            role=Role.AGENT,
            created_at=now - 7200,
            expires_at=expires_at,
            revoked_at=revoked_at,
        )

    # Left by an earlier run of the host, as the data directory of a host restarted would be.
    store = await open_store(tmp_path / "data")
    try:
        await store.upsert_agents(demo_config().agents)
        await store.save_session(session(new_token(SESSION_PREFIX), expires_at=now - 60))
        await store.save_session(
            session(new_token(SESSION_PREFIX), expires_at=now + 3600, revoked_at=now - 60)
        )
        await store.save_session(session(valid, expires_at=now + 3600))
    finally:
        await store.close()
    assert len(stored_sessions(tmp_path / "data")) == 3

    host = await asyncio.to_thread(start_host, tmp_path)
    try:
        deadline = time.monotonic() + 15.0
        while (left := stored_sessions(tmp_path / "data")) != {token_digest(valid)}:
            assert time.monotonic() < deadline, f"still stored: {left}"
            await asyncio.sleep(0.05)
        client = InboxClient(host.agent_url)
        try:
            await client.connect()
            assert (await client.login_token(valid)).token == valid
        finally:
            await client.close()
    finally:
        await asyncio.to_thread(stop_host, host)
    # The pruning task ended with the host rather than holding up or breaking its shutdown.
    assert host.proc.returncode == 0, host.log_text()
    assert "pruned 2 expired or revoked sessions" in host.log_text()
    assert "event=stopped" in host.log_text()
