"""The widget page in a real headless Chromium (Debian's, driven by playwright).

Never `playwright install`: the browser is the system's; CI puts it there with
.ci/ensure-chromium. Every wait is bounded (10 s at most).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import playwright.async_api as playwright_api
import pytest

from core.client import InboxClient
from core.demo import DEMO_PASSWORD, demo_config
from core.host import widget
from core.protocol import (
    AttachFile,
    AttachmentData,
    CloseRecord,
    EndChat,
    Event,
    GetAttachment,
    MessageEvent,
    OfferEvent,
    SendMessage,
    TransferToAgent,
    Typing,
)
from tests.test_disk_trouble import DISK_BYTES, fill, small_disk
from tests.test_widget import (  # noqa: F401  (fixtures)
    SCRIPT,
    Served,
    available,
    serve,
    served,
    stop,
)

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 10_000

# A developer without Chromium may skip; CI installs it (.ci/ensure-chromium) and must not.
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs /usr/bin/chromium (run .ci/ensure-chromium)",
)
pytestmark = needs_chromium


async def launch_chromium(p: playwright_api.Playwright) -> playwright_api.Browser:
    """Debian's Chromium, headless, making no connection of its own beyond loopback."""
    return await p.chromium.launch(
        executable_path=str(CHROMIUM),
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
        headless=True,
    )


@pytest.fixture
async def page(served: Served) -> AsyncIterator[playwright_api.Page]:  # noqa: F811
    async with open_page() as page:
        yield page


@contextlib.asynccontextmanager
async def open_page() -> AsyncIterator[playwright_api.Page]:
    async with playwright_api.async_playwright() as p:
        browser = await launch_chromium(p)
        try:
            context = await browser.new_context(viewport={"width": 420, "height": 680})
            page = await context.new_page()
            page.set_default_timeout(WAIT_MS)
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "console",
                lambda m: problems.append(f"console: {m.text}") if unexpected(m) else None,
            )
            yield page
            # A CSP violation or a script error shows here, whatever the test looked at.
            assert problems == []
        finally:
            await browser.close()


def unexpected(message: playwright_api.ConsoleMessage) -> bool:
    """A console error, but not Chromium's note of a refused upload: the page shows the
    host's reason for that, which is what a test of a refusal looks at."""
    refused_upload = message.text.startswith("Failed to load resource") and message.location.get(
        "url", ""
    ).endswith("/widget/files")
    return message.type == "error" and not refused_upload


def expect(locator: playwright_api.Locator) -> playwright_api.LocatorAssertions:
    return playwright_api.expect(locator)


async def start_chat(page: playwright_api.Page, base: str, name: str, email: str) -> None:
    await page.goto(base + "/widget")
    await expect(page.locator("#greeting")).to_have_text("Hi! How can we help you today?")
    await page.fill("#name", name)
    await page.fill("#email", email)
    await page.click("#start")
    await expect(page.locator("#chat")).to_be_visible()
    await expect(page.locator("#status")).to_have_text("Waiting for an agent…")


async def say(page: playwright_api.Page, text: str) -> None:
    await page.fill("#body", text)
    await page.press("#body", "Enter")
    await expect(page.locator("#body")).to_have_value("")


async def test_form_refuses_bad_input_before_connecting(
    page: playwright_api.Page,
    served: Served,  # noqa: F811
) -> None:
    await page.goto(served.base + "/widget")
    await page.click("#start")
    await expect(page.locator("#form-error")).to_have_text("Please enter your name.")
    await page.fill("#name", "Ada")
    await page.fill("#email", "ada@")
    await page.click("#start")
    await expect(page.locator("#form-error")).to_have_text("Please enter a valid e-mail address.")
    await expect(page.locator("#intro")).to_be_visible()
    assert served.host.inbox.conversations.open == {}


class SocketDesk:
    """An agent's console over the real agent socket (core/client), as a person would use."""

    def __init__(self, client: InboxClient) -> None:
        self.client = client
        self.seen: list[Event] = []

    @classmethod
    async def login(cls, running: Served, agent: str) -> SocketDesk:
        client = InboxClient(running.base.replace("http://", "ws://") + "/agent")
        await client.connect()
        await client.login(agent, DEMO_PASSWORD)
        await client.set_presence("Available")
        return cls(client)

    async def do(self, frame: Any) -> Any:
        return await self.client.request(frame)

    async def event(self, match: Callable[[Event], bool]) -> Event:
        while True:
            event = await self.client.next_event(timeout=WAIT_MS / 1000)
            if match(event):
                return event

    async def accept_next_offer(self) -> str:
        offer = await self.event(lambda e: isinstance(e, OfferEvent))
        assert isinstance(offer, OfferEvent) and offer.view.interaction
        await self.client.accept(offer.view.offer.id)
        return offer.view.interaction


async def chat_with_alice(page: playwright_api.Page, served: Served) -> tuple[SocketDesk, str]:  # noqa: F811
    """Ada starts a chat on the page and Alice, at her console, takes it."""
    """Ada starts a chat in the page and Alice, at her desk, accepts it."""
    alice = await SocketDesk.login(served, "alice")
    await start_chat(page, served.base, "Ada Lovelace", "ada@example.com")
    return alice, await alice.accept_next_offer()


async def test_a_whole_chat_with_transfer_reload_and_end(
    page: playwright_api.Page,
    served: Served,  # noqa: F811
) -> None:
    alice, number = await chat_with_alice(page, served)
    messages = page.locator("#messages")
    await expect(messages).to_contain_text("Alice Martin joined")
    await expect(page.locator("#status")).to_have_text("You are chatting with Alice Martin")

    await alice.do(Typing(interaction=number))
    await expect(page.locator("#typing")).to_have_text("Alice Martin is typing…")
    await alice.do(
        SendMessage(interaction=number, body="Hello Ada, how can I help?", client_msg_id="a-1")
    )
    await expect(messages).to_contain_text("Hello Ada, how can I help?")
    await expect(page.locator("#typing")).to_have_text("")
    await say(page, "My order is late")
    heard = await alice.event(
        lambda e: isinstance(e, MessageEvent) and e.message.body == "My order is late"
    )
    assert isinstance(heard, MessageEvent) and heard.message.sender.startswith("web-")
    await expect(page.locator("#messages .msg.customer:not(.pending)")).to_have_count(1)

    bob = await SocketDesk.login(served, "bob")
    await alice.do(TransferToAgent(interaction=number, agent="bob"))
    await bob.accept_next_offer()
    await expect(messages).to_contain_text("Transferred from Alice Martin to Bob Okafor")
    await expect(page.locator("#status")).to_have_text("You are chatting with Bob Okafor")
    await bob.do(SendMessage(interaction=number, body="Bob here, checking", client_msg_id="b-1"))
    await expect(messages).to_contain_text("Bob here, checking")

    lines = [
        "Alice Martin joined",
        "Hello Ada, how can I help?",
        "My order is late",
        "Transferred from Alice Martin to Bob Okafor",
        "Bob here, checking",
    ]
    await page.reload()
    await expect(page.locator("#chat")).to_be_visible()
    await expect(page.locator("#messages .body")).to_have_text(lines)
    await expect(page.locator("#status")).to_have_text("You are chatting with Bob Okafor")
    # The host drops the socket (a restart, say): the page comes back on its own, and what
    # was said meanwhile arrives.
    await widget.close_sockets(served.runner.app)
    await bob.do(SendMessage(interaction=number, body="Found it", client_msg_id="b-2"))
    await expect(messages).to_contain_text("Found it")
    await say(page, "Thanks!")
    await bob.event(lambda e: isinstance(e, MessageEvent) and e.message.body == "Thanks!")

    await bob.do(EndChat(interaction=number))
    lines += ["Found it", "Thanks!", "The chat has ended"]
    await expect(page.locator("#ended")).to_be_visible()
    await expect(page.locator("#chat")).to_be_hidden()
    await expect(page.locator("#transcript .body")).to_have_text(lines)
    link = page.locator("#download")
    await expect(link).to_have_text("Download transcript")
    assert await link.get_attribute("download") == f"transcript-{number}.txt"
    href = await link.get_attribute("href")
    assert href is not None and href.startswith("data:text/plain;charset=utf-8,")
    text = unquote(href.partition(",")[2])
    assert number in text and "Ada Lovelace: My order is late" in text
    assert "Bob Okafor: Found it" in text

    # The ended chat's transcript survives a reload too, until a new chat is started.
    await page.reload()
    await expect(page.locator("#transcript .body")).to_have_text(lines)
    await page.click("#new-chat")
    await expect(page.locator("#intro")).to_be_visible()
    assert await page.evaluate("localStorage.getItem('inbox-tui.widget')") is None
    # Bob wraps up: closing the record frees his capacity.
    await bob.do(CloseRecord(interaction=number))
    stored = await served.host.inbox.store.get_interaction(number)
    assert stored is not None and stored.state == "closed_complete"
    for desk in (alice, bob):
        await desk.client.close()


async def test_markup_shows_literally_and_never_runs(
    page: playwright_api.Page,
    served: Served,  # noqa: F811
) -> None:
    dialogs: list[str] = []

    async def refuse(dialog: playwright_api.Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", refuse)
    alice = await available(served.host, "alice")
    await start_chat(page, served.base, SCRIPT, "x@example.com")
    number = await alice.accept_next_offer()
    await say(page, SCRIPT)
    await alice.event(lambda e: isinstance(e, MessageEvent) and e.message.body == SCRIPT)
    await alice.do(SendMessage(interaction=number, body=SCRIPT + " (agent)", client_msg_id="a-1"))
    bodies = page.locator("#messages .body")
    await expect(bodies).to_have_text(["Alice Martin joined", SCRIPT, SCRIPT + " (agent)"])
    await expect(page.locator("#messages .msg.customer .meta")).to_contain_text(SCRIPT)

    await alice.do(EndChat(interaction=number))
    await expect(page.locator("#transcript .body").nth(1)).to_have_text(SCRIPT)
    # Nothing was parsed as markup: no element came out of the text, no handler ran.
    assert await page.locator(".widget img, .widget script").count() == 0
    assert await page.evaluate("typeof window.alert") == "function"
    assert dialogs == []


async def test_writing_again_after_the_end_reopens_the_chat_with_its_agent(
    page: playwright_api.Page,
    served: Served,  # noqa: F811
) -> None:
    alice, number = await chat_with_alice(page, served)
    await say(page, "Where is my parcel?")
    await alice.do(EndChat(interaction=number))
    await alice.do(CloseRecord(interaction=number))
    await expect(page.locator("#ended")).to_be_visible()

    await page.click("#write-again")
    await expect(page.locator("#chat")).to_be_visible()
    await say(page, "It came, but the box is empty")
    messages = page.locator("#messages")
    await expect(messages).to_contain_text("Welcome back: this conversation is open again.")
    await expect(page.locator("#status")).to_have_text("Waiting for an agent…")
    assert await alice.accept_next_offer() == number  # the same chat, to its agent
    await expect(page.locator("#status")).to_have_text("You are chatting with Alice Martin")
    await expect(page.locator("#messages .msg.customer:not(.pending) .body")).to_have_text(
        ["Where is my parcel?", "It came, but the box is empty"]
    )
    await alice.client.close()


async def test_customer_sends_a_file_the_agent_gets_and_downloads_the_agents(
    page: playwright_api.Page,
    served: Served,  # noqa: F811
) -> None:
    alice, number = await chat_with_alice(page, served)
    await expect(page.locator("#status")).to_have_text("You are chatting with Alice Martin")

    # Refused with the host's reason: the bytes are not the PNG the name and type claim.
    await page.set_input_files(
        "#file", files=[{"name": "fake.png", "mimeType": "image/png", "buffer": b"<svg/>"}]
    )
    await expect(page.locator("#file-error")).to_have_text(
        "Not sent: 'fake.png' is not of type image/png"
    )
    scan = b"\x89PNG\r\n\x1a\n" + bytes(64)
    await page.set_input_files(
        "#file", files=[{"name": "scan.png", "mimeType": "image/png", "buffer": scan}]
    )
    heard = await alice.event(lambda e: isinstance(e, MessageEvent) and bool(e.message.attachment))
    assert isinstance(heard, MessageEvent) and heard.message.sender.startswith("web-")
    got = await alice.do(GetAttachment(interaction=number, sha256=heard.message.attachment or ""))
    assert isinstance(got, AttachmentData)
    assert (got.data, got.attachment.name) == (scan, "scan.png")
    await expect(page.locator("#messages")).to_contain_text("sent a file: scan.png (72 bytes)")
    await expect(page.locator("#file-error")).to_have_text("")

    report = b"%PDF-1.4 the agent's report"
    await alice.do(
        AttachFile(
            interaction=number, name="report.pdf", content_type="application/pdf", data=report
        )
    )
    link = page.locator(".msg.agent a.file")
    await expect(link).to_have_text("Download")
    async with page.expect_download() as waiting:
        await link.click()
    download = await waiting.value
    assert download.suggested_filename == "report.pdf"
    path = await download.path()
    assert Path(path).read_bytes() == report
    await alice.client.close()


async def test_a_line_the_host_could_not_store_is_sent_again_by_the_page(
    tmp_path: Path,
) -> None:
    """The host's disk fills mid-chat: the customer's line is refused `unavailable`, the page
    says it is trying again and does, and once there is room the line is stored once and
    Alice gets it, with no click (it once waited for one: "Not sent · click to retry")."""
    with small_disk(tmp_path / "data", DISK_BYTES) as data:
        served = await serve(demo_config(), data)
        try:
            async with open_page() as page:
                alice, number = await chat_with_alice(page, served)
                filler = fill(data)
                await say(page, "Are you still there?")
                pending = page.locator("#messages .msg.pending .meta")
                await expect(pending).to_have_text("Not sent yet · trying again…")
                filler.unlink()
                await expect(page.locator("#messages .msg.pending")).to_have_count(0)
                await alice.event(
                    lambda e: (
                        isinstance(e, MessageEvent) and e.message.body == "Are you still there?"
                    )
                )
                await alice.client.close()
            stored = await served.host.inbox.store.list_messages(number, limit=100)
            assert [m.body for m in stored].count("Are you still there?") == 1
        finally:
            await stop(served)
