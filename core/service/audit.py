"""Why did this go to that agent? One work item's routing audit trail, on demand.

The router stores every decision with its reason as it commits it (store `apply_routing`);
this reads them back for one item, named by its id or by its interaction's number. The same
read serves the agent protocol, the REST API and `inbox-tui admin audit`; who may read which
trail is core/service/access.py's (invariant 9).
"""

from __future__ import annotations

from msgspec import Struct

from core.model import AuditEntry
from store.base import Store

# The newest entries of a trail: an item bounced between agents for days stays readable.
MAX_AUDIT_ENTRIES = 500


class ItemAudit(Struct, frozen=True, kw_only=True):
    """One work item's routing decisions, oldest first (its newest MAX_AUDIT_ENTRIES)."""

    item: str
    interaction: str | None
    entries: list[AuditEntry]


async def item_audit(store: Store, ref: str) -> ItemAudit | None:
    """The trail of the item `ref` names (an item id or an interaction number), or None when
    it names neither."""
    record = await store.get_interaction(ref)
    item = None if record is not None else await store.get_item(ref)
    item_id = record.item if record is not None else ref
    number = record.number if record is not None else item.interaction if item else None
    entries = await store.audit_trail(item_id, MAX_AUDIT_ENTRIES)
    # An unroutable item is not kept, but its one decision is.
    if record is None and item is None and not entries:
        return None
    return ItemAudit(item=item_id, interaction=number, entries=entries)
