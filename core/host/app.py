"""The routing host: wires the service (inbox, authenticator, administration) into one aiohttp
app.

Only wiring lives here; each endpoint family is its own module with a `setup(app)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger

from core.config import HostConfig
from core.host import (
    admin_api,
    agent_socket,
    api,
    files_api,
    mail_in,
    metrics,
    relay,
    widget,
    widget_files,
)
from core.host.bus import Bus
from core.host.edge import Edge, create_edge_app
from core.host.standby import standby_site
from core.host.state import HOST, Host
from core.protocol import MAX_FRAME_BYTES
from core.service.boot import close_service, open_service, open_shared

log = logging.getLogger("inbox_tui.host")

SERVER_NAME = "inbox-tui/0.1"


class StartupError(Exception):
    """The host cannot start; the message says why and what to do."""


def check_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StartupError(f"cannot create data directory {data_dir}: {e.strerror}") from e
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise StartupError(f"data directory {data_dir} is not writable by this user")


async def open_host(config: HostConfig, data_dir: Path) -> Host:
    check_data_dir(data_dir)
    inbox, auth, admin = await open_service(config, data_dir)
    return Host(config=inbox.config, inbox=inbox, auth=auth, admin=admin, data_dir=data_dir)


async def close_host(host: Host) -> None:
    await close_service(host.inbox)


async def healthz(request: web.Request) -> web.Response:
    """200 "ok", or 503 "degraded" while the latest store commit failed (a full or failing
    disk): the host still serves reads, but a load balancer should send new work elsewhere.
    The next successful commit (a retry, once the disk is fixed) clears it."""
    host = request.app[HOST]
    failing = host.inbox.store_stats.failing
    body = {
        "status": "degraded" if failing else "ok",
        "uptime": round(time.time() - host.started_at, 3),
        "connected_agents": host.connected_agents,
        "open_items": host.inbox.open_item_count(),
    }
    if failing:
        body["store"] = failing
    if host.bus is not None:
        body["role"] = "router"
        body["process"] = host.bus.process
        if host.bus.trouble is not None:
            # Still 200: the router serves its own sockets without the bus, and while the bus
            # is down for every host, it is the one host that can serve at all.
            body["bus"] = host.bus.trouble
    return web.json_response(body, status=503 if failing else 200)


# Kernel send buffer of each WebSocket (agent console, widget customer). Linux lets it grow to
# megabytes per socket on its own; a console that stops reading would then swallow that much
# before its bounded event queue noticed (sessions.OUTGOING_LIMIT), and a floor of them would
# hold gigabytes of kernel memory.
SOCKET_SEND_BUFFER = 64 * 1024


async def bound_send_buffer(request: web.Request, response: web.StreamResponse) -> None:
    if isinstance(response, web.WebSocketResponse) and request.transport is not None:
        sock = request.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)


async def prune_sessions(app: web.Application) -> AsyncIterator[None]:
    """Expired and revoked sessions leave the store at start and hourly after, for as long as
    the app runs (core.auth.PRUNE_INTERVAL)."""
    task = asyncio.create_task(app[HOST].auth.prune_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(host: Host, *, relay_secret: str | None = None) -> web.Application:
    """The host's app; with `relay_secret`, requests relayed from the edges are served as
    from the address of their client."""
    middlewares = [] if relay_secret is None else [relay.trust_relayed(relay_secret)]
    app = web.Application(client_max_size=MAX_FRAME_BYTES, middlewares=middlewares)
    app[HOST] = host
    app.on_response_prepare.append(bound_send_buffer)
    app.cleanup_ctx.append(prune_sessions)
    app.router.add_get("/healthz", healthz)
    agent_socket.setup(app)
    api.setup(app, openapi_parts=[admin_api.openapi_part(), files_api.openapi_part()])
    admin_api.setup(app)
    files_api.setup(app)
    metrics.setup(app)
    widget.setup(app)
    widget_files.setup(app)
    mail_in.setup(app)
    return app


# A connection must send a whole request head within this long of opening (or of its last
# response): aiohttp's default is an hour, so a client sending half a head and then nothing
# (slowloris) held a socket that long. WebSockets, once upgraded, are not affected.
IDLE_TIMEOUT = 30.0


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log, but a request its parser refuses (a NUL byte in a header, a bad
    request line) is one line, `event=bad_request`. aiohttp answers it 400 and would log it as
    an ERROR with the parser's traceback: a dozen lines any client can write into the host log
    at will, for its own mistake. Everything else keeps aiohttp's message and traceback."""

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if not isinstance(exc, HttpProcessingError):
            self.logger.exception(msg, *args, **kwargs)
            return
        # aiohttp's only argument here is the client's address ("Error handling request
        # from %s"). The parser's message names the fault on its first line and quotes the
        # client's bytes on the next ones, which stay out of the log.
        address = args[0] if len(args) == 1 else "?"
        reason = " ".join(exc.message.partition("\n")[0].split()).rstrip(":")[:200]
        reason = reason.replace('"', "'")
        log.info('event=bad_request address=%s status=%s reason="%s"', address, exc.code, reason)


def runner_for(app: web.Application, *, handle_signals: bool = True) -> web.AppRunner:
    return web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=IDLE_TIMEOUT,
        logger=ServerLog(server_logger),
        handle_signals=handle_signals,
    )


async def serve_loopback(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve `app` on a free 127.0.0.1 port, for the demo, tests and benches; returns the
    runner (clean it up to stop) and the base URL, http://127.0.0.1:PORT."""
    runner = runner_for(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


# Collection thresholds (Python's defaults: 700, 10, 10). At the standard load preset the
# defaults ran 5,044 passes in 81 s, 25 s of the host's 78 s of CPU: a saturated host keeps
# many objects alive a while (queued writes, waiting frames), and each pass walked them
# again. With these, 295 passes and 4.8 s; at 50 arrivals/s 21 passes instead of 233, with as
# many over 10 ms as before (10) and the same p99s. A first threshold of 100,000 had made
# each pass a 40 ms stall.
GC_THRESHOLDS = (5_000, 20, 20)


@contextlib.contextmanager
def built_to_last() -> Iterator[None]:
    """Build what lives as long as the host's routing term (configuration, routing state,
    open conversations) with the collector off, then move it out of the collector's sight and
    collect less often (GC_THRESHOLDS). Left on while 50,000 conversations loaded, the
    collector walked the growing heap again and again (docs/scaling.md); afterwards each full
    pass would walk it again (a third fewer passes at 100 arrivals/s when frozen). What an
    earlier term froze is unfrozen first, so that whatever of it is garbage now is collected."""
    enabled = gc.isenabled()
    gc.disable()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        if enabled:
            gc.enable()


def bind(listen_host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind before anything slow so a taken port is reported at once and clearly. With
    `reuse_port`, the worker processes of one host each bind the same port and the kernel
    spreads the connections over them."""
    sock = reserve(listen_host, port, reuse_port=reuse_port)
    sock.listen(512)
    sock.setblocking(False)
    return sock


def reserve(listen_host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A socket bound to the address, not listening yet."""
    family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((listen_host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {listen_host} is already in use: is another host running? "
                "Choose another with --listen HOST:PORT"
            ) from e
        raise StartupError(f"cannot listen on {listen_host}:{port}: {e.strerror}") from e
    return sock


async def serve(
    config: HostConfig, listen: tuple[str, int], data_dir: Path, *, reuse_port: bool = False
) -> None:
    """Run until SIGINT or SIGTERM, then drain: stop accepting, close sockets, commit, close.
    With `[host] store` (a database several hosts share), serve as an edge (with `[host] bus`)
    or stand by (without) until this host wins the routing role, route while it holds it, and
    go back to the first if it loses it."""
    sock = bind(*listen, reuse_port=reuse_port)
    actual = sock.getsockname()
    log.info(
        "event=listening address=%s:%s data=%s pid=%s", actual[0], actual[1], data_dir, os.getpid()
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if config.host.store is None:
            await _serve_service(config, sock, data_dir, stop)
        else:
            await _serve_elected(config, sock, data_dir, stop)
    finally:
        sock.close()
        log.info("event=stopped")


async def _serve_service(
    config: HostConfig, sock: socket.socket, data_dir: Path, stop: asyncio.Event
) -> None:
    with built_to_last():
        host = await open_host(config, data_dir)
    try:
        await _serve_host(host, sock, data_dir, stop.wait())
    finally:
        await close_host(host)


async def _serve_host(
    host: Host,
    sock: socket.socket,
    data_dir: Path,
    until: Awaitable[object],
    bus: Bus | None = None,
    epoch: int = 0,
) -> None:
    """Serve `host` on `sock` until `until` is done. The site gets a duplicate of the
    listening socket, so closing it leaves `sock` listening for the next term (connections
    wait in its backlog meanwhile). With a `bus`, the host also serves what the edges relay."""
    secret = None if bus is None else relay.new_secret()
    app = create_app(host, relay_secret=secret)
    runner = runner_for(app, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock.dup(), shutdown_timeout=5.0).start()
    relaying = None
    if bus is not None and secret is not None:
        # The edges' HTTP requests come in through the app on a loopback port of its own.
        loopback = bind("127.0.0.1", 0)
        await web.SockSite(runner, loopback, shutdown_timeout=5.0).start()
        url = f"http://127.0.0.1:{loopback.getsockname()[1]}"
        relaying = relay.Relay(bus, app, url, secret, epoch)
        await relaying.start()
    log.info("event=serving")
    admin_api.publish(app, data_dir, sock.getsockname())
    try:
        await until
        log.info("event=stopping")
    finally:
        if relaying is not None:
            with contextlib.suppress(Exception):
                await relaying.stop()
        with contextlib.suppress(Exception):
            await runner.cleanup()
        admin_api.withdraw(data_dir)


@dataclass(frozen=True)
class _Waiting:
    """What a host serves while it does not route (an edge, or a standby), and how it ends."""

    # The routing role won: take no more connections. An edge keeps the consoles it holds,
    # which move to this process's router over the bus as to any other: they see no
    # disconnect (docs/architecture.md).
    hand_over: Callable[[], Awaitable[None]]
    # Close whatever is left: at the end of the routing term, or when no role was won.
    stop: Callable[[], Awaitable[None]]


async def _wait_to_route(
    config: HostConfig, sock: socket.socket, why: Callable[[], str], bus: Bus | None
) -> _Waiting:
    """Serve what a host that does not route serves: with a bus, everything, relayed to the
    router (an edge); without, 503 and "standby"."""
    if bus is None:
        standby = await standby_site(sock, why)
        stopped = False

        async def stop_standby() -> None:
            nonlocal stopped
            if not stopped:  # a standby holds nothing to hand over: the first call ends it
                stopped = True
                await standby.cleanup()

        return _Waiting(hand_over=stop_standby, stop=stop_standby)
    edge = Edge(config, bus)
    await edge.start()
    runner = runner_for(create_edge_app(edge), handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock.dup(), shutdown_timeout=1.0).start()

    async def hand_over() -> None:
        for site in list(runner.sites):
            await site.stop()  # its duplicate of the listening socket; the rest stays open

    async def stop() -> None:
        await edge.stop()
        await runner.cleanup()

    return _Waiting(hand_over=hand_over, stop=stop)


async def _serve_elected(
    config: HostConfig, sock: socket.socket, data_dir: Path, stop: asyncio.Event
) -> None:
    check_data_dir(data_dir)
    address = sock.getsockname()
    holder = f"{socket.gethostname()}:{address[1]}:{os.getpid()}"
    shared = await open_shared(config, holder)
    bus = None
    stopping = asyncio.ensure_future(stop.wait())
    try:
        if config.host.bus is not None:
            bus = Bus(config.host.bus, await shared.cluster_id())
            connecting = await standby_site(sock, lambda: bus.trouble or "connecting to the bus")
            try:
                connected = asyncio.ensure_future(bus.connect())
                await asyncio.wait({connected, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not connected.done():
                    connected.cancel()
                    return
            finally:
                await connecting.cleanup()
        while not stop.is_set():
            waiting = await _wait_to_route(
                config, sock, lambda: shared.election.waiting_because, bus
            )
            log.info("event=standing_by holder=%s edge=%s", holder, bus is not None)
            handed_over = False
            try:
                won = asyncio.ensure_future(shared.election.win())
                await asyncio.wait({won, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not won.done():
                    won.cancel()
                    return
                won_at = time.perf_counter()
                await waiting.hand_over()
                handed_over = True
            finally:
                if not handed_over:
                    await waiting.stop()
            try:
                handed_at = time.perf_counter()
                with built_to_last():
                    inbox, auth, admin = await shared.open_service(config)
                # Where a takeover's time goes (docs/scaling.md): the edge handed over (it
                # takes no more connections), then the routing state rebuilt; "event=serving"
                # follows once this process serves the port.
                log.info(
                    "event=service_opened holder=%s handed_over_s=%.3f service_opened_s=%.3f",
                    holder,
                    handed_at - won_at,
                    time.perf_counter() - handed_at,
                )
                host = Host(
                    config=inbox.config,
                    inbox=inbox,
                    auth=auth,
                    admin=admin,
                    data_dir=data_dir,
                    bus=bus,
                    # Widget chats resume through any host, before a failover and after.
                    widget_key=await shared.widget_key(),
                )
                lost = asyncio.ensure_future(shared.election.lost())
                try:
                    either = asyncio.wait({lost, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    await _serve_host(host, sock, data_dir, either, bus, won.result())
                finally:
                    await shared.stop_service(inbox)
            finally:
                await waiting.stop()
            if lost.done():
                # Fenced already: nothing this host decides from here on is stored. Its
                # consoles were closed with "going away" and come back through the others.
                log.warning("event=routing_role_lost holder=%s reason=%s", holder, lost.result())
            else:
                lost.cancel()
    finally:
        stopping.cancel()
        if bus is not None:
            await bus.close()
        await shared.close()
