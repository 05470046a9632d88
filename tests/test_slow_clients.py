"""Consoles that stop reading: they are dropped, the others are not held up, they can resume.

Bob has 100 console sessions that log in over real sockets and then never read again, and one
that works normally; a customer writes long lines into Bob's chat, so each of his sessions is
sent every line. Meanwhile another customer writes to a chat of Alice's. The host must drop
every stuck socket (close code 1008, once its bounded queue is full), deliver every line to
Alice and to Bob's working console, in order, and let a dropped console resume with its token.

How long Alice's lines take is measured, not asserted (speed targets live in benchmarks):
INBOX_SLOW_REPORT names a file for the figures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from pathlib import Path

import aiohttp
import pytest

from bench.slow_consoles import small_window_socket
from core.host import api
from core.host import app as app_module
from core.model import Role
from core.protocol import (
    CLOSE_NOT_READING,
    PROTOCOL_VERSION,
    Authenticate,
    Hello,
    LoggedIn,
    MessageEvent,
    OfferEvent,
    Ok,
    Ping,
    QueueStatsEvent,
    Resume,
    Welcome,
    encoder,
    server_decoder,
)
from tests.hosting import running_host

STUCK = 100
# The host drops a console whose queue holds OUTGOING_LIMIT (1,000) events it could not send;
# the socket buffers ahead of that queue are kept small (small_window_socket), so a few more
# do.
BIG_LINES = 1_250
BIG = "x" * 4_000
LINES = 200
REPORT = os.environ.get("INBOX_SLOW_REPORT")


async def frame(ws: aiohttp.ClientWebSocketResponse) -> object:
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.BINARY, msg
    return server_decoder.decode(msg.data)


async def logged_in(
    http: aiohttp.ClientSession, url: str, token: str
) -> aiohttp.ClientWebSocketResponse:
    """A console that logs in and then stops asking for frames. aiohttp still reads ahead for
    it (up to 512 KiB of frames in 3.14) before it stops taking bytes off the socket and the
    host's sends back up; bench.slow_consoles also measures consoles that take no bytes."""
    ws = await http.ws_connect(url, max_msg_size=0)
    await ws.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION)))
    assert isinstance(await frame(ws), Welcome)
    await ws.send_bytes(encoder.encode(Authenticate(token=token, ref=1)))
    assert isinstance(await frame(ws), LoggedIn)
    return ws


async def closed_by_host(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read what is buffered until the close frame; the close code the host gave."""
    async with asyncio.timeout(30):
        while (await ws.receive()).type not in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        ):
            pass
    return ws.close_code


async def test_stuck_consoles_are_dropped_others_served_and_they_can_resume(
    tmp_path: Path,
) -> None:
    async with (
        running_host(tmp_path) as h,
        aiohttp.ClientSession() as http,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(socket_factory=lambda _: small_window_socket())
        ) as slow,
    ):
        tokens = [
            (await h.host.auth.create_api_token(f"stuck-{i}", "bob", Role.AGENT, None))[0]
            for i in range(STUCK)
        ]
        bob = await h.agent("bob")
        stuck = [await logged_in(slow, h.agent_url, t) for t in tokens]
        big = await h.host.inbox.start_conversation(channel="chat", customer="cust-big")
        offer = await bob.next_event(OfferEvent)
        await bob.accept(offer.view.offer.id)
        alice = await h.agent("alice")
        record = await h.host.inbox.start_conversation(
            channel="chat", customer="cust-slow", customer_name="Sam"
        )
        offer = await alice.next_event(OfferEvent)
        await alice.accept(offer.view.offer.id)

        received: dict[str, float] = {}
        bob_got: list[str] = []

        def alice_event(event: object) -> None:
            if isinstance(event, MessageEvent) and event.message.sender == "cust-slow":
                received[event.message.body] = time.perf_counter()

        def bob_event(event: object) -> None:
            if isinstance(event, MessageEvent) and event.message.sender == "cust-big":
                bob_got.append(event.message.client_msg_id)

        alice.on_event = alice_event
        bob.on_event = bob_event
        sent: dict[str, float] = {}

        async def customer() -> None:
            for i in range(LINES):
                body = f"line {i:04d}"
                sent[body] = time.perf_counter()
                await h.host.inbox.customer_message(record.number, "cust-slow", body, f"m{i}")
                await asyncio.sleep(0.01)

        async def big_customer() -> None:
            for i in range(BIG_LINES):
                await h.host.inbox.customer_message(big.number, "cust-big", BIG, f"b{i:04d}")
                await asyncio.sleep(0.004)  # 250 lines/s: the host is busy, not saturated

        await asyncio.gather(customer(), big_customer())

        codes = await asyncio.gather(*(closed_by_host(ws) for ws in stuck))
        assert set(codes) == {CLOSE_NOT_READING}, codes
        assert h.host.dropped_consoles == STUCK  # inbox_dropped_consoles_total

        # Alice got every line, in order, and so did Bob's working console.
        async with asyncio.timeout(10):
            while len(received) < LINES or len(bob_got) < BIG_LINES:
                await asyncio.sleep(0.05)
        assert sorted(received, key=received.__getitem__) == sorted(sent)
        assert bob_got == [f"b{i:04d}" for i in range(BIG_LINES)]

        # A dropped console resumes with its token and gets what it missed: every event since
        # the last one it read (here: none), in order, then the live ones.
        ws = await http.ws_connect(h.agent_url, max_msg_size=0)
        await ws.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION)))
        assert isinstance(await frame(ws), Welcome)
        await ws.send_bytes(encoder.encode(Resume(token=tokens[0], last_seq=0, ref=2)))
        assert isinstance(await frame(ws), Ok)
        await h.host.inbox.customer_message(big.number, "cust-big", "after", "after")
        seqs, lines = [], []
        async with asyncio.timeout(30):
            while "after" not in lines:
                event = await frame(ws)
                if isinstance(event, QueueStatsEvent):
                    assert event.seq == 0  # queue figures are unnumbered: never replayed
                    continue
                seqs.append(event.seq)  # type: ignore[attr-defined]
                if isinstance(event, MessageEvent) and event.message.sender == "cust-big":
                    lines.append(event.message.client_msg_id)
        assert seqs == list(range(1, len(seqs) + 1))
        assert lines == [*(f"b{i:04d}" for i in range(BIG_LINES)), "after"]
        await ws.close()

        lag = sorted(received[b] - sent[b] for b in sent)
        figures = {
            "stuck_consoles": STUCK,
            "long_lines_to_stuck_sessions": BIG_LINES,
            "lines_to_alice": LINES,
            "line_to_alice_ms_p50": round(lag[len(lag) // 2] * 1000, 2),
            "line_to_alice_ms_p99": round(lag[math.ceil(0.99 * len(lag)) - 1] * 1000, 2),
            "line_to_alice_ms_max": round(lag[-1] * 1000, 2),
        }
        if REPORT:
            Path(REPORT).write_text(json.dumps(figures, indent=2))
        await alice.close()
        await bob.close()


async def test_a_half_sent_request_is_dropped_and_others_are_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slowloris: a request head that never ends held a socket for aiohttp's default hour."""
    monkeypatch.setattr(app_module, "IDLE_TIMEOUT", 1.0)
    async with running_host(tmp_path) as h, aiohttp.ClientSession() as http:
        console = await h.agent("alice")  # a WebSocket: not cut off however quiet
        socket_before = console._ws
        port = int(h.url.rsplit(":", 1)[1])
        slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        for _, writer in slow:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        async with http.get(h.url + "/healthz") as r:
            assert r.status == 200  # the others are served meanwhile
        started = time.monotonic()
        async with asyncio.timeout(10):
            for reader, _ in slow:
                assert await reader.read() == b""  # closed by the host, nothing answered
        assert time.monotonic() - started < 5
        for _, writer in slow:
            writer.close()
        await asyncio.sleep(1.5)  # the console has now been quiet for over the idle timeout
        await console.request(Ping(ref=0), Ok)
        assert console._ws is socket_before and not socket_before.closed  # the same socket
        await console.close()
        await writer.wait_closed()  # else the host's shutdown waits out aiohttp's lingering


async def test_a_trickled_body_gets_408_and_frees_its_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "BODY_TIMEOUT", 1.0)
    async with running_host(tmp_path) as h:
        token, _ = await h.host.auth.create_api_token("slow", None, Role.SUPERVISOR, None)
        reader, writer = await asyncio.open_connection("127.0.0.1", int(h.url.rsplit(":", 1)[1]))
        writer.write(
            b"POST /api/v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"channel": '  # and the other 88 bytes never come
        )
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), head
            assert b"Connection: close" in head  # what was sent of the body is not reused
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
        assert json.loads(body)["error"]["code"] == "request_timeout"
        writer.close()
        await writer.wait_closed()  # else the host's shutdown waits out aiohttp's lingering


async def test_a_client_gone_before_the_handshake_is_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload or a closed tab mid-handshake: aiohttp logged "Error handling request" with a
    traceback for each, which reads as a fault of the host to whoever watches its log."""
    caplog.set_level(logging.INFO, logger="inbox_tui.host")
    async with running_host(tmp_path) as h:
        port = int(h.url.rsplit(":", 1)[1])
        for path in ("/widget/ws", "/agent"):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {h.url}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
            )
            writer.transport.abort()  # gone before the host can answer
            event = f"event=socket_gone_before_handshake path={path}"
            async with asyncio.timeout(5):
                while not any(event in r.getMessage() for r in caplog.records):
                    await asyncio.sleep(0.02)
        console = await h.agent("alice")  # and the host serves on
        await console.request(Ping(ref=0), Ok)
        await console.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
