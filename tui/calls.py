"""Calling the host from the console: whatever can go wrong becomes words for the agent.

An exception out of a key handler or a worker ends the whole Textual app, and with it the
agent's draft and place, so every screen catches CALL_FAILURES around its client calls.
"""

from __future__ import annotations

import aiohttp

from core.client import ClientError

CALL_FAILURES = (ClientError, TimeoutError, OSError, aiohttp.ClientError)


def failure_text(e: BaseException) -> str:
    if isinstance(e, ClientError):
        return e.message
    if isinstance(e, TimeoutError):
        return "The host did not answer in time"
    return f"Cannot reach the host: {e}"
