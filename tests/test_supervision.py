"""Supervisors on a real host: the floor and its live changes, monitoring without joining, and
every step-in with its audit entry and what each agent's console hears."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.client import ClientError, InboxClient
from core.protocol import (
    AuditTrail,
    CloseConversation,
    CloseRecord,
    EndChat,
    Event,
    FloorEvent,
    FloorList,
    FloorRow,
    ForcePresence,
    GetAudit,
    InteractionEvent,
    ListFloor,
    MessageEvent,
    Monitor,
    MoveToQueue,
    OfferEvent,
    PresenceEvent,
    Reassign,
    SteppedIn,
    TakeOver,
)
from tests.hosting import running_host
from tests.test_agent_commands import accepted_chat


async def row_where(client: InboxClient, number: str, check) -> FloorRow:  # type: ignore[no-untyped-def]
    """The first floor row of `number` that passes `check`, from the floor's events."""
    while True:
        event = await client.next_event(FloorEvent)
        for row in event.rows:
            if row.interaction == number and check(row):
                return row


async def gone_from_floor(client: InboxClient, number: str) -> None:
    while number not in (await client.next_event(FloorEvent)).gone:
        pass


def _number(event: Event) -> str | None:
    if isinstance(event, InteractionEvent):
        return event.record.number
    if isinstance(event, MessageEvent):
        return event.message.interaction
    return None


async def next_of(client: InboxClient, kind: type[Event], number: str) -> Event:
    """The next `kind` event about interaction `number`."""
    while _number(event := await client.next_event(kind)) != number:
        pass
    return event


async def change_of(client: InboxClient, number: str, change: str) -> InteractionEvent:
    """The next `interaction` event of `number` with that change."""
    while True:
        event = await next_of(client, InteractionEvent, number)
        assert isinstance(event, InteractionEvent)
        if event.change == change:
            return event


async def audit(client: InboxClient, number: str) -> AuditTrail:
    return await client.request(GetAudit(item=number), AuditTrail)


async def test_the_floor_lists_open_conversations_and_sends_each_change(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        dan = await h.agent("dan", presence=None)
        first = await accepted_chat(h, alice, "carla")
        listed = await dan.request(ListFloor(), FloorList)
        row = next(r for r in listed.rows if r.interaction == first)
        assert (row.agent, row.state, row.queue, row.customer_name) == (
            "alice",
            "accepted",
            "general",
            "Carla",
        )
        assert row.accepted_at is not None and row.accepted_at >= row.arrived_at

        inbox = h.host.inbox
        await inbox.customer_message(first, "carla", "where is my parcel?", "c1")
        asked = await row_where(dan, first, lambda r: r.unanswered)
        assert asked.last_customer_at is not None and asked.first_reply_at is None
        await alice.send_message(first, "looking now", "a1")
        answered = await row_where(dan, first, lambda r: not r.unanswered)
        assert answered.first_reply_at is not None

        second = (await inbox.start_conversation(channel="chat", customer="dora")).number
        waiting = await row_where(dan, second, lambda r: r.agent is None)
        assert waiting.state in ("queued", "offered") and waiting.accepted_at is None

        await alice.end_chat(first)
        await row_where(dan, first, lambda r: r.state == "wrap_up")
        await inbox.customer_left(second, "dora")
        await gone_from_floor(dan, second)
        await dan.close()
        await alice.close()


async def test_the_floor_knows_who_spoke_last_again_after_a_restart(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "carla")
        await h.host.inbox.customer_message(number, "carla", "where is my parcel?", "c1")
        # The newest line: a restart reads the customer's newest lines and the newest of all.
        await alice.send_message(number, "looking now", "a1")
        before = h.host.inbox.supervision.row(h.host.inbox.conversations.open[number])
        assert before is not None and before.first_reply_at is not None
        await alice.close()
    # The times are read beside routing after a restart, not before it: ask until they are in.
    async with running_host(tmp_path) as again:
        dan = await again.agent("dan", presence=None)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            listed = await dan.request(ListFloor(), FloorList)
            row = next(r for r in listed.rows if r.interaction == number)
            if row.first_reply_at is not None:
                break
            assert asyncio.get_running_loop().time() < deadline, "the floor's times never came"
            await asyncio.sleep(0.05)
        assert (row.first_reply_at, row.last_customer_at, row.unanswered) == (
            before.first_reply_at,
            before.last_customer_at,
            False,
        )
        await dan.close()


async def test_with_no_one_watching_the_floor_forgets_closed_conversations(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "carla")
        await alice.send_message(number, "Hello Carla")
        supervision = h.host.inbox.supervision
        supervision.publish()
        assert supervision.times[number].last_agent_at is not None  # open: kept
        await alice.request(EndChat(interaction=number))
        await alice.request(CloseRecord(interaction=number))
        supervision.publish()
        assert not supervision.watching and number not in supervision.times
        await alice.close()


async def test_monitoring_sends_the_messages_without_joining(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        dan = await h.agent("dan", presence=None)
        number = await accepted_chat(h, alice, "carla")
        inbox = h.host.inbox
        heard: list[Event] = []
        inbox.watch(number, heard.append)
        await dan.request(Monitor(interaction=number))

        await inbox.customer_message(number, "carla", "hello?", "c1")
        said = await next_of(dan, MessageEvent, number)
        assert isinstance(said, MessageEvent) and said.message.body == "hello?"
        await alice.send_message(number, "hi Carla", "a1")
        said = await next_of(dan, MessageEvent, number)
        assert isinstance(said, MessageEvent) and said.message.body == "hi Carla"

        record = inbox.conversations.open[number].record
        assert [p.agent for p in record.participants] == ["alice"]
        # The customer heard the two messages and nothing about anyone watching.
        assert [type(e) for e in heard] == [MessageEvent, MessageEvent]

        await dan.request(Monitor(interaction=number, on=False))
        await alice.send_message(number, "anything else?", "a2")
        await inbox.customer_message(number, "carla", "no thanks", "c2")
        # Waiting for the row that says the customer spoke last proves both were delivered.
        await dan.request(ListFloor())
        await row_where(dan, number, lambda r: r.unanswered)
        assert all(not isinstance(e, MessageEvent) for e in _drain(dan))
        await dan.close()
        await alice.close()


def _drain(client: InboxClient) -> list[Event]:
    out = []
    while not client.events.empty():
        out.append(client.events.get_nowait())
    return out


async def test_taking_over_makes_the_supervisor_owner_and_tells_the_agent(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        dan = await h.agent("dan", presence=None)
        number = await accepted_chat(h, alice, "carla")
        router = h.host.inbox.routing.router
        assert router.used("alice").total == 1

        await dan.request(TakeOver(interaction=number, reason="customer asked for a manager"))

        await change_of(dan, number, "opened")
        await change_of(alice, number, "left")
        told = await alice.next_event(SteppedIn)
        assert (told.action, told.by, told.reason, told.interaction) == (
            "take_over",
            "dan",
            "customer asked for a manager",
            number,
        )
        # The capacity moves with the chat: the supervisor holds it now.
        assert router.used("alice").total == 0 and router.used("dan").total == 1
        last = (await audit(dan, number)).entries[-1]
        assert last.kind == "item_transferred" and last.agent == "dan"
        assert "taken over by dan from alice" in last.reason
        assert "customer asked for a manager" in last.reason
        await dan.close()
        await alice.close()


async def test_reassigning_gives_the_chat_to_the_agent_at_once(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        bob = await h.agent("bob", presence="Away")
        dan = await h.agent("dan", presence=None)
        number = await accepted_chat(h, alice, "carla")
        # Away: not available for chat, so not a person to hand a live chat to.
        with pytest.raises(ClientError) as refused:
            await dan.request(Reassign(interaction=number, agent="bob", reason="rebalance"))
        assert refused.value.code == "agent_unavailable"
        await bob.set_presence("Available")

        await dan.request(Reassign(interaction=number, agent="bob", reason="rebalance"))

        await change_of(bob, number, "opened")
        told = await alice.next_event(SteppedIn)
        assert (told.action, told.to, told.reason) == ("reassign", "bob", "rebalance")
        last = (await audit(dan, number)).entries[-1]
        assert last.agent == "bob" and last.reason == "dan gave it to bob from alice: rebalance"
        for client in (alice, bob, dan):
            await client.close()


async def test_moving_to_a_queue_frees_the_agent(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        dan = await h.agent("dan", presence=None)
        number = await accepted_chat(h, alice, "carla")

        await dan.request(MoveToQueue(interaction=number, queue="vip", reason="gold customer"))

        await change_of(alice, number, "left")
        told = await alice.next_event(SteppedIn)
        assert (told.action, told.to) == ("move_to_queue", "vip")
        item = h.host.inbox.routing.router.items[h.host.inbox.conversations.open[number].item]
        assert (item.queue, item.agent, item.state) == ("vip", None, "queued")
        last = (await audit(dan, number)).entries[-1]
        assert last.kind == "item_requeued"
        assert last.reason == "dan moved it to vip: gold customer"
        await dan.close()
        await alice.close()


async def test_closing_ends_the_conversation_for_everyone(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        dan = await h.agent("dan", presence=None)
        number = await accepted_chat(h, alice, "carla")
        heard: list[Event] = []
        h.host.inbox.watch(number, heard.append)

        await dan.request(CloseConversation(interaction=number, reason="spam"))

        closed = await change_of(alice, number, "closed")
        assert closed.record.state == "closed_complete"
        told = await alice.next_event(SteppedIn)
        assert (told.action, told.reason) == ("close", "spam")
        assert any(isinstance(e, InteractionEvent) and e.change == "closed" for e in heard)
        last = (await audit(dan, number)).entries[-1]
        assert (last.kind, last.reason) == ("item_closed", "closed by dan: spam")
        await dan.close()
        await alice.close()


async def test_forcing_presence_reroutes_offers_and_tells_the_agent_why(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        dan = await h.agent("dan", presence=None)
        inbox = h.host.inbox
        record = await inbox.start_conversation(channel="chat", customer="carla")
        await alice.next_event(OfferEvent)

        await dan.request(ForcePresence(agent="alice", presence="Away", reason="left the floor"))

        presence = await alice.next_event(PresenceEvent)
        assert presence.agent.presence == "Away"
        assert presence.reason == "set by dan: left the floor"
        told = await alice.next_event(SteppedIn)
        assert (told.action, told.to, told.by) == ("presence", "Away", "dan")
        item = inbox.routing.router.items[inbox.conversations.open[record.number].item]
        assert item.state == "queued"  # the offer went back; nobody else is available
        bob = await h.agent("bob")
        await bob.next_event(OfferEvent)
        await bob.close()
        await dan.close()
        await alice.close()


async def test_forcing_offline_sends_live_chats_back_to_their_queue(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        dan = await h.agent("dan", presence=None)
        number = await accepted_chat(h, alice, "carla")

        await dan.request(ForcePresence(agent="alice", presence="Offline", reason="went home"))

        await change_of(alice, number, "left")
        entries = (await audit(dan, number)).entries
        assert any(
            e.kind == "item_requeued" and "set by dan: went home" in e.reason for e in entries
        )
        await dan.close()
        await alice.close()


async def test_a_reason_is_required(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        dan = await h.agent("dan", presence=None)
        number = await accepted_chat(h, alice, "carla")
        for frame in (
            TakeOver(interaction=number, reason="   "),
            ForcePresence(agent="alice", presence="Away", reason=" "),
        ):
            with pytest.raises(ClientError) as refused:
                await dan.request(frame)
            assert refused.value.code == "bad_reason"
        with pytest.raises(ClientError) as refused:
            await dan.request(TakeOver(interaction=number, reason="x" * 501))
        assert refused.value.code == "bad_frame"
        assert h.host.inbox.conversations.open[number].record.participants[-1].agent == "alice"
        await dan.close()
        await alice.close()


async def test_agents_are_forbidden_every_supervisor_command(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "carla")
        for frame in (
            ListFloor(),
            Monitor(interaction=number),
            TakeOver(interaction=number, reason="r"),
            Reassign(interaction=number, agent="bob", reason="r"),
            MoveToQueue(interaction=number, queue="vip", reason="r"),
            CloseConversation(interaction=number, reason="r"),
            ForcePresence(agent="bob", presence="Away", reason="r"),
        ):
            with pytest.raises(ClientError) as refused:
                await alice.request(frame)
            assert refused.value.code == "forbidden", frame
        await alice.close()
