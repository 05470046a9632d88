"""A text attachment shown in the console, read-only; Escape closes."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, TextArea


class FileView(ModalScreen[None]):
    BINDINGS = [("escape", "dismiss(None)", "Close")]

    def __init__(self, name: str, text: str) -> None:
        super().__init__()
        self.file_name, self.text = name, text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog file-view"):
            yield Label(f"{self.file_name} (Escape closes)")
            yield TextArea(self.text, read_only=True, soft_wrap=True, id="file-text")
