"""How records become rows and rows records, the same in both backends: the record kept whole
as JSON next to the columns a query needs, and the columns of logins and tokens."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec

from core.model import AgentStatus, AuditEntry, Offer, OfferState, Role, WorkItem
from store.base import ApiToken, SessionRecord

S = TypeVar("S", bound=msgspec.Struct)


def dump(record: msgspec.Struct) -> str:
    return msgspec.json.encode(record).decode()


_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {}


def load(cls: type[S], data: str) -> S:
    # A decoder per record type, made once: a restart decodes every open conversation, and
    # msgspec.json.decode(data, type=cls) looks the type up again on every call.
    decoder = _DECODERS.get(cls)
    if decoder is None:
        decoder = _DECODERS[cls] = msgspec.json.Decoder(cls)
    return decoder.decode(data)


def item_rows(items: Iterable[WorkItem]) -> list[tuple[Any, ...]]:
    return [(i.id, i.state.value, dump(i)) for i in items]


def offer_rows(offers: Iterable[Offer]) -> list[tuple[Any, ...]]:
    # Offers leaving `pending` first: ending an item's offer and making its next one in the
    # same call must not trip the one-pending-offer-per-item index.
    ordered = sorted(offers, key=lambda o: o.state == OfferState.PENDING)
    return [(o.id, o.item, o.state.value, dump(o)) for o in ordered]


def status_rows(statuses: Iterable[AgentStatus]) -> list[tuple[Any, ...]]:
    return [(s.agent, dump(s)) for s in statuses]


def audit_rows(entries: Iterable[AuditEntry]) -> list[tuple[Any, ...]]:
    return [(e.item, dump(e)) for e in entries]


SESSION_COLUMNS = "token_digest, agent, role, created_at, expires_at, revoked_at"
API_TOKEN_COLUMNS = (
    "id, token_digest, name, agent, role, created_at, expires_at, revoked_at, channels"
)


def session_row(row: Any) -> SessionRecord:
    digest, agent, role, created_at, expires_at, revoked_at = row
    return SessionRecord(
        token_digest=digest,
        agent=agent,
        role=Role(role),
        created_at=created_at,
        expires_at=expires_at,
        revoked_at=revoked_at,
    )


def api_token_row(row: Any) -> ApiToken:
    token_id, digest, name, agent, role, created_at, expires_at, revoked_at, channels = row
    return ApiToken(
        id=token_id,
        token_digest=digest,
        name=name,
        agent=agent,
        role=Role(role),
        created_at=created_at,
        expires_at=expires_at,
        revoked_at=revoked_at,
        channels=None if channels is None else tuple(msgspec.json.decode(channels)),
    )
