"""core/routing/records.py: how an interaction record follows its work item, tested directly."""

from __future__ import annotations

from msgspec.structs import replace

from core.model import (
    InteractionRecord,
    InteractionState,
    ItemState,
    Participant,
    WorkItem,
)
from core.routing.decisions import ItemChanged, ItemUnroutable
from core.routing.records import current, follow, owner_of

ITEM = WorkItem(id="W1", channel="chat", customer="c1", created_at=0.0, interaction="IMS1")
RECORD = InteractionRecord(number="IMS1", item="W1", channel="chat", customer="c1", opened_at=0.0)


def changed(change: str, at: float = 10.0, **item: object) -> ItemChanged:
    return ItemChanged(at=at, item=replace(ITEM, **item), change=change, reason="why")


def owned_by(agent: str) -> InteractionRecord:
    return follow(
        RECORD, changed("assigned", at=5.0, state=ItemState.ACCEPTED, agent=agent, queue="q")
    )


def test_arrival_sets_the_queue_and_nothing_else() -> None:
    after = follow(RECORD, changed("queued", queue="general"))
    assert after == replace(RECORD, queue="general")
    assert follow(after, changed("queued", queue="general")) is after


def test_assignment_makes_the_agent_the_owner_at_work() -> None:
    after = owned_by("alice")
    assert after.state == InteractionState.WORK_IN_PROGRESS and after.queue == "q"
    assert after.participants == (Participant(agent="alice", role="owner", joined_at=5.0),)


def test_transfer_hands_ownership_over_and_the_old_owner_leaves() -> None:
    after = follow(
        owned_by("alice"), changed("transferred", state=ItemState.ACCEPTED, agent="bob", queue="q")
    )
    assert owner_of(after) == "bob" and current(after) == ["bob"]
    assert after.participants[0] == Participant(
        agent="alice", role="owner", joined_at=5.0, left_at=10.0
    )


def test_an_item_back_in_its_queue_leaves_the_record_new_and_unowned() -> None:
    invited = replace(
        owned_by("alice"),
        participants=(*owned_by("alice").participants, Participant(agent="bob", role="invited")),
    )
    after = follow(invited, changed("requeued", state=ItemState.QUEUED, queue="other"))
    assert after.state == InteractionState.NEW and after.queue == "other"
    assert current(after) == [] and owner_of(after) is None


def test_wrap_up_and_the_ways_to_close() -> None:
    wrap_up = changed("wrap_up", state=ItemState.WRAP_UP, agent="a")
    assert follow(owned_by("a"), wrap_up).state == InteractionState.WRAP_UP
    for change, state in (
        ("closed", InteractionState.CLOSED_COMPLETE),
        ("cancelled", InteractionState.CLOSED_ABANDONED),
        ("abandoned", InteractionState.CLOSED_ABANDONED),
    ):
        after = follow(owned_by("a"), changed(change, at=42.0, state=ItemState(change)))
        assert (after.state, after.closed_at) == (state, 42.0)


def test_an_unroutable_item_closes_its_record_abandoned() -> None:
    after = follow(RECORD, ItemUnroutable(at=3.0, item=ITEM, reason="no queue"))
    assert (after.state, after.closed_at) == (InteractionState.CLOSED_ABANDONED, 3.0)


def test_changes_a_record_does_not_mirror_return_it_unchanged() -> None:
    record = owned_by("alice")
    for change in ("notice", "on_hold", "resumed", "awaiting_capacity", "replied"):
        assert follow(record, changed(change, state=ItemState.ACCEPTED, agent="alice")) is record
