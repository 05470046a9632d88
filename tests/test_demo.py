"""The README's first command: the installed `inbox-tui --demo` runs the real host in-process,
simulated agents log in over the agent protocol and work the customers' chats."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.host_process import console_env
from tests.console_terminal import TMUX, require_tool, tmux_session

# An offer card in the Offers pane: "▶ Ana  chat   27s  IMS0000012"
OFFER = re.compile(r"▶ \w+\s+(chat|messaging|case)\s+\d+s")


def inbox_tui() -> str:
    found = shutil.which("inbox-tui", path=str(Path(sys.executable).parent))
    assert found, "inbox-tui is not installed in this environment"
    return found


def test_demo_routes_customers_and_stops_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    run = subprocess.run(
        [inbox_tui(), "--demo", "--seconds", "4", "--interval", "0.2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"IMS\d{7}\s+offered\s+\w+\s+offered to \w+: ", out)
    assert re.search(r"IMS\d{7}\s+assigned\s+\w+\s+accepted by \w+", out)
    assert re.search(r"IMS\d{7}\s+wrap_up\s+\w+\s+ended by agent", out)
    summary = re.search(r"stopped: (\d+) customers, (\d+) messages, (\d+) commits", out)
    assert summary and int(summary.group(1)) > 5 and int(summary.group(3)) > 5
    # The temporary data directory is removed at exit.
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_a_broken_config_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[host]\nlisten = "127.0.0.1:8600"\nlisen = 1\n')
    run = subprocess.run(
        [inbox_tui(), "--demo", "--config", str(bad), "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert f"{bad}:3" in run.stderr and "lisen" in run.stderr


async def test_a_fresh_demo_console_fills_within_a_minute(tmp_path: Path) -> None:
    """`inbox-tui --demo` in a terminal: without reading any log, a newcomer sees where the
    host is and how to open a second console, is Available, gets offers, and — accepting
    what comes with `a` — has a chat, the ongoing tray with an unread count and the queues."""
    require_tool(TMUX, "tmux")
    env = {**console_env(tmp_path), "TMPDIR": str(tmp_path), "TERM": "xterm-256color"}
    with tmux_session(tmp_path / "tmux", 160, 50) as term:
        term.start([inbox_tui(), "--demo", "--interval", "0.5"], env)
        # The banner toast wraps; each of its facts is on screen.
        screen = await term.wait_for("Second console: inbox-tui --connect")
        assert re.search(r"http://127\.0\.0\.1:\d+/widget", screen), screen
        assert "--user chloe" in screen and "demo-pass" in screen and "Accounts:" in screen
        await term.wait_until(lambda s: "Available" in s and "Queues" in s, "Available")
        deadline = time.monotonic() + 55  # with the waits around it, 85 s at most
        tray = re.compile(r"🕑 Ongoing\s+[1-9]")
        screen = term.capture()
        while not (tray.search(screen) and "No chat selected" not in screen):
            assert time.monotonic() < deadline, f"the demo never filled the console:\n{screen}"
            if OFFER.search(screen):
                term.send_keys("a")  # accept whatever is offered, as a newcomer would
            await asyncio.sleep(0.5)
            screen = term.capture()
        # The queue pane counts the demo's queues; an offer keeps arriving while capacity lasts.
        assert re.search(r"general\s", screen), screen
        await term.wait_until(lambda s: bool(OFFER.search(s)), "an offer", timeout=10)
