"""(B) My chats, as tabs down the side: unread first-class, live before wrap-up."""

from __future__ import annotations

from rich.text import Text

from tui.state import Chat
from tui.widgets.virtual_list import VirtualList


def render_chat(chat: Chat, width: int, selected: bool) -> Text:
    r = chat.record
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("● " if chat.unread else "  ", style="bold green")
    text.append(f"{r.customer_name or r.customer}", style="bold" if chat.unread else "")
    text.append(f" {r.channel}", style="cyan")
    if r.state == "wrap_up":
        text.append(" wrap-up", style="yellow")
    if chat.typing:
        text.append(" …", style="dim")
    text.truncate(width)
    return text


class ChatList(VirtualList[Chat]):
    def show(self, chats: list[Chat], current: str | None) -> None:
        self.set_rows(chats, render_chat)
        numbers = [c.number for c in chats]
        if current in numbers:
            self.cursor = numbers.index(current)
