"""Customers: the widget's, REST integrations' and webhooks' side of a conversation.

A customer starts a work item (routed at once), writes into their own open conversation,
types, leaves, and reads their own transcript, open or closed: they see only what is theirs
(invariant 9). REST integrations start items under an idempotency key, so a retry after a lost
answer or a crash never makes a second one.

Writing into a closed conversation of one's own reopens it within its channel's
`reopen_window` (seconds after the close): the record is open again under a new work item,
routed with its last owner preferred, and the message joins the same transcript. The reopened
record is committed in the routing step that stores its item, so no crash leaves one without
the other. After the window the message starts a new conversation whose record names the closed
one in `previous`. Either way the message's `interaction` says where it landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from msgspec.structs import replace

from core.model import (
    CLOSED_INTERACTION_STATES,
    NUMBER_PREFIX,
    InteractionRecord,
    InteractionState,
    Message,
    SenderKind,
    WorkItem,
)
from core.protocol import InteractionEvent, TypingEvent
from core.routing import events as ev
from core.routing.decisions import ItemUnroutable
from core.routing.engine import RoutingError
from core.routing.records import owner_of
from core.service.conversations import Conversation, Conversations
from core.service.errors import InboxError
from core.service.floor import Floor
from core.service.numbers import NumberBlocks
from core.service.routing import RoutingService
from store.base import IdempotencyKey, Store, StoreConflict, StoreError

# How far back a message to a closed conversation looks for itself sent before (a retry).
RETRY_LOOKBACK = 50


class _Intake(NamedTuple):
    """What a new item asks of routing besides its attributes."""

    priority: int
    weight: int
    preferred_agent: str | None


@dataclass
class Customers:
    routing: RoutingService
    conversations: Conversations
    floor: Floor
    store: Store
    clock: Callable[[], float]
    # Told ("arrival", seconds): a start_conversation's way through the host, from the call to
    # its item's routing step committed and announced (the offer queued to its agent's socket).
    timed: Callable[[str, float], None]
    # A key -> [lock, requests using it], only while requests are: (scope, Idempotency-Key)
    # of item intake, an interaction's number while a message to it closed is placed.
    _turns: dict[Any, list[Any]] = field(default_factory=dict, init=False)
    _numbers: NumberBlocks = field(init=False)

    def __post_init__(self) -> None:
        self._numbers = NumberBlocks(self.store, NUMBER_PREFIX["interaction"])

    async def stop(self) -> None:
        await self._numbers.stop()

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, key: Any) -> AsyncIterator[None]:
        entry = self._turns.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._turns[key]

    async def start_conversation(
        self,
        *,
        channel: str,
        customer: str,
        customer_name: str = "",
        customer_contact: str = "",
        attributes: dict[str, str | int | float | bool] | None = None,
        priority: int = 0,
        weight: int | None = None,
        preferred_agent: str | None = None,
        created_by: str | None = None,
        idempotency: IdempotencyKey | None = None,
        previous: str | None = None,
        language: str = "",
    ) -> InteractionRecord:
        """A customer (widget, REST, webhook) starts a work item; it is routed at once.
        `weight` None: the channel's; `preferred_agent`: offered to them first when they fit.

        With `idempotency` (REST), the key is committed with the interaction; StoreConflict
        if another request stored it first (use start_conversation_once). `previous`: the
        closed interaction this one follows up; `language`: the customer's, for notices."""
        started = time.perf_counter()
        if channel not in self.conversations.channels:
            raise InboxError("unknown_channel", f"no service channel {channel!r}")
        intake = self._intake_of(channel, priority, weight, preferred_agent)
        try:
            # Refused before anything is stored: a refusal leaves no interaction behind.
            self.routing.router.check_intake(channel, intake.weight, preferred_agent)
        except RoutingError as e:
            raise InboxError(e.code, e.message) from e
        fields: dict[str, Any] = dict(
            number=await self._numbers.next(),
            item=f"W{secrets.token_hex(6)}",
            channel=channel,
            customer=customer,
            opened_at=self.clock(),
            customer_name=customer_name,
            customer_contact=customer_contact,
            created_by=created_by,
            previous=previous,
            language=language,
        )
        if idempotency is None:
            # Stored with its item's first routing step: one commit (core/service/numbers.py).
            record = InteractionRecord(**fields)
            conv = await self._route_new(
                record, attributes or {}, intake, opened_here=True, created=True
            )
        else:
            # The key first, in a commit of its own: a key stored meanwhile by another process
            # must fail this request alone, not a routing commit (which rebuilds the engine).
            record = await self.store.create_interaction(idempotency=idempotency, **fields)
            conv = await self._route_new(record, attributes or {}, intake, opened_here=True)
        # Besides the routing step: the number, the idempotency key's commit, the conversation
        # set up; the routing_step figure alone does not show what an arrival waits.
        self.timed("arrival", time.perf_counter() - started)
        return conv.record

    def _intake_of(
        self, channel: str, priority: int, weight: int | None, preferred_agent: str | None
    ) -> _Intake:
        if weight is None:
            weight = self.conversations.channels[channel].weight
        return _Intake(priority, weight, preferred_agent)

    async def _route_new(
        self,
        record: InteractionRecord,
        attributes: dict[str, str | int | float | bool],
        intake: _Intake,
        *,
        opened_here: bool = False,
        created: bool = False,
    ) -> Conversation:
        """Route the work item of an interaction whose item is not stored yet;
        `opened_here`: the interaction was created by this call, so it has no message yet;
        `created`: the interaction is not stored yet either: it is stored with the item."""
        conv = self.conversations.add(record, self.clock(), opened_here=opened_here)
        item = WorkItem(
            id=record.item,
            channel=record.channel,
            customer=record.customer,
            created_at=record.opened_at,
            attributes=attributes,
            priority=intake.priority,
            weight=intake.weight,
            preferred_agent=intake.preferred_agent,
            interaction=record.number,
        )
        try:
            decisions = await self.routing.submit(
                ev.ItemArrived(item=item), created=record if created else None
            )
        except RoutingError as e:
            self.conversations.forget(record.number)
            raise InboxError(e.code, e.message) from e
        except StoreError:
            # Nothing of the step was kept (fenced, the disk failing), nor a new interaction
            # with it; one stored before (under a REST key) a retry finds without its item
            # and routes, as after a crash.
            self.conversations.forget(record.number)
            raise
        unroutable = next((d for d in decisions if isinstance(d, ItemUnroutable)), None)
        if unroutable is not None:
            # The step stored the record closed_abandoned (core/routing/records.py).
            self.conversations.forget(record.number)
            raise InboxError("unroutable", unroutable.reason)
        return conv

    async def start_conversation_once(
        self, *, scope: str, key: str, fingerprint: str, **request: Any
    ) -> tuple[InteractionRecord, bool]:
        """start_conversation under a client's idempotency key: (record, replayed). `scope`
        is whose key it is (the calling token), `fingerprint` the request body's digest.

        A retry gets the interaction the key was first stored with (replayed=True). If the
        host died between committing that interaction and routing's commit of its item, the
        item was never stored and no restart knows of it: the retry routes it now, under its
        original id, with this request's body (the same, as the fingerprint says). The same
        key with another body is `idempotency_key_reused`. Requests with one key take turns,
        so two concurrent retries never route the same item twice; one that finds the key
        stored by another process as it commits is replayed too."""
        idempotency = IdempotencyKey(
            scope=scope, key=key, fingerprint=fingerprint, created_at=self.clock()
        )
        slot = (scope, key)
        async with self._one_at_a_time(slot):
            # The key's own time, as the store's insert uses: both agree on what expired.
            stored = await self.store.get_idempotency_key(*slot, idempotency.created_at)
            if stored is None:
                try:
                    record = await self.start_conversation(idempotency=idempotency, **request)
                    return record, False
                except StoreConflict:
                    # Another process stored the key meanwhile (a router deposed and its
                    # successor each serving a retry): this one is a retry of that one.
                    stored = await self.store.get_idempotency_key(*slot, idempotency.created_at)
                    if stored is None:
                        raise
            if stored.fingerprint != fingerprint:
                raise InboxError(
                    "idempotency_key_reused",
                    f"Idempotency-Key {key!r} was first used with another "
                    "request body; use a new key for a new item",
                )
            return await self._replay(stored.interaction, request), True

    async def _replay(self, number: str, request: dict[str, Any]) -> InteractionRecord:
        conv = self.conversations.open.get(number)
        if conv is not None:
            return conv.record
        record = await self.store.get_interaction(number)
        if record is None:
            raise RuntimeError(f"idempotency key of {number}, which is not stored")
        routed = record.item in self.routing.router.items
        if routed or await self.store.get_item(record.item) is not None:
            return record
        if record.state == InteractionState.CLOSED_ABANDONED:
            # What the first request was told: no queue took its item.
            raise InboxError("unroutable", f"no queue took the item of {number}")
        intake = self._intake_of(
            record.channel,
            request.get("priority", 0),
            request.get("weight"),
            request.get("preferred_agent"),
        )
        conv = await self._route_new(record, request.get("attributes") or {}, intake)
        return conv.record

    def customer_conversation(self, number: str, customer: str) -> Conversation:
        conv = self.conversations.open.get(number)
        if conv is None or conv.record.customer != customer:
            raise InboxError("not_found", f"no open conversation {number}")
        return conv

    async def customer_message(
        self, number: str, customer: str, body: str, client_msg_id: str
    ) -> tuple[Message, bool]:
        """Store a customer's message and pass it on. Into a closed conversation of theirs
        it reopens it or starts a follow-up (module docstring): the message's `interaction`
        is where it landed. Sending the same `client_msg_id` again stores nothing."""
        conv = self.conversations.open.get(number)
        if conv is None or conv.record.customer != customer:
            async with self._one_at_a_time(number):
                written = await self._written_again(number, customer, client_msg_id)
            if isinstance(written, Message):
                return written, True
            conv = written
        message, duplicate = await self.store.append_message(
            conv.record.number, SenderKind.CUSTOMER, customer, body, client_msg_id, self.clock()
        )
        if not duplicate:
            await self.conversations.delivered(conv, message)
            with contextlib.suppress(RoutingError):
                await self.routing.submit(ev.CustomerReplied(item=conv.item))
        return message, duplicate

    async def _written_again(
        self, number: str, customer: str, client_msg_id: str
    ) -> Conversation | Message:
        """The open conversation a message to `number`, not open here, goes to (reopened or
        a follow-up), or the message itself if it was stored already (a retry)."""
        conv = self.conversations.open.get(number)
        if conv is not None and conv.record.customer == customer:
            return conv  # reopened by the message this one waited for
        record = await self.store.get_interaction(number)
        if record is None or record.customer != customer:
            raise InboxError("not_found", f"no conversation {number}")
        if record.state not in CLOSED_INTERACTION_STATES:
            # Open in the store, not in memory: its item is being routed or was never stored.
            raise InboxError("not_found", f"no open conversation {number}")
        for m in await self.store.last_messages(number, limit=RETRY_LOOKBACK):
            if m.client_msg_id == client_msg_id and m.sender == customer:
                return m
        follow_up = next(
            (
                c
                for c in self.conversations.open.values()
                if c.record.previous == number and c.record.customer == customer
            ),
            None,
        )
        if follow_up is not None:
            return follow_up
        item = await self.store.get_item(record.item)
        attributes = dict(item.attributes) if item else {}
        priority = item.priority if item else 0
        weight = item.weight if item else None
        now = self.clock()
        window = self.conversations.channels[record.channel].reopen_window
        if now - (record.closed_at or record.opened_at) > window:
            created = await self.start_conversation(
                channel=record.channel,
                customer=customer,
                customer_name=record.customer_name,
                customer_contact=record.customer_contact,
                attributes=attributes,
                priority=priority,
                weight=weight,
                created_by=record.created_by,
                previous=number,
                language=record.language,
            )
            return self.customer_conversation(created.number, customer)
        reopened = replace(
            record,
            item=f"W{secrets.token_hex(6)}",
            state=InteractionState.NEW,
            closed_at=None,
            archived=False,
            # None: the item's queueing then changes the record, so the routing step commits
            # the reopened record with its item (core/service/routing.py writes changed ones).
            queue=None,
            participants=tuple(
                replace(p, left_at=now) if p.left_at is None else p for p in record.participants
            ),
        )
        owner = owner_of(record)
        if owner not in self.routing.router.agents:
            owner = None  # removed since: nobody to prefer
        intake = self._intake_of(record.channel, priority, weight, owner)
        conv = await self._route_new(reopened, attributes, intake)
        self.floor.push_customer(number, InteractionEvent(change="updated", record=conv.record))
        await self.conversations.system(conv, self.conversations.notice(record, "reopened"))
        return conv

    def customer_typing(self, number: str, customer: str) -> None:
        conv = self.customer_conversation(number, customer)
        event = TypingEvent(interaction=number, who=conv.record.customer_name or "Customer")
        self.floor.push_participants(conv.record, event)

    async def customer_left(self, number: str, customer: str) -> None:
        conv = self.customer_conversation(number, customer)
        await self.conversations.system(conv, "The customer left the chat")
        with contextlib.suppress(RoutingError):
            await self.routing.submit(ev.ItemCancelled(item=conv.item))

    async def customer_record(self, number: str, customer: str) -> InteractionRecord | None:
        """The customer's own interaction, open or closed; None for anyone else's."""
        conv = self.conversations.open.get(number)
        # Closed conversations leave the inbox's memory; the store keeps their record.
        record = conv.record if conv else await self.store.get_interaction(number)
        return record if record is not None and record.customer == customer else None

    async def customer_transcript(self, number: str, customer: str) -> list[Message]:
        if await self.customer_record(number, customer) is None:
            raise InboxError("not_found", f"no conversation {number}")
        conv = self.conversations.open.get(number)
        if conv is not None and conv.opened_here and not conv.noted:
            # A line is noted before it is sent to anyone, so a watcher attached now gets
            # every line from the live feed. Most widget chats start here: the read was
            # ~3 % of the host's CPU under load.
            return []
        return [
            m for m in await self.store.list_messages(number, limit=1000) if m.kind == "message"
        ]
