"""How an interaction record follows its work item. Pure: no I/O, no clock, no await.

The record mirrors the item: who owns it, its state, its queue. `follow` works the record's
change out of a routing decision, so the routing step can commit the record in the same
transaction as the item (core/service/routing.py): on disk the two never disagree, not even
after a kill between two writes, because there is no second write.
"""

from __future__ import annotations

from dataclasses import dataclass

from msgspec.structs import replace

from core.model import InteractionRecord, InteractionState, ItemState, Participant
from core.routing.decisions import ItemChanged, ItemUnroutable

_CLOSED = {
    "closed": InteractionState.CLOSED_COMPLETE,
    "cancelled": InteractionState.CLOSED_ABANDONED,
    "abandoned": InteractionState.CLOSED_ABANDONED,
}


@dataclass(frozen=True, slots=True)
class RecordChange:
    """A record as committed with a routing step: `after` is `before` when the cause (say, a
    notice) leaves it as it was. `cause` is None for a change made outside routing (an
    invitation answered, a case linked), committed in turn with the steps."""

    cause: ItemChanged | ItemUnroutable | None
    before: InteractionRecord
    after: InteractionRecord


def current(record: InteractionRecord) -> list[str]:
    """The agents in the conversation now."""
    return [p.agent for p in record.participants if p.left_at is None]


def owner_of(record: InteractionRecord) -> str | None:
    for p in record.participants:
        if p.left_at is None and p.role == "owner":
            return p.agent
    return None


def follow(record: InteractionRecord, d: ItemChanged | ItemUnroutable) -> InteractionRecord:
    """The record after its item's change `d` (the same object if `d` does not touch it)."""
    if isinstance(d, ItemUnroutable):
        # No queue took the item: what the customer started is over before it began.
        return replace(record, state=InteractionState.CLOSED_ABANDONED, closed_at=d.at)
    item, now = d.item, d.at
    owner = owner_of(record)
    if d.change in ("assigned", "transferred") and item.agent:
        participants = [
            replace(p, left_at=now) if p.agent == owner and p.left_at is None else p
            for p in record.participants
            if not (p.agent == item.agent and p.left_at is None)
        ]
        participants.append(Participant(agent=item.agent, role="owner", joined_at=now))
        return replace(
            record,
            participants=tuple(participants),
            state=InteractionState.WORK_IN_PROGRESS,
            queue=item.queue,
        )
    if item.state == ItemState.QUEUED and owner is not None:
        # Requeued, reclaimed or transferred to a queue: the owner no longer holds it.
        left = tuple(
            replace(p, left_at=now) if p.left_at is None else p for p in record.participants
        )
        return replace(record, participants=left, state=InteractionState.NEW, queue=item.queue)
    if d.change == "wrap_up":
        return replace(record, state=InteractionState.WRAP_UP)
    if d.change in _CLOSED:
        return replace(record, state=_CLOSED[d.change], closed_at=now)
    if d.change in ("queued", "overflowed") and item.queue != record.queue:
        return replace(record, queue=item.queue)
    return record
