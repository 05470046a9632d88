"""Files for widget customers: upload into their chat, download through signed links.

    POST /widget/files
        the raw file as the body, its type as Content-Type, its name in `X-Filename`
        (percent-encoded UTF-8), the chat in `X-Conversation` and `X-Ticket` (the ticket of
        `started`). → 201 {"t":"file_ack","seq","name","size"}, once stored; the line
        announcing it reaches the socket as any message, with its link in "file".
        Refusals are {"t":"error","code","message"}: 400 bad_field, 403 bad_ticket,
        404 conversation_closed, 413 too_large, 415 bad_type, type_not_allowed and
        extension_not_allowed, 422 content_mismatch.
    GET /widget/files/<number>/<sha256>?expires=&sig=
        the file (core/host/downloads.py); a forged, altered or expired link is 403.

The custom headers make an upload a request a page of another site cannot send without the
host agreeing to CORS, which it never does; the Origin rule is the socket's besides.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import unquote

from aiohttp import web

from core.host.api import ApiError, read_body
from core.host.downloads import file_response
from core.host.files_api import FILENAME_HEADER, MAX_FILENAME_CHARS
from core.host.origins import check_origin
from core.host.state import HOST
from core.host.widget import WIDGET
from core.service.inbox import InboxError

log = logging.getLogger("inbox_tui.host")

_STATUS = {
    "bad_field": 400,
    "bad_ticket": 403,
    "conversation_closed": 404,
    "too_large": 413,
    "bad_type": 415,
    "type_not_allowed": 415,
    "extension_not_allowed": 415,
    "content_mismatch": 422,
}


def _error(code: str, message: str) -> web.Response:
    return web.json_response(
        {"t": "error", "code": code, "message": message}, status=_STATUS.get(code, 409)
    )


async def upload(request: web.Request) -> web.Response:
    host = request.app[HOST]
    embed = host.config.widget.embed_origins
    check_origin(request, embed, any_origin=not embed)
    number = request.headers.get("X-Conversation", "")[:32]
    customer = request.app[WIDGET].tickets.check(number, request.headers.get("X-Ticket", ""))
    if customer is None:
        return _error("bad_ticket", "X-Conversation and X-Ticket do not match")
    raw_name = request.headers.get(FILENAME_HEADER, "")
    if not raw_name or len(raw_name) > MAX_FILENAME_CHARS:
        return _error("bad_field", f"{FILENAME_HEADER}: the file's name, percent-encoded")
    try:
        data = await read_body(request, host.config.attachments.max_bytes)
        attachment, message = await host.inbox.customer_attach(
            number,
            customer,
            unquote(raw_name, errors="replace"),
            request.headers.get("Content-Type", ""),
            data,
        )
    except ApiError as e:
        return _error(e.detail.code, e.detail.message)
    except InboxError as e:
        if e.code == "not_found":
            return _error("conversation_closed", "this chat has ended")
        return _error(e.code, e.message)
    log.info("event=widget_file conversation=%s size=%d", number, attachment.size)
    return web.json_response(
        {"t": "file_ack", "seq": message.seq, "name": attachment.name, "size": attachment.size},
        status=201,
    )


async def download(request: web.Request) -> web.Response:
    number, sha256 = request.match_info["number"], request.match_info["sha256"]
    links = request.app[WIDGET].links
    query = request.query
    if not links.valid(number, sha256, query.get("expires", ""), query.get("sig", ""), time.time()):
        raise web.HTTPForbidden(text="this link is not valid or has expired: reload the chat\n")
    try:
        attachment, data = await request.app[HOST].inbox.read_attachment(number, sha256)
    except InboxError:
        raise web.HTTPNotFound(text="no such file\n") from None
    return file_response(attachment, data)


def setup(app: web.Application) -> None:
    app.router.add_post("/widget/files", upload)
    app.router.add_get("/widget/files/{number}/{sha256:[0-9a-f]{64}}", download)
