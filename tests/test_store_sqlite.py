"""What only the SQLite store has: its file's schema and pragmas, the data-directory lock, the
attachment files, sqlite3's errors and query plans. Every behaviour of the `Store` protocol is
tested on both backends in test_store.py."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from core.model import Role
from store import migrations
from store.base import (
    ApiToken,
    StoreClosed,
    StoreConflict,
    StoreError,
    StoreFull,
    StoreLocked,
    StoreUnavailable,
    StoreVersionError,
)
from store.sqlite import (
    LOCK_FILENAME,
    SQL_APPEND_LOOK,
    SQL_MESSAGES,
    SQL_OPEN_ITEMS,
    SQL_PENDING_OFFERS,
    SQLiteStore,
    _classify,
    interactions_query,
)
from tests.store_helpers import attachment_file, rows, schema_version


def make_store(data_dir: Path, **kwargs: Any) -> SQLiteStore:
    return SQLiteStore(data_dir / "inbox.db", data_dir, **kwargs)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = make_store(tmp_path)
    await s.open()
    yield s
    await s.close()


async def new_interaction(store: SQLiteStore, item: str = "item-1") -> str:
    record = await store.create_interaction(
        item=item, channel="chat", customer="cust-1", opened_at=100.0
    )
    return record.number


# -- schema and lifecycle -----------------------------------------------------------------


async def test_migrations_from_an_empty_file_reach_the_latest_version(tmp_path: Path) -> None:
    async with make_store(tmp_path) as s:
        assert await schema_version(s) == migrations.latest_version() >= 1
    conn = sqlite3.connect(tmp_path / "inbox.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations.latest_version()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"messages", "interactions", "participants", "work_items", "offers"} <= tables
    conn.close()


async def test_a_newer_schema_is_refused_and_the_lock_released(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "inbox.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    for _ in range(2):  # the second try proves the failed open released its lock
        with pytest.raises(StoreVersionError, match=r"schema version 99.*newer inbox-tui"):
            await make_store(tmp_path).open()


async def test_an_upgrade_runs_only_the_missing_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_store(tmp_path) as s:
        number = await new_interaction(s)
    step = "CREATE TABLE later (x INTEGER); INSERT INTO later VALUES (42);"
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, step])
    async with make_store(tmp_path) as s:
        assert await schema_version(s) == len(migrations.MIGRATIONS)
        assert (await s.get_interaction(number)) is not None
    conn = sqlite3.connect(tmp_path / "inbox.db")
    assert conn.execute("SELECT x FROM later").fetchall() == [(42,)]
    conn.close()


async def test_a_failing_migration_leaves_the_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_store(tmp_path):
        pass
    latest = migrations.latest_version()
    monkeypatch.setattr(
        migrations, "MIGRATIONS", [*migrations.MIGRATIONS, "CREATE TABLE t (x); NOT SQL;"]
    )
    with pytest.raises(StoreError, match=f"schema version {latest + 1} failed"):
        await make_store(tmp_path).open()
    conn = sqlite3.connect(tmp_path / "inbox.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == latest
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchall() == []
    conn.close()


@pytest.mark.parametrize(("mode", "value"), [("NORMAL", 1), ("FULL", 2), ("EXTRA", 3)])
async def test_writer_connection_pragmas(tmp_path: Path, mode: str, value: int) -> None:
    async with make_store(tmp_path, synchronous=mode) as s:
        pragmas = await s._write(
            lambda c: tuple(
                c.execute(f"PRAGMA {p}").fetchone()[0]
                for p in ("synchronous", "foreign_keys", "journal_mode", "busy_timeout")
            )
        )
    assert pragmas == (value, 1, "wal", 5000)


def test_synchronous_off_is_not_offered(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous must be one of"):
        make_store(tmp_path, synchronous="OFF")


async def test_second_open_of_a_data_dir_fails_fast_naming_the_lock_file(tmp_path: Path) -> None:
    async with make_store(tmp_path):
        with pytest.raises(StoreLocked) as caught:
            await SQLiteStore(tmp_path / "other.db", tmp_path).open()
        assert str(tmp_path / LOCK_FILENAME) in str(caught.value)
        assert "pid" in str(caught.value)
    async with make_store(tmp_path):  # released on close
        pass


async def test_api_token_channels_round_trip_and_old_tokens_have_none(tmp_path: Path) -> None:
    token = ApiToken(
        id="tok_old", token_digest="d1", name="old", role=Role.SUPERVISOR, created_at=1.0
    )
    with pytest.MonkeyPatch.context() as mp:
        # A database written before step 4 added the column.
        mp.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
        async with make_store(tmp_path) as s:
            await s._write(
                lambda c: c.execute(
                    "INSERT INTO api_tokens (id, token_digest, name, agent, role, created_at) "
                    "VALUES ('tok_old', 'd1', 'old', NULL, 'supervisor', 1.0)"
                )
            )
    async with make_store(tmp_path) as s:
        assert await s.get_api_token("d1") == token
        scoped = replace(token, id="tok_new", token_digest="d2", channels=("case", "incident"))
        await s.save_api_token(scoped)
        assert await s.get_api_token("d2") == scoped
        assert [t.channels for t in await s.list_api_tokens()] == [None, ("case", "incident")]


def test_storage_errors_are_classified() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    assert isinstance(_classify(full, "committing"), StoreFull)
    readonly = sqlite3.OperationalError("attempt to write a readonly database")
    readonly.sqlite_errorcode = sqlite3.SQLITE_READONLY | (1 << 8)
    err = _classify(readonly, "committing")
    assert type(err) is StoreUnavailable and "readonly" in str(err)
    assert isinstance(_classify(OSError(28, "No space left on device"), "x"), StoreFull)
    assert type(_classify(sqlite3.IntegrityError("UNIQUE"), "x")) is StoreConflict


async def test_the_key_queries_use_their_indexes(store: SQLiteStore) -> None:
    conn = sqlite3.connect(store._path)
    try:
        for sql, params, index in [
            (SQL_OPEN_ITEMS, (), "work_items_open"),
            (SQL_PENDING_OFFERS, (), "offers_one_pending"),
            (interactions_query("ann", None)[0], ("ann", 10, 0), "PRIMARY KEY"),
            (interactions_query(None, None)[0], (10, 0), "interactions_recent"),
            (SQL_MESSAGES, ("IMS0001001", 0, 10), "PRIMARY KEY"),
            # Each append looks up its client_msg_id and the last seq, both by index.
            (SQL_APPEND_LOOK, ("IMS0001001", "c1"), "(interaction=? AND client_msg_id=?)"),
            (SQL_APPEND_LOOK, ("IMS0001001", "c1"), "PRIMARY KEY (interaction=?)"),
        ]:
            plan = " ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert index in plan, (sql, plan)
    finally:
        conn.close()


# -- the writer thread --------------------------------------------------------------------


async def test_a_batch_whose_writer_is_cancelled_is_not_acknowledged_and_the_store_closes(
    tmp_path: Path,
) -> None:
    """The writer task cancelled while its batch runs in the writer thread (a host torn down
    mid-commit): the caller hears StoreClosed, close() returns instead of raising the
    writer's CancelledError, the thread finishes the batch and then closes the connection,
    and the data directory can be opened again."""
    store = make_store(tmp_path)
    await store.open()
    in_thread = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        in_thread.set()
        time.sleep(0.2)
        conn.execute("INSERT INTO channels (name, data) VALUES ('late', '{}')")

    write = asyncio.ensure_future(store._write(slow))
    await asyncio.to_thread(in_thread.wait, 5)
    assert store._writer._task is not None
    store._writer._task.cancel()
    with pytest.raises(StoreClosed):
        await write
    async with asyncio.timeout(5):
        await store.close()
    async with make_store(tmp_path) as again:  # the lock and the connection were let go
        # The batch already in the thread ran to its commit: kept, acknowledged to no one.
        assert await rows(again, "SELECT name FROM channels") == [("late",)]


# -- attachments --------------------------------------------------------------------------


async def test_attachments_are_files_named_by_their_digest(
    store: SQLiteStore, tmp_path: Path
) -> None:
    number = await new_interaction(store)
    data = b"%PDF-1.7 invoice"
    digest = hashlib.sha256(data).hexdigest()
    await store.put_attachment(number, "../invoice.pdf", "application/pdf", data, "ann", 5.0)
    path = tmp_path / "attachments" / digest[:2] / digest[2:]
    assert path == attachment_file(tmp_path, digest) and path.read_bytes() == data
    await store.put_attachment(number, "big.bin", "application/octet-stream", bytes(2**20), "a", 1)
    assert not list((tmp_path / "attachments").rglob(".*"))  # no temporary file left
    assert not (tmp_path.parent / "invoice.pdf").exists()
