"""(D) The interaction record: number, state, customer, what the item is about (the channel's
details), channel, queue, opened, participants, linked case or incident; (E) its buttons."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from core.model import InteractionState
from tui.actions import by_id
from tui.state import Chat

CLOSED = (InteractionState.CLOSED_COMPLETE, InteractionState.CLOSED_ABANDONED)


def record_button(action_id: str, **kw: Any) -> Button:
    """A button for a record action of the table; its name is the action it runs."""
    a = by_id(action_id)
    return Button(a.label, id=action_id.replace(".", "-"), name=a.action, **kw)


class RecordPane(Vertical):
    DEFAULT_CSS = """
    RecordPane { height: auto; }
    RecordPane Horizontal { height: auto; }
    RecordPane Button { min-width: 8; margin: 0 1 0 0; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="record-details")
        with Horizontal():
            yield record_button("record.incident", variant="warning")
            yield record_button("record.case")
        with Horizontal():
            yield record_button("record.close", variant="success")
            yield record_button("record.archive")

    def show(self, chat: Chat | None, names: dict[str, str]) -> None:
        details = self.query_one("#record-details", Static)
        buttons = {b.id: b for b in self.query(Button)}
        if chat is None:
            details.update("[dim]No interaction selected[/]")
            for b in buttons.values():
                b.disabled = True
            return
        r = chat.record
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_row("Number", r.number)
        table.add_row("State", r.state.replace("_", " "))
        table.add_row("Customer", r.customer_name or r.customer)
        if r.customer_contact:
            table.add_row("Contact", r.customer_contact)
        for d in chat.details:
            table.add_row(d.label, d.value)
        table.add_row("Channel", r.channel)
        table.add_row("Queue", r.queue or "-")
        table.add_row("Opened", time.strftime("%H:%M:%S", time.localtime(r.opened_at)))
        people = [
            f"{names.get(p.agent, p.agent)}{' (left)' if p.left_at else ''}" for p in r.participants
        ]
        table.add_row("Agents", ", ".join(people) or "-")
        if r.incident:
            table.add_row("Incident", r.incident)
        if r.case:
            table.add_row("Case", r.case)
        notes = [m for m in chat.ordered() if m.kind == "work_note"]
        if notes:
            table.add_row("Notes", "\n".join(f"• {m.body}" for m in notes[-3:]))
        details.update(table)
        buttons["record-incident"].disabled = bool(r.incident)
        buttons["record-case"].disabled = bool(r.case)
        buttons["record-close"].disabled = r.state in CLOSED
        buttons["record-archive"].disabled = r.state not in CLOSED or r.archived
