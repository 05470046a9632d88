"""The inbox: agents' commands and customers' messages in, events out.

Routing steps arrive from RoutingService already committed, with the interaction records
that followed their work items in the same transaction; this layer holds the open records,
stores messages (acknowledged only after commit), decides who may see and change what
(invariant 9), and fans events out to agent sessions and customer watchers. It never touches a
socket: the host attaches transports to sessions and watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from msgspec.structs import replace

from core.config import HostConfig
from core.model import (
    OFFLINE,
    Agent,
    Attachment,
    ChannelMode,
    InteractionRecord,
    InteractionState,
    ItemState,
    Message,
    OfferKind,
    OfferState,
    Participant,
    RecordKind,
    Role,
    SenderKind,
    WorkItem,
    render_template,
)
from core.protocol import (
    AcceptOffer,
    AddWorkNote,
    AgentList,
    AgentLoad,
    AgentView,
    AnswerInvitation,
    AnyClientFrame,
    Archive,
    AttachFile,
    AttachmentAck,
    CloseRecord,
    CreateRecord,
    EndChat,
    Event,
    GetPrefill,
    GetTranscript,
    InteractionEvent,
    InteractionList,
    InvitationDeclined,
    InvitationEvent,
    InviteAgent,
    ListAgents,
    ListInteractions,
    ListOnlineAgents,
    MarkRead,
    MessageAck,
    MessageEvent,
    OfferClosed,
    OfferEvent,
    OfferView,
    Ok,
    OngoingCard,
    OngoingEvent,
    OnlineAgents,
    Ping,
    Prefill,
    PresenceEvent,
    QueueStats,
    QueueStatsEvent,
    ReadEvent,
    RecordCreated,
    RejectOffer,
    SendMessage,
    ServerFrame,
    SetPresence,
    Snapshot,
    SubscribeQueueStats,
    TemplateText,
    Transcript,
    TransferDeclined,
    TransferToAgent,
    TransferToQueue,
    Typing,
    TypingEvent,
    UseTemplate,
)
from core.routing import events as ev
from core.routing.decisions import (
    ItemChanged,
    ItemUnroutable,
    OfferEnded,
    OfferMade,
    PresenceSet,
)
from core.routing.engine import RoutingError
from core.routing.records import RecordChange, current, owner_of
from core.service.routing import RoutingService, Step
from core.service.sessions import AgentSession, Kick
from store.base import IdempotencyKey, Store, StoreStats

log = logging.getLogger("inbox_tui.inbox")

RESUME_WINDOW = 120.0  # seconds a detached session waits for its console before logging out
UNREAD_CAP = 50  # like the peers, count at most this many unread messages per conversation
PREFILL_LINES = 40
STATS_SLICES = 10

CustomerWatcher = Callable[[Event], None]
# Item changes announced although the record stays as it is.
_ANNOUNCED = frozenset({"notice", "on_hold", "resumed", "awaiting_capacity"})


class InboxError(Exception):
    """A refused command; `code` is stable for the wire and the REST API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Conversation:
    """What the inbox keeps in memory about an open interaction besides its record."""

    record: InteractionRecord
    item: str
    customer_seqs: list[int] = field(default_factory=list)
    last_update: float = 0.0
    preview: str = ""
    # Held while what follows a record change is announced and written (pushes, system
    # lines), so one conversation's announcements keep the order of its changes.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Inbox:
    def __init__(
        self,
        config: HostConfig,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self._timing_observers: list[Callable[[str, float], None]] = []
        self.routing = RoutingService(
            config.routing_config(), store, clock=clock, records=self, observe=self._timed
        )
        self.routing.listeners.append(self._on_step)
        self.routing.detached_agents = lambda: [
            a.id for a in self.routing.config.agents if not self.attached(a.id)
        ]
        # Set at start: since then no console of the agents present before has come back.
        self._absent_since: float | None = None
        self.channels = {c.name: c for c in config.channels}
        self.agent_names = {a.id: a.display_name or a.id for a in config.agents}
        self.conversations: dict[str, Conversation] = {}
        # agent -> the open conversations they are in now, in the order they joined: the
        # tray and a login's snapshot look only at these, never at the whole floor's.
        self.open_of_agent: dict[str, dict[str, None]] = {}
        self.sessions: dict[str, list[AgentSession]] = {}
        self.supervisors: set[str] = set()  # agents logged in with a supervisor's session
        self.watchers: dict[str, set[CustomerWatcher]] = {}
        self.read_marks: dict[tuple[str, str], int] = {}
        self.invitations: dict[str, dict[str, str]] = {}
        self._last_stats: dict[str, QueueStats] = {}
        # (scope, Idempotency-Key) -> [lock, requests using it]: only while requests are.
        self._intake: dict[tuple[str, str], list[Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers: dict[type, Callable[[AgentSession, AnyClientFrame], Awaitable[ServerFrame]]]
        self._handlers = {
            Ping: self._ping,
            SetPresence: self._set_presence,
            AcceptOffer: self._accept,
            RejectOffer: self._reject,
            SendMessage: self._send_message,
            Typing: self._typing,
            MarkRead: self._mark_read,
            AttachFile: self._attach,
            UseTemplate: self._use_template,
            InviteAgent: self._invite,
            AnswerInvitation: self._answer_invitation,
            TransferToAgent: self._transfer_to_agent,
            TransferToQueue: self._transfer_to_queue,
            EndChat: self._end_chat,
            CloseRecord: self._close_record,
            Archive: self._archive,
            AddWorkNote: self._work_note,
            GetPrefill: self._prefill,
            CreateRecord: self._create_record,
            SubscribeQueueStats: self._subscribe_stats,
            GetTranscript: self._transcript,
            ListInteractions: self._list_interactions,
            ListAgents: self._list_agents,
            ListOnlineAgents: self._list_online,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # Only the ongoing tray (asynchronous channels) shows unread counts and previews.
        tray = [c.name for c in self.config.channels if c.mode == ChannelMode.ASYNC]
        for record, recent in await self.store.load_open_conversations(UNREAD_CAP, tray):
            conv = Conversation(record=record, item=record.item, last_update=record.opened_at)
            for m in recent:
                self._note_message(conv, m)
            self.conversations[record.number] = conv
            self._file(record.number, current(record), joined=True)
        await self.routing.start()
        self._absent_since = self.clock()
        self._tasks = [
            asyncio.create_task(self.routing.run_timers()),
            asyncio.create_task(self._stats_loop()),
            asyncio.create_task(self._reaper()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.routing.drain()

    # ------------------------------------------------------------------ observing

    def observe_steps(self, observer: Callable[[Step], None]) -> Callable[[], None]:
        """Have `observer` hear every routing step once it is committed, in commit order,
        with its decisions and the records they changed (metrics, the demo's log). It runs
        inside the step's announcement: it must not block, and what it raises fails the
        step for its submitter. Returns the function that stops it."""
        self.routing.listeners.append(observer)
        return lambda: _discard(self.routing.listeners, observer)

    def observe_timings(self, observer: Callable[[str, float], None]) -> Callable[[], None]:
        """Have `observer` hear (name, seconds) of "routing_step" (a step's decision and
        commit) and "message" (a message's receipt to its fan-out, commit included).
        Returns the function that stops it."""
        self._timing_observers.append(observer)
        return lambda: _discard(self._timing_observers, observer)

    def _timed(self, name: str, seconds: float) -> None:
        for observer in self._timing_observers:
            observer(name, seconds)

    # ------------------------------------------------------------------ reads for the host

    @property
    def store_stats(self) -> StoreStats:
        """The store's write-path counters; `failing` says why the latest commit failed."""
        return self.store.stats

    def open_item_count(self) -> int:
        """Work items queued, offered, accepted or in wrap-up."""
        return len(self.routing.router.items)

    def queues_of(self, agent: str) -> list[str]:
        return self.routing.router.queues_of(agent)

    async def work_item(self, item_id: str) -> WorkItem | None:
        """The item as routing has it while open, else as stored."""
        item = self.routing.router.items.get(item_id)
        return item if item is not None else await self.store.get_item(item_id)

    async def messages(self, number: str, after_seq: int = 0, limit: int = 500) -> list[Message]:
        """A page of the interaction's transcript; the caller has checked visible_record."""
        return await self.store.list_messages(number, after_seq, limit)

    async def attachments(self, number: str) -> list[Attachment]:
        return await self.store.list_attachments(number)

    # ------------------------------------------------------------------ sessions

    def open_session(
        self, agent: str, role: Role, token_digest: str, expires_at: float
    ) -> AgentSession:
        session = AgentSession(
            agent=agent, role=role, token_digest=token_digest, expires_at=expires_at
        )
        self.sessions.setdefault(agent, []).append(session)
        if session.supervisor:
            self.supervisors.add(agent)
        # Opened by its console (or by a caller acting as one): attached until it detaches.
        self._consoles_changed(agent)
        return session

    def attach(self, session: AgentSession, kick: Callable[[Kick], None]) -> asyncio.Queue[Event]:
        """A socket takes over the session (see AgentSession.attach)."""
        queue = session.attach(kick)
        self._consoles_changed(session.agent)
        return queue

    def detach(self, session: AgentSession, queue: asyncio.Queue[Event], now: float) -> None:
        """The session's socket is gone; the session waits RESUME_WINDOW for a console."""
        session.detach(queue, now)
        self._consoles_changed(session.agent)

    def attached(self, agent: str) -> bool:
        """Whether a console of the agent is attached to one of their live sessions."""
        return any(s.detached_at is None and not s.closed for s in self.sessions.get(agent, ()))

    def _consoles_changed(self, agent: str) -> None:
        """Tell routing when the agent's first console arrives or their last one leaves: offers
        go only to someone at a console, and a customer must not wait out an offer timeout
        for an agent whose console is gone (a second console still open keeps them on)."""
        router = self.routing.router
        if agent not in router.agents:
            return
        attached = self.attached(agent)
        if attached == (agent not in router.detached):
            return
        with contextlib.suppress(RoutingError):
            self.routing.post(
                ev.AgentConnected(agent=agent) if attached else ev.AgentDisconnected(agent=agent)
            )

    def find_session(self, token_digest: str) -> AgentSession | None:
        for sessions in self.sessions.values():
            for s in sessions:
                if s.token_digest == token_digest:
                    return s
        return None

    async def close_session(self, session: AgentSession) -> None:
        """Explicit logout, an expired session, or a console gone longer than the resume
        window. A socket still attached is dropped: its commands must not outlive the
        session (security.md)."""
        session.closed = True
        if session.kick is not None:
            session.kick(Kick.ENDED)
        sessions = self.sessions.get(session.agent, [])
        if session in sessions:
            sessions.remove(session)
        self._consoles_changed(session.agent)
        if not sessions:
            self.sessions.pop(session.agent, None)
            self.supervisors.discard(session.agent)
            with contextlib.suppress(RoutingError):
                await self.routing.submit(ev.AgentLoggedOut(agent=session.agent))

    async def update_agent(self, agent: Agent) -> None:
        """An admin added or changed an agent while the host runs: routing serves it at once,
        and a disabled agent's sessions end (an attached console is closed with 4002)."""
        self.agent_names[agent.id] = agent.display_name or agent.id
        await self.routing.update_agent(agent)
        self._consoles_changed(agent.id)  # a new agent has no console yet
        if agent.disabled:
            await self.end_sessions(agent.id)

    async def end_sessions(self, agent: str) -> int:
        """End every live session of `agent` (disabled, or its password changed); how many."""
        sessions = list(self.sessions.get(agent, ()))
        for session in sessions:
            await self.close_session(session)
        return len(sessions)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            await self.reap(self.clock())

    async def reap(self, now: float) -> None:
        """Close the sessions whose console stayed away longer than RESUME_WINDOW, or that
        expired. After a host restart no session exists, so the agents still present from
        before get the same window to come back before they are logged out (Offline)."""
        for sessions in list(self.sessions.values()):
            for s in list(sessions):
                gone = s.detached_at is not None and now - s.detached_at > RESUME_WINDOW
                if gone or now > s.expires_at:
                    await self.close_session(s)
        if self._absent_since is not None and now - self._absent_since > RESUME_WINDOW:
            self._absent_since = None
            router = self.routing.router
            for agent in sorted(router.agents):
                if router.status[agent].presence != OFFLINE and not self.sessions.get(agent):
                    with contextlib.suppress(RoutingError):
                        await self.routing.submit(ev.AgentLoggedOut(agent=agent))

    def _push(self, agent: str, event: Event) -> None:
        for session in self.sessions.get(agent, ()):
            session.push(event)

    def _push_participants(self, record: InteractionRecord, event: Event) -> None:
        for agent in current(record):
            self._push(agent, event)

    def _push_customer(self, number: str, event: Event) -> None:
        for watcher in list(self.watchers.get(number, ())):
            watcher(event)

    def watch(self, number: str, watcher: CustomerWatcher) -> Callable[[], None]:
        self.watchers.setdefault(number, set()).add(watcher)

        def unwatch() -> None:
            watchers = self.watchers.get(number)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self.watchers[number]

        return unwatch

    # ------------------------------------------------------------------ views

    def agent_view(self, agent: str) -> AgentView:
        router = self.routing.router
        a = router.agents[agent]
        return AgentView(
            id=agent,
            display_name=a.display_name or agent,
            role=a.role,
            presence=router.status[agent].presence,
            queues=router.queues_of(agent),
        )

    def _my_queues(self, session: AgentSession) -> list[str]:
        router = self.routing.router
        return list(router.queues) if session.supervisor else router.queues_of(session.agent)

    def snapshot(self, session: AgentSession) -> Snapshot:
        router = self.routing.router
        offers = [
            self._offer_view(o, router.items[o.item])
            for o in router.offers.values()
            if o.agent == session.agent
        ]
        if session.supervisor:
            mine = [
                c.record
                for c in self.conversations.values()
                if session.agent in current(c.record) or c.record.state != InteractionState.NEW
            ]
        else:
            mine = [self.conversations[n].record for n in self.open_of_agent.get(session.agent, ())]
        queues = self._my_queues(session)
        known = {session.agent} | {p.agent for r in mine for p in r.participants}
        templates = [
            t
            for t in self.config.templates
            if t.scope == "global"
            or t.scope == f"agent:{session.agent}"
            or t.scope.removeprefix("queue:") in queues
        ]
        return Snapshot(
            me=self.agent_view(session.agent),
            presences=list(self.config.presences),
            async_channels=[c.name for c in self.config.channels if c.mode == ChannelMode.ASYNC],
            offers=offers,
            interactions=mine,
            ongoing=self._ongoing(session.agent),
            queue_stats=[s for q, s in self.latest_queue_stats().items() if q in queues],
            # Everyone for supervisors; an agent gets the colleagues in their conversations
            # (names to show) and asks for the rest when needed: a floor logging in would
            # otherwise cost O(agents²).
            agents=[
                self.agent_view(a)
                for a in sorted(router.agents)
                if session.supervisor or a in known
            ],
            templates=templates,
            queues=queues,
        )

    def _offer_view(self, offer, item: WorkItem) -> OfferView:  # type: ignore[no-untyped-def]
        conv = self.conversations.get(item.interaction or "")
        return OfferView(
            offer=offer,
            item=item,
            customer_name=conv.record.customer_name if conv else "",
            interaction=item.interaction,
        )

    # ------------------------------------------------------------------ agent commands

    async def handle(self, session: AgentSession, frame: AnyClientFrame) -> ServerFrame:
        handler = self._handlers.get(type(frame))
        if handler is None:
            raise InboxError("bad_frame", f"{type(frame).__name__} is not a command")
        try:
            return await handler(session, frame)
        except RoutingError as e:
            raise InboxError(e.code, e.message) from e

    async def _ping(self, session: AgentSession, frame: Ping) -> ServerFrame:
        return Ok(ref=frame.ref)

    async def _set_presence(self, session: AgentSession, frame: SetPresence) -> ServerFrame:
        await self.routing.submit(ev.PresenceChanged(agent=session.agent, presence=frame.presence))
        return Ok(ref=frame.ref)

    def _my_offer(self, session: AgentSession, offer_id: str) -> None:
        offer = self.routing.router.offers.get(offer_id)
        if offer is None or offer.agent != session.agent:
            raise InboxError(
                "offer_not_pending",
                f"offer {offer_id} is not pending for you (answered, expired or not yours)",
            )

    async def _accept(self, session: AgentSession, frame: AcceptOffer) -> ServerFrame:
        self._my_offer(session, frame.offer)
        await self.routing.submit(ev.OfferAccepted(offer=frame.offer))
        return Ok(ref=frame.ref)

    async def _reject(self, session: AgentSession, frame: RejectOffer) -> ServerFrame:
        self._my_offer(session, frame.offer)
        await self.routing.submit(ev.OfferRejected(offer=frame.offer, reason=frame.reason))
        return Ok(ref=frame.ref)

    async def visible_record(
        self, agent: str | None, sees_all: bool, number: str
    ) -> InteractionRecord | None:
        """The interaction if the caller may read it (invariant 9): a participant, now or
        before, or someone who sees everything (supervisors). One rule for every transport."""
        conv = self.conversations.get(number)
        # An open conversation's newest record is here; the store has the closed ones.
        record = conv.record if conv else await self.store.get_interaction(number)
        if record is None:
            return None
        if sees_all or any(p.agent == agent for p in record.participants):
            return record
        return None

    async def _readable(self, session: AgentSession, number: str) -> InteractionRecord:
        record = await self.visible_record(session.agent, session.supervisor, number)
        if record is None:
            raise InboxError("not_found", f"no interaction {number} visible to you")
        return record

    def _writable(self, session: AgentSession, number: str) -> Conversation:
        conv = self.conversations.get(number)
        if conv is None or not (session.agent in current(conv.record) or session.supervisor):
            raise InboxError("not_found", f"no open interaction {number} of yours")
        return conv

    async def _send_message(self, session: AgentSession, frame: SendMessage) -> ServerFrame:
        conv = self._writable(session, frame.interaction)
        message, duplicate = await self.store.append_message(
            conv.record.number,
            SenderKind.AGENT,
            session.agent,
            frame.body,
            frame.client_msg_id,
            self.clock(),
        )
        if not duplicate:
            await self._delivered(conv, message)
            # Replying is what clears "unread": the customer has an answer.
            self._read(conv, session.agent, message.seq, announce=False)
            if session.agent == owner_of(conv.record):
                with contextlib.suppress(RoutingError):
                    await self.routing.submit(ev.AgentReplied(item=conv.item))
        return MessageAck(ref=frame.ref, message=message, duplicate=duplicate)

    async def _delivered(self, conv: Conversation, message: Message) -> None:
        if self._timing_observers:
            self._timed("message", max(0.0, self.clock() - message.created_at))
        self._note_message(conv, message)
        event = MessageEvent(message=message)
        self._push_participants(conv.record, event)
        if message.kind == "message":
            self._push_customer(conv.record.number, event)
        if self.channels[conv.record.channel].mode == ChannelMode.ASYNC:
            for agent in current(conv.record):
                self._push_ongoing(agent)

    def _note_message(self, conv: Conversation, message: Message) -> None:
        conv.last_update = message.created_at
        if message.sender_kind == SenderKind.CUSTOMER:
            conv.customer_seqs.append(message.seq)
            del conv.customer_seqs[:-UNREAD_CAP]
            conv.preview = message.body[:80]

    async def _typing(self, session: AgentSession, frame: Typing) -> ServerFrame:
        conv = self._writable(session, frame.interaction)
        event = TypingEvent(
            interaction=frame.interaction, who=self.agent_names.get(session.agent, session.agent)
        )
        for agent in current(conv.record):
            if agent != session.agent:
                self._push(agent, event)
        self._push_customer(frame.interaction, event)
        return Ok(ref=frame.ref)

    async def _mark_read(self, session: AgentSession, frame: MarkRead) -> ServerFrame:
        conv = self._writable(session, frame.interaction)
        self._read(conv, session.agent, frame.seq)
        return Ok(ref=frame.ref)

    def _read(self, conv: Conversation, agent: str, seq: int, *, announce: bool = True) -> None:
        key = (conv.record.number, agent)
        mark = self.read_marks.get(key, 0)
        if seq <= mark:
            return
        self.read_marks[key] = seq
        # A reply moves the mark past the agent's own line; it is news only if it also passes
        # customer lines that were unread (a read receipt per reply doubled the frames).
        if not announce and not (conv.customer_seqs and conv.customer_seqs[-1] > mark):
            return
        self._push_participants(
            conv.record, ReadEvent(interaction=conv.record.number, reader=agent, read_seq=seq)
        )
        if self.channels[conv.record.channel].mode == ChannelMode.ASYNC:
            self._push_ongoing(agent)

    def _ongoing(self, agent: str) -> list[OngoingCard]:
        cards = []
        for number in self.open_of_agent.get(agent, ()):
            conv = self.conversations[number]
            if self.channels[conv.record.channel].mode != ChannelMode.ASYNC:
                continue
            mark = self.read_marks.get((number, agent), 0)
            cards.append(
                OngoingCard(
                    interaction=number,
                    customer_name=conv.record.customer_name or conv.record.customer,
                    last_update=conv.last_update,
                    unread=sum(1 for s in conv.customer_seqs if s > mark),
                    preview=conv.preview,
                )
            )
        cards.sort(key=lambda c: (-(c.unread > 0), -c.last_update))
        return cards

    def _push_ongoing(self, agent: str) -> None:
        cards = self._ongoing(agent)
        self._push(
            agent,
            OngoingEvent(cards=cards, unread_conversations=sum(1 for c in cards if c.unread)),
        )

    async def _attach(self, session: AgentSession, frame: AttachFile) -> ServerFrame:
        conv = self._writable(session, frame.interaction)
        now = self.clock()
        try:
            attachment = await self.store.put_attachment(
                conv.record.number, frame.name, frame.content_type, frame.data, session.agent, now
            )
        except ValueError as e:
            raise InboxError("too_large", str(e)) from e
        message, duplicate = await self.store.append_message(
            conv.record.number,
            SenderKind.AGENT,
            session.agent,
            f"sent a file: {attachment.name} ({attachment.size} bytes)",
            f"attach-{attachment.sha256[:32]}",
            now,
            attachment=attachment.sha256,
        )
        if not duplicate:
            await self._delivered(conv, message)
        return AttachmentAck(ref=frame.ref, attachment=attachment, message=message)

    async def _use_template(self, session: AgentSession, frame: UseTemplate) -> ServerFrame:
        conv = self._writable(session, frame.interaction)
        record = conv.record
        scopes = ("global", f"queue:{record.queue}", f"agent:{session.agent}")
        found = [
            t for t in self.config.templates if t.shortcut == frame.shortcut and t.scope in scopes
        ]
        if not found:
            raise InboxError("not_found", f"no template {frame.shortcut!r} for this interaction")
        # The most specific scope wins: an agent's own version over the queue's over the global.
        template = max(found, key=lambda t: scopes.index(t.scope))
        fields = {
            "customer.name": record.customer_name or record.customer,
            "customer.contact": record.customer_contact,
            "agent.name": self.agent_names.get(session.agent, session.agent),
            "interaction.number": record.number,
            "queue.name": record.queue or "",
        }
        return TemplateText(ref=frame.ref, text=render_template(template.text, fields))

    async def _system(self, conv: Conversation, text: str, *, note: bool = False) -> None:
        """A system line in the transcript ("Alice joined"), stored like any message."""
        message, duplicate = await self.store.append_message(
            conv.record.number,
            SenderKind.SYSTEM,
            "system",
            text,
            f"sys-{secrets.token_hex(8)}",
            self.clock(),
            kind="work_note" if note else "message",
        )
        if not duplicate:
            await self._delivered(conv, message)

    def open_record(self, number: str) -> InteractionRecord | None:
        conv = self.conversations.get(number)
        return conv.record if conv is not None else None

    def record_committed(self, record: InteractionRecord) -> None:
        """Routing committed a change of an open record (core.service.routing.OpenRecords)."""
        conv = self.conversations.get(record.number)
        if conv is None:
            return
        before = set(current(conv.record))
        conv.record = record
        after = set(current(record))
        self._file(record.number, after - before, joined=True)
        self._file(record.number, before - after, joined=False)

    def _file(self, number: str, agents: Iterable[str], *, joined: bool) -> None:
        for agent in agents:
            if joined:
                self.open_of_agent.setdefault(agent, {})[number] = None
            else:
                numbers = self.open_of_agent.get(agent, {})
                numbers.pop(number, None)
                if not numbers:
                    self.open_of_agent.pop(agent, None)

    async def _invite(self, session: AgentSession, frame: InviteAgent) -> ServerFrame:
        conv = self._writable(session, frame.interaction)
        if frame.agent not in self.routing.router.agents:
            raise InboxError("unknown_agent", f"no agent {frame.agent!r}")
        if frame.agent in current(conv.record):
            raise InboxError("already_participant", f"{frame.agent} is already in this chat")
        if (
            not self.sessions.get(frame.agent)
            or self.routing.router.status[frame.agent].presence == OFFLINE
        ):
            raise InboxError("agent_unavailable", f"{frame.agent} is not online")
        self.invitations.setdefault(conv.record.number, {})[frame.agent] = session.agent
        self._push(frame.agent, InvitationEvent(interaction=conv.record, from_agent=session.agent))
        await self._system(
            conv, f"{self._name(session.agent)} invited {self._name(frame.agent)}", note=True
        )
        return Ok(ref=frame.ref)

    async def _answer_invitation(
        self, session: AgentSession, frame: AnswerInvitation
    ) -> ServerFrame:
        pending = self.invitations.get(frame.interaction, {})
        conv = self.conversations.get(frame.interaction)
        if session.agent not in pending or conv is None:
            raise InboxError("not_invited", f"no invitation to {frame.interaction} for you")
        inviter = pending.pop(session.agent)
        if not frame.accept:
            self._push(
                inviter, InvitationDeclined(interaction=conv.record.number, agent=session.agent)
            )
            await self._system(conv, f"{self._name(session.agent)} declined to join", note=True)
            return Ok(ref=frame.ref)
        joined = Participant(agent=session.agent, role="invited", joined_at=self.clock())
        record = await self.routing.amend(
            conv.record.number, lambda r: replace(r, participants=(*r.participants, joined))
        )
        if record is None:
            raise InboxError("not_invited", f"{frame.interaction} was closed meanwhile")
        self._push(session.agent, InteractionEvent(change="opened", record=record))
        self._push(inviter, InteractionEvent(change="updated", record=record))
        await self._system(conv, f"{self._name(session.agent)} joined")
        return Ok(ref=frame.ref)

    def _name(self, agent: str) -> str:
        return self.agent_names.get(agent, agent)

    def _owned(self, session: AgentSession, number: str) -> Conversation:
        conv = self._writable(session, number)
        if not session.supervisor and owner_of(conv.record) != session.agent:
            raise InboxError("not_owner", "only the agent who owns the chat can do that")
        return conv

    async def _transfer_to_agent(
        self, session: AgentSession, frame: TransferToAgent
    ) -> ServerFrame:
        conv = self._owned(session, frame.interaction)
        await self.routing.submit(ev.TransferToAgent(item=conv.item, to_agent=frame.agent))
        await self._system(
            conv,
            f"{self._name(session.agent)} asked {self._name(frame.agent)} to take over",
            note=True,
        )
        return Ok(ref=frame.ref)

    async def _transfer_to_queue(
        self, session: AgentSession, frame: TransferToQueue
    ) -> ServerFrame:
        conv = self._owned(session, frame.interaction)
        await self.routing.submit(ev.TransferToQueue(item=conv.item, queue=frame.queue))
        return Ok(ref=frame.ref)

    async def _end_chat(self, session: AgentSession, frame: EndChat) -> ServerFrame:
        conv = self._owned(session, frame.interaction)
        await self.routing.submit(ev.ChatEnded(item=conv.item))
        return Ok(ref=frame.ref)

    async def _close_record(self, session: AgentSession, frame: CloseRecord) -> ServerFrame:
        conv = self._owned(session, frame.interaction)
        await self.routing.submit(ev.ItemClosed(item=conv.item))
        return Ok(ref=frame.ref)

    async def _archive(self, session: AgentSession, frame: Archive) -> ServerFrame:
        record = await self._readable(session, frame.interaction)
        if record.state not in (
            InteractionState.CLOSED_COMPLETE,
            InteractionState.CLOSED_ABANDONED,
        ):
            raise InboxError("bad_state", f"{record.number} is {record.state}: close it first")
        archived = replace(record, archived=True)
        await self.store.save_interaction(archived)
        self._push(session.agent, InteractionEvent(change="updated", record=archived))
        return Ok(ref=frame.ref)

    async def _work_note(self, session: AgentSession, frame: AddWorkNote) -> ServerFrame:
        conv = self._writable(session, frame.interaction)
        message, duplicate = await self.store.append_message(
            conv.record.number,
            SenderKind.AGENT,
            session.agent,
            frame.body,
            frame.client_msg_id,
            self.clock(),
            kind="work_note",
        )
        if not duplicate:
            await self._delivered(conv, message)
        return MessageAck(ref=frame.ref, message=message, duplicate=duplicate)

    async def _prefill_text(self, record: InteractionRecord) -> tuple[str, str]:
        messages = await self.store.list_messages(record.number, limit=1000)
        said = [m for m in messages if m.kind == "message" and m.sender_kind != SenderKind.SYSTEM]
        first = next((m.body for m in said if m.sender_kind == SenderKind.CUSTOMER), "")
        short = " ".join(first.split())[:160] or f"Follow-up of {record.number}"
        customer = record.customer_name or "Customer"
        lines = [
            f"{self._name(m.sender) if m.sender_kind == SenderKind.AGENT else customer}: {m.body}"
            for m in said[-PREFILL_LINES:]
        ]
        description = f"From interaction {record.number} ({record.channel}).\n" + "\n".join(lines)
        return short, description[:16_000]

    async def _prefill(self, session: AgentSession, frame: GetPrefill) -> ServerFrame:
        record = await self._readable(session, frame.interaction)
        short, description = await self._prefill_text(record)
        return Prefill(ref=frame.ref, short_description=short, description=description)

    async def _create_record(self, session: AgentSession, frame: CreateRecord) -> ServerFrame:
        record = await self._readable(session, frame.interaction)
        created = await self.store.create_record(
            frame.kind,
            frame.short_description,
            frame.description,
            frame.priority,
            record.number,
            session.agent,
            self.clock(),
        )
        field_name = "case" if frame.kind == RecordKind.CASE else "incident"

        def link(r: InteractionRecord) -> InteractionRecord:
            return replace(r, **{field_name: created.number})

        conv = self.conversations.get(record.number)
        linked = await self.routing.amend(record.number, link) if conv is not None else None
        if conv is None or linked is None:
            # Closed, before or meanwhile: routing writes it no more, the store has the newest.
            linked = link(await self.store.get_interaction(record.number) or record)
            await self.store.save_interaction(linked)
        else:
            await self._system(
                conv, f"{self._name(session.agent)} created {created.number}", note=True
            )
            self._push_participants(linked, InteractionEvent(change="updated", record=linked))
        return RecordCreated(ref=frame.ref, record=created, interaction=linked)

    async def _subscribe_stats(
        self, session: AgentSession, frame: SubscribeQueueStats
    ) -> ServerFrame:
        session.wants_queue_stats = frame.subscribe
        return Ok(ref=frame.ref)

    async def _transcript(self, session: AgentSession, frame: GetTranscript) -> ServerFrame:
        record = await self._readable(session, frame.interaction)
        if frame.newest:
            messages = await self.store.last_messages(record.number, frame.limit)
        else:
            messages = await self.store.list_messages(record.number, frame.after_seq, frame.limit)
        attachments = await self.store.list_attachments(record.number)
        return Transcript(
            ref=frame.ref, interaction=record, messages=messages, attachments=attachments
        )

    async def _list_agents(self, session: AgentSession, frame: ListAgents) -> ServerFrame:
        if not session.supervisor:
            raise InboxError("forbidden", "only supervisors see every agent's load")
        router = self.routing.router
        return AgentList(
            ref=frame.ref,
            agents=[
                AgentLoad(
                    agent=self.agent_view(a),
                    active=router.used(a).total,
                    capacity=router.agents[a].universal_capacity,
                    offers=router.used(a).pending,
                )
                for a in sorted(router.agents)
            ],
        )

    async def _list_online(self, session: AgentSession, frame: ListOnlineAgents) -> ServerFrame:
        router = self.routing.router
        online = [a for a in sorted(router.agents) if router.status[a].presence != OFFLINE]
        return OnlineAgents(ref=frame.ref, agents=[self.agent_view(a) for a in online])

    async def _list_interactions(
        self, session: AgentSession, frame: ListInteractions
    ) -> ServerFrame:
        records = await self.store.list_interactions(
            agent=None if session.supervisor else session.agent,
            archived=frame.archived,
            limit=frame.limit,
            offset=frame.offset,
        )
        return InteractionList(ref=frame.ref, interactions=records)

    # ------------------------------------------------------------------ customers

    async def start_conversation(
        self,
        *,
        channel: str,
        customer: str,
        customer_name: str = "",
        customer_contact: str = "",
        attributes: dict[str, str | int | float | bool] | None = None,
        priority: int = 0,
        created_by: str | None = None,
        idempotency: IdempotencyKey | None = None,
    ) -> InteractionRecord:
        """A customer (widget, REST, webhook) starts a work item; it is routed at once.

        With `idempotency` (REST), the key is committed with the interaction; StoreConflict
        if another request stored it first (use start_conversation_once)."""
        if channel not in self.channels:
            raise InboxError("unknown_channel", f"no service channel {channel!r}")
        now = self.clock()
        record = await self.store.create_interaction(
            item=f"W{secrets.token_hex(6)}",
            channel=channel,
            customer=customer,
            opened_at=now,
            customer_name=customer_name,
            customer_contact=customer_contact,
            created_by=created_by,
            idempotency=idempotency,
        )
        return await self._route_new(record, attributes or {}, priority)

    async def _route_new(
        self,
        record: InteractionRecord,
        attributes: dict[str, str | int | float | bool],
        priority: int,
    ) -> InteractionRecord:
        """Route the work item of a stored interaction whose item is not stored yet."""
        now = self.clock()
        conv = Conversation(record=record, item=record.item, last_update=now)
        self.conversations[record.number] = conv
        item = WorkItem(
            id=record.item,
            channel=record.channel,
            customer=record.customer,
            created_at=record.opened_at,
            attributes=attributes,
            priority=priority,
            interaction=record.number,
        )
        try:
            decisions = await self.routing.submit(ev.ItemArrived(item=item))
        except RoutingError as e:
            self.conversations.pop(record.number, None)
            raise InboxError(e.code, e.message) from e
        unroutable = next((d for d in decisions if isinstance(d, ItemUnroutable)), None)
        if unroutable is not None:
            # The step stored the record closed_abandoned (records.follow).
            self.conversations.pop(record.number, None)
            raise InboxError("unroutable", unroutable.reason)
        return conv.record

    async def start_conversation_once(
        self, *, scope: str, key: str, fingerprint: str, **request: Any
    ) -> tuple[InteractionRecord, bool]:
        """start_conversation under a client's idempotency key: (record, replayed). `scope`
        is whose key it is (the calling token), `fingerprint` the request body's digest.

        A retry gets the interaction the key was first stored with (replayed=True). If the
        host died between committing that interaction and routing's commit of its item, the
        item was never stored and no restart knows of it: the retry routes it now, under its
        original id, with this request's body (the same, as the fingerprint says). The same
        key with another body is `idempotency_key_reused`. Requests with one key take turns,
        so two concurrent retries never route the same item twice."""
        idempotency = IdempotencyKey(
            scope=scope, key=key, fingerprint=fingerprint, created_at=self.clock()
        )
        slot = (scope, key)
        entry = self._intake.setdefault(slot, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                # The key's own time, as the store's insert uses: both agree on what expired.
                stored = await self.store.get_idempotency_key(*slot, idempotency.created_at)
                if stored is None:
                    record = await self.start_conversation(idempotency=idempotency, **request)
                    return record, False
                if stored.fingerprint != fingerprint:
                    raise InboxError(
                        "idempotency_key_reused",
                        f"Idempotency-Key {key!r} was first used with another "
                        "request body; use a new key for a new item",
                    )
                return await self._replay(stored.interaction, request), True
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._intake[slot]

    async def _replay(self, number: str, request: dict[str, Any]) -> InteractionRecord:
        conv = self.conversations.get(number)
        if conv is not None:
            return conv.record
        record = await self.store.get_interaction(number)
        if record is None:
            raise RuntimeError(f"idempotency key of {number}, which is not stored")
        routed = record.item in self.routing.router.items
        if routed or await self.store.get_item(record.item) is not None:
            return record
        if record.state == InteractionState.CLOSED_ABANDONED:
            # What the first request was told: no queue took its item.
            raise InboxError("unroutable", f"no queue took the item of {number}")
        return await self._route_new(
            record, request.get("attributes") or {}, request.get("priority", 0)
        )

    def customer_conversation(self, number: str, customer: str) -> Conversation:
        conv = self.conversations.get(number)
        if conv is None or conv.record.customer != customer:
            raise InboxError("not_found", f"no open conversation {number}")
        return conv

    async def customer_message(
        self, number: str, customer: str, body: str, client_msg_id: str
    ) -> tuple[Message, bool]:
        conv = self.customer_conversation(number, customer)
        message, duplicate = await self.store.append_message(
            number, SenderKind.CUSTOMER, customer, body, client_msg_id, self.clock()
        )
        if not duplicate:
            await self._delivered(conv, message)
            with contextlib.suppress(RoutingError):
                await self.routing.submit(ev.CustomerReplied(item=conv.item))
        return message, duplicate

    def customer_typing(self, number: str, customer: str) -> None:
        conv = self.customer_conversation(number, customer)
        event = TypingEvent(interaction=number, who=conv.record.customer_name or "Customer")
        self._push_participants(conv.record, event)

    async def customer_left(self, number: str, customer: str) -> None:
        conv = self.customer_conversation(number, customer)
        await self._system(conv, "The customer left the chat")
        with contextlib.suppress(RoutingError):
            await self.routing.submit(ev.ItemCancelled(item=conv.item))

    async def customer_record(self, number: str, customer: str) -> InteractionRecord | None:
        """The customer's own interaction, open or closed; None for anyone else's."""
        conv = self.conversations.get(number)
        # Closed conversations leave the inbox's memory; the store keeps their record.
        record = conv.record if conv else await self.store.get_interaction(number)
        return record if record is not None and record.customer == customer else None

    async def customer_transcript(self, number: str, customer: str) -> list[Message]:
        if await self.customer_record(number, customer) is None:
            raise InboxError("not_found", f"no conversation {number}")
        return [
            m for m in await self.store.list_messages(number, limit=1000) if m.kind == "message"
        ]

    # ------------------------------------------------------------------ routing decisions

    def _on_step(self, step: Step) -> Awaitable[object] | None:
        """Called in commit order, records already in memory. Pushes go out at once; what
        follows a record change is announced by a task per change that takes the
        conversation's lock, so it keeps the changes' order without one conversation's
        system-line fsync holding up another's."""
        for d in step.decisions:
            if isinstance(d, OfferMade):
                self._push(d.offer.agent, OfferEvent(view=self._offer_view(d.offer, d.item)))
            elif isinstance(d, OfferEnded):
                self._push(
                    d.offer.agent,
                    OfferClosed(
                        offer=d.offer.id, item=d.item.id, state=d.offer.state, reason=d.reason
                    ),
                )
                offer = d.offer
                if (
                    offer.kind == OfferKind.TRANSFER
                    and offer.from_agent is not None
                    and offer.state != OfferState.ACCEPTED
                ):
                    # The sender is still the owner and would otherwise wait for nothing.
                    self._push(
                        offer.from_agent,
                        TransferDeclined(
                            interaction=d.item.interaction,
                            item=d.item.id,
                            to_agent=offer.agent,
                            state=offer.state,
                            reason=d.reason,
                        ),
                    )
            elif isinstance(d, PresenceSet):
                # The agent and the supervisors hear of it at once; everyone else asks when
                # they need it (ListOnlineAgents), so a floor logging in is not O(agents²).
                event = PresenceEvent(agent=self.agent_view(d.agent), reason=d.reason)
                self._push(d.agent, event)
                # Per session: a supervisor may also be logged in with an agent-role token.
                for agent in self.supervisors:
                    if agent != d.agent:
                        for session in self.sessions.get(agent, ()):
                            if session.supervisor:
                                session.push(event)
        work: list[asyncio.Task[None]] = []
        for change in step.records:
            d = change.cause
            conv = self.conversations.get(change.after.number)
            # Amendments are announced by whoever made them; most changes of a chat in
            # progress (a first reply, say) neither change the record nor announce anything.
            if (
                isinstance(d, ItemChanged)
                and conv is not None
                and (change.after is not change.before or d.change in _ANNOUNCED)
            ):
                task = asyncio.get_running_loop().create_task(self._record_changed(conv, d, change))
                task.add_done_callback(_log_failure)
                work.append(task)
        if len(work) > 1:
            return asyncio.gather(*work)
        return work[0] if work else None

    async def _record_changed(
        self, conv: Conversation, d: ItemChanged, change: RecordChange
    ) -> None:
        async with conv.lock:
            if self.conversations.get(conv.record.number) is conv:
                await self._announce_change(conv, d, change.before, change.after)

    async def _announce_change(
        self,
        conv: Conversation,
        d: ItemChanged,
        record: InteractionRecord,
        updated: InteractionRecord,
    ) -> None:
        item = d.item
        owner = owner_of(record)
        if d.change in ("assigned", "transferred") and item.agent:
            if owner and owner != item.agent:
                self._push(owner, InteractionEvent(change="left", record=updated))
            self._push(item.agent, InteractionEvent(change="opened", record=updated))
            if d.change == "transferred":
                text = f"Transferred from {self._name(owner or '')} to {self._name(item.agent)}"
            else:
                text = f"{self._name(item.agent)} joined"
            self._push_customer(record.number, InteractionEvent(change="updated", record=updated))
            await self._system(conv, text)
            if self.channels[record.channel].mode == ChannelMode.ASYNC:
                self._push_ongoing(item.agent)
        elif item.state == ItemState.QUEUED and owner is not None:
            for p in record.participants:
                if p.left_at is None:
                    self._push(p.agent, InteractionEvent(change="left", record=updated))
            self._push_customer(record.number, InteractionEvent(change="updated", record=updated))
            await self._system(
                conv, f"{self._name(owner)} left; finding another agent ({d.reason})"
            )
        elif d.change == "wrap_up":
            self._push_participants(updated, InteractionEvent(change="updated", record=updated))
            self._push_customer(record.number, InteractionEvent(change="updated", record=updated))
            await self._system(conv, "The chat has ended")
        elif d.change in ("closed", "cancelled", "abandoned"):
            self._push_participants(updated, InteractionEvent(change="closed", record=updated))
            self._push_customer(record.number, InteractionEvent(change="closed", record=updated))
            self._file(record.number, current(updated), joined=False)
            del self.conversations[record.number]
            self.invitations.pop(record.number, None)
            for agent in current(updated):
                if self.channels[record.channel].mode == ChannelMode.ASYNC:
                    self._push_ongoing(agent)
        elif d.change == "notice":
            await self._system(
                conv,
                "All our agents are busy right now. Thank you for waiting: you keep your place.",
            )
        elif d.change in ("on_hold", "resumed", "awaiting_capacity") and item.agent:
            self._push_ongoing(item.agent)

    # ------------------------------------------------------------------ queue statistics

    def queue_stats(self) -> dict[str, QueueStats]:
        router = self.routing.router
        now = self.clock()
        active = router.active
        out = {}
        for name, queue in router.queues.items():
            waits = [now - i.enqueued_at for i in router.waiting_items(name)]
            out[name] = QueueStats(
                queue=name,
                channel=queue.channel,
                waiting=len(waits),
                active=active.get(name, 0),
                average_wait=round(sum(waits) / len(waits), 1) if waits else 0.0,
                longest_wait=round(max(waits), 1) if waits else 0.0,
                agents_available=sum(
                    1
                    for a in router.members(name)
                    if queue.channel in router.presences[router.status[a].presence].channels
                    and a not in router.detached
                ),
            )
        return out

    def latest_queue_stats(self) -> dict[str, QueueStats]:
        """What the last statistics update sent (at most a second old): a login's snapshot
        takes these instead of computing them again for each of a floor of logins."""
        return self._last_stats or self.queue_stats()

    async def _stats_loop(self) -> None:
        """One update a second, and only of the queues whose figures changed.

        The updates of one second are spread over that second in STATS_SLICES slices: a floor
        of consoles all updated at once blocked the loop for tens of milliseconds, and every
        message routed in that moment waited."""
        loop = asyncio.get_running_loop()
        while True:
            next_round = loop.time() + 1.0
            stats = self.queue_stats()
            changed = {q: s for q, s in stats.items() if self._last_stats.get(q) != s}
            self._last_stats = stats
            sessions = [s for group in self.sessions.values() for s in group] if changed else []
            for i in range(STATS_SLICES):
                if i:
                    await asyncio.sleep(1.0 / STATS_SLICES)
                for session in sessions[i::STATS_SLICES]:
                    if not session.wants_queue_stats:
                        continue
                    mine = self._my_queues(session)
                    visible = [s for q, s in changed.items() if q in mine]
                    if visible:
                        session.push(QueueStatsEvent(stats=visible))
            await asyncio.sleep(max(0.0, next_round - loop.time()))


def _discard(observers: list[Any], observer: object) -> None:
    if observer in observers:
        observers.remove(observer)


def _log_failure(task: asyncio.Task[None]) -> None:
    # The step's submitter hears of a failure too, unless it has gone: then this is the record.
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "updating a conversation after a routing decision failed", exc_info=task.exception()
        )
