"""What a connection handler uses of its WebSocket: an aiohttp `WebSocketResponse` on a host's
own port, or a `RelayedSocket` (core/host/relay.py) for a socket an edge holds."""

from __future__ import annotations

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
