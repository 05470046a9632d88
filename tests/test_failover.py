"""Hosts sharing one PostgreSQL database: one routes, the others stand by, and when the router
dies or loses its database session another takes over and carries on from what is stored.
Real host processes, a real database (a fresh one per test), real sockets on loopback."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from bench.host_process import HostProcess, health, start_host, stop_host
from core.client import InboxClient
from core.demo import DEMO_PASSWORD
from core.protocol import AcceptOffer, GetTranscript, InteractionEvent, OfferEvent, Transcript
from tests.conftest import postgres_admin
from tests.hosting import running_host

TAKEOVER = 30.0  # seconds allowed for a standby to route; the figure itself is a bench's


def wait_for_status(host: HostProcess, status: str, timeout: float = TAKEOVER) -> float:
    """Seconds until `host`'s /healthz says `status`."""
    started = time.monotonic()
    while health(host.base_url) != status:
        if host.proc.poll() is not None:
            raise AssertionError(f"the host exited:\n{host.log_text()}")
        if time.monotonic() - started > timeout:
            raise AssertionError(f"never {status}: {health(host.base_url)}\n{host.log_text()}")
        time.sleep(0.05)
    return time.monotonic() - started


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.load(e)


async def customer_asks(host: HostProcess, question: str) -> str:
    """A customer opens the widget on `host` and asks; the interaction number."""
    async with aiohttp.ClientSession() as http, http.ws_connect(host.widget_url) as ws:
        await ws.send_str(json.dumps({"t": "start", "name": "Ada", "email": "ada@example.com"}))
        started = await ws.receive_json(timeout=10)
        assert started["t"] == "started", started
        await ws.send_str(json.dumps({"t": "message", "body": question, "client_msg_id": "q1"}))
        while (await ws.receive_json(timeout=10))["t"] != "ack":
            pass
        return str(started["conversation"])


async def agent(host: HostProcess, token: str | None = None) -> InboxClient:
    client = InboxClient(host.agent_url, backoff=(0.05, 0.2))
    await client.connect()
    if token is None:
        await client.login("alice", DEMO_PASSWORD)
    else:
        await client.login_token(token)
    await client.set_presence("Available")
    return client


async def offered(client: InboxClient, number: str) -> str:
    while (event := await client.next_event(OfferEvent, timeout=TAKEOVER)).view.interaction != (
        number
    ):
        pass
    return event.view.offer.id


async def test_a_standby_takes_over_when_the_router_is_killed(
    tmp_path: Path, postgres_url: str
) -> None:
    a = await asyncio.to_thread(start_host, tmp_path / "a", store=postgres_url)
    b = await asyncio.to_thread(start_host, tmp_path / "b", store=postgres_url, ready="standby")
    try:
        # The standby sends everyone to the router: 503, and /healthz says why.
        status, body = await asyncio.to_thread(get, f"{b.base_url}/api/v1/interactions")
        assert status == 503 and body["error"]["code"] == "unavailable", body  # type: ignore[index]
        alice = await agent(a)
        number = await customer_asks(a, "My parcel never came")
        await offered(alice, number)
        token = alice.token
        assert token is not None

        a.proc.kill()  # kill -9: nothing drained, the lease connection just drops
        a.proc.wait()
        await alice.close()
        took = await asyncio.to_thread(wait_for_status, b, "ok")

        # The same agent, the same login, on the host that now routes: the item waited in the
        # database, and its offer with it, kept for her console's return (REJOIN_GRACE): her
        # login's snapshot holds it; accepting opens the conversation with its message.
        again = InboxClient(b.agent_url, backoff=(0.05, 0.2))
        await again.connect()
        logged_in = await again.login_token(token)
        offer = next(o.offer.id for o in logged_in.snapshot.offers if o.interaction == number)
        await again.request(AcceptOffer(offer=offer))
        opened = await again.next_event(InteractionEvent, timeout=10)
        assert opened.record.number == number and opened.change == "opened"
        transcript = await again.request(GetTranscript(interaction=number), Transcript)
        bodies = [m.body for m in transcript.messages if m.sender_kind == "customer"]
        assert bodies == ["My parcel never came"]
        await again.close()
        print(f"takeover after kill -9: {took:.2f} s")
    finally:
        stop_host(a)
        stop_host(b)


async def test_a_router_whose_database_session_is_ended_stops_and_another_takes_over(
    tmp_path: Path, postgres_url: str
) -> None:
    a = await asyncio.to_thread(start_host, tmp_path / "a", store=postgres_url)
    b = await asyncio.to_thread(start_host, tmp_path / "b", store=postgres_url, ready="standby")
    name = postgres_url.rsplit("/", 1)[1]
    try:
        before = postgres_admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
            "AND application_name = 'inbox-tui router lease'"
        )
        assert before is True
        # The router stops at once: it stands by (its routing commits are fenced from the
        # moment its lease ended) and the other host takes the role.
        await asyncio.to_thread(wait_for_status, a, "standby")
        await asyncio.to_thread(wait_for_status, b, "ok")
        assert "event=routing_role_lost" in a.log_text()
        assert "event=routing_role_won" in b.log_text()
    finally:
        stop_host(a)
        stop_host(b)


class CuttableLink:
    """A loopback TCP relay to a server (PostgreSQL, NATS) that the test can cut and mend: the
    server goes away for the host without stopping the one other tests use."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.server: asyncio.Server | None = None
        self.open: set[asyncio.StreamWriter] = set()

    async def mend(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.open):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.open |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()
                self.open.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_a_host_that_loses_its_database_says_so_and_comes_back_by_itself(
    tmp_path: Path, postgres_url: str
) -> None:
    link = CuttableLink(("127.0.0.1", 5432))
    await link.mend()
    through_link = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{link.port}")
    assert through_link != postgres_url
    a = await asyncio.to_thread(start_host, tmp_path / "a", store=through_link)
    try:
        await link.cut()
        # No acknowledgement without the database: it stops routing and says why.
        await asyncio.to_thread(wait_for_status, a, "standby")
        while "cannot be reached" not in str(
            (await asyncio.to_thread(get, f"{a.base_url}/healthz"))[1]
        ):
            await asyncio.sleep(0.1)
        status, body = await asyncio.to_thread(get, f"{a.base_url}/api/v1/interactions")
        assert status == 503 and body["error"]["code"] == "unavailable", body  # type: ignore[index]
        await link.mend()
        await asyncio.to_thread(wait_for_status, a, "ok")
        assert a.log_text().count("event=routing_role_won") == 2
    finally:
        stop_host(a)
        await link.cut()


async def test_a_task_that_fails_as_the_service_stops_is_logged_and_the_stop_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What a host losing its database met: a task of the service (loading the floor's times)
    # failed on the dead connection while being stopped, and the stop raised it, so the host
    # exited instead of standing by.
    async def fails_when_stopped() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionResetError("the database went away") from None

    async with running_host(tmp_path) as h:
        h.host.inbox._tasks.append(asyncio.create_task(fails_when_stopped()))
        await asyncio.sleep(0)  # the task is waiting when the stop comes
    assert "event=task_failed_while_stopping" in caplog.text
    assert "the database went away" in caplog.text
