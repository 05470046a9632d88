"""E-mail channels: a mail in is a customer's message, an agent's reply out is a mail.

In: the host's SMTP server (core/host/mail_in.py) hands each mail to `receive` and answers
the MTA only after it returns, so an accepted mail is stored (persist before acknowledging);
a mail the MTA sends again is the same message (its client_msg_id is its Message-ID's).

Threading, first match wins: the mail's own Message-ID (the MTA's retry), In-Reply-To and
References against the Message-IDs stored for each conversation, then an "[IMS…]" token in
the subject; each only for the conversation's own customer (the sender address). Otherwise
the mail starts a new conversation. A closed conversation is reopened or followed up as any
customer message is (core/service/customers.py).

Never routed as new work: auto-replies (Auto-Submitted other than "no", Precedence bulk, junk
or list), bounces (an empty or MAILER-DAEMON sender, a delivery report), and loops (X-Loop
naming our address, or one of our own Message-IDs coming back). A bounce naming the
Message-ID of one of our replies is noted on that conversation for its agents.

Out: an agent's message on an e-mail channel is committed with an outbox delivery
(core/service/outbox.py), whose "smtp" transport, `ReplyByMail`, sends it by `deliver_reply`
(composed and handed to the smarthost by core/service/mail_out.py, the agent's file attached),
retried durably and in order per conversation until the smarthost takes it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from html.parser import HTMLParser

from core.config.settings import DeliverySettings, EmailSettings
from core.model import MAX_MAIL_IDS, Delivery, InteractionRecord, MailId, Message, Name
from core.service.conversations import Conversations
from core.service.customers import Customers
from core.service.errors import InboxError
from core.service.files import Files
from core.service.mail_out import TOKEN, SmtpTransport, Thread, message_id, reply_subject
from store.base import Store

log = logging.getLogger("inbox_tui.mail")

MAX_TEXT = 16_000  # characters of a mail's text kept as the message (the model's Body)
MAX_SUBJECT = 200
MAX_ATTACHMENTS = 20  # files stored from one mail; the rest are noted, not stored
_ANGLED = re.compile(r"<([^<>\s]{1,250})>")
_NAME = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
_AUTOMATIC_SENDERS = ("mailer-daemon", "postmaster")
# Where a client starts quoting what it answers: "On Mon, … Ann wrote:", Outlook's header.
_QUOTE_STARTS = re.compile(
    r"^\s*(?:On .{1,300} wrote:|-{2,} ?Original Message ?-{2,}|_{10,}|From: .+)\s*$",
    re.IGNORECASE,
)


def parse(raw: bytes) -> EmailMessage:
    mail = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(mail, EmailMessage)  # what policy.default makes
    return mail


def ids_in(header: str | None) -> list[str]:
    """The Message-IDs in a header, without angle brackets, in order."""
    return _ANGLED.findall(str(header or ""))


def automatic(mail: EmailMessage, envelope_from: str, address: str) -> str | None:
    """Why the mail must not become work (module docstring), or None for a person's mail."""
    sender = parseaddr(str(mail.get("From", "")))[1].lower()
    envelope_from = envelope_from.strip("<> ")  # aiosmtpd gives the null sender as "<>"
    if not envelope_from or envelope_from.lower().startswith(_AUTOMATIC_SENDERS):
        return "bounce"
    if sender.startswith(_AUTOMATIC_SENDERS) or mail.get_content_type() == "multipart/report":
        return "bounce"
    if address.lower() in str(mail.get("X-Loop", "")).lower():
        return "loop"
    if str(mail.get("Auto-Submitted", "no")).strip().lower() != "no":
        return "auto-reply"
    if str(mail.get("Precedence", "")).strip().lower() in ("bulk", "junk", "list"):
        return "auto-reply"
    return None


class _Text(HTMLParser):
    """An HTML part as plain text: tags dropped, entities decoded, scripts and styles left out."""

    _SKIPPED = frozenset({"script", "style", "head", "title"})
    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in self._SKIPPED:
            self.skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_text(markup: str) -> str:
    parser = _Text()
    parser.feed(markup)
    parser.close()
    # The parser decoded the entities (convert_charrefs): decoding again would turn a
    # written "&amp;lt;" into "<".
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def trim_quoted(text: str) -> str:
    """The new part of a reply: up to where the client quotes what it answers."""
    kept: list[str] = []
    for line in text.splitlines():
        if _QUOTE_STARTS.match(line):
            break
        if not line.startswith(">"):
            kept.append(line.rstrip())
    return "\n".join(kept).strip()


def body_text(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    assert isinstance(part, EmailMessage)
    try:
        content = str(part.get_content())
    except (LookupError, UnicodeError):  # a charset Python does not know: read it as UTF-8
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    text = html_text(content) if part.get_content_type() == "text/html" else content
    text = trim_quoted(text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 20] + "\n[… mail truncated]"


def attachments(mail: EmailMessage) -> list[tuple[str, str, bytes]]:
    """(name, type, content) of each file the mail carries."""
    files = []
    for part in mail.iter_attachments():
        assert isinstance(part, EmailMessage)
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            files.append((part.get_filename() or "attachment", part.get_content_type(), data))
    return files


def customer_of(address: str) -> Name:
    """The customer id of a sender address: the address itself when it is a valid id."""
    address = address.lower()
    if _NAME.fullmatch(address):
        return address
    return "mail-" + hashlib.sha256(address.encode()).hexdigest()[:32]


@dataclass
class Mail:
    settings: Mapping[str, EmailSettings]  # e-mail channel -> its settings
    customers: Customers
    files: Files
    conversations: Conversations
    store: Store
    clock: Callable[[], float]

    # ------------------------------------------------------------------ in

    async def receive(self, channel: str, envelope_from: str, raw: bytes) -> str:
        """Store one mail to `channel`; returns what became of it (for the log): "new",
        "threaded", "bounce", "loop" or "auto-reply". InboxError when it cannot be taken."""
        settings = self.settings[channel]
        mail = parse(raw)
        name, address = parseaddr(str(mail.get("From", "")))
        own_id = next(iter(ids_in(mail.get("Message-ID"))), None)
        if own_id is None:
            own_id = hashlib.sha256(raw).hexdigest()[:40] + "@unidentified"
        reason = automatic(mail, envelope_from, settings.address)
        if reason is None and any(m.outbound for m in await self.store.find_mail_ids([own_id])):
            reason = "loop"
        subject = str(mail.get("Subject", ""))[:MAX_SUBJECT]
        if reason is not None:
            if reason == "bounce":
                await self._note_bounce(raw, subject)
            log.info("event=mail_ignored channel=%s reason=%s id=%s", channel, reason, own_id)
            return reason
        customer = customer_of(address or envelope_from)
        record = await self._thread(mail, own_id, customer)
        threaded = record is not None
        if record is None:
            record = await self.customers.start_conversation(
                channel=channel,
                customer=customer,
                customer_name=name[:200],
                customer_contact=address[:200],
                attributes={"subject": subject} if subject else {},
            )
        # Before the message: an MTA's retry after a crash in between finds its conversation.
        await self.store.save_mail_id(
            MailId(
                message_id=own_id,
                interaction=record.number,
                outbound=False,
                subject=subject,
                created_at=self.clock(),
            )
        )
        text = body_text(mail) or "(a mail without text)"
        client_msg_id = "mail-" + hashlib.sha256(own_id.encode()).hexdigest()[:40]
        message, duplicate = await self.customers.customer_message(
            record.number, customer, text, client_msg_id
        )
        if not duplicate:
            await self._store_files(message.interaction, customer, mail)
        return "threaded" if threaded else "new"

    async def _thread(
        self, mail: EmailMessage, own_id: str, customer: str
    ) -> InteractionRecord | None:
        """The customer's conversation the mail belongs to (module docstring), if any."""
        ids = [own_id, *ids_in(mail.get("In-Reply-To")), *ids_in(mail.get("References"))[::-1]]
        found = {m.message_id: m for m in await self.store.find_mail_ids(ids[:MAX_MAIL_IDS])}
        numbers = [found[i].interaction for i in ids if i in found]
        token = TOKEN.search(str(mail.get("Subject", "")))
        if token:
            numbers.append(token.group(1))
        for number in numbers:
            record = await self.customers.customer_record(number, customer)
            if record is not None:
                return record
        return None

    async def _note_bounce(self, raw: bytes, subject: str) -> None:
        """A bounce names the mail it returns somewhere (headers, the quoted original): one
        of our Message-IDs there is the conversation whose agents are told."""
        ids = _ANGLED.findall(raw.decode("latin-1"))[:MAX_MAIL_IDS]
        for sent in await self.store.find_mail_ids(ids):
            conv = self.conversations.open.get(sent.interaction)
            if sent.outbound and conv is not None:
                text = f"A mail to the customer bounced: {subject or '(no subject)'}"
                await self.conversations.system(conv, text, note=True)
                return

    async def _store_files(self, number: str, customer: str, mail: EmailMessage) -> None:
        """The mail's files, as the customer's; one the upload rules refuse is noted instead."""
        conv = self.conversations.open.get(number)
        for i, (name, kind, data) in enumerate(attachments(mail)):
            why = f"more than {MAX_ATTACHMENTS} files in one mail"
            if i < MAX_ATTACHMENTS:
                try:
                    await self.files.customer_attach(number, customer, name, kind, data)
                    continue
                except InboxError as e:
                    why = e.message
            if conv is not None:
                text = f"A file of the mail was not stored: {name[:100]}: {why}"
                await self.conversations.system(conv, text)

    # ------------------------------------------------------------------ out

    async def thread_of(
        self, settings: EmailSettings, record: InteractionRecord, message: Message
    ) -> Thread:
        """Where the reply `message` goes in the customer's mailbox: the same every time it
        is asked, before or after the reply's own Message-ID is stored."""
        own = message_id(settings, record, message)
        known = [
            m
            for m in await self.store.last_mail_ids(record.number, MAX_MAIL_IDS)
            if m.message_id != own and m.created_at <= message.created_at
        ]
        inbound = [m for m in known if not m.outbound]
        return Thread(
            subject=inbound[0].subject if inbound else "",
            in_reply_to=inbound[-1].message_id if inbound else None,
            references=tuple(m.message_id for m in known),
        )

    async def deliver_reply(self, record: InteractionRecord, message: Message) -> None:
        """Send an agent's message on an e-mail channel as one mail; raises to have it
        retried. Every try sends the same mail (Message-ID, threading headers included), so
        it is what a durable outbox's transport calls with the stored message."""
        settings = self.settings[record.channel]
        thread = await self.thread_of(settings, record, message)
        # Stored before it leaves: the customer's answer may come back before we hear "250".
        await self.store.save_mail_id(
            MailId(
                message_id=message_id(settings, record, message),
                interaction=record.number,
                outbound=True,
                subject=reply_subject(thread.subject, record.number),
                created_at=message.created_at,
            )
        )
        file = None
        if message.attachment is not None:
            file = await self.store.read_attachment(record.number, message.attachment)
        await SmtpTransport(settings).deliver(record, message, thread, file)


class ReplyByMail:
    """The outbox's "smtp" transport (core/service/outbox.py): an agent's reply on an e-mail
    channel leaves as one mail, retried by the outbox until the smarthost takes it."""

    def __init__(self, mail: Mail) -> None:
        self.mail = mail

    async def deliver(self, delivery: Delivery, settings: DeliverySettings) -> None:
        if delivery.event != "message" or delivery.message is None:
            return  # e-mail carries replies only (Outbox._new makes no other)
        number = delivery.conversation
        record = self.mail.conversations.open_record(
            number
        ) or await self.mail.store.get_interaction(number)
        if record is None:
            raise LookupError(f"no interaction {number}")
        await self.mail.deliver_reply(record, delivery.message)
