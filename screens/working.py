"""A screen whose workers draw on it once the host has answered.

Textual takes a screen's widgets down before it cancels the screen's workers (Textual issue
6361; the order is the same in 8.2.8, the version here): a worker whose answer arrives in
between finds no widgets, and the NoMatches it raises ends the whole console, the agent's
drafts with it. That happened when Escape popped a screen during a load, and when the console
quit while a transcript was still on its way. Cancelled as the screen is told to go, before
any widget is removed, a worker ends at its await instead.
"""

from __future__ import annotations

from typing import TypeVar

from textual.messages import Prune
from textual.screen import Screen

T = TypeVar("T")


class WorkingScreen(Screen[T]):
    async def on_prune(self, event: Prune) -> None:
        # Textual calls the handler of each class in the MRO, so Widget.on_prune (which takes
        # the widgets down) runs after this one without a super() call.
        self.workers.cancel_node(self)
