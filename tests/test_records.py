"""Cases and incidents worked after they are raised, over a real host: viewed, listed, changed,
noted and linked over the agent socket and the REST API; who may do what; and the change
arriving live at another console."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.client import ClientError, InboxClient
from core.config import parse_config
from core.model import Role
from core.protocol import (
    AddRecordNote,
    ClientFrame,
    CreateRecord,
    GetRecord,
    LinkRecord,
    ListRecords,
    RecordCreated,
    RecordEvent,
    RecordList,
    RecordView,
    UpdateRecord,
)
from tests.hosting import RunningHost, fast_config_text, running_host
from tests.test_agent_commands import accepted_chat, drain


async def raised(h: RunningHost, agent: InboxClient, customer: str, kind: str = "incident") -> str:
    number = await accepted_chat(h, agent, customer)
    created = await agent.request(
        CreateRecord(interaction=number, kind=kind, short_description=f"Printer of {customer}"),
        RecordCreated,
    )
    return str(created.record.number)


async def refused(client: InboxClient, frame: ClientFrame) -> str:
    with pytest.raises(ClientError) as e:
        await client.request(frame)
    return e.value.code


async def numbers(client: InboxClient, **filters: Any) -> list[str]:
    found = await client.request(ListRecords(**filters), RecordList)
    return [r.number for r in found.records]


async def test_a_record_is_viewed_changed_noted_and_linked_by_who_may_and_nobody_else(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")  # group tier1
        bob = await h.agent("bob", presence="Away")  # tier1 and tier2
        chloe = await h.agent("chloe", presence="Away")  # tier1 and french
        dan = await h.agent("dan", presence="Away")  # supervisor
        inc = await raised(h, alice, "cust-a")
        source = (await alice.request(GetRecord(number=inc), RecordView)).interactions
        view = await alice.request(GetRecord(number=inc), RecordView)
        assert (view.record.state, view.record.created_by, view.notes) == ("new", "alice", [])

        # Not assigned to them, not theirs, no conversation of theirs: as if it did not exist.
        for frame in (
            GetRecord(number=inc),
            UpdateRecord(number=inc, state="closed"),
            AddRecordNote(number=inc, body="sneaky"),
            GetRecord(number="INC0009999"),
        ):
            assert await refused(bob, frame) == "not_found"
        assert await numbers(bob, scope="all") == []

        assert await refused(alice, UpdateRecord(number=inc, state="bogus")) == "bad_state"
        assert await refused(alice, UpdateRecord(number=inc, assignee="nobody")) == "unknown_agent"
        assert (
            await refused(alice, UpdateRecord(number=inc, assignment_group="nope"))
            == "unknown_group"
        )
        assert await refused(alice, UpdateRecord(number=inc)) == "invalid_request"

        # Assigned to tier2: bob may now read it and hears of it at once; chloe does not.
        drain(bob)
        drain(chloe)
        changed = await alice.request(
            UpdateRecord(number=inc, state="in_progress", assignment_group="tier2", priority=1),
            RecordView,
        )
        assert (changed.record.state, changed.record.assignment_group) == ("in_progress", "tier2")
        assert changed.record.updated_by == "alice" and changed.record.version == 1
        event = await bob.next_event(RecordEvent)
        assert event.record == changed.record and event.note is None
        assert chloe.events.empty()
        assert await numbers(bob, scope="groups") == [inc]
        assert await numbers(chloe, scope="groups") == []

        drain(alice)
        noted = await bob.request(AddRecordNote(number=inc, body="Toner replaced"), RecordView)
        assert [(n.author, n.body) for n in noted.notes] == [("bob", "Toner replaced")]
        heard = await alice.next_event(RecordEvent)
        assert heard.note is not None and heard.note.body == "Toner replaced"

        # Taken to bob: he lists it as his, and alice (its creator) still reads it.
        await bob.request(UpdateRecord(number=inc, assignee="bob"), RecordView)
        assert await numbers(bob) == [inc]
        assert await numbers(alice) == []
        assert await numbers(alice, scope="all") == [inc]
        await bob.request(UpdateRecord(number=inc, assignee=""), RecordView)  # "" unassigns
        assert await numbers(bob) == []

        # A supervisor reads everything, with filters, newest first.
        case = await raised(h, alice, "cust-b", kind="case")
        assert await numbers(dan, scope="all") == [case, inc]
        assert await numbers(dan, scope="all", kind="incident") == [inc]
        assert await numbers(dan, scope="all", state="in_progress") == [inc]
        assert await numbers(dan, scope="all", group="tier2") == [inc]
        assert await numbers(dan, scope="all", text="CUST-B") == [case]
        assert await numbers(dan, scope="all", limit=1, offset=1) == [inc]

        # Another conversation linked later: its participants read the record too.
        other = await accepted_chat(h, alice, "cust-c")
        linked = await alice.request(LinkRecord(number=inc, interaction=other), RecordView)
        assert linked.interactions == [*source, other]
        assert await refused(bob, LinkRecord(number=case, interaction=other)) == "not_found"


async def test_a_kinds_states_come_from_the_config_and_a_new_record_takes_the_first(
    tmp_path: Path,
) -> None:
    text = fast_config_text() + '\n[records.incident]\nstates = ["open", "triage", "done"]\n'
    async with running_host(tmp_path, parse_config(text, name="records.toml")) as h:
        alice = await h.agent("alice")
        inc = await raised(h, alice, "cust-a")
        assert (await alice.request(GetRecord(number=inc), RecordView)).record.state == "open"
        assert await refused(alice, UpdateRecord(number=inc, state="resolved")) == "bad_state"
        view = await alice.request(UpdateRecord(number=inc, state="triage"), RecordView)
        assert view.record.state == "triage"
        case = await raised(h, alice, "cust-b", kind="case")
        assert (await alice.request(GetRecord(number=case), RecordView)).record.state == "new"


async def api(
    session: aiohttp.ClientSession,
    h: RunningHost,
    method: str,
    path: str,
    token: str,
    body: Any = None,
) -> tuple[int, Any]:
    async with session.request(
        method,
        f"{h.url}/api/v1{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        return response.status, await response.json()


async def test_records_over_rest_read_change_list_and_note_by_the_tokens_agent_or_role(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h, aiohttp.ClientSession() as http:
        alice = await h.agent("alice")
        bob = await h.agent("bob", presence="Away")
        inc = await raised(h, alice, "cust-a")
        auth = h.host.auth
        alices, _ = await auth.create_api_token("alice-script", "alice", Role.AGENT, None)
        bobs, _ = await auth.create_api_token("bob-script", "bob", Role.AGENT, None)
        crm, crm_token = await auth.create_api_token("crm", None, Role.SUPERVISOR, None)
        bot, _ = await auth.create_api_token("bot", None, Role.AGENT, None)

        status, body = await api(http, h, "GET", f"/records/{inc}", alices)
        assert status == 200 and body["record"]["number"] == inc and body["notes"] == []
        for method, path, payload in (
            ("GET", f"/records/{inc}", None),
            ("PATCH", f"/records/{inc}", {"state": "closed"}),
            ("POST", f"/records/{inc}/notes", {"body": "sneaky"}),
            ("GET", "/records/INC0009999", None),
        ):
            status, body = await api(http, h, method, path, bobs, payload)
            assert (status, body["error"]["code"]) == (404, "not_found"), (method, path)
        status, body = await api(http, h, "GET", f"/records/{inc}", bot)
        assert (status, body["error"]["code"]) == (403, "forbidden")

        status, body = await api(http, h, "PATCH", f"/records/{inc}", alices, {"state": "nope"})
        assert (status, body["error"]["code"]) == (422, "bad_state")
        status, body = await api(http, h, "PATCH", f"/records/{inc}", alices, {"priority": 9})
        assert (status, body["error"]["field"]) == (400, "$.priority")
        status, body = await api(http, h, "PATCH", f"/records/{inc}", alices, {"colour": "red"})
        assert status == 400 and body["error"]["code"] == "invalid_request"
        long = {"short_description": "x" * 201}
        status, body = await api(http, h, "PATCH", f"/records/{inc}", alices, long)
        assert (status, body["error"]["field"]) == (400, "$.short_description")
        status, body = await api(
            http, h, "POST", f"/records/{inc}/notes", alices, {"body": "x" * 16_001}
        )
        assert (status, body["error"]["field"]) == (400, "$.body")
        huge = {"body": "x" * 70_000}
        status, body = await api(http, h, "POST", f"/records/{inc}/notes", alices, huge)
        assert (status, body["error"]["code"]) == (413, "too_large")

        # A change over REST reaches the consoles that may read the record.
        drain(bob)
        status, body = await api(
            http, h, "PATCH", f"/records/{inc}", crm, {"state": "on_hold", "assignee": "bob"}
        )
        assert status == 200 and body["record"]["state"] == "on_hold"
        assert body["record"]["updated_by"] == crm_token.id
        event = await bob.next_event(RecordEvent)
        assert (event.record.state, event.record.assignee) == ("on_hold", "bob")

        status, body = await api(http, h, "POST", f"/records/{inc}/notes", bobs, {"body": "On it"})
        assert status == 201 and [n["author"] for n in body["notes"]] == ["bob"]

        status, body = await api(http, h, "GET", "/records", bobs)
        assert [r["number"] for r in body["records"]] == [inc] and body["next_offset"] is None
        status, body = await api(http, h, "GET", "/records?scope=all&q=PRINTER&limit=1", crm)
        assert [r["number"] for r in body["records"]] == [inc] and body["next_offset"] == 1
        status, body = await api(http, h, "GET", "/records?scope=all&state=closed", crm)
        assert body["records"] == []
        status, body = await api(http, h, "GET", "/records?scope=everyone", crm)
        assert (status, body["error"]["code"]) == (400, "invalid_request")


async def test_an_interaction_is_linked_to_a_record_over_rest_by_who_may_read_both(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h, aiohttp.ClientSession() as http:
        alice = await h.agent("alice")
        inc = await raised(h, alice, "cust-a")
        other = await accepted_chat(h, alice, "cust-b")
        auth = h.host.auth
        alices, _ = await auth.create_api_token("alice-script", "alice", Role.AGENT, None)
        bobs, _ = await auth.create_api_token("bob-script", "bob", Role.AGENT, None)

        status, body = await api(
            http, h, "POST", f"/records/{inc}/links", alices, {"interaction": other}
        )
        assert status == 201 and body["interactions"][-1] == other
        view = await alice.request(GetRecord(number=inc), RecordView)
        assert view.interactions[-1] == other

        # bob may read neither the record nor the interaction: 404 alike, nothing linked.
        for path, payload in (
            (f"/records/{inc}/links", {"interaction": other}),
            ("/records/INC0009999/links", {"interaction": other}),
        ):
            status, body = await api(http, h, "POST", path, bobs, payload)
            assert (status, body["error"]["code"]) == (404, "not_found"), path
        status, body = await api(
            http, h, "POST", f"/records/{inc}/links", alices, {"interaction": "IMS0009999"}
        )
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body = await api(http, h, "POST", f"/records/{inc}/links", alices, {"number": 1})
        assert (status, body["error"]["code"]) == (400, "invalid_request")
        status, body = await api(
            http, h, "POST", f"/records/{inc}/links", alices, {"interaction": "x" * 100}
        )
        assert (status, body["error"]["field"]) == (400, "$.interaction")
        assert (await alice.request(GetRecord(number=inc), RecordView)).interactions[-1] == other
