"""The shared store: PostgreSQL through asyncpg, for hosts on several processes or machines.

Write path. As with SQLite, every write is an op (here a coroutine function of an asyncpg
connection) submitted to the group commit (store/group_commit.py), which hands each batch to
`_run_batch`: on the writer's own connection, BEGIN, the batch's message appends together in
one statement (_APPEND_MANY), a SAVEPOINT per other op that needs one, COMMIT. Numbers
(IMS..., CS..., INC...) and message seqs are allocated inside that transaction under row locks
(counters, interactions.last_seq), so they stay gap-free and unique with several processes
writing at once. Each batch takes those row locks first, in one order, so two processes'
batches on the same conversations queue rather than deadlock; should PostgreSQL still abort an
op as a deadlock (rows outside that order), that op alone runs again in a transaction of its
own once the rest of its batch has committed.

Read path. A bounded pool of connections. Writes resolve only after COMMIT, so a caller always
reads its own writes, whichever pooled connection serves the read.

Router lease and fencing (docs/architecture.md). One process at a time holds the routing role:
`acquire_router` takes a session advisory lock on a connection of its own, kept open for as
long as the role is held, and bumps router_lease.epoch. From then on every `apply_routing` of
this store reads that row FOR SHARE in its own transaction and stores nothing unless the epoch
is still its own (StoreFenced otherwise): a deposed router can never commit a decision, and a
new holder's bump waits for any routing transaction already past its check.

Connection loss is StoreUnavailable. Nothing reconnects in the background: the next read takes
a fresh pooled connection, the next batch a fresh writer connection. A transaction left open
and silent (a process frozen mid-batch) is ended by the server after the lease timeout
(idle_in_transaction_session_timeout), so it cannot hold other processes' writes for longer
than a frozen lease would. The server arms that timeout only after a Sync, though, so a takeover
ends the deposed holder's writer sessions itself (acquire_router).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from msgspec.structs import replace

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
from store import postgres_migrations
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
    StoreFenced,
    StoreFull,
    StoreStats,
    StoreUnavailable,
    sanitize_attachment_name,
)
from store.group_commit import GroupCommit, Outcome

# The record codec (JSON text in `data`, row shapes, offer ordering) both backends share, so
# they store byte-identical records.
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
V = TypeVar("V")
S = TypeVar("S", bound=msgspec.Struct)
WriteFn = Callable[[asyncpg.Connection], Awaitable[Any]]

# At most this many savepoints per transaction: PostgreSQL caches 64 subtransaction ids per
# session (PGPROC_MAX_CACHED_SUBXIDS); past that, every other session's snapshot has to look
# them up in pg_subtrans for as long as the batch is open. Commits cost little here next to
# the round trips of the ops, so bigger batches would buy almost nothing.
DEFAULT_MAX_BATCH = 64
READ_POOL_SIZE = 8
# At most this many keys in one coalesced look-up (_Coalesced): one statement, one array.
COALESCED_KEYS = 500
CONNECT_TIMEOUT_S = 10.0
# Every statement is bounded: a database that stops answering fails the write instead of
# holding it (and every write queued behind it) forever.
COMMAND_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 10.0
# How often a batch's deadlocked ops are run again in a transaction of their own.
RETRY_ROUNDS = 2
# pg_try_advisory_lock key of the routing role (postgres_migrations uses another).
ROUTER_LOCK = 0x1B0C_0002
# The lease connection pings every LEASE_TIMEOUT_S / 5. The server ends it after LEASE_TIMEOUT_S
# without a ping (idle_session_timeout, tcp_user_timeout), which frees the lock of a holder
# that froze or lost its network; the holder gives up sooner, after one ping unanswered.
LEASE_TIMEOUT_S = 10.0
# The application_name of a writer connection while its store holds the routing role; a
# takeover ends every session so named (acquire_router), all of them a deposed holder's.
ROUTER_WRITER = "inbox-tui router writer"
APPLICATION = "inbox-tui"
# How long a takeover's epoch bump waits for the transactions it must follow before it ends
# the deposed holder's writers again, and how many times it does so.
TAKEOVER_LOCK_WAIT_S = 1.0
TAKEOVER_TRIES = 3
SQL_END_DEPOSED_WRITERS = (
    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
    f"WHERE datname = current_database() AND application_name = '{ROUTER_WRITER}' "
    "AND pid <> pg_backend_pid() AND pid <> $1"
)

_OPEN_STATES = "('queued', 'offered', 'accepted', 'wrap_up')"
# Kept identical to the partial index's WHERE in postgres_migrations so the planner uses it.
SQL_OPEN_ITEMS = f"SELECT data FROM work_items WHERE state IN {_OPEN_STATES} ORDER BY pos"
SQL_PENDING_OFFERS = "SELECT data FROM offers WHERE state = 'pending' ORDER BY item"
_OPEN_NUMBERS = (
    f"SELECT data::json->>'interaction' AS number FROM work_items WHERE state IN {_OPEN_STATES}"
)
SQL_OPEN_INTERACTIONS = (
    f"SELECT i.data FROM interactions i JOIN ({_OPEN_NUMBERS}) o ON o.number = i.number"
)
# The newest $2 customer lines of each conversation numbered in $1, and its newest line of any
# kind (store/sqlite.py's SQL_OPEN_RECENT_MESSAGES, the same rows). The caller names the
# conversations, from the records it has just loaded, so no JSON of work items or interactions
# is parsed again; each is two short backward scans of the messages' primary key, and nothing
# but the few rows kept is sorted. Rows of one conversation come together, not ordered by seq.
SQL_RECENT_MESSAGES = """
SELECT n.number, r.data FROM unnest($1::text[]) AS n (number)
CROSS JOIN LATERAL (
    (SELECT seq, data FROM messages WHERE interaction = n.number ORDER BY seq DESC LIMIT 1)
    UNION
    (SELECT seq, data FROM messages
        WHERE interaction = n.number AND data::json->>'sender_kind' = 'customer'
        ORDER BY seq DESC LIMIT $2)
) r
"""
SQL_MESSAGES = "SELECT data FROM messages WHERE interaction = $1 AND seq > $2 ORDER BY seq LIMIT $3"
SQL_LAST_MESSAGES = "SELECT data FROM messages WHERE interaction = $1 ORDER BY seq DESC LIMIT $2"
# Each conversation's oldest undelivered one: a conversation stuck behind a failing delivery
# holds up no other. The outbox_open and outbox_by_conversation indexes serve it.
SQL_DUE_DELIVERIES = (
    "SELECT data FROM outbox o WHERE state IN ('pending', 'retrying') AND pos = ("
    "SELECT min(pos) FROM outbox WHERE conversation = o.conversation "
    "AND state IN ('pending', 'retrying')) ORDER BY pos LIMIT $1"
)
SQL_MESSAGE_DELIVERIES = (
    "SELECT message_seq, state FROM outbox WHERE conversation = $1 AND message_seq IS NOT NULL"
)
SQL_OUTBOX_BACKLOG = "SELECT count(*) FROM outbox WHERE state IN ('pending', 'retrying')"
# The audit_by_item index serves it.
# The day at a glance: as SQLite's.
SQL_QUEUE_MINUTES = (
    "SELECT data FROM queue_minutes WHERE minute >= $1 AND minute < $2 "
    "AND ($3::text IS NULL OR queue = $3) ORDER BY minute, queue"
)
SQL_AGENT_DAYS = "SELECT data FROM agent_days WHERE day = $1 ORDER BY agent"
_UPSERT_MINUTE = (
    "INSERT INTO queue_minutes (minute, queue, data) VALUES ($1, $2, $3) "
    "ON CONFLICT (minute, queue) DO UPDATE SET data = EXCLUDED.data"
)
_UPSERT_AGENT_DAY = (
    "INSERT INTO agent_days (day, agent, data) VALUES ($1, $2, $3) "
    "ON CONFLICT (day, agent) DO UPDATE SET data = EXCLUDED.data"
)
SQL_AUDIT_TRAIL = "SELECT data FROM audit WHERE item = $1 ORDER BY id DESC LIMIT $2"


def interactions_query(agent: str | None, archived: bool | None) -> tuple[str, list[Any]]:
    """SQL and its parameters for list_interactions, but for the LIMIT and OFFSET that follow
    as the last two parameters (as store.sqlite.interactions_query, in PostgreSQL's dialect)."""
    where: list[str] = []
    params: list[Any] = []
    source = "interactions i"
    if agent is not None:
        source = "participants p JOIN interactions i ON i.number = p.interaction"
        params.append(agent)
        where.append(f"p.agent = ${len(params)}")
    if archived is not None:
        params.append(archived)
        where.append(f"i.archived = ${len(params)}")
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    n = len(params)
    return (
        f"SELECT i.data FROM {source} {clause}ORDER BY i.opened_at DESC, i.number DESC "
        f"LIMIT ${n + 1} OFFSET ${n + 2}",
        params,
    )


def redact(dsn: str) -> str:
    """The DSN without its password: what error messages and logs may show."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


# Failures of the database or of the way to it, rather than of the request.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, cancelled by an admin, timeouts
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # pointed at a standby
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidCatalogNameError,  # no such database
    asyncpg.exceptions.TransactionRollbackError,  # still deadlocked after RETRY_ROUNDS
    asyncpg.exceptions.InternalClientError,
)
_ERRORS = (asyncpg.PostgresError, *_UNAVAILABLE)
# Of those, the ones after which the connection cannot be trusted to carry on a transaction.
_BROKEN = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InternalClientError,
)
# Of those, the ones that mean the session is gone: a statement that met one on a connection
# that had been idle was never run, and may be run again on a fresh connection.
_DIED = (
    ConnectionError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.IdleSessionTimeoutError,
)


def _classify(exc: BaseException, doing: str) -> StoreError:
    """Turn an asyncpg/OS error into the StoreError a caller can act on."""
    if isinstance(exc, StoreError):
        return exc
    err: StoreError
    if isinstance(exc, asyncpg.exceptions.DiskFullError):
        err = StoreFull(f"{doing}: the database's disk is full ({exc}); nothing of it was stored")
    elif isinstance(exc, _UNAVAILABLE):
        cause = str(exc) or type(exc).__name__
        err = StoreUnavailable(f"{doing}: the database failed ({cause}); nothing of it was stored")
    elif isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        err = StoreConflict(f"{doing}: {exc}")
    else:
        err = StoreError(f"{doing}: {exc}")
    err.__cause__ = exc
    return err


def _count(status: str) -> int:
    """The row count of a command status such as 'UPDATE 3'."""
    return int(status.rpartition(" ")[2])


@dataclass(frozen=True, slots=True)
class _Op:
    """A write, with the rows it will lock: a batch locks all of its ops' rows first, in one
    order (counters by name, then interactions by number), so two processes' batches that
    share rows queue one behind the other instead of deadlocking."""

    run: WriteFn
    counters: tuple[str, ...] = ()
    interactions: tuple[str, ...] = ()
    # Without a savepoint of its own: one statement whose refusals are results, not errors
    # (an op that raises without PostgreSQL failing leaves the transaction as it was). If the
    # statement itself fails, so does the whole batch: its ops are all answered with the error.
    guarded: bool = True
    # A plain message append (unguarded): a batch writes all of its appends in one statement
    # (_APPEND_MANY) instead of running each op's own.
    append: _Append | None = None


@dataclass(frozen=True, slots=True)
class _Append:
    message: Message  # as it will be stored, but with seq 0
    before: str  # its stored JSON up to the seq, and after it (_around_seq)
    after: str


# A message appended in one statement: nothing if its client_msg_id is stored already (that one
# is returned), else the conversation's next seq counted and the message stored with it.
_APPEND = """
WITH stored AS (
    SELECT data FROM messages WHERE interaction = $1 AND client_msg_id = $2
), counted AS (
    UPDATE interactions SET last_seq = last_seq + 1
    WHERE number = $1 AND NOT EXISTS (SELECT 1 FROM stored)
    RETURNING last_seq
), inserted AS (
    INSERT INTO messages (interaction, seq, client_msg_id, data)
    SELECT $1, last_seq, $2, $3 || last_seq || $4 FROM counted
    RETURNING seq
)
SELECT EXISTS (SELECT 1 FROM interactions WHERE number = $1),
       (SELECT data FROM stored),
       (SELECT seq FROM inserted)
"""


# A batch's appends in one statement, in the order they were made: per message the look for
# its client_msg_id (the first of each id in the batch counts; a later one is its duplicate),
# then per conversation one bump of last_seq by the number of new messages, which are
# numbered from it in order. Every look-up is by primary key or unique index.
_APPEND_MANY = """
WITH m AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
        WITH ORDINALITY AS m(interaction, cid, head, tail, n)
), firsts AS MATERIALIZED (
    SELECT DISTINCT ON (interaction, cid) interaction, cid, head, tail, n,
        (SELECT data FROM messages AS s
         WHERE s.interaction = m.interaction AND s.client_msg_id = m.cid) AS stored,
        -- A scalar subquery, not EXISTS: that one may be planned as a hash of the whole table.
        (SELECT true FROM interactions AS x WHERE x.number = m.interaction) AS known
    FROM m
    ORDER BY interaction, cid, n
), fresh AS MATERIALIZED (
    SELECT interaction, cid, head, tail,
        row_number() OVER (PARTITION BY interaction ORDER BY n) AS k,
        count(*) OVER (PARTITION BY interaction) AS added
    FROM firsts
    WHERE stored IS NULL AND known IS NOT NULL
), counted AS (
    UPDATE interactions AS x
    SET last_seq = x.last_seq + (SELECT count(*) FROM fresh AS f WHERE f.interaction = x.number)
    WHERE x.number = ANY($1::text[])
      AND EXISTS (SELECT 1 FROM fresh AS f WHERE f.interaction = x.number)
    RETURNING x.number, x.last_seq AS top
), inserted AS (
    INSERT INTO messages (interaction, seq, client_msg_id, data)
    SELECT f.interaction, c.top - f.added + f.k, f.cid, f.head || (c.top - f.added + f.k) || f.tail
    FROM fresh AS f JOIN counted AS c ON c.number = f.interaction
    RETURNING interaction, client_msg_id, seq
)
SELECT f.interaction, f.cid, f.known, f.stored, i.seq
FROM firsts AS f
LEFT JOIN inserted AS i ON i.interaction = f.interaction AND i.client_msg_id = f.cid
"""


async def _append_many(conn: asyncpg.Connection, appends: list[_Append]) -> list[Outcome]:
    """Run a batch's appends as _APPEND_MANY; per append what its own op would return."""
    rows = await conn.fetch(
        _APPEND_MANY,
        [a.message.interaction for a in appends],
        [a.message.client_msg_id for a in appends],
        [a.before for a in appends],
        [a.after for a in appends],
    )
    found = {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
    first: dict[tuple[str, str], Message] = {}
    outcomes: list[Outcome] = []
    for a in appends:
        key = (a.message.interaction, a.message.client_msg_id)
        known, stored, seq = found[key]
        if stored is not None:
            outcomes.append((True, (load(Message, stored), True)))
        elif known is None:
            outcomes.append(
                (False, NotFound(f"interaction {a.message.interaction} does not exist"))
            )
        elif key in first:
            outcomes.append((True, (first[key], True)))
        else:
            first[key] = replace(a.message, seq=seq)
            outcomes.append((True, (first[key], False)))
    return outcomes


# A new interaction in one statement: its number counted (formatted as format_number does:
# the prefix, then at least seven digits) unless one reserved before is given ($7), the record
# stored with the number spliced into its JSON, and its participants.
_CREATE = """
WITH counted AS (
    UPDATE counters SET value = value + 1 WHERE name = $1 AND $7::text IS NULL RETURNING value
), numbered AS (
    SELECT $1 || CASE WHEN value < 10000000 THEN lpad(value::text, 7, '0') ELSE value::text END
        AS number
    FROM counted
    UNION ALL
    SELECT $7 WHERE $7 IS NOT NULL
), stored AS (
    INSERT INTO interactions (number, archived, opened_at, data)
    SELECT number, $2, $3, $4 || to_json(number)::text || $5 FROM numbered
    RETURNING number
), joined AS (
    INSERT INTO participants (agent, interaction)
    SELECT agent, number FROM stored, unnest($6::text[]) AS agent
    ON CONFLICT DO NOTHING
)
SELECT number FROM stored
"""
_NUMBER_HEAD = '{"number":'


def _around_number(data: str) -> tuple[str, str]:
    """A record's stored JSON (number "") as the text before its number and the text after."""
    head = _NUMBER_HEAD + '""'
    if not data.startswith(head):
        raise AssertionError(f"unexpected interaction encoding: {data[:80]}")
    return _NUMBER_HEAD, data[len(head) :]


async def _insert_delivery(conn: asyncpg.Connection, delivery: Delivery) -> None:
    seq = delivery.message.seq if delivery.message is not None else None
    await conn.execute(
        "INSERT INTO outbox (id, conversation, message_seq, state, data) "
        "VALUES ($1, $2, $3, $4, $5)",
        delivery.id,
        delivery.conversation,
        seq,
        delivery.state,
        dump(delivery),
    )


def _around_seq(data: str) -> tuple[str, str]:
    """A message's stored JSON (seq 0) as the text before its seq and the text after."""
    head = '"seq":0,'
    at = data.find(head)
    if not data.startswith('{"interaction":') or at < 0:
        raise AssertionError(f"unexpected message encoding: {data[:80]}")
    return data[: at + len(head) - 2], data[at + len(head) - 1 :]


class _Retry(Exception):
    """An op lost a race with another process's transaction: run it again after this batch."""


_TRANSIENT = (asyncpg.exceptions.TransactionRollbackError, _Retry)


async def _next_number(conn: asyncpg.Connection, prefix: str) -> str:
    # The row lock queues other processes' allocations until this transaction ends.
    value = await conn.fetchval(
        "UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value", prefix
    )
    return format_number(prefix, value)


def _tx_executemany(sql: str, rows: list[tuple[Any, ...]]) -> WriteFn:
    async def op(conn: asyncpg.Connection) -> None:
        if rows:
            await conn.executemany(sql, rows)

    return op


def _tx_count(sql: str, *params: Any) -> Callable[[asyncpg.Connection], Awaitable[int]]:
    async def op(conn: asyncpg.Connection) -> int:
        return _count(await conn.execute(sql, *params))

    return op


def _upsert_data(table: str, key: str) -> str:
    return (
        f"INSERT INTO {table} ({key}, data) VALUES ($1, $2) "
        f"ON CONFLICT ({key}) DO UPDATE SET data = EXCLUDED.data"
    )


# A routing step's rows in one statement, one round trip: each table's rows as arrays, written
# in array order (WITH ORDINALITY), which is the order the rules need: items keep their queue
# position, an offer leaving `pending` goes before its item's next one (offer_rows), and audit
# entries keep theirs. Records are updated, or inserted if new (created with their item), and
# their participants made to match. The step's system lines are numbered as _APPEND_MANY
# numbers appends, the bump of each conversation's last_seq made by the same UPDATE (or
# INSERT) that writes its record, since one statement may not change a row twice.
_ROUTE = """
WITH lines AS (
    SELECT l.*,
        row_number() OVER (PARTITION BY interaction ORDER BY n) AS k,
        count(*) OVER (PARTITION BY interaction) AS added
    FROM unnest($25::text[], $26::text[], $27::text[], $28::text[])
        WITH ORDINALITY AS l(interaction, cid, head, tail, n)
), added AS (
    SELECT interaction, count(*) AS more FROM lines GROUP BY interaction
), items AS (
    INSERT INTO work_items (id, state, data)
    SELECT id, state, data
    FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS r(id, state, data, n)
    ORDER BY n
    ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, data = EXCLUDED.data
), offers AS (
    INSERT INTO offers (id, item, state, data)
    SELECT id, item, state, data
    FROM unnest($4::text[], $5::text[], $6::text[], $7::text[])
        WITH ORDINALITY AS r(id, item, state, data, n)
    ORDER BY n
    ON CONFLICT (id) DO UPDATE
    SET item = EXCLUDED.item, state = EXCLUDED.state, data = EXCLUDED.data
), statuses AS (
    INSERT INTO agent_statuses (agent, data)
    SELECT * FROM unnest($8::text[], $9::text[])
    ON CONFLICT (agent) DO UPDATE SET data = EXCLUDED.data
), audit AS (
    INSERT INTO audit (item, data)
    SELECT item, data FROM unnest($10::text[], $11::text[]) WITH ORDINALITY AS r(item, data, n)
    ORDER BY n
), affinity AS (
    INSERT INTO affinity (customer, agent, at)
    SELECT * FROM unnest($12::text[], $13::text[], $14::float8[])
    ON CONFLICT (customer) DO UPDATE SET agent = EXCLUDED.agent, at = EXCLUDED.at
), records AS (
    UPDATE interactions AS i
    SET archived = r.archived, opened_at = r.opened_at, data = r.data,
        last_seq = i.last_seq + coalesce(a.more, 0)
    FROM unnest($15::text[], $16::bool[], $17::float8[], $18::text[])
        AS r(number, archived, opened_at, data)
    LEFT JOIN added AS a ON a.interaction = r.number
    WHERE i.number = r.number
    RETURNING i.number, i.last_seq AS top
), counted AS (
    UPDATE interactions AS i
    SET last_seq = i.last_seq + a.more
    FROM added AS a
    WHERE i.number = a.interaction AND NOT (a.interaction = ANY($15::text[]))
    RETURNING i.number, i.last_seq AS top
), created AS (
    INSERT INTO interactions (number, archived, opened_at, data, last_seq)
    SELECT c.*, coalesce(a.more, 0)
    FROM unnest($21::text[], $22::bool[], $23::float8[], $24::text[])
        AS c(number, archived, opened_at, data)
    LEFT JOIN added AS a ON a.interaction = c.number
    RETURNING number, last_seq AS top
), tops AS (
    SELECT * FROM records UNION ALL SELECT * FROM counted UNION ALL SELECT * FROM created
), said AS (
    INSERT INTO messages (interaction, seq, client_msg_id, data)
    SELECT l.interaction, t.top - l.added + l.k, l.cid, l.head || (t.top - l.added + l.k) || l.tail
    FROM lines AS l JOIN tops AS t ON t.number = l.interaction
    RETURNING interaction, client_msg_id, seq
), joined AS (
    INSERT INTO participants (agent, interaction)
    SELECT * FROM unnest($19::text[], $20::text[])
    ON CONFLICT DO NOTHING
), gone AS (
    DELETE FROM participants AS p
    WHERE p.interaction = ANY($15::text[])
      AND NOT EXISTS (
          SELECT 1 FROM unnest($19::text[], $20::text[]) AS k(agent, interaction)
          WHERE k.agent = p.agent AND k.interaction = p.interaction
      )
)
SELECT array(SELECT number FROM records),
    array(
        SELECT s.seq FROM lines AS l
        LEFT JOIN said AS s ON s.interaction = l.interaction AND s.client_msg_id = l.cid
        ORDER BY l.n
    )
"""
# The key a violated constraint names, from PostgreSQL's detail: 'Key (item)=(w1) ...'.
_KEY = re.compile(r"Key \([^)]*\)=\((.*)\) (?:is not present|already exists)")


def _newest(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The last row of each key (the first column), in the order the keys were last seen: one
    statement may not upsert a row twice."""
    last = {row[0]: i for i, row in enumerate(rows)}
    return [row for i, row in enumerate(rows) if last[row[0]] == i]


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[row[k] for row in rows] for k in range(width)]


def _route_violation(
    exc: asyncpg.IntegrityConstraintViolationError, offers: list[tuple[Any, ...]]
) -> Exception:
    """What the caller is told when the routing statement broke a rule: which offer, or which
    interaction, as the rows' own checks would say it."""
    found = _KEY.search(getattr(exc, "detail", None) or "")
    key = found.group(1) if found else "?"
    constraint = getattr(exc, "constraint_name", None) or ""
    offer = next((row[0] for row in offers if row[1] == key), "?")
    if constraint == "offers_item_fkey":
        return NotFound(f"offer {offer}: work item {key} is not stored")
    if constraint == "offers_one_pending":
        pending = next(
            (row[0] for row in offers if row[1] == key and row[2] == OfferState.PENDING), offer
        )
        return StoreConflict(f"offer {pending}: work item {key} already has a pending offer")
    if constraint == "interactions_pkey":
        return StoreConflict(f"interaction {key} is stored already")
    if constraint == "participants_interaction_fkey":
        return NotFound(f"interaction {key} does not exist (create_interaction allocates numbers)")
    return exc


async def _add_participants(conn: asyncpg.Connection, record: InteractionRecord) -> list[str]:
    agents = list(dict.fromkeys(p.agent for p in record.participants))
    if agents:
        await conn.execute(
            "INSERT INTO participants (agent, interaction) SELECT unnest($1::text[]), $2 "
            "ON CONFLICT DO NOTHING",
            agents,
            record.number,
        )
    return agents


async def _write_participants(conn: asyncpg.Connection, record: InteractionRecord) -> None:
    agents = await _add_participants(conn, record)
    await conn.execute(
        "DELETE FROM participants WHERE interaction = $1 AND NOT (agent = ANY($2::text[]))",
        record.number,
        agents,
    )


async def _update_interaction(
    conn: asyncpg.Connection, record: InteractionRecord, data: str
) -> None:
    status = await conn.execute(
        "UPDATE interactions SET archived = $1, opened_at = $2, data = $3 WHERE number = $4",
        record.archived,
        record.opened_at,
        data,
        record.number,
    )
    if _count(status) == 0:
        raise NotFound(
            f"interaction {record.number} does not exist (create_interaction allocates numbers)"
        )
    await _write_participants(conn, record)


async def _insert_idempotency_key(conn: asyncpg.Connection, key: IdempotencyKey) -> None:
    expired = key.created_at - IDEMPOTENCY_TTL
    # Bounded per insert, so a backlog of expired keys is worked off without one long write;
    # SKIP LOCKED so two processes pruning at once do not queue on each other's rows.
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE (scope, key) IN (SELECT scope, key "
        "FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2 "
        "FOR UPDATE SKIP LOCKED)",
        expired,
        IDEMPOTENCY_PRUNE_BATCH,
    )
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND created_at < $3",
        key.scope,
        key.key,
        expired,
    )
    try:
        await conn.execute(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, interaction, created_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            key.scope,
            key.key,
            key.fingerprint,
            key.interaction,
            key.created_at,
        )
    except asyncpg.UniqueViolationError as exc:
        raise StoreConflict(
            f"idempotency key {key.key!r} of {key.scope} is already stored"
        ) from exc


async def _insert_login(
    conn: asyncpg.Connection, what: str, agent: str | None, sql: str, row: tuple[Any, ...]
) -> None:
    try:
        await conn.execute(sql, *row)
    except asyncpg.ForeignKeyViolationError as exc:
        raise NotFound(f"{what}: agent {agent} does not exist") from exc
    except asyncpg.UniqueViolationError as exc:
        raise StoreConflict(f"{what}: already stored ({exc})") from exc


class _Coalesced(Generic[V]):
    """Look-ups by key made in the same turn of the event loop, answered by one read for all
    their keys. Thousands of consoles resuming on a new router at once each looked up their
    token and their agent, two reads apiece through a pool of 8 connections; past its wait,
    most were refused (docs/scaling.md). One key alone waits one turn of the loop."""

    def __init__(self, fetch: Callable[[list[str]], Awaitable[dict[str, V]]]) -> None:
        self._fetch = fetch
        self._asked: dict[str, list[asyncio.Future[V | None]]] | None = None
        self._reads: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> V | None:
        loop = asyncio.get_running_loop()
        if self._asked is None:
            self._asked = {}
            loop.call_soon(self._read)
        answer: asyncio.Future[V | None] = loop.create_future()
        self._asked.setdefault(key, []).append(answer)
        return await answer

    def _read(self) -> None:
        asked, self._asked = self._asked or {}, None
        keys = list(asked)
        for start in range(0, len(keys), COALESCED_KEYS):
            part = {key: asked[key] for key in keys[start : start + COALESCED_KEYS]}
            task = asyncio.get_running_loop().create_task(self._answer(part))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)

    async def _answer(self, asked: dict[str, list[asyncio.Future[V | None]]]) -> None:
        try:
            found = await self._fetch(list(asked))
        except Exception as exc:
            for answers in asked.values():
                for answer in answers:
                    if not answer.done():
                        # One exception object each: several awaiters raising one instance
                        # would pile their tracebacks onto it.
                        answer.set_exception(_copy(exc) if isinstance(exc, StoreError) else exc)
            return
        for key, answers in asked.items():
            for answer in answers:
                if not answer.done():
                    answer.set_result(found.get(key))


class PostgresStore:
    """`store.base.Store` on a PostgreSQL database; see the module docstring."""

    def __init__(
        self,
        dsn: str,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        pool_size: int = READ_POOL_SIZE,
        lease_timeout: float = LEASE_TIMEOUT_S,
        read_wait: float = CONNECT_TIMEOUT_S,
    ) -> None:
        if not 1 <= pool_size <= 100:
            raise ValueError(f"pool_size must be from 1 to 100, not {pool_size}")
        if not 0.0 < read_wait <= 600.0:
            raise ValueError(f"read_wait must be over 0 and at most 600 s, not {read_wait}")
        if not 1.0 <= lease_timeout <= 600.0:
            raise ValueError(f"lease_timeout must be from 1 to 600 s, not {lease_timeout}")
        self._dsn = dsn
        self.where = redact(dsn)
        self._pool_size = pool_size
        self._lease_timeout = lease_timeout
        self._read_wait = read_wait  # for a connection of the read pool
        # Every use of a token looks up its session or API token and its agent (core/auth.py).
        self._sessions = _Coalesced(self._sessions_by_digest)
        self._api_tokens = _Coalesced(self._api_tokens_by_digest)
        self._agents = _Coalesced(self._agents_by_id)
        self.stats = StoreStats()
        self._writer: GroupCommit[_Op] = GroupCommit(
            self._run_batch, self.stats, max_batch=max_batch, where=self.where
        )
        self._pool: asyncpg.Pool | None = None
        self._wconn: asyncpg.Connection | None = None
        self._wname = APPLICATION  # the writer connection's application_name
        # The routing role: see acquire_router.
        self._epoch: int | None = None
        self._lease: asyncpg.Connection | None = None
        self._lease_watch: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._lost.set()
        self.router_lost_reason: str | None = None

    async def __aenter__(self) -> PostgresStore:
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

    def _settings(self, **settings: str) -> dict[str, str]:
        # A transaction this process leaves open and silent (the process froze mid-batch) is
        # ended by the server after lease_timeout, like a silent lease: its row locks would
        # otherwise hold up every other process's writes to those rows for as long as it
        # stays frozen. The server arms this timeout only after a Sync, so a process frozen
        # inside a pipelined sequence keeps its transaction (test_cluster_kills' "freeze
        # router" met one): a takeover ends the deposed router's writer itself (_bump_epoch).
        # Edges write nothing but the cluster's secrets, once, in single statements.
        return {
            "application_name": APPLICATION,
            "idle_in_transaction_session_timeout": f"{int(self._lease_timeout * 1000)}ms",
            **settings,
        }

    async def _connect(self, **settings: str) -> asyncpg.Connection:
        return await asyncpg.connect(
            self._dsn,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
            server_settings=self._settings(**settings),
        )

    async def open(self) -> None:
        if self._writer.started:
            raise StoreError(f"{self.where} is already open")
        try:
            try:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self._pool_size,
                    timeout=CONNECT_TIMEOUT_S,
                    command_timeout=COMMAND_TIMEOUT_S,
                    server_settings=self._settings(),
                )
                self._wconn = await self._connect()
            except _ERRORS as exc:
                raise _unreachable(exc, self.where) from exc
            await postgres_migrations.migrate(self._wconn, self.where)
        except BaseException as exc:
            await self._release()
            if isinstance(exc, _ERRORS):
                raise _classify(exc, f"opening {self.where}") from exc
            raise
        self._writer.start()

    async def close(self) -> None:
        if not self._writer.started or self._writer.stopping:
            return  # never opened, or another close() is already under way
        try:
            await self._writer.stop()
        finally:
            await self._release()

    async def _release(self) -> None:
        """Free whatever open() got: safe on a half-opened store."""
        await self.release_router()
        if self._wconn is not None:
            await _close_connection(self._wconn)
            self._wconn = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
            except (TimeoutError, *_ERRORS):
                pool.terminate()

    # -- the write path -------------------------------------------------------------------

    async def _write(
        self,
        fn: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        counters: tuple[str, ...] = (),
        interactions: tuple[str, ...] = (),
        guarded: bool = True,
    ) -> T:
        """Run `fn` in the next batch's transaction; returns its result once committed.
        `counters` and `interactions` name the rows of those tables it updates (_Op)."""
        op = _Op(fn, counters, interactions, guarded)
        return await self._writer.submit(op)

    async def _writer_connection(self) -> asyncpg.Connection:
        if self._wconn is None or self._wconn.is_closed():
            self._wconn = None
            try:
                self._wconn = await self._connect()
            except _ERRORS as exc:
                raise _unreachable(exc, self.where) from exc
            self._wname = APPLICATION
        return self._wconn

    async def _begin(self) -> asyncpg.Connection:
        """The writer connection, inside a new transaction."""
        for attempt in (1, 2):
            conn = await self._writer_connection()
            try:
                if conn.is_in_transaction():
                    # Left so by a batch cancelled halfway: none of it was acknowledged.
                    await conn.execute("ROLLBACK")
                # Named for what it writes for (_bump_epoch), in the same round trip.
                name = ROUTER_WRITER if self._lease is not None else APPLICATION
                if name == self._wname:
                    await conn.execute("BEGIN")
                else:
                    await conn.execute(f"SET application_name = '{name}'; BEGIN")
                    self._wname = name
                return conn
            except _DIED:
                # Died while idle (a database restart, a proxy's timeout). Nothing of this
                # batch was sent yet, so a fresh connection may take it.
                await _close_connection(conn)
                self._wconn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _run_batch(self, ops: list[_Op]) -> tuple[list[Outcome], bool]:
        """Run `ops` in one transaction, one SAVEPOINT each, then COMMIT; the ops that lost a
        race with another process (a deadlock, a concurrent duplicate) run again afterwards in
        a transaction of their own, up to RETRY_ROUNDS times."""
        outcomes, committed = await self._run_transaction(ops)
        for _ in range(RETRY_ROUNDS):
            again = [i for i, (ok, exc) in enumerate(outcomes) if not ok and _transient(exc)]
            if not committed or not again:
                break
            retried, _ = await self._run_transaction([ops[i] for i in again])
            for i, outcome in zip(again, retried, strict=True):
                outcomes[i] = outcome
        for i, (ok, exc) in enumerate(outcomes):
            if not ok and _transient(exc):
                outcomes[i] = (False, _classify(exc.__cause__ or exc, f"writing to {self.where}"))
        return outcomes, committed

    async def _run_transaction(self, ops: list[_Op]) -> tuple[list[Outcome], bool]:
        outcomes: list[Outcome] = []
        conn: asyncpg.Connection | None = None
        try:
            conn = await self._begin()
            await _lock_rows(conn, ops)
            # The batch's appends first, together: no op of a batch waits for another's result
            # (each caller awaits its own commit before writing what depends on it).
            appends = [(i, op.append) for i, op in enumerate(ops) if op.append is not None]
            together: dict[int, Outcome] = {}
            if len(appends) > 1:
                done = await _append_many(conn, [a for _, a in appends])
                together = {i: outcome for (i, _), outcome in zip(appends, done, strict=True)}
            # Statements are paired into one round trip where they can be: the savepoint
            # bookkeeping would otherwise cost as many round trips as the ops themselves.
            release = False  # the savepoint of the last guarded op is still open
            for i, op in enumerate(ops):
                if i in together:
                    outcomes.append(together[i])
                    continue
                if not op.guarded:
                    try:
                        result = await op.run(conn)
                    except asyncpg.PostgresError:
                        raise  # the transaction is lost: the whole batch fails
                    except Exception as exc:
                        if conn.is_closed() or isinstance(exc, _BROKEN):
                            raise
                        outcomes.append((False, exc))
                    else:
                        outcomes.append((True, result))
                    continue
                await conn.execute(
                    "RELEASE SAVEPOINT op; SAVEPOINT op" if release else "SAVEPOINT op"
                )
                try:
                    result = await op.run(conn)
                except Exception as exc:
                    if conn.is_closed() or isinstance(exc, _BROKEN):
                        raise
                    await conn.execute("ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op")
                    if isinstance(exc, asyncpg.PostgresError):
                        exc = _classify(exc, f"writing to {self.where}")
                    outcomes.append((False, exc))
                    release = False
                else:
                    outcomes.append((True, result))
                    release = True
            await conn.execute("COMMIT")
        except Exception as exc:
            if conn is not None and not conn.is_closed() and conn.is_in_transaction():
                with contextlib.suppress(*_ERRORS):
                    await conn.execute("ROLLBACK")
            if conn is not None and (conn.is_closed() or isinstance(exc, _BROKEN)):
                # Whatever state it is in, the next batch starts on a fresh connection.
                await _close_connection(conn)
                self._wconn = None
            err = _classify(exc, f"committing {len(ops)} writes to {self.where}")
            # One exception object per op: several awaiters raising one instance would
            # pile their tracebacks onto it.
            return [(False, _copy(err)) for _ in ops], False
        return outcomes, True

    # -- the read path --------------------------------------------------------------------

    async def _on_pool(
        self, doing: str, fn: Callable[[PoolConnectionProxy[Any]], Awaitable[T]]
    ) -> T:
        """`fn` on a pooled connection; failing to get one is StoreUnavailable. `fn` must be
        safe to run twice: a pooled connection that died while idle (a database restart)
        fails it, and it is run once more on a fresh one."""
        pool = self._pool
        if pool is None or not self._writer.started:
            raise StoreClosed(f"{self.where} is not open")
        for attempt in (1, 2):
            try:
                conn = await pool.acquire(timeout=self._read_wait)
            except TimeoutError as exc:
                # Not the database refusing: its answer would say so. Said plainly, since a
                # burst of reads (thousands of consoles resuming on a new router) ends here
                # in numbers, and "cannot connect" read as the database being down.
                raise StoreUnavailable(
                    f"no read connection to {self.where} came free within "
                    f"{self._read_wait:g} s (all {self._pool_size} busy, or a new one slow to "
                    "open: the database or this host is overloaded); nothing was read"
                ) from exc
            except _ERRORS as exc:
                raise _unreachable(exc, self.where) from exc
            try:
                return await fn(conn)
            except _DIED as exc:
                if attempt == 2:
                    raise _classify(exc, f"{doing} {self.where}") from exc
            except _ERRORS as exc:
                raise _classify(exc, f"{doing} {self.where}") from exc
            finally:
                # A connection that dies while it is reset for the pool is terminated by the
                # pool; the caller needs the read's rows or its own error, not that one.
                with contextlib.suppress(*_ERRORS):
                    await pool.release(conn)
        raise AssertionError("unreachable")

    async def _rows(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        return await self._on_pool("reading", lambda conn: conn.fetch(sql, *params))

    async def _records(self, cls: type[S], sql: str, *params: Any) -> list[S]:
        return [load(cls, row[0]) for row in await self._rows(sql, *params)]

    async def _record(self, cls: type[S], sql: str, *params: Any) -> S | None:
        records = await self._records(cls, sql, *params)
        return records[0] if records else None

    # -- the routing role -----------------------------------------------------------------

    async def shared_secret(self, name: str, size: int) -> bytes:
        """The cluster's secret `name`: `size` random bytes made by the first host to ask,
        the same for every host after."""
        made = secrets.token_bytes(size)

        async def get(conn: PoolConnectionProxy[Any]) -> bytes:
            await conn.execute(
                "INSERT INTO cluster_secrets (name, value) VALUES ($1, $2) "
                "ON CONFLICT (name) DO NOTHING",
                name,
                made,
            )
            return bytes(
                await conn.fetchval("SELECT value FROM cluster_secrets WHERE name = $1", name)
            )

        return await self._on_pool("reading a shared secret of", get)

    @property
    def router_epoch(self) -> int | None:
        """The fencing epoch of the routing role while this store holds it, else None."""
        return self._epoch if self._lease is not None else None

    @property
    def router_lost(self) -> asyncio.Event:
        """Set whenever this store does not hold the routing role: before acquire_router
        succeeds, and from the moment the role ends (its connection closed or stopped
        answering, or release_router). A new Event for each term; `router_lost_reason` says
        why the last term ended."""
        return self._lost

    async def acquire_router(self, holder: str) -> int | None:
        """Try once to take the routing role for `holder` (a name for people: host and pid).

        Returns the new fencing epoch, or None if another session holds the role. The epoch
        is committed before this returns, so state loaded from the store afterwards includes
        every decision of earlier holders. From then on apply_routing stores nothing unless
        the epoch is still this one (StoreFenced), and once the role is lost or released it
        refuses at once, until a later acquire_router succeeds.
        """
        if not self._writer.started:
            raise StoreClosed(f"{self.where} is not open")
        if self._lease is not None:
            raise StoreError(f"{self.where}: this store already holds the routing role")
        ping = self._lease_timeout / 5
        try:
            conn = await self._connect(
                application_name="inbox-tui router lease",
                idle_session_timeout=f"{int(self._lease_timeout * 1000)}ms",
                lock_timeout=f"{int(TAKEOVER_LOCK_WAIT_S * 1000)}ms",
                tcp_user_timeout=f"{int(self._lease_timeout * 1000)}ms",
                tcp_keepalives_idle=str(max(1, int(ping))),
                tcp_keepalives_interval=str(max(1, int(ping))),
            )
        except _ERRORS as exc:
            raise _classify(exc, f"taking the routing role in {self.where}") from exc
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ROUTER_LOCK):
                await _close_connection(conn)
                return None
            epoch = await self._bump_epoch(conn, holder)
        except BaseException as exc:
            await _close_connection(conn)
            if isinstance(exc, _ERRORS):
                raise _classify(exc, f"taking the routing role in {self.where}") from exc
            raise
        self._epoch, self._lease = int(epoch), conn
        self._lost = lost = asyncio.Event()
        self.router_lost_reason = None
        conn.add_termination_listener(
            lambda _conn: self._end_term(conn, lost, "the lease connection closed")
        )
        self._lease_watch = asyncio.get_running_loop().create_task(
            self._watch_lease(conn, lost), name="router-lease"
        )
        return self._epoch

    async def _bump_epoch(self, conn: asyncpg.Connection, holder: str) -> int:
        # The deposed holder's writer sessions are ended first. Its transaction, if one is
        # open, holds router_lease FOR SHARE (the bump would wait for it) or rows this holder
        # will write (its writer would). The server ends a silent transaction after the lease
        # timeout, but not one whose process froze mid-pipeline, before its Sync: that one
        # would hold them for as long as the process stays frozen. Ending them is safe:
        # holding the advisory lock, this process knows they belong to a term that is over,
        # and a transaction not committed has acknowledged nothing.
        for _ in range(TAKEOVER_TRIES):
            own = self._wconn  # named so by an earlier term of this store: not deposed
            try:
                await conn.fetchval(SQL_END_DEPOSED_WRITERS, own.get_server_pid() if own else 0)
            except asyncpg.exceptions.InsufficientPrivilegeError as exc:
                raise StoreError(
                    f"taking the routing role in {self.where}: the deposed router's writer "
                    f"is still connected and this role may not end it ({exc}); every host "
                    "must connect as the same role, or be granted pg_signal_backend"
                ) from exc
            try:
                return int(
                    await conn.fetchval(
                        "UPDATE router_lease SET epoch = epoch + 1, holder = $1, since = $2 "
                        "WHERE id = 1 RETURNING epoch",
                        holder[:200],
                        time.time(),
                    )
                )
            except asyncpg.exceptions.LockNotAvailableError:
                continue  # lock_timeout: a transaction not of a router writer holds the row
        raise StoreError(
            f"taking the routing role in {self.where}: a transaction of a session that is not "
            f"a router writer holds router_lease FOR SHARE ({TAKEOVER_TRIES} tries of "
            f"{TAKEOVER_LOCK_WAIT_S:g} s)"
        )

    async def release_router(self) -> None:
        """Give the routing role up (no-op without it): later apply_routing calls raise
        StoreFenced, and router_lost is set."""
        conn, watch = self._lease, self._lease_watch
        self._lease_watch = None
        if conn is not None:
            self._end_term(conn, self._lost, "released")
        if watch is not None:  # also the watcher of a term that ended by itself
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if conn is not None:
            # Closing the session frees the advisory lock; no unlock needed.
            await _close_connection(conn)

    def _end_term(self, conn: asyncpg.Connection, lost: asyncio.Event, reason: str) -> None:
        if self._lease is not conn:
            return  # an older term's connection, ended already
        self._lease = None
        self.router_lost_reason = reason
        lost.set()

    async def _watch_lease(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        # The termination listener hears a closed socket; a frozen server or a cut network
        # says nothing, so the session is pinged, which also keeps idle_session_timeout away.
        ping = self._lease_timeout / 5
        reason = "the lease connection closed"
        try:
            while not lost.is_set():
                await asyncio.sleep(ping)
                await conn.fetchval("SELECT 1", timeout=ping * 2)
        except _ERRORS as exc:
            reason = f"the lease connection failed: {exc or type(exc).__name__}"
        self._end_term(conn, lost, reason)
        conn.terminate()

    async def _fence(self, conn: asyncpg.Connection, epoch: int) -> None:
        # FOR SHARE: a new holder's bump waits until this transaction ends, so no routing
        # decision commits after another process has taken over.
        current = await conn.fetchval("SELECT epoch FROM router_lease WHERE id = 1 FOR SHARE")
        if current != epoch:
            raise StoreFenced(
                f"routing epoch {epoch} was superseded by epoch {current} in {self.where}: "
                "another process routes now; nothing of this step was stored"
            )

    # -- configuration --------------------------------------------------------------------

    async def upsert_channels(self, channels: Iterable[ServiceChannel]) -> None:
        rows = [(c.name, dump(c)) for c in channels]
        await self._write(_tx_executemany(_upsert_data("channels", "name"), rows))

    async def list_channels(self) -> list[ServiceChannel]:
        return await self._records(ServiceChannel, "SELECT data FROM channels ORDER BY name")

    async def upsert_presence_states(self, states: Iterable[PresenceState]) -> None:
        rows = [(s.name, dump(s)) for s in states]
        await self._write(_tx_executemany(_upsert_data("presence_states", "name"), rows))

    async def upsert_queues(self, queues: Iterable[Queue]) -> None:
        rows = [(q.name, dump(q)) for q in queues]
        await self._write(_tx_executemany(_upsert_data("queues", "name"), rows))

    async def upsert_agents(self, agents: Iterable[Agent]) -> None:
        await self._write(
            _tx_executemany(
                # password_hash is left alone: config reloads must not log everyone out.
                "INSERT INTO agents (id, disabled, data) VALUES ($1, $2, $3) ON CONFLICT (id) "
                "DO UPDATE SET disabled = EXCLUDED.disabled, data = EXCLUDED.data",
                [(a.id, a.disabled, dump(a)) for a in agents],
            )
        )

    async def list_agents(self) -> list[Agent]:
        return await self._records(Agent, "SELECT data FROM agents ORDER BY id")

    async def get_agent(self, agent_id: str) -> Agent | None:
        return await self._agents.get(agent_id)

    async def _agents_by_id(self, ids: list[str]) -> dict[str, Agent]:
        rows = await self._rows("SELECT data FROM agents WHERE id = ANY($1::text[])", ids)
        agents = [load(Agent, row[0]) for row in rows]
        return {agent.id: agent for agent in agents}

    async def set_agent_password_hash(self, agent_id: str, password_hash: str | None) -> None:
        async def op(conn: asyncpg.Connection) -> None:
            status = await conn.execute(
                "UPDATE agents SET password_hash = $1 WHERE id = $2", password_hash, agent_id
            )
            if _count(status) == 0:
                raise NotFound(f"agent {agent_id} does not exist")

        await self._write(op)

    async def get_agent_password_hash(self, agent_id: str) -> str | None:
        rows = await self._rows("SELECT password_hash FROM agents WHERE id = $1", agent_id)
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
        sql = f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        await self._write(lambda conn: _insert_login(conn, "session", session.agent, sql, row))

    async def get_session(self, token_digest: str) -> SessionRecord | None:
        return await self._sessions.get(token_digest)

    async def _sessions_by_digest(self, digests: list[str]) -> dict[str, SessionRecord]:
        sql = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE token_digest = ANY($1::text[])"
        sessions = [session_row(row) for row in await self._rows(sql, digests)]
        return {session.token_digest: session for session in sessions}

    async def revoke_session(self, token_digest: str, at: float) -> bool:
        sql = "UPDATE sessions SET revoked_at = $1 WHERE token_digest = $2 AND revoked_at IS NULL"
        return await self._write(_tx_count(sql, at, token_digest)) > 0

    async def revoke_agent_sessions(self, agent_id: str, at: float) -> int:
        sql = "UPDATE sessions SET revoked_at = $1 WHERE agent = $2 AND revoked_at IS NULL"
        return await self._write(_tx_count(sql, at, agent_id))

    async def prune_sessions(self, now: float) -> int:
        sql = "DELETE FROM sessions WHERE expires_at <= $1 OR revoked_at <= $1"
        return await self._write(_tx_count(sql, now))

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
        sql = (
            f"INSERT INTO api_tokens ({API_TOKEN_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )
        what = f"API token {token.id}"
        await self._write(lambda conn: _insert_login(conn, what, token.agent, sql, row))

    async def get_api_token(self, token_digest: str) -> ApiToken | None:
        return await self._api_tokens.get(token_digest)

    async def _api_tokens_by_digest(self, digests: list[str]) -> dict[str, ApiToken]:
        sql = f"SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE token_digest = ANY($1::text[])"
        tokens = [api_token_row(row) for row in await self._rows(sql, digests)]
        return {token.token_digest: token for token in tokens}

    async def list_api_tokens(self) -> list[ApiToken]:
        rows = await self._rows(f"SELECT {API_TOKEN_COLUMNS} FROM api_tokens ORDER BY pos")
        return [api_token_row(row) for row in rows]

    async def revoke_api_token(self, token_id: str, at: float) -> bool:
        sql = "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
        return await self._write(_tx_count(sql, at, token_id)) > 0

    async def upsert_templates(self, templates: Iterable[Template]) -> None:
        await self._write(
            _tx_executemany(
                "INSERT INTO templates (scope, shortcut, data) VALUES ($1, $2, $3) "
                "ON CONFLICT (scope, shortcut) DO UPDATE SET data = EXCLUDED.data",
                [(t.scope, t.shortcut, dump(t)) for t in templates],
            )
        )

    # -- routing state --------------------------------------------------------------------

    async def load_open_items(self) -> list[WorkItem]:
        return await self._records(WorkItem, SQL_OPEN_ITEMS)

    async def get_item(self, item_id: str) -> WorkItem | None:
        return await self._record(WorkItem, "SELECT data FROM work_items WHERE id = $1", item_id)

    async def audit_trail(self, item_id: str, limit: int = 500) -> list[AuditEntry]:
        newest_first = await self._records(AuditEntry, SQL_AUDIT_TRAIL, item_id, limit)
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
        epoch = self._epoch
        if epoch is not None and self._lease is None:
            raise StoreFenced(
                f"this process no longer holds the routing role in {self.where} "
                f"({self.router_lost_reason}); nothing of this step was stored"
            )
        offer_data = _newest(offer_rows(offers))
        # offer_rows puts offers leaving `pending` first; keeping each offer's last row must
        # not undo that.
        offer_data.sort(key=lambda row: row[2] == OfferState.PENDING)
        newest_records = {r.number: r for r in interactions}
        rows = [(n, r.archived, r.opened_at, dump(r)) for n, r in newest_records.items()]
        new = frozenset(created)
        records = [row for row in rows if row[0] not in new]
        inserted = [row for row in rows if row[0] in new]
        pairs = list(
            dict.fromkeys((p.agent, n) for n, r in newest_records.items() for p in r.participants)
        )
        said = [
            (m.interaction, m.client_msg_id, *_around_seq(dump(replace(m, seq=0)))) for m in lines
        ]
        args = [
            *_columns(_newest(item_rows(items)), 3),
            *_columns(offer_data, 4),
            *_columns(_newest(status_rows(statuses)), 2),
            *_columns(audit_rows(audit), 2),
            *_columns([(c, agent, at) for c, (agent, at) in (affinity or {}).items()], 3),
            *_columns(records, 4),
            *_columns(pairs, 2),
            *_columns(inserted, 4),
            *_columns(said, 4),
        ]
        outbox = list(deliveries)

        async def op(conn: asyncpg.Connection) -> list[Message]:
            if epoch is not None:
                await self._fence(conn, epoch)
            try:
                row = await conn.fetchrow(_ROUTE, *args)
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise _route_violation(exc, offer_data) from exc
            assert row is not None  # the statement's SELECT always makes one row
            updated, seqs = row
            missing = next((n for n, *_ in records if n not in set(updated)), None)
            if missing is None:
                # A line not stored: its conversation is neither stored nor created here.
                unknown = [m.interaction for m, seq in zip(lines, seqs, strict=True) if seq is None]
                missing = unknown[0] if unknown else None
            if missing is not None:
                raise NotFound(
                    f"interaction {missing} does not exist (create_interaction allocates numbers)"
                )
            for delivery in outbox:
                await _insert_delivery(conn, delivery)
            return [replace(line, seq=seq) for line, seq in zip(lines, seqs, strict=True)]

        lines_of = tuple(line.interaction for line in lines)
        return await self._write(
            op, interactions=tuple(dict.fromkeys((*newest_records, *lines_of)))
        )

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
        prefix = NUMBER_PREFIX["interaction"]
        unnumbered = InteractionRecord(
            number="",
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
        before, after = _around_number(dump(unnumbered))
        agents = list(dict.fromkeys(p.agent for p in participants))

        async def op(conn: asyncpg.Connection) -> InteractionRecord:
            # One round trip for the number, the record and its participants: at saturation
            # new interactions' round trips were most of a batch's.
            try:
                stored = await conn.fetchval(
                    _CREATE, prefix, unnumbered.archived, opened_at, before, after, agents, number
                )
            except asyncpg.UniqueViolationError as exc:
                raise StoreConflict(f"interaction {number} is stored already") from exc
            record = replace(unnumbered, number=stored)
            if idempotency is not None:
                # A conflict rolls this op's savepoint back: a number counted here is not used
                # up either.
                await _insert_idempotency_key(
                    conn, msgspec.structs.replace(idempotency, interaction=record.number)
                )
            return record

        # Without a key or a number given nothing in it is refused on its own (the counter's
        # row lock makes the number unique), so it needs no savepoint either.
        return await self._write(
            op,
            counters=(prefix,) if number is None else (),
            guarded=idempotency is not None or number is not None,
        )

    async def reserve_numbers(self, prefix: str, count: int) -> list[str]:
        if count < 1:
            raise ValueError(f"reserve_numbers: count must be at least 1, not {count}")

        async def op(conn: asyncpg.Connection) -> list[str]:
            last = await conn.fetchval(
                "UPDATE counters SET value = value + $2 WHERE name = $1 RETURNING value",
                prefix,
                count,
            )
            return [format_number(prefix, n) for n in range(last - count + 1, last + 1)]

        return await self._write(op, counters=(prefix,), guarded=False)

    async def release_numbers(self, prefix: str, first: str, last: str) -> bool:
        start, end = parse_number(prefix, first), parse_number(prefix, last)

        async def op(conn: asyncpg.Connection) -> bool:
            done = await conn.execute(
                "UPDATE counters SET value = $2 WHERE name = $1 AND value = $3",
                prefix,
                start - 1,
                end,
            )
            return _count(done) == 1

        return await self._write(op, counters=(prefix,), guarded=False)

    async def get_idempotency_key(self, scope: str, key: str, now: float) -> IdempotencyKey | None:
        rows = await self._rows(
            "SELECT fingerprint, interaction, created_at FROM idempotency_keys "
            "WHERE scope = $1 AND key = $2 AND created_at >= $3",
            scope,
            key,
            now - IDEMPOTENCY_TTL,
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
            _tx_executemany(
                "INSERT INTO mail_ids (message_id, interaction, created_at, data) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (message_id) DO NOTHING",
                [(mail.message_id, mail.interaction, mail.created_at, dump(mail))],
            )
        )

    async def find_mail_ids(self, message_ids: Sequence[str]) -> list[MailId]:
        return await self._records(
            MailId,
            "SELECT data FROM mail_ids WHERE message_id = ANY($1::text[])",
            list(message_ids[:MAX_MAIL_IDS]),
        )

    async def last_mail_ids(self, interaction: str, limit: int) -> list[MailId]:
        newest_first = await self._records(
            MailId,
            "SELECT data FROM mail_ids WHERE interaction = $1 "
            "ORDER BY created_at DESC, message_id DESC LIMIT $2",
            interaction,
            limit,
        )
        return newest_first[::-1]

    async def save_invitation(self, invitation: Invitation) -> None:
        await self._write(
            _tx_executemany(
                "INSERT INTO invitations (interaction, agent, data) VALUES ($1, $2, $3) "
                "ON CONFLICT (interaction, agent) DO UPDATE SET data = EXCLUDED.data",
                [(invitation.interaction, invitation.agent, dump(invitation))],
            )
        )

    async def delete_invitations(self, interaction: str, agent: str | None = None) -> None:
        await self._write(
            _tx_count(
                "DELETE FROM invitations WHERE interaction = $1 "
                "AND ($2::text IS NULL OR agent = $2)",
                interaction,
                agent,
            )
        )

    async def load_invitations(self) -> list[Invitation]:
        invitations = await self._records(Invitation, "SELECT data FROM invitations")
        return sorted(invitations, key=lambda i: i.created_at)

    async def save_interaction(self, record: InteractionRecord) -> None:
        data = dump(record)
        await self._write(
            lambda conn: _update_interaction(conn, record, data), interactions=(record.number,)
        )

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
        wanted = list(numbers)
        rows = await self._on_pool(
            "reading",
            lambda conn: _fetch_without_jit(conn, SQL_RECENT_MESSAGES, wanted, customer_lines),
        )
        recent: dict[str, list[Message]] = {}
        for number, data in rows:
            recent.setdefault(number, []).append(load(Message, data))
        for lines in recent.values():
            lines.sort(key=_seq)  # oldest first
        return recent

    async def get_interaction(self, number: str) -> InteractionRecord | None:
        return await self._record(
            InteractionRecord, "SELECT data FROM interactions WHERE number = $1", number
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
        return await self._records(InteractionRecord, sql, *params, limit, offset)

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
        # The record as stored, around its seq: the statement puts the seq it counts between.
        before, after = _around_seq(dump(message))

        async def op(conn: asyncpg.Connection) -> tuple[Message, bool]:
            # One round trip: the look for a duplicate, the count and the insert. The batch
            # holds this interaction's row lock (_lock_rows), so no other process appends to
            # it until this batch commits, and the look sees every one committed before.
            row = await conn.fetchrow(_APPEND, interaction, client_msg_id, before, after)
            assert row is not None  # the statement's SELECT always makes one row
            known, duplicate, seq = row
            if duplicate is not None:
                return load(Message, duplicate), True
            if not known:
                raise NotFound(f"interaction {interaction} does not exist")
            stored = replace(message, seq=seq)
            if delivery is not None:
                await _insert_delivery(conn, replace(delivery, message=stored))
            return stored, False

        if delivery is not None:
            # Two statements, so it needs its savepoint; it runs on its own in its batch.
            return await self._write(op, interactions=(interaction,))
        queued = _Op(
            op, interactions=(interaction,), guarded=False, append=_Append(message, before, after)
        )
        return await self._writer.submit(queued)

    # -- the outbox -----------------------------------------------------------------------

    async def due_deliveries(self, limit: int = 500) -> list[Delivery]:
        return await self._records(Delivery, SQL_DUE_DELIVERIES, limit)

    async def save_delivery(self, delivery: Delivery) -> None:
        async def op(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE outbox SET state = $1, data = $2 WHERE id = $3",
                delivery.state,
                dump(delivery),
                delivery.id,
            )

        await self._write(op)

    async def message_deliveries(self, interaction: str) -> dict[int, DeliveryState]:
        rows = await self._rows(SQL_MESSAGE_DELIVERIES, interaction)
        return {row[0]: row[1] for row in rows}

    async def outbox_backlog(self) -> int:
        return int((await self._rows(SQL_OUTBOX_BACKLOG))[0][0])

    async def list_messages(
        self, interaction: str, after_seq: int = 0, limit: int = 500
    ) -> list[Message]:
        return await self._records(Message, SQL_MESSAGES, interaction, after_seq, limit)

    async def last_messages(self, interaction: str, limit: int = 500) -> list[Message]:
        newest_first = await self._records(Message, SQL_LAST_MESSAGES, interaction, limit)
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
        digest = hashlib.sha256(data).hexdigest()
        # The content is committed on its own, outside the group commit: ten MiB in a batch
        # would hold up everyone's commits. As with SQLite's file, it is durable before the
        # row that points at it commits.
        if not await self._rows("SELECT 1 FROM attachment_blobs WHERE sha256 = $1", digest):
            await self._on_pool(
                f"storing attachment {label!r} in",
                lambda conn: conn.execute(
                    "INSERT INTO attachment_blobs (sha256, content) VALUES ($1, $2) "
                    "ON CONFLICT (sha256) DO NOTHING",
                    digest,
                    data,
                ),
            )

        async def op(conn: asyncpg.Connection) -> Attachment:
            row = await conn.fetchrow(
                "SELECT data FROM attachments WHERE interaction = $1 AND sha256 = $2",
                interaction,
                digest,
            )
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
                await conn.execute(
                    "INSERT INTO attachments (interaction, sha256, data) VALUES ($1, $2, $3)",
                    interaction,
                    digest,
                    dump(record),
                )
            except asyncpg.ForeignKeyViolationError as exc:
                raise NotFound(f"interaction {interaction} does not exist") from exc
            except asyncpg.UniqueViolationError as exc:
                raise _Retry(f"attachment {digest} of {interaction}") from exc
            return record

        return await self._write(op, interactions=(interaction,))

    async def list_attachments(self, interaction: str) -> list[Attachment]:
        return await self._records(
            Attachment,
            "SELECT data FROM attachments WHERE interaction = $1 ORDER BY id",
            interaction,
        )

    async def read_attachment(
        self, interaction: str, sha256: str
    ) -> tuple[Attachment, bytes] | None:
        rows = await self._rows(
            "SELECT a.data, b.content FROM attachments a "
            "JOIN attachment_blobs b ON b.sha256 = a.sha256 "
            "WHERE a.interaction = $1 AND a.sha256 = $2",
            interaction,
            sha256,
        )
        if not rows:
            return None
        return load(Attachment, rows[0][0]), bytes(rows[0][1])

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

        async def op(conn: asyncpg.Connection) -> ServiceRecord:
            record = ServiceRecord(
                number=await _next_number(conn, NUMBER_PREFIX[kind]),
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
            await conn.execute(
                "INSERT INTO service_records (number, kind, source_interaction, created_by, "
                f"created_at, {RECORD_COLUMNS}, data) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                record.number,
                kind.value,
                source_interaction,
                created_by,
                created_at,
                *record_row(record),
            )
            if source_interaction is not None:
                await _link_record(conn, record.number, source_interaction, created_at)
            return record

        return await self._write(op, counters=(NUMBER_PREFIX[kind],))

    async def get_record(self, number: str) -> ServiceRecord | None:
        return await self._record(
            ServiceRecord, "SELECT data FROM service_records WHERE number = $1", number
        )

    async def save_record(self, record: ServiceRecord) -> ServiceRecord:
        stored = replace(record, version=record.version + 1)

        async def op(conn: asyncpg.Connection) -> ServiceRecord:
            status = await conn.execute(
                "UPDATE service_records SET state = $1, assignee = $2, assignment_group = $3, "
                "search_text = $4, version = $5, data = $6 WHERE number = $7 AND version = $8",
                *record_row(stored),
                record.number,
                record.version,
            )
            if _count(status) == 0:
                exists = await conn.fetchval(
                    "SELECT 1 FROM service_records WHERE number = $1", record.number
                )
                if exists is None:
                    raise NotFound(f"record {record.number} does not exist")
                raise StoreConflict(f"record {record.number} was changed meanwhile")
            return stored

        return await self._write(op)

    async def list_records(
        self, query: RecordQuery, limit: int = 50, offset: int = 0
    ) -> list[ServiceRecord]:
        sql, params = records_query(query, "postgres")
        return await self._records(ServiceRecord, sql, *params, limit, offset)

    async def add_record_note(
        self, record: str, author: str, body: str, created_at: float
    ) -> RecordNote:
        note = RecordNote(record=record, author=author, body=body, created_at=created_at)

        async def op(conn: asyncpg.Connection) -> RecordNote:
            try:
                await conn.execute(
                    "INSERT INTO record_notes (record, data) VALUES ($1, $2)", record, dump(note)
                )
            except asyncpg.ForeignKeyViolationError as exc:
                raise NotFound(f"record {record} does not exist") from exc
            return note

        return await self._write(op)

    async def list_record_notes(self, record: str, limit: int = 500) -> list[RecordNote]:
        newest_first = await self._records(
            RecordNote,
            "SELECT data FROM record_notes WHERE record = $1 ORDER BY id DESC LIMIT $2",
            record,
            limit,
        )
        return newest_first[::-1]

    async def link_record(self, record: str, interaction: str, linked_at: float) -> None:
        await self._write(lambda conn: _link_record(conn, record, interaction, linked_at))

    async def record_links(self, record: str) -> list[str]:
        rows = await self._rows(
            "SELECT interaction FROM record_links WHERE record = $1 "
            "ORDER BY linked_at, interaction",
            record,
        )
        return [row[0] for row in rows]

    # -- the day at a glance --------------------------------------------------------------

    async def save_day(
        self, minutes: Iterable[QueueMinute], agents: Iterable[AgentDay], keep_since: int
    ) -> None:
        minute_rows = [(m.minute, m.queue, dump(m)) for m in minutes]
        day_rows = [(a.day, a.agent, dump(a)) for a in agents]

        async def op(conn: asyncpg.Connection) -> None:
            if minute_rows:
                await conn.executemany(_UPSERT_MINUTE, minute_rows)
            if day_rows:
                await conn.executemany(_UPSERT_AGENT_DAY, day_rows)
            await conn.execute("DELETE FROM queue_minutes WHERE minute < $1", keep_since)
            await conn.execute("DELETE FROM agent_days WHERE day < $1", keep_since)

        await self._write(op)

    async def queue_minutes(
        self, since: int, until: int, queue: str | None = None
    ) -> list[QueueMinute]:
        return await self._records(QueueMinute, SQL_QUEUE_MINUTES, since, until, queue)

    async def agent_days(self, day: int) -> list[AgentDay]:
        return await self._records(AgentDay, SQL_AGENT_DAYS, day)


async def _link_record(conn: asyncpg.Connection, record: str, interaction: str, at: float) -> None:
    try:
        await conn.execute(
            "INSERT INTO record_links (record, interaction, linked_at) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            record,
            interaction,
            at,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise NotFound(f"record {record} or interaction {interaction} does not exist") from exc


async def _lock_rows(conn: asyncpg.Connection, ops: list[_Op]) -> None:
    counters = sorted({name for op in ops for name in op.counters})
    if counters:
        await conn.execute(
            "SELECT 1 FROM counters WHERE name = ANY($1::text[]) ORDER BY name FOR NO KEY UPDATE",
            counters,
        )
    numbers = sorted({number for op in ops for number in op.interactions})
    if numbers:
        await conn.execute(
            "SELECT 1 FROM interactions WHERE number = ANY($1::text[]) ORDER BY number "
            "FOR NO KEY UPDATE",
            numbers,
        )


def _unreachable(exc: BaseException, where: str) -> StoreUnavailable:
    # Whatever refused the connection (the network, the server, its login rules, a missing
    # or closed database), nothing can be done with the store until it is back.
    err = StoreUnavailable(
        f"cannot connect to {where} ({exc or type(exc).__name__}); nothing of it was stored"
    )
    err.__cause__ = exc
    return err


def _copy(err: StoreError) -> StoreError:
    copy = type(err)(str(err))
    copy.__cause__ = err.__cause__
    return copy


async def _fetch_without_jit(
    conn: PoolConnectionProxy[Any], sql: str, *params: Any
) -> list[asyncpg.Record]:
    """`sql`'s rows, with PostgreSQL's JIT compilation off for this statement. A query over
    tens of thousands of conversations costs enough for the planner to compile it (jit is on by
    default), which took 100-120 ms of a 0.5 s query run once per rebuild, and bought nothing."""
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL jit = off")
        return await conn.fetch(sql, *params)


def _seq(message: Message) -> int:
    return message.seq


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, _TRANSIENT) or isinstance(exc.__cause__, _TRANSIENT)


async def _close_connection(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT_S)
    except (TimeoutError, *_ERRORS):
        conn.terminate()
