"""Who may see and change what (invariant 9), written once for every transport.

An agent reads an interaction they are or were a participant of, and changes an open one they
are in now; only its owner ends, closes or transfers it; an offer is answered only by the agent
it is pending for. An agent reads the routing audit trail of an item they were offered or whose
interaction they take or took part in. Supervisors see and change everything. What a customer
may see is core/service/customers.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.model import InteractionRecord
from core.routing.records import current, owner_of
from core.service.audit import ItemAudit, item_audit
from core.service.conversations import Conversation, Conversations
from core.service.errors import InboxError
from core.service.routing import RoutingService
from core.service.sessions import AgentSession
from store.base import Store


@dataclass
class Access:
    conversations: Conversations
    routing: RoutingService
    store: Store

    async def visible_record(
        self, agent: str | None, sees_all: bool, number: str
    ) -> InteractionRecord | None:
        """The interaction if the caller may read it: a participant, now or before, or
        someone who sees everything (supervisors)."""
        conv = self.conversations.open.get(number)
        # An open conversation's newest record is in memory; the store has the closed ones.
        record = conv.record if conv else await self.store.get_interaction(number)
        if record is None:
            return None
        if sees_all or any(p.agent == agent for p in record.participants):
            return record
        return None

    async def visible_audit(self, agent: str | None, sees_all: bool, ref: str) -> ItemAudit | None:
        """The routing audit trail of the item `ref` names (item id or interaction number) if
        the caller may read it; None for an item that is not there or not theirs alike, so
        the answer never confirms that someone else's item exists."""
        audit = await item_audit(self.store, ref)
        if audit is None or sees_all:
            return audit
        if agent is not None and any(e.agent == agent for e in audit.entries):
            return audit
        if audit.interaction is not None and await self.visible_record(
            agent, False, audit.interaction
        ):
            return audit
        return None

    async def readable(self, session: AgentSession, number: str) -> InteractionRecord:
        record = await self.visible_record(session.agent, session.supervisor, number)
        if record is None:
            raise InboxError("not_found", f"no interaction {number} visible to you")
        return record

    def writable(self, session: AgentSession, number: str) -> Conversation:
        conv = self.conversations.open.get(number)
        if conv is None or not (session.agent in current(conv.record) or session.supervisor):
            raise InboxError("not_found", f"no open interaction {number} of yours")
        return conv

    def owned(self, session: AgentSession, number: str) -> Conversation:
        conv = self.writable(session, number)
        if not session.supervisor and owner_of(conv.record) != session.agent:
            raise InboxError("not_owner", "only the agent who owns the chat can do that")
        return conv

    def accepted_before(self, session: AgentSession, offer_id: str) -> bool:
        """Whether the agent holds the offer's item by this very offer: an accept sent again
        (a console resending its unanswered commands after a reconnect, the first one
        committed before its host died) is answered as the first would have been."""
        router = self.routing.router
        item_id, _, made = offer_id.rpartition(".")
        item = router.items.get(item_id)
        return (
            offer_id not in router.offers
            and item is not None
            and item.agent == session.agent
            and str(item.offers_made) == made
        )

    def my_offer(self, session: AgentSession, offer_id: str) -> None:
        offer = self.routing.router.offers.get(offer_id)
        if offer is None or offer.agent != session.agent:
            raise InboxError(
                "offer_not_pending",
                f"offer {offer_id} is not pending for you (answered, expired or not yours)",
            )
