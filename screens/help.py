"""`?`: every binding, by context, with the keys in force (after any remapping)."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [("escape,q,question_mark", "dismiss(None)", "Close")]

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        """`rows`: (context, keys, description)."""
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        table = Table(
            title="Keys (Escape closes)",
            caption="Letters act outside text fields; ctrl+ (^) and F keys work while typing too",
            expand=True,
            header_style="bold",
        )
        table.add_column("Context", style="cyan", no_wrap=True)
        table.add_column("Keys", style="bold", no_wrap=True)
        table.add_column("Action")
        for context, keys, description in self.rows:
            table.add_row(context, keys, description)
        with VerticalScroll(classes="dialog wide"):
            yield Static(table)
