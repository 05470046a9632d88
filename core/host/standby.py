"""What a host of a cluster answers while another one routes: 503 to everything, and
`/healthz` says "standby", so a load balancer sends consoles, customers and integrations to
the host that routes. The consoles retry by themselves; the first host to win the routing role
after the router is gone starts serving on the same port."""

from __future__ import annotations

import socket
from collections.abc import Callable

from aiohttp import web

WHY: web.AppKey[Callable[[], str]] = web.AppKey("why")


async def _standby(request: web.Request) -> web.Response:
    if request.path == "/healthz":
        health = {"status": "standby", "reason": request.app[WHY]()}
        return web.json_response(health, status=503)
    body = {
        "error": {
            "code": "unavailable",
            "message": "this host is standing by; try the host that routes, or again shortly",
        }
    }
    return web.json_response(body, status=503, headers={"Retry-After": "1"})


async def standby_site(sock: socket.socket, why: Callable[[], str]) -> web.AppRunner:
    """Serve the standby answers on a duplicate of `sock` until the returned runner is
    cleaned up; `why` says why this host does not route, for /healthz."""
    app = web.Application()
    app[WHY] = why
    app.router.add_route("*", "/{tail:.*}", _standby)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock.dup(), shutdown_timeout=1.0).start()
    return runner
