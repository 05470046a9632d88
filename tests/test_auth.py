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


async def test_failed_logins_slow_down_that_address_not_the_user(
    auth: Authenticator, clock: Clock
) -> None:
    for _ in range(5):
        await refused(auth.login("alice", "wrong", "10.0.0.66"))
    limited = await refused(auth.login("alice", PASSWORD, "10.0.0.66"))  # even the right one
    assert limited.code == "rate_limited" and "2 seconds" in limited.message
    assert limited.retry_after == 2
    # The real alice, elsewhere, is not held up by someone guessing her password.
    await auth.login("alice", PASSWORD, "10.0.0.1")
    clock.now += 2
    await refused(auth.login("alice", "wrong", "10.0.0.66"))
    assert (await refused(auth.login("alice", PASSWORD, "10.0.0.66"))).retry_after == 4
    clock.now += 4
    await auth.login("alice", PASSWORD, "10.0.0.66")


async def test_a_success_clears_the_pairs_failures(auth: Authenticator) -> None:
    for _ in range(4):
        await refused(auth.login("alice", "wrong", "10.0.0.1"))
    await auth.login("alice", PASSWORD, "10.0.0.1")
    for _ in range(5):
        assert (await refused(auth.login("alice", "wrong", "10.0.0.1"))).code == "bad_credentials"


async def test_failed_logins_are_limited_per_address(store: SQLiteStore, clock: Clock) -> None:
    auth = make_auth(store, clock, limiter=LoginLimiter(per_address=3))
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


async def test_prune_forever_prunes_at_once_and_then_again_each_interval(
    auth: Authenticator, store: SQLiteStore
) -> None:
    first = await auth.login("alice", PASSWORD, None)
    await auth.logout(first.token)
    pruning = asyncio.create_task(auth.prune_forever(every=0.05))
    try:
        await until_gone(store, first.token)
        second = await auth.login("alice", PASSWORD, None)
        await auth.logout(second.token)
        await until_gone(store, second.token)  # a later round found it
    finally:
        pruning.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pruning


async def until_gone(store: SQLiteStore, token: str) -> None:
    deadline = time.monotonic() + 10.0
    while await store.get_session(token_digest(token)) is not None:
        assert time.monotonic() < deadline, "the session was not pruned"
        await asyncio.sleep(0.01)


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


def test_the_limiter_follows_the_documented_rule() -> None:
    # security.md and the module docstring: 5 free, then 2 s doubling up to 300 s; 100
    # failures per address within 300 s.
    limiter = LoginLimiter()
    assert [limiter.pause_after(n) for n in range(1, 15)] == [
        *[0.0] * 4,
        *[2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        300.0,
        300.0,
    ]
    assert limiter.pause_after(10**6) == 300.0  # no float overflow after years of guessing
    for i in range(100):
        assert limiter.check(f"user-{i}", "office", 0.0) is None
        limiter.record_failure(f"user-{i}", "office", 0.0)
    assert limiter.check("user-100", "office", 10.0) == 290.0
    assert limiter.check("user-100", "office", 300.0) is None


def test_the_limiter_delays_grow_per_pair() -> None:
    limiter = LoginLimiter(free=3, delay=1.0, max_delay=10.0)
    now = 0.0
    for _ in range(3):
        assert limiter.check("alice", "a", now) is None
        limiter.record_failure("alice", "a", now)
    waits = []
    for _ in range(6):
        wait = limiter.check("alice", "a", now)
        assert wait is not None
        waits.append(wait)
        assert limiter.check("alice", "a", now + wait / 2) == wait / 2  # it counts down
        now += wait
        assert limiter.check("alice", "a", now) is None
        limiter.record_failure("alice", "a", now)
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_the_limiter_leaves_the_same_user_at_another_address_alone() -> None:
    limiter = LoginLimiter(free=2, delay=5.0, max_delay=60.0)
    for _ in range(10):
        limiter.record_failure("alice", "attacker", 0.0)
    assert limiter.check("alice", "attacker", 0.0) == 60.0
    assert limiter.check("alice", "office", 0.0) is None
    assert limiter.check("alice", None, 0.0) is None  # no address is a pair of its own too
    assert limiter.check("bob", "attacker", 0.0) is None


def test_the_limiter_lets_many_users_behind_one_address_fail_until_the_ceiling() -> None:
    limiter = LoginLimiter(free=5, per_address=50, window=300.0)
    # An office NAT: a dozen agents, each mistyping four times, none held up.
    for round_ in range(4):
        for user in range(12):
            now = round_ * 10.0 + user
            assert limiter.check(f"agent-{user}", "nat", now) is None
            limiter.record_failure(f"agent-{user}", "nat", now)
    assert all(limiter.check(f"agent-{u}", "nat", 50.0) is None for u in range(12))
    limiter.record_failure("agent-12", "nat", 50.0)
    limiter.record_failure("agent-13", "nat", 50.0)  # the 50th failure from that address
    # Now everyone there waits until the first of them (at t=0) leaves the window.
    assert limiter.check("agent-0", "nat", 60.0) == 240.0
    assert limiter.check("someone-new", "nat", 60.0) == 240.0
    assert limiter.check("agent-0", "home", 60.0) is None
    assert limiter.check("agent-0", "nat", 300.0) is None


def test_the_limiter_ceiling_is_not_reset_by_the_attackers_own_success() -> None:
    limiter = LoginLimiter(per_address=10, window=100.0)
    for i in range(9):
        limiter.record_failure(f"victim-{i}", "evil", float(i))
    # Its own account: the attempt is recorded as a failure first, then taken back.
    limiter.record_failure("mine", "evil", 9.0)
    assert limiter.check("victim-0", "evil", 9.0) == 91.0
    limiter.record_success("mine", "evil", 9.0)
    assert limiter.check("victim-9", "evil", 9.0) is None
    limiter.record_failure("victim-9", "evil", 9.0)
    assert limiter.check("victim-10", "evil", 9.0) == 91.0


def test_a_success_clears_the_pair() -> None:
    limiter = LoginLimiter(free=2, delay=5.0)
    for t in range(4):
        limiter.record_failure("alice", "a", float(t))
    limiter.record_failure("alice", "b", 3.0)
    assert limiter.check("alice", "a", 4.0) is not None
    limiter.record_failure("alice", "a", 100.0)  # the attempt, before its password is checked
    limiter.record_success("alice", "a", 100.0)
    assert limiter.check("alice", "a", 100.0) is None
    limiter.record_failure("alice", "a", 100.0)
    assert limiter.check("alice", "a", 100.0) is None  # free failures again
    limiter.record_failure("alice", "b", 3.0)
    assert limiter.check("alice", "b", 3.0) == 5.0  # only that address's pair was cleared


def test_a_quiet_pair_starts_over() -> None:
    limiter = LoginLimiter(free=1, delay=10.0, forget_after=3600.0)
    for _ in range(3):
        limiter.record_failure("alice", "a", 0.0)
    assert limiter.check("alice", "a", 0.0) == 40.0
    limiter.record_failure("alice", "a", 3600.0)
    assert limiter.check("alice", "a", 3600.0) == 10.0


def test_a_clock_stepping_back_does_not_stretch_the_wait() -> None:
    limiter = LoginLimiter(free=1, delay=5.0)
    limiter.record_failure("alice", "a", 1000.0)
    assert limiter.check("alice", "a", 10.0) == 5.0


def test_the_limiter_memory_is_bounded() -> None:
    limiter = LoginLimiter(free=1, per_address=1, window=60.0, forget_after=60.0, max_keys=100)
    for i in range(10_000):
        limiter.record_failure(f"user-{i}" + "x" * 1000, f"addr-{i}" + "y" * 1000, i / 1000)
    assert len(limiter._pairs) == 100 and len(limiter._addresses.failures) == 100
    assert all(
        len(user) <= LoginLimiter.KEY_LENGTH and len(address or "") <= LoginLimiter.KEY_LENGTH
        for user, address in limiter._pairs
    )
    # The newest stay tracked; the oldest were let go.
    assert limiter.check("user-9999" + "x" * 1000, None, 10.0) is None
    assert limiter.check("user-9999" + "x" * 1000, "addr-9999" + "y" * 1000, 10.0) is not None
    assert limiter.check("user-0" + "x" * 1000, "addr-0" + "y" * 1000, 10.0) is None
    # Stale entries go first, whatever the cap.
    limiter.record_failure("late", "late", 1000.0)
    assert list(limiter._pairs) == [("late", "late")]
    assert list(limiter._addresses.failures) == ["late"]


def test_the_limiter_rejects_nonsense_settings() -> None:
    for settings in (
        {"free": 0},
        {"delay": 0},
        {"delay": 600.0, "max_delay": 300.0},
        {"forget_after": 0},
        {"per_address": 0},
        {"window": 0},
        {"max_keys": 0},
    ):
        with pytest.raises(ValueError):
            LoginLimiter(**settings)


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
