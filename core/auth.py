"""Logins: argon2id passwords, session and API tokens, and a brake on password guessing.

Passwords. argon2id through argon2-cffi's `PasswordHasher` with the library defaults, which are
RFC 9106's "second recommended" (low-memory) profile: 64 MiB of memory, 3 passes, 4 lanes, a
16-byte random salt and a 32-byte hash. One hash takes 50-300 ms on a small server. Each stored
hash carries its own parameters (``$argon2id$v=19$m=65536,t=3,p=4$...``), so raising them later
needs no migration: `needs_rehash` spots an old hash at the next successful login. Passwords are
NFKC-normalised first, so the same password typed on another keyboard or OS still matches.

Hashing is slow on purpose, so it never runs on the event loop: it runs on a small pool of
threads of its own (argon2 releases the GIL). The pool's size also caps what a burst of logins
can cost: at most `HASH_THREADS` hashes at once, each 64 MiB; the rest wait their turn.

Tokens. 32 random bytes (256 bits), URL-safe base64, behind a prefix that says what the string
is: ``ses_`` a console session, ``api_`` an API token. A token found in a log or a paste tells
at once what it opens and what to revoke. The store keeps only sha256(token): a database copy
lets no one in, and since a token is random rather than chosen by a person, a fast unsalted
hash is enough (there is no dictionary to try).

Guessing. `LoginLimiter` slows failed logins down per (username, client address) pair, so a
guesser slows only itself: the real user at another address logs in as usual. A pair's first 5
failures in a row cost nothing; after the 5th the next attempt must wait 2 s from the latest
failure, after the 6th 4 s, doubling with each further failure up to 300 s. A success from that
address clears the pair, and a pair with no failure for an hour starts over. Separately an
address that failed 100 times within the last 300 s, whatever usernames it named, is refused
until the oldest of those leaves the window: one address trying many usernames is stopped,
while dozens of agents mistyping behind one office NAT are not. A refused attempt does not
count. The Authenticator refuses with `rate_limited` and the seconds to wait.

Ended sessions. `Authenticator.prune_forever` deletes expired and revoked sessions from the
store when the host starts and every `PRUNE_INTERVAL` (an hour) after.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import re
import secrets
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.model import Role
from store.base import ApiToken, SessionRecord, Store

if TYPE_CHECKING:  # core.config checks config passwords with check_password_rules
    from core.config import HostConfig

__all__ = [
    "API_PREFIX",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "SESSION_PREFIX",
    "AuthError",
    "Authenticator",
    "LoginLimiter",
    "PasswordError",
    "Principal",
    "Session",
    "check_password_rules",
    "hash_password",
    "needs_rehash",
    "new_token",
    "token_digest",
    "verify_password",
]

log = logging.getLogger("inbox_tui.auth")

T = TypeVar("T")

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
SESSION_PREFIX = "ses_"
API_PREFIX = "api_"
API_TOKEN_ID_PREFIX = "tok_"
# A real token is 47 characters; anything much longer is not worth hashing.
MAX_TOKEN_LENGTH = 128
MAX_TOKEN_NAME_LENGTH = 200
HASH_THREADS = min(4, os.cpu_count() or 1)
# Ended sessions are dead rows, never trusted (every use of a token checks its expiry and
# revocation): pruning only keeps the table from growing with every login, and hourly is
# often enough for that.
PRUNE_INTERVAL = 3600.0

DEFAULT_HASHER = PasswordHasher()
_hash_pool = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="argon2")

# One message for an unknown user and a wrong password, so a login form never confirms
# which usernames exist.
BAD_CREDENTIALS = "wrong username or password"

AuthCode = Literal["bad_credentials", "disabled", "rate_limited", "bad_token", "expired"]
TokenKind = Literal["session", "api"]

_RANK = {Role.AGENT: 0, Role.SUPERVISOR: 1, Role.ADMIN: 2}


class PasswordError(ValueError):
    """A new password breaks the length rules; the message says which."""


class AuthError(Exception):
    """A login or token was refused. `code` is for programs, `message` for people."""

    def __init__(self, code: AuthCode, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code: AuthCode = code
        self.message = message
        self.retry_after = retry_after  # seconds, for rate_limited

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# -- passwords --------------------------------------------------------------------------------


async def _off_loop(fn: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(_hash_pool, fn, *args)


def _normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def check_password_rules(password: str) -> None:
    """PasswordError unless `password` may be set: 8 to 1024 characters."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordError(
            f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordError(
            f"the password is too long: use at most {MAX_PASSWORD_LENGTH} characters"
        )


async def hash_password(password: str, *, hasher: PasswordHasher = DEFAULT_HASHER) -> str:
    """The argon2id hash of a new password; PasswordError if it breaks the length rules."""
    check_password_rules(password)
    return await _off_loop(hasher.hash, _normalise(password))


async def verify_password(
    password_hash: str, password: str, *, hasher: PasswordHasher = DEFAULT_HASHER
) -> bool:
    """Whether `password` matches; InvalidHashError if `password_hash` is not a hash."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False  # could never have been set
    try:
        return await _off_loop(hasher.verify, password_hash, _normalise(password))
    except VerificationError:
        return False


def needs_rehash(password_hash: str, *, hasher: PasswordHasher = DEFAULT_HASHER) -> bool:
    """Whether the hash was made with other parameters than `hasher` uses now."""
    return hasher.check_needs_rehash(password_hash)


# -- tokens -----------------------------------------------------------------------------------


def new_token(prefix: str = "") -> str:
    """A fresh secret: `prefix` then 32 random bytes in URL-safe base64."""
    return prefix + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the store keeps instead of the token: its sha256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


# -- rate limiting ----------------------------------------------------------------------------


class _Window:
    """Failure times per key within a sliding window, for a bounded number of keys."""

    def __init__(self, limit: int, window: float, max_keys: int) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        # Ordered by latest failure, oldest first, so eviction looks at the front only.
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, key: str, now: float) -> float:
        times = self.failures.get(key)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self.failures[key]
            return 0.0
        # `times` keeps only the latest `limit` failures: when full, the oldest of them must
        # leave the window before the next attempt.
        return times[0] + self.window - now if len(times) >= self.limit else 0.0

    def add(self, key: str, now: float) -> None:
        times = self.failures.pop(key, None) or deque(maxlen=self.limit)
        times.append(now)
        self.failures[key] = times
        while self.failures:
            oldest_key, oldest = next(iter(self.failures.items()))
            stale = oldest[-1] <= now - self.window
            if not stale and len(self.failures) <= self.max_keys:
                break
            # Past the cap the least recently failing key goes even if not stale: forgetting
            # some counts is better than memory growing with every address on the internet.
            del self.failures[oldest_key]

    def take_back(self, key: str, at: float) -> None:
        times = self.failures.get(key)
        if times is not None and at in times:
            times.remove(at)
            if not times:
                del self.failures[key]  # eviction relies on every entry holding a time


class _Streak:
    """One (username, address) pair's failures in a row, and when the latest was."""

    __slots__ = ("failures", "latest")

    def __init__(self, latest: float) -> None:
        self.failures = 0
        self.latest = latest


class LoginLimiter:
    """Growing delays per (username, address) pair, under a high ceiling per address;
    sans-I/O, the clock passed in.

    The pair's first `free` failures in a row cost nothing. From then on the next attempt
    waits `pause_after(failures)` from the latest failure: `delay` seconds after the
    `free`-th, doubling with each further failure up to `max_delay`. A success clears the
    pair; a pair with no failure for `forget_after` seconds starts over. Apart from that an
    address is refused while it has `per_address` failures within the last `window`
    seconds, whichever usernames they named; a success does not clear that count, or one
    account the attacker owns would reset it for guessing everyone else's.

    `check` says how long to wait. A refused attempt is not a failure, so retrying too early
    does not push the wait further out. Keys are truncated and at most `max_keys` pairs and
    `max_keys` addresses are tracked, least recently failing first to go: past that many
    busy keys some counts are forgotten, a bounded leak rather than unbounded memory.
    """

    KEY_LENGTH = 256

    def __init__(
        self,
        *,
        free: int = 5,
        delay: float = 2.0,
        max_delay: float = 300.0,
        forget_after: float = 3600.0,
        per_address: int = 100,
        window: float = 300.0,
        max_keys: int = 10_000,
    ) -> None:
        if free < 1 or not 0 < delay <= max_delay or forget_after <= 0:
            raise ValueError(
                "LoginLimiter needs free >= 1, 0 < delay <= max_delay and forget_after > 0"
            )
        if per_address < 1 or window <= 0 or max_keys < 1:
            raise ValueError("LoginLimiter per_address, window and max_keys must be positive")
        self.free = free
        self.delay = delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_keys = max_keys
        # Ordered by latest failure, oldest first, so eviction looks at the front only.
        self._pairs: OrderedDict[tuple[str, str | None], _Streak] = OrderedDict()
        self._addresses = _Window(per_address, window, max_keys)

    def pause_after(self, failures: int) -> float:
        """How long a pair waits after its `failures`-th failure in a row."""
        if failures < self.free:
            return 0.0
        # The exponent is capped so that years of failures cannot overflow a float.
        return min(self.max_delay, self.delay * 2.0 ** min(failures - self.free, 64))

    def _key(self, user: str, address: str | None) -> tuple[str, str | None]:
        n = self.KEY_LENGTH
        return user[:n], (None if address is None else address[:n])

    def _streak(self, key: tuple[str, str | None], now: float) -> _Streak | None:
        streak = self._pairs.get(key)
        if streak is not None and now - streak.latest >= self.forget_after:
            del self._pairs[key]
            return None
        return streak

    def check(self, user: str, address: str | None, now: float) -> float | None:
        """None if an attempt is allowed now, else the seconds to wait."""
        key = self._key(user, address)
        wait = 0.0
        streak = self._streak(key, now)
        if streak is not None:
            pause = self.pause_after(streak.failures)
            # min(): a clock stepping backwards must not stretch the wait past the pause.
            wait = min(pause, streak.latest + pause - now)
        if key[1] is not None:
            wait = max(wait, self._addresses.wait(key[1], now))
        return wait if wait > 0 else None

    def record_failure(self, user: str, address: str | None, now: float) -> None:
        key = self._key(user, address)
        streak = self._streak(key, now) or _Streak(now)
        streak.failures += 1
        streak.latest = max(streak.latest, now)
        self._pairs.pop(key, None)
        self._pairs[key] = streak
        while self._pairs:
            oldest = next(iter(self._pairs.values()))
            stale = now - oldest.latest >= self.forget_after
            if not stale and len(self._pairs) <= self.max_keys:
                break
            self._pairs.popitem(last=False)
        if key[1] is not None:
            self._addresses.add(key[1], now)

    def record_success(self, user: str, address: str | None, now: float) -> None:
        """Clear the pair, and take back the address failure recorded at `now`.

        The Authenticator records every attempt as a failure before verifying it (so that
        parallel guesses cannot all pass `check` while their hashes run) and takes it back
        here when the password was right.
        """
        key = self._key(user, address)
        self._pairs.pop(key, None)
        if key[1] is not None:
            self._addresses.take_back(key[1], now)


# -- the authenticator ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """A successful login. `token` is the only copy of the secret: hand it over once."""

    token: str = field(repr=False)
    agent: str
    role: Role
    expires_at: float


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for. `agent` is None for an API client not bound to an agent."""

    agent: str | None
    role: Role
    kind: TokenKind
    token_id: str  # the session's token digest, or the API token's tok_ id
    # An API token's channel list (store.base.ApiToken.channels); None for none.
    channels: tuple[str, ...] | None = None


MAX_TOKEN_CHANNELS = 20
# As core.model.Name, the type of a service channel's name.
_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")


def _bad_credentials(username: str, address: str | None) -> AuthError:
    log.warning("failed login for %.64r from %s", username, address)
    return AuthError("bad_credentials", BAD_CREDENTIALS)


def _lesser(a: Role, b: Role) -> Role:
    return a if _RANK[a] <= _RANK[b] else b


class Authenticator:
    """Logins, tokens and passwords over a `Store`; the clock is injected for tests."""

    def __init__(
        self,
        store: Store,
        *,
        session_ttl: float,
        clock: Callable[[], float] = time.time,
        limiter: LoginLimiter | None = None,
        hasher: PasswordHasher = DEFAULT_HASHER,
    ) -> None:
        if session_ttl <= 0:
            raise ValueError(f"session_ttl must be positive, not {session_ttl}")
        self._store = store
        self._ttl = session_ttl
        self._clock = clock
        self._limiter = limiter if limiter is not None else LoginLimiter()
        self._hasher = hasher
        self._dummy_hash: str | None = None

    # -- logins

    async def login(self, username: str, password: str, address: str | None) -> Session:
        """A new session for the agent, or AuthError bad_credentials / disabled / rate_limited."""
        now = self._clock()
        wait = self._limiter.check(username, address, now)
        if wait is not None:
            log.warning("login for %.64r from %s refused: rate limited", username, address)
            raise AuthError(
                "rate_limited",
                f"too many failed logins; try again in {math.ceil(wait)} seconds",
                retry_after=wait,
            )
        self._limiter.record_failure(username, address, now)
        agent = await self._store.get_agent(username)
        stored = await self._store.get_agent_password_hash(username) if agent else None
        if agent is None or stored is None:
            # Spend the same work as a real check, so the answer's timing does not say
            # whether the username exists (or has a password).
            await self._verify(username, await self._dummy(), password)
            raise _bad_credentials(username, address)
        if not await self._verify(username, stored, password):
            raise _bad_credentials(username, address)
        self._limiter.record_success(username, address, now)
        if agent.disabled:
            # Said only to someone who knows the password: it confirms nothing to a guesser.
            raise AuthError("disabled", f"the account {agent.id} is disabled; ask an admin")
        if needs_rehash(stored, hasher=self._hasher):
            await self._store.set_agent_password_hash(
                agent.id, await _off_loop(self._hasher.hash, _normalise(password))
            )
        token = new_token(SESSION_PREFIX)
        record = SessionRecord(
            token_digest=token_digest(token),
            agent=agent.id,
            role=agent.role,
            created_at=now,
            expires_at=now + self._ttl,
        )
        await self._store.save_session(record)
        log.info("login: %s from %s", agent.id, address)
        return Session(token=token, agent=agent.id, role=agent.role, expires_at=record.expires_at)

    async def _verify(self, username: str, stored: str, password: str) -> bool:
        try:
            return await verify_password(stored, password, hasher=self._hasher)
        except InvalidHashError:
            log.error("the stored password hash of %s is corrupt; set a new password", username)
            return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await _off_loop(self._hasher.hash, secrets.token_urlsafe(16))
        return self._dummy_hash

    # -- tokens

    async def authenticate(self, token: str, address: str | None) -> Principal:
        """Who `token` (a session or an API token) acts for; AuthError bad_token / expired /
        disabled otherwise. A token never grants more than its agent's current role."""
        now = self._clock()
        if len(token) <= MAX_TOKEN_LENGTH and token.startswith(SESSION_PREFIX):
            session = await self._store.get_session(token_digest(token))
            if session is not None and session.revoked_at is None:
                if session.expires_at <= now:
                    raise AuthError("expired", "the session has expired; log in again")
                role = await self._agent_role(session.agent, session.role)
                return Principal(session.agent, role, "session", session.token_digest)
        elif len(token) <= MAX_TOKEN_LENGTH and token.startswith(API_PREFIX):
            api = await self._store.get_api_token(token_digest(token))
            if api is not None and api.revoked_at is None:
                if api.expires_at is not None and api.expires_at <= now:
                    raise AuthError("expired", f"API token {api.id} has expired")
                role = api.role
                if api.agent is not None:
                    role = await self._agent_role(api.agent, api.role)
                return Principal(api.agent, role, "api", api.id, api.channels)
        log.info("unknown or revoked token from %s", address)
        raise AuthError("bad_token", "unknown or revoked token; log in again")

    async def _agent_role(self, agent_id: str, granted: Role) -> Role:
        # Checked on every use, so disabling or demoting an agent takes effect at once.
        agent = await self._store.get_agent(agent_id)
        if agent is None or agent.disabled:
            raise AuthError("disabled", f"the account {agent_id} is disabled")
        return _lesser(granted, agent.role)

    async def revoke(self, token: str) -> bool:
        """End a session or revoke an API token by its secret; False if it was not active."""
        if token.startswith(SESSION_PREFIX):
            return await self._store.revoke_session(token_digest(token), self._clock())
        if token.startswith(API_PREFIX):
            api = await self._store.get_api_token(token_digest(token))
            return api is not None and await self.revoke_api_token(api.id)
        return False

    async def logout(self, token: str) -> None:
        """End the session; logging out twice is harmless. An API token stays valid: a
        connection that used one may end, but only `revoke` withdraws the token itself."""
        if token.startswith(SESSION_PREFIX):
            await self._store.revoke_session(token_digest(token), self._clock())

    async def prune(self) -> int:
        """Delete expired and revoked sessions; returns how many."""
        return await self._store.prune_sessions(self._clock())

    async def prune_forever(self, every: float = PRUNE_INTERVAL) -> None:
        """Prune now, then every `every` seconds, until cancelled."""
        while True:
            try:
                pruned = await self.prune()
            except Exception:
                # A failing disk must not end pruning for the life of the host: the next
                # round tries again.
                log.exception("pruning sessions failed; trying again in %g s", every)
            else:
                if pruned:
                    log.info("pruned %d expired or revoked sessions", pruned)
            await asyncio.sleep(every)

    async def create_api_token(
        self,
        name: str,
        agent: str | None,
        role: Role,
        ttl: float | None,
        *,
        channels: Iterable[str] | None = None,
    ) -> tuple[str, ApiToken]:
        """A new API token: (the secret, shown once; its stored record). ValueError for a bad
        name, an unknown or disabled agent, a role above the agent's, a ttl <= 0, or a bad
        channel list (1 to MAX_TOKEN_CHANNELS channel names; the host's configuration is not
        consulted, so a channel added later can be listed now)."""
        name = name.strip()
        if not name or len(name) > MAX_TOKEN_NAME_LENGTH:
            raise ValueError(f"a token name must be 1 to {MAX_TOKEN_NAME_LENGTH} characters")
        listed = None if channels is None else tuple(dict.fromkeys(channels))
        if listed is not None:
            if not 1 <= len(listed) <= MAX_TOKEN_CHANNELS:
                raise ValueError(f"list 1 to {MAX_TOKEN_CHANNELS} channels, or none at all")
            bad = [c for c in listed if not _CHANNEL_NAME.match(c)]
            if bad:
                raise ValueError(f"not a channel name: {bad[0]!r} (1-64 of A-Z a-z 0-9 _ . @ + -)")
        if ttl is not None and not ttl > 0:
            raise ValueError(f"a token lifetime must be positive, not {ttl}")
        role = Role(role)
        if agent is not None:
            stored = await self._store.get_agent(agent)
            if stored is None:
                raise ValueError(f"no agent {agent!r}")
            if stored.disabled:
                raise ValueError(f"agent {agent} is disabled")
            if _RANK[role] > _RANK[stored.role]:
                raise ValueError(
                    f"role {role.value} is above agent {agent}'s role {stored.role.value}: "
                    "a token cannot grant more than its agent has"
                )
        now = self._clock()
        token = new_token(API_PREFIX)
        record = ApiToken(
            id=API_TOKEN_ID_PREFIX + secrets.token_hex(6),
            token_digest=token_digest(token),
            name=name,
            agent=agent,
            role=role,
            created_at=now,
            expires_at=None if ttl is None else now + ttl,
            channels=listed,
        )
        await self._store.save_api_token(record)
        return token, record

    async def revoke_api_token(self, token_id: str) -> bool:
        """Revoke by id; False if no such token is active."""
        return await self._store.revoke_api_token(token_id, self._clock())

    # -- passwords

    async def set_password(self, agent_id: str, password: str) -> int:
        """Set a new password and end the agent's sessions (the old password may be known to
        someone); returns how many sessions ended. PasswordError, or NotFound for no agent."""
        password_hash = await hash_password(password, hasher=self._hasher)
        await self._store.set_agent_password_hash(agent_id, password_hash)
        return await self._store.revoke_agent_sessions(agent_id, self._clock())

    async def seed(self, config: HostConfig) -> list[str]:
        """First start: store the config's agents not stored yet, and give those with a
        password in the config (`password = ...`) that password if they have none yet. Agents
        already stored are left as they are. Returns the ids whose password was seeded.

        Config passwords obey the same rules as any other (the config loader says which line
        breaks them); PasswordError here means a HostConfig built in code broke them."""
        stored = {a.id for a in await self._store.list_agents()}
        await self._store.upsert_agents(a for a in config.agents if a.id not in stored)
        seeded: list[str] = []
        for agent_id, password in config.seed_passwords.items():
            if await self._store.get_agent_password_hash(agent_id) is None:
                password_hash = await hash_password(password, hasher=self._hasher)
                await self._store.set_agent_password_hash(agent_id, password_hash)
                seeded.append(agent_id)
        return seeded
