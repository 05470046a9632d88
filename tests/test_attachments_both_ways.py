"""Files both ways against a real host: the agent protocol's get_attachment, the REST upload
and download, the widget's upload and signed links, and the limits and serving rules."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from msgspec.structs import replace

from core.client import ClientError, InboxClient
from core.config import ConfigError, parse_config
from core.config.settings import AttachmentSettings
from core.host.downloads import FileLinks, content_disposition
from core.model import Message, Role
from core.protocol import (
    AttachFile,
    AttachmentAck,
    AttachmentData,
    GetAttachment,
    MessageEvent,
    OfferEvent,
)
from core.service.errors import InboxError
from core.service.files import check_upload
from tests.hosting import RunningHost, fast_config, running_host
from tests.test_agent_commands import accepted_chat

PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)
RULES = AttachmentSettings()


# ---------------------------------------------------------------------------- the rules


def test_attachments_table_is_read_and_bad_entries_are_named_with_their_line() -> None:
    base = '[[channel]]\nname = "chat"\nmode = "sync"\n'
    config = parse_config(
        base + '[attachments]\nmax_bytes = 1000\nallowed_types = ["image/png"]\n'
        'allowed_extensions = ["png"]\nlink_ttl = 60\n',
        name="files.toml",
    )
    assert config.attachments == AttachmentSettings(
        max_bytes=1000, allowed_types=("image/png",), allowed_extensions=("png",), link_ttl=60.0
    )
    assert parse_config(base, name="files.toml").attachments == AttachmentSettings()
    with pytest.raises(ConfigError) as bad_type:
        parse_config(base + '[attachments]\nallowed_types = ["Text/HTML"]\n', name="f.toml")
    assert str(bad_type.value).startswith("f.toml:5: [attachments]")
    assert "lower-case type/subtype" in str(bad_type.value)
    with pytest.raises(ConfigError, match="without the dot"):
        parse_config(base + '[attachments]\nallowed_extensions = [".png"]\n', name="f.toml")
    with pytest.raises(ConfigError, match="max_bytes"):
        parse_config(base + "[attachments]\nmax_bytes = 20000000\n", name="f.toml")


@pytest.mark.parametrize(
    ("name", "declared", "data", "code"),
    [
        ("page.html", "text/html", b"<script>alert(1)</script>", "type_not_allowed"),
        ("logo.svg", "image/svg+xml", b"<svg/>", "type_not_allowed"),
        ("run.exe", "application/pdf", b"%PDF-1.4", "extension_not_allowed"),
        ("fake.png", "image/png", b"<html>not a png</html>", "content_mismatch"),
        ("notes.txt", "text/plain", b"\xff\xfe binary", "content_mismatch"),
        ("x.png", "not a type", PNG, "bad_type"),
        ("big.txt", "text/plain", b"a" * (RULES.max_bytes + 1), "too_large"),
    ],
)
def test_customer_uploads_are_refused_with_the_reason(
    name: str, declared: str, data: bytes, code: str
) -> None:
    with pytest.raises(InboxError) as refused:
        check_upload(RULES, name, declared, data, customer=True)
    assert refused.value.code == code


def test_agents_may_send_any_type_but_not_a_lying_one() -> None:
    assert check_upload(RULES, "dump.bin", "application/octet-stream", b"\0", customer=False) == (
        "application/octet-stream"
    )
    assert check_upload(RULES, "a.PNG", "Image/PNG; x=1", PNG, customer=True) == "image/png"
    with pytest.raises(InboxError, match="not of type image/png"):
        check_upload(RULES, "a.png", "image/png", b"GIF89a", customer=False)


def test_content_disposition_has_an_ascii_fallback_and_the_utf8_name() -> None:
    header = content_disposition('résumé "v2"\\.pdf', inline=False)
    assert header == (
        'attachment; filename="r_sum_ _v2__.pdf"; '
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22%5C.pdf"
    )


def test_a_link_is_bound_to_its_file_and_expires() -> None:
    links = FileLinks.from_secret(b"k" * 32, ttl=60)
    url = links.url("IMS0001001", "a" * 64, now=1000.0)
    query = dict(p.split("=") for p in url.split("?")[1].split("&"))
    expires, sig = query["expires"], query["sig"]
    assert links.valid("IMS0001001", "a" * 64, expires, sig, now=1000.0)
    assert not links.valid("IMS0001001", "a" * 64, expires, sig, now=1061.0)  # expired
    assert not links.valid("IMS0001002", "a" * 64, expires, sig, now=1000.0)  # other chat
    assert not links.valid("IMS0001001", "b" * 64, expires, sig, now=1000.0)  # other file
    assert not links.valid("IMS0001001", "a" * 64, str(int(expires) + 99), sig, now=1000.0)
    other = FileLinks.from_secret(b"j" * 32, ttl=60)
    assert not other.valid("IMS0001001", "a" * 64, expires, sig, now=1000.0)


# ---------------------------------------------------------------------------- agent protocol


async def test_participants_and_supervisors_get_a_files_bytes_others_not_found(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path, fast_config()) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "cust-a")
        ack = await alice.request(
            AttachFile(interaction=number, name="log.txt", content_type="text/plain", data=b"l1\n"),
            AttachmentAck,
        )
        got = await alice.request(
            GetAttachment(interaction=number, sha256=ack.attachment.sha256), AttachmentData
        )
        assert (got.data, got.attachment) == (b"l1\n", ack.attachment)
        dan = await h.agent("dan")  # a supervisor in the demo
        seen = await dan.request(
            GetAttachment(interaction=number, sha256=ack.attachment.sha256), AttachmentData
        )
        assert seen.data == b"l1\n"
        bob = await h.agent("bob")
        with pytest.raises(ClientError) as refused:
            await bob.request(GetAttachment(interaction=number, sha256=ack.attachment.sha256))
        assert refused.value.code == "not_found"
        with pytest.raises(ClientError) as missing:
            await alice.request(GetAttachment(interaction=number, sha256="0" * 64))
        assert missing.value.code == "not_found"
        with pytest.raises(ClientError) as lying:
            await alice.request(
                AttachFile(interaction=number, name="a.png", content_type="image/png", data=b"x")
            )
        assert lying.value.code == "content_mismatch"


# ---------------------------------------------------------------------------- REST


async def accept(agent: InboxClient, number: str) -> None:
    while True:
        offer = await agent.next_event(OfferEvent)
        await agent.accept(offer.view.offer.id)
        if offer.view.interaction == number:
            return


async def file_line(agent: InboxClient) -> Message:
    while True:
        event = await agent.next_event(MessageEvent)
        if event.message.attachment:
            return event.message


async def _token(h: RunningHost, agent: str | None, role: Role) -> str:
    secret, _ = await h.host.auth.create_api_token(f"t-{agent}", agent, role, None)
    return secret


async def test_rest_upload_reaches_the_agent_and_downloads_are_served_safely(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path, fast_config()) as h, aiohttp.ClientSession() as http:
        alice = await h.agent("alice")
        integration = await _token(h, None, Role.SUPERVISOR)
        auth = {"Authorization": f"Bearer {integration}"}
        someone_elses = await h.host.inbox.start_conversation(channel="chat", customer="crm-7")
        item = {"channel": "chat", "customer": {"id": "crm-8"}}
        async with http.post(h.url + "/api/v1/items", json=item, headers=auth) as response:
            assert response.status == 201
            number = (await response.json())["interaction"]
        await accept(alice, number)
        base = f"{h.url}/api/v1/interactions/{number}/attachments"

        async def upload(
            name: str, kind: str, data: bytes, target: str = number, customer: str = "crm-8"
        ) -> tuple[int, dict[str, Any]]:
            headers = {**auth, "Content-Type": kind, "X-Filename": quote(name)}
            url = f"{h.url}/api/v1/interactions/{target}/attachments?customer_id={customer}"
            async with http.post(url, data=data, headers=headers) as response:
                return response.status, await response.json()

        # Not created by this token, nor on a channel listed on it: as if it did not exist.
        status, body = await upload("a.png", "image/png", PNG, someone_elses.number, "crm-7")
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body = await upload("a.png", "image/png", PNG, customer="crm-7")
        assert status == 404  # not this conversation's customer
        status, body = await upload("page.html", "text/html", b"<script></script>")
        assert (status, body["error"]["code"]) == (415, "type_not_allowed")
        status, body = await upload("fake.png", "image/png", b"<svg onload=x>")
        assert (status, body["error"]["code"]) == (422, "content_mismatch")
        headers = {**auth, "Content-Type": "image/png"}
        async with http.post(f"{base}?customer_id=crm-8", data=PNG, headers=headers) as response:
            assert response.status == 400  # no X-Filename
        status, body = await upload("photo 1.png", "image/png", PNG)
        assert status == 201
        digest = hashlib.sha256(PNG).hexdigest()
        assert body["attachment"]["sha256"] == digest
        assert body["message"]["sender_kind"] == "customer"
        assert (await file_line(alice)).attachment == digest

        async with http.get(f"{base}/{digest}", headers=auth) as response:
            assert response.status == 200 and await response.read() == PNG
            assert response.headers["Content-Type"] == "image/png"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]
            assert response.headers["Content-Disposition"].startswith("inline;")
        bob = {"Authorization": f"Bearer {await _token(h, 'bob', Role.AGENT)}"}
        async with http.get(f"{base}/{digest}", headers=bob) as response:
            assert response.status == 404  # bob never took part
        alice_token = {"Authorization": f"Bearer {await _token(h, 'alice', Role.AGENT)}"}
        async with http.get(f"{base}/{digest}", headers=alice_token) as response:
            assert response.status == 200
        async with http.get(f"{base}/{'0' * 64}", headers=auth) as response:
            assert response.status == 404


# ---------------------------------------------------------------------------- widget


async def test_widget_links_serve_the_file_and_forged_or_expired_ones_are_403(
    tmp_path: Path,
) -> None:
    config = fast_config()
    config = replace(config, attachments=replace(config.attachments, link_ttl=10.0))
    async with running_host(tmp_path, config) as h, aiohttp.ClientSession() as http:
        alice = await h.agent("alice")
        async with http.ws_connect(h.url + "/widget/ws") as ws:
            await ws.send_json({"t": "start", "name": "Wendy", "email": "w@example.com"})
            started = await ws.receive_json()
            number, ticket = started["conversation"], started["ticket"]
            await accept(alice, number)
            headers = {
                "X-Conversation": number,
                "X-Ticket": ticket,
                "X-Filename": quote("scan.png"),
                "Content-Type": "image/png",
            }
            async with http.post(h.url + "/widget/files", data=PNG, headers=headers) as r:
                assert r.status == 201
                ack = await r.json()
            assert ack["t"] == "file_ack" and ack["name"] == "scan.png"
            assert (await file_line(alice)).attachment == hashlib.sha256(PNG).hexdigest()
            forged = {**headers, "X-Ticket": ticket[:-1] + ("0" if ticket[-1] != "0" else "1")}
            async with http.post(h.url + "/widget/files", data=PNG, headers=forged) as r:
                assert r.status == 403 and (await r.json())["code"] == "bad_ticket"

            await alice.request(
                AttachFile(
                    interaction=number,
                    name="<b>report</b>.html",
                    content_type="text/html",
                    data=b"<script>alert(1)</script>",
                ),
                AttachmentAck,
            )
            while True:
                frame = await ws.receive_json()
                if frame["t"] == "message" and frame.get("file") and frame["from"] == "agent":
                    break
            link = h.url + frame["file"]
            async with http.get(link) as r:
                assert r.status == 200 and await r.read() == b"<script>alert(1)</script>"
                assert r.headers["Content-Type"] == "application/octet-stream"
                assert r.headers["Content-Disposition"].startswith("attachment;")
                assert r.headers["X-Content-Type-Options"] == "nosniff"
            async with http.get(link.replace("sig=", "sig=0")) as r:
                assert r.status == 403
            expires = int(link.split("expires=")[1].split("&")[0])
            assert expires <= time.time() + 11
