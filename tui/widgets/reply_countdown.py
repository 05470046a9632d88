"""Time left for the first reply on a live chat. When it runs out the host takes the chat
back and offers it to another agent (the queue's `reply_deadline`); the agent sees that coming
instead of finding the chat gone."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.widgets import Static


class ReplyCountdown(Static):
    DEFAULT_CSS = "ReplyCountdown { height: auto; padding: 0 1; }"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.deadline: float | None = None

    def on_mount(self) -> None:
        self.set_interval(1.0, self.redraw)

    def show(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.redraw()

    def redraw(self) -> None:
        self.display = self.deadline is not None
        if self.deadline is None:
            return
        left = max(0, int(self.deadline - time.time()))
        style = "bold red" if left <= 15 else "yellow"
        text = Text("First reply due in ", style=style)
        text.append(f"{left // 60}:{left % 60:02d}", style=f"{style} reverse")
        text.append(" or the chat goes to another agent", style=style)
        self.update(text)
