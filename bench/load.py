"""End-to-end load generator: a real routing host driven over its real protocols.

    python -m bench.load [--preset smoke|standard|scale] [--target URL] [--agents N]
                         [--rate λ] [--messages-per-s M] [--seconds S] [--json FILE]
                         [--store postgresql://… [--store-as-is]] [--bus nats://…]
                         [--workers N] [--via-edge] [--kill-router-at S]

Without --target it starts `inbox-tui --server` (the installed script next to sys.executable)
on a free loopback port with a fresh data directory and a generated config (one chat channel,
one group, one most_capacity queue), after provisioning N agents straight into the store.
The store is SQLite in that directory, or with --store a PostgreSQL database: by default a
scratch one the bench creates on that URL's server and drops at the end, with --store-as-is
the URL's own database (empty, or left by an earlier run). --bus and --workers are passed to
the host: with both, `--workers N` processes share the port, one routes and the others are
edges relaying to it over NATS. --via-edge starts one more host of the cluster on a port of its
own, an edge, and sends all the traffic to it, so the router terminates no socket itself.
--kill-router-at S kills the router with SIGKILL S seconds into the arrivals and reports how
long until another routes: customers then do what widget.js and a careful integration do
(resume with the ticket, send unacknowledged lines again, retry a 503 under an
Idempotency-Key), and agents' consoles reconnect and resume as InboxClient does.

The run:
  agents     N InboxClient sockets: log in, go Available, accept each offer after a think
             time, greet, answer every customer message, then end the chat and close it.
  customers  Poisson arrivals at rate λ, a mix of widget sockets (/widget/ws, JSON) and REST
             integrations (POST /api/v1/items, then /interactions/{n}/messages). Each customer
             sends `turns` messages, one per agent reply, so messages/s ≈ λ·2·turns.
  measured   arrival→offer at the agent, customer message→agent, agent message→customer
             (widget only: REST has no push), accept→first agent message committed, routing
             steps and offers by outcome from /metrics, durable messages (the host's
             message histogram count), CPU seconds per process from /proc (bench/proc_cpu.py:
             each host process by role, the router's pid from /healthz; PostgreSQL's
             backends of the run's database and its server processes; nats-server) and the
             generator's own, and the host's peak RSS.
  baselines  raw aiohttp WebSocket echo round trips/s on loopback and the naive one commit
             per message SQLite rate (WAL, synchronous=FULL), so the host's figures also read
             as ratios of what the machine does with no application in the way.

Provisioning. Password logins cost one argon2id hash each (64 MiB, ~100 ms), and the login
brake refuses an address with 20 logins in flight, so thousands of password logins would take
minutes and measure argon2, not the host. Agent 0 logs in with a password (the real path is
exercised); the others authenticate with an API token bound to themselves, created before the
host starts exactly as `inbox-tui admin token create NAME --agent ID` does, minus a process
per token. Either way each agent's socket acts as that agent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import itertools
import json
import logging
import math
import os
import random
import re
import resource
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from aiohttp import web

from bench import store_micro
from bench.host_process import HostProcess, start_host, stop_host
from bench.proc_cpu import CpuMeter, children, machine_busy, named, postgres_labels
from bench.seed import seed_open_conversations
from core.auth import Authenticator
from core.client import ClientError, InboxClient
from core.config import HostSettings
from core.host.app import serve_loopback
from core.model import Agent, Role, SenderKind
from core.protocol import (
    CloseRecord,
    Event,
    GetTranscript,
    MessageEvent,
    OfferEvent,
    OfferView,
    Resync,
    Transcript,
)
from store import is_postgres_url, open_store
from store.postgres import redact

PASSWORD = "load-test-password"
GROUP = "load"
QUEUE = "general"
PROGRESS_EVERY = 5.0
STARTUP_TIMEOUT = 120.0  # a host opening a store seeded with 50,000 conversations
HOST_CPU = 0  # --pin: the host's CPU; the generator takes the others
# The REST API allows 20 requests/s per token and 50/s per client address; each simulated
# integration gets its own token and its own loopback source address (all of 127/8 is local),
# as separate integrating systems would, and stays under this budget.
REST_BUDGET_PER_CLIENT = 8.0
# A customer whose socket or request failed (its host killed: --kill-router-at) tries again
# after this long, as widget.js and a well-behaved integration do.
RECONNECT_PAUSE = 0.2
CATCH_UP_TRIES = 20
WIDGET_MAX_FRAMES_PER_S = 8.0  # the widget allows 10 frames/s per socket


@dataclass(frozen=True)
class Preset:
    agents: int
    rate: float  # arrivals per second
    messages_per_s: float
    seconds: float
    capacity: int = 3
    rest_share: float = 0.2
    accept_think: float = 0.2  # seconds an agent looks at an offer before accepting
    reply_think: float = 0.1
    customer_think: float = 0.3  # between the agent's reply and the customer's next message
    drain: float = 10.0  # seconds after the last arrival for conversations to finish
    baseline_seconds: float = 2.0
    # scale: conversations already open when the host starts (bench.seed), held by the agents
    open_conversations: int = 0


STANDARD = Preset(
    agents=2000,
    rate=200.0,
    messages_per_s=2000.0,
    seconds=60.0,
    capacity=5,
    customer_think=1.0,
    drain=20.0,
    baseline_seconds=4.0,
)
PRESETS = {
    "smoke": Preset(agents=5, rate=5.0, messages_per_s=30.0, seconds=10.0),
    "standard": STANDARD,
    # The standard load, on a floor 3.75 times larger holding 50,000 conversations open.
    "scale": dataclasses.replace(STANDARD, agents=7500, capacity=10, open_conversations=50_000),
}


# ---------------------------------------------------------------------------- measurements


def percentiles(samples: list[float]) -> dict[str, float | int]:
    """Milliseconds; nearest-rank percentiles, which need no interpolation to be honest."""
    if not samples:
        return {"n": 0, "p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)] * 1000

    return {
        "n": len(ordered),
        "p50": round(rank(0.50), 2),
        "p95": round(rank(0.95), 2),
        "p99": round(rank(0.99), 2),
        "max": round(ordered[-1] * 1000, 2),
    }


@dataclass
class Stats:
    arrival_to_offer: list[float] = field(default_factory=list)
    customer_to_agent: list[float] = field(default_factory=list)
    agent_to_customer: list[float] = field(default_factory=list)
    accept_to_first_message: list[float] = field(default_factory=list)
    generator_lag: list[float] = field(default_factory=list)
    offers_at: list[tuple[float, float]] = field(default_factory=list)  # (received, arrived)
    resyncs_at: list[float] = field(default_factory=list)  # when an agent got a Resync
    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def error(self, what: str) -> None:
        self.errors[what] += 1


@dataclass
class _WidgetLink:
    """A widget customer's socket of the moment, their ticket, and lines not yet acked."""

    ws: aiohttp.ClientWebSocketResponse | None = None
    conversation: str = ""
    ticket: str | None = None
    unacked: dict[str, str] = field(default_factory=dict)  # client_msg_id -> body
    tries: int = 0

    async def send(self, body: str) -> None:
        cid = body[:32]
        self.unacked[cid] = body
        if self.ws is not None and not self.ws.closed:
            # Lost with the socket, it goes again from `unacked` on the next one.
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await self.ws.send_json({"t": "message", "body": body, "client_msg_id": cid})


@dataclass
class Conversation:
    """What both sides of one simulated conversation share (the generator is one process)."""

    key: str  # the customer name, unique: the agent sees it on the offer
    kind: str  # widget | rest
    arrived: float
    turns: int
    number: str | None = None
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    agent_reply: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    customer_sent: int = 0
    agent_answered: int = 0
    answered: set[int] = field(default_factory=set)  # customer lines' seqs the agent answers
    offers_taken: set[str] = field(default_factory=set)


class Load:
    def __init__(self, preset: Preset, base_url: str, agent_creds: list[tuple[str, str, str]]):
        self.p = preset
        self.base = base_url.rstrip("/")
        ws_base = "ws" + self.base.removeprefix("http")
        self.agent_url = ws_base + "/agent"
        self.widget_url = ws_base + "/widget/ws"
        self.agent_creds = agent_creds  # (id, password or "", token or "")
        self.stats = Stats()
        self.by_key: dict[str, Conversation] = {}
        self.sent_at: dict[str, float] = {}  # message body -> when it was sent
        self.ids = itertools.count(1)
        self.clients: list[InboxClient] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.live: set[str] = set()
        self.turns = max(1, round(preset.messages_per_s / max(2 * preset.rate, 1e-9)))
        self.http: aiohttp.ClientSession | None = None
        self.rest: list[tuple[aiohttp.ClientSession, str]] = []
        self.by_number: dict[str, Conversation] = {}
        self.rest_share = preset.rest_share
        # REST items under an Idempotency-Key (a failover run's retries must not create one
        # twice); off otherwise, since a keyed item is a commit more than the measured shape.
        self.keyed = False

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats.error(f"task:{type(task.exception()).__name__}")

    def body(self, prefix: str) -> str:
        body = f"{prefix}-{next(self.ids)} a typical short chat line of about fifty chars"
        self.sent_at[body] = time.perf_counter()
        return body

    # ------------------------------------------------------------------ agents

    async def connect_agents(self) -> float:
        started = time.perf_counter()
        # A bounded number of handshakes at a time: the host and this loop share two cores,
        # and the login brake counts logins in flight per address.
        gate = asyncio.Semaphore(16)

        async def one(creds: tuple[str, str, str]) -> None:
            agent_id, password, token = creds
            async with gate:
                client = InboxClient(self.agent_url, request_timeout=60.0)
                client.on_event = self._agent_handler(client)
                try:
                    await client.connect()
                    if password:
                        await client.login(agent_id, password)
                    else:
                        await client.login_token(token)
                    await client.set_presence("Available")
                except (ClientError, aiohttp.ClientError, OSError, TimeoutError) as e:
                    self.stats.error(f"agent_login:{type(e).__name__}")
                    with contextlib.suppress(Exception):
                        await client.close()
                    return
                self.clients.append(client)

        async def progress() -> None:
            while True:
                await asyncio.sleep(PROGRESS_EVERY)
                print(
                    f"  {len(self.clients)}/{len(self.agent_creds)} agents connected after "
                    f"{time.perf_counter() - started:.0f} s",
                    flush=True,
                )

        ticker = asyncio.get_running_loop().create_task(progress())
        try:
            await asyncio.gather(*(one(c) for c in self.agent_creds))
        finally:
            ticker.cancel()
        return time.perf_counter() - started

    def _agent_handler(self, client: InboxClient) -> Callable[[Event], None]:
        def handle(event: Event) -> None:
            # The reader delivers events in order; anything slow goes to its own task so one
            # agent's think time never holds up its later events.
            if isinstance(event, OfferEvent):
                self._offered(client, event.view)
            elif isinstance(event, MessageEvent):
                msg = event.message
                if msg.sender_kind != SenderKind.CUSTOMER:
                    return
                sent = self.sent_at.pop(msg.body, None)
                if sent is not None:
                    self.stats.customer_to_agent.append(time.perf_counter() - sent)
                self.stats.counts["agent_received"] += 1
                conv = self.by_number.get(msg.interaction)
                if conv is not None and msg.seq not in conv.answered:
                    conv.answered.add(msg.seq)
                    self.spawn(self._reply(client, conv))
            elif isinstance(event, Resync):
                # Events were lost (the router died, or this console's process): do what an
                # agent does looking at the redrawn console.
                self.stats.counts["agent_resyncs"] += 1
                self.stats.resyncs_at.append(time.perf_counter())
                for view in event.snapshot.offers:
                    self._offered(client, view)
                for record in event.snapshot.interactions:
                    conv = self.by_number.get(record.number)
                    if conv is not None and conv.accepted.is_set() and not conv.done.is_set():
                        self.spawn(self._catch_up(client, conv))

        return handle

    def _offered(self, client: InboxClient, view: OfferView) -> None:
        conv = self.by_key.get(view.customer_name)
        if conv is None or view.offer.id in conv.offers_taken:
            return  # someone else's (a --target host with live traffic), or taken already
        conv.offers_taken.add(view.offer.id)
        self.stats.arrival_to_offer.append(time.perf_counter() - conv.arrived)
        self.stats.offers_at.append((time.perf_counter(), conv.arrived))
        self.stats.counts["offers_received"] += 1
        self.spawn(self._take(client, view, conv))

    async def _catch_up(self, client: InboxClient, conv: Conversation) -> None:
        """Answer the customer lines of `conv` that came while events were lost."""
        assert conv.number is not None
        for attempt in itertools.count(1):
            try:
                reply = await client.request(GetTranscript(interaction=conv.number, newest=True))
                break
            except ClientError as e:
                # Unavailable while the new router is still taking over: ask again, as an
                # agent would look again.
                if e.code != "unavailable" or attempt == CATCH_UP_TRIES:
                    self.stats.error(f"transcript:{e.code}")
                    return
                await asyncio.sleep(RECONNECT_PAUSE * attempt)
        assert isinstance(reply, Transcript)
        for msg in reply.messages:
            if msg.sender_kind == SenderKind.CUSTOMER and msg.seq not in conv.answered:
                conv.answered.add(msg.seq)
                self.stats.counts["agent_caught_up"] += 1
                self.spawn(self._reply(client, conv))

    async def _take(self, client: InboxClient, view: OfferView, conv: Conversation) -> None:
        await asyncio.sleep(random.expovariate(1 / self.p.accept_think))
        accept_sent = time.perf_counter()
        try:
            await client.accept(view.offer.id)
        except ClientError as e:
            self.stats.error(f"accept:{e.code}")
            return
        number = view.interaction or conv.number
        if number is None:
            self.stats.error("accept:no_interaction")
            return
        conv.number = number
        self.by_number[number] = conv
        self.stats.counts["accepted"] += 1
        try:
            await client.send_message(number, self.body("a"))
        except ClientError as e:
            self.stats.error(f"send:{e.code}")
            return
        self.stats.accept_to_first_message.append(time.perf_counter() - accept_sent)
        self.stats.counts["agent_sent"] += 1
        conv.accepted.set()

    async def _reply(self, client: InboxClient, conv: Conversation) -> None:
        await asyncio.sleep(random.expovariate(1 / self.p.reply_think))
        number = conv.number
        assert number is not None
        conv.agent_answered += 1
        try:
            await client.send_message(number, self.body("a"))
            self.stats.counts["agent_sent"] += 1
            if conv.agent_answered >= conv.turns:
                await client.end_chat(number)
                await client.request(CloseRecord(interaction=number))
                self.stats.counts["closed"] += 1
        except ClientError as e:
            self.stats.error(f"agent:{e.code}")
        finally:
            conv.agent_reply.set()
            if conv.agent_answered >= conv.turns:
                conv.done.set()

    # ------------------------------------------------------------------ customers

    async def _widget_customer(self, conv: Conversation) -> None:
        """A widget chat as widget.js holds it: a socket that closes (its host killed, or
        moved off a router that died) is opened again and the chat resumed with its ticket,
        and lines sent but not acknowledged are sent again under the same client_msg_id."""
        assert self.http is not None
        link = _WidgetLink()
        turns = asyncio.get_running_loop().create_task(self._customer_turns(conv, post=link.send))
        done = asyncio.get_running_loop().create_task(conv.done.wait())
        give_up = time.perf_counter() + self.p.seconds + self.p.drain + 60
        try:
            while not conv.done.is_set():
                if link.tries and time.perf_counter() > give_up:
                    self.stats.error("widget:gave_up")
                    return
                if link.tries:
                    await asyncio.sleep(RECONNECT_PAUSE)
                link.tries += 1
                try:
                    async with self.http.ws_connect(self.widget_url, heartbeat=None) as ws:
                        if link.tries == 1:
                            conv.arrived = time.perf_counter()
                        if link.ticket is None:
                            if link.tries > 1:
                                # Lost before `started`: whether that chat exists is unknown.
                                self.stats.counts["widget_started_again"] += 1
                            email = f"{conv.key}@load.test"
                            hello = {"t": "start", "name": conv.key, "email": email}
                        else:
                            self.stats.counts["widget_resumed"] += 1
                            hello = {"t": "resume", "conversation": link.conversation,
                                     "ticket": link.ticket}  # fmt: skip
                        await ws.send_json(hello)
                        link.ws = ws
                        for cid, body in list(link.unacked.items()):
                            await ws.send_json({"t": "message", "body": body, "client_msg_id": cid})
                        reader = asyncio.get_running_loop().create_task(
                            self._widget_read(ws, conv, link)
                        )
                        waiting = {reader, done} if turns.done() else {reader, done, turns}
                        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                        link.ws = None
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await reader
                except (aiohttp.ClientError, OSError, TimeoutError) as e:
                    link.ws = None
                    self.stats.error(f"widget:{type(e).__name__}")
                if turns.done() and not turns.cancelled() and turns.exception() is not None:
                    self.stats.error(f"widget:{type(turns.exception()).__name__}")
                    return
        finally:
            for task in (turns, done):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await turns
            self.live.discard(conv.key)

    async def _widget_read(
        self, ws: aiohttp.ClientWebSocketResponse, conv: Conversation, link: _WidgetLink
    ) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            t = frame.get("t")
            if t == "started":
                conv.number = frame["conversation"]
                link.conversation, link.ticket = conv.number, frame["ticket"]
                self.by_number[conv.number] = conv
            elif t == "message" and frame.get("from") == "agent":
                sent = self.sent_at.pop(frame.get("body", ""), None)
                if sent is not None:
                    self.stats.agent_to_customer.append(time.perf_counter() - sent)
                self.stats.counts["customer_received"] += 1
            elif t == "ack":
                if link.unacked.pop(frame.get("client_msg_id"), None) is not None:
                    self.stats.counts["customer_acked"] += 1
            elif t == "error":
                self.stats.error(f"widget:{frame.get('code')}")
                cid = frame.get("client_msg_id")
                if frame.get("code") == "unavailable" and cid in link.unacked:
                    # widget.js shows the line "Not sent · click to retry"; the customer does.
                    self.spawn(self._retry(link, cid))

    async def _retry(self, link: _WidgetLink, cid: str) -> None:
        await asyncio.sleep(RECONNECT_PAUSE * 5)
        body = link.unacked.get(cid)
        if body is not None:
            await link.send(body)

    async def _rest_customer(self, conv: Conversation, slot: int) -> None:
        session, token = self.rest[slot % len(self.rest)]
        headers = {"Authorization": f"Bearer {token}"}
        if self.keyed:
            # Retried after a failover, the item must not be created twice.
            headers["Idempotency-Key"] = conv.key
        customer = {"id": conv.key, "name": conv.key, "contact": f"{conv.key}@load.test"}
        give_up = time.perf_counter() + self.p.seconds + self.p.drain + 60

        async def call(url: str, payload: dict[str, Any], what: str) -> dict[str, Any] | None:
            # 503 (no router yet) and a connection lost are tried again, as a client would.
            while True:
                try:
                    async with session.post(url, json=payload, headers=headers) as reply:
                        if reply.status in (200, 201):
                            data: dict[str, Any] = await reply.json()
                            return data
                        if reply.status != 503 or time.perf_counter() > give_up:
                            self.stats.error(f"{what}:{reply.status}")
                            return None
                except (aiohttp.ClientError, OSError) as e:
                    if time.perf_counter() > give_up:
                        self.stats.error(f"rest:{type(e).__name__}")
                        return None
                self.stats.counts["rest_retried"] += 1
                await asyncio.sleep(RECONNECT_PAUSE)

        async def post(body: str) -> None:
            url = f"{self.base}/api/v1/interactions/{conv.number}/messages"
            payload = {"customer_id": conv.key, "body": body, "client_msg_id": body[:32]}
            if await call(url, payload, "rest_message") is not None:
                self.stats.counts["customer_acked"] += 1

        try:
            conv.arrived = time.perf_counter()
            body = {"channel": "chat", "customer": customer}
            data = await call(f"{self.base}/api/v1/items", body, "rest_item")
            if data is None:
                return
            conv.number = data["interaction"]
            self.by_number[conv.number] = conv
            await self._customer_turns(conv, post=post)
            await asyncio.wait_for(conv.done.wait(), self.p.drain + 30)
        except (TimeoutError, KeyError) as e:
            self.stats.error(f"rest:{type(e).__name__}")
        finally:
            self.live.discard(conv.key)

    async def _customer_turns(self, conv: Conversation, post: Callable[[str], Any]) -> None:
        # The customer speaks after the agent's greeting and then after each reply, so the
        # conversation is a real exchange and the message rate follows from λ and `turns`.
        await asyncio.wait_for(conv.accepted.wait(), self.p.seconds + self.p.drain + 60)
        for _ in range(conv.turns):
            conv.agent_reply.clear()
            await asyncio.sleep(random.expovariate(1 / self.p.customer_think))
            body = self.body("c")
            await post(body)
            conv.customer_sent += 1
            self.stats.counts["customer_sent"] += 1
            await asyncio.wait_for(conv.agent_reply.wait(), 60)

    async def arrivals(self, seconds: float) -> None:
        rest_clients = max(1, len(self.rest))
        rest_rate_cap = rest_clients * REST_BUDGET_PER_CLIENT / (1 + self.turns)
        rest_share = min(self.p.rest_share, rest_rate_cap / max(self.p.rate, 1e-9))
        self.rest_share = rest_share
        deadline = time.perf_counter() + seconds
        n = 0
        next_at = time.perf_counter()
        while True:
            next_at += random.expovariate(self.p.rate)
            if next_at >= deadline:
                # The run lasts its seconds even when the next arrival falls after them: at a
                # rate of one every 20 s, the run measures the idle host, not nothing.
                await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
                break
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            n += 1
            key = f"cust-{n:07d}"
            kind = "rest" if random.random() < rest_share else "widget"
            conv = Conversation(key=key, kind=kind, arrived=time.perf_counter(), turns=self.turns)
            self.by_key[key] = conv
            self.live.add(key)
            self.stats.counts[f"arrivals_{kind}"] += 1
            if kind == "rest":
                self.spawn(self._rest_customer(conv, n))
            else:
                self.spawn(self._widget_customer(conv))

    async def open_rest_clients(self, tokens: list[str]) -> None:
        for i, token in enumerate(tokens):
            # Distinct loopback source addresses keep each simulated integration under the
            # per-address limit; 127.0.0.1 stays free for the agents and customers.
            local = ("127.0.1." + str(1 + i), 0)
            connector = aiohttp.TCPConnector(local_addr=local, limit=0)
            self.rest.append((aiohttp.ClientSession(connector=connector), token))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        for session, _ in self.rest:
            await session.close()
        if self.http is not None:
            await self.http.close()


# ---------------------------------------------------------------------------- the host


def host_config(max_message_length: int = 2000) -> str:
    return f"""# generated by bench.load
[host]
synchronous = "FULL"
max_pending_offers = 1

[[channel]]
name = "chat"
mode = "sync"

[[presence]]
name = "Available"
channels = ["chat"]

[[presence]]
name = "Away"
channels = []

[[presence]]
name = "Offline"

[[group]]
name = "{GROUP}"

[[queue]]
name = "{QUEUE}"
channel = "chat"
rule = "most_capacity"
groups = ["{GROUP}"]
offer_timeout = 30

[widget]
channel = "chat"
max_message_length = {max_message_length}
# Every simulated customer comes from this machine's address.
new_chats_per_address = 1000000
"""


async def provision(
    location: Path | str, agents: int, capacity: int, integrations: int
) -> tuple[list[tuple[str, str, str]], list[str], float]:
    """Agents and tokens written into a fresh store (a data directory or a postgresql://
    URL) before the host opens it."""
    started = time.perf_counter()
    store = await open_store(location)
    try:
        auth = Authenticator(store, session_ttl=HostSettings().session_ttl)
        ids = [f"agent{i:05d}" for i in range(agents)]
        await store.upsert_agents(
            Agent(
                id=agent_id,
                display_name=f"Load {agent_id}",
                capacity={"chat": capacity},
                universal_capacity=capacity,
                groups=(GROUP,),
            )
            for agent_id in ids
        )
        creds: list[tuple[str, str, str]] = []
        for i, agent_id in enumerate(ids):
            if i == 0:
                await auth.set_password(agent_id, PASSWORD)
                creds.append((agent_id, PASSWORD, ""))
            else:
                token, _ = await auth.create_api_token(
                    f"load-{agent_id}", agent_id, Role.AGENT, None
                )
                creds.append((agent_id, "", token))
        tokens = [
            (await auth.create_api_token(f"load-integration-{i}", None, Role.SUPERVISOR, None))[0]
            for i in range(integrations)
        ]
    finally:
        await store.close()
    return creds, tokens, time.perf_counter() - started


def proc_usage(pid: int) -> dict[str, float]:
    """CPU seconds (user+system) and peak RSS of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may contain spaces; fields are counted after its closing paren.
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return {"cpu_s": cpu, "peak_rss_mib": peak, "rss_mib": rss}


# ---------------------------------------------------------------------------- the cluster


async def create_database(server: str) -> str:
    """A new database on the PostgreSQL server of `server` (a URL whose user may create
    databases); returns its URL."""
    name = f"inbox_load_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(server, timeout=10)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


async def drop_database(server: str, url: str) -> None:
    conn = await asyncpg.connect(server, timeout=10)
    try:
        # FORCE: a host that did not stop cleanly may still hold connections.
        await conn.execute(f"DROP DATABASE IF EXISTS {database_name(url)} WITH (FORCE)")
    finally:
        await conn.close()


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def wait_for_workers(base: str, workers: int, timeout: float) -> None:
    """Until `workers` distinct processes have answered /healthz "ok". start_host returns when
    one does, but the kernel hands each new connection to any worker, and an edge that has not
    heard the router yet would refuse the agents it gets."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    # A new connection per request, so the kernel picks a worker each time.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        while len(seen) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(seen)} of {workers} workers ready after {timeout} s")
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                async with http.get(base + "/healthz") as reply:
                    body = await reply.json()
                if body.get("status") == "ok":
                    seen.add(str(body.get("process")))
            await asyncio.sleep(0.02)


async def kill_router(
    http: aiohttp.ClientSession, base: str, after: float, found: dict[str, Any]
) -> None:
    """--kill-router-at: SIGKILL the routing process `after` seconds into the arrivals, then
    poll /healthz (on whichever worker the port gives) until it names another router. Fills
    `found` as it goes: a run that ends first still reports what was seen."""
    await asyncio.sleep(after)
    killed = await router_pid(http, base)
    if killed is None:
        found["error"] = "no router named by /healthz"
        return
    found.update(router_pid=killed, killed_at=time.perf_counter())
    os.kill(killed, signal.SIGKILL)
    while True:
        await asyncio.sleep(0.02)
        with contextlib.suppress(aiohttp.ClientError, ValueError, OSError):
            now = await router_pid(http, base)
            if now is not None and now != killed:
                found.update(new_router_pid=now, new_router_named_at=time.perf_counter())
                return


def failover_report(
    found: dict[str, Any], offers_at: list[tuple[float, float]], resyncs_at: list[float]
) -> dict[str, Any]:
    """What the kill did, in seconds from it: when /healthz named the next router, when an
    agent got the first offer of a customer who arrived after the kill (routing again, end to
    end), the longest time without any offer reaching an agent around it, and when the agents'
    consoles were redrawn on the new router (their `Resync`: the moment each could be offered
    work again)."""
    killed = found.get("killed_at")
    if killed is None:
        return {"error": found.get("error", "the run ended before the kill")}
    named = found.get("new_router_named_at")
    later = [got for got, arrived in offers_at if arrived > killed]
    near = sorted(got for got, _ in offers_at if killed - 5 <= got <= killed + 60)
    resyncs = sorted(t - killed for t in resyncs_at if t > killed)
    gaps = [b - a for a, b in itertools.pairwise([killed - 5, *near])]
    return {
        "router_pid": found["router_pid"],
        "new_router_pid": found.get("new_router_pid"),
        "healthz_names_new_router_s": None if named is None else round(named - killed, 3),
        "first_offer_of_a_later_arrival_s": round(min(later) - killed, 3) if later else None,
        "longest_time_without_an_offer_s": round(max(gaps), 3) if gaps else None,
        "offers_received_within_10s_after": sum(1 for got in near if got <= killed + 10),
        "resyncs": len(resyncs),
        "resync_s": {
            name: round(resyncs[max(0, math.ceil(q * len(resyncs)) - 1)], 3)
            for name, q in (("first", 0), ("p50", 0.5), ("p90", 0.9), ("last", 1))
        }
        if resyncs
        else None,
    }


async def router_pid(http: aiohttp.ClientSession, base: str) -> int | None:
    """The routing process's pid, from /healthz: a router names itself, an edge the router it
    follows (process ids end with -PID-HEX, core.host.bus.process_id); None without a bus."""
    async with http.get(base + "/healthz") as reply:
        body = await reply.json()
    process = body.get("process") if body.get("role") == "router" else body.get("router")
    return int(str(process).rsplit("-", 2)[1]) if process else None


def host_labels(host: HostProcess, router: int | None) -> dict[int, str]:
    """The host's processes by role: with --workers, the supervisor and its workers (router or
    edge); else the one process, "router" in a cluster and "host" when it serves alone."""

    def role(pid: int) -> str:
        return "router" if pid == router else "host" if router is None else "edge"

    workers = children(host.proc.pid)
    if not workers:
        return {host.proc.pid: role(host.proc.pid)}
    return {host.proc.pid: "supervisor", **{pid: role(pid) for pid in workers}}


async def sample_cpu(meter: CpuMeter, every: float = 1.0) -> None:
    while True:
        await asyncio.sleep(every)
        meter.sample()


def cpu_report(
    meter: CpuMeter,
    generator_s: float,
    elapsed: float,
    conversations: float,
    messages: float,
    steps: float,
) -> dict[str, Any]:
    """CPU seconds per process and per role, in cores (seconds per second of the run), in ms
    per conversation closed during the run, and in µs per durable message and per routing
    step: past saturation conversations are left open at the end, and the messages and steps
    count the work done on them."""
    by_role = {**meter.per_label(), "generator": round(generator_s, 2)}
    return {
        "processes": {
            str(pid): {"role": role, "cpu_s": cpu, "cores": round(cpu / elapsed, 3)}
            for pid, (role, cpu) in meter.per_process().items()
        },
        "by_role": {
            role: {
                "cpu_s": cpu,
                "cores": round(cpu / elapsed, 3),
                "ms_per_conversation": round(cpu * 1000 / conversations, 3)
                if conversations
                else 0.0,
                "us_per_message": round(cpu * 1e6 / messages, 1) if messages else 0.0,
                "us_per_routing_step": round(cpu * 1e6 / steps, 1) if steps else 0.0,
            }
            for role, cpu in sorted(by_role.items())
        },
        "conversations": conversations,
        "durable_messages": messages,
    }


async def scrape(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with session.get(base + "/metrics") as reply:
        text = await reply.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def mean_ms(after: dict[str, float], before: dict[str, float], histogram: str) -> float:
    count = delta(after, before, histogram + "_count")
    return round(delta(after, before, histogram + "_sum") / count * 1000, 3) if count else 0.0


def share_over(
    after: dict[str, float], before: dict[str, float], histogram: str, bound: str = "0.005"
) -> float:
    """The share of a histogram's observations in the run above `bound` seconds (one of its
    bucket bounds)."""
    count = delta(after, before, histogram + "_count")
    within = delta(after, before, f'{histogram}_bucket{{le="{bound}"}}')
    return round((count - within) / count, 4) if count else 0.0


async def watch_lag(samples: list[float], every: float = 0.005) -> None:
    while True:
        due = time.perf_counter() + every
        await asyncio.sleep(every)
        samples.append(max(0.0, time.perf_counter() - due))


# ---------------------------------------------------------------------------- baselines


async def ws_echo_baseline(seconds: float, clients: int = 8) -> dict[str, float]:
    """Round trips/s of a bare aiohttp WebSocket echo on loopback, in this process's loop,
    with the same concurrency shape as the generator (several sockets, one loop)."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    runner, base = await serve_loopback(app)
    counts = [0] * clients
    payload = json.dumps({"t": "message", "body": "x" * 60, "client_msg_id": "0" * 24})
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.perf_counter() + seconds

            async def client(i: int) -> None:
                async with session.ws_connect(base.replace("http://", "ws://") + "/ws") as ws:
                    while time.perf_counter() < deadline:
                        await ws.send_str(payload)
                        await ws.receive()
                        counts[i] += 1

            started = time.perf_counter()
            await asyncio.gather(*(client(i) for i in range(clients)))
            elapsed = time.perf_counter() - started
    finally:
        await runner.cleanup()
    return {"round_trips": sum(counts), "seconds": round(elapsed, 3),
            "round_trips_per_s": round(sum(counts) / elapsed, 1)}  # fmt: skip


async def sqlite_baseline(seconds: float) -> dict[str, Any]:
    # The store's own naive mode: one appender, one transaction and fsync per message.
    return await store_micro._measure("naive", seconds, 1, "FULL")


# ---------------------------------------------------------------------------- the run


async def run(args: argparse.Namespace, preset: Preset) -> dict[str, Any]:
    report: dict[str, Any] = {"preset": args.label, "config": preset.__dict__.copy()}
    report["pinned"] = bool(args.pin)
    root = Path(tempfile.mkdtemp(prefix="inbox-load-"))
    hosts: list[HostProcess] = []  # the host started; with --via-edge, then the edge
    load: Load | None = None
    scratch: str | None = None  # the database to drop at the end, made on --store's server
    store_url: str | None = None
    try:
        print(f"baselines ({preset.baseline_seconds:g} s each)...", flush=True)
        report["baseline_ws_echo"] = await ws_echo_baseline(preset.baseline_seconds)
        report["baseline_sqlite_naive"] = await sqlite_baseline(preset.baseline_seconds)
        print(
            f"  ws echo {report['baseline_ws_echo']['round_trips_per_s']:.0f} round trips/s, "
            f"sqlite naive {report['baseline_sqlite_naive']['messages_per_s']} commits/s",
            flush=True,
        )

        turns = max(1, round(preset.messages_per_s / max(2 * preset.rate, 1e-9)))
        rest_requests = preset.rate * preset.rest_share * (1 + turns)
        integrations = max(1, min(200, math.ceil(rest_requests / REST_BUDGET_PER_CLIENT)))
        if args.target:
            base = args.target
            creds = [(f"agent{i:05d}", args.password, "") for i in range(preset.agents)]
            tokens = [args.api_token] if args.api_token else []
            report["startup"] = {"provision_s": 0.0, "host_start_s": 0.0}
        else:
            data = root / "data"
            data.mkdir()
            config = root / "inbox.toml"
            config.write_text(host_config())
            location: Path | str = data
            if args.store:
                store_url = args.store if args.store_as_is else await create_database(args.store)
                scratch = None if args.store_as_is else store_url
                location = store_url
                report["store"] = redact(store_url)
                print(f"store {redact(store_url)}", flush=True)
            print(
                f"provisioning {preset.agents} agents, {integrations} integrations...", flush=True
            )
            creds, tokens, provision_s = await provision(
                location, preset.agents, preset.capacity, integrations
            )
            if preset.open_conversations:
                print(f"seeding {preset.open_conversations} open conversations...", flush=True)
                # At most capacity - 3 each, so every agent keeps room for the live traffic.
                per_agent = max(1, preset.capacity - 3)
                provision_s += await seed_open_conversations(
                    location, [c[0] for c in creds], preset.open_conversations, QUEUE, per_agent
                )
            started = time.perf_counter()
            host = await asyncio.to_thread(
                start_host,
                root,
                STARTUP_TIMEOUT,
                config=config,
                store=store_url,
                bus=args.bus,
                workers=args.workers,
                cpus={HOST_CPU} if args.pin else None,
            )
            hosts.append(host)
            if args.pin:
                os.sched_setaffinity(0, os.sched_getaffinity(0) - {HOST_CPU})
            if args.workers > 1:
                await wait_for_workers(host.base_url, args.workers, STARTUP_TIMEOUT)
            if args.via_edge:
                # Started after the router has won: it serves as an edge, and all the
                # traffic goes to it, so the router terminates no socket itself.
                edge = await asyncio.to_thread(
                    start_host,
                    root / "edge",
                    STARTUP_TIMEOUT,
                    config=config,
                    store=store_url,
                    bus=args.bus,
                )
                hosts.append(edge)
            report["startup"] = {
                "provision_s": round(provision_s, 2),
                "host_start_s": round(time.perf_counter() - started, 2),
            }
            base = hosts[-1].base_url
            pids = [h.proc.pid for h in hosts]
            print(f"host pids {pids}, traffic to {base} ({report['startup']})", flush=True)

        load = Load(preset, base, creds)
        load.keyed = args.kill_router_at is not None
        load.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        await load.open_rest_clients(tokens)
        connect_s = await load.connect_agents()
        report["startup"]["agents_connect_s"] = round(connect_s, 2)
        report["startup"]["agents_connected"] = len(load.clients)
        print(f"{len(load.clients)} agents connected in {connect_s:.1f} s", flush=True)

        # The generator's own state from here on lives to the end: keep the collector off it
        # (the host does the same at start), so the generator's pauses stay out of the figures.
        gc.collect()
        gc.freeze()
        router = await router_pid(load.http, base)
        database = None if store_url is None else database_name(store_url)

        def processes() -> dict[int, str]:
            found = {pid: role for h in hosts for pid, role in host_labels(h, router).items()}
            if store_url is not None:
                found.update(postgres_labels(database))
            if args.bus:
                found.update(dict.fromkeys(named("nats-server"), "nats_server"))
            return found

        meter = CpuMeter(processes)
        before = await scrape(load.http, base)
        meter.sample()
        self_before = resource.getrusage(resource.RUSAGE_SELF)
        busy_before = machine_busy()
        started = time.perf_counter()

        async def progress() -> None:
            while True:
                await asyncio.sleep(PROGRESS_EVERY)
                s = load.stats
                offer = percentiles(s.arrival_to_offer[-2000:])
                print(
                    f"[{time.perf_counter() - started:6.1f} s] arrivals "
                    f"{s.counts['arrivals_widget'] + s.counts['arrivals_rest']} offers "
                    f"{s.counts['offers_received']} accepted {s.counts['accepted']} closed "
                    f"{s.counts['closed']} msgs c→a {s.counts['agent_received']} "
                    f"a→c {s.counts['customer_received']} live {len(load.live)} "
                    f"offer p95 {offer['p95']} ms errors {sum(s.errors.values())}",
                    flush=True,
                )

        ticker = asyncio.get_running_loop().create_task(progress())
        lag = asyncio.get_running_loop().create_task(watch_lag(load.stats.generator_lag))
        sampler = asyncio.get_running_loop().create_task(sample_cpu(meter))
        failover: dict[str, Any] = {}
        if args.kill_router_at is not None:
            killer = asyncio.get_running_loop().create_task(
                kill_router(load.http, base, args.kill_router_at, failover)
            )
            load.tasks.add(killer)
        try:
            await load.arrivals(preset.seconds)
            arrivals_done = time.perf_counter()
            drain_deadline = arrivals_done + preset.drain
            while load.live and time.perf_counter() < drain_deadline:
                await asyncio.sleep(0.1)
        finally:
            ticker.cancel()
            lag.cancel()
            sampler.cancel()
        elapsed = time.perf_counter() - started
        meter.sample()
        self_after = resource.getrusage(resource.RUSAGE_SELF)
        busy = machine_busy() - busy_before
        after = await scrape(load.http, base)

        s = load.stats
        report["seconds"] = round(elapsed, 2)
        report["arrival_seconds"] = round(arrivals_done - started, 2)
        report["turns_per_conversation"] = load.turns
        report["rest_share"] = round(load.rest_share, 3)
        report["unfinished_conversations"] = len(load.live)
        # Where the unfinished ones stopped: not offered, offered but not accepted, or in talk.
        stages: Counter[str] = Counter()
        for key in load.live:
            conv = load.by_key[key]
            stage = (
                "talking" if conv.accepted.is_set() else "numbered" if conv.number else "waiting"
            )
            stages[f"{conv.kind}_{stage}"] += 1
        report["unfinished_by_stage"] = dict(sorted(stages.items()))
        if args.kill_router_at is not None:
            # The figures from /metrics below are the new router's, counted from its start.
            report["failover"] = failover_report(
                failover, load.stats.offers_at, load.stats.resyncs_at
            )
        report["latency_ms"] = {
            "arrival_to_offer": percentiles(s.arrival_to_offer),
            "customer_to_agent": percentiles(s.customer_to_agent),
            "agent_to_customer": percentiles(s.agent_to_customer),
            "accept_to_first_message": percentiles(s.accept_to_first_message),
            # How late this process's own loop ran a 5 ms timer: a floor under every latency
            # above, since they are all timed by this loop.
            "generator_loop_lag": percentiles(s.generator_lag),
        }
        report["counts"] = dict(sorted(s.counts.items()))
        report["errors"] = dict(sorted(s.errors.items()))
        offers = {
            m.group(1): delta(after, before, name)
            for name in after
            if (m := re.fullmatch(r'inbox_offers_total\{outcome="([^"]+)"\}', name))
        }
        steps = delta(after, before, "inbox_routing_step_seconds_count")
        durable = delta(after, before, "inbox_message_seconds_count")
        commits = delta(after, before, "inbox_store_commits_total")
        report["host"] = {
            "routing_steps": steps,
            "routing_steps_per_s": round(steps / elapsed, 1),
            "offers_by_outcome": offers,
            "durable_messages": durable,
            "durable_messages_per_s": round(durable / elapsed, 1),
            "store_commits": commits,
            "store_slow_commits": delta(after, before, "inbox_store_slow_commits_total"),
            "store_commit_max_ms": round(after.get("inbox_store_commit_seconds_max", 0) * 1000, 1),
            "messages_per_commit": round(durable / commits, 2) if commits else 0.0,
            "store_writes_per_s": round(
                delta(after, before, "inbox_store_commit_batch_size_sum") / elapsed, 1
            ),
            # The share of the run the one writer spent in transactions: near 1, it is the limit.
            "store_writer_busy": round(
                delta(after, before, "inbox_store_write_seconds_total") / elapsed, 3
            ),
            # The host's own view of its cost per step, commit included: tells a slow router
            # from a slow socket path when the end-to-end latencies grow.
            "routing_step_mean_ms": mean_ms(after, before, "inbox_routing_step_seconds"),
            "message_mean_ms": mean_ms(after, before, "inbox_message_seconds"),
            # The host's part of the 5 ms latency target: the share of steps and messages
            # that took longer inside the host alone (from its own histograms), apart from
            # the sockets, the network and this generator's own loop.
            "routing_steps_over_5ms": share_over(after, before, "inbox_routing_step_seconds"),
            "messages_over_5ms": share_over(after, before, "inbox_message_seconds"),
            # From a new conversation's start to its item's step committed and announced.
            "arrival_mean_ms": mean_ms(after, before, "inbox_arrival_seconds"),
            "arrivals_over_5ms": share_over(after, before, "inbox_arrival_seconds"),
            "gc_passes": delta(after, before, "inbox_gc_pause_seconds_count"),
            "gc_pause_mean_ms": mean_ms(after, before, "inbox_gc_pause_seconds"),
            "gc_passes_over_10ms": delta(after, before, "inbox_gc_pause_seconds_count")
            - delta(after, before, 'inbox_gc_pause_seconds_bucket{le="0.01"}'),
            "open_items_end": after.get("inbox_open_items", 0.0),
            "connected_agents_end": after.get("inbox_connected_agents", 0.0),
            "seeded_open_conversations": preset.open_conversations,
        }
        gen_cpu = (self_after.ru_utime + self_after.ru_stime) - (
            self_before.ru_utime + self_before.ru_stime
        )
        report["generator"] = {"cpu_s": round(gen_cpu, 2), "cpu_share": round(gen_cpu / elapsed, 3)}
        report["cpu"] = cpu_report(meter, gen_cpu, elapsed, s.counts["closed"], durable, steps)
        # The scraped host's own account of where its CPU went (/metrics), per conversation.
        closed = s.counts["closed"]
        report["host"]["cpu_by_part_ms_per_conversation"] = {
            part: round(
                delta(after, before, f'inbox_cpu_seconds_total{{part="{part}"}}') * 1000 / closed, 3
            )
            for part in ("process", "event_loop", "routing_engine", "store_writer")
            if closed and f'inbox_cpu_seconds_total{{part="{part}"}}' in after
        }
        report["cpu"]["router_pid"] = router
        measured = sum(c for r, c in meter.per_process().values()) + gen_cpu
        report["cpu"]["machine"] = {
            "cores": os.cpu_count(),
            "busy_cores": round(busy / elapsed, 3),
            # Everything else on the machine: other users' work, and this run's processes the
            # meter does not know of (the kernel's, short-lived ones between samples).
            "other_cores": round((busy - measured) / elapsed, 3),
        }
        if hosts:
            mine = {pid for h in hosts for pid in host_labels(h, router)}
            cpu = sum(c for pid, (_, c) in meter.per_process().items() if pid in mine)
            # The largest process's: with --workers, the router's as a rule.
            usage = max((proc_usage(pid) for pid in mine), key=lambda u: u["peak_rss_mib"])
            report["host"].update(
                cpu_s=round(cpu, 2),
                cpu_share=round(cpu / elapsed, 3),
                peak_rss_mib=round(usage["peak_rss_mib"], 1),
                rss_mib=round(usage["rss_mib"], 1),
            )
        echo = report["baseline_ws_echo"]["round_trips_per_s"]
        naive = report["baseline_sqlite_naive"]["messages_per_s"]
        report["ratios"] = {
            "durable_messages_vs_sqlite_naive": round(durable / elapsed / max(naive, 1e-9), 3),
            # A host message is at least two socket hops (in and out), an echo round trip two.
            "durable_messages_vs_ws_echo": round(durable / elapsed / max(echo, 1e-9), 3),
        }
        return report
    finally:
        if load is not None:
            await load.close()
        for h in reversed(hosts):
            stop_host(h)
        if hosts:
            report["host_log_tail"] = hosts[0].log.read_text(errors="replace").splitlines()[-5:]
        if args.keep:
            print(f"kept {root}" + (f" and {redact(scratch)}" if scratch else ""), flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
            if scratch is not None:
                await drop_database(args.store, scratch)


def table(report: dict[str, Any]) -> str:
    lines = [f"preset {report['preset']}: {report['seconds']} s, startup {report['startup']}"]
    lines.append(f"{'latency (ms)':28} {'n':>7} {'p50':>9} {'p95':>9} {'p99':>9} {'max':>9}")
    for name, p in report["latency_ms"].items():
        lines.append(
            f"{name:28} {p['n']:>7} {p['p50']:>9} {p['p95']:>9} {p['p99']:>9} {p['max']:>9}"
        )
    h = report["host"]
    echo = report["baseline_ws_echo"]["round_trips_per_s"]
    naive = report["baseline_sqlite_naive"]["messages_per_s"]
    lines += [
        f"routing steps/s       {h['routing_steps_per_s']:>10}   offers {h['offers_by_outcome']}",
        f"host mean ms: routing step {h['routing_step_mean_ms']}, message {h['message_mean_ms']}"
        f", arrival {h['arrival_mean_ms']}; over 5 ms in the host: "
        f"{h['routing_steps_over_5ms']:.2%} of steps, {h['messages_over_5ms']:.2%} of "
        f"messages, {h['arrivals_over_5ms']:.2%} of arrivals",
        f"host gc: {h['gc_passes']:.0f} passes, mean {h['gc_pause_mean_ms']} ms, "
        f"{h['gc_passes_over_10ms']:.0f} over 10 ms",
        f"durable messages/s    {h['durable_messages_per_s']:>10}   "
        f"({h['messages_per_commit']} per commit; {h['store_slow_commits']:.0f} commits over "
        f"25 ms, slowest {h['store_commit_max_ms']} ms)",
        f"store writes/s        {h['store_writes_per_s']:>10}   "
        f"(the writer busy {h['store_writer_busy']} of the run)",
        f"  vs sqlite naive     {naive:>10} commits/s  -> "
        f"{report['ratios']['durable_messages_vs_sqlite_naive']}x",
        f"  vs ws echo          {echo:>10} round trips/s -> "
        f"{report['ratios']['durable_messages_vs_ws_echo']}x",
    ]
    if "cpu_s" in h:
        lines.append(
            f"host cpu {h['cpu_s']} s ({h['cpu_share']} of a core), "
            f"peak RSS {h['peak_rss_mib']} MiB; generator cpu {report['generator']['cpu_s']} s"
        )
    cpu = report["cpu"]
    lines.append(
        f"{'cpu by role':28} {'cpu s':>9} {'cores':>9} {'ms/conv':>9} {'µs/msg':>9} "
        f"{'µs/step':>9}   ({cpu['conversations']:.0f} conversations closed; "
        f"router pid {cpu['router_pid']})"
    )
    for role, c in cpu["by_role"].items():
        lines.append(
            f"{role:28} {c['cpu_s']:>9} {c['cores']:>9} {c['ms_per_conversation']:>9} "
            f"{c['us_per_message']:>9} {c['us_per_routing_step']:>9}"
        )
    parts = h.get("cpu_by_part_ms_per_conversation")
    if parts:
        lines.append(
            "host cpu by part, ms/conv (/metrics): "
            + ", ".join(f"{part} {ms}" for part, ms in parts.items())
        )
    per_process = ", ".join(
        f"{pid} {p['role']} {p['cpu_s']}"
        for pid, p in cpu["processes"].items()
        if p["role"] in ("host", "router", "edge", "supervisor")
    )
    lines.append(f"host processes (pid role cpu s): {per_process}")
    machine = cpu["machine"]
    lines.append(
        f"machine: {machine['busy_cores']} of {machine['cores']} cores busy, "
        f"{machine['other_cores']} of them outside the processes above"
    )
    if "failover" in report:
        lines.append(f"router killed: {report['failover']}")
    lines.append(f"counts {report['counts']}")
    lines.append(
        f"errors {report['errors'] or 'none'}; unfinished {report['unfinished_conversations']}"
        f" {report['unfinished_by_stage']}"
    )
    return "\n".join(lines)


def run_in_loop(coro: Any) -> Any:
    """The generator runs on uvloop when installed, like the host: it simulates thousands of
    consoles in one process, and its own slowness would be counted as the host's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    parser.add_argument("--target", help="an existing host's base URL (http://HOST:PORT)")
    parser.add_argument("--password", default=PASSWORD, help="with --target: agents' password")
    parser.add_argument("--api-token", help="with --target: an integration API token for REST")
    parser.add_argument("--agents", type=int)
    parser.add_argument("--rate", type=float, help="customer arrivals per second (λ)")
    parser.add_argument("--messages-per-s", type=float)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--rest-share", type=float, help="fraction of arrivals over REST")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument(
        "--store",
        help="PostgreSQL instead of SQLite: a postgresql:// URL of a server to create (and drop) "
        "a scratch database on, or with --store-as-is the database to use",
    )
    parser.add_argument(
        "--store-as-is", action="store_true", help="use --store's database itself, keep it"
    )
    parser.add_argument("--bus", help="a nats:// URL: the host is a cluster (needs --store)")
    parser.add_argument(
        "--workers", type=int, default=1, help="host processes on the port (needs --bus)"
    )
    parser.add_argument(
        "--via-edge",
        action="store_true",
        help="start one more host (an edge, on its own port) and send all traffic through it",
    )
    parser.add_argument(
        "--kill-router-at",
        type=float,
        metavar="SECONDS",
        help="SIGKILL the router this long into the arrivals (needs --workers 2 or more) and "
        "report how long until routing again; customers then retry, resume and resend",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the host on CPU 0 and this generator on the others (Linux), so neither "
        "takes the other's core: what a host with its clients elsewhere sees",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (host log, db) and the database"
    )
    args = parser.parse_args(argv)
    if args.store and not is_postgres_url(args.store):
        parser.error(f"--store wants a postgresql:// URL, not {args.store!r}")
    if args.bus and not args.store:
        parser.error("--bus needs --store: the hosts of a cluster share a PostgreSQL database")
    if (args.workers != 1 or args.via_edge) and not args.bus:
        parser.error("--workers and --via-edge need --bus (and --store)")
    if args.kill_router_at is not None and args.workers < 2:
        parser.error("--kill-router-at needs --workers 2 or more: another worker takes over")
    if args.target and (args.store or args.bus or args.workers != 1 or args.via_edge):
        parser.error("--store, --bus, --workers, --via-edge: for the host the bench starts")
    if args.pin and (args.target or args.workers != 1 or args.via_edge):
        parser.error("--pin is for one host process the bench starts")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        parser.error("--pin needs two CPUs or more")
    # A reply that arrives after its request timed out is logged per frame by the client; under
    # overload that is thousands of lines drowning the progress, and the timeouts are counted.
    logging.getLogger("inbox_tui.client").setLevel(logging.ERROR)
    preset = PRESETS[args.preset]
    overrides = {
        "agents": args.agents,
        "rate": args.rate,
        "messages_per_s": args.messages_per_s,
        "seconds": args.seconds,
        "rest_share": args.rest_share,
    }
    changed = {k: v for k, v in overrides.items() if v is not None}
    preset = Preset(**{**preset.__dict__, **changed})
    # The report says what ran: "standard" alone only when nothing was overridden.
    args.label = args.preset + "".join(f" {k}={v:g}" for k, v in changed.items())
    report = run_in_loop(run(args, preset))
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
