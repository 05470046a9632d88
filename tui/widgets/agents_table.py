"""Supervisors: every agent, with presence, role, load and queues; a cursor picks one."""

from __future__ import annotations

from rich.table import Table
from textual.binding import Binding
from textual.widgets import Static

from core.protocol import AgentLoad


class AgentsTable(Static, can_focus=True):
    DEFAULT_CSS = "AgentsTable { height: auto; }"
    BINDINGS = [
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("up,k", "move(-1)", "Up", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.loads: list[AgentLoad] = []
        self.cursor = 0

    def show(self, loads: list[AgentLoad]) -> None:
        self.loads = loads
        self.cursor = max(0, min(self.cursor, len(loads) - 1))
        table = Table(expand=True, header_style="bold", box=None)
        for column in ("Agent", "Role", "Presence", "Load", "Offers", "Queues"):
            table.add_column(column)
        for i, row in enumerate(loads):
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
                style="reverse" if i == self.cursor else None,
            )
        self.update(table)

    def selected(self) -> AgentLoad | None:
        return self.loads[self.cursor] if self.loads else None

    def action_move(self, step: int) -> None:
        self.cursor += step
        self.show(self.loads)
