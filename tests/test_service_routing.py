"""The routing step end to end on a real SQLite file: decisions are durable before anyone hears
of them, the audit trail is kept, a restarted service re-arms what was pending, and a new
conversation's record is stored with its item's first step."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from core.model import (
    Agent,
    ChannelMode,
    InteractionRecord,
    InteractionState,
    ItemState,
    Message,
    OfferState,
    Participant,
    PresenceState,
    Queue,
    ServiceChannel,
    WorkItem,
    format_number,
)
from core.routing.decisions import OfferMade
from core.routing.engine import RoutingConfig, RoutingError
from core.routing.events import ItemArrived, OfferAccepted, PresenceChanged
from core.service import RoutingService, numbers
from core.service.inbox import _log_failure as inbox_log_failure
from core.service.routing import Step
from store import Store, StoreFenced, open_store
from store.base import StoreClosed, StoreConflict, StoreError, StoreUnavailable
from tests.hosting import running_host
from tests.store_helpers import audit_trail, offers_of

CONFIG = RoutingConfig(
    channels=[ServiceChannel(name="chat", mode=ChannelMode.SYNC)],
    presences=[
        PresenceState(name="Available", channels=("chat",)),
        PresenceState(name="Away"),
        PresenceState(name="Offline"),
    ],
    queues=[Queue(name="general", channel="chat", offer_timeout=30.0, timeout_presence="Away")],
    agents=[Agent(id="alice", capacity={"chat": 2}), Agent(id="bob", capacity={"chat": 2})],
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def offered_to_alice(tmp_path: Path) -> tuple[Clock, Store, RoutingService]:
    """A routing service on a SQLite store, with item W1 offered to alice."""
    clock = Clock()
    store = await open_store(tmp_path)
    service = RoutingService(CONFIG, store, clock=clock)
    await service.start()
    await service.submit(PresenceChanged(agent="alice", presence="Available"))
    await service.submit(
        ItemArrived(item=WorkItem(id="W1", channel="chat", customer="c1", created_at=clock.now))
    )
    return clock, store, service


async def test_decisions_are_committed_before_listeners_hear_of_them(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    clock = Clock()
    service = RoutingService(CONFIG, store, clock=clock)
    await service.start()
    seen_in_store: list[str] = []

    async def listener(step: Step) -> None:
        for d in step.decisions:
            if isinstance(d, OfferMade):
                stored = await offers_of(store, d.item.id)
                seen_in_store.extend(o.id for o in stored if o.state == OfferState.PENDING)

    service.listeners.append(listener)
    await service.submit(PresenceChanged(agent="alice", presence="Available"))
    item = WorkItem(id="W1", channel="chat", customer="c1", created_at=clock.now)
    await service.submit(ItemArrived(item=item))
    assert seen_in_store == ["W1.1"]
    audit = await audit_trail(store, "W1")
    assert [e.kind for e in audit] == ["item_queued", "offer_made"]
    assert audit[1].reason.startswith("offered to alice: most_capacity 2 free")
    await store.close()


async def test_steps_decided_together_commit_together_and_a_broken_listener_fails_only_its_own(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path)
    service = RoutingService(CONFIG, store, clock=Clock())
    await service.start()
    calls: list[int] = []

    def listener(step: Step) -> None:
        calls.append(len(step.decisions))
        if len(calls) == 1:
            raise RuntimeError("a listener's bug")

    service.listeners.append(listener)
    # Both steps are decided before the first commit lands, so they share one transaction.
    commits = store.stats.commits
    async with asyncio.timeout(10):  # a stranded step would wait forever
        first, second = await asyncio.gather(
            service.submit(PresenceChanged(agent="alice", presence="Available")),
            service.submit(PresenceChanged(agent="bob", presence="Available")),
            return_exceptions=True,
        )
    assert isinstance(first, RuntimeError) and isinstance(second, list)
    assert store.stats.commits == commits + 1
    assert {s.agent: s.presence for s in await store.load_agent_statuses()} == {
        "alice": "Available",
        "bob": "Available",
    }
    await store.close()


async def test_refused_event_stores_nothing(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    service = RoutingService(CONFIG, store, clock=Clock())
    await service.start()
    commits = store.stats.commits
    with pytest.raises(RoutingError):
        await service.submit(OfferAccepted(offer="W9.1"))
    assert store.stats.commits == commits
    await store.close()


@contextlib.asynccontextmanager
async def timers_running(service: RoutingService) -> AsyncIterator[None]:
    timers = asyncio.create_task(service.run_timers())
    try:
        yield
    finally:
        timers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await timers


async def test_a_step_that_arms_an_earlier_deadline_wakes_the_sleeping_timers(
    tmp_path: Path,
) -> None:
    quick = dataclasses.replace(CONFIG, queues=[replace(CONFIG.queues[0], offer_timeout=0.2)])
    store = await open_store(tmp_path)
    service = RoutingService(quick, store)  # the real clock: the timers sleep for real
    await service.start()
    async with timers_running(service):
        await service.submit(PresenceChanged(agent="alice", presence="Available"))
        await asyncio.sleep(0.05)  # the timers asleep with nothing armed: for an hour
        item = WorkItem(id="W1", channel="chat", customer="c1", created_at=time.time())
        await service.submit(ItemArrived(item=item))
        async with asyncio.timeout(5):
            while (await offers_of(store, "W1"))[0].state != OfferState.EXPIRED:
                await asyncio.sleep(0.02)
    await store.close()


async def test_a_step_that_arms_no_earlier_deadline_leaves_the_timers_asleep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(tmp_path)
    service = RoutingService(CONFIG, store)
    await service.start()
    await service.submit(PresenceChanged(agent="alice", presence="Available"))
    await service.submit(
        ItemArrived(item=WorkItem(id="W1", channel="chat", customer="c1", created_at=time.time()))
    )
    ticks = 0
    tick = service.tick

    async def counted() -> list[Any]:
        nonlocal ticks
        ticks += 1
        return await tick()

    monkeypatch.setattr(service, "tick", counted)
    async with timers_running(service):
        await asyncio.sleep(0.05)  # asleep until W1's offer expires, 30 s from now
        await service.submit(PresenceChanged(agent="bob", presence="Available"))
        arrival = WorkItem(id="W2", channel="chat", customer="c2", created_at=time.time())
        await service.submit(ItemArrived(item=arrival))
        await asyncio.sleep(0.05)
    assert [o.state for o in await offers_of(store, "W2")] == [OfferState.PENDING]
    assert ticks == 0  # W2's offer expires after W1's: nothing new to wake for
    await store.close()


async def test_a_fenced_deadline_step_stops_the_timers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A host that lost the routing role (its steps fenced) leaves the deadlines to the host
    that routes now: its timer loop ends at the first fenced step, rather than reloading and
    retrying in a loop until the service stops, a traceback each time."""
    clock, store, service = await offered_to_alice(tmp_path)
    tries = 0

    async def fenced(**records: object) -> None:
        nonlocal tries
        tries += 1
        raise StoreFenced("routing epoch 1 was superseded by epoch 2")

    monkeypatch.setattr(store, "apply_routing", fenced)
    clock.now += 60  # the offer's deadline has passed: the timer steps at once
    timers = asyncio.create_task(service.run_timers())
    await asyncio.wait({timers}, timeout=5)
    timers.cancel()
    assert tries == 1, f"the timers went on after a fenced step: {tries} tries"
    assert "event=timers_stopped reason=fenced" in caplog.text
    assert "Traceback" not in caplog.text
    await store.close()


async def test_a_deadline_step_the_database_failed_is_one_line_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A router frozen past the server's session timeouts wakes up to a writer session the
    server ended: its deadline step fails as StoreUnavailable, a foreseen failure logged in one
    line (not with a traceback, as for a bug), and the step is tried again after a reload."""
    clock, store, service = await offered_to_alice(tmp_path)
    apply_routing = store.apply_routing
    tries = 0

    async def ended_once(**records: Any) -> list[Message]:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise StoreUnavailable("the database failed (the session was ended)")
        return await apply_routing(**records)

    monkeypatch.setattr(store, "apply_routing", ended_once)
    clock.now += 60  # the offer's deadline has passed: the timer steps at once
    try:
        async with timers_running(service), asyncio.timeout(5):
            while tries < 2:
                await asyncio.sleep(0.01)
    finally:
        await store.close()
    assert "event=deadline_step_not_stored" in caplog.text
    assert "Traceback" not in caplog.text


async def test_a_conversation_update_the_database_failed_is_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same wake-up can fail what a routing decision's announcement writes (the invitations
    a close withdraws): a StoreUnavailable there is one line too; anything else keeps its
    traceback."""

    async def fails(error: Exception) -> None:
        raise error

    for error in (StoreUnavailable("the database failed (the session was ended)"), KeyError("x")):
        task = asyncio.get_running_loop().create_task(fails(error))
        with contextlib.suppress(type(error)):
            await task
        inbox_log_failure(task)
    lines = caplog.text.splitlines()
    assert "event=conversation_update_not_stored" in lines[0] and "Traceback" not in lines[1]
    assert "Traceback" in caplog.text and "KeyError" in caplog.text


async def test_restart_expires_an_offer_whose_deadline_passed_while_down(tmp_path: Path) -> None:
    clock = Clock()
    store = await open_store(tmp_path)
    service = RoutingService(CONFIG, store, clock=clock)
    await service.start()
    for a in ("alice", "bob"):
        await service.submit(PresenceChanged(agent=a, presence="Available"))
    item = WorkItem(id="W1", channel="chat", customer="c1", created_at=clock.now)
    decisions = await service.submit(ItemArrived(item=item))
    first = next(d.offer.agent for d in decisions if isinstance(d, OfferMade))
    await store.close()

    clock.now += 120  # the host was down past the offer's 30 s deadline
    store = await open_store(tmp_path)
    service = RoutingService(CONFIG, store, clock=clock)
    decisions = await service.start()
    second = [d.offer.agent for d in decisions if isinstance(d, OfferMade)]
    assert second == ["bob" if first == "alice" else "alice"]
    offers = {o.id: o for o in await offers_of(store, "W1")}
    assert offers["W1.1"].state == OfferState.EXPIRED
    assert offers["W1.2"].state == OfferState.PENDING
    statuses = {s.agent: s.presence for s in await store.load_agent_statuses()}
    assert statuses[first] == "Away"  # the queue's timeout presence, stored
    (stored,) = await store.load_open_items()
    assert stored.state == ItemState.OFFERED and stored.rejected_by == (first,)
    await store.close()


class Records:
    """The OpenRecords an inbox would be: committed records by number."""

    def __init__(self) -> None:
        self.by_number: dict[str, InteractionRecord] = {}

    def open_record(self, number: str) -> InteractionRecord | None:
        return self.by_number.get(number)

    def record_committed(self, record: InteractionRecord) -> None:
        self.by_number[record.number] = record


async def following_records(tmp_path: Path) -> tuple[Clock, Store, Records, RoutingService]:
    """A routing service on a SQLite store whose records follow their items; alice available."""
    clock = Clock()
    store = await open_store(tmp_path)
    records = Records()
    service = RoutingService(CONFIG, store, clock=clock, records=records)
    await service.start()
    await service.submit(PresenceChanged(agent="alice", presence="Available"))
    return clock, store, records, service


async def test_records_follow_their_items_and_amendments_take_turns(tmp_path: Path) -> None:
    clock, store, records, service = await following_records(tmp_path)
    created = await store.create_interaction(
        item="W1", channel="chat", customer="c1", opened_at=clock.now
    )
    records.by_number[created.number] = created
    item = WorkItem(
        id="W1", channel="chat", customer="c1", created_at=clock.now, interaction=created.number
    )
    decisions = await service.submit(ItemArrived(item=item))
    offer = next(d.offer for d in decisions if isinstance(d, OfferMade))
    assert (await store.get_interaction(created.number)).queue == "general"  # type: ignore[union-attr]

    heard: list[Step] = []
    service.listeners.append(heard.append)
    # Decided together, committed together: the amendment is worked out from the record the
    # accept left, so neither change overwrites the other, in memory or on disk.
    invited = Participant(agent="bob", role="invited")
    _, amended = await asyncio.gather(
        service.submit(OfferAccepted(offer=offer.id)),
        service.amend(created.number, lambda r: replace(r, case="CS1")),
    )
    stored = await store.get_interaction(created.number)
    assert stored == amended == records.by_number[created.number]
    assert stored is not None and stored.case == "CS1"
    assert stored.state == InteractionState.WORK_IN_PROGRESS
    assert [p.agent for p in stored.participants] == ["alice"]
    assert [c.cause is None for s in heard for c in s.records] == [False, True]
    assert await service.amend("IMS9999999", lambda r: replace(r, participants=(invited,))) is None
    await store.close()


async def test_a_new_interaction_is_stored_with_its_items_first_step_or_not_at_all(
    tmp_path: Path,
) -> None:
    """A new conversation's record and its item's first step are one write: both are stored,
    or (the commit failing) neither, and the engine forgets the item."""
    clock, store, records, service = await following_records(tmp_path)
    (first,) = await store.reserve_numbers("IMS", 1)

    def arrival(number: str, item_id: str) -> tuple[InteractionRecord, ItemArrived]:
        record = InteractionRecord(
            number=number, item=item_id, channel="chat", customer="c1", opened_at=clock.now
        )
        records.by_number[number] = record  # as the inbox's conversations hold it
        item = WorkItem(
            id=item_id, channel="chat", customer="c1", created_at=clock.now, interaction=number
        )
        return record, ItemArrived(item=item)

    record, event = arrival(first, "W1")
    writes = store.stats.ops
    decisions = await service.submit(event, created=record)
    assert store.stats.ops - writes == 1
    assert any(isinstance(d, OfferMade) for d in decisions)
    stored = await store.get_interaction(first)
    assert stored is not None and stored.queue == "general" and stored.item == "W1"
    assert await store.get_item("W1") is not None

    # A commit the store refuses halfway (the number is stored already, by a request that
    # counted its own): its item, written first in the transaction, is rolled back with it.
    taken = await store.create_interaction(
        item="W0", channel="chat", customer="c0", opened_at=clock.now
    )
    record, event = arrival(taken.number, "W2")
    with pytest.raises(StoreConflict, match=taken.number):
        await service.submit(event, created=record)
    assert await store.get_interaction(taken.number) == taken
    assert await store.get_item("W2") is None
    assert "W2" not in service.router.items and "W1" in service.router.items
    await store.close()


async def test_arrivals_are_numbered_in_order_and_a_clean_restart_goes_on_without_a_gap(
    tmp_path: Path,
) -> None:
    """Through a real host: each arrival after the first is one write (its number was
    reserved with others before); a host that stops gives back the numbers it held, so the
    next one goes on from the last number used."""
    async with running_host(tmp_path) as h:
        inbox = h.host.inbox
        store = inbox.store
        first = await inbox.start_conversation(channel="chat", customer="c1")
        writes = store.stats.ops
        second = await inbox.start_conversation(channel="chat", customer="c2")
        assert store.stats.ops - writes == 1
        third = await inbox.start_conversation(channel="chat", customer="c3")
    assert [first.number, second.number, third.number] == [
        "IMS0001001",
        "IMS0001002",
        "IMS0001003",
    ]
    async with running_host(tmp_path) as h:
        after = await h.host.inbox.start_conversation(channel="chat", customer="c4")
        assert after.number == "IMS0001004"
        stored = await h.host.inbox.store.list_interactions()
    assert sorted(r.number for r in stored) == [
        first.number,
        second.number,
        third.number,
        after.number,
    ]


async def test_numbers_are_reserved_ahead_in_blocks_and_a_failed_reservation_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_store(tmp_path)
    blocks = numbers.NumberBlocks(store, "IMS", size=4)
    got = [await blocks.next() for _ in range(6)]
    assert got == [format_number("IMS", 1001 + i) for i in range(6)]
    # Two reservations for six numbers: the second began while the first block had one left
    # (and, asked for after the block ran out, it is twice as large).
    assert store.stats.ops == 2
    await store.close()
    # What is held is still handed out, in order; the reservation ahead fails with nobody
    # waiting (a warning), and every call that needs a new block tries again and says why.
    held: list[str] = []
    with pytest.raises(StoreError):
        while True:
            held.append(await blocks.next())
    assert held == [format_number("IMS", 1007 + i) for i in range(len(held))]
    with pytest.raises(StoreError):
        await blocks.next()
    assert "event=numbers_not_reserved" in caplog.text
    await blocks.stop()


async def test_a_stopping_process_gives_back_its_last_block_and_a_dead_one_leaves_a_gap(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path)
    dead = numbers.NumberBlocks(store, "IMS", size=4)
    assert await dead.next() == "IMS0001001"  # and never stops: its 1002-1004 are lost
    first = numbers.NumberBlocks(store, "IMS", size=4)
    second = numbers.NumberBlocks(store, "IMS", size=4)
    assert await first.next() == "IMS0001005"
    assert await second.next() == "IMS0001009"
    # The first's rest (1006-1008) has the second's block after it: not given back.
    await first.stop()
    await second.stop()  # 1010-1012 given back
    with pytest.raises(StoreClosed):
        await second.next()
    after = numbers.NumberBlocks(store, "IMS", size=4)
    assert await after.next() == "IMS0001010"
    # Given back only while nobody reserved after them.
    assert not await store.release_numbers("IMS", "IMS0001011", "IMS0001012")
    assert await store.reserve_numbers("IMS", 1) == ["IMS0001014"]
    await store.close()


async def test_a_block_that_comes_too_late_doubles_the_next_and_one_in_time_halves_it(
    tmp_path: Path,
) -> None:
    """Arrivals that outrun the reservations make the blocks grow, so they do not queue
    behind one reservation after another; quieter ones make them small again."""
    store = await open_store(tmp_path)
    blocks = numbers.NumberBlocks(store, "IMS", size=4)
    burst = await asyncio.gather(*(blocks.next() for _ in range(300)))
    assert sorted(burst) == [format_number("IMS", 1001 + i) for i in range(300)]
    assert store.stats.ops <= 8, store.stats.ops  # 4 + 8 + ... + 256, not 75 blocks of 4
    grown = blocks.size
    assert grown >= 128
    for _ in range(400):
        await blocks.next()
        await asyncio.sleep(0.002)  # an arrival now and then: each block comes in time
    assert blocks.size <= grown // 4, (grown, blocks.size)
    await blocks.stop()
    await store.close()
