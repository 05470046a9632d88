"""The ongoing-messages tray: messaging conversations with a clock showing how many have
unread messages, and one card each (number, last update, green dot when there is news).
Focus it to pick a card with j/k; Enter opens that conversation in the chat pane."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static

from core.protocol import OngoingCard


def ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


class OngoingTray(Static, can_focus=True):
    DEFAULT_CSS = "OngoingTray { height: auto; }"
    BINDINGS = [
        ("j,down", "move(1)", "Down"),
        ("k,up", "move(-1)", "Up"),
        ("enter", "open", "Open"),
    ]

    cursor: reactive[int] = reactive(0)

    class Opened(Message):
        """The agent chose a card: show its conversation."""

        def __init__(self, interaction: str) -> None:
            super().__init__()
            self.interaction = interaction

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.cards: list[OngoingCard] = []
        self.unread = 0

    def on_mount(self) -> None:
        self.set_interval(30.0, self.redraw)  # "3 min ago" ages by itself

    def show(self, cards: list[OngoingCard], unread: int) -> None:
        # Cards re-sort as news arrives: keep the cursor on the same conversation.
        chosen = self.selected()
        self.cards, self.unread = cards, unread
        numbers = [c.interaction for c in cards]
        if chosen is not None and chosen.interaction in numbers:
            self.cursor = numbers.index(chosen.interaction)
        else:
            self.cursor = min(self.cursor, max(0, len(cards) - 1))
        self.redraw()

    def selected(self) -> OngoingCard | None:
        return self.cards[self.cursor] if 0 <= self.cursor < len(self.cards) else None

    def action_move(self, step: int) -> None:
        if self.cards:
            self.cursor = (self.cursor + step) % len(self.cards)
            self.redraw()

    def action_open(self) -> None:
        card = self.selected()
        if card is not None:
            self.post_message(self.Opened(card.interaction))

    def on_focus(self) -> None:
        self.redraw()  # the cursor marker shows only while the tray has the focus

    def on_blur(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        now = time.time()
        text = Text()
        text.append("🕑 Ongoing ", style="bold")
        text.append(f" {self.unread} ", style="bold white on red" if self.unread else "dim")
        text.append("\n")
        for i, card in enumerate(self.cards):
            # The chosen card stands out only while the tray has the focus (Enter opens it).
            chosen = self.has_focus and i == self.cursor
            text.append("● " if card.unread else "  ", style="bold green")
            text.append(f"{card.interaction} ", style="bold reverse" if chosen else "bold")
            text.append(f"{card.customer_name}", style="")
            text.append(f"  {ago(now - card.last_update)}", style="dim")
            if card.unread:
                text.append(f"  {card.unread} new", style="green")
            text.append("\n")
            if card.preview:
                preview = card.preview if len(card.preview) <= 60 else card.preview[:59] + "…"
                text.append(f"    {preview}\n", style="dim italic")
        if not self.cards:
            text.append("  no conversations\n", style="dim")
        self.update(text)
