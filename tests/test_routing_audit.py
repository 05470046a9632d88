"""Why did this go to that agent, and the weight and preferred agent an intake gives an item,
against a real host: REST, the agent protocol over a real socket, `inbox-tui admin audit` in a
subprocess (through a running host and on its stopped data), and the console under Pilot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from msgspec.structs import replace

from bench.host_process import start_host, stop_host
from core.client import ClientError
from core.config import ConfigError, parse_config
from core.demo import demo_config_text
from core.model import Role
from core.protocol import AuditTrail, GetAudit, OfferEvent
from screens.audit import AuditScreen
from tests.hosting import running_host
from tests.test_admin_live import admin, ok
from tests.test_api import Api, example_config, offers, serving
from tests.test_console_pilot import available, console, main, until
from tui.widgets.offer_list import OfferList

CASE: dict[str, Any] = {
    "channel": "case",
    "customer": {"id": "crm-acme", "name": "Acme Ltd"},
    "short_description": "Invoice total is wrong",
}


async def audit_of(s: Api, ref: str, token: str) -> tuple[int, Any]:
    status, body, _ = await s.call("GET", f"/api/v1/items/{ref}/audit", token)
    return status, body


# ---------------------------------------------------------------------------- REST intake


async def test_rest_item_goes_to_its_preferred_agent_with_its_weight_and_the_audit_says_why(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as s:
        integration = await s.token(None, Role.SUPERVISOR)
        alice = await s.available("alice")  # first in round robin: the rule alone picks her
        bob = await s.available("bob")
        item = {**CASE, "weight": 2, "preferred_agent": "bob"}
        status, created, _ = await s.call("POST", "/api/v1/items", integration, json=item)
        assert status == 201 and created["state"] == "offered", created
        [offer] = offers(bob)
        assert offer.view.item.weight == 2 and offer.view.item.preferred_agent == "bob"
        assert offers(alice) == []

        status, audit = await audit_of(s, created["item"], integration)
        assert status == 200, audit
        assert audit["item"] == created["item"]
        assert audit["interaction"] == created["interaction"]
        queued, offered = audit["entries"]
        assert queued["kind"] == "item_queued"
        assert "weight 2" in queued["reason"] and "preferred agent bob" in queued["reason"]
        assert offered["kind"] == "offer_made" and offered["agent"] == "bob"
        assert offered["reason"].startswith("offered to bob: preferred agent; weight 2")
        # The interaction's number names the same item.
        assert await audit_of(s, created["interaction"], integration) == (200, audit)


async def test_a_preferred_agent_who_cannot_take_it_is_passed_over_and_the_audit_says_why(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as s:
        integration = await s.token(None, Role.SUPERVISOR)
        alice = await s.available("alice")  # bob is not online
        item = {**CASE, "preferred_agent": "bob"}
        status, created, _ = await s.call("POST", "/api/v1/items", integration, json=item)
        assert status == 201, created
        assert len(offers(alice)) == 1
        _, audit = await audit_of(s, created["item"], integration)
        offered = audit["entries"][-1]
        assert offered["agent"] == "alice"
        assert "preferred bob" in offered["reason"], offered


async def test_a_weight_out_of_range_or_an_unknown_preferred_agent_is_422_and_stores_nothing(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as s:
        integration = await s.token(None, Role.SUPERVISOR)
        for extra, code, words in (
            ({"weight": 0}, "bad_weight", "from 1 to 1000"),
            ({"weight": 1001}, "bad_weight", "got 1001"),
            ({"preferred_agent": "nobody"}, "unknown_agent", "'nobody'"),
        ):
            status, body, _ = await s.call(
                "POST", "/api/v1/items", integration, json={**CASE, **extra}
            )
            assert status == 422, body
            assert body["error"]["code"] == code and words in body["error"]["message"], body
        assert await s.host.inbox.store.list_interactions() == []


async def test_a_channel_weight_in_the_config_is_the_default_an_item_may_override(
    tmp_path: Path,
) -> None:
    text = demo_config_text().replace('label = "Cases"\n', 'label = "Cases"\nweight = 3\n', 1)
    heavy_cases = replace(parse_config(text), seed_passwords=example_config().seed_passwords)
    async with serving(tmp_path, heavy_cases) as s:
        integration = await s.token(None, Role.SUPERVISOR)
        for extra, weight in (({}, 3), ({"weight": 1}, 1)):
            status, created, _ = await s.call(
                "POST", "/api/v1/items", integration, json={**CASE, **extra}
            )
            assert status == 201, created
            item = await s.host.inbox.work_item(created["item"])
            assert item is not None and item.weight == weight


def test_a_channel_weight_out_of_range_is_a_config_error_at_its_line() -> None:
    text = demo_config_text().replace('label = "Cases"\n', 'label = "Cases"\nweight = 0\n', 1)
    line = text[: text.index("weight = 0")].count("\n") + 1
    with pytest.raises(ConfigError) as e:
        parse_config(text, name="inbox.toml")
    assert str(e.value).startswith(f"inbox.toml:{line}: ")
    assert "weight must be from 1 to 1000" in str(e.value)


# ---------------------------------------------------------------------------- who reads what


async def test_rest_audit_is_for_supervisors_and_the_agents_it_was_offered_to(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as s:
        integration = await s.token(None, Role.SUPERVISOR)
        await s.available("alice")
        status, created, _ = await s.call("POST", "/api/v1/items", integration, json=CASE)
        assert status == 201, created
        ref = created["item"]
        alice = await s.token("alice", Role.AGENT)
        chloe = await s.token("chloe", Role.AGENT)
        dan = await s.token("dan", Role.SUPERVISOR)
        agent_integration = await s.token(None, Role.AGENT)
        assert (await audit_of(s, ref, alice))[0] == 200
        assert (await audit_of(s, created["interaction"], alice))[0] == 200
        assert (await audit_of(s, ref, dan))[0] == 200
        # Not hers: 404, as for an item that does not exist.
        for token, ref_asked in ((chloe, ref), (dan, "Wnothing"), (dan, "W" * 65)):
            status, body = await audit_of(s, ref_asked, token)
            assert status == 404 and body["error"]["code"] == "not_found", body
        status, body = await audit_of(s, ref, agent_integration)
        assert status == 403 and body["error"]["code"] == "forbidden"
        status, _, _ = await s.call("GET", f"/api/v1/items/{ref}/audit")
        assert status == 401


async def test_get_audit_over_the_agent_protocol_follows_the_item_and_who_may_read_it(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        chloe = await h.agent("chloe", presence="Away")
        dan = await h.agent("dan", presence="Away")  # supervisor
        record = await h.host.inbox.start_conversation(channel="chat", customer="web-ana")
        offer = await alice.next_event(OfferEvent)
        await alice.accept(offer.view.offer.id)
        item = offer.view.item.id

        async def kinds() -> list[str]:
            trail = await alice.request(GetAudit(item=item), AuditTrail)
            return [e.kind for e in trail.entries]

        async with asyncio.timeout(5):
            while "item_assigned" not in await kinds():
                await asyncio.sleep(0.02)
        assert await kinds() == ["item_queued", "offer_made", "offer_accepted", "item_assigned"]
        trail = await dan.request(GetAudit(item=record.number), AuditTrail)
        assert trail.item == item and trail.interaction == record.number
        assert trail.entries[1].reason.startswith("offered to alice: ")
        for ref in (item, record.number, "Wnothing"):
            with pytest.raises(ClientError) as refused:
                await chloe.request(GetAudit(item=ref), AuditTrail)
            assert refused.value.code == "not_found"


# ---------------------------------------------------------------------------- admin command


async def test_admin_audit_reads_through_a_running_host_and_on_its_stopped_data(
    tmp_path: Path,
) -> None:
    host = await asyncio.to_thread(start_host, tmp_path)
    try:
        token = ok(await asyncio.to_thread(admin, host, "token", "create", "crm")).strip()
        async with (
            asyncio.timeout(30),
            aiohttp.ClientSession() as http,
            http.post(
                f"{host.base_url}/api/v1/items",
                json={**CASE, "weight": 2, "preferred_agent": "bob"},
                headers={"Authorization": f"Bearer {token}"},
            ) as reply,
        ):
            assert reply.status == 201, await reply.text()
            created = await reply.json()
        live = ok(await asyncio.to_thread(admin, host, "audit", created["item"]))
    finally:
        stop_host(host)
    stopped = ok(admin(tmp_path, "audit", created["interaction"]))
    for out in (live, stopped):
        head, columns, queued = out.splitlines()
        assert head == (
            f"work item {created['item']} ({created['interaction']}): 1 routing decision"
        )
        assert columns.split() == ["TIME", "DECISION", "AGENT", "REASON"]
        assert "item_queued" in queued and "weight 2; preferred agent bob" in queued
    missing = admin(tmp_path, "audit", "Wnothing")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "inbox-tui: no work item or interaction 'Wnothing'"


# ---------------------------------------------------------------------------- console


async def test_shift_r_shows_the_routing_history_of_an_offer_and_of_a_chat(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=(80, 24)) as pilot:
            await available(app, pilot)
            await h.host.inbox.start_conversation(
                channel="chat", customer="web-ana", customer_name="Ana"
            )
            await until(pilot, lambda: app.state.offers)
            offers = main(app).query_one(OfferList)
            offers.focus()
            await until(pilot, lambda: app.focused is offers)
            await pilot.press("R")
            await until(pilot, lambda: isinstance(app.screen, AuditScreen))
            await until(pilot, lambda: "offered to alice" in audit_text(app))
            assert "queued in general" in audit_text(app)
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, AuditScreen))

            await pilot.press("a")
            await until(pilot, lambda: main(app).current is not None)
            main(app).query_one("#chat-list").focus()
            await pilot.press("R")
            await until(pilot, lambda: isinstance(app.screen, AuditScreen))
            await until(pilot, lambda: "accepted by alice" in audit_text(app))
            await pilot.press("q")
            await until(pilot, lambda: not isinstance(app.screen, AuditScreen))


def audit_text(app: Any) -> str:
    """What the routing history screen shows, line by line."""
    entries = app.screen.query_one("#audit-entries")
    return "\n".join(entries.render_line(y).text for y in range(entries.size.height))
