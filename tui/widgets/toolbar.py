"""(C) The chat actions, greyed out when they do not apply to the selected chat."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button

from core.model import InteractionState
from tui.state import Chat

# button id -> (label, action on the main screen)
ACTIONS = {
    "tool-attach": ("Attach", "chat_attach"),
    "tool-invite": ("Add agent", "chat_invite"),
    "tool-transfer": ("Transfer", "chat_transfer"),
    "tool-template": ("Template", "chat_template"),
    "tool-end": ("End chat", "chat_end"),
}


class Toolbar(Horizontal):
    DEFAULT_CSS = """
    Toolbar { height: auto; }
    Toolbar Button { min-width: 6; margin: 0 1 0 0; }
    """

    def compose(self) -> ComposeResult:
        for button_id, (label, _) in ACTIONS.items():
            yield Button(label, id=button_id, compact=True)

    def show(self, chat: Chat | None, mine: bool) -> None:
        live = chat is not None and chat.record.state == InteractionState.WORK_IN_PROGRESS
        for button in self.query(Button):
            owner_only = button.id in ("tool-transfer", "tool-end")
            button.disabled = not live or (owner_only and not mine)
