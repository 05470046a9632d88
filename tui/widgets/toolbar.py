"""(C) The chat actions, greyed out when they do not apply to the selected chat."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button

from core.model import InteractionState
from tui.actions import When, toolbar_actions
from tui.state import Chat


class Toolbar(Horizontal):
    DEFAULT_CSS = """
    Toolbar { height: auto; }
    Toolbar Button { min-width: 6; margin: 0 1 0 0; }
    """

    def compose(self) -> ComposeResult:
        for a in toolbar_actions():
            # The button's name is the action the main screen runs when it is pressed.
            yield Button(a.label, id=f"tool-{a.id.split('.')[-1]}", name=a.action, compact=True)

    def show(self, chat: Chat | None, mine: bool) -> None:
        live = chat is not None and chat.record.state == InteractionState.WORK_IN_PROGRESS
        for a, button in zip(toolbar_actions(), self.query(Button), strict=True):
            button.disabled = not live or (a.when == When.OWN_LIVE_CHAT and not mine)
