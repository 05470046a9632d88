"""Persistence behind one interface (`Store`): SQLite is the embedded default, PostgreSQL the
database several hosts share."""

from __future__ import annotations

from pathlib import Path

from store.base import (
    ApiToken,
    NotFound,
    RouterLease,
    SessionRecord,
    Store,
    StoreClosed,
    StoreConflict,
    StoreError,
    StoreFenced,
    StoreFull,
    StoreLocked,
    StoreStats,
    StoreUnavailable,
    StoreVersionError,
)
from store.sqlite import SQLiteStore, Synchronous

DB_FILENAME = "inbox.db"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


async def open_store(location: Path | str, *, synchronous: Synchronous = "FULL") -> Store:
    """Open (creating and migrating if needed) the store at `location`: a postgresql:// DSN
    for PostgreSQL, else the data directory that holds the SQLite file. `synchronous` is
    SQLite's; PostgreSQL's durability is the server's own setting."""
    if is_postgres_url(location):
        # Imported here: the console and SQLite hosts start without loading asyncpg.
        from store.postgres import PostgresStore

        store: Store = PostgresStore(str(location))
    else:
        data_dir = Path(location)
        store = SQLiteStore(data_dir / DB_FILENAME, data_dir, synchronous)
    await store.open()
    return store


__all__ = [
    "DB_FILENAME",
    "ApiToken",
    "NotFound",
    "RouterLease",
    "SQLiteStore",
    "SessionRecord",
    "Store",
    "StoreClosed",
    "StoreConflict",
    "StoreError",
    "StoreFenced",
    "StoreFull",
    "StoreLocked",
    "StoreStats",
    "StoreUnavailable",
    "StoreVersionError",
    "Synchronous",
    "is_postgres_url",
    "open_store",
]
