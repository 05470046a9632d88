"""Calling the host from the console: whatever can go wrong becomes words for the agent.

An exception out of a key handler or a worker ends the whole Textual app, and with it the
agent's draft and place, so every screen catches CALL_FAILURES around its client calls.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from textual.screen import Screen

from core.client import ClientError

CALL_FAILURES = (ClientError, TimeoutError, OSError, aiohttp.ClientError)


def failure_text(e: BaseException) -> str:
    if isinstance(e, ClientError):
        return e.message
    if isinstance(e, TimeoutError):
        return "The host did not answer in time"
    return f"Cannot reach the host: {e}"


def still_shown(screen: Screen[Any]) -> bool:
    """Whether an answer that took a while still has a screen to draw on. Escape pops a screen
    at once but takes its widgets down a little later, and its workers later still: an answer
    arriving in between finds no widgets, and querying them would end the app."""
    return screen in screen.app.screen_stack
