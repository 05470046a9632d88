"""Which browser pages may open the host's WebSockets (cross-site WebSocket hijacking).

No CORS rule protects a WebSocket: a page on any site can open `ws://host/agent` from an
agent's browser and speak the protocol. Browsers always send `Origin` on a handshake and
pages cannot forge it; consoles and other programs send none. So a handshake without Origin
is let through (the protocol's own login guards it), and one with an Origin must name the
host itself or a configured origin. The refusal comes before the upgrade, as HTTP 403.

"The host itself" is the request's scheme and Host header. Behind a reverse proxy that ends
TLS the host sees http while the browser says https: X-Forwarded-Proto is not trusted (anyone
reaching the host directly could send it), so such a deployment lists its public origin in
config instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiohttp import hdrs, web

from core.config import normalize_origin

log = logging.getLogger("inbox_tui.host")

SHOWN_ORIGIN_MAX = 100


def own_origin(request: web.Request) -> str | None:
    try:
        return normalize_origin(f"{request.scheme}://{request.host}")
    except ValueError:
        return None


def origin_allowed(request: web.Request, allowed: Iterable[str], *, any_origin: bool) -> bool:
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or any_origin:
        return True
    try:
        normalized = normalize_origin(origin)
    except ValueError:
        return False  # "null" (sandboxed frames, file: pages) and anything malformed
    return normalized == own_origin(request) or normalized in allowed


def check_origin(request: web.Request, allowed: Iterable[str], *, any_origin: bool = False) -> None:
    """Raise 403 for a browser page the host does not trust, with one log line."""
    if origin_allowed(request, allowed, any_origin=any_origin):
        return
    origin = request.headers.get(hdrs.ORIGIN, "")
    # %r keeps a hostile header on one log line.
    log.warning(
        "event=origin_refused path=%s origin=%r host=%r address=%s",
        request.path,
        origin[:SHOWN_ORIGIN_MAX],
        request.host[:SHOWN_ORIGIN_MAX],
        request.remote or "?",
    )
    raise web.HTTPForbidden(text="this origin may not open this socket\n")
