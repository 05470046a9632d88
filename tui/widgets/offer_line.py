"""One line above the footer on narrow terminals: the offer `a` would accept and its countdown,
whichever pane is shown. The queues pane, where the full offer list lives, is hidden behind F2
there, and an offer left unseen times out."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from tui.widgets.offer_list import OfferList, countdown


class OfferLine(Static):
    DEFAULT_CSS = "OfferLine { height: 1; padding: 0 1; }"

    def __init__(self, offers: OfferList, **kw: Any) -> None:
        super().__init__(**kw)
        # The list owns the offers and the cursor: the line shows the same row `a` accepts.
        self.offers = offers

    def on_mount(self) -> None:
        self.set_interval(1.0, self.redraw)
        self.redraw()

    def redraw(self) -> None:
        view = self.offers.selected()
        if view is None:
            self.update(Text("No offers", style="dim"))
            return
        text = Text("Offer: ", style="bold")
        text.append(view.customer_name or view.item.customer, style="bold reverse")
        kind = "transfer" if view.offer.kind == "transfer" else view.item.channel
        text.append(f"  {kind}  ", style="cyan")
        text.append_text(countdown(view))
        more = len(self.offers.offers) - 1
        if more:
            text.append(f"  +{more} more (F2)", style="dim")
        self.update(text)
