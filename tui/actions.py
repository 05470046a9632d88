"""Every action of the console in one table: its id (what console.toml's [keymap] remaps), its
keys, its label, what the help says, its name in the palette and when it applies. The screen's
bindings, the help, the palette, the footer and the toolbar are all derived from it, so an
action is spelled once and they cannot teach different words or keys."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from textual.binding import Binding, BindingType


class When(StrEnum):
    """When an action applies; the toolbar greys out its buttons outside it."""

    ALWAYS = "always"
    NARROW = "narrow"  # pane keys: on a wide terminal every pane is on screen
    LIVE_CHAT = "live chat"  # a chat in progress is selected
    OWN_LIVE_CHAT = "own live chat"  # ... and I am its owner


PANE_KEYS = Binding.Group("Panes")  # one footer entry, "F2 F3 F4 Panes"


@dataclass(frozen=True, kw_only=True)
class ConsoleAction:
    id: str  # "area.action", stable: people remap it in [keymap]
    action: str  # the Textual action run on the main screen
    key: str  # plain keys act while no text field has the focus
    label: str  # footer, toolbar button and help
    help: str = ""  # the help's longer line; the label when empty
    palette: str = ""  # "area: what", empty when the palette does not list it
    # A second key that also works while typing in the composer (its binding id is id + "_alt").
    typing_key: str = ""
    footer: bool = False
    # Runs as the app takes the key, before it routes the keys typed behind it (see
    # MainScreen.action_compose). A focused text field still gets the keys it types: Textual
    # drops a priority binding whose key the focused widget consumes.
    priority: bool = False
    key_display: str | None = None
    toolbar: bool = False
    when: When = When.ALWAYS

    def bindings(self) -> list[Binding]:
        group = PANE_KEYS if self.when == When.NARROW else None
        main = Binding(
            self.key,
            self.action,
            self.label,
            tooltip=self.description,
            id=self.id,
            show=self.footer,
            priority=self.priority,
            key_display=self.key_display,
            group=group,
        )
        if not self.typing_key:
            return [main]
        typing = Binding(
            self.typing_key,
            self.action,
            self.label,
            tooltip=self.description,
            id=f"{self.id}_alt",
            show=False,
            priority=True,
        )
        return [main, typing]

    @property
    def description(self) -> str:
        return self.help or self.label


# The order is the footer's: a narrow footer cuts from the right, so the pane keys come first.
# Keys that work while typing: ctrl+letters the composer's editing keys leave free, and function
# keys, since alt+letter is eaten or rewritten by tmux, screen and some terminals. ctrl+a
# (screen) and ctrl+b (tmux) are multiplexer prefixes; ctrl+h/i/j/m are Backspace/Tab/Enter;
# ctrl+o is the composer's $EDITOR key.
# Every main key takes priority, so the keys of one burst run in the order typed: `c` and Enter
# move the focus as the app takes them, and a plain `a` typed just before, left to bubble up
# from the old focus, ran after them (`ac` typed `a` into the composer and accepted nothing).
# Escape does not: it is also the presence menu's key to close itself.
MAIN_ACTIONS = [
    ConsoleAction(
        id="pane.queues",
        action="show_pane('pane-queues')",
        key="f2",
        key_display="F2",
        label="Queues",
        help="Show the queues pane (small terminals)",
        palette="view: queues pane",
        footer=True,
        priority=True,
        when=When.NARROW,
    ),
    ConsoleAction(
        id="pane.chat",
        action="show_pane('pane-chat')",
        key="f3",
        key_display="F3",
        label="Chat",
        help="Show the chat pane (small terminals)",
        palette="view: chat pane",
        footer=True,
        priority=True,
        when=When.NARROW,
    ),
    ConsoleAction(
        id="pane.record",
        action="show_pane('pane-record')",
        key="f4",
        key_display="F4",
        label="Record",
        help="Show the record pane (small terminals)",
        palette="view: record pane",
        footer=True,
        priority=True,
        when=When.NARROW,
    ),
    ConsoleAction(
        id="offer.accept",
        action="accept_offer",
        key="a",
        priority=True,
        typing_key="f8",
        label="Accept",
        help="Accept the selected offer",
        palette="offer: accept",
        footer=True,
    ),
    ConsoleAction(
        id="offer.reject",
        action="reject_offer",
        key="x",
        priority=True,
        label="Reject",
        help="Reject the selected offer",
        palette="offer: reject",
        footer=True,
    ),
    ConsoleAction(
        id="chat.next_unread",
        action="next_unread",
        key="n",
        priority=True,
        typing_key="ctrl+n",
        label="Next unread",
        help="Go to the next conversation waiting for a reply",
        palette="chat: next unread",
        footer=True,
    ),
    ConsoleAction(
        id="chat.compose",
        action="compose",
        key="c",
        label="Compose",
        help="Write a reply in the selected chat",
        palette="chat: compose",
        footer=True,
        priority=True,
    ),
    ConsoleAction(
        id="chat.open",
        action="open_chat",
        key="enter",
        label="Open",
        help="Open the chat under the cursor (chat list, ongoing tray)",
        priority=True,
    ),
    ConsoleAction(
        id="chat.mark_read",
        action="mark_read",
        key="m",
        priority=True,
        label="Mark read",
        help="Mark the selected conversation read",
        palette="chat: mark read",
    ),
    ConsoleAction(
        id="chat.attach",
        action="chat_attach",
        key="f",
        priority=True,
        typing_key="ctrl+l",
        label="Attach",
        help="Attach a file to the chat",
        palette="chat: attach file",
        toolbar=True,
        when=When.LIVE_CHAT,
    ),
    ConsoleAction(
        id="chat.files",
        action="chat_files",
        key="d",
        priority=True,
        label="Files",
        help="Show, save or open a file of the chat (saved to download_dir)",
        palette="chat: files (show, save, open)",
        when=When.LIVE_CHAT,
    ),
    ConsoleAction(
        id="chat.invite",
        action="chat_invite",
        key="i",
        priority=True,
        typing_key="ctrl+g",
        label="Add agent",
        help="Invite another agent into the chat",
        palette="chat: add agent",
        toolbar=True,
        when=When.LIVE_CHAT,
    ),
    ConsoleAction(
        id="chat.transfer",
        action="chat_transfer",
        key="t",
        priority=True,
        typing_key="ctrl+t",
        label="Transfer",
        help="Transfer the chat to an agent or a queue",
        palette="chat: transfer",
        toolbar=True,
        when=When.OWN_LIVE_CHAT,
    ),
    ConsoleAction(
        id="chat.template",
        action="chat_template",
        key="slash",
        priority=True,
        typing_key="ctrl+r",
        label="Template",
        help="Insert a reply template",
        palette="chat: insert template",
        toolbar=True,
        when=When.LIVE_CHAT,
    ),
    ConsoleAction(
        id="chat.end",
        action="chat_end",
        key="e",
        priority=True,
        typing_key="ctrl+f",
        label="End chat",
        help="End the chat (asks first while the customer is there)",
        palette="chat: end",
        toolbar=True,
        when=When.OWN_LIVE_CHAT,
    ),
    ConsoleAction(
        id="chat.work_note",
        action="work_note",
        key="o",
        priority=True,
        label="Work note",
        help="Add a work note only agents see",
        palette="chat: work note",
    ),
    ConsoleAction(
        id="chat.join",
        action="join",
        key="y",
        priority=True,
        label="Join invite",
        help="Join the chat you are invited to",
        palette="chat: join invitation",
    ),
    ConsoleAction(
        id="chat.decline",
        action="join(False)",
        key="Y",
        priority=True,
        label="Decline invite",
        help="Decline the invitation to join a chat",
        palette="chat: decline invitation",
    ),
    ConsoleAction(
        id="record.close",
        action="record_close",
        key="w",
        priority=True,
        typing_key="ctrl+y",
        label="Close",
        help="Close the record (asks first while the customer is there)",
        palette="record: close",
    ),
    ConsoleAction(
        id="record.incident",
        action="record_incident",
        key="I",
        priority=True,
        label="Incident",
        help="Create an incident from the interaction",
        palette="record: create incident",
    ),
    ConsoleAction(
        id="record.case",
        action="record_case",
        key="C",
        priority=True,
        label="Case",
        help="Create a case from the interaction",
        palette="record: create case",
    ),
    ConsoleAction(
        id="record.archive",
        action="record_archive",
        key="A",
        priority=True,
        label="Archive",
        help="Archive the closed record",
        palette="record: archive",
    ),
    ConsoleAction(
        id="view.routing",
        action="routing_history",
        key="R",
        priority=True,
        label="Routing",
        help="Why it came to me: the routing history of the selected offer (offers focused) "
        "or chat",
        palette="view: routing history (why did this come to me)",
    ),
    ConsoleAction(
        id="record.open",
        action="record_open",
        key="O",
        priority=True,
        label="Open record",
        help="Open the case or incident linked to the interaction",
        palette="record: open linked case or incident",
    ),
    ConsoleAction(
        id="presence.pick",
        action="pick_presence",
        key="p",
        priority=True,
        label="Presence",
        help="Choose a presence state",
        palette="presence: choose",
        footer=True,
    ),
    ConsoleAction(
        id="presence.available",
        action="presence('Available')",
        key="f5",
        priority=True,
        label="Available",
        help="Presence: Available",
        palette="presence: available",
    ),
    ConsoleAction(
        id="presence.away",
        action="presence('Away')",
        key="f6",
        priority=True,
        label="Away",
        help="Presence: Away",
        palette="presence: away",
    ),
    ConsoleAction(
        id="presence.offline",
        action="presence('Offline')",
        key="f7",
        priority=True,
        label="Offline",
        help="Presence: Offline",
        palette="presence: offline",
    ),
    ConsoleAction(
        id="view.history",
        action="history",
        key="h",
        priority=True,
        label="History",
        help="Search past interactions",
        palette="view: history",
        footer=True,
    ),
    ConsoleAction(
        id="view.records",
        action="records",
        key="v",
        priority=True,
        label="Records",
        help="Cases and incidents: mine, my groups', all",
        palette="view: cases and incidents",
        footer=True,
    ),
    ConsoleAction(
        id="view.supervisor",
        action="supervise",
        key="s",
        priority=True,
        label="Supervise",
        help="All queues and agents (supervisors)",
        palette="view: supervisor (all queues and agents)",
    ),
    ConsoleAction(
        id="app.back", action="back", key="escape", label="Back", help="Back to the chat list"
    ),
]

# The records screen's own (screens/records.py); its palette lists these. Priority for the
# main screen's reason (a dialog's key and the text typed behind it), except Escape. `k` and
# `g` too: the record list, focused whenever this screen is up, binds them as vim keys (up,
# first row), and those took the keys from Kind and Group; the arrows and Home still move.
RECORDS_ACTIONS = [
    ConsoleAction(
        id="records.mine",
        action="scope('mine')",
        key="1",
        priority=True,
        label="Mine",
        help="List the records assigned to me",
        palette="records: mine",
        footer=True,
    ),
    ConsoleAction(
        id="records.groups",
        action="scope('groups')",
        key="2",
        priority=True,
        label="Groups",
        help="List the records assigned to my groups",
        palette="records: my groups'",
        footer=True,
    ),
    ConsoleAction(
        id="records.all",
        action="scope('all')",
        key="3",
        priority=True,
        label="All",
        help="List every record I may read (all of them for supervisors)",
        palette="records: all",
        footer=True,
    ),
    ConsoleAction(
        id="records.search",
        action="search",
        key="slash",
        priority=True,
        label="Search",
        help="Filter by text in the short description",
        palette="records: search",
    ),
    ConsoleAction(
        id="records.kind",
        action="cycle_kind",
        key="k",
        priority=True,
        label="Kind",
        help="Filter: incidents, cases, both",
        palette="records: filter by kind",
    ),
    ConsoleAction(
        id="records.state_filter",
        action="filter_state",
        key="f",
        priority=True,
        label="State filter",
        help="Filter by state",
        palette="records: filter by state",
    ),
    ConsoleAction(
        id="records.state",
        action="set_state",
        key="t",
        priority=True,
        label="State",
        help="Move the record to another state",
        palette="record: change state",
        footer=True,
    ),
    ConsoleAction(
        id="records.assign",
        action="assign",
        key="a",
        priority=True,
        label="Assign",
        help="Assign the record to an agent",
        palette="record: assign to an agent",
        footer=True,
    ),
    ConsoleAction(
        id="records.group",
        action="assign_group",
        key="g",
        priority=True,
        label="Group",
        help="Assign the record to a group",
        palette="record: assign to a group",
    ),
    ConsoleAction(
        id="records.priority",
        action="set_priority",
        key="p",
        priority=True,
        label="Priority",
        help="Set the priority (1 is the most urgent)",
        palette="record: priority",
    ),
    ConsoleAction(
        id="records.edit",
        action="edit_short",
        key="e",
        priority=True,
        label="Edit",
        help="Edit the short description",
        palette="record: edit short description",
    ),
    ConsoleAction(
        id="records.note",
        action="note",
        key="o",
        priority=True,
        label="Work note",
        help="Add a work note to the record",
        palette="record: add work note",
        footer=True,
    ),
    ConsoleAction(
        id="records.link",
        action="link",
        key="l",
        priority=True,
        label="Link",
        help="Link an interaction (the chat selected underneath, or another) to the record",
        palette="record: link an interaction",
    ),
    ConsoleAction(
        id="records.back",
        action="app.pop_screen",
        key="escape",
        label="Back",
        help="Back to the chats",
    ),
]

# Priority for the main screen's reason: the dialog a key opens (take over, close, ...) is up
# before the keys typed behind it are taken, so they go into it. Enter (the floor list's own
# key) and Escape do not.
SUPERVISOR_ACTIONS = [
    ConsoleAction(
        id="supervisor.floor",
        action="tab('tab-floor')",
        key="1",
        priority=True,
        label="Floor",
        help="Every open conversation, live",
        palette="supervisor: floor",
        footer=True,
    ),
    ConsoleAction(
        id="supervisor.queues",
        action="tab('tab-queues')",
        key="2",
        priority=True,
        label="Queues",
        help="Every queue's figures",
        palette="supervisor: queues",
        footer=True,
    ),
    ConsoleAction(
        id="supervisor.agents",
        action="tab('tab-agents')",
        key="3",
        priority=True,
        label="Agents",
        help="Every agent: presence, load and queues",
        palette="supervisor: agents",
        footer=True,
    ),
    ConsoleAction(
        id="supervisor.day",
        action="tab('tab-day')",
        key="4",
        priority=True,
        label="Day",
        help="The day at a glance: each queue's figures per minute since midnight",
        palette="supervisor: the day",
        footer=True,
    ),
    ConsoleAction(
        id="supervisor.day_queue",
        action="day_queue",
        key="right_square_bracket",
        priority=True,
        key_display="]",
        label="Next queue",
        help="Day tab: every queue summed, then each queue in turn",
        palette="supervisor: the day of the next queue",
    ),
    ConsoleAction(
        id="supervisor.sort",
        action="sort",
        key="o",
        priority=True,
        label="Sort",
        help="Floor: order by wait, handle time, queue or agent (cycles)",
        palette="supervisor: sort the floor",
    ),
    ConsoleAction(
        id="supervisor.filter",
        action="filter",
        key="slash",
        priority=True,
        label="Filter",
        help="Floor: show only what matches (queue:NAME agent:ID channel:NAME or any text)",
        palette="supervisor: filter the floor",
    ),
    ConsoleAction(
        id="supervisor.monitor",
        action="monitor",
        key="enter",
        label="Monitor",
        help="Floor: watch the conversation as it happens, read-only; nobody is told",
        palette="supervisor: monitor the conversation",
    ),
    ConsoleAction(
        id="supervisor.take_over",
        action="take_over",
        key="t",
        priority=True,
        label="Take over",
        help="Floor: make the conversation yours at once (asks why)",
        palette="supervisor: take over the conversation",
        footer=True,
    ),
    ConsoleAction(
        id="supervisor.reassign",
        action="reassign",
        key="a",
        priority=True,
        label="To agent",
        help="Floor: give the conversation to an agent at once (asks whom and why)",
        palette="supervisor: give the conversation to an agent",
        footer=True,
    ),
    ConsoleAction(
        id="supervisor.move",
        action="move",
        key="m",
        priority=True,
        label="To queue",
        help="Floor: put the conversation in a queue (asks which and why)",
        palette="supervisor: move the conversation to a queue",
    ),
    ConsoleAction(
        id="supervisor.close",
        action="close",
        key="x",
        priority=True,
        label="Close",
        help="Floor: close the conversation now (asks why, then to confirm)",
        palette="supervisor: close the conversation",
    ),
    ConsoleAction(
        id="supervisor.history",
        action="history",
        key="R",
        priority=True,
        label="History",
        help="Floor: the item's routing history, each decision with its reason",
        palette="supervisor: routing history",
    ),
    ConsoleAction(
        id="supervisor.presence",
        action="presence",
        key="p",
        priority=True,
        label="Presence",
        help="Agents: set the agent's presence (asks which and why)",
        palette="supervisor: set an agent's presence",
    ),
    ConsoleAction(
        id="supervisor.back",
        action="app.pop_screen",
        key="escape,q",
        label="Back",
        help="Back to the chats",
    ),
]

APP_ACTIONS = [
    ConsoleAction(
        id="app.help",
        action="help",
        key="question_mark",
        label="Help",
        help="List every key",
        footer=True,
    ),
    ConsoleAction(
        id="app.quit", action="quit", key="ctrl+q", label="Quit", help="Quit", footer=True
    ),
]


def bindings(actions: list[ConsoleAction]) -> list[BindingType]:
    return [b for a in actions for b in a.bindings()]


def toolbar_actions() -> list[ConsoleAction]:
    return [a for a in MAIN_ACTIONS if a.toolbar]


def palette_actions(actions: list[ConsoleAction] = MAIN_ACTIONS) -> list[ConsoleAction]:
    return [a for a in actions if a.palette]


def by_id(action_id: str) -> ConsoleAction:
    return next(a for a in MAIN_ACTIONS + APP_ACTIONS if a.id == action_id)


def binding_ids() -> set[str]:
    """The ids a [keymap] in console.toml may remap."""
    every = MAIN_ACTIONS + RECORDS_ACTIONS + SUPERVISOR_ACTIONS + APP_ACTIONS
    return {b.id for a in every for b in a.bindings() if b.id}
