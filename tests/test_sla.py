"""Service levels: the pure judgement (core/sla.py) with hypothesis, the [queue.sla] config, and
a real host whose waiting item crosses near then past its target: supervisors alerted once per
crossing, agents never, the queue figures and /metrics marked, a restart alerting nothing twice.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.client import InboxClient
from core.config import ConfigError, parse_config
from core.demo import DEMO_PASSWORD
from core.protocol import (
    FloorList,
    FloorRow,
    ListFloor,
    OfferEvent,
    QueueStatsEvent,
    SlaAlert,
    SlaCrossing,
    SubscribeQueueStats,
)
from core.sla import (
    QueueSla,
    SlaLevel,
    SlaTargets,
    clock_level,
    crossed_at,
    queue_sla,
)
from tests.hosting import RunningHost, fast_config_text, running_host

RANK = {SlaLevel.OK: 0, SlaLevel.NEAR: 1, SlaLevel.BREACHED: 2}

times = st.floats(min_value=0, max_value=1e6, allow_nan=False)
targets = st.floats(min_value=0.01, max_value=1e5, allow_nan=False)
nears = st.floats(min_value=0.05, max_value=0.95, allow_nan=False)


# ---------------------------------------------------------------------------- pure


def test_a_clock_is_ok_then_near_then_breached_and_stopping_inside_is_ok() -> None:
    assert clock_level(10, 0.8, 100, None, 107.9) == SlaLevel.OK
    assert clock_level(10, 0.8, 100, None, 108) == SlaLevel.NEAR
    assert clock_level(10, 0.8, 100, None, 110) == SlaLevel.NEAR  # the target itself is met
    assert clock_level(10, 0.8, 100, None, 110.1) == SlaLevel.BREACHED
    assert clock_level(10, 0.8, 100, 109, 500) == SlaLevel.OK
    assert clock_level(10, 0.8, 100, 111, 500) == SlaLevel.BREACHED
    assert clock_level(None, 0.8, 100, None, 10**6) == SlaLevel.OK


def test_a_queue_counts_its_running_clocks_near_and_past() -> None:
    t = SlaTargets(wait=10, first_reply=20, near=0.5)
    marks = queue_sla(t, waiting_since=[100, 94, 89], unanswered_since=[95, 79], now=100)
    # waits 0, 6 (near), 11 (past); replies 5 (ok), 21 (past)
    assert marks == QueueSla(targets=t, near=1, breached=2)
    assert marks.level == SlaLevel.BREACHED
    only_waits = queue_sla(SlaTargets(wait=10), waiting_since=[], unanswered_since=[0], now=1000)
    assert only_waits.level == SlaLevel.OK  # no first-reply target: that clock does not count


@given(targets, nears, times, st.none() | times, times, times)
def test_levels_never_fall_as_time_passes(
    target: float, near: float, started: float, stopped: float | None, a: float, b: float
) -> None:
    """With the clock's events fixed (stopped, if at all, by the earlier look), a later look
    never sees a lower level: once breached, breached for good."""
    early, late = min(a, b), max(a, b)
    if stopped is not None:
        stopped = max(stopped, started)
        if stopped > early:
            stopped = None
    first = clock_level(target, near, started, stopped, early)
    second = clock_level(target, near, started, stopped, late)
    assert RANK[first] <= RANK[second]


@given(targets, nears, times, times)
def test_near_comes_before_breached_and_crossed_at_says_when(
    target: float, near: float, started: float, now: float
) -> None:
    t = SlaTargets(wait=target, near=near)
    near_at = crossed_at(t, "wait", SlaLevel.NEAR, started)
    breach_at = crossed_at(t, "wait", SlaLevel.BREACHED, started)
    assert started <= near_at < breach_at
    level = clock_level(target, near, started, None, now)
    if now < near_at:
        assert level == SlaLevel.OK
    elif now <= breach_at:
        assert level == SlaLevel.NEAR
    else:
        assert level == SlaLevel.BREACHED


@given(st.lists(times, max_size=20), st.lists(times, max_size=20), targets, targets, nears, times)
def test_a_queue_counts_exactly_the_clocks_at_each_level(
    waits: list[float],
    replies: list[float],
    wait: float,
    reply: float,
    near: float,
    now: float,
) -> None:
    t = SlaTargets(wait=wait, first_reply=reply, near=near)
    marks = queue_sla(t, waiting_since=waits, unanswered_since=replies, now=now)
    levels = [clock_level(wait, near, s, None, now) for s in waits]
    levels += [clock_level(reply, near, s, None, now) for s in replies]
    assert marks.near == levels.count(SlaLevel.NEAR)
    assert marks.breached == levels.count(SlaLevel.BREACHED)
    assert marks.near + marks.breached <= len(waits) + len(replies)


# ---------------------------------------------------------------------------- config

BASE = (
    '[[channel]]\nname = "chat"\nmode = "sync"\n\n[[queue]]\nname = "general"\nchannel = "chat"\n'
)


def test_queue_sla_config_is_read_with_its_default_near() -> None:
    config = parse_config(BASE + "sla = { wait = 30, first_reply = 60 }\n")
    assert config.slas == {"general": SlaTargets(wait=30, first_reply=60, near=0.8)}
    assert parse_config(BASE).slas == {}  # no [queue.sla]: no service level


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[queue.sla]\nwait = 0\n", 'inbox.toml:9: queue "general": sla.wait must be > 0, got 0'),
        ("[queue.sla]\nnear = 0.5\n", 'inbox.toml:8: queue "general": sla sets no target'),
        (
            "[queue.sla]\nwait = 5\nnear = 1\n",
            'inbox.toml:10: queue "general": sla.near must be < 1, got 1',
        ),
        (
            "[queue.sla]\nwiat = 5\n",
            'inbox.toml:9: queue "general": unknown key "wiat" (did you mean "wait"?)',
        ),
        (
            '[queue.sla]\nfirst_reply = "1m"\n',
            'inbox.toml:9: queue "general": sla.first_reply must be a number, got "1m"',
        ),
    ],
)
def test_sla_mistakes_name_the_file_line_and_key(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(BASE + extra, name="inbox.toml")
    assert str(raised.value).startswith(message), str(raised.value)


# ---------------------------------------------------------------------------- a real host

# The general chat queue with a short wait target: near after 1 s, past after 2 s.
SLA_QUEUES = """
[[queue]]
name = "general"
channel = "chat"
groups = ["tier1", "tier2"]
sla = { wait = 2, first_reply = 60, near = 0.5 }
"""


def sla_config():  # type: ignore[no-untyped-def]
    return parse_config(fast_config_text(SLA_QUEUES), name="sla.toml")


async def alerts_until(client: InboxClient, check) -> list[SlaCrossing]:  # type: ignore[no-untyped-def]
    """The alerts that come before the general queue's figures (sent once a second) satisfy
    `check`."""
    alerts = []
    while True:
        event = await client.next_event()
        if isinstance(event, SlaAlert):
            alerts.append(event.crossing)
        elif isinstance(event, QueueStatsEvent) and any(
            s.queue == "general" and check(s) for s in event.stats
        ):
            return alerts


def past(n: int):  # type: ignore[no-untyped-def]
    return lambda s: s.sla is not None and s.sla.breached == n


async def waiting_chat(h: RunningHost, customer: str) -> str:
    record = await h.host.inbox.start_conversation(channel="chat", customer=customer)
    return record.item


async def test_a_waiting_item_alerts_supervisors_once_per_crossing_and_never_agents(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path, sla_config()) as h:
        dan = await h.agent("dan", presence="Away")  # a supervisor, taking no work
        alice = await h.agent("alice", presence="Away")  # an agent, so the item waits
        await dan.request(SubscribeQueueStats())
        await alice.request(SubscribeQueueStats())
        item = await waiting_chat(h, "web-ana")

        near = await dan.next_event(SlaAlert)
        assert (near.crossing.item, near.crossing.target) == (item, "wait")
        assert near.crossing.level == SlaLevel.NEAR and near.crossing.seconds == 2
        breached = await dan.next_event(SlaAlert)
        assert breached.crossing.level == SlaLevel.BREACHED
        assert breached.crossing.since == pytest.approx(near.crossing.since + 1)

        # Two more rounds of figures showing it past: the watch has looked again since.
        assert await alerts_until(dan, past(1)) == []
        assert await alerts_until(dan, past(1)) == []  # no crossing alerted twice
        assert await alerts_until(alice, past(1)) == []  # agents never hear of it

        stats = h.host.inbox.queue_stats()["general"]
        assert stats.sla is not None and (stats.sla.near, stats.sla.breached) == (0, 1)
        assert stats.sla.targets == SlaTargets(wait=2, first_reply=60, near=0.5)
        async with aiohttp.ClientSession() as http, http.get(h.url + "/metrics") as r:
            text = await r.text()
        assert re.search(r'^inbox_queue_sla_breached\{queue="general"\} 1$', text, re.M)
        for client in (dan, alice):
            await client.close()


async def test_a_first_reply_clock_starts_at_acceptance_and_stops_at_the_reply(
    tmp_path: Path,
) -> None:
    queues = SLA_QUEUES.replace("wait = 2, first_reply = 60", "first_reply = 1.5")
    config = parse_config(fast_config_text(queues), name="sla.toml")
    async with running_host(tmp_path, config) as h:
        dan = await h.agent("dan", presence="Away")
        alice = await h.agent("alice")
        await h.host.inbox.start_conversation(channel="chat", customer="web-ana")
        offer = await alice.next_event(OfferEvent)
        await alice.accept(offer.view.offer.id)
        near = await dan.next_event(SlaAlert)
        assert (near.crossing.target, near.crossing.level) == ("first_reply", SlaLevel.NEAR)
        assert near.crossing.interaction == offer.view.interaction
        await alice.send_message(offer.view.interaction, "Hello, how can I help?")
        marks = h.host.inbox.queue_stats()["general"].sla
        assert marks is not None and (marks.near, marks.breached) == (0, 0)
        for client in (dan, alice):
            await client.close()


async def test_a_restart_alerts_nothing_twice_and_the_snapshot_carries_what_crossed(
    tmp_path: Path,
) -> None:
    """What was alerted before is not sent again after a restart; what crossed while the host
    was down is in the supervisor's snapshot (the console alerts it: test_sla_console.py)."""
    async with running_host(tmp_path, sla_config()) as h:
        dan = await h.agent("dan", presence="Away")
        first = await waiting_chat(h, "web-ana")
        while (await dan.next_event(SlaAlert)).crossing.level != SlaLevel.BREACHED:
            pass
        second = await waiting_chat(h, "web-bea")  # crosses while the host is down
        await dan.close()
    # A restart that lasts past the second item's target.
    await asyncio.sleep(2.1)
    async with running_host(tmp_path, sla_config()) as h:
        dan = InboxClient(h.agent_url, backoff=(0.05, 0.2))
        await dan.connect()
        reply = await dan.login("dan", DEMO_PASSWORD)
        standing = {(c.item, c.level) for c in reply.snapshot.sla_crossings}
        assert standing == {(first, SlaLevel.BREACHED), (second, SlaLevel.BREACHED)}
        await dan.request(SubscribeQueueStats())
        assert await alerts_until(dan, past(2)) == []
        assert await alerts_until(dan, past(2)) == []
        await dan.close()


async def test_the_floor_row_carries_the_clock_the_alerts_come_from(tmp_path: Path) -> None:
    queues = SLA_QUEUES.replace("wait = 2, first_reply = 60", "wait = 60, first_reply = 60")
    config = parse_config(fast_config_text(queues), name="sla.toml")
    async with running_host(tmp_path, config) as h:
        dan = await h.agent("dan", presence="Away")
        alice = await h.agent("alice", presence="Away")
        record = await h.host.inbox.start_conversation(channel="chat", customer="web-ana")
        number = record.number

        async def row() -> FloorRow:
            floor = await dan.request(ListFloor(subscribe=False), FloorList)
            return next(r for r in floor.rows if r.interaction == number)

        item = h.host.inbox.routing.router.items[record.item]
        waiting = await row()
        assert (waiting.sla_target, waiting.sla_since) == ("wait", item.enqueued_at)
        await alice.set_presence("Available")
        offer = await alice.next_event(OfferEvent)
        await alice.accept(offer.view.offer.id)
        accepted = await row()
        assert accepted.sla_target == "first_reply"
        assert accepted.sla_since == accepted.accepted_at
        await alice.send_message(number, "Hello, how can I help?")
        answered = await row()
        assert (answered.sla_target, answered.sla_since) == (None, None)
        for client in (dan, alice):
            await client.close()
