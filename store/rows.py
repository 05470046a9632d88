"""How records become rows and rows records, the same in both backends: the record kept whole
as JSON next to the columns a query needs, and the columns of logins and tokens."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, TypeVar

import msgspec

from core.model import AgentStatus, AuditEntry, Offer, OfferState, Role, ServiceRecord, WorkItem
from store.base import ApiToken, RecordQuery, SessionRecord

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


RECORD_COLUMNS = "state, assignee, assignment_group, search_text, version"


def record_row(record: ServiceRecord) -> tuple[Any, ...]:
    """The values of RECORD_COLUMNS and then data. search_text is the short description as
    list_records' `text` matches it: lower case by Python's rules (SQLite's lower() knows only
    ASCII), without NULs (PostgreSQL's text cannot hold one)."""
    search = record.short_description.replace("\x00", "").lower()
    return (
        record.state,
        record.assignee,
        record.assignment_group,
        search,
        record.version,
        dump(record),
    )


def records_query(q: RecordQuery, dialect: Literal["sqlite", "postgres"]) -> tuple[str, list[Any]]:
    """SQL for list_records, ending in LIMIT and OFFSET placeholders, and the parameters
    before those two."""
    params: list[Any] = []
    mark = "?" if dialect == "sqlite" else "$"  # numbered either way: ?1 is SQLite's $1

    def p(value: Any) -> str:
        params.append(value)
        return f"{mark}{len(params)}"

    def among(column: str, values: tuple[str, ...]) -> str:
        if dialect == "postgres":
            return f"{column} = ANY({p(list(values))}::text[])"
        return f"{column} IN ({', '.join(p(v) for v in values)})" if values else "0"

    where: list[str] = []
    if q.kind is not None:
        where.append(f"r.kind = {p(q.kind.value)}")
    if q.state is not None:
        where.append(f"r.state = {p(q.state)}")
    if q.assignee is not None:
        where.append(f"r.assignee = {p(q.assignee)}")
    if q.groups is not None:
        where.append(among("r.assignment_group", q.groups))
    if q.text:
        found = "instr" if dialect == "sqlite" else "strpos"
        where.append(f"{found}(r.search_text, {p(q.text.replace(chr(0), '').lower())}) > 0")
    if q.reader is not None:
        agent = p(q.reader)
        where.append(
            f"(r.assignee = {agent} OR r.created_by = {agent} "
            f"OR {among('r.assignment_group', q.reader_groups)} "
            "OR EXISTS (SELECT 1 FROM record_links l JOIN participants pa "
            "ON pa.interaction = l.interaction WHERE l.record = r.number "
            f"AND pa.agent = {agent}))"
        )
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    n = len(params)
    return (
        f"SELECT r.data FROM service_records r {clause}"
        f"ORDER BY r.created_at DESC, r.number DESC LIMIT {mark}{n + 1} OFFSET {mark}{n + 2}",
        params,
    )
