"""Supervisors: every agent, with presence, role, load and queues."""

from __future__ import annotations

from rich.table import Table
from textual.widgets import Static

from core.protocol import AgentLoad


class AgentsTable(Static):
    DEFAULT_CSS = "AgentsTable { height: auto; }"

    def show(self, loads: list[AgentLoad]) -> None:
        table = Table(expand=True, header_style="bold", box=None)
        for column in ("Agent", "Role", "Presence", "Load", "Offers", "Queues"):
            table.add_column(column)
        for row in loads:
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
        self.update(table)
