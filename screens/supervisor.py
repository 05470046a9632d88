"""Supervisors: the floor in tabs, one key each. Each tab's content is a widget of its own
(tui/widgets/); this screen lays them out, keeps them fresh and runs the keys."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from core.protocol import MAX_DAY_MINUTES, AgentList, AgentLoad, DayFigures, GetDay, ListAgents
from tui.actions import SUPERVISOR_ACTIONS, bindings
from tui.calls import CALL_FAILURES, failure_text, still_shown
from tui.widgets.agents_table import AgentsTable
from tui.widgets.day_plots import DayPlots
from tui.widgets.queue_stats import QueueStatsView

if TYPE_CHECKING:
    from tui.app import InboxApp

REFRESH = 2.0  # seconds: load changes with every routing step; a glance is what a floor needs
DAY_REFRESH = 60.0  # the host stores the day's figures a minute at a time


class SupervisorScreen(Screen[None]):
    # The palette lists these on this screen (tui/commands.py).
    ACTIONS = SUPERVISOR_ACTIONS
    BINDINGS = bindings(SUPERVISOR_ACTIONS)

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[AgentLoad] = []

    @property
    def inbox(self) -> InboxApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with TabbedContent(initial="tab-queues", id="supervisor-tabs"):
            with TabPane("Queues", id="tab-queues"), VerticalScroll():
                yield QueueStatsView(id="all-queues")
            with TabPane("Agents", id="tab-agents"), VerticalScroll():
                yield AgentsTable(id="agents")
                yield Static(id="agents-trouble")
            with TabPane("Day", id="tab-day"), VerticalScroll():
                yield DayPlots(id="day-plots")
                yield Static(id="day-trouble")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()
        self.set_interval(REFRESH, self.refresh_view)
        self.refresh_day()
        self.set_interval(DAY_REFRESH, self.refresh_day)

    def action_tab(self, tab: str) -> None:
        self.query_one("#supervisor-tabs", TabbedContent).active = tab

    def action_day_queue(self) -> None:
        self.query_one("#day-plots", DayPlots).cycle()

    def refresh_day(self) -> None:
        self.run_worker(self.load_day(), exclusive=True, group="day")

    async def load_day(self) -> None:
        """Since the console's local midnight, at most the day a `get_day` answers."""
        now = time.time()
        today = time.localtime(now)
        midnight = now - (today.tm_hour * 3600 + today.tm_min * 60 + today.tm_sec)
        since = max(midnight, now - (MAX_DAY_MINUTES - 1) * 60)
        try:
            figures = await self.inbox.client.request(GetDay(since=since, until=now), DayFigures)
        except CALL_FAILURES as e:
            if still_shown(self):
                self.query_one("#day-trouble", Static).update(f"[red]{failure_text(e)}[/]")
            return
        if not still_shown(self):
            return
        self.query_one("#day-trouble", Static).update("")
        self.query_one("#day-plots", DayPlots).show(figures)

    def refresh_view(self) -> None:
        self.run_worker(self.load(), exclusive=True, group="agents")

    async def load(self) -> None:
        self.query_one("#all-queues", QueueStatsView).show(
            list(self.inbox.state.queue_stats.values())
        )
        try:
            reply = await self.inbox.client.request(ListAgents(), AgentList)
        except CALL_FAILURES as e:
            if still_shown(self):
                self.query_one("#agents-trouble", Static).update(f"[red]{failure_text(e)}[/]")
            return
        if not still_shown(self):
            return
        self.loads = reply.agents
        self.query_one("#agents-trouble", Static).update("")
        self.query_one("#agents", AgentsTable).show(reply.agents, time.time())
