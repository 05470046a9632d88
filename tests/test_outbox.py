"""Outbound delivery (core/service/outbox.py) to a real provider on loopback: an aiohttp
receiver that answers 500, hangs past the timeout or is not listening, on purpose.

Each test checks what a provider relies on: every delivery signed, none lost, and those of one
conversation in order; the last kills the host with SIGKILL mid-delivery and restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bench.host_process import start_host, stop_host
from core.client import InboxClient
from core.config import Secret, parse_config
from core.config.settings import DeliverySettings
from core.demo import DEMO_PASSWORD, demo_config_text
from core.model import Role
from core.protocol import (
    AttachFile,
    AttachmentAck,
    CloseRecord,
    DeliveryEvent,
    GetTranscript,
    OfferEvent,
    Ok,
    Transcript,
)
from core.service.outbox import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    backoff,
    sign,
    verify,
)
from tests.hosting import RunningHost, running_host
from tests.test_agent_commands import accepted_chat
from tests.test_api_intake import make_tokens
from tests.test_console_pilot import SIZE, chat_ready, console, transcript_text
from tests.test_console_pilot import until as pilot_until

SECRET = b"0123456789abcdef0123456789abcdef-hook"
INBOUND = b"0123456789abcdef0123456789abcdef-intake"
A, B = ("a1", "a2", "a3"), ("b1", "b2")


def secret_file(path: Path, secret: bytes) -> Path:
    path.write_bytes(secret)
    path.chmod(0o600)
    return path


def delivery_config_text(root: Path, url: str, timeout: float = 0.5) -> str:
    """The demo config with the chat channel delivering to `url` with short backoff, and
    taking only signed intake."""
    text = demo_config_text()
    anchor = 'customer_attributes = ["language"]\n'
    assert anchor in text
    block = (
        f'inbound_secret_file = "{secret_file(root / "intake.key", INBOUND)}"\n'
        "[channel.delivery]\n"
        f'url = "{url}"\n'
        f'secret_file = "{secret_file(root / "hook.key", SECRET)}"\n'
        f"timeout = {timeout}\n"
        "backoff_base = 0.05\n"
        "backoff_cap = 0.2\n"
    )
    return text.replace(anchor, anchor + block, 1)


class Receiver:
    """A provider's webhook endpoint: answers each request as `script` says (then 204),
    verifies signatures, and keeps the deliveries it took once each, as a receiver dedupes."""

    def __init__(self) -> None:
        self.script: list[str] = []  # "500" or "hang", one per request, then all 204
        self.tries = 0
        self.unverified = 0
        self.taken: list[dict[str, Any]] = []
        self.ids: set[str] = set()
        self.hung = asyncio.Event()
        self.released = asyncio.Event()  # set on stop: a hung answer must not hold it up
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.tries += 1
        answer = self.script.pop(0) if self.script else "204"
        if answer == "hang":
            self.hung.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), 30)
        if answer == "500":
            return web.Response(status=500, text="provider trouble")
        if verify(SECRET, request.headers, body, time.time()) is not None:
            self.unverified += 1
            return web.Response(status=401)
        delivery = json.loads(body)
        if request.headers[DELIVERY_HEADER] != delivery["id"]:
            self.unverified += 1
        if delivery["id"] not in self.ids:
            self.ids.add(delivery["id"])
            self.taken.append(delivery)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        self.released.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def of(self, number: str) -> list[tuple[str, str]]:
        """(event, message body or "") of one conversation's deliveries, in the order taken."""
        return [
            (d["event"], d["message"]["body"] if d.get("message") else "")
            for d in self.taken
            if d["conversation"] == number
        ]


@contextlib.asynccontextmanager
async def provider() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def metrics(h: RunningHost) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{h.url}/metrics") as r:
        text = await r.text()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name.startswith(("inbox_deliveries_total", "inbox_outbox_backlog"))
    }


async def send(alice: InboxClient, number: str, *bodies: str) -> None:
    for body in bodies:
        await alice.deliver_message(number, body, f"{number}-{body}")


async def test_deliveries_stay_in_order_through_500s_and_timeouts_and_are_signed(
    tmp_path: Path,
) -> None:
    async with provider() as receiver:
        receiver.script = ["500", "hang", "500"]
        config = parse_config(delivery_config_text(tmp_path, receiver.url), name="hook.toml")
        async with running_host(tmp_path, config) as h:
            alice = await h.agent("alice")
            number = await accepted_chat(h, alice, "cust-a")
            await send(alice, number, "one", "two", "three")
            await until(lambda: len(receiver.of(number)) == 4)
            assert receiver.of(number) == [
                ("assigned", ""),
                ("message", "one"),
                ("message", "two"),
                ("message", "three"),
            ]
            seqs = [d["message"]["seq"] for d in receiver.taken[1:]]
            assert receiver.unverified == 0
            assert receiver.tries == 4 + 3  # two 500s and a timeout, each tried again
            # The console hears its messages go out, and a transcript shows it.
            states: dict[int, list[str]] = {}
            while [s[-1:] for s in states.values()] != [["sent"]] * 3:
                event = await alice.next_event(DeliveryEvent)
                assert event.interaction == number
                states.setdefault(event.message_seq, []).append(event.state)
            assert [s[0] for s in states.values()] == ["pending"] * 3
            transcript = await alice.request(GetTranscript(ref=0, interaction=number), Transcript)
            assert set(transcript.deliveries.values()) == {"sent"}
            assert sorted(transcript.deliveries) == seqs
            seen = await metrics(h)
            assert seen['inbox_deliveries_total{outcome="sent"}'] == 4
            assert seen['inbox_deliveries_total{outcome="retrying"}'] == 3
            # Closing is an event too, after everything before it.
            await alice.end_chat(number)
            await alice.request(CloseRecord(ref=0, interaction=number), Ok)
            await until(lambda: len(receiver.of(number)) == 5)
            assert receiver.of(number)[-1] == ("closed", "")
            assert receiver.taken[-1]["agent"] == ""
            await alice.close()


async def test_a_provider_down_loses_nothing_and_gets_each_conversation_in_order_when_back(
    tmp_path: Path,
) -> None:
    async with provider() as receiver:
        config = parse_config(delivery_config_text(tmp_path, receiver.url), name="hook.toml")
        await receiver.stop()  # down: connections refused
        async with running_host(tmp_path, config) as h:
            alice = await h.agent("alice")
            first = await accepted_chat(h, alice, "cust-a")
            second = await accepted_chat(h, alice, "cust-b")
            await send(alice, first, *A)
            await send(alice, second, *B)
            await asyncio.sleep(0.5)  # several retries, all refused
            seen = await metrics(h)
            assert seen["inbox_outbox_backlog"] == 7
            assert seen['inbox_deliveries_total{outcome="retrying"}'] >= 2
            await receiver.start()  # back, on the same port
            await until(lambda: len(receiver.taken) == 7)
            assert receiver.of(first) == [("assigned", ""), *(("message", b) for b in A)]
            assert receiver.of(second) == [("assigned", ""), *(("message", b) for b in B)]
            await until(lambda: receiver.tries >= 7)
            await asyncio.sleep(0.1)
            assert (await metrics(h))["inbox_outbox_backlog"] == 0
            await alice.close()


async def test_a_host_killed_mid_delivery_delivers_it_after_restart(tmp_path: Path) -> None:
    async with provider() as receiver:
        receiver.script = ["hang"]
        config = tmp_path / "hook.toml"
        config.write_text(delivery_config_text(tmp_path, receiver.url, timeout=20))
        tokens = await make_tokens(tmp_path, crm=None)
        running = await asyncio.to_thread(start_host, tmp_path, config=config)
        try:
            async with InboxClient(running.agent_url) as alice:
                await alice.login("alice", DEMO_PASSWORD)
                await alice.set_presence("Available")
                body = json.dumps({"channel": "chat", "customer": {"id": "cust-k"}}).encode()
                headers = signed(INBOUND, body, tokens["crm"][0])
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(f"{running.base_url}/api/v1/items", data=body, headers=headers) as r,
                ):
                    assert r.status == 201, await r.text()
                    number = (await r.json())["interaction"]
                offer = await alice.next_event(OfferEvent)
                await alice.accept(offer.view.offer.id)
                await asyncio.wait_for(receiver.hung.wait(), 10)
            running.proc.kill()  # SIGKILL while the provider holds the delivery
            await asyncio.to_thread(running.proc.wait)
        finally:
            await asyncio.to_thread(stop_host, running)
        assert receiver.taken == []
        restarted = await asyncio.to_thread(start_host, tmp_path, config=config)
        try:
            await until(lambda: len(receiver.taken) == 1)
            assert receiver.of(number) == [("assigned", "")]
            assert receiver.tries == 2  # the one the kill cut short, then the same again
        finally:
            await asyncio.to_thread(stop_host, restarted)


def signed(secret: bytes, body: bytes, token: str, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


async def test_signed_intake_takes_a_good_signature_and_refuses_bad_stale_or_none(
    tmp_path: Path,
) -> None:
    async with provider() as receiver:
        config = parse_config(delivery_config_text(tmp_path, receiver.url), name="hook.toml")
        async with running_host(tmp_path, config) as h, aiohttp.ClientSession() as http:
            token, _ = await h.host.auth.create_api_token("crm", None, Role.SUPERVISOR, None)
            url = f"{h.url}/api/v1/items"

            async def post(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
                async with http.post(url, data=body, headers=headers) as r:
                    return r.status, await r.json()

            body = json.dumps({"channel": "chat", "customer": {"id": "cust-s"}}).encode()
            status, _ = await post(body, signed(INBOUND, body, token))
            assert status == 201
            bad = signed(b"not-the-key-not-the-key-not-the-key", body, token)
            stale = signed(INBOUND, body, token, at=time.time() - 600)
            unsigned = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            for headers, reason in (
                (bad, "does not match"),
                (stale, "seconds off"),
                (unsigned, "are required"),
            ):
                status, answer = await post(body, headers)
                assert status == 401
                assert answer["error"]["code"] == "bad_signature"
                assert reason in answer["error"]["message"]
            # A channel without an inbound key takes unsigned intake as before.
            case = json.dumps({"channel": "case", "customer": {"id": "cust-c"}}).encode()
            status, _ = await post(case, unsigned)
            assert status == 201


async def test_the_console_marks_a_reply_retrying_then_sent_as_the_provider_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    async with provider() as receiver:
        config = parse_config(delivery_config_text(tmp_path, receiver.url), name="hook.toml")
        async with running_host(tmp_path, config) as h:
            app = console(h)
            async with app.run_test(size=SIZE) as pilot:
                await chat_ready(h, app, pilot)
                receiver.script = ["500"] * 1000  # the provider fails until told otherwise
                await pilot.press("c", *"Hi Ana", "enter")
                await pilot_until(pilot, lambda: "Hi Ana ↻" in transcript_text(app))
                receiver.script = []
                await pilot_until(pilot, lambda: "Hi Ana ✓" in transcript_text(app))
                assert receiver.of(next(iter(app.state.chats)))[-1] == ("message", "Hi Ana")


def test_backoff_doubles_from_the_base_up_to_the_cap_less_up_to_half_at_random() -> None:
    settings = DeliverySettings(
        url="http://x/", secret=Secret(SECRET), backoff_base=1.0, backoff_cap=10.0
    )
    rng = random.Random(7)
    for attempts, full in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (500, 10.0)):
        waits = [backoff(settings, attempts, rng) for _ in range(200)]
        assert all(full / 2 <= w <= full for w in waits), (attempts, min(waits), max(waits))
        assert max(waits) - min(waits) > full / 4  # jittered, not one value for everyone


async def test_an_agents_file_is_delivered_as_a_message_that_names_it(tmp_path: Path) -> None:
    async with provider() as receiver:
        config = parse_config(delivery_config_text(tmp_path, receiver.url), name="hook.toml")
        async with running_host(tmp_path, config) as h:
            alice = await h.agent("alice")
            number = await accepted_chat(h, alice, "cust-a")
            form = b"%PDF-1.4 the form"
            frame = AttachFile(
                interaction=number, name="form.pdf", content_type="application/pdf", data=form
            )
            ack = await alice.request(frame, AttachmentAck)
            await until(lambda: len(receiver.of(number)) == 2)
            [assigned, message] = [d for d in receiver.taken if d["conversation"] == number]
            assert assigned["event"] == "assigned" and message["event"] == "message"
            # The provider fetches the bytes by this digest (GET …/attachments/{sha256}).
            assert message["message"]["attachment"] == ack.attachment.sha256
            assert "form.pdf" in message["message"]["body"]
            await alice.close()
