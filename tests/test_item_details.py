"""What an item is about reaches the agent: the channel's `details` (labels, order) on the
offer, on the chat's opening, in a fresh console's snapshot and on the console's screen. A real
host on a loopback port (the demo config: its incident channel lists details, its case channel
none), items created over REST, agents on real sockets, the console under Pilot."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from textual.widget import Widget

from core.client import InboxClient
from core.config import parse_config
from core.demo import DEMO_PASSWORD, demo_config_text
from core.model import RecordKind, Role
from core.protocol import (
    CloseRecord,
    CreateRecord,
    Detail,
    GetPrefill,
    InteractionEvent,
    ListRecords,
    OfferEvent,
    Prefill,
    RecordCreated,
    RecordList,
)
from screens.main import MainScreen
from tests.hosting import RunningHost, running_host
from tests.test_console_pilot import console, until
from tui.widgets.offer_list import OfferList
from tui.widgets.record_pane import RecordPane

INCIDENT = {
    "channel": "incident",
    "customer": {"id": "crm-acme", "name": "Acme Ltd"},
    "short_description": "Card payments failing",
    # Listed by the channel in another order than here; `internal_ref` is not listed at all.
    "attributes": {"internal_ref": "X-99", "category": "payments", "severity": 2},
}
SHOWN = [
    Detail(label="Summary", value="Card payments failing"),
    Detail(label="Severity", value="2"),
    Detail(label="Category", value="payments"),
]


async def create(h: RunningHost, body: dict[str, object]) -> str:
    token, _ = await h.host.auth.create_api_token("crm", None, Role.SUPERVISOR, None)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{h.url}/api/v1/items", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as r,
    ):
        created = await r.json()
        assert r.status == 201, created
        return str(created["interaction"])


async def incident_offered_to_bob(h: RunningHost) -> tuple[InboxClient, str, OfferEvent]:
    """Bob (tier2: takes incidents) on a real socket, offered INCIDENT created over REST."""
    bob = await h.agent("bob")
    number = await create(h, INCIDENT)
    return bob, number, await bob.next_event(OfferEvent)


def text_of(widget: Widget) -> str:
    return "\n".join(widget.render_line(y).text for y in range(widget.size.height))


async def test_an_incident_shows_its_channels_details_on_the_offer_the_opening_and_a_snapshot(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        bob, number, offer = await incident_offered_to_bob(h)
        assert offer.view.interaction == number
        assert offer.view.details == SHOWN
        await bob.accept(offer.view.offer.id)
        opened = await bob.next_event(InteractionEvent)
        assert opened.change == "opened"
        assert opened.details == SHOWN
        # A console that logs in afterwards draws the record pane from the snapshot alone.
        second = InboxClient(h.agent_url)
        await second.connect()
        logged_in = await second.login("bob", DEMO_PASSWORD)
        assert logged_in.snapshot.details[number] == SHOWN
        await second.close()
        await bob.close()


async def test_an_incident_raised_from_an_item_is_drafted_from_it_and_is_its_raisers(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        bob, number, offer = await incident_offered_to_bob(h)
        await bob.accept(offer.view.offer.id)
        draft = await bob.request(GetPrefill(interaction=number, kind="incident"), Prefill)
        # The item's own summary, not "Follow-up of ...": no customer has written yet.
        assert draft.short_description == "Card payments failing"
        assert "Severity: 2\nCategory: payments" in draft.description
        raised = CreateRecord(
            interaction=number,
            kind=RecordKind.INCIDENT,
            short_description=draft.short_description,
            description=draft.description,
        )
        created = await bob.request(raised, RecordCreated)
        assert created.record.assignee == "bob"
        mine = await bob.request(ListRecords(scope="mine"), RecordList)
        assert [r.number for r in mine.records] == [created.record.number]
        await bob.close()


async def test_rest_readers_get_the_details_of_an_interaction_open_and_closed(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        bob, number, offer = await incident_offered_to_bob(h)
        token, _ = await h.host.auth.create_api_token("reader", None, Role.SUPERVISOR, None)
        shown = [{"label": d.label, "value": d.value} for d in SHOWN]
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            url = f"{h.url}/api/v1/interactions/{number}"
            async with http.get(url) as r:
                assert r.status == 200 and (await r.json())["details"] == shown
            await bob.accept(offer.view.offer.id)
            await bob.end_chat(number)
            await bob.request(CloseRecord(interaction=number))
            # Closed: the item has left routing's memory; the store still has it.
            assert number not in h.host.inbox.conversations.open
            async with http.get(url) as r:
                view = await r.json()
                assert view["interaction"]["state"] == "closed_complete"
                assert view["details"] == shown
        await bob.close()


async def test_a_channel_that_lists_no_details_shows_every_attribute_description_first(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        bob = await h.agent("bob")
        case = {
            "channel": "case",
            "customer": {"id": "crm-7"},
            "short_description": "Refund   not\nreceived",
            "attributes": {"order_id": "A-1", "vip": True, "amount": 12.5},
        }
        await create(h, case)
        offer = await bob.next_event(OfferEvent)
        assert offer.view.details == [
            Detail(label="Short description", value="Refund not received"),
            Detail(label="Amount", value="12.5"),
            Detail(label="Order id", value="A-1"),
            Detail(label="Vip", value="yes"),
        ]
        await bob.close()


async def test_the_console_shows_the_details_on_the_offer_card_and_in_the_record_pane(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        app = console(h, user="bob")
        async with app.run_test(size=(160, 50)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            await pilot.press("f5")
            await until(pilot, lambda: app.state.me and app.state.me.presence == "Available")
            number = await create(h, INCIDENT)
            await until(pilot, lambda: app.state.offers)
            # The offer column is narrow: a line may wrap anywhere.
            card = " ".join(text_of(app.screen.query_one(OfferList)).split())
            assert "Card payments failing" in card
            assert "Severity: 2 · Category: payments" in card
            assert "X-99" not in card  # not one of the channel's details
            await pilot.press("a")
            await until(pilot, lambda: number in app.state.chats)
            details = app.screen.query_one(RecordPane).query_one("#record-details")

            def rows() -> list[str]:
                return [" ".join(line.split()) for line in text_of(details).splitlines()]

            # The pane redraws on the next refresh after the chat opens.
            await until(pilot, lambda: "Summary Card payments failing" in rows())
            assert {"Severity 2", "Category payments"} <= set(rows()), rows()


@pytest.mark.parametrize(
    ("details", "error"),
    [
        ('[{ attribute = "9lives" }]', "must be a key like"),
        ('[{ attribute = "severity" }, { attribute = "severity" }]', "listed twice"),
        ("[" + ", ".join(f'{{ attribute = "a{i}" }}' for i in range(21)) + "]", "at most 20"),
        ('[{ attribute = "severity", lable = "S" }]', "lable"),
    ],
)
def test_bad_channel_details_are_refused_with_the_line(details: str, error: str) -> None:
    text = demo_config_text().replace(
        'name = "case"\nmode = "record"\n', f'name = "case"\nmode = "record"\ndetails = {details}\n'
    )
    with pytest.raises(Exception, match=error) as e:
        parse_config(text, name="inbox.toml")
    assert "inbox.toml:" in str(e.value)
