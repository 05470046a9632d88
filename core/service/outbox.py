"""The outbox: agents' messages and conversation events out to the channel's provider.

Contract:
- A delivery is stored in the same store transaction as what it delivers: an agent's
  message's with the message (`for_message`, passed to Store.append_message), a conversation
  event's with the routing step that made it (`for_change`, RoutingService.deliveries).
- At least once: a delivery stays pending until its transport returns; a host killed while
  delivering finds it pending again at start. The receiver dedupes on `Delivery.id`.
- In order per conversation: only the oldest undelivered delivery of a conversation is tried;
  the next waits until it is sent or given up on (failed, `give_up_after` after it was
  enqueued). Other conversations do not wait for it.
- Retries back off exponentially, `backoff_base * 2**(attempts-1)` seconds capped at
  `backoff_cap`, less up to half of that at random so that a provider coming back is not hit
  by every conversation at once.
- Only the routing host delivers (core/host/app.py starts `run` in the router role): two hosts
  sending the same outbox would break the order.

Transports. A channel's delivery settings name one: "webhook" from its [channel.delivery],
"smtp" for an e-mail channel (core.config.settings TRANSPORTS lists them); the inbox gives the
Outbox one object per name:

    class Transport(Protocol):
        async def deliver(self, delivery: Delivery, settings: DeliverySettings) -> None: ...

`deliver` returns once the provider has taken the delivery and raises anything to have it
retried (its message is kept as the delivery's last_error). The webhook transport
(core/service/webhook.py) POSTs `payload(delivery)` signed with `sign`; the "smtp" one
(core/service/mail.py ReplyByMail) sends an e-mail channel's replies; each is a name in
TRANSPORTS and an entry of `Inbox.transports` (core/service/inbox.py).

Signatures. `sign` is HMAC-SHA256 over "<timestamp>.<body>" in lower-case hex, sent as
`X-Inbox-Signature: sha256=<hex>` with `X-Inbox-Timestamp` (Unix seconds) and
`X-Inbox-Delivery` (the id); `verify` checks the same on inbound REST intake.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from typing import Literal, Protocol

import msgspec
from msgspec.structs import replace

from core.config.settings import DeliverySettings
from core.model import Delivery, InteractionRecord, Message
from core.routing.decisions import ItemChanged
from core.routing.records import RecordChange
from store.base import Store, StoreError

log = logging.getLogger("inbox_tui.outbox")

SIGNATURE_HEADER = "X-Inbox-Signature"
TIMESTAMP_HEADER = "X-Inbox-Timestamp"
DELIVERY_HEADER = "X-Inbox-Delivery"
# A signed request older or newer than this is refused: a captured one cannot be replayed later.
SIGNATURE_TOLERANCE = 300.0
# Conversations whose next delivery is read per pass: the oldest first.
BATCH = 500
# How often the outbox looks for deliveries another host enqueued, in seconds.
POLL = 1.0
MAX_ERROR_CHARS = 500

OUTCOMES = ("sent", "retrying", "failed")


class Transport(Protocol):
    async def deliver(self, delivery: Delivery, settings: DeliverySettings) -> None:
        """Return once the provider has the delivery; raise to have it retried."""
        ...


def payload(delivery: Delivery) -> bytes:
    """The JSON body of a delivery, the same bytes on every try (docs/channels.md)."""
    fields = msgspec.to_builtins(delivery)
    for outbox_only in ("state", "attempts", "next_at", "last_error"):
        del fields[outbox_only]
    return msgspec.json.encode(fields)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: bytes, delivery_id: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = str(int(now))
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        DELIVERY_HEADER: delivery_id,
    }


def verify(secret: bytes, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
    """Why a signed request is refused, or None when its signature is good and fresh."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER, "")
    if not timestamp or not signature:
        return f"sign the request: {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required"
    if not timestamp.isdigit() or len(timestamp) > 12:
        return f"{TIMESTAMP_HEADER} must be Unix seconds"
    if abs(now - int(timestamp)) > SIGNATURE_TOLERANCE:
        return f"{TIMESTAMP_HEADER} is more than {SIGNATURE_TOLERANCE:g} seconds off"
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        return f"{SIGNATURE_HEADER} does not match the body"
    return None


def backoff(settings: DeliverySettings, attempts: int, rng: random.Random) -> float:
    delay = min(settings.backoff_cap, settings.backoff_base * 2 ** min(attempts - 1, 60))
    return delay - rng.uniform(0, delay / 2)


class Outbox:
    def __init__(
        self,
        store: Store,
        deliveries: Mapping[str, DeliverySettings],
        clock: Callable[[], float],
        on_change: Callable[[Delivery], None],
    ) -> None:
        self.store = store
        self.deliveries = deliveries
        self.clock = clock
        self.on_change = on_change
        # Outcome -> tries that ended so (/metrics); backlog: undelivered at the last pass.
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.backlog = 0
        self._wake = asyncio.Event()
        self._busy: set[str] = set()  # conversations with a try in flight
        self._tries: set[asyncio.Task[None]] = set()
        self._rng = random.Random()

    def for_message(self, record: InteractionRecord) -> Delivery | None:
        """The delivery to store with an agent's message, None when its channel sends none."""
        return self._new(record, "message")

    def for_change(self, change: RecordChange) -> Delivery | None:
        """The delivery of a conversation event, to commit with the routing step that made
        it (RoutingService.deliveries), None for a change the provider is not told of."""
        d = change.cause
        if not isinstance(d, ItemChanged):
            return None
        if d.change in ("assigned", "transferred") and d.item.agent:
            if d.change == "transferred":
                return self._new(change.after, "transferred", d.item.agent)
            return self._new(change.after, "assigned", d.item.agent)
        if d.change in ("closed", "cancelled", "abandoned"):
            return self._new(change.after, "closed")
        return None

    def _new(
        self,
        record: InteractionRecord,
        event: Literal["message", "assigned", "transferred", "closed"],
        agent: str = "",
    ) -> Delivery | None:
        settings = self.deliveries.get(record.channel)
        if settings is None or (settings.transport == "smtp" and event != "message"):
            return None  # no provider; or e-mail, which carries the agents' replies only
        return Delivery(
            id=uuid.uuid4().hex,
            channel=record.channel,
            conversation=record.number,
            event=event,
            created_at=self.clock(),
            agent=agent,
            queue=record.queue or "",
        )

    def wake(self) -> None:
        self._wake.set()

    def enqueued(self, delivery: Delivery, message: Message) -> None:
        """`delivery` was committed with `message`: the consoles hear it is pending (before the
        message's own event, which yields: the try may end before it), and it is tried soon."""
        self.on_change(replace(delivery, message=message))
        self.wake()

    async def run(self, transports: Mapping[str, Transport]) -> None:
        """Deliver until cancelled; a store that fails is tried again after POLL. Without a
        channel that delivers there is nothing to do, nor to poll the store for."""
        if not self.deliveries:
            return
        try:
            while True:
                self._wake.clear()
                try:
                    wait = await self._pass(transports)
                except StoreError as exc:
                    log.warning("outbox: %s", exc)
                    wait = POLL
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the cancellation
                # that stops the host when the wake comes at the same moment.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            for task in self._tries:
                task.cancel()

    async def _pass(self, transports: Mapping[str, Transport]) -> float:
        """Start a try of each conversation's oldest delivery that is due; returns how long
        until the next is due."""
        due = await self.store.due_deliveries(BATCH)
        self.backlog = await self.store.outbox_backlog()
        now, wait = self.clock(), POLL
        for delivery in due:
            if delivery.conversation in self._busy:
                continue
            if delivery.next_at > now:
                wait = min(wait, delivery.next_at - now)
                continue
            settings = self.deliveries.get(delivery.channel)
            transport = transports.get(settings.transport) if settings else None
            if settings is None or transport is None:
                # Its channel's delivery was taken out of the config: it waits until put back.
                continue
            self._busy.add(delivery.conversation)
            task = asyncio.create_task(self._try(delivery, settings, transport))
            self._tries.add(task)
            task.add_done_callback(self._tries.discard)
        return max(wait, 0.0)

    async def _try(
        self, delivery: Delivery, settings: DeliverySettings, transport: Transport
    ) -> None:
        try:
            try:
                async with asyncio.timeout(settings.timeout):
                    await transport.deliver(delivery, settings)
            except Exception as exc:
                attempts = delivery.attempts + 1
                now = self.clock()
                error = (str(exc) or type(exc).__name__)[:MAX_ERROR_CHARS]
                if now - delivery.created_at >= settings.give_up_after:
                    done = replace(delivery, state="failed", attempts=attempts, last_error=error)
                else:
                    done = replace(
                        delivery,
                        state="retrying",
                        attempts=attempts,
                        next_at=now + backoff(settings, attempts, self._rng),
                        last_error=error,
                    )
                log.info("delivery %s of %s: %s", delivery.id, delivery.conversation, error)
            else:
                done = replace(delivery, state="sent", attempts=delivery.attempts + 1)
            await self.store.save_delivery(done)
            self.outcomes[done.state] += 1
            if done.state != delivery.state:
                self.on_change(done)
        except StoreError as exc:
            # Not saved: it is still pending in the store and is tried again.
            log.warning("outbox: %s", exc)
        finally:
            self._busy.discard(delivery.conversation)
            self.wake()
