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
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

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
from core.host.console_trail import ConsoleTrail
from core.host.frame_socket import close_all, handshake
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
from core.service.sessions import OUTGOING_LIMIT, Outgoing

log = logging.getLogger("inbox_tui.edge")

OPEN_TIMEOUT = 2.0
# How long a console whose router went is held for the next one before it is let go.
MOVE_WAIT = 10.0
# Consoles moving to a new router at once, each until the router has taken its session. All
# at once (3,744 on one edge at the scale preset) they went through hello, resume and the
# snapshot in lockstep there, and the first was back, offered work again, only when nearly
# all were: 2.4 s after the router served (docs/scaling.md).
MOVES_AT_ONCE = 100
# How long a move holds its place among those before the next console goes anyway.
MOVE_SETTLE = 5.0
# The hop-by-hop headers aiohttp sets itself on the way out.
NOT_COPIED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})

Frame = tuple[bytes, bytes]  # (op, data)


@dataclass(eq=False)
class Bridged:
    ws: web.WebSocketResponse
    conn: str
    kind: str
    address: str
    router: str = ""
    # A future per wait, not an asyncio.Queue's coroutine and future (sessions.Outgoing).
    out: Outgoing[Frame] = field(default_factory=lambda: Outgoing(OUTGOING_LIMIT))
    closed_by_router: bool = False
    # A console's: what is needed to move its session to a new router (console_trail.py).
    trail: ConsoleTrail | None = None
    # Between its router going and the new one taking its session: the console's frames wait.
    moving: bool = False
    rejoining: bool = False  # the new router's answer to the rejoin is awaited
    orphaned_at: float | None = None
    # Waiting for its turn to move (MOVES_AT_ONCE); set once the new router has taken the
    # session (or refused it), or the socket is gone.
    in_line: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Edge:
    config: HostConfig
    bus: Bus
    started_at: float = field(default_factory=time.time)
    sockets: dict[str, Bridged] = field(default_factory=dict)
    _pieces: Reassembly = field(default_factory=Reassembly)
    _subscription: Subscription | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Requests awaiting a router's answer, by router: ended when that router is gone.
    _asking: dict[str, set[asyncio.Future[Msg]]] = field(default_factory=dict)
    _moves: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MOVES_AT_ONCE))

    async def start(self) -> None:
        self._subscription = await self.bus.client.subscribe(
            self.bus.edge_inbox(self.bus.process), cb=self._frame
        )
        self.bus.on_gone.append(self._router_gone)
        self.bus.on_router.append(self._router_heard)
        self._keep(self._close_orphans())

    async def stop(self) -> None:
        for router in list(self._asking):
            self._give_up(router)
        if self._router_gone in self.bus.on_gone:
            self.bus.on_gone.remove(self._router_gone)
        if self._router_heard in self.bus.on_router:
            self.bus.on_router.remove(self._router_heard)
        for task in list(self._tasks):
            task.cancel()
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _ask(self, router: str, what: str, payload: bytes, timeout: float) -> Msg:
        """A request to `router` that ends as soon as that router is gone: one it took and
        never answered (it died, or froze) would otherwise hold its client up to `timeout`,
        and a host taking over routing 2 s while its server shut the edge down (docs/scaling.md).
        Raises TimeoutError then, as when the time runs out."""
        subject = self.bus.router_subject(router, what)
        asking = asyncio.ensure_future(self.bus.client.request(subject, payload, timeout=timeout))
        waiting = self._asking.setdefault(router, set())
        waiting.add(asking)
        try:
            await asyncio.wait({asking})
        finally:
            asking.cancel()  # the caller was cancelled; nothing if answered
            waiting.discard(asking)
            if not waiting and self._asking.get(router) is waiting:
                del self._asking[router]
        if asking.cancelled():
            raise TimeoutError(f"the routing host {router} is gone")
        return asking.result()

    def _give_up(self, router: str) -> None:
        for asking in self._asking.pop(router, ()):
            asking.cancel()

    def _keep(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close_sockets(self, app: web.Application) -> None:
        """On shutdown, or when this host starts routing: the consoles and widgets come back
        (here, as the router, or through another edge)."""
        bridged = [b.ws for b in self.sockets.values()]
        await close_all(bridged, WSCloseCode.GOING_AWAY, b"host shutting down")

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
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else WSCloseCode.OK
            if code == WSCloseCode.SERVICE_RESTART and self._orphan(bridged):
                return  # the router is moving: the console's session moves with it
            bridged.closed_by_router = True
        else:
            whole = self._pieces.add(conn, op, data)
            if whole is None:
                return
            data = whole
        if not bridged.out.put((op, data)):
            # The client is not reading: drop it, as the router would its own socket; the
            # console resumes and catches up from its session's buffer.
            log.info("event=edge_socket_not_reading conn=%s", conn)
            code = CLOSE_NOT_READING if bridged.kind == "agent" else WSCloseCode.POLICY_VIOLATION
            asyncio.get_running_loop().create_task(
                bridged.ws.close(code=code, message=b"not reading")
            )

    # ------------------------------------------------------------------ the router moving

    def _router_gone(self, process: str) -> None:
        self._give_up(process)
        for bridged in [b for b in self.sockets.values() if b.router == process]:
            if self._orphan(bridged):
                continue
            log.info("event=edge_socket_router_gone conn=%s router=%s", bridged.conn, process)
            bridged.out.put(
                (CLOSE, WSCloseCode.SERVICE_RESTART.to_bytes(2, "big") + b"routing host moved")
            )

    def _orphan(self, bridged: Bridged) -> bool:
        """Hold a console whose router went until the next one is heard; False for a socket
        that cannot be moved (a widget's, or a console not logged in): it is closed."""
        if bridged.trail is None or not bridged.trail.movable:
            return False
        if bridged.orphaned_at is None:
            gone = bridged.router
            bridged.moving, bridged.router, bridged.orphaned_at = True, "", time.monotonic()
            log.info("event=edge_console_held conn=%s router=%s", bridged.conn, gone)
            if self.bus.routing is not None and self.bus.routing != gone:
                self._keep(self._move(bridged, self.bus.routing))
        return True

    def _router_heard(self, process: str) -> None:
        for bridged in list(self.sockets.values()):
            if bridged.orphaned_at is not None and bridged.router == "":
                self._keep(self._move(bridged, process))

    async def _close_orphans(self) -> None:
        """A console held longer than MOVE_WAIT (no router heard since, or its move not done
        that long after its turn came) is let go: it keeps retrying by itself, and is answered
        `unavailable` meanwhile. One waiting for its turn is not: others are moving."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for bridged in list(self.sockets.values()):
                if bridged.in_line:
                    continue
                if bridged.orphaned_at is not None and now - bridged.orphaned_at > MOVE_WAIT:
                    bridged.orphaned_at = None
                    await bridged.ws.close(
                        code=WSCloseCode.SERVICE_RESTART, message=b"no routing host; reconnect"
                    )

    async def _move(self, bridged: Bridged, router: str) -> None:
        """Open the console's socket anew on `router` and log its session in there."""
        assert bridged.trail is not None
        if bridged.router:
            return  # already on its way
        self.sockets.pop(bridged.conn, None)
        self._pieces.forget(bridged.conn)
        bridged.conn, bridged.router = new_conn_id(), router
        self.sockets[bridged.conn] = bridged
        bridged.settled.clear()
        bridged.in_line = True
        async with self._moves:
            bridged.in_line = False
            if bridged.ws.closed:
                return  # gone while it waited its turn
            bridged.orphaned_at = time.monotonic()  # MOVE_WAIT counts from its turn
            if not await self._open(bridged):
                await bridged.ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"reconnect")
                return
            bridged.rejoining = True
            for frame in bridged.trail.rejoin():
                await self._publish(bridged, BINARY, frame)
            log.info("event=edge_console_moving conn=%s router=%s", bridged.conn, router)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bridged.settled.wait(), MOVE_SETTLE)

    async def _rejoined(self, bridged: Bridged, data: bytes) -> None:
        """The new router's frames until it has taken the console's session."""
        assert bridged.trail is not None
        outcome, frame = bridged.trail.rejoined(data)
        if outcome == "pass" and frame is not None:
            bridged.trail.from_router(frame)
            await bridged.ws.send_bytes(frame)
        elif outcome == "failed":
            bridged.settled.set()
            await bridged.ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"reconnect")
        elif outcome == "done":
            bridged.settled.set()
            if frame is not None:
                await bridged.ws.send_bytes(frame)
            bridged.rejoining = bridged.moving = False
            bridged.orphaned_at = None
            # What the old router never answered goes again, in the order it was sent.
            for ref in sorted(bridged.trail.unanswered):
                await self._publish(bridged, BINARY, bridged.trail.unanswered[ref])
            log.info("event=edge_console_moved conn=%s router=%s", bridged.conn, bridged.router)

    # ------------------------------------------------------------------ sockets

    async def _open(self, bridged: Bridged) -> bool:
        opening = OpenSocket(
            kind=bridged.kind, conn=bridged.conn, edge=self.bus.process, address=bridged.address
        )
        try:
            reply = await self._ask(
                bridged.router, "open", msgspec.msgpack.encode(opening), OPEN_TIMEOUT
            )
            msgspec.msgpack.decode(reply.data, type=Opened)
        except (NatsError, TimeoutError, msgspec.DecodeError) as e:
            log.info("event=edge_open_failed kind=%s error=%s", bridged.kind, e or type(e).__name__)
            return False
        return True

    async def _publish(self, bridged: Bridged, op: bytes, data: bytes) -> None:
        nc = self.bus.client
        subject = self.bus.router_subject(bridged.router, "in")
        # The reply subject names this edge: a router that does not know the socket says so.
        mine = self.bus.edge_inbox(self.bus.process)
        for payload in frames(bridged.conn, op, data, nc.max_payload):
            await nc.publish(subject, payload, reply=mine)

    async def bridge(self, request: web.Request, kind: str) -> web.StreamResponse:
        why = self.why_not()
        if why is not None:
            return _response(error_response(503, "unavailable", why))
        limit = MAX_FRAME_BYTES if kind == "agent" else widget.TRANSPORT_MAX_FRAME
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=limit)
        if (gone := await handshake(request, ws)) is not None:
            return gone
        # Opened on the router followed now; if it goes meanwhile, _router_gone closes this.
        bridged = Bridged(ws, new_conn_id(), kind, request.remote or "?", self.bus.routing or "")
        if kind == "agent":
            bridged.trail = ConsoleTrail()
        self.sockets[bridged.conn] = bridged
        if not await self._open(bridged):
            self.sockets.pop(bridged.conn, None)
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"no routing host; retry")
            return ws
        writer = asyncio.get_running_loop().create_task(self._write(bridged))
        try:
            async for message in ws:
                if message.type == WSMsgType.BINARY:
                    op, data = BINARY, message.data
                elif message.type == WSMsgType.TEXT:
                    op, data = TEXT, message.data.encode()
                else:
                    continue
                if bridged.trail is not None and op == BINARY:
                    bridged.trail.from_console(data)
                if bridged.moving:
                    continue  # sent again once the session has moved, if it asked something
                await self._publish(bridged, op, data)
        finally:
            bridged.settled.set()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self.sockets.pop(bridged.conn, None)
            self._pieces.forget(bridged.conn)
            if not bridged.closed_by_router and bridged.router:
                with contextlib.suppress(Exception):
                    code = ws.close_code or WSCloseCode.OK
                    subject = self.bus.router_subject(bridged.router, "in")
                    await self.bus.client.publish(subject, close_frame(bridged.conn, code, b""))
        return ws

    async def _write(self, bridged: Bridged) -> None:
        ws = bridged.ws
        with contextlib.suppress(ConnectionResetError):
            queued = bridged.out.events
            while not ws.closed:
                if (waiter := bridged.out.waiter()) is not None:
                    await waiter
                    continue
                op, data = queued.popleft()
                if op == CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else WSCloseCode.OK
                    await ws.close(code=code, message=data[2:])
                    return
                if op == TEXT:
                    await ws.send_str(data.decode())
                    continue
                if bridged.trail is not None:
                    if bridged.rejoining:
                        await self._rejoined(bridged, data)
                        continue
                    bridged.trail.from_router(data)
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
            reply = await self._ask(self.bus.routing or "", "http", payload, HTTP_TIMEOUT)
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
