"""The application layer's routing step: the only place routing decisions become effects.

Order is the contract: the engine decides, the store commits the step, and only then do
listeners hear of it. If a commit fails, the engine's in-memory state is thrown away and rebuilt
from the store, so memory never runs ahead of what is durable.

The interaction records follow their work items (core/routing/records.py) in the same
transaction: a step that stores an item accepted stores its record owned, or neither is kept;
a new conversation's record is created in its item's first step.
Open records therefore have this one writer: a change to one from elsewhere (an invitation
answered, a case linked) is `amend`ed in turn with the steps, so no change overwrites another.

The engine's step is pure CPU; the commit is an fsync. Steps therefore do not wait for each
other's fsync: while one commit is in flight, the next steps are decided in memory and wait to
be committed together in the next one (at most one routing commit is in flight, so a failed
commit fails every step decided after it too, and nothing decided on top of a lost step is ever
stored). Listeners are called in commit order and must not block: work they need to await is
returned, and the submitter of the step waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.model import (
    Agent,
    AgentStatus,
    AuditEntry,
    Delivery,
    InteractionRecord,
    Message,
    Offer,
    SenderKind,
    WorkItem,
)
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
from core.routing.events import (
    AgentConnected,
    AgentDisconnected,
    AgentReplied,
    AgentUpdated,
    AnyEvent,
)
from core.routing.records import RecordChange, follow
from store.base import Store, StoreError, StoreFenced, StoreUnavailable

log = logging.getLogger("inbox_tui.routing")


@dataclass(frozen=True, slots=True)
class Step:
    """A routing step as committed: the engine's decisions, and the records that changed with
    them (and any amendment) in the same transaction, in order."""

    decisions: list[AnyDecision]
    records: list[RecordChange]
    # The system lines stored with the step ("Alice joined"), by the index of their change.
    lines: Mapping[int, Message]


Listener = Callable[[Step], Awaitable[Any] | None]
Edit = Callable[[InteractionRecord], InteractionRecord]


class OpenRecords(Protocol):
    """Where the open interaction records live (the inbox's conversations)."""

    def open_record(self, number: str) -> InteractionRecord | None:
        """The committed record of an open interaction; None once it is done with, or unknown."""
        ...

    def record_committed(self, record: InteractionRecord) -> None:
        """The record as just committed; called before the step's listeners."""
        ...


@dataclass
class _Step:
    decisions: list[AnyDecision]
    edit: tuple[str, Edit] | None = None  # an amendment: (record number, change)
    created: InteractionRecord | None = None  # a new interaction, stored with this step
    records: list[RecordChange] = field(default_factory=list)  # worked out at commit
    lines: dict[int, Message] = field(default_factory=dict)  # as stored, by change index
    committed: asyncio.Future[list[Awaitable[Any]]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class RoutingService:
    def __init__(
        self,
        config: RoutingConfig,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        records: OpenRecords | None = None,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        # Whose records follow the items (the inbox's conversations); None: no records.
        self.records = records
        # What the outbox sends of a record change (core/service/outbox.py), committed with it.
        self.deliveries: Callable[[RecordChange], Delivery | None] = lambda change: None
        # The transcript's system line of a record change (core/service/records.py), committed
        # with it: a line of its own after the step was a second commit and fsync.
        self.lines: Callable[[RecordChange], Message | None] = lambda change: None
        self.router = Router(config)
        self.listeners: list[Listener] = []
        # Told ("routing_step", seconds) of each submitted step, decision and commit included.
        self.observe = observe
        self._wake = asyncio.Event()
        # The deadline run_timers sleeps until (None: none armed). A step wakes it only if it
        # armed an earlier one: most steps (an accept, an end) arm nothing sooner, and waking
        # the loop for each, to find nothing due, was a new timer and wait per routing step.
        self._sleeping_until: float | None = None
        self._decided: list[_Step] = []  # decided in memory, not yet handed to the store
        self._committer: asyncio.Task[None] | None = None
        self._reloading: asyncio.Future[None] | None = None
        # Who has no console attached, asked at every rebuild: connection is a fact of the
        # running host, not stored. The inbox sets it; without it, everyone counts as attached.
        self.detached_agents: Callable[[], Iterable[str]] = tuple
        # CPU seconds the engine spent deciding (/metrics: what routing costs of the host).
        self.engine_cpu_seconds = 0.0

    async def start(self, stored: Awaitable[StoredRouting] | None = None) -> list[AnyDecision]:
        """Rebuild from the store (from `stored`, its reads made ahead: `read_routing`) and
        route what fell due while the host was down."""
        self._rebuild(await (stored or read_routing(self.store)))
        now = self.clock()
        decisions: list[AnyDecision] = []
        # A first reply stored whose routing step was not (its host died, or was deposed,
        # between the two): the chat is answered, and must not be taken back from its agent.
        for item in await self._replied_unrouted():
            decisions += self.router.handle(AgentReplied(item=item), now)
        decisions += self.router.resume(now)
        await self._settle(self._decide(decisions))
        return decisions

    async def _replied_unrouted(self) -> list[str]:
        """The live chats awaiting their first reply whose owner's reply is stored. A few
        seconds' arrivals at most: read side by side, as many at once as a read pool holds."""
        waiting = [
            i
            for i in self.router.items.values()
            if i.reply_by is not None and not i.replied and i.interaction and i.agent
        ]
        reads = asyncio.Semaphore(8)

        async def answered(item: WorkItem) -> bool:
            assert item.interaction is not None
            async with reads:
                recent = await self.store.last_messages(item.interaction, limit=50)
            return any(
                m.sender_kind == SenderKind.AGENT and m.sender == item.agent and m.kind == "message"
                for m in recent
            )

        found = await asyncio.gather(*(answered(item) for item in waiting))
        return [item.id for item, yes in zip(waiting, found, strict=True) if yes]

    async def _reload(self) -> None:
        self._rebuild(await read_routing(self.store))

    def _rebuild(self, stored: StoredRouting) -> None:
        self.router = stored.router(self.config, self.detached_agents)
        self._wake.set()  # the rebuilt engine's deadlines: run_timers sleeps until the old ones

    async def update_agent(self, agent: Agent) -> list[AnyDecision]:
        """An agent added or changed while the host runs (`inbox-tui admin`). The config
        keeps it too, so a rebuild after a failed commit does not forget it."""
        others = tuple(a for a in self.config.agents if a.id != agent.id)
        self.config = dataclasses.replace(self.config, agents=(*others, agent))
        return await self.submit(AgentUpdated(agent=agent))

    async def submit(
        self, event: AnyEvent, *, created: InteractionRecord | None = None
    ) -> list[AnyDecision]:
        """Handle one event; returns after its decisions are committed and announced.
        Raises RoutingError (nothing changed) or StoreError (nothing kept).

        `created`: a new interaction (numbered by `Store.reserve_numbers`, known to `records`
        already) that the event's item belongs to, stored in the same commit."""
        started = time.perf_counter()
        while self._reloading is not None:
            await asyncio.shield(self._reloading)
        decisions = self._handle(event)
        self._rearm()
        await self._settle(self._decide(decisions, created))
        if self.observe is not None:
            self.observe("routing_step", time.perf_counter() - started)
        return decisions

    def post(self, event: AgentConnected | AgentDisconnected) -> None:
        """A console came or went: decided now, committed and announced in the background
        (nobody waits for an answer, and a socket's teardown cannot wait for an fsync).
        During a rebuild the event is dropped: the rebuilt engine asks `detached_agents`."""
        if self._reloading is not None:
            return
        step = self._decide(self._handle(event))
        self._rearm()
        if step is not None:
            step.committed.add_done_callback(_consume)

    async def amend(self, number: str, edit: Edit) -> InteractionRecord | None:
        """Change an open interaction record outside routing; returns the record as committed,
        or None if it is not open (any more). `edit` is applied to the newest record when the
        change's turn comes, so it must be a pure function of the record."""
        if self._committed_record(number) is None:
            return None
        step = _Step([], edit=(number, edit))
        self._queue(step)
        await self._settle(step)
        return step.records[-1].after if step.records else None

    async def drain(self) -> None:
        """Wait until every step decided so far is stored (or failed): a host stopping must
        not close the store under the commit of a console's departure."""
        while self._committer is not None and not self._committer.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._committer)

    async def tick(self) -> list[AnyDecision]:
        while self._reloading is not None:
            await asyncio.shield(self._reloading)
        started = time.thread_time()
        decisions = self.router.tick(self.clock())
        self.engine_cpu_seconds += time.thread_time() - started
        await self._settle(self._decide(decisions))
        return decisions

    async def run_timers(self) -> None:
        """Sleep until the next deadline (or until an event may have armed an earlier one)."""
        while True:
            next_at = self._sleeping_until = self.router.next_deadline()
            delay = 3600.0 if next_at is None else max(0.0, next_at - self.clock())
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that comes as
            # the wake-up does (a console attaching as the host stops), and the loop ran on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            try:
                await self.tick()
            except StoreFenced as e:
                # Another process routes now and fires the deadlines: this one is done.
                log.warning("event=timers_stopped reason=fenced error=%s", e)
                return
            except StoreUnavailable as e:
                # The database or the way to it failed (its message says how), not this code:
                # one line, as the API and the sockets log it.
                log.error("event=deadline_step_not_stored error=%s; retrying after reload", e)
            except StoreError:
                log.exception("deadline step not stored; retrying after reload")

    def _rearm(self) -> None:
        next_at = self.router.next_deadline()
        if next_at is not None and (self._sleeping_until is None or next_at < self._sleeping_until):
            self._wake.set()

    def _handle(self, event: AnyEvent) -> list[AnyDecision]:
        started = time.thread_time()
        try:
            return self.router.handle(event, self.clock())
        finally:
            self.engine_cpu_seconds += time.thread_time() - started

    def _decide(
        self, decisions: list[AnyDecision], created: InteractionRecord | None = None
    ) -> _Step | None:
        if not decisions and created is None:
            return None
        step = _Step(decisions, created=created)
        self._queue(step)
        return step

    def _queue(self, step: _Step) -> None:
        self._decided.append(step)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(self._commit_loop())

    @staticmethod
    async def _settle(step: _Step | None) -> None:
        if step is not None:
            for work in await step.committed:
                # Shielded: a submitter that gives up must not cancel the announcement.
                await asyncio.shield(work)

    async def _commit_loop(self) -> None:
        while self._decided:
            group, self._decided = self._decided, []
            try:
                await self._commit(group)
            except Exception as exc:
                if not isinstance(exc, StoreError):
                    log.exception("committing routing decisions failed")
                # Steps decided since were built on the lost ones: they go too, and the engine
                # restarts from what is durable.
                failed, self._decided = [*group, *self._decided], []
                self._reloading = asyncio.get_running_loop().create_future()
                try:
                    await self._reload()
                except StoreError:
                    log.exception("reloading the routing state failed")
                finally:
                    self._reloading.set_result(None)
                    self._reloading = None
                for step in failed:
                    step.committed.set_exception(exc)
                continue
            for step in group:
                try:
                    work = self._announce(step)
                except Exception as exc:
                    # A listener's bug fails its own step, never the steps after it.
                    log.exception("a routing listener failed")
                    step.committed.set_exception(exc)
                else:
                    step.committed.set_result(work)

    def _announce(self, step: _Step) -> list[Awaitable[Any]]:
        if self.records is not None:
            for change in step.records:
                if change.after is not change.before:
                    self.records.record_committed(change.after)
        # At debug only: a line per decision was ~5 % of the host's CPU under load, and the
        # store's audit trail has every decision with its reason anyway.
        if log.isEnabledFor(logging.DEBUG):
            for d in step.decisions:
                if not isinstance(d, ItemUnroutable):
                    log.debug("%s", _log_line(d))
        committed = Step(step.decisions, step.records, step.lines)
        work = []
        for listener in self.listeners:
            result = listener(committed)
            if result is not None:
                work.append(result)
        return work

    def _follow(self, step: _Step, newest: dict[str, InteractionRecord]) -> list[RecordChange]:
        """The step's record changes, each worked out from the newest record: the committed
        one, or the one an earlier step of this commit left in `newest` (updated here)."""
        changes = []
        for d in step.decisions:
            if isinstance(d, ItemChanged | ItemUnroutable) and d.item.interaction:
                before = newest.get(d.item.interaction) or self._committed_record(
                    d.item.interaction
                )
                if before is not None:
                    changes.append(RecordChange(d, before, follow(before, d)))
                    newest[before.number] = changes[-1].after
        if step.edit is not None:
            number, edit = step.edit
            before = newest.get(number) or self._committed_record(number)
            if before is not None:
                changes.append(RecordChange(None, before, edit(before)))
                newest[number] = changes[-1].after
        return changes

    def _line_of(self, change: RecordChange) -> Message | None:
        # A bug in a line's text costs that line, not the commit of every step with it (and
        # the reload and retry after it, which would fail the same way).
        try:
            return self.lines(change)
        except Exception:
            log.exception("working out a system line failed; the step is stored without it")
            return None

    def _committed_record(self, number: str) -> InteractionRecord | None:
        return None if self.records is None else self.records.open_record(number)

    async def _commit(self, group: list[_Step]) -> None:
        newest: dict[str, InteractionRecord] = {}
        for step in group:
            step.records = self._follow(step, newest)
        created = {s.created.number: s.created for s in group if s.created is not None}
        changed = [
            r
            for r in newest.values()
            if r.number in created or r is not self._committed_record(r.number)
        ]
        changed += [r for number, r in created.items() if number not in newest]
        decisions = [d for step in group for d in step.decisions]
        if not decisions and not changed:
            return  # only amendments, of records closed meanwhile
        deliveries = [
            delivery
            for step in group
            for change in step.records
            if (delivery := self.deliveries(change)) is not None
        ]
        lines = [
            (step, i, line)
            for step in group
            for i, change in enumerate(step.records)
            if (line := self._line_of(change)) is not None
        ]
        stored = await routing_write(decisions, self.router.status).commit(
            self.store,
            changed,
            deliveries,
            created=tuple(created),
            lines=[line for _, _, line in lines],
        )
        for (step, i, _), line in zip(lines, stored, strict=True):
            step.lines[i] = line


@dataclass(frozen=True, slots=True)
class StoredRouting:
    """What the store holds of routing: an engine is rebuilt from it (a host's start, a
    takeover, the reload after a failed commit)."""

    statuses: list[AgentStatus]
    items: list[WorkItem]
    offers: list[Offer]
    last_served: dict[str, tuple[str, float]]

    def router(self, config: RoutingConfig, detached: Callable[[], Iterable[str]]) -> Router:
        """`detached` is asked now, after the reads: the engine starts from the consoles of
        now."""
        return Router(
            config,
            statuses=self.statuses,
            items=self.items,
            offers=self.offers,
            last_served=self.last_served,
            detached=detached(),
        )


async def read_routing(store: Store) -> StoredRouting:
    """The four reads side by side: on PostgreSQL each has a connection of the read pool, so
    the server answers one while this process decodes another."""
    statuses, items, offers, last_served = await asyncio.gather(
        store.load_agent_statuses(),
        store.load_open_items(),
        store.load_pending_offers(),
        store.load_affinity(),
    )
    return StoredRouting(statuses, items, offers, last_served)


@dataclass(frozen=True, slots=True)
class RoutingWrite:
    """What a run of routing decisions changes in the store: one `apply_routing` call."""

    items: list[WorkItem]
    offers: list[Offer]
    statuses: list[AgentStatus]
    audit: list[AuditEntry]
    affinity: dict[str, tuple[str, float]]

    async def commit(
        self,
        store: Store,
        interactions: Iterable[InteractionRecord] = (),
        deliveries: Iterable[Delivery] = (),
        created: Collection[str] = (),
        lines: Sequence[Message] = (),
    ) -> list[Message]:
        """Store it all-or-nothing, with the interaction records that follow the items (those
        numbered in `created` new to the store), the outbox's deliveries of their changes and
        their system lines; returns the lines as stored."""
        return await store.apply_routing(
            items=self.items,
            offers=self.offers,
            statuses=self.statuses,
            audit=self.audit,
            affinity=self.affinity,
            interactions=interactions,
            deliveries=deliveries,
            created=created,
            lines=lines,
        )


def routing_write(
    decisions: Sequence[AnyDecision], status: Mapping[str, AgentStatus]
) -> RoutingWrite:
    """The store's write for `decisions` (in the order decided): the newest record of every
    item and offer they carry, the status (from `status`, the engine's now) of every agent
    they touch, their audit entries, and who served each customer last."""
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
    # customer -> (agent, when) for every assignment, the newest winning.
    served = {
        d.item.customer: (d.item.agent, d.at)
        for d in decisions
        if isinstance(d, ItemChanged)
        and d.change in ("assigned", "transferred")
        and d.item.agent is not None
    }
    return RoutingWrite(
        items=list(items.values()),
        offers=list(offers.values()),
        statuses=[status[a] for a in sorted(agents)],
        audit=[audit_entry(d) for d in decisions],
        affinity=served,
    )


def _consume(committed: asyncio.Future[list[Awaitable[Any]]]) -> None:
    # A posted step has no submitter to hear of a failed commit: the reload is the answer.
    if not committed.cancelled() and committed.exception() is not None:
        log.warning("a console step was not stored: %s", committed.exception())


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
