"""The REST API against a real host on a loopback port: routing, idempotent customer
messages, who may read what, every error class, queue statistics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from msgspec.structs import replace
from openapi_spec_validator import validate

from core.config import HostConfig
from core.demo import DEMO_PASSWORD, demo_config
from core.host import api, metrics
from core.host.api import CreateItem, fingerprint
from core.host.app import close_host, create_app, open_host, serve_loopback
from core.host.ratelimit import TokenBuckets
from core.host.state import Host
from core.model import Role
from core.protocol import AcceptOffer, AddWorkNote, OfferEvent, SetPresence
from core.service.sessions import AgentSession
from store.base import IdempotencyKey, StoreFenced, StoreUnavailable


@dataclass
class Api:
    host: Host
    app: web.Application
    url: str
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> tuple[int, Any, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(
            method, self.url + path, headers=headers, **kwargs
        ) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, body, response.headers

    async def token(self, agent: str | None, role: Role) -> str:
        secret, _ = await self.host.auth.create_api_token(f"test-{agent}", agent, role, None)
        return secret

    async def available(self, agent: str) -> AgentSession:
        session = self.host.inbox.open_session(
            agent, Role.AGENT, f"digest-{agent}", time.time() + 3600
        )
        await self.host.inbox.handle(session, SetPresence(presence="Available"))
        return session


def example_config() -> HostConfig:
    # Only dan logs in with a password here; each seeded password is a deliberately slow hash.
    return replace(demo_config(), seed_passwords={"dan": DEMO_PASSWORD})


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, config: HostConfig | None = None) -> AsyncIterator[Api]:
    host = await open_host(config or example_config(), tmp_path / "data")
    app = create_app(host)
    runner, url = await serve_loopback(app)
    try:
        async with aiohttp.ClientSession() as http:
            yield Api(host=host, app=app, url=url, http=http)
    finally:
        await runner.cleanup()
        await close_host(host)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(tmp_path) as s:
        yield s


def offers(session: AgentSession) -> list[OfferEvent]:
    return [e for e in session.buffer if isinstance(e, OfferEvent)]


INCIDENT = {
    "channel": "incident",
    "customer": {"id": "crm-acme", "name": "Acme Ltd", "contact": "ops@acme.example"},
    "attributes": {"system": "payments", "severity": 2},
    "priority": 7,
    "short_description": "Card payments failing",
}


# ---------------------------------------------------------------------------- routing


async def test_rest_incident_is_routed_to_incidents_and_offered_to_tier2(server: Api) -> None:
    integration = await server.token(None, Role.SUPERVISOR)
    alice = await server.available("alice")  # tier1, no incident capacity: not eligible
    bob = await server.available("bob")  # tier2 with incident capacity
    status, body, headers = await server.call("POST", "/api/v1/items", integration, json=INCIDENT)
    assert status == 201, body
    assert body["queue"] == "incidents" and body["state"] == "offered"
    assert headers["Location"] == f"/api/v1/interactions/{body['interaction']}"
    [offer] = offers(bob)
    assert offer.view.interaction == body["interaction"]
    assert offer.view.item.queue == "incidents" and offer.view.item.priority == 7
    assert offer.view.item.attributes["short_description"] == "Card payments failing"
    assert offer.view.item.attributes["severity"] == 2
    assert offer.view.customer_name == "Acme Ltd"
    assert offers(alice) == []
    record = await server.host.inbox.store.get_interaction(body["interaction"])
    assert record is not None and record.customer == "crm-acme"
    assert record.customer_contact == "ops@acme.example"


async def test_messaging_conversation_and_idempotent_customer_messages(server: Api) -> None:
    integration = await server.token(None, Role.SUPERVISOR)
    item = {"channel": "messaging", "customer": {"id": "wa-33612345678", "name": "Inès"}}
    status, created, _ = await server.call("POST", "/api/v1/items", integration, json=item)
    assert status == 201 and created["queue"] == "messaging" and created["state"] == "queued"
    path = f"/api/v1/interactions/{created['interaction']}/messages"
    first = {"customer_id": "wa-33612345678", "body": "Bonjour", "client_msg_id": "wamid.1"}
    status, posted, _ = await server.call("POST", path, integration, json=first)
    assert status == 201 and posted["duplicate"] is False
    assert posted["message"]["seq"] == 1 and posted["message"]["sender_kind"] == "customer"
    # The webhook retries with the same id (and even a different body): nothing new is stored.
    retry = {**first, "body": "Bonjour (retry)"}
    status, again, _ = await server.call("POST", path, integration, json=retry)
    assert status == 200 and again["duplicate"] is True
    assert again["message"] == posted["message"]
    second = {**first, "body": "Are you there?", "client_msg_id": "wamid.2"}
    status, posted2, _ = await server.call("POST", path, integration, json=second)
    assert status == 201 and posted2["message"]["seq"] == 2
    status, view, _ = await server.call(
        "GET", f"/api/v1/interactions/{created['interaction']}", integration
    )
    assert status == 200
    assert [m["body"] for m in view["messages"]] == ["Bonjour", "Are you there?"]
    # Someone else's customer id gets nothing, and no hint the conversation exists.
    status, error, _ = await server.call(
        "POST", path, integration, json={**first, "customer_id": "wa-other"}
    )
    assert status == 404 and error["error"]["code"] == "not_found"
    # An agent's own tokens cannot speak for customers.
    bob = await server.token("bob", Role.AGENT)
    status, error, _ = await server.call("POST", path, bob, json=second)
    assert status == 403 and error["error"]["code"] == "forbidden"
    dan = await server.host.auth.login("dan", DEMO_PASSWORD, "127.0.0.1")
    status, error, _ = await server.call("POST", "/api/v1/items", dan.token, json=item)
    assert status == 403


# ---------------------------------------------------------------------------- reading


async def test_who_may_read_an_interaction(server: Api) -> None:
    inbox = server.host.inbox
    integration = await server.token(None, Role.SUPERVISOR)
    bob = await server.available("bob")
    _, created, _ = await server.call("POST", "/api/v1/items", integration, json=INCIDENT)
    number = created["interaction"]
    await inbox.handle(bob, AcceptOffer(offer=offers(bob)[0].view.offer.id))
    await inbox.handle(
        bob, AddWorkNote(interaction=number, body="Rolled back deploy", client_msg_id="n1")
    )
    path = f"/api/v1/interactions/{number}"

    # A participant agent: the record, the transcript and the work notes.
    status, view, _ = await server.call("GET", path, await server.token("bob", Role.AGENT))
    assert status == 200
    assert view["interaction"]["number"] == number
    assert [p["agent"] for p in view["interaction"]["participants"]] == ["bob"]
    assert "work_note" in {m["kind"] for m in view["messages"]}
    assert view["attachments"] == [] and view["next_after_seq"] is None

    # Another agent: 404, exactly as for a number that does not exist.
    alice = await server.token("alice", Role.AGENT)
    status, error, _ = await server.call("GET", path, alice)
    assert status == 404 and error["error"]["code"] == "not_found"
    status, missing, _ = await server.call("GET", "/api/v1/interactions/IMS9999999", alice)
    assert (status, missing["error"]["code"]) == (404, "not_found")

    # A supervisor's console session: everything, work notes included.
    dan = await server.host.auth.login("dan", DEMO_PASSWORD, "127.0.0.1")
    status, view, _ = await server.call("GET", path, dan.token)
    assert status == 200 and "work_note" in {m["kind"] for m in view["messages"]}

    # A supervisor integration reads the transcript but never the internal notes.
    status, view, _ = await server.call("GET", path, integration)
    assert status == 200 and view["messages"]
    assert {m["kind"] for m in view["messages"]} == {"message"}

    # An integration with the agent role reads nothing.
    feeder = await server.token(None, Role.AGENT)
    status, error, _ = await server.call("GET", path, feeder)
    assert status == 403 and error["error"]["code"] == "forbidden"

    # Paging: one message per page, and the cursor of the next one.
    status, page, _ = await server.call("GET", path + "?limit=1", dan.token)
    assert status == 200 and len(page["messages"]) == 1 and page["next_after_seq"] == 1
    status, error, _ = await server.call("GET", path + "?limit=0", dan.token)
    assert status == 400 and error["error"]["field"] == "$.limit"


# ---------------------------------------------------------------------------- errors


async def test_unauthenticated(server: Api) -> None:
    for headers in ({}, {"Authorization": "Basic YTpi"}, {"Authorization": "Bearer api_nope"}):
        status, error, resp_headers = await server.call("GET", "/api/v1/queues", headers=headers)
        assert status == 401 and error["error"]["code"] == "unauthenticated"
        assert resp_headers["WWW-Authenticate"].startswith("Bearer")
    token = await server.token(None, Role.SUPERVISOR)
    await server.host.auth.revoke(token)
    status, error, _ = await server.call("GET", "/api/v1/queues", token)
    assert status == 401


async def test_bad_bodies_name_the_field(server: Api) -> None:
    token = await server.token(None, Role.SUPERVISOR)

    async def post(body: Any) -> tuple[int, dict[str, Any]]:
        status, error, _ = await server.call("POST", "/api/v1/items", token, json=body)
        return status, error["error"]

    status, error = await post({**INCIDENT, "priority": 11})
    assert (status, error["code"], error["field"]) == (400, "invalid_request", "$.priority")
    assert "<= 10" in error["message"]
    status, error = await post({**INCIDENT, "customer": {"name": "no id"}})
    assert (status, error["field"]) == (400, "$.customer")
    assert "`id`" in error["message"]
    status, error = await post({**INCIDENT, "customer": {"id": "has space"}})
    assert (status, error["field"]) == (400, "$.customer.id")
    status, error = await post({**INCIDENT, "colour": "red"})
    assert status == 400 and "colour" in error["message"]
    status, error = await post({**INCIDENT, "attributes": {"short_description": "x"}})
    assert (status, error["field"]) == (400, "$.short_description")
    too_many = {f"a{i}": i for i in range(64)}
    status, error = await post({**INCIDENT, "attributes": too_many})
    assert (status, error["field"]) == (400, "$.attributes")
    # Cut short, and a string that is not UTF-8 (a 500 until the fuzz test found it).
    for data in (b'{"channel": ', b'{"channel": "\x80"}'):
        status, error, _ = await server.call(
            "POST",
            "/api/v1/items",
            token,
            data=data,
            headers={"Content-Type": "application/json"},
        )
        assert status == 400 and error["error"]["code"] == "invalid_json", data
    status, error, _ = await server.call(
        "POST", "/api/v1/interactions/IMS0001001/messages", token, json={"body": ""}
    )
    assert status == 400 and error["error"]["code"] == "invalid_request"


async def test_not_found_and_method_not_allowed_are_json(server: Api) -> None:
    token = await server.token(None, Role.SUPERVISOR)
    for path in ("/api/v1/nope", "/api/v1", "/api/v1/interactions/IMS1/messages/x"):
        status, error, _ = await server.call("GET", path, token)
        assert status == 404 and error["error"]["code"] == "not_found", path
    status, error, headers = await server.call("DELETE", "/api/v1/queues", token)
    assert status == 405 and error["error"]["code"] == "method_not_allowed"
    assert "GET" in headers["Allow"]
    message = {"customer_id": "c", "body": "hi", "client_msg_id": "1"}
    status, error, _ = await server.call(
        "POST", "/api/v1/interactions/IMS9999999/messages", token, json=message
    )
    assert status == 404 and error["error"]["code"] == "not_found"
    # Outside /api/v1 the host's own answers are left alone.
    async with server.http.get(server.url + "/not-an-api") as response:
        assert response.status == 404 and response.content_type != "application/json"


async def test_body_too_large_and_not_json(server: Api) -> None:
    token = await server.token(None, Role.SUPERVISOR)
    big = {**INCIDENT, "attributes": {"blob": "x" * api.MAX_BODY_BYTES}}
    status, error, _ = await server.call("POST", "/api/v1/items", token, json=big)
    assert status == 413 and error["error"]["code"] == "too_large"

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"channel": "case", "attributes": {"blob": "'
        for _ in range(10):
            yield b"y" * 8192
        yield b'"}}'

    # No Content-Length: the limit holds while reading.
    status, error, _ = await server.call(
        "POST",
        "/api/v1/items",
        token,
        data=chunked(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 413 and error["error"]["code"] == "too_large"
    status, error, _ = await server.call("POST", "/api/v1/items", token, data="channel=case")
    assert status == 415 and error["error"]["code"] == "unsupported_media_type"
    assert len(server.host.inbox.routing.router.items) == 0


async def test_unknown_channel_is_unprocessable(server: Api) -> None:
    token = await server.token(None, Role.SUPERVISOR)
    status, error, _ = await server.call(
        "POST", "/api/v1/items", token, json={**INCIDENT, "channel": "fax"}
    )
    assert status == 422 and error["error"]["code"] == "unknown_channel"


async def test_unroutable_item_is_unprocessable(tmp_path: Path) -> None:
    # Without its catch-all queue, a chat that matches no condition has nowhere to go.
    config = example_config()
    queues = [
        replace(q, condition='language == "en"') if q.name == "general" else q
        for q in config.queues
    ]
    async with serving(tmp_path, replace(config, queues=queues)) as server:
        token = await server.token(None, Role.SUPERVISOR)
        chat = {"channel": "chat", "customer": {"id": "web-1"}, "attributes": {"language": "de"}}
        status, error, _ = await server.call("POST", "/api/v1/items", token, json=chat)
        assert status == 422 and error["error"]["code"] == "unroutable"
        assert "no queue" in error["error"]["message"]
        assert len(server.host.inbox.routing.router.items) == 0


async def test_rate_limited_per_token_with_retry_after(server: Api) -> None:
    limits = server.app[api.LIMITS]
    limits.clock = lambda: 1000.0  # frozen: nothing refills during the test
    limits.per_token = TokenBuckets(rate=1.0, burst=2)
    greedy = await server.token(None, Role.SUPERVISOR)
    other = await server.token(None, Role.SUPERVISOR)
    assert (await server.call("GET", "/api/v1/queues", greedy))[0] == 200
    assert (await server.call("GET", "/api/v1/queues", greedy))[0] == 200
    status, error, headers = await server.call("GET", "/api/v1/queues", greedy)
    assert status == 429 and error["error"]["code"] == "rate_limited"
    assert headers["Retry-After"] == "1"
    assert (await server.call("GET", "/api/v1/queues", other))[0] == 200
    limits.clock = lambda: 1001.0
    assert (await server.call("GET", "/api/v1/queues", greedy))[0] == 200


async def test_rate_limited_per_address_before_authentication(server: Api) -> None:
    limits = server.app[api.LIMITS]
    limits.clock = lambda: 1000.0
    limits.per_address = TokenBuckets(rate=0.5, burst=3)
    for _ in range(3):
        assert (await server.call("GET", "/api/v1/queues", "api_guess"))[0] == 401
    status, error, headers = await server.call("GET", "/api/v1/queues", "api_guess")
    assert status == 429 and error["error"]["code"] == "rate_limited"
    assert headers["Retry-After"] == "2"
    # /healthz is not part of the API and not limited by it.
    async with server.http.get(server.url + "/healthz") as response:
        assert response.status == 200


# ---------------------------------------------------------------------------- queues


async def test_queue_stats_are_scoped_to_the_caller(server: Api) -> None:
    integration = await server.token(None, Role.SUPERVISOR)
    await server.available("alice")
    case = {"channel": "case", "customer": {"id": "crm-1"}, "short_description": "Refund"}
    await server.call("POST", "/api/v1/items", integration, json=case)  # offered to alice
    await server.call("POST", "/api/v1/items", integration, json={**case, "priority": 1})
    await server.call("POST", "/api/v1/items", integration, json={**case, "priority": 2})

    all_queues = {"vip", "french", "general", "messaging", "cases", "incidents"}
    status, body, _ = await server.call("GET", "/api/v1/queues", integration)
    assert status == 200
    stats = {q["queue"]: q for q in body["queues"]}
    assert set(stats) == all_queues
    # alice holds one pending offer at a time (max_pending_offers = 1), so two wait.
    assert stats["cases"]["waiting"] == 2 and stats["cases"]["channel"] == "case"
    assert stats["cases"]["agents_available"] == 1
    assert stats["cases"]["longest_wait"] >= stats["cases"]["average_wait"] >= 0
    assert stats["incidents"] == {
        "queue": "incidents",
        "channel": "incident",
        "waiting": 0,
        "active": 0,
        "average_wait": 0.0,
        "longest_wait": 0.0,
        "agents_available": 0,
        "sla": None,  # the demo's incidents queue has no [queue.sla]
    }
    status, body, _ = await server.call(
        "GET", "/api/v1/queues", await server.token("alice", Role.AGENT)
    )
    assert {q["queue"] for q in body["queues"]} == {"general", "messaging", "cases"}
    feeder = await server.token(None, Role.AGENT)
    status, body, _ = await server.call("GET", "/api/v1/queues", feeder)
    assert {q["queue"] for q in body["queues"]} == all_queues
    dan = await server.token("dan", Role.SUPERVISOR)
    status, body, _ = await server.call("GET", "/api/v1/queues", dan)
    assert {q["queue"] for q in body["queues"]} == all_queues


# ---------------------------------------------------------------------------- OpenAPI


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


async def test_openapi_document_is_valid_and_complete(server: Api) -> None:
    status, doc, _ = await server.call("GET", "/api/v1/openapi.json")  # no token needed
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    validate(doc)
    routes = {
        (resource.canonical, route.method.lower())
        for resource in server.app.router.resources()
        if api._is_api(resource.canonical)
        for route in resource
        if route.method != "HEAD"
    }
    documented = {
        (path, method)
        for path, operations in doc["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert routes == documented
    for ref in _refs(doc):
        assert _resolve(doc, ref) is not None, ref
    create = doc["paths"]["/api/v1/items"]["post"]
    assert set(create["responses"]) >= {"201", "400", "401", "403", "413", "415", "422", "429"}
    assert "Retry-After" in doc["components"]["responses"]["429"]["headers"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


async def test_setup_twice_is_harmless(server: Api) -> None:
    # The app is frozen once running, so check on a fresh one what a second call would do.
    app = create_app(server.host)
    api.setup(app)
    metrics.setup(app)
    routes, middlewares = len(app.router.routes()), len(app.middlewares)
    api.setup(app)
    metrics.setup(app)
    assert (len(app.router.routes()), len(app.middlewares)) == (routes, middlewares)
    listeners = server.host.inbox.routing.listeners
    assert len([f for f in listeners if getattr(f, "__self__", None) is app[metrics.METRICS]]) == 1


async def test_store_outage_and_bugs_answer_in_json(
    server: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await server.token(None, Role.SUPERVISOR)
    path = "/api/v1/interactions/IMS0001001"

    async def unavailable(number: str) -> None:
        raise StoreUnavailable("disk I/O error")

    monkeypatch.setattr(server.host.inbox.store, "get_interaction", unavailable)
    status, error, _ = await server.call("GET", path, token)
    assert status == 503 and error["error"]["code"] == "unavailable"

    async def bug(number: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(server.host.inbox.store, "get_interaction", bug)
    status, error, _ = await server.call("GET", path, token)
    assert status == 500 and error["error"]["code"] == "internal"
    assert "secret" not in error["error"]["message"]

    # A host of a cluster that lost the routing role while answering: its routing step was
    # refused, and the client is told to retry (on the host that routes now), not of a bug.
    async def fenced(**records: object) -> None:
        raise StoreFenced("routing epoch 1 was superseded by epoch 2")

    monkeypatch.setattr(server.host.inbox.store, "apply_routing", fenced)
    body = {"channel": "chat", "customer": {"id": "c1", "name": "Ada"}}
    status, error, _ = await server.call("POST", "/api/v1/items", token, json=body)
    assert status == 503 and error["error"]["code"] == "unavailable", error


async def test_a_retry_after_a_failed_routing_step_routes_the_item(
    server: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An item under an Idempotency-Key whose interaction was stored but whose routing step
    was not (the router fenced by its successor, or the disk failing): 503. The retry, on the
    same process once the store takes writes again, routes the stored interaction's item; it
    must not find the first attempt's conversation still in memory without its item (500)."""
    token = await server.token(None, Role.SUPERVISOR)
    body = {"channel": "chat", "customer": {"id": "c9", "name": "Ada"}}
    key = {"Idempotency-Key": "fenced-once"}

    async def fenced(**records: object) -> None:
        raise StoreFenced("routing epoch 1 was superseded by epoch 2")

    with monkeypatch.context() as patched:
        patched.setattr(server.host.inbox.store, "apply_routing", fenced)
        status, error, _ = await server.call("POST", "/api/v1/items", token, json=body, headers=key)
        assert status == 503 and error["error"]["code"] == "unavailable", error
    status, created, _ = await server.call("POST", "/api/v1/items", token, json=body, headers=key)
    assert status == 200 and created["replayed"] is True, created
    assert created["state"] in ("queued", "offered"), created


async def test_an_item_another_process_stored_first_under_the_key_is_replayed(
    server: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two routers a moment apart (one deposed and not knowing it yet, in a cluster) each take
    a retry of one request: the key is not stored yet when this one looks, and the other
    stores it before this one commits. The loser replays the winner's interaction, as a retry
    would, rather than answer 500 for the key's conflict."""
    secret, token = await server.host.auth.create_api_token("crm", None, Role.SUPERVISOR, None)
    body = {"channel": "chat", "customer": {"id": "c10", "name": "Ada"}}
    store = server.host.inbox.store
    looked_up = store.get_idempotency_key

    async def before_the_other_commits(scope: str, key: str, now: float) -> None:
        monkeypatch.setattr(store, "get_idempotency_key", looked_up)
        await store.create_interaction(
            item="Wother0000001",
            channel="chat",
            customer="c10",
            opened_at=time.time(),
            customer_name="Ada",
            created_by=token.id,
            idempotency=IdempotencyKey(
                scope=token.id,
                key=key,
                fingerprint=fingerprint(msgspec.convert(body, CreateItem)),
                created_at=now,
            ),
        )

    monkeypatch.setattr(store, "get_idempotency_key", before_the_other_commits)
    headers = {"Idempotency-Key": "raced"}
    status, created, _ = await server.call(
        "POST", "/api/v1/items", secret, json=body, headers=headers
    )
    assert status == 200 and created["replayed"] is True, created
    assert created["item"] == "Wother0000001", created


async def test_a_client_gone_mid_body_is_not_an_error(
    server: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends half its body and goes (it timed out, its host froze) is logged as
    gone, not as the host's error with a traceback."""
    caplog.set_level("INFO")
    token = await server.token(None, Role.SUPERVISOR)
    host, port = server.url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /api/v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n".encode()
        + b'{"channel": "ch'
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    deadline = time.monotonic() + 5
    while "event=api_client_gone" not in caplog.text and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert "event=api_client_gone method=POST path=/api/v1/items" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
