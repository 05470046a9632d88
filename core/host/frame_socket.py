"""What a connection handler uses of its WebSocket: an aiohttp `WebSocketResponse` on a host's
own port, or a `RelayedSocket` (core/host/relay.py) for a socket an edge holds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol

from aiohttp import WSMessage
from aiohttp.http_websocket import WSMessageTextBytes

Received = WSMessage | WSMessageTextBytes


class FrameSocket(Protocol):
    @property
    def closed(self) -> bool: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def send_str(self, data: str) -> None: ...

    async def receive(self, timeout: float | None = None) -> Received: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...

    def __aiter__(self) -> FrameSocket: ...

    async def __anext__(self) -> Received: ...


async def close_all(sockets: Iterable[FrameSocket], code: int, message: bytes) -> None:
    """Close every one of `sockets` at once. A close waits for the peer's close frame, up to
    aiohttp's 10 s for a peer that has stopped reading: one after the other, each stuck
    console would hold a host that stops, or hands its sockets over, for that long."""
    await asyncio.gather(
        *(ws.close(code=code, message=message) for ws in list(sockets)), return_exceptions=True
    )
