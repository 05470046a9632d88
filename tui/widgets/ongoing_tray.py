"""The ongoing-messages tray: messaging conversations with a clock showing how many have
unread messages, and one card each (number, last update, green dot when there is news)."""

from __future__ import annotations

import time

from rich.text import Text
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


class OngoingTray(Static):
    DEFAULT_CSS = "OngoingTray { height: auto; }"

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.cards: list[OngoingCard] = []
        self.unread = 0

    def on_mount(self) -> None:
        self.set_interval(30.0, self.redraw)  # "3 min ago" ages by itself

    def show(self, cards: list[OngoingCard], unread: int) -> None:
        self.cards, self.unread = cards, unread
        self.redraw()

    def redraw(self) -> None:
        now = time.time()
        text = Text()
        text.append("🕑 Ongoing ", style="bold")
        text.append(f" {self.unread} ", style="bold white on red" if self.unread else "dim")
        text.append("\n")
        for card in self.cards:
            text.append("● " if card.unread else "  ", style="bold green")
            text.append(f"{card.interaction} ", style="bold")
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
