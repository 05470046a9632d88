"""Supervisors: the floor in tabs, one key each. Each tab's content is a widget of its own
(tui/widgets/); this screen lays them out, keeps them fresh and runs the keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from core.protocol import AgentList, AgentLoad, ListAgents
from tui.actions import SUPERVISOR_ACTIONS, bindings
from tui.calls import CALL_FAILURES, failure_text, still_shown
from tui.widgets.agents_table import AgentsTable
from tui.widgets.queue_stats import QueueStatsView

if TYPE_CHECKING:
    from tui.app import InboxApp

REFRESH = 2.0  # seconds: load changes with every routing step; a glance is what a floor needs


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
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()
        self.set_interval(REFRESH, self.refresh_view)

    def action_tab(self, tab: str) -> None:
        self.query_one("#supervisor-tabs", TabbedContent).active = tab

    def refresh_view(self) -> None:
        self.run_worker(self.load(), exclusive=True, group="agents")

    async def load(self) -> None:
        self.query_one("#all-queues", QueueStatsView).show(
            list(self.inbox.state.queue_stats.values()), sla=True
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
        self.query_one("#agents", AgentsTable).show(reply.agents)
