"""Outputs of the routing engine: what the service must persist and announce.

Every decision carries the full new record (never a diff) and a short reason, so the store can
upsert it as-is and the audit trail reads on its own.
"""

from __future__ import annotations

from msgspec import Struct

from core.model import AuditEntry, Offer, WorkItem


class Decision(Struct, frozen=True, gc=False, tag_field="decision", kw_only=True):
    at: float
    reason: str = ""


class OfferMade(Decision, tag="offer_made", frozen=True):
    offer: Offer
    item: WorkItem


class OfferEnded(Decision, tag="offer_ended", frozen=True):
    """The offer left `pending`: accepted, rejected, expired or rescinded (see offer.state)."""

    offer: Offer
    item: WorkItem


class ItemChanged(Decision, tag="item_changed", frozen=True):
    """`change` names what happened: queued, assigned, transferred, requeued, reclaimed,
    overflowed, notice, on_hold, resumed, awaiting_capacity, wrap_up, closed, cancelled,
    abandoned."""

    item: WorkItem
    change: str


class ItemUnroutable(Decision, tag="item_unroutable", frozen=True):
    """An arriving item that matches no queue; it is not kept."""

    item: WorkItem


class PresenceSet(Decision, tag="presence_set", frozen=True):
    """The router moved an agent to another presence (timeout presence state, logout)."""

    agent: str
    presence: str


AnyDecision = OfferMade | OfferEnded | ItemChanged | ItemUnroutable | PresenceSet


def audit_entry(d: AnyDecision) -> AuditEntry:
    if isinstance(d, OfferMade | OfferEnded):
        kind = "offer_made" if isinstance(d, OfferMade) else f"offer_{d.offer.state}"
        return AuditEntry(
            at=d.at,
            kind=kind,
            item=d.item.id,
            agent=d.offer.agent,
            offer=d.offer.id,
            reason=d.reason,
        )
    if isinstance(d, ItemChanged):
        return AuditEntry(
            at=d.at, kind=f"item_{d.change}", item=d.item.id, agent=d.item.agent, reason=d.reason
        )
    if isinstance(d, ItemUnroutable):
        return AuditEntry(at=d.at, kind="item_unroutable", item=d.item.id, reason=d.reason)
    return AuditEntry(at=d.at, kind="presence_set", agent=d.agent, reason=d.reason)
