"""The embedded demo: the real routing host in-process on a loopback port and a temporary SQLite
store, simulated agents connected through the agent protocol (core/client) and simulated
customers arriving at a steady pace, printing every routing decision and its reason.

Simulated people act only through what real ones use: agents through the WebSocket client,
customers through the inbox's customer API (the one behind the widget and the REST API).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TextIO

from core.client import ClientError, InboxClient
from core.config import HostConfig, load_config
from core.demo import DEMO_PASSWORD, with_logins
from core.host.app import close_host, create_app, open_host, serve_loopback
from core.host.state import Host
from core.model import OfferKind, Role
from core.protocol import (
    CloseRecord,
    Event,
    InteractionEvent,
    OfferEvent,
    PresenceEvent,
)
from core.routing.decisions import (
    ItemChanged,
    ItemUnroutable,
    OfferEnded,
    OfferMade,
    audit_entry,
)
from core.service.inbox import InboxError
from core.service.routing import Step

CUSTOMERS = ["Ana", "Bruno", "Chen", "Dara", "Elif", "Femi", "Gus", "Hana", "Ivo", "June"]
QUESTIONS = [
    "My order has not arrived.",
    "How do I change my delivery address?",
    "I was charged twice.",
    "Can I get a refund?",
]
# Cases a CRM raises over the REST API, with what they are about (shown on the offer card).
CASES = [
    ("Refund not received after return", "billing", "normal"),
    ("Parcel marked delivered but missing", "delivery", "high"),
    ("Account locked after password reset", "account", "high"),
    ("Wrong size sent twice", "orders", "normal"),
]
CASE_SHARE = 0.15
FOLLOW_UPS = [
    "Any news on this?",
    "Hello? Still waiting for an answer.",
    "One more detail: it's urgent.",
]
# Played by nobody: a second console logs in as this agent and works beside the demo's. The
# french queue's chats wait for her (or overflow to everyone after its max_wait).
SPARE_AGENT = "chloe"


class ConsoleRunner(Protocol):
    """Runs the console logged in as `agent` at `url` until the person quits, with `banner` on
    its first screen, while `beside` (the simulated customers) runs."""

    async def __call__(
        self, *, url: str, agent: str, password: str, banner: str, beside: Awaitable[None]
    ) -> None: ...


class SimulatedAgent:
    """One agent's console, played by a script: accept most offers, answer, end, close."""

    def __init__(self, demo: Demo, agent: str) -> None:
        self.demo = demo
        self.agent = agent
        self.rng = random.Random(f"{demo.seed}-{agent}")
        self.client = InboxClient(demo.url, on_event=self.on_event)

    async def start(self) -> None:
        await self.client.connect()
        await self.client.login(self.agent, DEMO_PASSWORD)
        await self.client.set_presence("Available")

    def pause(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high) * self.demo.interval / 2

    async def on_event(self, event: Event) -> None:
        if isinstance(event, OfferEvent):
            self.demo.spawn(self.answer(event))
        elif isinstance(event, InteractionEvent) and event.change == "opened":
            self.demo.spawn(self.work(event.record.number))
        elif (
            isinstance(event, PresenceEvent)
            and event.agent.id == self.agent
            and event.agent.presence == "Away"  # the queue's timeout presence: come back later
        ):
            self.demo.spawn(self.come_back())

    async def answer(self, event: OfferEvent) -> None:
        await asyncio.sleep(self.pause(1, 5))
        roll = self.rng.random()
        with contextlib.suppress(ClientError):
            if roll < 0.8 or event.view.offer.kind == OfferKind.TRANSFER:
                await self.client.accept(event.view.offer.id)
            elif roll < 0.9:
                await self.client.reject(event.view.offer.id, "busy")
            # else: not looking; the offer expires and goes to someone else

    async def work(self, number: str) -> None:
        with contextlib.suppress(ClientError):
            await asyncio.sleep(self.pause(1, 4))
            await self.client.send_message(number, "Thanks for waiting, let me check that.")
            self.demo.messages += 1
            await asyncio.sleep(self.pause(5, 14))
            await self.client.send_message(number, "Done: anything else I can help with?")
            self.demo.messages += 1
            await asyncio.sleep(self.pause(2, 6))
            await self.client.end_chat(number)
            await asyncio.sleep(self.pause(1, 3))
            await self.client.request(CloseRecord(interaction=number))

    async def come_back(self) -> None:
        await asyncio.sleep(self.pause(15, 30))
        with contextlib.suppress(ClientError):
            await self.client.set_presence("Available")


class Demo:
    def __init__(
        self,
        host: Host,
        url: str,
        out: TextIO,
        *,
        interval: float,
        seed: int,
        console_agent: str | None = None,
    ) -> None:
        self.host = host
        self.url = url
        self.out = out
        self.interval = interval
        self.seed = seed
        self.rng = random.Random(seed)
        self.customers = 0
        self.messages = 0
        self.tasks: set[asyncio.Task[None]] = set()
        host.inbox.observe_steps(self.print_step)
        # The agent at the console is a person: the script plays only the others.
        # The spare agent is left for a second console (`--connect … --user chloe`).
        staff = [
            a
            for a in host.config.agents
            if a.role != Role.ADMIN and a.id not in (console_agent, SPARE_AGENT)
        ]
        self.agents = [SimulatedAgent(self, a.id) for a in staff]

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, seconds: float | None) -> None:
        for agent in self.agents:
            await agent.start()
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            while deadline is None or time.monotonic() < deadline:
                self.spawn(self.case() if self.rng.random() < CASE_SHARE else self.customer())
                await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.interval)
        except asyncio.CancelledError:
            pass  # Ctrl-C: stop arriving, then shut down as after a bounded run
        finally:
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for agent in self.agents:
                await agent.client.close()

    async def customer(self) -> None:
        """A customer opens a chat (or a messaging conversation) and asks a question."""
        self.customers += 1
        name = self.rng.choice(CUSTOMERS)
        attributes: dict[str, str | int | float | bool] = {}
        if self.rng.random() < 0.25:
            attributes["language"] = "fr"
        if self.rng.random() < 0.2:
            attributes["tier"] = self.rng.choice(["gold", "platinum"])
        question = self.rng.choice(QUESTIONS)
        # What the customer wants, shown on the offer card before the routing reason.
        attributes["subject"] = question
        customer = f"web-{self.rng.randrange(1, 10**6):06d}"
        inbox = self.host.inbox
        messaging = self.rng.random() < 0.25
        try:
            record = await inbox.start_conversation(
                channel="messaging" if messaging else "chat",
                customer=customer,
                customer_name=name,
                attributes=attributes,
                priority=1 if attributes.get("tier") else 0,
            )
            await inbox.customer_message(record.number, customer, question, f"{customer}-1")
            self.messages += 1
            if messaging:
                # Messaging customers come back later: that is what fills the ongoing tray's
                # unread counts while the agent works on live chats.
                for n in range(2, 4):
                    await asyncio.sleep(self.rng.uniform(4, 10) * self.interval)
                    await inbox.customer_message(
                        record.number, customer, self.rng.choice(FOLLOW_UPS), f"{customer}-{n}"
                    )
                    self.messages += 1
        except InboxError as e:
            if e.code not in ("closed", "not_found"):
                self.say(f"{'':12} refused      {e.code}: {e.message}")

    async def case(self) -> None:
        """A CRM raises a case about a customer: no chat, just what it is about."""
        self.customers += 1
        summary, category, urgency = self.rng.choice(CASES)
        customer = f"crm-{self.rng.randrange(1, 10**6):06d}"
        with contextlib.suppress(InboxError):
            await self.host.inbox.start_conversation(
                channel="case",
                customer=customer,
                customer_name=self.rng.choice(CUSTOMERS),
                attributes={
                    "short_description": summary,
                    "category": category,
                    "urgency": urgency,
                },
                priority=1 if urgency == "high" else 0,
            )

    def print_step(self, step: Step) -> None:
        for d in step.decisions:
            if isinstance(d, OfferEnded) and d.offer.state == "accepted":
                continue  # the "assigned" line that follows says the same
            e = audit_entry(d)
            if isinstance(d, OfferMade):
                kind = "transfer" if d.offer.kind == OfferKind.TRANSFER else "offered"
                label = d.item.interaction or d.item.id
            elif isinstance(d, ItemUnroutable):
                kind, label = "unroutable", d.item.interaction or d.item.id
            elif isinstance(d, ItemChanged | OfferEnded):
                kind = e.kind.removeprefix("item_").removeprefix("offer_")
                label = d.item.interaction or d.item.id
            else:
                kind, label = "presence", ""
            self.say(f"{label:12} {kind:12} {e.agent or '':8} {e.reason}")

    def say(self, line: str) -> None:
        self.out.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        self.out.flush()


async def run_demo(
    config_path: Path,
    *,
    seconds: float | None = None,
    interval: float = 2.0,
    seed: int = 7,
    out: TextIO = sys.stdout,
    console_agent: str | None = None,
    console: ConsoleRunner | None = None,
) -> None:
    """Run the demo in a temporary data directory, removed at the end. With `console_agent`
    and `console` (the console package's runner, handed in by the entry point so the host
    never imports the console), the console runs in this terminal logged in as that agent and
    the routing log goes to a file in the data directory; without, the routing log is printed
    here."""
    if console is None:
        console_agent = None
    config: HostConfig = with_logins(load_config(config_path))
    with tempfile.TemporaryDirectory(prefix="inbox-tui-demo-") as tmp:
        host = await open_host(config, Path(tmp))
        runner, url = await serve_loopback(create_app(host))
        agent_url = url.replace("http://", "ws://") + "/agent"
        log = out if console_agent is None else (Path(tmp) / "routing.log").open("w")
        banner = (
            f"inbox-tui demo: routing host at {url} (widget: {url}/widget), data in {tmp} "
            f"(removed at exit)\nagents: {', '.join(a.id for a in host.config.agents)} "
            f"(password: {DEMO_PASSWORD}); a customer about every {interval:g}s.\n"
        )
        log.write(banner)
        demo = Demo(host, agent_url, log, interval=interval, seed=seed, console_agent=console_agent)
        try:
            if console is None or console_agent is None:
                out.write("Ctrl-C stops.\n")
                await demo.run(seconds)
            else:
                await console(
                    url=agent_url,
                    agent=console_agent,
                    password=DEMO_PASSWORD,
                    banner=console_banner(agent_url, [a.id for a in config.agents], console_agent),
                    beside=demo.run(seconds),
                )
        finally:
            stats = host.inbox.store_stats
            out.write(
                banner + f"stopped: {demo.customers} customers, {demo.messages} messages, "
                f"{stats.commits} commits, largest batch {stats.max_batch}\n"
            )
            await runner.cleanup()
            await close_host(host)
            if log is not out:
                log.close()


def console_banner(url: str, agents: list[str], console_agent: str) -> str:
    """What a newcomer needs on screen: where the host is, how to open a second console and
    which accounts exist (the routing log is a file they may never find)."""
    http = url.replace("ws://", "http://").removesuffix("/agent")
    spare = SPARE_AGENT if SPARE_AGENT in agents else "another agent"
    return (
        f"Host {http}  ·  customer widget {http}/widget\n"
        f"Accounts: {', '.join(agents)}  (password {DEMO_PASSWORD}); "
        f"{spare} is played by nobody.\n"
        f"Second console: inbox-tui --connect {http} --user {spare}\n"
        f"You are {console_agent}, Available: press a to accept an offer, n for the next unread."
    )
