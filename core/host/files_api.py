"""Files through the REST API: upload a customer's file, download any file of an interaction.

    POST /api/v1/interactions/{number}/attachments?customer_id=<id>
        the raw file as the body (not multipart), its type as Content-Type, its name in
        `X-Filename` (UTF-8, percent-encoded as in a URL: "r%C3%A9sum%C3%A9.pdf"). Who may:
        as for posting a customer message (an integration token that may write there).
    GET /api/v1/interactions/{number}/attachments/{sha256}
        the bytes, served as core/host/downloads.py says. Who may: as for reading the
        interaction (GET /api/v1/interactions/{number}).

Refusals (`{"error": {"code", "message"}}`): 400 `invalid_request` (no or bad X-Filename),
413 `too_large` (over `[attachments] max_bytes`), 415 `bad_type`, `type_not_allowed` and
`extension_not_allowed`, 422 `content_mismatch` (the bytes are not the declared type).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import msgspec
from aiohttp import web
from msgspec import Struct

from core.host import openapi
from core.host.api import (
    PREFIX,
    ApiError,
    _json,
    _may_write,
    _principal,
    _reader,
    _require_integration,
    _sees_everything,
    read_body,
)
from core.host.downloads import file_response
from core.host.state import HOST
from core.model import Attachment, Message
from core.service.inbox import InboxError

FILENAME_HEADER = "X-Filename"
MAX_FILENAME_CHARS = 1000  # percent-encoded; the stored name is cut to 200 characters
_STATUS = {
    "not_found": 404,
    "too_large": 413,
    "bad_type": 415,
    "type_not_allowed": 415,
    "extension_not_allowed": 415,
    "content_mismatch": 422,
}


class FileStored(Struct, frozen=True, kw_only=True):
    """The stored file and the transcript line announcing it to the agents."""

    attachment: Attachment
    message: Message


def _refused(e: InboxError) -> ApiError:
    return ApiError(_STATUS.get(e.code, 409), e.code, e.message)


def filename(request: web.Request) -> str:
    raw = request.headers.get(FILENAME_HEADER, "")
    if not raw or len(raw) > MAX_FILENAME_CHARS:
        raise ApiError(
            400,
            "invalid_request",
            f"send the file's name in {FILENAME_HEADER}, percent-encoded UTF-8, "
            f"at most {MAX_FILENAME_CHARS} characters",
        )
    return unquote(raw, errors="replace")


async def upload(request: web.Request) -> web.Response:
    principal = await _principal(request)
    _require_integration(principal)
    number = request.match_info["number"]
    customer = request.query.get("customer_id", "")
    name = filename(request)
    inbox = request.app[HOST].inbox
    try:
        conv = inbox.customer_conversation(number, customer)
        if not _may_write(principal, conv.record):
            raise InboxError("not_found", f"no open conversation {number} this token may write to")
        data = await read_body(request, inbox.config.attachments.max_bytes)
        attachment, message = await inbox.customer_attach(
            number, customer, name, request.headers.get("Content-Type", ""), data
        )
    except InboxError as e:
        raise _refused(e) from e
    return _json(FileStored(attachment=attachment, message=message), 201)


async def download(request: web.Request) -> web.Response:
    principal = await _reader(request, "interactions")
    number = request.match_info["number"]
    inbox = request.app[HOST].inbox
    record = await inbox.visible_record(principal.agent, _sees_everything(principal), number)
    if record is None:
        raise ApiError(404, "not_found", f"no interaction {number} visible to you")
    try:
        attachment, data = await inbox.read_attachment(record.number, request.match_info["sha256"])
    except InboxError as e:
        raise _refused(e) from e
    return file_response(attachment, data)


def setup(app: web.Application) -> None:
    base = PREFIX + "/interactions/{number}/attachments"
    app.router.add_post(base, upload)
    app.router.add_get(base + "/{sha256:[0-9a-f]{64}}", download)


def openapi_part() -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of the file endpoints, for the OpenAPI document."""
    _, schemas = msgspec.json.schema_components([FileStored], ref_template=openapi.REF)
    number = openapi.NUMBER
    base = f"{PREFIX}/interactions/{{number}}/attachments"
    paths = {
        base: {
            "post": {
                "operationId": "uploadCustomerFile",
                "summary": "Upload a customer's file",
                "description": (
                    "The raw file is the body (not multipart); Content-Type is its type and "
                    "X-Filename its name, percent-encoded UTF-8. Stored within the host's "
                    "[attachments] limits (type, extension, size, content matching its type) "
                    "and announced to the agents as a customer line. The same file again is "
                    "the same line. Who may: as for posting a customer message."
                ),
                "parameters": [
                    number,
                    {
                        "name": "customer_id",
                        "in": "query",
                        "required": True,
                        "description": "The conversation's customer.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": FILENAME_HEADER,
                        "in": "header",
                        "required": True,
                        "description": "The file's name, percent-encoded UTF-8.",
                        "schema": {"type": "string", "maxLength": MAX_FILENAME_CHARS},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "responses": openapi.responses(
                    {
                        "201": {
                            "description": "Stored.",
                            "content": openapi.json_content("FileStored"),
                        }
                    },
                    "400",
                    "403",
                    "404",
                    "408",
                    "413",
                    "415",
                    "422",
                    "503",
                ),
            }
        },
        base + "/{sha256}": {
            "get": {
                "operationId": "downloadFile",
                "summary": "Download a file of an interaction",
                "description": (
                    "The bytes, with X-Content-Type-Options: nosniff, a Content-Security-Policy "
                    "that allows nothing, and Content-Disposition: attachment for anything but "
                    "raster images and plain text. Who may: as for reading the interaction."
                ),
                "parameters": [
                    number,
                    {
                        "name": "sha256",
                        "in": "path",
                        "required": True,
                        "description": "The file's SHA-256 (Attachment.sha256).",
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    },
                ],
                "responses": openapi.responses(
                    {
                        "200": {
                            "description": "The file.",
                            "content": {
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                }
                            },
                        }
                    },
                    "403",
                    "404",
                    "503",
                ),
            }
        },
    }
    return paths, schemas
