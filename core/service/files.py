"""Files both ways: what an upload must be to be stored, who stores it, who reads it back.

Anyone's file (agent, widget customer, REST integration) is at most `[attachments] max_bytes`
and is what its declared type says where that is cheap to tell (`SIGNATURES`, and text that
is UTF-8): a browser that trusted an "image/png" that is really HTML would run it. A
customer's file must also have an allowed type and extension: customers are strangers, agents
are staff, so an agent may send anything within the size limit. Each refusal has its code.

Reading a file back takes the same right as reading the transcript: `Access.readable` for an
agent, the conversation's own customer for a customer (core/service/customers.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from core.config.settings import MEDIA_TYPE, AttachmentSettings
from core.model import Attachment, Message, SenderKind
from core.protocol import AttachFile, AttachmentAck, AttachmentData, GetAttachment, ServerFrame
from core.routing import events as ev
from core.routing.engine import RoutingError
from core.service.access import Access
from core.service.conversations import Conversation, Conversations
from core.service.customers import Customers
from core.service.errors import InboxError
from core.service.outbox import Outbox
from core.service.routing import RoutingService
from core.service.sessions import AgentSession
from store.base import Store


def _zip(data: bytes) -> bool:
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


# The first bytes each type's files start with. Office documents are zip archives.
SIGNATURES: dict[str, Callable[[bytes], bool]] = {
    "image/png": lambda d: d.startswith(b"\x89PNG\r\n\x1a\n"),
    "image/jpeg": lambda d: d.startswith(b"\xff\xd8\xff"),
    "image/gif": lambda d: d[:6] in (b"GIF87a", b"GIF89a"),
    "image/webp": lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP",
    "application/pdf": lambda d: d.startswith(b"%PDF-"),
    "application/zip": _zip,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": _zip,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": _zip,
}


def media_type(declared: str) -> str:
    """The declared type in lower case without parameters ("text/plain; charset=utf-8" is
    text/plain); InboxError bad_type when it is not type/subtype."""
    kind = declared.partition(";")[0].strip().lower()
    if not MEDIA_TYPE.fullmatch(kind):
        raise InboxError("bad_type", f"{declared[:80]!r} is not a media type such as image/png")
    return kind


def extension(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem else ""


def check_upload(
    rules: AttachmentSettings, name: str, declared: str, data: bytes, *, customer: bool
) -> str:
    """The file's media type if it may be stored, else InboxError saying why (module doc)."""
    if len(data) > rules.max_bytes:
        raise InboxError(
            "too_large", f"{name!r} is {len(data):,} bytes; the limit is {rules.max_bytes:,} bytes"
        )
    kind = media_type(declared)
    if customer:
        if kind not in rules.allowed_types:
            raise InboxError(
                "type_not_allowed",
                f"files of type {kind} are not accepted; allowed: {', '.join(rules.allowed_types)}",
            )
        if extension(name) not in rules.allowed_extensions:
            raise InboxError(
                "extension_not_allowed",
                f"{name!r}: the name must end in one of "
                f"{', '.join('.' + e for e in rules.allowed_extensions)}",
            )
    signature = SIGNATURES.get(kind)
    if signature is not None and not signature(data):
        raise InboxError("content_mismatch", f"{name!r} is not of type {kind}")
    if kind.startswith("text/") and not _is_text(data):
        raise InboxError("content_mismatch", f"{name!r} is not UTF-8 text")
    return kind


def _is_text(data: bytes) -> bool:
    try:
        return "\x00" not in data.decode("utf-8")
    except UnicodeDecodeError:
        return False


@dataclass
class Files:
    rules: AttachmentSettings
    access: Access
    conversations: Conversations
    customers: Customers
    routing: RoutingService
    store: Store
    clock: Callable[[], float]
    outbox: Outbox

    async def attach(self, session: AgentSession, frame: AttachFile) -> ServerFrame:
        conv = self.access.writable(session, frame.interaction)
        kind = check_upload(self.rules, frame.name, frame.content_type, frame.data, customer=False)
        attachment, message, _ = await self._store(
            conv, SenderKind.AGENT, session.agent, frame.name, kind, frame.data
        )
        return AttachmentAck(ref=frame.ref, attachment=attachment, message=message)

    async def get(self, session: AgentSession, frame: GetAttachment) -> ServerFrame:
        record = await self.access.readable(session, frame.interaction)
        attachment, data = await self.read(record.number, frame.sha256)
        return AttachmentData(ref=frame.ref, attachment=attachment, data=data)

    async def read(self, number: str, sha256: str) -> tuple[Attachment, bytes]:
        """The file; the caller has checked that its reader may read the interaction."""
        found = await self.store.read_attachment(number, sha256)
        if found is None:
            raise InboxError("not_found", f"no file {sha256[:12]}… in {number}")
        return found

    async def customer_attach(
        self, number: str, customer: str, name: str, declared: str, data: bytes
    ) -> tuple[Attachment, Message]:
        """A customer's file into their own open conversation; a reply like a message."""
        conv = self.customers.customer_conversation(number, customer)
        kind = check_upload(self.rules, name, declared, data, customer=True)
        attachment, message, duplicate = await self._store(
            conv, SenderKind.CUSTOMER, customer, name, kind, data
        )
        if not duplicate:
            with contextlib.suppress(RoutingError):
                await self.routing.submit(ev.CustomerReplied(item=conv.item))
        return attachment, message

    async def customer_file(
        self, number: str, customer: str, sha256: str
    ) -> tuple[Attachment, bytes]:
        if await self.customers.customer_record(number, customer) is None:
            raise InboxError("not_found", f"no conversation {number}")
        return await self.read(number, sha256)

    async def _store(
        self,
        conv: Conversation,
        sender_kind: SenderKind,
        sender: str,
        name: str,
        kind: str,
        data: bytes,
    ) -> tuple[Attachment, Message, bool]:
        """Store the content, then the line announcing it; the same file again from the same
        side is the same line (its client_msg_id is the digest's), so a retry adds nothing."""
        number, now = conv.record.number, self.clock()
        side = "attach" if sender_kind is SenderKind.AGENT else "customer-attach"
        try:
            attachment = await self.store.put_attachment(number, name, kind, data, sender, now)
        except ValueError as e:
            raise InboxError("too_large", str(e)) from e
        # An agent's file goes out to the channel's provider like their other replies.
        agent = sender_kind is SenderKind.AGENT
        delivery = self.outbox.for_message(conv.record) if agent else None
        message, duplicate = await self.store.append_message(
            number,
            sender_kind,
            sender,
            f"sent a file: {attachment.name} ({attachment.size} bytes)",
            f"{side}-{attachment.sha256[:32]}",
            now,
            attachment=attachment.sha256,
            delivery=delivery,
        )
        if not duplicate:
            if delivery is not None:
                self.outbox.enqueued(delivery, message)
            await self.conversations.delivered(conv, message)
        return attachment, message, duplicate
