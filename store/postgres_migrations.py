"""PostgreSQL schema, as an ordered list of migration steps tracked in table schema_version.

Step N (1-based) takes a database from version N-1 to N; steps are only ever appended. Step 1
is SQLite's steps 1-4 (store/migrations.py) at once: the same tables, unique constraints and
indexes, so the conformance tests hold on both and `inbox-tui admin copy-to` maps table to
table. What differs, and why:

- booleans are `boolean`, times `double precision`, counters and seqs `bigint`;
- `pos` (an identity column) stands in for SQLite's rowid where "first saved first" is read:
  open work items, an item's offers, API tokens;
- interactions.last_seq is the message counter: appends to one interaction from several
  processes queue on that row's lock instead of racing to the same MAX(seq) + 1;
- attachment content lives in attachment_blobs (bytea, one row per sha256), since the hosts
  sharing the database do not share a file system;
- router_lease holds the fencing epoch of the one routing process (store/postgres.py).

Several processes may start at once on one database: each step runs in its own transaction
under a transaction-level advisory lock, together with its version row, so exactly one of
them applies it and a failed step leaves the previous version intact.
"""

from __future__ import annotations

import asyncpg

from store.base import StoreError, StoreVersionError

# pg_advisory_xact_lock key of the migrations; store/postgres.py's lease key is another one.
MIGRATION_LOCK = 0x1B0C_0001

_V1 = """
CREATE TABLE counters (
    name text PRIMARY KEY,
    value bigint NOT NULL
);
-- Numbers start at 1001 like the seed's examples: the stored value is the last one handed out.
INSERT INTO counters (name, value) VALUES ('IMS', 1000), ('CS', 1000), ('INC', 1000);

CREATE TABLE channels (name text PRIMARY KEY, data text NOT NULL);
CREATE TABLE presence_states (name text PRIMARY KEY, data text NOT NULL);
CREATE TABLE queues (name text PRIMARY KEY, data text NOT NULL);
CREATE TABLE agents (
    id text PRIMARY KEY,
    disabled boolean NOT NULL,
    password_hash text,
    data text NOT NULL
);
CREATE TABLE templates (
    scope text NOT NULL,
    shortcut text NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (scope, shortcut)
);

CREATE TABLE work_items (
    id text PRIMARY KEY,
    pos bigint GENERATED ALWAYS AS IDENTITY,
    state text NOT NULL,
    data text NOT NULL
);
-- Partial: closed items pile up forever, the open ones stay few.
CREATE INDEX work_items_open ON work_items (pos)
    WHERE state IN ('queued', 'offered', 'accepted', 'wrap_up');

CREATE TABLE offers (
    id text PRIMARY KEY,
    pos bigint GENERATED ALWAYS AS IDENTITY,
    item text NOT NULL REFERENCES work_items (id),
    state text NOT NULL,
    data text NOT NULL
);
CREATE INDEX offers_by_item ON offers (item, pos);
-- Invariant 1 (one pending offer per item) held by the database.
CREATE UNIQUE INDEX offers_one_pending ON offers (item) WHERE state = 'pending';

CREATE TABLE agent_statuses (agent text PRIMARY KEY, data text NOT NULL);

CREATE TABLE audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item text,
    data text NOT NULL
);
CREATE INDEX audit_by_item ON audit (item, id) WHERE item IS NOT NULL;

CREATE TABLE affinity (
    customer text PRIMARY KEY,
    agent text NOT NULL,
    at double precision NOT NULL
);

CREATE TABLE interactions (
    number text PRIMARY KEY,
    archived boolean NOT NULL,
    opened_at double precision NOT NULL,
    last_seq bigint NOT NULL DEFAULT 0,
    data text NOT NULL
);
CREATE INDEX interactions_recent ON interactions (opened_at, number);

-- One row per (agent, interaction) so "my interactions" is a primary-key range scan.
CREATE TABLE participants (
    agent text NOT NULL,
    interaction text NOT NULL REFERENCES interactions (number),
    PRIMARY KEY (agent, interaction)
);
CREATE INDEX participants_by_interaction ON participants (interaction);

CREATE TABLE messages (
    interaction text NOT NULL REFERENCES interactions (number),
    seq bigint NOT NULL,
    client_msg_id text NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (interaction, seq),
    UNIQUE (interaction, client_msg_id)
);

CREATE TABLE attachment_blobs (
    sha256 text PRIMARY KEY,
    content bytea NOT NULL
);
CREATE TABLE attachments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    interaction text NOT NULL REFERENCES interactions (number),
    sha256 text NOT NULL REFERENCES attachment_blobs (sha256),
    data text NOT NULL,
    UNIQUE (interaction, sha256)
);
CREATE INDEX attachments_by_sha256 ON attachments (sha256);

CREATE TABLE service_records (
    number text PRIMARY KEY,
    kind text NOT NULL,
    source_interaction text,
    data text NOT NULL
);
CREATE INDEX service_records_by_interaction ON service_records (source_interaction)
    WHERE source_interaction IS NOT NULL;

CREATE TABLE sessions (
    token_digest text PRIMARY KEY,
    agent text NOT NULL REFERENCES agents (id),
    role text NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL,
    revoked_at double precision
);
CREATE INDEX sessions_by_agent ON sessions (agent) WHERE revoked_at IS NULL;
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE api_tokens (
    id text PRIMARY KEY,
    pos bigint GENERATED ALWAYS AS IDENTITY,
    token_digest text NOT NULL UNIQUE,
    name text NOT NULL,
    agent text REFERENCES agents (id),
    role text NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision,
    revoked_at double precision,
    channels text
);

CREATE TABLE idempotency_keys (
    scope text NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    interaction text NOT NULL REFERENCES interactions (number),
    created_at double precision NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- The routing role's fencing epoch: bumped by each new holder, checked by every routing write.
CREATE TABLE router_lease (
    id integer PRIMARY KEY CHECK (id = 1),
    epoch bigint NOT NULL,
    holder text NOT NULL,
    since double precision NOT NULL
);
INSERT INTO router_lease (id, epoch, holder, since) VALUES (1, 0, '', 0);
"""

# Secrets every host of the cluster must share, made once at random by the first to ask
# (the widget's ticket key: a chat resumed through any host, before or after a failover).
_V2 = """
CREATE TABLE cluster_secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
"""

# Invitations to join a chat, kept until answered or the chat closes (store/migrations.py).
_INVITATIONS = """
CREATE TABLE invitations (
    interaction text NOT NULL REFERENCES interactions (number),
    agent text NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (interaction, agent)
);
"""

# Cases and incidents worked after they are raised: as SQLite's _RECORDS_WORKED.
_RECORDS_WORKED = """
ALTER TABLE service_records
    ADD COLUMN state text NOT NULL DEFAULT 'new',
    ADD COLUMN assignee text,
    ADD COLUMN assignment_group text,
    ADD COLUMN created_by text NOT NULL DEFAULT '',
    ADD COLUMN created_at double precision NOT NULL DEFAULT 0,
    ADD COLUMN version bigint NOT NULL DEFAULT 0,
    ADD COLUMN search_text text NOT NULL DEFAULT '';
-- A record holding a NUL anywhere cannot be read as json here (\\u0000 has no text form):
-- those keep the defaults (until then every record was created "new").
UPDATE service_records SET
    state = coalesce(data::json->>'state', 'new'),
    created_by = coalesce(data::json->>'created_by', ''),
    created_at = coalesce((data::json->>'created_at')::double precision, 0),
    search_text = lower(coalesce(data::json->>'short_description', ''))
    WHERE strpos(data, '\\u0000') = 0;
CREATE INDEX service_records_recent ON service_records (created_at, number);
CREATE INDEX service_records_by_assignee ON service_records (assignee, created_at)
    WHERE assignee IS NOT NULL;
CREATE INDEX service_records_by_group ON service_records (assignment_group, created_at)
    WHERE assignment_group IS NOT NULL;

CREATE TABLE record_notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    record text NOT NULL REFERENCES service_records (number),
    data text NOT NULL
);
CREATE INDEX record_notes_by_record ON record_notes (record, id);

CREATE TABLE record_links (
    record text NOT NULL REFERENCES service_records (number),
    interaction text NOT NULL REFERENCES interactions (number),
    linked_at double precision NOT NULL,
    PRIMARY KEY (record, interaction)
);
CREATE INDEX record_links_by_interaction ON record_links (interaction);
INSERT INTO record_links (record, interaction, linked_at)
    SELECT r.number, r.source_interaction, r.created_at FROM service_records r
    JOIN interactions i ON i.number = r.source_interaction;
"""

# E-mail channels: as SQLite's _MAIL_IDS.
_MAIL_IDS = """
CREATE TABLE mail_ids (
    message_id text PRIMARY KEY,
    interaction text NOT NULL REFERENCES interactions (number),
    created_at double precision NOT NULL,
    data text NOT NULL
);
CREATE INDEX mail_ids_by_interaction ON mail_ids (interaction, created_at);
"""

# The outbox of outbound deliveries: as SQLite's _OUTBOX.
_OUTBOX = """
CREATE TABLE outbox (
    pos bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    conversation text NOT NULL,
    message_seq bigint,
    state text NOT NULL,
    data text NOT NULL
);
CREATE INDEX outbox_open ON outbox (state, pos);
CREATE INDEX outbox_by_conversation ON outbox (conversation, pos);
"""

# The day at a glance: as SQLite's _DAY.
_DAY = """
CREATE TABLE queue_minutes (
    minute bigint NOT NULL,
    queue text NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (minute, queue)
);
CREATE TABLE agent_days (
    day bigint NOT NULL,
    agent text NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (day, agent)
);
"""

MIGRATIONS: list[str] = [_V1, _V2, _INVITATIONS, _RECORDS_WORKED, _MAIL_IDS, _OUTBOX, _DAY]

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def latest_version() -> int:
    return len(MIGRATIONS)


async def migrate(conn: asyncpg.Connection, where: str) -> int:
    """Bring the database `conn` is connected to (named `where` in errors) to the latest
    version; returns that version."""
    latest = latest_version()
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(_VERSION_TABLE)
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            if current > latest:
                raise StoreVersionError(
                    f"{where} has schema version {current}, but this inbox-tui only knows "
                    f"versions up to {latest}: it was written by a newer inbox-tui; upgrade, "
                    "or point it at another database"
                )
            if current == latest:
                return latest
            version = current + 1
            try:
                await conn.execute(MIGRATIONS[version - 1])
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            except asyncpg.PostgresError as exc:
                raise StoreError(
                    f"migrating {where} to schema version {version} failed: {exc}"
                ) from exc


async def current_version(conn: asyncpg.Connection) -> int:
    """The schema version of the database, 0 for one never migrated."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
