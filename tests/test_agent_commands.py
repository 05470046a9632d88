"""Every agent command over a real socket: what it does, and who may do it (invariant 9)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.client import ClientError, InboxClient
from core.config import parse_config
from core.demo import DEMO_PASSWORD, demo_config
from core.host.app import close_host, open_host
from core.model import Role
from core.protocol import (
    PROTOCOL_VERSION,
    AddWorkNote,
    AnswerInvitation,
    Archive,
    AttachFile,
    AttachmentAck,
    ClientFrame,
    CloseRecord,
    CreateRecord,
    EndChat,
    Event,
    GetPrefill,
    GetTranscript,
    Hello,
    InteractionEvent,
    InteractionList,
    InvitationDeclined,
    InvitationEvent,
    InviteAgent,
    ListInteractions,
    ListOnlineAgents,
    LoggedIn,
    Login,
    MarkRead,
    MessageEvent,
    OfferClosed,
    OfferEvent,
    Ok,
    OngoingEvent,
    OnlineAgents,
    Prefill,
    PresenceEvent,
    QueueStatsEvent,
    ReadEvent,
    RecordCreated,
    Resume,
    Resync,
    SendMessage,
    SetPresence,
    TransferDeclined,
    TransferToAgent,
    TransferToQueue,
    Typing,
    TypingEvent,
    UseTemplate,
    Welcome,
    encoder,
    server_decoder,
)
from core.service import sessions, views
from core.service.floor import RESUME_WINDOW
from tests.hosting import RunningHost, fast_config, fast_config_text, running_host
from tests.store_helpers import attachment_file, get_record


async def accepted_chat(h: RunningHost, owner: InboxClient, customer: str) -> str:
    record = await h.host.inbox.start_conversation(
        channel="chat", customer=customer, customer_name=customer.title()
    )
    while True:
        # Earlier commands may have routed an older chat back to the owner: take it too.
        offer = await owner.next_event(OfferEvent)
        await owner.accept(offer.view.offer.id)
        if offer.view.interaction == record.number:
            return record.number


def drain(client: InboxClient) -> None:
    while not client.events.empty():
        client.events.get_nowait()


# Each command, built for an interaction, and whether a supervisor may do it to an agent's chat.
COMMANDS: list[tuple[str, Callable[[str], ClientFrame], bool]] = [
    ("send_message", lambda n: SendMessage(interaction=n, body="hi", client_msg_id="m1"), True),
    ("typing", lambda n: Typing(interaction=n), True),
    ("mark_read", lambda n: MarkRead(interaction=n, seq=1), True),
    ("attach_file", lambda n: AttachFile(interaction=n, name="a.txt", data=b"x"), True),
    ("use_template", lambda n: UseTemplate(interaction=n, shortcut="greet"), True),
    ("invite_agent", lambda n: InviteAgent(interaction=n, agent="chloe"), True),
    ("transfer_to_queue", lambda n: TransferToQueue(interaction=n, queue="general"), True),
    ("end_chat", lambda n: EndChat(interaction=n), True),
    ("close_record", lambda n: CloseRecord(interaction=n), True),
    ("add_work_note", lambda n: AddWorkNote(interaction=n, body="n", client_msg_id="w1"), True),
    ("get_prefill", lambda n: GetPrefill(interaction=n, kind="incident"), True),
    (
        "create_record",
        lambda n: CreateRecord(interaction=n, kind="case", short_description="x"),
        True,
    ),
    ("get_transcript", lambda n: GetTranscript(interaction=n), True),
]


@pytest.mark.parametrize(
    ("name", "build", "supervisor_may"), COMMANDS, ids=[c[0] for c in COMMANDS]
)
async def test_authorization_matrix(
    tmp_path: Path, name: str, build: Callable[[str], ClientFrame], supervisor_may: bool
) -> None:
    async with running_host(tmp_path) as h, aiohttp.ClientSession():
        alice = await h.agent("alice")
        bob = await h.agent("bob", presence="Away")  # online, but gets no chats
        dan = await h.agent("dan", presence="Away")  # supervisor
        await h.agent("chloe", presence="Messaging-only")  # online, can be invited
        anonymous = InboxClient(h.agent_url)
        await anonymous.connect()

        number = await accepted_chat(h, alice, "cust-a")
        with pytest.raises(ClientError) as e:
            await anonymous.request(build(number))
        assert e.value.code == "unauthenticated"
        with pytest.raises(ClientError) as e:
            await bob.request(build(number))
        assert e.value.code == "not_found", f"another agent could {name}"
        await alice.request(build(number))  # the owner may

        other = await accepted_chat(h, alice, "cust-b")
        if supervisor_may:
            await dan.request(build(other))
        else:
            with pytest.raises(ClientError):
                await dan.request(build(other))

        # A customer reaches only their own conversation.
        from core.service.inbox import InboxError

        with pytest.raises(InboxError):
            await h.host.inbox.customer_message(other, "cust-a", "peek", "p1")
        with pytest.raises(InboxError):
            await h.host.inbox.customer_transcript(other, "cust-a")


async def test_a_transcript_has_every_line_stored_before_it_opened_here_or_loaded(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        fresh = await h.host.inbox.start_conversation(channel="chat", customer="cust-f")
        assert await h.host.inbox.customer_transcript(fresh.number, "cust-f") == []
        number = await accepted_chat(h, alice, "cust-a")
        await alice.send_message(number, "hello", "a-1")
        lines = await h.host.inbox.customer_transcript(number, "cust-a")
        assert [m.body for m in lines][-1] == "hello"
        await alice.close()
    # After a restart the conversation is loaded, not opened here: its lines come from the
    # store, the chat channel's included (a rebuild notes only the tray's).
    host = await open_host(demo_config(), data)
    try:
        lines = await host.inbox.customer_transcript(number, "cust-a")
        assert [m.body for m in lines][-1] == "hello"
    finally:
        await close_host(host)


async def test_an_accept_and_its_joined_line_are_one_commit(tmp_path: Path) -> None:
    """The system line a routing step writes ("Alice joined") is stored by the step's own
    commit, numbered after the customer's line, and reaches the customer and the console."""
    async with running_host(tmp_path) as h:
        inbox = h.host.inbox
        alice = await h.agent("alice")
        record = await inbox.start_conversation(
            channel="chat", customer="cust-j", customer_name="Jo"
        )
        await inbox.customer_message(record.number, "cust-j", "hello?", "c-1")
        offer = await alice.next_event(OfferEvent)
        stats = inbox.store.stats
        commits = stats.commits
        await alice.accept(offer.view.offer.id)
        joined = await alice.next_event(MessageEvent)
        assert joined.message.body == "Alice Martin joined"
        assert stats.commits == commits + 1
        lines = await inbox.customer_transcript(record.number, "cust-j")
        assert [(m.seq, m.body) for m in lines] == [(1, "hello?"), (2, "Alice Martin joined")]
        await alice.close()


async def test_an_accept_sent_again_after_it_committed_is_ok_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """A console resends its unanswered commands after a reconnect; an accept whose first
    sending committed (its host died before answering) gets `ok` again. An offer the agent
    did not take stays refused."""
    async with running_host(tmp_path) as h:
        inbox = h.host.inbox
        alice = await h.agent("alice")
        bob = await h.agent("bob", presence="Away")
        record = await inbox.start_conversation(channel="chat", customer="cust-r")
        offer = (await alice.next_event(OfferEvent)).view.offer.id
        await alice.accept(offer)
        item = inbox.routing.router.items[record.item]
        commits = inbox.store.stats.commits
        await alice.accept(offer)
        assert inbox.routing.router.items[record.item] is item
        assert inbox.store.stats.commits == commits
        with pytest.raises(ClientError) as e:
            await bob.accept(offer)
        assert e.value.code == "offer_not_pending"
        await alice.close()
        await bob.close()


async def test_a_bug_working_out_a_system_line_costs_the_line_not_the_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_host(tmp_path) as h:
        inbox = h.host.inbox

        def broken(change: object) -> None:
            raise RuntimeError("a bug in a line's text")

        inbox.routing.lines = broken
        alice = await h.agent("alice")
        record = await inbox.start_conversation(channel="chat", customer="cust-b")
        offer = await alice.next_event(OfferEvent)
        await alice.accept(offer.view.offer.id)
        assert inbox.routing.router.items[record.item].agent == "alice"
        stored = await inbox.store.get_item(record.item)
        assert stored is not None and stored.agent == "alice"
        assert await inbox.customer_transcript(record.number, "cust-b") == []
        assert "working out a system line failed" in caplog.text
        await alice.close()


async def test_a_resume_finds_the_oldest_live_session_of_its_token(tmp_path: Path) -> None:
    """Two consoles logged in with one API token hold two sessions under one digest: a resume
    with it finds the older while it lives, then the other, then none."""
    async with running_host(tmp_path) as h:
        inbox, expires = h.host.inbox, time.time() + 3600
        first = inbox.open_session("alice", Role.AGENT, "digest-1", expires)
        second = inbox.open_session("alice", Role.AGENT, "digest-1", expires)
        other = inbox.open_session("bob", Role.AGENT, "digest-2", expires)
        assert inbox.find_session("digest-1") is first
        await inbox.floor.close_session(first)
        assert inbox.find_session("digest-1") is second
        await inbox.floor.close_session(second)
        assert inbox.find_session("digest-1") is None
        assert inbox.find_session("digest-2") is other


async def test_a_reply_reaches_the_agents_other_consoles_but_not_back_the_one_that_sent_it(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "cust-a")
        second = await h.agent("alice", presence=None)  # her other console
        await h.host.inbox.customer_message(number, "cust-a", "hello?", "c-1")
        ack = await alice.send_message(number, "hi", "a-1")
        assert ack.message.body == "hi"
        # Her other console gets the line and hears that it moved her mark past the
        # customer's line.
        line = await second.next_event(MessageEvent)
        while line.message.body != "hi":
            line = await second.next_event(MessageEvent)
        read = await second.next_event(ReadEvent)
        assert (read.reader, read.read_seq) == ("alice", ack.message.seq)
        # The console that replied has its line in the ack: neither it nor a read event comes
        # before the customer's next line (one queue: everything pushed earlier is ahead).
        await h.host.inbox.customer_message(number, "cust-a", "thanks", "c-2")
        seen = []
        while True:
            event = await alice.next_event()
            seen.append(event)
            if isinstance(event, MessageEvent) and event.message.body == "thanks":
                break
        assert not any(isinstance(e, MessageEvent) and e.message.body == "hi" for e in seen)
        assert not any(isinstance(e, ReadEvent) for e in seen), seen
        await second.close()
        await alice.close()


async def test_list_interactions_shows_only_mine_and_all_to_supervisors(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        bob = await h.agent("bob", presence="Away")
        dan = await h.agent("dan", presence="Away")
        number = await accepted_chat(h, alice, "cust-a")
        mine = await alice.request(ListInteractions(), InteractionList)
        theirs = await bob.request(ListInteractions(), InteractionList)
        everyone = await dan.request(ListInteractions(), InteractionList)
        assert [r.number for r in mine.interactions] == [number]
        assert theirs.interactions == []
        assert number in [r.number for r in everyone.interactions]


async def test_template_attachment_work_note_record_and_archive(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "cust-a")
        inbox = h.host.inbox
        await inbox.customer_message(number, "cust-a", "The app crashes when I pay", "c1")
        text = await alice.request(UseTemplate(interaction=number, shortcut="greet"))
        assert text.text.startswith("Hello Cust-A, I'm Alice Martin.")

        ack = await alice.request(
            AttachFile(
                interaction=number,
                name="../../etc/passwd",
                content_type="text/plain",
                data=b"log line\n",
            ),
            AttachmentAck,
        )
        assert ack.attachment.name == "passwd" and ack.attachment.size == 9
        stored = attachment_file(h.host.data_dir, ack.attachment.sha256)
        assert stored.read_bytes() == b"log line\n"

        seen_by_customer: list[str] = []
        inbox.watch(number, lambda e: seen_by_customer.append(str(getattr(e, "message", ""))))
        await alice.request(
            AddWorkNote(interaction=number, body="VIP, be nice", client_msg_id="w1")
        )
        assert "VIP, be nice" not in seen_by_customer

        prefill = await alice.request(GetPrefill(interaction=number, kind="incident"), Prefill)
        assert prefill.short_description == "The app crashes when I pay"
        assert "Cust-A: The app crashes when I pay" in prefill.description
        created = await alice.request(
            CreateRecord(
                interaction=number,
                kind="incident",
                short_description=prefill.short_description,
                description=prefill.description,
                priority=2,
            ),
            RecordCreated,
        )
        assert created.record.number == "INC0001001"
        assert created.interaction.incident == "INC0001001"
        assert (await get_record(h.host.inbox.store, "INC0001001")).source_interaction == number

        with pytest.raises(ClientError) as e:
            await alice.request(Archive(interaction=number))
        assert e.value.code == "bad_state"
        await alice.end_chat(number)
        await alice.request(CloseRecord(interaction=number))
        await alice.request(Archive(interaction=number))
        assert (await h.host.inbox.store.get_interaction(number)).archived


async def test_invitation_is_accepted_or_declined_by_the_invitee(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        chloe = await h.agent("chloe", presence="Messaging-only")
        number = await accepted_chat(h, alice, "cust-a")
        with pytest.raises(ClientError) as e:
            await alice.request(InviteAgent(interaction=number, agent="bob"))  # not logged in
        assert e.value.code == "agent_unavailable"
        await alice.request(InviteAgent(interaction=number, agent="chloe"))
        invitation = await chloe.next_event(InvitationEvent)
        assert invitation.from_agent == "alice"
        await chloe.request(AnswerInvitation(interaction=number, accept=True))
        assert (await chloe.next_event(InteractionEvent)).change == "opened"
        ack = await chloe.send_message(number, "Bonjour, I'm helping too")
        assert ack.message.sender == "chloe"
        # Alice sees Chloé join and speak.
        bodies = []
        while "Bonjour, I'm helping too" not in bodies:
            bodies.append((await alice.next_event(MessageEvent)).message.body)
        assert "Chloé Dubois joined" in bodies
        with pytest.raises(ClientError) as e:
            await chloe.request(AnswerInvitation(interaction=number, accept=True))
        assert e.value.code == "not_invited"


async def test_a_snapshot_names_an_agents_colleagues_in_their_chats_and_everyone_to_supervisors(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        chloe = await h.agent("chloe", presence="Messaging-only")
        number = await accepted_chat(h, alice, "cust-a")
        await alice.request(InviteAgent(interaction=number, agent="chloe"))
        await chloe.next_event(InvitationEvent)
        await chloe.request(AnswerInvitation(interaction=number, accept=True))
        await chloe.next_event(InteractionEvent)

        async def named(user: str) -> list[str]:
            client = InboxClient(h.agent_url)
            await client.connect()
            try:
                return [a.id for a in (await client.login(user, DEMO_PASSWORD)).snapshot.agents]
            finally:
                await client.close()

        assert await named("alice") == ["alice", "chloe"]
        assert await named("bob") == ["bob"]
        assert await named("dan") == sorted(a.id for a in fast_config().agents)


async def test_typing_reaches_the_customer_and_other_participants(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "cust-a")
        seen: list[object] = []
        h.host.inbox.watch(number, seen.append)
        await alice.request(Typing(interaction=number))
        assert any(isinstance(e, TypingEvent) and e.who == "Alice Martin" for e in seen)
        h.host.inbox.customer_typing(number, "cust-a")
        typing = await alice.next_event(TypingEvent)
        assert typing.who == "Cust-A"


async def test_messaging_conversation_collects_unread_while_the_agent_is_away(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        inbox = h.host.inbox
        record = await inbox.start_conversation(
            channel="messaging", customer="sms-1", customer_name="Sam"
        )
        offer = await alice.next_event(OfferEvent)
        await alice.accept(offer.view.offer.id)
        await inbox.customer_message(record.number, "sms-1", "Hello?", "s1")
        # Events are in order: once the unread message shows, any 0 after it is the reply's.
        unread = await alice.next_event(OngoingEvent)
        while unread.unread_conversations != 1:
            unread = await alice.next_event(OngoingEvent)
        assert unread.cards[0].unread == 1 and unread.cards[0].preview == "Hello?"
        await alice.send_message(record.number, "Hi Sam, on it")  # replying clears unread
        cleared = await alice.next_event(OngoingEvent)
        while cleared.unread_conversations != 0:
            cleared = await alice.next_event(OngoingEvent)
        assert cleared.cards[0].unread == 0
        await alice.set_presence("Away")
        for i in range(3):
            await inbox.customer_message(record.number, "sms-1", f"still there? {i}", f"s{i + 2}")
        latest = None
        while latest is None or latest.unread_conversations == 0 or latest.cards[0].unread < 3:
            latest = await alice.next_event(OngoingEvent)
        card = latest.cards[0]
        assert card.interaction == record.number and card.unread == 3
        assert card.preview == "still there? 2" and card.customer_name == "Sam"
        # It stayed Alice's: nobody else was offered it.
        assert inbox.conversations.open[record.number].record.participants[-1].agent == "alice"
        last_seq = (await h.host.inbox.store.list_messages(record.number))[-1].seq
        await alice.request(MarkRead(interaction=record.number, seq=last_seq))
        while (await alice.next_event(OngoingEvent)).unread_conversations:
            pass


async def test_queue_stats_and_presence_events_flow(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice", presence=None)
        bob = await h.agent("bob", presence=None)
        await h.host.inbox.start_conversation(channel="chat", customer="c1", customer_name="C")
        # An update computed before the arrival may still be on its way (updates are spread
        # over the second); the one after it shows the waiting customer.
        for _ in range(3):
            stats = await alice.next_event(QueueStatsEvent, timeout=5.0)
            general = next(s for s in stats.stats if s.queue == "general")
            if general.waiting:
                break
        assert general.waiting == 1 and general.agents_available == 0
        assert {s.queue for s in stats.stats} <= {"general", "messaging", "cases"}  # tier1 only
        dan = await h.agent("dan", presence=None)  # a supervisor
        drain(alice)
        await bob.set_presence("Away")
        # Bob and the supervisor hear of it; a colleague asks when she needs to know.
        assert (await bob.next_event(PresenceEvent)).agent.presence == "Away"
        presence = await dan.next_event(PresenceEvent)
        assert presence.agent.id == "bob" and presence.agent.presence == "Away"
        await asyncio.sleep(0.1)
        assert not any(isinstance(e, PresenceEvent) for e in list(alice.events._queue))
        online = await alice.request(ListOnlineAgents(), OnlineAgents)
        assert {a.id: a.presence for a in online.agents}["bob"] == "Away"
        assert "chloe" not in {a.id for a in online.agents}  # never logged in: Offline


async def test_queue_figures_are_unnumbered_and_come_whole_after_a_resume(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h, aiohttp.ClientSession() as http:
        alice = await RawConsole.open(http, h)
        await alice.send(Login(ref=1, username="alice", password=DEMO_PASSWORD))
        token = (await alice.next(LoggedIn)).token
        await h.host.inbox.start_conversation(channel="chat", customer="c1", customer_name="C")
        # Only the queue that changed since the login's snapshot, and outside the numbering.
        stats = await alice.next(QueueStatsEvent, timeout=5.0)
        assert stats.seq == 0 and {s.queue for s in stats.stats} == {"general"}
        await alice.send(SetPresence(ref=2, presence="Away"))
        assert (await alice.next(PresenceEvent)).seq == 1
        # Figures are not replayed: after a resume the next update has every one of her
        # queues, changed or not, and the numbered events go on from where they were.
        alice.drop()
        alice = await RawConsole.open(http, h)
        await alice.send(Resume(ref=3, token=token, last_seq=1))
        await alice.next(Ok)
        whole = await alice.next(QueueStatsEvent, timeout=5.0)
        assert {s.queue for s in whole.stats} == {"general", "messaging", "cases"}
        await alice.send(SetPresence(ref=4, presence="Available"))
        assert (await alice.next(PresenceEvent)).seq == 2


async def test_past_the_budget_agents_get_figures_in_turn_and_supervisors_every_second(
    tmp_path: Path, monkeypatch
) -> None:
    # One frame a second of budget for two agents: each agent is due every other round.
    monkeypatch.setattr(views, "STATS_FRAMES_PER_S", 1)
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice", presence=None)
        bob = await h.agent("bob", presence=None)
        dan = await h.agent("dan", presence=None)  # a supervisor
        # A customer nobody can take: the general queue's waiting time changes every round.
        await h.host.inbox.start_conversation(channel="chat", customer="c1", customer_name="C")
        await dan.next_event(QueueStatsEvent, timeout=5.0)  # a round has begun
        drain(alice)
        drain(bob)
        started = time.monotonic()
        for _ in range(6):  # six rounds, counted by the supervisor's updates
            await dan.next_event(QueueStatsEvent, timeout=5.0)
        # One a round, not one every other round (that would take 11 s or more).
        assert time.monotonic() - started < 10.0
        for agent in (alice, bob):
            got = sum(isinstance(e, QueueStatsEvent) for e in list(agent.events._queue))
            assert 2 <= got <= 4, got  # every other round: 3, give or take a slice's edge
        for console in (alice, bob, dan):
            await console.close()


async def test_too_far_behind_gets_a_resync_snapshot(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sessions, "RESUME_BUFFER", 5)
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "cust-a")
        await asyncio.sleep(0.1)
        drain(alice)
        # Back only after the 20 messages below have overrun her 5-event buffer: with the
        # default backoff she sometimes resumed in time to miss nothing, and no resync came.
        alice.backoff = (1.0, 1.0)
        await alice._ws.close()  # type: ignore[union-attr]
        for i in range(20):
            await h.host.inbox.customer_message(number, "cust-a", f"m{i}", f"c{i}")
        resync = await alice.next_event(Resync)
        assert number in [r.number for r in resync.snapshot.interactions]
        # After the resync the stream goes on normally.
        await h.host.inbox.customer_message(number, "cust-a", "after", "c-after")
        while (await alice.next_event(MessageEvent)).message.body != "after":
            pass


async def test_a_console_that_stops_reading_is_dropped_and_others_are_not_slowed(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(sessions, "OUTGOING_LIMIT", 20)
    async with running_host(tmp_path) as h, aiohttp.ClientSession() as http:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "cust-a")
        # Alice's second console: a raw socket that logs in and never reads again.
        from core.protocol import PROTOCOL_VERSION, Hello, Login, encoder

        stuck = await http.ws_connect(h.agent_url, max_msg_size=0)
        await stuck.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION)))
        await stuck.send_bytes(encoder.encode(Login(username="alice", password=DEMO_PASSWORD)))
        await asyncio.sleep(0.5)
        big = "x" * 15_000
        # Enough to fill the stuck socket's buffers (kernel and aiohttp) and its queue.
        total = 800
        for i in range(total):
            await h.host.inbox.customer_message(number, "cust-a", f"{i} {big}", f"c{i}")
        received = 0
        while received < total:
            event = await alice.next_event(MessageEvent)
            if event.message.sender_kind == "customer":
                received += 1
        stuck_sessions = [s for s in h.host.inbox.floor.sessions["alice"] if s.overflowed]
        assert stuck_sessions, "the stuck console was never dropped"
        await alice.close()
        await stuck.close()


async def test_a_customer_waiting_past_max_wait_is_told_once_that_they_keep_their_place(
    tmp_path: Path,
) -> None:
    # The general queue with a short max_wait and no overflow, and nobody Available: the
    # routing decision (tests/test_routing_scenarios.py) must reach the customer's side.
    text = fast_config_text().replace(
        "offer_timeout = 1.5\n", "offer_timeout = 1.5\nmax_wait = 0.3\n"
    )
    async with running_host(tmp_path, parse_config(text, name="max-wait.toml")) as h:
        inbox = h.host.inbox
        record = await inbox.start_conversation(channel="chat", customer="c-1", customer_name="C")
        seen: list[object] = []
        inbox.watch(record.number, seen.append)
        notice = "All our agents are busy right now. Thank you for waiting: you keep your place."

        def notices() -> list[object]:
            return [e for e in seen if isinstance(e, MessageEvent) and e.message.body == notice]

        async with asyncio.timeout(10):
            while not notices():
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # three times max_wait: a second notice would be here by now
        assert len(notices()) == 1
        stored = await h.host.inbox.store.list_messages(record.number)
        assert [m.body for m in stored if m.kind == "message"] == [notice]


class RawConsole:
    """An agent's console on a bare socket: the test decides when it drops and when it
    resumes (InboxClient would reconnect by itself within milliseconds)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.last_seq = 0

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, h: RunningHost) -> RawConsole:
        console = cls(await http.ws_connect(h.agent_url))
        await console.send(Hello(version=PROTOCOL_VERSION))
        assert isinstance(await console.frame(), Welcome)
        return console

    async def send(self, frame: ClientFrame) -> None:
        await self.ws.send_bytes(encoder.encode(frame))

    async def frame(self, timeout: float = 10.0) -> Any:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        frame = server_decoder.decode(msg.data)
        if isinstance(frame, Event) and frame.seq:  # queue figures are unnumbered (0)
            self.last_seq = frame.seq
        return frame

    async def next(self, kind: type, timeout: float = 10.0) -> Any:
        async with asyncio.timeout(timeout):
            while not isinstance(frame := await self.frame(), kind):
                pass
            return frame

    def drop(self) -> None:
        """Gone without a goodbye, as a laptop lid closing or a network cable pulled."""
        self.ws._conn.transport.abort()  # type: ignore[union-attr]


async def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_a_dropped_console_loses_its_offer_at_once_and_gets_work_on_resume(
    tmp_path: Path,
) -> None:
    config = fast_config()
    timeout = config.queues[0].offer_timeout
    async with running_host(tmp_path, config) as h, aiohttp.ClientSession() as http:
        router = h.host.inbox.routing.router
        alice = await RawConsole.open(http, h)
        await alice.send(Login(ref=1, username="alice", password=DEMO_PASSWORD))
        token = (await alice.next(LoggedIn)).token
        await alice.send(SetPresence(ref=2, presence="Available"))
        bob = await h.agent("bob")

        async def chat(customer: str) -> str:
            record = await h.host.inbox.start_conversation(channel="chat", customer=customer)
            return record.item

        first = await chat("cust-1")  # alice: most capacity (3 chats to bob's 2)
        assert (await alice.next(OfferEvent)).view.item.id == first
        second = await chat("cust-2")  # bob: alice has her one pending offer
        to_bob = await bob.next_event(OfferEvent)
        assert to_bob.view.item.id == second
        third = await chat("cust-3")  # waits: both have an offer pending
        assert router.items[third].state == "queued"

        seen = alice.last_seq
        alice.drop()
        dropped = time.monotonic()
        await wait_until(lambda: router.items[first].state == "queued", timeout=timeout)
        # Rescinded, not expired: alice is no rejecter and the customer kept their place.
        assert router.items[first].rejected_by == ()
        await bob.accept(to_bob.view.offer.id)
        offer = await bob.next_event(OfferEvent)
        assert offer.view.item.id == first  # before the later third
        assert time.monotonic() - dropped < timeout
        assert router.status["alice"].presence == "Available"

        # Her console resumes: it hears what happened while away, and gets work again.
        alice = await RawConsole.open(http, h)
        await alice.send(Resume(ref=3, token=token, last_seq=seen))
        closed = await alice.next(OfferClosed)
        assert (closed.item, closed.state) == (first, "rescinded")
        assert (await alice.next(OfferEvent)).view.item.id == third
        await bob.close()


async def test_after_a_restart_agents_keep_presence_but_get_work_only_once_back(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path, fast_config()) as h:
        alice, bob = await h.agent("alice"), await h.agent("bob")
        await alice.close()
        await bob.close()
    async with running_host(tmp_path, fast_config()) as h:
        inbox = h.host.inbox
        router = inbox.routing.router
        assert router.status["alice"].presence == router.status["bob"].presence == "Available"
        assert inbox.queue_stats()["general"].agents_available == 0
        record = await inbox.start_conversation(channel="chat", customer="cust-1")
        assert router.items[record.item].state == "queued"  # nobody is at a console yet
        bob = await h.agent("bob", presence=None)  # back with the presence he had
        assert (await bob.next_event(OfferEvent)).view.item.id == record.item
        # Alice never came back: once the resume window has passed she is logged out.
        await inbox.reap(time.time() + RESUME_WINDOW + 1)
        assert router.status["alice"].presence == "Offline"
        assert router.status["bob"].presence == "Available"
        await bob.close()


async def test_after_a_restart_an_offer_card_still_says_what_the_customer_wrote(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path, fast_config()) as h:
        record = await h.host.inbox.start_conversation(channel="chat", customer="cust-1")
        await h.host.inbox.customer_message(record.number, "cust-1", "Where is my parcel?", "c1")
        await h.host.inbox.customer_message(record.number, "cust-1", "It was due Monday", "c2")
    async with running_host(tmp_path, fast_config()) as h:
        bob = await h.agent("bob")
        # Offered at once, perhaps before the customer's words are read back: then offered
        # again with them, as when they arrive after the offer.
        async with asyncio.timeout(10):
            while (offer := await bob.next_event(OfferEvent)).view.first_message == "":
                pass
        assert (offer.view.interaction, offer.view.first_message) == (
            record.number,
            "Where is my parcel?",
        )
        await bob.close()


async def test_the_sender_hears_when_a_transfer_is_declined_or_expires(tmp_path: Path) -> None:
    async with running_host(tmp_path, fast_config()) as h:
        alice = await h.agent("alice")
        bob = await h.agent("bob")
        number = await accepted_chat(h, alice, "cust-a")
        drain(bob)
        await alice.request(TransferToAgent(interaction=number, agent="bob"))
        offer = await bob.next_event(OfferEvent)
        await bob.reject(offer.view.offer.id, "on a call")
        declined = await alice.next_event(TransferDeclined)
        assert (declined.interaction, declined.to_agent, declined.state) == (
            number,
            "bob",
            "rejected",
        )
        assert "on a call" in declined.reason
        # Unanswered: it expires after the queue's offer timeout, and alice hears that too.
        await alice.request(TransferToAgent(interaction=number, agent="bob"))
        declined = await alice.next_event(TransferDeclined, timeout=10.0)
        assert (declined.to_agent, declined.state) == ("bob", "expired")
        assert h.host.inbox.routing.router.items[offer.view.item.id].agent == "alice"
        await alice.close()
        await bob.close()


async def test_the_inviter_hears_when_an_invitation_is_declined(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        chloe = await h.agent("chloe")
        number = await accepted_chat(h, alice, "cust-a")
        await alice.request(InviteAgent(interaction=number, agent="chloe"))
        await chloe.next_event(InvitationEvent)
        await chloe.request(AnswerInvitation(interaction=number, accept=False))
        declined = await alice.next_event(InvitationDeclined)
        assert (declined.interaction, declined.agent) == (number, "chloe")
        await alice.close()
        await chloe.close()


async def test_one_of_two_consoles_dropping_keeps_the_agent_on_until_the_last_goes(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path, fast_config()) as h, aiohttp.ClientSession() as http:
        router = h.host.inbox.routing.router
        consoles = []
        for ref in (1, 2):
            console = await RawConsole.open(http, h)
            await console.send(Login(ref=ref, username="alice", password=DEMO_PASSWORD))
            await console.next(LoggedIn)
            consoles.append(console)
        await consoles[0].send(SetPresence(ref=3, presence="Available"))
        record = await h.host.inbox.start_conversation(channel="chat", customer="cust-1")
        await consoles[1].next(OfferEvent)
        consoles[0].drop()
        await wait_until(lambda: h.host.inbox.floor.sessions["alice"][0].detached_at is not None)
        # Her other console is still there: the offer stands.
        assert router.items[record.item].state == "offered"
        consoles[1].drop()
        await wait_until(lambda: router.items[record.item].state == "queued")
        assert "alice" in router.detached


async def test_a_resent_first_reply_counts_when_the_host_stored_it_but_did_not_route_it(
    tmp_path: Path,
) -> None:
    """The host that stored a reply may die before routing it (AgentReplied); the console
    resends it with its client_msg_id. That duplicate must still stop the first-reply clock,
    or the chat is reclaimed from an agent who answered."""
    from core.model import SenderKind

    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "web-rita")
        inbox = h.host.inbox
        item = inbox.routing.router.items[inbox.conversations.open[number].item]
        assert item.reply_by is not None and not item.replied
        # Stored, as by the host that died, and never routed.
        await inbox.store.append_message(
            number, SenderKind.AGENT, "alice", "On it!", "r1", time.time()
        )
        ack = await alice.send_message(number, "On it!", "r1")
        assert ack.duplicate
        replied = inbox.routing.router.items[item.id]
        assert replied.replied and replied.reply_by is None
        await alice.close()


async def test_a_first_reply_stored_but_not_routed_counts_after_a_restart(tmp_path: Path) -> None:
    """The host stored the owner's first reply and died (or was deposed: its routing step
    fenced) before routing it, and the console did not resend it. The host that rebuilds from
    the store finds the reply there and does not take the chat back from the agent who
    answered."""
    from core.model import SenderKind

    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "web-rita")
        inbox = h.host.inbox
        item = inbox.routing.router.items[inbox.conversations.open[number].item]
        assert item.reply_by is not None and not item.replied
        await inbox.store.append_message(
            number, SenderKind.AGENT, "alice", "On it!", "r1", time.time()
        )
        await alice.close()
    async with running_host(tmp_path) as again:
        rebuilt = again.host.inbox.routing.router.items[item.id]
        assert rebuilt.replied and rebuilt.reply_by is None
        assert rebuilt.agent == "alice" and rebuilt.state == "accepted"


async def test_a_customers_line_is_not_taken_for_the_agents_first_reply(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "web-rita")
        inbox = h.host.inbox
        item = inbox.routing.router.items[inbox.conversations.open[number].item]
        await inbox.customer_message(number, "web-rita", "Hello?", "c9")
        await alice.close()
    async with running_host(tmp_path) as again:
        rebuilt = again.host.inbox.routing.router.items[item.id]
        assert not rebuilt.replied and rebuilt.reply_by == item.reply_by


async def test_a_pending_invitation_survives_a_restart_and_is_answered_after_it(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        chloe = await h.agent("chloe", presence="Messaging-only")
        number = await accepted_chat(h, alice, "cust-a")
        ended = await accepted_chat(h, alice, "cust-b")
        await alice.request(InviteAgent(interaction=number, agent="chloe"))
        await alice.request(InviteAgent(interaction=ended, agent="chloe"))
        # Closing a chat withdraws its invitations, from the store too.
        await alice.request(EndChat(interaction=ended))
        await alice.request(CloseRecord(interaction=ended))
        await wait_until(lambda: ended not in h.host.inbox.records.invitations)
        stored = await h.host.inbox.store.load_invitations()
        assert [(i.interaction, i.agent, i.inviter) for i in stored] == [(number, "chloe", "alice")]
        await alice.close()
        await chloe.close()
    async with running_host(tmp_path) as h:
        chloe = InboxClient(h.agent_url, backoff=(0.05, 0.2))
        await chloe.connect()
        logged_in = await chloe.login("chloe", DEMO_PASSWORD)
        assert logged_in.snapshot.invitations == {number: "alice"}
        await chloe.request(AnswerInvitation(interaction=number, accept=True))
        opened = await chloe.next_event(InteractionEvent)
        assert opened.change == "opened" and opened.record.number == number
        assert "chloe" in [p.agent for p in opened.record.participants]
        assert await h.host.inbox.store.load_invitations() == []
        await chloe.close()
