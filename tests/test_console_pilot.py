"""The console driven by Textual's Pilot against a real host on a loopback port."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from textual import events
from textual.app import App
from textual.widgets import Input, Label, OptionList, Static, TextArea

from core.client import InboxClient
from core.config import parse_config
from core.demo import DEMO_PASSWORD
from core.protocol import (
    AddRecordNote,
    AnswerInvitation,
    AttachFile,
    CloseRecord,
    CreateRecord,
    GetRecord,
    GetTranscript,
    InvitationDeclined,
    InvitationEvent,
    InviteAgent,
    MarkRead,
    OfferEvent,
    RecordView,
    TransferDeclined,
    TransferToAgent,
    UpdateRecord,
)
from screens.confirm import READ_TIME, Confirm
from screens.file_view import FileView
from screens.help import HelpScreen
from screens.login import LoginScreen
from screens.main import MainScreen
from screens.picker import ASKING, Picker
from screens.prompt import Prompt
from screens.record_form import RecordForm
from screens.records import RecordsScreen
from tests.hosting import RunningHost, fast_config_text, running_host
from tests.test_email import customer_mail, mail_host, send
from tui.app import InboxApp
from tui.settings import ConsoleSettings
from tui.state import ConsoleState
from tui.widgets.composer import Composer
from tui.widgets.offer_list import OfferList
from tui.widgets.ongoing_tray import OngoingTray
from tui.widgets.transcript import Transcript
from tui.widgets.virtual_list import VirtualList

SIZE = (160, 50)


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never read or write the developer's own console settings or saved tokens.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def console(h: RunningHost, user: str = "alice", **settings: object) -> InboxApp:
    return InboxApp(
        ConsoleSettings(url=h.agent_url, user=user, bell=False, **settings),  # type: ignore[arg-type]
        password=DEMO_PASSWORD,
    )


async def until(pilot, check: Callable[[], object], timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the console never got there")
        await pilot.pause(0.05)


async def say_yes(app: InboxApp, pilot) -> None:  # type: ignore[no-untyped-def]
    """Answer the question up now with `y`, as a person does once they have read it."""
    await until(pilot, lambda: isinstance(app.screen, Confirm))
    await pilot.pause(READ_TIME)
    await pilot.press("y")


async def until_closed(h: RunningHost, app: InboxApp, pilot, number: str) -> None:  # type: ignore[no-untyped-def]
    """Closed, not merely gone from the screen: the stored record says so too."""
    await until(
        pilot,
        lambda: (
            number not in app.state.chats
            or app.state.chats[number].record.state == "closed_complete"
        ),
    )
    stored = await h.host.inbox.store.get_interaction(number)
    assert stored is not None and stored.state == "closed_complete"
    assert stored.closed_at is not None


def main(app: InboxApp) -> MainScreen:
    assert isinstance(app.screen, MainScreen), app.screen
    return app.screen


def transcript_text(app: InboxApp) -> str:
    t = app.screen.query_one(Transcript)
    return "\n".join(t.render_line(y).text for y in range(t.size.height))


async def available(app: InboxApp, pilot) -> None:  # type: ignore[no-untyped-def]
    """On the main screen, F5: Available."""
    await until(pilot, lambda: isinstance(app.screen, MainScreen))
    await pilot.press("f5")
    await until(pilot, lambda: app.state.me and app.state.me.presence == "Available")


async def chat_ready(h: RunningHost, app: InboxApp, pilot, customer: str = "Ana") -> str:  # type: ignore[no-untyped-def]
    """Presence Available, a customer arrives, the agent presses `a`; returns the number."""
    await available(app, pilot)
    record = await h.host.inbox.start_conversation(
        channel="chat", customer=f"web-{customer.lower()}", customer_name=customer
    )
    await h.host.inbox.customer_message(record.number, f"web-{customer.lower()}", "Hello!", "c1")
    await until(pilot, lambda: app.state.offers)
    await pilot.press("a")
    await until(pilot, lambda: record.number in app.state.chats)
    await until(pilot, lambda: "joined" in transcript_text(app))
    return record.number


async def test_login_errors_are_shown_on_the_login_screen(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = InboxApp(ConsoleSettings(url=h.agent_url, user="alice", bell=False))
        async with app.run_test(size=SIZE) as pilot:
            assert isinstance(app.screen, LoginScreen)
            await pilot.press(*"wrong", "enter")
            await until(
                pilot,
                lambda: (
                    "Wrong user name or password"
                    in str(app.screen.query_one("#login-error").render())
                ),
            )
            await pilot.press(*DEMO_PASSWORD, "enter")
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
    down = InboxApp(ConsoleSettings(url="ws://127.0.0.1:9/agent", user="alice"), password="x")
    async with down.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(down.screen, LoginScreen))
        await until(
            pilot,
            lambda: "Cannot reach the host" in str(down.screen.query_one("#login-error").render()),
        )


async def test_saved_token_waits_for_enter_and_a_typed_password_stays_in_the_form(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        async with console(h).run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(pilot.app.screen, MainScreen))
        # Restarted: the form is there, saying a saved session exists; Enter alone uses it.
        again = InboxApp(ConsoleSettings(url=h.agent_url, user="alice", bell=False))
        async with again.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(again.screen, LoginScreen))
            error = again.screen.query_one("#login-error")
            assert "Saved session for alice" in str(error.render())
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(again.screen, MainScreen))
        # Someone who types the password anyway, in one burst: it is a password, not commands
        # (its "w" once closed a live chat), and it logs in.
        third = InboxApp(ConsoleSettings(url=h.agent_url, user="alice", bell=False))
        async with third.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(third.screen, LoginScreen))
            burst(third, DEMO_PASSWORD)
            password = third.screen.query_one("#login-password", Input)
            await until(pilot, lambda: password.value == DEMO_PASSWORD)
            assert isinstance(third.screen, LoginScreen)
            burst(third, "\r")
            await until(pilot, lambda: isinstance(third.screen, MainScreen))


async def test_accept_reply_template_end_and_close(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            number = await chat_ready(h, app, pilot)
            seen: list[str] = []
            h.host.inbox.watch(number, lambda e: seen.append(str(getattr(e, "message", ""))))
            await pilot.press("c", *"Hi Ana", "enter")
            await until(pilot, lambda: "Hi Ana" in transcript_text(app))
            assert any("Hi Ana" in s for s in seen)
            # A template: "/" in the composer opens the picker; Enter takes the first.
            await pilot.press("slash")
            await until(pilot, lambda: isinstance(app.screen, Picker))
            await pilot.press(*"greet", "enter")
            await until(pilot, lambda: app.screen.query_one(Composer).value.startswith("Hello Ana"))
            await pilot.press("enter")
            await until(pilot, lambda: "I'm Alice Martin" in transcript_text(app))
            await pilot.press("escape", "e")
            await say_yes(app, pilot)
            await until(pilot, lambda: app.state.chats[number].record.state == "wrap_up")
            await pilot.press("w")  # after the end, closing is one key
            await until_closed(h, app, pilot, number)


async def test_one_key_neither_ends_nor_closes_a_live_chat(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            number = await chat_ready(h, app, pilot)
            for key in ("e", "w"):
                # A reply typed ahead of the question (as a burst arrives over SSH) runs
                # nothing: not History (h), not Close (w), not Enter as a yes.
                await pilot.press("escape", key, *"Sure, which bill?", "enter")
                await until(pilot, lambda: isinstance(app.screen, Confirm))
                await pilot.press("n")
                await until(pilot, lambda: isinstance(app.screen, MainScreen))
                assert app.state.chats[number].record.state == "work_in_progress"
            stored = await h.host.inbox.store.get_interaction(number)
            assert stored is not None and stored.state == "work_in_progress"
            await pilot.press("w")
            await say_yes(app, pilot)  # closing a live chat ends it too
            await until_closed(h, app, pilot, number)


async def test_reject_with_a_reason_reaches_another_agent(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        bob = InboxClient(h.agent_url)
        await bob.connect()
        await bob.login("bob", DEMO_PASSWORD)
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            await available(app, pilot)
            await h.host.inbox.start_conversation(channel="chat", customer="c", customer_name="C")
            await until(pilot, lambda: app.state.offers)
            await bob.set_presence("Available")
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, Prompt))
            await pilot.press(*"wrong language", "enter")
            offer = await bob.next_event(OfferEvent)
            assert "alice rejected" in offer.view.offer.reason
            await until(pilot, lambda: not app.state.offers)
        await bob.close()


async def test_the_toolbar_and_record_buttons_run_their_actions(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            await chat_ready(h, app, pilot)
            await pilot.click("#tool-transfer")
            await until(pilot, lambda: isinstance(app.screen, Picker))
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            await pilot.click("#record-incident")
            await until(pilot, lambda: isinstance(app.screen, RecordForm))


async def test_transfer_and_invite_pickers(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        bob = InboxClient(h.agent_url)
        await bob.connect()
        await bob.login("bob", DEMO_PASSWORD)
        await bob.set_presence("Available")
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            number = await chat_ready(h, app, pilot)
            await pilot.press("escape", "i")
            await until(pilot, lambda: isinstance(app.screen, Picker))
            await pilot.press(*"bob", "enter")
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            invitation = await bob.next_event(InvitationEvent)
            assert invitation.interaction.number == number
            assert invitation.from_agent == "alice"
            await pilot.press("t")
            await until(pilot, lambda: isinstance(app.screen, Picker))
            await pilot.press(*"Bob Ok", "enter")
            transfer = None
            while transfer is None or transfer.view.offer.kind != "transfer":
                transfer = await bob.next_event(OfferEvent)
            assert transfer.view.interaction == number
            await bob.accept(transfer.view.offer.id)
            await until(pilot, lambda: number not in app.state.chats)
        await bob.close()


async def test_a_picker_opened_before_the_host_answers_picks_once_it_has(
    tmp_path: Path,
) -> None:
    """The transfer picker opens as `t` is taken and fills when the host names who is
    online. A name and Enter typed before that are kept: the best match is picked then."""
    picked: list[str | None] = []

    class Asking(App[None]):
        def on_mount(self) -> None:
            self.push_screen(picker, callback=picked.append)

    picker = Picker("Transfer to an agent or a queue", None)
    async with Asking().run_test(size=SIZE) as pilot:
        await until(pilot, lambda: picker.is_current)
        await pilot.press(*"bob", "enter")
        await pilot.pause()
        assert picked == []
        assert str(picker.query_one("#picker-asking", Label).render()) == ASKING
        picker.show_choices([("Alice Martin  (Available)", "alice"), ("Bob Ok  (Busy)", "bob")])
        await until(pilot, lambda: picked == ["bob"])


async def test_a_record_form_opened_before_its_prefill_keeps_what_was_typed(
    tmp_path: Path,
) -> None:
    """The incident form opens as `I` is taken; the host's prefill fills only what is still
    empty, and ctrl+s pressed before it came creates the record once it has."""
    created: list[CreateRecord | None] = []

    class Asking(App[None]):
        def on_mount(self) -> None:
            self.push_screen(form, callback=created.append)

    form = RecordForm("IMS0001001", "incident")
    async with Asking().run_test(size=SIZE) as pilot:
        await until(pilot, lambda: form.is_current)
        await pilot.press(*"Parcel lost", "ctrl+s")
        await pilot.pause()
        assert created == []
        form.prefill("Hello, my parcel is late", "Ana Lima: Hello, my parcel is late")
        await until(pilot, lambda: created)
    record = created[0]
    assert record is not None
    assert record.short_description == "Parcel lost"
    assert record.description == "Ana Lima: Hello, my parcel is late"


async def test_an_invitation_is_declined_with_shift_y_and_a_declined_one_is_told(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        bob = await h.agent("bob")
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            number = await chat_ready(h, app, pilot)
            # Bob declines alice's invitation: her console says so.
            await main(app).inbox.client.request(InviteAgent(interaction=number, agent="bob"))
            await bob.next_event(InvitationEvent)
            await bob.request(AnswerInvitation(interaction=number, accept=False))
            await until(
                pilot,
                lambda: any("declined to join" in n.message for n in app._notifications),
            )
            # Bob's own chat, and an invitation for alice, which she declines with Y.
            record = await h.host.inbox.start_conversation(channel="chat", customer="web-bo")
            while (offer := await bob.next_event(OfferEvent)).view.item.id != record.item:
                pass
            await bob.accept(offer.view.offer.id)
            await bob.request(InviteAgent(interaction=record.number, agent="alice"))
            await until(pilot, lambda: record.number in app.state.invitations)
            await pilot.press("escape", "Y")
            declined = await bob.next_event(InvitationDeclined)
            assert (declined.interaction, declined.agent) == (record.number, "alice")
            await until(pilot, lambda: not app.state.invitations)
        await bob.close()


def test_declined_transfers_and_invitations_become_one_line_notes() -> None:
    state = ConsoleState()
    assert (
        state.apply(
            TransferDeclined(
                interaction="IMS0001001",
                item="W1",
                to_agent="bob",
                state="expired",
                reason="bob did not answer in time",
            )
        )
        == set()
    )
    state.apply(InvitationDeclined(interaction="IMS0001001", agent="chloe"))
    assert state.notes == [
        "Transfer of IMS0001001 to bob expired: bob did not answer in time; the chat stays yours",
        "chloe declined to join IMS0001001",
    ]


async def test_attach_work_note_incident_and_archive(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        file = tmp_path / "receipt.txt"
        file.write_text("paid 12.50\n")
        async with app.run_test(size=SIZE) as pilot:
            number = await chat_ready(h, app, pilot)
            await pilot.press("escape", "f")
            await until(pilot, lambda: isinstance(app.screen, Prompt))
            await pilot.press(*str(file), "enter")
            await until(pilot, lambda: "sent a file: receipt.txt" in transcript_text(app))
            attachments = await h.host.inbox.store.list_attachments(number)
            assert [a.name for a in attachments] == ["receipt.txt"]

            await pilot.press("o")
            await until(pilot, lambda: isinstance(app.screen, Prompt))
            await pilot.press(*"VIP customer", "enter")
            await until(pilot, lambda: "VIP customer" in transcript_text(app))

            await pilot.press("I")
            await until(pilot, lambda: isinstance(app.screen, RecordForm))
            await until(pilot, lambda: app.screen.query_one("#form-short").value == "Hello!")
            await pilot.press("ctrl+s")
            await until(pilot, lambda: app.state.chats[number].record.incident == "INC0001001")

            await pilot.press("C")
            await until(pilot, lambda: isinstance(app.screen, RecordForm))
            await pilot.press("ctrl+s")
            await until(pilot, lambda: app.state.chats[number].record.case == "CS0001001")

            await pilot.press("e")
            await say_yes(app, pilot)
            await until(pilot, lambda: app.state.chats[number].record.state == "wrap_up")
            await pilot.press("w")
            await until(pilot, lambda: app.state.chats[number].record.state == "closed_complete")
            await pilot.press("A")
            await until(pilot, lambda: app.state.chats[number].record.archived)
            stored = await h.host.inbox.store.get_interaction(number)
            assert stored.state == "closed_complete" and stored.incident == "INC0001001"
            assert stored.case == "CS0001001" and stored.archived


async def test_presence_help_palette_and_remapped_keys(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h, keymap={"offer.accept": "f9", "presence.away": "f8"})
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            await pilot.press("f5")
            await until(pilot, lambda: app.state.me.presence == "Available")
            await pilot.press("f8")
            await until(pilot, lambda: app.state.me.presence == "Away")
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            rows = app.screen.rows  # type: ignore[attr-defined]
            # The help lines of tui/actions.py, with the keys in force.
            assert ("offer", "f9", "Accept the selected offer") in rows, rows
            assert ("chat", "t", "Transfer the chat to an agent or a queue") in rows, rows
            await pilot.press("escape")
            # The command palette reaches every action by name.
            await pilot.press("ctrl+p")
            await pilot.pause(0.2)
            await pilot.press(*"presence: available", "enter")
            await until(pilot, lambda: app.state.me.presence == "Available")
            await h.host.inbox.start_conversation(channel="chat", customer="c", customer_name="C")
            await until(pilot, lambda: app.state.offers)
            await pilot.press("f9")
            await until(pilot, lambda: not app.state.offers and app.state.chats)


async def test_next_unread_jumps_and_mark_read_clears(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            first = await chat_ready(h, app, pilot, "Ana")
            second = await chat_ready(h, app, pilot, "Bea")
            screen = main(app)
            await h.host.inbox.customer_message(first, "web-ana", "anyone?", "c2")
            await until(pilot, lambda: app.state.chats[first].unread)
            screen.current = second
            await pilot.press("escape", "n")
            await until(pilot, lambda: screen.current == first)
            await pilot.press("m")
            await until(pilot, lambda: app.state.chats[first].unread == 0)


async def test_disconnect_is_shown_and_typed_messages_are_sent_after(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            number = await chat_ready(h, app, pilot)
            app.client.backoff = (0.3, 0.5)
            await app.client._ws.close()  # type: ignore[union-attr]
            await until(pilot, lambda: app.connection == "reconnecting", timeout=3)
            status = str(main(app).query_one("#connection").render())
            assert "reconnecting" in status
            await pilot.press("c", *"sorry, my line dropped", "enter")
            await until(pilot, lambda: app.connection == "connected")
            await until(pilot, lambda: "sorry, my line dropped" in transcript_text(app))
            stored = [m.body for m in await h.host.inbox.store.list_messages(number)]
            assert stored.count("sorry, my line dropped") == 1


async def test_narrow_terminal_shows_one_pane_at_a_time(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            screen = main(app)
            await until(pilot, lambda: screen.has_class("narrow"))
            visible = [
                p
                for p in ("pane-queues", "pane-chat", "pane-record")
                if screen.query_one(f"#{p}").display
            ]
            assert visible == ["pane-chat"]
            await pilot.press("f2")
            await pilot.pause(0.1)
            assert screen.query_one("#pane-queues").display
            assert not screen.query_one("#pane-chat").display


async def test_history_lists_my_past_interactions(tmp_path: Path) -> None:
    from core.model import Participant
    from screens.history import HistoryScreen
    from tui.widgets.virtual_list import VirtualList

    async with running_host(tmp_path) as h:
        for i in range(25):
            await h.host.inbox.store.create_interaction(
                item=f"old{i}",
                channel="chat",
                customer=f"c{i}",
                opened_at=1_700_000_000.0 + i,
                customer_name=f"Old {i}",
                participants=(Participant(agent="alice", joined_at=1_700_000_000.0),),
            )
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            await pilot.press("h")
            await until(pilot, lambda: isinstance(app.screen, HistoryScreen))
            rows = app.screen.query_one("#history-list", VirtualList)
            await until(pilot, lambda: rows.row_count == 25)
            assert rows.rows[0].customer_name == "Old 24"  # newest first
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, MainScreen))


async def incident_raised(h: RunningHost, app: InboxApp, pilot) -> str:  # type: ignore[no-untyped-def]
    """A chat taken, and INC0001001 raised from it with the form's defaults: its number."""
    number = await chat_ready(h, app, pilot)
    await pilot.press("escape", "I")
    await until(pilot, lambda: isinstance(app.screen, RecordForm))
    await pilot.press("ctrl+s")
    await until(pilot, lambda: app.state.chats[number].record.incident == "INC0001001")
    return number


async def test_a_screen_closed_while_it_waits_on_the_host_ends_its_workers(
    tmp_path: Path,
) -> None:
    """Escape takes a screen down while its workers may still wait on the host. Each of these
    screens is a WorkingScreen, whose workers are cancelled before its widgets go (the answer
    arriving in between is forced in tests/test_screen_workers.py, where Textual's own Screen
    crashes), and the console carries on: back on the main screen, and a screen opens again."""
    from screens.audit import AuditScreen
    from screens.history import HistoryScreen
    from screens.records import RecordsScreen
    from screens.working import WorkingScreen

    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            await incident_raised(h, app, pilot)
            for key, kind in (("h", HistoryScreen), ("R", AuditScreen), ("v", RecordsScreen)):
                await pilot.press(key)
                await until(pilot, lambda kind=kind: isinstance(app.screen, kind))  # type: ignore[misc]
                closed = app.screen
                assert isinstance(closed, WorkingScreen)
                await pilot.press("escape")
                await until(pilot, lambda closed=closed: not closed.is_attached)  # type: ignore[misc]
            assert isinstance(app.screen, MainScreen), app.screen
            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, RecordsScreen))


async def test_supervisor_view_is_for_supervisors_only(tmp_path: Path) -> None:
    from screens.supervisor import SupervisorScreen

    async with running_host(tmp_path) as h:
        agent = console(h)
        async with agent.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(agent.screen, MainScreen))
            await pilot.press("s")
            await pilot.pause(0.2)
            assert isinstance(agent.screen, MainScreen)
        boss = console(h, user="dan")
        async with boss.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(boss.screen, MainScreen))
            await pilot.press("s")
            await until(pilot, lambda: isinstance(boss.screen, SupervisorScreen))
            screen = boss.screen
            await until(pilot, lambda: any(r.agent.id == "alice" for r in screen.loads))
            dan = next(r for r in screen.loads if r.agent.id == "dan")
            assert dan.agent.role == "supervisor" and dan.capacity == 4


async def test_f8_accepts_while_typing_in_the_composer(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            number = await chat_ready(h, app, pilot, "Ana")
            await pilot.press("c", *"half a sent")
            composer = app.screen.query_one(Composer)
            assert composer.has_focus and composer.value == "half a sent"
            await h.host.inbox.start_conversation(
                channel="chat", customer="web-bea", customer_name="Bea"
            )
            await until(pilot, lambda: app.state.offers)
            await pilot.press("f8")  # accept without leaving the composer
            await until(pilot, lambda: len(app.state.chats) == 2)
            assert composer.value == "half a sent" and number in app.state.chats


def toasts(app: InboxApp) -> str:
    return "\n".join(str(n.message) for n in app._notifications)


async def test_composer_keeps_pasted_lines_and_sends_them(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            number = await chat_ready(h, app, pilot)
            await pilot.press("c")
            composer = app.screen.query_one(Composer)
            await until(pilot, lambda: composer.has_focus)
            # To the app, as a terminal's bracketed paste arrives: it hands it to the focus.
            app.post_message(events.Paste("First line\nsecond line"))
            await until(pilot, lambda: composer.text == "First line\nsecond line")
            # ctrl+j is the newline key: Enter would send.
            await pilot.press("ctrl+j", *"third")
            await until(pilot, lambda: composer.text == "First line\nsecond line\nthird")
            await pilot.press("enter")
            await until(pilot, lambda: composer.text == "")
            body = "First line\nsecond line\nthird"

            async def stored() -> list[str]:
                got = await app.client.request(GetTranscript(interaction=number))
                return [m.body for m in got.messages]  # type: ignore[attr-defined]

            deadline = asyncio.get_running_loop().time() + 5
            while body not in await stored():
                assert asyncio.get_running_loop().time() < deadline, await stored()
                await pilot.pause(0.1)
            await until(pilot, lambda: "second line" in transcript_text(app))


async def test_composer_says_when_a_paste_is_over_the_limit(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            await chat_ready(h, app, pilot)
            await pilot.press("c", *"Dear Ana")
            composer = app.screen.query_one(Composer)
            await until(pilot, lambda: composer.text == "Dear Ana")
            app.post_message(events.Paste("x" * 108_000))
            await until(pilot, lambda: "at most 16,000 characters" in toasts(app))
            assert composer.text == "Dear Ana"  # the draft is kept, nothing half-pasted


async def test_editor_key_without_an_editor_says_how_to_set_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.delenv("EDITOR", raising=False)
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            await chat_ready(h, app, pilot)
            await pilot.press("c", *"kept", "ctrl+o")
            await until(pilot, lambda: "Set $VISUAL or $EDITOR" in toasts(app))
            assert app.screen.query_one(Composer).text == "kept"


async def messaging_ready(h: RunningHost, app: InboxApp, pilot, customer: str) -> str:  # type: ignore[no-untyped-def]
    """A messaging customer writes and the (Available) agent accepts; returns the number."""
    record = await h.host.inbox.start_conversation(
        channel="messaging", customer=f"msg-{customer.lower()}", customer_name=customer
    )
    await h.host.inbox.customer_message(record.number, f"msg-{customer.lower()}", "Hi", "m1")
    await until(pilot, lambda: app.state.offers)
    await pilot.press("a")
    await until(pilot, lambda: any(c.interaction == record.number for c in app.state.ongoing))
    return record.number


async def test_ongoing_tray_stays_while_away_and_its_cards_open(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            screen = main(app)
            await until(pilot, lambda: screen.drawn)
            tray = screen.query_one(OngoingTray)
            # The demo's presences include messaging (Available, Messaging-only): the tray
            # shows even before any conversation, and whatever the current presence is.
            assert app.state.async_channels == ["messaging"]
            await until(pilot, lambda: tray.display)
            await pilot.press("f5")
            await until(pilot, lambda: app.state.me and app.state.me.presence == "Available")
            first = await messaging_ready(h, app, pilot, "Ana")
            second = await messaging_ready(h, app, pilot, "Bea")
            await pilot.press("f6")
            await until(pilot, lambda: app.state.me and app.state.me.presence == "Away")
            await pilot.pause(0.1)
            assert tray.display, "the tray must stay while Away, when unread piles up"
            assert {c.interaction for c in tray.cards} == {first, second}
            tray.focus()
            await until(pilot, lambda: app.focused is tray)
            # The cursor follows its card as news re-sorts them; j moves to the other one.
            chosen = tray.selected()
            assert chosen is not None
            target = first if chosen.interaction == second else second
            await pilot.press("j")
            await until(pilot, lambda: tray.selected() and tray.selected().interaction == target)  # type: ignore[union-attr]
            await pilot.press("enter")
            await until(pilot, lambda: screen.current == target)
            await until(pilot, lambda: target in str(screen.query_one("#chat-title").render()))
            assert isinstance(app.focused, Composer)
            # k wraps back to the other card, and Enter opens that one.
            tray.focus()
            await until(pilot, lambda: app.focused is tray)
            await pilot.press("k", "enter")
            await until(pilot, lambda: screen.current == chosen.interaction)


async def test_next_unread_reaches_unanswered_live_chats_in_priority_order(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            ana = await chat_ready(h, app, pilot, "Ana")
            cy = await chat_ready(h, app, pilot, "Cy")
            # A gold customer's chat: routed with a higher priority, answered first by `n`.
            record = await h.host.inbox.start_conversation(
                channel="chat", customer="web-bea", customer_name="Bea", priority=1
            )
            await h.host.inbox.customer_message(record.number, "web-bea", "Urgent!", "c1")
            bea = record.number
            await until(pilot, lambda: app.state.offers)
            await pilot.press("a")
            await until(pilot, lambda: bea in app.state.chats)
            screen = main(app)
            screen.open_chat(cy)  # as Enter on its card in the chat list does
            await pilot.press(*"Hello Cy", "enter")
            state = app.state
            await until(pilot, lambda: state.unanswered_since(state.chats[cy]) is None)
            # Read but unanswered: marking read does not take a chat out of `n`'s reach.
            for number in (ana, bea):
                await until(pilot, lambda n=number: state.chats[n].messages)
                await app.client.request(
                    MarkRead(interaction=number, seq=max(state.chats[number].messages))
                )
            await until(pilot, lambda: not state.chats[ana].unread and not state.chats[bea].unread)
            screen.current = cy
            await pilot.press("escape", "n")
            await until(pilot, lambda: screen.current == bea)
            await pilot.press("n")
            await until(pilot, lambda: screen.current == ana)
            await pilot.press("n")
            await until(pilot, lambda: screen.current == bea)


def panel_text(app: InboxApp, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


def static_text(widget: Static) -> str:
    """What a Static holds, as plain text, whatever its renderable (a Rich table, say)."""
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(widget.content)
    return out.getvalue()


async def test_attachments_panel_and_ongoing_tray_follow_the_conversation(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            number = await chat_ready(h, app, pilot)
            assert "none" in panel_text(app, "#attachments")
            await app.client.request(
                AttachFile(interaction=number, name="invoice.pdf", data=b"%PDF-1.4 demo")
            )
            # Shown at once, not after a restart.
            await until(pilot, lambda: "invoice.pdf" in panel_text(app, "#attachments"))
            conversation = await messaging_ready(h, app, pilot, "Mia")
            await until(pilot, lambda: conversation in panel_text(app, "#ongoing"))
            bob = await h.agent("bob")  # only now, or routing would give bob the conversation
            await app.client.request(TransferToAgent(interaction=conversation, agent="bob"))
            transfer = None
            while transfer is None or transfer.view.interaction != conversation:
                transfer = await bob.next_event(OfferEvent)
            await bob.accept(transfer.view.offer.id)
            # Transferred away: its card leaves the tray.
            await until(pilot, lambda: conversation not in panel_text(app, "#ongoing"))
            assert not app.state.ongoing and app.state.unread_conversations == 0
        await bob.close()


async def test_accepting_an_offer_selects_its_chat(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            first = await chat_ready(h, app, pilot, "Ana")
            screen = main(app)
            assert screen.current == first
            second = await chat_ready(h, app, pilot, "Bea")
            await until(pilot, lambda: screen.current == second)
            await until(pilot, lambda: second in str(screen.query_one("#chat-title").render()))


async def test_offer_cards_say_what_the_customer_wants_and_why_on_r(tmp_path: Path) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            await available(app, pilot)
            record = await h.host.inbox.start_conversation(
                channel="chat",
                customer="web-ana",
                customer_name="Ana",
                attributes={"subject": "Charged twice for order 1234"},
            )
            await h.host.inbox.customer_message(record.number, "web-ana", "Hello", "c1")
            await until(pilot, lambda: app.state.offers)
            offers = main(app).query_one(OfferList)
            await until(pilot, lambda: "Charged twice" in str(offers.render()))
            reason = next(iter(app.state.offers.values())).offer.reason
            assert reason[:20] not in str(offers.render())
            offers.focus()
            await until(pilot, lambda: app.focused is offers)
            await pilot.press("r")
            await until(pilot, lambda: reason[:20] in str(offers.render()))
            assert "Charged twice" in str(offers.render())


async def test_an_offer_without_a_subject_shows_the_customers_first_message(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            await available(app, pilot)
            record = await h.host.inbox.start_conversation(
                channel="chat", customer="web-ana", customer_name="Ana"
            )
            # The offer goes out before the customer has typed anything: the reason is all.
            await until(pilot, lambda: app.state.offers)
            offers = main(app).query_one(OfferList)
            reason = next(iter(app.state.offers.values())).offer.reason
            assert reason[:20] in str(offers.render())
            await h.host.inbox.customer_message(
                record.number, "web-ana", "My parcel\nnever arrived, order 88", "c1"
            )
            await until(pilot, lambda: "My parcel never arrived, order 88" in str(offers.render()))
            assert reason[:20] not in str(offers.render())


def burst(app: InboxApp, text: str) -> None:
    """Keys as a terminal delivers a burst (SSH, tmux send-keys -l, a paste): all queued on the
    app at once, none waiting for the one before it to be handled (Pilot's press does wait)."""
    from textual import events
    from textual.keys import _character_to_key

    for ch in text:
        key = "enter" if ch == "\r" else _character_to_key(ch)
        app.post_message(events.Key(key, None if ch == "\r" else ch))


@pytest.mark.parametrize(
    "opener",
    [
        pytest.param("c", id="c"),
        pytest.param("\r", id="enter-on-the-chat-list"),
    ],
)
async def test_keys_typed_behind_the_key_that_opens_the_composer_are_the_reply(
    tmp_path: Path, opener: str
) -> None:
    from tui.widgets.chat_list import ChatList

    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            number = await chat_ready(h, app, pilot)
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.focused, ChatList))
            # e ends, w closes, h opens History, ? opens Help, i invites: none of them may run.
            burst(app, f"{opener}Sure, which bill?\r")
            await until(pilot, lambda: "Sure, which bill?" in transcript_text(app))
            await pilot.pause(0.3)
            assert isinstance(app.screen, MainScreen), app.screen
            assert app.screen.query_one(Composer).value == ""
            stored = [m.body for m in await h.host.inbox.store.list_messages(number)]
            assert stored.count("Sure, which bill?") == 1
            assert app.state.chats[number].record.state == "work_in_progress"


def palette_rows(app: InboxApp) -> list[str]:
    from textual.command import CommandList

    options = app.screen.query_one(CommandList)
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


def keys_shown(app: InboxApp, name: str) -> set[str] | None:
    """The keys the palette shows after `name`, "chat: transfer (t, ^t)" -> {"t", "^t"}."""
    for row in palette_rows(app):
        if row.startswith(f"{name} ("):
            return set(row.removeprefix(f"{name} (").removesuffix(")").split(", "))
    return None


async def test_the_palette_shows_each_actions_keys_as_remapped(tmp_path: Path) -> None:
    from textual.command import CommandPalette

    async with running_host(tmp_path) as h:
        app = console(h, keymap={"chat.transfer": "f9"})
        async with app.run_test(size=SIZE) as pilot:
            # The remapped key, not the default t; the while-typing key as it is.
            for typed, name, keys in (
                ("transfer", "chat: transfer", {"f9", "^t"}),
                ("accept", "offer: accept", {"a", "f8"}),
            ):
                await until(pilot, lambda: isinstance(app.screen, MainScreen))
                await pilot.press("ctrl+p")
                await until(pilot, lambda: isinstance(app.screen, CommandPalette))
                await pilot.press(*typed)
                await until(pilot, lambda name=name, keys=keys: keys_shown(app, name) == keys)
                await pilot.press("escape")
            # Help lists the same keys, from the same place.
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            rows = app.screen.rows  # type: ignore[attr-defined]
            transfer = "Transfer the chat to an agent or a queue"
            assert {("chat", "f9", transfer), ("chat", "^t", transfer)} <= set(rows), rows
            assert not any(r[1] == "t" and r[2] == transfer for r in rows), rows


async def test_80x24_shows_the_offer_and_its_countdown_from_every_pane(tmp_path: Path) -> None:
    from textual.widgets import Footer

    from tui.widgets.offer_line import OfferLine

    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            await pilot.press("f5")
            await until(pilot, lambda: app.state.me.presence == "Available")
            await h.host.inbox.start_conversation(
                channel="chat", customer="web-cara", customer_name="Cara"
            )
            await until(pilot, lambda: app.state.offers)
            line = app.screen.query_one(OfferLine)
            footer = app.screen.query_one(Footer)
            for key, pane in (("f2", "pane-queues"), ("f4", "pane-record"), ("f3", "pane-chat")):
                await pilot.press(key)
                await until(pilot, lambda pane=pane: main(app).shown_pane == pane)
                assert line.display and line.region.height == 1 and line.region.y == 22
                shown = str(line.render())
                assert shown.startswith("Offer: Cara  chat") and shown.rstrip().endswith("s")
                seconds = int(shown.rstrip().removesuffix("s").split()[-1])
                assert 0 < seconds <= 60, shown
            # The footer names the pane keys on a terminal this small.
            keys = {k.key_display for k in footer.query("FooterKey")}  # type: ignore[attr-defined]
            assert {"F2", "F3", "F4"} <= keys, keys


async def test_an_invitation_stays_on_screen_from_every_pane_until_answered(
    tmp_path: Path,
) -> None:
    from tui.widgets.invitation_bar import InvitationBar

    async with running_host(tmp_path) as h:
        bob = await h.agent("bob")
        app = console(h)
        async with app.run_test(size=(80, 24)) as pilot:
            # Away: online, so she can be invited, but bob's customers are not offered to her.
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            await main(app).inbox.client.set_presence("Away")
            await until(pilot, lambda: app.state.me and app.state.me.presence == "Away")

            async def bobs_chat(customer: str) -> str:
                record = await h.host.inbox.start_conversation(channel="chat", customer=customer)
                while (offer := await bob.next_event(OfferEvent)).view.item.id != record.item:
                    pass
                await bob.accept(offer.view.offer.id)
                return record.number

            first = await bobs_chat("web-bo")
            await bob.request(InviteAgent(interaction=first, agent="alice"))
            bar = app.screen.query_one(InvitationBar)
            await until(pilot, lambda: bar.display)
            # Longer than a toast lives, on each pane of a small terminal.
            await pilot.pause(6)
            for key, pane in (("f2", "pane-queues"), ("f4", "pane-record"), ("f3", "pane-chat")):
                await pilot.press(key)
                await until(pilot, lambda pane=pane: main(app).shown_pane == pane)
                assert bar.display and bar.region.height == 1
                shown = str(bar.render())
                assert f"bob asks you to join {first}" in shown, shown
                assert "y join · Y decline" in shown
            await pilot.press("escape", "y")
            await until(pilot, lambda: first in app.state.chats)
            await until(pilot, lambda: not bar.display)
            joined = await h.host.inbox.store.get_interaction(first)
            assert joined is not None
            assert any(p.agent == "alice" and p.role == "invited" for p in joined.participants)

            # An invitation to a chat that closes before the answer goes away by itself.
            second = await bobs_chat("web-bea")
            await bob.request(InviteAgent(interaction=second, agent="alice"))
            await until(pilot, lambda: second in app.state.invitations and bar.display)
            await bob.end_chat(second)
            await bob.request(CloseRecord(interaction=second))
            await until(pilot, lambda: not app.state.invitations and not bar.display)
        await bob.close()


async def test_a_live_chat_counts_down_to_its_first_reply_deadline(tmp_path: Path) -> None:
    from tui.widgets.reply_countdown import ReplyCountdown

    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            number = await chat_ready(h, app, pilot)
            due = app.screen.query_one(ReplyCountdown)
            await until(pilot, lambda: due.display)
            first = str(due.render())
            # The demo's chat queue takes a chat back after 120 s without a first reply.
            assert first.startswith("First reply due in 1:5"), first
            assert first.endswith("or the chat goes to another agent")
            await until(pilot, lambda: str(due.render()) != first, timeout=3)  # it counts
            # A console that logs in afresh learns the same deadline from its snapshot.
            other = InboxClient(h.agent_url)
            await other.connect()
            logged = await other.login("alice", DEMO_PASSWORD)
            item = h.host.inbox.routing.router.items[app.state.chats[number].record.item]
            assert item.reply_by is not None
            assert logged.snapshot.reply_by == {number: item.reply_by}
            await other.close()
            await pilot.press("c", *"Hi Ana", "enter")
            await until(pilot, lambda: not due.display)
            assert app.state.chats[number].reply_by is None


async def test_the_record_pane_names_the_conversation_a_new_one_follows_up(
    tmp_path: Path,
) -> None:
    # No reopen window: a customer writing after the close starts a linked conversation.
    text = fast_config_text().replace('mode = "sync"\n', 'mode = "sync"\nreopen_window = 0\n', 1)
    async with running_host(tmp_path, parse_config(text, name="no-reopen.toml")) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            old = await chat_ready(h, app, pilot)
            await pilot.press("e")
            await say_yes(app, pilot)
            await until(pilot, lambda: app.state.chats[old].record.state == "wrap_up")
            await pilot.press("w")
            await until_closed(h, app, pilot, old)
            message, _ = await h.host.inbox.customer_message(old, "web-ana", "Me again", "c2")
            new = message.interaction
            assert new != old
            await until(pilot, lambda: app.state.offers)
            await pilot.press("a")
            await until(pilot, lambda: new in app.state.chats)

            def record_pane() -> str:
                out = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
                out.print(app.screen.query_one("#record-details", Static).content)
                return " ".join(out.export_text().split())

            await until(pilot, lambda: f"Number {new}" in record_pane())
            assert f"Follows up {old}" in record_pane()


async def test_records_screen_changes_state_adds_a_note_and_shows_another_consoles_change(
    tmp_path: Path,
) -> None:
    async with running_host(tmp_path) as h:
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            number = await incident_raised(h, app, pilot)
            pane = main(app).query_one("#record-details", Static)
            await until(pilot, lambda: "INC0001001 · new · Alice Martin" in static_text(pane))

            await pilot.press("O")  # the linked record, opened from the record pane
            await until(pilot, lambda: isinstance(app.screen, RecordsScreen))
            detail = app.screen.query_one("#record-detail", Static)

            def shown() -> str:
                return static_text(detail)

            await until(pilot, lambda: "INC0001001 (incident)" in shown())
            await pilot.press("t")
            await until(pilot, lambda: isinstance(app.screen, Picker))
            await pilot.press(*"in prog", "enter")
            await until(pilot, lambda: "in progress" in shown())
            assert (await h.host.inbox.store.get_record("INC0001001")).state == "in_progress"

            await pilot.press("o")
            await until(pilot, lambda: isinstance(app.screen, Prompt))
            await pilot.press(*"Called the customer back", "enter")
            await until(pilot, lambda: "Called the customer back" in shown())
            notes = await h.host.inbox.store.list_record_notes("INC0001001")
            assert [(n.author, n.body) for n in notes] == [("alice", "Called the customer back")]

            # A supervisor's console changes it: this one shows it without being asked.
            dan = await h.agent("dan", presence="Away")
            await dan.request(UpdateRecord(number="INC0001001", state="on_hold", assignee="bob"))
            await until(pilot, lambda: "on hold" in shown() and "Assignee    bob" in shown())
            await dan.request(AddRecordNote(number="INC0001001", body="Waiting for parts"))
            await until(pilot, lambda: "Waiting for parts" in shown())

            # The list: assigned to bob, so not "mine"; under "all" (its creator reads it).
            await pilot.press("3")
            rows = app.screen.query_one("#records-list", VirtualList)
            await until(pilot, lambda: [r.number for r in rows.rows] == ["INC0001001"])
            await pilot.press("1")
            await until(pilot, lambda: rows.row_count == 0)
            # Given to alice elsewhere: it comes into her list by itself.
            await dan.request(UpdateRecord(number="INC0001001", assignee="alice"))
            await until(pilot, lambda: [r.number for r in rows.rows] == ["INC0001001"])
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            await until(pilot, lambda: "INC0001001 · on hold · Alice Martin" in static_text(pane))

            # A second chat, linked from the records screen: `l` offers the chat underneath.
            second = await chat_ready(h, app, pilot, "Bo")
            await pilot.press("escape", "v")
            await until(pilot, lambda: isinstance(app.screen, RecordsScreen))
            detail = app.screen.query_one("#record-detail", Static)
            await until(pilot, lambda: "INC0001001 (incident)" in shown())
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, Prompt))
            assert app.screen.query_one(Input).value == second
            await pilot.press("enter")
            await until(pilot, lambda: f"{number}, {second}" in shown())
            view = await dan.request(GetRecord(number="INC0001001"), RecordView)
            assert view.interactions == [number, second]


async def test_files_key_shows_a_text_file_and_saves_without_overwriting(tmp_path: Path) -> None:
    downloads = tmp_path / "dl"
    async with running_host(tmp_path) as h:
        app = console(h, download_dir=str(downloads))
        async with app.run_test(size=SIZE) as pilot:
            number = await chat_ready(h, app, pilot)
            await pilot.press("escape", "d")
            await until(pilot, lambda: "No files in this chat yet" in toasts(app))
            text = b"order 1234\nline two\n"
            await h.host.inbox.customer_attach(number, "web-ana", "notes.txt", "text/plain", text)
            await until(pilot, lambda: app.state.chats[number].attachments)
            await pilot.press("d")
            await until(pilot, lambda: isinstance(app.screen, Picker))
            await pilot.press(*"notes", "enter")
            await until(pilot, lambda: isinstance(app.screen, Picker) and "Show" in picker(app))
            await pilot.press(*"show", "enter")
            await until(pilot, lambda: isinstance(app.screen, FileView))
            assert app.screen.query_one(TextArea).text == text.decode()
            await pilot.press("escape")
            for saved in (1, 2):
                await until(pilot, lambda: isinstance(app.screen, MainScreen))
                await pilot.press("d")
                await until(pilot, lambda: isinstance(app.screen, Picker))
                await pilot.press("enter")
                await until(pilot, lambda: isinstance(app.screen, Picker) and "Save" in picker(app))
                await pilot.press(*"save", "enter")
                await until(pilot, lambda n=saved: len(list(downloads.glob("*"))) == n)
            assert (downloads / "notes.txt").read_bytes() == text
            assert (downloads / "notes (1).txt").read_bytes() == text


def picker(app: InboxApp) -> str:
    options = app.screen.query_one(OptionList)
    return " ".join(str(options.get_option_at_index(i).prompt) for i in range(options.option_count))


async def test_an_e_mail_conversation_shows_in_the_ongoing_tray(tmp_path: Path) -> None:
    async with mail_host(tmp_path) as (h, _):
        app = console(h)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, MainScreen))
            screen = main(app)
            await until(pilot, lambda: screen.drawn)
            assert "mail" in app.state.async_channels
            await pilot.press("f5")
            await until(pilot, lambda: app.state.me and app.state.me.presence == "Available")
            await send(h, customer_mail("My kettle is broken"))
            await until(pilot, lambda: app.state.offers)
            await pilot.press("a")
            tray = screen.query_one(OngoingTray)
            await until(pilot, lambda: any(c.customer_name == "Ann Lee" for c in tray.cards))

            def shown() -> str:
                return "\n".join(tray.render_line(y).text for y in range(tray.size.height))

            await until(pilot, lambda: "Ann Lee" in shown() and "My kettle is broken" in shown())
