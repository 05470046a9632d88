"""The SMTP servers of the e-mail channels: the domain's MTA relays each mail to one of them.

One server per e-mail channel, on its `[channel.email] listen` address, for as long as the app
runs. A mail is answered "250" only once core/service/mail.py has stored it; a mail over the
channel's `max_bytes` is refused with 552 by aiosmtpd (the MTA returns it to its sender), and
one that cannot be stored now with 451, so the MTA tries again later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from core.config.settings import EmailSettings, split_listen
from core.host.state import HOST
from core.service import StoreError
from core.service.errors import InboxError
from core.service.mail import Mail

log = logging.getLogger("inbox_tui.mail")
# aiosmtpd logs every SMTP command, addresses included, at INFO; one line per mail is ours.
logging.getLogger("mail.log").setLevel(logging.WARNING)


class _Handler:
    def __init__(self, mail: Mail, channel: str) -> None:
        self.mail = mail
        self.channel = channel

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            outcome = await self.mail.receive(self.channel, envelope.mail_from or "", raw)
        except InboxError as e:
            # The conversation cannot take it (e.g. no queue routes the channel): permanent.
            return f"550 {e.message}"[:500]
        except (StoreError, OSError) as e:
            log.warning("event=mail_deferred channel=%s error=%r", self.channel, e)
            return "451 cannot store the mail now, try again later"
        log.info("event=mail_received channel=%s outcome=%s", self.channel, outcome)
        return "250 stored"


async def _serve(settings: EmailSettings, mail: Mail, channel: str) -> asyncio.Server:
    def protocol() -> SMTP:
        return SMTP(
            _Handler(mail, channel),
            data_size_limit=settings.max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.address.rpartition("@")[2],
        )

    loop = asyncio.get_running_loop()
    try:
        return await loop.create_server(protocol, *split_listen(settings.listen))
    except OSError as e:
        # The host does not start: say which channel's address, not only the errno.
        raise OSError(
            e.errno, f"e-mail channel {channel}: cannot listen on {settings.listen}: {e.strerror}"
        ) from e


async def serve_mail(app: web.Application) -> AsyncIterator[None]:
    host = app[HOST]
    servers = []
    try:
        for channel, settings in host.config.email.items():
            server = await _serve(settings, host.inbox.mail, channel)
            servers.append(server)
            bound = server.sockets[0].getsockname()
            host.mail_listening[channel] = (bound[0], bound[1])
            log.info("event=mail_listening channel=%s address=%s:%s", channel, *bound[:2])
        yield
    finally:
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()
        host.mail_listening.clear()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(serve_mail)
