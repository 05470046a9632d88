"""Inputs to the routing engine. Each is a tagged Struct so the event log can be replayed."""

from __future__ import annotations

from msgspec import Struct

from core.model import Agent, WorkItem


class Event(Struct, frozen=True, gc=False, tag_field="event", kw_only=True):
    pass


class ItemArrived(Event, tag="item_arrived", frozen=True):
    item: WorkItem


class ItemCancelled(Event, tag="item_cancelled", frozen=True):
    """The customer withdrew: before acceptance the item is cancelled, after it the chat ends."""

    item: str
    reason: str = "customer left"


class OfferAccepted(Event, tag="offer_accepted", frozen=True):
    offer: str


class OfferRejected(Event, tag="offer_rejected", frozen=True):
    offer: str
    reason: str = ""


class OfferExpired(Event, tag="offer_expired", frozen=True):
    offer: str


class PresenceChanged(Event, tag="presence_changed", frozen=True):
    agent: str
    presence: str


class AgentLoggedOut(Event, tag="agent_logged_out", frozen=True):
    agent: str


class AgentDisconnected(Event, tag="agent_disconnected", frozen=True):
    """The agent's last console went away (its socket dropped; sessions may resume). Their
    pending offers are rescinded and they get no new ones until a console is attached again;
    their presence is kept, so a console back within seconds finds everything as it was."""

    agent: str


class AgentConnected(Event, tag="agent_connected", frozen=True):
    """A console of the agent is attached again (resume or new login): eligible again with the
    presence they had."""

    agent: str


class RejoinMissed(Event, tag="rejoin_missed", frozen=True):
    """A rebuilt engine's grace for the agent's console ran out with none attached: their
    pending offers are rescinded, as `AgentDisconnected` would have."""

    agent: str


class AgentUpdated(Event, tag="agent_updated", frozen=True):
    agent: Agent


class ChatEnded(Event, tag="chat_ended", frozen=True):
    item: str
    reason: str = "ended by agent"


class ItemClosed(Event, tag="item_closed", frozen=True):
    item: str


class WrapUpEnded(Event, tag="wrap_up_ended", frozen=True):
    item: str


class TransferToAgent(Event, tag="transfer_to_agent", frozen=True):
    item: str
    to_agent: str


class TransferToQueue(Event, tag="transfer_to_queue", frozen=True):
    item: str
    queue: str


class AgentReplied(Event, tag="agent_replied", frozen=True):
    item: str


class CustomerReplied(Event, tag="customer_replied", frozen=True):
    item: str


class MaxWaitReached(Event, tag="max_wait_reached", frozen=True):
    item: str


class FirstReplyMissed(Event, tag="first_reply_missed", frozen=True):
    item: str


class AbandonDue(Event, tag="abandon_due", frozen=True):
    item: str


# ---- a supervisor stepping in: each names who did it and why, for the audit trail


class ItemReassigned(Event, tag="item_reassigned", frozen=True):
    """A supervisor gives an open item straight to `to_agent` (themself: a take-over), with no
    offer to accept: whoever held it leaves it, and its pending offer is rescinded."""

    item: str
    to_agent: str
    by: str
    reason: str


class ItemMoved(Event, tag="item_moved", frozen=True):
    """A supervisor puts an open item in `queue`: whoever held it leaves it and is asked last,
    as a transfer to a queue does."""

    item: str
    queue: str
    by: str
    reason: str


class ItemClosedBy(Event, tag="item_closed_by", frozen=True):
    """A supervisor closes an open item at once, whatever its state: waiting, it is
    cancelled; held, it is closed without wrap-up."""

    item: str
    by: str
    reason: str


class PresenceForced(Event, tag="presence_forced", frozen=True):
    """A supervisor sets an agent's presence. Offline is a log-out (live chats go back to
    their queues), as the agent gone from the floor it is meant for."""

    agent: str
    presence: str
    by: str
    reason: str


AnyEvent = (
    ItemArrived
    | ItemCancelled
    | OfferAccepted
    | OfferRejected
    | OfferExpired
    | PresenceChanged
    | AgentLoggedOut
    | AgentDisconnected
    | AgentConnected
    | RejoinMissed
    | AgentUpdated
    | ChatEnded
    | ItemClosed
    | WrapUpEnded
    | TransferToAgent
    | TransferToQueue
    | AgentReplied
    | CustomerReplied
    | MaxWaitReached
    | FirstReplyMissed
    | AbandonDue
    | ItemReassigned
    | ItemMoved
    | ItemClosedBy
    | PresenceForced
)
