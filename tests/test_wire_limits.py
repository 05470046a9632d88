"""What the host does with input at the edges of the wire, against a real host subprocess.

Integers over their bounds, frames too big for a field, logging out, and HTTP requests the
parser refuses: each is answered (never a dropped socket or a 500), and the client can tell
which of its calls the answer is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import WSMsgType

from bench.host_process import HostProcess, start_host, stop_host
from core.client import ClientError, InboxClient
from core.demo import DEMO_PASSWORD
from core.model import MAX_ATTACHMENT_BYTES
from core.protocol import (
    CLOSE_SESSION_ENDED,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    AttachFile,
    Error,
    Event,
    Hello,
    InteractionList,
    LoggedIn,
    Login,
    Ok,
    ServerFrame,
    Transcript,
    Welcome,
    encoder,
    server_decoder,
)
from tests.test_crash_safety import integration_token

MAX_INT = 2**53  # docs/protocol.md: the largest integer a client frame may carry
WAIT = 10.0  # seconds: every answer here comes in milliseconds; this only bounds a hang


class Host:
    def __init__(self, process: HostProcess, token: str) -> None:
        self.process = process
        self.token = token
        self.interaction = ""  # a chat every test may read, made by the first that needs it

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def chat(self, http: aiohttp.ClientSession) -> str:
        if not self.interaction:
            body = {"channel": "chat", "customer": {"id": "wire-ana", "name": "Ana"}}
            url = f"{self.process.base_url}/api/v1/items"
            async with http.post(url, json=body, headers=self.auth) as reply:
                assert reply.status == 201, await reply.text()
                self.interaction = (await reply.json())["interaction"]
        return self.interaction


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    root = tmp_path_factory.mktemp("wire")
    token = asyncio.run(integration_token(root / "data"))
    process = start_host(root)
    try:
        yield Host(process, token)
    finally:
        stop_host(process)


@contextlib.asynccontextmanager
async def raw_agent(
    host: Host, agent: str = "dan"
) -> AsyncIterator[tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]]:
    """A logged-in /agent socket that speaks raw msgpack (dan is a supervisor: he may read
    every interaction, so a frame reaches the store rather than a visibility check)."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(host.process.agent_url, max_msg_size=0)
        await ws.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION)))
        assert isinstance(await answer(ws), Welcome)
        await ws.send_bytes(encoder.encode(Login(ref=1, username=agent, password=DEMO_PASSWORD)))
        assert isinstance(await answer(ws), LoggedIn)
        try:
            yield http, ws
        finally:
            await ws.close()


async def answer(ws: aiohttp.ClientWebSocketResponse) -> ServerFrame:
    """The next frame that is not an event; fails if the host closes the socket instead."""
    while True:
        msg = await ws.receive(timeout=WAIT)
        assert msg.type == WSMsgType.BINARY, f"the host closed the socket: {msg} {ws.close_code}"
        frame = server_decoder.decode(msg.data)
        if not isinstance(frame, Event):
            return frame


async def still_answers(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_bytes(msgspec.msgpack.encode({"t": "ping", "ref": 77}))
    assert await answer(ws) == Ok(ref=77)


# Every integer field of every client frame, with what else the frame needs.
INT_FIELDS = [
    ("list_interactions", "offset", {}),
    ("list_interactions", "limit", {}),
    ("get_transcript", "after_seq", {"interaction": None}),
    ("get_transcript", "limit", {"interaction": None}),
    ("mark_read", "seq", {"interaction": None}),
    ("resume", "last_seq", {"token": "ses_x"}),
    ("create_record", "priority", {"interaction": None, "kind": "case", "short_description": "x"}),
]


@pytest.mark.parametrize(("tag", "field", "rest"), INT_FIELDS)
async def test_an_integer_over_its_bound_is_a_bad_frame_and_the_socket_carries_on(
    host: Host, tag: str, field: str, rest: dict[str, Any]
) -> None:
    async with raw_agent(host) as (http, ws):
        for value in (2**63, 2**64 - 1, MAX_INT + 1):
            frame = {"t": tag, "ref": 5, field: value}
            frame |= {k: v if v is not None else await host.chat(http) for k, v in rest.items()}
            await ws.send_bytes(msgspec.msgpack.encode(frame))
            reply = await answer(ws)
            assert isinstance(reply, Error) and reply.code == "bad_frame", (value, reply)
            assert f"$.{field}" in reply.message and reply.ref == 5
            await still_answers(ws)


async def test_the_largest_integers_allowed_are_served(host: Host) -> None:
    async with raw_agent(host) as (http, ws):
        number = await host.chat(http)
        await ws.send_bytes(
            msgspec.msgpack.encode({"t": "list_interactions", "ref": MAX_INT, "offset": MAX_INT})
        )
        assert await answer(ws) == InteractionList(ref=MAX_INT, interactions=[])
        frame = {"t": "get_transcript", "ref": 6, "interaction": number, "after_seq": MAX_INT}
        await ws.send_bytes(msgspec.msgpack.encode(frame))
        reply = await answer(ws)
        assert isinstance(reply, Transcript) and reply.ref == 6 and reply.messages == []


@pytest.mark.parametrize("after_seq", [str(2**63), str(2**64), "9" * 40])
async def test_rest_after_seq_over_its_bound_is_a_400_naming_it(host: Host, after_seq: str) -> None:
    async with aiohttp.ClientSession() as http:
        number = await host.chat(http)
        url = f"{host.process.base_url}/api/v1/interactions/{number}?after_seq={after_seq}"
        async with http.get(url, headers=host.auth) as reply:
            assert reply.status == 400, await reply.text()
            error = (await reply.json())["error"]
        assert error["code"] == "invalid_request" and error["field"] == "$.after_seq"
        async with http.get(f"{url.partition('?')[0]}?after_seq={MAX_INT}", headers=host.auth) as r:
            assert r.status == 200 and (await r.json())["messages"] == []


@pytest.mark.parametrize(
    ("frame", "ref"),
    [
        ({"t": "no_such_frame", "ref": 41}, 41),
        ({"t": "set_presence", "ref": 42, "presence": 7}, 42),
        ({"t": "attach_file", "ref": 43, "interaction": "X1", "name": 1, "data": b""}, 43),
        ({"t": "set_presence", "ref": MAX_INT + 1, "presence": 7}, 0),
        ({"t": "set_presence", "ref": "44", "presence": 7}, 0),
        ([44, "set_presence"], 0),
    ],
)
async def test_a_bad_frame_answers_with_its_ref_when_it_can_be_read(
    host: Host, frame: Any, ref: int
) -> None:
    async with raw_agent(host) as (_, ws):
        await ws.send_bytes(msgspec.msgpack.encode(frame))
        reply = await answer(ws)
        assert isinstance(reply, Error) and reply.code == "bad_frame", reply
        assert reply.ref == ref
        await still_answers(ws)


async def test_an_oversize_attachment_fails_its_call_at_once(host: Host) -> None:
    data = b"x" * (MAX_ATTACHMENT_BYTES + 1)
    frame = AttachFile(ref=2**40, interaction="X1", name="big.bin", data=data)
    assert len(encoder.encode(frame)) < MAX_FRAME_BYTES  # the transport takes it; the field not
    async with aiohttp.ClientSession() as http:
        number = await host.chat(http)
    client = InboxClient(host.process.agent_url, request_timeout=60.0)
    await client.connect()
    try:
        await client.login("dan", DEMO_PASSWORD)
        started = time.monotonic()
        with pytest.raises(ClientError) as e:
            async with asyncio.timeout(WAIT):
                await client.request(AttachFile(interaction=number, name="big.bin", data=data))
        assert e.value.code == "bad_frame" and "$.data" in e.value.message
        assert time.monotonic() - started < WAIT
        await client.set_presence("Available")  # the connection carries on
    finally:
        await client.close()


async def test_logout_answers_ok_then_closes_with_session_ended(host: Host) -> None:
    async with raw_agent(host, "bob") as (_, ws):
        await ws.send_bytes(msgspec.msgpack.encode({"t": "logout", "ref": 9}))
        assert await answer(ws) == Ok(ref=9)
        msg = await ws.receive(timeout=WAIT)
        assert msg.type == WSMsgType.CLOSE and msg.data == CLOSE_SESSION_ENDED, msg
        assert ws.close_code == CLOSE_SESSION_ENDED


def http_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(request)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    return received


def test_a_nul_byte_in_a_header_is_a_400_and_one_log_line(host: Host) -> None:
    logged = len(host.process.log_text())
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"
    reply = http_exchange(host.process.port, request)
    assert reply.split(b"\r\n", 1)[0].split(b" ", 2)[1] == b"400", reply
    deadline = time.monotonic() + WAIT
    while "event=bad_request" not in host.process.log_text()[logged:]:
        assert time.monotonic() < deadline, host.process.log_text()[logged:]
        time.sleep(0.05)
    new = host.process.log_text()[logged:]
    assert "Traceback" not in new and "aiohttp.server" not in new, new
    lines = [line for line in new.splitlines() if "bad_request" in line]
    assert len(lines) == 1 and "address=127.0.0.1" in lines[0], new
