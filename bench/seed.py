"""Open conversations written straight into a store, for the scale and restart benches.

Driving 50,000 conversations open through the widget at 200 arrivals/s would take four minutes
of generator time before the measurement starts. The state a host then holds is the same as
this: per conversation an interaction record owned by an agent, its work item accepted by that
agent, and a customer line and an agent line. It is written through the store's own API (so
with its constraints), many writes at a time so the writer commits them in groups.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from pathlib import Path

from msgspec.structs import replace

from core.model import (
    InteractionState,
    ItemState,
    Participant,
    SenderKind,
    WorkItem,
)
from store import open_store
from store.base import Store

CHANNEL = "chat"
IN_FLIGHT = 2_000  # conversations written concurrently: one group commit holds many of them


async def _one(store: Store, agent: str, queue: str, n: int, now: float) -> None:
    item_id = f"S{secrets.token_hex(6)}"
    customer = f"seeded-{n:06d}"
    record = await store.create_interaction(
        item=item_id,
        channel=CHANNEL,
        customer=customer,
        opened_at=now,
        queue=queue,
        customer_name=customer,
    )
    await store.apply_routing(
        items=[
            WorkItem(
                id=item_id,
                channel=CHANNEL,
                customer=customer,
                created_at=now,
                state=ItemState.ACCEPTED,
                queue=queue,
                enqueued_at=now,
                agent=agent,
                offers_made=1,
                replied=True,
                interaction=record.number,
            )
        ]
    )
    owner = Participant(agent=agent, joined_at=now)
    await store.save_interaction(
        replace(record, participants=(owner,), state=InteractionState.WORK_IN_PROGRESS)
    )
    await store.append_message(
        record.number, SenderKind.CUSTOMER, customer, "Hello, I have a question", "c1", now
    )
    await store.append_message(
        record.number, SenderKind.AGENT, agent, "Hi, I'm looking into it", "a1", now
    )


async def seed_open_conversations(
    location: Path | str, agents: list[str], count: int, queue: str, per_agent: int
) -> float:
    """`count` open conversations spread round-robin over `agents`, at most `per_agent`
    each (their capacity must allow it), in the store at `location` (a data directory, or a
    postgresql:// URL: see store.open_store). Returns the seconds it took."""
    if count > len(agents) * per_agent:
        raise ValueError(f"{count} conversations do not fit {len(agents)} x {per_agent}")
    started = time.perf_counter()
    owners = itertools.cycle(agents)
    now = time.time()
    store = await open_store(location)
    try:
        for first in range(0, count, IN_FLIGHT):
            batch = range(first, min(count, first + IN_FLIGHT))
            await asyncio.gather(*(_one(store, next(owners), queue, n, now) for n in batch))
            print(f"  seeded {batch.stop}/{count} open conversations", flush=True)
    finally:
        await store.close()
    return time.perf_counter() - started
