"""History: every interaction I took part in (all of them for supervisors), newest first.
Paged from the host 1,000 at a time into a Line-API list, so 10,000 stay instant."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Label

from core.model import InteractionRecord
from core.protocol import GetTranscript, InteractionList, ListInteractions
from core.protocol import Transcript as TranscriptReply
from screens.working import WorkingScreen
from tui.calls import CALL_FAILURES, failure_text
from tui.widgets.transcript import Transcript
from tui.widgets.virtual_list import VirtualList

if TYPE_CHECKING:
    from tui.app import InboxApp

PAGE = 1000
MAX_ROWS = 20_000


def render_record(record: InteractionRecord, width: int, selected: bool) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(time.strftime("%Y-%m-%d %H:%M ", time.localtime(record.opened_at)), style="dim")
    text.append(f"{record.number} ", style="bold")
    text.append(f"{record.customer_name or record.customer} ")
    text.append(f"{record.channel} ", style="cyan")
    text.append(record.state.replace("_", " "), style="dim")
    if record.archived:
        text.append(" archived", style="yellow")
    text.truncate(width)
    return text


class HistoryScreen(WorkingScreen[None]):
    BINDINGS = [("escape,q", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(classes="pane", id="history-list-pane"):
                yield Label("History", classes="pane-title", id="history-title")
                yield VirtualList(id="history-list")
            with Vertical(classes="pane"):
                yield Label("Transcript", classes="pane-title")
                yield Transcript(id="history-transcript")
        yield Footer()

    def on_mount(self) -> None:
        self.records: list[InteractionRecord] = []
        self.query_one("#history-list", VirtualList).focus()
        self.run_worker(self.load(), exclusive=True)

    async def load(self) -> None:
        app: InboxApp = self.app  # type: ignore[assignment]
        while len(self.records) < MAX_ROWS:
            try:
                page = await app.client.request(
                    ListInteractions(limit=PAGE, offset=len(self.records)), InteractionList
                )
            except CALL_FAILURES as e:
                self.notify(failure_text(e), severity="error")
                return
            first = not self.records
            self.records += page.interactions
            self.query_one("#history-list", VirtualList).set_rows(self.records, render_record)
            if first and self.records:
                # set_rows highlights the first row without announcing it: show it ourselves.
                self.run_worker(self.transcript(self.records[0]), group="transcript")
            self.query_one("#history-title", Label).update(f"History ({len(self.records)})")
            if len(page.interactions) < PAGE:
                return

    @on(VirtualList.Highlighted, "#history-list")
    def show(self, event: VirtualList.Highlighted) -> None:
        record: InteractionRecord = event.row
        self.run_worker(self.transcript(record), exclusive=True, group="transcript")

    async def transcript(self, record: InteractionRecord) -> None:
        app: InboxApp = self.app  # type: ignore[assignment]
        try:
            reply = await app.client.request(
                GetTranscript(interaction=record.number), TranscriptReply
            )
        except CALL_FAILURES as e:
            self.notify(failure_text(e), severity="error")
            return
        names = {a: v.display_name for a, v in app.state.agents.items()}
        self.query_one("#history-transcript", Transcript).set_messages(
            reply.messages, names, customer_name=record.customer_name or "Customer"
        )
