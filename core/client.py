"""The async client of the agent protocol, used by the console, the tests and the load generator.

It keeps one WebSocket to the host and hides its interruptions: when the socket drops it
reconnects with backoff and resumes from the last event it delivered, and every command that did
not get its answer is sent again on the new socket. Messages carry a `client_msg_id`, so a resent
message is stored once; an event replayed after a resume is delivered once (by `seq`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import msgspec
from msgspec.structs import replace

from core.protocol import (
    CLOSE_REPLACED,
    CLOSE_SESSION_ENDED,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    AcceptOffer,
    AnyClientFrame,
    Authenticate,
    ClientFrame,
    EndChat,
    Error,
    Event,
    Hello,
    LoggedIn,
    Login,
    Logout,
    MessageAck,
    RejectOffer,
    Resume,
    Resync,
    SendMessage,
    ServerFrame,
    SetPresence,
    Welcome,
    encoder,
    server_decoder,
)

log = logging.getLogger("inbox_tui.client")

F = TypeVar("F", bound=ServerFrame)
EventHandler = Callable[[Event], Awaitable[None] | None]
StatusHandler = Callable[[str], None]
# While the status is one of these the client still gets back to the host by itself.
RETRYING = ("connected", "reconnecting")


class ClientError(Exception):
    """The host refused something; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class InboxClient:
    def __init__(
        self,
        url: str,
        *,
        on_event: EventHandler | None = None,
        on_status: StatusHandler | None = None,
        backoff: tuple[float, float] = (0.2, 5.0),
        request_timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.on_event = on_event
        self.on_status = on_status
        self.backoff = backoff
        self.request_timeout = request_timeout
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.token: str | None = None
        self.last_seq = 0
        self.status = "disconnected"
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._refs = itertools.count(1)
        self._pending: dict[int, tuple[ClientFrame, asyncio.Future[ServerFrame]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ connection

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            if self.on_status is not None:
                self.on_status(status)

    async def _open(self) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        ws = await self._http.ws_connect(
            self.url, heartbeat=30.0, max_msg_size=MAX_FRAME_BYTES, autoping=True
        )
        await ws.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION, client="inbox-tui")))
        reply = await self._receive_one(ws)
        if isinstance(reply, Error):
            await ws.close()
            raise ClientError(reply.code, reply.message)
        if not isinstance(reply, Welcome):
            await ws.close()
            raise ClientError("bad_frame", f"expected welcome, got {type(reply).__name__}")
        self._ws = ws

    async def _receive_one(self, ws: aiohttp.ClientWebSocketResponse) -> ServerFrame:
        msg = await ws.receive(timeout=self.request_timeout)
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise ClientError("disconnected", f"the host closed the connection ({msg.type.name})")
        return server_decoder.decode(msg.data)

    async def connect(self) -> None:
        """Open the socket and say hello. Raises ClientError (e.g. protocol_mismatch) or
        OSError-based aiohttp errors when the host cannot be reached."""
        self._closing = False
        await self._open()
        self._reader = asyncio.create_task(self._read(self._ws))  # type: ignore[arg-type]
        self._set_status("connected")

    async def close(self) -> None:
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(ClientError("closed", "the client was closed"))
        self._pending.clear()
        self._set_status("disconnected")

    async def __aenter__(self) -> InboxClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    continue
                try:
                    frame = server_decoder.decode(msg.data)
                except msgspec.DecodeError:
                    log.warning("unreadable frame from the host; ignored")
                    continue
                await self._received(frame)
        finally:
            if not self._closing:
                self._lost(ws.close_code)

    def _lost(self, close_code: int | None) -> None:
        if close_code == CLOSE_REPLACED:
            # Reconnecting would take the session back and drop the other console, which
            # would do the same: the two would fight forever.
            self._set_status("replaced by another console")
        elif close_code == CLOSE_SESSION_ENDED:
            self._set_status("logged out")
        else:
            self._set_status("reconnecting")
            asyncio.get_running_loop().create_task(self._reconnect())

    async def _received(self, frame: ServerFrame) -> None:
        if isinstance(frame, Event):
            if frame.seq == 0 and not isinstance(frame, Resync):
                await self._deliver(frame)  # unnumbered (queue figures): nothing to replay
                return
            if frame.seq <= self.last_seq and not isinstance(frame, Resync):
                return  # already delivered before a reconnect
            self.last_seq = frame.seq
            await self._deliver(frame)
            return
        ref = getattr(frame, "ref", 0)
        waiting = self._pending.pop(ref, None)
        if waiting is None:
            if isinstance(frame, Error):
                log.warning("host error: %s: %s", frame.code, frame.message)
            return
        future = waiting[1]
        if future.done():
            return
        if isinstance(frame, Error):
            future.set_exception(ClientError(frame.code, frame.message))
        else:
            future.set_result(frame)

    async def _deliver(self, event: Event) -> None:
        if self.on_event is None:
            self.events.put_nowait(event)
            return
        try:
            result = self.on_event(event)
            if result is not None:
                await result
        except Exception:
            # A bug in the handler must not cost the connection (and every later event).
            log.exception("event handler failed on %s", type(event).__name__)

    async def _reconnect(self) -> None:
        delay = self.backoff[0]
        while not self._closing:
            await asyncio.sleep(delay * (0.5 + random.random()))
            try:
                await self._open()
                await self._resume()
            except (aiohttp.ClientError, OSError, TimeoutError, ClientError) as e:
                if isinstance(e, ClientError) and e.code in ("bad_token", "expired", "disabled"):
                    self._set_status("logged out")
                    return
                delay = min(delay * 2, self.backoff[1])
                continue
            self._reader = asyncio.create_task(self._read(self._ws))  # type: ignore[arg-type]
            self._set_status("connected")
            # Whatever did not get its answer goes again, in the order it was asked.
            for ref in sorted(self._pending):
                await self._send(self._pending[ref][0])
            return

    async def _resume(self) -> None:
        ws = self._ws
        assert ws is not None
        if self.token is None:
            return
        await ws.send_bytes(encoder.encode(Resume(token=self.token, last_seq=self.last_seq)))
        while True:
            reply = await self._receive_one(ws)
            if isinstance(reply, Error):
                raise ClientError(reply.code, reply.message)
            if isinstance(reply, LoggedIn):
                # The host no longer had our session (it restarted): start over from a snapshot.
                self.last_seq = reply.seq
                await self._deliver(Resync(seq=reply.seq, snapshot=reply.snapshot))
                return
            if isinstance(reply, Event):
                await self._received(reply)  # a replayed event raced ahead of the Ok
                continue
            return  # Ok: the missed events follow on the socket

    async def _send(self, frame: ClientFrame) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientError):
                await ws.send_bytes(encoder.encode(frame))

    # ------------------------------------------------------------------ requests

    async def request(self, frame: AnyClientFrame, expect: type[F] | None = None) -> Any:
        """Send a command and wait for its answer; survives reconnects. Raises ClientError."""
        ref = next(self._refs)
        frame = replace(frame, ref=ref)
        future: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        self._pending[ref] = (frame, future)
        if self.status == "connected":
            await self._send(frame)
        try:
            reply = await asyncio.wait_for(future, self.request_timeout)
        finally:
            self._pending.pop(ref, None)
        if expect is not None and not isinstance(reply, expect):
            raise ClientError(
                "bad_frame", f"expected {expect.__name__}, got {type(reply).__name__}"
            )
        return reply

    async def login(self, username: str, password: str) -> LoggedIn:
        reply: LoggedIn = await self.request(Login(username=username, password=password), LoggedIn)
        self._logged_in(reply)
        return reply

    async def login_token(self, token: str) -> LoggedIn:
        reply: LoggedIn = await self.request(Authenticate(token=token), LoggedIn)
        self._logged_in(reply)
        return reply

    def _logged_in(self, reply: LoggedIn) -> None:
        self.token = reply.token
        self.last_seq = reply.seq

    async def logout(self) -> None:
        with contextlib.suppress(ClientError, TimeoutError):
            await self.request(Logout())
        self.token = None
        await self.close()

    async def set_presence(self, presence: str) -> None:
        await self.request(SetPresence(presence=presence))

    async def accept(self, offer: str) -> None:
        await self.request(AcceptOffer(offer=offer))

    async def reject(self, offer: str, reason: str = "") -> None:
        await self.request(RejectOffer(offer=offer, reason=reason))

    async def send_message(
        self, interaction: str, body: str, client_msg_id: str | None = None
    ) -> MessageAck:
        """Acknowledged only once the host has committed it; safe to retry with the same id."""
        msg_id = client_msg_id or secrets.token_hex(12)
        frame = SendMessage(interaction=interaction, body=body, client_msg_id=msg_id)
        return await self.request(frame, MessageAck)

    async def deliver_message(self, interaction: str, body: str, client_msg_id: str) -> MessageAck:
        """`send_message` until the host acknowledges it, however long the host is away.

        A request times out after `request_timeout`; while the socket is only reconnecting,
        that says nothing about the message, so it is asked again with the same id (the host
        stores it once, and acks a repeat as `duplicate`). It gives up only when the client
        can no longer reconnect (closed, logged out, replaced): ClientError("undelivered").
        A refusal by the host (ClientError) is final and raised as is."""
        while True:
            try:
                return await self.send_message(interaction, body, client_msg_id)
            except TimeoutError:
                if self._closing or self.status not in RETRYING:
                    raise ClientError("undelivered", f"not sent: {self.status}") from None

    async def end_chat(self, interaction: str) -> None:
        await self.request(EndChat(interaction=interaction))

    async def next_event(self, kind: type[Event] | None = None, timeout: float = 10.0) -> Any:
        """The next queued event (of `kind`, skipping others); for tests and scripts."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if kind is None or isinstance(event, kind):
                    return event
