"""What tests read back from a store that the product itself never asks for.

The `Store` protocol carries only what the product calls, so a second backend implements no
more than that. These look into the store's tables through its own read connection (so they
see exactly what was committed), in either backend's dialect: SQL here is written with `?`
placeholders and numbered for PostgreSQL.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from core.model import AuditEntry, Offer, ServiceRecord
from store.base import Store
from store.postgres import PostgresStore
from store.sqlite import ATTACHMENTS_DIRNAME, SQLiteStore, blob_path

# Where SQLite keeps an attachment's content: named by its digest, never by its name.
attachment_file = blob_path

S = TypeVar("S", bound=msgspec.Struct)


def _numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's $1, $2, ..."""
    count = iter(range(1, 1000))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


async def rows(store: Store, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    if isinstance(store, PostgresStore):
        return [tuple(row) for row in await store._rows(_numbered(sql), *params)]
    assert isinstance(store, SQLiteStore), f"no helpers for {type(store).__name__}"
    return [tuple(row) for row in await store._rows(sql, params)]


async def records(store: Store, cls: type[S], sql: str, *params: Any) -> list[S]:
    """The `cls` records in the first column (JSON) of `sql`'s rows."""
    return [msgspec.json.decode(row[0], type=cls) for row in await rows(store, sql, *params)]


async def schema_version(store: Store) -> int:
    if isinstance(store, PostgresStore):
        ((version,),) = await rows(store, "SELECT max(version) FROM schema_version")
    else:
        ((version,),) = await rows(store, "PRAGMA user_version")
    return int(version)


def _saved_order(store: Store) -> str:
    # What orders rows by when they were first saved: SQLite's rowid, PostgreSQL's pos.
    return "pos" if isinstance(store, PostgresStore) else "rowid"


async def offers_of(store: Store, item_id: str) -> list[Offer]:
    """Every offer of the item, ended ones included, oldest first."""
    sql = f"SELECT data FROM offers WHERE item = ? ORDER BY {_saved_order(store)}"
    return await records(store, Offer, sql, item_id)


async def audit_trail(store: Store, item_id: str | None = None) -> list[AuditEntry]:
    """The audit trail (of one item, or of all), oldest first."""
    if item_id is None:
        return await records(store, AuditEntry, "SELECT data FROM audit ORDER BY id")
    sql = "SELECT data FROM audit WHERE item = ? ORDER BY id"
    return await records(store, AuditEntry, sql, item_id)


async def get_record(store: Store, number: str) -> ServiceRecord | None:
    sql = "SELECT data FROM service_records WHERE number = ?"
    found = await records(store, ServiceRecord, sql, number)
    return found[0] if found else None


async def attachment_contents(store: Store) -> dict[str, bytes]:
    """Every stored attachment content by sha256: SQLite's files, PostgreSQL's blobs."""
    if isinstance(store, PostgresStore):
        return dict(await rows(store, "SELECT sha256, content FROM attachment_blobs"))
    assert isinstance(store, SQLiteStore)
    root = store._data_dir / ATTACHMENTS_DIRNAME
    return {
        path.parent.name + path.name: path.read_bytes()
        for path in root.rglob("*")
        if path.is_file()
    }
