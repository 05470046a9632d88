"""Service-level alerts on a supervisor's screen: a toast each (with the bell and a desktop
notification as [alerts] in console.toml says) while they come singly; once they come faster
than one every QUIET seconds, the rest of the burst is held and shown as one summary toast
when it ends. A floor in trouble crosses targets by the dozen, and a toast each buried the
screen (seen in the demo) and rang the bell a dozen times."""

from __future__ import annotations

import os
import time
from typing import Any

from textual.app import App

from core.sla import SlaLevel, worst
from tui.alerts import desktop_notification
from tui.settings import AlertSettings

QUIET = 5.0  # seconds between toasts; alerts closer together are summed up


class SlaToasts:
    def __init__(self, app: App[Any], settings: AlertSettings) -> None:
        self.app = app
        self.settings = settings
        self.last = -QUIET  # when the last toast went up (monotonic)
        self.held: list[tuple[SlaLevel, str]] = []

    def show(self, alerts: list[tuple[SlaLevel, str]]) -> None:
        """Take the alerts (level, text) the console state gathered, emptying the list."""
        while alerts:
            level, text = alerts.pop(0)
            wait = self.last + QUIET - time.monotonic()
            if wait <= 0 and not self.held:
                self._toast(level, text)
                continue
            if not self.held:
                self.app.set_timer(max(wait, 0.0), self._flush)
            self.held.append((level, text))

    def _flush(self) -> None:
        held, self.held = self.held, []
        if len(held) == 1:
            self._toast(*held[0])
        elif held:
            level = worst(*(level for level, _ in held))
            self._toast(level, f"{len(held)} more alerts; the latest: {held[-1][1]}")

    def _toast(self, level: SlaLevel, text: str) -> None:
        self.last = time.monotonic()
        breached = level == SlaLevel.BREACHED
        self.app.notify(
            text,
            title="Service level",
            severity="error" if breached else "warning",
            timeout=15 if breached else 8,
        )
        if self.settings.bell:
            self.app.bell()
        driver = self.app._driver
        if self.settings.desktop and driver is not None:
            tmux = bool(os.environ.get("TMUX"))
            escape = desktop_notification(
                self.settings.desktop_sequence, "inbox-tui", text, tmux=tmux
            )
            driver.write(escape)
