"""What a host of a cluster serves while another one routes: every socket and request, relayed
over the bus to the router (core/host/relay.py serves them there).

The edge terminates WebSockets and HTTP on its own port, checks origins, and serves the widget's
page and script itself; sessions, messages and routing are the router's, so an edge holds no
state a crash could lose. When the router goes (silent on the bus, or replaced by another), its
sockets here are closed with 1012 and the consoles and widgets resume through the new one.
While no router is heard, or the bus is away, new sockets and requests get `unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from core.config import HostConfig
from core.host import widget
from core.host.agent_socket import HEARTBEAT
from core.host.bus import (
    BINARY,
    CLOSE,
    TEXT,
    Bus,
    Reassembly,
    close_frame,
    frames,
    new_conn_id,
    parse,
)
from core.host.origins import check_origin
from core.host.relay import (
    HTTP_TIMEOUT,
    Opened,
    OpenSocket,
    RelayedRequest,
    RelayedResponse,
    error_response,
)
from core.protocol import CLOSE_NOT_READING, MAX_FRAME_BYTES
from core.service.sessions import OUTGOING_LIMIT

log = logging.getLogger("inbox_tui.edge")

OPEN_TIMEOUT = 2.0
# The hop-by-hop headers aiohttp sets itself on the way out.
NOT_COPIED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})

Outgoing = tuple[bytes, bytes]  # (op, data)


@dataclass(eq=False)
class Bridged:
    ws: web.WebSocketResponse
    conn: str
    kind: str
    router: str = ""
    out: asyncio.Queue[Outgoing] = field(
        default_factory=lambda: asyncio.Queue(maxsize=OUTGOING_LIMIT)
    )
    closed_by_router: bool = False


@dataclass
class Edge:
    config: HostConfig
    bus: Bus
    started_at: float = field(default_factory=time.time)
    sockets: dict[str, Bridged] = field(default_factory=dict)
    _pieces: Reassembly = field(default_factory=Reassembly)
    _subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self.bus.client.subscribe(
            self.bus.edge_inbox(self.bus.process), cb=self._frame
        )
        self.bus.on_gone.append(self._router_gone)

    async def stop(self) -> None:
        if self._router_gone in self.bus.on_gone:
            self.bus.on_gone.remove(self._router_gone)
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def close_sockets(self, app: web.Application) -> None:
        """On shutdown, or when this host starts routing: the consoles and widgets come back
        (here, as the router, or through another edge)."""
        for bridged in list(self.sockets.values()):
            await bridged.ws.close(code=WSCloseCode.GOING_AWAY, message=b"host shutting down")

    def why_not(self) -> str | None:
        """Why this edge cannot serve now; None when it can."""
        if self.bus.trouble is not None:
            return self.bus.trouble
        if self.bus.routing is None:
            return "no routing host is heard on the bus"
        return None

    # ------------------------------------------------------------------ frames from the router

    async def _frame(self, msg: Msg) -> None:
        try:
            conn, op, data = parse(msg.data)
        except ValueError:
            return
        bridged = self.sockets.get(conn)
        if bridged is None:
            return
        if op == CLOSE:
            bridged.closed_by_router = True
        else:
            whole = self._pieces.add(conn, op, data)
            if whole is None:
                return
            data = whole
        try:
            bridged.out.put_nowait((op, data))
        except asyncio.QueueFull:
            # The client is not reading: drop it, as the router would its own socket; the
            # console resumes and catches up from its session's buffer.
            log.info("event=edge_socket_not_reading conn=%s", conn)
            code = CLOSE_NOT_READING if bridged.kind == "agent" else WSCloseCode.POLICY_VIOLATION
            asyncio.get_running_loop().create_task(
                bridged.ws.close(code=code, message=b"not reading")
            )

    def _router_gone(self, process: str) -> None:
        for bridged in [b for b in self.sockets.values() if b.router == process]:
            log.info("event=edge_socket_router_gone conn=%s router=%s", bridged.conn, process)
            with contextlib.suppress(asyncio.QueueFull):
                bridged.out.put_nowait(
                    (CLOSE, WSCloseCode.SERVICE_RESTART.to_bytes(2, "big") + b"routing host moved")
                )

    # ------------------------------------------------------------------ sockets

    async def bridge(self, request: web.Request, kind: str) -> web.StreamResponse:
        why = self.why_not()
        if why is not None:
            return _response(error_response(503, "unavailable", why))
        limit = MAX_FRAME_BYTES if kind == "agent" else widget.TRANSPORT_MAX_FRAME
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=limit)
        await ws.prepare(request)
        nc = self.bus.client
        # Opened on the router followed now; if it goes meanwhile, _router_gone closes this.
        bridged = Bridged(ws, new_conn_id(), kind, router=self.bus.routing or "")
        self.sockets[bridged.conn] = bridged
        opening = OpenSocket(
            kind=kind, conn=bridged.conn, edge=self.bus.process, address=request.remote or "?"
        )
        try:
            reply = await nc.request(
                self.bus.router_subject(bridged.router, "open"),
                msgspec.msgpack.encode(opening),
                timeout=OPEN_TIMEOUT,
            )
            msgspec.msgpack.decode(reply.data, type=Opened)
        except (NatsError, TimeoutError, msgspec.DecodeError) as e:
            del self.sockets[bridged.conn]
            log.info("event=edge_open_failed kind=%s error=%s", kind, e or type(e).__name__)
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"no routing host; retry")
            return ws
        writer = asyncio.get_running_loop().create_task(self._write(bridged))
        subject = self.bus.router_subject(bridged.router, "in")
        # The reply subject names this edge: a router that does not know the socket says so.
        mine = self.bus.edge_inbox(self.bus.process)
        try:
            async for message in ws:
                if message.type == WSMsgType.BINARY:
                    op, data = BINARY, message.data
                elif message.type == WSMsgType.TEXT:
                    op, data = TEXT, message.data.encode()
                else:
                    continue
                for payload in frames(bridged.conn, op, data, nc.max_payload):
                    await nc.publish(subject, payload, reply=mine)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self.sockets.pop(bridged.conn, None)
            self._pieces.forget(bridged.conn)
            if not bridged.closed_by_router:
                with contextlib.suppress(Exception):
                    code = ws.close_code or WSCloseCode.OK
                    await nc.publish(subject, close_frame(bridged.conn, code, b""))
        return ws

    async def _write(self, bridged: Bridged) -> None:
        ws = bridged.ws
        with contextlib.suppress(ConnectionResetError):
            while not ws.closed:
                op, data = await bridged.out.get()
                if op == CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else WSCloseCode.OK
                    await ws.close(code=code, message=data[2:])
                    return
                if op == TEXT:
                    await ws.send_str(data.decode())
                else:
                    await ws.send_bytes(data)

    # ------------------------------------------------------------------ HTTP

    async def relay_http(self, request: web.Request) -> web.StreamResponse:
        why = self.why_not()
        if why is not None:
            return _response(error_response(503, "unavailable", why))
        body = await request.read()
        relayed = RelayedRequest(
            method=request.method,
            path=request.path_qs,
            headers=[(str(name), value) for name, value in request.headers.items()],
            body=body,
            remote=request.remote or "?",
        )
        payload = msgspec.msgpack.encode(relayed)
        nc = self.bus.client
        if len(payload) > nc.max_payload:
            return _response(
                error_response(
                    413, "too_large", f"requests relayed over the bus are at most {nc.max_payload}"
                )
            )
        try:
            subject = self.bus.router_subject(self.bus.routing or "", "http")
            reply = await nc.request(subject, payload, timeout=HTTP_TIMEOUT)
            answer = msgspec.msgpack.decode(reply.data, type=RelayedResponse)
        except (NatsError, TimeoutError, msgspec.DecodeError) as e:
            message = f"the routing host did not answer: {e or type(e).__name__}"
            return _response(error_response(503, "unavailable", message))
        return _response(answer)

    # ------------------------------------------------------------------ health

    async def healthz(self, request: web.Request) -> web.Response:
        why = self.why_not()
        body: dict[str, object] = {
            "status": "ok" if why is None else "unavailable",
            "role": "edge",
            "process": self.bus.process,
            "router": self.bus.routing,
            "uptime": round(time.time() - self.started_at, 3),
            "relayed_sockets": len(self.sockets),
        }
        if why is not None:
            body["reason"] = why
        return web.json_response(body, status=200 if why is None else 503)


def _response(answer: RelayedResponse) -> web.Response:
    response = web.Response(status=answer.status, body=answer.body)
    for name, value in answer.headers:
        if name.lower() not in NOT_COPIED:
            response.headers.add(name, value)
    return response


EDGE = web.AppKey("edge", Edge)


def create_edge_app(edge: Edge) -> web.Application:
    config = edge.config

    async def agent(request: web.Request) -> web.StreamResponse:
        check_origin(request, config.host.allowed_origins)
        return await edge.bridge(request, "agent")

    async def customer(request: web.Request) -> web.StreamResponse:
        embed = config.widget.embed_origins
        check_origin(request, embed, any_origin=not embed)
        return await edge.bridge(request, "widget")

    async def page(request: web.Request) -> web.Response:
        return widget.page_response(config)

    app = web.Application(client_max_size=MAX_FRAME_BYTES)
    app[EDGE] = edge
    app.router.add_get("/healthz", edge.healthz)
    app.router.add_get("/agent", agent)
    app.router.add_get("/widget/ws", customer)
    app.router.add_get("/widget", page)
    app.router.add_get("/widget/static/widget.js", widget.script)
    app.router.add_route("*", "/{tail:.*}", edge.relay_http)
    app.on_shutdown.append(edge.close_sockets)
    return app
