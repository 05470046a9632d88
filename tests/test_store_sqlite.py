"""SQLiteStore on real files: schema, round trips, numbering, dedupe, group commit, kill -9."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from core.model import (
    MAX_ATTACHMENT_BYTES,
    Agent,
    AgentStatus,
    AssignmentRule,
    AuditEntry,
    ChannelMode,
    InteractionState,
    ItemState,
    Offer,
    OfferState,
    Participant,
    PresenceState,
    Queue,
    RecordKind,
    Role,
    SenderKind,
    ServiceChannel,
    SkillRequirement,
    Template,
    WorkItem,
)
from store import migrations
from store.base import (
    IDEMPOTENCY_PRUNE_BATCH,
    IDEMPOTENCY_TTL,
    ApiToken,
    IdempotencyKey,
    NotFound,
    Store,
    StoreClosed,
    StoreConflict,
    StoreError,
    StoreFull,
    StoreLocked,
    StoreUnavailable,
    StoreVersionError,
    sanitize_attachment_name,
)
from store.sqlite import (
    LOCK_FILENAME,
    SQL_MESSAGES,
    SQL_OPEN_ITEMS,
    SQL_PENDING_OFFERS,
    SQLiteStore,
    _classify,
    interactions_query,
)
from tests.store_helpers import audit_trail, get_record, offers_of, records, rows, schema_version

ROOT = Path(__file__).resolve().parent.parent


def make_store(data_dir: Path, **kwargs: Any) -> SQLiteStore:
    return SQLiteStore(data_dir / "inbox.db", data_dir, **kwargs)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = make_store(tmp_path)
    await s.open()
    yield s
    await s.close()


async def new_interaction(store: SQLiteStore, item: str = "item-1", **kwargs: Any) -> str:
    record = await store.create_interaction(
        item=item, channel="chat", customer="cust-1", opened_at=100.0, **kwargs
    )
    return record.number


async def say(
    store: SQLiteStore, number: str, client_msg_id: str, body: str = "hi"
) -> tuple[int, bool]:
    message, duplicate = await store.append_message(
        number, SenderKind.CUSTOMER, "cust-1", body, client_msg_id, 101.0
    )
    return message.seq, duplicate


def item(item_id: str, state: ItemState = ItemState.QUEUED, **kwargs: Any) -> WorkItem:
    return WorkItem(id=item_id, channel="chat", customer="c", created_at=1.0, state=state, **kwargs)


def offer(offer_id: str, item_id: str, state: OfferState = OfferState.PENDING) -> Offer:
    return Offer(id=offer_id, item=item_id, agent="ann", created_at=1.0, deadline=31.0, state=state)


# -- the interface ------------------------------------------------------------------------


def test_sqlite_store_implements_every_store_method_with_the_same_signature() -> None:
    members = {
        name: value
        for name, value in vars(Store).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }
    assert "append_message" in members
    for name, proto in members.items():
        impl = getattr(SQLiteStore, name)
        if isinstance(proto, property):
            assert isinstance(impl, property), name
            continue
        assert inspect.iscoroutinefunction(impl), name
        assert inspect.signature(impl) == inspect.signature(proto), name


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


async def test_reopening_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    async with make_store(tmp_path) as s:
        number = await new_interaction(s)
        await say(s, number, "m1")
    for _ in range(2):
        async with make_store(tmp_path) as s:
            assert await schema_version(s) == migrations.latest_version()
            assert [m.client_msg_id for m in await s.list_messages(number)] == ["m1"]
    async with make_store(tmp_path) as s:
        assert await new_interaction(s, "item-2") == "IMS0001002"


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


async def test_close_commits_writes_already_submitted_then_refuses(tmp_path: Path) -> None:
    s = make_store(tmp_path)
    await s.open()
    number = await new_interaction(s)
    pending = [asyncio.ensure_future(say(s, number, f"m{i}")) for i in range(50)]
    await asyncio.sleep(0)  # let the appends enqueue
    await s.close()
    assert [seq for seq, _ in await asyncio.gather(*pending)] == list(range(1, 51))
    with pytest.raises(StoreClosed):
        await say(s, number, "late")
    with pytest.raises(StoreClosed):
        await s.get_interaction(number)
    await s.close()  # idempotent
    async with make_store(tmp_path) as again:
        assert len(await again.list_messages(number)) == 50


# -- round trips --------------------------------------------------------------------------


async def test_config_entities_round_trip(store: SQLiteStore) -> None:
    channels = [
        ServiceChannel(name="chat", mode=ChannelMode.SYNC, label="Web chat"),
        ServiceChannel(name="case", mode=ChannelMode.RECORD),
    ]
    await store.upsert_channels(channels)
    assert await store.list_channels() == sorted(channels, key=lambda c: c.name)

    states = [
        PresenceState(name="Available", channels=("chat", "messaging")),
        PresenceState(name="Away"),
    ]
    await store.upsert_presence_states(states)
    assert (
        await records(store, PresenceState, "SELECT data FROM presence_states ORDER BY name")
        == states
    )

    queue = Queue(
        name="billing",
        channel="chat",
        condition='topic == "billing"',
        rule=AssignmentRule.LEAST_RECENT,
        skills=(SkillRequirement(name="fr", level=2),),
        max_wait=60.0,
        overflow="general",
    )
    await store.upsert_queues([queue])
    assert await records(store, Queue, "SELECT data FROM queues") == [queue]
    await store.upsert_queues([Queue(name="billing", channel="chat", order=5)])
    assert [q.order for q in await records(store, Queue, "SELECT data FROM queues")] == [5]

    ann = Agent(
        id="ann",
        display_name="Ann",
        role=Role.SUPERVISOR,
        skills={"fr": 3},
        capacity={"chat": 2},
        groups=("tier1",),
    )
    await store.upsert_agents([ann, Agent(id="bob")])
    assert await store.get_agent("ann") == ann
    assert await store.get_agent("nobody") is None
    await store.set_agent_password_hash("ann", "scrypt$abc")
    disabled = Agent(id="ann", display_name="Ann", disabled=True)
    await store.upsert_agents([disabled])  # a config reload keeps the password
    assert await store.get_agent_password_hash("ann") == "scrypt$abc"
    assert await store.list_agents() == [disabled, Agent(id="bob")]
    assert await store.get_agent_password_hash("bob") is None
    with pytest.raises(NotFound, match="agent nobody"):
        await store.set_agent_password_hash("nobody", "x")

    greet = Template(shortcut="hi", text="Hello {customer.name}", title="Greeting")
    mine = Template(shortcut="hi", text="Hey!", scope="agent:ann")
    await store.upsert_templates([greet, mine])
    templates = "SELECT data FROM templates ORDER BY scope, shortcut"
    assert await records(store, Template, templates) == [mine, greet]


async def test_routing_state_round_trips(store: SQLiteStore) -> None:
    items = [
        item("w1", attributes={"topic": "billing", "vip": True, "n": 3, "x": 1.5}, priority=2),
        item("w2", ItemState.OFFERED, queue="q", reply_by=500.0, rejected_by=("bob",)),
        item("w3", ItemState.CLOSED, closed_at=9.0),
        item("w4", ItemState.WRAP_UP, agent="ann", wrap_up_until=70.0),
    ]
    await store.apply_routing(items=items)
    assert await store.load_open_items() == [items[0], items[1], items[3]]
    assert await store.get_item("w3") == items[2]
    assert await store.get_item("nope") is None
    accepted = item("w1", ItemState.ACCEPTED, agent="ann")
    await store.apply_routing(items=[accepted])
    assert (await store.load_open_items())[0] == accepted

    o1 = offer("w2-1", "w2")
    await store.apply_routing(offers=[o1])
    assert await store.load_pending_offers() == [o1]
    expired = offer("w2-1", "w2", OfferState.EXPIRED)
    o2 = offer("w2-2", "w2")
    await store.apply_routing(offers=[o2, expired])  # the store ends the old one first
    assert await store.load_pending_offers() == [o2]
    assert await offers_of(store, "w2") == [expired, o2]

    statuses = [
        AgentStatus(agent="ann", presence="Available", presence_since=5.0),
        AgentStatus(agent="bob", last_assigned_at=7.0),
    ]
    await store.apply_routing(statuses=statuses)
    assert await store.load_agent_statuses() == statuses

    entries = [
        AuditEntry(at=float(i), kind="offer_made", item=f"w{i % 2}", reason=f"r{i}")
        for i in range(10)
    ]
    await store.apply_routing(audit=entries)
    await store.apply_routing(audit=[AuditEntry(at=11.0, kind="presence_set", agent="ann")])
    assert (await audit_trail(store))[-1].kind == "presence_set"
    assert await audit_trail(store, "w1") == entries[1::2]

    await store.apply_routing(affinity={"cust-1": ("ann", 10.0), "cust-2": ("bob", 11.0)})
    await store.apply_routing(affinity={"cust-1": ("bob", 12.0)})
    assert await store.load_affinity() == {"cust-1": ("bob", 12.0), "cust-2": ("bob", 11.0)}


async def test_one_pending_offer_per_item_is_enforced(store: SQLiteStore) -> None:
    await store.apply_routing(items=[item("w1")], offers=[offer("o1", "w1")])
    with pytest.raises(StoreConflict, match="w1 already has a pending offer"):
        await store.apply_routing(offers=[offer("o2", "w1")])
    with pytest.raises(NotFound, match="work item ghost is not stored"):
        await store.apply_routing(offers=[offer("o3", "ghost")])
    assert await offers_of(store, "w1") == [offer("o1", "w1")]


async def test_apply_routing_is_all_or_nothing(store: SQLiteStore) -> None:
    w1 = item("w1", ItemState.OFFERED)
    await store.apply_routing(
        items=[w1],
        offers=[offer("o1", "w1")],
        statuses=[AgentStatus(agent="ann", presence="Available")],
        audit=[AuditEntry(at=1.0, kind="offer_made", item="w1", offer="o1")],
    )
    assert await store.load_pending_offers() == [offer("o1", "w1")]
    with pytest.raises(StoreConflict):
        await store.apply_routing(
            items=[item("w2")],
            offers=[offer("o2", "w1")],  # a second pending offer for w1
            audit=[AuditEntry(at=2.0, kind="item_queued", item="w2")],
        )
    assert await store.get_item("w2") is None
    assert [e.kind for e in await audit_trail(store)] == ["offer_made"]


async def test_interactions_round_trip_and_filter(store: SQLiteStore) -> None:
    first = await store.create_interaction(
        item="w1",
        channel="chat",
        customer="c1",
        opened_at=10.0,
        queue="billing",
        customer_name="Zoë",
        customer_contact="zoe@example.com",
        participants=(Participant(agent="ann", joined_at=10.0),),
    )
    assert first.number == "IMS0001001"
    assert await store.get_interaction("IMS0001001") == first
    assert await store.get_interaction("IMS9999999") is None
    second = await store.create_interaction(
        item="w2",
        channel="messaging",
        customer="c2",
        opened_at=20.0,
        participants=(Participant(agent="bob"),),
    )
    assert second.number == "IMS0001002"

    # Invite ann to the second; archive the first and drop ann from it.
    invited = (*second.participants, Participant(agent="ann", role="invited", joined_at=21.0))
    await store.save_interaction(
        replace(second, participants=invited, state=InteractionState.WORK_IN_PROGRESS)
    )
    archived = replace(first, archived=True, participants=())
    await store.save_interaction(archived)

    assert [r.number for r in await store.list_interactions()] == ["IMS0001002", "IMS0001001"]
    assert [r.number for r in await store.list_interactions(agent="ann")] == ["IMS0001002"]
    assert [r.number for r in await store.list_interactions(agent="bob")] == ["IMS0001002"]
    assert [r.number for r in await store.list_interactions(archived=True)] == ["IMS0001001"]
    assert await store.list_interactions(agent="ann", archived=True) == []
    assert [r.number for r in await store.list_interactions(limit=1, offset=1)] == ["IMS0001001"]
    assert (await store.get_interaction("IMS0001001")) == archived

    ghost = replace(first, number="IMS0009999")
    with pytest.raises(NotFound, match="IMS0009999 does not exist"):
        await store.save_interaction(ghost)


async def test_interaction_numbers_are_unique_and_in_order_under_concurrency(
    store: SQLiteStore,
) -> None:
    records = await asyncio.gather(
        *(
            store.create_interaction(item=f"w{i}", channel="chat", customer="c", opened_at=float(i))
            for i in range(200)
        )
    )
    assert [r.number for r in records] == [f"IMS{1001 + i:07d}" for i in range(200)]
    assert [r.item for r in records] == [f"w{i}" for i in range(200)]
    assert len(await store.list_interactions(limit=500)) == 200


async def test_case_and_incident_numbers_count_separately(store: SQLiteStore) -> None:
    number = await new_interaction(store)
    case = await store.create_record(
        RecordKind.CASE,
        "Refund",
        "Card charged twice",
        priority=2,
        source_interaction=number,
        created_by="ann",
        created_at=5.0,
    )
    assert case.number == "CS0001001"
    assert await get_record(store, "CS0001001") == case
    records = await asyncio.gather(
        *(
            store.create_record(RecordKind.INCIDENT if i % 2 else RecordKind.CASE, f"r{i}")
            for i in range(200)
        )
    )
    cases = [r.number for r in records if r.kind == RecordKind.CASE]
    incidents = [r.number for r in records if r.kind == RecordKind.INCIDENT]
    assert cases == [f"CS{1002 + i:07d}" for i in range(100)]
    assert incidents == [f"INC{1001 + i:07d}" for i in range(100)]
    assert await get_record(store, "INC0000001") is None


# -- idempotency keys and API token channels ----------------------------------------------


def idem(key: str, created_at: float = 100.0, fingerprint: str = "f1") -> IdempotencyKey:
    return IdempotencyKey(scope="tok_a", key=key, fingerprint=fingerprint, created_at=created_at)


async def test_an_idempotency_key_commits_with_its_interaction_or_not_at_all(
    store: SQLiteStore,
) -> None:
    number = await new_interaction(store, created_by="tok_a", idempotency=idem("k"))
    stored = await store.get_idempotency_key("tok_a", "k", 100.0)
    assert stored == replace(idem("k"), interaction=number)
    record = await store.get_interaction(number)
    assert record is not None and record.created_by == "tok_a"
    # The same key again stores neither the interaction nor the key, nor uses up a number.
    with pytest.raises(StoreConflict, match="idempotency key 'k' of tok_a"):
        await new_interaction(store, "item-2", idempotency=idem("k", fingerprint="f2"))
    assert await store.get_idempotency_key("tok_a", "k", 100.0) == stored
    assert await new_interaction(store, "item-3") == "IMS0001002"
    assert [r.item for r in await store.list_interactions()] == ["item-3", "item-1"]
    # Scoped: another token's key of the same name is another key.
    other = replace(idem("k"), scope="tok_b")
    assert await new_interaction(store, "item-4", idempotency=other) == "IMS0001003"


async def test_idempotency_keys_expire_and_are_pruned_a_bounded_batch_at_a_time(
    store: SQLiteStore,
) -> None:
    for n in range(IDEMPOTENCY_PRUNE_BATCH + 50):
        key = idem(f"k{n}", created_at=1.0 + n / 1000)
        await new_interaction(store, f"old-{n}", idempotency=key)
    later = 2.0 + IDEMPOTENCY_TTL
    assert await store.get_idempotency_key("tok_a", "k0", IDEMPOTENCY_TTL) is not None
    assert await store.get_idempotency_key("tok_a", "k0", later) is None
    # An expired key may be used again; each insert prunes at most one batch, oldest first.
    number = await new_interaction(store, "new", idempotency=idem("k7", created_at=later))
    stored = await store.get_idempotency_key("tok_a", "k7", later)
    assert stored is not None and stored.interaction == number
    count = "SELECT count(*) FROM idempotency_keys"
    assert await rows(store, count) == [(50 + 1,)]
    await new_interaction(store, "newer", idempotency=idem("k8", created_at=later))
    assert await rows(store, count) == [(2,)]


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


# -- messages -----------------------------------------------------------------------------


async def test_messages_round_trip_and_page(store: SQLiteStore) -> None:
    number = await new_interaction(store)
    note, duplicate = await store.append_message(
        number,
        SenderKind.AGENT,
        "ann",
        "internal",
        "n1",
        5.0,
        kind="work_note",
        attachment="ab" * 32,
    )
    assert (note.seq, duplicate, note.kind, note.attachment) == (1, False, "work_note", "ab" * 32)
    for i in range(2, 11):
        await say(store, number, f"m{i}")
    page = await store.list_messages(number, after_seq=3, limit=4)
    assert [m.seq for m in page] == [4, 5, 6, 7]
    assert (await store.list_messages(number))[0] == note


async def test_a_retried_client_msg_id_returns_the_original(store: SQLiteStore) -> None:
    number = await new_interaction(store)
    assert await say(store, number, "m1", "first") == (1, False)
    assert await say(store, number, "m2") == (2, False)
    original, duplicate = await store.append_message(
        number, SenderKind.CUSTOMER, "cust-1", "retry says something else", "m1", 999.0
    )
    assert duplicate is True
    assert (original.seq, original.body, original.created_at) == (1, "first", 101.0)
    other = await new_interaction(store, "item-2")
    assert await say(store, other, "m1") == (1, False)  # ids are per interaction
    assert len(await store.list_messages(number)) == 2


async def test_concurrent_duplicates_in_one_batch_store_one_row(store: SQLiteStore) -> None:
    number = await new_interaction(store)
    commits = store.stats.commits
    results = await asyncio.gather(*(say(store, number, "same", f"body {i}") for i in range(20)))
    assert store.stats.commits == commits + 1  # they really shared a batch
    assert results == [(1, False)] + [(1, True)] * 19
    messages = await store.list_messages(number)
    assert [(m.seq, m.body) for m in messages] == [(1, "body 0")]


async def test_seq_is_gap_free_per_interaction_under_concurrent_gathers(
    store: SQLiteStore,
) -> None:
    numbers = [await new_interaction(store, f"w{i}") for i in range(5)]

    async def burst(round_: int) -> list[tuple[int, bool]]:
        return await asyncio.gather(
            *(say(store, numbers[i % 5], f"r{round_}-{i}") for i in range(300))
        )

    results = await asyncio.gather(*(burst(r) for r in range(4)))
    assert not any(dup for batch in results for _, dup in batch)
    for number in numbers:
        seqs = [m.seq for m in await store.list_messages(number, limit=10_000)]
        assert seqs == list(range(1, 241))


async def test_group_commit_batches_concurrent_appends(store: SQLiteStore) -> None:
    number = await new_interaction(store)
    before = store.stats.commits
    await asyncio.gather(*(say(store, number, f"m{i}") for i in range(500)))
    commits = store.stats.commits - before
    assert commits < 50, commits
    assert len(await store.list_messages(number, limit=1000)) == 500
    assert store.stats.max_batch >= 500 // 50
    assert sum(store.stats.batch_sizes.values()) == store.stats.commits


async def test_batches_are_capped(tmp_path: Path) -> None:
    async with make_store(tmp_path, max_batch=64) as s:
        number = await new_interaction(s)
        await asyncio.gather(*(say(s, number, f"m{i}") for i in range(500)))
        assert s.stats.max_batch == 64
        assert s.stats.commits >= 1 + 500 // 64


async def test_a_failing_op_does_not_lose_the_rest_of_its_batch(store: SQLiteStore) -> None:
    number = await new_interaction(store)
    commits = store.stats.commits

    def boom(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO channels (name, data) VALUES ('half', '{}')")
        raise RuntimeError("op failed halfway")

    results = await asyncio.gather(
        say(store, number, "a"),
        store.append_message("IMS0000000", SenderKind.CUSTOMER, "c", "x", "lost", 1.0),
        say(store, number, "b"),
        store._write(boom),
        store.apply_routing(offers=[offer("o1", "ghost")]),
        say(store, number, "c"),
        return_exceptions=True,
    )
    assert store.stats.commits == commits + 1
    assert results[0] == (1, False) and results[2] == (2, False) and results[5] == (3, False)
    assert isinstance(results[1], NotFound) and "IMS0000000" in str(results[1])
    assert isinstance(results[3], RuntimeError)
    assert isinstance(results[4], NotFound)
    assert [m.client_msg_id for m in await store.list_messages(number)] == ["a", "b", "c"]
    assert await store.list_channels() == []  # the failed op's own writes were rolled back


async def test_a_failed_commit_acknowledges_nothing_and_the_writer_recovers(
    store: SQLiteStore,
) -> None:
    number = await new_interaction(store)

    def fails_at_commit(conn: sqlite3.Connection) -> None:
        # A deferred foreign key is checked at COMMIT: a real commit failure, no mocking.
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute("INSERT INTO participants (agent, interaction) VALUES ('x', 'IMS0000000')")

    failures = store.stats.failed_commits
    results = await asyncio.gather(
        say(store, number, "a"),
        store._write(fails_at_commit),
        say(store, number, "b"),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreError) for r in results), results
    assert "committing 3 writes" in str(results[0])
    assert len({id(r) for r in results}) == 3
    assert store.stats.failed_commits == failures + 1
    assert await store.list_messages(number) == []
    assert await say(store, number, "a") == (1, False)  # the retry succeeds later


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
        ]:
            plan = " ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert index in plan, (sql, plan)
    finally:
        conn.close()


# -- attachments --------------------------------------------------------------------------


async def test_attachments_are_content_addressed_and_stored_once(
    store: SQLiteStore, tmp_path: Path
) -> None:
    number = await new_interaction(store)
    other = await new_interaction(store, "item-2")
    data = b"%PDF-1.7 invoice"
    digest = hashlib.sha256(data).hexdigest()
    first = await store.put_attachment(number, "invoice.pdf", "application/pdf", data, "ann", 5.0)
    assert (first.sha256, first.size, first.name, first.uploaded_by) == (
        digest,
        len(data),
        "invoice.pdf",
        "ann",
    )
    path = tmp_path / "attachments" / digest[:2] / digest[2:]
    assert path.read_bytes() == data
    again = await store.put_attachment(number, "copy.pdf", "application/pdf", data, "bob", 6.0)
    assert again == first
    elsewhere = await store.put_attachment(other, "x.pdf", "application/pdf", data, "bob", 7.0)
    assert elsewhere.interaction == other
    files = [p for p in (tmp_path / "attachments").rglob("*") if p.is_file()]
    assert files == [path]
    assert await store.list_attachments(number) == [first]
    assert await store.list_attachments(other) == [elsewhere]


async def test_attachment_limits_and_bad_references(store: SQLiteStore, tmp_path: Path) -> None:
    number = await new_interaction(store)
    too_big = bytes(MAX_ATTACHMENT_BYTES + 1)
    with pytest.raises(ValueError, match=r"10,485,761 bytes; the limit is 10,485,760"):
        await store.put_attachment(number, "big.bin", "application/octet-stream", too_big, "a", 1)
    exactly = await store.put_attachment(
        number, "max.bin", "application/octet-stream", bytes(MAX_ATTACHMENT_BYTES), "a", 1.0
    )
    assert exactly.size == MAX_ATTACHMENT_BYTES
    with pytest.raises(NotFound, match="IMS0000000"):
        await store.put_attachment("IMS0000000", "a.txt", "text/plain", b"a", "a", 1.0)
    assert not list((tmp_path / "attachments").rglob(".*"))  # no temporary file left


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/abs/path/report.pdf", "report.pdf"),
        ("evil\x00name\n.txt", "evilname.txt"),
        ("..", "attachment"),
        ("dir/", "attachment"),
        ("", "attachment"),
        ("x" * 300, "x" * 200),
        ("résumé.pdf", "résumé.pdf"),
    ],
)
def test_attachment_names_are_sanitised(name: str, expected: str) -> None:
    assert sanitize_attachment_name(name) == expected


async def test_a_stored_attachment_name_has_no_path_parts(
    store: SQLiteStore, tmp_path: Path
) -> None:
    number = await new_interaction(store)
    record = await store.put_attachment(number, "../../etc/passwd", "text/plain", b"x", "a", 1.0)
    assert record.name == "passwd"
    assert not (tmp_path.parent / "etc").exists()


# -- kill -9 ------------------------------------------------------------------------------

ACKS_PER_RUN = 2_000
RUN_TIMEOUT_S = 60.0


def _parse_ack(line: bytes, acked: dict[tuple[str, str], int]) -> bool:
    if not line.endswith(b"\n") or not line.startswith(b"ACK "):
        return False
    _, client_msg_id, seq, number = line.decode().split()
    assert (number, client_msg_id) not in acked
    acked[(number, client_msg_id)] = int(seq)
    return True


async def _run_child_until_acks(data_dir: Path, tag: str, acked: dict[tuple[str, str], int]) -> int:
    """Run the child until it acked ACKS_PER_RUN messages, SIGKILL it, collect every ACK."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.store_crash_child",
        str(data_dir),
        tag,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    seen = 0
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            while seen < ACKS_PER_RUN:
                line = await proc.stdout.readline()
                if not line:
                    stderr = (await proc.stderr.read()).decode(errors="replace")
                    pytest.fail(f"crash child exited early:\n{stderr}")
                seen += _parse_ack(line, acked)
            proc.send_signal(signal.SIGKILL)
            # Whatever it printed before dying was acknowledged too.
            for line in (await proc.stdout.read()).splitlines(keepends=True):
                seen += _parse_ack(line, acked)
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return seen


async def test_every_acknowledged_message_survives_kill_9(tmp_path: Path) -> None:
    acked: dict[tuple[str, str], int] = {}
    for run in range(3):
        await _run_child_until_acks(tmp_path, f"run{run}", acked)
        async with make_store(tmp_path) as s:
            stored: dict[tuple[str, str], int] = {}
            numbers = [r.number for r in await s.list_interactions()]
            assert len(numbers) == 4  # later runs continued the same interactions
            for number in numbers:
                messages = await s.list_messages(number, limit=1_000_000)
                assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
                ids = Counter(m.client_msg_id for m in messages)
                assert max(ids.values()) == 1
                stored.update({(number, m.client_msg_id): m.seq for m in messages})
            missing = {k: v for k, v in acked.items() if stored.get(k) != v}
            assert not missing, f"{len(missing)} acknowledged messages lost or moved"
            # A client retrying an acknowledged message after the crash gets the original.
            (number, client_msg_id), seq = next(iter(acked.items()))
            message, duplicate = await s.append_message(
                number, SenderKind.CUSTOMER, "crash", "retry", client_msg_id, 0.0
            )
            assert (message.seq, duplicate) == (seq, True)
    assert len(acked) >= 3 * ACKS_PER_RUN


async def test_open_conversations_load_with_their_newest_lines(store: SQLiteStore) -> None:
    open_number = await new_interaction(store, "w-open")
    closed_number = await new_interaction(store, "w-closed")
    quiet_number = await new_interaction(store, "w-quiet")
    await store.apply_routing(
        items=[
            item("w-open", ItemState.ACCEPTED, agent="ann", interaction=open_number),
            item("w-closed", ItemState.CLOSED, interaction=closed_number),
            item("w-quiet", ItemState.QUEUED, interaction=quiet_number),
        ]
    )
    for i in range(4):
        await say(store, open_number, f"c{i}", f"customer {i}")
        await store.append_message(open_number, SenderKind.AGENT, "ann", f"a{i}", f"a{i}", 102.0)
    await say(store, closed_number, "c0")

    loaded = {r.number: msgs for r, msgs in await store.load_open_conversations(2, ["chat"])}
    assert set(loaded) == {open_number, quiet_number}
    assert loaded[quiet_number] == []
    # The two newest customer lines and the newest line of all (the agent's), oldest first.
    assert [m.body for m in loaded[open_number]] == ["customer 2", "customer 3", "a3"]
    # Conversations of other channels come without their lines.
    loaded = {r.number: msgs for r, msgs in await store.load_open_conversations(2, ["sms"])}
    assert loaded == {open_number: [], quiet_number: []}
