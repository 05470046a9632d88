"""A yes/no question before something a customer would notice (ending a live chat).

Only `y` confirms: Enter does not, so a reply typed ahead and sent with Enter can never end the
chat it was meant for. `n` and Escape cancel. Every other key is swallowed here, so the rest
of a burst of keys does not run as commands on the screen underneath.
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label


class Confirm(ModalScreen[bool]):
    BINDINGS = [
        ("y", "dismiss(True)", "Yes"),
        ("n,escape", "dismiss(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question)
            yield Label("y: yes    n or Escape: no", classes="hint")

    def on_key(self, event: events.Key) -> None:
        if event.key not in ("y", "n", "escape"):
            event.stop()
            event.prevent_default()
