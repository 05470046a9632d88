"""Jepsen-style runs against real hosts: clients that keep a history of what the hosts
acknowledged, and the checks of that history and of the invariants against what is stored.

tests/test_crash_safety.py (one SQLite host, killed and restarted) and
tests/test_cluster_kills.py (three hosts on one PostgreSQL database, any of them killed) share
it. The clients:

- a REST integration's customer (`customer`): one chat item under one Idempotency-Key, retried
  until acknowledged, then LINES messages, each retried with its client_msg_id until
  acknowledged while the run lasts; or (`keyed=False`) the item asked for without a key, as
  integrations that send none do, and asked again after an answer lost, which may make a
  second chat;
- an agent on the agent socket (`agent`): goes Available and handles every offer: accepts,
  writes LINES lines, ends the chat and closes the record; or, in a mix of behaviours, leaves
  it in wrap-up, writes slowly, never writes, rejects or lets the offer expire.

Both are given every host's address and, as a load balancer would, move on to the next host
when one answers 503 (standing by, stopping), cannot be reached or closes the socket. A sticky
balancer (the default) keeps a client on its host until it fails; one without stickiness
(`sticky=False`, for a cluster where every host serves) sends each request and each socket to
any host at random.

The checks read a `Stored` (what the store holds after the run, read by each test its own way)
and raise AssertionError naming what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from core.auth import Authenticator
from core.client import RETRYING, ClientError, InboxClient
from core.config import HostConfig, HostSettings
from core.demo import DEMO_PASSWORD
from core.model import (
    OPEN_ITEM_STATES,
    AgentStatus,
    AuditEntry,
    ChannelMode,
    InteractionRecord,
    InteractionState,
    ItemState,
    Message,
    Offer,
    OfferKind,
    OfferState,
    Role,
    SenderKind,
    WorkItem,
)
from core.protocol import (
    AcceptOffer,
    AnyClientFrame,
    CloseRecord,
    EndChat,
    Event,
    OfferEvent,
    OfferView,
    RejectOffer,
    Resync,
    SendMessage,
)
from store import open_store

LINES = 4  # per side of each conversation
RETRY = 0.1
# How long, after the run, a customer keeps retrying an item not yet acknowledged.
ITEM_PATIENCE = 30.0
# Seconds a timer step may run behind its deadline (the timer loop's own lateness).
LATENESS = 0.5


@dataclass
class History:
    """What the clients were told was durable."""

    items: dict[str, str] = field(default_factory=dict)  # customer id -> interaction
    item_ids: dict[str, str] = field(default_factory=dict)  # customer id -> work item
    # Customers who asked for their item without an Idempotency-Key -> how many of those
    # requests got no answer (each may have made a chat nobody was told of).
    unkeyed: Counter[str] = field(default_factory=Counter)
    messages: dict[tuple[str, str], str] = field(default_factory=dict)  # (number, id) -> body
    retries: Counter[str] = field(default_factory=Counter)
    # Answers no client should ever get: "internal" (a host's bug), on the socket or as a 500.
    errors: Counter[str] = field(default_factory=Counter)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def integration_token(store_location: Path | str, name: str = "crash-test") -> str:
    """An integration's API token (role supervisor), created in the store before the first
    start, as `inbox-tui admin token create` does: `store_location` is a data directory or a
    postgresql:// URL."""
    store = await open_store(store_location)
    try:
        auth = Authenticator(store, session_ttl=HostSettings().session_ttl)
        token, _ = await auth.create_api_token(name, None, Role.SUPERVISOR, None)
    finally:
        await store.close()
    return token


class Hosts:
    """The hosts' base URLs, as a load balancer picks them: sticky, the one from before (a
    random one at first) until it fails; not sticky, any at random for every request. Either
    way, right after a failure, the next one."""

    def __init__(self, bases: Sequence[str], *, sticky: bool = True) -> None:
        self.bases = list(bases)
        self.sticky = sticky
        self.i = random.randrange(len(self.bases))
        self.moved = False  # just moved on from a host that failed

    @property
    def base(self) -> str:
        return self.bases[self.i]

    def pick(self) -> str:
        """The host for the next request or socket."""
        if not self.sticky and not self.moved:
            self.i = random.randrange(len(self.bases))
        self.moved = False
        return self.base

    def next(self) -> None:
        self.i = (self.i + 1) % len(self.bases)
        self.moved = True

    async def post(
        self, http: aiohttp.ClientSession, path: str, body: object, headers: dict[str, str]
    ) -> tuple[int, Any]:
        """POST `body` to `path` of the current host: the status and the answer (JSON, or
        text). A host that cannot be reached (status 0) or answers 5xx (standing by, stopping,
        failing) is left for the next one."""
        try:
            async with http.post(self.pick() + path, json=body, headers=headers) as r:
                if r.status >= 500:
                    self.next()
                json = r.content_type == "application/json"
                return r.status, await (r.json() if json else r.text())
        except (aiohttp.ClientError, OSError, TimeoutError):
            self.next()
            return 0, None


async def customer(
    cid: str,
    bases: Sequence[str],
    token: str,
    history: History,
    stop: asyncio.Event,
    spread: float = 0.0,
    *,
    sticky: bool = True,
    keyed: bool = True,
) -> None:
    """A REST integration's customer `cid`: one chat, retried under one Idempotency-Key until
    acknowledged (even after `stop`, so none is left half-made), then LINES messages, each
    retried until acknowledged while the run lasts. 201 is an acknowledgement, and so is 200:
    a retry whose first answer was lost (the item replayed, the message a duplicate).
    Not `keyed`: the chat asked for without a key, each request without an answer counted in
    history.unkeyed."""
    headers = {"Authorization": f"Bearer {token}"}
    if keyed:
        headers["Idempotency-Key"] = f"item-{cid}"
    else:
        history.unkeyed.setdefault(cid, 0)
    hosts = Hosts(bases, sticky=sticky)
    await asyncio.sleep(random.uniform(0, spread))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
        number = None
        give_up: float | None = None
        while number is None:
            if stop.is_set():
                give_up = give_up or time.monotonic() + ITEM_PATIENCE
                assert time.monotonic() < give_up, f"{cid}: no item acknowledged"
            body = {"channel": "chat", "customer": {"id": cid, "name": cid}}
            status, reply = await hosts.post(http, "/api/v1/items", body, headers)
            if status == 500:
                history.errors[f"POST /api/v1/items: {reply}"] += 1
            if status in (200, 201):
                number = history.items[cid] = reply["interaction"]
                history.item_ids[cid] = reply["item"]
                if status == 200:
                    history.retries["item_replayed"] += 1
                break
            # No host answered, or one standing by, stopping or failing (5xx), or this token
            # over its rate (429): retried. No other 4xx.
            assert status in (0, 429) or status >= 500, (status, reply)
            if not keyed and status != 429:
                history.unkeyed[cid] += 1
            history.retries[f"item_retry_{status or 'unreachable'}"] += 1
            await asyncio.sleep(RETRY)
        for i in range(LINES):
            msg_id, text = f"{cid}-{i}", f"customer line {cid} {i}"
            while not stop.is_set():
                path = f"/api/v1/interactions/{number}/messages"
                payload = {"customer_id": cid, "body": text, "client_msg_id": msg_id}
                status, reply = await hosts.post(http, path, payload, headers)
                if status == 500:
                    history.errors[f"POST {path}: {reply}"] += 1
                if status in (200, 201):
                    history.messages[(number, msg_id)] = text
                    if status == 200:
                        history.retries["message_duplicate"] += 1
                    break
                if status == 404:  # the chat was closed meanwhile: nothing to say
                    return
                history.retries[f"customer_message_retry_{status or 'unreachable'}"] += 1
                await asyncio.sleep(RETRY)
            await asyncio.sleep(random.uniform(0.05, 0.3))


class ClusterClient(InboxClient):
    """The agent protocol's client given every host's socket address: opening the socket (at
    connect and at every reconnect) tries them in turn from the one `Hosts` picks, as a load
    balancer would, until one takes it: standbys answer the upgrade with 503, and an edge
    that hears no router answers 503 too, or closes the socket before the welcome."""

    def __init__(self, urls: Sequence[str], *, sticky: bool = True, **options: object) -> None:
        self.hosts = Hosts(urls, sticky=sticky)
        super().__init__(self.hosts.base, **options)  # type: ignore[arg-type]

    async def _open(self) -> None:
        for tried in range(1, len(self.hosts.bases) + 1):
            self.url = self.hosts.pick()
            try:
                await super()._open()
                return
            except (aiohttp.ClientError, OSError, TimeoutError, ClientError) as e:
                if isinstance(e, ClientError) and e.code != "disconnected":
                    raise  # the host answered the hello: its refusal is the client's to see
                self.hosts.next()
                if tried == len(self.hosts.bases):
                    raise


# How an agent handles a chat it is offered:
# "complete": accepts, writes LINES lines, ends the chat and closes the record;
# "wrap_up": the same but leaves the record in wrap-up (its wrap-up time ends it);
# "slow": accepts and writes its lines a second or three apart, then ends and closes;
# "silent": accepts and never writes (its first-reply deadline takes the chat back);
# "reject": rejects the offer; "ignore": lets it expire.
COMPLETE = (("complete", 1.0),)
MIXED = (
    ("complete", 0.55),
    ("wrap_up", 0.15),
    ("slow", 0.1),
    ("silent", 0.08),
    ("reject", 0.06),
    ("ignore", 0.06),
)


async def agent(
    name: str,
    urls: Sequence[str],
    history: History,
    stop: asyncio.Event,
    behaviours: Sequence[tuple[str, float]] = COMPLETE,
    *,
    sticky: bool = True,
) -> InboxClient:
    """Logs in, goes Available and, until `stop`, handles every offer in one of the
    `behaviours` (name, weight) chosen at random; then finishes its chats and returns its
    client, still connected (taking nothing), for the caller to close. After a resync (its
    host gone, another one routing) it also carries on with the chats the snapshot says it
    holds."""
    client = ClusterClient(urls, sticky=sticky, backoff=(0.05, 0.3), request_timeout=20.0)
    offers: asyncio.Queue[OfferView] = asyncio.Queue()
    working: set[str] = set()  # interactions a task of this agent works on
    chats: set[asyncio.Task[None]] = set()
    names, weights = zip(*behaviours, strict=True)

    def start(number: str, offer: str | None) -> None:
        if number in working:
            return
        working.add(number)
        how = random.choices(names, weights)[0] if offer is not None else "complete"
        task = asyncio.get_running_loop().create_task(work(number, offer, how))
        chats.add(task)
        task.add_done_callback(chats.discard)

    def on_event(event: Event) -> None:
        if isinstance(event, OfferEvent):
            offers.put_nowait(event.view)
        elif isinstance(event, Resync):
            history.retries["agent_resync"] += 1
            for view in event.snapshot.offers:
                offers.put_nowait(view)
            if not stop.is_set():
                for record in event.snapshot.interactions:
                    if record.state == InteractionState.WORK_IN_PROGRESS and owner(record) == name:
                        start(record.number, None)

    async def ask(frame: AnyClientFrame) -> Any:
        return await retried(lambda: client.request(frame))

    async def retried(call: Callable[[], Awaitable[Any]]) -> Any:
        """`call`'s answer. Asked again while a host answers `unavailable` (it lost its
        database or the routing role: the next try reaches the host that routes); any other
        refusal is raised, and an `internal` one also goes to history.errors."""
        while True:
            try:
                return await call()
            except ClientError as e:
                if e.code == "unavailable" and client.status in RETRYING:
                    history.retries["agent_unavailable"] += 1
                    await asyncio.sleep(RETRY)
                    continue
                if e.code == "internal":
                    history.errors[f"agent {name} {e.message}"] += 1
                raise

    async def work(number: str, offer: str | None, how: str) -> None:
        history.retries[f"chat_{how}"] += 1
        try:
            if offer is not None and how == "ignore":
                return
            if offer is not None:
                try:
                    if how == "reject":
                        await ask(RejectOffer(offer=offer, reason="busy"))
                        return
                    await ask(AcceptOffer(offer=offer))
                except (ClientError, TimeoutError):
                    return  # expired or rerouted while the host was away: someone else's
            if how == "silent":
                return
            for i in range(LINES):
                msg_id, text = f"{name}-{number}-{i}", f"agent line {name} {number} {i}"
                line = SendMessage(interaction=number, body=text, client_msg_id=msg_id)
                try:
                    ack = await ask(line)
                except (ClientError, TimeoutError) as e:
                    # By what the host said ("timeout": nothing in request_timeout), for a
                    # failed run's analysis.
                    history.retries[f"agent_message_failed_{getattr(e, 'code', 'timeout')}"] += 1
                    return
                history.messages[(number, ack.message.client_msg_id)] = text
                pause = (1.0, 3.0) if how == "slow" else (0.05, 0.3)
                await asyncio.sleep(random.uniform(*pause))
            with contextlib.suppress(ClientError, TimeoutError):
                await ask(EndChat(interaction=number))
                if how != "wrap_up":
                    await ask(CloseRecord(interaction=number))
        finally:
            working.discard(number)

    client.on_event = on_event
    await client.connect()
    # A fault can land while the agent logs in: these are answered `unavailable` like any
    # other command then, and asked again.
    await retried(lambda: client.login(name, DEMO_PASSWORD))
    await retried(lambda: client.set_presence("Available"))
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                view = await asyncio.wait_for(offers.get(), 0.2)
                if view.interaction is not None:
                    start(view.interaction, view.offer.id)
        await asyncio.gather(*chats, return_exceptions=True)
    except BaseException:
        await client.close()
        raise
    return client


def owner(record: InteractionRecord) -> str | None:
    owners = owners_of(record)
    return owners[0] if len(owners) == 1 else None


def owners_of(record: InteractionRecord) -> list[str]:
    return [p.agent for p in record.participants if p.left_at is None and p.role == "owner"]


# ---------------------------------------------------------------------------- the checks

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
HELD = (ItemState.ACCEPTED, ItemState.WRAP_UP)


def disagreement(item: WorkItem, record: InteractionRecord) -> str | None:
    """How the stored record contradicts its stored work item, if it does: its state, or who
    owns it (an item held by an agent has that agent as the record's one owner)."""
    if record.state != RECORD_STATE[item.state]:
        return f"{record.number} is {record.state} but its item {item.id} is {item.state}"
    owners = owners_of(record)
    if owners != ([item.agent] if item.state in HELD else []) and item.state in OPEN_ITEM_STATES:
        return f"{record.number} is owned by {owners} but its item {item.id} by {item.agent}"
    return None


@dataclass
class Stored:
    """What the store holds after a run, of the interactions the checks look at."""

    records: list[InteractionRecord]
    items: list[WorkItem]  # every stored work item of those records
    pending_offers: list[Offer]  # every pending offer in the store
    messages: dict[str, list[Message]]  # interaction -> its stored messages
    audit: list[AuditEntry]  # the routing audit trail, oldest first
    statuses: list[AgentStatus] = field(default_factory=list)  # agents' presence


def check_answers(history: History) -> None:
    """No client was told "internal error": a host killed answers nothing, and one that lost
    its database or the routing role answers `unavailable` (retry), never a bug's answer."""
    assert not history.errors, f"answers no client should get: {dict(history.errors)}"


def check_acknowledged(history: History, stored: Stored, prefix: str) -> None:
    """Every acknowledged item and message is stored exactly once, as acknowledged; no
    interaction of the customers `prefix...` is stored that no client was told of (a request
    whose answer was lost left none behind that a retry doubled), except one per unanswered
    request without a key; and none is stored without its work item."""
    items = {i.id: i for i in stored.items}
    # A customer writing into a closed conversation reopens it with a new work item, so an
    # interaction may have had several; never two open at once.
    per_interaction = Counter(i.interaction for i in stored.items if i.state in OPEN_ITEM_STATES)
    twice = {n: k for n, k in per_interaction.items() if k > 1}
    assert not twice, f"interactions with more than one open work item: {twice}"
    records = {r.number: r for r in stored.records}
    for cid, number in history.items.items():
        record = records.get(number)
        assert record is not None and record.customer == cid, (cid, number, record)
        first = items.get(history.item_ids[cid])
        assert first is not None, f"{number}: its acknowledged item {history.item_ids[cid]} is lost"
        assert first.interaction == number, (first, number)
        latest = items.get(record.item)
        assert latest is not None, f"{number}: its work item {record.item} is not stored"
        assert latest.interaction == number, (latest, number)
    theirs = [r for r in stored.records if r.customer.startswith(prefix)]
    itemless = [r.number for r in theirs if r.item not in items]
    assert not itemless, f"interactions stored without their work item: {itemless}"
    rest = Counter(r.customer for r in theirs)
    twice = {cid: n for cid, n in rest.items() if n > 1 + history.unkeyed.get(cid, 0)}
    assert not twice, f"items stored more than once: {twice}"
    assert set(rest) == set(history.items), set(rest) ^ set(history.items)
    bodies: Counter[tuple[str, str]] = Counter()
    ids: Counter[tuple[str, str]] = Counter()
    for number, messages in stored.messages.items():
        for m in messages:
            bodies[(number, m.body)] += 1
            ids[(number, m.client_msg_id)] += 1
            key = (number, m.client_msg_id)
            if key in history.messages:
                assert history.messages[key] == m.body, (key, m.body)
    for key, body in history.messages.items():
        assert ids[key] == 1, (key, ids[key])
        assert bodies[(key[0], body)] == 1, (key, body, bodies[(key[0], body)])


def check_items_and_records(stored: Stored) -> None:
    """Every work item and its interaction record agree (state, owner), and no interaction
    has two owners."""
    records = {r.number: r for r in stored.records}
    for record in stored.records:
        assert len(owners_of(record)) <= 1, (record.number, record.participants)
    for item in stored.items:
        record = records.get(item.interaction or "")
        assert record is not None, f"{item.id}: its interaction {item.interaction} is not stored"
        if record.item != item.id:
            # An earlier item of a conversation reopened since: over before the next began.
            assert item.state not in OPEN_ITEM_STATES, (item, record.item)
            continue
        assert disagreement(item, record) is None, disagreement(item, record)


# A reply this close to its deadline may lose the race with it, and the chat be reclaimed.
REPLY_RACE = 1.0


def check_replies(stored: Stored, cutoff: float) -> None:
    """No chat is taken back for want of a first reply from an agent who replied: an agent's
    stored message, written while they held the chat (from its assignment on), counts as the
    reply, so it is `replied` while still theirs, and no first-reply reclaim ends their hold
    later than REPLY_RACE after it."""
    items = {i.id: i for i in stored.items}
    records = {r.number: r for r in stored.records}

    def replies(number: str | None, agent: str | None, since: float, until: float) -> list[int]:
        return [
            m.seq
            for m in stored.messages.get(number or "", [])
            if m.sender_kind == SenderKind.AGENT
            and m.kind == "message"
            and m.sender == agent
            and since <= m.created_at <= until - REPLY_RACE
        ]

    holder: dict[str, tuple[str | None, float]] = {}
    for entry in stored.audit:
        item = items.get(entry.item or "")
        if item is None:
            continue
        if entry.kind in ("item_assigned", "item_transferred"):
            holder[item.id] = (entry.agent, entry.at)
        elif entry.kind == "item_reclaimed" and item.id in holder:
            agent, since = holder.pop(item.id)
            said = replies(item.interaction, agent, since, entry.at)
            assert not said, f"{item.id} reclaimed at {entry.at} from {agent}, who wrote {said}"
    for item in stored.items:
        if item.state != ItemState.ACCEPTED or item.replied or item.on_hold:
            continue
        record = records[item.interaction or ""]
        since = max((p.joined_at for p in record.participants if p.agent == item.agent), default=0)
        said = replies(item.interaction, item.agent, since, cutoff)
        assert not said, f"{item.id} held by {item.agent} counts as unanswered; they wrote {said}"


def check_capacity(stored: Stored, config: HostConfig) -> None:
    """Nobody over capacity, per channel or universally: counting what they hold (accepted
    or wrap-up, not on hold), and with their pending offers too, as the router counts."""
    capacity = {a.id: a for a in config.agents}
    held: Counter[tuple[str, str]] = Counter()
    offered: Counter[tuple[str, str]] = Counter()
    channel_of = {i.id: i.channel for i in stored.items}
    weight_of = {i.id: i.weight for i in stored.items}
    for item in stored.items:
        if item.state in HELD and item.agent and not item.on_hold and not item.awaiting_capacity:
            held[(item.agent, item.channel)] += item.weight
    for offer in stored.pending_offers:
        if offer.item in channel_of:
            offered[(offer.agent, channel_of[offer.item])] += weight_of[offer.item]
    for name, load in (("held", held), ("held and offered", held + offered)):
        total: Counter[str] = Counter()
        for (agent_id, channel), n in load.items():
            total[agent_id] += n
            limit = capacity[agent_id].capacity.get(channel, 0)
            assert n <= limit, f"{agent_id} {name} {n} {channel} items, capacity {limit}"
        for agent_id, n in total.items():
            limit = capacity[agent_id].universal_capacity
            assert n <= limit, f"{agent_id} {name} {n} items, universal capacity {limit}"


def check_work_conserving(stored: Stored, config: HostConfig, attached: Collection[str]) -> None:
    """No item waits in its queue while an agent who could take it has room (invariant 5):
    every agent in `attached` (their console connected to the router) of the queue's groups,
    with a presence that lists its channel and the skills it needs, who has not rejected it
    (or everyone has), already has an offer pending or no room left."""
    presence = {s.agent: s.presence for s in stored.statuses}
    lists = {p.name: set(p.channels) for p in config.presences}
    agents = {a.id: a for a in config.agents}
    queues = {q.name: q for q in config.queues}
    items = {i.id: i for i in stored.items}
    load: Counter[tuple[str, str]] = Counter()
    total: Counter[str] = Counter()
    pending: Counter[str] = Counter()
    for item in stored.items:
        if item.state in HELD and item.agent and not item.on_hold and not item.awaiting_capacity:
            load[(item.agent, item.channel)] += item.weight
            total[item.agent] += item.weight
    for offer in stored.pending_offers:
        item = items[offer.item]
        load[(offer.agent, item.channel)] += item.weight
        total[offer.agent] += item.weight
        pending[offer.agent] += offer.kind == OfferKind.ROUTED
    for item in stored.items:
        if item.state != ItemState.QUEUED or item.queue is None:
            continue
        queue = queues[item.queue]
        pool = {
            a
            for a in attached
            if not agents[a].disabled
            and (not queue.groups or set(queue.groups) & set(agents[a].groups))
            and item.channel in lists.get(presence.get(a, ""), set())
            and all(agents[a].skills.get(s.name, 0) >= s.level for s in queue.skills)
        }
        rejected = set(item.rejected_by) if not pool <= set(item.rejected_by) else set()
        for a in sorted(pool - rejected):
            spare = min(
                agents[a].capacity.get(item.channel, 0) - load[(a, item.channel)],
                agents[a].universal_capacity - total[a],
            )
            room = pending[a] < config.host.max_pending_offers and spare >= item.weight
            assert not room, f"{item.id} waits in {queue.name} while {a} has room ({spare} free)"


def check_deadlines(stored: Stored, config: HostConfig, cutoff: float) -> None:
    """Every open item has its deadlines, none of them past `cutoff` (anything due before it
    should have fired: the host routing then has been up since before it, and one that took
    over fired on start what fell due while nobody routed):

    - no item has two pending offers; an offered item has one (routed) pending offer and a
      pending offer's item is open: offered (routed) or accepted (a transfer);
    - a pending offer's deadline is after `cutoff`;
    - a queued item of a queue with max_wait has its max_wait_at (or the wait ran out already
      and the customer was told: notice_sent);
    - an accepted live chat of a queue with reply_deadline has its reply_by unless replied;
    - an item in wrap-up of a queue with wrap_up_time has its wrap_up_until;
    - and each of those after `cutoff`."""
    queues = {q.name: q for q in config.queues}
    live = {c.name for c in config.channels if c.mode == ChannelMode.SYNC}
    items = {i.id: i for i in stored.items}
    pending = Counter(o.item for o in stored.pending_offers)
    twice = {item: n for item, n in pending.items() if n > 1}
    assert not twice, f"items with two pending offers: {twice}"
    for offer in stored.pending_offers:
        assert offer.state == OfferState.PENDING, offer
        assert offer.deadline > cutoff, f"offer past its deadline: {offer}"
        item = items.get(offer.item)
        if item is None:
            continue  # an item of another client's (not among the records read)
        wanted = ItemState.OFFERED if offer.kind == OfferKind.ROUTED else ItemState.ACCEPTED
        assert item.state == wanted, f"pending {offer.kind} offer {offer.id} of a {item.state} item"
    for item in stored.items:
        queue = queues[item.queue] if item.queue is not None else None
        if item.state == ItemState.OFFERED:
            assert pending[item.id] == 1, f"offered item {item.id} without its pending offer"
        due: list[tuple[str, float | None]] = []
        if item.state == ItemState.QUEUED and queue is not None and queue.max_wait is not None:
            if not item.notice_sent:
                assert item.max_wait_at is not None, f"queued without max_wait_at: {item}"
            due.append(("max_wait_at", item.max_wait_at))
        if item.state == ItemState.ACCEPTED and queue is not None and queue.reply_deadline:
            if not item.replied and item.channel in live:
                assert item.reply_by is not None, f"accepted chat without reply_by: {item}"
            due.append(("reply_by", item.reply_by))
        if item.state == ItemState.WRAP_UP and queue is not None and queue.wrap_up_time:
            assert item.wrap_up_until is not None, f"in wrap-up without wrap_up_until: {item}"
            due.append(("wrap_up_until", item.wrap_up_until))
        if item.state in OPEN_ITEM_STATES:
            due += [("reply_by", item.reply_by), ("wrap_up_until", item.wrap_up_until)]
        for what, at in due:
            assert at is None or at > cutoff, f"{item.id}: {what} {at} passed before {cutoff}"
