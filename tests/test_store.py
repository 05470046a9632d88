"""The store conformance tests: every behaviour of the `Store` protocol, run on SQLite and on
PostgreSQL (a fresh database per test, tests/conftest.py). What only one backend has (SQLite's
lock file and pragmas, PostgreSQL's lease) is in test_store_sqlite.py and
test_store_postgres.py."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from msgspec.structs import replace

from core.model import (
    MAX_ATTACHMENT_BYTES,
    Agent,
    AgentDay,
    AgentStatus,
    AssignmentRule,
    AuditEntry,
    ChannelMode,
    Delivery,
    InteractionRecord,
    InteractionState,
    Invitation,
    ItemState,
    MailId,
    Message,
    Offer,
    OfferState,
    Participant,
    PresenceState,
    Queue,
    QueueMinute,
    RecordKind,
    Role,
    SenderKind,
    ServiceChannel,
    SkillRequirement,
    Template,
    WorkItem,
)
from store import migrations, postgres_migrations
from store.base import (
    IDEMPOTENCY_PRUNE_BATCH,
    IDEMPOTENCY_TTL,
    ApiToken,
    IdempotencyKey,
    NotFound,
    RecordQuery,
    SessionRecord,
    Store,
    StoreClosed,
    StoreConflict,
    StoreError,
    sanitize_attachment_name,
)
from store.postgres import PostgresStore
from store.sqlite import SQLiteStore
from tests.store_helpers import (
    attachment_contents,
    audit_trail,
    get_record,
    offers_of,
    records,
    rows,
    schema_version,
)

ROOT = Path(__file__).resolve().parent.parent


# -- the backends -------------------------------------------------------------------------


def _sqlite_boom(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO channels (name, data) VALUES ('half', '{}')")
    raise RuntimeError("op failed halfway")


def _sqlite_fails_at_commit(conn: sqlite3.Connection) -> None:
    # A deferred foreign key is checked at COMMIT: a real commit failure, no mocking.
    conn.execute("PRAGMA defer_foreign_keys = ON")
    conn.execute("INSERT INTO participants (agent, interaction) VALUES ('x', 'IMS0000000')")


async def _postgres_boom(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO channels (name, data) VALUES ('half', '{}')")
    raise RuntimeError("op failed halfway")


async def _postgres_fails_at_commit(conn: asyncpg.Connection) -> None:
    # A deferred unique constraint is checked at COMMIT: a real commit failure, no mocking.
    await conn.execute(
        "CREATE TEMP TABLE twice (x integer UNIQUE DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP;"
        "INSERT INTO twice VALUES (1), (1)"
    )


@dataclass(frozen=True)
class Backend:
    """One backend under test: where its data lives and a few raw ops in its own dialect."""

    name: str
    location: Path | str  # SQLite's data directory, or PostgreSQL's database URL
    boom: Callable[[Any], Any]  # writes, then raises
    fails_at_commit: Callable[[Any], Any]  # writes what only COMMIT refuses
    latest_version: int

    def make(self, **kwargs: Any) -> SQLiteStore | PostgresStore:
        if isinstance(self.location, str):
            return PostgresStore(self.location, **kwargs)
        return SQLiteStore(self.location / "inbox.db", self.location, **kwargs)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "postgresql":
        return Backend(
            "postgresql",
            request.getfixturevalue("postgres_url"),
            _postgres_boom,
            _postgres_fails_at_commit,
            postgres_migrations.latest_version(),
        )
    return Backend(
        "sqlite", tmp_path, _sqlite_boom, _sqlite_fails_at_commit, migrations.latest_version()
    )


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[SQLiteStore | PostgresStore]:
    s = backend.make()
    await s.open()
    yield s
    await s.close()


async def new_interaction(store: Store, item: str = "item-1", **kwargs: Any) -> str:
    record = await store.create_interaction(
        item=item, channel="chat", customer="cust-1", opened_at=100.0, **kwargs
    )
    return record.number


async def say(store: Store, number: str, client_msg_id: str, body: str = "hi") -> tuple[int, bool]:
    message, duplicate = await store.append_message(
        number, SenderKind.CUSTOMER, "cust-1", body, client_msg_id, 101.0
    )
    return message.seq, duplicate


def item(item_id: str, state: ItemState = ItemState.QUEUED, **kwargs: Any) -> WorkItem:
    return WorkItem(id=item_id, channel="chat", customer="c", created_at=1.0, state=state, **kwargs)


def offer(offer_id: str, item_id: str, state: OfferState = OfferState.PENDING) -> Offer:
    return Offer(id=offer_id, item=item_id, agent="ann", created_at=1.0, deadline=31.0, state=state)


# -- the interface ------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", [SQLiteStore, PostgresStore])
def test_every_store_method_is_implemented_with_the_same_signature(
    implementation: type,
) -> None:
    members = {
        name: value
        for name, value in vars(Store).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }
    assert "append_message" in members
    for name, proto in members.items():
        impl = getattr(implementation, name)
        if isinstance(proto, property):
            assert isinstance(impl, property), name
            continue
        assert inspect.iscoroutinefunction(impl), name
        assert inspect.signature(impl) == inspect.signature(proto), name


# -- lifecycle ----------------------------------------------------------------------------


async def test_a_new_store_is_migrated_to_the_latest_version(backend: Backend) -> None:
    async with backend.make() as s:
        assert await schema_version(s) == backend.latest_version >= 1


async def test_reopening_is_idempotent_and_keeps_data(backend: Backend) -> None:
    async with backend.make() as s:
        number = await new_interaction(s)
        await say(s, number, "m1")
    for _ in range(2):
        async with backend.make() as s:
            assert await schema_version(s) == backend.latest_version
            assert [m.client_msg_id for m in await s.list_messages(number)] == ["m1"]
    async with backend.make() as s:
        assert await new_interaction(s, "item-2") == "IMS0001002"
        assert await say(s, number, "m2") == (2, False)


async def test_close_commits_writes_already_submitted_then_refuses(backend: Backend) -> None:
    s = backend.make()
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
    async with backend.make() as again:
        assert len(await again.list_messages(number)) == 50


# -- round trips --------------------------------------------------------------------------


async def test_config_entities_round_trip(store: Store) -> None:
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


async def test_sessions_and_api_tokens_round_trip(store: Store) -> None:
    await store.upsert_agents([Agent(id="ann"), Agent(id="bob")])
    first = SessionRecord(
        token_digest="a" * 64, agent="ann", role=Role.AGENT, created_at=1.0, expires_at=10.0
    )
    second = replace(first, token_digest="b" * 64, expires_at=20.0)
    bobs = replace(first, token_digest="c" * 64, agent="bob", role=Role.SUPERVISOR)
    for session in (first, second, bobs):
        await store.save_session(session)
    assert await store.get_session("a" * 64) == first
    assert await store.get_session("z" * 64) is None
    with pytest.raises(StoreConflict, match="session: already stored"):
        await store.save_session(first)
    with pytest.raises(NotFound, match="agent ghost does not exist"):
        await store.save_session(replace(first, token_digest="d" * 64, agent="ghost"))
    assert await store.revoke_session("a" * 64, 2.0) is True
    assert await store.revoke_session("a" * 64, 3.0) is False
    assert await store.get_session("a" * 64) == replace(first, revoked_at=2.0)
    assert await store.revoke_agent_sessions("ann", 4.0) == 1  # the first is revoked already
    assert await store.prune_sessions(5.0) == 2  # both of ann's; bob's expires at 10
    assert await store.get_session("c" * 64) == bobs
    assert await store.prune_sessions(10.0) == 1

    token = ApiToken(
        id="tok_a", token_digest="d1", name="crm", role=Role.SUPERVISOR, created_at=1.0
    )
    scoped = replace(
        token, id="tok_b", token_digest="d2", agent="ann", channels=("case", "incident")
    )
    await store.save_api_token(token)
    await store.save_api_token(scoped)
    assert await store.get_api_token("d2") == scoped
    assert await store.get_api_token("nope") is None
    with pytest.raises(StoreConflict):
        await store.save_api_token(replace(scoped, id="tok_c"))  # the same digest
    with pytest.raises(NotFound, match="agent ghost"):
        await store.save_api_token(replace(scoped, id="tok_d", token_digest="d4", agent="ghost"))
    assert await store.revoke_api_token("tok_a", 7.0) is True
    assert await store.revoke_api_token("tok_a", 8.0) is False
    assert await store.list_api_tokens() == [replace(token, revoked_at=7.0), scoped]


async def test_routing_state_round_trips(store: Store) -> None:
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


async def test_audit_trail_reads_one_items_newest_entries_oldest_first(store: Store) -> None:
    entries = [
        AuditEntry(at=float(i), kind="offer_made", item=f"w{i % 2}", agent="ann", reason=f"r{i}")
        for i in range(10)
    ]
    await store.apply_routing(audit=entries)
    await store.apply_routing(audit=[AuditEntry(at=11.0, kind="presence_set", agent="ann")])
    assert await store.audit_trail("w1") == entries[1::2]
    assert await store.audit_trail("w0", limit=2) == entries[6:10:2]
    assert await store.audit_trail("nothing") == []


async def test_one_pending_offer_per_item_is_enforced(store: Store) -> None:
    await store.apply_routing(items=[item("w1")], offers=[offer("o1", "w1")])
    with pytest.raises(StoreConflict, match="w1 already has a pending offer"):
        await store.apply_routing(offers=[offer("o2", "w1")])
    with pytest.raises(NotFound, match="work item ghost is not stored"):
        await store.apply_routing(offers=[offer("o3", "ghost")])
    assert await offers_of(store, "w1") == [offer("o1", "w1")]


async def test_apply_routing_is_all_or_nothing(store: Store) -> None:
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


async def test_appends_made_together_keep_their_order_ids_and_refusals(store: Store) -> None:
    # Made at once, they share a batch (one statement on PostgreSQL): each conversation numbers
    # its lines in the order they were made, an id sent twice is stored once, a line stored
    # earlier comes back as the duplicate, and an unknown conversation fails alone.
    a, b = await new_interaction(store, "w1"), await new_interaction(store, "w2")
    assert await say(store, a, "early") == (1, False)
    results = await asyncio.gather(
        *(say(store, number, f"m{i}", f"{number} {i}") for i in range(5) for number in (a, b)),
        say(store, a, "m1"),
        say(store, a, "early"),
        say(store, "IMS0009999", "lost"),
        return_exceptions=True,
    )
    *lines, again, early, lost = results
    assert lines == [(k, False) for i in range(5) for k in (i + 2, i + 1)]
    assert (again, early) == ((3, True), (1, True))
    assert isinstance(lost, NotFound)
    stored = await store.list_messages(a, limit=10)
    assert [m.body for m in stored] == ["hi", *(f"{a} {i}" for i in range(5))]


async def test_apply_routing_stores_the_last_of_several_rows_for_one_key(store: Store) -> None:
    # One call may carry an item or a status more than once (several decisions committed
    # together): the last row of each wins. An offer ending in the same call as its item's
    # next one is made leaves room for it under the one-pending-offer rule, in any order.
    await store.apply_routing(items=[item("w1")], offers=[offer("o1", "w1")])
    await store.apply_routing(
        items=[item("w1", ItemState.OFFERED), item("w2"), item("w1", ItemState.ACCEPTED)],
        offers=[offer("o2", "w1"), offer("o1", "w1", OfferState.REJECTED)],
        statuses=[
            AgentStatus(agent="ann", presence="Away"),
            AgentStatus(agent="ann", presence="Available"),
        ],
        audit=[AuditEntry(at=float(i), kind="offer_made", item="w1") for i in range(3)],
    )
    stored = await store.get_item("w1")
    assert stored is not None and stored.state == ItemState.ACCEPTED
    assert [(o.id, o.state) for o in await offers_of(store, "w1")] == [
        ("o1", OfferState.REJECTED),
        ("o2", OfferState.PENDING),
    ]
    assert [s.presence for s in await store.load_agent_statuses()] == ["Available"]
    assert [e.at for e in await audit_trail(store, "w1")] == [0.0, 1.0, 2.0]
    assert [i.id for i in await store.load_open_items()] == ["w1", "w2"]


async def test_apply_routing_replaces_the_interactions_that_follow_its_items(
    store: Store,
) -> None:
    number = await new_interaction(store, "w1")
    record = await store.get_interaction(number)
    assert record is not None
    taken = replace(
        record,
        state=InteractionState.WORK_IN_PROGRESS,
        participants=(Participant(agent="ann", joined_at=5.0),),
    )
    await store.apply_routing(
        items=[item("w1", ItemState.ACCEPTED, agent="ann", interaction=number)],
        interactions=[taken],
    )
    assert await store.get_interaction(number) == taken
    assert [r.number for r in await store.list_interactions(agent="ann")] == [number]
    # Moved to bob: the participants follow the record, ann's row goes.
    moved = replace(taken, participants=(Participant(agent="bob", joined_at=6.0),))
    await store.apply_routing(
        items=[item("w1", ItemState.ACCEPTED, agent="bob", interaction=number)],
        interactions=[taken, moved],
    )
    assert await store.get_interaction(number) == moved
    assert await store.list_interactions(agent="ann") == []
    assert [r.number for r in await store.list_interactions(agent="bob")] == [number]
    # An unknown number is NotFound, and nothing of that step is stored.
    ghost = replace(taken, number="IMS0009999")
    with pytest.raises(NotFound, match="IMS0009999 does not exist"):
        await store.apply_routing(items=[item("w2")], interactions=[ghost])
    assert await store.get_item("w2") is None


async def test_apply_routing_stores_interactions_created_with_their_items(store: Store) -> None:
    """A new conversation's record is stored in its item's first routing step, one commit,
    under a number reserved before: in order, and never handed out again, not even by
    create_interaction counting its own."""
    numbers = await store.reserve_numbers("IMS", 3)
    assert numbers == ["IMS0001001", "IMS0001002", "IMS0001003"]
    record = InteractionRecord(
        number=numbers[0],
        item="w1",
        channel="chat",
        customer="c1",
        opened_at=10.0,
        queue="general",
        participants=(Participant(agent="ann", joined_at=11.0),),
    )
    await store.apply_routing(
        items=[item("w1", ItemState.ACCEPTED, agent="ann", interaction=record.number)],
        interactions=[record],
        created=[record.number],
    )
    assert await store.get_interaction(record.number) == record
    assert [r.number for r in await store.list_interactions(agent="ann")] == [record.number]
    assert (await new_interaction(store, "w2")) == "IMS0001004"
    # One reserved may be given to create_interaction (an item under an idempotency key).
    assert (await new_interaction(store, "w4", number=numbers[1])) == numbers[1]
    with pytest.raises(StoreConflict, match=numbers[1]):
        await new_interaction(store, "w5", number=numbers[1])
    assert await store.reserve_numbers("IMS", 1) == ["IMS0001005"]
    # A number stored already is a conflict, and nothing of that step is stored.
    with pytest.raises(StoreConflict, match="IMS0001001"):
        await store.apply_routing(
            items=[item("w3")], interactions=[replace(record, item="w3")], created=[record.number]
        )
    assert await store.get_item("w3") is None
    assert await store.get_interaction(record.number) == record
    with pytest.raises(ValueError, match="at least 1"):
        await store.reserve_numbers("IMS", 0)


def system_line(number: str, body: str) -> Message:
    return Message(
        interaction=number,
        seq=0,
        sender_kind=SenderKind.SYSTEM,
        sender="system",
        body=body,
        client_msg_id=f"sys-{body}",
        created_at=12.0,
    )


async def test_apply_routing_appends_its_system_lines_in_the_same_commit(store: Store) -> None:
    """A step's system lines ("Ann joined") are numbered after the conversation's messages,
    in order, also in a conversation the step creates; a step that fails stores none."""
    talking = await new_interaction(store, "w1")
    assert await say(store, talking, "c1") == (1, False)
    (fresh,) = await store.reserve_numbers("IMS", 1)
    record = InteractionRecord(
        number=fresh, item="w2", channel="chat", customer="c2", opened_at=10.0
    )
    stored = await store.apply_routing(
        items=[item("w1", ItemState.ACCEPTED, agent="ann", interaction=talking), item("w2")],
        interactions=[record],
        created=[fresh],
        lines=[
            system_line(talking, "Ann joined"),
            system_line(fresh, "Waiting"),
            system_line(talking, "Ann left"),
        ],
    )
    assert [(m.interaction, m.seq, m.body) for m in stored] == [
        (talking, 2, "Ann joined"),
        (fresh, 1, "Waiting"),
        (talking, 3, "Ann left"),
    ]
    assert (await store.list_messages(talking))[1:] == [stored[0], stored[2]]
    assert await store.list_messages(fresh) == [stored[1]]
    # The next message of the conversation comes after them.
    assert await say(store, talking, "c2") == (4, False)
    assert await store.apply_routing(items=[item("w3")]) == []
    # A line of an unknown conversation fails the step: none of it is stored.
    with pytest.raises(NotFound, match="IMS0009999"):
        await store.apply_routing(
            items=[item("w4")],
            lines=[system_line(talking, "lost"), system_line("IMS0009999", "nowhere")],
        )
    assert await store.get_item("w4") is None
    assert [m.seq for m in await store.list_messages(talking)] == [1, 2, 3, 4]


async def test_reserved_numbers_are_given_back_only_while_nobody_reserved_after_them(
    store: Store,
) -> None:
    assert await store.reserve_numbers("IMS", 4) == [f"IMS000100{i}" for i in range(1, 5)]
    assert await store.release_numbers("IMS", "IMS0001003", "IMS0001004")
    assert await store.reserve_numbers("IMS", 2) == ["IMS0001003", "IMS0001004"]
    await store.reserve_numbers("IMS", 1)  # 1005: 1003-1004 are no longer the counter's end
    assert not await store.release_numbers("IMS", "IMS0001003", "IMS0001004")
    assert (await new_interaction(store)) == "IMS0001006"
    with pytest.raises(ValueError, match="not a number under IMS"):
        await store.release_numbers("IMS", "CS0001001", "IMS0001006")


async def test_interactions_round_trip_and_filter(store: Store) -> None:
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
        previous="IMS0001001",
    )
    assert second.number == "IMS0001002"
    assert (await store.get_interaction(second.number)) == second
    assert second.previous == "IMS0001001"

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


async def test_invitations_are_kept_until_deleted_one_or_all(store: Store) -> None:
    a = await store.create_interaction(item="w1", channel="chat", customer="c", opened_at=1.0)
    b = await store.create_interaction(item="w2", channel="chat", customer="c", opened_at=1.0)
    to_bob = Invitation(interaction=a.number, agent="bob", inviter="ann", created_at=2.0)
    to_cy = Invitation(interaction=a.number, agent="cy", inviter="ann", created_at=3.0)
    elsewhere = Invitation(interaction=b.number, agent="bob", inviter="dan", created_at=1.5)
    for invitation in (to_bob, to_cy, elsewhere):
        await store.save_invitation(invitation)
    await store.save_invitation(replace(to_bob, inviter="dan", created_at=4.0))  # asked again
    assert await store.load_invitations() == [
        elsewhere,
        to_cy,
        replace(to_bob, inviter="dan", created_at=4.0),
    ]
    await store.delete_invitations(a.number, "cy")
    assert [i.agent for i in await store.load_invitations()] == ["bob", "bob"]
    await store.delete_invitations(a.number)
    assert await store.load_invitations() == [elsewhere]


async def test_mail_ids_are_found_by_id_and_listed_per_conversation_oldest_first(
    store: Store,
) -> None:
    a = await store.create_interaction(item="w1", channel="mail", customer="c@x", opened_at=1.0)
    b = await store.create_interaction(item="w2", channel="mail", customer="d@x", opened_at=1.0)
    first = MailId(message_id="1@x", interaction=a.number, outbound=False, created_at=2.0)
    reply = MailId(
        message_id="2@host", interaction=a.number, outbound=True, subject="Re: Hi", created_at=3.0
    )
    other = MailId(message_id="3@x", interaction=b.number, outbound=False, created_at=2.5)
    for mail in (reply, first, other):
        await store.save_mail_id(mail)
    await store.save_mail_id(replace(first, interaction=b.number))  # seen again: kept as it was
    found = await store.find_mail_ids(["nope@x", "2@host", "1@x"])
    assert sorted(found, key=lambda m: m.created_at) == [first, reply]
    assert await store.find_mail_ids([]) == []
    assert await store.last_mail_ids(a.number, 10) == [first, reply]
    assert await store.last_mail_ids(a.number, 1) == [reply]


async def test_day_figures_are_replaced_per_minute_read_by_range_and_pruned(store: Store) -> None:
    general = QueueMinute(queue="general", minute=600, arrivals=3, waits=2, average_wait=4.5)
    french = QueueMinute(queue="french", minute=600, waiting=1, most_waiting=2)
    later = QueueMinute(queue="general", minute=660, handled=1)
    old = QueueMinute(queue="general", minute=0, arrivals=9)
    alice = AgentDay(agent="alice", day=0, declined=1)
    await store.save_day([old, general, french, later], [alice], keep_since=0)
    assert await store.queue_minutes(0, 3600) == [old, french, general, later]
    assert await store.queue_minutes(600, 660) == [french, general]
    assert await store.queue_minutes(600, 3600, "general") == [general, later]
    assert await store.queue_minutes(0, 3600, "nope") == []
    # The same minute again replaces it; the prune forgets what is older than keep_since.
    recounted = replace(later, handled=2)
    bob = AgentDay(agent="bob", day=600, expired=2)
    await store.save_day([recounted], [bob, replace(bob, expired=3)], keep_since=600)
    assert await store.queue_minutes(0, 3600) == [french, general, recounted]
    assert await store.agent_days(0) == []
    assert await store.agent_days(600) == [replace(bob, expired=3)]
    await store.save_day([], [], keep_since=10_000)
    assert await store.queue_minutes(0, 3600) == []


async def test_interaction_numbers_are_unique_and_in_order_under_concurrency(
    store: Store,
) -> None:
    created = await asyncio.gather(
        *(
            store.create_interaction(item=f"w{i}", channel="chat", customer="c", opened_at=float(i))
            for i in range(200)
        )
    )
    assert [r.number for r in created] == [f"IMS{1001 + i:07d}" for i in range(200)]
    assert [r.item for r in created] == [f"w{i}" for i in range(200)]
    assert len(await store.list_interactions(limit=500)) == 200


async def test_case_and_incident_numbers_count_separately(store: Store) -> None:
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
    created = await asyncio.gather(
        *(
            store.create_record(RecordKind.INCIDENT if i % 2 else RecordKind.CASE, f"r{i}")
            for i in range(200)
        )
    )
    cases = [r.number for r in created if r.kind == RecordKind.CASE]
    incidents = [r.number for r in created if r.kind == RecordKind.INCIDENT]
    assert cases == [f"CS{1002 + i:07d}" for i in range(100)]
    assert incidents == [f"INC{1001 + i:07d}" for i in range(100)]
    assert await get_record(store, "INC0000001") is None


async def test_a_record_is_worked_saved_by_version_listed_by_filter_noted_and_linked(
    store: Store,
) -> None:
    source = await store.create_interaction(
        item="item-1",
        channel="chat",
        customer="c",
        opened_at=1.0,
        participants=(Participant(agent="bob"),),
    )
    other = await new_interaction(store, "item-2")
    inc = await store.create_record(
        RecordKind.INCIDENT,
        "Printer on fire",
        source_interaction=source.number,
        created_by="ann",
        created_at=10.0,
        state="triage",
    )
    case = await store.create_record(RecordKind.CASE, "Refund please", created_at=20.0)
    assert inc.state == "triage" and await store.get_record(inc.number) == inc
    assert await store.get_record("INC0009999") is None

    worked = replace(inc, state="in_progress", assignee="cat", assignment_group="tier1")
    saved = await store.save_record(worked)
    assert saved == replace(worked, version=1)
    assert await store.get_record(inc.number) == saved
    with pytest.raises(StoreConflict, match=f"{inc.number} was changed meanwhile"):
        await store.save_record(replace(inc, state="closed"))  # read before the first save
    with pytest.raises(NotFound):
        await store.save_record(replace(inc, number="INC0009999"))

    async def numbers(query: RecordQuery, limit: int = 50, offset: int = 0) -> list[str]:
        return [r.number for r in await store.list_records(query, limit, offset)]

    assert await numbers(RecordQuery()) == [case.number, inc.number]  # newest first
    assert await numbers(RecordQuery(), limit=1, offset=1) == [inc.number]
    assert await numbers(RecordQuery(kind=RecordKind.CASE)) == [case.number]
    assert await numbers(RecordQuery(state="in_progress")) == [inc.number]
    assert await numbers(RecordQuery(assignee="cat")) == [inc.number]
    assert await numbers(RecordQuery(groups=("tier1", "tier2"))) == [inc.number]
    assert await numbers(RecordQuery(groups=())) == []
    assert await numbers(RecordQuery(text="ON FIRE")) == [inc.number]
    # A NUL (PostgreSQL's text holds none) and letters SQLite's lower() does not know.
    odd = await store.create_record(RecordKind.CASE, "Ölpumpe\x00 DEFEKT", "a\x00b", created_at=5.0)
    assert await numbers(RecordQuery(text="ölpumpe defekt")) == [odd.number]
    assert await numbers(RecordQuery(text="\x00defekt")) == [odd.number]
    assert (await store.get_record(odd.number)) == odd
    # Who may read: the assignee, the group, the creator, a participant of a linked interaction.
    assert await numbers(RecordQuery(reader="cat")) == [inc.number]
    assert await numbers(RecordQuery(reader="dan", reader_groups=("tier1",))) == [inc.number]
    assert await numbers(RecordQuery(reader="ann")) == [inc.number]
    assert await numbers(RecordQuery(reader="bob")) == [inc.number]
    assert await numbers(RecordQuery(reader="eve", reader_groups=("tier2",))) == []

    first = await store.add_record_note(inc.number, "cat", "Called the fire brigade", 30.0)
    second = await store.add_record_note(inc.number, "ann", "Out", 31.0)
    assert await store.list_record_notes(inc.number) == [first, second]
    assert await store.list_record_notes(inc.number, limit=1) == [second]
    with pytest.raises(NotFound):
        await store.add_record_note("INC0009999", "cat", "nothing", 1.0)

    assert await store.record_links(inc.number) == [source.number]
    await store.link_record(inc.number, other, 40.0)
    await store.link_record(inc.number, other, 41.0)  # again: nothing
    assert await store.record_links(inc.number) == [source.number, other]
    assert await store.record_links(case.number) == []
    with pytest.raises(NotFound):
        await store.link_record(inc.number, "IMS0009999", 42.0)


# -- idempotency keys ---------------------------------------------------------------------


def idem(key: str, created_at: float = 100.0, fingerprint: str = "f1") -> IdempotencyKey:
    return IdempotencyKey(scope="tok_a", key=key, fingerprint=fingerprint, created_at=created_at)


async def test_an_idempotency_key_commits_with_its_interaction_or_not_at_all(
    store: Store,
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
    store: Store,
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


# -- messages -----------------------------------------------------------------------------


async def test_messages_round_trip_and_page(store: Store) -> None:
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
    assert [m.seq for m in await store.last_messages(number, limit=3)] == [8, 9, 10]


async def test_a_retried_client_msg_id_returns_the_original(store: Store) -> None:
    number = await new_interaction(store)
    assert await say(store, number, "m1", "first") == (1, False)
    assert await say(store, number, "m2") == (2, False)
    original, duplicate = await store.append_message(
        number, SenderKind.CUSTOMER, "cust-1", "retry says something else", "m1", 999.0
    )
    assert duplicate is True
    assert (original.seq, original.body, original.created_at) == (1, "first", 101.0)
    assert await say(store, number, "m3") == (3, False)  # the retry used up no seq
    other = await new_interaction(store, "item-2")
    assert await say(store, other, "m1") == (1, False)  # ids are per interaction
    assert len(await store.list_messages(number)) == 3
    with pytest.raises(NotFound, match="IMS0000000"):
        await say(store, "IMS0000000", "m1")


async def test_the_outbox_keeps_deliveries_with_their_messages_and_hands_out_heads_in_order(
    store: Store,
) -> None:
    number = await new_interaction(store)
    other = await new_interaction(store, "item-2")

    def delivery(id: str, conversation: str, event: Any = "message") -> Delivery:
        return Delivery(
            id=id, channel="chat", conversation=conversation, event=event, created_at=1.0
        )

    await store.apply_routing(deliveries=[delivery("d1", number, "assigned")])
    reply, _ = await store.append_message(
        number, SenderKind.AGENT, "ann", "hello", "m1", 2.0, delivery=delivery("d2", number)
    )
    await store.append_message(
        other, SenderKind.AGENT, "ann", "hi", "m1", 3.0, delivery=delivery("d3", other)
    )
    # A retry stores neither a second message nor a second delivery.
    _, duplicate = await store.append_message(
        number, SenderKind.AGENT, "ann", "hello", "m1", 2.0, delivery=delivery("d4", number)
    )
    assert duplicate
    due = await store.due_deliveries()
    # Only each conversation's oldest: d2 waits for d1.
    assert [d.id for d in due] == ["d1", "d3"]
    assert await store.outbox_backlog() == 3
    assert await store.message_deliveries(number) == {reply.seq: "pending"}
    await store.save_delivery(replace(due[0], state="sent", attempts=1))
    await store.save_delivery(replace(due[1], state="failed", attempts=5, last_error="down"))
    (d2,) = await store.due_deliveries()
    assert d2.id == "d2" and d2.message == reply
    await store.save_delivery(replace(d2, state="retrying", attempts=1, next_at=9.0))
    assert [(d.id, d.next_at) for d in await store.due_deliveries()] == [("d2", 9.0)]
    assert await store.outbox_backlog() == 1
    assert await store.message_deliveries(number) == {reply.seq: "retrying"}
    assert await store.message_deliveries(other) == {1: "failed"}


async def test_concurrent_duplicates_in_one_batch_store_one_row(store: Store) -> None:
    number = await new_interaction(store)
    commits = store.stats.commits
    results = await asyncio.gather(*(say(store, number, "same", f"body {i}") for i in range(20)))
    assert store.stats.commits == commits + 1  # they really shared a batch
    assert results == [(1, False)] + [(1, True)] * 19
    messages = await store.list_messages(number)
    assert [(m.seq, m.body) for m in messages] == [(1, "body 0")]


async def test_seq_is_gap_free_per_interaction_under_concurrent_gathers(store: Store) -> None:
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


# -- group commit -------------------------------------------------------------------------


async def test_group_commit_batches_concurrent_appends(store: Store) -> None:
    number = await new_interaction(store)
    before = store.stats.commits
    await asyncio.gather(*(say(store, number, f"m{i}") for i in range(500)))
    commits = store.stats.commits - before
    assert commits < 50, commits
    assert len(await store.list_messages(number, limit=1000)) == 500
    assert store.stats.max_batch >= 500 // 50
    assert sum(store.stats.batch_sizes.values()) == store.stats.commits


async def test_batches_are_capped(backend: Backend) -> None:
    async with backend.make(max_batch=16) as s:
        number = await new_interaction(s)
        await asyncio.gather(*(say(s, number, f"m{i}") for i in range(200)))
        assert s.stats.max_batch == 16
        assert s.stats.commits >= 1 + 200 // 16


async def test_a_failing_op_does_not_lose_the_rest_of_its_batch(
    store: SQLiteStore | PostgresStore, backend: Backend
) -> None:
    number = await new_interaction(store)
    commits = store.stats.commits
    results = await asyncio.gather(
        say(store, number, "a"),
        store.append_message("IMS0000000", SenderKind.CUSTOMER, "c", "x", "lost", 1.0),
        say(store, number, "b"),
        store._write(backend.boom),
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
    store: SQLiteStore | PostgresStore, backend: Backend
) -> None:
    number = await new_interaction(store)
    failures = store.stats.failed_commits
    results = await asyncio.gather(
        say(store, number, "a"),
        store._write(backend.fails_at_commit),
        say(store, number, "b"),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreError) for r in results), results
    assert "committing 3 writes" in str(results[0])
    assert len({id(r) for r in results}) == 3
    assert store.stats.failed_commits == failures + 1
    assert store.stats.failing is not None
    assert await store.list_messages(number) == []
    assert await say(store, number, "a") == (1, False)  # the retry succeeds later
    assert store.stats.failing is None


# -- attachments --------------------------------------------------------------------------


async def test_attachments_are_content_addressed_and_stored_once(store: Store) -> None:
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
    assert await attachment_contents(store) == {digest: data}
    again = await store.put_attachment(number, "copy.pdf", "application/pdf", data, "bob", 6.0)
    assert again == first
    elsewhere = await store.put_attachment(other, "x.pdf", "application/pdf", data, "bob", 7.0)
    assert elsewhere.interaction == other
    assert await attachment_contents(store) == {digest: data}  # the content once
    assert await store.list_attachments(number) == [first]
    assert await store.list_attachments(other) == [elsewhere]


async def test_read_attachment_returns_its_record_and_bytes_only_for_its_interaction(
    store: Store,
) -> None:
    number = await new_interaction(store)
    other = await new_interaction(store, "item-2")
    data = b"%PDF-1.7 quote"
    record = await store.put_attachment(number, "quote.pdf", "application/pdf", data, "ann", 5.0)
    assert await store.read_attachment(number, record.sha256) == (record, data)
    # The same content exists, but not as an attachment of the other interaction.
    assert await store.read_attachment(other, record.sha256) is None
    assert await store.read_attachment(number, "0" * 64) is None


async def test_attachment_limits_and_bad_references(store: Store) -> None:
    number = await new_interaction(store)
    too_big = bytes(MAX_ATTACHMENT_BYTES + 1)
    with pytest.raises(ValueError, match=r"10,485,761 bytes; the limit is 10,485,760"):
        await store.put_attachment(number, "big.bin", "application/octet-stream", too_big, "a", 1)
    exactly = await store.put_attachment(
        number, "max.bin", "application/octet-stream", bytes(MAX_ATTACHMENT_BYTES), "a", 1.0
    )
    assert exactly.size == MAX_ATTACHMENT_BYTES
    assert (await attachment_contents(store))[exactly.sha256] == bytes(MAX_ATTACHMENT_BYTES)
    with pytest.raises(NotFound, match="IMS0000000"):
        await store.put_attachment("IMS0000000", "a.txt", "text/plain", b"a", "a", 1.0)


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


async def test_a_stored_attachment_name_has_no_path_parts(store: Store) -> None:
    number = await new_interaction(store)
    record = await store.put_attachment(number, "../../etc/passwd", "text/plain", b"x", "a", 1.0)
    assert record.name == "passwd"
    assert (await store.list_attachments(number))[0].name == "passwd"


# -- restart ------------------------------------------------------------------------------


async def test_open_conversations_load_with_their_newest_lines(store: Store) -> None:
    open_number = await new_interaction(store, "w-open")
    closed_number = await new_interaction(store, "w-closed")
    quiet_number = await new_interaction(store, "w-quiet")
    waiting_number = await new_interaction(store, "w-waiting")
    await store.apply_routing(
        items=[
            item("w-open", ItemState.ACCEPTED, agent="ann", interaction=open_number),
            item("w-closed", ItemState.CLOSED, interaction=closed_number),
            item("w-quiet", ItemState.QUEUED, interaction=quiet_number),
            item("w-waiting", ItemState.QUEUED, interaction=waiting_number),
        ]
    )
    for i in range(4):
        await say(store, open_number, f"c{i}", f"customer {i}")
        await store.append_message(open_number, SenderKind.AGENT, "ann", f"a{i}", f"a{i}", 102.0)
        await say(store, waiting_number, f"c{i}", f"waiting {i}")
    await say(store, closed_number, "c0")

    loaded = {r.number: msgs for r, msgs in await store.load_open_conversations(2, ["chat"])}
    assert set(loaded) == {open_number, quiet_number, waiting_number}
    assert loaded[quiet_number] == []
    # The two newest customer lines and the newest line of all (the agent's), oldest first.
    assert [m.body for m in loaded[open_number]] == ["customer 2", "customer 3", "a3"]
    # The newest line is also a customer line: it comes once.
    assert [m.body for m in loaded[waiting_number]] == ["waiting 2", "waiting 3"]
    # Conversations of other channels come without their lines.
    loaded = {r.number: msgs for r, msgs in await store.load_open_conversations(2, ["sms"])}
    assert loaded == {open_number: [], quiet_number: [], waiting_number: []}
    # The same lines for the conversations named, open or not; none for one without lines.
    recent = await store.recent_lines([open_number, closed_number, quiet_number], 2)
    assert {n: [m.body for m in lines] for n, lines in recent.items()} == {
        open_number: ["customer 2", "customer 3", "a3"],
        closed_number: ["hi"],
    }


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


async def _run_child_until_acks(location: str, tag: str, acked: dict[tuple[str, str], int]) -> int:
    """Run the child until it acked ACKS_PER_RUN messages, SIGKILL it, collect every ACK."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.store_crash_child",
        location,
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


async def test_every_acknowledged_message_survives_kill_9(backend: Backend) -> None:
    acked: dict[tuple[str, str], int] = {}
    for run in range(3):
        await _run_child_until_acks(str(backend.location), f"run{run}", acked)
        async with backend.make() as s:
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
