"""The customer chat widget: a page at GET /widget and its JSON socket at GET /widget/ws.

Routes
    GET /widget                    the page (settings from [widget] inlined as JSON)
    GET /widget/static/widget.js   its script; no build step, no external assets
    GET /widget/ws                 the customer socket below

Protocol: JSON text frames, one object each, its type in "t". Browsers cannot set headers on
a WebSocket handshake, so the customer authenticates with the first frame, which must be
`start` or `resume` within 10 s (else `error` code start_timeout, and the host closes).

Origins: with `[widget] embed_origins` empty (the default) a page on any site may open the
socket, since the widget is public; with sites listed, only pages of the host itself and of
those sites may (others get HTTP 403 before the upgrade; clients that send no Origin are not
browsers and are let through). The page may be framed by the host and those sites only.

client → host
    {"t":"start","name","email","attributes":{...},"identity","language"}
        name 1-80 characters, e-mail required; attributes optional: at most 10, keys
        [A-Za-z][A-Za-z0-9_]{0,31}, string values of at most 200 characters. Only the keys the
        widget's channel lists in `customer_attributes` are used for routing; the others are
        dropped (logged as event=widget_attributes_dropped), not refused, as a campaign
        parameter in the page's URL must not stop a chat. identity optional (below).
        language optional: the customer's language tag ("fr", "fr-CA"; widget.js sends the
        page URL's ?lang= or else the browser's navigator.language), in which the host's
        notices to the customer are written where the channel has texts for it.
        → {"t":"started","conversation":"IMS0001001","ticket":"web-<16 hex>.<hmac>"},
          then the current `state` and any `message`s already in the conversation
    {"t":"resume","conversation","ticket"}
        → {"t":"resumed","conversation","state","agent","messages":[message frames...]}
    {"t":"message","body","client_msg_id"}             body 1..max_message_length characters
        → {"t":"ack","client_msg_id","seq"}, sent only once the message is committed; sending
          the same client_msg_id again stores nothing and acks the stored message.
        Into a closed conversation (resumed after its end) within its channel's reopen_window
        the message reopens it: `state` new, a system line, the message, then routing as
        usual. After the window it starts a new conversation that follows up the closed one:
        `started` (a new conversation and ticket), its `state` and transcript, then the ack.
        The page offers this as "Write again" on its ended view.
    {"t":"typing"}                                      shown to the agents as "… is typing"
    {"t":"leave"}                                       ends the chat; the host then closes

host → client
    {"t":"message","seq","from":"customer|agent|system","name","body","at","file"?}
        name: the agent's display name, the customer's name, or null for system lines;
        at: seconds since the epoch; the customer's own messages also carry client_msg_id;
        file: on a line announcing a file, its signed download link (core/host/widget_files.py)
    {"t":"state","state":"new|work_in_progress|wrap_up|closed_complete|closed_abandoned",
     "agent": display name or null}
    {"t":"typing","name"}
    {"t":"error","code","message"} (plus "client_msg_id" when about one message)
        bad_json, too_large, bad_field, unknown_type, not_started, already_started,
        bad_identity, bad_ticket, unknown_conversation, unroutable, unavailable,
        conversation_closed, duplicate_id, rate_limited: the socket keeps serving;
        start_timeout: the host closes.

Frames over 32 KiB get `too_large`; over 128 KiB the transport closes the socket (1009).
Each connection may send 10 frames a second (bursts of 20), and each client address may start
`[widget] new_chats_per_address` chats a minute; the excess gets `rate_limited` and is not
acted on. Closing the socket without `leave` does not end the chat: the customer
may be reloading the page, and resumes with the ticket kept in localStorage.

Signed identity. What a customer types is never trusted for routing privilege (tier, account,
a verified address). The embedding site's server, which knows its logged-in user, signs what
it vouches for with the secret in `[widget] identity_secret_file`. The key is that file's
content with surrounding whitespace removed, as bytes: for a file made with
`openssl rand -hex 32 > widget-identity.secret`, the 64 hex characters themselves (not the 32
bytes they spell). The site and the host hold the same file.

    identity = B + "." + hex(HMAC-SHA256(key=secret, message=B))
    B = base64url(UTF-8 JSON payload), "=" padding removed (kept is accepted too)
    payload = {"sub": the site's user id, 1-200 characters (required),
               "exp": expiry, integer seconds since the epoch (required, at most 24 h ahead),
               "name": 1-80 characters (optional), "email": an address (optional),
               "attributes": {key: string value} (optional, same rules as above)}

Other payload fields are ignored. The whole identity is at most 4096 characters; the hex is
lower case. Sent as `identity` in `start`; widget.js takes it from the page's URL
(`/widget?identity=...`, which is how a site embedding the page in an iframe passes it).
A valid identity's attributes are all used for routing and override typed ones of the same key;
its name and e-mail replace the typed ones (the e-mail becomes the contact); the host adds
`verified_id` = sub, and `email_verified` = "true" when it has an e-mail. A forged, malformed
or expired identity, or one sent to a host with no secret, gets `bad_identity` and starts
nothing (why is logged, not told). In Python::

    import base64, hashlib, hmac, json, time
    def widget_identity(secret: bytes, user_id: str, email: str, tier: str) -> str:
        payload = {"sub": user_id, "email": email, "attributes": {"tier": tier},
                   "exp": int(time.time()) + 3600}
        b = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
        return b.decode() + "." + hmac.new(secret, b, hashlib.sha256).hexdigest()

The ticket is `<customer>.<hex HMAC-SHA256("<conversation>|<customer>")>` under a key kept in
`<data_dir>/widget.key`, so resuming needs no server-side session and survives a restart.
Customers never see work notes nor agents' ids, only their display names.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web
from msgspec import Meta

from core.config import HostConfig, WidgetSettings
from core.files import write_atomically
from core.host import decoding
from core.host.downloads import FileLinks
from core.host.frame_socket import FrameSocket, close_all, handshake
from core.host.origins import check_origin
from core.host.ratelimit import TokenBuckets
from core.host.state import HOST, Host
from core.model import (
    CLOSED_INTERACTION_STATES,
    ClientMsgId,
    InteractionRecord,
    InteractionState,
    Message,
    SenderKind,
)
from core.notices import LanguageTag
from core.protocol import Event, InteractionEvent, MessageEvent, TypingEvent
from core.service import StoreUnavailable
from core.service.inbox import InboxError
from core.service.sessions import Outgoing

log = logging.getLogger("inbox_tui.host")

STATIC = Path(__file__).parent / "static"
KEY_FILE = "widget.key"
KEY_BYTES = 32

MAX_FRAME = 32 * 1024
# Between MAX_FRAME and this a frame is refused politely; beyond it aiohttp drops the socket
# without buffering the rest, so a hostile client cannot make us hold much.
TRANSPORT_MAX_FRAME = 4 * MAX_FRAME
START_TIMEOUT = 10.0
HEARTBEAT = 20.0
RATE_PER_SECOND = 10.0
RATE_BURST = 20.0
OUTGOING_LIMIT = 1_000
MAX_ADDRESSES = 10_000  # addresses whose new-chat budget is remembered (ratelimit.py)
NAME_MAX = 80
EMAIL_MAX = 200  # the record's customer_contact is a Label
MAX_ATTRIBUTES = 10
ATTRIBUTE_VALUE_MAX = 200

EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")
ATTRIBUTE_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
CUSTOMER = re.compile(r"web-[0-9a-f]{16}")
UNROUTABLE_TEXT = "Sorry, nobody can take your chat right now. Please try later."
# The start form shows it as it is; a refused line carries its id and is sent again.
UNAVAILABLE_TEXT = "Sorry, the chat service cannot take your chat just now. Please try again."
LEAVABLE_STATES = (InteractionState.NEW, InteractionState.WORK_IN_PROGRESS)

# Headers for the page: nothing but our own script may run, even if escaping ever slipped.
# frame-ancestors is added per config (page_headers): a page framed by any site could be
# overlaid and clicked through without the customer knowing whose chat they are in.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

IDENTITY_MAX = 4096  # characters of the whole identity text
IDENTITY_LIFETIME = 24 * 3600  # the furthest ahead an identity's exp may be, in seconds
IDENTITY_SUB_MAX = 200


# ---------------------------------------------------------------------------- client frames


class Start(msgspec.Struct, kw_only=True):
    name: str
    email: str
    attributes: dict[str, str] = msgspec.field(default_factory=dict)
    # Its size is checked with the rest of it, so that every bad identity is bad_identity.
    identity: str | None = None
    # The page's navigator.language (or the page URL's ?lang=), for the customer notices.
    language: LanguageTag | None = None


class IdentityPayload(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    sub: Annotated[str, Meta(min_length=1, max_length=IDENTITY_SUB_MAX)]
    exp: int
    name: str | None = None
    email: str | None = None
    attributes: dict[str, str] = msgspec.field(default_factory=dict)


@dataclass(frozen=True)
class Identity:
    """What the embedding site vouches for: trusted for routing, unlike typed attributes."""

    sub: str
    name: str | None
    email: str | None
    attributes: dict[str, str]


class Resume(msgspec.Struct, kw_only=True):
    conversation: Annotated[str, Meta(min_length=1, max_length=32)]
    ticket: Annotated[str, Meta(min_length=1, max_length=200)]


class SendMessage(msgspec.Struct, kw_only=True):
    body: str
    client_msg_id: ClientMsgId


class Empty(msgspec.Struct):
    pass


FRAMES: dict[str, type[msgspec.Struct]] = {
    "start": Start,
    "resume": Resume,
    "message": SendMessage,
    "typing": Empty,
    "leave": Empty,
}

json_encoder = msgspec.json.Encoder()


class Refused(Exception):
    """A frame the host will not act on; becomes an `error` frame and the socket carries on."""

    def __init__(
        self, code: str, message: str, client_msg_id: str | None = None, *, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_msg_id = client_msg_id
        self.reason = reason  # for the log only


# ---------------------------------------------------------------------------- identities


def verify_identity(secret: bytes | None, text: str, now: float) -> Identity:
    """The identity `text` proves, or Refused(bad_identity). The reason stays in the log:
    the customer can do nothing with it, and it would help someone probing the format."""

    def bad(reason: str) -> Refused:
        return Refused(
            "bad_identity", "We could not confirm who you are. Reload the page.", reason=reason
        )

    if secret is None:
        raise bad("no identity_secret_file is configured")
    if len(text) > IDENTITY_MAX:
        raise bad(f"longer than {IDENTITY_MAX} characters")
    body, dot, mac = text.rpartition(".")
    if not dot or not body:
        raise bad("not <payload>.<mac>")
    expected = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
    # Compared as bytes of equal kind: compare_digest refuses non-ASCII str.
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        raise bad("signature does not match")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        payload = msgspec.json.decode(raw, type=IdentityPayload)
    except (ValueError, msgspec.DecodeError) as e:  # binascii.Error is a ValueError
        raise bad(f"payload unreadable: {str(e)[:80]}") from None
    if payload.exp <= now:
        raise bad("expired")
    if payload.exp > now + IDENTITY_LIFETIME:
        raise bad(f"exp more than {IDENTITY_LIFETIME} s ahead")
    name = payload.name.strip() if payload.name is not None else None
    if name is not None and not 1 <= len(name) <= NAME_MAX:
        raise bad("name: 1 to 80 characters")
    email = payload.email.strip() if payload.email is not None else None
    if email is not None and (len(email) > EMAIL_MAX or not EMAIL.fullmatch(email)):
        raise bad("email: not an address")
    try:
        attributes = check_attributes(payload.attributes)
    except Refused as e:
        raise bad(e.message) from None
    return Identity(sub=payload.sub, name=name, email=email, attributes=attributes)


def routing_attributes(
    typed: dict[str, str], allowed: tuple[str, ...], identity: Identity | None
) -> tuple[dict[str, str], list[str]]:
    """The attributes a chat is routed with, and the typed keys dropped.

    Typed ones count only if the channel allows them; signed ones always, and win.
    """
    kept = {k: v for k, v in typed.items() if k in allowed}
    dropped = sorted(k for k in typed if k not in allowed)
    if identity is not None:
        kept.update(identity.attributes)
        kept["verified_id"] = identity.sub
        if identity.email is not None:
            kept["email_verified"] = "true"
    return kept, dropped


# ---------------------------------------------------------------------------- tickets


def load_key(data_dir: Path) -> bytes:
    """The host's widget secret: created once (0600), then reused so tickets outlive restarts."""
    path = data_dir / KEY_FILE
    # Never replaced: of two hosts creating it on first use, one key wins and both use it.
    if not path.exists() and write_atomically(path, secrets.token_bytes(KEY_BYTES), replace=False):
        log.info("event=widget_key_created path=%s", path)
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise RuntimeError(
            f"{path} holds {len(key)} bytes, not {KEY_BYTES}: delete it to make a new key "
            "(open widget chats then cannot be resumed)"
        )
    return key


@dataclass
class Tickets:
    key: bytes

    def _mac(self, conversation: str, customer: str) -> str:
        text = f"{conversation}|{customer}".encode()
        return hmac.new(self.key, text, hashlib.sha256).hexdigest()

    def issue(self, conversation: str, customer: str) -> str:
        return f"{customer}.{self._mac(conversation, customer)}"

    def check(self, conversation: str, ticket: str) -> str | None:
        """The customer id the ticket proves for this conversation, or None."""
        customer, _, mac = ticket.partition(".")
        if not CUSTOMER.fullmatch(customer):
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(conversation, customer).encode()):
            return None
        return customer


@dataclass
class Widget:
    host: Host
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    @cached_property
    def new_chats(self) -> TokenBuckets:
        """Per client address: the widget is public, and every chat started is a work item
        that some agent must be offered; one script must not be able to fill the queues."""
        per_minute = self.host.config.widget.new_chats_per_address
        return TokenBuckets(per_minute / 60, per_minute, max_keys=MAX_ADDRESSES)

    @cached_property
    def tickets(self) -> Tickets:
        key = self.host.widget_key
        return Tickets(key if key is not None else load_key(self.host.data_dir))

    @cached_property
    def links(self) -> FileLinks:
        return FileLinks.from_secret(self.tickets.key, self.host.config.attachments.link_ttl)


WIDGET = web.AppKey("widget", Widget)


# ---------------------------------------------------------------------------- routes


def setup(app: web.Application) -> None:
    app[WIDGET] = Widget(app[HOST])
    app.router.add_get("/widget", page)
    app.router.add_get("/widget/static/widget.js", script)
    app.router.add_get("/widget/ws", socket)
    app.on_shutdown.append(close_sockets)


async def close_sockets(app: web.Application) -> None:
    """On shutdown tell browsers to go away now (they resume elsewhere or after the restart)
    rather than keep the host waiting for them."""
    await close_all(app[WIDGET].sockets, WSCloseCode.GOING_AWAY, b"host shutting down")


def page_config(w: WidgetSettings, attributes: tuple[str, ...] = ()) -> str:
    settings = {
        "title": w.title,
        "greeting": w.greeting,
        "accent": w.accent,
        "max_message_length": w.max_message_length,
        "available": w.channel is not None,
        # The script sends only these from the page's URL, so marketing parameters neither
        # crowd them out of the 10 allowed nor reach the host.
        "attributes": list(attributes),
    }
    # Inside <script type="application/json"> only "<" can end the element early.
    return json.dumps(settings).replace("<", "\\u003c").replace(">", "\\u003e")


def page_headers(w: WidgetSettings) -> dict[str, str]:
    """Framing only by the host and the configured embedding sites."""
    ancestors = " ".join(("'self'", *w.embed_origins))
    headers = dict(PAGE_HEADERS)
    headers["Content-Security-Policy"] = f"{PAGE_CSP}; frame-ancestors {ancestors}"
    if not w.embed_origins:
        # For browsers without frame-ancestors; it cannot list sites, so only when none are.
        headers["X-Frame-Options"] = "SAMEORIGIN"
    return headers


async def page(request: web.Request) -> web.Response:
    return page_response(request.app[HOST].config)


def page_response(config: HostConfig) -> web.Response:
    w = config.widget
    allowed = config.customer_attributes.get(w.channel, ()) if w.channel else ()
    html = (STATIC / "widget.html").read_text(encoding="utf-8")
    html = html.replace("__WIDGET_CONFIG__", page_config(w, allowed))
    return web.Response(text=html, content_type="text/html", headers=page_headers(w))


async def script(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC / "widget.js",
        headers={
            "Content-Type": "text/javascript; charset=utf-8",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


async def socket(request: web.Request) -> web.StreamResponse:
    # The widget is public, so by default any site may speak to it; a host that lists its
    # embedding sites wants no other site's page (a look-alike, say) collecting chats.
    embed = request.app[HOST].config.widget.embed_origins
    check_origin(request, embed, any_origin=not embed)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=TRANSPORT_MAX_FRAME)
    if (gone := await handshake(request, ws)) is not None:
        return gone
    widget = request.app[WIDGET]
    widget.sockets.add(ws)
    try:
        await serve_socket(request.app, ws, request.remote or "?")
    finally:
        widget.sockets.discard(ws)
    return ws


async def serve_socket(app: web.Application, ws: FrameSocket, address: str) -> None:
    """Run one customer's connection to its end: a socket of this host's own, or one an edge
    of the cluster holds and relays (core/host/relay.py)."""
    conn = CustomerConnection(app[WIDGET], ws, address)
    log.info("event=widget_connected address=%s", conn.address)
    try:
        await conn.run()
    finally:
        await conn.close()
        log.info(
            "event=widget_disconnected address=%s conversation=%s",
            conn.address,
            conn.number or "-",
        )


# ---------------------------------------------------------------------------- connection


def decode_frame(text: str) -> Any:
    """JSON as sent, untyped, so that a refusal can name the message's client_msg_id."""
    return decoding.decode(msgspec.json.decode, text)


class CustomerConnection:
    """One customer socket. A single writer task sends every outgoing frame in order; the
    reader and the inbox's (synchronous) watcher callback only queue them."""

    def __init__(self, widget: Widget, ws: FrameSocket, address: str) -> None:
        self.widget = widget
        self.host = widget.host
        self.ws = ws
        self.address = address
        self.out: Outgoing[dict[str, Any] | None] = Outgoing(OUTGOING_LIMIT)
        self.writer: asyncio.Task[None] | None = None
        self.frames = TokenBuckets(RATE_PER_SECOND, RATE_BURST, max_keys=1)  # this socket's
        self.number: str | None = None
        self.customer = ""
        self.customer_name = ""
        self.unwatch: Callable[[], None] | None = None
        # While the transcript is being read, events are held here so none slips between the
        # read and the live feed; None once live.
        self.held: list[Event] | None = None
        # Ids of this socket's messages being stored: their lines are not sent back to it,
        # the ack draws them (a fifth of a chat's frames to the widget were these echoes).
        self.sending: set[str] = set()
        self.dropped = False
        self.closer: asyncio.Task[bool] | None = None  # held so the task is not collected

    # -------------------------------------------------------------- sending

    def send(self, frame: dict[str, Any]) -> None:
        if self.dropped:
            return
        if not self.out.put(frame):
            # The browser stopped reading: drop it; it resumes from the stored transcript.
            log.info("event=widget_dropped address=%s reason=not_reading", self.address)
            self.dropped = True
            if self.writer is not None:
                self.writer.cancel()
            self.closer = asyncio.get_running_loop().create_task(
                self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"not reading")
            )

    def error(self, code: str, message: str, client_msg_id: str | None = None) -> None:
        frame: dict[str, Any] = {"t": "error", "code": code, "message": message}
        if client_msg_id is not None:
            frame["client_msg_id"] = client_msg_id
        self.send(frame)

    async def write(self) -> None:
        with contextlib.suppress(ConnectionResetError):
            while True:
                if (waiter := self.out.waiter()) is not None:
                    await waiter
                frame = self.out.events.popleft()
                if frame is None or self.ws.closed:
                    break
                await self.ws.send_str(json_encoder.encode(frame).decode())
        await self.ws.close()

    def finish(self) -> None:
        """Close once everything queued so far is sent."""
        self.out.put(None)

    # -------------------------------------------------------------- reading

    async def run(self) -> None:
        self.writer = asyncio.get_running_loop().create_task(self.write())
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ws.closed:
            timeout = None if self.number else deadline - time.monotonic()
            try:
                if timeout is not None and timeout <= 0:
                    raise TimeoutError
                msg = await self.ws.receive(timeout=timeout)
            except TimeoutError:
                self.error("start_timeout", f"send start or resume within {START_TIMEOUT:g} s")
                break
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
            if msg.type == WSMsgType.ERROR:
                log.info("event=widget_bad_frame address=%s error=%s", self.address, msg.data)
                break
            # Every frame spends a token, even a bad one: a flood of garbage costs us too.
            allowed = not self.frames.take("", time.monotonic())
            try:
                if msg.type != WSMsgType.TEXT:
                    raise Refused("bad_json", "frames are JSON text")
                await self.dispatch(msg.data, allowed)
            except Refused as e:
                self.error(e.code, e.message, e.client_msg_id)
        # Let the writer send what is queued (a last error, say), but not wait on a dead peer.
        self.finish()
        await asyncio.wait({self.writer}, timeout=5.0)

    async def close(self) -> None:
        if self.unwatch is not None:
            self.unwatch()
            self.unwatch = None
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.writer

    async def dispatch(self, text: str, allowed: bool) -> None:
        if len(text.encode()) > MAX_FRAME:
            raise Refused("too_large", f"frames are at most {MAX_FRAME} bytes")
        try:
            raw = decode_frame(text)
        except msgspec.DecodeError as e:
            raise Refused("bad_json", f"not JSON: {e}") from e
        except RecursionError as e:
            raise Refused("bad_json", "nested too deeply") from e
        if not isinstance(raw, dict) or not isinstance(raw.get("t"), str):
            raise Refused("bad_json", 'a frame is an object with a "t" string')
        kind = raw["t"]
        frame_type = FRAMES.get(kind)
        if frame_type is None:
            raise Refused("unknown_type", f"unknown frame type {kind[:40]!r}")
        client_msg_id = raw.get("client_msg_id") if kind == "message" else None
        try:
            frame = msgspec.convert(raw, frame_type)
        except msgspec.ValidationError as e:
            cid = client_msg_id if isinstance(client_msg_id, str) else None
            raise Refused("bad_field", str(e), cid) from e
        if not allowed:
            # Read first so the refusal names the message the client should send again.
            raise Refused("rate_limited", "too many frames: slow down", client_msg_id)
        try:
            await self.act(kind, frame)
        except StoreUnavailable as e:
            # A full or failing disk, a database too busy or away: nothing stored or
            # acknowledged. The refusal names the line, which widget.js sends again by itself
            # (stored once by its client_msg_id).
            log.error("event=widget_store_unavailable address=%s error=%s", self.address, e)
            if isinstance(frame, SendMessage):
                message, cid = "the service cannot store messages right now", frame.client_msg_id
            else:
                message, cid = UNAVAILABLE_TEXT, None
            raise Refused("unavailable", message, cid) from e

    async def act(self, kind: str, frame: object) -> None:
        if kind in ("start", "resume"):
            if self.number is not None:
                raise Refused("already_started", "this connection already has a conversation")
            if isinstance(frame, Start):
                await self.start(frame)
            else:
                await self.resume(frame)  # type: ignore[arg-type]
        elif self.number is None:
            raise Refused("not_started", "send start or resume first")
        elif isinstance(frame, SendMessage):
            await self.message(frame)
        elif kind == "leave":
            await self.leave()
        elif kind == "typing":
            with contextlib.suppress(InboxError):
                self.host.inbox.customer_typing(self.number, self.customer)

    # -------------------------------------------------------------- commands

    async def start(self, frame: Start) -> None:
        settings = self.host.config.widget
        if settings.channel is None:
            raise Refused("unavailable", "chat is not offered here")
        name = frame.name.strip()
        email = frame.email.strip()
        if not 1 <= len(name) <= NAME_MAX:
            raise Refused("bad_field", f"name: 1 to {NAME_MAX} characters")
        if len(email) > EMAIL_MAX or not EMAIL.fullmatch(email):
            raise Refused("bad_field", "email: an address like name@example.com")
        typed = check_attributes(frame.attributes)
        identity = None
        if frame.identity is not None:
            try:
                identity = verify_identity(settings.identity_secret, frame.identity, time.time())
            except Refused as e:
                log.info(
                    "event=widget_refused address=%s code=bad_identity reason=%r",
                    self.address,
                    e.reason,
                )
                raise
            name = identity.name or name
            email = identity.email or email
        allowed = self.host.config.customer_attributes.get(settings.channel, ())
        attributes, dropped = routing_attributes(typed, allowed, identity)
        if dropped:
            # Not refused: a campaign parameter in the page's URL must not stop a chat.
            log.info(
                "event=widget_attributes_dropped address=%s keys=%s",
                self.address,
                ",".join(dropped),
            )
        wait = self.widget.new_chats.take(self.address, time.monotonic())
        if wait:
            log.info("event=widget_refused address=%s code=rate_limited", self.address)
            raise Refused(
                "rate_limited",  # shown to the customer on the start form
                "Too many chats were started from your network. "
                f"Please try again in {math.ceil(wait)} seconds.",
            )
        customer = f"web-{secrets.token_hex(8)}"
        try:
            record = await self.host.inbox.start_conversation(
                channel=settings.channel,
                customer=customer,
                customer_name=name,
                customer_contact=email,
                attributes=dict(attributes),
                language=frame.language or "",
            )
        except InboxError as e:
            log.info("event=widget_refused address=%s code=%s reason=%s", self.address, e.code, e)
            if e.code == "unroutable":
                raise Refused("unroutable", UNROUTABLE_TEXT) from e
            raise Refused(e.code, e.message) from e
        await self.begin(record.number, customer, name)

    async def begin(self, number: str, customer: str, name: str) -> None:
        """Show a conversation just started to this socket, with a ticket to resume it."""
        ticket = self.widget.tickets.issue(number, customer)
        self.attach(number, customer, name, live=True)
        self.send({"t": "started", "conversation": number, "ticket": ticket})
        record, messages = await self.catch_up()
        self.send(self.state_frame(record))
        for m in messages:
            self.send(self.message_frame(m))
        self.go_live(messages)

    async def resume(self, frame: Resume) -> None:
        customer = self.widget.tickets.check(frame.conversation, frame.ticket)
        if customer is None:
            raise Refused("bad_ticket", "this ticket is not valid for that conversation")
        record = await self.record_of(frame.conversation, customer)
        if record.state in CLOSED_INTERACTION_STATES:
            # Nothing more can happen to it: show the transcript, watch nothing.
            self.attach(record.number, customer, record.customer_name, live=False)
            messages = await self.host.inbox.customer_transcript(record.number, customer)
        else:
            self.attach(record.number, customer, record.customer_name, live=True)
            record, messages = await self.catch_up()
        state = self.state_frame(record)
        self.send(
            {
                "t": "resumed",
                "conversation": record.number,
                "state": state["state"],
                "agent": state["agent"],
                "messages": [self.message_frame(m) for m in messages],
            }
        )
        self.go_live(messages)

    async def message(self, frame: SendMessage) -> None:
        cid = frame.client_msg_id
        limit = self.host.config.widget.max_message_length
        if not frame.body.strip():
            raise Refused("bad_field", "body: the message is empty", cid)
        if len(frame.body) > limit:
            raise Refused("too_large", f"body: messages are at most {limit} characters", cid)
        assert self.number is not None
        inbox = self.host.inbox
        closed = self.unwatch is None
        if closed:
            # Resumed after the close: watch first, so a reopening's news reaches this socket.
            self.unwatch = inbox.watch(self.number, self.on_event)
        self.sending.add(cid)
        try:
            message, duplicate = await inbox.customer_message(
                self.number, self.customer, frame.body, cid
            )
        except InboxError as e:
            if closed and self.unwatch is not None:
                self.unwatch()
                self.unwatch = None
            if e.code == "unroutable":
                raise Refused("unroutable", UNROUTABLE_TEXT, cid) from e
            raise Refused("conversation_closed", "this chat has ended", cid) from e
        finally:
            self.sending.discard(cid)
        if duplicate and message.sender != self.customer:
            # The store dedupes per conversation, agents' ids included: never ack their message.
            raise Refused("duplicate_id", "client_msg_id already used: pick another", cid)
        if message.interaction != self.number:
            # Written after the reopen window: the chat goes on in a new conversation.
            if self.unwatch is not None:
                self.unwatch()
            await self.begin(message.interaction, self.customer, self.customer_name)
        self.send({"t": "ack", "client_msg_id": cid, "seq": message.seq})

    async def leave(self) -> None:
        assert self.number is not None
        inbox = self.host.inbox
        with contextlib.suppress(InboxError):  # already closed: there is nothing to leave
            conv = inbox.customer_conversation(self.number, self.customer)
            # After the agent ended the chat, leaving would only add a second "left" line.
            if conv.record.state in LEAVABLE_STATES:
                await inbox.customer_left(self.number, self.customer)
        self.finish()

    # -------------------------------------------------------------- live feed

    def attach(self, number: str, customer: str, name: str, *, live: bool) -> None:
        self.number, self.customer, self.customer_name = number, customer, name
        if live:
            self.held = []
            self.unwatch = self.host.inbox.watch(number, self.on_event)

    async def catch_up(self) -> tuple[InteractionRecord, list[Message]]:
        """Read transcript and state after watching, so the live feed continues from them.

        The state is read last and, for an open conversation, from memory without yielding:
        every state event held so far is older than it, and none can arrive before go_live.
        """
        assert self.number is not None
        messages = await self.host.inbox.customer_transcript(self.number, self.customer)
        return await self.record_of(self.number, self.customer), messages

    def go_live(self, messages: list[Message]) -> None:
        """Send what arrived meanwhile, less what the catch-up already showed."""
        held, self.held = self.held or [], None
        shown = {m.seq for m in messages}
        for event in held:
            if isinstance(event, InteractionEvent):
                continue
            if isinstance(event, MessageEvent) and event.message.seq in shown:
                continue
            self.on_event(event)

    async def record_of(self, number: str, customer: str) -> InteractionRecord:
        record = await self.host.inbox.customer_record(number, customer)
        if record is None:
            raise Refused("unknown_conversation", f"no conversation {number}")
        return record

    def on_event(self, event: Event) -> None:
        if self.held is not None:
            self.held.append(event)
        elif isinstance(event, MessageEvent):
            m = event.message
            if m.kind == "message" and not (
                m.sender_kind == SenderKind.CUSTOMER and m.client_msg_id in self.sending
            ):
                self.send(self.message_frame(m))
        elif isinstance(event, InteractionEvent):
            self.send(self.state_frame(event.record))
        elif isinstance(event, TypingEvent):
            self.send({"t": "typing", "name": event.who})

    def message_frame(self, m: Message) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "t": "message",
            "seq": m.seq,
            "from": m.sender_kind.value,
            "name": None,
            "body": m.body,
            "at": m.created_at,
        }
        if m.sender_kind == SenderKind.CUSTOMER:
            frame["name"] = self.customer_name
            frame["client_msg_id"] = m.client_msg_id
        elif m.sender_kind == SenderKind.AGENT:
            frame["name"] = self.agent_name(m.sender)
        if m.attachment is not None and self.number is not None:
            # Signed now, valid for [attachments] link_ttl: a reload signs afresh.
            frame["file"] = self.widget.links.url(self.number, m.attachment, time.time())
        return frame

    def state_frame(self, record: InteractionRecord) -> dict[str, Any]:
        owner = next(
            (p.agent for p in record.participants if p.role == "owner" and p.left_at is None),
            None,
        )
        return {
            "t": "state",
            "state": record.state.value,
            "agent": self.agent_name(owner) if owner else None,
        }

    def agent_name(self, agent: str) -> str:
        # A display name or nothing: agents' ids never reach customers.
        return self.host.inbox.agent_names.get(agent) or "Agent"


def check_attributes(attributes: dict[str, str]) -> dict[str, str]:
    if len(attributes) > MAX_ATTRIBUTES:
        raise Refused("bad_field", f"attributes: at most {MAX_ATTRIBUTES}")
    for key, value in attributes.items():
        if not ATTRIBUTE_KEY.fullmatch(key):
            raise Refused("bad_field", f"attributes: bad key {key[:40]!r}")
        if len(value) > ATTRIBUTE_VALUE_MAX:
            raise Refused("bad_field", f"attributes.{key}: at most {ATTRIBUTE_VALUE_MAX} chars")
    return attributes
