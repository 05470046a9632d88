"""The presence switcher in the header: Available, Away, Offline and the configured states."""

from __future__ import annotations

from typing import Any

from textual.widgets import Select

from core.model import PresenceState


class PresenceSwitcher(Select[str]):
    DEFAULT_CSS = "PresenceSwitcher { width: 26; }"

    def __init__(self, **kw: Any) -> None:
        super().__init__([], allow_blank=True, prompt="Presence", compact=True, **kw)

    def show(self, presences: list[PresenceState], current: str) -> None:
        options = [(p.label or p.name, p.name) for p in presences]
        if [v for _, v in options] != [v for _, v in self._options if v is not Select.BLANK]:
            self.set_options(options)
        if self.value != current:
            with self.prevent(Select.Changed):
                self.value = current
