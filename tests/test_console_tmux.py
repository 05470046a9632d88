"""The installed console in a real terminal (tmux), against a real `inbox-tui --server`.

What unit tests of the widgets cannot show: that the keys an agent presses reach the right
place through a real pty, and that the screen a real terminal gets shows what it should.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.host_process import INBOX_TUI, HostProcess, console_env, start_host, stop_host
from core.client import InboxClient
from core.demo import DEMO_PASSWORD
from core.protocol import AuditTrail, GetAudit, GetTranscript, OfferEvent, Transcript
from screens.confirm import READ_TIME
from tests.console_terminal import (
    MAIN_FOOTER,
    TMUX,
    Tmux,
    WidgetCustomer,
    accept_chat,
    host_process,
    log_in,
    reply_arrives,
    require_tool,
    take_chat_and_reply,
    tmux_session,
    widget_customer,
)


@pytest.fixture(autouse=True)
def tools() -> None:
    require_tool(TMUX, "tmux runs the console in a real terminal")


def start_console(term: Tmux, host: HostProcess, root: Path, user: str) -> None:
    term.start([str(INBOX_TUI), "--connect", host.agent_url, "--user", user], console_env(root))


async def test_accept_an_offer_and_reply(tmp_path: Path) -> None:
    with host_process(tmp_path / "host") as host, tmux_session(tmp_path / "tmux") as term:
        start_console(term, host, tmp_path / "console", "alice")
        await log_in(term, DEMO_PASSWORD, "Alice Martin")
        await take_chat_and_reply(term, host, "Hi Ana, your parcel ships today")


def shown_pane(screen: str) -> set[str]:
    titles = {"Queues": "queues", "Chats": "chat", "Interaction record": "record"}
    return {pane for title, pane in titles.items() if f"│ {title} " in screen}


async def test_narrow_terminal_shows_one_pane_at_a_time(tmp_path: Path) -> None:
    with host_process(tmp_path / "host") as host, tmux_session(tmp_path / "tmux", 80, 24) as term:
        start_console(term, host, tmp_path / "console", "alice")
        # Every label, field and the button, and the box's bottom border: the whole login
        # form fits 80x24 (it once overflowed, its bottom cut off behind a scrollbar).
        parts = ("inbox-tui", "Host", host.agent_url, "User", "alice", "Password", "Log in", "╰")
        await term.wait_until(
            lambda s: all(p in s for p in parts), f"all of {parts} on the login screen"
        )

        await log_in(term, DEMO_PASSWORD, "Alice Martin")
        # The chat pane first: it is where an agent spends the day.
        await term.wait_until(lambda s: shown_pane(s) == {"chat"}, "only the chat pane")
        for key, pane in (("F2", "queues"), ("F4", "record"), ("F3", "chat")):
            term.send_keys(key)
            await term.wait_until(
                lambda s, pane=pane: shown_pane(s) == {pane}, f"only the {pane} pane after {key}"
            )
            # Line 1 is the shown pane's top border: the one pane takes the whole width (the
            # queues and record panes once kept their wide-layout widths, 34 and 40).
            await term.wait_until(
                lambda s: len(s.splitlines()[1].rstrip()) == 80, f"the {pane} pane 80 wide"
            )


GREYS = {0, 7, 8, 15, 16, 59, 102, 145, 188, 231, *range(232, 256)}


def palette_colours(escapes: str) -> set[int]:
    return {int(n) for n in re.findall(r"[34]8;5;(\d+)", escapes)}


@pytest.mark.parametrize("no_color", [False, True], ids=["256-colour", "NO_COLOR"])
async def test_256_colour_terminal_and_no_color(tmp_path: Path, no_color: bool) -> None:
    with host_process(tmp_path / "host") as host, tmux_session(tmp_path / "tmux", 80, 24) as term:
        env = console_env(tmp_path / "console")
        env["TERM"] = "xterm-256color"
        env.pop("COLORTERM", None)  # no truecolor promised: the console must keep to 256
        if no_color:
            env["NO_COLOR"] = "1"
        term.start([str(INBOX_TUI), "--connect", host.agent_url, "--user", "alice"], env)
        await log_in(term, DEMO_PASSWORD, "Alice Martin")
        escapes = term.tmux("capture-pane", "-e", "-p", "-t", term.session).stdout
        assert "38;2;" not in escapes and "48;2;" not in escapes  # no 24-bit colour
        colours = palette_colours(escapes)
        assert colours, "the screen carries no colour information at all"
        if no_color:
            assert colours <= GREYS, f"colours despite NO_COLOR: {sorted(colours - GREYS)}"
        else:
            assert colours - GREYS, "a 256-colour terminal should get some colour"


def ended(customer: WidgetCustomer) -> bool:
    """Did the customer hear that the chat ended (wrap-up) or was closed?"""
    over = ("wrap_up", "closed_complete", "closed_abandoned")
    return any(f["t"] == "state" and f["state"] in over for f in customer.frames)


def chat_still_live(screen: str, number: str) -> bool:
    """The chat's title line says it is still in progress, and no dialog covers it."""
    return f"Ana Lima  {number}  work_in_progress" in screen and "Keys (Escape" not in screen


async def test_keys_typed_behind_c_in_one_burst_are_one_reply(tmp_path: Path) -> None:
    with host_process(tmp_path / "host") as host, tmux_session(tmp_path / "tmux") as term:
        start_console(term, host, tmp_path / "console", "alice")
        await log_in(term, DEMO_PASSWORD, "Alice Martin")
        async with widget_customer(host.widget_url) as customer:
            number = await accept_chat(term, customer)
            await term.wait_for(MAIN_FOOTER)  # the chat list has the focus: letters are keys
            # One send-keys -l: `c`, the reply and Enter reach the console as one burst, as
            # over SSH. e (end), w (close), h (History), ? (Help), i (invite) must not run.
            term.type("cSure, which bill?\r")
            await reply_arrives(term, customer, "Sure, which bill?")
            screen = await term.wait_until(
                lambda s: chat_still_live(s, number), "the chat, live, with no dialog"
            )
            for other in ("History", "End the conversation", "Close the conversation"):
                assert other not in screen, screen
            assert not ended(customer), customer.frames


@dataclass
class TwoCustomers:
    term: Tmux
    host: HostProcess
    ana: WidgetCustomer
    bruno: WidgetCustomer
    ana_number: str
    bruno_number: str


@contextlib.asynccontextmanager
async def alice_with_ana(
    tmp_path: Path,
) -> AsyncIterator[tuple[Tmux, HostProcess, WidgetCustomer, str]]:
    """Alice's console in tmux with Ana's live chat shown and the chat list focused: the
    terminal, the host, Ana and her chat's number."""
    with host_process(tmp_path / "host") as host, tmux_session(tmp_path / "tmux") as term:
        start_console(term, host, tmp_path / "console", "alice")
        await log_in(term, DEMO_PASSWORD, "Alice Martin")
        async with widget_customer(host.widget_url) as ana:
            number = await accept_chat(term, ana)
            await term.wait_for(MAIN_FOOTER)
            yield term, host, ana, number


@contextlib.asynccontextmanager
async def ana_in_chat_bruno_offered(tmp_path: Path) -> AsyncIterator[TwoCustomers]:
    """Alice's console in tmux: Ana's live chat shown, the chat list focused, Bruno offered."""
    async with (
        alice_with_ana(tmp_path) as (term, host, ana, ana_number),
        widget_customer(host.widget_url) as bruno,
    ):
        bruno_number = await bruno.start("Bruno Silva", "bruno@example.com")
        await term.wait_for("▶ Bruno Silva")
        yield TwoCustomers(term, host, ana, bruno, ana_number, bruno_number)


async def test_accept_compose_and_reply_in_one_burst_answer_the_accepted_chat(
    tmp_path: Path,
) -> None:
    """`a`, `c`, the reply and Enter, as a quick agent types them over SSH: the offer is
    accepted and the reply goes to that customer. Twice it did not: `c` ran before `a` (the
    reply went nowhere and `a` into the composer), then the reply was sent before the accepted
    chat had opened, so it went to the chat shown before it, or was dropped."""
    async with ana_in_chat_bruno_offered(tmp_path) as two:
        two.term.type("acOk\r")
        await reply_arrives(two.term, two.bruno, "Ok")
        shown = f"Bruno Silva  {two.bruno_number}  work_in_progress"
        await two.term.wait_until(lambda s: shown in s, "Bruno's chat shown")
        assert not any(f["t"] == "message" and f["from"] == "agent" for f in two.ana.frames)


async def test_a_reason_typed_behind_x_goes_into_its_prompt(tmp_path: Path) -> None:
    """`x` and a reason in one burst: the reason is the prompt's. The prompt once came up
    only after the burst had run as commands: "they are busy" opened the end question on `e`
    and answered it on `y`, ending Ana's live chat."""
    async with ana_in_chat_bruno_offered(tmp_path) as two:
        bob = InboxClient(two.host.agent_url)
        await bob.connect()
        await bob.login("bob", DEMO_PASSWORD)
        await bob.set_presence("Available")
        two.term.type("xthey are busy\r")
        # Rejected with that reason, the chat goes to Bob, who has the more room.
        await two.term.wait_gone("▶ Bruno Silva")
        offer = await bob.next_event(OfferEvent)
        assert offer.view.customer_name == "Bruno Silva"
        # The whole reason went into the prompt (keys typed before its field had the focus
        # were once lost, and an empty reason sent).
        trail = await bob.request(GetAudit(item=two.bruno_number), AuditTrail)
        await bob.close()
        rejected = [e.reason for e in trail.entries if e.kind == "offer_rejected"]
        assert rejected == ["alice rejected: they are busy"], trail.entries
        screen = await two.term.wait_until(
            lambda s: chat_still_live(s, two.ana_number) and MAIN_FOOTER in s,
            "Ana's chat live, no dialog",
        )
        assert "Reject this offer" not in screen, screen
        assert not ended(two.ana), two.ana.frames


async def test_a_name_typed_behind_t_goes_into_the_transfer_picker(tmp_path: Path) -> None:
    """`t`, a colleague's name and Enter in one burst transfer the chat to that colleague.
    The picker once opened only when the host had named who was online, and the keys typed
    meanwhile were held back from the screen and then lost: the picker came up empty."""
    async with alice_with_ana(tmp_path) as (term, host, _, number):
        bob = InboxClient(host.agent_url)
        await bob.connect()
        await bob.login("bob", DEMO_PASSWORD)
        await bob.set_presence("Available")
        term.type("tbob\r")
        offer = await bob.next_event(OfferEvent)
        while offer.view.offer.kind != "transfer":
            offer = await bob.next_event(OfferEvent)
        await bob.close()
        assert offer.view.interaction == number
        await term.wait_for("Transfer requested")


async def test_a_word_typed_off_the_composer_cannot_end_a_live_chat(tmp_path: Path) -> None:
    """ "every", typed with the chat list focused, opens the end question on its `e`; the `y`
    behind it in the same burst is not an answer (the question was answered before anyone
    could read it, and the chat ended)."""
    async with alice_with_ana(tmp_path) as (term, _, ana, number):
        term.type("every")
        await term.wait_for("End the conversation with Ana Lima?")
        await asyncio.sleep(1.0)  # the burst has long been handled
        assert "End the conversation with Ana Lima?" in term.capture()
        term.send_keys("Escape")
        await term.wait_until(lambda s: chat_still_live(s, number), "the chat still live")
        assert not ended(ana), ana.frames


async def test_a_reason_typed_behind_a_supervisors_key_goes_into_its_prompt(
    tmp_path: Path,
) -> None:
    """A supervisor closing a chat types `x`, the reason and Enter in one burst: the reason
    goes into the prompt and the close question follows. The prompt once came up after the
    burst had run on the floor: "spam" asked for presence (`p`), and opened the reassign (`a`)
    and move (`m`) pickers."""
    with host_process(tmp_path / "host") as host, tmux_session(tmp_path / "tmux") as term:
        alice = InboxClient(host.agent_url)
        await alice.connect()
        await alice.login("alice", DEMO_PASSWORD)
        await alice.set_presence("Available")
        async with widget_customer(host.widget_url) as ana:
            number = await ana.start("Ana Lima", "ana@example.com")
            offer = await alice.next_event(OfferEvent)
            await alice.accept(offer.view.offer.id)
            start_console(term, host, tmp_path / "console", "dan")
            await log_in(term, DEMO_PASSWORD, "Dan Reyes")
            term.type("s")
            await term.wait_for("1 of 1 open")
            term.type("xspam\r")
            screen = await term.wait_for(f"Close {number} with Ana Lima now?")
            for other in ("Give ", "Move ", "Pick an agent"):
                assert other not in screen, screen
            await asyncio.sleep(READ_TIME)
            term.type("n")
            await term.wait_gone(f"Close {number} with Ana Lima now?")
            assert not ended(ana), ana.frames
        await alice.close()


async def test_composer_shortcuts_arrive_through_tmux_while_typing(tmp_path: Path) -> None:
    """The while-typing keys by the names tmux sends: none is text, each opens its dialog, and
    the half-written reply is still there after it (alt+letters never arrived at all)."""
    with host_process(tmp_path / "host") as host, tmux_session(tmp_path / "tmux") as term:
        start_console(term, host, tmp_path / "console", "alice")
        await log_in(term, DEMO_PASSWORD, "Alice Martin")
        async with widget_customer(host.widget_url) as customer:
            number = await accept_chat(term, customer)
            term.send_keys("c")
            await term.wait_until(lambda s: MAIN_FOOTER not in s, "the composer focused")
            # Answered first, so that next-unread (ctrl+n, last below) has nothing to go to
            # and says so: an unanswered chat is where it would go.
            term.type("Hello Ana, one moment")
            term.send_keys("Enter")
            await term.wait_for("Alice Martin: Hello Ana, one moment")
            term.type("half a reply")
            await term.wait_for("half a reply")
            dialogs = (
                ("C-t", "Transfer to an agent or a queue"),
                ("C-g", "Add an agent"),
                ("C-l", "Attach a file: path"),
                ("C-r", "Insert a template"),
                ("C-f", "End the conversation with Ana Lima?"),
                ("C-y", "Close the conversation with Ana Lima?"),
            )
            for key, title in dialogs:
                term.send_keys(key)
                await term.wait_for(title)
                term.send_keys("Escape")
                await term.wait_gone(title)
                await term.wait_for("half a reply")
            term.send_keys("C-n")
            await term.wait_for("Nothing unread")
            term.send_keys("F8")
            await term.wait_for("No offer to accept")
            # The reply was never sent, and the chat is as it was.
            term.send_keys("Enter")
            await reply_arrives(term, customer, "half a reply")
            await term.wait_until(lambda s: chat_still_live(s, number), "the chat still live")


async def test_a_restarted_console_takes_a_typed_password_as_a_password(tmp_path: Path) -> None:
    """With a saved session the console once skipped the form: the password typed from habit
    ran as commands on the main screen (its w closed a live chat)."""
    console_root = tmp_path / "console"
    with host_process(tmp_path / "host") as host:
        async with widget_customer(host.widget_url) as customer:
            with tmux_session(tmp_path / "tmux1") as first:
                start_console(first, host, console_root, "alice")
                await log_in(first, DEMO_PASSWORD, "Alice Martin")
                number = await accept_chat(first, customer)
                first.send_keys("C-q")
                await first.wait_for("[exited with status 0]")
            with tmux_session(tmp_path / "tmux2") as again:
                start_console(again, host, console_root, "alice")
                await again.wait_for("Saved session for alice")
                # demo-pass: a (accept), s, p (presence), e (end)… and Enter, in one burst.
                again.type(DEMO_PASSWORD + "\r")
                await again.wait_until(
                    lambda s: chat_still_live(s, number) and MAIN_FOOTER in s,
                    "the main screen with the chat still live",
                )
                await customer.say("still there?")
                await again.wait_for("Ana Lima: still there?")
                assert not ended(customer), customer.frames


async def test_a_reply_pending_when_the_console_is_killed_is_sent_by_the_next_one(
    tmp_path: Path,
) -> None:
    """A reply typed while the host is away, then the console killed (its SSH session
    dropped): the console started again sends it, and the customer gets it once. It was kept
    only in the console's memory, and went with it, with nothing to say so."""
    reply = "Your parcel left the depot this morning"
    console_root, root = tmp_path / "console", tmp_path / "host"
    host = start_host(root)
    try:
        with tmux_session(tmp_path / "tmux1") as first:
            start_console(first, host, console_root, "alice")
            await log_in(first, DEMO_PASSWORD, "Alice Martin")
            async with widget_customer(host.widget_url) as ana:
                number = await accept_chat(first, ana)
            stop_host(host)
            await first.wait_for("reconnecting")
            first.type(f"c{reply}\r")
            await first.wait_for("sending… (pending)")
            kept = console_root / "xdg_state_home" / "inbox-tui"
            await wait_for_file(kept, "replies-*.json")
            assert first.pane_pid is not None
            os.killpg(first.pane_pid, signal.SIGKILL)
        host = start_host(root, port=host.port)
        with tmux_session(tmp_path / "tmux2") as again:
            start_console(again, host, console_root, "alice")
            await log_in(again, DEMO_PASSWORD, "Alice Martin")
            await again.wait_for(f"Alice Martin: {reply}")
            await again.wait_until(lambda s: "(pending)" not in s, "the reply no longer pending")
            # Stored, so no longer kept (a console killed before this sends it once more, and
            # the host, which has its id, stores nothing new).
            await wait_for_file(kept, "replies-*.json", gone=True)
        alice = InboxClient(host.agent_url)
        await alice.connect()
        await alice.login("alice", DEMO_PASSWORD)
        stored = await alice.request(GetTranscript(interaction=number), Transcript)
        await alice.close()
        assert [m.body for m in stored.messages].count(reply) == 1
    finally:
        stop_host(host)


async def wait_for_file(
    directory: Path, pattern: str, timeout: float = 5.0, *, gone: bool = False
) -> None:
    """Until a file matching `pattern` is in `directory` (or, with `gone`, none is)."""
    deadline = time.monotonic() + timeout
    while bool(list(directory.glob(pattern))) == gone:
        assert time.monotonic() < deadline, f"{pattern} in {directory}: still {not gone}"
        await asyncio.sleep(0.05)


def lines_follow(screen: str, first: str, second: str) -> bool:
    """`second` on the screen line right under the one holding `first` (a wrapped message)."""
    rows = screen.splitlines()
    return any(first in a and second in b for a, b in itertools.pairwise(rows))


async def test_composer_newline_key_and_editor_through_tmux(tmp_path: Path) -> None:
    # The editor is a script that writes known text: the console's part (suspend, run
    # $EDITOR on a file holding the draft, read it back) is what is tested, with a real pty.
    editor = tmp_path / "editor.sh"
    editor.write_text(
        '#!/bin/sh\ngrep -q "draft to edit" "$1" || exit 3\n'
        "printf 'Written in the editor\\nwith a second line\\n' > \"$1\"\n"
    )
    editor.chmod(0o755)
    with host_process(tmp_path / "host") as host, tmux_session(tmp_path / "tmux") as term:
        env = console_env(tmp_path / "console")
        env["EDITOR"] = str(editor)
        env.pop("VISUAL", None)
        term.start([str(INBOX_TUI), "--connect", host.agent_url, "--user", "alice"], env)
        await log_in(term, DEMO_PASSWORD, "Alice Martin")
        await take_chat_and_reply(term, host, "Hi Ana")  # leaves the composer focused

        # ctrl+j arrives as a plain LF through tmux: a new line in the draft, not a send.
        term.type("first line")
        term.send_keys("C-j")
        term.type("second line")
        await term.wait_for("second line")
        assert "Alice Martin: first line" not in term.capture()
        term.send_keys("Enter")
        await term.wait_until(
            lambda s: lines_follow(s, "Alice Martin: first line", "second line"),
            "the two-line reply in the transcript",
        )

        term.type("draft to edit")
        await term.wait_for("draft to edit")
        term.send_keys("C-o")
        await term.wait_until(
            lambda s: "Written in the editor" in s and "draft to edit" not in s,
            "the editor's text in the composer",
        )
        term.send_keys("Enter")
        await term.wait_until(
            lambda s: lines_follow(s, "Alice Martin: Written in the editor", "with a second"),
            "the edited reply in the transcript",
        )


async def test_records_routing_history_and_files_keys_through_tmux(tmp_path: Path) -> None:
    async with alice_with_ana(tmp_path) as (term, _, customer, number):
        term.type("R")  # why did this come to me
        # Titled by the work item, with the interaction's number after it.
        screen = await term.wait_for("offered to alice")
        assert re.search(rf"Routing history of \S+ \({number}\)", screen), screen
        term.send_keys("Escape")
        await term.wait_for(MAIN_FOOTER)
        term.type("d")
        await term.wait_for("No files in this chat yet")
        # The form opens as `I` is taken: what is typed behind it goes into the form, with
        # the host's prefill where nothing was typed (it once opened after the host
        # answered, and the keys typed meanwhile were lost).
        term.type("IParcel lost")
        term.send_keys("C-s")
        await term.wait_for("INC0001001")
        # The records screen, and a work note typed in one burst behind its key.
        term.type("v")
        await term.wait_for("Records: mine (1)")
        await term.wait_for("Parcel lost")
        term.type("oCalled the customer back\r")  # one burst: the note's key and text
        await term.wait_until(
            lambda s: "Called the customer back" in s and "Work note on INC0001001" not in s,
            "the note saved and its prompt gone",
        )
        # `g` and `k` are this screen's (its help and the README say so), not the list's
        # vim keys for "first row" and "up", which they once were with the list focused.
        term.type("gtier1\r")
        await term.wait_until(
            lambda s: re.search(r"Group\s+tier1", s) and "Group for" not in s,
            "the group set and its prompt gone",
        )
        term.type("k")
        await term.wait_for("Records: mine (1) · incident")
        term.type("k")
        await term.wait_for("Records: mine (0) · case")
        term.send_keys("Escape")
        await term.wait_for(MAIN_FOOTER)
        term.type("O")  # the linked record, from the record pane
        await term.wait_for("Record INC0001001")
        assert not ended(customer), customer.frames
