"""Serving a stored file safely, and the signed links widget customers download with.

A file is someone else's bytes, served from the host's own origin: a browser must never run it.
So every download is `X-Content-Type-Options: nosniff` under a Content-Security-Policy that
allows nothing and sandboxes the document, and only `INLINE_TYPES` (raster images, plain text)
may show in the browser; everything else, HTML and SVG above all, is
`Content-Disposition: attachment` with the name as RFC 6266 and RFC 5987 spell it.

A link is `/widget/files/<number>/<sha256>?expires=<unix seconds>&sig=<hex>`, the signature an
HMAC-SHA256 over "number|sha256|expires" under a key derived from the host's widget secret:
bound to one file of one conversation, valid until `expires`, and checkable by any host of a
cluster without a lookup. docs/security.md ("Attachments") says the same to operators.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from core.model import Attachment

INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "text/plain"})
# A download is a file, not a page: no scripts, styles, frames or forms, even if a browser
# were talked into rendering it.
DOWNLOAD_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
_NOT_QUOTABLE = re.compile(r'[^\x20-\x7e]|["\\%]')


def content_disposition(name: str, *, inline: bool) -> str:
    """`attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>`."""
    fallback = _NOT_QUOTABLE.sub("_", name) or "attachment"
    disposition = "inline" if inline else "attachment"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def file_response(attachment: Attachment, data: bytes) -> web.Response:
    inline = attachment.content_type in INLINE_TYPES
    content_type = attachment.content_type if inline else "application/octet-stream"
    if content_type == "text/plain":
        content_type += "; charset=utf-8"
    return web.Response(
        body=data,
        headers={
            "Content-Type": content_type,
            "Content-Disposition": content_disposition(attachment.name, inline=inline),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": DOWNLOAD_CSP,
            "Cache-Control": "private, no-store",
            # Links carry their signature: a page the file opens must not learn it.
            "Referrer-Policy": "no-referrer",
            "Cross-Origin-Resource-Policy": "same-origin",
        },
    )


@dataclass(frozen=True)
class FileLinks:
    key: bytes
    ttl: float

    @classmethod
    def from_secret(cls, secret: bytes, ttl: float) -> FileLinks:
        # A key of its own: a link's signature can never pass as a ticket, nor the reverse.
        return cls(hmac.new(secret, b"inbox-tui file links", hashlib.sha256).digest(), ttl)

    def _sig(self, number: str, sha256: str, expires: int) -> str:
        text = f"{number}|{sha256}|{expires}".encode()
        return hmac.new(self.key, text, hashlib.sha256).hexdigest()

    def url(self, number: str, sha256: str, now: float) -> str:
        expires = math.ceil(now + self.ttl)
        sig = self._sig(number, sha256, expires)
        return f"/widget/files/{number}/{sha256}?expires={expires}&sig={sig}"

    def valid(self, number: str, sha256: str, expires: str, sig: str, now: float) -> bool:
        if not expires.isdigit() or len(expires) > 12 or int(expires) < now:
            return False
        good = self._sig(number, sha256, int(expires))
        return hmac.compare_digest(sig.encode(), good.encode())
