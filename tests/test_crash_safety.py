"""Crash safety, Jepsen-style: a real host under load from real clients, killed with SIGKILL
at random moments and restarted on the same data directory, then the clients' record of what
was acknowledged is checked against the store.

The clients keep their own history: a REST integration records each work item and each
customer message the host acknowledged (201, or 200 for a replay); agents on the agent socket
record each message the host acknowledged (MessageAck). They retry through the outages with
the same client_msg_id, and the same Idempotency-Key for an item, as real clients do; an item
is retried until acknowledged, however long the outages last. Afterwards:

- every acknowledged message is stored exactly once, with its body;
- every acknowledged work item and its interaction exist, exactly once, routed (its work item
  stored), and they are the ones acknowledged;
- no REST interaction is stored that was not acknowledged: none was left behind by a request
  whose answer was lost, which a retry would have duplicated;
- no work item is held by two agents and no agent is over capacity;
- after a restart, nothing that fell due while the host was down is still pending: offers,
  first-reply and wrap-up deadlines fire on start (re-armed), so no pending offer or deadline
  is in the past once the host has been up longer than the offer timeout;
- every work item and its interaction record agree (state, owner).

A second test kills at the worst moment rather than a random one: right after a routing step's
commit returns (tests/routing_crash_child.py), and checks that the record agrees with its item.

INBOX_CRASH_KILLS sets the number of kills (CI default below; run with 25 locally), and
INBOX_CRASH_REPORT names a file that receives the run's figures as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from bench.host_process import INBOX_TUI, HostProcess, console_env, start_host, stop_host
from core.auth import Authenticator
from core.client import ClientError, InboxClient
from core.config import HostSettings, load_config
from core.demo import DEMO_PASSWORD
from core.model import (
    OPEN_ITEM_STATES,
    InteractionRecord,
    InteractionState,
    ItemState,
    OfferState,
    Role,
    WorkItem,
)
from core.protocol import CloseRecord, OfferEvent
from store import DB_FILENAME, open_store
from tests.hosting import fast_config_text

ROOT = Path(__file__).resolve().parent.parent
KILLS = int(os.environ.get("INBOX_CRASH_KILLS", "4"))
REPORT = os.environ.get("INBOX_CRASH_REPORT")
AGENTS = ("alice", "bob", "chloe")
CUSTOMERS = 6
LINES = 4  # per side of each conversation
OFFER_TIMEOUT = 1.5  # tests/hosting.py FAST_QUEUES
RETRY = 0.1
# How long, after the last restart, a customer keeps retrying an item not yet acknowledged.
ITEM_PATIENCE = 30.0


@dataclass
class History:
    """What the clients were told was durable."""

    items: dict[str, str] = field(default_factory=dict)  # customer id -> interaction
    item_ids: dict[str, str] = field(default_factory=dict)  # customer id -> work item
    messages: dict[tuple[str, str], str] = field(default_factory=dict)  # (number, id) -> body
    retries: Counter[str] = field(default_factory=Counter)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def integration_token(root: Path) -> str:
    """Created in the store before the first start, as `inbox-tui admin token create` does."""
    store = await open_store(root / "data")
    try:
        auth = Authenticator(store, session_ttl=HostSettings().session_ttl)
        token, _ = await auth.create_api_token("crash-test", None, Role.SUPERVISOR, None)
    finally:
        await store.close()
    return token


async def customer(
    n: int, base: str, token: str, history: History, stop: asyncio.Event, spread: float = 0.0
) -> None:
    """A REST integration's customer: one chat, retried under one Idempotency-Key until
    acknowledged (even after the last kill, so none is left half-made), then LINES messages,
    each retried until 201 while the run lasts."""
    cid = f"crash-customer-{n}"
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"item-{cid}"}
    await asyncio.sleep(random.uniform(0, spread))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
        number = None
        give_up: float | None = None
        while number is None:
            if stop.is_set():
                give_up = give_up or time.monotonic() + ITEM_PATIENCE
                assert time.monotonic() < give_up, f"{cid}: no item acknowledged"
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                body = {"channel": "chat", "customer": {"id": cid, "name": cid}}
                async with http.post(f"{base}/api/v1/items", json=body, headers=headers) as r:
                    if r.status in (200, 201):
                        created = await r.json()
                        number = history.items[cid] = created["interaction"]
                        history.item_ids[cid] = created["item"]
                        if r.status == 200:  # a retry whose first answer was lost
                            history.retries["item_replayed"] += 1
                        break
                    # The host stopping (503) or this token over its rate: retried. No other 4xx.
                    assert r.status >= 500 or r.status == 429, (r.status, await r.text())
            history.retries["item"] += 1
            await asyncio.sleep(RETRY)
        for i in range(LINES):
            msg_id, text = f"{cid}-{i}", f"customer line {cid} {i}"
            while not stop.is_set():
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    url = f"{base}/api/v1/interactions/{number}/messages"
                    payload = {"customer_id": cid, "body": text, "client_msg_id": msg_id}
                    async with http.post(url, json=payload, headers=headers) as r:
                        if r.status == 201:
                            history.messages[(number, msg_id)] = text
                            break
                        if r.status == 404:  # the chat was closed meanwhile: nothing to say
                            return
                history.retries["customer_message"] += 1
                await asyncio.sleep(RETRY)
            await asyncio.sleep(random.uniform(0.05, 0.3))


async def agent(name: str, url: str, history: History, stop: asyncio.Event) -> None:
    """Logs in, goes Available, takes every offer, writes LINES lines, ends and closes."""
    client = InboxClient(url, backoff=(0.05, 0.3), request_timeout=20.0)
    offers: asyncio.Queue[OfferEvent] = asyncio.Queue()
    client.on_event = lambda e: offers.put_nowait(e) if isinstance(e, OfferEvent) else None
    await client.connect()
    await client.login(name, DEMO_PASSWORD)
    await client.set_presence("Available")
    chats: set[asyncio.Task[None]] = set()

    async def work(offer: OfferEvent) -> None:
        number = offer.view.interaction
        assert number is not None
        try:
            await client.accept(offer.view.offer.id)
        except (ClientError, TimeoutError):
            return  # expired or rerouted while the host was down: someone else has it
        for i in range(LINES):
            msg_id, text = f"{name}-{number}-{i}", f"agent line {name} {number} {i}"
            try:
                ack = await client.send_message(number, text, msg_id)
            except (ClientError, TimeoutError):
                history.retries["agent_message_failed"] += 1
                return
            history.messages[(number, ack.message.client_msg_id)] = text
            await asyncio.sleep(random.uniform(0.05, 0.3))
        with contextlib.suppress(ClientError, TimeoutError):
            await client.end_chat(number)
            await client.request(CloseRecord(interaction=number))

    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                offer = await asyncio.wait_for(offers.get(), 0.2)
                task = asyncio.get_running_loop().create_task(work(offer))
                chats.add(task)
                task.add_done_callback(chats.discard)
        await asyncio.gather(*chats, return_exceptions=True)
    finally:
        await client.close()


async def killer(
    root: Path, config: Path, port: int, hosts: list[HostProcess], stop: asyncio.Event
) -> list[float]:
    """KILLS times: wait a random moment, SIGKILL, restart on the same data and port.
    Returns how long each restart took to answer /healthz."""
    restarts = []
    for _ in range(KILLS):
        await asyncio.sleep(random.uniform(0.3, 1.5))
        hosts[-1].proc.kill()
        hosts[-1].proc.wait()
        started = time.monotonic()
        hosts.append(await asyncio.to_thread(start_host, root, config=config, port=port))
        restarts.append(time.monotonic() - started)
    stop.set()
    return restarts


# The record state each item state must come with.
RECORD_STATE = {
    ItemState.QUEUED: InteractionState.NEW,
    ItemState.OFFERED: InteractionState.NEW,
    ItemState.ACCEPTED: InteractionState.WORK_IN_PROGRESS,
    ItemState.WRAP_UP: InteractionState.WRAP_UP,
    ItemState.CLOSED: InteractionState.CLOSED_COMPLETE,
    ItemState.CANCELLED: InteractionState.CLOSED_ABANDONED,
    ItemState.ABANDONED: InteractionState.CLOSED_ABANDONED,
}


def disagreement(item: WorkItem, record: InteractionRecord) -> str | None:
    """How the stored record contradicts its stored work item, if it does: its state, or who
    owns it (an item held by an agent has that agent as the record's one owner)."""
    if record.state != RECORD_STATE[item.state]:
        return f"{record.number} is {record.state} but its item {item.id} is {item.state}"
    owners = [p.agent for p in record.participants if p.left_at is None and p.role == "owner"]
    held = item.state in (ItemState.ACCEPTED, ItemState.WRAP_UP)
    if owners != ([item.agent] if held else []) and item.state in OPEN_ITEM_STATES:
        return f"{record.number} is owned by {owners} but its item {item.id} by {item.agent}"
    return None


async def check_store(root: Path, history: History, up_until: float) -> dict[str, int]:
    """`up_until`: when the last host was still running, longer than the offer timeout after
    its start: anything due before then should have fired."""
    config = load_config(root / "inbox.toml")
    capacity = {a.id: (a.capacity, a.universal_capacity) for a in config.agents}
    store = await open_store(root / "data")
    try:
        # Every acknowledged item and message, exactly once; no item nobody was told of.
        for cid, number in history.items.items():
            record = await store.get_interaction(number)
            assert record is not None and record.customer == cid, (cid, number)
            assert record.item == history.item_ids[cid], (record, history.item_ids[cid])
            item = await store.get_item(record.item)
            assert item is not None, record.item
            assert disagreement(item, record) is None, disagreement(item, record)
        rest = Counter(
            r.customer
            for r in await store.list_interactions(limit=100_000)
            if r.customer.startswith("crash-customer-")
        )
        twice = {cid: n for cid, n in rest.items() if n > 1}
        assert not twice, f"items stored more than once: {twice}"
        assert set(rest) == set(history.items), set(rest) ^ set(history.items)
        stored_bodies: Counter[tuple[str, str]] = Counter()
        for number in set(history.items.values()) | {n for n, _ in history.messages}:
            for m in await store.list_messages(number, limit=10_000):
                stored_bodies[(number, m.body)] += 1
                key = (number, m.client_msg_id)
                if key in history.messages:
                    assert history.messages[key] == m.body, key
        for (number, _), body in history.messages.items():
            assert stored_bodies[(number, body)] == 1, (number, body, stored_bodies[(number, body)])

        # One holder per item, nobody over capacity.
        items = await store.load_open_items()
        held: Counter[tuple[str, str]] = Counter()
        total: Counter[str] = Counter()
        for item in items:
            assert item.state in OPEN_ITEM_STATES
            if item.state in (ItemState.ACCEPTED, ItemState.WRAP_UP) and item.agent:
                held[(item.agent, item.channel)] += item.weight
                total[item.agent] += item.weight
            record = await store.get_interaction(item.interaction or "")
            if record is not None:
                owners = [p.agent for p in record.participants if p.left_at is None]
                assert len(owners) <= 1, (record.number, owners)
        for (agent_id, channel), n in held.items():
            per_channel, universal = capacity[agent_id]
            assert n <= per_channel.get(channel, 0) and total[agent_id] <= universal

        # Nothing that fell due is still waiting: the last start fired it.
        cutoff = up_until - 0.5  # the timer loop's own lateness
        for offer in await store.load_pending_offers():
            assert offer.state == OfferState.PENDING
            assert offer.deadline > cutoff, offer
        for item in items:
            for due in (item.reply_by, item.wrap_up_until):
                assert due is None or due > cutoff, item
        return {
            "open_items": len(items),
            "stored_rest_interactions": sum(rest.values()),
            "stored_messages": sum(stored_bodies.values()),
        }
    finally:
        await store.close()


async def test_sigkill_under_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    config = tmp_path / "inbox.toml"
    config.write_text(fast_config_text())
    token = await integration_token(tmp_path)
    port = free_port()
    hosts = [await asyncio.to_thread(start_host, tmp_path, config=config, port=port)]
    base = hosts[0].base_url
    history = History()
    stop = asyncio.Event()
    try:
        clients = [
            *(agent(a, hosts[0].agent_url, history, stop) for a in AGENTS),
            # Arrivals spread over the run: chats start before, between and after the kills.
            *(
                customer(n, base, token, history, stop, spread=KILLS * 0.9)
                for n in range(CUSTOMERS * KILLS)
            ),
        ]
        restarts, *_ = await asyncio.gather(killer(tmp_path, config, port, hosts, stop), *clients)
        # The last start must have had time to fire what fell due while it was down.
        await asyncio.sleep(OFFER_TIMEOUT + 0.5)
        up_until = time.time()
    finally:
        stop_host(hosts[-1])
    figures = await check_store(tmp_path, history, up_until)
    assert history.items and history.messages, "the load acknowledged nothing"
    report = {
        "kills": KILLS,
        "restart_s_max": round(max(restarts), 3),
        "acknowledged_items": len(history.items),
        "acknowledged_messages": len(history.messages),
        "retries": dict(history.retries),
        **figures,
    }
    if REPORT:
        Path(REPORT).write_text(json.dumps(report, indent=2))


@pytest.mark.parametrize("state", [ItemState.ACCEPTED, ItemState.WRAP_UP, ItemState.CLOSED])
async def test_a_kill_right_after_a_routing_commit_leaves_item_and_record_in_step(
    tmp_path: Path, state: ItemState
) -> None:
    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.routing_crash_child", str(tmp_path), state.value],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.stdout == "COMMITTED\n", (child.stdout, child.stderr)
    assert child.returncode == -signal.SIGKILL, child.stderr
    store = await open_store(tmp_path)
    try:
        (record,) = await store.list_interactions()
        item = await store.get_item(record.item)
        assert item is not None and item.state == state
        assert disagreement(item, record) is None, disagreement(item, record)
    finally:
        await store.close()


async def test_a_second_host_on_the_same_data_is_refused_and_corrupts_nothing(
    tmp_path: Path,
) -> None:
    config = tmp_path / "inbox.toml"
    config.write_text(fast_config_text())
    token = await integration_token(tmp_path)
    first = await asyncio.to_thread(start_host, tmp_path, config=config)
    history = History()
    try:
        stop = asyncio.Event()
        load = asyncio.gather(*(customer(n, first.base_url, token, history, stop) for n in (1, 2)))
        second = await asyncio.to_thread(
            subprocess.run,
            [
                str(INBOX_TUI),
                "--server",
                "--listen",
                "127.0.0.1:0",
                "--data",
                str(tmp_path / "data"),
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=console_env(tmp_path / "second-env"),
        )
        # It names the lock and who holds it, and says what to do.
        assert second.returncode == 2, second.stderr
        assert "is locked by another inbox-tui process" in second.stderr
        assert f"(pid {first.proc.pid})" in second.stderr
        # The first host never noticed: it took work while the second was refused.
        await asyncio.sleep(1.0)
        stop.set()
        await load
        async with (
            aiohttp.ClientSession() as http,
            http.get(first.base_url + "/healthz") as reply,
        ):
            assert reply.status == 200
    finally:
        stop_host(first)
    assert history.items, "the first host took no work"
    store = await open_store(tmp_path / "data")
    try:
        for number in history.items.values():
            assert await store.get_interaction(number) is not None
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "data" / DB_FILENAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
