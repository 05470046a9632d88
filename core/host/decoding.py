"""Decoding what clients send, with the garbage collector paused.

msgspec recurses once per nesting level, also while skipping a field it does not know, and
raises RecursionError at the interpreter's limit; arrays nested thousands deep fit under every
frame size limit here. A collection started that deep would run the host's gc callbacks (the
metrics) where they cannot run ("Exception ignored in gc callback"), so the collector is
paused for the decode: microseconds for the frames the host accepts. Callers treat
UNREADABLE as unreadable input.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from core.protocol import Ref

T = TypeVar("T")

__all__ = ["UNREADABLE", "decode", "ref_of"]

# msgspec reports a string that is not UTF-8 as UnicodeDecodeError, not as a DecodeError, and
# nesting deeper than the interpreter's recursion limit as RecursionError.
UNREADABLE = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def decode(decoder: Callable[[Any], T], data: bytes | str) -> T:
    # Any: msgpack decoders take a buffer, JSON ones text or bytes; `data` says what comes.
    paused = gc.isenabled()
    gc.disable()
    try:
        return decoder(data)
    finally:
        if paused:
            gc.enable()


class _Addressed(msgspec.Struct, frozen=True, gc=False):
    ref: Ref = 0


_addressed = msgspec.msgpack.Decoder(_Addressed)


def ref_of(data: bytes) -> int:
    """The `ref` of a frame the protocol refused, so that the error answers the client's
    call and it fails at once instead of waiting out its timeout; 0 when no ref can be read.
    Every other field is skipped unchecked: an attachment over its limit still has a ref."""
    try:
        return decode(_addressed.decode, data).ref
    except UNREADABLE:
        return 0
