"""Crash safety, Jepsen-style: a real host under load from real clients, killed with SIGKILL
at random moments and restarted on the same data directory, then the clients' record of what
was acknowledged is checked against the store.

The clients keep their own history: a REST integration records each work item and each
customer message the host acknowledged (201, or 200 for a replay); agents on the agent socket
record each message the host acknowledged (MessageAck). They retry through the outages with
the same client_msg_id, and the same Idempotency-Key for an item, as real clients do; an item
is retried until acknowledged, however long the outages last. A third of the customers ask for
their item without a key (it is then stored in one commit with its first routing step), as
integrations that send none do. Afterwards:

- every acknowledged message is stored exactly once, with its body;
- every acknowledged work item and its interaction exist, exactly once, routed (its work item
  stored), and they are the ones acknowledged;
- no REST interaction is stored that was not acknowledged: none was left behind by a request
  whose answer was lost, which a retry would have duplicated (without a key, one per request
  that got no answer may be);
- no interaction is stored without its work item;
- no work item is held by two agents and no agent is over capacity;
- after a restart, nothing that fell due while the host was down is still pending: offers,
  first-reply and wrap-up deadlines fire on start (re-armed), so no pending offer or deadline
  is in the past once the host has been up longer than the offer timeout, and every offered
  item has its one pending offer;
- every work item and its interaction record agree (state, owner);
- no chat is reclaimed for want of a first reply from an agent whose reply is stored;
- no client was ever answered "internal" (a 500, or the socket's code).

The clients and the checks are tests/jepsen.py's, shared with tests/test_cluster_kills.py
(the same against three hosts on one PostgreSQL database).

A second test kills at the worst moment rather than a random one: right after a routing step's
commit returns (tests/routing_crash_child.py), and checks that the record agrees with its item.

INBOX_CRASH_KILLS sets the number of kills (CI default below; run with 25 locally), and
INBOX_CRASH_REPORT names a file that receives the run's figures as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from bench.host_process import INBOX_TUI, HostProcess, console_env, start_host, stop_host
from core.client import InboxClient
from core.config import load_config
from core.model import OPEN_ITEM_STATES, AuditEntry, ItemState
from store import DB_FILENAME, open_store
from tests.hosting import fast_config_text
from tests.jepsen import (
    LATENESS,
    History,
    Stored,
    agent,
    check_acknowledged,
    check_answers,
    check_capacity,
    check_deadlines,
    check_items_and_records,
    check_replies,
    customer,
    disagreement,
    free_port,
    integration_token,
)

ROOT = Path(__file__).resolve().parent.parent
KILLS = int(os.environ.get("INBOX_CRASH_KILLS", "4"))
REPORT = os.environ.get("INBOX_CRASH_REPORT")
AGENTS = ("alice", "bob", "chloe")
CUSTOMERS = 6
PREFIX = "crash-customer-"
OFFER_TIMEOUT = 1.5  # tests/hosting.py FAST_QUEUES


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


async def finished(agent: Coroutine[Any, Any, InboxClient]) -> None:
    client = await agent
    await client.close()


async def check_store(root: Path, history: History, up_until: float) -> dict[str, int]:
    """`up_until`: when the last host was still running, longer than the offer timeout after
    its start: anything due before then should have fired."""
    config = load_config(root / "inbox.toml")
    store = await open_store(root / "data")
    try:
        records = [
            r for r in await store.list_interactions(limit=100_000) if r.customer.startswith(PREFIX)
        ]
        # Each record's item now, and the item each customer was acknowledged (the same one
        # unless the conversation was reopened since).
        wanted = {r.item for r in records} | set(history.item_ids.values())
        items = [i for item_id in wanted if (i := await store.get_item(item_id)) is not None]
        pending_offers = await store.load_pending_offers()
        messages = {r.number: await store.list_messages(r.number, limit=10_000) for r in records}
    finally:
        await store.close()
    with sqlite3.connect(root / "data" / DB_FILENAME) as db:  # the store has no reader of it
        rows = db.execute("SELECT data FROM audit ORDER BY id").fetchall()
    audit = [msgspec.json.decode(data, type=AuditEntry) for (data,) in rows]
    stored = Stored(records, items, pending_offers, messages, audit)
    check_answers(history)
    check_acknowledged(history, stored, PREFIX)
    check_items_and_records(stored)
    check_capacity(stored, config)
    check_deadlines(stored, config, up_until - LATENESS)
    check_replies(stored, up_until - LATENESS)
    return {
        "open_items": sum(i.state in OPEN_ITEM_STATES for i in items),
        "stored_rest_interactions": len(records),
        "stored_messages": sum(len(m) for m in stored.messages.values()),
    }


async def test_sigkill_under_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    config = tmp_path / "inbox.toml"
    config.write_text(fast_config_text())
    token = await integration_token(tmp_path / "data")
    port = free_port()
    hosts = [await asyncio.to_thread(start_host, tmp_path, config=config, port=port)]
    base = hosts[0].base_url
    history = History()
    stop = asyncio.Event()
    try:
        clients = [
            *(finished(agent(a, [hosts[0].agent_url], history, stop)) for a in AGENTS),
            # Arrivals spread over the run: chats start before, between and after the kills.
            *(
                customer(f"{PREFIX}{n}", [base], token, history, stop, KILLS * 0.9, keyed=n % 3 > 0)
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
        "items_without_a_key": len(history.unkeyed),
        "unanswered_without_a_key": sum(history.unkeyed.values()),
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
    token = await integration_token(tmp_path / "data")
    first = await asyncio.to_thread(start_host, tmp_path, config=config)
    history = History()
    try:
        stop = asyncio.Event()
        load = asyncio.gather(
            *(customer(f"{PREFIX}{n}", [first.base_url], token, history, stop) for n in (1, 2))
        )
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
