"""Supervisors: a read-only view of every queue and every agent (presence and load)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from core.protocol import AgentList, AgentLoad, ListAgents
from tui.calls import CALL_FAILURES, failure_text
from tui.widgets.queue_stats import QueueStatsView

if TYPE_CHECKING:
    from tui.app import InboxApp


class SupervisorScreen(Screen[None]):
    BINDINGS = [("escape,q", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="pane"):
            yield Label("All queues", classes="pane-title")
            yield QueueStatsView(id="all-queues")
            yield Label("Agents", classes="pane-title")
            yield Static(id="agents")
        yield Footer()

    def on_mount(self) -> None:
        self.loads: list[AgentLoad] = []
        self.refresh_view()
        # Load changes with every routing step; a two-second glance is what a floor needs.
        self.set_interval(2.0, self.refresh_view)

    def refresh_view(self) -> None:
        self.run_worker(self.load(), exclusive=True)

    async def load(self) -> None:
        app: InboxApp = self.app  # type: ignore[assignment]
        self.query_one("#all-queues", QueueStatsView).show(list(app.state.queue_stats.values()))
        try:
            reply = await app.client.request(ListAgents(), AgentList)
        except CALL_FAILURES as e:
            self.query_one("#agents", Static).update(f"[red]{failure_text(e)}[/]")
            return
        self.loads = reply.agents
        table = Table(expand=True, header_style="bold", box=None)
        for column in ("Agent", "Role", "Presence", "Load", "Offers", "Queues"):
            table.add_column(column)
        for row in reply.agents:
            a = row.agent
            load = f"{row.active}/{row.capacity}"
            style = "red" if row.capacity and row.active >= row.capacity else ""
            table.add_row(
                a.display_name,
                a.role,
                a.presence,
                f"[{style}]{load}[/]" if style else load,
                str(row.offers),
                ", ".join(a.queues),
            )
        self.query_one("#agents", Static).update(table)
