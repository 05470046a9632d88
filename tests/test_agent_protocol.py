"""The agent protocol end to end: core/client against a real host on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import msgspec
import pytest

from core.client import ClientError, InboxClient
from core.config import parse_config
from core.demo import DEMO_PASSWORD, demo_config_text
from core.host import agent_socket
from core.model import OfferKind
from core.protocol import (
    CLOSE_REPLACED,
    CLOSE_SESSION_ENDED,
    PROTOCOL_VERSION,
    CloseRecord,
    Error,
    GetTranscript,
    Hello,
    InteractionEvent,
    MessageEvent,
    OfferClosed,
    OfferEvent,
    Ok,
    Ping,
    Resume,
    SendMessage,
    Transcript,
    TransferToAgent,
    Welcome,
    encoder,
    server_decoder,
)
from tests.hosting import RunningHost, fast_config, running_host


async def customer_chat(h: RunningHost, name: str = "Ana") -> str:
    record = await h.host.inbox.start_conversation(
        channel="chat", customer=f"web-{name.lower()}", customer_name=name
    )
    return record.number


async def test_login_errors_are_clear(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        client = InboxClient(h.agent_url)
        await client.connect()
        with pytest.raises(ClientError) as e:
            await client.login("alice", "wrong")
        assert e.value.code == "bad_credentials"
        with pytest.raises(ClientError) as e2:
            await client.login("nobody", "wrong")
        assert e2.value.message == e.value.message  # does not reveal which was wrong
        reply = await client.login("alice", DEMO_PASSWORD)
        assert reply.snapshot.me.id == "alice" and reply.token.startswith("ses_")
        assert {p.name for p in reply.snapshot.presences} >= {"Available", "Away", "Offline"}
        await client.close()


async def test_protocol_mismatch_is_refused_with_a_reason(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(h.agent_url)
        await ws.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION + 1)))
        reply = server_decoder.decode((await ws.receive()).data)
        assert isinstance(reply, Error) and reply.code == "protocol_mismatch"
        assert "upgrade" in reply.message
        await ws.close()


async def test_chat_accept_exchange_transfer_end_and_close(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await customer_chat(h)
        offer = await alice.next_event(OfferEvent)
        assert offer.view.interaction == number and offer.view.customer_name == "Ana"
        assert offer.view.offer.reason.startswith("offered to alice")
        await alice.accept(offer.view.offer.id)
        opened = await alice.next_event(InteractionEvent)
        assert opened.change == "opened" and opened.record.number == number
        joined = await alice.next_event(MessageEvent)
        assert joined.message.body == "Alice Martin joined"

        ack = await alice.send_message(number, "Hello Ana", client_msg_id="m-1")
        again = await alice.send_message(number, "Hello Ana", client_msg_id="m-1")
        assert again.duplicate and again.message.seq == ack.message.seq
        assert ack.message.body == "Hello Ana" and ack.message.sender == "alice"
        await h.host.inbox.customer_message(number, "web-ana", "My order is late", "c-1")
        # Her own line came in its ack: the next event this session gets is the customer's.
        seen = await alice.next_event(MessageEvent)
        assert seen.message.body == "My order is late"

        # Bob can take over only once he accepts the transfer.
        bob = await h.agent("bob")
        await alice.request(TransferToAgent(interaction=number, agent="bob"))
        transfer = await bob.next_event(OfferEvent)
        assert transfer.view.offer.kind == OfferKind.TRANSFER
        await bob.accept(transfer.view.offer.id)
        left = await alice.next_event(InteractionEvent)
        assert left.change == "left"
        assert (await bob.next_event(InteractionEvent)).change == "opened"
        with pytest.raises(ClientError) as e:
            await alice.send_message(number, "still here?")
        assert e.value.code == "not_found"

        await bob.end_chat(number)
        await bob.request(CloseRecord(interaction=number))
        transcript = await bob.request(GetTranscript(interaction=number), Transcript)
        bodies = [m.body for m in transcript.messages]
        assert "Transferred from Alice Martin to Bob Okafor" in bodies
        assert transcript.interaction.state == "closed_complete"
        for c in (alice, bob):
            await c.close()


async def test_an_offer_left_alone_expires_and_reaches_a_second_agent(tmp_path: Path) -> None:
    async with running_host(tmp_path, fast_config()) as h:
        alice = await h.agent("alice")
        bob = await h.agent("bob")
        await customer_chat(h)
        tasks = {asyncio.create_task(c.next_event(OfferEvent)): c for c in (alice, bob)}
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        first = next(iter(done))
        holder, offer = tasks[first], first.result()
        other = bob if holder is alice else alice
        closed = await holder.next_event(OfferClosed, timeout=5.0)
        assert closed.state == "expired"
        second = await other.next_event(OfferEvent, timeout=5.0)
        assert second.view.item.id == offer.view.item.id
        for c in (alice, bob):
            await c.close()


async def test_reconnect_and_resume_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await customer_chat(h)
        offer = await alice.next_event(OfferEvent)
        await alice.accept(offer.view.offer.id)
        await alice.next_event(MessageEvent)  # "joined"
        inbox = h.host.inbox
        for i in range(5):
            await inbox.customer_message(number, "web-ana", f"before {i}", f"b-{i}")
        # Cut the socket under the client; the customer keeps writing meanwhile.
        await alice._ws.close()  # type: ignore[union-attr]
        for i in range(5):
            await inbox.customer_message(number, "web-ana", f"during {i}", f"d-{i}")
        # Typed while disconnected: sent after the reconnect, once.
        ack = await alice.send_message(number, "sorry, I was cut off", client_msg_id="late-1")
        for i in range(5):
            await inbox.customer_message(number, "web-ana", f"after {i}", f"a-{i}")
        bodies = []
        while len(bodies) < 15:
            bodies.append((await alice.next_event(MessageEvent)).message.body)
        # Her own line is in its ack, not among the events.
        assert bodies == [
            *(f"before {i}" for i in range(5)),
            *(f"during {i}" for i in range(5)),
            *(f"after {i}" for i in range(5)),
        ]
        stored = await h.host.inbox.store.list_messages(number)
        assert [m.body for m in stored].count("sorry, I was cut off") == 1
        assert ack.message.client_msg_id == "late-1"
        assert ack.message.body == "sorry, I was cut off"
        await alice.close()


async def test_agents_see_and_change_only_their_own(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        bob = await h.agent("bob", presence="Away")
        dan = await h.agent("dan", presence="Away")
        number = await customer_chat(h)
        offer = await alice.next_event(OfferEvent)
        with pytest.raises(ClientError) as e:
            await bob.accept(offer.view.offer.id)
        assert e.value.code == "offer_not_pending"
        await alice.accept(offer.view.offer.id)
        for frame in (
            SendMessage(interaction=number, body="hi", client_msg_id="x"),
            GetTranscript(interaction=number),
        ):
            with pytest.raises(ClientError) as e:
                await bob.request(frame)
            assert e.value.code == "not_found"
        # A supervisor may read it.
        transcript = await dan.request(GetTranscript(interaction=number), Transcript)
        assert transcript.interaction.number == number
        for c in (alice, bob, dan):
            await c.close()


async def test_unauthenticated_socket_can_do_nothing(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        client = InboxClient(h.agent_url)
        await client.connect()
        with pytest.raises(ClientError) as e:
            await client.set_presence("Available")
        assert e.value.code == "unauthenticated"
        await client.close()


async def test_malformed_unknown_and_oversized_frames_get_errors_and_the_host_serves_on(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(h.agent_url, max_msg_size=0)
        await ws.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION)))
        assert isinstance(server_decoder.decode((await ws.receive()).data), Welcome)
        for bad in (
            b"\xc1\xff garbage",
            encoder.encode({"t": "launch_missiles", "ref": 1}),
            encoder.encode({"t": "send_message", "ref": 2, "interaction": 5}),
            encoder.encode({"t": "login", "username": "a" * 500, "password": "x"}),
            # A field the host does not know, nested past the recursion limit: msgspec
            # recurses to skip it (used to drop the connection).
            b"\x83\xa1t\xa4ping\xa3ref\x03\xa3zzz" + b"\x91" * 100_000 + b"\xc0",
        ):
            await ws.send_bytes(bad)
            reply = server_decoder.decode((await ws.receive()).data)
            assert isinstance(reply, Error) and reply.code == "bad_frame", reply
        await ws.send_str("text frame")
        reply = server_decoder.decode((await ws.receive()).data)
        assert isinstance(reply, Error) and "msgpack" in reply.message
        # Too big for the host: the connection is closed, the host keeps serving others.
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(b"\x00" * (11 * 1024 * 1024))
            closing = await ws.receive()
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        client = await h.agent("alice")
        assert client.status == "connected"
        await client.close()


def test_frames_round_trip_through_msgpack() -> None:
    frame = SendMessage(ref=7, interaction="IMS0001001", body="é😀", client_msg_id="m")
    from core.protocol import client_decoder

    assert client_decoder.decode(encoder.encode(frame)) == frame
    with pytest.raises(msgspec.ValidationError):
        client_decoder.decode(encoder.encode({"t": "send_message", "ref": -1}))


async def test_waiting_customer_is_offered_when_an_agent_comes_online(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        await customer_chat(h)
        alice = await h.agent("alice", presence=None)
        await asyncio.sleep(0.05)
        assert alice.events.empty()
        await alice.set_presence("Available")
        offer = await alice.next_event(OfferEvent)
        assert offer.view.customer_name == "Ana"
        await alice.close()


async def test_an_expired_session_drops_its_socket(
    tmp_path: Path,
) -> None:
    text = demo_config_text().replace("session_ttl = 43200", "session_ttl = 1")
    async with running_host(tmp_path, parse_config(text, name="short.toml")) as h:
        alice = await h.agent("alice")
        # The reaper runs every 5 s: by then the 1 s session has expired.
        async with asyncio.timeout(15):
            while alice.status != "logged out":
                await asyncio.sleep(0.1)
        # The host closed the socket saying the session ended; the session is gone.
        assert alice._ws is not None and alice._ws.close_code == CLOSE_SESSION_ENDED
        assert not h.host.inbox.floor.sessions.get("alice")
        await alice.close()


async def test_a_console_replaced_by_a_resume_does_not_take_its_session_back(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h, aiohttp.ClientSession() as http:
        first = await h.agent("alice")
        # The same saved token on a second console, resuming where the first one is.
        second = await http.ws_connect(h.agent_url)
        await second.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION)))
        assert isinstance(server_decoder.decode(await second.receive_bytes()), Welcome)
        assert first.token is not None
        resume = Resume(token=first.token, last_seq=first.last_seq, ref=1)
        await second.send_bytes(encoder.encode(resume))
        assert isinstance(server_decoder.decode(await second.receive_bytes()), Ok)
        async with asyncio.timeout(5):
            while first.status != "replaced by another console":
                await asyncio.sleep(0.05)
        assert first._ws is not None and first._ws.close_code == CLOSE_REPLACED
        # The first console stays off (reconnecting would drop the second, and so on), and the
        # session's events go on reaching the second.
        await customer_chat(h)
        seqs: list[int] = []
        event = None
        while not isinstance(event, OfferEvent):  # queue stats may come first
            event = server_decoder.decode(await second.receive_bytes(timeout=5))
            seqs.append(event.seq)  # type: ignore[union-attr]
        assert seqs == list(range(first.last_seq + 1, first.last_seq + 1 + len(seqs)))
        assert first.status == "replaced by another console"
        assert len(h.host.inbox.floor.sessions["alice"]) == 1
        await first.close()
        await second.close()


async def test_a_socket_that_never_logs_in_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_socket, "LOGIN_TIMEOUT", 0.5)
    async with running_host(tmp_path) as h, aiohttp.ClientSession() as http:
        logged_in = await h.agent("alice")
        idle = await http.ws_connect(h.agent_url)
        await idle.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION)))
        assert isinstance(server_decoder.decode(await idle.receive_bytes()), Welcome)
        await idle.send_bytes(encoder.encode({"t": "login", "ref": 1, "username": "x"}))
        reply = server_decoder.decode(await idle.receive_bytes())  # a failed attempt: no grace
        assert isinstance(reply, Error) and reply.code == "bad_frame", reply
        error = server_decoder.decode(await idle.receive_bytes(timeout=5))
        assert isinstance(error, Error) and error.code == "login_timeout", error
        assert (await idle.receive(timeout=5)).type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
        )
        # A console that logged in is not affected, however long it has been connected.
        await logged_in.request(Ping(ref=0), Ok)
        assert logged_in.status == "connected"
        await logged_in.close()
