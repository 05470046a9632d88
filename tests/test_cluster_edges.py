"""Hosts on one PostgreSQL database and one NATS bus: every host serves consoles, customers and
the REST API, relaying to the one that routes, and when the router dies the others carry on.
Real host processes, a real database (a fresh one per test), a real nats-server, real sockets
on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from bench.host_process import INBOX_TUI, HostProcess, console_env, start_host, stop_host
from core.client import ClientError, InboxClient
from core.demo import DEMO_PASSWORD, demo_config_text
from core.host.app import serve_loopback
from core.host.bus import Bus
from core.host.edge import Edge, create_edge_app
from core.protocol import (
    AcceptOffer,
    InteractionEvent,
    MessageEvent,
    Resync,
    SendMessage,
    SetPresence,
)
from tests.hosting import fast_config
from tests.jepsen import integration_token
from tests.test_failover import TAKEOVER, CuttableLink, agent, get, offered

HEARD = 10.0  # seconds a test waits for a frame that should come at once


async def role_of(host: HostProcess) -> dict[str, Any]:
    _, body = await asyncio.to_thread(get, f"{host.base_url}/healthz")
    return body


class Customer:
    """A widget customer speaking the widget's JSON protocol, as widget.js does."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.number = ""
        self.ticket = ""

    async def next(self, kind: str) -> dict[str, Any]:
        while True:
            frame = await self.ws.receive_json(timeout=HEARD)
            if frame["t"] == kind:
                return dict(frame)
            assert frame["t"] != "error", frame

    async def start(self, question: str) -> None:
        await self.ws.send_str(json.dumps({"t": "start", "name": "Ada", "email": "a@example.com"}))
        started = await self.next("started")
        self.number, self.ticket = started["conversation"], started["ticket"]
        await self.say(question, "q1")

    async def resume(self, number: str, ticket: str) -> None:
        self.number, self.ticket = number, ticket
        frame = {"t": "resume", "conversation": number, "ticket": ticket}
        await self.ws.send_str(json.dumps(frame))
        await self.next("resumed")

    async def say(self, body: str, client_msg_id: str) -> None:
        await self.ws.send_str(
            json.dumps({"t": "message", "body": body, "client_msg_id": cid(client_msg_id)})
        )
        assert (await self.next("ack"))["client_msg_id"] == cid(client_msg_id)

    async def hears(self, body: str) -> None:
        while (frame := await self.next("message"))["body"] != body:
            pass
        assert frame["from"] == "agent", frame


def cid(name: str) -> str:
    return f"test-{name}"


@asynccontextmanager
async def customer_on(host: HostProcess) -> AsyncIterator[Customer]:
    async with aiohttp.ClientSession() as http, http.ws_connect(host.widget_url) as ws:
        yield Customer(ws)


async def agent_hears(client: InboxClient, number: str, body: str) -> None:
    while True:
        event = await client.next_event(MessageEvent, timeout=TAKEOVER)
        if event.message.interaction == number and event.message.body == body:
            return


async def start_cluster(
    root: Path, postgres_url: str, nats_url: str, count: int = 3
) -> list[HostProcess]:
    """`count` hosts; the first routes (it starts alone, so it wins), the others are edges."""
    hosts = [await asyncio.to_thread(start_host, root / "h0", store=postgres_url, bus=nats_url)]
    try:
        for i in range(1, count):
            hosts.append(
                await asyncio.to_thread(
                    start_host, root / f"h{i}", store=postgres_url, bus=nats_url
                )
            )
    except BaseException:
        for host in hosts:
            stop_host(host)
        raise
    return hosts


async def test_every_host_serves_consoles_customers_and_the_api(
    tmp_path: Path, postgres_url: str, nats_url: str
) -> None:
    token = await integration_token(postgres_url)
    router, b, c = await start_cluster(tmp_path, postgres_url, nats_url)
    try:
        roles = [await role_of(h) for h in (router, b, c)]
        assert [r["role"] for r in roles] == ["router", "edge", "edge"], roles
        assert roles[1]["router"] == roles[2]["router"] == roles[0]["process"], roles

        # The agent's console is on one edge, the customer's widget on the other.
        alice = await agent(b)
        async with customer_on(c) as ada:
            await ada.start("My parcel never came")
            offer = await offered(alice, ada.number)
            await alice.request(AcceptOffer(offer=offer))
            opened = await alice.next_event(InteractionEvent, timeout=HEARD)
            assert opened.record.number == ada.number and opened.change == "opened"
            await alice.request(
                SendMessage(interaction=ada.number, body="Let me look", client_msg_id=cid("a1"))
            )
            await ada.hears("Let me look")
            await ada.say("Thanks", "q2")
            await agent_hears(alice, ada.number, "Thanks")
            # PostgreSQL's text holds no NUL: an id with a control character is refused at
            # the door, with the field named, on every path in.
            with pytest.raises(ClientError) as refused:
                await alice.request(
                    SendMessage(interaction=ada.number, body="x", client_msg_id="a\x00b")
                )
            assert refused.value.code == "bad_frame" and "client_msg_id" in str(refused.value)
            await ada.ws.send_str(
                json.dumps({"t": "message", "body": "x", "client_msg_id": "q\u0000"})
            )
            error = await ada.ws.receive_json(timeout=HEARD)
            assert error["t"] == "error" and "client_msg_id" in error["message"], error

        # The REST API through either edge: an item created on one, its retry replayed on the
        # other (the idempotency key is in the database, not in a host).
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "order-17"}
        item = {"channel": "case", "customer": {"id": "c17"}, "short_description": "Refund 17"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{c.base_url}/api/v1/items", json=item, headers=headers) as r:
                created = await r.json()
                assert r.status == 201, created
            async with http.post(f"{b.base_url}/api/v1/items", json=item, headers=headers) as r:
                again = await r.json()
                assert r.status == 200 and r.headers["Idempotent-Replayed"] == "true", again
            assert again["interaction"] == created["interaction"]
            async with http.get(f"{b.base_url}/api/v1/queues", headers=headers) as r:
                assert r.status == 200 and (await r.json())["queues"], await r.text()
            # An unknown route relays too, and its error is the router's own.
            async with http.get(f"{c.base_url}/api/v1/nothing-here", headers=headers) as r:
                assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
        await alice.close()

        # The router served the edges' clients as from their own addresses, not the relay's.
        log = router.log_text()
        assert "event=widget_connected address=127.0.0.1" in log, log[-3000:]
        assert "event=agent_logged_in agent=alice" in log
        assert "event=agent_logged_in" not in b.log_text() + c.log_text()
    finally:
        for host in (router, b, c):
            stop_host(host)


async def console_on(host: HostProcess, name: str, statuses: list[str]) -> InboxClient:
    client = InboxClient(host.agent_url, backoff=(0.05, 0.2), on_status=statuses.append)
    await client.connect()
    await client.login(name, DEMO_PASSWORD)
    await client.set_presence("Available")
    return client


async def test_consoles_on_edges_carry_on_when_the_router_is_killed(
    tmp_path: Path, postgres_url: str, nats_url: str
) -> None:
    router, b, c = await start_cluster(tmp_path, postgres_url, nats_url)
    try:
        # A console on each edge: both keep their sockets, whichever edge routes next.
        statuses: dict[str, list[str]] = {"alice": [], "bob": []}
        alice = await console_on(c, "alice", statuses["alice"])
        bob = await console_on(b, "bob", statuses["bob"])
        async with customer_on(b) as ada:
            await ada.start("Where is my order?")
            offer = await offered(alice, ada.number)
            await alice.request(AcceptOffer(offer=offer))
            await alice.next_event(InteractionEvent, timeout=HEARD)
        number, ticket = ada.number, ada.ticket
        before = {name: list(seen) for name, seen in statuses.items()}

        router.proc.kill()  # kill -9: no drain, no goodbye on the bus
        router.proc.wait()
        started = time.monotonic()
        while "router" not in [(await role_of(h)).get("role") for h in (b, c)]:
            assert time.monotonic() - started < TAKEOVER, [b.log_text(), c.log_text()]
            await asyncio.sleep(0.1)

        # Neither console reconnects: on the edge that stays an edge, and on the one that now
        # routes (it handed its consoles over to its own router, over the bus as to any
        # other), the session moved under the socket; each gets a Resync to redraw from and
        # carries on. The edges log the move after the Resync and what was unanswered.
        for client, name, host in ((alice, "alice", c), (bob, "bob", b)):
            resync = await client.next_event(Resync, timeout=TAKEOVER)
            assert resync.snapshot.me.id == name
            waited = time.monotonic()
            while "event=edge_console_moved" not in host.log_text():
                assert time.monotonic() - waited < HEARD, host.log_text()
                await asyncio.sleep(0.02)
            await client.request(SetPresence(presence="Available"))
        assert statuses == before, statuses  # never "reconnecting"

        # The conversation alice owned is still hers: the customer resumes through b with the
        # ticket from before (the ticket key is the cluster's, not the dead host's).
        async with customer_on(b) as again:
            await again.resume(number, ticket)
            await again.say("Any news?", "q2")
            await agent_hears(alice, number, "Any news?")
            await alice.request(
                SendMessage(interaction=number, body="It ships today", client_msg_id=cid("a2"))
            )
            await again.hears("It ships today")

        # And new work still reaches alice through the edge (bob steps away, so it is hers).
        await bob.request(SetPresence(presence="Away"))
        async with customer_on(b) as bo:
            await bo.start("Second question")
            await offered(alice, bo.number)
        await alice.close()
        await bob.close()
    finally:
        for host in (router, b, c):
            stop_host(host)


async def test_an_offer_pending_when_the_router_is_killed_is_still_the_agents_to_accept(
    tmp_path: Path, postgres_url: str, nats_url: str
) -> None:
    router, b, c = await start_cluster(tmp_path, postgres_url, nats_url)
    try:
        alice = await console_on(c, "alice", [])
        async with customer_on(b) as ada:
            await ada.start("Where is my order?")
            offer = await offered(alice, ada.number)
        router.proc.kill()  # kill -9 with the offer unanswered
        router.proc.wait()
        # The new router keeps the offer for her console, which the edge moves to it, rather
        # than taking it back because no console was attached when it started.
        resync = await alice.next_event(Resync, timeout=TAKEOVER)
        assert [o.offer.id for o in resync.snapshot.offers] == [offer]
        await alice.request(AcceptOffer(offer=offer))
        event = await alice.next_event(InteractionEvent, timeout=HEARD)
        assert (event.change, event.record.number) == ("opened", ada.number)
        async with customer_on(b) as again:
            await again.resume(ada.number, ada.ticket)
            await alice.request(
                SendMessage(interaction=ada.number, body="On its way", client_msg_id=cid("a1"))
            )
            await again.hears("On its way")
        await alice.close()
    finally:
        for host in (router, b, c):
            stop_host(host)


async def test_workers_share_one_port_and_a_killed_worker_is_replaced(
    tmp_path: Path, postgres_url: str, nats_url: str
) -> None:
    host = await asyncio.to_thread(
        start_host, tmp_path / "w", store=postgres_url, bus=nats_url, workers=2
    )
    try:
        # Connections spread over the workers: both the router and the edge answer.
        seen: dict[str, str] = {}
        for _ in range(200):
            body = await role_of(host)
            seen[str(body.get("process"))] = str(body.get("role"))
            if len(seen) == 2:
                break
        assert sorted(seen.values()) == ["edge", "router"], seen

        # A worker killed -9 comes back (the supervisor starts another on the same port), and
        # an agent logs in through the port all along.
        edge = next(p for p, role in seen.items() if role == "edge")
        pid = int(edge.split("-")[-2])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + TAKEOVER
        while f"pid={pid} code=-9" not in host.log_text():
            assert time.monotonic() < deadline, host.log_text()[-3000:]
            await asyncio.sleep(0.1)
        replaced: set[str] = set()
        while len(replaced) < 2 or edge in replaced:
            assert time.monotonic() < deadline, (replaced, host.log_text()[-3000:])
            body = await role_of(host)
            if body.get("status") == "ok":
                replaced.add(str(body.get("process")))
            await asyncio.sleep(0.01)
        alice = await agent(host)
        await alice.close()
    finally:
        stop_host(host)


async def test_an_edge_that_loses_the_bus_says_so_and_comes_back_by_itself(
    tmp_path: Path, postgres_url: str, nats_url: str
) -> None:
    where = urlsplit(nats_url)
    link = CuttableLink((where.hostname or "127.0.0.1", where.port or 4222))
    await link.mend()
    router = await asyncio.to_thread(start_host, tmp_path / "a", store=postgres_url, bus=nats_url)
    edge = await asyncio.to_thread(
        start_host, tmp_path / "b", store=postgres_url, bus=f"nats://127.0.0.1:{link.port}"
    )
    try:
        alice = await agent(edge)
        await link.cut()
        # Without the bus nothing is acknowledged through the edge: it says so and why.
        started = time.monotonic()
        while (body := await role_of(edge))["status"] != "unavailable":
            assert time.monotonic() - started < TAKEOVER, body
            await asyncio.sleep(0.1)
        assert "bus" in body["reason"], body
        status, answer = await asyncio.to_thread(get, f"{edge.base_url}/api/v1/queues")
        assert status == 503 and answer["error"]["code"] == "unavailable", answer
        assert (await role_of(router))["status"] == "ok"  # the router serves on meanwhile

        await link.mend()
        while (body := await role_of(edge))["status"] != "ok":
            assert time.monotonic() - started < TAKEOVER, edge.log_text()[-3000:]
            await asyncio.sleep(0.1)
        # The console came back through the edge by itself, and work reaches it again.
        async with customer_on(edge) as ada:
            await ada.start("Are you there?")
            await offered(alice, ada.number)
        assert alice.status == "connected"
        await alice.close()
    finally:
        stop_host(router)
        stop_host(edge)
        await link.cut()


async def test_a_request_to_a_router_that_is_gone_is_answered_at_once(nats_url: str) -> None:
    """A router that took a relayed request and then died or froze never answers it. Once
    the edge hears of the next router, the request waiting on the old one is answered 503
    (the client retries) instead of after the relay's 30 s; an edge taking over routing
    waited on such requests for 2 s under load (docs/scaling.md)."""
    cluster = f"t{secrets.token_hex(4)}"
    edge_bus, frozen, next_router = (Bus(nats_url, cluster) for _ in range(3))
    for bus in (edge_bus, frozen, next_router):
        await bus.connect()
    taken = asyncio.Event()

    async def take_and_never_answer(msg: Any) -> None:
        taken.set()

    async def follows(router: Bus, epoch: int) -> None:
        router.role, router.epoch = "router", epoch
        async with asyncio.timeout(HEARD):
            while edge_bus.routing != router.process:
                await router.announce()
                await asyncio.sleep(0.05)

    try:
        subject = frozen.router_subject(frozen.process, "http")
        await frozen.client.subscribe(subject, cb=take_and_never_answer)
        await follows(frozen, 1)
        edge = Edge(fast_config(), edge_bus)
        await edge.start()
        runner, base = await serve_loopback(create_edge_app(edge))
        try:
            async with aiohttp.ClientSession() as http:
                call = asyncio.ensure_future(http.get(f"{base}/api/v1/queues"))
                await asyncio.wait_for(taken.wait(), HEARD)
                assert not call.done()
                await follows(next_router, 2)
                async with asyncio.timeout(1.0):
                    reply = await call
                    body = await reply.json()
                assert reply.status == 503 and body["error"]["code"] == "unavailable", body
                assert "is gone" in body["error"]["message"], body
        finally:
            await edge.stop()
            await runner.cleanup()
    finally:
        for bus in (frozen, next_router, edge_bus):
            await bus.close()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--workers", "2"],
            "--workers needs a cluster: --store postgresql://… and --bus nats://…",
        ),
        (["--bus", "nats://127.0.0.1:4222"], "a bus needs a shared store: give --store"),
        (["--bus", "redis://127.0.0.1:6379"], "--bus wants a nats:// URL"),
    ],
)
def test_workers_and_a_bus_without_a_cluster_are_refused_at_start(
    tmp_path: Path, args: list[str], says: str
) -> None:
    config = tmp_path / "demo.toml"
    config.write_text(demo_config_text(), encoding="utf-8")
    run = subprocess.run(
        [INBOX_TUI, "--server", "--listen", "127.0.0.1:0", "--config", config, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=console_env(tmp_path),
    )
    assert run.returncode == 2 and says in run.stderr, run.stderr
