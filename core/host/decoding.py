"""Decoding what clients send, with the garbage collector paused.

msgspec recurses once per nesting level, also while skipping a field it does not know, and
raises RecursionError at the interpreter's limit; arrays nested thousands deep fit under every
frame size limit here. A collection started that deep would run the host's gc callbacks (the
metrics) where they cannot run ("Exception ignored in gc callback"), so the collector is
paused for the decode: microseconds for the frames the host accepts. Callers treat
RecursionError as unreadable input.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["decode"]


def decode(decoder: Callable[[bytes | str], T], data: bytes | str) -> T:
    paused = gc.isenabled()
    gc.disable()
    try:
        return decoder(data)
    finally:
        if paused:
            gc.enable()
