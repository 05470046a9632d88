"""Consoles that stop reading must not hold up anyone else's messages.

    python -m bench.slow_consoles [--mode stuck|unread|reading|none] [--seconds S]
                                  [--json FILE] [--keep]

Measures "100 clients that stop reading do not delay the others' messages beyond 5 ms p99"
against a real `inbox-tui --server` subprocess (bench.host_process), so that the host's
timings are not mixed with the clients' work, as they are in tests/test_slow_clients.py.
Without --mode it runs every mode in turn, each on a fresh host and data directory, and prints
them side by side (about 4 x (S + 3) s: a minute with the default 12 s).

The floor, written into a fresh store before the host starts:
  bob    30 widget chats whose customers each send a 4,000-character line 8 times a second
         (240 lines/s); his working console accepts them, then he goes Away.
  alice  10 widget chats whose customers each send a short line 8 times a second (80/s):
         the lines measured, from the customer sending one to Alice's console having it.
  extra  100 more consoles of Bob's (API tokens), in a process of their own, log in WARMUP s
         into the load; every line of Bob's goes to each of them too. By mode:
           stuck    they take no bytes off their sockets after logging in, as a console
                    whose process hangs or whose link died (4 KiB receive buffers, raw
                    sockets): the host must drop each (close code 1008) once 1,000 events
                    wait for it;
           unread   aiohttp consoles that stop asking for frames; aiohttp goes on reading
                    up to 512 KiB ahead for each (3.14), so the host writes ~190 long lines
                    to each before their sockets back up;
           reading  the same consoles, reading everything: 24,000 frames a second;
           none     no extra consoles.

The window is from the extra consoles' logins until the host's /metrics counts all of them
dropped (inbox_dropped_consoles_total); reading and none report the same stretch of their load
as the stuck run before them. Also: host CPU seconds, peak RSS and slowest commit (a floor
under every latency here), this process's own event-loop lag, and errors: any line missing,
doubled, out of order or unacknowledged, any stuck console not dropped with 1008, any reading
console dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import math
import multiprocessing
import os
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp

from bench.host_process import HostProcess, start_host, stop_host
from bench.load import (
    GROUP,
    host_config,
    percentiles,
    proc_usage,
    run_in_loop,
    scrape,
    watch_lag,
)
from core.auth import Authenticator
from core.client import ClientError, InboxClient
from core.config import HostSettings
from core.model import Agent, Role, SenderKind
from core.protocol import (
    CLOSE_NOT_READING,
    PROTOCOL_VERSION,
    Authenticate,
    Event,
    Hello,
    LoggedIn,
    MessageEvent,
    OfferEvent,
    Welcome,
    encoder,
    server_decoder,
)
from store import open_store

MODES = ("stuck", "unread", "reading", "none")
PASSWORD = "slow-consoles-password"
EXTRA_CONSOLES = 100
BIG_CUSTOMERS = 30
ALICE_CUSTOMERS = 10
BIG_LINE = "x" * 4_000
# The widget takes 10 frames/s per socket with bursts of 20; paced evenly below that.
LINES_PER_S = 8.0
WARMUP = 2.0  # seconds of load before the extra consoles log in
# A stuck console is dropped after about (read-ahead + 1,000) of Bob's lines: ~5 s at 240/s.
MIN_SECONDS = WARMUP + 7.0
LOGINS_AT_ONCE = 10
SETUP_TIMEOUT = 60.0
DRAIN = 10.0  # for the last lines to arrive after the customers stop
CLOSE_TIMEOUT = 30.0
DROP_POLL = 0.05  # /metrics polled this often for the drop count: the window's resolution
SO_RCVBUF = 4096
CUSTOMER = SenderKind.CUSTOMER


async def provision(data_dir: Path, consoles: int) -> list[str]:
    """Bob and Alice with passwords, and API tokens of Bob's for the extra consoles, written
    into the store before the host opens it."""
    store = await open_store(data_dir)
    try:
        auth = Authenticator(store, session_ttl=HostSettings().session_ttl)
        await store.upsert_agents(
            Agent(
                id=agent,
                display_name=agent.title(),
                capacity={"chat": capacity},
                universal_capacity=capacity,
                groups=(GROUP,),
            )
            for agent, capacity in (("bob", BIG_CUSTOMERS + 10), ("alice", ALICE_CUSTOMERS + 2))
        )
        for agent in ("bob", "alice"):
            await auth.set_password(agent, PASSWORD)
        return [
            (await auth.create_api_token(f"console-{i}", "bob", Role.AGENT, None))[0]
            for i in range(consoles)
        ]
    finally:
        await store.close()


# ---------------------------------------------------------------------------- extra consoles
# In a process of their own: draining 100 sockets (reading mode) in the bench's loop would make
# that loop late, and its lateness would be counted as the host's.


def small_window_socket() -> socket.socket:
    """A 4 KiB receive buffer: a console on a slow link, whose unread bytes back up to the host
    after kilobytes rather than the megabytes loopback allows."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SO_RCVBUF)
    sock.setblocking(False)
    return sock


class FrozenConsole:
    """A console that logs in and then takes no more bytes off its socket. aiohttp would read
    ahead for it, so this speaks the little of RFC 6455 a console needs over a raw stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def _transport(self) -> asyncio.Transport:
        # A stream's writer is typed as writing only; over a socket its transport reads too
        # (uvloop's is not an asyncio.Transport subclass, so a cast, not an isinstance).
        return cast(asyncio.Transport, self.writer.transport)

    @classmethod
    async def connect(cls, url: str) -> FrozenConsole:
        parts = urlsplit(url)
        sock = small_window_socket()
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"no WebSocket upgrade: {head[:80]!r}")
        console = cls(reader, writer)
        console.send(encoder.encode(Hello(version=PROTOCOL_VERSION)))
        if not isinstance(await console.frame(), Welcome):
            raise RuntimeError("no welcome")
        return console

    def send(self, payload: bytes) -> None:
        # A client's frames are masked (RFC 6455 5.3); a zero mask is a valid one.
        n = len(payload)
        size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        self.writer.write(b"\x82" + size + b"\0\0\0\0" + payload)

    async def _read(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        n = second & 0x7F
        if n >= 126:
            n = int.from_bytes(await self.reader.readexactly(2 if n == 126 else 8), "big")
        return first & 0x0F, await self.reader.readexactly(n)

    async def frame(self) -> object:
        while True:
            opcode, payload = await self._read()
            if opcode == 0x2:
                return server_decoder.decode(payload)

    async def log_in(self, token: str) -> None:
        self.send(encoder.encode(Authenticate(token=token, ref=1)))
        while not isinstance(await self.frame(), LoggedIn):
            pass  # an event may come before it
        self._transport().pause_reading()

    async def close_code(self) -> int | None:
        """After the run: what the host sent before it gave up, then its close code."""
        self._transport().resume_reading()
        try:
            while True:
                opcode, payload = await self._read()
                if opcode == 0x8:
                    return int.from_bytes(payload[:2], "big") if payload else None
        except asyncio.IncompleteReadError:
            return None
        finally:
            self.writer.close()


class AiohttpConsole:
    """An aiohttp console: `drain` reads everything (reading mode); otherwise it stops asking
    for frames after logging in (unread mode), and aiohttp reads ahead for it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str) -> AiohttpConsole:
        ws = await http.ws_connect(url, max_msg_size=0, heartbeat=None)
        await ws.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION)))
        if not isinstance(server_decoder.decode(await ws.receive_bytes(timeout=10)), Welcome):
            raise RuntimeError("no welcome")
        return cls(ws)

    async def log_in(self, token: str) -> None:
        await self.ws.send_bytes(encoder.encode(Authenticate(token=token, ref=1)))
        while not isinstance(server_decoder.decode(await self.ws.receive_bytes()), LoggedIn):
            pass

    async def drain(self) -> None:
        async for _ in self.ws:
            pass

    async def close_code(self) -> int | None:
        async for _ in self.ws:
            pass
        return self.ws.close_code


def consoles_process(pipe: Connection, url: str, tokens: list[str], mode: str) -> None:
    run_in_loop(_consoles(pipe, url, tokens, mode))


async def message_from(pipe: Connection, timeout: float | None = None) -> Any:
    if not await asyncio.to_thread(pipe.poll, timeout):
        raise TimeoutError(f"nothing from the other process in {timeout} s")
    return pipe.recv()


async def _consoles(pipe: Connection, url: str, tokens: list[str], mode: str) -> None:
    connector = aiohttp.TCPConnector(
        limit=0, socket_factory=lambda _: small_window_socket(), family=socket.AF_INET
    )
    async with aiohttp.ClientSession(connector=connector) as http:
        # Connected before the load starts, so that the window holds logins, not handshakes.
        consoles: list[FrozenConsole | AiohttpConsole] = list(
            await asyncio.gather(
                *(
                    FrozenConsole.connect(url)
                    if mode == "stuck"
                    else AiohttpConsole.connect(http, url)
                    for _ in tokens
                )
            )
        )
        pipe.send("ready")
        await message_from(pipe)
        gate = asyncio.Semaphore(LOGINS_AT_ONCE)

        async def log_in(console: FrozenConsole | AiohttpConsole, token: str) -> None:
            async with gate:
                await console.log_in(token)

        started = time.perf_counter()
        await asyncio.gather(*(log_in(c, t) for c, t in zip(consoles, tokens, strict=True)))
        pipe.send({"logins": started, "logged_in": time.perf_counter()})
        drains = [
            asyncio.create_task(c.drain())
            for c in consoles
            if mode == "reading" and isinstance(c, AiohttpConsole)
        ]

        await message_from(pipe)  # the load is over
        codes: Counter[str] = Counter()
        if drains:
            codes["open"] = sum(not task.done() for task in drains)
            for task in drains:
                task.cancel()
        else:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                outcomes = await asyncio.gather(
                    *(c.close_code() for c in consoles), return_exceptions=True
                )
            codes.update(str(o) if not isinstance(o, BaseException) else "error" for o in outcomes)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        pipe.send({"codes": dict(codes), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)})


def start_consoles(
    host: HostProcess, tokens: list[str], mode: str
) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    spawn = multiprocessing.get_context("spawn")
    pipe, child_end = spawn.Pipe()
    child = spawn.Process(
        target=consoles_process, args=(child_end, host.agent_url, tokens, mode), daemon=True
    )
    child.start()
    return child, pipe


# ---------------------------------------------------------------------------- customers


@dataclass
class Customer:
    """A widget chat: its socket, whether an agent took it, its lines sent and acknowledged."""

    name: str
    ws: aiohttp.ClientWebSocketResponse
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    acked: int = 0
    reader: asyncio.Task[None] | None = None


async def open_customer(
    http: aiohttp.ClientSession, url: str, name: str, errors: Counter[str]
) -> Customer:
    ws = await http.ws_connect(url, heartbeat=None, max_msg_size=0)
    customer = Customer(name, ws)
    customer.reader = asyncio.create_task(read_customer(customer, errors))
    await ws.send_json({"t": "start", "name": name, "email": f"{name}@bench.test"})
    return customer


async def read_customer(customer: Customer, errors: Counter[str]) -> None:
    async for msg in customer.ws:
        # Its own 4,000-character lines come back to the customer: not worth parsing.
        if msg.type != aiohttp.WSMsgType.TEXT or msg.data.startswith('{"t":"message"'):
            continue
        frame = json.loads(msg.data)
        if frame["t"] == "ack":
            customer.acked += 1
        elif frame["t"] == "state" and frame.get("state") == "work_in_progress":
            customer.accepted.set()
        elif frame["t"] == "error":
            errors[f"widget:{frame.get('code')}"] += 1


async def talk(
    customer: Customer, start: float, until: float, line: Callable[[Customer], str]
) -> None:
    """LINES_PER_S lines on an absolute schedule from `start`, so that a late wake-up does not
    stretch the run."""
    at = start
    while at < until:
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await customer.ws.send_str(line(customer))
        customer.sent += 1
        at += 1.0 / LINES_PER_S


# ---------------------------------------------------------------------------- one run


@dataclass
class Lines:
    """Lines of one agent's chats as its console got them: when, and whether in order."""

    received: dict[str, float] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)  # interaction -> last line number
    out_of_order: int = 0
    duplicates: int = 0

    def got(self, interaction: str, msg_id: str, at: float) -> None:
        if msg_id in self.received:
            self.duplicates += 1
            return
        self.received[msg_id] = at
        n = int(msg_id.rpartition("-")[2])
        if n <= self.last.get(interaction, -1):
            self.out_of_order += 1
        self.last[interaction] = n


class Run:
    """One mode's floor: the customers, Bob's and Alice's working consoles, what they saw."""

    def __init__(self, seconds: float, host: HostProcess) -> None:
        self.seconds = seconds
        self.host = host
        self.errors: Counter[str] = Counter()
        self.sent: dict[str, float] = {}  # Alice's lines by client_msg_id
        self.alice_lines = Lines()
        self.bob_lines = Lines()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.bob = InboxClient(host.agent_url, on_event=self.on_event(self.bob_lines))
        self.alice = InboxClient(host.agent_url, on_event=self.on_event(self.alice_lines))
        self.big: list[Customer] = []
        self.alices: list[Customer] = []
        self.dropped: list[float] = []  # when the host's drop count rose, and to what

    def on_event(self, lines: Lines) -> Callable[[Event], None]:
        def handle(event: Event) -> None:
            now = time.perf_counter()
            client = self.bob if lines is self.bob_lines else self.alice
            if isinstance(event, OfferEvent):
                task = asyncio.get_running_loop().create_task(self.accept(client, event))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif isinstance(event, MessageEvent) and event.message.sender_kind == CUSTOMER:
                lines.got(event.message.interaction, event.message.client_msg_id, now)

        return handle

    async def accept(self, client: InboxClient, offer: OfferEvent) -> None:
        try:
            await client.accept(offer.view.offer.id)
        except ClientError as e:
            self.errors[f"accept:{e.code}"] += 1

    def big_line(self, customer: Customer) -> str:
        msg_id = f"{customer.name}-{customer.sent}"
        return json.dumps({"t": "message", "body": BIG_LINE, "client_msg_id": msg_id})

    def alice_line(self, customer: Customer) -> str:
        msg_id = f"{customer.name}-{customer.sent}"
        self.sent[msg_id] = time.perf_counter()
        return json.dumps({"t": "message", "body": f"line {msg_id}", "client_msg_id": msg_id})

    async def customers_taken(self, prefix: str, count: int) -> list[Customer]:
        url = self.host.widget_url
        customers = await asyncio.gather(
            *(open_customer(self.http, url, f"{prefix}{i:02d}", self.errors) for i in range(count))
        )
        async with asyncio.timeout(SETUP_TIMEOUT):
            await asyncio.gather(*(c.accepted.wait() for c in customers))
        return list(customers)

    async def set_up_floor(self) -> None:
        """Bob alone takes the big chats, then steps away; Alice takes hers."""
        for client, agent in ((self.bob, "bob"), (self.alice, "alice")):
            await client.connect()
            await client.login(agent, PASSWORD)
        await self.bob.set_presence("Available")
        self.big = await self.customers_taken("big", BIG_CUSTOMERS)
        await self.bob.set_presence("Away")
        await self.alice.set_presence("Available")
        self.alices = await self.customers_taken("alice", ALICE_CUSTOMERS)

    async def load(self, start: float) -> None:
        until = start + self.seconds
        talkers = []
        for group, line in ((self.big, self.big_line), (self.alices, self.alice_line)):
            for i, customer in enumerate(group):
                # Spread over one period, so that the lines arrive evenly.
                offset = i / len(group) / LINES_PER_S
                talkers.append(talk(customer, start + offset, until, line))
        await asyncio.gather(*talkers)

    async def watch_drops(self) -> None:
        while True:
            await asyncio.sleep(DROP_POLL)
            metrics = await scrape(self.http, self.host.base_url)
            count = int(metrics.get("inbox_dropped_consoles_total", 0))
            if count > len(self.dropped):
                self.dropped.extend([time.perf_counter()] * (count - len(self.dropped)))

    def everything_arrived(self) -> bool:
        return (
            len(self.alice_lines.received) >= len(self.sent)
            and len(self.bob_lines.received) >= sum(c.sent for c in self.big)
            and all(c.acked >= c.sent for c in (*self.big, *self.alices))
        )

    async def drained(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN):
                while not self.everything_arrived():
                    await asyncio.sleep(0.02)

    def check_lines(self) -> None:
        """Every line reached its agent's console once, in order, and was acknowledged."""
        for what, n in (
            ("alice_missing", len(self.sent) - len(self.alice_lines.received)),
            ("bob_missing", sum(c.sent for c in self.big) - len(self.bob_lines.received)),
            ("out_of_order", self.alice_lines.out_of_order + self.bob_lines.out_of_order),
            ("duplicates", self.alice_lines.duplicates + self.bob_lines.duplicates),
            ("unacked", sum(c.sent - c.acked for c in (*self.big, *self.alices))),
        ):
            if n:
                self.errors[what] += n

    def alice_ms(self, since: float, until: float) -> dict[str, float | int]:
        """Percentiles (ms) of Alice's lines sent in [since, until)."""
        got = self.alice_lines.received
        return percentiles(
            [got[m] - sent for m, sent in self.sent.items() if m in got and since <= sent < until]
        )

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for customer in (*self.big, *self.alices):
            await customer.ws.close()
            if customer.reader is not None:
                customer.reader.cancel()
        await asyncio.gather(self.bob.close(), self.alice.close(), return_exceptions=True)
        await self.http.close()


async def run_mode(mode: str, args: argparse.Namespace, span: float | None) -> dict[str, Any]:
    """One mode on a fresh host. `span`: seconds from the logins to the last drop in the stuck
    run before, so that reading and none report the same stretch of their load."""
    root = Path(tempfile.mkdtemp(prefix=f"inbox-slow-{mode}-"))
    host: HostProcess | None = None
    run: Run | None = None
    child: multiprocessing.process.BaseProcess | None = None
    pipe: Connection | None = None
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    try:
        (root / "data").mkdir()
        config = root / "inbox.toml"
        config.write_text(host_config(max_message_length=len(BIG_LINE)))
        tokens = await provision(root / "data", EXTRA_CONSOLES if mode != "none" else 0)
        host = await asyncio.to_thread(start_host, root, SETUP_TIMEOUT, config=config)
        run = Run(args.seconds, host)
        await run.set_up_floor()
        if mode != "none":
            child, pipe = start_consoles(host, tokens, mode)
            await message_from(pipe, SETUP_TIMEOUT)  # connected, not yet logged in

        # The setup lives to the end: keep the collector off it, as the host does.
        gc.collect()
        gc.freeze()
        usage_before = proc_usage(host.proc.pid)
        lag: list[float] = []
        watchers = [asyncio.create_task(watch_lag(lag)), asyncio.create_task(run.watch_drops())]
        start = time.perf_counter() + 0.1
        login = {"logins": start + WARMUP, "logged_in": start + WARMUP}

        async def consoles_log_in() -> None:
            await asyncio.sleep(start + WARMUP - time.perf_counter())
            if pipe is not None:
                pipe.send("log in")
                login.update(await message_from(pipe, SETUP_TIMEOUT))

        try:
            await asyncio.gather(run.load(start), consoles_log_in())
            await run.drained()
        finally:
            for watcher in watchers:
                watcher.cancel()
        usage = proc_usage(host.proc.pid)
        metrics = await scrape(run.http, host.base_url)

        consoles: dict[str, Any] = {}
        if pipe is not None:
            pipe.send("stop")
            consoles = await message_from(pipe, CLOSE_TIMEOUT + SETUP_TIMEOUT)
            codes = consoles["codes"]
            if mode == "reading" and codes.get("open", 0) != EXTRA_CONSOLES:
                run.errors["reading_consoles_closed"] += EXTRA_CONSOLES - codes.get("open", 0)
            elif mode != "reading" and codes.get(str(CLOSE_NOT_READING), 0) != EXTRA_CONSOLES:
                run.errors["stuck_consoles_not_dropped"] += 1
        run.check_lines()

        logins = login["logins"]
        if mode in ("stuck", "unread") and len(run.dropped) >= EXTRA_CONSOLES:
            until, basis = run.dropped[EXTRA_CONSOLES - 1], "measured"
        else:
            until, basis = logins + (span or 5.0), "stuck run" if span else "nominal 5 s"
        seconds = args.seconds
        return {
            "mode": mode,
            "seconds": seconds,
            "loadavg_before": loadavg,
            "lines": {"bob": len(run.bob_lines.received), "alice": len(run.alice_lines.received)},
            "window": {
                "basis": basis,
                "from_s": round(logins - start, 2),
                "to_s": round(until - start, 2),
                "logins_s": round(login["logged_in"] - logins, 3),
                "first_drop_s": round(run.dropped[0] - logins, 2) if run.dropped else None,
            },
            "alice_ms": {
                "all": run.alice_ms(-math.inf, math.inf),
                "before": run.alice_ms(-math.inf, logins),
                "window": run.alice_ms(logins, until),
                "after": run.alice_ms(until, math.inf),
            },
            "consoles": consoles,
            "host": {
                "dropped_consoles": int(metrics.get("inbox_dropped_consoles_total", 0)),
                "cpu_s": round(usage["cpu_s"] - usage_before["cpu_s"], 2),
                "peak_rss_mib": round(usage["peak_rss_mib"], 1),
                "slowest_commit_ms": round(metrics["inbox_store_commit_seconds_max"] * 1000, 1),
            },
            "bench_loop_lag_ms": percentiles(lag),
            "errors": dict(sorted(run.errors.items())),
        }
    finally:
        if run is not None:
            await run.close()
        if child is not None:
            await asyncio.to_thread(child.join, 10)
            if child.is_alive():
                child.kill()
        if host is not None:
            stop_host(host)
        gc.unfreeze()
        if args.keep:
            print(f"kept {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------- report


def table(reports: list[dict[str, Any]]) -> str:
    def row(label: str, cell: Callable[[dict[str, Any]], object]) -> str:
        return f"{label:34}" + "".join(f"{cell(r)!s:>24}" for r in reports)

    def ms(phase: str) -> Callable[[dict[str, Any]], str]:
        def cell(r: dict[str, Any]) -> str:
            p = r["alice_ms"][phase]
            return f"{p['n']}: {p['p50']}/{p['p99']}/{p['max']}" if p["n"] else "-"

        return cell

    lines = [
        row("mode", lambda r: r["mode"]),
        row("lines received: bob / alice", lambda r: "{bob} / {alice}".format(**r["lines"])),
        row("alice, n: ms p50/p99/max", ms("all")),
        row("  before the logins", ms("before")),
        row("  logins to last drop", ms("window")),
        row("  after", ms("after")),
        row("window s from load start", lambda r: "{from_s}-{to_s}".format(**r["window"])),
        row("  measured by", lambda r: r["window"]["basis"]),
        row("  logins took s", lambda r: r["window"]["logins_s"]),
        row("  first drop s after logins", lambda r: r["window"]["first_drop_s"]),
        row("consoles' close codes", lambda r: r["consoles"].get("codes", "-")),
        row("host: dropped consoles", lambda r: r["host"]["dropped_consoles"]),
        row("host: cpu s / peak RSS MiB", lambda r: "{cpu_s} / {peak_rss_mib}".format(**r["host"])),
        row("host: slowest commit ms", lambda r: r["host"]["slowest_commit_ms"]),
        row("bench loop lag ms p99", lambda r: r["bench_loop_lag_ms"]["p99"]),
        row("errors", lambda r: sum(r["errors"].values())),
        row("load average before", lambda r: " ".join(r["loadavg_before"])),
    ]
    lines += [f"errors ({r['mode']}): {r['errors']}" for r in reports if r["errors"]]
    return "\n".join(lines)


async def run_modes(modes: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    reports = []
    span: float | None = None
    for mode in modes:
        print(f"{mode}: {args.seconds:g} s of load on a fresh host...", flush=True)
        report = await run_mode(mode, args, span)
        window = report["window"]
        if mode == "stuck" and window["basis"] == "measured":
            span = window["to_s"] - window["from_s"]
        print(
            f"  alice p99 {report['alice_ms']['all']['p99']} ms, from the logins to the last "
            f"drop {report['alice_ms']['window']['p99']} ms; errors {report['errors'] or 'none'}",
            flush=True,
        )
        reports.append(report)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.slow_consoles",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mode", choices=MODES, help="one mode (default: each in turn)")
    parser.add_argument("--seconds", type=float, default=12.0, help="customer load per mode")
    parser.add_argument("--json", type=Path, help="write the reports here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (host logs)")
    args = parser.parse_args(argv)
    if args.seconds < MIN_SECONDS:
        parser.error(f"--seconds: at least {MIN_SECONDS:g}, for stuck consoles to be dropped")
    reports = run_in_loop(run_modes([args.mode] if args.mode else list(MODES), args))
    print(table(reports))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
