"""The customer widget's socket protocol, spoken over a real loopback port with aiohttp's client.

Agents act through the Inbox directly (a session without a socket), which is all the widget
sees of them anyway.
"""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from msgspec.structs import replace

from core.config import HostConfig, WidgetSettings, load_config
from core.demo import demo_config
from core.host import widget
from core.host.app import close_host, create_app, open_host, serve_loopback
from core.host.state import Host
from core.model import SenderKind
from core.protocol import (
    AcceptOffer,
    AddWorkNote,
    EndChat,
    Event,
    OfferEvent,
    SendMessage,
    ServerFrame,
    SetPresence,
    TransferToAgent,
    Typing,
)
from core.service.sessions import AgentSession

TIMEOUT = 5.0
SCRIPT = "<script>alert(1)</script><img src=x onerror=alert(2)>"


# ---------------------------------------------------------------------------- fixtures


@dataclass
class Served:
    host: Host
    base: str  # http://127.0.0.1:<port>
    runner: web.AppRunner

    @property
    def ws_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/widget/ws"


async def serve(config: HostConfig, data_dir: Path) -> Served:
    host = await open_host(config, data_dir)
    runner, base = await serve_loopback(create_app(host))
    return Served(host=host, base=base, runner=runner)


async def stop(served: Served) -> None:
    await served.runner.cleanup()
    await close_host(served.host)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    s = await serve(demo_config(), tmp_path)
    try:
        yield s
    finally:
        await stop(s)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# ---------------------------------------------------------------------------- actors


class Customer:
    """One widget socket; keeps every raw frame so tests can look for leaks."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.raw: list[str] = []
        self.unread: list[dict[str, Any]] = []

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        if self.unread:
            return self.unread.pop(0)
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == WSMsgType.TEXT, f"expected a text frame, got {msg.type} {msg.data!r}"
        self.raw.append(msg.data)
        return json.loads(msg.data)

    async def expect(self, t: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
        """The next frame of type `t` with these fields; frames skipped on the way are kept."""
        skipped = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                frame = await self.recv(max(0.01, deadline - time.monotonic()))
                if frame["t"] == t and all(frame.get(k) == v for k, v in fields.items()):
                    return frame
                skipped.append(frame)
        finally:
            self.unread[:0] = skipped

    async def expect_error(self, code: str) -> dict[str, Any]:
        frame = await self.expect("error")
        assert frame["code"] == code, frame
        assert frame["message"]
        return frame

    async def start(self, name: str = "Ada", email: str = "ada@example.com", **extra: Any):
        await self.send(t="start", name=name, email=email, **extra)
        return await self.expect("started")

    async def say(self, body: str, client_msg_id: str) -> dict[str, Any]:
        await self.send(t="message", body=body, client_msg_id=client_msg_id)
        return await self.expect("ack", client_msg_id=client_msg_id)


async def connect(http: aiohttp.ClientSession, served: Served) -> Customer:
    return Customer(await http.ws_connect(served.ws_url))


class AgentDesk:
    """An agent acting through the Inbox directly, reading events off its session buffer."""

    def __init__(self, host: Host, agent: str) -> None:
        role = next(a.role for a in host.config.agents if a.id == agent)
        self.inbox = host.inbox
        self.session: AgentSession = host.inbox.open_session(
            agent, role, f"digest-{agent}", time.time() + 3600
        )
        self.cursor = 0

    async def do(self, frame: Any) -> ServerFrame:
        return await self.inbox.handle(self.session, frame)

    async def event(self, match: Callable[[Event], bool], timeout: float = TIMEOUT) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.session.buffer:
                if e.seq > self.cursor and match(e):
                    self.cursor = e.seq
                    return e
            await _tick()
        raise AssertionError(f"{self.session.agent} got no such event")

    async def accept_next_offer(self) -> str:
        offer = await self.event(lambda e: isinstance(e, OfferEvent))
        assert isinstance(offer, OfferEvent)
        await self.do(AcceptOffer(offer=offer.view.offer.id))
        assert offer.view.interaction
        return offer.view.interaction


async def _tick() -> None:
    await asyncio.sleep(0.02)


async def available(host: Host, agent: str) -> AgentDesk:
    desk = AgentDesk(host, agent)
    await desk.do(SetPresence(presence="Available"))
    return desk


# ---------------------------------------------------------------------------- page


async def test_page_and_script_are_served_with_a_strict_policy(
    served: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(served.base + "/widget") as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        html = await r.text()
    assert "__WIDGET_CONFIG__" not in html
    assert '"max_message_length": 2000' in html and '"title": "Support"' in html
    assert 'src="widget/static/widget.js"' in html
    async with http.get(served.base + "/widget/static/widget.js") as r:
        assert r.status == 200
        assert r.content_type == "text/javascript"
        js = await r.text()
    # Text only ever goes in through textContent.
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js


def test_page_config_cannot_close_its_script_element() -> None:
    settings = WidgetSettings(title="</script><script>alert(1)</script>")
    text = widget.page_config(settings)
    assert "<" not in text and json.loads(text)["title"] == settings.title


# ---------------------------------------------------------------------------- a chat


async def test_chat_start_accept_and_exchange(served: Served, http: aiohttp.ClientSession) -> None:
    host = served.host
    alice = await available(host, "alice")
    c = await connect(http, served)
    started = await c.start(name="Ada Lovelace", email="ada@example.com")
    number = started["conversation"]
    assert number.startswith("IMS")
    assert started["ticket"].startswith("web-")
    assert (await c.expect("state"))["state"] == "new"

    assert await alice.accept_next_offer() == number
    state = await c.expect("state", state="work_in_progress")
    assert state["agent"] == "Alice Martin"
    joined = await c.expect("message", body="Alice Martin joined")
    assert joined["from"] == "system" and joined["name"] is None

    # A second tab on the same chat gets the customer's line; the tab that sent it has the ack.
    tab = await connect(http, served)
    await tab.send(t="resume", conversation=number, ticket=started["ticket"])
    await tab.expect("resumed")
    ack = await c.say("My printer is on fire", "c-1")
    mine = await tab.expect("message", seq=ack["seq"])
    assert mine["from"] == "customer" and mine["name"] == "Ada Lovelace"
    assert mine["client_msg_id"] == "c-1" and mine["body"] == "My printer is on fire"
    heard = await alice.event(
        lambda e: getattr(getattr(e, "message", None), "body", "") == "My printer is on fire"
    )
    assert heard.message.sender_kind == SenderKind.CUSTOMER  # type: ignore[attr-defined]

    await alice.do(AddWorkNote(interaction=number, body="internal: VIP", client_msg_id="n-1"))
    await alice.do(Typing(interaction=number))
    assert (await c.expect("typing"))["name"] == "Alice Martin"
    await alice.do(SendMessage(interaction=number, body="Step away from it", client_msg_id="a-1"))
    reply = await c.expect("message", body="Step away from it")
    assert reply["from"] == "agent" and reply["name"] == "Alice Martin"
    assert "client_msg_id" not in reply and isinstance(reply["at"], float)
    # The reply came after the customer's line was stored: no echo of it was on the way.
    assert not [f for f in map(json.loads, c.raw) if f["t"] == "message" and f["seq"] == ack["seq"]]
    await tab.ws.close()

    # Customers never see work notes nor agents' ids.
    assert not any("internal: VIP" in raw for raw in c.raw)
    assert not any('"alice"' in raw for raw in c.raw)
    await c.ws.close()


async def test_a_tab_that_stops_reading_is_dropped_and_the_other_is_served(
    served: Served, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(widget, "OUTGOING_LIMIT", 20)
    alice = await available(served.host, "alice")
    c = await connect(http, served)
    started = await c.start()
    number = started["conversation"]
    await alice.accept_next_offer()
    stuck = await connect(http, served)
    await stuck.send(t="resume", conversation=number, ticket=started["ticket"])
    await stuck.expect("resumed")

    async def read_until(body: str) -> None:
        while (await c.recv()).get("body") != body:
            pass

    reader = asyncio.create_task(read_until("last"))
    big = "x" * 15_000
    # Enough to fill the stuck tab's socket buffers (kernel and aiohttp) and then its queue.
    for i in range(800):
        await alice.do(SendMessage(interaction=number, body=f"{i} {big}", client_msg_id=f"a{i}"))
    await alice.do(SendMessage(interaction=number, body="last", client_msg_id="a-last"))
    await asyncio.wait_for(reader, TIMEOUT)
    while (msg := await stuck.ws.receive(timeout=TIMEOUT)).type == WSMsgType.TEXT:
        pass
    assert msg.type == WSMsgType.CLOSE
    assert (msg.data, msg.extra) == (1008, "not reading")
    await c.ws.close()


async def test_duplicate_client_msg_id_is_stored_once(
    served: Served, http: aiohttp.ClientSession
) -> None:
    c = await connect(http, served)
    number = (await c.start())["conversation"]
    first = await c.say("hello", "same-id")
    again = await c.say("hello", "same-id")
    assert first["seq"] == again["seq"]
    stored = await served.host.inbox.store.list_messages(number, limit=100)
    assert [m.body for m in stored if m.sender_kind == SenderKind.CUSTOMER] == ["hello"]


async def test_customer_cannot_claim_an_agents_client_msg_id(
    served: Served, http: aiohttp.ClientSession
) -> None:
    alice = await available(served.host, "alice")
    c = await connect(http, served)
    number = (await c.start())["conversation"]
    await alice.accept_next_offer()
    await alice.do(SendMessage(interaction=number, body="agent says", client_msg_id="x-1"))
    await c.send(t="message", body="customer says", client_msg_id="x-1")
    error = await c.expect_error("duplicate_id")
    assert error["client_msg_id"] == "x-1"
    assert not any(f.get("t") == "ack" for f in c.unread)


async def test_resume_after_reconnect_returns_transcript_and_goes_live(
    served: Served, http: aiohttp.ClientSession
) -> None:
    alice = await available(served.host, "alice")
    c = await connect(http, served)
    started = await c.start()
    number, ticket = started["conversation"], started["ticket"]
    await alice.accept_next_offer()
    await c.say("before the reload", "c-1")
    await c.ws.close()

    # While the customer is away the chat goes on.
    await alice.do(SendMessage(interaction=number, body="still there?", client_msg_id="a-1"))
    c2 = await connect(http, served)
    await c2.send(t="resume", conversation=number, ticket=ticket)
    resumed = await c2.expect("resumed")
    assert resumed["conversation"] == number
    assert resumed["state"] == "work_in_progress" and resumed["agent"] == "Alice Martin"
    bodies = [m["body"] for m in resumed["messages"]]
    assert bodies == ["Alice Martin joined", "before the reload", "still there?"]
    assert [m["seq"] for m in resumed["messages"]] == sorted(m["seq"] for m in resumed["messages"])

    await alice.do(SendMessage(interaction=number, body="live again", client_msg_id="a-2"))
    await c2.expect("message", body="live again")
    await c2.say("yes", "c-2")


async def test_bad_tickets_are_refused_and_the_socket_keeps_serving(
    served: Served, http: aiohttp.ClientSession
) -> None:
    c = await connect(http, served)
    started = await c.start()
    number, ticket = started["conversation"], started["ticket"]
    other = await connect(http, served)
    other_started = await other.start(name="Eve", email="eve@example.com")

    probe = await connect(http, served)
    customer, _, mac = ticket.partition(".")
    for conversation, bad in [
        (number, customer + "." + "0" * len(mac)),  # forged mac
        (other_started["conversation"], ticket),  # a real ticket, for someone else's chat
        (number, mac),  # no customer part
        (number, "web-0123456789abcdef." + mac),  # someone else's customer id
        ("IMS9999999", ticket),
    ]:
        await probe.send(t="resume", conversation=conversation, ticket=bad)
        await probe.expect_error("bad_ticket")
    await probe.send(t="message", body="hi", client_msg_id="p-1")
    await probe.expect_error("not_started")
    await probe.send(t="resume", conversation=number, ticket=ticket)
    assert (await probe.expect("resumed"))["conversation"] == number


async def test_markup_is_stored_and_echoed_verbatim(
    served: Served, http: aiohttp.ClientSession
) -> None:
    c = await connect(http, served)
    started = await c.start(name=SCRIPT, email="x@example.com")
    number = started["conversation"]
    tab = await connect(http, served)
    await tab.send(t="resume", conversation=number, ticket=started["ticket"])
    await tab.expect("resumed")
    ack = await c.say(SCRIPT, "c-1")
    echo = await tab.expect("message", seq=ack["seq"])
    assert echo["body"] == SCRIPT and echo["name"] == SCRIPT
    record = await served.host.inbox.store.get_interaction(number)
    assert record is not None and record.customer_name == SCRIPT
    stored = await served.host.inbox.store.list_messages(number, limit=10)
    assert stored[-1].body == SCRIPT


# ---------------------------------------------------------------------------- refusals


async def test_bad_frames_get_clear_errors_and_the_socket_keeps_serving(
    served: Served, http: aiohttp.ClientSession
) -> None:
    c = await connect(http, served)
    await c.ws.send_str("x" * (widget.MAX_FRAME + 1))
    await c.expect_error("too_large")
    await c.ws.send_str("{not json")
    await c.expect_error("bad_json")
    await c.ws.send_str("[1, 2]")
    await c.expect_error("bad_json")
    await c.ws.send_bytes(b'{"t":"start"}')
    await c.expect_error("bad_json")
    # 10,000 levels fit in a frame; the parser's recursion limit used to drop the socket.
    await c.ws.send_str('{"t":"message","body":' + "[" * 10_000 + "]" * 10_000 + "}")
    await c.expect_error("bad_json")
    await c.send(t="dance")
    await c.expect_error("unknown_type")
    await c.send(t="message", body="early", client_msg_id="c-0")
    await c.expect_error("not_started")
    await c.send(t="leave")
    await c.expect_error("not_started")
    await c.send(t="start", name="Ada")
    await c.expect_error("bad_field")
    await c.send(t="start", name="  ", email="ada@example.com")
    await c.expect_error("bad_field")
    await c.send(t="start", name="A" * 81, email="ada@example.com")
    await c.expect_error("bad_field")
    await c.send(t="start", name="Ada", email="not-an-address")
    await c.expect_error("bad_field")
    many = {f"k{i}": "v" for i in range(11)}
    await c.send(t="start", name="Ada", email="ada@example.com", attributes=many)
    await c.expect_error("bad_field")
    await c.send(t="start", name="Ada", email="ada@example.com", attributes={"tier": 3})
    await c.expect_error("bad_field")
    await c.send(t="start", name="Ada", email="ada@example.com", attributes={"bad key": "x"})
    await c.expect_error("bad_field")
    await c.ws.close()

    # A fresh connection: each one has its own frame budget (see the rate limit test).
    c = await connect(http, served)
    number = (await c.start())["conversation"]
    await c.send(t="start", name="Ada", email="ada@example.com")
    await c.expect_error("already_started")
    limit = served.host.config.widget.max_message_length
    await c.send(t="message", body="y" * (limit + 1), client_msg_id="c-long")
    assert (await c.expect_error("too_large"))["client_msg_id"] == "c-long"
    await c.send(t="message", body="   ", client_msg_id="c-empty")
    await c.expect_error("bad_field")
    await c.send(t="message", body="ok", client_msg_id="")
    await c.expect_error("bad_field")
    await c.send(t="typing")
    assert (await c.say("y" * limit, "c-max"))["seq"] >= 1
    stored = await served.host.inbox.store.list_messages(number, limit=100)
    assert [m.client_msg_id for m in stored if m.sender_kind == SenderKind.CUSTOMER] == ["c-max"]


async def test_a_huge_frame_closes_the_socket(served: Served, http: aiohttp.ClientSession) -> None:
    c = await connect(http, served)
    await c.ws.send_str("x" * (widget.TRANSPORT_MAX_FRAME + 1))
    msg = await c.ws.receive(timeout=TIMEOUT)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert c.ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_no_start_within_the_deadline_closes(
    served: Served, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(widget, "START_TIMEOUT", 0.3)
    c = await connect(http, served)
    await c.expect_error("start_timeout")
    msg = await c.ws.receive(timeout=TIMEOUT)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)


async def test_rate_limit_refuses_the_excess_and_stores_nothing_of_it(
    served: Served, http: aiohttp.ClientSession
) -> None:
    c = await connect(http, served)
    number = (await c.start())["conversation"]
    sent = 60
    for i in range(sent):
        await c.send(t="message", body=f"flood {i}", client_msg_id=f"f-{i}")
    acked: set[str] = set()
    limited: set[str] = set()
    while len(acked) + len(limited) < sent:
        frame = await c.recv()
        if frame["t"] == "ack":
            acked.add(frame["client_msg_id"])
        elif frame["t"] == "error":
            assert frame["code"] == "rate_limited"
            limited.add(frame["client_msg_id"])
    assert limited and len(acked) <= widget.RATE_BURST + 5
    stored = await served.host.inbox.store.list_messages(number, limit=1000)
    assert {m.client_msg_id for m in stored if m.sender_kind == SenderKind.CUSTOMER} == acked


async def test_one_address_may_start_only_so_many_chats(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    config = demo_config()
    config = replace(config, widget=replace(config.widget, new_chats_per_address=3))
    served = await serve(config, tmp_path)
    try:
        started = []
        for _ in range(3):
            c = await connect(http, served)
            started.append((await c.start())["conversation"])
        refused = await connect(http, served)
        await refused.send(t="start", name="Flood", email="flood@example.com")
        error = await refused.expect_error("rate_limited")
        assert "try again in 20 seconds" in error["message"], error  # a minute's budget of 3
        # Nothing was created for the refused start, and its socket still answers.
        records = await served.host.inbox.store.list_interactions(limit=100)
        assert sorted(r.number for r in records) == sorted(started)
        await refused.send(t="dance")
        await refused.expect_error("unknown_type")
    finally:
        await stop(served)


# ---------------------------------------------------------------------------- ends of a chat


async def test_leave_while_queued_abandons_and_closes(
    served: Served, http: aiohttp.ClientSession
) -> None:
    c = await connect(http, served)
    number = (await c.start())["conversation"]
    await c.send(t="leave")
    assert (await c.expect("state", state="closed_abandoned"))["agent"] is None
    msg = await c.ws.receive(timeout=TIMEOUT)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    record = await served.host.inbox.store.get_interaction(number)
    assert record is not None and record.state == "closed_abandoned"


async def test_agent_ends_then_transfer_history_and_closed_resume(
    served: Served, http: aiohttp.ClientSession
) -> None:
    host = served.host
    alice = await available(host, "alice")
    c = await connect(http, served)
    started = await c.start()
    number = started["conversation"]
    await alice.accept_next_offer()
    bob = await available(host, "bob")
    await alice.do(TransferToAgent(interaction=number, agent="bob"))
    await bob.accept_next_offer()
    assert (await c.expect("state", agent="Bob Okafor"))["state"] == "work_in_progress"
    await c.expect("message", body="Transferred from Alice Martin to Bob Okafor")

    await bob.do(EndChat(interaction=number))
    await c.expect("state", state="wrap_up")
    await c.expect("message", body="The chat has ended")
    await c.ws.close()

    # An ended chat still resumes, read-only, for its transcript.
    c2 = await connect(http, served)
    await c2.send(t="resume", conversation=number, ticket=started["ticket"])
    resumed = await c2.expect("resumed")
    assert resumed["state"] == "wrap_up"
    assert resumed["messages"][-1]["body"] == "The chat has ended"
    assert not any("asked" in m["body"] for m in resumed["messages"])  # a work note


async def test_unroutable_start_is_refused_and_attributes_route(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    config_file = tmp_path / "inbox.toml"
    config_file.write_text(
        """
[[channel]]
name = "chat"
mode = "sync"
customer_attributes = ["language"]

[[group]]
name = "fr"

[[queue]]
name = "french"
channel = "chat"
condition = 'language == "fr"'
groups = ["fr"]

[[agent]]
id = "chloe"
display_name = "Chloé"
capacity = { chat = 2 }
groups = ["fr"]
"""
    )
    s = await serve(load_config(config_file), tmp_path / "data")
    try:
        c = await connect(http, s)
        await c.send(t="start", name="Ada", email="ada@example.com")
        await c.expect_error("unroutable")
        started = await c.start(attributes={"language": "fr"})
        record = await s.host.inbox.store.get_interaction(started["conversation"])
        assert record is not None and record.queue == "french"
    finally:
        await stop(s)


async def test_tickets_survive_a_host_restart(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    config = demo_config()
    s = await serve(config, tmp_path)
    try:
        c = await connect(http, s)
        started = await c.start()
        await c.say("remember me", "c-1")
        await c.ws.close()
    finally:
        await stop(s)
    key = tmp_path / widget.KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32

    s = await serve(config, tmp_path)
    try:
        c = await connect(http, s)
        await c.send(t="resume", conversation=started["conversation"], ticket=started["ticket"])
        resumed = await c.expect("resumed")
        assert [m["body"] for m in resumed["messages"]] == ["remember me"]
    finally:
        await stop(s)
    assert sorted(p.name for p in tmp_path.iterdir() if "widget" in p.name) == [widget.KEY_FILE]


async def test_connections_are_logged(
    served: Served, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="inbox_tui.host")
    c = await connect(http, served)
    number = (await c.start())["conversation"]
    await c.ws.close()
    deadline = time.monotonic() + TIMEOUT
    while "event=widget_disconnected" not in caplog.text and time.monotonic() < deadline:
        await _tick()
    assert "event=widget_connected address=127.0.0.1" in caplog.text
    assert f"event=widget_disconnected address=127.0.0.1 conversation={number}" in caplog.text
