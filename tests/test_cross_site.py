"""Cross-site rules against a real host subprocess (bench/host_process.py), the browser cases in
a real headless Chromium with the foreign page served from another loopback address
(127.0.0.2, 127.0.0.3): which pages may open /agent and /widget/ws, who may frame /widget, and
which attributes a widget chat is routed with. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import playwright.async_api as playwright_api
import pytest
from aiohttp import web

from bench.host_process import HostProcess, start_host, stop_host
from core.client import InboxClient
from core.demo import DEMO_PASSWORD, demo_config_text
from core.protocol import (
    PROTOCOL_VERSION,
    Error,
    Hello,
    LoggedIn,
    Login,
    OfferEvent,
    Welcome,
    encoder,
    server_decoder,
)
from tests.test_widget_browser import launch_chromium, needs_chromium

TIMEOUT = 10.0
WAIT_MS = 10_000
SECRET = "5f" * 32  # what `openssl rand -hex 32` writes: 64 characters, the key as text
FOREIGN = "127.0.0.2"
OTHER_FOREIGN = "127.0.0.3"


# ---------------------------------------------------------------------------- the host


def write_config(
    root: Path,
    *,
    allowed: tuple[str, ...] = (),
    embed: tuple[str, ...] = (),
    secret: str | None = SECRET,
) -> Path:
    """The demo's config (chat allows only `language` from customers; vip wants a tier), plus
    the cross-site keys. [widget] is the file's last table, so its keys can be appended."""
    root.mkdir(parents=True, exist_ok=True)
    text = demo_config_text()
    if allowed:
        text = text.replace("[host]\n", f"[host]\nallowed_origins = {json.dumps(allowed)}\n", 1)
    text += "\n"
    if embed:
        text += f"embed_origins = {json.dumps(embed)}\n"
    if secret is not None:
        key = root / "identity.secret"
        key.write_text(secret + "\n")
        key.chmod(0o600)
        text += 'identity_secret_file = "identity.secret"\n'
    path = root / "inbox.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def run_host(tmp_path: Path) -> Iterator[Any]:
    started: list[HostProcess] = []

    async def run(**options: Any) -> HostProcess:
        root = tmp_path / f"host{len(started)}"
        config = write_config(root, **options)
        # start_host polls with time.sleep; off the loop, a foreign page server keeps serving.
        host = await asyncio.to_thread(start_host, root, config=config)
        started.append(host)
        return host

    yield run
    for host in started:
        stop_host(host)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def wait_for_log(host: HostProcess, text: str) -> str:
    deadline = time.monotonic() + TIMEOUT
    while text not in host.log_text():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{host.log_text()}"
        await asyncio.sleep(0.05)
    return next(line for line in host.log_text().splitlines() if text in line)


# ---------------------------------------------------------------------------- agents


async def raw_login(
    http: aiohttp.ClientSession, host: HostProcess, origin: str | None
) -> LoggedIn | Error:
    """hello + login on /agent with this Origin header (None: none, as consoles send)."""
    async with http.ws_connect(host.agent_url, origin=origin) as ws:
        await ws.send_bytes(encoder.encode(Hello(version=PROTOCOL_VERSION, client="test")))
        welcome = server_decoder.decode((await ws.receive(timeout=TIMEOUT)).data)
        assert isinstance(welcome, Welcome)
        await ws.send_bytes(encoder.encode(Login(ref=1, username="alice", password=DEMO_PASSWORD)))
        while True:
            frame = server_decoder.decode((await ws.receive(timeout=TIMEOUT)).data)
            if isinstance(frame, LoggedIn | Error):
                return frame


async def refused_status(http: aiohttp.ClientSession, url: str, origin: str) -> int | None:
    """The HTTP status a handshake from `origin` gets, or None if the socket opened."""
    try:
        async with http.ws_connect(url, origin=origin):
            return None
    except aiohttp.WSServerHandshakeError as e:
        return e.status


async def desk(host: HostProcess, agent: str = "bob") -> InboxClient:
    """An agent's console (core/client: no Origin), Available."""
    client = InboxClient(host.agent_url, backoff=(0.05, 0.2))
    await client.connect()
    await client.login(agent, DEMO_PASSWORD)
    await client.set_presence("Available")
    return client


async def next_offer(client: InboxClient) -> OfferEvent:
    offer = await client.next_event(OfferEvent, timeout=TIMEOUT)
    assert isinstance(offer, OfferEvent)
    return offer


# ---------------------------------------------------------------------------- customers


async def widget_start(
    http: aiohttp.ClientSession,
    host: HostProcess,
    origin: str | None = None,
    **start: Any,
) -> dict[str, Any]:
    """Send one `start` and return the host's answer (started or error)."""
    frame = {"t": "start", "name": "Ada", "email": "ada@example.com"} | start
    async with http.ws_connect(host.widget_url, origin=origin) as ws:
        await ws.send_str(json.dumps(frame))
        while True:
            reply = json.loads((await ws.receive(timeout=TIMEOUT)).data)
            if reply["t"] in ("started", "error"):
                return reply


def sign(secret: bytes, payload: dict[str, Any]) -> str:
    """The signing code an integrator writes from the widget docstring ("Signed identity"),
    not the host's: a test that borrowed the host's code could not catch the two drifting."""
    b = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
    return b.decode() + "." + hmac.new(secret, b, hashlib.sha256).hexdigest()


def identity(secret: str = SECRET, **overrides: Any) -> str:
    payload = {
        "sub": "user-42",
        "name": "Grace Hopper",
        "email": "grace@example.com",
        "attributes": {"tier": "platinum"},
        "exp": int(time.time()) + 600,
    } | overrides
    return sign(secret.encode(), payload)


# ---------------------------------------------------------------------------- /agent origins


async def test_agent_socket_refuses_a_foreign_origin_with_403_and_one_log_line(
    run_host: Any, http: aiohttp.ClientSession
) -> None:
    host = await run_host()
    assert await refused_status(http, host.agent_url, "http://evil.example") == 403
    line = await wait_for_log(host, "event=origin_refused")
    assert "path=/agent" in line and "origin='http://evil.example'" in line
    # Sandboxed frames and file: pages say "null"; another port is another origin.
    assert await refused_status(http, host.agent_url, "null") == 403
    other_port = f"http://127.0.0.1:{host.port + 1}"
    assert await refused_status(http, host.agent_url, other_port) == 403


async def test_console_without_origin_and_the_hosts_own_pages_log_in(
    run_host: Any, http: aiohttp.ClientSession
) -> None:
    host = await run_host()
    console = await desk(host, "alice")
    await console.close()
    assert isinstance(await raw_login(http, host, None), LoggedIn)
    assert isinstance(await raw_login(http, host, host.base_url), LoggedIn)
    assert "origin_refused" not in host.log_text()


async def test_agent_socket_accepts_an_origin_listed_in_allowed_origins(
    run_host: Any, http: aiohttp.ClientSession
) -> None:
    # A TLS-terminating proxy: the browser says https, the host sees http, and
    # X-Forwarded-Proto is not believed; the listed origin is what lets it in.
    host = await run_host(allowed=("https://Agents.Example.com:443",))
    assert isinstance(await raw_login(http, host, "https://agents.example.com"), LoggedIn)
    async with http.ws_connect(
        host.agent_url,
        origin="https://agents.example.com",
        headers={"X-Forwarded-Proto": "https"},
    ):
        pass
    assert await refused_status(http, host.agent_url, "http://agents.example.com") == 403
    assert await refused_status(http, host.agent_url, "https://agents.example.com.evil") == 403


# ---------------------------------------------------------------------------- /widget/ws origins


async def test_widget_socket_takes_any_origin_by_default(
    run_host: Any, http: aiohttp.ClientSession
) -> None:
    host = await run_host()
    assert (await widget_start(http, host, "https://anyone.example"))["t"] == "started"


async def test_widget_socket_honours_embed_origins(
    run_host: Any, http: aiohttp.ClientSession
) -> None:
    host = await run_host(embed=("https://shop.example.com",))
    assert await refused_status(http, host.widget_url, "https://evil.example") == 403
    line = await wait_for_log(host, "event=origin_refused")
    assert "path=/widget/ws" in line
    for origin in ("https://shop.example.com", host.base_url, None):
        assert (await widget_start(http, host, origin))["t"] == "started", origin


# ---------------------------------------------------------------------------- routing attributes


async def test_typed_tier_is_dropped_and_the_chat_lands_in_general(
    run_host: Any, http: aiohttp.ClientSession
) -> None:
    host = await run_host()
    bob = await desk(host)
    try:
        started = await widget_start(
            http, host, attributes={"tier": "platinum", "utm_source": "mail", "language": "en"}
        )
        assert started["t"] == "started"
        offer = await next_offer(bob)
        assert offer.view.interaction == started["conversation"]
        assert offer.view.item.queue == "general"
        assert offer.view.item.attributes == {"language": "en"}
        line = await wait_for_log(host, "event=widget_attributes_dropped")
        assert "keys=tier,utm_source" in line
    finally:
        await bob.close()


async def test_a_signed_identity_routes_to_vip(run_host: Any, http: aiohttp.ClientSession) -> None:
    host = await run_host()
    bob = await desk(host)
    try:
        started = await widget_start(http, host, identity=identity())
        assert started["t"] == "started"
        offer = await next_offer(bob)
        assert offer.view.item.queue == "vip"
        assert offer.view.item.attributes == {
            "tier": "platinum",
            "verified_id": "user-42",
            "email_verified": "true",
        }
        assert offer.view.customer_name == "Grace Hopper"
    finally:
        await bob.close()


async def test_forged_or_expired_identities_get_bad_identity_and_start_nothing(
    run_host: Any, http: aiohttp.ClientSession
) -> None:
    host = await run_host()
    bob = await desk(host)
    good = identity()
    body, _, mac = good.partition(".")
    tampered = base64.urlsafe_b64encode(
        json.dumps({"sub": "x", "attributes": {"tier": "platinum"}, "exp": 2**40}).encode()
    ).decode()
    bad = {
        "other secret": identity("a0" * 32),
        "payload changed": f"{tampered}.{mac}",
        "mac upper-cased": f"{body}.{mac.upper()}",
        "expired": identity(exp=int(time.time()) - 1),
        "too far ahead": identity(exp=int(time.time()) + 2 * 24 * 3600),
        "no mac": body,
        "garbage": "ü.ü",
        "too long": identity(attributes={"tier": "platinum", "note": "x" * 4000}),
    }
    try:
        async with http.ws_connect(host.widget_url) as ws:
            for why, text in bad.items():
                await ws.send_str(
                    json.dumps(
                        {"t": "start", "name": "Eve", "email": "eve@example.com", "identity": text}
                    )
                )
                reply = json.loads((await ws.receive(timeout=TIMEOUT)).data)
                assert (reply["t"], reply.get("code")) == ("error", "bad_identity"), why
            # The socket still serves; and nothing was queued before this chat, so Bob's first
            # offer (one pending at a time) is for it.
            await ws.send_str(json.dumps({"t": "start", "name": "Eve", "email": "e@example.com"}))
            started = json.loads((await ws.receive(timeout=TIMEOUT)).data)
            assert started["t"] == "started"
        offer = await next_offer(bob)
        assert offer.view.interaction == started["conversation"]
        assert "reason='expired'" in host.log_text()
    finally:
        await bob.close()


async def test_an_identity_is_refused_where_no_secret_is_configured(
    run_host: Any, http: aiohttp.ClientSession
) -> None:
    host = await run_host(secret=None)
    reply = await widget_start(http, host, identity=identity())
    assert (reply["t"], reply["code"]) == ("error", "bad_identity")


# ---------------------------------------------------------------------------- page headers


async def test_widget_page_headers_allow_framing_only_by_embedding_sites(
    run_host: Any, http: aiohttp.ClientSession
) -> None:
    alone = await run_host()
    async with http.get(alone.base_url + "/widget") as reply:
        csp = reply.headers["Content-Security-Policy"]
        assert csp.endswith("; frame-ancestors 'self'")
        assert reply.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert '"attributes": ["language"]' in await reply.text()
    embedded = await run_host(embed=("https://shop.example.com", "https://b.example:8443"))
    async with http.get(embedded.base_url + "/widget") as reply:
        csp = reply.headers["Content-Security-Policy"]
        assert "frame-ancestors 'self' https://shop.example.com https://b.example:8443" in csp
        assert "script-src 'self'" in csp  # the rest of the policy is kept
        # XFO cannot name sites; ALLOW-FROM is dead, so it would only block the listed ones.
        assert "X-Frame-Options" not in reply.headers


# ---------------------------------------------------------------------------- in Chromium


@dataclass
class Foreign:
    """A site of its own: a page served from another loopback address."""

    origin: str
    pages: dict[str, str]

    def url(self, path: str) -> str:
        return self.origin + path


@pytest.fixture
async def foreign_sites() -> AsyncIterator[list[Foreign]]:
    sites: list[Foreign] = []
    runners: list[web.AppRunner] = []
    for address in (FOREIGN, OTHER_FOREIGN):
        pages: dict[str, str] = {}

        async def serve(request: web.Request, pages: dict[str, str] = pages) -> web.Response:
            text = pages.get(request.path)
            if text is None:
                raise web.HTTPNotFound()
            return web.Response(text=text, content_type="text/html")

        app = web.Application()
        app.router.add_get("/{tail:.*}", serve)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, address, 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        sites.append(Foreign(origin=f"http://{address}:{port}", pages=pages))
    try:
        yield sites
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
async def browsing(foreign_sites: list[Foreign]) -> AsyncIterator[Web]:
    async with playwright_api.async_playwright() as p:
        browser = await launch_chromium(p)
        try:
            context = await browser.new_context(viewport={"width": 800, "height": 800})
            yield Web(sites=foreign_sites, browser=context)
        finally:
            await browser.close()


@dataclass
class Web:
    """Foreign sites and a browser to visit them with."""

    sites: list[Foreign]
    browser: playwright_api.BrowserContext


def socket_page(url: str, frames: list[bytes]) -> str:
    """A page that opens `url`, sends `frames` once open and keeps what comes back, base64."""
    script = f"""
      const sent = {json.dumps([base64.b64encode(f).decode() for f in frames])};
      window.result = {{ opened: false, closed: null, received: [] }};
      const ws = new WebSocket({json.dumps(url)});
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {{
        window.result.opened = true;
        for (const b of sent) ws.send(Uint8Array.from(atob(b), (c) => c.charCodeAt(0)));
      }};
      ws.onmessage = (e) => window.result.received.push(
        typeof e.data === "string" ? btoa(e.data)
          : btoa(String.fromCharCode(...new Uint8Array(e.data))));
      ws.onclose = (e) => {{ window.result.closed = e.code; }};
    """
    return f"<!doctype html><title>foreign</title><script>{script}</script>"


async def socket_result(page: playwright_api.Page, done: str) -> dict[str, Any]:
    await page.wait_for_function(done, timeout=WAIT_MS)
    return await page.evaluate("window.result")


def decoded(result: dict[str, Any]) -> list[Any]:
    return [server_decoder.decode(base64.b64decode(b)) for b in result["received"]]


LOGIN = [
    encoder.encode(Hello(version=PROTOCOL_VERSION, client="page")),
    encoder.encode(Login(ref=1, username="alice", password=DEMO_PASSWORD)),
]


@needs_chromium
async def test_a_foreign_page_in_chromium_cannot_open_the_agent_socket(
    run_host: Any, browsing: Web
) -> None:
    site = browsing.sites[0]
    host = await run_host()
    site.pages["/steal"] = socket_page(host.agent_url, LOGIN)
    page = await browsing.browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(site.url("/steal"))
    result = await socket_result(page, "window.result.closed !== null")
    # Never opened, so the login frames were never sent.
    assert result == {"opened": False, "closed": 1006, "received": []}
    assert any("403" in e for e in errors), errors
    line = await wait_for_log(host, "event=origin_refused")
    assert f"origin='{site.origin}'" in line and "path=/agent" in line
    assert "event=agent_connected" not in host.log_text()


@needs_chromium
async def test_a_page_of_an_allowed_origin_in_chromium_logs_in(
    run_host: Any, browsing: Web
) -> None:
    site = browsing.sites[0]
    host = await run_host(allowed=(site.origin,))
    site.pages["/console"] = socket_page(host.agent_url, LOGIN)
    page = await browsing.browser.new_page()
    await page.goto(site.url("/console"))
    result = await socket_result(page, "window.result.received.length >= 2")
    welcome, logged_in = decoded(result)[:2]
    assert isinstance(welcome, Welcome) and isinstance(logged_in, LoggedIn)


@needs_chromium
async def test_the_widget_socket_in_chromium_honours_embed_origins(
    run_host: Any, browsing: Web
) -> None:
    listed, other = browsing.sites
    host = await run_host(embed=(listed.origin,))
    for site in browsing.sites:
        site.pages["/chat"] = socket_page(host.widget_url, [])
    page = await browsing.browser.new_page()
    await page.goto(listed.url("/chat"))
    assert (await socket_result(page, "window.result.opened"))["opened"] is True
    await page.goto(other.url("/chat"))
    result = await socket_result(page, "window.result.closed !== null")
    assert result["opened"] is False
    line = await wait_for_log(host, "event=origin_refused")
    assert f"origin='{other.origin}'" in line and "path=/widget/ws" in line


def frame_page(src: str) -> str:
    return f'<!doctype html><title>shop</title><iframe src="{src}" width="420" height="640">'


@needs_chromium
async def test_chromium_blocks_a_foreign_page_framing_the_widget(
    run_host: Any, browsing: Web
) -> None:
    site = browsing.sites[0]
    host = await run_host()
    site.pages["/frame"] = frame_page(host.base_url + "/widget")
    page = await browsing.browser.new_page()
    async with page.expect_console_message(
        lambda m: "frame-ancestors" in m.text, timeout=WAIT_MS
    ) as refusal:
        await page.goto(site.url("/frame"))
    text = (await refusal.value).text
    assert "frame-ancestors 'self'" in text and "blocked" in text
    assert await page.frame_locator("iframe").locator("#greeting").count() == 0
    # The host's own pages may still frame it ('self'). The widget page forbids frames inside
    # itself (default-src 'none'), so another of the host's documents does the framing.
    own = await browsing.browser.new_page()
    await own.goto(host.base_url + "/healthz")
    await own.evaluate(
        "src => { const f = document.createElement('iframe'); f.src = src;"
        " document.body.append(f); }",
        host.base_url + "/widget",
    )
    greeting = own.frame_locator("iframe").locator("#greeting")
    await playwright_api.expect(greeting).to_have_text("Hi! How can we help you today?")


@needs_chromium
async def test_an_embedding_site_frames_the_widget_and_its_signed_identity_routes(
    run_host: Any, browsing: Web
) -> None:
    site = browsing.sites[0]
    host = await run_host(embed=(site.origin,))
    bob = await desk(host)
    try:
        # As a shop's server would write it: the signed identity, and (ignored) a typed tier.
        src = f"{host.base_url}/widget?identity={identity()}&tier=gold&language=fr"
        site.pages["/shop"] = frame_page(src)
        page = await browsing.browser.new_page()
        page.set_default_timeout(WAIT_MS)
        await page.goto(site.url("/shop"))
        frame = page.frame_locator("iframe")
        await playwright_api.expect(frame.locator("#greeting")).to_have_text(
            "Hi! How can we help you today?"
        )
        await frame.locator("#name").fill("Grace")
        await frame.locator("#email").fill("grace@example.com")
        await frame.locator("#start").click()
        await playwright_api.expect(frame.locator("#status")).to_have_text("Waiting for an agent…")
        offer = await next_offer(bob)
        assert offer.view.item.queue == "vip"
        # Signed tier wins over the typed one; language is on the channel's allowlist.
        assert offer.view.item.attributes["tier"] == "platinum"
        assert offer.view.item.attributes["language"] == "fr"
    finally:
        await bob.close()
