"""Persistence behind one interface (`Store`); SQLite is the embedded default."""

from __future__ import annotations

from pathlib import Path

from store.base import (
    ApiToken,
    NotFound,
    SessionRecord,
    Store,
    StoreClosed,
    StoreConflict,
    StoreError,
    StoreFull,
    StoreLocked,
    StoreStats,
    StoreUnavailable,
    StoreVersionError,
)
from store.sqlite import SQLiteStore, Synchronous

DB_FILENAME = "inbox.db"


async def open_store(data_dir: Path, *, synchronous: Synchronous = "FULL") -> Store:
    """Open (creating and migrating if needed) the store kept in `data_dir`."""
    store = SQLiteStore(data_dir / DB_FILENAME, data_dir, synchronous)
    await store.open()
    return store


__all__ = [
    "DB_FILENAME",
    "ApiToken",
    "NotFound",
    "SQLiteStore",
    "SessionRecord",
    "Store",
    "StoreClosed",
    "StoreConflict",
    "StoreError",
    "StoreFull",
    "StoreLocked",
    "StoreStats",
    "StoreUnavailable",
    "StoreVersionError",
    "Synchronous",
    "open_store",
]
