"""Fuzzing the host's three inputs (agent socket, widget socket, REST) against a real host.

Each test starts one host on loopback and runs hypothesis inside it: examples are sent over
one or a few long-lived sockets, so the host sees a long stream of hostile input rather than
a fresh start per example. Hypothesis drives a synchronous function in a worker thread, which
hands every coroutine back to the test's event loop, where the host and the clients live.

INBOX_FUZZ_EXAMPLES scales the examples per test (the default keeps the suite quick);
INBOX_FUZZ_REPORT names a JSON file that receives the number of inputs sent, added to what
the file already holds, so one large run can be reported as a total.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args
from urllib.parse import quote

import aiohttp
import msgspec
import pytest
import yarl
from aiohttp import WSMsgType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from core.client import ClientError, InboxClient
from core.host import agent_socket, api, decoding, widget
from core.host.app import close_host, create_app, open_host, serve_loopback
from core.host.ratelimit import TokenBuckets
from core.model import Role
from core.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    AcceptOffer,
    AddWorkNote,
    AnyClientFrame,
    Archive,
    Authenticate,
    CloseRecord,
    EndChat,
    Error,
    Event,
    Hello,
    InviteAgent,
    LoggedIn,
    Logout,
    MarkRead,
    MessageAck,
    OfferEvent,
    Ok,
    Ping,
    RejectOffer,
    SendMessage,
    ServerFrame,
    TransferToAgent,
    Typing,
    Welcome,
    client_decoder,
    encoder,
    server_decoder,
)
from tests.hosting import RunningHost, fast_config, running_host

T = TypeVar("T")

EXAMPLES = int(os.environ.get("INBOX_FUZZ_EXAMPLES", "20"))
COUNTS: Counter[str] = Counter()
# A code is for programs: short snake_case, never an internal error leaking out.
CODE = re.compile(r"[a-z][a-z_]{1,40}")
SEEN_CODES: dict[str, set[str]] = {"agent": set(), "widget": set(), "rest": set()}

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    # Shrinking replays against a host whose state moved on; a short, honest report is better.
    report_multiple_bugs=False,
)


@pytest.fixture(autouse=True)
def patient_login(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fuzz keeps one socket unauthenticated for minutes on purpose; the login deadline
    # (tests/test_agent_protocol.py) would close it mid-run.
    monkeypatch.setattr(agent_socket, "LOGIN_TIMEOUT", 24 * 3600.0)


def report(kind: str, n: int = 1) -> None:
    COUNTS[kind] += n


def flush_report() -> None:
    """Add this module's counts to INBOX_FUZZ_REPORT (several test runs can share the file)."""
    target = os.environ.get("INBOX_FUZZ_REPORT")
    if not target:
        return
    path = Path(target)
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        old = json.loads(path.read_text())
    counts = Counter(old.get("counts", {}))
    counts.update(COUNTS)
    codes = {k: sorted(set(old.get("codes", {}).get(k, [])) | v) for k, v in SEEN_CODES.items()}
    path.write_text(json.dumps({"counts": counts, "codes": codes}, indent=1, sort_keys=True))
    COUNTS.clear()


def bridge(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, T]], T]:
    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=120)

    return run


async def fuzz_in_thread(test: Callable[[], None]) -> None:
    try:
        await asyncio.to_thread(test)
    finally:
        flush_report()


# ---------------------------------------------------------------------------- values

MSGPACK_INT = st.integers(min_value=-(2**63), max_value=2**64 - 1)
PLAUSIBLE = st.one_of(
    st.sampled_from(
        [
            "IMS0001001",
            "IMS0001002",
            "OFF0000001",
            "alice",
            "bob",
            "chloe",
            "dan",
            "nobody",
            "Available",
            "Away",
            "Offline",
            "general",
            "chat",
            "greet",
            "case",
            "incident",
            "",
            " ",
            "x" * 300,
            "\x00",
            "é😀\u202e",
        ]
    ),
    st.integers(-5, 5),
    # Past SQLite's signed 64 bits: an offset or after_seq this large once dropped the socket.
    st.sampled_from([2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.floats(),
)
RAW_VALUE = st.recursive(
    st.none() | st.booleans() | MSGPACK_INT | st.floats() | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


# ---------------------------------------------------------------------------- agent socket

CLIENT_FRAMES = {
    cls.__struct_config__.tag: [f.name for f in msgspec.structs.fields(cls)]
    for cls in get_args(AnyClientFrame)
}
# Logging in with a random password costs a slow hash each time until the address is rate
# limited; it is exercised, but rarely, so the run spends its time on other frames.
COMMON_TAGS = sorted(set(CLIENT_FRAMES) - {"login"})


@st.composite
def tagged_map(draw: st.DrawFn, tags: list[str] = COMMON_TAGS) -> dict[str, Any]:
    tag = draw(st.sampled_from(tags) | st.text(max_size=20))
    frame: dict[str, Any] = {"t": tag}
    names = CLIENT_FRAMES.get(tag, ["ref", "interaction", "body"])
    for name in draw(st.lists(st.sampled_from(names), unique=True)):
        frame[name] = draw(PLAUSIBLE | RAW_VALUE)
    if draw(st.booleans()):
        frame["ref"] = draw(st.integers(0, 2**53))
    if draw(st.integers(0, 9)) == 0:
        frame[draw(st.text(max_size=10))] = draw(RAW_VALUE)
    return frame


def deep(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"  # [[[...[nil]...]]] in msgpack


def with_invalid_utf8(frame: dict[str, Any], key: str, junk: bytes) -> bytes:
    marker = "\x01" * len(junk)
    data = encoder.encode({**frame, key: marker})
    return data.replace(marker.encode(), junk, 1)


AGENT_FRAMES = st.one_of(
    st.binary(max_size=64),
    RAW_VALUE.map(encoder.encode),
    tagged_map().map(encoder.encode),
    tagged_map(sorted(CLIENT_FRAMES)).map(encoder.encode),
    st.tuples(tagged_map().map(encoder.encode), st.integers(0, 200)).map(
        lambda d: d[0][: min(d[1], len(d[0]) - 1)]
    ),
    st.builds(
        with_invalid_utf8,
        tagged_map(),
        st.sampled_from(["t", "interaction", "body", "presence", "token"]),
        st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]),
    ),
    st.builds(
        lambda tag, key, size: encoder.encode({"t": tag, "ref": 1, key: "é" * size}),
        st.sampled_from(["send_message", "set_presence", "authenticate", "add_work_note"]),
        st.sampled_from(["body", "presence", "token", "interaction", "client_msg_id"]),
        st.sampled_from([1_000, 20_000, 150_000]),
    ),
    st.builds(
        lambda n, inside: (b"\x81\xa1t" if inside else b"") + deep(n),
        st.sampled_from([10, 1_000, 100_000]),
        st.booleans(),
    ),
    st.builds(  # a known frame with an unknown field nested deep: skipped by recursing
        lambda n, key: (
            b"\x83"
            + encoder.encode("t")
            + encoder.encode("ping")
            + encoder.encode("ref")
            + b"\x01"
            + encoder.encode(key)
            + deep(n)
        ),
        st.sampled_from([10, 1_000, 100_000]),
        st.sampled_from(["zzz", "extra"]),
    ),
    st.builds(
        lambda n: b"\xdf" + n.to_bytes(4, "big") + b"\xa1t\xa4ping",  # a map that claims n keys
        st.sampled_from([2, 2**20, 2**32 - 1]),
    ),
)


def logout(data: bytes) -> bool:
    """The host answers a logout with Ok and then closes: the close may not have arrived."""
    try:
        return isinstance(decoding.decode(client_decoder.decode, data), Logout)
    except agent_socket.UNREADABLE:
        return False


class AgentPeer:
    """One raw connection to /agent that reconnects (and logs in again) when closed."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None) -> None:
        self.http, self.url, self.token = http, url, token
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reconnects = 0

    async def connect(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
        await self.ws.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION)))
        assert isinstance(await self.reply(), Welcome)
        if self.token is not None:
            await self.ws.send_bytes(encoder.encode(Authenticate(ref=1, token=self.token)))
            assert isinstance(await self.reply(), LoggedIn)

    async def reply(self) -> ServerFrame | None:
        """The next answer (events are skipped), or None when the host closed the socket."""
        assert self.ws is not None
        while True:
            msg = await self.ws.receive(timeout=30)
            if msg.type != WSMsgType.BINARY:
                assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED), msg
                return None
            frame = server_decoder.decode(msg.data)
            if not isinstance(frame, Event):
                return frame

    async def exchange(self, data: bytes) -> ServerFrame | None:
        assert self.ws is not None
        report("agent")
        with contextlib.suppress(ConnectionResetError):
            await self.ws.send_bytes(data)
        answer = await self.reply()
        if answer is None or isinstance(answer, LoggedIn) or self.ws.closed or logout(data):
            # Back to the state this peer stands for (logged in, or not).
            self.reconnects += 1
            await self.connect()
        return answer


def sent_ref(data: bytes) -> int | None:
    """The frame's `ref` as a plain msgpack reader sees it (0 when it has none in range), or
    None when such a reader cannot say: not msgpack, or a map keyed by more than strings."""
    try:
        value = decoding.decode(msgspec.msgpack.decode, data)
    except Exception:
        return None
    if not isinstance(value, dict):
        return 0
    if not all(isinstance(key, str) for key in value):
        return None
    ref = value.get("ref")
    return ref if type(ref) is int and 0 <= ref <= 2**53 else 0


def check_agent_answer(data: bytes, answer: ServerFrame | None, authenticated: bool) -> None:
    try:
        frame = decoding.decode(client_decoder.decode, data)
    except agent_socket.UNREADABLE:
        assert isinstance(answer, Error) and answer.code == "bad_frame", (data[:200], answer)
        # The refused call must fail at once, so its error answers the ref it was sent with.
        assert sent_ref(data) in (None, answer.ref), (data[:200], answer)
        SEEN_CODES["agent"].add(answer.code)
        return
    if isinstance(frame, Logout) and authenticated:
        assert isinstance(answer, Ok), answer
        return
    assert answer is not None, f"the host closed the socket on a valid frame: {frame!r:.300}"
    if isinstance(answer, Error):
        assert CODE.fullmatch(answer.code) and answer.message, answer
        SEEN_CODES["agent"].add(answer.code)
    elif not authenticated:
        # Without a session only logging in can succeed (and LoggedIn reconnects the peer).
        assert isinstance(answer, LoggedIn | Ok), answer


async def api_token(h: RunningHost, agent: str | None, role: Role = Role.AGENT) -> str:
    secret, _ = await h.host.auth.create_api_token(f"fuzz-{agent}", agent, role, None)
    return secret


async def still_serving(h: RunningHost, http: aiohttp.ClientSession) -> None:
    """A fresh agent connection logs in and pings. A token is used, not a password: the fuzz
    has rightly used up this address's failed-login allowance."""
    peer = AgentPeer(http, h.agent_url, await api_token(h, "chloe"))
    await peer.connect()
    assert isinstance(await peer.exchange(encoder.encode(Ping(ref=9))), Ok)
    assert peer.ws is not None
    await peer.ws.close()
    async with http.get(h.url + "/healthz") as response:
        assert response.status == 200


async def agent_messages(h: RunningHost) -> int:
    total = 0
    for number in await interaction_numbers(h):
        total += len(await h.host.inbox.store.list_messages(number, 0, 1000))
    return total


async def interaction_numbers(h: RunningHost) -> list[str]:
    return [r.number for r in await h.host.inbox.store.list_interactions(limit=10_000)]


async def test_agent_socket_answers_every_frame_and_serves_on(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h, aiohttp.ClientSession() as http:
        await h.host.inbox.start_conversation(channel="chat", customer="web-ana", customer_name="A")
        before = await agent_messages(h)
        anonymous = AgentPeer(http, h.agent_url, None)
        alice = AgentPeer(http, h.agent_url, await api_token(h, "alice"))
        run = bridge(asyncio.get_running_loop())
        run_peer = run  # the same loop drives both peers

        async def connect() -> None:
            await anonymous.connect()
            await alice.connect()

        await connect()
        acks = 0

        @FUZZ_SETTINGS
        @given(st.lists(st.tuples(st.booleans(), AGENT_FRAMES), min_size=1, max_size=10))
        def fuzz(frames: list[tuple[bool, bytes]]) -> None:
            nonlocal acks
            for logged_in, data in frames:
                peer = alice if logged_in else anonymous
                answer = run_peer(peer.exchange(data))
                check_agent_answer(data, answer, logged_in)
                if isinstance(answer, MessageAck) and not answer.duplicate:
                    acks += 1

        await fuzz_in_thread(fuzz)

        # Oversized: the transport drops that one socket.
        assert alice.ws is not None
        with contextlib.suppress(ConnectionError):
            await alice.ws.send_bytes(b"\x00" * (MAX_FRAME_BYTES + 1024))
            assert await alice.reply() is None
        # Garbage instead of hello: refused and closed.
        ws = await http.ws_connect(h.agent_url)
        await ws.send_bytes(b"\xc1")
        first = server_decoder.decode((await ws.receive()).data)
        assert isinstance(first, Error) and first.code == "no_hello"
        assert (await ws.receive()).type in (WSMsgType.CLOSE, WSMsgType.CLOSED)

        await still_serving(h, http)
        # Only acknowledged messages were stored: a refused frame wrote nothing.
        assert await agent_messages(h) == before + acks
        await anonymous.connect()
        await alice.connect()


# ---------------------------------------------------------------------------- agent commands

OPS = [
    "accept",
    "accept_again",
    "reject_after_accept",
    "send",
    "send_duplicate",
    "note",
    "end",
    "close",
    "archive",
    "transfer_self",
    "transfer_offline",
    "transfer_unknown",
    "invite_self",
    "typing",
    "mark_read_future",
]


async def offer_for(client: InboxClient, number: str) -> str:
    async with asyncio.timeout(15):
        while True:
            event = await client.next_event(OfferEvent)
            if event.view.interaction == number:
                return event.view.offer.id


@dataclass
class Ledger:
    acks: dict[str, set[str]] = field(default_factory=dict)  # interaction -> client_msg_ids
    codes: Counter[str] = field(default_factory=Counter)
    log: list[tuple[str, ...]] = field(default_factory=list)


async def play(
    client: InboxClient, number: str, offer: str, ops: list[str], led: Ledger
) -> tuple[bool, bool]:
    """Run `ops`; whether the offer was accepted, and whether it was rejected first."""
    last_id = secrets.token_hex(6)
    accepted = rejected = False
    for op in ops:
        report("agent_command")
        frame: Any
        if op in ("accept", "accept_again"):
            frame = AcceptOffer(offer=offer)
        elif op == "reject_after_accept":
            frame = RejectOffer(offer=offer, reason="fuzz")
        elif op in ("send", "send_duplicate"):
            if op == "send":
                last_id = secrets.token_hex(6)
            frame = SendMessage(interaction=number, body="hello", client_msg_id=last_id)
        elif op == "note":
            frame = AddWorkNote(interaction=number, body="n", client_msg_id=secrets.token_hex(6))
        elif op == "end":
            frame = EndChat(interaction=number)
        elif op == "close":
            frame = CloseRecord(interaction=number)
        elif op == "archive":
            frame = Archive(interaction=number)
        elif op == "transfer_self":
            frame = TransferToAgent(interaction=number, agent="alice")
        elif op == "transfer_offline":
            frame = TransferToAgent(interaction=number, agent="chloe")
        elif op == "transfer_unknown":
            frame = TransferToAgent(interaction=number, agent="nobody")
        elif op == "invite_self":
            frame = InviteAgent(interaction=number, agent="alice")
        elif op == "typing":
            frame = Typing(interaction=number)
        else:
            frame = MarkRead(interaction=number, seq=10**9)
        try:
            reply = await client.request(frame)
        except ClientError as e:
            assert CODE.fullmatch(e.code), e
            led.codes[e.code] += 1
            SEEN_CODES["agent"].add(e.code)
            continue
        assert not isinstance(reply, Error), reply
        if isinstance(reply, MessageAck):
            led.log.append((number, op, reply.message.client_msg_id, reply.message.interaction))
            ids = led.acks.setdefault(number, set())
            assert reply.duplicate == (reply.message.client_msg_id in ids), (op, reply)
            ids.add(reply.message.client_msg_id)
        # Transferring to oneself must be refused, never succeed. Accepting again the offer
        # that made the chat hers answers ok (a console resending after a reconnect) and
        # changes nothing: one_chat checks that the item was accepted once.
        assert op != "transfer_self", reply
        if op in ("accept", "accept_again"):
            accepted = True
        if op == "reject_after_accept":
            rejected = True
    return accepted, rejected


async def test_agent_commands_out_of_order_are_refused_cleanly(tmp_path: Path) -> None:
    async with running_host(tmp_path, fast_config()) as h, aiohttp.ClientSession() as http:
        alice = await h.agent("alice")
        run = bridge(asyncio.get_running_loop())
        led = Ledger()
        anonymous = AgentPeer(http, h.agent_url, None)
        await anonymous.connect()

        async def one_chat(ops: list[str]) -> None:
            record = await h.host.inbox.start_conversation(
                channel="chat", customer=f"web-{secrets.token_hex(8)}", customer_name="Fuzz"
            )
            offer = await offer_for(alice, record.number)
            # Nobody has logged in on this socket: every command is refused the same way.
            answer = await anonymous.exchange(encoder.encode(AcceptOffer(ref=3, offer=offer)))
            assert isinstance(answer, Error) and answer.code == "unauthenticated"
            number = record.number
            accepted, rejected = await play(alice, number, offer, ops, led)
            # Leave nothing for the next example: alice holds one pending offer at a time, so
            # an item left waiting would be offered to her again and again.
            if not accepted:
                if rejected:  # alice is the only one eligible: it comes back to her
                    offer = await offer_for(alice, number)
                await alice.request(AcceptOffer(offer=offer))
            for frame in (EndChat(interaction=number), CloseRecord(interaction=number)):
                with contextlib.suppress(ClientError):
                    await alice.request(frame)
            trail = await h.host.inbox.store.audit_trail(record.item)
            assert [e.kind for e in trail].count("offer_accepted") == 1, trail

        @FUZZ_SETTINGS
        @given(st.lists(st.sampled_from(OPS), min_size=1, max_size=12))
        def fuzz(ops: list[str]) -> None:
            run(one_chat(ops))

        await fuzz_in_thread(fuzz)

        # Rejecting an accepted offer, sending to a closed chat, transferring to oneself or
        # to an agent who is offline: all refused with a code.
        fixed = [
            "accept",
            "accept_again",
            "reject_after_accept",
            "transfer_self",
            "transfer_offline",
            "end",
            "close",
        ]
        await one_chat([*fixed, "send", "archive"])
        assert {"offer_not_pending"} <= set(led.codes), led.codes
        for number, ids in led.acks.items():
            stored = await h.host.inbox.store.list_messages(number, 0, 1000)
            mine = [m for m in stored if m.sender == "alice"]  # messages and work notes
            assert sorted(m.client_msg_id for m in mine) == sorted(ids), (number, stored)
        await alice.close()
        await still_serving(h, http)


# ---------------------------------------------------------------------------- widget socket

WIDGET_TYPES = sorted(widget.FRAMES)
WIDGET_FIELDS = ["name", "email", "attributes", "conversation", "ticket", "body", "client_msg_id"]
WIDGET_OUT = {"started", "resumed", "state", "message", "ack", "typing", "error"}
WIDGET_PLAUSIBLE = PLAUSIBLE.filter(lambda v: not isinstance(v, bytes)) | st.sampled_from(
    ["Ana", "ana@example.com", "IMS0001001", "web-0123456789abcdef.00", {"plan": "gold"}]
)


@st.composite
def widget_object(draw: st.DrawFn) -> dict[str, Any]:
    frame: dict[str, Any] = {"t": draw(st.sampled_from(WIDGET_TYPES) | st.text(max_size=12))}
    for name in draw(st.lists(st.sampled_from(WIDGET_FIELDS), unique=True, max_size=4)):
        frame[name] = draw(WIDGET_PLAUSIBLE | RAW_VALUE)
    return frame


def dumps(value: object) -> str:
    return json.dumps(value, allow_nan=True)


WIDGET_FRAMES = st.one_of(
    # Well-formed messages, their ids from a small set so that some are sent again: the end
    # check needs acknowledged messages to count, and repeats to be stored once.
    st.tuples(
        st.just("text"),
        st.builds(
            lambda body, msg_id: dumps({"t": "message", "body": body, "client_msg_id": msg_id}),
            st.text(min_size=1, max_size=40).filter(str.strip),
            st.sampled_from(["m1", "m2", "m3", "m4"]),
        ),
    ),
    st.tuples(st.just("text"), st.text(max_size=40)),
    st.tuples(st.just("text"), RAW_VALUE.map(dumps)),
    st.tuples(st.just("text"), widget_object().map(dumps)),
    st.tuples(st.just("text"), widget_object().map(dumps).map(lambda s: s[: len(s) // 2])),
    st.tuples(st.just("binary"), st.binary(max_size=40)),
    st.tuples(
        st.just("text"),
        st.builds(
            lambda key, junk: dumps(
                {"t": "start", "name": "A", "email": "a@b.co", key: "@"}
            ).replace('"@"', junk),
            st.sampled_from(["name", "email", "body"]),
            st.sampled_from(['"\\ud800"', '"\\udfff x"', '"\\u0000"', '"a\\ud83dz"']),
        ),
    ),
    st.tuples(
        st.just("text"),
        st.builds(
            lambda junk: f'{{"t":"message","client_msg_id":"j","body":{junk}}}',
            st.sampled_from(['"\\ud800"', '"\\udc00\\ud800"', '"\\u0000"']),
        ),
    ),
    st.tuples(
        st.just("text"),
        st.builds(
            lambda n, inside: (
                ('{"t":"message","body":' if inside else "")
                + "[" * n
                + "]" * n
                + ("}" if inside else "")
            ),
            st.sampled_from([10, 1_000, 10_000, 30_000]),  # 10,000 deep fits in a frame
            st.booleans(),
        ),
    ),
    st.tuples(
        st.just("text"),
        st.builds(
            lambda n: dumps({"t": "message", "body": "é" * n, "client_msg_id": "big"}),
            st.sampled_from([2_001, 20_000, 100_000]),
        ),
    ),
)


class WidgetPeer:
    """A customer socket; `started` peers open a conversation first, and again on reconnect."""

    def __init__(self, http: aiohttp.ClientSession, url: str, started: bool) -> None:
        self.http, self.url, self.started = http, url, started
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.probes = 0
        self.conversation = ""

    async def connect(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
        if self.started:
            await self.ws.send_str(dumps({"t": "start", "name": "Fuzz", "email": "f@example.com"}))
            frames = await self.until_probe()
            assert frames is not None and frames[0]["t"] == "started", frames
            self.conversation = frames[0]["conversation"]

    async def until_probe(self) -> list[dict[str, Any]] | None:
        """Every frame the host sent up to the answer to a probe; None if it closed."""
        assert self.ws is not None
        self.probes += 1
        probe = f"probe-{self.probes}"
        with contextlib.suppress(ConnectionResetError):
            await self.ws.send_str(dumps({"t": probe}))
        frames = []
        while True:
            msg = await self.ws.receive(timeout=30)
            if msg.type != WSMsgType.TEXT:
                assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED), msg
                return None
            frame = json.loads(msg.data)
            if frame.get("code") == "unknown_type" and probe in frame["message"]:
                return frames
            assert frame.get("t") in WIDGET_OUT, frame
            if frame["t"] == "error":
                assert CODE.fullmatch(frame["code"]) and frame["message"], frame
                SEEN_CODES["widget"].add(frame["code"])
            frames.append(frame)

    async def exchange(self, kind: str, data: str | bytes) -> list[dict[str, Any]] | None:
        assert self.ws is not None
        report("widget")
        with contextlib.suppress(ConnectionResetError):
            if kind == "binary":
                assert isinstance(data, bytes)
                await self.ws.send_bytes(data)
            else:
                assert isinstance(data, str)
                await self.ws.send_str(data)
        frames = await self.until_probe()
        if frames is None or self.ws.closed:
            await self.connect()
        return frames


def widget_garbage(kind: str, data: str | bytes) -> bool:
    """Whether the host must answer with an error: not a JSON object of a known type."""
    if kind == "binary":
        return True
    try:
        raw = widget.decode_frame(data)  # the host's own parser, safe on deep input
    except (msgspec.DecodeError, RecursionError):
        return True
    return not isinstance(raw, dict) or raw.get("t") not in widget.FRAMES


async def test_widget_socket_answers_every_frame_and_serves_on(
    tmp_path: Path, monkeypatch: Any
) -> None:
    # The per-connection and per-address limits would turn most of the run into rate_limited
    # answers (tests/test_widget.py tests them).
    monkeypatch.setattr(widget, "RATE_PER_SECOND", 1e9)
    monkeypatch.setattr(widget, "RATE_BURST", 1e9)
    config = fast_config()
    config = replace(config, widget=replace(config.widget, new_chats_per_address=10**6))
    async with running_host(tmp_path, config) as h, aiohttp.ClientSession() as http:
        url = h.url.replace("http://", "ws://") + "/widget/ws"
        fresh, started = WidgetPeer(http, url, False), WidgetPeer(http, url, True)
        await fresh.connect()
        await started.connect()
        acked: set[tuple[str, str]] = set()  # (conversation, client_msg_id)
        run = bridge(asyncio.get_running_loop())

        @FUZZ_SETTINGS
        @given(st.lists(st.tuples(st.booleans(), WIDGET_FRAMES), min_size=1, max_size=10))
        def fuzz(frames: list[tuple[bool, tuple[str, str | bytes]]]) -> None:
            for use_started, (kind, data) in frames:
                peer = started if use_started else fresh
                conversation = peer.conversation  # a reconnect below starts another
                answer = run(peer.exchange(kind, data))
                size = len(data.encode() if isinstance(data, str) else data)
                if answer is None:
                    # Only leave, or a frame the transport refuses, may close the socket.
                    assert size > widget.MAX_FRAME or '"leave"' in str(data), data[:200]
                    continue
                if widget_garbage(kind, data):
                    assert any(f["t"] == "error" for f in answer), (data[:200], answer)
                if not use_started:
                    assert all(f["t"] == "error" for f in answer) or '"start"' in str(data)
                    if any(f["t"] == "started" for f in answer):
                        run(fresh.connect())  # back to a socket with no conversation
                acked.update((conversation, f["client_msg_id"]) for f in answer if f["t"] == "ack")

        await fuzz_in_thread(fuzz)
        await still_serving(h, http)
        # Exactly the acknowledged customer messages are stored, each once: an ack always
        # comes before the answer to the probe after it, so none is stored unseen. (Starting
        # a conversation writes a system line: customers' messages only.)
        stored = [
            (number, m.client_msg_id)
            for number in await interaction_numbers(h)
            for m in await h.host.inbox.store.list_messages(number, 0, 1000)
            if m.sender_kind == "customer"
        ]
        assert sorted(stored) == sorted(acked)
        probe = WidgetPeer(http, url, True)
        await probe.connect()


# ---------------------------------------------------------------------------- REST

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]
PATH_TEXT = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="?#"), max_size=20
)


@st.composite
def rest_request(draw: st.DrawFn, number: str) -> dict[str, Any]:
    segment = draw(
        st.sampled_from(
            [
                "/items",
                f"/interactions/{number}",
                f"/interactions/{number}/messages",
                "/interactions/IMS9999999/messages",
                "/queues",
                "/openapi.json",
                "",
                "/",
            ]
        )
        | PATH_TEXT.map(lambda s: "/" + quote(s, safe="/"))
    )
    query = draw(
        st.none()
        | st.text(max_size=20).map(lambda s: "?" + quote(s, safe="=&"))
        | st.sampled_from(["after_seq", "limit"]).map(lambda k: f"?{k}={2**63}")
    )
    body = draw(
        st.none()
        | st.binary(max_size=60)
        | RAW_VALUE.map(lambda v: dumps(v).encode())
        | st.builds(
            lambda d: dumps(d).encode(),
            st.fixed_dictionaries(
                {},
                optional={
                    "channel": WIDGET_PLAUSIBLE,
                    "customer": st.fixed_dictionaries(
                        {"id": WIDGET_PLAUSIBLE}, optional={"name": WIDGET_PLAUSIBLE}
                    )
                    | RAW_VALUE,
                    "customer_id": WIDGET_PLAUSIBLE,
                    "body": WIDGET_PLAUSIBLE,
                    "client_msg_id": WIDGET_PLAUSIBLE,
                    "attributes": RAW_VALUE,
                    "priority": WIDGET_PLAUSIBLE,
                    "short_description": WIDGET_PLAUSIBLE,
                },
            ),
        )
        | st.sampled_from([b"\xff\xfe", b'{"body":"\xff"}', b'"\\ud800"', b"{" * 5000])
        | st.sampled_from([70_000, 200_000]).map(lambda n: b"x" * n)
    )
    header = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
    return {
        "method": draw(st.sampled_from(METHODS)),
        "path": "/api/v1" + segment + (query or ""),
        "auth": draw(st.sampled_from(["valid", "agent", "none", "garbage"])),
        "garbage": draw(header),
        "content_type": draw(
            st.none()
            | st.sampled_from(["application/json", "text/plain", "application/json; x"])
            | header
        ),
        "body": body,
    }


async def test_rest_api_answers_json_errors_and_serves_on(tmp_path: Path) -> None:
    host = await open_host(fast_config(), tmp_path / "data")
    app = create_app(host)
    # The limits are tested elsewhere; here they would only turn the run into 429s.
    app[api.LIMITS] = api.RateLimits(
        per_token=TokenBuckets(1e9, 1e9), per_address=TokenBuckets(1e9, 1e9)
    )
    runner, url = await serve_loopback(app)
    h = RunningHost(host=host, url=url)
    try:
        async with aiohttp.ClientSession() as http:
            valid, integration = await host.auth.create_api_token(
                "fuzz-valid", None, Role.SUPERVISOR, None
            )
            tokens = {"valid": valid, "agent": await api_token(h, "alice")}
            # Created by the valid token, so that its well-formed posts may succeed.
            record = await host.inbox.start_conversation(
                channel="messaging", customer="cust-1", customer_name="C", created_by=integration.id
            )
            before = len(await host.inbox.store.list_messages(record.number, 0, 1000))
            posted = 0

            async def send(req: dict[str, Any]) -> tuple[int, Any]:
                headers = {}
                if req["auth"] in tokens:
                    headers["Authorization"] = f"Bearer {tokens[req['auth']]}"
                elif req["auth"] == "garbage":
                    headers["Authorization"] = req["garbage"]
                if req["content_type"] is not None:
                    headers["Content-Type"] = req["content_type"]
                report("rest")
                async with http.request(
                    req["method"],
                    yarl.URL(url + req["path"], encoded=True),
                    headers=headers,
                    data=req["body"],
                ) as response:
                    raw = await response.read()
                    if req["method"] == "HEAD":
                        return response.status, None
                    assert response.content_type == "application/json", (response.status, raw)
                    return response.status, json.loads(raw)

            @FUZZ_SETTINGS
            @given(st.lists(rest_request(record.number), min_size=1, max_size=8))
            def fuzz(requests: list[dict[str, Any]]) -> None:
                nonlocal posted
                for req in requests:
                    status, body = bridge_run(send(req))
                    assert status < 500, (req, status, body)
                    if body is not None and status >= 400:
                        code = body["error"]["code"]
                        assert CODE.fullmatch(code), body
                        SEEN_CODES["rest"].add(code)
                    if (
                        status == 201
                        and req["method"] == "POST"
                        and req["path"].startswith(f"/api/v1/interactions/{record.number}/")
                    ):
                        posted += 1

            bridge_run = bridge(asyncio.get_running_loop())
            await fuzz_in_thread(fuzz)
            after = len(await host.inbox.store.list_messages(record.number, 0, 1000))
            assert after == before + posted
            async with http.get(
                url + "/api/v1/queues", headers={"Authorization": f"Bearer {tokens['valid']}"}
            ) as response:
                assert response.status == 200
            await still_serving(h, http)
    finally:
        await runner.cleanup()
        await close_host(host)
