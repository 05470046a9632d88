"""Supervisors: every agent, with presence and time in it, role, load (and by channel),
offers pending, declined and expired today, and queues."""

from __future__ import annotations

from rich.table import Table
from textual.widgets import Static

from core.protocol import AgentLoad


class AgentsTable(Static):
    DEFAULT_CSS = "AgentsTable { height: auto; }"

    def show(self, loads: list[AgentLoad], now: float) -> None:
        """`now` is when the presence times count to: the screen redraws them as they tick."""
        table = Table(expand=True, header_style="bold", box=None)
        columns = ("Agent", "Role", "Presence", "Load", "By channel", "Offers", "Declined")
        for column in (*columns, "Expired", "Queues"):
            table.add_column(column)
        for row in loads:
            a = row.agent
            load = f"{row.active}/{row.capacity}"
            style = "red" if row.capacity and row.active >= row.capacity else ""
            table.add_row(
                a.display_name,
                a.role,
                f"{a.presence} {_since(row.presence_since, now)}".strip(),
                f"[{style}]{load}[/]" if style else load,
                " ".join(f"{c} {n}" for c, n in row.load_by_channel.items()),
                str(row.offers),
                str(row.declined_today),
                str(row.expired_today),
                ", ".join(a.queues),
            )
        self.update(table)


def _since(at: float, now: float) -> str:
    """How long the agent has been in their presence: 42s, 17m, 3h05; nothing if unknown."""
    if at <= 0:
        return ""
    seconds = max(0, int(now - at))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}"
