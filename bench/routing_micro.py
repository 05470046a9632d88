"""Routing decisions per second of the pure engine (no I/O), in simulated time.

    python -m bench.routing_micro [--seconds N] [--agents N] [--queues N] [--backlog N]
                                  [--away N] [--seed N] [--json]

Only `Router.handle` is timed (perf_counter_ns around each call); the driver that plays the
customers and agents runs outside the timed sections, so the rates are per second of engine time.
  steady:  agents Available with capacity 3-5, chat and messaging queues with conditions, skills,
           groups, overflow and a timeout presence. Every item that leaves brings a new arrival,
           so the open population stays near 1.25 x the total capacity: items are both waiting
           and being served. Offers are mostly accepted, some rejected, some left to expire
           (simulated time advances, deadlines fire through `next_due_event`, as `tick` does);
           chats end, are closed, and a few waiting customers cancel.
  backlog: every agent full and N items waiting in one queue; then, one at a time, an agent
           ends and closes a chat (the close spends the freed slot on the head of the queue),
           accepts the offer, and a new item arrives so the depth stays at N. With --away K,
           K agents are first set Away holding a free slot: the case of agents on a break.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
import time
from collections import Counter, defaultdict
from typing import Any

from msgspec.structs import replace

from core.model import (
    Agent,
    AgentStatus,
    AssignmentRule,
    ChannelMode,
    ItemState,
    OfferKind,
    PresenceState,
    Queue,
    ServiceChannel,
    SkillRequirement,
    WorkItem,
)
from core.routing.decisions import AnyDecision, ItemChanged, ItemUnroutable, OfferMade, PresenceSet
from core.routing.engine import Router, RoutingConfig
from core.routing.events import (
    AnyEvent,
    ChatEnded,
    ItemArrived,
    ItemCancelled,
    ItemClosed,
    OfferAccepted,
    OfferRejected,
    PresenceChanged,
)

AVAILABLE = "Available"
AWAY = "Away"
CHANNELS = [
    ServiceChannel(name="chat", mode=ChannelMode.SYNC),
    ServiceChannel(name="messaging", mode=ChannelMode.ASYNC),
]
PRESENCES = [
    PresenceState(name=AVAILABLE, channels=("chat", "messaging")),
    PresenceState(name=AWAY),
    PresenceState(name="Offline"),
]
LANGS = (("en", 60), ("de", 20), ("fr", 15), ("es", 5))
TIERS = (("gold", 10), ("silver", 30), ("bronze", 60))

# Fates of a routed offer in the steady scenario; the remainder is left to expire.
P_ACCEPT = 0.85
P_REJECT = 0.08
P_CANCEL = 0.05  # a waiting chat customer gives up
OFFER_TIMEOUT = 20.0
# Simulated time played before measuring: by then the population has filled up, the first
# overflows and expiries have fired and the queue depths have levelled off.
WARMUP_SIM_SECONDS = 300.0


def build_queues(n: int) -> list[Queue]:
    """n queues (at least 2): specialised chat queues first, catch-alls per channel last, so
    every generated item matches one and most arrivals evaluate several conditions."""
    general = Queue(
        name="general_chat",
        channel="chat",
        order=100,
        rule=AssignmentRule.MOST_CAPACITY,
        offer_timeout=OFFER_TIMEOUT,
        timeout_presence=AWAY,
        max_wait=300.0,
    )
    messaging = Queue(
        name="messaging",
        channel="messaging",
        condition='lang in ("en", "de", "fr", "es")',
        order=100,
        rule=AssignmentRule.ROUND_ROBIN,
        offer_timeout=60.0,
        affinity_window=86_400.0,
    )
    special = [
        Queue(
            name="vip_chat",
            channel="chat",
            condition='tier == "gold" and lang in ("en", "de")',
            order=10,
            rule=AssignmentRule.MOST_CAPACITY,
            skills=(SkillRequirement(name="vip", level=1),),
            prefer_skill_level=True,
            groups=("senior",),
            offer_timeout=OFFER_TIMEOUT,
            max_wait=60.0,
            overflow="general_chat",
            affinity_window=3_600.0,
        ),
        Queue(
            name="billing_chat",
            channel="chat",
            condition='topic in ("billing", "refund") and not (tier == "gold")',
            order=20,
            rule=AssignmentRule.LEAST_RECENT,
            skills=(SkillRequirement(name="billing", level=2),),
            offer_timeout=OFFER_TIMEOUT,
            max_wait=120.0,
            overflow="general_chat",
        ),
    ]
    special += [
        Queue(
            name=f"topic{k}_chat",
            channel="chat",
            condition=f'topic == "t{k}"',
            order=30 + k,
            rule=AssignmentRule.ROUND_ROBIN,
            skills=(SkillRequirement(name=f"t{k}", level=1),),
            offer_timeout=OFFER_TIMEOUT,
        )
        for k in range(max(n - 4, 0))
    ]
    return [*special[: max(n - 2, 0)], general, messaging]


def build_agents(n: int, queues: list[Queue], rng: random.Random) -> list[Agent]:
    topics = [s.name for q in queues if q.name.startswith("topic") for s in q.skills]
    agents = []
    for i in range(n):
        cap = rng.randint(3, 5)
        senior = rng.random() < 0.3
        skills = {"billing": rng.randint(0, 3)}
        if senior and rng.random() < 0.8:
            skills["vip"] = rng.randint(1, 3)
        skills.update({t: 1 for t in topics if rng.random() < 0.5})
        agents.append(
            Agent(
                id=f"a{i:04d}",
                skills={k: v for k, v in skills.items() if v},
                capacity={"chat": cap, "messaging": cap},
                universal_capacity=cap,
                groups=("senior",) if senior else ("junior",),
            )
        )
    return agents


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def make_item(
    item_id: str, now: float, rng: random.Random, topics: int, channel: str | None = None
) -> WorkItem:
    tier = _weighted(rng, TIERS)
    roll = rng.random()
    if roll < 0.20:
        topic = "billing"
    elif roll < 0.25:
        topic = "refund"
    elif topics and roll < 0.45:
        topic = f"t{rng.randrange(topics)}"
    else:
        topic = "general"
    return WorkItem(
        id=item_id,
        channel=channel or ("chat" if rng.random() < 0.75 else "messaging"),
        # A small customer base, so returning customers exercise affinity.
        customer=f"c{rng.randrange(5_000)}",
        created_at=now,
        attributes={"tier": tier, "lang": _weighted(rng, LANGS), "topic": topic},
        priority=1 if tier == "gold" else 0,
    )


class Timings:
    """Nanoseconds per `handle` call, overall and per event type."""

    def __init__(self) -> None:
        self.by_event: defaultdict[str, list[int]] = defaultdict(list)
        self.decisions = 0
        self.offers = 0

    def add(self, event: AnyEvent, ns: int, decisions: list[AnyDecision]) -> None:
        self.by_event[type(event).__name__].append(ns)
        self.decisions += len(decisions)
        self.offers += sum(isinstance(d, OfferMade) for d in decisions)

    def all(self) -> list[int]:
        return [ns for values in self.by_event.values() for ns in values]


def _pct(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000


def _summary(ns: list[int]) -> dict[str, Any]:
    s = sorted(ns)
    return {
        "count": len(s),
        "mean_us": round(sum(s) / len(s) / 1000, 1) if s else 0.0,
        "p50_us": round(_pct(s, 0.50), 1),
        "p99_us": round(_pct(s, 0.99), 1),
        "max_us": round(s[-1] / 1000, 1) if s else 0.0,
    }


def _report(name: str, t: Timings, wall: float, extra: dict[str, Any]) -> dict[str, Any]:
    ns = t.all()
    engine_s = sum(ns) / 1e9
    return {
        "scenario": name,
        "events": len(ns),
        "decisions": t.decisions,
        "offers": t.offers,
        "engine_seconds": round(engine_s, 3),
        "wall_seconds": round(wall, 3),
        "events_per_s": round(len(ns) / engine_s) if engine_s else 0,
        "decisions_per_s": round(t.decisions / engine_s) if engine_s else 0,
        "offers_per_s": round(t.offers / engine_s) if engine_s else 0,
        **{k: v for k, v in _summary(ns).items() if k != "count"},
        **extra,
        "per_event": {k: _summary(v) for k, v in sorted(t.by_event.items())},
    }


def _open_counts(router: Router) -> dict[str, int]:
    states = Counter(i.state for i in router.items.values())
    return {
        "open_items": len(router.items),
        "queued": states[ItemState.QUEUED],
        "offered": states[ItemState.OFFERED],
        "accepted": states[ItemState.ACCEPTED],
        "wrap_up": states[ItemState.WRAP_UP],
    }


def _router(agents: list[Agent], queues: list[Queue]) -> Router:
    config = RoutingConfig(channels=CHANNELS, presences=PRESENCES, queues=queues, agents=agents)
    statuses = [AgentStatus(agent=a.id, presence=AVAILABLE) for a in agents]
    return Router(config, statuses=statuses)


class SteadySim:
    """Customers and agents as a discrete-event simulation around one Router."""

    def __init__(self, agents: list[Agent], queues: list[Queue], seed: int) -> None:
        self.rng = random.Random(seed)
        self.router = _router(agents, queues)
        self.topics = sum(q.name.startswith("topic") for q in queues)
        self.actions: list[tuple[float, int, str, str]] = []
        self.seq = 0
        self.next_id = 0
        self.now = 0.0
        self.timings: Timings | None = None  # None while warming up
        self.skipped = 0
        slots = sum(a.universal_capacity for a in agents)
        self.population = slots + slots // 4
        # Spread the first arrivals so the start is a ramp, not one burst of offers.
        for _ in range(self.population):
            self._schedule(self.rng.uniform(0, 120), "arrive", "")

    def _schedule(self, at: float, kind: str, key: str) -> None:
        self.seq += 1
        heapq.heappush(self.actions, (at, self.seq, kind, key))

    def step(self) -> None:
        router = self.router
        due = router.next_deadline()
        if due is not None and (not self.actions or due <= self.actions[0][0]):
            self.now = max(self.now, due)
            event = router.next_due_event(self.now)
            if event is not None:
                self._handle(event)
            return
        at, _, kind, key = heapq.heappop(self.actions)
        self.now = at
        event = self._event_for(kind, key)
        if event is None:
            self.skipped += 1  # overtaken: the offer expired, the chat was cancelled, ...
        else:
            self._handle(event)

    def _event_for(self, kind: str, key: str) -> AnyEvent | None:
        router = self.router
        if kind == "arrive":
            self.next_id += 1
            return ItemArrived(item=make_item(f"w{self.next_id}", self.now, self.rng, self.topics))
        if kind in ("accept", "reject"):
            if key not in router.offers:
                return None
            return OfferAccepted(offer=key) if kind == "accept" else OfferRejected(offer=key)
        if kind == "back":
            return PresenceChanged(agent=key, presence=AVAILABLE)
        item = router.items.get(key)
        if item is None:
            return None
        if kind == "end" and item.state == ItemState.ACCEPTED:
            return ChatEnded(item=key)
        if kind == "close" and item.state in (ItemState.ACCEPTED, ItemState.WRAP_UP):
            return ItemClosed(item=key)
        if kind == "cancel" and item.state == ItemState.QUEUED:
            return ItemCancelled(item=key)
        return None

    def _handle(self, event: AnyEvent) -> None:
        t0 = time.perf_counter_ns()
        decisions = self.router.handle(event, self.now)
        ns = time.perf_counter_ns() - t0
        if self.timings is not None:
            self.timings.add(event, ns, decisions)
        rng, now = self.rng, self.now
        for d in decisions:
            if isinstance(d, OfferMade):
                if d.offer.kind != OfferKind.ROUTED:
                    continue
                fate = rng.random()
                if fate < P_ACCEPT:
                    self._schedule(now + rng.uniform(1, 8), "accept", d.offer.id)
                elif fate < P_ACCEPT + P_REJECT:
                    self._schedule(now + rng.uniform(1, 8), "reject", d.offer.id)
            elif isinstance(d, ItemChanged):
                item = d.item
                if d.change == "assigned":
                    mean = 240.0 if item.channel == "chat" else 600.0
                    self._schedule(now + 10 + rng.expovariate(1 / mean), "end", item.id)
                elif d.change == "wrap_up":
                    self._schedule(now + rng.uniform(5, 30), "close", item.id)
                elif d.change == "queued" and item.channel == "chat" and rng.random() < P_CANCEL:
                    self._schedule(now + rng.uniform(30, 240), "cancel", item.id)
                elif d.change in ("closed", "cancelled", "abandoned"):
                    self._schedule(now + rng.expovariate(1.0), "arrive", "")
            elif isinstance(d, ItemUnroutable):
                self._schedule(now + rng.expovariate(1.0), "arrive", "")
            elif isinstance(d, PresenceSet) and d.presence == AWAY:
                self._schedule(now + rng.uniform(15, 60), "back", d.agent)


def run_steady(
    agents: list[Agent], queues: list[Queue], seconds: float, seed: int
) -> dict[str, Any]:
    sim = SteadySim(agents, queues, seed)
    while sim.now < WARMUP_SIM_SECONDS:
        sim.step()
    sim.timings = Timings()
    sim_start = sim.now
    queued_samples: list[int] = []
    started = time.perf_counter()
    deadline = started + seconds
    steps = 0
    while True:
        sim.step()
        steps += 1
        if steps % 64 == 0:
            queued_samples.append(sum(len(w) for w in sim.router.waiting.values()))
            if time.perf_counter() >= deadline:
                break
    wall = time.perf_counter() - started
    return _report(
        "steady",
        sim.timings,
        wall,
        {
            "agents": len(agents),
            "queues": len(queues),
            "simulated_seconds": round(sim.now - sim_start),
            "mean_queued": round(sum(queued_samples) / max(len(queued_samples), 1)),
            "skipped_actions": sim.skipped,
            **_open_counts(sim.router),
        },
    )


def run_backlog(
    agents: list[Agent], queues: list[Queue], seconds: float, depth: int, away: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    router = _router(agents, queues)
    target = next(q for q in queues if q.name == "general_chat")
    now = 0.0
    next_id = 0

    def arrival() -> ItemArrived:
        nonlocal next_id
        next_id += 1
        # Attributes that fall through every specialised queue to the catch-all.
        item = make_item(f"b{next_id}", now, rng, 0, channel="chat")
        attrs = {**item.attributes, "tier": "bronze", "topic": "general"}
        return ItemArrived(item=replace(item, attributes=attrs, priority=0))

    # Fill every agent to capacity, accepting each offer as it comes (not timed).
    slots = sum(a.universal_capacity for a in agents)
    served: list[str] = []
    pending: list[str] = []
    for _ in range(slots):
        pending += [d.offer.id for d in router.handle(arrival(), now) if isinstance(d, OfferMade)]
        while pending:
            for d in router.handle(OfferAccepted(offer=pending.pop()), now):
                if isinstance(d, OfferMade):
                    pending.append(d.offer.id)
                elif isinstance(d, ItemChanged) and d.change == "assigned":
                    served.append(d.item.id)
    # Agents on a break: Away, with one chat closed so they hold a free slot they cannot use.
    for agent in agents[:away]:
        router.handle(PresenceChanged(agent=agent.id, presence=AWAY), now)
        mine = sorted(i for i in served if router.items[i].agent == agent.id)
        served = [i for i in served if i not in mine]
        router.handle(ChatEnded(item=mine[0]), now)
        router.handle(ItemClosed(item=mine[0]), now)
    build, timings = Timings(), Timings()

    def timed(event: AnyEvent, into: Timings = timings) -> list[AnyDecision]:
        t0 = time.perf_counter_ns()
        decisions = router.handle(event, now)
        into.add(event, time.perf_counter_ns() - t0, decisions)
        return decisions

    # Building the backlog is timed apart: each arrival only checks for room in a full house.
    while len(router.waiting[target.name]) < depth:
        timed(arrival(), build)
    depth_start = len(router.waiting[target.name])
    started = time.perf_counter()
    deadline = started + seconds
    cycles = 0
    while time.perf_counter() < deadline:
        now += 1.0
        i = rng.randrange(len(served))
        served[i], served[-1] = served[-1], served[i]
        item_id = served.pop()
        timed(ChatEnded(item=item_id))
        offers = [d.offer.id for d in timed(ItemClosed(item=item_id)) if isinstance(d, OfferMade)]
        for offer_id in offers:
            for d in timed(OfferAccepted(offer=offer_id)):
                if isinstance(d, ItemChanged) and d.change == "assigned":
                    served.append(d.item.id)
        timed(arrival())
        cycles += 1
    wall = time.perf_counter() - started
    return _report(
        "backlog",
        timings,
        wall,
        {
            "agents": len(agents),
            "queues": len(queues),
            "away_with_room": away,
            "depth_start": depth_start,
            "depth_end": len(router.waiting[target.name]),
            "cycles": cycles,
            "build_arrival": _summary(build.all()),
            **_open_counts(router),
        },
    )


def run(
    seconds: float, n_agents: int, n_queues: int, depth: int, away: int, seed: int
) -> dict[str, Any]:
    queues = build_queues(n_queues)
    agents = build_agents(n_agents, queues, random.Random(seed))
    return {
        "python": sys.version.split()[0],
        "seed": seed,
        "results": [
            run_steady(agents, queues, seconds, seed),
            # The backlog is a narrower measurement; half the time gives thousands of cycles.
            run_backlog(agents, queues, seconds / 2, depth, away, seed),
        ],
    }


def _grid(header: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    cells = [list(header), *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]


def _table(report: dict[str, Any]) -> str:
    header = (
        "scenario",
        "events",
        "events_per_s",
        "decisions_per_s",
        "offers_per_s",
        "mean_us",
        "p50_us",
        "p99_us",
        "open_items",
        "queued",
    )
    results = report["results"]
    lines = _grid(header, [[str(r[k]) for k in header] for r in results])
    steady, backlog = results
    lines.append(
        f"steady: {steady['agents']} agents, {steady['queues']} queues, "
        f"{steady['simulated_seconds']} s simulated in {steady['wall_seconds']} s "
        f"({steady['engine_seconds']} s in the engine), mean queued {steady['mean_queued']}"
    )
    lines.append(
        f"backlog: depth {backlog['depth_start']} -> {backlog['depth_end']}, "
        f"{backlog['away_with_room']} agents Away with a free slot, "
        f"{backlog['cycles']} free-a-slot cycles in {backlog['wall_seconds']} s; "
        f"building it: {backlog['build_arrival']['mean_us']} us mean per arrival"
    )
    for r in results:
        lines.append("")
        lines.append(f"{r['scenario']}: per event type")
        per = r["per_event"]
        cols = ("count", "mean_us", "p50_us", "p99_us", "max_us")
        lines += _grid(("event", *cols), [[k, *(str(v[c]) for c in cols)] for k, v in per.items()])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.routing_micro",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds", type=float, default=6.0, help="measured time of steady (default 6; backlog/2)"
    )
    parser.add_argument("--agents", type=int, default=200, help="agents (default 200)")
    parser.add_argument("--queues", type=int, default=4, help="queues, at least 2 (default 4)")
    parser.add_argument("--backlog", type=int, default=5_000, help="backlog depth (default 5000)")
    parser.add_argument(
        "--away",
        type=int,
        default=0,
        help="backlog: agents Away holding a free slot (default 0)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.agents < 1 or args.queues < 2 or args.backlog < 1:
        parser.error("need at least 1 agent, 2 queues and a backlog of 1")
    if not 0 <= args.away < args.agents:
        parser.error("--away must leave at least one agent Available")
    report = run(args.seconds, args.agents, args.queues, args.backlog, args.away, args.seed)
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
