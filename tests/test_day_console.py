"""The supervisor's Day tab and Agents table against known data: the series each plot draws
(one queue, every queue summed), the queue key, the agents' new columns; snapshots of both
drawn from fixed data, and the tab fed by a real host's stored minutes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from textual.app import App, ComposeResult

from core.model import AgentDay, QueueMinute, Role
from core.protocol import AgentLoad, AgentView, DayFigures
from screens.main import MainScreen
from screens.supervisor import SupervisorScreen
from tests.hosting import running_host
from tests.test_console_pilot import SIZE, console, until
from tui.widgets.agents_table import AgentsTable
from tui.widgets.day_plots import DayPlots, day_series, first_plotted

SnapCompare = Callable[..., bool]

T0 = 1_795_600_800  # a minute's start
FIGURES = DayFigures(
    ref=0,
    since=T0,
    until=T0 + 6 * 60,
    queues=["french", "general"],
    minutes=[
        QueueMinute(
            queue="general",
            minute=T0,
            waiting=2,
            most_waiting=3,
            arrivals=5,
            answered=3,
            waits=5,
            average_wait=20.0,
            longest_wait=50.0,
        ),
        QueueMinute(queue="french", minute=T0, arrivals=1, answered=1, waits=1, average_wait=80.0),
        # T0 + 60 stored nothing: a quiet minute.
        QueueMinute(
            queue="general",
            minute=T0 + 120,
            waiting=1,
            most_waiting=2,
            abandoned=1,
            handled=2,
            waits=1,
            average_wait=130.0,
            longest_wait=130.0,
        ),
        QueueMinute(queue="french", minute=T0 + 300, arrivals=2, handled=1),
    ],
)


def plotted(queue: str | None) -> dict[str, list[float]]:
    return {s.name: s.values for s in day_series(FIGURES, queue)}


def test_one_queue_is_plotted_minute_by_minute_with_gaps_as_zeros() -> None:
    got = plotted("general")
    assert got["Waiting"] == [2, 0, 1, 0, 0, 0]
    assert got["Arrivals"] == [5, 0, 0, 0, 0, 0]
    assert got["Answered"] == [3, 0, 0, 0, 0, 0]
    assert got["Abandoned"] == [0, 0, 1, 0, 0, 0]
    assert got["Handled"] == [0, 0, 2, 0, 0, 0]
    assert got["Average wait"] == [20.0, 0, 130.0, 0, 0, 0]
    assert got["Longest wait"] == [50.0, 0, 130.0, 0, 0, 0]
    summaries = {s.name: s.summary for s in day_series(FIGURES, "general")}
    assert summaries["Waiting"] == "now 0, at most 3"
    assert summaries["Arrivals"] == "5 today"
    # (5 waits of 20 s + 1 of 130 s) / 6
    assert summaries["Average wait"] == "38 s over the day"
    assert summaries["Longest wait"] == "2.2 min at most"


def test_every_queue_summed_weights_the_waits_by_how_many_they_cover() -> None:
    got = plotted(None)
    assert got["Arrivals"] == [6, 0, 0, 0, 0, 2]
    assert got["Handled"] == [0, 0, 2, 0, 0, 1]
    # (5 × 20 + 1 × 80) / 6 = 30; the longest of both queues.
    assert got["Average wait"] == [30.0, 0, 130.0, 0, 0, 0]
    assert got["Longest wait"] == [50.0, 0, 130.0, 0, 0, 0]


class Plots(App[None]):
    def compose(self) -> ComposeResult:
        yield DayPlots(id="day-plots")

    def on_mount(self) -> None:
        self.query_one(DayPlots).show(FIGURES)


async def test_the_queue_key_cycles_every_queue_then_each() -> None:
    app = Plots()
    async with app.run_test(size=(100, 40)) as pilot:
        plots = app.query_one(DayPlots)
        await pilot.pause()
        seen = []
        for _ in range(4):
            seen.append((plots.queue, plots.series[1].values))
            plots.cycle()
        assert seen == [
            (None, [6, 0, 0, 0, 0, 2]),
            ("french", [1, 0, 0, 0, 0, 2]),
            ("general", [5, 0, 0, 0, 0, 0]),
            (None, [6, 0, 0, 0, 0, 2]),
        ]


def test_the_plots_start_at_the_days_first_stored_minute_but_show_the_last_hour() -> None:
    assert first_plotted(FIGURES) == 0  # six minutes: all of them
    day = msgspec.structs.replace(FIGURES, since=T0 - 600 * 60, until=T0 + 6 * 60)
    assert first_plotted(day) == 606 - 60  # traffic for 6 minutes: the last hour
    day = msgspec.structs.replace(FIGURES, since=T0 - 600 * 60, until=T0 + 300 * 60)
    assert first_plotted(day) == 600  # the first stored minute, T0
    quiet = msgspec.structs.replace(day, minutes=[])
    assert first_plotted(quiet) == 900 - 60


def test_day_plots_snapshot(snap_compare: SnapCompare, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")  # the title says when the plots start, in local time
    time.tzset()
    try:
        assert snap_compare(Plots(), terminal_size=(100, 34))
    finally:
        monkeypatch.undo()
        time.tzset()


NOW = float(T0 + 3600)


def load(agent: str, presence: str, since_ago: float, **figures: object) -> AgentLoad:
    view = AgentView(id=agent, display_name=agent.title(), role=Role.AGENT, presence=presence)
    return AgentLoad(
        agent=view,
        active=2,
        capacity=6,
        offers=0,
        presence_since=NOW - since_ago,
        **figures,  # type: ignore[arg-type]
    )


class Agents(App[None]):
    def compose(self) -> ComposeResult:
        yield AgentsTable(id="agents")

    def on_mount(self) -> None:
        self.query_one(AgentsTable).show(
            [
                load(
                    "alice",
                    "Available",
                    42,
                    load_by_channel={"chat": 1, "messaging": 1},
                    declined_today=2,
                    expired_today=1,
                ),
                load("bob", "Away", 3 * 3600 + 5 * 60, expired_today=4),
                load("chloe", "Offline", 17 * 60),
            ],
            NOW,
        )


def test_agents_table_snapshot(snap_compare: SnapCompare) -> None:
    assert snap_compare(Agents(), terminal_size=(80, 8))


async def test_the_day_tab_draws_what_the_host_stored(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        now = time.time()
        minute = int(now // 60) * 60 - 120  # two minutes ago: today, unless just after midnight
        if time.localtime(minute).tm_yday != time.localtime(now).tm_yday:
            minute = int(now // 60) * 60  # the first minute of the day: its own
        stored = [
            QueueMinute(queue="general", minute=minute, arrivals=4, answered=3, waits=3),
            QueueMinute(queue="french", minute=minute, arrivals=1, waiting=1, most_waiting=1),
        ]
        await h.host.inbox.store.save_day(stored, [AgentDay(agent="bob", day=0)], 0)
        boss = console(h, user="dan")
        async with boss.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(boss.screen, MainScreen))
            await pilot.press("s")
            await until(pilot, lambda: isinstance(boss.screen, SupervisorScreen))
            await pilot.press("4")
            plots = boss.screen.query_one(DayPlots)
            await until(pilot, lambda: plots.figures is not None)
            arrivals = {s.name: s for s in plots.series}["Arrivals"]
            assert sum(arrivals.values) == 5 and arrivals.summary == "5 today"
            queues = plots.figures.queues if plots.figures else []
            await pilot.press("right_square_bracket")  # every queue, then the first queue
            assert plots.queue == queues[0]
            answered = {s.name: s for s in plots.series}["Answered"]
            assert sum(answered.values) == (3 if queues[0] == "general" else 0)
