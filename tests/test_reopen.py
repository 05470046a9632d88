"""A customer writing into a closed conversation, over the widget socket and REST on a real host:
within the channel's reopen window it reopens, routed to its last agent first and kept across a
restart; after it a new conversation follows the closed one up."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.config import HostConfig, parse_config
from core.model import InteractionState, ItemState, Role
from core.notices import NOTICES
from core.protocol import (
    AcceptOffer,
    CloseRecord,
    EndChat,
    InteractionEvent,
    OfferEvent,
    SetPresence,
)
from core.service.sessions import AgentSession
from tests.hosting import fast_config_text
from tests.test_agent_commands import wait_until
from tests.test_api import Api, serving
from tests.test_widget import AgentDesk, Served, available, connect, serve, stop

CHAT_CHANNEL = 'name = "chat"\nmode = "sync"\n'
REOPENED = NOTICES["reopened"]


def config(reopen_window: float | None = None) -> HostConfig:
    """One quick general queue (most_capacity, no affinity window) for bob and chloe."""
    text = fast_config_text()
    if reopen_window is not None:
        assert CHAT_CHANNEL in text
        text = text.replace(CHAT_CHANNEL, f"{CHAT_CHANNEL}reopen_window = {reopen_window}\n")
    return parse_config(text, name="reopen.toml")


@contextlib.asynccontextmanager
async def widget_host(tmp_path: Path, cfg: HostConfig) -> AsyncIterator[Served]:
    served = await serve(cfg, tmp_path)
    try:
        yield served
    finally:
        await stop(served)


async def close_chat(desk: AgentDesk, number: str) -> None:
    await desk.do(EndChat(interaction=number))
    await desk.do(CloseRecord(interaction=number))
    await desk.event(
        lambda e: (
            isinstance(e, InteractionEvent) and e.change == "closed" and e.record.number == number
        )
    )


async def test_widget_message_after_close_reopens_and_is_offered_to_the_last_agent_first(
    tmp_path: Path,
) -> None:
    async with widget_host(tmp_path, config()) as served, aiohttp.ClientSession() as http:
        inbox = served.host.inbox
        bob = await available(served.host, "bob")
        c = await connect(http, served)
        started = await c.start()
        number = started["conversation"]
        assert await bob.accept_next_offer() == number
        await c.say("my order is late", "c-1")
        first_item = inbox.conversations.open[number].item
        await close_chat(bob, number)
        await c.expect("state", state="closed_complete")
        await c.ws.close()
        # chloe has more chat capacity free: most_capacity alone would pick her.
        await available(served.host, "chloe")

        # The page comes back later, resumes the closed chat and writes again.
        c2 = await connect(http, served)
        await c2.send(t="resume", conversation=number, ticket=started["ticket"])
        assert (await c2.expect("resumed"))["state"] == "closed_complete"
        ack = await c2.say("it still has not arrived", "c-2")
        await c2.expect("state", state="new")
        notice = await c2.expect("message", body=REOPENED)
        # The customer's own line is drawn from its ack, numbered after the notice.
        assert notice["seq"] < ack["seq"]

        # Offered with what the customer wrote on coming back (sent again once it arrives).
        offer = await bob.event(
            lambda e: (
                isinstance(e, OfferEvent)
                and e.view.interaction == number
                and e.view.first_message == "it still has not arrived"
            )
        )
        assert isinstance(offer, OfferEvent) and "preferred agent" in offer.view.offer.reason
        reopened = inbox.conversations.open[number]
        assert reopened.item != first_item
        assert reopened.record.state == InteractionState.NEW and reopened.record.closed_at is None
        await bob.do(AcceptOffer(offer=offer.view.offer.id))
        assert (await c2.expect("state", state="work_in_progress"))["agent"] == "Bob Okafor"

        # One transcript: the first conversation's lines, then the reopened one's.
        bodies = [m.body for m in await inbox.store.list_messages(number, limit=100)]
        assert bodies.index("my order is late") < bodies.index(REOPENED)
        assert bodies.index(REOPENED) < bodies.index("it still has not arrived")
        # Sent again (a lost ack): stored once, not reopened twice.
        assert (await c2.say("it still has not arrived", "c-2"))["seq"] == ack["seq"]
        bodies = [m.body for m in await inbox.store.list_messages(number, limit=100)]
        assert bodies.count("it still has not arrived") == 1 and bodies.count(REOPENED) == 1


async def test_widget_message_after_the_window_starts_a_linked_conversation(
    tmp_path: Path,
) -> None:
    async with (
        widget_host(tmp_path, config(reopen_window=0)) as served,
        aiohttp.ClientSession() as http,
    ):
        inbox = served.host.inbox
        bob = await available(served.host, "bob")
        c = await connect(http, served)
        old = (await c.start())["conversation"]
        await bob.accept_next_offer()
        await close_chat(bob, old)
        await c.expect("state", state="closed_complete")

        await c.send(t="message", body="one more question", client_msg_id="c-9")
        started = await c.expect("started")
        new = started["conversation"]
        assert new != old and started["ticket"] != ""
        await c.expect("state", state="new")
        await c.expect("message", body="one more question")
        ack = await c.expect("ack", client_msg_id="c-9")

        record = await inbox.store.get_interaction(new)
        assert record is not None and record.previous == old
        old_record = await inbox.store.get_interaction(old)
        assert old_record is not None and old_record.state == InteractionState.CLOSED_COMPLETE
        assert await bob.accept_next_offer() == new
        opened = await bob.event(
            lambda e: isinstance(e, InteractionEvent) and e.record.number == new
        )
        assert isinstance(opened, InteractionEvent) and opened.record.previous == old
        # The old number again (a retry of the same message) lands in the same follow-up.
        retried = await c.say("one more question", "c-9")
        assert retried["seq"] == ack["seq"]
        assert sum(1 for conv in inbox.conversations.open.values() if conv.record.previous) == 1


@pytest.mark.parametrize("bob_ready", [True, False], ids=["last_agent_ready", "last_agent_away"])
async def test_rest_message_to_a_closed_conversation_reopens_it_and_survives_a_restart(
    tmp_path: Path, bob_ready: bool
) -> None:
    async with serving(tmp_path, config()) as api:
        integration = await api.token(None, Role.SUPERVISOR)
        bob = await api.available("bob")
        created = await closed_rest_chat(api, integration, bob, "crm-7", "where is my order")
        number = created["interaction"]
        await api.available("chloe")
        if not bob_ready:
            await api.host.inbox.handle(bob, SetPresence(presence="Away"))

        status, posted = await post(api, integration, number, "crm-7", "about my last order", "r-1")
        assert status == 201, posted
        assert posted["message"]["interaction"] == number
        record = api.host.inbox.conversations.open[number].record
        item = await api.host.inbox.work_item(record.item)
        assert item is not None and item.id != created["item"]
        assert item.preferred_agent == "bob"
        chosen = api.host.inbox.routing.router.offers[
            api.host.inbox.routing.router.offer_of_item[item.id]
        ]
        assert chosen.agent == ("bob" if bob_ready else "chloe")
        status, again = await post(api, integration, number, "crm-7", "about my last order", "r-1")
        assert status == 200 and again["duplicate"] is True
    # The reopened record was committed with its item: a restart finds it open.
    async with serving(tmp_path, config()) as api:
        conv = api.host.inbox.conversations.open[number]
        assert conv.item == item.id and conv.record.state == InteractionState.NEW
        stored = await api.host.inbox.work_item(item.id)
        assert stored is not None and stored.state in (ItemState.QUEUED, ItemState.OFFERED)
        # Its offer card says what the customer wrote to reopen it, not the closed chat's line.
        await wait_until(lambda: conv.opening == "about my last order")


async def test_rest_message_after_the_window_starts_a_conversation_naming_the_closed_one(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, config(reopen_window=0)) as api:
        integration = await api.token(None, Role.SUPERVISOR)
        bob = await api.available("bob")
        number = (await closed_rest_chat(api, integration, bob, "crm-8"))["interaction"]

        status, posted = await post(api, integration, number, "crm-8", "hello again", "r-1")
        assert status == 201, posted
        new = posted["message"]["interaction"]
        assert new != number
        status, view, _ = await api.call("GET", f"/api/v1/interactions/{new}", integration)
        assert status == 200 and view["interaction"]["previous"] == number
        assert [m["body"] for m in view["messages"]] == ["hello again"]
        # Someone else's customer id on the same number is still not found.
        status, body = await post(api, integration, number, "crm-9", "hi", "r-2")
        assert status == 404 and body["error"]["code"] == "not_found"


async def closed_rest_chat(
    api: Api, token: str, owner: AgentSession, customer: str, said: str = ""
) -> Any:
    """A chat created over REST for `customer`, taken by `owner`, ended and closed, with the
    customer's line `said` in it if given; the creation's answer."""
    status, created, _ = await api.call(
        "POST", "/api/v1/items", token, json={"channel": "chat", "customer": {"id": customer}}
    )
    assert status == 201, created
    number = created["interaction"]
    await api.host.inbox.handle(owner, await accept_offer(owner, number))
    if said:
        status, posted = await post(api, token, number, customer, said, "r-0")
        assert status == 201, posted
    for frame in (EndChat(interaction=number), CloseRecord(interaction=number)):
        await api.host.inbox.handle(owner, frame)
    return created


async def accept_offer(session: AgentSession, number: str) -> AcceptOffer:
    """The accept command for the offer of `number` the session gets."""

    def find() -> OfferEvent | None:
        found = (e for e in session.buffer if isinstance(e, OfferEvent))
        return next((e for e in found if e.view.interaction == number), None)

    await wait_until(lambda: find() is not None)
    event = find()
    assert event is not None
    return AcceptOffer(offer=event.view.offer.id)


async def post(
    api: Api, token: str, number: str, customer: str, body: str, cid: str
) -> tuple[int, Any]:
    status, answer, _ = await api.call(
        "POST",
        f"/api/v1/interactions/{number}/messages",
        token,
        json={"customer_id": customer, "body": body, "client_msg_id": cid},
    )
    return status, answer
