"""Screenshots of the main screen, compared with the SVGs in tests/__snapshots__/.

The console is drawn from a fixed `Snapshot` with no host and no clock: every time shown on
screen is derived from FIXED_NOW (offer countdowns and "3 min ago" through a frozen `time` in
their widgets, HH:MM through TZ=UTC). After a deliberate change to the look, regenerate with
`pytest tests/test_console_snapshots.py --snapshot-update` and review the new SVGs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest
from textual import events
from textual.pilot import Pilot

from core.demo import demo_config
from core.model import (
    InteractionRecord,
    InteractionState,
    ItemState,
    Message,
    Offer,
    Participant,
    Role,
    SenderKind,
    WorkItem,
)
from core.protocol import AgentView, FloorRow, OfferView, OngoingCard, QueueStats, Snapshot
from core.sla import QueueSla, SlaTargets
from screens.main import MainScreen
from screens.supervisor import SupervisorScreen
from tui.app import InboxApp
from tui.settings import ConsoleSettings
from tui.widgets import floor_table, offer_list, ongoing_tray
from tui.widgets.composer import Composer

SnapCompare = Callable[..., bool]

FIXED_NOW = 1_795_617_000.0  # 2026-11-25 14:30:00 UTC
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
LIVE_CHAT = "IMS0001001"


def _message(
    number: str,
    seq: int,
    sender_kind: SenderKind,
    sender: str,
    body: str,
    ago: float,
    *,
    note: bool = False,
) -> Message:
    return Message(
        interaction=number,
        seq=seq,
        sender_kind=sender_kind,
        sender=sender,
        body=body,
        client_msg_id=f"{number}-{seq}",
        created_at=FIXED_NOW - ago,
        kind="work_note" if note else "message",
    )


def _record(
    number: str, channel: str, customer: str, name: str, opened_ago: float, queue: str
) -> InteractionRecord:
    return InteractionRecord(
        number=number,
        item=f"W{number[-4:]}",
        channel=channel,
        customer=customer,
        customer_name=name,
        opened_at=FIXED_NOW - opened_ago,
        queue=queue,
        state=InteractionState.WORK_IN_PROGRESS,
        participants=(Participant(agent="alice", joined_at=FIXED_NOW - opened_ago + 5),),
    )


def fixed_snapshot() -> Snapshot:
    """Alice, Available: one live chat, three messaging conversations (two with news) and
    one pending offer, as the host would send them at FIXED_NOW."""
    config = demo_config()
    agents = [
        AgentView(id="alice", display_name="Alice Martin", role=Role.AGENT, presence="Available"),
        AgentView(id="bob", display_name="Bob Okafor", role=Role.AGENT, presence="Away"),
        AgentView(id="chloe", display_name="Chloé Dubois", role=Role.AGENT, presence="Available"),
        AgentView(id="dan", display_name="Dan Reyes", role=Role.SUPERVISOR, presence="Offline"),
    ]
    queues = ["cases", "general", "messaging"]
    me = AgentView(
        id="alice",
        display_name="Alice Martin",
        role=Role.AGENT,
        presence="Available",
        queues=queues,
    )
    item = WorkItem(
        id="W0001005",
        channel="chat",
        customer="web-bruno",
        created_at=FIXED_NOW - 14,
        state=ItemState.OFFERED,
        queue="general",
        enqueued_at=FIXED_NOW - 14,
        offers_made=1,
        interaction="IMS0001005",
    )
    offer = Offer(
        id="W0001005-1",
        item=item.id,
        agent="alice",
        created_at=FIXED_NOW - 4,
        deadline=FIXED_NOW + 26,
        reason="offered to alice: most_capacity 2 free; bob Away",
    )
    return Snapshot(
        me=me,
        presences=list(config.presences),
        offers=[
            OfferView(offer=offer, item=item, customer_name="Bruno Costa", interaction="IMS0001005")
        ],
        interactions=[
            _record(LIVE_CHAT, "chat", "web-ana", "Ana Silva", 6 * MINUTE, "general"),
            _record("IMS0000874", "messaging", "wa-chen", "Chen Wei", 2 * DAY, "messaging"),
            _record("IMS0000912", "messaging", "wa-dara", "Dara Okoye", 1 * DAY, "messaging"),
            _record("IMS0000950", "messaging", "sms-emil", "Emil Novak", 3 * DAY, "messaging"),
        ],
        ongoing=[
            OngoingCard(
                interaction="IMS0000874",
                customer_name="Chen Wei",
                last_update=FIXED_NOW - 3 * MINUTE,
                unread=2,
                preview="Any news on the replacement? The tracking page still says pending.",
            ),
            OngoingCard(
                interaction="IMS0000912",
                customer_name="Dara Okoye",
                last_update=FIXED_NOW - 2 * HOUR,
                unread=1,
                preview="Here is the photo of the damaged box.",
            ),
            OngoingCard(
                interaction="IMS0000950",
                customer_name="Emil Novak",
                last_update=FIXED_NOW - 1 * DAY,
                unread=0,
                preview="Thanks, I'll check tonight.",
            ),
        ],
        queue_stats=[
            QueueStats(
                queue="general",
                channel="chat",
                waiting=1,
                active=4,
                average_wait=14.0,
                longest_wait=14.0,
                agents_available=2,
            ),
            QueueStats(
                queue="messaging",
                channel="messaging",
                waiting=0,
                active=7,
                average_wait=0.0,
                longest_wait=0.0,
                agents_available=2,
            ),
            QueueStats(
                queue="cases",
                channel="case",
                waiting=3,
                active=1,
                average_wait=95.0,
                longest_wait=340.0,
                agents_available=2,
            ),
        ],
        agents=agents,
        templates=list(config.templates),
        queues=queues,
    )


def fixed_transcripts() -> dict[str, list[Message]]:
    customer, agent, system = SenderKind.CUSTOMER, SenderKind.AGENT, SenderKind.SYSTEM
    live = [
        _message(LIVE_CHAT, 1, customer, "web-ana", "Hi, my parcel was due yesterday.", 370),
        _message(LIVE_CHAT, 2, system, "system", "Alice Martin joined", 355),
        _message(
            LIVE_CHAT,
            3,
            agent,
            "alice",
            "Hello Ana Silva, I'm Alice Martin. How can I help you today?",
            350,
        ),
        _message(
            LIVE_CHAT,
            4,
            customer,
            "web-ana",
            "Order 55102. The tracking page has said 'out for delivery' since Monday morning "
            "and nobody has rung the bell; I was at home all day.",
            290,
        ),
        _message(LIVE_CHAT, 5, agent, "alice", "Customer is at home all day", 200, note=True),
        _message(LIVE_CHAT, 6, agent, "alice", "Thank you, let me check with the carrier.", 180),
        _message(LIVE_CHAT, 7, customer, "web-ana", "Thanks!", 60),
    ]
    chen = [
        _message("IMS0000874", 1, customer, "wa-chen", "The replacement never came.", 2 * DAY),
        _message(
            "IMS0000874",
            2,
            customer,
            "wa-chen",
            "Any news on the replacement? The tracking page still says pending.",
            3 * MINUTE,
        ),
    ]
    dara = [
        _message(
            "IMS0000912", 1, customer, "wa-dara", "Here is the photo of the damaged box.", HOUR
        )
    ]
    emil = [_message("IMS0000950", 1, customer, "sms-emil", "Thanks, I'll check tonight.", DAY)]
    return {LIVE_CHAT: live, "IMS0000874": chen, "IMS0000912": dara, "IMS0000950": emil}


class FixedConsole(InboxApp):
    """The real console, fed a fixed snapshot instead of logging in: no socket, no host."""

    def __init__(self) -> None:
        # Port 9 (discard) is never dialled: on_mount below replaces the login.
        super().__init__(ConsoleSettings(url="ws://127.0.0.1:9/agent", user="alice", bell=False))
        self.animation_level = "none"

    def on_mount(self, event: events.Mount) -> None:
        # Textual runs every class's on_mount in the MRO; this stops InboxApp's (the login).
        event.prevent_default()
        self.theme = self.settings.theme
        self.state.load(fixed_snapshot())
        # Every chat's transcript counts as fetched, so selecting one never asks the
        # (unconnected) client for it.
        for number, messages in fixed_transcripts().items():
            self.state.set_transcript(number, messages, [])
        self.connection = "connected"
        main = MainScreen()
        main.current = LIVE_CHAT  # kept by refresh_areas because the chat exists
        self.push_screen(main)


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Only the widgets' view of `time` is replaced: Textual and asyncio keep the real clock.
    frozen = SimpleNamespace(time=lambda: FIXED_NOW)
    monkeypatch.setattr(offer_list, "time", frozen)
    monkeypatch.setattr(ongoing_tray, "time", frozen)
    monkeypatch.setattr(floor_table, "time", frozen)
    # HH:MM in the transcript and the record pane come from localtime.
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never read the developer's own console settings or saved tokens.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


async def steady(pilot: Pilot[None]) -> None:
    """The main screen is up, with no blinking cursor, and everything is laid out."""
    for _ in range(100):
        if isinstance(pilot.app.screen, MainScreen):
            break
        await pilot.pause()
    pilot.app.screen.query_one(Composer).cursor_blink = False
    await pilot.pause()


def test_main_screen_wide(snap_compare: SnapCompare) -> None:
    """160x50: queues, offers and tray; the chat list and live chat; the record."""
    assert snap_compare(FixedConsole(), terminal_size=(160, 50), run_before=steady)


def test_main_screen_narrow_chat_pane(snap_compare: SnapCompare) -> None:
    """80x24: one pane at a time; the chat pane is shown first."""
    assert snap_compare(FixedConsole(), terminal_size=(80, 24), run_before=steady)


def test_main_screen_narrow_queues_pane(snap_compare: SnapCompare) -> None:
    """80x24 after F2: queue statistics, the pending offer and the ongoing-messages tray."""

    async def queues_shown(pilot: Pilot[None]) -> None:
        await steady(pilot)
        await pilot.press("f2")
        # Wait for what F2 causes: the pane swap and the focus move (and its redraw).
        for _ in range(100):
            screen = pilot.app.screen
            focused = screen.focused
            if screen.query_one("#pane-queues").display and focused and focused.id == "offers":
                break
            await pilot.pause()
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()

    assert snap_compare(FixedConsole(), terminal_size=(80, 24), run_before=queues_shown)


def _floor_row(
    number: str,
    customer: str,
    queue: str,
    agent: str | None,
    arrived_ago: float,
    accepted_ago: float | None,
    customer_ago: float | None,
    *,
    channel: str = "chat",
    unanswered: bool = False,
    priority: int = 0,
) -> FloorRow:
    state = "queued" if agent is None else "accepted"
    # The clock the host runs: the wait until accepted, then the first reply (none here).
    sla_since = FIXED_NOW - (arrived_ago if accepted_ago is None else accepted_ago)
    return FloorRow(
        interaction=number,
        item=f"W{number[-4:]}",
        channel=channel,
        queue=queue,
        agent=agent,
        others=[],
        state=state,
        on_hold=False,
        customer_name=customer,
        priority=priority,
        arrived_at=FIXED_NOW - arrived_ago,
        accepted_at=None if accepted_ago is None else FIXED_NOW - accepted_ago,
        first_reply_at=None,
        last_customer_at=None if customer_ago is None else FIXED_NOW - customer_ago,
        unanswered=unanswered,
        sla_target="wait" if agent is None else "first_reply",
        sla_since=sla_since,
    )


class FixedSupervisorConsole(FixedConsole):
    """Dan's console on the Floor tab, fed fixed floor rows: no host, no clock."""

    def on_mount(self, event: events.Mount) -> None:
        event.prevent_default()
        self.theme = self.settings.theme
        snapshot = fixed_snapshot()
        dan = next(a for a in snapshot.agents if a.id == "dan")
        self.state.load(msgspec.structs.replace(snapshot, me=dan, offers=[]))
        self.state.floor_told(
            [
                _floor_row(LIVE_CHAT, "Ana Silva", "general", "alice", 370, 355, 60),
                _floor_row("IMS0001005", "Bruno Costa", "general", None, 14, None, 12),
                _floor_row("IMS0001006", "Carmen Ruiz", "vip", None, 95, None, 90, priority=2),
                _floor_row(
                    "IMS0000874",
                    "Chen Wei",
                    "messaging",
                    "chloe",
                    2 * DAY,
                    2 * DAY - 60,
                    3 * MINUTE,
                    channel="messaging",
                    unanswered=True,
                ),
            ],
            [],
            whole=True,
        )
        # Service levels: Ana's first reply is past general's 2 minutes; Carmen has waited
        # near vip's 100 s.
        for queue, targets in (
            ("general", SlaTargets(wait=60.0, first_reply=120.0)),
            ("vip", SlaTargets(wait=100.0)),
        ):
            self.state.queue_stats[queue] = QueueStats(
                queue=queue,
                channel="chat",
                waiting=1,
                active=1,
                average_wait=0.0,
                longest_wait=0.0,
                agents_available=1,
                sla=QueueSla(targets=targets),
            )
        self.connection = "connected"
        self.push_screen(SupervisorScreen())


def test_supervisor_floor_tab_narrow(snap_compare: SnapCompare) -> None:
    """80x24: the Floor tab, longest waiting first, with waiting and handle times and the
    service-level marks (Ana's first reply past, Carmen's wait near)."""

    async def floor_shown(pilot: Pilot[None]) -> None:
        for _ in range(100):
            screen = pilot.app.screen
            if (
                isinstance(screen, SupervisorScreen)
                and screen.query_one(floor_table.FloorTable).rows.row_count
            ):
                break
            await pilot.pause()
        await pilot.pause()

    assert snap_compare(FixedSupervisorConsole(), terminal_size=(80, 24), run_before=floor_shown)
