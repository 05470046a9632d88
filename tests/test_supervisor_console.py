"""The supervisor's console through Textual's Pilot against a real host: the Floor tab live,
sorted and filtered, monitoring a conversation, and the step-in keys with their reason,
pickers and confirmation."""

from __future__ import annotations

from pathlib import Path

from msgspec.structs import replace
from textual.widgets import Footer

from core.protocol import FloorRow
from core.routing.records import owner_of
from core.sla import SlaLevel, SlaTargets
from screens.audit import AuditScreen
from screens.confirm import READ_TIME, Confirm
from screens.monitor import MonitorScreen
from screens.picker import Picker
from screens.prompt import Prompt
from screens.supervisor import SupervisorScreen
from tests.hosting import RunningHost, running_host
from tests.test_agent_commands import accepted_chat
from tests.test_console_pilot import (
    SIZE,
    console,
    private_dirs,  # noqa: F401  (autouse: no developer's settings)
    until,
)
from tui.app import InboxApp
from tui.widgets.agents_table import AgentsTable
from tui.widgets.floor_table import FloorTable, cells, sla_level
from tui.widgets.transcript import Transcript


async def answer(pilot, app: InboxApp, dialog: type, text: str) -> None:  # type: ignore[no-untyped-def]
    """Wait for the dialog (a Prompt or a Picker), type `text` into it and press Enter."""
    await until(pilot, lambda: isinstance(app.screen, dialog))
    await pilot.press(*text, "enter")


def shown(app: InboxApp) -> list[FloorRow]:
    return list(app.screen.query_one(FloorTable).rows.rows)


async def on_the_floor(pilot, app: InboxApp, number: str) -> None:  # type: ignore[no-untyped-def]
    """From the chats, `s`, then wait for the conversation's row."""
    await until(pilot, lambda: app.state.me is not None)
    await pilot.press("s")
    await until(pilot, lambda: isinstance(app.screen, SupervisorScreen))
    await until(pilot, lambda: any(r.interaction == number for r in shown(app)))


def owner(h: RunningHost, number: str) -> str | None:
    conv = h.host.inbox.conversations.open.get(number)
    return owner_of(conv.record) if conv is not None else None


async def test_the_floor_tab_follows_every_conversation_and_sorts_and_filters(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        first = await accepted_chat(h, alice, "carla")
        app = console(h, user="dan")
        async with app.run_test(size=SIZE) as pilot:
            await on_the_floor(pilot, app, first)
            # A conversation arriving later shows without asking, waiting.
            second = (await h.host.inbox.start_conversation(channel="chat", customer="dora")).number
            await until(pilot, lambda: any(r.interaction == second for r in shown(app)))
            await h.host.inbox.customer_message(first, "carla", "hello?", "c1")
            await until(pilot, lambda: app.state.floor[first].unanswered)

            # By wait: the one nobody has yet comes first.
            assert [r.interaction for r in shown(app)] == [second, first]
            await pilot.press("o")  # by handle time: the accepted one first
            await until(pilot, lambda: [r.interaction for r in shown(app)] == [first, second])

            await pilot.press("slash")
            await answer(pilot, app, Prompt, "agent:alice")
            await until(pilot, lambda: isinstance(app.screen, SupervisorScreen))
            await until(pilot, lambda: [r.interaction for r in shown(app)] == [first])

            # The host away: the screen says the figures are no longer live, until it is back.
            line = app.screen.query_one("#supervisor-connection")
            assert not line.display
            app.client.backoff = (0.3, 0.5)
            await app.client._ws.close()  # type: ignore[union-attr]
            await until(pilot, lambda: line.display and "reconnecting" in str(line.render()))
            # On its own line above the footer (docked, the footer once covered it).
            footer = app.screen.query_one(Footer).region
            await until(pilot, lambda: line.region.height == 1 and line.region.bottom <= footer.y)
            await until(pilot, lambda: not line.display)

            # Back to the chats: the floor's events stop.
            supervision = h.host.inbox.supervision
            assert len(supervision.watching) == 1
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, SupervisorScreen))
            # Read afresh each time: each round of the floor's changes replaces the set.
            await until(pilot, lambda: not supervision.watching)
            assert app.state.floor == {}
        await alice.close()


def test_floor_times_are_worked_out_from_the_rows() -> None:
    row = FloorRow(
        interaction="IMS0001001",
        item="W1",
        channel="chat",
        queue="general",
        agent="alice",
        others=["chloe"],
        state="accepted",
        on_hold=False,
        customer_name="Carla",
        priority=2,
        arrived_at=1000.0,
        accepted_at=1030.0,
        first_reply_at=None,
        last_customer_at=1040.0,
        unanswered=True,
    )
    assert cells(row, now=1095.0) == [
        "IMS0001001",
        "Carla",
        "chat",
        "general",
        "alice+1",
        "accepted",
        "h 1:05",
        "0:55!",
        "",
        "2",
    ]
    waiting = cells(replace(row, accepted_at=None), 1095.0)
    assert waiting[6] == "w 1:35"
    # Back in its queue after an agent had it: waiting again, not handled.
    requeued = cells(replace(row, agent=None, others=[], state="queued"), 1095.0)
    assert requeued[6] == "w 1:35"

    # The host's running clock against the queue's target: first reply within 30 s.
    targets = SlaTargets(wait=120.0, first_reply=30.0, near=0.5)
    replying = replace(row, sla_target="first_reply", sla_since=1030.0)
    assert sla_level(replying, None, 1095.0) == SlaLevel.OK  # a queue without targets
    assert sla_level(row, targets, 1095.0) == SlaLevel.OK  # no clock runs (answered)
    assert sla_level(replying, targets, 1040.0) == SlaLevel.OK
    assert sla_level(replying, targets, 1046.0) == SlaLevel.NEAR
    assert cells(row, 1095.0, sla_level(replying, targets, 1095.0))[8] == "past"
    waiting_clock = replace(row, accepted_at=None, sla_target="wait", sla_since=1000.0)
    assert sla_level(waiting_clock, targets, 1061.0) == SlaLevel.NEAR
    assert sla_level(waiting_clock, targets, 1121.0) == SlaLevel.BREACHED


async def test_enter_monitors_the_conversation_as_it_happens(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "carla")
        app = console(h, user="dan")
        async with app.run_test(size=SIZE) as pilot:
            await on_the_floor(pilot, app, number)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, MonitorScreen))
            await h.host.inbox.customer_message(number, "carla", "is anyone there?", "c1")
            await alice.send_message(number, "yes, Alice here", "a1")
            transcript = app.screen.query_one(Transcript)
            await until(
                pilot,
                lambda: (
                    [m.body for m in transcript.messages][-2:]
                    == ["is anyone there?", "yes, Alice here"]
                ),
            )
            # Watching is not joining.
            record = h.host.inbox.conversations.open[number].record
            assert [p.agent for p in record.participants] == ["alice"]
            await pilot.press("R")
            await until(pilot, lambda: isinstance(app.screen, AuditScreen))
            await pilot.press("escape")
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, SupervisorScreen))
            await until(pilot, lambda: number not in app.state.monitored)
        await alice.close()


async def test_take_over_asks_why_then_makes_the_conversation_the_supervisors(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "carla")
        app = console(h, user="dan")
        async with app.run_test(size=SIZE) as pilot:
            await on_the_floor(pilot, app, number)
            await pilot.press("t")
            await answer(pilot, app, Prompt, "asked for a manager")
            await until(pilot, lambda: owner(h, number) == "dan")
            await until(pilot, lambda: number in app.state.chats)
            await until(pilot, lambda: app.state.floor[number].agent == "dan")
        await alice.close()


async def test_reassign_and_move_use_pickers_and_a_reason(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        bob = await h.agent("bob")
        number = await accepted_chat(h, alice, "carla")
        app = console(h, user="dan")
        async with app.run_test(size=SIZE) as pilot:
            await on_the_floor(pilot, app, number)
            await pilot.press("a")
            await answer(pilot, app, Picker, "Bob")
            await answer(pilot, app, Prompt, "alice is on a break")
            await until(pilot, lambda: owner(h, number) == "bob")

            await pilot.press("m")
            await answer(pilot, app, Picker, "vip")
            await answer(pilot, app, Prompt, "gold customer")
            item = h.host.inbox.conversations.open[number].item
            await until(pilot, lambda: h.host.inbox.routing.router.items[item].queue == "vip")
        await alice.close()
        await bob.close()


async def test_close_asks_why_and_to_confirm(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "carla")
        app = console(h, user="dan")
        async with app.run_test(size=SIZE) as pilot:
            await on_the_floor(pilot, app, number)
            await pilot.press("x")
            await answer(pilot, app, Prompt, "spam")
            await until(pilot, lambda: isinstance(app.screen, Confirm))
            await pilot.press("n")  # changed their mind: nothing happens
            await until(pilot, lambda: isinstance(app.screen, SupervisorScreen))
            assert owner(h, number) == "alice"
            await pilot.press("x")
            await answer(pilot, app, Prompt, "spam")
            await until(pilot, lambda: isinstance(app.screen, Confirm))
            await pilot.pause(READ_TIME)  # read first: a `y` typed ahead does not count
            await pilot.press("y")
            await until(pilot, lambda: number not in app.state.floor)
            stored = await h.host.inbox.store.get_interaction(number)
            assert stored is not None and stored.state == "closed_complete"
        await alice.close()


async def test_presence_is_set_from_the_agents_tab(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        alice = await h.agent("alice")
        number = await accepted_chat(h, alice, "carla")
        app = console(h, user="dan")
        async with app.run_test(size=SIZE) as pilot:
            await on_the_floor(pilot, app, number)
            await pilot.press("3")
            screen = app.screen
            await until(pilot, lambda: screen.loads)
            table = screen.query_one(AgentsTable)
            assert table.selected() is not None and table.selected().agent.id == "admin"  # type: ignore[union-attr]
            table.focus()
            await pilot.press("down")  # alice, after admin in id order
            assert table.selected().agent.id == "alice"  # type: ignore[union-attr]
            await pilot.press("p")
            await answer(pilot, app, Picker, "Away")
            await answer(pilot, app, Prompt, "left the floor")
            router = h.host.inbox.routing.router
            await until(pilot, lambda: router.status["alice"].presence == "Away")
        await alice.close()
