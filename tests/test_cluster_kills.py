"""Jepsen-style: a real three-process cluster on one real PostgreSQL database, under load from
real clients, its processes killed with SIGKILL at random moments (the router and the
others), its router's lease session ended with pg_terminate_backend and its router frozen
(SIGSTOP); then what the clients were told, and the invariants, are checked against what
PostgreSQL holds.

It runs twice, once per kind of cluster:

- `standby`: no bus; the hosts that do not route stand by and answer 503. The clients
  (tests/jepsen.py) know every host's address and, as a sticky load balancer would, stay on a
  host until it answers 503 or cannot be reached, then go to the next one.
- `edges`: on a NATS bus (the `nats_url` fixture), every host serves: the one that routes
  directly, the others as edges relaying sockets and HTTP to it. Each request and each socket
  (at connect and at every reconnect) goes to any host at random, as a load balancer without
  stickiness would, and to another one after a 503 (an edge that hears no router), a refusal
  or a socket closed before the welcome (an edge that cannot open it on the router). An
  edge closes the sockets it relays to a router that is gone with 1012, and the agents resume
  through any host. Killing an edge drops its clients' sockets and the requests it was
  relaying; a frozen router also gets what the edges relayed to it before they heard of the
  new one.

REST integration customers arrive continuously, faster than the agents can serve them (one chat
item under an Idempotency-Key, then customer messages, each retried with its client_msg_id until
acknowledged); three agents on the agent socket handle each offer in one of several ways
(complete the chat; leave it in wrap-up; write slowly; never write; reject; let it expire), so
every deadline of the queue is armed and fires during the run. Each client records what a host
acknowledged (201, or 200 for a replay or a duplicate; MessageAck).

The faults, in an order shuffled by the seed (printed: INBOX_CLUSTER_SEED replays the plan and
the choices of victims and moments, not the timing of the load), each at a random moment of a
routing cluster (exactly one host routes: without a bus, the one host that answers /healthz
"ok"; on a bus, where edges answer "ok" too, the one host whose role is "router"), the hosts
killed restarted, as standbys or edges, once another one routes:

- INBOX_CLUSTER_KILLS kill -9s: one in six of them the router's heir (the router killed, then
  the host that wins the role after it, the moment its epoch is stored), half of the rest the
  router, half a standby or an edge;
- per six kills (at least one): a pg_terminate_backend of the lease session (the router must
  stand by or serve as an edge, another take over), and a freeze: the router stopped
  (SIGSTOP), its lease session ended, another host takes over, then the frozen one carries on
  (SIGCONT) with its clients' requests waiting, believing for a moment that it still routes;
- per ten kills: a pause, the router stopped until the server drops its silent lease by
  itself (about 10 s).

Afterwards, with the load stopped, the agents still connected (idle) and one router up longer
than an offer's timeout (on a bus, every other host an edge relaying to it), one REPEATABLE
READ snapshot of the database must show:

- every acknowledged item and message stored exactly once, and no REST item stored that no
  client was told of;
- no interaction with two owners, every work item and its record in agreement (state, owner);
- nobody over capacity, per channel or universally, counting held items and pending offers;
- no item with two pending offers, every offered item with its pending offer, and every open
  item with the deadlines its queue asks for (offer expiry, max wait, first reply, wrap-up),
  none of them past: a router that took over re-armed them and fired what fell due;
- no chat taken back for want of a first reply from an agent whose reply is stored;
- no item waiting while a connected, available agent has room (work conservation);
- the store's key columns in agreement with the records they index.

And no client was ever answered "internal" (a 500 or the socket's code), nor did any host log
an exception's traceback: a killed, deposed or frozen host's requests fail in foreseen ways.

INBOX_CLUSTER_KILLS sets the number of kills per mode (default 6, about 25 s a mode; the
issue's long run is 20, `-k edges` or `-k standby` runs one mode), and INBOX_CLUSTER_REPORT
names a file whose name, with the mode added (cluster.json: cluster.standby.json and
cluster.edges.json), receives each run's figures as JSON. The hosts' logs, the snapshot
(stored.json) and the clients' history (history.json) stay in the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from bench.host_process import HostProcess, health_body, start_host, stop_host
from core.config import HostConfig, load_config
from core.model import AgentStatus, AuditEntry, InteractionRecord, Message, Offer, WorkItem
from tests.conftest import postgres_admin
from tests.hosting import fast_config_text
from tests.jepsen import (
    LATENESS,
    MIXED,
    History,
    Stored,
    agent,
    check_acknowledged,
    check_answers,
    check_capacity,
    check_deadlines,
    check_items_and_records,
    check_replies,
    check_work_conserving,
    customer,
    free_port,
    integration_token,
)

KILLS = int(os.environ.get("INBOX_CLUSTER_KILLS", "6"))
SEED = os.environ.get("INBOX_CLUSTER_SEED")
REPORT = os.environ.get("INBOX_CLUSTER_REPORT")
HOSTS = 3
AGENTS = ("alice", "bob", "chloe")
PREFIX = "cluster-customer-"
OFFER_TIMEOUT = 1.5
# One chat queue whose every deadline is armed within a run: offers expire, waits run out
# (the customer is told), unanswered chats are reclaimed, wrap-up ends by itself.
QUEUES = f"""
[[queue]]
name = "general"
channel = "chat"
rule = "most_capacity"
groups = ["tier1", "tier2"]
offer_timeout = {OFFER_TIMEOUT}
max_wait = 4
reply_deadline = 6
wrap_up_time = 8
"""
ARRIVAL_GAP = (0.1, 0.6)  # seconds between two customers' arrivals
FAULT_GAP = (0.0, 1.5)  # seconds from a routing cluster to the next fault
TAKEOVER = 30.0  # seconds a takeover (or a restart) may take before the test gives up
LEASE = "inbox-tui router lease"  # the lease session's application_name


@dataclass
class Cluster:
    """HOSTS host processes on one database, each on a port and a root of its own that a
    restart reuses."""

    root: Path
    config: Path
    store: str
    bus: str | None = None  # with a bus, a host that does not route is an edge and serves
    ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(HOSTS)])
    procs: list[HostProcess | None] = field(default_factory=lambda: [None] * HOSTS)
    starts: Counter[int] = field(default_factory=Counter)

    def slot_root(self, i: int) -> Path:
        return self.root / f"host{i}"

    def base_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def agent_url(self, i: int) -> str:
        return f"ws://127.0.0.1:{self.ports[i]}/agent"

    @property
    def other(self) -> str:
        """What a host that does not route is: an edge on a bus, a standby without."""
        return "standby" if self.bus is None else "edge"

    async def start(self, i: int, *, first: bool = False) -> None:
        """Start host i and wait for it: the `first` host of the cluster until it routes,
        any other until it stands by, or, as an edge, until it hears the router."""
        ready = "ok" if first or self.bus is not None else "standby"
        log = self.slot_root(i) / "host.log"
        if log.exists():  # the killed run's log stays, for a failure's report
            shutil.move(log, log.with_suffix(f".{self.starts[i]}.log"))
        self.starts[i] += 1
        self.procs[i] = await asyncio.to_thread(
            start_host,
            self.slot_root(i),
            TAKEOVER,
            config=self.config,
            port=self.ports[i],
            store=self.store,
            bus=self.bus,
            ready=ready,
        )

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.proc.kill()
        proc.proc.wait()
        self.procs[i] = None

    async def healths(self) -> list[dict[str, Any] | None]:
        """Every host's /healthz answer, None for one that does not answer."""
        return await asyncio.gather(
            *(asyncio.to_thread(health_body, self.base_url(i)) for i in range(HOSTS))
        )

    async def routers(self) -> list[int]:
        """The hosts that say they route: without a bus the ones that answer "ok" (the
        others stand by), on a bus the ones whose role is "router" (edges say "ok" too)."""
        if self.bus is None:
            return [i for i, h in enumerate(await self.healths()) if h and h["status"] == "ok"]
        return [i for i, h in enumerate(await self.healths()) if h and h.get("role") == "router"]

    async def router(self, other_than: int | None = None) -> int:
        """The one host that routes (waiting until exactly one does, and it is not
        `other_than`)."""
        deadline = time.monotonic() + TAKEOVER
        while True:
            routers = await self.routers()
            if len(routers) == 1 and routers[0] != other_than:
                return routers[0]
            assert time.monotonic() < deadline, f"routing: {routers}\n{self.logs()}"
            await asyncio.sleep(0.05)

    def logs(self) -> str:
        out = []
        for i in range(HOSTS):
            for log in sorted(self.slot_root(i).glob("host*.log")):
                tail = log.read_text(errors="replace").splitlines()[-40:]
                out.append(f"--- {log}\n" + "\n".join(tail))
        return "\n".join(out)

    def tracebacks(self) -> list[str]:
        """Every exception a host logged with its traceback (a bug's mark), with the line
        that says what failed."""
        found = []
        for log in sorted(self.root.glob("host*/host*.log")):
            lines = log.read_text(errors="replace").splitlines()
            for n, line in enumerate(lines):
                if line.startswith("Traceback"):
                    last = next((x for x in lines[n + 1 :] if not x.startswith((" ", "^"))), "")
                    found.append(f"{log.parent.name}/{log.name}: {lines[n - 1]} ... {last}")
        return found

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None:
                stop_host(proc)

    def pid(self, i: int) -> int:
        proc = self.procs[i]
        assert proc is not None
        return proc.proc.pid

    async def lease(self) -> tuple[int, int | None]:
        """The router lease's epoch and the host holding it (by its port, None for none)."""
        conn = await asyncpg.connect(self.store)
        try:
            epoch, holder = await conn.fetchrow("SELECT epoch, holder FROM router_lease")
        finally:
            await conn.close()
        port = int(holder.split(":")[-2]) if holder else None
        return epoch, self.ports.index(port) if port in self.ports else None

    async def deposed(self, i: int) -> None:
        """Wait until host i, deposed, no longer routes: it stands by, or, as an edge, it
        serves again, relaying to the router that replaced it."""
        deadline = time.monotonic() + TAKEOVER
        while True:
            body = await asyncio.to_thread(health_body, self.base_url(i))
            if body is not None and self.bus is None and body["status"] == "standby":
                return
            if body is not None and body.get("role") == "edge" and body["status"] == "ok":
                return
            assert time.monotonic() < deadline, (
                f"host {i} never {self.other}: {body}\n{self.logs()}"
            )
            await asyncio.sleep(0.05)

    async def check_edges_follow(self, router: int) -> None:
        """On a bus, every host but the router is an edge that serves, relaying to it."""
        if self.bus is None:
            return
        healths = await self.healths()
        process = (healths[router] or {}).get("process")
        for i, body in enumerate(healths):
            if i != router:
                assert body is not None and body.get("role") == "edge", (i, body)
                assert (body["status"], body["router"]) == ("ok", process), (i, body, process)


# The faults; each returns the hosts it hit, after which the cluster routes again.


async def kill_router(cluster: Cluster, router: int, rng: random.Random) -> list[int]:
    cluster.kill(router)
    return [router]


async def kill_other(cluster: Cluster, router: int, rng: random.Random) -> list[int]:
    """kill -9 of a host that does not route: a standby, or an edge with its clients'
    sockets and requests."""
    victim = rng.choice([i for i in range(HOSTS) if i != router])
    cluster.kill(victim)
    return [victim]


async def kill_router_and_its_heir(cluster: Cluster, router: int, rng: random.Random) -> list[int]:
    """Two kills in a row: the router, then the host that wins the role after it, the moment
    its epoch is stored (rebuilding from the database, or just done): the third takes over."""
    epoch, _ = await cluster.lease()
    cluster.kill(router)
    deadline = time.monotonic() + TAKEOVER
    while (lease := await cluster.lease())[0] == epoch or lease[1] is None:
        assert time.monotonic() < deadline, f"nobody took over\n{cluster.logs()}"
        await asyncio.sleep(0.005)
    heir = lease[1]
    cluster.kill(heir)
    return [router, heir]


async def end_lease_session(
    cluster: Cluster, router: int, rng: random.Random, *, wait: bool = True
) -> list[int]:
    """The database ends the router's lease session (pg_terminate_backend): it must stop
    routing at once and stand by (or serve as an edge); another takes over."""
    name = cluster.store.rsplit("/", 1)[1]
    ended = postgres_admin(
        "SELECT coalesce(bool_or(pg_terminate_backend(pid)), false) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND application_name = '{LEASE}'"
    )
    assert ended, "no lease session to end"
    if wait:
        await cluster.router(other_than=router)
        await cluster.deposed(router)
    return []


async def pause_router(cluster: Cluster, router: int, rng: random.Random) -> list[int]:
    """The router freezes (SIGSTOP: a stall, a long GC pause) until its lease session times
    out and another host routes, then carries on (SIGCONT) believing for a moment that it
    still routes, with whatever its clients sent meanwhile (on a bus, what the edges relayed
    to it too): it must store no routing decision and stand by (or serve as an edge). About
    LEASE_TIMEOUT_S (10 s) of the run."""
    os.kill(cluster.pid(router), signal.SIGSTOP)
    try:
        await cluster.router(other_than=router)
    finally:
        os.kill(cluster.pid(router), signal.SIGCONT)
    await cluster.deposed(router)
    return []


async def freeze_router(cluster: Cluster, router: int, rng: random.Random) -> list[int]:
    """pause_router, the quick way: the router freezes, the database ends its lease session
    at once (as it would a stalled one's), another host takes over, and the frozen one wakes
    up a moment later with its clients' frames waiting."""
    os.kill(cluster.pid(router), signal.SIGSTOP)
    try:
        await end_lease_session(cluster, router, rng, wait=False)
        await cluster.router(other_than=router)
        await asyncio.sleep(rng.uniform(0.0, 2.0))
    finally:
        os.kill(cluster.pid(router), signal.SIGCONT)
    await cluster.deposed(router)
    return []


FAULTS = {
    "kill router": kill_router,
    "kill standby": kill_other,
    "kill edge": kill_other,
    "kill router and heir": kill_router_and_its_heir,
    "end lease session": end_lease_session,
    "pause router": pause_router,
    "freeze router": freeze_router,
}


def fault_plan(rng: random.Random, other: str) -> list[str]:
    """KILLS kill -9s (one in six of them a router's heir's), half of the rest the router's,
    half an `other` host's (a standby or an edge); per six kills a lease session ended and a
    freeze (at least one of each), and per ten a pause; in a random order."""
    heirs = KILLS // 6
    single = KILLS - 2 * heirs
    plan = ["kill router and heir"] * heirs
    plan += ["kill router"] * (single - single // 2) + [f"kill {other}"] * (single // 2)
    plan += ["end lease session"] * max(1, KILLS // 6) + ["freeze router"] * max(1, KILLS // 6)
    plan += ["pause router"] * (KILLS // 10)
    rng.shuffle(plan)
    return plan


async def chaos(
    cluster: Cluster, rng: random.Random, stop: asyncio.Event, faults: list[dict[str, Any]]
) -> None:
    """Every fault of the plan at a random moment of a routing cluster, the hosts it killed
    restarted (as standbys or edges) once another routes; then `stop`. Each one's figures go
    to `faults`."""
    for n, fault in enumerate(fault_plan(rng, cluster.other), 1):
        await asyncio.sleep(rng.uniform(*FAULT_GAP))
        router = await cluster.router()
        started = time.monotonic()
        killed = await FAULTS[fault](cluster, router, rng)
        new = await cluster.router(other_than=None if fault == f"kill {cluster.other}" else router)
        took = time.monotonic() - started
        await asyncio.gather(*(cluster.start(i) for i in killed))
        faults.append(
            {
                "fault": fault,
                "router": router,
                "killed": killed,
                "router_after": new,
                "routing_again_s": round(took, 3),
            }
        )
        print(f"fault {n}: {fault} (router {router}, killed {killed}): {new} after {took:.2f} s")
    stop.set()


async def arrivals(
    bases: list[str], token: str, history: History, stop: asyncio.Event, *, sticky: bool
) -> int:
    """Customers arriving until `stop`; returns how many came once all of them are done."""
    customers = []
    while not stop.is_set():
        cid = f"{PREFIX}{len(customers)}"
        # A third without an Idempotency-Key: their chats are made in one commit.
        keyed = len(customers) % 3 > 0
        arrival = customer(cid, bases, token, history, stop, sticky=sticky, keyed=keyed)
        customers.append(asyncio.ensure_future(arrival))
        await asyncio.sleep(random.uniform(*ARRIVAL_GAP))
    await asyncio.gather(*customers)
    return len(customers)


RECORDS = (InteractionRecord, WorkItem, Offer, Message)
_decoders = {cls: msgspec.json.Decoder(cls) for cls in RECORDS}
_audit = msgspec.json.Decoder(AuditEntry)
_status = msgspec.json.Decoder(AgentStatus)


async def read_stored(store: str) -> Stored:
    """One consistent snapshot of the database, read with SQL, not through the store; the
    key columns checked against the records they index on the way."""
    conn = await asyncpg.connect(store)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            records = [
                _decoders[InteractionRecord].decode(data)
                for (data,) in await conn.fetch("SELECT data FROM interactions ORDER BY number")
            ]
            items = []
            for state, data in await conn.fetch("SELECT state, data FROM work_items"):
                items.append(item := _decoders[WorkItem].decode(data))
                assert state == item.state, (state, item)
            offers = []
            for item_id, state, data in await conn.fetch("SELECT item, state, data FROM offers"):
                offer = _decoders[Offer].decode(data)
                assert (item_id, state) == (offer.item, offer.state), (item_id, state, offer)
                if state == "pending":
                    offers.append(offer)
            messages: dict[str, list[Message]] = {}
            for number, seq, msg_id, data in await conn.fetch(
                "SELECT interaction, seq, client_msg_id, data FROM messages"
            ):
                message = _decoders[Message].decode(data)
                assert (number, seq, msg_id) == (
                    message.interaction,
                    message.seq,
                    message.client_msg_id,
                ), message
                messages.setdefault(number, []).append(message)
            audit = [
                _audit.decode(data)
                for (data,) in await conn.fetch("SELECT data FROM audit ORDER BY id")
            ]
            statuses = [
                _status.decode(data)
                for (data,) in await conn.fetch("SELECT data FROM agent_statuses")
            ]
            participants: dict[str, set[str]] = {}
            for agent_id, number in await conn.fetch("SELECT agent, interaction FROM participants"):
                participants.setdefault(number, set()).add(agent_id)
    finally:
        await conn.close()
    for record in records:
        listed = {p.agent for p in record.participants}
        assert participants.get(record.number, set()) == listed, (record, participants)
    return Stored(records, items, offers, messages, audit, statuses)


def check_logs(cluster: Cluster) -> None:
    """No host logged an exception's traceback: a killed or deposed host's clients, commits
    and timers fail in ways foreseen, each answered and logged as such."""
    found = cluster.tracebacks()
    assert not found, "\n".join(found)


@pytest.mark.parametrize("mode", ["standby", "edges"])
async def test_kill_9_anywhere_in_a_cluster_loses_doubles_and_breaks_nothing(
    tmp_path: Path, postgres_url: str, mode: str, request: pytest.FixtureRequest
) -> None:
    """`standby`: without a bus, the hosts that do not route answer 503 and the clients are
    sticky; `edges`: on a bus, every host serves and each request and socket goes to any."""
    bus = request.getfixturevalue("nats_url") if mode == "edges" else None
    seed = int(SEED) if SEED else random.randrange(2**32)
    print(f"INBOX_CLUSTER_SEED={seed} INBOX_CLUSTER_KILLS={KILLS} mode={mode}")
    rng = random.Random(seed)
    began = time.monotonic()
    config_path = tmp_path / "inbox.toml"
    config_path.write_text(fast_config_text(QUEUES))
    config: HostConfig = load_config(config_path)
    token = await integration_token(postgres_url, "cluster-test")
    cluster = Cluster(tmp_path, config_path, postgres_url, bus)
    sticky = bus is None  # where every host serves, the balancer needs no stickiness
    history = History()
    stop = asyncio.Event()
    faults: list[dict[str, Any]] = []
    try:
        await cluster.start(0, first=True)
        await asyncio.gather(cluster.start(1), cluster.start(2))
        bases = [cluster.base_url(i) for i in range(HOSTS)]
        urls = [cluster.agent_url(i) for i in range(HOSTS)]
        agents = asyncio.gather(
            *(agent(a, urls, history, stop, MIXED, sticky=sticky) for a in AGENTS)
        )
        customers = asyncio.ensure_future(arrivals(bases, token, history, stop, sticky=sticky))
        try:
            await chaos(cluster, rng, stop, faults)
            arrived = await customers
            clients = await agents
        finally:
            stop.set()
            customers.cancel()
            agents.cancel()
        try:
            # The load is over, the agents still connected: one router, up longer than an
            # offer's timeout, has fired whatever fell due (on taking over, or on time since).
            router = await cluster.router()
            await asyncio.sleep(OFFER_TIMEOUT + LATENESS + 0.5)
            cutoff = time.time() - LATENESS
            stored = await read_stored(postgres_url)
            assert await cluster.router() == router, "the router changed while quiet"
            await cluster.check_edges_follow(router)
            # So they count as present for work conservation.
            assert [c.status for c in clients] == ["connected"] * len(AGENTS)
        finally:
            await asyncio.gather(*(c.close() for c in clients))
    finally:
        cluster.stop()
    # Left in tmp_path for a failure's analysis, with the hosts' logs.
    (tmp_path / "stored.json").write_bytes(msgspec.json.encode(stored))
    (tmp_path / "history.json").write_bytes(
        msgspec.json.encode({**vars(history), "messages": sorted(history.messages.items())})
    )
    assert history.items and history.messages, "the load acknowledged nothing"
    check_answers(history)
    check_acknowledged(history, stored, PREFIX)
    check_items_and_records(stored)
    check_capacity(stored, config)
    check_deadlines(stored, config, cutoff)
    check_replies(stored, cutoff)
    check_work_conserving(stored, config, AGENTS)
    check_logs(cluster)
    states = Counter(i.state.value for i in stored.items)
    report = {
        "mode": mode,
        "seed": seed,
        "kills": sum(len(f["killed"]) for f in faults),
        "lease_sessions_ended": sum(f["fault"] == "end lease session" for f in faults),
        "freezes": sum(f["fault"] == "freeze router" for f in faults),
        "pauses": sum(f["fault"] == "pause router" for f in faults),
        "faults": faults,
        "customers": arrived,
        "acknowledged_items": len(history.items),
        "items_without_a_key": len(history.unkeyed),
        "unanswered_without_a_key": sum(history.unkeyed.values()),
        "acknowledged_messages": len(history.messages),
        "stored_items": dict(states),
        "stored_messages": sum(len(m) for m in stored.messages.values()),
        "pending_offers": len(stored.pending_offers),
        "retries": dict(history.retries),
        "seconds": round(time.monotonic() - began, 1),
    }
    print(json.dumps(report, indent=2))
    if REPORT:  # one file per mode: cluster.json gives cluster.standby.json, cluster.edges.json
        path = Path(REPORT)
        path.with_name(f"{path.stem}.{mode}{path.suffix}").write_text(json.dumps(report, indent=2))
