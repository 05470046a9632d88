"""docs/security.md checked against a real host: every agent-socket command as every principal,
every event kind and who receives it, the widget and REST rows, attachment names.

The tables below are the ones in docs/security.md; a change to either must change both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from core.client import ClientError, InboxClient
from core.config import parse_config
from core.demo import DEMO_PASSWORD, demo_config_text
from core.model import RecordKind, Role
from core.protocol import (
    PROTOCOL_VERSION,
    AcceptOffer,
    AddRecordNote,
    AddWorkNote,
    AnswerInvitation,
    AnyClientFrame,
    Archive,
    AttachFile,
    AttachmentAck,
    Authenticate,
    CloseConversation,
    CloseRecord,
    CreateRecord,
    EndChat,
    Error,
    Event,
    FloorEvent,
    ForcePresence,
    GetAttachment,
    GetAudit,
    GetDay,
    GetPrefill,
    GetRecord,
    GetTranscript,
    Hello,
    InteractionEvent,
    InvitationEvent,
    InviteAgent,
    LinkRecord,
    ListAgents,
    ListFloor,
    ListInteractions,
    ListOnlineAgents,
    ListRecords,
    LoggedIn,
    Login,
    Logout,
    MarkRead,
    MessageEvent,
    Monitor,
    MoveToQueue,
    OfferClosed,
    OfferEvent,
    OngoingEvent,
    Ping,
    PresenceEvent,
    QueueStatsEvent,
    ReadEvent,
    Reassign,
    RecordCreated,
    RecordEvent,
    RejectOffer,
    Resume,
    Resync,
    SendMessage,
    SetPresence,
    SlaAlert,
    SteppedIn,
    SubscribeQueueStats,
    TakeOver,
    TransferToAgent,
    TransferToQueue,
    Typing,
    TypingEvent,
    UpdateRecord,
    UseTemplate,
    Welcome,
    encoder,
    server_decoder,
)
from core.service.inbox import InboxError
from tests.hosting import RunningHost, running_host
from tests.store_helpers import attachment_file

OK = "ok"
AGENTS = ("owner", "guest", "other", "supervisor", "admin")
PRINCIPALS = (*AGENTS, "anonymous")
LOGIN = {"owner": "alice", "guest": "chloe", "other": "bob", "supervisor": "dan", "admin": "admin"}
ROLE = {"owner": Role.AGENT, "guest": Role.AGENT, "other": Role.AGENT}
ROLE |= {"supervisor": Role.SUPERVISOR, "admin": Role.ADMIN}


def row(owner: str, guest: str, other: str, supervisor: str, admin: str, anonymous: str) -> dict:
    return dict(zip(PRINCIPALS, (owner, guest, other, supervisor, admin, anonymous), strict=True))


U = "unauthenticated"
AA = "already_authenticated"
NF = "not_found"
NO = "not_owner"
# owner: the agent the object is for (the interaction's owner, the offer's addressee);
# guest: an agent invited into the interaction who joined (for answer_invitation: the invitee
# who has not answered yet); other: an agent with no part in it.
COMMANDS: dict[str, dict[str, str]] = {
    "hello": row("bad_frame", "bad_frame", "bad_frame", "bad_frame", "bad_frame", U),
    "login": row(AA, AA, AA, AA, AA, OK),
    "authenticate": row(AA, AA, AA, AA, AA, OK),
    "resume": row(AA, AA, AA, AA, AA, OK),
    "logout": row(OK, OK, OK, OK, OK, U),
    "ping": row(OK, OK, OK, OK, OK, U),
    "set_presence": row(OK, OK, OK, OK, OK, U),
    "accept_offer": row(OK, *["offer_not_pending"] * 4, U),
    "reject_offer": row(OK, *["offer_not_pending"] * 4, U),
    "send_message": row(OK, OK, NF, OK, OK, U),
    "typing": row(OK, OK, NF, OK, OK, U),
    "mark_read": row(OK, OK, NF, OK, OK, U),
    "attach_file": row(OK, OK, NF, OK, OK, U),
    "use_template": row(OK, OK, NF, OK, OK, U),
    "invite_agent": row(OK, OK, NF, OK, OK, U),
    "answer_invitation": row("not_invited", OK, *["not_invited"] * 3, U),
    "transfer_to_agent": row(OK, NO, NF, OK, OK, U),
    "transfer_to_queue": row(OK, NO, NF, OK, OK, U),
    "end_chat": row(OK, NO, NF, OK, OK, U),
    "close_record": row(OK, NO, NF, OK, OK, U),
    "archive": row(OK, OK, NF, OK, OK, U),
    "add_work_note": row(OK, OK, NF, OK, OK, U),
    "get_prefill": row(OK, OK, NF, OK, OK, U),
    "create_record": row(OK, OK, NF, OK, OK, U),
    "subscribe_queue_stats": row(OK, OK, OK, OK, OK, U),
    "get_transcript": row(OK, OK, NF, OK, OK, U),
    "get_attachment": row(OK, OK, NF, OK, OK, U),
    "get_audit": row(OK, OK, NF, OK, OK, U),
    "list_interactions": row(OK, OK, OK, OK, OK, U),
    "list_agents": row("forbidden", "forbidden", "forbidden", OK, OK, U),
    "get_day": row("forbidden", "forbidden", "forbidden", OK, OK, U),
    "list_online_agents": row(OK, OK, OK, OK, OK, U),
    # A case the owner raised from the conversation: the guest took part in it.
    "get_record": row(OK, OK, NF, OK, OK, U),
    "update_record": row(OK, OK, NF, OK, OK, U),
    "add_record_note": row(OK, OK, NF, OK, OK, U),
    "link_record": row(OK, OK, NF, OK, OK, U),
    "list_records": row(OK, OK, OK, OK, OK, U),
    # Supervisors' commands (core/service/supervision.py): nobody else's, on any conversation.
    "list_floor": row("forbidden", "forbidden", "forbidden", OK, OK, U),
    "monitor": row("forbidden", "forbidden", "forbidden", OK, OK, U),
    "take_over": row("forbidden", "forbidden", "forbidden", OK, OK, U),
    "reassign": row("forbidden", "forbidden", "forbidden", OK, OK, U),
    "move_to_queue": row("forbidden", "forbidden", "forbidden", OK, OK, U),
    "close_conversation": row("forbidden", "forbidden", "forbidden", OK, OK, U),
    "force_presence": row("forbidden", "forbidden", "forbidden", OK, OK, U),
}

# Receivers per event kind, in the situation that produces it; "customer" is the widget
# customer of the conversation, "stranger" a widget customer of another one.
EVENT_AUDIENCE = (*PRINCIPALS, "customer", "stranger")


def audience(*who: str) -> set[str]:
    assert set(who) <= set(EVENT_AUDIENCE), who
    return set(who)


EVENTS: dict[str, set[str]] = {
    "offer": audience("owner"),
    "offer_closed": audience("owner"),
    "interaction:opened": audience("owner", "customer"),
    "interaction:updated": audience("owner", "guest"),
    "interaction:closed": audience("owner", "guest", "customer"),
    "interaction:archived": audience("guest"),
    # Written from the customer's second tab: the first gets it, the writing tab has the ack.
    "message": audience("owner", "guest", "customer"),
    # The owner wrote it: their session has it in the ack, not as an event.
    "message:work_note": audience("guest"),
    "read": audience("owner", "guest"),
    "typing": audience("guest", "customer"),
    "ongoing": audience("owner"),
    "queue_stats": audience("other", "supervisor", "admin"),
    "presence": audience("owner", "supervisor", "admin"),
    "invitation": audience("guest"),
    "record": audience("owner", "guest", "supervisor", "admin"),
    "floor_changed": audience("supervisor", "admin"),
    "stepped_in": audience("owner", "guest"),
    "resync": set(),  # only the resuming session itself, which is none of the above
    "sla_alert": audience("supervisor", "admin"),
}


# ---------------------------------------------------------------------------- the world


@dataclass
class Customer:
    """A widget customer: its socket and every frame it received."""

    ws: aiohttp.ClientWebSocketResponse
    frames: list[dict[str, Any]] = field(default_factory=list)
    number: str = ""
    ticket: str = ""
    reader: asyncio.Task[None] | None = None

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def next(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for i, f in enumerate(self.frames):
                    if f["t"] == kind:
                        return self.frames.pop(i)
                await asyncio.sleep(0.01)


@dataclass
class World:
    h: RunningHost
    http: aiohttp.ClientSession
    clients: dict[str, InboxClient]
    api_tokens: dict[str, str]
    seq: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def inbox(self):  # type: ignore[no-untyped-def]
        return self.h.host.inbox

    async def anonymous(self) -> InboxClient:
        client = InboxClient(self.h.agent_url, backoff=(0.05, 0.2), request_timeout=10.0)
        await client.connect()
        return client

    async def offered(self, channel: str = "chat") -> tuple[str, str]:
        """A new conversation offered to alice, the only agent available: (number, offer)."""
        n = next(self.seq)
        record = await self.inbox.start_conversation(
            channel=channel, customer=f"cust-{n}", customer_name=f"Customer {n}"
        )
        alice = self.clients["owner"]
        while True:
            event = await alice.next_event(OfferEvent)
            if event.view.interaction == record.number:
                return record.number, event.view.offer.id

    async def owned(self, channel: str = "chat") -> str:
        number, offer = await self.offered(channel)
        await self.clients["owner"].accept(offer)
        return number

    async def with_guest(self) -> str:
        number = await self.owned()
        await self.clients["owner"].request(InviteAgent(interaction=number, agent="chloe"))
        await self.clients["guest"].request(AnswerInvitation(interaction=number, accept=True))
        return number

    async def finish(self, number: str) -> None:
        """Close whatever a case left open, so alice keeps room for the next case."""
        session = self.h.session("admin", Role.ADMIN)
        for frame in (EndChat(interaction=number), CloseRecord(interaction=number)):
            with contextlib.suppress(InboxError):
                await self.inbox.handle(session, frame)
        conv = self.inbox.conversations.open.get(number)
        if conv is not None:
            await self.inbox.customer_left(number, conv.record.customer)
        await self.inbox.close_session(session)


async def outcome(client: InboxClient, frame: AnyClientFrame) -> str:
    try:
        await client.request(frame)
    except ClientError as e:
        return e.code
    return OK


@contextlib.asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    config = parse_config(
        demo_config_text().replace(
            'name = "incidents"\n', 'name = "incidents"\nsla = { wait = 3, near = 0.5 }\n'
        ),
        name="matrix.toml",
    )
    async with running_host(tmp_path, config) as h, aiohttp.ClientSession() as http:
        auth = h.host.auth
        tokens = {}
        for p in AGENTS:
            tokens[p], _ = await auth.create_api_token(f"t-{p}", LOGIN[p], ROLE[p], None)
        clients = {}
        # Logged in with API tokens: five argon2 password checks would cost a second or more,
        # and password logins are covered by their own row.
        for p in AGENTS:
            client = InboxClient(h.agent_url, backoff=(0.05, 0.2), request_timeout=10.0)
            await client.connect()
            await client.login_token(tokens[p])
            # Only alice takes new work, so every conversation here is offered to her.
            await client.set_presence("Available" if p == "owner" else "Away")
            clients[p] = client
        clients["anonymous"] = InboxClient(h.agent_url, backoff=(0.05, 0.2))
        await clients["anonymous"].connect()
        try:
            yield World(h=h, http=http, clients=clients, api_tokens=tokens)
        finally:
            for client in clients.values():
                await client.close()


# ---------------------------------------------------------------------------- commands

Case = Callable[[World, str], Awaitable[str]]


def on_conversation(make: Callable[[str], AnyClientFrame], *, guest: bool = True) -> Case:
    async def case(w: World, who: str) -> str:
        number = await w.with_guest() if guest else await w.owned()
        try:
            return await outcome(w.clients[who], make(number))
        finally:
            await w.finish(number)

    return case


def plain(frame: AnyClientFrame) -> Case:
    async def case(w: World, who: str) -> str:
        return await outcome(w.clients[who], frame)

    return case


def on_offer(make: Callable[[str], AnyClientFrame]) -> Case:
    async def case(w: World, who: str) -> str:
        number, offer = await w.offered()
        try:
            return await outcome(w.clients[who], make(offer))
        finally:
            await w.finish(number)

    return case


def on_record(make: Callable[[str, str], AnyClientFrame]) -> Case:
    """`make(case, interaction)`: a command on a case the owner raised from a conversation
    the guest joined."""

    async def case(w: World, who: str) -> str:
        number = await w.with_guest()
        try:
            created = await w.clients["owner"].request(
                CreateRecord(interaction=number, kind=RecordKind.CASE, short_description="x"),
                RecordCreated,
            )
            return await outcome(w.clients[who], make(created.record.number, number))
        finally:
            await w.finish(number)

    return case


async def get_attachment(w: World, who: str) -> str:
    number = await w.with_guest()
    try:
        stored = await w.inbox.store.put_attachment(
            number, "notes.txt", "text/plain", b"a file", "alice", 1.0
        )
        return await outcome(
            w.clients[who], GetAttachment(interaction=number, sha256=stored.sha256)
        )
    finally:
        await w.finish(number)


async def answer_invitation(w: World, who: str) -> str:
    number = await w.owned()
    try:
        await w.clients["owner"].request(InviteAgent(interaction=number, agent="chloe"))
        return await outcome(w.clients[who], AnswerInvitation(interaction=number, accept=True))
    finally:
        await w.finish(number)


async def transfer_to_agent(w: World, who: str) -> str:
    number = await w.with_guest()
    # Transfers go only to an agent available for the channel; bob is that only for now.
    await w.clients["other"].set_presence("Available")
    try:
        return await outcome(w.clients[who], TransferToAgent(interaction=number, agent="bob"))
    finally:
        await w.clients["other"].set_presence("Away")
        await w.finish(number)


async def take_over(w: World, who: str) -> str:
    # A messaging conversation on hold holds no capacity: whoever takes it over has room for
    # it (the demo admin has no capacity at all).
    number = await w.owned("messaging")
    await w.clients["owner"].send_message(number, "back soon", msg_id())
    try:
        return await outcome(w.clients[who], TakeOver(interaction=number, reason="r"))
    finally:
        await w.finish(number)


async def reassign(w: World, who: str) -> str:
    number = await w.with_guest()
    # Given only to an agent available for the channel; bob is that only for now.
    await w.clients["other"].set_presence("Available")
    try:
        return await outcome(w.clients[who], Reassign(interaction=number, agent="bob", reason="r"))
    finally:
        await w.clients["other"].set_presence("Away")
        await w.finish(number)


async def force_presence(w: World, who: str) -> str:
    try:
        frame = ForcePresence(agent="bob", presence="Messaging-only", reason="r")
        return await outcome(w.clients[who], frame)
    finally:
        await w.clients["other"].set_presence("Away")


async def archive(w: World, who: str) -> str:
    number = await w.with_guest()
    await w.finish(number)
    return await outcome(w.clients[who], Archive(interaction=number))


async def session_start(w: World, who: str, frame: AnyClientFrame) -> str:
    if who != "anonymous":
        return await outcome(w.clients[who], frame)
    client = await w.anonymous()
    try:
        return await outcome(client, frame)
    finally:
        await client.close()


async def login(w: World, who: str) -> str:
    return await session_start(w, who, Login(username="chloe", password=DEMO_PASSWORD))


async def authenticate(w: World, who: str) -> str:
    return await session_start(w, who, Authenticate(token=w.api_tokens["other"]))


async def resume(w: World, who: str) -> str:
    if who != "anonymous":
        return await outcome(w.clients[who], Resume(token=w.api_tokens["other"], last_seq=0))
    # A session left detached by its console, taken up again on a fresh socket.
    first = await w.anonymous()
    token, _ = await w.h.host.auth.create_api_token("resume", "bob", Role.AGENT, None)
    reply = await first.login_token(token)
    await first.close()
    return await session_start(w, who, Resume(token=token, last_seq=reply.seq))


async def raw_console(w: World, token: str) -> aiohttp.ClientWebSocketResponse:
    """A console without core.client, which would reconnect when the host closes it."""
    ws = await w.http.ws_connect(w.h.agent_url)
    await ws.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION)))
    assert isinstance(server_decoder.decode((await ws.receive()).data), Welcome)
    await ws.send_bytes(encoder.encode(Authenticate(ref=1, token=token)))
    assert isinstance(server_decoder.decode((await ws.receive()).data), LoggedIn)
    return ws


async def raw_request(ws: aiohttp.ClientWebSocketResponse, frame: AnyClientFrame) -> str:
    await ws.send_bytes(encoder.encode(frame))
    while True:
        reply = server_decoder.decode((await ws.receive(timeout=5.0)).data)
        if isinstance(reply, Error):
            return reply.code
        if not isinstance(reply, Event):
            return OK


async def logout(w: World, who: str) -> str:
    if who == "anonymous":
        return await outcome(w.clients[who], Logout())
    # A console of its own, so the principal's main console stays logged in.
    ws = await raw_console(w, w.api_tokens[who])
    try:
        return await raw_request(ws, Logout(ref=2))
    finally:
        await ws.close()


async def hello(w: World, who: str) -> str:
    return await outcome(w.clients[who], Hello(version=PROTOCOL_VERSION))


def msg_id() -> str:
    return f"m-{next(_ids)}"


_ids = itertools.count(1)

CASES: dict[str, Case] = {
    "hello": hello,
    "login": login,
    "authenticate": authenticate,
    "resume": resume,
    "logout": logout,
    "ping": plain(Ping()),
    "set_presence": plain(SetPresence(presence="Away")),
    "accept_offer": on_offer(lambda o: AcceptOffer(offer=o)),
    "reject_offer": on_offer(lambda o: RejectOffer(offer=o, reason="busy")),
    "send_message": on_conversation(
        lambda n: SendMessage(interaction=n, body="hi", client_msg_id=msg_id())
    ),
    "typing": on_conversation(lambda n: Typing(interaction=n)),
    "mark_read": on_conversation(lambda n: MarkRead(interaction=n, seq=1)),
    "attach_file": on_conversation(
        lambda n: AttachFile(interaction=n, name="notes.txt", data=b"x" * 10)
    ),
    "use_template": on_conversation(lambda n: UseTemplate(interaction=n, shortcut="greet")),
    "invite_agent": on_conversation(lambda n: InviteAgent(interaction=n, agent="bob")),
    "answer_invitation": answer_invitation,
    "transfer_to_agent": transfer_to_agent,
    "transfer_to_queue": on_conversation(lambda n: TransferToQueue(interaction=n, queue="french")),
    "end_chat": on_conversation(lambda n: EndChat(interaction=n)),
    "close_record": on_conversation(lambda n: CloseRecord(interaction=n)),
    "archive": archive,
    "add_work_note": on_conversation(
        lambda n: AddWorkNote(interaction=n, body="note", client_msg_id=msg_id())
    ),
    "get_prefill": on_conversation(lambda n: GetPrefill(interaction=n, kind=RecordKind.CASE)),
    "create_record": on_conversation(
        lambda n: CreateRecord(interaction=n, kind=RecordKind.CASE, short_description="x")
    ),
    "subscribe_queue_stats": plain(SubscribeQueueStats(subscribe=True)),
    "get_transcript": on_conversation(lambda n: GetTranscript(interaction=n)),
    "get_attachment": get_attachment,
    "get_audit": on_conversation(lambda n: GetAudit(item=n)),
    "list_interactions": plain(ListInteractions()),
    "list_agents": plain(ListAgents()),
    "get_day": plain(GetDay(since=0, until=3600)),
    "list_online_agents": plain(ListOnlineAgents()),
    "get_record": on_record(lambda r, n: GetRecord(number=r)),
    "update_record": on_record(lambda r, n: UpdateRecord(number=r, state="in_progress")),
    "add_record_note": on_record(lambda r, n: AddRecordNote(number=r, body="note")),
    "link_record": on_record(lambda r, n: LinkRecord(number=r, interaction=n)),
    "list_records": plain(ListRecords(scope="all")),
    "list_floor": plain(ListFloor(subscribe=False)),
    "monitor": on_conversation(lambda n: Monitor(interaction=n)),
    "take_over": take_over,
    "reassign": reassign,
    "move_to_queue": on_conversation(
        lambda n: MoveToQueue(interaction=n, queue="french", reason="r")
    ),
    "close_conversation": on_conversation(lambda n: CloseConversation(interaction=n, reason="r")),
    "force_presence": force_presence,
}


def test_the_tables_cover_every_command() -> None:
    from core.protocol import AnyClientFrame as Frames

    tags = {t.__struct_config__.tag for t in Frames.__args__}  # type: ignore[attr-defined]
    assert tags == set(COMMANDS) == set(CASES)


async def test_every_command_as_every_principal(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        got: dict[str, dict[str, str]] = {}
        for command, case in CASES.items():
            got[command] = {}
            for who in PRINCIPALS:
                got[command][who] = await asyncio.wait_for(case(w, who), 15.0)
                if command == "set_presence" and who == "owner":
                    await w.clients["owner"].set_presence("Available")
        wrong = {
            (c, p): (got[c][p], COMMANDS[c][p])
            for c in COMMANDS
            for p in PRINCIPALS
            if got[c][p] != COMMANDS[c][p]
        }
        assert not wrong, f"(command, principal): (got, documented) {wrong}"


# ---------------------------------------------------------------------------- events

WINDOW = 0.4  # long enough for a loopback fan-out; an event not here by then was not sent
STATS_WINDOW = 2.5  # queue statistics go out once a second


async def widget_customer(w: World, name: str) -> Customer:
    ws = await w.http.ws_connect(w.h.url + "/widget/ws")
    customer = Customer(ws=ws)

    async def read() -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                customer.frames.append(json.loads(msg.data))

    customer.reader = asyncio.create_task(read())
    await customer.send({"t": "start", "name": name, "email": f"{name}@example.com"})
    started = await customer.next("started")
    customer.number, customer.ticket = started["conversation"], started["ticket"]
    return customer


async def another_tab(w: World, customer: Customer) -> Customer:
    """A second widget socket on `customer`'s conversation, resumed with its ticket."""
    ws = await w.http.ws_connect(w.h.url + "/widget/ws")
    tab = Customer(ws=ws, number=customer.number, ticket=customer.ticket)

    async def read() -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                tab.frames.append(json.loads(msg.data))

    tab.reader = asyncio.create_task(read())
    await tab.send({"t": "resume", "conversation": customer.number, "ticket": customer.ticket})
    await tab.next("resumed")
    return tab


Match = Callable[[Event], bool]
CustomerMatch = Callable[[dict[str, Any]], bool]


async def receivers(
    w: World,
    customers: dict[str, Customer],
    action: Callable[[], Awaitable[object]],
    match: Match,
    customer_match: CustomerMatch | None = None,
    window: float = WINDOW,
) -> set[str]:
    """Who, of every principal and both customers, got a matching event from `action`."""
    for client in w.clients.values():
        while not client.events.empty():
            client.events.get_nowait()
    for c in customers.values():
        c.frames.clear()
    await action()
    await asyncio.sleep(window)
    got = set()
    for who, client in w.clients.items():
        while not client.events.empty():
            if match(client.events.get_nowait()):
                got.add(who)
    for who, c in customers.items():
        if customer_match is not None and any(customer_match(f) for f in c.frames):
            got.add(who)
    return got


async def test_every_event_reaches_exactly_its_audience(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        alice, chloe = w.clients["owner"], w.clients["guest"]
        customers: dict[str, Customer] = {}
        got: dict[str, set[str]] = {}

        async def start() -> None:
            customers["customer"] = await widget_customer(w, "ana")

        async def conversation_of(c: str) -> str:
            return customers[c].number

        got["offer"] = await receivers(w, customers, start, lambda e: isinstance(e, OfferEvent))
        number = await conversation_of("customer")
        offer_id = w.inbox.routing.router.offer_of_item[w.inbox.conversations.open[number].item]
        in_number: Match = lambda e: getattr(e, "interaction", None) == number  # noqa: E731

        def interaction(change: str) -> Match:
            return lambda e: (
                isinstance(e, InteractionEvent) and e.change == change and e.record.number == number
            )

        def state(value: str) -> CustomerMatch:
            return lambda f: f["t"] == "state" and f["state"] == value

        got["interaction:opened"] = await receivers(
            w,
            customers,
            lambda: alice.accept(offer_id),
            interaction("opened"),
            state("work_in_progress"),
        )
        # Off chat from here, so the stranger's chat waits in the queue rather than holding
        # alice's one pending offer; it only has to exist.
        await alice.set_presence("Messaging-only")
        customers["stranger"] = await widget_customer(w, "sam")
        got["invitation"] = await receivers(
            w,
            customers,
            lambda: alice.request(InviteAgent(interaction=number, agent="chloe")),
            lambda e: isinstance(e, InvitationEvent) and e.interaction.number == number,
        )
        await chloe.request(AnswerInvitation(interaction=number, accept=True))

        def message(body: str) -> tuple[Match, CustomerMatch]:
            return (
                lambda e: isinstance(e, MessageEvent) and e.message.body == body,
                lambda f: f["t"] == "message" and f["body"] == body,
            )

        tab = await another_tab(w, customers["customer"])

        async def customer_says() -> None:
            await tab.send({"t": "message", "body": "where is my parcel", "client_msg_id": "c1"})

        got["message"] = await receivers(
            w, customers, customer_says, *message("where is my parcel")
        )
        got["message:work_note"] = await receivers(
            w,
            customers,
            lambda: alice.request(
                AddWorkNote(interaction=number, body="internal only", client_msg_id="n1")
            ),
            *message("internal only"),
        )
        got["read"] = await receivers(
            w,
            customers,
            lambda: chloe.request(MarkRead(interaction=number, seq=1000)),
            lambda e: isinstance(e, ReadEvent) and in_number(e),
        )
        got["typing"] = await receivers(
            w,
            customers,
            lambda: alice.request(Typing(interaction=number)),
            lambda e: isinstance(e, TypingEvent) and in_number(e),
            lambda f: f["t"] == "typing",
        )
        got["interaction:updated"] = await receivers(
            w,
            customers,
            lambda: alice.request(
                CreateRecord(interaction=number, kind=RecordKind.CASE, short_description="x")
            ),
            interaction("updated"),
            lambda f: f["t"] == "state",
        )
        case = w.inbox.conversations.open[number].record.case
        got["record"] = await receivers(
            w,
            customers,
            lambda: alice.request(UpdateRecord(number=case, state="in_progress")),
            lambda e: isinstance(e, RecordEvent) and e.record.number == case,
        )
        await alice.request(EndChat(interaction=number))
        got["interaction:closed"] = await receivers(
            w,
            customers,
            lambda: alice.request(CloseRecord(interaction=number)),
            interaction("closed"),
            state("closed_complete"),
        )
        got["interaction:archived"] = await receivers(
            w,
            customers,
            lambda: chloe.request(Archive(interaction=number)),
            lambda e: isinstance(e, InteractionEvent) and e.record.archived,
            lambda f: f["t"] == "state",
        )

        async_number = await w.owned("messaging")
        record = w.inbox.conversations.open[async_number].record
        got["ongoing"] = await receivers(
            w,
            customers,
            lambda: w.inbox.customer_message(async_number, record.customer, "hello?", "o1"),
            lambda e: (
                isinstance(e, OngoingEvent) and any(c.interaction == async_number for c in e.cards)
            ),
        )
        # Supervisors who asked for the floor hear of every conversation's changes.
        for who in ("supervisor", "admin"):
            await w.clients[who].request(ListFloor())
        got["floor_changed"] = await receivers(
            w,
            customers,
            lambda: w.inbox.customer_message(async_number, record.customer, "still there?", "o2"),
            lambda e: (
                isinstance(e, FloorEvent) and any(r.interaction == async_number for r in e.rows)
            ),
            window=STATS_WINDOW,
        )
        for who in ("supervisor", "admin"):
            await w.clients[who].request(ListFloor(subscribe=False))
        await alice.request(InviteAgent(interaction=async_number, agent="chloe"))
        await chloe.request(AnswerInvitation(interaction=async_number, accept=True))
        got["stepped_in"] = await receivers(
            w,
            customers,
            lambda: w.clients["supervisor"].request(
                CloseConversation(interaction=async_number, reason="r")
            ),
            lambda e: isinstance(e, SteppedIn) and e.interaction == async_number,
        )

        _, offered = await w.offered("messaging")
        got["offer_closed"] = await receivers(
            w,
            customers,
            lambda: alice.reject(offered),
            lambda e: isinstance(e, OfferClosed) and e.offer == offered,
        )
        got["presence"] = await receivers(
            w,
            customers,
            lambda: alice.set_presence("Away"),
            lambda e: isinstance(e, PresenceEvent) and e.agent.id == "alice",
        )
        # bob and dan (tier 2) are away, so the incident waits in its queue.
        got["queue_stats"] = await receivers(
            w,
            customers,
            lambda: w.inbox.start_conversation(channel="incident", customer="crm-1"),
            lambda e: (
                isinstance(e, QueueStatsEvent)
                and any(s.queue == "incidents" and s.waiting for s in e.stats)
            ),
            window=STATS_WINDOW,
        )

        # The incidents queue has a wait target of 3 s here: a new incident nears it at 1.5 s.
        got["sla_alert"] = await receivers(
            w,
            customers,
            lambda: w.inbox.start_conversation(channel="incident", customer="crm-2"),
            lambda e: isinstance(e, SlaAlert) and e.crossing.queue == "incidents",
            window=STATS_WINDOW,
        )

        async def resume_far_ahead() -> None:
            token, _ = await w.h.host.auth.create_api_token("r", "bob", Role.AGENT, None)
            ws = await raw_console(w, token)
            await ws.close()
            ws = await w.http.ws_connect(w.h.agent_url)
            await ws.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION)))
            await ws.receive()
            await ws.send_bytes(encoder.encode(Resume(ref=1, token=token, last_seq=10**6)))
            frames = [server_decoder.decode((await ws.receive()).data) for _ in range(2)]
            assert any(isinstance(f, Resync) for f in frames), frames
            await ws.close()

        got["resync"] = await receivers(
            w, customers, resume_far_ahead, lambda e: isinstance(e, Resync)
        )

        for c in (*customers.values(), tab):
            await c.ws.close()
        assert set(got) == set(EVENTS)
        wrong = {k: (got[k], EVENTS[k]) for k in EVENTS if got[k] != EVENTS[k]}
        assert not wrong, f"event: (received by, documented) {wrong}"


# ---------------------------------------------------------------------------- widget, REST


async def test_widget_rest_and_attachment_rows(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        ana = await widget_customer(w, "ana")
        sam = await widget_customer(w, "sam")
        # Another conversation's ticket, a forged one, and the right one.
        ws = await w.http.ws_connect(w.h.url + "/widget/ws")
        for ticket, expected in ((sam.ticket, "error"), (ana.ticket + "0", "error")):
            await ws.send_str(
                json.dumps({"t": "resume", "conversation": ana.number, "ticket": ticket})
            )
            reply = json.loads((await ws.receive(timeout=5.0)).data)
            assert reply["t"] == expected and reply["code"] == "bad_ticket", reply
        await ws.send_str(json.dumps({"t": "typing"}))
        assert json.loads((await ws.receive(timeout=5.0)).data)["code"] == "not_started"
        await ws.send_str(
            json.dumps({"t": "resume", "conversation": ana.number, "ticket": ana.ticket})
        )
        assert json.loads((await ws.receive(timeout=5.0)).data)["t"] == "resumed"
        await ws.close()

        number = ana.number
        offer = w.inbox.routing.router.offer_of_item[w.inbox.conversations.open[number].item]
        await w.clients["owner"].accept(offer)
        ack = await w.clients["owner"].request(
            AttachFile(interaction=number, name="../../etc/pass\x00wd", data=b"secret"),
            AttachmentAck,
        )
        assert ack.attachment.name == "passwd"
        # Stored under its digest in the data directory, whatever name it was uploaded as.
        assert attachment_file(w.h.host.data_dir, ack.attachment.sha256).read_bytes() == b"secret"

        auth = w.h.host.auth
        integration, _ = await auth.create_api_token("i", None, Role.AGENT, None)
        integration_sup, _ = await auth.create_api_token("is", None, Role.SUPERVISOR, None)
        revoked, _ = await auth.create_api_token("r", None, Role.ADMIN, None)
        await auth.revoke(revoked)
        await w.clients["owner"].request(
            AddWorkNote(interaction=number, body="internal", client_msg_id="n1")
        )

        async def call(method: str, path: str, token: str | None, **kw: Any) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with w.http.request(
                method, w.h.url + "/api/v1" + path, headers=headers, **kw
            ) as r:
                return r.status, await r.json()

        item = {"channel": "incident", "customer": {"id": "crm-9"}}
        msg = {"customer_id": "crm-9", "body": "hi", "client_msg_id": "x1"}
        t = w.api_tokens
        session_token = w.clients["owner"].token
        for token, created in (
            (None, 401),
            ("api_" + "x" * 43, 401),
            (revoked, 401),
            (integration, 201),
            (integration_sup, 201),
            (t["owner"], 403),
            (session_token, 403),
            (t["supervisor"], 403),
            (t["admin"], 403),
        ):
            status, body = await call("POST", "/items", token, json=item)
            assert status == created, (token, body)
            if status == 201:
                status, body = await call(
                    "POST", f"/interactions/{body['interaction']}/messages", token, json=msg
                )
                assert status == 201, body
        for token, status_read, notes in (
            (None, 401, None),
            (integration, 403, None),
            (integration_sup, 200, False),
            (t["owner"], 200, True),
            (session_token, 200, True),
            (t["other"], 404, None),
            (t["supervisor"], 200, True),
            (t["admin"], 200, True),
        ):
            status, body = await call("GET", f"/interactions/{number}", token)
            assert status == status_read, (token, body)
            if status == 200:
                bodies = [m["body"] for m in body["messages"]]
                assert ("internal" in bodies) is notes, (token, bodies)
        for token, status_audit in (
            (None, 401),
            (integration, 403),
            (integration_sup, 200),
            (t["owner"], 200),
            (t["other"], 404),
            (t["supervisor"], 200),
            (t["admin"], 200),
        ):
            status, body = await call("GET", f"/items/{number}/audit", token)
            assert status == status_audit, (token, body)
        everything = set(w.inbox.routing.router.queues)
        for token, queues in (
            (integration, everything),
            (t["owner"], set(w.inbox.routing.router.queues_of("alice"))),
            (t["supervisor"], everything),
            (t["admin"], everything),
        ):
            status, body = await call("GET", "/queues", token)
            assert status == 200 and {q["queue"] for q in body["queues"]} == queues
        for token, status_minutes in (
            (None, 401),
            (integration, 403),
            (integration_sup, 200),
            (t["owner"], 403),
            (session_token, 403),
            (t["supervisor"], 200),
            (t["admin"], 200),
        ):
            status, body = await call("GET", "/queues/general/minutes?since=0&until=60", token)
            assert status == status_minutes, (token, body)
        async with w.http.get(w.h.url + "/api/v1/openapi.json") as r:
            assert r.status == 200

        async with w.http.get(w.h.url + "/widget") as r:
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with w.http.get(w.h.url + "/widget/static/widget.js") as r:
            script = await r.text()
            for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write"):
                assert sink not in script, sink
        for c in (ana, sam):
            await c.ws.close()
