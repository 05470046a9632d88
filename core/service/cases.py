"""Cases and incidents worked after they are raised: read, listed, changed, noted, linked.

Who may do what, as core/service/access.py does for interactions: supervisors and admins read
and change every record; an agent reads and changes the records assigned to them or to one of
their groups, the ones they created, and the ones linked to an interaction they took part in.
Anything else is `not_found`, exactly as a number that does not exist, so a number never
confirms that a record exists. The same rules serve the agent protocol and the REST API: both
ask with an `Actor`.

A change is stored first (a save from an older read is refused by the store and redone on the
newer record), then every logged-in console that may read the record hears a `RecordEvent`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import replace as narrowed

from msgspec.structs import replace

from core.config import HostConfig
from core.model import RecordKind, RecordNote, ServiceRecord
from core.protocol import (
    AddRecordNote,
    GetRecord,
    LinkRecord,
    ListRecords,
    RecordEvent,
    RecordList,
    RecordView,
    ServerFrame,
    UpdateRecord,
)
from core.service.access import Access
from core.service.errors import InboxError
from core.service.floor import Floor
from core.service.sessions import AgentSession
from store.base import RecordQuery, Store, StoreConflict

# Interactions linked to one record, and work notes shown with it: bounded reads.
MAX_LINKS = 100
NOTES_SHOWN = 200
# Saves refused because another landed first, redone on the newer record before giving up.
SAVE_ATTEMPTS = 5


@dataclass(frozen=True)
class Actor:
    """Who asks: `agent` (None for an integration's token), whether they see everything
    (supervisors, admins), and the name their changes are written under."""

    agent: str | None
    sees_all: bool
    name: str


# What a change may set; "" for assignee or assignment_group clears it.
CHANGEABLE = (
    "short_description",
    "description",
    "priority",
    "state",
    "assignee",
    "assignment_group",
)


@dataclass(frozen=True)
class RecordDetail:
    record: ServiceRecord
    notes: list[RecordNote]
    interactions: list[str]
    states: list[str]  # its kind's, in workflow order: what a console offers to move it to


@dataclass
class Cases:
    config: HostConfig
    access: Access
    floor: Floor
    store: Store
    clock: Callable[[], float]

    # ------------------------------------------------------------------ agent commands

    async def get_command(self, session: AgentSession, frame: GetRecord) -> ServerFrame:
        return _view(frame.ref, await self.detail(actor_of(session), frame.number))

    async def list_command(self, session: AgentSession, frame: ListRecords) -> ServerFrame:
        found = await self.list_records(
            actor_of(session),
            frame.scope,
            kind=frame.kind,
            state=frame.state,
            assignee=frame.assignee,
            group=frame.group,
            text=frame.text,
            limit=frame.limit,
            offset=frame.offset,
        )
        return RecordList(ref=frame.ref, records=found)

    async def update_command(self, session: AgentSession, frame: UpdateRecord) -> ServerFrame:
        changes = {f: v for f in CHANGEABLE if (v := getattr(frame, f)) is not None}
        detail = await self.update(actor_of(session), frame.number, changes)
        return _view(frame.ref, detail)

    async def note_command(self, session: AgentSession, frame: AddRecordNote) -> ServerFrame:
        return _view(frame.ref, await self.add_note(actor_of(session), frame.number, frame.body))

    async def link_command(self, session: AgentSession, frame: LinkRecord) -> ServerFrame:
        detail = await self.link(actor_of(session), frame.number, frame.interaction)
        return _view(frame.ref, detail)

    # ------------------------------------------------------------------ who may read

    def groups_of(self, agent: str | None) -> tuple[str, ...]:
        found = self.access.routing.router.agents.get(agent or "")
        return found.groups if found is not None else ()

    async def _participants(self, number: str) -> set[str]:
        """Every agent who took part in an interaction linked to the record."""
        agents: set[str] = set()
        for interaction in (await self.store.record_links(number))[:MAX_LINKS]:
            record = await self.access.visible_record(None, True, interaction)
            if record is not None:
                agents.update(p.agent for p in record.participants)
        return agents

    def _may_read(self, agent: str, record: ServiceRecord, participants: set[str]) -> bool:
        return (
            agent in (record.assignee, record.created_by)
            or (
                record.assignment_group is not None
                and record.assignment_group in self.groups_of(agent)
            )
            or agent in participants
        )

    async def readable(self, actor: Actor, number: str) -> ServiceRecord:
        record = await self.store.get_record(number)
        if record is not None and (
            actor.sees_all
            or (
                actor.agent is not None
                and self._may_read(actor.agent, record, await self._participants(number))
            )
        ):
            return record
        raise InboxError("not_found", f"no case or incident {number} visible to you")

    # ------------------------------------------------------------------ reads

    async def detail(self, actor: Actor, number: str) -> RecordDetail:
        record = await self.readable(actor, number)
        return await self._detail(record)

    async def _detail(self, record: ServiceRecord) -> RecordDetail:
        return RecordDetail(
            record=record,
            notes=await self.store.list_record_notes(record.number, NOTES_SHOWN),
            interactions=(await self.store.record_links(record.number))[:MAX_LINKS],
            states=list(self.config.records.states_of(record.kind)),
        )

    async def list_records(
        self,
        actor: Actor,
        scope: str,
        *,
        kind: RecordKind | None = None,
        state: str | None = None,
        assignee: str | None = None,
        group: str | None = None,
        text: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[ServiceRecord]:
        """`scope` mine: assigned to the actor; groups: to one of their groups; all: what
        they may read (everything, for supervisors). The other arguments narrow it further."""
        agent = actor.agent
        query = RecordQuery(
            kind=kind,
            state=state,
            assignee=assignee,
            groups=None if group is None else (group,),
            text=text,
        )
        if scope == "mine":
            if agent is None or assignee not in (None, agent):
                return []
            query = narrowed(query, assignee=agent)
        elif scope == "groups":
            mine = self.groups_of(agent)
            query = narrowed(
                query, groups=mine if group is None else (group,) if group in mine else ()
            )
        if not actor.sees_all:
            if agent is None:
                return []
            query = narrowed(query, reader=agent, reader_groups=self.groups_of(agent))
        return await self.store.list_records(query, limit, offset)

    # ------------------------------------------------------------------ changes

    def _check(self, record: ServiceRecord, changes: Mapping[str, object]) -> ServiceRecord:
        fields = {f: v for f, v in changes.items() if f in CHANGEABLE}
        if not fields:
            raise InboxError("invalid_request", "nothing to change: name at least one field")
        states = self.config.records.states_of(record.kind)
        state = fields.get("state")
        if state is not None and state not in states:
            raise InboxError(
                "bad_state",
                f"{state!r} is not a state of {record.kind} records: one of {', '.join(states)}",
            )
        if fields.get("short_description") == "":
            raise InboxError("invalid_request", "the short description must not be empty")
        assignee = fields.get("assignee")
        if assignee is not None:
            if assignee == "":
                fields["assignee"] = None
            elif assignee not in self.access.routing.router.agents:
                raise InboxError("unknown_agent", f"no agent {assignee!r}")
        group = fields.get("assignment_group")
        if group is not None:
            if group == "":
                fields["assignment_group"] = None
            elif group not in {g.name for g in self.config.groups}:
                raise InboxError("unknown_group", f"no group {group!r}")
        return replace(record, **fields)

    async def update(
        self, actor: Actor, number: str, changes: Mapping[str, object]
    ) -> RecordDetail:
        """Set the fields `changes` names (of CHANGEABLE; others are ignored)."""
        record = before = await self.readable(actor, number)
        for _ in range(SAVE_ATTEMPTS):
            changed = replace(
                self._check(record, changes), updated_at=self.clock(), updated_by=actor.name
            )
            try:
                saved = await self.store.save_record(changed)
            except StoreConflict:
                record = await self.readable(actor, number)
                continue
            await self._announce(saved, before=before)
            return await self._detail(saved)
        raise InboxError("conflict", f"{number} keeps changing under you; try again")

    async def add_note(self, actor: Actor, number: str, body: str) -> RecordDetail:
        if not body.strip():
            raise InboxError("invalid_request", "a work note needs some text")
        record = await self.readable(actor, number)
        note = await self.store.add_record_note(number, actor.name, body, self.clock())
        await self._announce(record, note)
        return await self._detail(record)

    async def link(self, actor: Actor, number: str, interaction: str) -> RecordDetail:
        record = await self.readable(actor, number)
        if await self.access.visible_record(actor.agent, actor.sees_all, interaction) is None:
            raise InboxError("not_found", f"no interaction {interaction} visible to you")
        if len(await self.store.record_links(number)) >= MAX_LINKS:
            raise InboxError("too_many_links", f"{number} has {MAX_LINKS} interactions already")
        await self.store.link_record(number, interaction, self.clock())
        await self._announce(record)
        return await self._detail(record)

    async def _announce(
        self,
        record: ServiceRecord,
        note: RecordNote | None = None,
        before: ServiceRecord | None = None,
    ) -> None:
        """Every console that may read the record hears of it, and every one that could
        before the change: the agent it was just taken from sees it leave their list."""
        participants = await self._participants(record.number)
        event = RecordEvent(record=record, note=note)
        for agent, sessions in list(self.floor.sessions.items()):
            may_read = self._may_read(agent, record, participants) or (
                before is not None and self._may_read(agent, before, participants)
            )
            for session in sessions:
                if may_read or session.supervisor:
                    session.push(event)


def actor_of(session: AgentSession) -> Actor:
    return Actor(agent=session.agent, sees_all=session.supervisor, name=session.agent)


def _view(ref: int, detail: RecordDetail) -> RecordView:
    return RecordView(
        ref=ref,
        record=detail.record,
        notes=detail.notes,
        interactions=detail.interactions,
        states=detail.states,
    )
