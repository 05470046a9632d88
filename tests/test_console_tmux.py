"""The installed console in a real terminal (tmux), against a real `inbox-tui --server`.

What unit tests of the widgets cannot show: that the keys an agent presses reach the right
place through a real pty, and that the screen a real terminal gets shows what it should.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from bench.host_process import INBOX_TUI, HostProcess, console_env
from core.demo import DEMO_PASSWORD
from tests.console_terminal import (
    TMUX,
    Tmux,
    host_process,
    log_in,
    require_tool,
    take_chat_and_reply,
    tmux_session,
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
