"""Why did this come to me? One work item's routing history, each decision with its reason:
where it was queued and why, whom it was offered to and why, who was passed over, who
rejected it or let it expire, who took it. Read-only; Escape or q goes back."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Label, Static

from core.model import AuditEntry
from core.protocol import AuditTrail, GetAudit
from screens.working import WorkingScreen
from tui.calls import CALL_FAILURES, failure_text

if TYPE_CHECKING:
    from tui.app import InboxApp


def audit_table(entries: list[AuditEntry]) -> Table:
    table = Table(expand=True, header_style="bold", box=None)
    table.add_column("Time", no_wrap=True, style="dim")
    table.add_column("Decision", no_wrap=True, style="cyan")
    table.add_column("Agent", no_wrap=True)
    table.add_column("Why", ratio=1)
    for e in entries:
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(e.at)),
            e.kind.replace("_", " "),
            # Text, not markup: names and reasons are other people's words.
            Text(e.agent or ""),
            Text(e.reason),
        )
    return table


class AuditScreen(WorkingScreen[None]):
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("j", "scroll('down')", "Down", show=False),
        Binding("k", "scroll('up')", "Up", show=False),
    ]

    def __init__(self, ref: str) -> None:
        super().__init__()
        self.ref = ref  # the item's id or its interaction's number

    def compose(self) -> ComposeResult:
        yield Label(f"Routing history of {self.ref}", classes="pane-title", id="audit-title")
        with VerticalScroll(id="audit-scroll", classes="pane"):
            yield Static("Loading…", id="audit-entries")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#audit-scroll", VerticalScroll).focus()
        self.run_worker(self.load(), exclusive=True)

    def action_scroll(self, direction: str) -> None:
        scroll = self.query_one("#audit-scroll", VerticalScroll)
        if direction == "down":
            scroll.scroll_down()
        else:
            scroll.scroll_up()

    async def load(self) -> None:
        app: InboxApp = self.app  # type: ignore[assignment]
        try:
            trail = await app.client.request(GetAudit(item=self.ref), AuditTrail)
        except CALL_FAILURES as e:
            self.query_one("#audit-entries", Static).update(f"[red]{failure_text(e)}[/]")
            return
        entries = self.query_one("#audit-entries", Static)
        of = f" ({trail.interaction})" if trail.interaction else ""
        self.query_one("#audit-title", Label).update(f"Routing history of {trail.item}{of}")
        if trail.entries:
            entries.update(audit_table(trail.entries))
        else:
            entries.update("No routing decisions stored for this item.")
