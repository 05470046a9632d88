"""The agent's replies on their way to the host: delivered, and kept on disk until acknowledged.

A reply waits in the console's outbox (tui/state.py), shown as pending, and the client sends
it again, under the same client_msg_id, until the host stores it, however long the host is
away. Kept only in memory, it went with the console: a terminal closed or an SSH session
dropped during the outage, and the customer never got it, with nothing to say so. Written
here as it is queued, a console started again for the same host and agent sends it then; the
host stores each client_msg_id once, so one the host had already stored is not stored twice.

One file per host and agent in `$XDG_STATE_HOME/inbox-tui/`, 0600 (customers' words), written
atomically by one writer task, so an older list never overwrites a newer one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from textual.app import App

from core.client import InboxClient
from core.files import write_atomically
from tui.calls import CALL_FAILURES, failure_text
from tui.settings import state_file
from tui.state import MAX_OUTBOX, ConsoleState

log = logging.getLogger("inbox_tui.console")

# MAX_OUTBOX replies of the longest body a host takes, with room: a larger file is not ours.
MAX_FILE_BYTES = 8 * 1024 * 1024


class Kept(msgspec.Struct, frozen=True):
    interaction: str
    body: str
    client_msg_id: str
    # Which conversation the number meant: a host whose database was replaced (a demo, a
    # reinstall at the same address) numbers its conversations from 1 again, and a reply kept
    # for IMS0001001 must not reach another customer's IMS0001001.
    customer: str
    opened_at: float


def kept_path(url: str, user: str) -> Path:
    return state_file("replies", url, user).with_suffix(".json")


def read_kept(path: Path) -> list[Kept]:
    """The replies kept at `path`, oldest first; [] when there are none. A file that cannot
    be read is reported, not fatal: the console must start all the same."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as e:
        log.warning("event=kept_replies_unreadable path=%s error=%s", path, e)
        return []
    if len(data) > MAX_FILE_BYTES:
        log.warning("event=kept_replies_too_large path=%s", path)
        return []
    try:
        kept = msgspec.json.decode(data, type=list[Kept])
    except msgspec.DecodeError as e:
        log.warning("event=kept_replies_unreadable path=%s error=%s", path, e)
        return []
    return kept[:MAX_OUTBOX]


class KeptReplies:
    """Writes the outbox's replies awaiting the host to `path` whenever they change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.trouble: str | None = None  # why the last write failed; None once one succeeds
        self._wanted: list[Kept] = []  # what the file is to hold once the writes are done
        self._latest: list[Kept] | None = None  # what the next write writes
        self._writer: asyncio.Task[None] | None = None

    def keep(self, replies: list[Kept]) -> None:
        """Keep these: the outbox now, less the replies refused (they are not sent again)."""
        # Against what was last asked for, not what is written: a change back while a write
        # is under way must be written after it.
        if replies == self._wanted:
            return
        self._wanted = self._latest = replies
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        # The disk's fsync off the event loop (a slow one would freeze the console), one write
        # at a time, always of the newest list.
        while self._latest is not None:
            replies, self._latest = self._latest, None
            try:
                await asyncio.to_thread(self._store, replies)
            except OSError as e:
                self.trouble = f"replies not kept on disk ({self.path}): {e}"
                log.warning("event=kept_replies_not_written path=%s error=%s", self.path, e)
            else:
                self.trouble = None

    def _store(self, replies: list[Kept]) -> None:
        if not replies:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(self.path, msgspec.json.encode(replies))

    async def flush(self) -> None:
        """Wait for the writes asked for so far (the console quitting)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)


class Replies:
    """Sends the outbox's replies and keeps it on disk (`KeptReplies`) as it changes."""

    def __init__(
        self,
        app: App[Any],
        state: ConsoleState,
        client: Callable[[], InboxClient],
        changed: Callable[[set[str]], None],
    ) -> None:
        self.app = app
        self.state = state
        self.client = client  # the app's client of the moment (a new one at each login)
        self.changed = changed  # the areas to redraw
        self.kept: KeptReplies | None = None  # once logged in: the file is per host and agent

    def logged_in(self, url: str, user: str) -> None:
        """Send what an earlier run of this console for this host and agent queued and the
        host had not acknowledged when it stopped, under their own ids."""
        self.kept = KeptReplies(kept_path(url, user))
        state = self.state
        earlier = [k for k in read_kept(self.kept.path) if k.client_msg_id not in state.outbox]
        # Only into the conversation it was written for, still open and mine.
        ours = [k for k in earlier if self._written_for(k)]
        again = [k for k in ours if state.queue_reply(k.interaction, k.body, k.client_msg_id)]
        if len(ours) < len(earlier):
            self.app.notify(
                f"{len(earlier) - len(ours)} of the replies typed before this console last "
                "stopped were for chats no longer open here: not sent",
                severity="warning",
            )
            self.outbox_changed()  # so they are not kept either
        if again:
            self.app.notify(
                f"Sending {len(again)} {'reply' if len(again) == 1 else 'replies'} typed "
                "before this console last stopped"
            )
        for k in again:
            self.app.run_worker(self.deliver(k.interaction, k.body, k.client_msg_id))

    def _written_for(self, kept: Kept) -> bool:
        chat = self.state.chats.get(kept.interaction)
        return (
            chat is not None
            and chat.record.customer == kept.customer
            and chat.record.opened_at == kept.opened_at
        )

    async def deliver(self, number: str, body: str, msg_id: str) -> None:
        """Deliver one reply from the outbox; it stays there, shown as pending (and kept on
        disk), until the host acks it."""
        self.outbox_changed()
        try:
            ack = await self.client().deliver_message(number, body, msg_id)
        except CALL_FAILURES as e:
            areas = self.state.reply_failed(msg_id, failure_text(e))
            self.app.notify(f"Not sent: {failure_text(e)}", severity="error")
        else:
            areas = self.state.own_message(ack.message)
        self.outbox_changed()
        if areas:
            self.changed(areas)

    def outbox_changed(self) -> None:
        if self.kept is not None:
            self.kept.keep(self._keepable())
            if self.kept.trouble:
                self.app.notify(self.kept.trouble, severity="warning")

    async def flush(self) -> None:
        if self.kept is not None:
            await self.kept.flush()

    def _keepable(self) -> list[Kept]:
        kept = []
        for o in self.state.outbox.values():
            chat = self.state.chats.get(o.interaction)
            if o.failed or chat is None:
                continue  # refused for good, or for a chat this console no longer has
            r = chat.record
            kept.append(Kept(o.interaction, o.body, o.client_msg_id, r.customer, r.opened_at))
        return kept
