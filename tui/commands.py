"""The command palette: every action as "area: action", so nothing needs a key to be found, and
with the keys that run it, "chat: transfer (t, ^t)", so the palette teaches them. The keys come
from the bindings in force (the user's [keymap] included), never from a table here."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

COMMANDS = [
    ("offer: accept", "accept_offer"),
    ("offer: reject", "reject_offer"),
    ("chat: next unread", "next_unread"),
    ("chat: compose", "compose"),
    ("chat: mark read", "mark_read"),
    ("chat: transfer", "chat_transfer"),
    ("chat: add agent", "chat_invite"),
    ("chat: join invitation", "join"),
    ("chat: attach file", "chat_attach"),
    ("chat: insert template", "chat_template"),
    ("chat: work note", "work_note"),
    ("chat: end", "chat_end"),
    ("record: close", "record_close"),
    ("record: create incident", "record_incident"),
    ("record: create case", "record_case"),
    ("record: archive", "record_archive"),
    ("presence: available", "presence('Available')"),
    ("presence: away", "presence('Away')"),
    ("presence: offline", "presence('Offline')"),
    ("presence: choose", "pick_presence"),
    ("view: history", "history"),
    ("view: supervisor (all queues and agents)", "supervise"),
    ("view: queues pane", "show_pane('pane-queues')"),
    ("view: chat pane", "show_pane('pane-chat')"),
    ("view: record pane", "show_pane('pane-record')"),
]


class InboxCommands(Provider):
    def named(self) -> list[tuple[str, str]]:
        """(name with its keys, action) for each command."""
        keys_for = self.app.keys_for  # type: ignore[attr-defined]
        out = []
        for name, action in COMMANDS:
            keys = keys_for(action, self.screen)
            out.append((f"{name} ({keys})" if keys else name, action))
        return out

    async def discover(self) -> Hits:
        for name, action in self.named():
            yield DiscoveryHit(name, partial(self.run, action), text=name)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, action in self.named():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self.run, action), text=name)

    async def run(self, action: str) -> None:
        await self.screen.run_action(action)
