"""What tests read back from a store that the product itself never asks for.

The `Store` protocol carries only what the product calls, so a second backend implements no
more than that. These look into SQLiteStore's tables through its own read connection (so they
see exactly what was committed) and into its data directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import msgspec

from core.model import AuditEntry, Offer, ServiceRecord
from store.base import Store
from store.sqlite import ATTACHMENTS_DIRNAME, SQLiteStore

S = TypeVar("S", bound=msgspec.Struct)


async def rows(store: Store, sql: str, *params: Any) -> list[Any]:
    assert isinstance(store, SQLiteStore), "these helpers read SQLite's tables"
    return await store._rows(sql, params)


async def records(store: Store, cls: type[S], sql: str, *params: Any) -> list[S]:
    """The `cls` records in the first column (JSON) of `sql`'s rows."""
    return [msgspec.json.decode(row[0], type=cls) for row in await rows(store, sql, *params)]


async def schema_version(store: Store) -> int:
    ((version,),) = await rows(store, "PRAGMA user_version")
    return int(version)


async def offers_of(store: Store, item_id: str) -> list[Offer]:
    """Every offer of the item, ended ones included, oldest first."""
    return await records(
        store, Offer, "SELECT data FROM offers WHERE item = ? ORDER BY rowid", item_id
    )


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


def attachment_file(data_dir: Path, sha256: str) -> Path:
    """Where an attachment's content lives: named by its digest, never by its upload name."""
    return data_dir / ATTACHMENTS_DIRNAME / sha256[:2] / sha256[2:]
