"""Cases and incidents: a filtered list (mine, my groups', all), the one under the cursor in
full (fields, work notes, linked interactions), and keys to change its state, assignee, group,
priority and short description or add a work note. A change made anywhere (another console, the
REST API) arrives as a record event and is redrawn here without asking."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Label, Static

from core.model import ServiceRecord
from core.protocol import (
    AddRecordNote,
    AnyClientFrame,
    GetRecord,
    LinkRecord,
    ListRecords,
    RecordList,
    RecordView,
    UpdateRecord,
)
from screens.asking import ask
from screens.picker import Picker
from screens.prompt import Prompt
from screens.working import WorkingScreen
from tui.actions import RECORDS_ACTIONS, bindings
from tui.calls import CALL_FAILURES, failure_text
from tui.widgets.virtual_list import VirtualList

if TYPE_CHECKING:
    from tui.app import InboxApp

PAGE = 200
KINDS: tuple[str | None, ...] = (None, "incident", "case")
NOBODY = "-"  # the picker's value for "no one": "" is what the host clears an assignment with


def render_record(record: ServiceRecord, width: int, selected: bool) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{record.number} ", style="bold")
    text.append(f"P{record.priority} ", style="red" if record.priority <= 2 else "dim")
    text.append(f"{record.state.replace('_', ' ')} ", style="cyan")
    text.append(f"{record.assignee or record.assignment_group or '-'} ", style="dim")
    text.append(record.short_description)
    text.truncate(width)
    return text


class RecordsScreen(WorkingScreen[None]):
    # The palette lists these on this screen (tui/commands.py).
    ACTIONS = RECORDS_ACTIONS
    BINDINGS = bindings(RECORDS_ACTIONS)

    def __init__(self, open_number: str | None = None, chat: str | None = None) -> None:
        super().__init__()
        self.open_number = open_number
        self.chat = chat  # the chat selected underneath: what `l` offers to link
        self.scope = "mine"
        self.kind: str | None = None
        self.state_filter: str | None = None
        self.text = ""
        self.view: RecordView | None = None

    @property
    def inbox(self) -> InboxApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(classes="pane", id="records-list-pane"):
                yield Label("Records", classes="pane-title", id="records-title")
                yield VirtualList(id="records-list")
            with Vertical(classes="pane", id="record-detail-pane"):
                yield Label("Record", classes="pane-title", id="record-detail-title")
                with VerticalScroll():
                    yield Static(id="record-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#records-list", VirtualList).focus()
        self.reload()
        if self.open_number:
            self.show_record(self.open_number)

    # ------------------------------------------------------------------ the list

    def reload(self, keep_place: bool = False) -> None:
        self.run_worker(self.load(keep_place), exclusive=True, group="list")

    async def load(self, keep_place: bool = False) -> None:
        frame = ListRecords(
            scope=self.scope,  # type: ignore[arg-type]
            kind=self.kind,  # type: ignore[arg-type]
            state=self.state_filter,
            text=self.text or None,
            limit=PAGE,
        )
        reply = await self.ask(frame)
        if not isinstance(reply, RecordList):
            return
        for record in reply.records:
            self.inbox.state.record_told(record)
        records = self.query_one("#records-list", VirtualList)
        records.set_rows(reply.records, render_record, cursor=None if keep_place else 0)
        filters = [f for f in (self.kind, self.state_filter, self.text and f"“{self.text}”") if f]
        title = f"Records: {self.scope} ({len(reply.records)})"
        self.query_one("#records-title", Label).update(" · ".join([title, *filters]))
        if reply.records and self.view is None:
            self.show_record(reply.records[0].number)

    @on(VirtualList.Highlighted, "#records-list")
    @on(VirtualList.Selected, "#records-list")
    def chosen(self, event: VirtualList.Highlighted) -> None:
        record: ServiceRecord = event.row
        if self.view is None or self.view.record.number != record.number:
            self.show_record(record.number)

    def refresh_areas(self, areas: set[str]) -> None:
        """Record events (tui/state.py): list again, in place (a change may bring a record
        into the list or take it out), and show the record again if it is the one changed."""
        if "records" in areas or "all" in areas:
            self.reload(keep_place=True)
        if self.view is not None and f"record:{self.view.record.number}" in areas:
            # The event has the record; its notes come with the view, so ask again.
            self.show_record(self.view.record.number)

    # ------------------------------------------------------------------ one record

    def show_record(self, number: str) -> None:
        self.run_worker(self.fetch(number), exclusive=True, group="record")

    async def fetch(self, number: str) -> None:
        reply = await self.ask(GetRecord(number=number))
        if isinstance(reply, RecordView):
            self.shown(reply)

    def shown(self, view: RecordView) -> None:
        self.view = view
        self.inbox.state.record_told(view.record)
        state = self.inbox.state
        r = view.record
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_row("Number", f"{r.number} ({r.kind})")
        table.add_row("Summary", r.short_description)
        table.add_row("State", r.state.replace("_", " "))
        table.add_row("Priority", str(r.priority))
        table.add_row("Assignee", state.name(r.assignee) if r.assignee else "-")
        table.add_row("Group", r.assignment_group or "-")
        table.add_row("Created", f"{_when(r.created_at)} by {state.name(r.created_by)}")
        if r.updated_by:
            table.add_row("Changed", f"{_when(r.updated_at)} by {state.name(r.updated_by)}")
        table.add_row("Linked", ", ".join(view.interactions) or "-")
        if r.description:
            table.add_row("Description", r.description)
        notes = [f"{_when(n.created_at)} {state.name(n.author)}: {n.body}" for n in view.notes]
        table.add_row("Work notes", "\n".join(notes) or "-")
        self.query_one("#record-detail", Static).update(table)
        self.query_one("#record-detail-title", Label).update(f"Record {r.number}")
        rows = self.query_one("#records-list", VirtualList)
        for index, row in enumerate(rows.rows):
            if row.number == r.number and row != r:
                rows.update_row(index, r)

    # ------------------------------------------------------------------ plumbing

    async def ask(self, frame: AnyClientFrame) -> object | None:
        """A command's answer; a refusal becomes a toast."""
        try:
            return await self.inbox.client.request(frame)
        except CALL_FAILURES as e:
            self.notify(failure_text(e), severity="error")
        return None

    def selected(self) -> RecordView | None:
        if self.view is None:
            self.notify("No record selected", severity="warning")
        return self.view

    async def change(self, **fields: object) -> None:
        view = self.selected()
        if view is None:
            return
        reply = await self.ask(UpdateRecord(number=view.record.number, **fields))  # type: ignore[arg-type]
        if isinstance(reply, RecordView):
            self.shown(reply)

    # ------------------------------------------------------------------ actions

    def action_scope(self, scope: str) -> None:
        self.scope = scope
        self.reload()

    def action_cycle_kind(self) -> None:
        self.kind = KINDS[(KINDS.index(self.kind) + 1) % len(KINDS)]
        self.reload()

    # Each action opens its dialog as the app takes the key (screens/asking.py), and a worker
    # carries on from the answer.

    def action_search(self) -> None:
        answer = ask(self.app, Prompt("Text in the short description", self.text))
        self.run_worker(self._search(answer))

    async def _search(self, answer: Awaitable[str | None]) -> None:
        text = await answer
        if text is not None:
            self.text = text.strip()[:200]
            self.reload()

    def action_filter_state(self) -> None:
        states = self.view.states if self.view is not None else []
        choices = [("any state", NOBODY)] + [(s.replace("_", " "), s) for s in states]
        self.run_worker(self._filter_state(ask(self.app, Picker("Only records in state", choices))))

    async def _filter_state(self, answer: Awaitable[str | None]) -> None:
        picked = await answer
        if picked is not None:
            self.state_filter = None if picked == NOBODY else picked
            self.reload()

    def change_picked(
        self,
        what: str,
        choices: Callable[[RecordView], list[tuple[str, str]]],
        field: str,
        value: Callable[[str], object] = str,
    ) -> None:
        """Pick `field`'s new value from `choices` of the selected record, and set it."""
        view = self.selected()
        if view is None:
            return
        answer = ask(self.app, Picker(f"{view.record.number}: {what}", choices(view)))

        async def picked() -> None:
            if (chosen := await answer) is not None:
                await self.change(**{field: value(chosen)})

        self.run_worker(picked())

    def action_set_state(self) -> None:
        self.change_picked(
            "state",
            lambda view: [(s.replace("_", " "), s) for s in view.states if s != view.record.state],
            "state",
        )

    def action_assign(self) -> None:
        agents = sorted(self.inbox.state.agents.values(), key=lambda a: a.display_name)
        choices = [("nobody", NOBODY)] + [(f"{a.display_name} ({a.id})", a.id) for a in agents]
        self.change_picked(
            "assign to", lambda view: choices, "assignee", lambda v: "" if v == NOBODY else v
        )

    def action_set_priority(self) -> None:
        choices = [(f"{p}{' (most urgent)' if p == 1 else ''}", str(p)) for p in range(1, 6)]
        self.change_picked("priority", lambda view: choices, "priority", int)

    def prompt_then(
        self, question: Prompt, then: Callable[[RecordView, str], Awaitable[None]]
    ) -> None:
        """Ask `question` about the selected record, and run `then` with the answer given."""
        view = self.selected()
        if view is None:
            return
        answer = ask(self.app, question)

        async def answered() -> None:
            if (text := await answer) is not None:
                await then(view, text)

        self.run_worker(answered())

    def action_assign_group(self) -> None:
        view = self.selected()
        if view is not None:
            current = view.record.assignment_group or ""
            question = Prompt(f"Group for {view.record.number} (empty: none)", current)
            self.prompt_then(question, self._set_group)

    async def _set_group(self, view: RecordView, group: str) -> None:
        await self.change(assignment_group=group.strip())

    def action_edit_short(self) -> None:
        view = self.selected()
        if view is not None:
            question = Prompt("Short description", view.record.short_description)
            self.prompt_then(question, self._set_short)

    async def _set_short(self, view: RecordView, text: str) -> None:
        if text.strip():
            await self.change(short_description=text.strip()[:200])

    def action_note(self) -> None:
        view = self.selected()
        if view is not None:
            self.prompt_then(Prompt(f"Work note on {view.record.number}"), self._add_note)

    async def _add_note(self, view: RecordView, body: str) -> None:
        if body.strip():
            reply = await self.ask(AddRecordNote(number=view.record.number, body=body[:16_000]))
            if isinstance(reply, RecordView):
                self.shown(reply)

    def action_link(self) -> None:
        view = self.selected()
        if view is not None:
            question = Prompt(
                f"Link {view.record.number} to interaction", self.chat or "", "IMS0001002"
            )
            self.prompt_then(question, self._link)

    async def _link(self, view: RecordView, number: str) -> None:
        if number.strip():
            reply = await self.ask(
                LinkRecord(number=view.record.number, interaction=number.strip())
            )
            if isinstance(reply, RecordView):
                self.shown(reply)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
