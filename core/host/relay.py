"""The router's side of the edges: sockets and HTTP requests that other processes of the
cluster hold, served here by the same handlers as this host's own.

An edge (core/host/edge.py) terminates the WebSocket and relays its frames over the bus; here a
`RelayedSocket` stands in for the WebSocket, so `agent_socket.serve_socket` and
`widget.serve_socket` run unchanged on it: hello, authentication, sessions, resume, the inbox.
An HTTP request is relayed whole and served by this host's app on a loopback port of its own,
with the client's address carried in a header only the relay's secret makes trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import msgspec
from aiohttp import WSCloseCode, WSMessage, WSMsgType, web
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from core.host import agent_socket, widget
from core.host.bus import (
    BINARY,
    CLOSE,
    TEXT,
    Bus,
    Reassembly,
    close_frame,
    frames,
    parse,
)
from core.host.frame_socket import FrameSocket, close_all

log = logging.getLogger("inbox_tui.relay")

# Frames and bytes a relayed socket holds unread. The handlers read one frame at a time; the
# bus has no back-pressure to slow a client that sends faster than they answer, so past these
# it is closed instead (a console resends at most its unanswered commands after a reconnect:
# its outbox holds 100).
INCOMING_LIMIT = 1024
INCOMING_BYTES = 32 * 1024 * 1024
SECRET_HEADER = "X-Inbox-Relay"
REMOTE_HEADER = "X-Inbox-Remote"
HTTP_TIMEOUT = 30.0
# Not relayed either way: they describe one hop's connection, not the request.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
        "Proxy-Connection",
        "TE",
        "Trailer",
        SECRET_HEADER,
        REMOTE_HEADER,
    )
)


class OpenSocket(msgspec.Struct, frozen=True):
    kind: str  # "agent" or "widget"
    conn: str  # the socket's id, chosen by the edge
    edge: str  # the edge's process id: frames for the socket go to Bus.edge_inbox(edge)
    address: str  # the client's address, as the edge saw it


class Opened(msgspec.Struct, frozen=True):
    router: str  # frames for the socket go to Bus.router_subject(router, "in")


class RelayedRequest(msgspec.Struct, frozen=True):
    method: str
    path: str  # with the query string
    headers: list[tuple[str, str]]
    body: bytes
    remote: str


class RelayedResponse(msgspec.Struct, frozen=True):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class RelayedSocket:
    """The router's end of a WebSocket an edge holds (a `FrameSocket`)."""

    def __init__(self, relay: Relay, conn: str, edge: str) -> None:
        self.relay = relay
        self.conn = conn
        self.edge = edge
        # Not an asyncio.Queue: its get() is a coroutine and a future for every wait, and the
        # waits of a thousand idle sockets were most of what a young garbage collection pass
        # walked on the router (docs/scaling.md), as Outgoing's were on a host's own.
        self.incoming: deque[WSMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.unread_bytes = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def send_bytes(self, data: bytes) -> None:
        await self._send(BINARY, data)

    async def send_str(self, data: str) -> None:
        await self._send(TEXT, data.encode())

    async def _send(self, op: bytes, data: bytes) -> None:
        if self._closed:
            raise ConnectionResetError("the relayed socket is closed")
        await self.relay.send(self.edge, frames(self.conn, op, data, self.relay.max_payload))

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"") -> bool:
        if self._closed:
            return False
        self.ended(code)
        with contextlib.suppress(Exception):  # the bus is away: the edge hears of the loss
            await self.relay.send(self.edge, [close_frame(self.conn, code, message)])
        return True

    def ended(self, code: int) -> None:
        """Closed, by either side: the reader sees CLOSED next."""
        if not self._closed:
            self._closed = True
            self.relay.forget(self.conn)
            self._add(WSMessage(WSMsgType.CLOSED, code, None))

    def arrived(self, message: WSMessage) -> None:
        if self._closed:
            return
        size = len(message.data)
        if len(self.incoming) >= INCOMING_LIMIT or self.unread_bytes + size > INCOMING_BYTES:
            log.info("event=relayed_socket_flooded conn=%s edge=%s", self.conn, self.edge)
            code = WSCloseCode.POLICY_VIOLATION
            self.ended(code)
            closing = close_frame(self.conn, code, b"too many frames unread")
            self.relay.keep(
                asyncio.get_running_loop().create_task(self.relay.tell(self.edge, closing))
            )
            return
        self.unread_bytes += size
        self._add(message)

    def _add(self, message: WSMessage) -> None:
        self.incoming.append(message)
        if self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(None)
            self._waiter = None

    async def receive(self, timeout: float | None = None) -> WSMessage:
        if not self.incoming:
            if self._closed:
                return WSMessage(WSMsgType.CLOSED, None, None)
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            if timeout is None:
                await waiter
            else:
                async with asyncio.timeout(timeout):
                    await waiter
        message = self.incoming.popleft()
        if message.type in (WSMsgType.BINARY, WSMsgType.TEXT):
            self.unread_bytes -= len(message.data)
        return message

    def __aiter__(self) -> RelayedSocket:
        return self

    async def __anext__(self) -> WSMessage:
        message = await self.receive()
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            raise StopAsyncIteration
        return message


Serve = Callable[[web.Application, FrameSocket, str], Awaitable[None]]
SERVERS: dict[str, Serve] = {"agent": agent_socket.serve_socket, "widget": widget.serve_socket}


@dataclass
class Relay:
    """Serves the edges' sockets and requests while this process routes."""

    bus: Bus
    app: web.Application
    loopback: str  # this host's app on a loopback port, for relayed HTTP requests
    secret: str
    epoch: int  # the routing role's fencing epoch: edges follow the highest they hear
    sockets: dict[str, RelayedSocket] = field(default_factory=dict)
    _subscriptions: list[Subscription] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _pieces: Reassembly = field(default_factory=Reassembly)
    _http: aiohttp.ClientSession | None = None

    @property
    def max_payload(self) -> int:
        return self.bus.client.max_payload

    async def start(self) -> None:
        nc, me = self.bus.client, self.bus.process
        self._http = aiohttp.ClientSession(
            self.loopback, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT), auto_decompress=False
        )
        self._subscriptions = [
            await nc.subscribe(self.bus.router_subject(me, "in"), cb=self._frame),
            await nc.subscribe(self.bus.router_subject(me, "open"), cb=self._open),
            await nc.subscribe(self.bus.router_subject(me, "http"), cb=self._request),
        ]
        self.bus.on_gone.append(self._edge_gone)
        self.bus.role, self.bus.epoch = "router", self.epoch
        await self.bus.announce()
        log.info("event=relay_started process=%s", self.bus.process)

    async def stop(self) -> None:
        self.bus.role, self.bus.epoch = "edge", 0
        if self._edge_gone in self.bus.on_gone:
            self.bus.on_gone.remove(self._edge_gone)
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await close_all(self.sockets.values(), WSCloseCode.SERVICE_RESTART, b"routing host moved")
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        if self._http is not None:
            await self._http.close()

    def keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, conn: str) -> None:
        self.sockets.pop(conn, None)
        self._pieces.forget(conn)

    async def tell(self, edge: str, payload: bytes) -> None:
        """Send without waiting to hear of a failure: the bus away, the edge hears of the loss."""
        with contextlib.suppress(Exception):
            await self.send(edge, [payload])

    async def send(self, edge: str, payloads: list[bytes]) -> None:
        nc, subject = self.bus.client, self.bus.edge_inbox(edge)
        for payload in payloads:
            await nc.publish(subject, payload)

    async def _open(self, msg: Msg) -> None:
        try:
            req = msgspec.msgpack.decode(msg.data, type=OpenSocket)
            serve = SERVERS[req.kind]
        except (msgspec.DecodeError, KeyError):
            log.warning("event=relay_bad_open data=%r", msg.data[:100])
            return
        sock = RelayedSocket(self, req.conn, req.edge)
        self.sockets[req.conn] = sock
        await msg.respond(msgspec.msgpack.encode(Opened(router=self.bus.process)))
        self.keep(asyncio.get_running_loop().create_task(self._serve(serve, sock, req.address)))

    async def _serve(self, serve: Serve, sock: RelayedSocket, address: str) -> None:
        try:
            await serve(self.app, sock, address)
        except Exception:
            log.exception("event=relayed_socket_failed conn=%s", sock.conn)
        finally:
            await sock.close()

    async def _frame(self, msg: Msg) -> None:
        try:
            conn, op, data = parse(msg.data)
        except ValueError:
            return
        sock = self.sockets.get(conn)
        if sock is None:
            # Closed here, or never opened here (this router replaced the one it was opened
            # on): the edge closes its client, who reconnects.
            if op != CLOSE and msg.reply:
                closing = close_frame(conn, WSCloseCode.SERVICE_RESTART, b"routing host moved")
                with contextlib.suppress(Exception):
                    await self.bus.client.publish(msg.reply, closing)
            return
        if op == CLOSE:
            sock.ended(int.from_bytes(data[:2], "big") if len(data) >= 2 else WSCloseCode.OK)
            return
        whole = self._pieces.add(conn, op, data)
        if whole is None:
            return
        if op == TEXT:
            sock.arrived(WSMessage(WSMsgType.TEXT, whole.decode(errors="replace"), None))
        else:
            sock.arrived(WSMessage(WSMsgType.BINARY, whole, None))

    def _edge_gone(self, process: str) -> None:
        """An edge went silent: its sockets are gone with it, so their sessions detach."""
        for sock in [s for s in self.sockets.values() if s.edge == process]:
            sock.ended(WSCloseCode.ABNORMAL_CLOSURE)

    async def _request(self, msg: Msg) -> None:
        self.keep(asyncio.get_running_loop().create_task(self._answer(msg)))

    async def _answer(self, msg: Msg) -> None:
        assert self._http is not None
        try:
            req = msgspec.msgpack.decode(msg.data, type=RelayedRequest)
        except msgspec.DecodeError:
            log.warning("event=relay_bad_request")
            return
        headers = [(k, v) for k, v in req.headers if k.lower() not in HOP_BY_HOP]
        headers += [(SECRET_HEADER, self.secret), (REMOTE_HEADER, req.remote)]
        try:
            async with self._http.request(
                req.method, req.path, headers=headers, data=req.body, allow_redirects=False
            ) as resp:
                body = await resp.read()
                kept = [(str(k), v) for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP]
                answer = RelayedResponse(status=resp.status, headers=kept, body=body)
        except (aiohttp.ClientError, TimeoutError) as e:
            log.error("event=relay_request_failed path=%s error=%s", req.path, e)
            answer = unavailable(f"the routing host could not answer: {e or type(e).__name__}")
        except Exception:
            # The edge must hear something, or its client waits out the relay's timeout.
            log.exception("event=relay_request_failed path=%s", req.path)
            answer = error_response(500, "internal", "internal error; the host log has details")
        payload = msgspec.msgpack.encode(answer)
        if len(payload) > self.max_payload:
            payload = msgspec.msgpack.encode(
                error_response(
                    502,
                    "too_large",
                    f"the answer ({len(payload)} bytes) is larger than the bus carries "
                    f"({self.max_payload}); raise the NATS server's max_payload",
                )
            )
        with contextlib.suppress(Exception):  # the edge gave up waiting or left
            await msg.respond(payload)


def error_response(status: int, code: str, message: str) -> RelayedResponse:
    body = msgspec.json.encode({"error": {"code": code, "message": message}})
    headers = [("Content-Type", "application/json; charset=utf-8")]
    if status == 503:
        headers.append(("Retry-After", "1"))
    return RelayedResponse(status=status, headers=headers, body=body)


def unavailable(message: str) -> RelayedResponse:
    return error_response(503, "unavailable", message)


def trust_relayed(secret: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: a request relayed by this host's own relay (it carries the secret) is
    served as from the client's address the edge saw, so rate limits and logs see the client
    rather than the relay. Anyone else's `X-Inbox-Remote` is ignored."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        given = request.headers.get(SECRET_HEADER)
        if given is not None and hmac.compare_digest(given.encode(), secret.encode()):
            request = request.clone(remote=request.headers.get(REMOTE_HEADER, "?"))
        return await handler(request)

    return middleware


def new_secret() -> str:
    return secrets.token_urlsafe(32)
