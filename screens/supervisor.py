"""Supervisors: the floor in tabs, one key each. Each tab's content is a widget of its own
(tui/widgets/); this screen lays them out, keeps them fresh and runs the keys.

The Floor tab asks the host for every open conversation once and then follows its changes
(`list_floor`, `floor_changed` folded into ConsoleState.floor); its times tick here every
second. Stepping in always asks for the reason first, and confirms what a customer would
notice at once (closing)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static, TabbedContent, TabPane

from core.protocol import (
    MAX_DAY_MINUTES,
    AgentList,
    AgentLoad,
    AnyClientFrame,
    CloseConversation,
    DayFigures,
    FloorList,
    FloorRow,
    ForcePresence,
    GetDay,
    ListAgents,
    ListFloor,
    MoveToQueue,
    Reassign,
    TakeOver,
)
from core.sla import SlaTargets
from screens.asking import ask
from screens.confirm import Confirm
from screens.picker import Picker
from screens.prompt import Prompt
from screens.working import WorkingScreen
from tui.actions import SUPERVISOR_ACTIONS, bindings
from tui.calls import CALL_FAILURES, failure_text
from tui.widgets.agents_table import AgentsTable
from tui.widgets.day_plots import DayPlots
from tui.widgets.floor_table import FloorTable
from tui.widgets.queue_stats import QueueStatsView
from tui.widgets.virtual_list import VirtualList

if TYPE_CHECKING:
    from tui.app import InboxApp

REFRESH = 2.0  # seconds: load changes with every routing step; a glance is what a floor needs
DAY_REFRESH = 60.0  # the host stores the day's figures a minute at a time
DAY_LAG = 2.0  # seconds after a minute's end: the host has stored it by then
MAX_REASON = 500  # the protocol's limit on a step-in's reason


class SupervisorScreen(WorkingScreen[None]):
    # The palette lists these on this screen (tui/commands.py).
    ACTIONS = SUPERVISOR_ACTIONS
    BINDINGS = bindings(SUPERVISOR_ACTIONS)

    DEFAULT_CSS = """
    #supervisor-tabs { height: 1fr; }
    #supervisor-connection { height: 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[AgentLoad] = []

    @property
    def inbox(self) -> InboxApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with TabbedContent(initial="tab-floor", id="supervisor-tabs"):
            with TabPane("Floor", id="tab-floor"):
                yield FloorTable(id="floor")
            with TabPane("Queues", id="tab-queues"), VerticalScroll():
                yield QueueStatsView(id="all-queues")
            with TabPane("Agents", id="tab-agents"), VerticalScroll():
                yield AgentsTable(id="agents")
                yield Static(id="agents-trouble")
            with TabPane("Day", id="tab-day"), VerticalScroll():
                yield DayPlots(id="day-plots")
                yield Static(id="day-trouble")
        # Shown only while the host is away: what the tabs show is then no longer live.
        yield Static(id="supervisor-connection")
        yield Footer()

    def on_mount(self) -> None:
        self.show_connection(self.inbox.connection)
        self.refresh_view()
        self.set_interval(REFRESH, self.refresh_view)
        self.refresh_day()
        # The host stores each minute as it ends: ask just after, not up to a minute late.
        self.set_timer(DAY_REFRESH - time.time() % DAY_REFRESH + DAY_LAG, self._day_each_minute)
        self.set_interval(1.0, self.query_one(FloorTable).tick)
        self.show_floor()  # what this console knows already, until the host's answer
        self.run_worker(self.load_floor(), group="floor")
        self.query_one("#floor-rows", VirtualList).focus()

    def on_unmount(self) -> None:
        # Off the floor: stop its events rather than fold them in until logout. The app runs
        # it, as this screen's own workers end with it.
        self.inbox.state.floor.clear()
        self.app.run_worker(self._unsubscribe())

    async def _unsubscribe(self) -> None:
        with contextlib.suppress(*CALL_FAILURES):
            await self.inbox.client.request(ListFloor(subscribe=False), FloorList)

    def action_tab(self, tab: str) -> None:
        self.query_one("#supervisor-tabs", TabbedContent).active = tab
        # The keys that move a cursor go to the tab in view.
        if tab == "tab-floor":
            self.query_one("#floor-rows", VirtualList).focus()
        elif tab == "tab-agents":
            self.query_one(AgentsTable).focus()

    def action_day_queue(self) -> None:
        self.query_one("#day-plots", DayPlots).cycle()

    def _day_each_minute(self) -> None:
        self.refresh_day()
        self.set_interval(DAY_REFRESH, self.refresh_day)

    def refresh_day(self) -> None:
        self.run_worker(self.load_day(), exclusive=True, group="day")

    async def load_day(self) -> None:
        """Since the console's local midnight, at most the day a `get_day` answers."""
        now = time.time()
        today = time.localtime(now)
        midnight = now - (today.tm_hour * 3600 + today.tm_min * 60 + today.tm_sec)
        since = max(midnight, now - (MAX_DAY_MINUTES - 1) * 60)
        try:
            figures = await self.inbox.client.request(GetDay(since=since, until=now), DayFigures)
        except CALL_FAILURES as e:
            self.query_one("#day-trouble", Static).update(f"[red]{failure_text(e)}[/]")
            return
        self.query_one("#day-trouble", Static).update("")
        self.query_one("#day-plots", DayPlots).show(figures)

    def refresh_view(self) -> None:
        self.run_worker(self.load(), exclusive=True, group="agents")

    # ------------------------------------------------------------------ the floor

    async def load_floor(self) -> None:
        """Every row once; `floor_changed` events keep them current from then on."""
        try:
            reply = await self.inbox.client.request(ListFloor(), FloorList)
        except CALL_FAILURES as e:
            self.notify(failure_text(e), severity="error")
            return
        state = self.inbox.state
        state.floor_skew = reply.at - time.time()
        state.floor_told(reply.rows, [], whole=True)
        self.show_floor()

    def show_floor(self) -> None:
        state = self.inbox.state
        self.query_one(FloorTable).show(
            list(state.floor.values()), state.floor_skew, self.targets()
        )

    def targets(self) -> dict[str, SlaTargets]:
        """The queues' service levels, as their figures carry them."""
        stats = self.inbox.state.queue_stats
        return {q: s.sla.targets for q, s in stats.items() if s.sla is not None}

    def refresh_areas(self, areas: set[str]) -> None:
        if "all" in areas:
            # Resynced: the events in between are gone, so the floor is asked for again.
            self.run_worker(self.load_floor(), group="floor")
        elif "floor" in areas:
            self.show_floor()
        if "queues" in areas:
            # Targets change only with the config; the next second's tick draws them.
            self.query_one(FloorTable).targets = self.targets()
        self.show_connection(self.inbox.connection)

    def show_connection(self, status: str) -> None:
        line = self.query_one("#supervisor-connection", Static)
        line.display = status != "connected"
        line.update(f"[bold red]● {status}[/]: the figures are as they were when it went")

    def on_virtual_list_selected(self, event: VirtualList.Selected) -> None:
        if isinstance(event.row, FloorRow):
            event.stop()
            self.action_monitor()

    def _on_floor(self) -> FloorRow | None:
        """The conversation under the floor's cursor, when the Floor tab is shown."""
        tabs = self.query_one("#supervisor-tabs", TabbedContent)
        if tabs.active != "tab-floor":
            self.notify("That works on the Floor tab (1).")
            return None
        row = self.query_one(FloorTable).current()
        if row is None:
            self.notify("No conversation is open.")
        return row

    def action_sort(self) -> None:
        self.notify(f"Floor by {self.query_one(FloorTable).cycle_sort()}")

    def action_filter(self) -> None:
        table = self.query_one(FloorTable)
        hint = "queue:vip agent:alice or any text"
        answer = ask(self.app, Prompt("Filter the floor", table.filter_text, hint))
        self.run_worker(self._filter(table, answer), group="floor-keys")

    async def _filter(self, table: FloorTable, answer: Awaitable[str | None]) -> None:
        query = await answer
        if query is not None:
            table.set_filter(query)

    def action_monitor(self) -> None:
        from screens.monitor import MonitorScreen

        row = self._on_floor()
        if row is not None:
            self.app.push_screen(MonitorScreen(row.interaction))

    def action_history(self) -> None:
        from screens.audit import AuditScreen

        row = self._on_floor()
        if row is not None:
            self.app.push_screen(AuditScreen(row.item))

    def _ask_reason(self, what: str) -> Awaitable[str | None]:
        return ask(self.app, Prompt(f"Why {what}? (goes into the audit)"))

    async def _reason(self, answer: Awaitable[str | None]) -> str | None:
        reason = await answer
        if reason is None:
            return None
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            self.notify(f"A reason of 1 to {MAX_REASON} characters is needed.", severity="error")
            return None
        return reason

    async def _step_in(self, frame: AnyClientFrame, done: str) -> None:
        try:
            await self.inbox.client.request(frame)
        except CALL_FAILURES as e:
            self.notify(failure_text(e), severity="error")
            return
        self.notify(done)

    # Each action opens its first dialog as the app takes the key (screens/asking.py), and a
    # worker carries on from the answer.

    def action_take_over(self) -> None:
        row = self._on_floor()
        if row is not None:
            answer = self._ask_reason(f"take over {row.interaction}")
            self.run_worker(self._take_over(row, answer), group="floor-keys")

    async def _take_over(self, row: FloorRow, answer: Awaitable[str | None]) -> None:
        if (reason := await self._reason(answer)) is None:
            return
        await self._step_in(
            TakeOver(interaction=row.interaction, reason=reason), f"{row.interaction} is yours"
        )

    def action_reassign(self) -> None:
        row = self._on_floor()
        if row is None:
            return
        choices = [
            (f"{a.display_name} ({a.presence})", a.id)
            for a in sorted(self.inbox.state.agents.values(), key=lambda a: a.id)
            if a.id != row.agent
        ]
        answer = ask(self.app, Picker(f"Give {row.interaction} to", choices))
        self.run_worker(self._reassign(row, answer), group="floor-keys")

    async def _reassign(self, row: FloorRow, answer: Awaitable[str | None]) -> None:
        agent = await answer
        if agent is None:
            return
        if (reason := await self._reason(self._ask_reason(f"give it to {agent}"))) is None:
            return
        frame = Reassign(interaction=row.interaction, agent=agent, reason=reason)
        await self._step_in(frame, f"{row.interaction} went to {agent}")

    def action_move(self) -> None:
        row = self._on_floor()
        if row is None:
            return
        choices = [
            (s.queue, s.queue)
            for s in sorted(self.inbox.state.queue_stats.values(), key=lambda s: s.queue)
            if s.channel == row.channel
        ]
        answer = ask(self.app, Picker(f"Move {row.interaction} to", choices))
        self.run_worker(self._move(row, answer), group="floor-keys")

    async def _move(self, row: FloorRow, answer: Awaitable[str | None]) -> None:
        queue = await answer
        if queue is None:
            return
        if (reason := await self._reason(self._ask_reason(f"move it to {queue}"))) is None:
            return
        frame = MoveToQueue(interaction=row.interaction, queue=queue, reason=reason)
        await self._step_in(frame, f"{row.interaction} is in {queue}")

    def action_close(self) -> None:
        row = self._on_floor()
        if row is not None:
            answer = self._ask_reason(f"close {row.interaction}")
            self.run_worker(self._close(row, answer), group="floor-keys")

    async def _close(self, row: FloorRow, answer: Awaitable[str | None]) -> None:
        if (reason := await self._reason(answer)) is None:
            return
        who = row.customer_name
        question = Confirm(f"Close {row.interaction} with {who} now? The customer sees it end.")
        if not await ask(self.app, question):
            return
        frame = CloseConversation(interaction=row.interaction, reason=reason)
        await self._step_in(frame, f"{row.interaction} closed")

    # ------------------------------------------------------------------ agents

    def action_presence(self) -> None:
        tabs = self.query_one("#supervisor-tabs", TabbedContent)
        agent = self.query_one(AgentsTable).selected() if tabs.active == "tab-agents" else None
        if agent is None:
            self.notify("Pick an agent on the Agents tab (3) first.")
            return
        view = agent.agent
        choices = [(p.label or p.name, p.name) for p in self.inbox.state.presences]
        answer = ask(self.app, Picker(f"Set {view.display_name}'s presence", choices))
        self.run_worker(self._presence(view.id, view.display_name, answer), group="floor-keys")

    async def _presence(self, agent: str, name: str, answer: Awaitable[str | None]) -> None:
        presence = await answer
        if presence is None:
            return
        if (reason := await self._reason(self._ask_reason(f"set {agent} {presence}"))) is None:
            return
        frame = ForcePresence(agent=agent, presence=presence, reason=reason)
        await self._step_in(frame, f"{name} is {presence}")
        self.refresh_view()

    async def load(self) -> None:
        self.query_one("#all-queues", QueueStatsView).show(
            list(self.inbox.state.queue_stats.values()), sla=True
        )
        try:
            reply = await self.inbox.client.request(ListAgents(), AgentList)
        except CALL_FAILURES as e:
            self.query_one("#agents-trouble", Static).update(f"[red]{failure_text(e)}[/]")
            return
        self.loads = reply.agents
        self.query_one("#agents-trouble", Static).update("")
        self.query_one("#agents", AgentsTable).show(reply.agents, time.time())
