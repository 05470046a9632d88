"""SQLite schema, as an ordered list of migration steps tracked in PRAGMA user_version.

Step N (1-based) takes a database from version N-1 to N. Steps are only ever appended: a
released step is never edited, because databases in the field already ran it.

Records are stored whole as msgspec JSON text in `data` (readable with the sqlite3 shell and
json_extract); the other columns copy the fields that are filtered, ordered or constrained on.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from store.base import StoreError, StoreVersionError

_V1 = """
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
-- Numbers start at 1001 like the seed's examples: the stored value is the last one handed out.
INSERT INTO counters (name, value) VALUES ('IMS', 1000), ('CS', 1000), ('INC', 1000);

CREATE TABLE channels (name TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE presence_states (name TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE queues (name TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    disabled INTEGER NOT NULL,
    password_hash TEXT,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE templates (
    scope TEXT NOT NULL,
    shortcut TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (scope, shortcut)
) WITHOUT ROWID;

CREATE TABLE work_items (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    data TEXT NOT NULL
);
-- Partial: closed items pile up forever, the open ones stay few.
CREATE INDEX work_items_open ON work_items (state)
    WHERE state IN ('queued', 'offered', 'accepted', 'wrap_up');

CREATE TABLE offers (
    id TEXT PRIMARY KEY,
    item TEXT NOT NULL REFERENCES work_items (id),
    state TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX offers_by_item ON offers (item);
-- Invariant 1 (one pending offer per item) held by the database, as PostgreSQL will; it is
-- also the index that finds the pending offers on restart.
CREATE UNIQUE INDEX offers_one_pending ON offers (item) WHERE state = 'pending';

CREATE TABLE agent_statuses (agent TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;

CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    item TEXT,
    data TEXT NOT NULL
);
CREATE INDEX audit_by_item ON audit (item, id) WHERE item IS NOT NULL;

CREATE TABLE affinity (
    customer TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE interactions (
    number TEXT PRIMARY KEY,
    archived INTEGER NOT NULL,
    opened_at REAL NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX interactions_recent ON interactions (opened_at, number);

-- One row per (agent, interaction) so "my interactions" is a primary-key range scan.
CREATE TABLE participants (
    agent TEXT NOT NULL,
    interaction TEXT NOT NULL REFERENCES interactions (number),
    PRIMARY KEY (agent, interaction)
) WITHOUT ROWID;
CREATE INDEX participants_by_interaction ON participants (interaction);

CREATE TABLE messages (
    interaction TEXT NOT NULL REFERENCES interactions (number),
    seq INTEGER NOT NULL,
    client_msg_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (interaction, seq),
    UNIQUE (interaction, client_msg_id)
) WITHOUT ROWID;

CREATE TABLE attachments (
    id INTEGER PRIMARY KEY,
    interaction TEXT NOT NULL REFERENCES interactions (number),
    sha256 TEXT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (interaction, sha256)
);
CREATE INDEX attachments_by_sha256 ON attachments (sha256);

CREATE TABLE service_records (
    number TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    source_interaction TEXT,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX service_records_by_interaction ON service_records (source_interaction)
    WHERE source_interaction IS NOT NULL;
"""

# Logins. Plain columns rather than a JSON `data`: the records are small and fixed, and
# revocation is an in-place UPDATE of revoked_at. Only token digests are stored, never tokens.
_V2 = """
CREATE TABLE sessions (
    token_digest TEXT PRIMARY KEY,
    agent TEXT NOT NULL REFERENCES agents (id),
    role TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL
) WITHOUT ROWID;
-- Ending an agent's sessions (password changed) without scanning everyone's.
CREATE INDEX sessions_by_agent ON sessions (agent) WHERE revoked_at IS NULL;
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    token_digest TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    agent TEXT REFERENCES agents (id),
    role TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL
);
"""

# REST Idempotency-Key: written in the transaction that creates the interaction, so a crash
# never leaves an item without its key. A rowid table so expired keys can be pruned by age.
_V3 = """
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    interaction TEXT NOT NULL REFERENCES interactions (number),
    created_at REAL NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
"""

# The channels an API token may write to, as a JSON array; NULL: no channel list.
_V4 = """
ALTER TABLE api_tokens ADD COLUMN channels TEXT;
"""

# Invitations to join a chat, kept until answered or the chat closes, so that a restart
# does not forget them (the invitee's snapshot still shows them).
_INVITATIONS = """
CREATE TABLE invitations (
    interaction TEXT NOT NULL REFERENCES interactions (number),
    agent TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (interaction, agent)
) WITHOUT ROWID;
"""

# Cases and incidents worked after they are raised: the columns their lists filter and order
# on (copied from `data`, which stays whole), append-only work notes, and the interactions
# linked to each record (its source first). Backfilled from what V1 stored.
_RECORDS_WORKED = """
ALTER TABLE service_records ADD COLUMN state TEXT NOT NULL DEFAULT 'new';
ALTER TABLE service_records ADD COLUMN assignee TEXT;
ALTER TABLE service_records ADD COLUMN assignment_group TEXT;
ALTER TABLE service_records ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
ALTER TABLE service_records ADD COLUMN created_at REAL NOT NULL DEFAULT 0;
ALTER TABLE service_records ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
-- The short description as searched (store/rows.py record_row); the rows before this step
-- lower-cased by SQLite, which knows only ASCII letters and stops at a NUL.
ALTER TABLE service_records ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
UPDATE service_records SET
    state = coalesce(json_extract(data, '$.state'), 'new'),
    created_by = coalesce(json_extract(data, '$.created_by'), ''),
    created_at = coalesce(json_extract(data, '$.created_at'), 0),
    search_text = lower(replace(coalesce(json_extract(data, '$.short_description'), ''),
                                char(0), ''));
CREATE INDEX service_records_recent ON service_records (created_at, number);
CREATE INDEX service_records_by_assignee ON service_records (assignee, created_at)
    WHERE assignee IS NOT NULL;
CREATE INDEX service_records_by_group ON service_records (assignment_group, created_at)
    WHERE assignment_group IS NOT NULL;

CREATE TABLE record_notes (
    id INTEGER PRIMARY KEY,
    record TEXT NOT NULL REFERENCES service_records (number),
    data TEXT NOT NULL
);
CREATE INDEX record_notes_by_record ON record_notes (record, id);

CREATE TABLE record_links (
    record TEXT NOT NULL REFERENCES service_records (number),
    interaction TEXT NOT NULL REFERENCES interactions (number),
    linked_at REAL NOT NULL,
    PRIMARY KEY (record, interaction)
) WITHOUT ROWID;
CREATE INDEX record_links_by_interaction ON record_links (interaction);
INSERT INTO record_links (record, interaction, linked_at)
    SELECT r.number, r.source_interaction, r.created_at FROM service_records r
    JOIN interactions i ON i.number = r.source_interaction;
"""

# E-mail channels: the Message-IDs received and sent in each conversation, which replies
# thread by (core/service/mail.py).
_MAIL_IDS = """
CREATE TABLE mail_ids (
    message_id TEXT PRIMARY KEY,
    interaction TEXT NOT NULL REFERENCES interactions (number),
    created_at REAL NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX mail_ids_by_interaction ON mail_ids (interaction, created_at);
"""

# The outbox of outbound deliveries (core/service/outbox.py): `pos` is the order they were
# enqueued in, which is the order they go out in per conversation; `message_seq` finds a
# message's delivery state for its transcript.
_OUTBOX = """
CREATE TABLE outbox (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    conversation TEXT NOT NULL,
    message_seq INTEGER,
    state TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX outbox_open ON outbox (state, pos);
CREATE INDEX outbox_by_conversation ON outbox (conversation, pos);
"""

# The day at a glance (core/service/day.py): one row per queue per finished minute with
# something to show, and each agent's declined and expired offers per local day. Keyed by
# time first: the console reads a day of every queue, and pruning deletes the oldest.
_DAY = """
CREATE TABLE queue_minutes (
    minute INTEGER NOT NULL,
    queue TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (minute, queue)
) WITHOUT ROWID;
CREATE TABLE agent_days (
    day INTEGER NOT NULL,
    agent TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (day, agent)
) WITHOUT ROWID;
"""

MIGRATIONS: list[str] = [
    _V1,
    _V2,
    _V3,
    _V4,
    _INVITATIONS,
    _RECORDS_WORKED,
    _MAIL_IDS,
    _OUTBOX,
    _DAY,
]


def latest_version() -> int:
    return len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the database at `path` to the latest version.

    `conn` must be in autocommit mode (isolation_level=None): each step runs in its own
    explicit transaction together with its user_version bump, so a failed step leaves the
    previous version intact rather than a half-built schema.
    """
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    latest = latest_version()
    if current > latest:
        raise StoreVersionError(
            f"{path} has schema version {current}, but this inbox-tui only knows versions up "
            f"to {latest}: it was written by a newer inbox-tui; upgrade, or point it at "
            "another data directory"
        )
    for version in range(current + 1, latest + 1):
        script = f"BEGIN IMMEDIATE;\n{MIGRATIONS[version - 1]}\nPRAGMA user_version = {version};"
        try:
            conn.executescript(script)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            raise StoreError(f"migrating {path} to schema version {version} failed: {exc}") from exc
