"""(A) Pending offers, each with a live countdown to its accept time limit, what the customer
wants (the item's subject or short_description, else the first message) and the item's other
details as its channel shows them (severity, category, ...); `r` shows
the routing reason too, so the agent can see why it came to them."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from core.protocol import OfferView


def wants(view: OfferView) -> str:
    """What the customer asks for: the item's `subject` or `short_description` (set by
    channels and integrations), else the customer's first message, on one line."""
    for key in ("subject", "short_description"):
        value = view.item.attributes.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return " ".join(view.first_message.split())


def countdown(view: OfferView) -> Text:
    """Seconds left to accept `view`, red in the last ten: shared by the list and the line."""
    left = max(0, int(view.offer.deadline - time.time()))
    return Text(f"{left:>3}s", style="bold red" if left <= 10 else "yellow")


class OfferList(Static, can_focus=True):
    DEFAULT_CSS = "OfferList { height: auto; min-height: 1; }"
    BINDINGS = [
        ("j,down", "move(1)", "Down"),
        ("k,up", "move(-1)", "Up"),
        ("r", "toggle_reasons", "Why me"),
    ]

    cursor: reactive[int] = reactive(0)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.offers: list[OfferView] = []
        self.reasons = False  # what the customer wants comes first; the reason on `r`

    def on_mount(self) -> None:
        # The countdown is the point of this widget: redraw every second.
        self.set_interval(1.0, self.redraw)

    def show(self, offers: list[OfferView]) -> None:
        self.offers = offers
        self.cursor = min(self.cursor, max(0, len(offers) - 1))
        self.redraw()

    def selected(self) -> OfferView | None:
        return self.offers[self.cursor] if self.offers else None

    def action_move(self, step: int) -> None:
        if self.offers:
            self.cursor = (self.cursor + step) % len(self.offers)
            self.redraw()

    def action_toggle_reasons(self) -> None:
        self.reasons = not self.reasons
        self.redraw()

    def redraw(self) -> None:
        if not self.offers:
            self.update(Text("No offers", style="dim"))
            return
        text = Text()
        for i, view in enumerate(self.offers):
            marker = "▶ " if i == self.cursor else "  "
            kind = "transfer" if view.offer.kind == "transfer" else view.item.channel
            who = view.customer_name or view.item.customer
            # The row `a` would accept stands out whether or not the list has focus: that key
            # works from anywhere on the screen.
            style = "bold reverse" if i == self.cursor else "bold"
            text.append(f"{marker}{who}", style=style)
            text.append(f"  {kind}  ", style="cyan")
            text.append_text(countdown(view))
            text.append(f"  {view.interaction or ''}\n", style="dim")
            want = wants(view)
            if want:
                text.append(f"    {want}\n", style="italic")
            about = " · ".join(f"{d.label}: {d.value}" for d in view.details if d.value != want)
            if about:
                text.append(f"    {about}\n")
            # Without a subject the reason is all there is to say about the offer.
            if self.reasons or not want:
                text.append(f"    {view.offer.reason}\n", style="dim italic")
        self.update(text)
