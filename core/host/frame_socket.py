"""What a connection handler uses of its WebSocket: an aiohttp `WebSocketResponse` on a host's
own port, or a `RelayedSocket` (core/host/relay.py) for a socket an edge holds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from aiohttp import WSMessage, web
from aiohttp.http_websocket import WSMessageTextBytes

Received = WSMessage | WSMessageTextBytes

log = logging.getLogger("inbox_tui.host")


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


async def handshake(request: web.Request, ws: web.WebSocketResponse) -> web.StreamResponse | None:
    """Answer the upgrade. None when done; when the client left before the answer could be
    written (a reload, a closed tab, a balancer's probe), the response to end the request with
    instead. That is not the host's error, but aiohttp would log it as one, with a traceback,
    and the half-prepared socket cannot be returned either. The response is never written
    (the client is gone); the access log shows 499, "client closed request" as nginx logs it."""
    try:
        await ws.prepare(request)
    except ConnectionResetError:
        log.info(
            "event=socket_gone_before_handshake path=%s address=%s", request.path, request.remote
        )
        return web.Response(status=499, reason="Client Closed Request")
    return None
