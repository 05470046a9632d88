"""The inbox: agents' commands and customers' messages in, events out.

A façade over one part per concept, each in a module of its own name:

    floor.py          who is here and who hears what: sessions, consoles, customer watchers
    conversations.py  the open conversations, their messages as delivered, the ongoing tray
    access.py         who may see and change what (invariant 9)
    messages.py       an agent's commands on messages: write, note, read, transcripts
    files.py          files both ways: upload limits, agents' and customers' files, reading them
    records.py        the commands on a record (invite, transfer, end, close, cases) and what
                      follows a committed record change
    cases.py          cases and incidents worked after they are raised: read, list, change,
                      note, link; who may, for the agent socket and the REST API alike
    customers.py      the customer's side: start, write, leave, read their own transcript
    mail.py           e-mail channels: mail in as the customer's messages, replies out by SMTP
    views.py          what a console is shown: snapshot, agents, offers, queue statistics
    day.py            the day at a glance: each queue's figures per minute, kept in the store,
                      and each agent's offers declined and expired today
    supervision.py    supervisors: the floor live, monitoring a conversation, stepping in
    sla_watch.py      service levels: the queues' marks, supervisors alerted of crossings

Routing steps arrive from RoutingService already committed, with the interaction records that
followed their work items in the same transaction; here they fan out. Nothing in the inbox
touches a socket: the host attaches transports to sessions and watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from core.config import HostConfig
from core.model import (
    Attachment,
    Delivery,
    InteractionRecord,
    ItemState,
    Message,
    OfferKind,
    OfferState,
    WorkItem,
)
from core.protocol import (
    AcceptOffer,
    AddRecordNote,
    AddWorkNote,
    AnswerInvitation,
    AnyClientFrame,
    Archive,
    AttachFile,
    AuditTrail,
    CloseConversation,
    CloseRecord,
    CreateRecord,
    DeliveryEvent,
    Detail,
    EndChat,
    ForcePresence,
    GetAttachment,
    GetAudit,
    GetDay,
    GetPrefill,
    GetRecord,
    GetTranscript,
    InviteAgent,
    LinkRecord,
    ListAgents,
    ListFloor,
    ListInteractions,
    ListOnlineAgents,
    ListRecords,
    MarkRead,
    Monitor,
    MoveToQueue,
    OfferClosed,
    OfferEvent,
    Ok,
    Ping,
    PresenceEvent,
    Reassign,
    RejectOffer,
    SendMessage,
    ServerFrame,
    SetPresence,
    SubscribeQueueStats,
    TakeOver,
    TransferDeclined,
    TransferToAgent,
    TransferToQueue,
    Typing,
    UpdateRecord,
    UseTemplate,
)
from core.routing import events as ev
from core.routing.decisions import ItemChanged, OfferEnded, OfferMade, PresenceSet
from core.routing.engine import RoutingError
from core.service.access import Access
from core.service.cases import Cases
from core.service.conversations import Conversation, Conversations
from core.service.customers import Customers
from core.service.day import Day
from core.service.errors import InboxError
from core.service.files import Files
from core.service.floor import Floor
from core.service.mail import Mail, ReplyByMail
from core.service.messages import Messages
from core.service.outbox import Outbox, Transport
from core.service.records import Records
from core.service.routing import RoutingService, Step, read_routing
from core.service.sessions import AgentSession
from core.service.sla_watch import SlaWatch
from core.service.supervision import Supervision
from core.service.views import Views
from core.service.webhook import WebhookTransport
from store.base import Store, StoreError, StoreStats, StoreUnavailable

__all__ = ["Inbox", "InboxError"]

log = logging.getLogger("inbox_tui.inbox")

# Item changes announced although the record stays as it is.
_ANNOUNCED = frozenset({"notice", "on_hold", "resumed", "awaiting_capacity"})

Handler = Callable[[AgentSession, Any], Awaitable[ServerFrame]]


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
            config.routing_config(), store, clock=clock, observe=self._timed
        )
        self.floor = Floor(self.routing, config.agents, clock)
        self.conversations = Conversations(store, self.floor, config.channels, clock, self._timed)
        self.outbox = Outbox(store, config.deliveries, clock, self._delivery_changed)
        # The outbox's transports by name ([channel.delivery] transport; core/service/outbox.py).
        self.webhooks = WebhookTransport()
        self.transports: dict[str, Transport] = {"webhook": self.webhooks}
        self.access = Access(self.conversations, self.routing, store)
        self.messages = Messages(
            self.conversations,
            self.access,
            self.floor,
            self.routing,
            store,
            config.templates,
            clock,
            self.outbox,
        )
        self.records = Records(
            self.routing,
            self.conversations,
            self.access,
            self.floor,
            store,
            clock,
            record_states=config.records,
        )
        self.cases = Cases(config, self.access, self.floor, store, clock)
        self.customers = Customers(
            self.routing, self.conversations, self.floor, store, clock, self._timed
        )
        self.files = Files(
            config.attachments,
            self.access,
            self.conversations,
            self.customers,
            self.routing,
            store,
            clock,
            self.outbox,
        )
        self.mail = Mail(config.email, self.customers, self.files, self.conversations, store, clock)
        self.transports["smtp"] = ReplyByMail(self.mail)
        self.day = Day(self.routing, store, clock, config.host.day_retention_days)
        self.views = Views(
            config,
            self.routing,
            self.conversations,
            self.floor,
            clock,
            invitations_of=self.records.invitations_of,
            offers_today=self.day.offers_today,
        )
        self.records.details = self.views.details
        self.sla = SlaWatch(config.slas, self.routing, self.conversations, self.floor, clock)
        self.views.sla_marks = self.sla.marks
        self.views.sla_crossings = self.sla.standing
        self.conversations.on_opening = self._opening_arrived
        # Routing asks these of the parts built on top of it: which records follow items, and
        # who has no console (at every rebuild).
        self.routing.records = self.conversations
        self.routing.detached_agents = self.floor.detached_agents
        self.routing.deliveries = self.outbox.for_change
        self.routing.lines = self.records.line_of
        self.routing.listeners.append(self._on_step)
        self.supervision = Supervision(self.routing, self.conversations, self.floor, store, clock)
        self.supervision.sla_clock = self.sla.clock_of
        self.routing.listeners.append(self.supervision.step_committed)
        self.conversations.message_observers.append(self.supervision.message_delivered)
        self._tasks: list[asyncio.Task[None]] = []

        # What the host calls, named by the part that owns it (its contract is there).
        floor, customers = self.floor, self.customers
        self.open_session = floor.open_session
        self.attach = floor.attach
        self.detach = floor.detach
        self.find_session = floor.find_session
        self.close_session = floor.close_session
        self.end_sessions = floor.end_sessions
        self.update_agent = floor.update_agent
        self.reap = floor.reap
        self.watch = floor.watch
        self.agent_names = floor.names
        self.snapshot = self.views.snapshot
        self.queue_stats = self.views.queue_stats
        self.visible_record = self.access.visible_record
        self.visible_audit = self.access.visible_audit
        self.start_conversation = customers.start_conversation
        self.start_conversation_once = customers.start_conversation_once
        self.customer_conversation = customers.customer_conversation
        self.customer_message = customers.customer_message
        self.customer_typing = customers.customer_typing
        self.customer_left = customers.customer_left
        self.customer_record = customers.customer_record
        self.customer_transcript = customers.customer_transcript
        self.customer_attach = self.files.customer_attach
        self.customer_file = self.files.customer_file
        self.read_attachment = self.files.read

        # Every agent command, by frame type: the protocol's whole surface in one table.
        m, r, v = self.messages, self.records, self.views
        self._handlers: dict[type, Handler] = {
            Ping: self._ping,
            SetPresence: self._set_presence,
            AcceptOffer: self._accept,
            RejectOffer: self._reject,
            SendMessage: m.send,
            Typing: m.typing,
            MarkRead: m.mark_read,
            AttachFile: self.files.attach,
            GetAttachment: self.files.get,
            UseTemplate: m.use_template,
            AddWorkNote: m.work_note,
            GetTranscript: m.transcript,
            ListInteractions: m.list_interactions,
            InviteAgent: r.invite,
            AnswerInvitation: r.answer_invitation,
            TransferToAgent: r.transfer_to_agent,
            TransferToQueue: r.transfer_to_queue,
            EndChat: r.end_chat,
            CloseRecord: r.close,
            Archive: r.archive,
            GetPrefill: r.prefill,
            CreateRecord: r.create_record,
            SubscribeQueueStats: v.subscribe_stats,
            ListAgents: v.list_agents,
            GetDay: self.day.get_day,
            ListOnlineAgents: v.list_online,
            GetAudit: self._audit,
            GetRecord: self.cases.get_command,
            ListRecords: self.cases.list_command,
            UpdateRecord: self.cases.update_command,
            AddRecordNote: self.cases.note_command,
            LinkRecord: self.cases.link_command,
            ListFloor: self.supervision.list_floor,
            Monitor: self.supervision.monitor,
            TakeOver: self.supervision.take_over,
            Reassign: self.supervision.reassign,
            MoveToQueue: self.supervision.move_to_queue,
            CloseConversation: self.supervision.close,
            ForcePresence: self.supervision.force_presence,
        }

    def _opening_arrived(self, conv: Conversation) -> None:
        """The offer usually goes out before the customer's first words arrive: send it again
        with them, so the agent sees what the customer wants before accepting."""
        router = self.routing.router
        offer_id = router.offer_of_item.get(conv.item)
        if offer_id is not None:
            offer = router.offers[offer_id]
            self.floor.push(
                offer.agent, OfferEvent(view=self.views.offer_view(offer, router.items[conv.item]))
            )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # The engine's reads go out first: the store answers them while the conversations are
        # loaded (a takeover's rebuild is routing stopped; docs/scaling.md).
        stored = asyncio.ensure_future(read_routing(self.store))
        try:
            await self.conversations.load()
            await self.records.load()
        except BaseException:
            stored.cancel()
            with contextlib.suppress(BaseException):
                await stored  # its own failure, if it had one, is not the one to report
            raise
        await self.routing.start(stored)
        # Counting starts from the rebuilt engine: the steps of its start are not arrivals.
        await self.day.start()
        self.routing.listeners.append(self.day.observe)
        self.floor.opened(self.clock())
        self._tasks = [
            asyncio.create_task(self._load_floor_times()),
            asyncio.create_task(self._load_openings()),
            asyncio.create_task(self.day.run()),
            asyncio.create_task(self.routing.run_timers()),
            asyncio.create_task(self.views.stats_loop()),
            asyncio.create_task(self.floor.reaper()),
            asyncio.create_task(self.outbox.run(self.transports)),
            asyncio.create_task(self.supervision.publish_loop()),
            asyncio.create_task(self.sla.run()),
        ]

    async def _load_openings(self) -> None:
        waiting = (
            item
            for item in self.routing.router.items.values()
            if item.state in (ItemState.QUEUED, ItemState.OFFERED)
        )
        try:
            found = await self.conversations.load_openings(waiting)
        except StoreError as e:
            # Offer cards then say what the item is about without the customer's words.
            log.error("event=openings_not_loaded error=%s", e)
            return
        for conv in found:
            self._opening_arrived(conv)

    async def _load_floor_times(self) -> None:
        try:
            await self.supervision.load()
        except StoreError as e:
            # The floor's rows then show no "last spoke" times until the next lines arrive.
            log.error("event=floor_times_not_loaded error=%s", e)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                # A task that failed as it was stopped (the database went with the routing
                # role, say) must not take the host down with it: it is to stand by.
                log.exception("event=task_failed_while_stopping task=%s", task.get_coro())
        await self.routing.drain()
        await self.customers.stop()
        await self.webhooks.close()
        try:
            await self.day.flush()  # the minutes finished so far; the one in progress is lost
        except StoreError as e:
            log.error("event=day_figures_not_stored error=%s", e)

    def _delivery_changed(self, delivery: Delivery) -> None:
        conv = self.conversations.open.get(delivery.conversation)
        if delivery.message is None or conv is None:
            return
        event = DeliveryEvent(
            interaction=delivery.conversation,
            message_seq=delivery.message.seq,
            state=delivery.state,
        )
        self.floor.push_participants(conv.record, event)

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

    async def _accept(self, session: AgentSession, frame: AcceptOffer) -> ServerFrame:
        if self.access.accepted_before(session, frame.offer):
            return Ok(ref=frame.ref)
        self.access.my_offer(session, frame.offer)
        await self.routing.submit(ev.OfferAccepted(offer=frame.offer))
        return Ok(ref=frame.ref)

    async def _reject(self, session: AgentSession, frame: RejectOffer) -> ServerFrame:
        self.access.my_offer(session, frame.offer)
        await self.routing.submit(ev.OfferRejected(offer=frame.offer, reason=frame.reason))
        return Ok(ref=frame.ref)

    async def _audit(self, session: AgentSession, frame: GetAudit) -> ServerFrame:
        audit = await self.access.visible_audit(session.agent, session.supervisor, frame.item)
        if audit is None:
            raise InboxError("not_found", f"no work item {frame.item} visible to you")
        return AuditTrail(
            ref=frame.ref, item=audit.item, interaction=audit.interaction, entries=audit.entries
        )

    # ------------------------------------------------------------------ routing steps

    def _on_step(self, step: Step) -> Awaitable[object] | None:
        """Called in commit order, records already in memory. Pushes go out at once; what
        follows a record change is announced by a task per change that takes the
        conversation's lock, so it keeps the changes' order without one conversation's
        writes (invitations withdrawn at a close) holding up another's."""
        floor = self.floor
        if step.records:
            self.outbox.wake()  # the step may have committed deliveries of its changes
        for d in step.decisions:
            if isinstance(d, OfferMade):
                floor.push(d.offer.agent, OfferEvent(view=self.views.offer_view(d.offer, d.item)))
            elif isinstance(d, OfferEnded):
                offer = d.offer
                floor.push(
                    offer.agent,
                    OfferClosed(offer=offer.id, item=d.item.id, state=offer.state, reason=d.reason),
                )
                if (
                    offer.kind == OfferKind.TRANSFER
                    and offer.from_agent is not None
                    and offer.state != OfferState.ACCEPTED
                ):
                    # The sender is still the owner and would otherwise wait for nothing.
                    floor.push(
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
                event = PresenceEvent(agent=self.views.agent_view(d.agent), reason=d.reason)
                floor.push(d.agent, event)
                floor.push_supervisors(event, but=d.agent)
        work: list[asyncio.Task[None]] = []
        for i, change in enumerate(step.records):
            cause = change.cause
            conv = self.conversations.open.get(change.after.number)
            # Amendments are announced by whoever made them; most changes of a chat in
            # progress (a first reply, say) neither change the record nor announce anything.
            if (
                isinstance(cause, ItemChanged)
                and conv is not None
                and (change.after is not change.before or cause.change in _ANNOUNCED)
            ):
                task = asyncio.get_running_loop().create_task(
                    self.records.announce(conv, cause, change, step.lines.get(i))
                )
                task.add_done_callback(_log_failure)
                work.append(task)
        if len(work) > 1:
            return asyncio.gather(*work)
        return work[0] if work else None

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
        commit), "message" (a message's receipt to its fan-out, commit included) and
        "arrival" (a customer's new conversation until its item is routed and announced).
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

    async def list_messages(
        self, number: str, after_seq: int = 0, limit: int = 500
    ) -> list[Message]:
        """A page of the interaction's transcript; the caller has checked visible_record."""
        return await self.store.list_messages(number, after_seq, limit)

    async def list_attachments(self, number: str) -> list[Attachment]:
        return await self.store.list_attachments(number)

    async def details(self, record: InteractionRecord) -> list[Detail]:
        """What the record's item is about, as consoles show it; the item of a closed record
        has left routing's memory and is read from the store."""
        item = self.routing.router.items.get(record.item) or await self.store.get_item(record.item)
        return self.views.details(item) if item is not None else []


def _discard(observers: list[Any], observer: object) -> None:
    if observer in observers:
        observers.remove(observer)


def _log_failure(task: asyncio.Task[None]) -> None:
    # The step's submitter hears of a failure too, unless it has gone: then this is the record.
    if task.cancelled() or task.exception() is None:
        return
    error = task.exception()
    if isinstance(error, StoreUnavailable):
        # The database or the way to it failed (its message says how), not this code.
        log.error("event=conversation_update_not_stored error=%s", error)
        return
    log.error("updating a conversation after a routing decision failed", exc_info=error)
