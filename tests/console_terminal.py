"""Shared helpers for driving the real console in a real terminal.

- `host_process`: a real `inbox-tui --server` subprocess on a loopback port the kernel picks,
  with its own data directory, waited on until /healthz answers.
- `Tmux`: a detached tmux session on its own socket (`tmux -L <unique>`), so a test never
  touches another tmux server; keys go in with send-keys and the screen comes back with
  capture-pane. Textual draws on the terminal, so the screen is the only honest observable.
- `widget_customer`: a customer on the widget socket, as a browser would be.
- `take_chat_and_reply`: the scenario both console tests share: log in, go Available, accept
  a customer's chat and answer it, checked on the customer's side and on the agent's screen.

Every wait is bounded and polls: no blind sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.host_process import DROPPED, HostProcess, base_env, start_host, stop_host

TMUX = "tmux"
WAIT = 10.0  # seconds: the default for every wait on the screen or a socket
POLL = 0.1


def require_tool(path: str, what: str) -> None:
    """A developer without `path` may skip; under CI (.ci/ensure-sshd installs it) it fails."""
    found = Path(path).exists() if os.path.isabs(path) else bool(shutil.which(path))
    if found:
        return
    message = f"needs {path} ({what}; run .ci/ensure-sshd)"
    if os.environ.get("CI"):
        pytest.fail(message + " under CI")
    pytest.skip(message)


@contextlib.contextmanager
def host_process(root: Path) -> Iterator[HostProcess]:
    host = start_host(root)
    try:
        yield host
    finally:
        stop_host(host)


# ---------------------------------------------------------------------------- tmux


@dataclass
class Tmux:
    """One detached tmux session on a private server; `close` kills that server only."""

    workdir: Path
    width: int = 160
    height: int = 50
    session: str = "console"
    socket: str = field(
        default_factory=lambda: f"inbox-tui-test-{os.getpid()}-{secrets.token_hex(4)}"
    )
    pane_pid: int | None = None
    socket_path: Path | None = None
    last_screen: str = ""

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # -f /dev/null: a developer's ~/.tmux.conf must not change keys or the screen.
        return subprocess.run(
            [TMUX, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=10,
            env=base_env(),
        )

    def start(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Run `argv` in the session's pane. When it exits, the pane stays with its last
        output (a traceback, say) and the exit status, for the failure message."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        script = self.workdir / f"tmux-{self.session}.sh"
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
        script.write_text(
            "#!/bin/bash\n"
            + f"unset {' '.join(DROPPED)}\n"
            + exports
            + shlex.join(argv)
            + '\necho "[exited with status $?]"\nexec sleep 3600\n'
        )
        # bash -c: tmux hands the command to the default shell, which may not be bash.
        command = f"bash -c {shlex.quote('exec bash ' + shlex.quote(str(script)))}"
        self.tmux(
            "new-session",
            "-d",
            "-s",
            self.session,
            "-x",
            str(self.width),
            "-y",
            str(self.height),
            command,
        )
        shown = self.tmux("display-message", "-p", "-t", self.session, "#{pane_pid} #{socket_path}")
        pid, path = shown.stdout.strip().split(" ", 1)
        self.pane_pid, self.socket_path = int(pid), Path(path)

    def send_keys(self, *keys: str) -> None:
        """tmux key names: "Enter", "F5", "a", "C-q"…"""
        self.tmux("send-keys", "-t", self.session, *keys)

    def type(self, text: str) -> None:
        """Literal text, each character a key press."""
        self.tmux("send-keys", "-t", self.session, "-l", text)

    def capture(self) -> str:
        self.last_screen = self.tmux("capture-pane", "-p", "-t", self.session).stdout
        return self.last_screen

    async def wait_until(
        self, check: Callable[[str], bool], what: str, timeout: float = WAIT
    ) -> str:
        """Poll the screen until `check(screen)`; fail naming `what`, with the screen."""
        assert timeout <= 15, "waits stay bounded"
        deadline = time.monotonic() + timeout
        while True:
            screen = self.capture()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"after {timeout} s the screen still does not show {what}:\n{screen}"
                )
            await asyncio.sleep(POLL)

    async def wait_for(self, text: str, timeout: float = WAIT) -> str:
        return await self.wait_until(lambda s: text in s, repr(text), timeout)

    async def wait_gone(self, text: str, timeout: float = WAIT) -> str:
        return await self.wait_until(lambda s: text not in s, f"no {text!r}", timeout)

    def close(self) -> None:
        """Kill this tmux server, then whatever of the pane's process group outlived it."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.tmux("kill-server", check=False)
        if self.pane_pid is not None:
            # tmux makes the pane's shell a session and group leader; the console is in its
            # group. The server's SIGHUP normally ends them; this catches a console that hung.
            kill_group(self.pane_pid)
        if self.socket_path is not None:
            # kill-server leaves the socket file behind; one per test would pile up in /tmp.
            self.socket_path.unlink(missing_ok=True)


def kill_group(pgid: int, grace: float = 3.0) -> None:
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while True:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        time.sleep(POLL)


@contextlib.contextmanager
def tmux_session(workdir: Path, width: int = 160, height: int = 50) -> Iterator[Tmux]:
    term = Tmux(workdir, width, height)
    try:
        yield term
    finally:
        term.close()


# ---------------------------------------------------------------------------- customer


class WidgetCustomer:
    """A customer on the widget socket. Frames are kept as they arrive, so a test can wait
    for one that came while it was busy driving the console."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.conversation = ""
        self._sent = 0

    async def start(self, name: str, email: str) -> str:
        await self.ws.send_json({"t": "start", "name": name, "email": email})
        started = await self.expect(lambda f: f["t"] == "started", "started")
        self.conversation = started["conversation"]
        return self.conversation

    async def say(self, body: str) -> None:
        self._sent += 1
        msg_id = f"c{self._sent}"
        await self.ws.send_json({"t": "message", "body": body, "client_msg_id": msg_id})
        await self.expect(lambda f: f["t"] == "ack" and f.get("client_msg_id") == msg_id, "ack")

    async def expect(
        self,
        match: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = WAIT,
        *,
        raise_on_error: bool = True,
    ) -> dict[str, Any]:
        """The first frame so far or within `timeout` that matches; an `error` frame fails
        unless `raise_on_error` is off (a test that expects one)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for frame in self.frames[seen:]:
                if match(frame):
                    return frame
                if frame["t"] == "error" and raise_on_error:
                    raise AssertionError(f"the host refused the customer: {frame}")
            seen = len(self.frames)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {what} frame for the customer in {timeout} s: {self.frames}"
                )
            try:
                msg = await self.ws.receive(timeout=left)
            except TimeoutError:
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"the customer's socket ended ({msg.type}): {self.frames}")
            self.frames.append(json.loads(msg.data))


@contextlib.asynccontextmanager
async def widget_customer(url: str) -> AsyncIterator[WidgetCustomer]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        yield WidgetCustomer(ws)


# ---------------------------------------------------------------------------- scenario

MAIN_FOOTER = "a Accept"  # the main screen's footer while the chat list has the focus


async def log_in(term: Tmux, password: str, display_name: str) -> None:
    """On the login screen (user given with --user, so the cursor is in Password)."""
    # The whole form, not just a label: a frame may be caught half drawn.
    await term.wait_until(
        lambda s: all(p in s for p in ("Host", "User", "Password", "Log in", "▔▔▔▔")),
        "the login form",
    )
    term.type(password)
    # The field masks what is typed: bullets prove the keys reached the password field.
    await term.wait_for("•" * len(password))
    term.send_keys("Enter")
    await term.wait_until(
        lambda s: display_name in s and "● connected" in s and MAIN_FOOTER in s,
        f"the main screen for {display_name}",
    )


async def accept_chat(term: Tmux, customer: WidgetCustomer) -> str:
    """Logged in as alice: go Available; Ana starts a chat; `a` accepts it. The number."""
    term.send_keys("F5")
    await term.wait_until(lambda s: "Available" in s.splitlines()[0], "Available in the top bar")
    number = await customer.start("Ana Lima", "ana@example.com")
    await customer.say("Hello, my parcel is late")
    # "▶" marks the selected offer: what `a` accepts.
    await term.wait_for("▶ Ana Lima")
    term.send_keys("a")
    await term.wait_for(f"Ana Lima  {number}")  # the chat's title
    await term.wait_for("Alice Martin joined")
    # What came before the accept arrives with the transcript, fetched after the chat
    # opens: a moment later than the live "joined" line.
    await term.wait_for("Ana Lima: Hello, my parcel is late")
    await customer.expect(
        lambda f: f["t"] == "state" and f["agent"] == "Alice Martin", "state (accepted)"
    )
    return number


async def reply_arrives(term: Tmux, customer: WidgetCustomer, reply: str) -> None:
    """The customer gets `reply` from Alice, and the agent's transcript shows it."""
    got = await customer.expect(
        lambda f: f["t"] == "message" and f["from"] == "agent" and f["body"] == reply,
        f"agent message {reply!r}",
    )
    assert got["name"] == "Alice Martin"
    await term.wait_for(f"Alice Martin: {reply}")


async def take_chat_and_reply(term: Tmux, host: HostProcess, reply: str) -> None:
    """Logged in as alice: go Available, accept Ana's chat, reply; both sides see the reply."""
    async with widget_customer(host.widget_url) as customer:
        await accept_chat(term, customer)
        term.send_keys("c")
        await term.wait_until(
            lambda s: MAIN_FOOTER not in s and "^q Quit" in s, "the composer focused"
        )
        term.type(reply)
        await term.wait_for(reply)
        term.send_keys("Enter")
        await reply_arrives(term, customer, reply)
