"""(B) Replies the host has not acknowledged yet, under the transcript of their chat.

They are not in the transcript itself: that holds what the host stored, in its seq order, and
a pending reply has no seq until the host commits it. Once it does, its message event puts it
in the transcript and it leaves this list."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.state import Outgoing

PREVIEW = 200  # characters of a long pending reply shown; the whole body is still sent


class OutboxView(Static):
    DEFAULT_CSS = """
    OutboxView {
        height: auto;
        max-height: 6;
        color: $text-muted;
        text-style: dim;
        display: none;
        &.-waiting { display: block; }
    }
    """

    def show(self, pending: list[Outgoing]) -> None:
        self.set_class(bool(pending), "-waiting")
        text = Text()
        for reply in pending:
            body = " ".join(reply.body.split())
            if len(body) > PREVIEW:
                body = body[:PREVIEW] + "…"
            status = f"not sent: {reply.failed}" if reply.failed else "sending… (pending)"
            text.append(f"  {status}  ", style="italic")
            text.append(body)
            text.append("\n")
        text.rstrip()
        self.update(text)
