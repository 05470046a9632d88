"""The cluster's bus: one NATS connection per host process, the subjects it uses, and who is
alive on it.

NATS carries no state here: every frame it carries is between a socket and the process that
serves the socket's session, and is lost with either, as a TCP segment would be. What must
survive is in PostgreSQL before anything is acknowledged.

Subjects, under the cluster's prefix `inbox.<cluster>.` (the cluster's id is kept in its
database, so hosts on one database meet on the bus and two clusters sharing a NATS server do
not; docs/architecture.md has the whole relay protocol):

    alive               every process, every ALIVE_EVERY s: "<role> <process id> <epoch>"
    router.<id>.open    request: an edge opens a relayed socket on router <id>
    router.<id>.http    request: an edge relays one HTTP request to router <id>
    router.<id>.in      frames from the edges to router <id>'s relayed sockets
    edge.<id>           frames from the router to edge <id>'s sockets

Edges follow the router of the highest fencing epoch heard: a router that was frozen and
deposed, and announces itself again before it learns so, is not followed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

log = logging.getLogger("inbox_tui.bus")

ALIVE_EVERY = 0.5
# Silent for this long, a process is taken for dead: its relayed sockets are closed on the
# other side, so sessions detach and consoles reconnect. Several missed beats, so a busy
# event loop is not mistaken for a dead one.
DEAD_AFTER = 3.0
CONNECT_TIMEOUT = 2.0


# A relayed frame: the socket's id (CONN_ID_LENGTH ASCII characters, chosen by the edge), one
# byte saying what follows, then the data. A WebSocket frame larger than the bus's largest
# message (an attachment) goes as PART pieces ending with its BINARY or TEXT piece.
CONN_ID_LENGTH = 16
BINARY, TEXT, PART, CLOSE = b"b", b"t", b"p", b"c"


def new_conn_id() -> str:
    return secrets.token_hex(CONN_ID_LENGTH // 2)


def frames(conn: str, op: bytes, data: bytes, max_payload: int) -> list[bytes]:
    """`data` as one or more bus messages of at most `max_payload` bytes."""
    head = conn.encode()
    room = max_payload - CONN_ID_LENGTH - 1
    if len(data) <= room:
        return [head + op + data]
    pieces = [head + PART + data[i : i + room] for i in range(0, len(data) - room, room)]
    last = (len(data) - 1) // room * room
    return [*pieces, head + op + data[last:]]


def close_frame(conn: str, code: int, reason: bytes) -> bytes:
    return conn.encode() + CLOSE + code.to_bytes(2, "big") + reason[:120]


def parse(payload: bytes) -> tuple[str, bytes, bytes]:
    """(socket id, op, data) of a relayed frame; ValueError if it is none."""
    if len(payload) <= CONN_ID_LENGTH:
        raise ValueError("short relay frame")
    conn = payload[:CONN_ID_LENGTH].decode("ascii")
    return conn, payload[CONN_ID_LENGTH : CONN_ID_LENGTH + 1], payload[CONN_ID_LENGTH + 1 :]


class Reassembly:
    """Joins PART pieces to the piece that ends them, per socket."""

    def __init__(self) -> None:
        self.pending: dict[str, list[bytes]] = {}

    def add(self, conn: str, op: bytes, data: bytes) -> bytes | None:
        """The whole frame's data once `op` ends it; None while pieces are still coming."""
        if op == PART:
            self.pending.setdefault(conn, []).append(data)
            return None
        parts = self.pending.pop(conn, None)
        return data if parts is None else b"".join([*parts, data])

    def forget(self, conn: str) -> None:
        self.pending.pop(conn, None)


def process_id() -> str:
    """Unique on the bus and readable in logs: the machine, the pid, and a random tail
    (pids repeat across machines and restarts)."""
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())
    return f"{name[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class Bus:
    """A NATS connection that reconnects by itself, and the heartbeats of every process."""

    url: str
    cluster: str  # the cluster's id: its subjects are under inbox.<cluster>.
    process: str = field(default_factory=process_id)
    role: str = "edge"  # what this process says it is in its heartbeats: "edge" or "router"
    epoch: int = 0  # the routing role's fencing epoch while this process routes
    nc: Client | None = None
    # Why the bus cannot be used now, for /healthz; None while connected.
    trouble: str | None = "not connected yet"
    seen: dict[str, tuple[str, float]] = field(default_factory=dict)  # process: (role, when)
    # Told of a process gone: silent for DEAD_AFTER, or a router that another has replaced
    # (a router announces itself only once it holds the role, so the one before has lost it).
    on_gone: list[Callable[[str], None]] = field(default_factory=list)
    on_router: list[Callable[[str], None]] = field(default_factory=list)  # a new one followed
    routing: str | None = None  # the router followed: the highest epoch heard
    routing_epoch: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def alive_subject(self) -> str:
        return f"inbox.{self.cluster}.alive"

    def router_subject(self, process: str, what: str) -> str:
        """`what` is "open", "http" or "in"."""
        return f"inbox.{self.cluster}.router.{process}.{what}"

    def edge_inbox(self, process: str) -> str:
        return f"inbox.{self.cluster}.edge.{process}"

    async def connect(self) -> None:
        """Connect, retrying until the server answers; afterwards the client reconnects by
        itself for as long as this process runs."""
        while self.nc is None:
            try:
                self.nc = await nats.connect(
                    # A NATS cluster: its servers' URLs, comma-separated; the client moves on
                    # to the next when one goes.
                    [url.strip() for url in self.url.split(",")],
                    name=self.process,
                    connect_timeout=CONNECT_TIMEOUT,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    allow_reconnect=True,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=self._error,
                )
            except Exception as e:  # nats raises its own and OSError: say why, keep trying
                reason = f"the bus at {self.url} cannot be reached: {e or type(e).__name__}"
                if self.trouble != reason:
                    log.warning("event=bus_unreachable reason=%s", e or type(e).__name__)
                self.trouble = reason
                await asyncio.sleep(0.5)
        self.trouble = None
        log.info("event=bus_connected url=%s process=%s", self.url, self.process)
        await self.nc.subscribe(self.alive_subject, cb=self._heard)
        self._tasks = [
            asyncio.create_task(self._beat()),
            asyncio.create_task(self._reap()),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.drain()
            self.nc = None

    @property
    def client(self) -> Client:
        if self.nc is None:
            raise RuntimeError("the bus is not connected")
        return self.nc

    async def announce(self) -> None:
        """Say this process's role now rather than at the next beat."""
        with contextlib.suppress(Exception):  # disconnected: the next beat says it
            beat = f"{self.role} {self.process} {self.epoch}"
            await self.client.publish(self.alive_subject, beat.encode())

    async def _beat(self) -> None:
        while True:
            await self.announce()
            await asyncio.sleep(ALIVE_EVERY)

    async def _heard(self, msg: Msg) -> None:
        try:
            role, process, epoch_text = msg.data.decode().split(" ")
            epoch = int(epoch_text)
        except ValueError:
            return
        self.seen[process] = (role, time.monotonic())
        if role == "router" and process != self.routing and epoch > self.routing_epoch:
            before, self.routing, self.routing_epoch = self.routing, process, epoch
            log.info("event=router_heard process=%s epoch=%s before=%s", process, epoch, before)
            if before is not None:
                self._gone(before)
            for callback in list(self.on_router):
                callback(process)
        elif role != "router" and process == self.routing:
            self.routing = None  # it stepped down; its successor's epoch is higher
            self._gone(process)

    def _gone(self, process: str) -> None:
        for callback in list(self.on_gone):
            callback(process)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(ALIVE_EVERY)
            now = time.monotonic()
            for process, (_, when) in list(self.seen.items()):
                if now - when >= DEAD_AFTER:
                    del self.seen[process]
                    log.info("event=process_silent process=%s", process)
                    if process == self.routing:
                        self.routing = None
                    self._gone(process)

    async def _disconnected(self) -> None:
        self.trouble = f"the bus at {self.url} is disconnected; reconnecting"
        log.warning("event=bus_disconnected url=%s", self.url)

    async def _reconnected(self) -> None:
        self.trouble = None
        log.info("event=bus_reconnected url=%s", self.url)

    async def _error(self, e: Exception) -> None:
        log.info("event=bus_error error=%s", e or type(e).__name__)
