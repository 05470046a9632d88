"""The command palette: every action as "area: action", so nothing needs a key to be found, and
with the keys that run it, "chat: transfer (t, ^t)", so the palette teaches them. The keys come
from the bindings in force (the user's [keymap] included); the names from tui/actions.py."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.actions import MAIN_ACTIONS, palette_actions


class InboxCommands(Provider):
    def named(self) -> list[tuple[str, str]]:
        """(name with its keys, action) for each command."""
        keys_for = self.app.keys_for  # type: ignore[attr-defined]
        out = []
        # A screen with actions of its own (the records screen) lists those.
        for a in palette_actions(getattr(self.screen, "ACTIONS", MAIN_ACTIONS)):
            keys = keys_for(a.action, self.screen)
            out.append((f"{a.palette} ({keys})" if keys else a.palette, a.action))
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
