"""Fixtures more than one test file needs: a fresh PostgreSQL database per test, and the NATS
server of the cluster tests.

The PostgreSQL tests run against a real server (on this machine: 127.0.0.1:5432, started by
.ci/ensure-postgres). Each test gets a database of its own, created empty and dropped after,
so tests never see each other's rows. An unreachable server fails those tests with the reason,
since CI must run them for real; INBOX_SKIP_POSTGRES=1 skips them instead, for a machine
without PostgreSQL.

The cluster tests that relay over a bus need a NATS server (127.0.0.1:4222, started by
.ci/ensure-nats; INBOX_TEST_NATS points at another). Each cluster's subjects are under an id
kept in its own database, so tests sharing the server never hear each other. An unreachable
server fails them; INBOX_SKIP_POSTGRES=1 skips them with the other cluster tests.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from store.postgres import redact

# A database the tests may connect to and create others from.
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_ADMIN_URL = os.environ.get("INBOX_TEST_POSTGRES") or LOCAL_POSTGRES
SKIP_POSTGRES = os.environ.get("INBOX_SKIP_POSTGRES", "") == "1"


def postgres_admin(statement: str) -> Any:
    """Run one statement on the admin database; returns its first value.

    In a thread with its own event loop: fixtures call it while the test's loop may be running.
    """

    async def run() -> Any:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            return await conn.fetchval(statement)
        finally:
            await conn.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run()).result()


def database_url(name: str) -> str:
    return urlunsplit(urlsplit(POSTGRES_ADMIN_URL)._replace(path=f"/{name}"))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    if SKIP_POSTGRES:
        pytest.skip("INBOX_SKIP_POSTGRES=1: the PostgreSQL tests are skipped")
    name = f"inbox_test_{secrets.token_hex(6)}"
    try:
        postgres_admin(f"CREATE DATABASE {name}")
    except (OSError, TimeoutError, asyncpg.PostgresError) as e:
        pytest.fail(
            f"PostgreSQL is not reachable at {redact(POSTGRES_ADMIN_URL)} ({e}): start it with "
            ".ci/ensure-postgres, point INBOX_TEST_POSTGRES at one, or set "
            "INBOX_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
        )
    try:
        yield database_url(name)
    finally:
        # FORCE: a test that failed halfway may have left a connection open.
        postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


NATS_URL = os.environ.get("INBOX_TEST_NATS") or "nats://127.0.0.1:4222"


@pytest.fixture
def nats_url(postgres_url: str) -> str:
    """The NATS server's URL, once it is seen to answer (a cluster also needs a database)."""
    where = urlsplit(NATS_URL)
    try:
        with socket.create_connection((where.hostname or "127.0.0.1", where.port or 4222), 2):
            pass
    except OSError as e:
        pytest.fail(
            f"NATS is not reachable at {NATS_URL} ({e}): start it with .ci/ensure-nats, point "
            "INBOX_TEST_NATS at one, or set INBOX_SKIP_POSTGRES=1 to skip the cluster tests"
        )
    return NATS_URL
