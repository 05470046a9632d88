"""Logins on a real SQLite store: argon2id passwords, tokens kept only as digests, limits on
guessing, expiry and revocation; also the files a console keeps its session token in."""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from msgspec.structs import replace

from core import paths
from core.auth import (
    API_PREFIX,
    MAX_PASSWORD_LENGTH,
    SESSION_PREFIX,
    Authenticator,
    AuthError,
    LoginLimiter,
    PasswordError,
    Principal,
    hash_password,
    needs_rehash,
    new_token,
    token_digest,
    verify_password,
)
from core.demo import DEMO_PASSWORD, demo_config
from core.model import Agent, Role
from store import DB_FILENAME, NotFound, SessionRecord, SQLiteStore, StoreConflict

# Real argon2id, at parameters cheap enough for dozens of logins per test.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"
TTL = 3600.0


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingHasher(PasswordHasher):
    """CHEAP's parameters, counting verifications: the work a login spends."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified += 1
        return super().verify(hash, password)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / DB_FILENAME, tmp_path)
    await s.open()
    await s.upsert_agents(
        [
            Agent(id="alice", role=Role.AGENT),
            Agent(id="dan", role=Role.SUPERVISOR),
            Agent(id="root", role=Role.ADMIN),
            Agent(id="gone", disabled=True),
            Agent(id="nopass"),
        ]
    )
    for agent in ("alice", "dan", "root", "gone"):
        await s.set_agent_password_hash(agent, CHEAP.hash(PASSWORD))
    yield s
    await s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_auth(store: SQLiteStore, clock: Clock, **kwargs: Any) -> Authenticator:
    kwargs.setdefault("hasher", CHEAP)
    return Authenticator(store, session_ttl=TTL, clock=clock, **kwargs)


@pytest.fixture
def auth(store: SQLiteStore, clock: Clock) -> Authenticator:
    return make_auth(store, clock)


async def refused(coro: Any) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await coro
    return caught.value


# -- passwords --------------------------------------------------------------------------------


async def test_hashes_are_argon2id_with_the_documented_defaults_and_verify() -> None:
    h = await hash_password(PASSWORD)
    assert h.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert await verify_password(h, PASSWORD)
    assert not await verify_password(h, PASSWORD + "!")
    assert h != await hash_password(PASSWORD)  # salted
    assert not needs_rehash(h)
    assert needs_rehash(CHEAP.hash(PASSWORD))


async def test_password_length_rules_apply_to_setting_only() -> None:
    for bad in ("", "seven77", "x" * (MAX_PASSWORD_LENGTH + 1)):
        with pytest.raises(PasswordError, match=r"too (short|long)"):
            await hash_password(bad, hasher=CHEAP)
    for good in ("eight888", "x" * MAX_PASSWORD_LENGTH):
        assert await verify_password(await hash_password(good, hasher=CHEAP), good, hasher=CHEAP)
    h = await hash_password("eight888", hasher=CHEAP)
    assert await verify_password(h, "short", hasher=CHEAP) is False
    assert await verify_password(h, "x" * (MAX_PASSWORD_LENGTH + 1), hasher=CHEAP) is False


async def test_passwords_are_compared_after_unicode_normalisation() -> None:
    h = await hash_password("ﬁrst-ﬂoor-key", hasher=CHEAP)  # ligatures, as some keyboards type
    assert await verify_password(h, "first-floor-key", hasher=CHEAP)


async def test_hashing_runs_off_the_event_loop() -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    hashes = await asyncio.gather(*(hash_password(f"password-{i}") for i in range(5)))
    elapsed = time.perf_counter() - started
    task.cancel()
    during = [t for t in ticks if t >= started]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    # Five default-cost hashes take a good fraction of a second; on the loop they would
    # leave one gap as long as all of them.
    assert len(hashes) == 5 and all(h.startswith("$argon2id$") for h in hashes)
    assert len(during) >= 10, (len(during), elapsed)
    assert max(gaps) < elapsed / 3, (max(gaps), elapsed)


# -- tokens -----------------------------------------------------------------------------------


def test_tokens_are_random_prefixed_and_stored_as_sha256() -> None:
    a, b = new_token(SESSION_PREFIX), new_token(SESSION_PREFIX)
    assert a != b and a.startswith("ses_") and len(a) == 4 + 43
    assert new_token(API_PREFIX).startswith("api_")
    digest = token_digest(a)
    assert len(digest) == 64 and int(digest, 16) >= 0 and digest == token_digest(a)


# -- login ------------------------------------------------------------------------------------


async def test_login_gives_a_session_token_that_authenticates(
    auth: Authenticator, clock: Clock
) -> None:
    session = await auth.login("alice", PASSWORD, "10.0.0.1")
    assert session.agent == "alice" and session.role == Role.AGENT
    assert session.expires_at == clock.now + TTL
    assert session.token.startswith(SESSION_PREFIX)
    assert session.token not in repr(session)  # never in a log line by accident
    principal = await auth.authenticate(session.token, "10.0.0.1")
    assert principal == Principal("alice", Role.AGENT, "session", token_digest(session.token))


async def test_wrong_password_and_unknown_user_are_told_apart_by_nothing(
    store: SQLiteStore, clock: Clock
) -> None:
    hasher = CountingHasher()
    auth = make_auth(store, clock, hasher=hasher)
    await auth.login("alice", PASSWORD, None)  # warm up (the dummy hash is made lazily)
    errors = []
    for username in ("alice", "nobody", "nopass"):
        before = hasher.verified
        errors.append(await refused(auth.login(username, "wrong password", "10.0.0.1")))
        assert hasher.verified - before == 1, username  # the same work for each
    assert {(e.code, e.message, str(e)) for e in errors} == {
        (
            "bad_credentials",
            "wrong username or password",
            "bad_credentials: wrong username or password",
        )
    }


async def test_a_disabled_agent_is_told_so_only_with_the_right_password(
    auth: Authenticator,
) -> None:
    assert (await refused(auth.login("gone", "wrong password", None))).code == "bad_credentials"
    assert (await refused(auth.login("gone", PASSWORD, None))).code == "disabled"


async def test_failed_logins_are_limited_per_user(auth: Authenticator, clock: Clock) -> None:
    for i in range(5):
        await refused(auth.login("alice", "wrong", f"10.0.0.{i}"))
    limited = await refused(auth.login("alice", PASSWORD, "10.0.0.99"))  # even the right one
    assert limited.code == "rate_limited" and "300 seconds" in limited.message
    assert limited.retry_after == 300
    await auth.login("dan", PASSWORD, "10.0.0.0")  # other users are not affected
    clock.now += 100
    assert (await refused(auth.login("alice", PASSWORD, None))).retry_after == 200
    clock.now += 200
    await auth.login("alice", PASSWORD, None)


async def test_a_success_clears_the_users_failures(auth: Authenticator) -> None:
    for _ in range(4):
        await refused(auth.login("alice", "wrong", None))
    await auth.login("alice", PASSWORD, None)
    for _ in range(4):
        assert (await refused(auth.login("alice", "wrong", None))).code == "bad_credentials"


async def test_failed_logins_are_limited_per_address(store: SQLiteStore, clock: Clock) -> None:
    auth = make_auth(store, clock, limiter=LoginLimiter(per_user=5, per_address=3))
    for user in ("alice", "dan", "nobody"):
        await refused(auth.login(user, "wrong", "203.0.113.7"))
    assert (await refused(auth.login("root", PASSWORD, "203.0.113.7"))).code == "rate_limited"
    await auth.login("root", PASSWORD, "198.51.100.1")
    clock.now += 301
    await auth.login("root", PASSWORD, "203.0.113.7")


async def test_parallel_guesses_cannot_slip_past_the_limit(auth: Authenticator) -> None:
    results = await asyncio.gather(
        *(auth.login("alice", f"guess-{i}", "10.0.0.1") for i in range(12)),
        return_exceptions=True,
    )
    codes = sorted(r.code for r in results if isinstance(r, AuthError))
    assert codes == ["bad_credentials"] * 5 + ["rate_limited"] * 7


async def test_a_good_login_does_not_count_against_its_address(
    store: SQLiteStore, clock: Clock
) -> None:
    # An office behind one address: many people logging in is not an attack.
    auth = make_auth(store, clock, limiter=LoginLimiter(per_address=2))
    for _ in range(5):
        await auth.login("alice", PASSWORD, "192.0.2.1")


async def test_sessions_expire(auth: Authenticator, clock: Clock) -> None:
    session = await auth.login("alice", PASSWORD, None)
    clock.now += TTL - 1
    await auth.authenticate(session.token, None)
    clock.now += 1
    assert (await refused(auth.authenticate(session.token, None))).code == "expired"


async def test_revoke_and_logout_end_a_session(auth: Authenticator) -> None:
    one = await auth.login("alice", PASSWORD, None)
    two = await auth.login("alice", PASSWORD, None)
    assert await auth.revoke(one.token) is True
    assert await auth.revoke(one.token) is False
    assert (await refused(auth.authenticate(one.token, None))).code == "bad_token"
    await auth.authenticate(two.token, None)  # only that session
    await auth.logout(two.token)
    await auth.logout(two.token)  # twice is harmless
    assert (await refused(auth.authenticate(two.token, None))).code == "bad_token"


async def test_unknown_and_malformed_tokens_are_refused(auth: Authenticator) -> None:
    for token in (
        "",
        "hello",
        new_token(SESSION_PREFIX),
        new_token(API_PREFIX),
        "ses_" + "a" * 500,
    ):
        assert (await refused(auth.authenticate(token, "10.0.0.1"))).code == "bad_token"
    assert await auth.revoke("hello") is False


async def test_logging_out_leaves_an_api_token_valid(auth: Authenticator) -> None:
    token, _ = await auth.create_api_token("crm", "alice", Role.AGENT, None)
    await auth.logout(token)
    assert (await auth.authenticate(token, None)).agent == "alice"


async def test_disabling_or_demoting_an_agent_takes_effect_on_live_sessions(
    auth: Authenticator, store: SQLiteStore
) -> None:
    dan = await auth.login("dan", PASSWORD, None)
    alice = await auth.login("alice", PASSWORD, None)
    await store.upsert_agents([Agent(id="dan", role=Role.AGENT)])
    assert (await auth.authenticate(dan.token, None)).role == Role.AGENT
    await store.upsert_agents([Agent(id="alice", disabled=True)])
    assert (await refused(auth.authenticate(alice.token, None))).code == "disabled"


async def test_set_password_ends_the_agents_sessions(auth: Authenticator) -> None:
    old = await auth.login("alice", PASSWORD, None)
    other = await auth.login("dan", PASSWORD, None)
    assert await auth.set_password("alice", "a brand new one") == 1
    assert (await refused(auth.authenticate(old.token, None))).code == "bad_token"
    await auth.authenticate(other.token, None)
    assert (await refused(auth.login("alice", PASSWORD, None))).code == "bad_credentials"
    await auth.login("alice", "a brand new one", None)
    with pytest.raises(PasswordError):
        await auth.set_password("alice", "short")
    with pytest.raises(NotFound):
        await auth.set_password("nobody", "long enough")


async def test_an_old_hash_is_upgraded_at_login(store: SQLiteStore, clock: Clock) -> None:
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    auth = make_auth(store, clock, hasher=stronger)
    await auth.login("alice", PASSWORD, None)
    upgraded = await store.get_agent_password_hash("alice")
    assert upgraded is not None and "$m=16,t=2,p=1$" in upgraded
    await auth.login("alice", PASSWORD, None)


async def test_prune_deletes_expired_and_revoked_sessions(
    auth: Authenticator, clock: Clock, store: SQLiteStore
) -> None:
    ended = await auth.login("alice", PASSWORD, None)
    await auth.logout(ended.token)
    clock.now += TTL / 2
    live = await auth.login("dan", PASSWORD, None)
    clock.now += TTL / 2  # the first one expires now too, the second has TTL / 2 left
    assert await auth.prune() == 1
    assert await store.get_session(token_digest(ended.token)) is None
    await auth.authenticate(live.token, None)


async def test_the_database_holds_no_token_and_no_password(
    tmp_path: Path, auth: Authenticator, store: SQLiteStore
) -> None:
    session = await auth.login("alice", PASSWORD, None)
    api, _ = await auth.create_api_token("crm", None, Role.AGENT, None)
    await store.close()  # checkpoints the WAL into the database file
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(DB_FILENAME))
    for secret in (session.token, api, PASSWORD):
        assert secret.encode() not in data
    assert token_digest(session.token).encode() in data and token_digest(api).encode() in data


# -- API tokens -------------------------------------------------------------------------------


async def test_api_tokens_authenticate_until_revoked(auth: Authenticator, clock: Clock) -> None:
    token, record = await auth.create_api_token(" crm-sync ", None, Role.SUPERVISOR, None)
    assert token.startswith(API_PREFIX) and record.id.startswith("tok_")
    assert record.name == "crm-sync" and record.expires_at is None
    assert record.created_at == clock.now
    principal = await auth.authenticate(token, "10.1.1.1")
    assert principal == Principal(None, Role.SUPERVISOR, "api", record.id)
    assert await auth.revoke_api_token(record.id) is True
    assert await auth.revoke_api_token(record.id) is False
    assert (await refused(auth.authenticate(token, None))).code == "bad_token"


async def test_api_tokens_expire_and_revoke_by_secret(auth: Authenticator, clock: Clock) -> None:
    token, record = await auth.create_api_token("nightly", "dan", Role.AGENT, 60.0)
    assert record.expires_at == clock.now + 60
    assert await auth.authenticate(token, None) == Principal("dan", Role.AGENT, "api", record.id)
    clock.now += 60
    assert (await refused(auth.authenticate(token, None))).code == "expired"
    assert await auth.revoke(token) is True


async def test_an_agent_token_never_grants_more_than_its_agent(
    auth: Authenticator, store: SQLiteStore
) -> None:
    with pytest.raises(ValueError, match="above agent alice's role agent"):
        await auth.create_api_token("x", "alice", Role.ADMIN, None)
    token, _ = await auth.create_api_token("x", "root", Role.ADMIN, None)
    await store.upsert_agents([Agent(id="root", role=Role.SUPERVISOR)])
    assert (await auth.authenticate(token, None)).role == Role.SUPERVISOR
    with pytest.raises(ValueError, match="no agent 'ghost'"):
        await auth.create_api_token("x", "ghost", Role.AGENT, None)
    with pytest.raises(ValueError, match="disabled"):
        await auth.create_api_token("x", "gone", Role.AGENT, None)
    for name, ttl in (("  ", None), ("x" * 201, None), ("ok", 0.0), ("ok", -5.0)):
        with pytest.raises(ValueError):
            await auth.create_api_token(name, None, Role.AGENT, ttl)


async def test_the_store_lists_and_guards_api_tokens(
    auth: Authenticator, store: SQLiteStore
) -> None:
    _, first = await auth.create_api_token("a", None, Role.AGENT, None)
    _, second = await auth.create_api_token("b", "alice", Role.AGENT, 5.0)
    assert [t.id for t in await store.list_api_tokens()] == [first.id, second.id]
    with pytest.raises(StoreConflict):
        await store.save_api_token(replace(second, id="tok_other"))  # same digest
    with pytest.raises(NotFound, match="agent ghost"):
        await store.save_api_token(
            replace(second, id="tok_x", token_digest="0" * 64, agent="ghost")
        )


async def test_the_store_guards_sessions(store: SQLiteStore) -> None:
    record = SessionRecord(
        token_digest="a" * 64, agent="alice", role=Role.AGENT, created_at=1.0, expires_at=2.0
    )
    await store.save_session(record)
    assert await store.get_session("a" * 64) == record
    with pytest.raises(StoreConflict):
        await store.save_session(record)
    with pytest.raises(NotFound, match="agent ghost"):
        await store.save_session(replace(record, token_digest="b" * 64, agent="ghost"))
    assert await store.revoke_session("a" * 64, 1.5) is True
    assert (await store.get_session("a" * 64)) == replace(record, revoked_at=1.5)
    assert await store.revoke_agent_sessions("alice", 1.6) == 0


# -- seeding ----------------------------------------------------------------------------------


async def test_seed_stores_missing_agents_and_their_config_passwords_once(
    tmp_path: Path, clock: Clock
) -> None:
    config = demo_config()
    async with SQLiteStore(tmp_path / DB_FILENAME, tmp_path) as store:
        await store.upsert_agents([Agent(id="alice", display_name="Changed by an admin")])
        auth = make_auth(store, clock)
        assert sorted(await auth.seed(config)) == sorted(config.seed_passwords)
        assert {a.id for a in await store.list_agents()} == {a.id for a in config.agents}
        alice = await store.get_agent("alice")
        assert alice is not None and alice.display_name == "Changed by an admin"
        session = await auth.login("bob", DEMO_PASSWORD, None)
        assert session.agent == "bob"
        await auth.set_password("bob", "not the demo one")
        assert await auth.seed(config) == []
        assert (await refused(auth.login("bob", DEMO_PASSWORD, None))).code == "bad_credentials"


async def test_seed_passwords_obey_the_password_rules(tmp_path: Path, clock: Clock) -> None:
    # The config loader refuses such a file with its line; a HostConfig built in code must
    # not slip a short password past the rules either.
    config = replace(demo_config(), seed_passwords={"bob": "demo"})
    async with SQLiteStore(tmp_path / DB_FILENAME, tmp_path) as store:
        with pytest.raises(PasswordError, match="too short"):
            await make_auth(store, clock).seed(config)
        assert await store.get_agent_password_hash("bob") is None


# -- the limiter alone ------------------------------------------------------------------------


def test_the_limiter_window_slides() -> None:
    limiter = LoginLimiter(per_user=2, per_address=100, window=10.0)
    limiter.record_failure("u", "a", 0.0)
    assert limiter.check("u", "a", 1.0) is None
    limiter.record_failure("u", "a", 4.0)
    assert limiter.check("u", "a", 5.0) == 5.0
    assert limiter.check("u", "a", 10.0) is None  # the first failure left the window
    assert limiter.check("u", None, 10.0) is None and limiter.check(None, "a", 10.0) is None
    limiter.record_failure("u", "a", 10.0)
    assert limiter.check("u", "a", 11.0) == 3.0


def test_the_limiter_memory_is_bounded() -> None:
    limiter = LoginLimiter(per_user=1, per_address=1, window=60.0, max_keys=100)
    for i in range(10_000):
        limiter.record_failure(f"user-{i}" + "x" * 1000, f"addr-{i}", float(i) / 1000)
    assert len(limiter._users.failures) == 100 and len(limiter._addresses.failures) == 100
    assert all(len(k) <= LoginLimiter.KEY_LENGTH for k in limiter._users.failures)
    # The newest stay tracked; the oldest were let go.
    assert limiter.check("user-9999" + "x" * 1000, None, 10.0) is not None
    assert limiter.check("user-0" + "x" * 1000, None, 10.0) is None
    # Stale entries go first, whatever the cap.
    limiter.record_failure("late", "late", 1000.0)
    assert list(limiter._users.failures) == ["late"]


def test_the_limiter_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        LoginLimiter(per_user=0)


# -- where a console keeps its session token --------------------------------------------------


def test_xdg_directories(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert paths.default_data_dir() == tmp_path / ".local/share/inbox-tui"
    assert paths.default_config_dir() == tmp_path / ".config/inbox-tui"
    assert paths.default_state_dir() == tmp_path / ".local/state/inbox-tui"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    assert paths.default_data_dir() == tmp_path / "d/inbox-tui"
    assert paths.default_state_dir() == tmp_path / ".local/state/inbox-tui"


def test_secrets_are_written_owner_only_and_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "state" / "inbox-tui" / "session"
    assert paths.load_secret(target) is None
    old_umask = os.umask(0)  # the most permissive umask must not matter
    try:
        paths.save_secret(target, "ses_first")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    paths.save_secret(target, "ses_second")
    assert paths.load_secret(target) == "ses_second"
    assert [p.name for p in target.parent.iterdir()] == ["session"]  # no temp file left
    target.chmod(0o644)
    with pytest.raises(PermissionError, match="accessible by other users"):
        paths.load_secret(target)
