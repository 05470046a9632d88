"""The REST API under /api/v1: JSON in and out, for other systems and scripts.

Who may do what (the OpenAPI descriptions say the same to clients):

- Every call but GET /api/v1/openapi.json needs ``Authorization: Bearer <token>``: an API token
  (``api_...``) or an agent's console session token (``ses_...``).
- Creating work items and posting customer messages needs an *integration* token: an API token
  not bound to an agent, of any role. It speaks for customers; an agent's own token must not be
  able to put words in a customer's mouth.
- An integration writes only where it is meant to. A token with channels listed
  (`inbox-tui admin token create NAME --channels case,incident`) creates items only on those
  channels (403 otherwise) and may post into any conversation on them; a token without
  channels creates items on any channel and posts only into the conversations it created.
  Posting anywhere else is 404, as for a number that does not exist, so a number never
  confirms that another integration's or a widget customer's conversation exists.
- `POST /items` takes an optional `Idempotency-Key` header (1-255 printable ASCII characters,
  no spaces), kept 24 h per token: a retry with the same key and body returns the first
  item with status 200 and `Idempotent-Replayed: true`; the same key with another body is
  422 `idempotency_key_reused`.
- Reading an interaction: supervisors and admins (any token kind) read every interaction; a
  token bound to an agent with the agent role reads only interactions that agent takes or took
  part in, and gets 404 for the others, exactly as for numbers that do not exist, so a number
  never confirms that someone else's conversation exists. An integration token with the agent
  role reads none (403): an integration needs role supervisor to read transcripts.
- Work notes are internal: only staff (tokens bound to an agent: supervisors and participant
  agents) see them. Integrations, whatever their role, see the customer-visible messages only.
- Queue statistics: a token bound to an agent with the agent role sees that agent's queues;
  supervisors, admins and integrations see every queue.
- An item's routing audit trail (`GET /items/{item}/audit`, the item's id or its interaction's
  number): supervisors and admins (any token kind) read every item's; a token bound to an
  agent with the agent role reads the items offered to that agent or whose interaction they
  took part in, and gets 404 for the others; an integration token with the agent role, 403.
- A queue's figures per minute (`GET /queues/{queue}/minutes`): supervisors and admins only
  (their API tokens, of either kind, and supervisors' console sessions); anyone else, 403.
- Cases and incidents (`/records`): supervisors and admins (any token kind) read and change
  every record; a token bound to an agent with the agent role reads and changes the records
  assigned to that agent or one of their groups, created by them, or linked to an interaction
  they took part in, and gets 404 for the others, as for numbers that do not exist. An
  integration token with the agent role gets 403. Changes and notes are written under the
  token's agent, or the token's id for an integration.

- A channel with `inbound_secret_file` in the config takes items and messages only signed with
  that key, as the outbox signs its deliveries (core/service/outbox.py, docs/channels.md): a
  missing, wrong or stale signature is 401 `bad_signature`.

Every error is ``{"error": {"code", "message", "field"?}}``, unknown routes and wrong methods
under /api/v1 included. Bodies are capped at 64 KiB and must arrive within 30 s. Requests are
rate limited per client address (before authentication, so guessing tokens is slow too) and per
token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from aiohttp import hdrs, web
from msgspec import Meta, Struct

from core.auth import AuthError, Principal
from core.host import openapi
from core.host.ratelimit import TokenBuckets
from core.host.state import HOST
from core.model import (
    Attachment,
    Attributes,
    ClientMsgId,
    InteractionRecord,
    ItemState,
    Label,
    Message,
    Name,
    QueueMinute,
    RecordKind,
    RecordNote,
    Role,
    ServiceRecord,
)
from core.notices import LanguageTag
from core.protocol import (
    MAX_INT,
    Assignment,
    Detail,
    Instant,
    NoteBody,
    Number,
    QueueStats,
    Seq,
    ShortDescription,
)
from core.service import StoreUnavailable
from core.service.audit import ItemAudit
from core.service.cases import Actor, Cases, RecordDetail
from core.service.inbox import InboxError
from core.service.outbox import verify as verify_signature

log = logging.getLogger("inbox_tui.api")

PREFIX = "/api/v1"

# Settings, read when `setup` runs: change them before, or replace `app[LIMITS]`'s buckets.
MAX_BODY_BYTES = 64 * 1024
# A body trickled in a byte at a time would hold its handler (and a connection) forever.
BODY_TIMEOUT = 30.0
TOKEN_RATE = 20.0  # requests a second per token, sustained
TOKEN_BURST = 40.0
ADDRESS_RATE = 50.0  # requests a second per client address, sustained
ADDRESS_BURST = 100.0
MAX_LIMITER_KEYS = 10_000

T = TypeVar("T")

Priority = Annotated[int, Meta(ge=0, le=10, description="Larger is more urgent.")]
NonEmptyBody = Annotated[str, Meta(min_length=1, max_length=16_000)]

SHORT_DESCRIPTION = "short_description"
MAX_ITEM_REF = 64  # an item id or interaction number in a path

IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENT_REPLAYED = "Idempotent-Replayed"  # Stripe's name for the same answer
# Printable ASCII without spaces: UUIDs, ULIDs and "order-1234:v2" fit; no header tricks do.
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


# ---------------------------------------------------------------------------- bodies


class Customer(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The customer the item is for, as the calling system knows them."""

    id: Name
    name: Label = ""
    contact: Label = ""


class CreateItem(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new work item on a service channel (chat, messaging, case, incident, ...).

    `short_description` is stored as the item attribute `short_description`, where the
    offered agent sees it and routing conditions can test it; giving both is an error.

    `weight` is the capacity the item uses while an agent holds it (1 to 1000; default: its
    channel's `weight` in the host config, else 1). `preferred_agent` (e.g. the account's
    owner) is offered the item first whenever they can take it; otherwise the queue's rule
    picks. A weight out of range or an unknown agent is 422 (`bad_weight`, `unknown_agent`).
    The item's routing audit trail says how both were used.

    `language` is the customer's language tag ("fr", "fr-CA"): the host's notices to the
    customer (all agents busy, ...) are in it where the channel has texts for it."""

    channel: Name
    customer: Customer
    attributes: Attributes = {}
    priority: Priority = 0
    short_description: Label | None = None
    weight: Annotated[int, Meta(ge=-MAX_INT, le=MAX_INT)] | None = None
    preferred_agent: Name | None = None
    language: LanguageTag | None = None


class ItemCreated(Struct, frozen=True, kw_only=True):
    """The item was stored and routed; `state` is the work item's, e.g. queued or offered.

    `replayed` is true (status 200, header `Idempotent-Replayed: true`) when this answers a
    retry: the `Idempotency-Key` was already stored with the same body, and this is the item
    created then, not a new one."""

    interaction: str
    item: str
    state: ItemState
    queue: str | None
    replayed: bool = False


class PostMessage(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A customer's message. `client_msg_id` makes retries safe: the same id again stores
    nothing and returns the message first stored under it."""

    customer_id: Name
    body: NonEmptyBody
    client_msg_id: ClientMsgId


class MessagePosted(Struct, frozen=True, kw_only=True):
    message: Message
    duplicate: bool


class TranscriptQuery(Struct, frozen=True, kw_only=True):
    after_seq: Seq = 0
    limit: Annotated[int, Meta(ge=1, le=1000)] = 500


class InteractionView(Struct, frozen=True, kw_only=True):
    """The interaction record, its transcript page and its attachments' metadata.

    `next_after_seq` is the `after_seq` of the next page, or null on the last page."""

    interaction: InteractionRecord
    messages: list[Message]
    attachments: list[Attachment]
    next_after_seq: int | None
    # What the item is about, as agents see it (the channel's details in the config).
    details: list[Detail] = []


class QueueList(Struct, frozen=True, kw_only=True):
    queues: list[QueueStats]


class MinutesQuery(Struct, frozen=True, kw_only=True):
    since: Instant
    until: Instant


class QueueMinutes(Struct, frozen=True, kw_only=True):
    """A queue's stored figures per minute from `since` to `until` (each rounded down to its
    minute; `until`'s minute not included), oldest first. A minute missing had nothing to
    show: take it as all zeros. docs/protocol.md's QueueMinute says what each figure counts."""

    queue: str
    since: int
    until: int
    minutes: list[QueueMinute]


class ErrorDetail(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """`code` is stable, for programs; `message` is for people; `field` is the JSON path of
    the offending field (e.g. `$.customer.id`) when a body or query failed validation."""

    code: str
    message: str
    field: str | None = None


class ErrorBody(Struct, frozen=True, kw_only=True):
    error: ErrorDetail


MODELS = (
    CreateItem,
    ItemCreated,
    PostMessage,
    MessagePosted,
    InteractionView,
    QueueList,
    QueueMinutes,
    ItemAudit,
    ErrorBody,
)


# ---------------------------------------------------------------------------- plumbing


@dataclass
class RateLimits:
    per_token: TokenBuckets = field(
        default_factory=lambda: TokenBuckets(TOKEN_RATE, TOKEN_BURST, max_keys=MAX_LIMITER_KEYS)
    )
    per_address: TokenBuckets = field(
        default_factory=lambda: TokenBuckets(ADDRESS_RATE, ADDRESS_BURST, max_keys=MAX_LIMITER_KEYS)
    )
    # Monotonic: a wall-clock step must not refill or drain every bucket at once.
    clock: Callable[[], float] = time.monotonic


LIMITS = web.AppKey("api_rate_limits", RateLimits)
OPENAPI = web.AppKey("api_openapi_json", bytes)

_encoder = msgspec.json.Encoder()
_FIELD_PATH = re.compile(r" - at `(\$[^`]*)`$")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(code=code, message=message, field=field)
        self.headers = headers or {}

    def response(self) -> web.Response:
        response = _json(ErrorBody(error=self.detail), self.status, self.headers)
        if self.status == 408:
            # The rest of that body may still be coming: the connection cannot be reused.
            response.force_close()
        return response


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_encoder.encode(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _invalid(e: msgspec.ValidationError) -> ApiError:
    message = str(e)
    match = _FIELD_PATH.search(message)
    return ApiError(400, "invalid_request", message, field=match.group(1) if match else None)


def _rate_limited(wait: float, who: str) -> ApiError:
    seconds = max(1, math.ceil(wait))
    return ApiError(
        429,
        "rate_limited",
        f"too many requests from {who}; retry in {seconds} s",
        headers={hdrs.RETRY_AFTER: str(seconds)},
    )


_HTTP_CODES = {
    404: ("not_found", "no such endpoint; see /api/v1/openapi.json"),
    405: ("method_not_allowed", "method not allowed"),
}


def _from_http(e: web.HTTPException) -> web.Response:
    code, message = _HTTP_CODES.get(e.status, ("http_error", e.reason))
    headers: dict[str, str] = {}
    if isinstance(e, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(e.allowed_methods))
        headers[hdrs.ALLOW] = allowed
        message = f"{e.method} is not allowed here; use {allowed}"
    return ApiError(e.status, code, message, headers=headers).response()


def _is_api(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


@web.middleware
async def _middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if not _is_api(request.path):
        return await handler(request)
    try:
        limits = request.app[LIMITS]
        # Behind a reverse proxy this is the proxy's address: X-Forwarded-For is not trusted,
        # since any client could set it to get a fresh bucket per request.
        address = request.remote or "unknown"
        wait = limits.per_address.take(address, limits.clock())
        if wait:
            raise _rate_limited(wait, f"address {address}")
        return await handler(request)
    except ApiError as e:
        return e.response()
    except web.HTTPException as e:
        return _from_http(e)
    except StoreUnavailable as e:
        log.error("event=api_store_unavailable path=%s error=%s", request.path, e)
        return ApiError(503, "unavailable", "storage is unavailable; retry later").response()
    except Exception as e:
        transport = request.transport
        if isinstance(e, ConnectionResetError) and (transport is None or transport.is_closing()):
            # The client went away mid-request (its body cut off): no fault of ours, and
            # nobody to answer. aiohttp drops the answer and the connection quietly.
            log.info("event=api_client_gone method=%s path=%s", request.method, request.path)
            return web.Response(status=499, reason="Client Closed Request")
        log.exception("event=api_error method=%s path=%s", request.method, request.path)
        return ApiError(500, "internal", "internal error; the host log has details").response()


async def _principal(request: web.Request) -> Principal:
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    token = token.strip()
    challenge: dict[str, str] = {hdrs.WWW_AUTHENTICATE: 'Bearer realm="inbox-tui"'}
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "unauthenticated",
            "send 'Authorization: Bearer <token>' with an api_ or ses_ token",
            headers=challenge,
        )
    try:
        principal = await request.app[HOST].auth.authenticate(token, request.remote)
    except AuthError as e:
        raise ApiError(401, "unauthenticated", e.message, headers=challenge) from e
    limits = request.app[LIMITS]
    wait = limits.per_token.take(principal.token_id, limits.clock())
    if wait:
        raise _rate_limited(wait, "this token")
    return principal


def _require_integration(principal: Principal) -> None:
    if principal.kind != "api" or principal.agent is not None:
        raise ApiError(
            403,
            "forbidden",
            "this needs an integration token: an API token not bound to an agent",
        )


def _sees_everything(principal: Principal) -> bool:
    return principal.role in (Role.SUPERVISOR, Role.ADMIN)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body: 413 as soon as it passes `limit` bytes, 408 after BODY_TIMEOUT."""
    too_large = ApiError(413, "too_large", f"the body is larger than {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    # Read in chunks rather than trust Content-Length: a chunked body has none.
    data = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            async for chunk in request.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > limit:
                    raise too_large
    except TimeoutError:
        raise ApiError(
            408, "request_timeout", f"the body did not arrive within {BODY_TIMEOUT:g} s"
        ) from None
    return bytes(data)


async def _body(request: web.Request, model: type[T]) -> T:
    return (await _body_and_bytes(request, model))[0]


async def _body_and_bytes(request: web.Request, model: type[T]) -> tuple[T, bytes]:
    if request.content_type != "application/json":
        raise ApiError(
            415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)"
        )
    data = await read_body(request, MAX_BODY_BYTES)
    try:
        return msgspec.json.decode(data, type=model), data
    except msgspec.ValidationError as e:
        raise _invalid(e) from e
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        # msgspec reports a string that is not UTF-8 as UnicodeDecodeError (found by fuzzing).
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {e}") from e


def _check_signature(request: web.Request, channel: str, data: bytes) -> None:
    """401 unless the body is signed with the channel's inbound secret, when it has one
    (docs/channels.md): the provider's own proof, besides the token, that it sent this."""
    secret = request.app[HOST].inbox.config.inbound_secrets.get(channel)
    if secret is not None:
        reason = verify_signature(secret, request.headers, data, time.time())
        if reason is not None:
            raise ApiError(401, "bad_signature", reason)


def _inbox_error(e: InboxError) -> ApiError:
    status = {
        "not_found": 404,
        "unroutable": 422,
        "unknown_channel": 422,
        "idempotency_key_reused": 422,
        "bad_weight": 422,
        "unknown_agent": 422,
    }.get(e.code, 409)
    return ApiError(status, e.code, e.message)


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"{IDEMPOTENCY_KEY} must be 1 to 255 printable ASCII characters without spaces",
        )
    return key


def fingerprint(body: CreateItem) -> str:
    """What makes a retry the same request: the decoded body, keys sorted, so a client that
    re-serialises it (another key order, other whitespace) still retries."""
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


def _may_write(principal: Principal, record: InteractionRecord) -> bool:
    if principal.channels is not None and record.channel in principal.channels:
        return True
    return record.created_by == principal.token_id


# ---------------------------------------------------------------------------- endpoints


async def create_item(request: web.Request) -> web.Response:
    principal = await _principal(request)
    _require_integration(principal)
    key = _idempotency_key(request)
    body, data = await _body_and_bytes(request, CreateItem)
    _check_signature(request, body.channel, data)
    if principal.channels is not None and body.channel not in principal.channels:
        raise ApiError(
            403,
            "forbidden",
            f"this token may create items only on the channels {', '.join(principal.channels)}",
            field="$.channel",
        )
    attributes = dict(body.attributes)
    if body.short_description is not None:
        if SHORT_DESCRIPTION in attributes:
            raise ApiError(
                400,
                "invalid_request",
                "give short_description or attributes.short_description, not both",
                field="$.short_description",
            )
        attributes[SHORT_DESCRIPTION] = body.short_description
        # The stored item is checked against the same limit when it is loaded again.
        try:
            attributes = msgspec.convert(attributes, Attributes)
        except msgspec.ValidationError as e:
            raise ApiError(
                400,
                "invalid_request",
                "too many attributes once short_description is added",
                field="$.attributes",
            ) from e
    inbox = request.app[HOST].inbox
    item_request: dict[str, Any] = {
        "channel": body.channel,
        "customer": body.customer.id,
        "customer_name": body.customer.name,
        "customer_contact": body.customer.contact,
        "attributes": attributes,
        "priority": body.priority,
        "weight": body.weight,
        "preferred_agent": body.preferred_agent,
        "created_by": principal.token_id,
        "language": body.language or "",
    }
    replayed = False
    try:
        if key is None:
            record = await inbox.start_conversation(**item_request)
        else:
            record, replayed = await inbox.start_conversation_once(
                scope=principal.token_id, key=key, fingerprint=fingerprint(body), **item_request
            )
    except InboxError as e:
        raise _inbox_error(e) from e
    # Already closed or cancelled by another request, it is the stored one.
    item = await inbox.work_item(record.item)
    if item is None:
        raise RuntimeError(f"work item {record.item} of {record.number} vanished")
    created = ItemCreated(
        interaction=record.number,
        item=item.id,
        state=item.state,
        queue=item.queue,
        replayed=replayed,
    )
    headers: dict[str, str] = {hdrs.LOCATION: f"{PREFIX}/interactions/{record.number}"}
    if replayed:
        headers[IDEMPOTENT_REPLAYED] = "true"
    return _json(created, 200 if replayed else 201, headers)


async def post_message(request: web.Request) -> web.Response:
    principal = await _principal(request)
    _require_integration(principal)
    number = request.match_info["number"]
    body, data = await _body_and_bytes(request, PostMessage)
    inbox = request.app[HOST].inbox
    try:
        # Closed ones too: a message within the channel's reopen window reopens it.
        record = await inbox.customer_record(number, body.customer_id)
        if record is None or not _may_write(principal, record):
            # The same answer as for a number that does not exist: see the module docstring.
            raise InboxError(
                "not_found",
                f"no conversation {number} this token may write to (a token writes "
                "into conversations it created, or on the channels listed on it)",
            )
        _check_signature(request, record.channel, data)
        message, duplicate = await inbox.customer_message(
            number, body.customer_id, body.body, body.client_msg_id
        )
    except InboxError as e:
        raise _inbox_error(e) from e
    return _json(MessagePosted(message=message, duplicate=duplicate), 200 if duplicate else 201)


async def _reader(request: web.Request, what: str) -> Principal:
    """The caller, who may read `what` if any may: a token bound to an agent (their own), or
    a supervisor's or admin's; an integration needs role supervisor to read."""
    principal = await _principal(request)
    if principal.agent is None and not _sees_everything(principal):
        raise ApiError(403, "forbidden", f"integrations need role supervisor to read {what}")
    return principal


async def get_interaction(request: web.Request) -> web.Response:
    principal = await _reader(request, "interactions")
    try:
        query = msgspec.convert(dict(request.query), TranscriptQuery, strict=False)
    except msgspec.ValidationError as e:
        raise _invalid(e) from e
    number = request.match_info["number"]
    host = request.app[HOST]
    record = await host.inbox.visible_record(principal.agent, _sees_everything(principal), number)
    if record is None:
        raise ApiError(404, "not_found", f"no interaction {number} visible to you")
    page = await host.inbox.list_messages(record.number, query.after_seq, query.limit)
    # Work notes are for people at the desk, never for systems fed from this API.
    notes = principal.agent is not None
    view = InteractionView(
        interaction=record,
        messages=[m for m in page if notes or m.kind == "message"],
        attachments=await host.inbox.list_attachments(record.number),
        next_after_seq=page[-1].seq if len(page) == query.limit else None,
        details=await host.inbox.details(record),
    )
    return _json(view)


async def get_item_audit(request: web.Request) -> web.Response:
    principal = await _reader(request, "audit trails")
    ref = request.match_info["item"]
    inbox = request.app[HOST].inbox
    # Ids and numbers are short: a longer one names nothing, and is not worth a query.
    audit = (
        await inbox.visible_audit(principal.agent, _sees_everything(principal), ref)
        if len(ref) <= MAX_ITEM_REF
        else None
    )
    if audit is None:
        raise ApiError(404, "not_found", f"no work item {ref} visible to you")
    return _json(audit)


async def list_queues(request: web.Request) -> web.Response:
    principal = await _principal(request)
    inbox = request.app[HOST].inbox
    stats = inbox.queue_stats()
    if principal.agent is not None and not _sees_everything(principal):
        mine = inbox.queues_of(principal.agent)
        stats = {q: s for q, s in stats.items() if q in mine}
    return _json(QueueList(queues=list(stats.values())))


async def queue_minutes(request: web.Request) -> web.Response:
    principal = await _principal(request)
    if not _sees_everything(principal):
        raise ApiError(403, "forbidden", "only supervisors and admins read the day's figures")
    try:
        query = msgspec.convert(dict(request.query), MinutesQuery, strict=False)
    except msgspec.ValidationError as e:
        raise _invalid(e) from e
    queue = request.match_info["queue"]
    try:
        figures = await request.app[HOST].inbox.day.figures(query.since, query.until, queue)
    except InboxError as e:
        status = {"unknown_queue": 404, "bad_range": 422}.get(e.code)
        raise (ApiError(status, e.code, e.message) if status else _inbox_error(e)) from e
    return _json(
        QueueMinutes(queue=queue, since=figures.since, until=figures.until, minutes=figures.minutes)
    )


# ---------------------------------------------------------------------------- cases and incidents


class RecordPatch(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The fields to change; a field left out (or null) stays as it is. `state` must be one
    of the record kind's states (422 `bad_state`); `assignee` names an agent and
    `assignment_group` a group (422 `unknown_agent`, `unknown_group`), "" clears either."""

    short_description: ShortDescription | None = None
    description: Annotated[str, Meta(max_length=16_000)] | None = None
    priority: Annotated[int, Meta(ge=1, le=5)] | None = None
    state: Name | None = None
    assignee: Assignment | None = None
    assignment_group: Assignment | None = None


class RecordNotePost(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A work note: internal, append-only."""

    body: NoteBody


class RecordLinkPost(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An interaction the caller may read, linked to the record (at most 100 per record)."""

    interaction: Number


class RecordDetailView(Struct, frozen=True, kw_only=True):
    """The case or incident, its newest work notes (oldest first), the interactions linked
    to it (its source first) and the states its kind may be in, in workflow order."""

    record: ServiceRecord
    notes: list[RecordNote]
    interactions: list[str]
    states: list[str]


class RecordQueryParams(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    scope: Literal["mine", "groups", "all"] = "mine"
    kind: RecordKind | None = None
    state: Name | None = None
    assignee: Name | None = None
    group: Name | None = None
    q: Annotated[str, Meta(max_length=200)] | None = None
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    offset: Seq = 0


class RecordListView(Struct, frozen=True, kw_only=True):
    """Newest first. `next_offset` is the `offset` of the next page, or null on the last."""

    records: list[ServiceRecord]
    next_offset: int | None


RECORD_MODELS = (RecordPatch, RecordNotePost, RecordLinkPost, RecordDetailView, RecordListView)


def _record_actor(principal: Principal) -> Actor:
    sees_all = _sees_everything(principal)
    if principal.agent is None and not sees_all:
        raise ApiError(403, "forbidden", "integrations need role supervisor to work records")
    return Actor(
        agent=principal.agent, sees_all=sees_all, name=principal.agent or principal.token_id
    )


def _record_error(e: InboxError) -> ApiError:
    status = {
        "invalid_request": 400,
        "bad_state": 422,
        "unknown_agent": 422,
        "unknown_group": 422,
        "too_many_links": 422,
    }.get(e.code)
    return ApiError(status, e.code, e.message) if status else _inbox_error(e)


async def _worked(
    request: web.Request,
    work: Callable[[Cases, str], Awaitable[RecordDetail]],
    status: int = 200,
) -> web.Response:
    """Run `work` on the record the path names; answer with the record as it is now."""
    try:
        detail = await work(request.app[HOST].inbox.cases, request.match_info["number"])
    except InboxError as e:
        raise _record_error(e) from e
    view = RecordDetailView(
        record=detail.record,
        notes=detail.notes,
        interactions=detail.interactions,
        states=detail.states,
    )
    return _json(view, status)


async def get_record(request: web.Request) -> web.Response:
    actor = _record_actor(await _principal(request))
    return await _worked(request, lambda cases, number: cases.detail(actor, number))


async def patch_record(request: web.Request) -> web.Response:
    actor = _record_actor(await _principal(request))
    body = await _body(request, RecordPatch)
    changes = {f: v for f in body.__struct_fields__ if (v := getattr(body, f)) is not None}
    return await _worked(request, lambda cases, number: cases.update(actor, number, changes))


async def post_record_note(request: web.Request) -> web.Response:
    actor = _record_actor(await _principal(request))
    body = await _body(request, RecordNotePost)
    return await _worked(
        request, lambda cases, number: cases.add_note(actor, number, body.body), 201
    )


async def post_record_link(request: web.Request) -> web.Response:
    actor = _record_actor(await _principal(request))
    body = await _body(request, RecordLinkPost)
    return await _worked(
        request, lambda cases, number: cases.link(actor, number, body.interaction), 201
    )


async def list_records(request: web.Request) -> web.Response:
    actor = _record_actor(await _principal(request))
    try:
        params = msgspec.convert(dict(request.query), RecordQueryParams, strict=False)
    except msgspec.ValidationError as e:
        raise _invalid(e) from e
    found = await request.app[HOST].inbox.cases.list_records(
        actor,
        params.scope,
        kind=params.kind,
        state=params.state,
        assignee=params.assignee,
        group=params.group,
        text=params.q,
        limit=params.limit,
        offset=params.offset,
    )
    more = len(found) == params.limit
    return _json(
        RecordListView(records=found, next_offset=params.offset + params.limit if more else None)
    )


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


def setup(
    app: web.Application, openapi_parts: Iterable[tuple[dict[str, Any], dict[str, Any]]] = ()
) -> None:
    """Add the API's routes and middleware (`openapi_parts`: other families' paths for the
    document); calling it again on the same app does nothing."""
    if LIMITS in app:
        return
    app[LIMITS] = RateLimits()
    app[OPENAPI] = _encoder.encode(
        openapi.document(
            (*MODELS, *RECORD_MODELS),
            prefix=PREFIX,
            max_body_bytes=MAX_BODY_BYTES,
            token_rate=(TOKEN_RATE, TOKEN_BURST),
            address_rate=(ADDRESS_RATE, ADDRESS_BURST),
            parts=openapi_parts,
        )
    )
    app.middlewares.append(_middleware)
    app.router.add_post(PREFIX + "/items", create_item)
    app.router.add_post(PREFIX + "/interactions/{number}/messages", post_message)
    app.router.add_get(PREFIX + "/interactions/{number}", get_interaction)
    app.router.add_get(PREFIX + "/items/{item}/audit", get_item_audit)
    app.router.add_get(PREFIX + "/queues", list_queues)
    app.router.add_get(PREFIX + "/queues/{queue}/minutes", queue_minutes)
    app.router.add_get(PREFIX + "/records", list_records)
    app.router.add_get(PREFIX + "/records/{number}", get_record)
    app.router.add_patch(PREFIX + "/records/{number}", patch_record)
    app.router.add_post(PREFIX + "/records/{number}/notes", post_record_note)
    app.router.add_post(PREFIX + "/records/{number}/links", post_record_link)
    app.router.add_get(PREFIX + "/openapi.json", openapi_json)
