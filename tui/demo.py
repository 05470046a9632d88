"""The embedded demo: the routing service and a real SQLite store in-process, with simulated
agents and customers, printing every routing decision and its reason.

Simulated people act only through the same events a real console or widget would send; when
their move no longer applies (the offer expired meanwhile) the refusal is simply part of the show.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from core.config import HostConfig, load_config
from core.model import ItemState, OfferKind, Role, SenderKind, WorkItem
from core.routing.decisions import (
    AnyDecision,
    ItemChanged,
    ItemUnroutable,
    OfferEnded,
    OfferMade,
    PresenceSet,
    audit_entry,
)
from core.routing.engine import RoutingError
from core.routing.events import (
    AgentReplied,
    AnyEvent,
    ChatEnded,
    CustomerReplied,
    ItemArrived,
    ItemClosed,
    OfferAccepted,
    OfferRejected,
    PresenceChanged,
)
from core.service import RoutingService
from store import Store, open_store

CUSTOMERS = ["Ana", "Bruno", "Chen", "Dara", "Elif", "Femi", "Gus", "Hana", "Ivo", "June"]


class Demo:
    def __init__(
        self,
        config: HostConfig,
        store: Store,
        out: TextIO,
        *,
        interval: float,
        seed: int,
    ) -> None:
        self.config = config
        self.store = store
        self.out = out
        self.interval = interval
        self.rng = random.Random(seed)
        self.service = RoutingService(config.routing_config(), store)
        self.service.listeners.append(self.on_decisions)
        self.interactions: dict[str, str] = {}
        self.counter = 0
        self.messages = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.agents = [a.id for a in config.agents if a.role != Role.ADMIN]

    # -- driving ----------------------------------------------------------------------------

    async def run(self, seconds: float | None) -> None:
        await self.service.start()
        timers = asyncio.create_task(self.service.run_timers())
        for agent in self.agents:
            await self.submit(PresenceChanged(agent=agent, presence="Available"))
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            while deadline is None or time.monotonic() < deadline:
                await self.arrive()
                await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.interval)
        except asyncio.CancelledError:
            pass  # Ctrl-C: stop arriving, then shut down as after a bounded run
        finally:
            timers.cancel()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(timers, *self.tasks, return_exceptions=True)

    def later(self, delay: float, event: AnyEvent) -> None:
        async def act() -> None:
            await asyncio.sleep(delay * self.interval / 2)
            await self.submit(event)

        task = asyncio.create_task(act())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def submit(self, event: AnyEvent) -> None:
        try:
            await self.service.submit(event)
        except RoutingError as e:
            self.say(f"{'':8} refused      {e.code}: {e.message}")

    async def arrive(self) -> None:
        self.counter += 1
        messaging = self.rng.random() < 0.25
        attributes: dict[str, str | int | float | bool] = {}
        if self.rng.random() < 0.25:
            attributes["language"] = "fr"
        if self.rng.random() < 0.2:
            attributes["tier"] = self.rng.choice(["gold", "platinum"])
        item = WorkItem(
            id=f"W{self.counter:05d}",
            channel="messaging" if messaging else "chat",
            customer=f"cust-{self.rng.randrange(1, 40):03d}",
            created_at=time.time(),
            attributes=attributes,
            priority=1 if attributes.get("tier") else 0,
        )
        await self.submit(ItemArrived(item=item))

    # -- the simulated people react to what the router decided ------------------------------

    async def on_decisions(self, decisions: list[AnyDecision]) -> None:
        for d in decisions:
            self.print_decision(d)
            if isinstance(d, OfferMade):
                roll = self.rng.random()
                if roll < 0.8:
                    self.later(self.rng.uniform(1, 5), OfferAccepted(offer=d.offer.id))
                elif roll < 0.9:
                    self.later(
                        self.rng.uniform(1, 5), OfferRejected(offer=d.offer.id, reason="busy")
                    )
                # else: the agent is not looking, and the offer will expire
            elif isinstance(d, ItemChanged):
                await self.on_item(d)
            elif isinstance(d, PresenceSet) and d.presence == "Away":
                self.later(
                    self.rng.uniform(15, 30), PresenceChanged(agent=d.agent, presence="Available")
                )

    async def on_item(self, d: ItemChanged) -> None:
        item = d.item
        if d.change == "assigned":
            record = await self.store.create_interaction(
                item=item.id,
                channel=item.channel,
                customer=item.customer,
                opened_at=time.time(),
                queue=item.queue,
                customer_name=self.rng.choice(CUSTOMERS),
            )
            self.interactions[item.id] = record.number
            await self.message(item, SenderKind.CUSTOMER, item.customer, "Hello, I need help.")
            self.later(self.rng.uniform(1, 4), AgentReplied(item=item.id))
        elif d.change in ("replied", "on_hold", "resumed") and item.agent:
            await self.message(item, SenderKind.AGENT, item.agent, "Happy to help, one moment.")
            if item.on_hold and self.rng.random() < 0.5:
                self.later(self.rng.uniform(4, 10), CustomerReplied(item=item.id))
            else:
                self.later(self.rng.uniform(6, 16), ChatEnded(item=item.id))
        elif d.change == "wrap_up":
            self.later(self.rng.uniform(1, 4), ItemClosed(item=item.id))

    async def message(self, item: WorkItem, kind: SenderKind, sender: str, body: str) -> None:
        number = self.interactions.get(item.id)
        if number is not None:
            self.messages += 1
            await self.store.append_message(
                number, kind, sender, body, f"demo-{self.messages}", time.time()
            )

    def print_decision(self, d: AnyDecision) -> None:
        e = audit_entry(d)
        if isinstance(d, OfferEnded) and d.offer.state == "accepted":
            return  # the "assigned" line that follows says the same
        if isinstance(d, ItemChanged) and d.item.state == ItemState.QUEUED and d.change == "queued":
            kind = "queued"
        elif isinstance(d, OfferMade):
            kind = "transfer" if d.offer.kind == OfferKind.TRANSFER else "offered"
        elif isinstance(d, ItemUnroutable):
            kind = "unroutable"
        else:
            kind = e.kind.removeprefix("item_").removeprefix("offer_")
        who = e.agent or ""
        self.say(f"{e.item or '':8} {kind:12} {who:8} {e.reason}")

    def say(self, line: str) -> None:
        self.out.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        self.out.flush()


async def run_demo(
    config_path: Path,
    *,
    seconds: float | None = None,
    interval: float = 2.0,
    seed: int = 7,
    out: TextIO = sys.stdout,
) -> Path:
    """Run the demo in a temporary data directory; returns that directory's path (removed)."""
    config = load_config(config_path)
    with tempfile.TemporaryDirectory(prefix="inbox-tui-demo-") as tmp:
        data = Path(tmp)
        store = await open_store(data)
        try:
            await store.upsert_channels(config.channels)
            await store.upsert_presence_states(config.presences)
            await store.upsert_queues(config.queues)
            await store.upsert_agents(config.agents)
            await store.upsert_templates(config.templates)
            out.write(
                f"inbox-tui demo: routing host in-process, data in {data} (removed at exit)\n"
                f"agents: {', '.join(a.id for a in config.agents)}; "
                f"a customer arrives about every {interval:g}s. Ctrl-C stops.\n"
            )
            demo = Demo(config, store, out, interval=interval, seed=seed)
            await demo.run(seconds)
            stats = store.stats
            out.write(
                f"stopped: {demo.counter} customers, {demo.messages} messages stored, "
                f"{stats.commits} commits, largest batch {stats.max_batch}\n"
            )
        finally:
            await store.close()
    return data
