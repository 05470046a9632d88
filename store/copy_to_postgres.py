"""Copy a stopped host's SQLite data into an empty PostgreSQL database (`inbox-tui admin
copy-to`), so a team moves to the shared store with everything it has.

Every table is copied, in an order that satisfies the foreign keys, in ONE PostgreSQL
transaction: an interrupted copy leaves the target as empty as it was, and can be run again.
The SQLite store is opened first, which takes the data directory's lock (no host may write
while it is copied; StoreLocked if one runs) and brings its schema to the latest version; it
is then read through a read-only connection of its own, a bounded chunk at a time.

What changes on the way (store/postgres_migrations.py says why): 0/1 become booleans, rows
keep their order but not SQLite's rowids (`pos` and the identity ids are given anew, in the
same order), interactions.last_seq is the interaction's highest message seq, and attachment
content moves from the data directory's files into attachment_blobs. The counters are copied
as they are, so numbering continues where it stopped.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from core.model import format_number
from store import postgres_migrations
from store.base import WIDGET_KEY, StoreError, StoreUnavailable
from store.postgres import CONNECT_TIMEOUT_S, redact
from store.sqlite import SQLiteStore, blob_path

# Rows per chunk read from SQLite and sent with COPY: memory stays bounded whatever the size.
CHUNK_ROWS = 5_000
# Attachment content per chunk, in bytes (each attachment is at most 10 MiB).
CHUNK_BYTES = 64 * 2**20
# A progress line at least this often on a long table, in rows.
PROGRESS_EVERY = 50_000


@dataclass(frozen=True)
class _Table:
    name: str  # in PostgreSQL
    columns: tuple[str, ...]  # in PostgreSQL, in the order `select` gives them
    select: str  # from SQLite, in first-saved order where that order is read back
    booleans: tuple[int, ...] = ()  # positions of SQLite 0/1 columns


# In foreign-key order. Counters first: their seed rows are replaced by the source's.
TABLES: tuple[_Table, ...] = (
    _Table("counters", ("name", "value"), "SELECT name, value FROM counters"),
    _Table("channels", ("name", "data"), "SELECT name, data FROM channels"),
    _Table("presence_states", ("name", "data"), "SELECT name, data FROM presence_states"),
    _Table("queues", ("name", "data"), "SELECT name, data FROM queues"),
    _Table(
        "agents",
        ("id", "disabled", "password_hash", "data"),
        "SELECT id, disabled, password_hash, data FROM agents",
        booleans=(1,),
    ),
    _Table(
        "templates", ("scope", "shortcut", "data"), "SELECT scope, shortcut, data FROM templates"
    ),
    _Table(
        "work_items",
        ("id", "state", "data"),
        "SELECT id, state, data FROM work_items ORDER BY rowid",
    ),
    _Table(
        "offers",
        ("id", "item", "state", "data"),
        "SELECT id, item, state, data FROM offers ORDER BY rowid",
    ),
    _Table("agent_statuses", ("agent", "data"), "SELECT agent, data FROM agent_statuses"),
    _Table("audit", ("item", "data"), "SELECT item, data FROM audit ORDER BY id"),
    _Table("affinity", ("customer", "agent", "at"), "SELECT customer, agent, at FROM affinity"),
    _Table(
        "interactions",
        ("number", "archived", "opened_at", "last_seq", "data"),
        "SELECT number, archived, opened_at, "
        "(SELECT coalesce(max(seq), 0) FROM messages m WHERE m.interaction = i.number), data "
        "FROM interactions i",
        booleans=(1,),
    ),
    _Table("participants", ("agent", "interaction"), "SELECT agent, interaction FROM participants"),
    _Table(
        "invitations",
        ("interaction", "agent", "data"),
        "SELECT interaction, agent, data FROM invitations",
    ),
    _Table(
        "messages",
        ("interaction", "seq", "client_msg_id", "data"),
        "SELECT interaction, seq, client_msg_id, data FROM messages",
    ),
    # attachment_blobs: from the files, see _copy_blobs.
    _Table(
        "attachments",
        ("interaction", "sha256", "data"),
        "SELECT interaction, sha256, data FROM attachments ORDER BY id",
    ),
    _Table(
        "mail_ids",
        ("message_id", "interaction", "created_at", "data"),
        "SELECT message_id, interaction, created_at, data FROM mail_ids",
    ),
    _Table(
        "service_records",
        (
            "number",
            "kind",
            "source_interaction",
            "data",
            "state",
            "assignee",
            "assignment_group",
            "created_by",
            "created_at",
            "version",
            "search_text",
        ),
        "SELECT number, kind, source_interaction, data, state, assignee, assignment_group, "
        "created_by, created_at, version, search_text FROM service_records",
    ),
    _Table("record_notes", ("record", "data"), "SELECT record, data FROM record_notes ORDER BY id"),
    _Table(
        "record_links",
        ("record", "interaction", "linked_at"),
        "SELECT record, interaction, linked_at FROM record_links",
    ),
    _Table(
        "sessions",
        ("token_digest", "agent", "role", "created_at", "expires_at", "revoked_at"),
        "SELECT token_digest, agent, role, created_at, expires_at, revoked_at FROM sessions",
    ),
    _Table(
        "api_tokens",
        (
            "id",
            "token_digest",
            "name",
            "agent",
            "role",
            "created_at",
            "expires_at",
            "revoked_at",
            "channels",
        ),
        "SELECT id, token_digest, name, agent, role, created_at, expires_at, revoked_at, "
        "channels FROM api_tokens ORDER BY rowid",
    ),
    # Without `pos`: COPY numbers the rows anew in the order read, which keeps their order
    # and leaves the sequence past them.
    _Table(
        "outbox",
        ("id", "conversation", "message_seq", "state", "data"),
        "SELECT id, conversation, message_seq, state, data FROM outbox ORDER BY pos",
    ),
    _Table(
        "queue_minutes",
        ("minute", "queue", "data"),
        "SELECT minute, queue, data FROM queue_minutes",
    ),
    _Table("agent_days", ("day", "agent", "data"), "SELECT day, agent, data FROM agent_days"),
    _Table(
        "idempotency_keys",
        ("scope", "key", "fingerprint", "interaction", "created_at"),
        "SELECT scope, key, fingerprint, interaction, created_at FROM idempotency_keys",
    ),
)
BLOBS = "attachment_blobs"
BLOB_COLUMNS = ("sha256", "content")
# Every table the copy fills; the target must hold none of their rows (but counters' seeds).
FILLED = (*(t.name for t in TABLES), BLOBS)


class TargetNotEmpty(StoreError):
    """The PostgreSQL database already holds data: copy-to fills only an empty one."""


@dataclass
class CopyReport:
    rows: dict[str, int]  # per PostgreSQL table, as copied
    numbers: dict[str, str]  # prefix -> the next number the target hands out
    seconds: float


async def copy_to_postgres(
    data_dir: Path, db_file: Path, url: str, progress: Callable[[str], None]
) -> CopyReport:
    """Copy the SQLite store `db_file` of `data_dir` into the empty database at `url`,
    saying what it does through `progress` (one line at a time)."""
    where = redact(url)
    started = time.monotonic()
    # Held for the whole copy: the lock keeps a host from writing what is being read.
    async with SQLiteStore(db_file, data_dir):
        source = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, check_same_thread=False)
        try:
            try:
                target = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                raise StoreUnavailable(f"cannot connect to {where}: {exc}") from exc
            try:
                await _check_empty(target, where)
                await postgres_migrations.migrate(target, where)
                progress(f"copying {db_file} to {where}")
                async with target.transaction():
                    await _check_empty(target, where)  # again, now inside the transaction
                    rows = await _copy_tables(source, target, data_dir, progress)
                    numbers = {
                        prefix: format_number(prefix, value + 1)
                        for prefix, value in await target.fetch("SELECT name, value FROM counters")
                    }
            except asyncpg.PostgresError as exc:
                raise StoreError(f"copying into {where} failed, nothing was kept: {exc}") from exc
            finally:
                await target.close()
        finally:
            source.close()
    return CopyReport(rows, numbers, time.monotonic() - started)


async def _check_empty(target: asyncpg.Connection, where: str) -> None:
    tables = {
        r[0]
        for r in await target.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    }
    if not tables:
        return
    if "schema_version" not in tables:
        raise TargetNotEmpty(
            f"{where} holds tables that are not inbox-tui's ({', '.join(sorted(tables)[:5])}): "
            "copy into a new, empty database"
        )
    full = [
        table
        for table in FILLED
        if table in tables
        and table != "counters"
        and await target.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})")
    ]
    if "counters" in tables and await target.fetchval(
        "SELECT EXISTS (SELECT 1 FROM counters WHERE value <> 1000)"
    ):
        full.append("counters")
    if full:
        raise TargetNotEmpty(
            f"{where} already holds inbox-tui data (in {', '.join(full)}): copy-to fills "
            "only an empty database, so nothing was changed"
        )


async def _copy_tables(
    source: sqlite3.Connection,
    target: asyncpg.Connection,
    data_dir: Path,
    progress: Callable[[str], None],
) -> dict[str, int]:
    copied: dict[str, int] = {}
    await target.execute("DELETE FROM counters")  # the seeds; the source's replace them
    for table in TABLES:
        if table.name == "attachments":
            copied[BLOBS] = await _copy_blobs(source, target, data_dir, progress)
        count = 0
        # SQLite is read in a worker thread, a chunk at a time, so the loop stays free.
        cursor = await asyncio.to_thread(source.execute, table.select)
        while rows := await asyncio.to_thread(cursor.fetchmany, CHUNK_ROWS):
            if table.booleans:
                rows = [
                    tuple(bool(v) if i in table.booleans else v for i, v in enumerate(row))
                    for row in rows
                ]
            await target.copy_records_to_table(table.name, records=rows, columns=table.columns)
            before, count = count, count + len(rows)
            if count // PROGRESS_EVERY > before // PROGRESS_EVERY:
                progress(f"  {table.name}: {count:,} rows so far")
        copied[table.name] = count
        progress(f"  {table.name}: {count:,}")
    key = data_dir / WIDGET_KEY
    if key.exists():
        # The cluster's hosts sign widget tickets with the key in the database: the old
        # host's, so that the chats open at the move can still be resumed.
        await target.execute(
            "INSERT INTO cluster_secrets (name, value) VALUES ($1, $2) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            WIDGET_KEY,
            key.read_bytes(),
        )
        progress(f"  the widget's ticket key ({key.name}): copied")
    return copied


async def _copy_blobs(
    source: sqlite3.Connection,
    target: asyncpg.Connection,
    data_dir: Path,
    progress: Callable[[str], None],
) -> int:
    count = 0
    chunk: list[tuple[str, bytes]] = []
    size = 0
    cursor = await asyncio.to_thread(source.execute, "SELECT DISTINCT sha256 FROM attachments")
    while digests := await asyncio.to_thread(cursor.fetchmany, CHUNK_ROWS):
        for (digest,) in digests:
            path = blob_path(data_dir, digest)
            try:
                content = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                raise StoreError(
                    f"attachment {digest} is listed in the database but {path} cannot be "
                    f"read ({exc}); nothing was copied"
                ) from exc
            chunk.append((digest, content))
            size += len(content)
            if size >= CHUNK_BYTES:
                await target.copy_records_to_table(BLOBS, records=chunk, columns=BLOB_COLUMNS)
                count, chunk, size = count + len(chunk), [], 0
    if chunk:
        await target.copy_records_to_table(BLOBS, records=chunk, columns=BLOB_COLUMNS)
        count += len(chunk)
    progress(f"  {BLOBS}: {count:,} (the attachment files)")
    return count
