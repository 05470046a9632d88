"""What only the PostgreSQL store has, against a real server (a fresh database per test): its
migrations under several processes, the router lease and its fencing, writers in several
processes at once, lost connections, asyncpg's errors and the query plans. Every behaviour of
the `Store` protocol is tested on both backends in test_store.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from core.model import (
    Agent,
    ItemState,
    Participant,
    Role,
    SenderKind,
    WorkItem,
    format_number,
)
from core.service.election import Election
from store import StoreFenced, is_postgres_url, open_store, postgres_migrations
from store.base import (
    SessionRecord,
    StoreConflict,
    StoreError,
    StoreFull,
    StoreUnavailable,
    StoreVersionError,
)
from store.postgres import (
    _APPEND_MANY,
    ROUTER_WRITER,
    SQL_MESSAGES,
    SQL_OPEN_ITEMS,
    SQL_PENDING_OFFERS,
    TAKEOVER_LOCK_WAIT_S,
    PostgresStore,
    _classify,
    interactions_query,
    redact,
)
from store.rows import dump
from tests.conftest import postgres_admin
from tests.store_helpers import rows, schema_version


def item(item_id: str, state: ItemState = ItemState.QUEUED) -> WorkItem:
    return WorkItem(id=item_id, channel="chat", customer="c", created_at=1.0, state=state)


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def lease_pid(conn: asyncpg.Connection) -> int:
    pid = await conn.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'inbox-tui router lease'"
    )
    assert pid is not None, "no lease session"
    return int(pid)


async def acquire_within(store: PostgresStore, holder: str, seconds: float = 10.0) -> int:
    """acquire_router, tried again until the previous holder's session has ended."""
    deadline = time.monotonic() + seconds
    while (epoch := await store.acquire_router(holder)) is None:
        assert time.monotonic() < deadline, f"{holder} never got the routing role"
        await asyncio.sleep(0.05)
    return epoch


# -- opening and migrations ---------------------------------------------------------------


async def test_open_store_picks_the_backend_from_the_location(postgres_url: str) -> None:
    assert is_postgres_url(postgres_url) and is_postgres_url("postgres://h/db")
    assert not is_postgres_url("/var/lib/inbox-tui")
    store = await open_store(postgres_url)
    try:
        assert isinstance(store, PostgresStore)
        assert await schema_version(store) == postgres_migrations.latest_version()
    finally:
        await store.close()


async def test_several_processes_opening_at_once_migrate_once(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        versions = await rows(stores[0], "SELECT version FROM schema_version")
        assert versions == [(v,) for v in range(1, postgres_migrations.latest_version() + 1)]
        assert await rows(stores[0], "SELECT count(*) FROM counters") == [(3,)]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    async with PostgresStore(postgres_url):
        pass
    async with connected(postgres_url) as conn:
        await conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(StoreVersionError, match=r"schema version 99.*newer inbox-tui"):
        await PostgresStore(postgres_url).open()


async def test_an_upgrade_runs_only_the_missing_steps_and_a_failing_one_none(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PostgresStore(postgres_url) as s:
        number = await s.create_interaction(item="w", channel="chat", customer="c", opened_at=1)
    latest = postgres_migrations.latest_version()
    broken = "CREATE TABLE half (x integer); NOT SQL;"
    monkeypatch.setattr(
        postgres_migrations, "MIGRATIONS", [*postgres_migrations.MIGRATIONS, broken]
    )
    with pytest.raises(StoreError, match=f"schema version {latest + 1} failed"):
        await PostgresStore(postgres_url).open()
    async with connected(postgres_url) as conn:
        assert await postgres_migrations.current_version(conn) == latest
        assert await conn.fetchval("SELECT to_regclass('half')") is None
    step = "CREATE TABLE later (x integer); INSERT INTO later VALUES (42);"
    monkeypatch.setattr(
        postgres_migrations, "MIGRATIONS", [*postgres_migrations.MIGRATIONS[:-1], step]
    )
    async with PostgresStore(postgres_url) as s:
        assert await schema_version(s) == latest + 1
        assert await s.get_interaction(number.number) == number
        assert await rows(s, "SELECT x FROM later") == [(42,)]


async def test_an_unreachable_database_is_unavailable_and_named_without_its_password() -> None:
    url = "postgresql://postgres:hunter2@127.0.0.1:1/nothing"
    with pytest.raises(StoreUnavailable, match=r"postgres:\*\*\*@127\.0\.0\.1:1/nothing") as caught:
        await PostgresStore(url).open()
    assert "hunter2" not in str(caught.value)
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


# -- the router lease and fencing ---------------------------------------------------------


async def test_a_deposed_router_commits_nothing(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as a, PostgresStore(postgres_url) as b:
        assert a.router_lost.is_set()  # not the router yet
        assert await a.acquire_router("host-a pid 1") == 1
        assert a.router_epoch == 1 and not a.router_lost.is_set()
        assert await b.acquire_router("host-b pid 2") is None  # A holds it
        await a.apply_routing(items=[item("w1")])

        # A's database session is cut off, as a partition would: from a third connection.
        async with connected(postgres_url) as admin:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", await lease_pid(admin))
            async with asyncio.timeout(5):
                await a.router_lost.wait()  # A learns it at once
            assert a.router_epoch is None
            assert "closed" in (a.router_lost_reason or "")
            assert await acquire_within(b, "host-b pid 2") == 2
            assert await admin.fetch("SELECT epoch, holder FROM router_lease") == [
                (2, "host-b pid 2")
            ]

        with pytest.raises(StoreFenced, match="no longer holds the routing role"):
            await a.apply_routing(items=[item("w2")], audit=[])
        assert await b.get_item("w2") is None
        await b.apply_routing(items=[item("w3")])
        assert [i.id for i in await b.load_open_items()] == ["w1", "w3"]


async def test_the_database_fences_a_router_that_has_not_noticed(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as a:
        assert await a.acquire_router("host-a") == 1
        # Another holder's bump, seen by the database before A hears of anything.
        async with connected(postgres_url) as other:
            await other.execute("UPDATE router_lease SET epoch = 2, holder = 'host-b'")
        commits = a.stats.commits
        fenced, record = await asyncio.gather(
            a.apply_routing(items=[item("w1")], offers=[]),
            a.create_interaction(item="w9", channel="chat", customer="c", opened_at=1),
            return_exceptions=True,
        )
        assert isinstance(fenced, StoreFenced)
        assert "epoch 1 was superseded by epoch 2" in str(fenced)
        assert await a.get_item("w1") is None
        # Fencing fails the routing op alone: the write batched with it commits.
        assert a.stats.commits == commits + 1
        assert await a.get_interaction(record.number) == record  # type: ignore[union-attr]


async def test_a_takeover_waits_for_a_routing_transaction_past_its_check(
    postgres_url: str,
) -> None:
    async with PostgresStore(postgres_url) as b, connected(postgres_url) as router:
        # The old router's transaction has read its epoch FOR SHARE and not yet committed.
        tx = router.transaction()
        await tx.start()
        await router.execute("SELECT epoch FROM router_lease WHERE id = 1 FOR SHARE")
        await router.execute(
            "INSERT INTO work_items (id, state, data) VALUES ('w1', 'queued', $1)",
            '{"id":"w1","channel":"chat","customer":"c","created_at":1.0}',
        )
        takeover = asyncio.create_task(b.acquire_router("host-b"))
        await asyncio.sleep(0.3)
        assert not takeover.done()  # the bump waits for that decision to commit
        await tx.commit()
        assert await asyncio.wait_for(takeover, 5) == 1
        # So the new holder, loading after its bump, sees what the old one decided.
        assert [i.id for i in await b.load_open_items()] == ["w1"]


async def test_a_routing_transaction_left_open_by_a_frozen_router_does_not_block_a_takeover(
    postgres_url: str,
) -> None:
    """The router froze (SIGSTOP, a stalled VM) in the middle of a routing batch, past its
    fencing check: its transaction holds router_lease FOR SHARE and its rows, and says
    nothing more. The server ends that transaction after the lease timeout, as it ends the
    silent lease, so the next holder's bump goes through and nothing of the frozen batch is
    kept."""
    async with (
        PostgresStore(postgres_url, lease_timeout=1.0) as a,
        PostgresStore(postgres_url) as b,
    ):
        assert await a.acquire_router("a") == 1
        frozen = await a._writer_connection()  # what A's writer was doing when it froze
        await frozen.execute("BEGIN")
        await frozen.execute("SELECT epoch FROM router_lease WHERE id = 1 FOR SHARE")
        await frozen.execute(
            "INSERT INTO work_items (id, state, data) VALUES ('w1', 'queued', $1)",
            '{"id":"w1","channel":"chat","customer":"c","created_at":1.0}',
        )
        watch = a._lease_watch
        assert watch is not None
        watch.cancel()  # no more pings either: the whole process is frozen
        async with asyncio.timeout(10):  # not COMMAND_TIMEOUT_S, and not for ever
            assert await acquire_within(b, "b") == 2
        assert await b.get_item("w1") is None


async def test_a_takeover_ends_the_writer_of_a_router_frozen_mid_pipeline(
    postgres_url: str,
) -> None:
    """A router frozen inside a pipelined batch, before its Sync, keeps its transaction: the
    server arms idle_in_transaction_session_timeout only after a Sync. Here A's writer has
    that timeout off, which leaves its transaction open the same way, holding the fencing
    check's lock and a conversation's row. B, once A's lease session is gone, ends A's writer
    and takes over at once; nothing of the frozen batch is kept, and B writes to that
    conversation without waiting."""
    async with (
        PostgresStore(postgres_url) as a,
        PostgresStore(postgres_url) as b,
        connected(postgres_url) as admin,
    ):
        record = await a.create_interaction(item="w0", channel="chat", customer="c", opened_at=1)
        assert await a.acquire_router("a") == 1
        await a.apply_routing(items=[item("w1")])  # A's writer, named a router's
        frozen = await a._writer_connection()
        await frozen.execute("SET idle_in_transaction_session_timeout = 0")
        await frozen.execute("BEGIN")
        await frozen.execute("SELECT epoch FROM router_lease WHERE id = 1 FOR SHARE")
        await frozen.execute(
            "UPDATE interactions SET last_seq = last_seq + 1 WHERE number = $1", record.number
        )
        await frozen.execute(
            "INSERT INTO work_items (id, state, data) VALUES ('w2', 'queued', $1)",
            '{"id":"w2","channel":"chat","customer":"c","created_at":1.0}',
        )
        watch = a._lease_watch
        assert watch is not None
        watch.cancel()  # the whole process is frozen: no pings either
        # A plain reader of the table (a status page) is no router writer: left alone.
        await admin.execute("BEGIN")
        await admin.fetchval("SELECT epoch FROM router_lease WHERE id = 1")
        writer_pid = frozen.get_server_pid()
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", await lease_pid(admin))
        started = time.monotonic()
        async with asyncio.timeout(5):  # not COMMAND_TIMEOUT_S, and not for ever
            assert await acquire_within(b, "b") == 2
            message, _ = await b.append_message(
                record.number, SenderKind.AGENT, "ana", "hello", "m1", created_at=2
            )
        assert time.monotonic() - started < TAKEOVER_LOCK_WAIT_S  # no lock waited for
        assert message.seq == 1  # the frozen batch's count is gone
        assert await b.get_item("w2") is None
        assert await admin.fetchval("SELECT 1") == 1
        await admin.execute("COMMIT")
        assert not await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", writer_pid
        )
        with pytest.raises(
            (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, ConnectionError)
        ):
            await frozen.execute("COMMIT")  # the frozen one, woken: its batch is gone
        # B's writer is named a router's now, and still is when B takes the role again:
        # that takeover leaves it alone.
        await b.apply_routing(items=[item("w3")])
        mine = (await b._writer_connection()).get_server_pid()
        await b.release_router()
        assert await b.acquire_router("b") == 3
        assert (
            await admin.fetchval(
                "SELECT application_name FROM pg_stat_activity WHERE pid = $1", mine
            )
            == ROUTER_WRITER
        )
        await b.apply_routing(items=[item("w4")])
        assert (await b._writer_connection()).get_server_pid() == mine
        assert [i.id for i in await b.load_open_items()] == ["w1", "w3", "w4"]


async def test_a_takeover_held_up_by_a_session_that_is_not_a_router_writer_says_so(
    postgres_url: str,
) -> None:
    async with PostgresStore(postgres_url) as b, connected(postgres_url) as other:
        await other.execute("SET idle_in_transaction_session_timeout = 0")
        await other.execute("BEGIN")
        await other.execute("SELECT epoch FROM router_lease WHERE id = 1 FOR SHARE")
        with pytest.raises(StoreError, match="not a router writer holds router_lease"):
            await b.acquire_router("b")
        assert b.router_epoch is None and b.router_lost.is_set()
        # A host's election says so (its /healthz shows it) and keeps trying.
        election = Election(b, "b", retry=0.05)
        won = asyncio.create_task(election.win())
        async with asyncio.timeout(10):
            while not election.waiting_because.startswith("the routing role cannot be taken"):
                await asyncio.sleep(0.05)
        assert "not a router writer" in election.waiting_because
        await other.execute("COMMIT")
        async with asyncio.timeout(10):
            assert await won == 1


async def test_release_then_acquire_again(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as a, PostgresStore(postgres_url) as b:
        assert await a.acquire_router("a") == 1
        with pytest.raises(StoreError, match="already holds"):
            await a.acquire_router("a")
        term = a.router_lost
        await a.release_router()
        assert term.is_set() and a.router_lost_reason == "released" and a.router_epoch is None
        with pytest.raises(StoreFenced):
            await a.apply_routing(items=[item("w1")])
        assert await acquire_within(b, "b") == 2
        await b.release_router()
        assert await a.acquire_router("a") == 3
        assert not a.router_lost.is_set() and term is not a.router_lost
        await a.apply_routing(items=[item("w1")])
        assert await a.get_item("w1") == item("w1")
    # close() released it: the role is free.
    async with PostgresStore(postgres_url) as c:
        assert await c.acquire_router("c") == 4


async def test_a_router_that_stops_pinging_is_dropped_by_the_server(postgres_url: str) -> None:
    async with (
        PostgresStore(postgres_url, lease_timeout=1.0) as a,
        PostgresStore(postgres_url) as b,
    ):
        assert await a.acquire_router("a") == 1
        watch = a._lease_watch
        assert watch is not None
        watch.cancel()  # A's loop freezes: no more pings
        async with asyncio.timeout(10):
            await a.router_lost.wait()  # the server ended the session (idle_session_timeout)
        assert await acquire_within(b, "b") == 2


async def test_a_silent_server_ends_the_term(postgres_url: str) -> None:
    async with PostgresStore(postgres_url, lease_timeout=1.0) as a:
        assert await a.acquire_router("a") == 1
        async with connected(postgres_url) as admin:
            pid = await lease_pid(admin)
        try:
            os.kill(pid, signal.SIGSTOP)  # the lease's server process stops answering
        except (PermissionError, ProcessLookupError):
            pytest.skip("the PostgreSQL server is not a process this test may stop")
        try:
            async with asyncio.timeout(5):
                await a.router_lost.wait()
            assert "failed" in (a.router_lost_reason or "")
        finally:
            os.kill(pid, signal.SIGCONT)


# -- several writers at once --------------------------------------------------------------


async def test_two_processes_appending_to_the_same_conversations(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as a, PostgresStore(postgres_url) as b:
        numbers = [
            (
                await a.create_interaction(item=f"w{i}", channel="chat", customer="c", opened_at=1)
            ).number
            for i in range(2)
        ]

        async def say(store: PostgresStore, number: str, msg_id: str) -> tuple[int, bool]:
            message, duplicate = await store.append_message(
                number, SenderKind.CUSTOMER, "c", msg_id, msg_id, 1.0
            )
            return message.seq, duplicate

        # Each batch touches both conversations, A's in one order and B's in the other: the
        # lock orders that deadlock. Every twentieth id is sent by both, as a retry would be.
        sends: list[Any] = []
        for i in range(300):
            order = numbers if i % 2 else numbers[::-1]
            sends.append(say(a, order[0], f"m{i}"))
            sends.append(say(b, order[1], f"m{i}"))
            if i % 20 == 0:
                sends.append(say(b, order[0], f"m{i}"))
        results = await asyncio.wait_for(asyncio.gather(*sends), 60)
        assert sum(duplicate for _, duplicate in results) == 15
        for number in numbers:
            messages = await a.list_messages(number, limit=10_000)
            assert [m.seq for m in messages] == list(range(1, 301))
            assert len({m.client_msg_id for m in messages}) == 300
        # Numbers too, from both.
        created = await asyncio.gather(
            *(
                s.create_interaction(item=f"x{i}", channel="chat", customer="c", opened_at=2)
                for i in range(50)
                for s in (a, b)
            )
        )
        assert sorted(r.number for r in created) == [f"IMS{1003 + i:07d}" for i in range(100)]


# -- connections lost ---------------------------------------------------------------------


def end_sessions(name: str) -> None:
    """End every session of database `name` and wait until they are gone."""
    deadline = time.monotonic() + 10
    while postgres_admin(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ):
        assert time.monotonic() < deadline, f"sessions of {name} do not end"
        time.sleep(0.05)


async def test_lost_connections_fail_writes_as_unavailable_and_come_back(
    postgres_url: str,
) -> None:
    name = postgres_url.rpartition("/")[2]
    async with PostgresStore(postgres_url) as s:
        number = await s.create_interaction(item="w", channel="chat", customer="c", opened_at=1)
        # Every session of the store ends, as in a database restart; it reconnects by itself.
        end_sessions(name)
        message, _ = await s.append_message(number.number, SenderKind.AGENT, "a", "x", "m1", 1)
        assert message.seq == 1
        assert len(await s.list_messages(number.number)) == 1
        # While the database refuses connections, writes and reads are unavailable.
        postgres_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        try:
            end_sessions(name)
            with pytest.raises(StoreUnavailable, match="nothing of it was stored"):
                await s.append_message(number.number, SenderKind.AGENT, "a", "y", "m2", 1)
            with pytest.raises(StoreUnavailable, match="cannot connect"):
                await s.list_messages(number.number)
            assert s.stats.failing is not None
        finally:
            postgres_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        message, _ = await s.append_message(number.number, SenderKind.AGENT, "a", "y", "m2", 1)
        assert message.seq == 2 and s.stats.failing is None


def test_postgres_errors_are_classified() -> None:
    assert isinstance(_classify(asyncpg.exceptions.DiskFullError("full"), "x"), StoreFull)
    for unavailable in (
        asyncpg.exceptions.AdminShutdownError("shutting down"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("standby"),
        asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
    ):
        assert type(_classify(unavailable, "x")) is StoreUnavailable, unavailable
    conflict = _classify(asyncpg.exceptions.UniqueViolationError("dup"), "x")
    assert type(conflict) is StoreConflict
    assert type(_classify(asyncpg.exceptions.SyntaxOrAccessError("?"), "x")) is StoreError


async def test_a_new_interaction_is_stored_as_it_encodes_and_numbered_past_seven_digits(
    postgres_url: str,
) -> None:
    async with PostgresStore(postgres_url) as s, connected(postgres_url) as conn:
        made = await s.create_interaction(
            item="w1",
            channel="chat",
            customer="c",
            opened_at=1.5,
            customer_name='Ada "quoted" \u00e9',
            participants=(Participant(agent="ann", joined_at=1.5),),
        )
        assert made.number == "IMS0001001"
        stored = await conn.fetchval("SELECT data FROM interactions WHERE number = $1", made.number)
        assert stored == dump(made)
        assert await conn.fetch("SELECT agent FROM participants") == [("ann",)]
        # format_number's width is a minimum: an eighth digit is added, not cut.
        await conn.execute("UPDATE counters SET value = 9999999 WHERE name = 'IMS'")
        numbers = [
            (await s.create_interaction(item=f"x{i}", channel="chat", customer="c", opened_at=2))
            for i in range(2)
        ]
        assert [r.number for r in numbers] == [format_number("IMS", 10**7), "IMS10000001"]
        assert numbers[0].number == "IMS10000000"


async def test_a_batch_of_appends_reads_only_the_rows_it_writes(postgres_url: str) -> None:
    # With 50,000 messages stored, the one statement of a batch's appends must look its
    # conversations and ids up by key, not read the tables whole (written with joins, an
    # earlier version scanned every message on every batch).
    async with PostgresStore(postgres_url), connected(postgres_url) as conn:
        await conn.execute(
            "INSERT INTO interactions (number, archived, opened_at, data) "
            "SELECT 'IMS' || n, false, n, '{}' FROM generate_series(1, 5000) AS n"
        )
        await conn.execute(
            "INSERT INTO messages (interaction, seq, client_msg_id, data) "
            "SELECT 'IMS' || (n % 5000 + 1), n, 'c' || n, '{}' "
            "FROM generate_series(1, 50000) AS n"
        )
        await conn.execute("ANALYZE interactions; ANALYZE messages")
        numbers = [f"IMS{n}" for n in range(1, 41)]
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                f"EXPLAIN {_APPEND_MANY}",
                numbers,
                [f"x{n}" for n in range(40)],
                ["a"] * 40,
                ["b"] * 40,
            )
        )
        assert "Seq Scan on messages" not in plan, plan
        assert "Seq Scan on interactions" not in plan, plan


async def test_the_key_queries_use_their_indexes(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as s, connected(postgres_url) as conn:
        await s.create_interaction(item="w", channel="chat", customer="c", opened_at=1)
        # Tiny tables are read whole anyway; what matters is that an index serves them.
        await conn.execute("SET enable_seqscan = off")
        for sql, params, index in [
            (SQL_OPEN_ITEMS, (), "work_items_open"),
            (SQL_PENDING_OFFERS, (), "offers_one_pending"),
            (interactions_query("ann", None)[0], ("ann", 10, 0), "participants_pkey"),
            (interactions_query(None, None)[0], (10, 0), "interactions_recent"),
            (SQL_MESSAGES, ("IMS0001001", 0, 10), "messages_pkey"),
        ]:
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *params))
            assert index in plan, (sql, plan)


async def test_a_read_whose_connection_dies_after_it_still_returns_its_rows(
    postgres_url: str,
) -> None:
    # The read succeeds, then its connection is killed before it goes back to the pool, so
    # the pool's reset meets a dead connection. The rows were read: the caller gets them, not
    # the driver's error (a host stopping its service after losing the database crashed on
    # it instead of standing by).
    async def read_then_lose_the_connection(conn: Any) -> list[Any]:
        got = await conn.fetch("SELECT pg_backend_pid()")
        postgres_admin(f"SELECT pg_terminate_backend({got[0][0]})")
        await asyncio.sleep(0.2)  # the server has closed its end before the pool resets it
        return list(got)

    async with PostgresStore(postgres_url) as s:
        got = await s._on_pool("reading", read_then_lose_the_connection)
        assert len(got) == 1
        assert (await s._rows("SELECT 1"))[0][0] == 1  # and the pool serves the next read


async def test_lookups_made_together_are_answered_by_one_read(postgres_url: str) -> None:
    # Consoles resuming on a new router by the thousand each look up their session and their
    # agent: made in the same turn of the event loop, the look-ups share one read, and each
    # still gets its own answer (None for an unknown key, the same for a key asked twice).
    async with PostgresStore(postgres_url) as s:
        await s.upsert_agents([Agent(id=f"a{i}", display_name=f"Agent {i}") for i in range(50)])
        sessions = [
            SessionRecord(
                token_digest=f"d{i}", agent=f"a{i}", role=Role.AGENT, created_at=1, expires_at=9
            )
            for i in range(50)
        ]
        for session in sessions:
            await s.save_session(session)
        reads = 0
        on_pool = s._on_pool

        async def counted(doing: str, fn: Any) -> Any:
            nonlocal reads
            reads += 1
            return await on_pool(doing, fn)

        s._on_pool = counted  # type: ignore[method-assign]
        found = await asyncio.gather(
            *(s.get_session(f"d{i}") for i in range(50)),
            s.get_session("d7"),
            s.get_session("unknown"),
            *(s.get_agent(f"a{i}") for i in range(50)),
            s.get_agent("nobody"),
        )
        assert found[:50] == sessions
        assert found[50:52] == [sessions[7], None]
        assert [a.id for a in found[52:102]] == [f"a{i}" for i in range(50)]
        assert found[102] is None
        assert reads == 2  # one for the sessions, one for the agents
        assert await s.get_session("d3") == sessions[3] and reads == 3


async def test_a_read_that_finds_every_pooled_connection_busy_says_so(postgres_url: str) -> None:
    # Thousands of consoles resuming on a new router at once queue for the read pool; those
    # that wait too long are unavailable, told why, not "cannot connect" (the database is up).
    async with PostgresStore(postgres_url, pool_size=1, read_wait=0.3) as s:
        taken, release = asyncio.Event(), asyncio.Event()

        async def hold(conn: Any) -> None:
            taken.set()
            await release.wait()

        holder = asyncio.ensure_future(s._on_pool("holding", hold))
        await asyncio.wait_for(taken.wait(), 5)  # the one connection is held
        with pytest.raises(StoreUnavailable, match=r"came free within 0\.3 s") as caught:
            await s._rows("SELECT 1")
        assert "all 1 busy" in str(caught.value), caught.value
        # Look-ups answered together fail together, each with an error of its own.
        first, second = await asyncio.gather(
            s.get_session("d1"), s.get_session("d2"), return_exceptions=True
        )
        assert isinstance(first, StoreUnavailable) and isinstance(second, StoreUnavailable)
        assert first is not second
        release.set()
        await holder
        assert (await s._rows("SELECT 1"))[0][0] == 1


async def test_a_read_whose_connection_dies_under_it_twice_is_unavailable(
    postgres_url: str,
) -> None:
    # The connection dies during the read, and again on the fresh one it is retried on; the
    # caller gets the store's StoreUnavailable, not the driver's error, and the pool serves on.
    async with PostgresStore(postgres_url) as s:
        with pytest.raises(StoreUnavailable):
            await s._on_pool(
                "reading", lambda conn: conn.fetch("SELECT pg_terminate_backend(pg_backend_pid())")
            )
        assert (await s._rows("SELECT 1"))[0][0] == 1
