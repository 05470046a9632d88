"""E-mail channels with real SMTP both ways on loopback: a real SMTP client (aiosmtplib)
sends to the host's SMTP server, and a real aiosmtpd server is the smarthost that receives
the host's replies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from msgspec.structs import replace

from core.client import ClientError
from core.config import ConfigError, parse_config
from core.demo import demo_config_text
from core.model import Message
from core.protocol import (
    AttachFile,
    AttachmentAck,
    CloseRecord,
    DeliveryEvent,
    InteractionEvent,
    MessageEvent,
    OfferEvent,
)
from core.service.mail import parse
from tests.hosting import RunningHost, running_host

ADDRESS = "support@example.test"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class Sink:
    """The smarthost: keeps every mail the host hands it."""

    def __init__(self) -> None:
        self.mails: asyncio.Queue[EmailMessage] = asyncio.Queue()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.mails.put_nowait(parse(envelope.original_content or b""))
        return "250 OK"

    async def next(self) -> EmailMessage:
        return await asyncio.wait_for(self.mails.get(), 10)


def mail_config_text(smarthost_port: int, max_bytes: int = 65536) -> str:
    """The demo config with an e-mail channel "mail", its queue, and alice able to take it."""
    text = demo_config_text()
    text = text.replace(
        '[[channel]]\nname = "case"',
        f"""[[channel]]
name = "mail"
mode = "async"
label = "E-mail"

[channel.email]
listen = "127.0.0.1:0"
address = "{ADDRESS}"
smarthost = "127.0.0.1:{smarthost_port}"
max_bytes = {max_bytes}

[[channel]]
name = "case\"""",
    )
    text = text.replace(
        'channels = ["chat", "messaging", "case", "incident"]',
        'channels = ["chat", "messaging", "mail", "case", "incident"]',
    )
    text = text.replace(
        "capacity = { chat = 3, messaging = 5, case = 2 }",
        "capacity = { chat = 3, messaging = 5, mail = 5, case = 2 }",
    )
    return text.replace(
        '[[queue]]\nname = "cases"',
        '[[queue]]\nname = "mail"\nchannel = "mail"\ngroups = ["tier1"]\n\n'
        '[[queue]]\nname = "cases"',
    )


@contextlib.asynccontextmanager
async def mail_host(
    tmp_path: Path, max_bytes: int = 65536
) -> AsyncIterator[tuple[RunningHost, Sink]]:
    sink = Sink()
    loop = asyncio.get_running_loop()
    smarthost = await loop.create_server(lambda: SMTP(sink), "127.0.0.1", 0)
    port = smarthost.sockets[0].getsockname()[1]
    config = parse_config(mail_config_text(port, max_bytes), name="mail.toml")
    try:
        async with running_host(tmp_path, config) as h:
            # The outbox's retries of a reply, quick enough for a test.
            outbox = h.host.inbox.outbox
            quick = replace(outbox.deliveries["mail"], backoff_base=0.05, backoff_cap=0.2)
            outbox.deliveries = {**outbox.deliveries, "mail": quick}
            yield h, sink
    finally:
        smarthost.close()


def customer_mail(
    body: str,
    *,
    subject: str = "My kettle is broken",
    message_id: str = "c1@example.org",
    sender: str = "Ann Lee <ann@example.org>",
    **headers: str,
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = ADDRESS
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{message_id}>"
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content(body)
    return mail


async def send(h: RunningHost, mail: EmailMessage, envelope_from: str = "ann@example.org") -> None:
    host, port = h.host.mail_listening["mail"]
    # sendmail, not aiosmtplib.send, which would take the From header for an empty sender.
    async with aiosmtplib.SMTP(hostname=host, port=port, timeout=10) as client:
        await client.sendmail(envelope_from, [ADDRESS], mail.as_bytes())


async def accepted(alice) -> str:  # type: ignore[no-untyped-def]
    """The number of the next conversation offered to alice, accepted."""
    while True:
        offer = await alice.next_event(OfferEvent)
        try:
            await alice.accept(offer.view.offer.id)
        except ClientError as e:
            # The offer again with the customer's first words, already accepted.
            assert e.code == "offer_not_pending"
            continue
        assert offer.view.interaction is not None
        return offer.view.interaction


async def mailed(h: RunningHost, mail: EmailMessage):  # type: ignore[no-untyped-def]
    """The mail sent to the host and its offer accepted by alice: (alice, number)."""
    alice = await h.agent("alice")
    await send(h, mail)
    return alice, await accepted(alice)


async def answered(h: RunningHost, sink: Sink):  # type: ignore[no-untyped-def]
    """Ann's mail accepted by alice, who replied "Hi Ann": (alice, number, the reply mail)."""
    alice, number = await mailed(h, customer_mail("Hello"))
    await alice.send_message(number, "Hi Ann")
    return alice, number, await sink.next()


async def system_note(alice, words: str) -> Message:  # type: ignore[no-untyped-def]
    """The next system work note saying `words`."""
    while True:
        m = (await alice.next_event(MessageEvent)).message
        if m.sender_kind == "system" and words in m.body:
            assert m.kind == "work_note"
            return m


async def customer_line(alice, number: str) -> str:  # type: ignore[no-untyped-def]
    while True:
        event = await alice.next_event(MessageEvent)
        m = event.message
        if m.interaction == number and m.sender_kind == "customer" and m.kind == "message":
            return m.body


async def test_a_customer_mail_a_reply_by_mail_and_the_answer_thread_into_one_interaction(
    tmp_path: Path,
) -> None:
    async with mail_host(tmp_path) as (h, sink):
        alice, number = await mailed(h, customer_mail("It stopped heating.\n\nAnn"))
        transcript = await h.host.inbox.list_messages(number)
        assert [m.body for m in transcript if m.sender_kind == "customer"] == [
            "It stopped heating.\n\nAnn"
        ]
        record = h.host.inbox.conversations.open[number].record
        assert (record.channel, record.customer, record.customer_contact) == (
            "mail",
            "ann@example.org",
            "ann@example.org",
        )

        await alice.send_message(number, "Have you tried descaling it?")
        reply = await sink.next()
        assert reply["To"] == "Ann Lee <ann@example.org>"
        assert reply["From"] == ADDRESS
        assert reply["Subject"] == f"Re: My kettle is broken [{number}]"
        assert reply["In-Reply-To"] == "<c1@example.org>"
        assert reply["References"] == "<c1@example.org>"
        assert reply.get_content().strip() == "Have you tried descaling it?"

        answer = customer_mail(
            "Yes, twice.\n\nOn Mon, 30 Nov 2026, support wrote:\n> Have you tried descaling it?",
            subject=str(reply["Subject"]),
            message_id="c2@example.org",
            In_Reply_To=str(reply["Message-ID"]),
            References=f"<c1@example.org> {reply['Message-ID']}",
        )
        await send(h, answer)
        assert await customer_line(alice, number) == "Yes, twice."
        # The same mail again (an MTA's retry) is the same message.
        await send(h, answer)
        await alice.send_message(number, "Then it needs a repair.")
        second = await sink.next()
        assert second["In-Reply-To"] == "<c2@example.org>"
        assert str(second["References"]).split() == [
            "<c1@example.org>",
            reply["Message-ID"],
            "<c2@example.org>",
        ]
        assert second["Subject"] == f"Re: My kettle is broken [{number}]"
        lines = [m.body for m in await h.host.inbox.list_messages(number) if m.kind == "message"]
        assert lines.count("Yes, twice.") == 1
        assert len(h.host.inbox.conversations.open) == 1
        await alice.close()


async def test_an_answer_to_a_closed_conversation_reopens_it(tmp_path: Path) -> None:
    async with mail_host(tmp_path) as (h, sink):
        alice, number, reply = await answered(h, sink)
        await alice.end_chat(number)
        await alice.request(CloseRecord(interaction=number))
        while number in h.host.inbox.conversations.open:
            await alice.next_event(InteractionEvent)
        answer = customer_mail(
            "It works again, thanks", message_id="c3@example.org", In_Reply_To=reply["Message-ID"]
        )
        await send(h, answer)
        assert await accepted(alice) == number
        lines = [m.body for m in await h.host.inbox.list_messages(number) if m.kind == "message"]
        assert "It works again, thanks" in lines
        assert len(await h.host.inbox.store.list_interactions(limit=10)) == 1
        await alice.close()


async def test_the_subject_token_threads_a_mail_without_references_for_its_customer_only(
    tmp_path: Path,
) -> None:
    async with mail_host(tmp_path) as (h, _):
        alice, number = await mailed(h, customer_mail("Hello"))
        await send(h, customer_mail("Me again", subject=f"[{number}] more", message_id="c9@x.org"))
        assert await customer_line(alice, number) == "Me again"
        # Someone else quoting the token starts a conversation of their own.
        stranger = customer_mail(
            "Not Ann", subject=f"Re: [{number}]", message_id="s1@x.org", sender="eve@evil.test"
        )
        await send(h, stranger, envelope_from="eve@evil.test")
        other = await accepted(alice)
        assert other != number
        assert h.host.inbox.conversations.open[other].record.customer == "eve@evil.test"
        await alice.close()


@pytest.mark.parametrize(
    ("headers", "envelope_from"),
    [
        ({"Auto_Submitted": "auto-replied"}, "ann@example.org"),
        ({"Precedence": "bulk"}, "ann@example.org"),
        ({"X_Loop": ADDRESS}, "ann@example.org"),
        ({}, ""),  # an empty Return-Path: a bounce
        ({}, "MAILER-DAEMON@mx.example.org"),
    ],
    ids=["auto-submitted", "precedence-bulk", "x-loop", "null-sender", "mailer-daemon"],
)
async def test_auto_replies_bounces_and_loops_are_never_routed(
    tmp_path: Path, headers: dict[str, str], envelope_from: str
) -> None:
    async with mail_host(tmp_path) as (h, _):
        await send(h, customer_mail("Out of office", **headers), envelope_from=envelope_from)
        assert h.host.inbox.conversations.open == {}
        assert await h.host.inbox.store.list_interactions(limit=10) == []


async def test_our_own_reply_coming_back_is_a_loop_and_adds_nothing(tmp_path: Path) -> None:
    async with mail_host(tmp_path) as (h, sink):
        alice, number, reply = await answered(h, sink)
        del reply["X-Loop"]  # a forwarder that dropped it: the Message-ID still tells
        before = await h.host.inbox.list_messages(number)
        await send(h, reply, envelope_from=ADDRESS)
        assert await h.host.inbox.list_messages(number) == before
        assert len(await h.host.inbox.store.list_interactions(limit=10)) == 1
        await alice.close()


async def test_a_bounce_of_a_reply_is_noted_on_its_conversation(tmp_path: Path) -> None:
    async with mail_host(tmp_path) as (h, sink):
        alice, number, reply = await answered(h, sink)
        bounce = customer_mail(
            f"Delivery failed.\n\nMessage-ID: {reply['Message-ID']}",
            subject="Undelivered Mail Returned to Sender",
            message_id="b1@mx.example.org",
            sender="MAILER-DAEMON@mx.example.org",
        )
        await send(h, bounce, envelope_from="")
        note = await system_note(alice, "A mail to the customer bounced")
        assert note.interaction == number
        assert len(h.host.inbox.conversations.open) == 1
        await alice.close()


async def test_an_html_only_mail_becomes_plain_text_without_its_script(tmp_path: Path) -> None:
    async with mail_host(tmp_path) as (h, _):
        mail = customer_mail("")
        mail.set_content(
            "<html><head><style>p{color:red}</style><script>alert('x')</script></head>"
            "<body><p>Fish &amp; chips</p><p>are <b>cold</b> &amp;lt;3</p></body></html>",
            subtype="html",
        )
        alice, number = await mailed(h, mail)
        lines = [m.body for m in await h.host.inbox.list_messages(number) if m.kind == "message"]
        assert "Fish & chips\n\nare cold &lt;3" in lines
        assert not any("alert" in line or "color" in line for line in lines)
        await alice.close()


async def test_a_mail_in_an_unknown_charset_is_read_as_utf_8(tmp_path: Path) -> None:
    async with mail_host(tmp_path) as (h, _):
        raw = customer_mail("Grüße").as_bytes().replace(b"utf-8", b"x-unknown-8")
        host, port = h.host.mail_listening["mail"]
        async with aiosmtplib.SMTP(hostname=host, port=port, timeout=10) as client:
            await client.sendmail("ann@example.org", [ADDRESS], raw)
        alice = await h.agent("alice")
        number = await accepted(alice)
        lines = [m.body for m in await h.host.inbox.list_messages(number) if m.kind == "message"]
        assert "Grüße" in lines
        await alice.close()


async def test_an_attachment_is_stored_and_a_refused_one_noted(tmp_path: Path) -> None:
    async with mail_host(tmp_path) as (h, _):
        mail = customer_mail("See the photo")
        mail.add_attachment(PNG, maintype="image", subtype="png", filename="kettle.png")
        mail.add_attachment(b"MZ", maintype="application", subtype="x-msdownload", filename="a.exe")
        alice, number = await mailed(h, mail)
        lines = [m.body for m in await h.host.inbox.list_messages(number)]
        assert any(line.startswith("A file of the mail was not stored: a.exe") for line in lines)
        files = await h.host.inbox.list_attachments(number)
        assert [(f.name, f.content_type, f.size) for f in files] == [
            ("kettle.png", "image/png", len(PNG))
        ]
        _, data = await h.host.inbox.read_attachment(number, files[0].sha256)
        assert data == PNG
        await alice.close()


async def test_a_mail_over_the_limit_is_refused_with_552_and_stores_nothing(
    tmp_path: Path,
) -> None:
    async with mail_host(tmp_path, max_bytes=4096) as (h, _):
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await send(h, customer_mail("x" * 10_000))
        assert refused.value.code == 552
        assert await h.host.inbox.store.list_interactions(limit=10) == []


async def test_a_reply_the_smarthost_refuses_is_retried_by_the_outbox_until_it_takes_it(
    tmp_path: Path,
) -> None:
    async with mail_host(tmp_path) as (h, sink):
        alice, number = await mailed(h, customer_mail("Hello"))
        reachable = h.host.inbox.mail.settings
        # Nothing listens on port 9 of loopback: every attempt fails.
        unreachable = replace(h.host.config.email["mail"], smarthost="127.0.0.1:9")
        h.host.inbox.mail.settings = {"mail": unreachable}
        ack = await alice.send_message(number, "Hi Ann")
        retrying = await alice.next_event(DeliveryEvent)
        while retrying.state != "retrying":
            retrying = await alice.next_event(DeliveryEvent)
        assert (retrying.interaction, retrying.message_seq) == (number, ack.message.seq)
        assert sink.mails.empty()
        # The smarthost is back: the same reply goes out once, and the console hears "sent".
        h.host.inbox.mail.settings = reachable
        sent = await alice.next_event(DeliveryEvent)
        while sent.state != "sent":
            sent = await alice.next_event(DeliveryEvent)
        mail = await sink.next()
        assert "Hi Ann" in mail.get_body(preferencelist=("plain",)).get_content()
        assert sink.mails.empty()
        await alice.close()


def test_an_email_channel_takes_no_webhook_delivery_and_its_replies_go_by_smtp() -> None:
    config = parse_config(mail_config_text(2525), name="mail.toml")
    delivery = config.deliveries["mail"]
    assert (delivery.transport, delivery.url) == ("smtp", "smtp://127.0.0.1:2525")
    webhook = '[channel.delivery]\nurl = "https://sms.example/hook"\nsecret_file = "k"\n\n'
    text = mail_config_text(2525).replace("[channel.email]", webhook + "[channel.email]")
    with pytest.raises(ConfigError, match=r"mail.toml:\d+: .*replies go out by SMTP"):
        parse_config(text, name="mail.toml")


async def test_an_agents_file_goes_out_attached_to_its_reply_mail(tmp_path: Path) -> None:
    async with mail_host(tmp_path) as (h, sink):
        alice, number = await mailed(h, customer_mail("Which form?"))
        form = b"%PDF-1.4 the form"
        frame = AttachFile(
            interaction=number, name="form.pdf", content_type="application/pdf", data=form
        )
        await alice.request(frame, AttachmentAck)
        mail = await sink.next()
        [part] = list(mail.iter_attachments())
        assert part.get_filename() == "form.pdf"
        assert part.get_content_type() == "application/pdf"
        assert part.get_content() == form
        await alice.close()
