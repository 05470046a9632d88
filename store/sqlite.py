"""The embedded store: one SQLite file in WAL mode, one writer thread with group commit.

Write path. Every write is a plain function of a sqlite3 connection, submitted to the group
commit (store/group_commit.py), which hands each batch to the writer thread (`_WriterThread`):
BEGIN IMMEDIATE, a SAVEPOINT per op, COMMIT. One thread hop and one fsync'd commit for the
whole batch.

Read path. A separate aiosqlite connection; in WAL it reads the last committed state without
waiting for the writer, and since writes resolve only after their commit, a caller always reads
its own writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, get_args

import aiosqlite
import msgspec
from msgspec.structs import replace

from core.files import fsync_dir, write_atomically
from core.model import (
    MAX_ATTACHMENT_BYTES,
    MAX_MAIL_IDS,
    NUMBER_PREFIX,
    Agent,
    AgentDay,
    AgentStatus,
    Attachment,
    AuditEntry,
    Delivery,
    DeliveryState,
    InteractionRecord,
    InteractionState,
    Invitation,
    MailId,
    Message,
    Offer,
    OfferState,
    Participant,
    PresenceState,
    Queue,
    QueueMinute,
    RecordKind,
    RecordNote,
    SenderKind,
    ServiceChannel,
    ServiceRecord,
    Template,
    WorkItem,
    format_number,
    parse_number,
)
from store import migrations
from store.base import (
    IDEMPOTENCY_PRUNE_BATCH,
    IDEMPOTENCY_TTL,
    ApiToken,
    IdempotencyKey,
    NotFound,
    RecordQuery,
    SessionRecord,
    StoreClosed,
    StoreConflict,
    StoreError,
    StoreFull,
    StoreLocked,
    StoreStats,
    StoreUnavailable,
    sanitize_attachment_name,
)
from store.group_commit import GroupCommit, Outcome
from store.rows import (
    API_TOKEN_COLUMNS,
    RECORD_COLUMNS,
    SESSION_COLUMNS,
    api_token_row,
    audit_rows,
    dump,
    item_rows,
    load,
    offer_rows,
    record_row,
    records_query,
    session_row,
    status_rows,
)

T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)
WriteFn = Callable[[sqlite3.Connection], Any]


class _WriterThread:
    """The one thread that owns the writer connection. A job is handed over on a SimpleQueue
    and its result comes back to the event loop with one call_soon_threadsafe: a
    ThreadPoolExecutor's hand-off (its locks, a concurrent future, the asyncio future wrapping
    it, their callbacks) was ~15 Python calls on the event loop per write (docs/performance.md)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        # A daemon: a process that exits without closing its store must not hang on it. A
        # commit cut short that way is lost or kept whole (SQLite's WAL has no half commit),
        # and was acknowledged to no one either way, as after a crash.
        self._thread = threading.Thread(target=self._serve, name="store-writer", daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def stop(self) -> None:
        """Ends the thread once the jobs already handed over are done; called when none is
        left in flight, so the join is immediate (as an executor's shutdown was)."""
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn, args = job
            try:
                outcome = (True, fn(*args))
            except BaseException as exc:  # handed to the awaiting caller, as an executor does
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve, future, outcome)


def _resolve(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():
        return  # its caller was cancelled meanwhile
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


# The PRAGMA synchronous levels on offer (SQLiteStore.__init__ says why not OFF).
Synchronous = Literal["NORMAL", "FULL", "EXTRA"]

LOCK_FILENAME = "inbox-tui.lock"
ATTACHMENTS_DIRNAME = "attachments"
# Large enough that a burst never needs many commits, small enough that one batch's
# transaction (and the wait of its first op) stays in the low milliseconds.
DEFAULT_MAX_BATCH = 1000
BUSY_TIMEOUT_S = 5.0
_SYNCHRONOUS = get_args(Synchronous)
# Errors that mean the storage itself is failing rather than the request being wrong.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_PERM,
    }
)

# Kept identical to the partial index's WHERE in migrations so the planner can use it.
SQL_OPEN_ITEMS = (
    "SELECT data FROM work_items "
    "WHERE state IN ('queued', 'offered', 'accepted', 'wrap_up') ORDER BY rowid"
)
SQL_PENDING_OFFERS = "SELECT data FROM offers WHERE state = 'pending' ORDER BY item"
# The interactions of open work items; messages of those, newest `?` customer lines of each
# and the newest line of any kind. One pass each, however many conversations are open.
_OPEN_NUMBERS = (
    "SELECT json_extract(data, '$.interaction') AS number FROM work_items "
    "WHERE state IN ('queued', 'offered', 'accepted', 'wrap_up')"
)
SQL_OPEN_INTERACTIONS = (
    f"SELECT i.data FROM interactions i JOIN ({_OPEN_NUMBERS}) o ON o.number = i.number"
)
SQL_RECENT_MESSAGES = """
SELECT interaction, data FROM (
    SELECT m.interaction, m.seq, m.data,
        ROW_NUMBER() OVER (
            PARTITION BY m.interaction,
                json_extract(m.data, '$.sender_kind') = 'customer' ORDER BY m.seq DESC
        ) AS newest_of_kind,
        ROW_NUMBER() OVER (PARTITION BY m.interaction ORDER BY m.seq DESC) AS newest
    FROM messages m
    WHERE m.interaction IN (SELECT value FROM json_each(?))
)
WHERE newest = 1
    OR (newest_of_kind <= ? AND json_extract(data, '$.sender_kind') = 'customer')
ORDER BY interaction, seq
"""
SQL_MESSAGES = "SELECT data FROM messages WHERE interaction = ? AND seq > ? ORDER BY seq LIMIT ?"
SQL_LAST_MESSAGES = "SELECT data FROM messages WHERE interaction = ? ORDER BY seq DESC LIMIT ?"
# A message's copy if `client_msg_id` was written before, and the conversation's last seq.
SQL_APPEND_LOOK = (
    "SELECT (SELECT data FROM messages WHERE interaction = ?1 AND client_msg_id = ?2), "
    "(SELECT COALESCE(MAX(seq), 0) FROM messages WHERE interaction = ?1)"
)
# Each conversation's oldest undelivered one: a conversation stuck behind a failing delivery
# holds up no other. The outbox_open and outbox_by_conversation indexes serve it.
SQL_DUE_DELIVERIES = (
    "SELECT data FROM outbox o WHERE state IN ('pending', 'retrying') AND pos = ("
    "SELECT min(pos) FROM outbox WHERE conversation = o.conversation "
    "AND state IN ('pending', 'retrying')) ORDER BY pos LIMIT ?"
)
SQL_MESSAGE_DELIVERIES = (
    "SELECT message_seq, state FROM outbox WHERE conversation = ? AND message_seq IS NOT NULL"
)
SQL_OUTBOX_BACKLOG = "SELECT count(*) FROM outbox WHERE state IN ('pending', 'retrying')"
# The day at a glance: the primary keys (minute, queue) and (day, agent) serve them.
SQL_QUEUE_MINUTES = (
    "SELECT data FROM queue_minutes WHERE minute >= ? AND minute < ? "
    "AND (? IS NULL OR queue = ?) ORDER BY minute, queue"
)
SQL_AGENT_DAYS = "SELECT data FROM agent_days WHERE day = ? ORDER BY agent"
_UPSERT_MINUTE = (
    "INSERT INTO queue_minutes (minute, queue, data) VALUES (?, ?, ?) "
    "ON CONFLICT (minute, queue) DO UPDATE SET data = excluded.data"
)
_UPSERT_AGENT_DAY = (
    "INSERT INTO agent_days (day, agent, data) VALUES (?, ?, ?) "
    "ON CONFLICT (day, agent) DO UPDATE SET data = excluded.data"
)
# The audit_by_item index serves it.
SQL_AUDIT_TRAIL = "SELECT data FROM audit WHERE item = ? ORDER BY id DESC LIMIT ?"


def interactions_query(agent: str | None, archived: bool | None) -> tuple[str, list[Any]]:
    """SQL (ending in LIMIT ? OFFSET ?) and its leading parameters for list_interactions."""
    # Filtering by agent starts from participants: its primary key (agent, interaction) turns
    # "my interactions" into a range scan however many interactions there are.
    where: list[str] = []
    params: list[Any] = []
    source = "interactions i"
    if agent is not None:
        source = "participants p JOIN interactions i ON i.number = p.interaction"
        where.append("p.agent = ?")
        params.append(agent)
    if archived is not None:
        where.append("i.archived = ?")
        params.append(int(archived))
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    sql = f"SELECT i.data FROM {source} {clause}ORDER BY i.opened_at DESC, i.number DESC"
    return f"{sql} LIMIT ? OFFSET ?", params


def _classify(exc: BaseException, doing: str, path: Path | None = None) -> StoreError:
    """Turn a sqlite3/OS error into the StoreError a caller can act on. `path` is the file
    being worked on, when there is one, so a read-only file system can be named as such."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    err: StoreError
    if primary == sqlite3.SQLITE_FULL or (
        isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    ):
        err = StoreFull(f"{doing}: the disk is full ({exc}); nothing of it was stored")
    elif primary in _UNAVAILABLE_CODES or isinstance(exc, OSError):
        cause = str(exc)
        if path is not None and _read_only(path):
            cause = "the file system is read-only, mounted so or turned so after a disk error"
        err = StoreUnavailable(f"{doing}: storage failed ({cause}); nothing of it was stored")
    elif isinstance(exc, sqlite3.IntegrityError):
        err = StoreConflict(f"{doing}: {exc}")
    else:
        err = StoreError(f"{doing}: {exc}")
    err.__cause__ = exc
    return err


def _read_only(path: Path) -> bool:
    """Whether the file system holding `path` refuses writes as read-only.

    SQLite reports a write refused with EROFS as a bare "disk I/O error"; the admin reading
    the log needs the real cause. The mount flags do not always tell: ext4 turned read-only
    by a disk error (errors=remount-ro) still shows rw in statvfs on recent kernels, so a
    tiny file is created to ask. Only called once something has already failed.
    """
    probe = path.parent / f".tmp-probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600))
        os.unlink(probe)
    except OSError as e:
        return e.errno == errno.EROFS
    return False


def _acquire_lock(path: Path) -> int:
    """Hold an exclusive flock on `path` for the life of the returned fd.

    The kernel drops the lock when the process dies, even by SIGKILL, so a crash never leaves
    a stale lock behind; the pid written inside only makes the error message useful.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        pid = int(holder) if holder.isdigit() else None
        by = f" (pid {pid})" if pid is not None else ""
        raise StoreLocked(
            f"{path} is locked by another inbox-tui process{by}: one host owns a data "
            "directory at a time; stop that process or use another data directory",
            pid,
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def blob_path(data_dir: Path, sha256: str) -> Path:
    """Where attachment content lives: <data>/attachments/ab/cdef..., named by its digest."""
    return data_dir / ATTACHMENTS_DIRNAME / sha256[:2] / sha256[2:]


def _write_blob(data_dir: Path, data: bytes) -> str:
    """Store `data` at its blob_path and return its digest.

    A crash leaves either nothing or the whole file under the final name, never a prefix of
    it (core.files). Existing content is not written again.
    """
    digest = hashlib.sha256(data).hexdigest()
    final = blob_path(data_dir, digest)
    root, folder = final.parent.parent, final.parent
    if final.exists():
        return digest
    if not folder.exists():
        folder.mkdir(exist_ok=True)
        fsync_dir(root)
    write_atomically(final, data)
    return digest


def _sweep_temp_blobs(root: Path) -> None:
    # Only the lock holder writes blobs, so any temporary (dot) file seen at open is a crash
    # leftover; content is named by hex digits only.
    root.mkdir(exist_ok=True)
    for tmp in root.glob("*/.*"):
        tmp.unlink(missing_ok=True)


def _next_number(conn: sqlite3.Connection, prefix: str) -> str:
    # fetchall: a RETURNING statement left half-stepped would block RELEASE of the savepoint.
    ((value,),) = conn.execute(
        "UPDATE counters SET value = value + 1 WHERE name = ? RETURNING value", (prefix,)
    ).fetchall()
    return format_number(prefix, value)


def _insert_delivery(conn: sqlite3.Connection, delivery: Delivery) -> None:
    seq = delivery.message.seq if delivery.message is not None else None
    conn.execute(
        "INSERT INTO outbox (id, conversation, message_seq, state, data) VALUES (?, ?, ?, ?, ?)",
        (delivery.id, delivery.conversation, seq, delivery.state, dump(delivery)),
    )


def _exists(conn: sqlite3.Connection, sql: str, key: str) -> bool:
    return conn.execute(sql, (key,)).fetchone() is not None


def _tx_upsert(sql: str, rows: list[tuple[Any, ...]]) -> WriteFn:
    def op(conn: sqlite3.Connection) -> None:
        conn.executemany(sql, rows)

    return op


def _tx_rowcount(sql: str, params: tuple[Any, ...]) -> Callable[[sqlite3.Connection], int]:
    def op(conn: sqlite3.Connection) -> int:
        return conn.execute(sql, params).rowcount

    return op


_UPSERT_ITEM = (
    "INSERT INTO work_items (id, state, data) VALUES (?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, data = excluded.data"
)
_UPSERT_OFFER = (
    "INSERT INTO offers (id, item, state, data) VALUES (?, ?, ?, ?) ON CONFLICT (id) "
    "DO UPDATE SET item = excluded.item, state = excluded.state, data = excluded.data"
)
_UPSERT_STATUS = (
    "INSERT INTO agent_statuses (agent, data) VALUES (?, ?) "
    "ON CONFLICT (agent) DO UPDATE SET data = excluded.data"
)
_INSERT_AUDIT = "INSERT INTO audit (item, data) VALUES (?, ?)"


_UPSERT_AFFINITY = (
    "INSERT INTO affinity (customer, agent, at) VALUES (?, ?, ?) ON CONFLICT "
    "(customer) DO UPDATE SET agent = excluded.agent, at = excluded.at"
)


def _write_offers(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    # Row by row so a violation names the offer and says which rule it broke.
    for row in rows:
        offer_id, item, state, _ = row
        try:
            conn.execute(_UPSERT_OFFER, row)
        except sqlite3.IntegrityError as exc:
            if not _exists(conn, "SELECT 1 FROM work_items WHERE id = ?", item):
                raise NotFound(f"offer {offer_id}: work item {item} is not stored") from exc
            if state == OfferState.PENDING:
                raise StoreConflict(
                    f"offer {offer_id}: work item {item} already has a pending offer"
                ) from exc
            raise


def _update_interaction(conn: sqlite3.Connection, record: InteractionRecord, data: str) -> None:
    cur = conn.execute(
        "UPDATE interactions SET archived = ?, opened_at = ?, data = ? WHERE number = ?",
        (int(record.archived), record.opened_at, data, record.number),
    )
    if cur.rowcount == 0:
        raise NotFound(
            f"interaction {record.number} does not exist (create_interaction allocates numbers)"
        )
    _write_participants(conn, record)


def _insert_interaction(conn: sqlite3.Connection, record: InteractionRecord, data: str) -> None:
    try:
        conn.execute(
            "INSERT INTO interactions (number, archived, opened_at, data) VALUES (?, ?, ?, ?)",
            (record.number, int(record.archived), record.opened_at, data),
        )
    except sqlite3.IntegrityError as exc:
        raise StoreConflict(f"interaction {record.number} is stored already") from exc
    # New, so it has no participant rows to clear (they reference it), unlike an update.
    _add_participants(conn, record)


def _append(conn: sqlite3.Connection, message: Message) -> tuple[Message, bool]:
    """Store `message` (its seq ignored) under the interaction's next seq; (stored, False),
    or (the one stored before, True) if its client_msg_id was."""
    number, client_msg_id = message.interaction, message.client_msg_id
    # The writer thread is the only writer, so look-then-insert cannot race; the UNIQUE
    # constraint stays as the backstop. Both looks in one statement: the writer thread gives
    # the GIL up for each statement and, while the event loop is busy, waits to get it back,
    # which stretches the write (docs/performance.md).
    written, last = conn.execute(SQL_APPEND_LOOK, (number, client_msg_id)).fetchone()
    if written is not None:
        return load(Message, written), True
    stored = replace(message, seq=last + 1)
    try:
        conn.execute(
            "INSERT INTO messages (interaction, seq, client_msg_id, data) VALUES (?, ?, ?, ?)",
            (number, stored.seq, client_msg_id, dump(stored)),
        )
    except sqlite3.IntegrityError as exc:
        if not _exists(conn, "SELECT 1 FROM interactions WHERE number = ?", number):
            raise NotFound(f"interaction {number} does not exist") from exc
        raise
    return stored, False


def _link_record(conn: sqlite3.Connection, record: str, interaction: str, at: float) -> None:
    try:
        conn.execute(
            "INSERT INTO record_links (record, interaction, linked_at) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (record, interaction, at),
        )
    except sqlite3.IntegrityError as exc:
        raise NotFound(f"record {record} or interaction {interaction} does not exist") from exc


def _write_participants(conn: sqlite3.Connection, record: InteractionRecord) -> None:
    conn.execute("DELETE FROM participants WHERE interaction = ?", (record.number,))
    _add_participants(conn, record)


def _add_participants(conn: sqlite3.Connection, record: InteractionRecord) -> None:
    if record.participants:
        conn.executemany(
            "INSERT OR IGNORE INTO participants (agent, interaction) VALUES (?, ?)",
            [(p.agent, record.number) for p in record.participants],
        )


def _insert_idempotency_key(conn: sqlite3.Connection, key: IdempotencyKey) -> None:
    expired = key.created_at - IDEMPOTENCY_TTL
    # Bounded per insert, so a backlog of expired keys is worked off without one long write.
    conn.execute(
        "DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM idempotency_keys "
        "WHERE created_at < ? ORDER BY created_at LIMIT ?)",
        (expired, IDEMPOTENCY_PRUNE_BATCH),
    )
    conn.execute(
        "DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND created_at < ?",
        (key.scope, key.key, expired),
    )
    try:
        conn.execute(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, interaction, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (key.scope, key.key, key.fingerprint, key.interaction, key.created_at),
        )
    except sqlite3.IntegrityError as exc:
        raise StoreConflict(
            f"idempotency key {key.key!r} of {key.scope} is already stored"
        ) from exc


def _insert_login(
    conn: sqlite3.Connection, what: str, agent: str | None, sql: str, row: tuple[Any, ...]
) -> None:
    # The foreign key and the unique keys raise the same IntegrityError; say which it was.
    try:
        conn.execute(sql, row)
    except sqlite3.IntegrityError as exc:
        if agent is not None and not _exists(conn, "SELECT 1 FROM agents WHERE id = ?", agent):
            raise NotFound(f"{what}: agent {agent} does not exist") from exc
        raise StoreConflict(f"{what}: already stored ({exc})") from exc


class SQLiteStore:
    """`store.base.Store` on one SQLite file; see the module docstring for the write path."""

    def __init__(
        self,
        path: str | Path,
        data_dir: Path,
        synchronous: Synchronous = "FULL",
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if synchronous not in _SYNCHRONOUS:
            # OFF is not offered: an acknowledged write must survive a crash.
            raise ValueError(f"synchronous must be one of {_SYNCHRONOUS}, not {synchronous!r}")
        self._path = Path(path)
        self._data_dir = Path(data_dir)
        self._blobs = self._data_dir / ATTACHMENTS_DIRNAME
        self._synchronous = synchronous
        self.stats = StoreStats(writer_cpu_seconds=0.0)
        self._writer: GroupCommit[WriteFn] = GroupCommit(
            self._commit, self.stats, max_batch=max_batch, where=str(self._path)
        )
        self._lock_fd: int | None = None
        self._thread: _WriterThread | None = None
        self._wconn: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer.started:
            raise StoreError(f"{self._path} is already open")
        try:
            self._data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _classify(exc, f"creating data directory {self._data_dir}") from exc
        self._lock_fd = _acquire_lock(self._data_dir / LOCK_FILENAME)
        try:
            self._thread = _WriterThread()
            self._wconn = await self._thread.run(self._connect_writer)
            self._reader = await aiosqlite.connect(
                self._path, isolation_level=None, timeout=BUSY_TIMEOUT_S
            )
            await self._reader.execute("PRAGMA query_only = ON")
            await asyncio.to_thread(_sweep_temp_blobs, self._blobs)
        except BaseException as exc:
            await self._release()
            if isinstance(exc, sqlite3.Error | OSError):
                raise _classify(exc, f"opening {self._path}") from exc
            raise
        self._writer.start()

    async def close(self) -> None:
        if not self._writer.started or self._writer.stopping:
            return  # never opened, or another close() is already under way
        try:
            await self._writer.stop()
        finally:
            await self._release()

    def _connect_writer(self) -> sqlite3.Connection:
        """Runs in the writer thread, which then owns the connection for its whole life."""
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode.lower() != "wal":
                raise StoreUnavailable(
                    f"{self._path}: SQLite refused WAL mode (journal_mode stays {mode}); "
                    "put the data directory on a local file system"
                )
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            # Statement journals (an upsert or a multi-row write inside a transaction) in
            # memory: as files, SQLite created, unlinked and closed one in /var/tmp for such
            # statements, three system calls and a directory entry each, for data it never
            # needs after the statement.
            conn.execute("PRAGMA temp_store = MEMORY")
            migrations.migrate(conn, self._path)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _release(self) -> None:
        """Free whatever open() got: safe on a half-opened store."""
        if self._reader is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._reader.close()
            self._reader = None
        if self._thread is not None:
            if self._wconn is not None:
                with contextlib.suppress(sqlite3.Error):
                    await self._thread.run(self._wconn.close)
                self._wconn = None
            self._thread.stop()
            self._thread = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the write path -------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the writer thread in the next batch; returns its result once committed."""
        return await self._writer.submit(fn)

    def _commit(self, fns: list[WriteFn]) -> Awaitable[tuple[list[Outcome], bool]]:
        assert self._thread is not None
        return self._thread.run(self._run_timed, fns)

    def _run_timed(self, fns: list[WriteFn]) -> tuple[list[Outcome], bool]:
        started = time.thread_time()
        try:
            return self._run_batch(fns)
        finally:
            assert self.stats.writer_cpu_seconds is not None
            self.stats.writer_cpu_seconds += time.thread_time() - started

    def _run_batch(self, fns: list[WriteFn]) -> tuple[list[Outcome], bool]:
        """Writer thread: run `fns` in one transaction, one SAVEPOINT each, then COMMIT."""
        conn = self._wconn
        assert conn is not None
        outcomes: list[Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            if len(fns) == 1:
                # Alone in its batch (most batches below saturation), an op needs no
                # savepoint: rolling the transaction back undoes exactly that op.
                return self._run_alone(conn, fns[0])
            for fn in fns:
                conn.execute("SAVEPOINT op")
                try:
                    result = fn(conn)
                except Exception as exc:
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back by itself (I/O error,
                        # full disk): the ops before this one are gone too.
                        raise
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((False, self._op_error(exc)))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((True, result))
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            doing = f"committing {len(fns)} writes to {self._path}"
            # One exception object per op: several awaiters raising one instance would
            # pile their tracebacks onto it.
            return [(False, _classify(exc, doing, self._path)) for _ in fns], False
        return outcomes, True

    def _run_alone(self, conn: sqlite3.Connection, fn: WriteFn) -> tuple[list[Outcome], bool]:
        """Writer thread, inside BEGIN: `fn` as a batch of its own. Raises what the batch's
        transaction cannot survive, as _run_batch's loop does."""
        try:
            result = fn(conn)
        except Exception as exc:
            if not conn.in_transaction:
                raise
            conn.execute("ROLLBACK")
            return [(False, self._op_error(exc))], True
        conn.execute("COMMIT")
        return [(True, result)], True

    def _op_error(self, exc: Exception) -> Exception:
        """What the caller of a write that failed on its own gets."""
        if isinstance(exc, sqlite3.Error):
            return _classify(exc, f"writing to {self._path}", self._path)
        return exc

    # -- the read path --------------------------------------------------------------------

    async def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        reader = self._reader
        if reader is None:
            raise StoreClosed(f"{self._path} is not open")
        try:
            return list(await reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise _classify(exc, f"reading {self._path}", self._path) from exc

    async def _records(self, cls: type[S], sql: str, params: tuple[Any, ...] = ()) -> list[S]:
        return [load(cls, row[0]) for row in await self._rows(sql, params)]

    async def _record(self, cls: type[S], sql: str, params: tuple[Any, ...]) -> S | None:
        records = await self._records(cls, sql, params)
        return records[0] if records else None

    # -- configuration --------------------------------------------------------------------

    async def upsert_channels(self, channels: Iterable[ServiceChannel]) -> None:
        await self._write(
            _tx_upsert(
                "INSERT INTO channels (name, data) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                [(c.name, dump(c)) for c in channels],
            )
        )

    async def list_channels(self) -> list[ServiceChannel]:
        return await self._records(ServiceChannel, "SELECT data FROM channels ORDER BY name")

    async def upsert_presence_states(self, states: Iterable[PresenceState]) -> None:
        await self._write(
            _tx_upsert(
                "INSERT INTO presence_states (name, data) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                [(s.name, dump(s)) for s in states],
            )
        )

    async def upsert_queues(self, queues: Iterable[Queue]) -> None:
        await self._write(
            _tx_upsert(
                "INSERT INTO queues (name, data) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                [(q.name, dump(q)) for q in queues],
            )
        )

    async def upsert_agents(self, agents: Iterable[Agent]) -> None:
        await self._write(
            _tx_upsert(
                # password_hash is left alone: config reloads must not log everyone out.
                "INSERT INTO agents (id, disabled, data) VALUES (?, ?, ?) ON CONFLICT (id) "
                "DO UPDATE SET disabled = excluded.disabled, data = excluded.data",
                [(a.id, int(a.disabled), dump(a)) for a in agents],
            )
        )

    async def list_agents(self) -> list[Agent]:
        return await self._records(Agent, "SELECT data FROM agents ORDER BY id")

    async def get_agent(self, agent_id: str) -> Agent | None:
        return await self._record(Agent, "SELECT data FROM agents WHERE id = ?", (agent_id,))

    async def set_agent_password_hash(self, agent_id: str, password_hash: str | None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE agents SET password_hash = ? WHERE id = ?", (password_hash, agent_id)
            )
            if cur.rowcount == 0:
                raise NotFound(f"agent {agent_id} does not exist")

        await self._write(op)

    async def get_agent_password_hash(self, agent_id: str) -> str | None:
        rows = await self._rows("SELECT password_hash FROM agents WHERE id = ?", (agent_id,))
        return rows[0][0] if rows else None

    # -- sessions and API tokens ----------------------------------------------------------

    async def save_session(self, session: SessionRecord) -> None:
        row = (
            session.token_digest,
            session.agent,
            session.role.value,
            session.created_at,
            session.expires_at,
            session.revoked_at,
        )
        sql = f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        await self._write(lambda conn: _insert_login(conn, "session", session.agent, sql, row))

    async def get_session(self, token_digest: str) -> SessionRecord | None:
        rows = await self._rows(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE token_digest = ?", (token_digest,)
        )
        return session_row(rows[0]) if rows else None

    async def revoke_session(self, token_digest: str, at: float) -> bool:
        sql = "UPDATE sessions SET revoked_at = ? WHERE token_digest = ? AND revoked_at IS NULL"
        return await self._write(_tx_rowcount(sql, (at, token_digest))) > 0

    async def revoke_agent_sessions(self, agent_id: str, at: float) -> int:
        return await self._write(
            _tx_rowcount(
                "UPDATE sessions SET revoked_at = ? WHERE agent = ? AND revoked_at IS NULL",
                (at, agent_id),
            )
        )

    async def prune_sessions(self, now: float) -> int:
        return await self._write(
            _tx_rowcount(
                "DELETE FROM sessions WHERE expires_at <= ? OR revoked_at <= ?", (now, now)
            )
        )

    async def save_api_token(self, token: ApiToken) -> None:
        row = (
            token.id,
            token.token_digest,
            token.name,
            token.agent,
            token.role.value,
            token.created_at,
            token.expires_at,
            token.revoked_at,
            None if token.channels is None else msgspec.json.encode(token.channels).decode(),
        )
        sql = f"INSERT INTO api_tokens ({API_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        what = f"API token {token.id}"
        await self._write(lambda conn: _insert_login(conn, what, token.agent, sql, row))

    async def get_api_token(self, token_digest: str) -> ApiToken | None:
        rows = await self._rows(
            f"SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE token_digest = ?", (token_digest,)
        )
        return api_token_row(rows[0]) if rows else None

    async def list_api_tokens(self) -> list[ApiToken]:
        rows = await self._rows(f"SELECT {API_TOKEN_COLUMNS} FROM api_tokens ORDER BY rowid")
        return [api_token_row(row) for row in rows]

    async def revoke_api_token(self, token_id: str, at: float) -> bool:
        sql = "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        return await self._write(_tx_rowcount(sql, (at, token_id))) > 0

    async def upsert_templates(self, templates: Iterable[Template]) -> None:
        await self._write(
            _tx_upsert(
                "INSERT INTO templates (scope, shortcut, data) VALUES (?, ?, ?) "
                "ON CONFLICT (scope, shortcut) DO UPDATE SET data = excluded.data",
                [(t.scope, t.shortcut, dump(t)) for t in templates],
            )
        )

    # -- routing state --------------------------------------------------------------------

    async def load_open_items(self) -> list[WorkItem]:
        return await self._records(WorkItem, SQL_OPEN_ITEMS)

    async def get_item(self, item_id: str) -> WorkItem | None:
        return await self._record(WorkItem, "SELECT data FROM work_items WHERE id = ?", (item_id,))

    async def audit_trail(self, item_id: str, limit: int = 500) -> list[AuditEntry]:
        newest_first = await self._records(AuditEntry, SQL_AUDIT_TRAIL, (item_id, limit))
        return newest_first[::-1]

    async def load_pending_offers(self) -> list[Offer]:
        return await self._records(Offer, SQL_PENDING_OFFERS)

    async def load_agent_statuses(self) -> list[AgentStatus]:
        return await self._records(AgentStatus, "SELECT data FROM agent_statuses ORDER BY agent")

    async def load_affinity(self) -> dict[str, tuple[str, float]]:
        rows = await self._rows("SELECT customer, agent, at FROM affinity")
        return {customer: (agent, at) for customer, agent, at in rows}

    async def apply_routing(
        self,
        *,
        items: Iterable[WorkItem] = (),
        offers: Iterable[Offer] = (),
        statuses: Iterable[AgentStatus] = (),
        audit: Iterable[AuditEntry] = (),
        affinity: Mapping[str, tuple[str, float]] | None = None,
        interactions: Iterable[InteractionRecord] = (),
        deliveries: Iterable[Delivery] = (),
        created: Collection[str] = (),
        lines: Sequence[Message] = (),
    ) -> list[Message]:
        item_data, offer_data = item_rows(items), offer_rows(offers)
        status_data, audit_data = status_rows(statuses), audit_rows(audit)
        affinity_rows = [(c, agent, at) for c, (agent, at) in (affinity or {}).items()]
        records = [(r, dump(r)) for r in interactions]
        new = frozenset(created)
        outbox = list(deliveries)

        def op(conn: sqlite3.Connection) -> list[Message]:
            conn.executemany(_UPSERT_ITEM, item_data)
            _write_offers(conn, offer_data)
            conn.executemany(_UPSERT_STATUS, status_data)
            conn.executemany(_INSERT_AUDIT, audit_data)
            conn.executemany(_UPSERT_AFFINITY, affinity_rows)
            for record, data in records:
                if record.number in new:
                    _insert_interaction(conn, record, data)
                else:
                    _update_interaction(conn, record, data)
            for delivery in outbox:
                _insert_delivery(conn, delivery)
            return [_append(conn, line)[0] for line in lines]

        return await self._write(op)

    # -- interactions ---------------------------------------------------------------------

    async def create_interaction(
        self,
        *,
        item: str,
        channel: str,
        customer: str,
        opened_at: float,
        queue: str | None = None,
        state: InteractionState = InteractionState.NEW,
        customer_name: str = "",
        customer_contact: str = "",
        participants: tuple[Participant, ...] = (),
        created_by: str | None = None,
        idempotency: IdempotencyKey | None = None,
        previous: str | None = None,
        language: str = "",
        number: str | None = None,
    ) -> InteractionRecord:
        def op(conn: sqlite3.Connection) -> InteractionRecord:
            record = InteractionRecord(
                number=number or _next_number(conn, NUMBER_PREFIX["interaction"]),
                item=item,
                channel=channel,
                customer=customer,
                opened_at=opened_at,
                queue=queue,
                state=state,
                customer_name=customer_name,
                customer_contact=customer_contact,
                participants=participants,
                created_by=created_by,
                previous=previous,
                language=language,
            )
            _insert_interaction(conn, record, dump(record))
            if idempotency is not None:
                # A conflict rolls this op's savepoint back: a number counted here is not used
                # up either.
                _insert_idempotency_key(
                    conn, msgspec.structs.replace(idempotency, interaction=record.number)
                )
            return record

        return await self._write(op)

    async def reserve_numbers(self, prefix: str, count: int) -> list[str]:
        if count < 1:
            raise ValueError(f"reserve_numbers: count must be at least 1, not {count}")

        def op(conn: sqlite3.Connection) -> list[str]:
            ((last,),) = conn.execute(
                "UPDATE counters SET value = value + ? WHERE name = ? RETURNING value",
                (count, prefix),
            ).fetchall()
            return [format_number(prefix, n) for n in range(last - count + 1, last + 1)]

        return await self._write(op)

    async def release_numbers(self, prefix: str, first: str, last: str) -> bool:
        start, end = parse_number(prefix, first), parse_number(prefix, last)

        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE counters SET value = ? WHERE name = ? AND value = ?",
                (start - 1, prefix, end),
            )
            return cur.rowcount == 1

        return await self._write(op)

    async def get_idempotency_key(self, scope: str, key: str, now: float) -> IdempotencyKey | None:
        rows = await self._rows(
            "SELECT fingerprint, interaction, created_at FROM idempotency_keys "
            "WHERE scope = ? AND key = ? AND created_at >= ?",
            (scope, key, now - IDEMPOTENCY_TTL),
        )
        if not rows:
            return None
        fingerprint, interaction, created_at = rows[0]
        return IdempotencyKey(
            scope=scope,
            key=key,
            fingerprint=fingerprint,
            created_at=created_at,
            interaction=interaction,
        )

    async def save_mail_id(self, mail: MailId) -> None:
        await self._write(
            _tx_upsert(
                "INSERT INTO mail_ids (message_id, interaction, created_at, data) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING",
                [(mail.message_id, mail.interaction, mail.created_at, dump(mail))],
            )
        )

    async def find_mail_ids(self, message_ids: Sequence[str]) -> list[MailId]:
        return await self._records(
            MailId,
            "SELECT data FROM mail_ids WHERE message_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(message_ids[:MAX_MAIL_IDS])),),
        )

    async def last_mail_ids(self, interaction: str, limit: int) -> list[MailId]:
        newest_first = await self._records(
            MailId,
            "SELECT data FROM mail_ids WHERE interaction = ? "
            "ORDER BY created_at DESC, message_id DESC LIMIT ?",
            (interaction, limit),
        )
        return newest_first[::-1]

    async def save_invitation(self, invitation: Invitation) -> None:
        await self._write(
            _tx_upsert(
                "INSERT INTO invitations (interaction, agent, data) VALUES (?, ?, ?) "
                "ON CONFLICT (interaction, agent) DO UPDATE SET data = excluded.data",
                [(invitation.interaction, invitation.agent, dump(invitation))],
            )
        )

    async def delete_invitations(self, interaction: str, agent: str | None = None) -> None:
        await self._write(
            _tx_rowcount(
                "DELETE FROM invitations WHERE interaction = ? AND (? IS NULL OR agent = ?)",
                (interaction, agent, agent),
            )
        )

    async def load_invitations(self) -> list[Invitation]:
        invitations = await self._records(Invitation, "SELECT data FROM invitations")
        return sorted(invitations, key=lambda i: i.created_at)

    async def save_interaction(self, record: InteractionRecord) -> None:
        data = dump(record)
        await self._write(lambda conn: _update_interaction(conn, record, data))

    async def load_open_conversations(
        self, customer_lines: int, channels: Collection[str]
    ) -> list[tuple[InteractionRecord, list[Message]]]:
        records = await self._records(InteractionRecord, SQL_OPEN_INTERACTIONS)
        numbers = [r.number for r in records if r.channel in channels]
        recent = await self.recent_lines(numbers, customer_lines) if numbers else {}
        return [(r, recent.get(r.number, [])) for r in records]

    async def recent_lines(
        self, numbers: Sequence[str], customer_lines: int
    ) -> dict[str, list[Message]]:
        params = (msgspec.json.encode(list(numbers)).decode(), customer_lines)
        recent: dict[str, list[Message]] = {}
        for number, data in await self._rows(SQL_RECENT_MESSAGES, params):
            recent.setdefault(number, []).append(load(Message, data))
        return recent

    async def get_interaction(self, number: str) -> InteractionRecord | None:
        return await self._record(
            InteractionRecord, "SELECT data FROM interactions WHERE number = ?", (number,)
        )

    async def list_interactions(
        self,
        *,
        agent: str | None = None,
        archived: bool | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[InteractionRecord]:
        sql, params = interactions_query(agent, archived)
        return await self._records(InteractionRecord, sql, (*params, limit, offset))

    # -- messages -------------------------------------------------------------------------

    async def append_message(
        self,
        interaction: str,
        sender_kind: SenderKind,
        sender: str,
        body: str,
        client_msg_id: str,
        created_at: float,
        kind: Literal["message", "work_note"] = "message",
        attachment: str | None = None,
        delivery: Delivery | None = None,
    ) -> tuple[Message, bool]:
        message = Message(
            interaction=interaction,
            seq=0,
            sender_kind=sender_kind,
            sender=sender,
            body=body,
            client_msg_id=client_msg_id,
            created_at=created_at,
            kind=kind,
            attachment=attachment,
        )

        def op(conn: sqlite3.Connection) -> tuple[Message, bool]:
            stored, duplicate = _append(conn, message)
            if delivery is not None and not duplicate:
                _insert_delivery(conn, replace(delivery, message=stored))
            return stored, duplicate

        return await self._write(op)

    # -- the outbox -----------------------------------------------------------------------

    async def due_deliveries(self, limit: int = 500) -> list[Delivery]:
        return await self._records(Delivery, SQL_DUE_DELIVERIES, (limit,))

    async def save_delivery(self, delivery: Delivery) -> None:
        sql = "UPDATE outbox SET state = ?, data = ? WHERE id = ?"
        await self._write(_tx_rowcount(sql, (delivery.state, dump(delivery), delivery.id)))

    async def message_deliveries(self, interaction: str) -> dict[int, DeliveryState]:
        rows = await self._rows(SQL_MESSAGE_DELIVERIES, (interaction,))
        return {seq: state for seq, state in rows}

    async def outbox_backlog(self) -> int:
        (row,) = await self._rows(SQL_OUTBOX_BACKLOG)
        return int(row[0])

    async def list_messages(
        self, interaction: str, after_seq: int = 0, limit: int = 500
    ) -> list[Message]:
        return await self._records(Message, SQL_MESSAGES, (interaction, after_seq, limit))

    async def last_messages(self, interaction: str, limit: int = 500) -> list[Message]:
        newest_first = await self._records(Message, SQL_LAST_MESSAGES, (interaction, limit))
        return newest_first[::-1]

    # -- attachments ----------------------------------------------------------------------

    async def put_attachment(
        self,
        interaction: str,
        name: str,
        content_type: str,
        data: bytes,
        uploaded_by: str,
        created_at: float,
    ) -> Attachment:
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise ValueError(
                f"attachment {name!r} is {len(data):,} bytes; the limit is "
                f"{MAX_ATTACHMENT_BYTES:,} bytes ({MAX_ATTACHMENT_BYTES // 2**20} MiB)"
            )
        label = sanitize_attachment_name(name)
        try:
            # Off the writer thread: fsyncing 10 MiB must not hold up everyone's commits.
            # The file is durable before the row that points at it commits.
            digest = await asyncio.to_thread(_write_blob, self._data_dir, data)
        except OSError as exc:
            raise _classify(exc, f"storing attachment {label!r}", self._path) from exc

        def op(conn: sqlite3.Connection) -> Attachment:
            row = conn.execute(
                "SELECT data FROM attachments WHERE interaction = ? AND sha256 = ?",
                (interaction, digest),
            ).fetchone()
            if row is not None:
                return load(Attachment, row[0])
            record = Attachment(
                interaction=interaction,
                name=label,
                content_type=content_type,
                size=len(data),
                sha256=digest,
                created_at=created_at,
                uploaded_by=uploaded_by,
            )
            try:
                conn.execute(
                    "INSERT INTO attachments (interaction, sha256, data) VALUES (?, ?, ?)",
                    (interaction, digest, dump(record)),
                )
            except sqlite3.IntegrityError as exc:
                raise NotFound(f"interaction {interaction} does not exist") from exc
            return record

        return await self._write(op)

    async def list_attachments(self, interaction: str) -> list[Attachment]:
        return await self._records(
            Attachment,
            "SELECT data FROM attachments WHERE interaction = ? ORDER BY id",
            (interaction,),
        )

    async def read_attachment(
        self, interaction: str, sha256: str
    ) -> tuple[Attachment, bytes] | None:
        record = await self._record(
            Attachment,
            "SELECT data FROM attachments WHERE interaction = ? AND sha256 = ?",
            (interaction, sha256),
        )
        if record is None:
            return None
        path = blob_path(self._data_dir, record.sha256)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise _classify(exc, f"reading attachment {record.name!r}", self._path) from exc
        return record, data

    # -- cases and incidents --------------------------------------------------------------

    async def create_record(
        self,
        kind: RecordKind,
        short_description: str,
        description: str = "",
        priority: int = 3,
        source_interaction: str | None = None,
        created_by: str = "",
        created_at: float = 0.0,
        state: str = "new",
        assignee: str | None = None,
    ) -> ServiceRecord:
        kind = RecordKind(kind)

        def op(conn: sqlite3.Connection) -> ServiceRecord:
            record = ServiceRecord(
                number=_next_number(conn, NUMBER_PREFIX[kind]),
                kind=kind,
                short_description=short_description,
                description=description,
                priority=priority,
                state=state,
                source_interaction=source_interaction,
                created_at=created_at,
                created_by=created_by,
                assignee=assignee,
            )
            conn.execute(
                "INSERT INTO service_records (number, kind, source_interaction, created_by, "
                f"created_at, {RECORD_COLUMNS}, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.number,
                    kind.value,
                    source_interaction,
                    created_by,
                    created_at,
                    *record_row(record),
                ),
            )
            if source_interaction is not None:
                _link_record(conn, record.number, source_interaction, created_at)
            return record

        return await self._write(op)

    async def get_record(self, number: str) -> ServiceRecord | None:
        return await self._record(
            ServiceRecord, "SELECT data FROM service_records WHERE number = ?", (number,)
        )

    async def save_record(self, record: ServiceRecord) -> ServiceRecord:
        stored = msgspec.structs.replace(record, version=record.version + 1)

        def op(conn: sqlite3.Connection) -> ServiceRecord:
            cursor = conn.execute(
                "UPDATE service_records SET state = ?, assignee = ?, assignment_group = ?, "
                "search_text = ?, version = ?, data = ? WHERE number = ? AND version = ?",
                (*record_row(stored), record.number, record.version),
            )
            if cursor.rowcount == 0:
                exists = conn.execute(
                    "SELECT 1 FROM service_records WHERE number = ?", (record.number,)
                ).fetchone()
                if exists is None:
                    raise NotFound(f"record {record.number} does not exist")
                raise StoreConflict(f"record {record.number} was changed meanwhile")
            return stored

        return await self._write(op)

    async def list_records(
        self, query: RecordQuery, limit: int = 50, offset: int = 0
    ) -> list[ServiceRecord]:
        sql, params = records_query(query, "sqlite")
        return await self._records(ServiceRecord, sql, (*params, limit, offset))

    async def add_record_note(
        self, record: str, author: str, body: str, created_at: float
    ) -> RecordNote:
        note = RecordNote(record=record, author=author, body=body, created_at=created_at)

        def op(conn: sqlite3.Connection) -> RecordNote:
            try:
                conn.execute(
                    "INSERT INTO record_notes (record, data) VALUES (?, ?)", (record, dump(note))
                )
            except sqlite3.IntegrityError as exc:
                raise NotFound(f"record {record} does not exist") from exc
            return note

        return await self._write(op)

    async def list_record_notes(self, record: str, limit: int = 500) -> list[RecordNote]:
        newest_first = await self._records(
            RecordNote,
            "SELECT data FROM record_notes WHERE record = ? ORDER BY id DESC LIMIT ?",
            (record, limit),
        )
        return newest_first[::-1]

    async def link_record(self, record: str, interaction: str, linked_at: float) -> None:
        await self._write(lambda conn: _link_record(conn, record, interaction, linked_at))

    async def record_links(self, record: str) -> list[str]:
        rows = await self._rows(
            "SELECT interaction FROM record_links WHERE record = ? ORDER BY linked_at, interaction",
            (record,),
        )
        return [row[0] for row in rows]

    # -- the day at a glance --------------------------------------------------------------

    async def save_day(
        self, minutes: Iterable[QueueMinute], agents: Iterable[AgentDay], keep_since: int
    ) -> None:
        minute_rows = [(m.minute, m.queue, dump(m)) for m in minutes]
        day_rows = [(a.day, a.agent, dump(a)) for a in agents]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(_UPSERT_MINUTE, minute_rows)
            conn.executemany(_UPSERT_AGENT_DAY, day_rows)
            conn.execute("DELETE FROM queue_minutes WHERE minute < ?", (keep_since,))
            conn.execute("DELETE FROM agent_days WHERE day < ?", (keep_since,))

        await self._write(op)

    async def queue_minutes(
        self, since: int, until: int, queue: str | None = None
    ) -> list[QueueMinute]:
        return await self._records(QueueMinute, SQL_QUEUE_MINUTES, (since, until, queue, queue))

    async def agent_days(self, day: int) -> list[AgentDay]:
        return await self._records(AgentDay, SQL_AGENT_DAYS, (day,))
