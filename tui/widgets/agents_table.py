"""Supervisors: every agent, with presence and time in it, role, load (and by channel),
offers pending, declined and expired today, and queues; a cursor picks one."""

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
        self.now = 0.0
        self.cursor = 0

    def show(self, loads: list[AgentLoad], now: float) -> None:
        """`now` is when the presence times count to: the screen redraws them as they tick."""
        self.loads = loads
        self.now = now
        self.cursor = max(0, min(self.cursor, len(loads) - 1))
        table = Table(expand=True, header_style="bold", box=None)
        # One line an agent, cut short rather than wrapped: at 80 columns a wrapped row took
        # three lines and the table a screen for four agents.
        columns = ("Agent", "Role", "Presence", "Load", "By channel", "Offers", "Decl.", "Exp.")
        for column in columns:
            table.add_column(column, no_wrap=True, overflow="ellipsis")
        table.add_column("Queues", no_wrap=True, overflow="ellipsis", ratio=1)
        for i, row in enumerate(loads):
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
                style="reverse" if i == self.cursor else None,
            )
        self.update(table)

    def selected(self) -> AgentLoad | None:
        return self.loads[self.cursor] if self.loads else None

    def action_move(self, step: int) -> None:
        self.cursor += step
        self.show(self.loads, self.now)


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
