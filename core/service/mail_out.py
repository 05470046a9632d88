"""One reply as one mail: composed with the headers that thread it, handed to the smarthost.

`compose` is pure: the same message always makes the same mail (its Message-ID comes from the
interaction number and the message's seq), so a retried delivery is recognised as one mail by
the customer's client. `SmtpTransport.deliver` sends one mail and raises on any failure, to be
retried by its caller: it keeps no queue of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate

import aiosmtplib

from core.config.settings import EmailSettings, split_listen
from core.model import Attachment, InteractionRecord, Message

# "Re: ", "RE: ", "Fwd: " and "AW: " prefixes, repeated, as clients stack them.
_PREFIXES = re.compile(r"^(?:\s*(?:re|fwd?|aw|sv)\s*:\s*)+", re.IGNORECASE)
TOKEN = re.compile(r"\[(IMS[0-9]{7,})\]")
# References carried forward: enough for any client to thread, bounded for the header's sake.
MAX_REFERENCES = 20
SEND_TIMEOUT = 30.0  # seconds for one whole SMTP exchange with the smarthost


@dataclass(frozen=True)
class Thread:
    """Where a reply goes in the customer's mailbox: what it answers and what came before."""

    subject: str  # the customer's first subject, as they wrote it
    in_reply_to: str | None  # the customer's last Message-ID, without angle brackets
    references: tuple[str, ...]  # the conversation's Message-IDs, oldest first


def reply_subject(subject: str, number: str) -> str:
    """ "Re: <subject> [IMS…]", without stacking "Re:" or repeating the token."""
    bare = TOKEN.sub("", _PREFIXES.sub("", subject)).strip()
    return f"Re: {bare} [{number}]" if bare else f"Re: [{number}]"


def message_id(settings: EmailSettings, record: InteractionRecord, message: Message) -> str:
    domain = settings.address.rpartition("@")[2]
    return f"{record.number}.{message.seq}.{int(message.created_at * 1000)}@{domain}"


def compose(
    settings: EmailSettings,
    record: InteractionRecord,
    message: Message,
    thread: Thread,
    file: tuple[Attachment, bytes] | None = None,
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = settings.address
    mail["To"] = formataddr((record.customer_name, record.customer_contact or record.customer))
    mail["Subject"] = reply_subject(thread.subject, record.number)
    mail["Date"] = formatdate(message.created_at, localtime=False)
    mail["Message-ID"] = f"<{message_id(settings, record, message)}>"
    if thread.in_reply_to:
        mail["In-Reply-To"] = f"<{thread.in_reply_to}>"
    if thread.references:
        mail["References"] = " ".join(f"<{r}>" for r in thread.references[-MAX_REFERENCES:])
    # An auto-responder that honours X-Loop (or sees our address in it) will not answer.
    mail["X-Loop"] = settings.address
    mail.set_content(message.body)
    if file is not None:
        attachment, data = file
        maintype, _, subtype = attachment.content_type.partition("/")
        mail.add_attachment(
            data, maintype=maintype, subtype=subtype or "octet-stream", filename=attachment.name
        )
    return mail


class SmtpTransport:
    """Hands one reply as one mail to the channel's smarthost, which signs it (DKIM) and
    delivers it."""

    def __init__(self, settings: EmailSettings) -> None:
        self.settings = settings

    async def deliver(
        self,
        record: InteractionRecord,
        message: Message,
        thread: Thread,
        file: tuple[Attachment, bytes] | None = None,
    ) -> None:
        """Returns once the smarthost accepted the mail; raises (aiosmtplib.SMTPException,
        OSError, TimeoutError) when it did not, and the caller retries: the same arguments
        make the same mail, Message-ID included. `file`: the agent's file the message
        announces, attached."""
        mail = compose(self.settings, record, message, thread, file)
        hostname, port = split_listen(self.settings.smarthost)
        await aiosmtplib.send(mail, hostname=hostname, port=port, timeout=SEND_TIMEOUT)
