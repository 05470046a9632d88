"""GET /metrics on a real host: well-formed Prometheus text, and values that move when routing,
messages, the store and agent sockets do."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from msgspec.structs import replace

from core.demo import demo_config
from core.host import metrics
from core.host.app import close_host, create_app, open_host, serve_loopback
from core.host.state import Host
from core.model import Role
from core.protocol import AcceptOffer, OfferEvent, RejectOffer, SetPresence
from core.service.sessions import AgentSession

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """The samples of an exposition, checking the format line by line as a scraper would."""
    assert text.endswith("\n")
    samples: Samples = {}
    helped: set[str] = set()
    typed: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helped, f"second HELP for {name}"
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in TYPES and name not in typed and name in helped
            typed[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in typed or typed.get(family) == "histogram", f"{name} has no TYPE"
            pairs = frozenset(LABEL.findall(labels or ""))
            key = (name, pairs)
            assert key not in samples, f"duplicate sample {line!r}"
            samples[key] = float(value)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@dataclass
class Running:
    host: Host
    app: web.Application
    url: str
    http: aiohttp.ClientSession

    async def scrape(self) -> Samples:
        async with self.http.get(self.url + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == metrics.CONTENT_TYPE
            return parse(await response.text())

    async def available(self, agent: str) -> AgentSession:
        session = self.host.inbox.open_session(agent, Role.AGENT, f"d-{agent}", time.time() + 60)
        await self.host.inbox.handle(session, SetPresence(presence="Available"))
        return session

    async def incident(self) -> str:
        record = await self.host.inbox.start_conversation(
            channel="incident", customer="crm-acme", customer_name="Acme"
        )
        return record.number


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    config = replace(demo_config(), seed_passwords={})
    host = await open_host(config, tmp_path / "data")
    app = create_app(host)
    runner, url = await serve_loopback(app)
    try:
        async with aiohttp.ClientSession() as http:
            yield Running(host=host, app=app, url=url, http=http)
    finally:
        await runner.cleanup()
        await close_host(host)


def offers(session: AgentSession) -> list[OfferEvent]:
    return [e for e in session.buffer if isinstance(e, OfferEvent)]


async def test_exposition_is_well_formed_and_complete(running: Running) -> None:
    samples = await running.scrape()
    names = {name for name, _ in samples}
    assert names >= {
        "inbox_connected_agents",
        "inbox_queue_depth",
        "inbox_queue_active",
        "inbox_offers_total",
        "inbox_routing_step_seconds_bucket",
        "inbox_routing_step_seconds_sum",
        "inbox_routing_step_seconds_count",
        "inbox_message_seconds_count",
        "inbox_arrival_seconds_count",
        "inbox_store_commits_total",
        "inbox_store_commit_batch_size_bucket",
        "inbox_store_commit_batch_size_count",
        "inbox_store_failed_commits_total",
        "inbox_open_items",
        "inbox_uptime_seconds",
    }
    for outcome in ("made", "accepted", "rejected", "expired", "rescinded"):
        assert value(samples, "inbox_offers_total", outcome=outcome) == 0
    queues = {dict(labels)["queue"] for name, labels in samples if name == "inbox_queue_depth"}
    assert queues == {"vip", "french", "general", "messaging", "cases", "incidents"}
    for family in ("inbox_routing_step_seconds", "inbox_store_commit_batch_size"):
        buckets = sorted(
            (float(dict(labels)["le"]), v)
            for (name, labels), v in samples.items()
            if name == f"{family}_bucket"
        )
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{family} buckets are not cumulative"
        assert buckets[-1] == (float("inf"), value(samples, f"{family}_count"))
    assert value(samples, "inbox_uptime_seconds") >= 0
    # The store committed the config at start-up; the batch histogram agrees with the counter.
    commits = value(samples, "inbox_store_commits_total")
    assert commits > 0 and value(samples, "inbox_store_commit_batch_size_count") == commits
    assert value(samples, "inbox_store_commit_batch_size_sum") >= commits


async def test_values_move_when_routing_happens(running: Running) -> None:
    before = await running.scrape()
    bob = await running.available("bob")
    number = await running.incident()
    await running.host.inbox.start_conversation(channel="case", customer="crm-2")  # nobody on
    after = await running.scrape()
    assert value(after, "inbox_offers_total", outcome="made") == 1
    assert value(after, "inbox_open_items") == 2
    assert value(after, "inbox_queue_depth", queue="cases") == 1
    assert value(after, "inbox_queue_depth", queue="incidents") == 0  # offered, not waiting
    steps = "inbox_routing_step_seconds_count"
    assert value(after, steps) >= value(before, steps) + 3  # presence and two arrivals
    assert value(after, "inbox_routing_step_seconds_sum") > 0
    arrivals = "inbox_arrival_seconds_count"  # each of the two, up to its step's commit
    assert value(after, arrivals) == value(before, arrivals) + 2
    assert value(after, "inbox_arrival_seconds_sum") > value(before, "inbox_arrival_seconds_sum")
    commits = "inbox_store_commits_total"
    assert value(after, commits) > value(before, commits)
    assert value(after, "inbox_store_failed_commits_total") == 0

    await running.host.inbox.handle(bob, AcceptOffer(offer=offers(bob)[0].view.offer.id))
    await running.incident()
    await running.host.inbox.handle(bob, RejectOffer(offer=offers(bob)[1].view.offer.id))
    later = await running.scrape()
    assert value(later, "inbox_offers_total", outcome="accepted") == 1
    assert value(later, "inbox_offers_total", outcome="rejected") == 1
    # Bob was the only eligible agent, so the rejected incident came back to him.
    assert value(later, "inbox_offers_total", outcome="made") == 3
    assert value(later, "inbox_queue_active", queue="incidents") == 1
    # "Bob joined" went through the message path, commit included.
    assert value(later, "inbox_message_seconds_count") >= 1
    assert number in running.host.inbox.conversations.open


async def test_cpu_by_part_grows_with_work_and_parts_stay_within_the_process(
    running: Running,
) -> None:
    def parts(samples: Samples) -> dict[str, float]:
        return {
            dict(labels)["part"]: v
            for (name, labels), v in samples.items()
            if name == "inbox_cpu_seconds_total"
        }

    before = parts(await running.scrape())
    assert set(before) == {"process", "event_loop", "routing_engine", "store_writer"}
    await running.available("bob")
    for i in range(50):  # each one a routing step and writes
        await running.host.inbox.start_conversation(channel="case", customer=f"crm-{i}")
    after = parts(await running.scrape())
    for part in before:
        assert after[part] > before[part], part
    # The loop's thread and the writer's are parts of the process; the engine runs on the loop.
    assert after["event_loop"] + after["store_writer"] <= after["process"]
    assert after["routing_engine"] <= after["event_loop"]


async def test_connected_agents_follows_sockets(running: Running) -> None:
    ws = await running.http.ws_connect(running.url + "/agent")
    try:
        for _ in range(50):
            if value(await running.scrape(), "inbox_connected_agents") == 1:
                break
            await asyncio.sleep(0.02)
        assert value(await running.scrape(), "inbox_connected_agents") == 1
    finally:
        await ws.close()
    for _ in range(50):
        if value(await running.scrape(), "inbox_connected_agents") == 0:
            break
        await asyncio.sleep(0.02)
    assert value(await running.scrape(), "inbox_connected_agents") == 0


def test_label_values_are_escaped() -> None:
    assert metrics.escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    hist = metrics.Histogram((0.1, 1.0))
    for v in (0.1, 0.5, 2.0):
        hist.observe(v)
    assert hist.cumulative() == [(0.1, 1), (1.0, 2), (float("inf"), 3)]


async def test_observers_are_removed_with_the_app(tmp_path: Path) -> None:
    config = replace(demo_config(), seed_passwords={})
    host = await open_host(config, tmp_path / "data")
    try:
        app = create_app(host)
        metrics.setup(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        counts = app[metrics.METRICS].histograms["routing_step"]
        session = host.inbox.open_session("alice", Role.AGENT, "m", time.time() + 60)
        await host.inbox.handle(session, SetPresence(presence="Available"))
        assert counts.count == 1
        await runner.cleanup()
        await host.inbox.handle(session, SetPresence(presence="Away"))
        assert counts.count == 1  # a page no longer served hears nothing more
    finally:
        await close_host(host)
