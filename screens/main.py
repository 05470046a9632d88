"""The main screen: (A) queues and offers, (B) chats, (C) toolbar, (D) record, (F) attachments
and templates, and the ongoing-messages tray. Actions talk to the host through the app's
client only; what they change comes back as events and redraws through `refresh_areas`."""

from __future__ import annotations

import mimetypes
import secrets
import subprocess
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from textual import on, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Button, Footer, Label, Select, Static

from core.client import ClientError
from core.model import MAX_ATTACHMENT_BYTES, Attachment
from core.protocol import (
    AddWorkNote,
    AnswerInvitation,
    Archive,
    AttachFile,
    AttachmentData,
    CloseRecord,
    CreateRecord,
    EndChat,
    GetAttachment,
    GetPrefill,
    GetTranscript,
    InviteAgent,
    ListOnlineAgents,
    MarkRead,
    MessageAck,
    OnlineAgents,
    Prefill,
    RecordCreated,
    TemplateText,
    TransferToAgent,
    TransferToQueue,
    UseTemplate,
)
from core.protocol import Transcript as TranscriptReply
from screens.asking import ask
from screens.audit import AuditScreen
from screens.confirm import Confirm
from screens.file_view import FileView
from screens.history import HistoryScreen
from screens.picker import Picker
from screens.prompt import Prompt
from screens.record_form import RecordForm
from screens.records import RecordsScreen
from screens.supervisor import SupervisorScreen
from screens.working import WorkingScreen
from tui.actions import MAIN_ACTIONS, bindings
from tui.calls import CALL_FAILURES, failure_text
from tui.downloads import TEXT_TYPES, as_text, download_dir, opener, save_new
from tui.widgets.attachments_panel import AttachmentsPanel
from tui.widgets.chat_list import ChatList
from tui.widgets.composer import Composer
from tui.widgets.invitation_bar import InvitationBar
from tui.widgets.offer_line import OfferLine
from tui.widgets.offer_list import OfferList
from tui.widgets.ongoing_tray import OngoingTray
from tui.widgets.outbox_view import OutboxView
from tui.widgets.presence_switcher import PresenceSwitcher
from tui.widgets.queue_stats import QueueStatsView
from tui.widgets.record_pane import RecordPane
from tui.widgets.reply_countdown import ReplyCountdown
from tui.widgets.toolbar import Toolbar
from tui.widgets.transcript import Transcript
from tui.widgets.virtual_list import VirtualList

if TYPE_CHECKING:
    from tui.app import InboxApp

# A customer is still in these: ending or closing them asks first.
LIVE_STATES = ("new", "work_in_progress")
NARROW = 110  # below this many columns the panes become tabs (80x24 terminals)
PANES = ("pane-queues", "pane-chat", "pane-record")
T = TypeVar("T")


class MainScreen(WorkingScreen[None]):
    # From the one table of actions (tui/actions.py): ids, keys, labels, help and palette.
    BINDINGS = bindings(MAIN_ACTIONS)

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None
        self._shown: str | None = None  # the conversation the transcript widget holds
        self.drawn = False
        self.shown_pane = "pane-chat"
        # The conversation of the offer just accepted: selected as soon as its chat arrives.
        self.accepted: str | None = None
        # Replies sent before that chat arrived (`a`, `c`, the reply and Enter in one burst):
        # they go to the accepted chat once it is here, not to the one shown before it.
        self.held_replies: list[str] = []
        self.reply_to_accepted = False

    @property
    def inbox(self) -> InboxApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Horizontal(id="topbar"):
            yield Static(id="whoami")
            yield Static(id="connection")
            yield PresenceSwitcher(id="presence")
        offers = OfferList(id="offers")
        with Horizontal(id="panes"):
            with Vertical(id="pane-queues", classes="pane"):
                yield Label("Queues", classes="pane-title")
                yield QueueStatsView(id="queue-stats")
                yield Label("Offers", classes="pane-title")
                yield offers
                yield OngoingTray(id="ongoing")
            with Vertical(id="pane-chat", classes="pane"):
                yield Label("Chats", classes="pane-title")
                yield ChatList(id="chat-list")
                yield Static(id="chat-title")
                yield ReplyCountdown(id="reply-due")
                yield Transcript(id="transcript")
                yield OutboxView(id="outbox")
                yield Static(id="typing")
                yield Composer(id="composer")
                yield Toolbar(id="toolbar")
            with Vertical(id="pane-record", classes="pane"):
                yield Label("Interaction record", classes="pane-title")
                yield RecordPane(id="record")
                yield AttachmentsPanel(id="attachments")
        yield InvitationBar(id="invitation")
        yield OfferLine(offers, id="offer-line")
        yield Footer()

    def on_mount(self) -> None:
        self.on_resize()
        self.query_one("#chat-list", ChatList).focus()
        # After the first refresh, when every descendant has composed: the presence Select's
        # own label may not exist yet at this point, and setting its value then raised
        # NoMatches on a busy machine.
        self.call_after_refresh(self.first_draw)

    def first_draw(self) -> None:
        self.drawn = True
        self.refresh_areas({"all"})

    def on_resize(self, event: object = None) -> None:
        narrow = self.app.size.width < NARROW  # the terminal, known before layout
        if narrow != self.has_class("narrow"):
            self.set_class(narrow, "narrow")
            self.refresh_bindings()  # F2/F3/F4 come and go in the footer
        for pane in PANES:
            self.query_one(f"#{pane}").set_class(pane == self.shown_pane, "shown")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "show_pane":
            # Wide: all panes are on screen, so the keys are no use and stay out of the footer.
            return self.has_class("narrow")
        return True

    # ------------------------------------------------------------------ redraw

    def refresh_areas(self, areas: set[str]) -> None:
        if not self.drawn:
            return  # an event raced the screen's compose; on_mount draws everything
        try:
            self._refresh_areas(areas)
        except NoMatches:
            # An event that arrives while the app shuts down finds the panes already
            # removed (seen in the Pilot tests' teardown): there is nothing left to draw.
            return

    def _refresh_areas(self, areas: set[str]) -> None:
        state = self.inbox.state
        every = "all" in areas
        if every or areas & {"me", "agents"}:
            me = state.me
            if me is not None:
                role = "" if me.role == "agent" else f" [{me.role}]"
                self.query_one("#whoami", Static).update(f"[b]{me.display_name}[/]{role}")
                self.query_one("#presence", PresenceSwitcher).show(state.presences, me.presence)
        if every or areas & {"me", "agents", "ongoing"}:
            self.query_one("#ongoing").display = state.has_messaging()
        if every or "queues" in areas:
            stats = [state.queue_stats[q] for q in state.queues if q in state.queue_stats]
            self.query_one("#queue-stats", QueueStatsView).show(stats)
        if every or "offers" in areas:
            self.query_one("#offers", OfferList).show(state.sorted_offers())
            self.query_one("#offer-line", OfferLine).redraw()
        if every or "invitations" in areas:
            self.query_one("#invitation", InvitationBar).show(
                [(n, state.name(a)) for n, a in state.invitations.items()]
            )
        if every or "ongoing" in areas:
            self.query_one("#ongoing", OngoingTray).show(state.ongoing, state.unread_conversations)
        if every or "chats" in areas:
            chats = state.open_chats()
            if self.accepted in state.chats:
                self.current, self.accepted = self.accepted, None
                self.reply_to_accepted = False
                held, self.held_replies = self.held_replies, []
                for body in held:
                    self.send_reply(self.current, body)
            if self.current not in state.chats:
                self.current = chats[0].number if chats else None
            self.query_one("#chat-list", ChatList).show(chats, self.current)
        if every or "chats" in areas or f"chat:{self.current}" in areas:
            self.show_current()
        elif "records" in areas:
            self.show_record_pane()
        self.show_connection(self.inbox.connection)

    def show_connection(self, status: str) -> None:
        style = {"connected": "green", "reconnecting": "yellow"}.get(status, "red")
        self.query_one("#connection", Static).update(f"[{style}]● {status}[/]")

    def show_record_pane(self) -> None:
        state = self.inbox.state
        names = {a: v.display_name for a, v in state.agents.items()}
        chat = state.chats.get(self.current or "")
        self.query_one("#record", RecordPane).show(chat, names, state.records)

    def show_current(self) -> None:
        state = self.inbox.state
        chat = state.chats.get(self.current or "")
        transcript = self.query_one("#transcript", Transcript)
        names = {a: v.display_name for a, v in state.agents.items()}
        me = state.me.id if state.me else ""
        mine = chat is not None and any(
            p.agent == me and p.role == "owner" and p.left_at is None
            for p in chat.record.participants
        )
        self.query_one("#toolbar", Toolbar).show(chat, mine)
        self.show_record_pane()
        self.query_one("#attachments", AttachmentsPanel).show(
            chat.attachments if chat else [], state.templates
        )
        title = self.query_one("#chat-title", Static)
        if chat is None:
            title.update("[dim]No chat selected: accept an offer with a[/]")
            self.query_one("#reply-due", ReplyCountdown).show(None)
            transcript.clear()
            self.query_one("#outbox", OutboxView).show([])
            self._shown = None
            self.query_one("#typing", Static).update("")
            return
        r = chat.record
        title.update(f"[b]{r.customer_name or r.customer}[/]  {r.number}  [dim]{r.state}[/]")
        self.query_one("#reply-due", ReplyCountdown).show(chat.reply_by)
        transcript.set_deliveries(chat.deliveries)
        shown = transcript.messages
        if self._shown == chat.number and len(shown) <= len(chat.messages):
            # Same conversation: add what is new instead of re-laying out every message.
            last = shown[-1].seq if shown else 0
            for seq in sorted(s for s in chat.messages if s > last):
                transcript.add_message(chat.messages[seq])
            if len(transcript.messages) != len(chat.messages):  # an older page arrived
                transcript.set_messages(
                    chat.ordered(), names, customer_name=r.customer_name or "Customer"
                )
        else:
            transcript.set_messages(
                chat.ordered(), names, customer_name=r.customer_name or "Customer"
            )
            self._shown = chat.number
        self.query_one("#outbox", OutboxView).show(state.pending(chat.number))
        typing = f"[dim italic]{chat.typing} is typing…[/]" if chat.typing else ""
        self.query_one("#typing", Static).update(typing)
        if not chat.loaded:
            self.load_transcript(chat.number)

    @work(exclusive=False)
    async def load_transcript(self, number: str) -> None:
        # The newest page: an agent picks up where the conversation is, not where it began.
        reply = await self.call(GetTranscript(interaction=number, newest=True))
        if isinstance(reply, TranscriptReply):
            self.inbox.state.set_transcript(
                number, reply.messages, reply.attachments, reply.deliveries
            )
            if number == self.current:
                self.show_current()

    # ------------------------------------------------------------------ plumbing

    async def call(self, frame: object) -> object | None:
        """Send a command; a refusal becomes a toast, never a crash."""
        return await self.guarded(self.inbox.client.request(frame))  # type: ignore[arg-type]

    async def guarded(self, request: Awaitable[T]) -> T | None:
        """Await a client call; what can go wrong talking to a host becomes a toast and None.
        Every client call from a key handler or worker goes through here: an exception out
        of a worker ends the whole app."""
        try:
            return await request
        except CALL_FAILURES as e:
            title = e.code if isinstance(e, ClientError) else None
            self.notify(failure_text(e), title=title or "", severity="error")
        return None

    def chat_or_say(self) -> str | None:
        if self.current is None:
            self.notify("Select a chat first", severity="warning")
        return self.current

    @on(VirtualList.Highlighted, "#chat-list")
    @on(VirtualList.Selected, "#chat-list")
    def chat_chosen(self, event: VirtualList.Highlighted) -> None:
        number = event.row.number
        if number != self.current:
            self.current = number
            self.show_current()
        if isinstance(event, VirtualList.Selected):
            self.set_focus(self.query_one("#composer", Composer))

    @on(OngoingTray.Opened)
    def ongoing_opened(self, event: OngoingTray.Opened) -> None:
        self.open_chat(event.interaction)

    def open_chat(self, number: str) -> None:
        """Show `number` in the chat pane with the composer focused (set_focus, not focus():
        see action_compose)."""
        if number not in self.inbox.state.chats:
            self.notify(f"{number} is no longer yours", severity="warning")
            return
        if number != self.current:
            self.current = number
            self.refresh_areas({"chats"})
        self.action_show_pane("pane-chat")
        self.set_focus(self.query_one("#composer", Composer))

    def action_open_chat(self) -> None:
        """Enter on the chat list or on an ongoing card, as the app takes the key: keys typed
        behind it in one burst are the reply, not commands. Elsewhere Enter is the focused
        widget's (send, pick, submit)."""
        focused = self.focused
        if isinstance(focused, ChatList) and (chat := focused.highlighted()) is not None:
            self.open_chat(chat.number)
        elif isinstance(focused, OngoingTray) and (card := focused.selected()) is not None:
            self.open_chat(card.interaction)
        else:
            raise SkipAction()

    @on(Composer.Send)
    async def send(self, event: Composer.Send) -> None:
        if self.accepted is not None and self.reply_to_accepted:
            self.held_replies.append(event.body)
            self.notify("Your reply goes once the chat you accepted opens")
            return
        number = self.chat_or_say()
        if number is None:
            self.give_back(event.body)
            return
        self.send_reply(number, event.body)

    def send_reply(self, number: str, body: str) -> None:
        msg_id = secrets.token_hex(12)
        if not self.inbox.state.queue_reply(number, body, msg_id):
            self.notify("Too many replies waiting for the host; try again when it is back")
            self.give_back(body)
            return
        self.show_current()
        self.inbox.run_worker(self.inbox.replies.deliver(number, body, msg_id))

    def give_back(self, body: str) -> None:
        """A reply that could not go, back in the composer ahead of anything typed since:
        typed text is never dropped."""
        composer = self.query_one("#composer", Composer)
        composer.value = f"{body}\n{composer.value}" if composer.value else body

    @on(Composer.WantsTemplate)
    def wants_template(self) -> None:
        self.action_chat_template()

    @on(Button.Pressed, "#toolbar Button, #record Button")
    async def button_pressed(self, event: Button.Pressed) -> None:
        # Toolbar and record buttons carry their action's name (tui/actions.py). run_action is
        # a coroutine: called without await, a button did nothing at all.
        await self.run_action(event.button.name or "")

    @on(Select.Changed, "#presence")
    def presence_picked(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.action_presence(event.value)

    # ------------------------------------------------------------------ actions

    def action_show_pane(self, pane: str) -> None:
        self.shown_pane = pane
        self.on_resize()
        if self.has_class("narrow"):
            # Keys must act on what is visible, not on a widget in a hidden pane. Focus moves
            # now (set_focus), not after the queued keys as widget.focus() would: see
            # action_compose.
            focusable = [w for w in self.query_one(f"#{pane}").query("*") if w.can_focus]
            if focusable:
                self.set_focus(focusable[0])

    def action_history(self) -> None:
        self.app.push_screen(HistoryScreen())

    def action_routing_history(self) -> None:
        offers = self.query_one("#offers", OfferList)
        view = offers.selected()
        # The offer when the agent is looking at offers (or there is no chat); else the chat.
        if view is not None and (offers.has_focus or self.current is None):
            ref = view.item.id
        elif self.current is not None:
            ref = self.current
        else:
            self.notify("Select an offer or a chat first", severity="warning")
            return
        self.app.push_screen(AuditScreen(ref))

    def action_records(self) -> None:
        self.app.push_screen(RecordsScreen(chat=self.current))

    def action_record_open(self) -> None:
        chat = self.inbox.state.chats.get(self.current or "")
        linked = chat and (chat.record.incident or chat.record.case)
        if not linked:
            self.notify("No case or incident is linked to this interaction", severity="warning")
            return
        self.app.push_screen(RecordsScreen(open_number=linked, chat=self.current))

    def action_supervise(self) -> None:
        me = self.inbox.state.me
        if me is None or me.role == "agent":
            self.notify("The supervisor view is for supervisors", severity="warning")
            return
        self.app.push_screen(SupervisorScreen())

    def action_back(self) -> None:
        self.query_one("#chat-list", ChatList).focus()

    def action_compose(self) -> None:
        """Keys typed behind `c` in one burst (SSH, tmux, paste) are the reply. Textual routes a
        key to the widget focused when the app takes it from the terminal, and
        `widget.focus()` only queues the change behind the keys already waiting, so they ran
        as commands ("Sure, which bill?" ended the chat, opened History and Help). The
        binding has priority, so it runs as the app takes `c`, and `set_focus` moves the
        focus before the app takes the next key."""
        self.action_show_pane("pane-chat")
        self.set_focus(self.query_one("#composer", Composer))
        # Behind `a`, the reply is to the chat being accepted, even if another is shown until
        # it opens.
        self.reply_to_accepted = self.accepted is not None

    def action_accept_offer(self) -> None:
        view = self.query_one("#offers", OfferList).selected()
        if view is None:
            self.notify("No offer to accept", severity="warning")
            return
        # Set as the app takes the key, so that a `c` right behind it knows what it answers.
        self.accepted = view.interaction
        self.run_worker(self.accept(view.offer.id))

    async def accept(self, offer_id: str) -> None:
        if not await self.call_accept(offer_id):
            self.accepted, self.reply_to_accepted = None, False
            held, self.held_replies = self.held_replies, []
            if held:
                self.give_back("\n".join(held))
        elif self.accepted in self.inbox.state.chats:  # the chat arrived before the answer
            self.refresh_areas({"chats"})

    async def call_accept(self, offer_id: str) -> bool:
        """Whether the host took the offer; a refusal (or no host) is a toast."""
        try:
            await self.inbox.client.accept(offer_id)
        except CALL_FAILURES as e:
            self.notify(failure_text(e), severity="error")
            return False
        return True

    def action_reject_offer(self) -> None:
        view = self.query_one("#offers", OfferList).selected()
        if view is None:
            self.notify("No offer to reject", severity="warning")
            return
        answer = ask(
            self.app, Prompt("Reject this offer: why?", placeholder="busy, wrong language, …")
        )
        self.run_worker(self.reject(view.offer.id, answer))

    async def reject(self, offer_id: str, answer: Awaitable[str | None]) -> None:
        reason = await answer
        if reason is not None:
            await self.guarded(self.inbox.client.reject(offer_id, reason[:200]))

    @work(exclusive=True, group="next-unread")
    async def action_next_unread(self) -> None:
        state = self.inbox.state
        # Whether a customer's question is unanswered is in the transcript: fetch those of
        # live chats never shown here (accepted in the background, or before a restart).
        for chat in state.open_chats():
            if not chat.loaded and chat.record.state in LIVE_STATES:
                reply = await self.call(GetTranscript(interaction=chat.number, newest=True))
                if isinstance(reply, TranscriptReply):
                    state.set_transcript(
                        chat.number, reply.messages, reply.attachments, reply.deliveries
                    )
        number = state.next_unread(self.current)
        if number is None:
            self.notify("Nothing unread")
            return
        self.current = number
        self.refresh_areas({"chats"})

    @work
    async def action_mark_read(self) -> None:
        chat = self.inbox.state.chats.get(self.current or "")
        if chat and chat.messages:
            await self.call(MarkRead(interaction=chat.number, seq=max(chat.messages)))

    def action_chat_template(self) -> None:
        number = self.chat_or_say()
        templates = self.inbox.state.templates
        if number is None or not templates:
            return
        choices = [(f"/{t.shortcut}  {t.title or t.text[:40]}", t.shortcut) for t in templates]
        self.run_worker(
            self.use_template(number, ask(self.app, Picker("Insert a template", choices)))
        )

    async def use_template(self, number: str, answer: Awaitable[str | None]) -> None:
        shortcut = await answer
        if shortcut is None:
            return
        reply = await self.call(UseTemplate(interaction=number, shortcut=shortcut))
        if isinstance(reply, TemplateText):
            composer = self.query_one("#composer", Composer)
            composer.value = reply.text
            composer.focus()

    async def online_agents(self, channel: str | None) -> list[tuple[str, str]]:
        """Colleagues available for `channel` (any channel when None), asked of the host now:
        presence changes are not broadcast to every console."""
        state = self.inbox.state
        reply = await self.call(ListOnlineAgents())
        if not isinstance(reply, OnlineAgents):
            return []
        me = state.me.id if state.me else ""
        out = []
        for agent in reply.agents:
            state.agents[agent.id] = agent
            presence = next((p for p in state.presences if p.name == agent.presence), None)
            if agent.id == me or presence is None or not presence.channels:
                continue
            if channel is None or channel in presence.channels:
                out.append((f"{agent.display_name}  ({agent.presence})", agent.id))
        return out

    def action_chat_transfer(self) -> None:
        number = self.chat_or_say()
        chat = self.inbox.state.chats.get(number or "")
        if chat is None:
            return
        # Opened as the key is taken, filled once the host names who is online: a name typed
        # behind `t` goes into its filter (screens/asking.py).
        picker = Picker("Transfer to an agent or a queue", None)
        answer = ask(self.app, picker)
        self.run_worker(self.transfer(chat.number, chat.record.channel, picker, answer))

    async def transfer(
        self, number: str, channel: str, picker: Picker, answer: Awaitable[str | None]
    ) -> None:
        choices = await self.online_agents(channel)
        choices += [(f"queue: {q}", f"queue:{q}") for q in self.inbox.state.queues]
        picker.show_choices(choices)
        target = await answer
        if target is None:
            return
        frame: TransferToQueue | TransferToAgent
        if target.startswith("queue:"):
            frame = TransferToQueue(interaction=number, queue=target.removeprefix("queue:"))
        else:
            frame = TransferToAgent(interaction=number, agent=target)
        if await self.call(frame) is not None:
            self.notify("Transfer requested: the chat stays yours until it is accepted")

    def action_chat_invite(self) -> None:
        number = self.chat_or_say()
        if number is None:
            return
        picker = Picker("Add an agent", None)
        answer = ask(self.app, picker)
        self.run_worker(self.invite(number, picker, answer))

    async def invite(self, number: str, picker: Picker, answer: Awaitable[str | None]) -> None:
        picker.show_choices(await self.online_agents(None))
        agent = await answer
        if agent is not None and await self.call(InviteAgent(interaction=number, agent=agent)):
            self.notify(f"Invited {self.inbox.state.name(agent)}")

    @work
    async def action_join(self, accept: bool = True) -> None:
        invitations = self.inbox.state.invitations
        if not invitations:
            self.notify("No invitation waiting")
            return
        number = next(iter(invitations))
        answered = await self.call(AnswerInvitation(interaction=number, accept=accept))
        if answered is not None and not accept:
            # Joining clears it when the chat opens; a decline brings no event to do that.
            invitations.pop(number, None)
            self.refresh_areas({"invitations"})

    def action_chat_attach(self) -> None:
        number = self.chat_or_say()
        if number is None:
            return
        answer = ask(self.app, Prompt("Attach a file: path", placeholder="~/file"))
        self.run_worker(self.attach(number, answer))

    async def attach(self, number: str, answer: Awaitable[str | None]) -> None:
        path = await answer
        if not path:
            return
        file = Path(path).expanduser()
        try:
            if file.stat().st_size > MAX_ATTACHMENT_BYTES:
                self.notify(f"{file.name} is over 10 MiB", severity="error")
                return
            data = file.read_bytes()
        except OSError as e:
            self.notify(f"Cannot read {file}: {e.strerror}", severity="error")
            return
        # The type the customer's browser will be told; the host checks the bytes match it.
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        frame = AttachFile(interaction=number, name=file.name, content_type=kind, data=data)
        if await self.call(frame):
            self.notify(f"Sent {file.name}")

    def action_chat_files(self) -> None:
        number = self.chat_or_say()
        if number is None:
            return
        chat = self.inbox.state.chats.get(number)
        files = {a.sha256: a for a in (chat.attachments if chat else [])}
        if not files:
            self.notify("No files in this chat yet")
            return
        choices = [(f"{a.name} ({a.size:,} bytes, {a.content_type})", d) for d, a in files.items()]
        answer = ask(self.app, Picker("Files of this chat", choices))
        self.run_worker(self.file_chosen(number, files, answer))

    async def file_chosen(
        self, number: str, files: dict[str, Attachment], answer: Awaitable[str | None]
    ) -> None:
        digest = await answer
        if digest is None:
            return
        attachment = files[digest]
        folder = download_dir(self.inbox.settings.download_dir)
        verbs = [(f"Save to {folder}", "save")]
        if attachment.content_type in TEXT_TYPES:
            verbs.insert(0, ("Show here", "show"))
        command = opener()
        if command is not None:
            verbs.append((f"Save and open with {command[0]}", "open"))
        verb = await self.app.push_screen_wait(Picker(attachment.name, verbs))
        if verb is None:
            return
        reply = await self.call(GetAttachment(interaction=number, sha256=digest))
        if not isinstance(reply, AttachmentData):
            return
        if verb == "show":
            text = as_text(attachment.content_type, reply.data)
            if text is None:
                self.notify(f"{attachment.name} is not plain text: save it", severity="warning")
            else:
                self.app.push_screen(FileView(attachment.name, text))
            return
        try:
            path = save_new(folder, attachment.name, reply.data)
        except OSError as e:
            self.notify(f"Cannot save in {folder}: {e.strerror or e}", severity="error")
            return
        self.notify(f"Saved {path}")
        if verb == "open" and command is not None:
            # Detached and silent: the opener's chatter must not land on the console's screen.
            subprocess.Popen(
                [*command, str(path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )

    def action_work_note(self) -> None:
        number = self.chat_or_say()
        if number is None:
            return
        answer = ask(self.app, Prompt("Work note (never shown to the customer)"))
        self.run_worker(self.work_note(number, answer))

    async def work_note(self, number: str, answer: Awaitable[str | None]) -> None:
        note = await answer
        if note:
            ack = await self.call(
                AddWorkNote(interaction=number, body=note, client_msg_id=secrets.token_hex(8))
            )
            if isinstance(ack, MessageAck):
                self.refresh_areas(self.inbox.state.own_message(ack.message))

    def action_chat_end(self) -> None:
        number = self.chat_or_say()
        if number is not None:
            self.run_worker(self.when_confirmed(number, "End", EndChat(interaction=number)))

    def action_record_close(self) -> None:
        number = self.chat_or_say()
        if number is not None:
            self.run_worker(self.when_confirmed(number, "Close", CloseRecord(interaction=number)))

    def when_confirmed(
        self, number: str, verb: str, frame: EndChat | CloseRecord
    ) -> Awaitable[None]:
        """Ask before ending or closing a conversation whose customer is still in it (the
        question up as the app takes the key); one that has ended (wrap-up) closes on one
        key. The request, once answered yes, to run in a worker."""
        chat = self.inbox.state.chats.get(number)
        answer: Awaitable[bool | None] | None = None
        if chat is not None and chat.record.state in LIVE_STATES:
            who = chat.record.customer_name or "the customer"
            answer = ask(self.app, Confirm(f"{verb} the conversation with {who}?"))

        async def send() -> None:
            if answer is None or await answer:
                await self.call(frame)

        return send()

    @work
    async def action_record_archive(self) -> None:
        number = self.chat_or_say()
        if number is not None and await self.call(Archive(interaction=number)):
            self.notify(f"{number} archived")

    def create_record(self, kind: str) -> None:
        number = self.chat_or_say()
        if number is None:
            return
        # Opened as the key is taken, prefilled when the host answers: what is typed behind
        # `I` goes into the form (screens/record_form.py).
        form = RecordForm(number, kind)
        answer = ask(self.app, form)
        self.run_worker(self.fill_and_create(number, kind, form, answer))

    async def fill_and_create(
        self, number: str, kind: str, form: RecordForm, answer: Awaitable[CreateRecord | None]
    ) -> None:
        prefill = await self.call(GetPrefill(interaction=number, kind=kind))  # type: ignore[arg-type]
        if isinstance(prefill, Prefill):
            form.prefill(prefill.short_description, prefill.description)
        else:
            form.prefill("", "")
        frame = await answer
        if frame is None:
            return
        created = await self.call(frame)
        if isinstance(created, RecordCreated):
            self.inbox.state.record_told(created.record)
            self.show_record_pane()
            self.notify(f"{created.record.number} created from {number}")

    def action_record_incident(self) -> None:
        self.create_record("incident")

    def action_record_case(self) -> None:
        self.create_record("case")

    @work
    async def action_presence(self, presence: str) -> None:
        await self.guarded(self.inbox.client.set_presence(presence))

    def action_pick_presence(self) -> None:
        choices = [(p.label or p.name, p.name) for p in self.inbox.state.presences]
        self.run_worker(self.presence_picked_from(ask(self.app, Picker("Presence", choices))))

    async def presence_picked_from(self, answer: Awaitable[str | None]) -> None:
        presence = await answer
        if presence is not None:
            self.action_presence(presence)
