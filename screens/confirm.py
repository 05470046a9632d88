"""A yes/no question before something a customer would notice (ending a live chat).

Only `y` confirms: Enter does not, so a reply typed ahead and sent with Enter can never end the
chat it was meant for. `n` and Escape cancel. Every other key is swallowed here, so the rest
of a burst of keys does not run as commands on the screen underneath. Nor does a `y` that
comes before anyone could have read the question (READ_TIME): a word typed with the focus
off the composer, "every" say, opened the question on its `e` and answered it on its `y`.
"""

from __future__ import annotations

import time

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label

# Seconds after the question is shown during which `y` is taken as typed ahead, not an answer.
READ_TIME = 0.4


class Confirm(ModalScreen[bool]):
    BINDINGS = [
        ("y", "yes", "Yes"),
        ("n,escape", "dismiss(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question
        self.shown_at = time.monotonic()

    def on_mount(self) -> None:
        self.shown_at = time.monotonic()

    def action_yes(self) -> None:
        if time.monotonic() - self.shown_at >= READ_TIME:
            self.dismiss(True)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question)
            yield Label("y: yes    n or Escape: no", classes="hint")

    def on_key(self, event: events.Key) -> None:
        if event.key not in ("y", "n", "escape"):
            event.stop()
            event.prevent_default()
