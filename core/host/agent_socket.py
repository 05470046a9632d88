"""The /agent WebSocket: hello, authentication, then commands in and numbered events out.

Each connection has one reader (this handler) and one writer task draining the session's
bounded queue, so a console that stops reading fills only its own queue and is then dropped;
nobody else waits for it. A bad frame gets an `Error` and the connection carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import WSMsgType, web

from core.auth import AuthError, token_digest
from core.host import decoding
from core.host.frame_socket import FrameSocket, close_all, handshake
from core.host.origins import check_origin
from core.host.state import HOST, Host
from core.protocol import (
    CLOSE_NOT_READING,
    CLOSE_REPLACED,
    CLOSE_SESSION_ENDED,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Authenticate,
    Error,
    Event,
    Hello,
    LoggedIn,
    Login,
    Logout,
    Ok,
    Resume,
    Resync,
    ServerFrame,
    Welcome,
    client_decoder,
    encoder,
)
from core.service import StoreUnavailable
from core.service.inbox import InboxError
from core.service.sessions import AgentSession, Kick, Outgoing

log = logging.getLogger("inbox_tui.host")

HEARTBEAT = 20.0
HELLO_TIMEOUT = 10.0
# From hello to a successful login. The heartbeat alone would keep a socket that never logs
# in open for ever, and a client could hold thousands of them at no cost but a descriptor.
LOGIN_TIMEOUT = 30.0
KICKS = {
    Kick.NOT_READING: (CLOSE_NOT_READING, b"not reading: resume to catch up"),
    Kick.REPLACED: (CLOSE_REPLACED, b"another console resumed this session"),
    Kick.ENDED: (CLOSE_SESSION_ENDED, b"session ended: log in again"),
}
UNREADABLE = decoding.UNREADABLE


SOCKETS = web.AppKey("agent_sockets", set[web.WebSocketResponse])


def setup(app: web.Application) -> None:
    app[SOCKETS] = set()
    app.router.add_get("/agent", handle)
    app.on_shutdown.append(close_sockets)


async def close_sockets(app: web.Application) -> None:
    """On shutdown, tell consoles to come back later (1001 "going away") instead of letting
    the server wait out its shutdown timeout on open sockets; they will resume."""
    sockets: set[web.WebSocketResponse] = app[SOCKETS]
    await close_all(sockets, 1001, b"host shutting down")


async def handle(request: web.Request) -> web.StreamResponse:
    host = request.app[HOST]
    # A page from another site, opened in an agent's browser, could log in (or use a saved
    # session) and read customers' data: only the host's own pages and listed origins.
    check_origin(request, host.config.host.allowed_origins)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME_BYTES)
    if (gone := await handshake(request, ws)) is not None:
        return gone
    request.app[SOCKETS].add(ws)
    try:
        await serve_socket(request.app, ws, request.remote or "?")
    finally:
        request.app[SOCKETS].discard(ws)
    return ws


async def serve_socket(app: web.Application, ws: FrameSocket, address: str) -> None:
    """Run one console's connection to its end: a socket of this host's own, or one an edge
    of the cluster holds and relays (core/host/relay.py)."""
    host = app[HOST]
    conn = Connection(host, ws, address)
    host.connected_agents += 1
    log.info("event=agent_connected address=%s", conn.address)
    try:
        await conn.run()
    finally:
        host.connected_agents -= 1
        conn.detach()
        log.info("event=agent_disconnected address=%s agent=%s", conn.address, conn.agent)


class Connection:
    def __init__(self, host: Host, ws: FrameSocket, address: str) -> None:
        self.host = host
        self.ws = ws
        self.address = address
        self.session: AgentSession | None = None
        self.queue: Outgoing[Event] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.closer: asyncio.Task[None] | None = None
        self.token = ""

    @property
    def agent(self) -> str | None:
        return self.session.agent if self.session else None

    async def send(self, frame: ServerFrame) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(encoder.encode(frame))

    async def run(self) -> None:
        if not await self.hello():
            return
        overdue = asyncio.get_running_loop().call_later(LOGIN_TIMEOUT, self.login_overdue)
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.BINARY:
                    if msg.type == WSMsgType.TEXT:
                        await self.send(
                            Error(code="bad_frame", message="frames are msgpack binary")
                        )
                    continue
                try:
                    frame = decoding.decode(client_decoder.decode, msg.data)
                except UNREADABLE as e:
                    ref = decoding.ref_of(msg.data)
                    error = Error(ref=ref, code="bad_frame", message=f"unreadable frame: {e}")
                    await self.send(error)
                    continue
                await self.dispatch(frame)
        finally:
            overdue.cancel()

    def login_overdue(self) -> None:
        if self.session is None and self.closer is None:
            message = f"log in within {LOGIN_TIMEOUT:g} s of hello"
            self.closer = asyncio.get_running_loop().create_task(
                self.close_with(Error(code="login_timeout", message=message))
            )

    async def hello(self) -> bool:
        try:
            msg = await self.ws.receive(timeout=HELLO_TIMEOUT)
        except TimeoutError:
            await self.close_with(Error(code="no_hello", message="send hello first"))
            return False
        frame = None
        if msg.type == WSMsgType.BINARY:
            with contextlib.suppress(*UNREADABLE):
                frame = decoding.decode(client_decoder.decode, msg.data)
        if not isinstance(frame, Hello):
            await self.close_with(Error(code="no_hello", message="the first frame must be hello"))
            return False
        if frame.version != PROTOCOL_VERSION:
            await self.close_with(
                Error(
                    ref=frame.ref,
                    code="protocol_mismatch",
                    message=f"this host speaks protocol {PROTOCOL_VERSION}, "
                    f"the client {frame.version}: upgrade the older one",
                )
            )
            return False
        await self.send(Welcome(version=PROTOCOL_VERSION, server="inbox-tui", heartbeat=HEARTBEAT))
        return True

    async def close_with(self, error: Error) -> None:
        await self.send(error)
        await self.ws.close()

    async def dispatch(self, frame: object) -> None:
        ref = getattr(frame, "ref", 0)
        try:
            if isinstance(frame, Login | Authenticate | Resume):
                await self.authenticate(frame)
            elif self.session is None or self.session.closed:
                await self.send(Error(ref=ref, code="unauthenticated", message="log in first"))
            elif isinstance(frame, Logout):
                await self.host.auth.logout(self.token)
                # `ok` before the session closes: closing it kicks this socket (4002, the
                # documented end of a logout), and nothing can be sent after the close. The
                # session ends even if the console is already gone.
                try:
                    await self.send(Ok(ref=ref))
                finally:
                    session, self.session = self.session, None
                    await self.host.inbox.close_session(session)
            elif isinstance(frame, Hello):
                await self.send(Error(ref=ref, code="bad_frame", message="hello was already said"))
            else:
                await self.send(await self.host.inbox.handle(self.session, frame))  # type: ignore[arg-type]
        except AuthError as e:
            await self.send(Error(ref=ref, code=e.code, message=e.message))
        except InboxError as e:
            await self.send(Error(ref=ref, code=e.code, message=e.message))
        except StoreUnavailable as e:
            # A full or failing disk: nothing was stored, so nothing is acknowledged; the
            # console keeps its connection and retries with the same client_msg_id.
            log.error("event=agent_store_unavailable agent=%s error=%s", self.agent, e)
            await self.send(
                Error(ref=ref, code="unavailable", message="the host cannot store that now; retry")
            )
        except ConnectionResetError:
            raise  # the console is gone: nobody to answer
        except Exception:
            # A bug must not drop the socket: the console would reconnect, send the same
            # command again and drop it again, for ever. It gets an answer instead.
            log.exception(
                "event=agent_command_failed agent=%s frame=%s", self.agent, type(frame).__name__
            )
            await self.send(
                Error(ref=ref, code="internal", message="internal error; the host log has details")
            )

    async def authenticate(self, frame: Login | Authenticate | Resume) -> None:
        if self.session is not None:
            raise InboxError("already_authenticated", "this connection is already logged in")
        auth, inbox = self.host.auth, self.host.inbox
        if isinstance(frame, Login):
            login = await auth.login(frame.username, frame.password, self.address)
            token, agent, role, expires_at = login.token, login.agent, login.role, login.expires_at
        else:
            principal = await auth.authenticate(frame.token, self.address)
            if principal.agent is None:
                raise InboxError("forbidden", "this API token is not an agent's")
            token, agent, role = frame.token, principal.agent, principal.role
            expires_at = time.time() + self.host.config.host.session_ttl
        digest = token_digest(token)
        self.token = token
        existing = inbox.find_session(digest) if isinstance(frame, Resume) else None
        if isinstance(frame, Resume) and existing is not None:
            missed = existing.missed_since(frame.last_seq)
            self.attach(existing, missed or [])
            if missed is None:
                existing.push(Resync(snapshot=inbox.snapshot(existing)))
            await self.send(Ok(ref=frame.ref))
            log.info("event=agent_resumed agent=%s from_seq=%s", agent, frame.last_seq)
            return
        session = inbox.open_session(agent, role, digest, expires_at)
        self.attach(session, [])
        await self.send(
            LoggedIn(
                ref=frame.ref,
                token=token,
                expires_at=expires_at,
                seq=session.seq,
                snapshot=inbox.snapshot(session),
            )
        )
        log.info("event=agent_logged_in agent=%s role=%s", agent, role)

    def attach(self, session: AgentSession, backlog: list[Event]) -> None:
        """Take over the session; `backlog` (missed events) goes out before anything new."""

        def kick(why: Kick) -> None:
            code, text = KICKS[why]
            if why == Kick.NOT_READING:
                self.host.dropped_consoles += 1
            log.info("event=agent_dropped agent=%s reason=%s", session.agent, why)
            asyncio.get_running_loop().create_task(self.ws.close(code=code, message=text))

        self.session = session
        self.queue = self.host.inbox.attach(session, kick)
        self.writer = asyncio.get_running_loop().create_task(self.write(backlog, self.queue))

    async def write(self, backlog: list[Event], outgoing: Outgoing[Event]) -> None:
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            for event in backlog:
                await self.ws.send_bytes(encoder.encode(event))
            events = outgoing.events
            while not self.ws.closed:
                if (waiter := outgoing.waiter()) is not None:
                    await waiter
                while events and not self.ws.closed:
                    await self.ws.send_bytes(encoder.encode(events.popleft()))

    def detach(self) -> None:
        if self.writer is not None:
            self.writer.cancel()
        if self.session is not None and self.queue is not None:
            self.host.inbox.detach(self.session, self.queue, time.time())
