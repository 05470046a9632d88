"""The application layer's routing step: the only place routing decisions become effects.

Order is the contract: the engine decides, the store commits the whole step in one transaction,
and only then do listeners hear of it. If the commit fails, the engine's in-memory state is
thrown away and rebuilt from the store, so memory never runs ahead of what is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from core.model import AgentStatus, Offer, WorkItem
from core.routing.decisions import (
    AnyDecision,
    ItemChanged,
    ItemUnroutable,
    OfferEnded,
    OfferMade,
    PresenceSet,
    audit_entry,
)
from core.routing.engine import Router, RoutingConfig
from core.routing.events import AnyEvent
from store.base import Store, StoreError

log = logging.getLogger("inbox_tui.routing")

Listener = Callable[[list[AnyDecision]], Awaitable[None] | None]


class RoutingService:
    def __init__(
        self,
        config: RoutingConfig,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.router = Router(config)
        self.listeners: list[Listener] = []
        # Metrics hook: called with (name, seconds) for each committed step; the host sets it.
        self.observe: Callable[[str, float], None] | None = None
        # One step at a time: the engine is not re-entrant across an await on the store.
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    async def start(self) -> list[AnyDecision]:
        """Rebuild from the store and route what fell due while the host was down."""
        await self._reload()
        async with self._lock:
            decisions = self.router.resume(self.clock())
            await self._commit(decisions)
        return decisions

    async def _reload(self) -> None:
        self.router = Router(
            self.config,
            statuses=await self.store.load_agent_statuses(),
            items=await self.store.load_open_items(),
            offers=await self.store.load_pending_offers(),
            last_served=await self.store.load_affinity(),
        )

    async def submit(self, event: AnyEvent) -> list[AnyDecision]:
        """Handle one event; returns after its decisions are committed and announced.
        Raises RoutingError (nothing changed) or StoreError (nothing kept)."""
        started = time.perf_counter()
        async with self._lock:
            decisions = self.router.handle(event, self.clock())
            await self._commit(decisions)
        self._wake.set()
        if self.observe is not None:
            self.observe("routing_step", time.perf_counter() - started)
        return decisions

    async def tick(self) -> list[AnyDecision]:
        async with self._lock:
            decisions = self.router.tick(self.clock())
            await self._commit(decisions)
        return decisions

    async def run_timers(self) -> None:
        """Sleep until the next deadline (or until an event may have armed an earlier one)."""
        while True:
            next_at = self.router.next_deadline()
            delay = 3600.0 if next_at is None else max(0.0, next_at - self.clock())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            try:
                await self.tick()
            except StoreError:
                log.exception("deadline step not stored; retrying after reload")

    async def _commit(self, decisions: list[AnyDecision]) -> None:
        if not decisions:
            return
        items: dict[str, WorkItem] = {}
        offers: dict[str, Offer] = {}
        agents: set[str] = set()
        # Decisions come in order, so the last record seen of each item or offer is the newest.
        for d in decisions:
            if isinstance(d, OfferMade | OfferEnded):
                items[d.item.id] = d.item
                offers[d.offer.id] = d.offer
                agents.add(d.offer.agent)
            elif isinstance(d, ItemChanged):
                items[d.item.id] = d.item
            elif isinstance(d, PresenceSet):
                agents.add(d.agent)
        statuses: list[AgentStatus] = [self.router.status[a] for a in sorted(agents)]
        try:
            await self.store.apply_routing(
                items=items.values(),
                offers=offers.values(),
                statuses=statuses,
                audit=[audit_entry(d) for d in decisions],
            )
            for customer, (agent, at) in self._served(decisions):
                await self.store.save_affinity(customer, agent, at)
        except StoreError:
            await self._reload()
            raise
        for d in decisions:
            if not isinstance(d, ItemUnroutable):
                log.info("%s", _log_line(d))
        for listener in self.listeners:
            result = listener(decisions)
            if result is not None:
                await result

    def _served(self, decisions: list[AnyDecision]) -> list[tuple[str, tuple[str, float]]]:
        out = []
        for d in decisions:
            if isinstance(d, ItemChanged) and d.change in ("assigned", "transferred"):
                served = self.router.last_served.get(d.item.customer)
                if served is not None:
                    out.append((d.item.customer, served))
        return out


def _log_line(d: Any) -> str:
    e = audit_entry(d)
    return (
        " ".join(
            f"{k}={v}"
            for k, v in (("kind", e.kind), ("item", e.item), ("agent", e.agent), ("offer", e.offer))
            if v
        )
        + f' reason="{e.reason}"'
    )
