"""The day at a glance (core/service/day.py): a scripted minute's figures stored exactly, the
morning and the agents' counts kept over a restart, get_day's and the REST endpoint's bounds
and who may read them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.config import parse_config
from core.demo import DEMO_PASSWORD
from core.model import AgentDay, QueueMinute, Role
from core.protocol import (
    AcceptOffer,
    AgentList,
    CloseRecord,
    DayFigures,
    EndChat,
    GetDay,
    ListAgents,
    RejectOffer,
    SetPresence,
)
from core.service.day import local_midnight
from core.service.errors import InboxError
from core.service.inbox import Inbox
from core.service.sessions import AgentSession
from store import open_store
from store.base import Store
from tests.hosting import FAST_QUEUES, fast_config_text
from tests.test_api import Api, serving

# The quick general queue, but offers wait 30 s: the script answers them in its own time.
QUEUE = FAST_QUEUES.replace("offer_timeout = 1.5", "offer_timeout = 30")

# A minute's start, well inside a day, so the script's two minutes share one local date.
M = local_midnight(1_800_000_000) + 12 * 3600


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Floor:
    inbox: Inbox
    store: Store
    clock: Clock

    def session(self, agent: str, role: Role = Role.AGENT) -> AgentSession:
        return self.inbox.open_session(agent, role, f"day-{agent}-{role}", self.clock.now + 3600)

    async def at(self, t: float) -> None:
        """Move the clock to `t` and fire whatever fell due by then (offer expiry)."""
        self.clock.now = t
        await self.inbox.routing.tick()

    def offer_of(self, number: str) -> str:
        conv = self.inbox.conversations.open[number]
        return self.inbox.routing.router.offer_of_item[conv.item]


async def open_floor(data: Path, clock: Clock) -> Floor:
    """The service over a SQLite store in `data`, as the host starts it, on `clock`."""
    config = parse_config(fast_config_text(QUEUE), name="day.toml")
    store = await open_store(data)
    await store.upsert_channels(config.channels)
    await store.upsert_presence_states(config.presences)
    await store.upsert_queues(config.queues)
    await store.upsert_agents(config.agents)
    inbox = Inbox(config, store, clock=clock)
    await inbox.start()
    return Floor(inbox, store, clock)


async def close_floor(floor: Floor) -> None:
    await floor.inbox.stop()
    await floor.store.close()


@pytest.fixture
async def floor(tmp_path: Path) -> AsyncIterator[Floor]:
    f = await open_floor(tmp_path / "data", Clock(M + 1))
    try:
        yield f
    finally:
        await close_floor(f)


async def scripted_minute(floor: Floor) -> AgentSession:
    """Minute M of the general queue: three chats arrive, two are answered (after 8 s and
    37 s), one customer leaves while waiting, one chat is closed; alice declines once."""
    inbox = floor.inbox
    alice = floor.session("alice")
    await inbox.handle(alice, SetPresence(presence="Available"))
    await floor.at(M + 2)
    first = await inbox.start_conversation(channel="chat", customer="c1")  # offered to alice
    await floor.at(M + 3)
    second = await inbox.start_conversation(channel="chat", customer="c2")  # waits
    await floor.at(M + 4)
    third = await inbox.start_conversation(channel="chat", customer="c3")  # waits: 3 now
    await floor.at(M + 10)
    await inbox.handle(alice, AcceptOffer(offer=floor.offer_of(first.number)))
    await floor.at(M + 20)
    await inbox.customer_left(third.number, "c3")
    await floor.at(M + 30)
    await inbox.handle(alice, RejectOffer(offer=floor.offer_of(second.number)))
    await floor.at(M + 40)  # offered to alice again: nobody else is there
    await inbox.handle(alice, AcceptOffer(offer=floor.offer_of(second.number)))
    await floor.at(M + 50)
    await inbox.handle(alice, EndChat(interaction=first.number))
    await inbox.handle(alice, CloseRecord(interaction=first.number))
    return alice


MINUTE_M = QueueMinute(
    queue="general",
    minute=M,
    waiting=0,
    most_waiting=3,
    arrivals=3,
    answered=2,
    abandoned=1,
    handled=1,
    waits=2,
    average_wait=22.5,
    longest_wait=37.0,
)


async def test_a_scripted_minute_is_stored_with_exactly_its_figures(floor: Floor) -> None:
    await scripted_minute(floor)
    await floor.at(M + 61)
    await floor.inbox.day.flush()
    assert await floor.store.queue_minutes(M, M + 120) == [MINUTE_M]


async def test_an_item_still_waiting_counts_its_wait_to_the_minutes_end(floor: Floor) -> None:
    await scripted_minute(floor)
    await floor.at(M + 62)
    fourth = await floor.inbox.start_conversation(channel="chat", customer="c4")
    await floor.at(M + 93)  # the offer to alice expired at M + 92; offered to her again
    assert floor.offer_of(fourth.number).endswith(".2")
    await floor.at(M + 185)  # two more minutes: the next one quiet but for c4's wait
    await floor.inbox.day.flush()
    later = await floor.store.queue_minutes(M + 60, M + 180)
    assert later == [
        QueueMinute(
            queue="general",
            minute=M + 60,
            waiting=1,
            most_waiting=1,
            arrivals=1,
            waits=1,
            average_wait=58.0,
            longest_wait=58.0,
        ),
        # Nothing happened, but c4 still waited at its end: 118 s by then. (Its second offer
        # expires only at the jump to M + 185, in the minute in progress.)
        QueueMinute(
            queue="general",
            minute=M + 120,
            waiting=1,
            most_waiting=1,
            waits=1,
            average_wait=118.0,
            longest_wait=118.0,
        ),
    ]


async def test_a_restart_keeps_the_morning_and_the_agents_counts_of_today(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    first = await open_floor(data, Clock(M + 1))
    try:
        await scripted_minute(first)
        await first.at(M + 62)
        fourth = await first.inbox.start_conversation(channel="chat", customer="c4")
        await first.at(M + 93)  # alice let the offer expire
        assert first.offer_of(fourth.number).endswith(".2")
        await first.at(M + 121)
        away_since = first.clock.now
        await first.inbox.handle(first.session("alice"), SetPresence(presence="Away"))
    finally:
        await close_floor(first)  # stores the minutes finished; M + 120's is lost

    again = await open_floor(data, Clock(M + 300))
    try:
        dan = again.session("dan", Role.SUPERVISOR)
        day = await again.inbox.handle(dan, GetDay(ref=1, since=M, until=M + 300))
        assert isinstance(day, DayFigures)
        assert day.ref == 1 and (day.since, day.until) == (M, M + 300)
        assert [m.minute for m in day.minutes] == [M, M + 60]
        assert day.minutes[0] == MINUTE_M
        assert "general" in day.queues
        agents = await again.inbox.handle(dan, ListAgents(ref=2))
        assert isinstance(agents, AgentList)
        alice = next(a for a in agents.agents if a.agent.id == "alice")
        assert (alice.declined_today, alice.expired_today) == (1, 1)
        assert alice.agent.presence == "Away" and alice.presence_since == away_since
        # A new day starts from nothing; yesterday's counts stay stored under yesterday.
        again.clock.now = M + 24 * 3600
        agents = await again.inbox.handle(dan, ListAgents(ref=3))
        assert isinstance(agents, AgentList)
        alice = next(a for a in agents.agents if a.agent.id == "alice")
        assert (alice.declined_today, alice.expired_today) == (0, 0)
        assert await again.store.agent_days(local_midnight(M)) == [
            AgentDay(agent="alice", day=local_midnight(M), declined=1, expired=1)
        ]
    finally:
        await close_floor(again)


async def test_agents_rows_show_load_by_channel(floor: Floor) -> None:
    await scripted_minute(floor)
    dan = floor.session("dan", Role.SUPERVISOR)
    agents = await floor.inbox.handle(dan, ListAgents(ref=1))
    assert isinstance(agents, AgentList)
    alice = next(a for a in agents.agents if a.agent.id == "alice")
    assert alice.load_by_channel == {"chat": 1} and alice.active == 1
    assert alice.presence_since == M + 1 and alice.declined_today == 1


@pytest.mark.parametrize(
    ("since", "until", "code"),
    [
        (M, M, "bad_range"),  # empty
        (M + 60, M, "bad_range"),  # reversed
        (M, M + 1441 * 60, "bad_range"),  # over a day
    ],
)
async def test_get_day_refuses_an_empty_reversed_or_too_long_range(
    floor: Floor, since: float, until: float, code: str
) -> None:
    dan = floor.session("dan", Role.SUPERVISOR)
    with pytest.raises(InboxError) as refused:
        await floor.inbox.handle(dan, GetDay(ref=1, since=since, until=until))
    assert refused.value.code == code


async def test_get_day_is_for_supervisors_and_knows_its_queues(floor: Floor) -> None:
    with pytest.raises(InboxError) as refused:
        await floor.inbox.handle(floor.session("alice"), GetDay(ref=1, since=M, until=M + 60))
    assert refused.value.code == "forbidden"
    dan = floor.session("dan", Role.SUPERVISOR)
    with pytest.raises(InboxError) as unknown:
        await floor.inbox.handle(dan, GetDay(ref=1, since=M, until=M + 60, queue="nope"))
    assert unknown.value.code == "unknown_queue"
    one = await floor.inbox.handle(dan, GetDay(ref=2, since=M, until=M + 86_400, queue="general"))
    assert isinstance(one, DayFigures) and one.queues == ["general"] and one.minutes == []


# -- REST -------------------------------------------------------------------------------------

NOW_MINUTE = int(time.time() // 60) * 60


async def seeded(api: Api) -> list[QueueMinute]:
    minutes = [
        QueueMinute(queue="general", minute=NOW_MINUTE - 180, arrivals=4, answered=3, waits=3),
        QueueMinute(queue="general", minute=NOW_MINUTE - 120, waiting=2, most_waiting=2),
        QueueMinute(queue="french", minute=NOW_MINUTE - 120, arrivals=1),
    ]
    await api.host.inbox.store.save_day(minutes, [], 0)
    return minutes


async def test_rest_minutes_of_a_queue_for_supervisors_and_admins(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        minutes = await seeded(api)
        path = f"/api/v1/queues/general/minutes?since={NOW_MINUTE - 3600}&until={NOW_MINUTE}"
        for token in (
            await api.token("dan", Role.SUPERVISOR),
            await api.token(None, Role.SUPERVISOR),
            await api.token(None, Role.ADMIN),
            (await api.host.auth.login("dan", DEMO_PASSWORD, None)).token,
        ):
            status, body, _ = await api.call("GET", path, token)
            assert status == 200, body
            assert body["queue"] == "general"
            assert (body["since"], body["until"]) == (NOW_MINUTE - 3600, NOW_MINUTE)
            assert [m["minute"] for m in body["minutes"]] == [m.minute for m in minutes[:2]]
            assert body["minutes"][0]["arrivals"] == 4 and body["minutes"][1]["waiting"] == 2


async def test_rest_minutes_are_forbidden_to_agents_and_integrations(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        path = f"/api/v1/queues/general/minutes?since={NOW_MINUTE - 60}&until={NOW_MINUTE}"
        for token in (await api.token("alice", Role.AGENT), await api.token(None, Role.AGENT)):
            status, body, _ = await api.call("GET", path, token)
            assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body, _ = await api.call("GET", path)
        assert status == 401


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("since=0&until=60", 404, "unknown_queue"),  # (on queue "nope")
        ("since=120&until=60", 422, "bad_range"),
        ("since=0&until=86460", 422, "bad_range"),
        ("since=60&until=60", 422, "bad_range"),
        ("until=60", 400, "invalid_request"),
        ("since=x&until=60", 400, "invalid_request"),
        ("since=-1&until=60", 400, "invalid_request"),
        ("since=0&until=1e300", 400, "invalid_request"),
    ],
)
async def test_rest_minutes_bounds_each_parameter(
    tmp_path: Path, query: str, status: int, code: str
) -> None:
    async with serving(tmp_path) as api:
        token = await api.token(None, Role.SUPERVISOR)
        queue = "nope" if code == "unknown_queue" else "general"
        got, body, _ = await api.call("GET", f"/api/v1/queues/{queue}/minutes?{query}", token)
        assert (got, body["error"]["code"]) == (status, code), body


async def test_a_quiet_minute_is_not_stored_and_old_minutes_are_pruned(floor: Floor) -> None:
    old = QueueMinute(queue="general", minute=M - 40 * 86_400, arrivals=1)
    await floor.store.save_day([old], [], 0)
    await floor.at(M + 121)  # two minutes with nothing in them
    await floor.inbox.day.flush()
    assert await floor.store.queue_minutes(0, M + 3600) == []
