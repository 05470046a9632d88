"""REST intake against a real `inbox-tui --server` subprocess: work items exactly once under an
Idempotency-Key (a crash between the interaction's commit and routing's included), and
integration tokens that write only into what they created or onto their channels.

Tokens are created in the store before the host starts, as `inbox-tui admin token create`
does; the host runs the demo configuration (chat, messaging, case and incident queues).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from bench.host_process import INBOX_TUI, HostProcess, console_env, start_host, stop_host
from core.auth import Authenticator
from core.config import HostSettings
from core.host.api import CreateItem, fingerprint
from core.model import Role
from store import open_store
from store.base import IdempotencyKey

TIMEOUT = aiohttp.ClientTimeout(total=10)


async def make_tokens(root: Path, **channels: Iterable[str] | None) -> dict[str, tuple[str, str]]:
    """name -> (secret, tok_ id): integration tokens (no agent, role supervisor so the test
    can read back what it wrote), each with the channels given (None: no channel list)."""
    store = await open_store(root / "data")
    try:
        auth = Authenticator(store, session_ttl=HostSettings().session_ttl)
        made = {}
        for name, listed in channels.items():
            token, record = await auth.create_api_token(
                name, None, Role.SUPERVISOR, None, channels=listed
            )
            made[name] = (token, record.id)
        return made
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def host(root: Path) -> AsyncIterator[HostProcess]:
    running = await asyncio.to_thread(start_host, root)
    try:
        yield running
    finally:
        await asyncio.to_thread(stop_host, running)


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    all_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
    async with http.request(method, url, json=body, headers=all_headers) as r:
        return r.status, await r.json(), dict(r.headers)


def item(customer: str, channel: str = "case", **extra: Any) -> dict[str, Any]:
    return {"channel": channel, "customer": {"id": customer, "name": customer}, **extra}


def line(customer: str, text: str) -> dict[str, Any]:
    return {"customer_id": customer, "body": text, "client_msg_id": f"{customer}-{text}"}


async def interactions_of(root: Path, customer: str) -> list[str]:
    """Every stored interaction of `customer`, read after the host has stopped."""
    store = await open_store(root / "data")
    try:
        records = await store.list_interactions(limit=10_000)
        return [r.number for r in records if r.customer == customer]
    finally:
        await store.close()


# -- idempotency --------------------------------------------------------------------------


async def test_a_retry_with_the_same_idempotency_key_returns_the_first_item(
    tmp_path: Path,
) -> None:
    tokens = await make_tokens(tmp_path, crm=None)
    secret = tokens["crm"][0]
    key = {"Idempotency-Key": "2f1c7a52-order-1001"}
    async with host(tmp_path) as h, aiohttp.ClientSession(timeout=TIMEOUT) as http:
        url = h.base_url + "/api/v1/items"
        status, first, headers = await call(http, "POST", url, secret, item("cust-1"), key)
        assert status == 201 and first["replayed"] is False, first
        assert "Idempotent-Replayed" not in headers
        # The same body re-serialised in another key order is the same request.
        reordered = {"customer": {"name": "cust-1", "id": "cust-1"}, "channel": "case"}
        status, again, headers = await call(http, "POST", url, secret, reordered, key)
        assert status == 200, again
        assert headers["Idempotent-Replayed"] == "true" and again["replayed"] is True
        assert (again["interaction"], again["item"]) == (first["interaction"], first["item"])
        assert headers["Location"] == f"/api/v1/interactions/{first['interaction']}"
    assert await interactions_of(tmp_path, "cust-1") == [first["interaction"]]


async def test_an_idempotency_key_reused_with_another_body_is_refused_and_keys_are_per_token(
    tmp_path: Path,
) -> None:
    tokens = await make_tokens(tmp_path, crm=None, erp=None)
    key = {"Idempotency-Key": "k-1"}
    async with host(tmp_path) as h, aiohttp.ClientSession(timeout=TIMEOUT) as http:
        url = h.base_url + "/api/v1/items"
        status, first, _ = await call(http, "POST", url, tokens["crm"][0], item("cust-2"), key)
        assert status == 201, first
        changed = item("cust-2", priority=5)
        status, error, _ = await call(http, "POST", url, tokens["crm"][0], changed, key)
        assert status == 422 and error["error"]["code"] == "idempotency_key_reused", error
        assert "another request body" in error["error"]["message"]
        # Another integration choosing the same key is not a retry of crm's request.
        status, other, _ = await call(http, "POST", url, tokens["erp"][0], item("cust-2"), key)
        assert status == 201 and other["interaction"] != first["interaction"], other
    assert sorted(await interactions_of(tmp_path, "cust-2")) == sorted(
        [first["interaction"], other["interaction"]]
    )


async def test_a_malformed_idempotency_key_is_400_and_stores_nothing(tmp_path: Path) -> None:
    tokens = await make_tokens(tmp_path, crm=None)
    async with host(tmp_path) as h, aiohttp.ClientSession(timeout=TIMEOUT) as http:
        url = h.base_url + "/api/v1/items"
        for bad in ("", "has space", "x" * 256, "tab\there", "é-not-ascii"):
            # aiohttp sends a header value's characters as latin-1 bytes: UTF-8 here.
            headers = {"Idempotency-Key": bad.encode().decode("latin-1")}
            status, error, _ = await call(http, "POST", url, tokens["crm"][0], item("c3"), headers)
            assert status == 400, (bad, error)
            assert error["error"]["code"] == "invalid_idempotency_key", error
            assert "1 to 255 printable ASCII" in error["error"]["message"]
        # The longest key allowed is a key.
        headers = {"Idempotency-Key": "x" * 255}
        status, created, _ = await call(http, "POST", url, tokens["crm"][0], item("c3"), headers)
        assert status == 201, created
    assert await interactions_of(tmp_path, "c3") == [created["interaction"]]


async def test_concurrent_retries_under_one_key_create_one_item(tmp_path: Path) -> None:
    tokens = await make_tokens(tmp_path, crm=None)
    key = {"Idempotency-Key": "burst"}
    async with host(tmp_path) as h, aiohttp.ClientSession(timeout=TIMEOUT) as http:
        url = h.base_url + "/api/v1/items"
        answers = await asyncio.gather(
            *(call(http, "POST", url, tokens["crm"][0], item("c4"), key) for _ in range(8))
        )
    assert sorted(status for status, _, _ in answers) == [200] * 7 + [201]
    assert len({body["item"] for _, body, _ in answers}) == 1
    assert len(await interactions_of(tmp_path, "c4")) == 1


async def test_a_retry_after_a_crash_before_routing_routes_the_stored_item(
    tmp_path: Path,
) -> None:
    """The host committed the interaction and its key, then died before routing committed the
    work item: the store holds exactly that (as the crash left it) when the host restarts."""
    tokens = await make_tokens(tmp_path, crm=None)
    secret, token_id = tokens["crm"]
    body = item("c5", attributes={"order": "A-17"}, priority=4)
    store = await open_store(tmp_path / "data")
    try:
        orphan = await store.create_interaction(
            item="Wcrashed00001",
            channel="case",
            customer="c5",
            opened_at=time.time(),
            customer_name="c5",
            created_by=token_id,
            idempotency=IdempotencyKey(
                scope=token_id,
                key="before-the-crash",
                fingerprint=fingerprint(msgspec.convert(body, CreateItem)),
                created_at=time.time(),
            ),
        )
        assert await store.get_item(orphan.item) is None
    finally:
        await store.close()
    async with host(tmp_path) as h, aiohttp.ClientSession(timeout=TIMEOUT) as http:
        url = h.base_url + "/api/v1/items"
        key = {"Idempotency-Key": "before-the-crash"}
        status, replay, _ = await call(http, "POST", url, secret, body, key)
        assert status == 200 and replay["replayed"] is True, replay
        assert (replay["interaction"], replay["item"]) == (orphan.number, "Wcrashed00001")
        assert replay["state"] in ("queued", "offered") and replay["queue"] == "cases"
        # Routed once: a second retry finds it routed and routes nothing again.
        status, again, _ = await call(http, "POST", url, secret, body, key)
        assert status == 200 and again["item"] == "Wcrashed00001"
        # And it is a live conversation its creator can write into.
        msg_url = f"{h.base_url}/api/v1/interactions/{orphan.number}/messages"
        status, posted, _ = await call(http, "POST", msg_url, secret, line("c5", "hello"))
        assert status == 201, posted
    assert await interactions_of(tmp_path, "c5") == [orphan.number]
    store = await open_store(tmp_path / "data")
    try:
        stored = await store.get_item("Wcrashed00001")
        assert stored is not None and stored.interaction == orphan.number
        assert stored.priority == 4 and stored.attributes == {"order": "A-17"}
        record = await store.get_interaction(orphan.number)
        assert record is not None and record.queue == "cases"
    finally:
        await store.close()


# -- scoped tokens ------------------------------------------------------------------------


async def start_widget_chat(http: aiohttp.ClientSession, h: HostProcess) -> tuple[str, str]:
    """(interaction number, customer id) of a new widget chat; the socket is closed after,
    which leaves the chat open (the customer may be reloading the page)."""
    async with http.ws_connect(h.widget_url) as ws:
        await ws.send_json({"t": "start", "name": "Ada", "email": "ada@example.com"})
        async with asyncio.timeout(10):
            while True:
                frame = await ws.receive_json()
                if frame["t"] == "started":
                    # The ticket is "<customer>.<hmac>" (core/host/widget.py).
                    return frame["conversation"], frame["ticket"].rsplit(".", 1)[0]
                assert frame["t"] != "error", frame


async def test_integration_tokens_write_only_into_their_own_items_or_channels(
    tmp_path: Path,
) -> None:
    tokens = await make_tokens(tmp_path, a=None, b=None, chat=["chat"], cases=["case"])
    a, b, chat, cases = (tokens[n][0] for n in ("a", "b", "chat", "cases"))
    async with host(tmp_path) as h, aiohttp.ClientSession(timeout=TIMEOUT) as http:
        items = h.base_url + "/api/v1/items"
        status, created, _ = await call(http, "POST", items, a, item("cust-a", "messaging"))
        assert status == 201, created
        a_msgs = f"{h.base_url}/api/v1/interactions/{created['interaction']}/messages"

        # B (no channels) into A's item: refused as if it did not exist.
        status, error, _ = await call(http, "POST", a_msgs, b, line("cust-a", "from b"))
        assert status == 404 and error["error"]["code"] == "not_found", error
        assert "this token may write to" in error["error"]["message"]
        status, posted, _ = await call(http, "POST", a_msgs, a, line("cust-a", "from a"))
        assert status == 201, posted

        # A widget chat: no integration created it; only a token listing "chat" may post.
        number, customer = await start_widget_chat(http, h)
        chat_msgs = f"{h.base_url}/api/v1/interactions/{number}/messages"
        for refused in (a, b, cases):
            status, error, _ = await call(http, "POST", chat_msgs, refused, line(customer, "x"))
            assert status == 404 and error["error"]["code"] == "not_found", error
        status, posted, _ = await call(http, "POST", chat_msgs, chat, line(customer, "hi"))
        assert status == 201 and posted["message"]["sender"] == customer, posted

        # A token listing "case" creates cases only.
        status, error, _ = await call(http, "POST", items, cases, item("cust-c", "chat"))
        assert status == 403 and error["error"]["code"] == "forbidden", error
        assert error["error"]["message"].endswith("only on the channels case")
        assert error["error"]["field"] == "$.channel"
        status, created_case, _ = await call(http, "POST", items, cases, item("cust-c", "case"))
        assert status == 201, created_case

        # What each token wrote, and only that, is in the transcripts.
        status, view, _ = await call(
            http, "GET", f"{h.base_url}/api/v1/interactions/{created['interaction']}", a
        )
        assert [m["body"] for m in view["messages"]] == ["from a"]
        assert view["interaction"]["created_by"] == tokens["a"][1]
        status, view, _ = await call(http, "GET", f"{h.base_url}/api/v1/interactions/{number}", a)
        assert [m["body"] for m in view["messages"] if m["sender_kind"] == "customer"] == ["hi"]
    assert await interactions_of(tmp_path, "cust-c") == [created_case["interaction"]]


async def test_an_items_creator_survives_a_restart(tmp_path: Path) -> None:
    tokens = await make_tokens(tmp_path, a=None, b=None)
    (a, _), (b, _) = tokens["a"], tokens["b"]
    async with host(tmp_path) as h, aiohttp.ClientSession(timeout=TIMEOUT) as http:
        status, created, _ = await call(
            http, "POST", h.base_url + "/api/v1/items", a, item("cust-r", "messaging")
        )
        assert status == 201, created
    async with host(tmp_path) as h, aiohttp.ClientSession(timeout=TIMEOUT) as http:
        url = f"{h.base_url}/api/v1/interactions/{created['interaction']}/messages"
        status, error, _ = await call(http, "POST", url, b, line("cust-r", "from b"))
        assert status == 404, error
        status, posted, _ = await call(http, "POST", url, a, line("cust-r", "from a"))
        assert status == 201, posted


async def test_routing_decisions_are_logged_at_debug_only(tmp_path: Path) -> None:
    tokens = await make_tokens(tmp_path, a=None)
    token = tokens["a"][0]
    for level in ("info", "debug"):
        h = await asyncio.to_thread(start_host, tmp_path, log_level=level)  # same data
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
                status, created, _ = await call(
                    http, "POST", h.base_url + "/api/v1/items", token, item(f"cust-{level}")
                )
                assert status == 201, created
        finally:
            await asyncio.to_thread(stop_host, h)
        decisions = [line for line in h.log_text().splitlines() if "reason=" in line]
        if level == "info":
            assert not decisions, decisions
        else:
            assert any(f"item={created['item']}" in line for line in decisions), h.log_text()


def run_admin(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`inbox-tui admin --data <root>/data ...`: through the host if one runs there."""
    return subprocess.run(
        [str(INBOX_TUI), "admin", "--data", str(root / "data"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=console_env(root / "env"),
        check=False,
    )


def test_admin_token_create_with_channels_and_list_shows_them(tmp_path: Path) -> None:
    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return run_admin(tmp_path, *args)

    made = admin("token", "create", "ticketing", "--channels", "case,incident", "--role", "agent")
    assert made.returncode == 0 and made.stdout.strip().startswith("api_"), made.stderr
    assert admin("token", "create", "crm").returncode == 0
    bad = admin("token", "create", "typo", "--channels", "case,bad channel")
    assert bad.returncode == 2 and "not a channel name: 'bad channel'" in bad.stderr, bad.stderr
    listed = admin("token", "list")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.strip().splitlines()
    rows = [dict(zip(header.split(), re.split(r" {2,}", row), strict=True)) for row in lines]
    assert [(r["NAME"], r["CHANNELS"]) for r in rows] == [
        ("ticketing", "case,incident"),
        ("crm", "own items"),
    ]


async def test_a_token_made_through_a_running_host_is_scoped_at_once(tmp_path: Path) -> None:
    async with host(tmp_path) as h, aiohttp.ClientSession(timeout=TIMEOUT) as http:
        create = ("token", "create", "ticketing", "--channels", "case", "--role", "agent")
        made = await asyncio.to_thread(run_admin, tmp_path, *create)
        assert made.returncode == 0, made.stderr
        secret = made.stdout.strip()
        url = h.base_url + "/api/v1/items"
        status, error, _ = await call(http, "POST", url, secret, item("cust-l", "chat"))
        assert status == 403 and error["error"]["code"] == "forbidden", error
        status, created, _ = await call(http, "POST", url, secret, item("cust-l", "case"))
        assert status == 201, created
        listed = await asyncio.to_thread(run_admin, tmp_path, "token", "list")
        assert re.search(r"\bticketing\b.*\bcase$", listed.stdout, re.M), listed.stdout
