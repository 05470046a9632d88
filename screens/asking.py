"""Opening a dialog as the app takes the key that asks for it.

Opened from a worker instead, a dialog comes up after the keys typed behind its key in one
burst (a quick typist, SSH, tmux) have run as commands on the screen underneath: `x` and a
reason beginning "they" ended a live chat (`e`, then `y` in the question that came up).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from textual.app import App
from textual.screen import Screen

T = TypeVar("T")


def ask(app: App[Any], dialog: Screen[T]) -> asyncio.Future[T | None]:
    """Push `dialog` now, and return its answer to await (in a worker)."""
    answer: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()

    def answered(result: T | None) -> None:
        if not answer.done():
            answer.set_result(result)

    app.push_screen(dialog, callback=answered)
    return answer
