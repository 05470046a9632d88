"""Supervisors: one conversation, read-only, as it happens. The transcript with its messages
arriving live and the record's fields from its floor row; no composer. The host sends the
messages to this console without making the supervisor a participant: the customer and the
agents are not told (`monitor`, docs/protocol.md). Escape or q goes back and stops it."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Footer, Label, Static

from core.protocol import GetTranscript, Monitor
from core.protocol import Transcript as TranscriptReply
from screens.working import WorkingScreen
from tui.calls import CALL_FAILURES, failure_text
from tui.widgets.floor_table import duration
from tui.widgets.transcript import Transcript

if TYPE_CHECKING:
    from tui.app import InboxApp


class MonitorScreen(WorkingScreen[None]):
    BINDINGS = [
        Binding("escape,q", "back", "Back"),
        Binding("R", "history", "Routing history"),
    ]

    def __init__(self, number: str) -> None:
        super().__init__()
        self.number = number

    @property
    def inbox(self) -> InboxApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Label(f"Monitoring {self.number} (read-only; nobody is told)", classes="pane-title")
        with Vertical(classes="pane"):
            yield Static(id="monitor-fields")
            yield Transcript(id="monitor-transcript")
        yield Footer()

    def on_mount(self) -> None:
        self.inbox.state.monitored.setdefault(self.number, {})
        self.show_fields()
        self.set_interval(1.0, self.show_fields)  # the handle time ticks
        self.run_worker(self.start(), exclusive=True)

    def action_back(self) -> None:
        self.inbox.state.monitored.pop(self.number, None)
        self.app.pop_screen()
        # The host also stops at logout and when the conversation closes: a failure here
        # costs this console a few messages it ignores.
        self.app.run_worker(self._stop())

    async def _stop(self) -> None:
        with contextlib.suppress(*CALL_FAILURES):
            await self.inbox.client.request(Monitor(interaction=self.number, on=False))

    async def start(self) -> None:
        # Monitoring first, the past second: a message in between comes both ways, and the
        # transcript keys messages by seq.
        try:
            await self.inbox.client.request(Monitor(interaction=self.number))
            reply = await self.inbox.client.request(
                GetTranscript(interaction=self.number, newest=True), TranscriptReply
            )
        except CALL_FAILURES as e:
            self.query_one("#monitor-fields", Static).update(f"[red]{failure_text(e)}[/]")
            return
        for m in reply.messages:
            self.inbox.state.monitored.setdefault(self.number, {}).setdefault(m.seq, m)
        self.show_messages()

    def refresh_areas(self, areas: set[str]) -> None:
        if f"monitor:{self.number}" in areas or "all" in areas:
            self.show_fields()
            self.show_messages()

    def show_messages(self) -> None:
        messages = self.inbox.state.monitored.get(self.number, {})
        row = self.inbox.state.floor.get(self.number)
        names = {a.id: a.display_name for a in self.inbox.state.agents.values()}
        self.query_one("#monitor-transcript", Transcript).set_messages(
            list(messages.values()), names, customer_name=row.customer_name if row else None
        )

    def show_fields(self) -> None:
        row = self.inbox.state.floor.get(self.number)
        fields = self.query_one("#monitor-fields", Static)
        if row is None:
            fields.update(Text("The conversation is closed."))
            return
        now = time.time() + self.inbox.state.floor_skew
        timer = (
            f"waiting {duration(now - row.arrived_at)}"
            if row.accepted_at is None
            else f"handled {duration(now - row.accepted_at)}"
        )
        others = f" with {', '.join(row.others)}" if row.others else ""
        fields.update(
            Text(
                f"{row.customer_name} · {row.channel} · queue {row.queue or '-'} · "
                f"{row.agent or 'nobody'}{others} · {row.state} · {timer}"
                + (" · unanswered" if row.unanswered else "")
            )
        )

    def action_history(self) -> None:
        from screens.audit import AuditScreen

        self.app.push_screen(AuditScreen(self.number))
