"""A reply sent while the host is down: kept as pending, the console alive, delivered once.

The host is a real `inbox-tui --server` subprocess, stopped and restarted on the same data
directory, as an operator would; the console is driven by Pilot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from bench.host_process import start_host, stop_host
from core.demo import DEMO_PASSWORD
from core.protocol import GetTranscript, Transcript
from tests.console_terminal import widget_customer
from tests.hosting import running_host
from tests.test_console_pilot import SIZE, chat_ready, main, transcript_text, until
from tui.app import InboxApp
from tui.replies import Kept, KeptReplies, kept_path, read_kept
from tui.settings import ConsoleSettings, normalise_url
from tui.state import MAX_OUTBOX, ConsoleState
from tui.widgets.outbox_view import OutboxView

REPLY = "Your parcel left the depot this morning"
# The console's requests time out sooner than its 30 s default, so that a host down for
# longer than one takes minutes less to show.
REQUEST_TIMEOUT = 6.0
DOWN = 10.0  # seconds without a host: past the client's request timeout


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def outbox_text(app: InboxApp) -> str:
    view = app.screen.query_one("#outbox", OutboxView)
    return str(view.render()) if view.display else ""


async def test_reply_sent_while_the_host_is_down_is_delivered_once(tmp_path: Path) -> None:
    root = tmp_path / "host"
    host = start_host(root)
    try:
        app = InboxApp(
            ConsoleSettings(url=host.agent_url, user="alice", bell=False), password=DEMO_PASSWORD
        )
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.state.me is not None, timeout=10)
            app.client.request_timeout = REQUEST_TIMEOUT
            await pilot.press("f5")
            await until(pilot, lambda: app.state.me and app.state.me.presence == "Available")
            async with widget_customer(host.widget_url) as customer:
                number = await customer.start("Ana Lima", "ana@example.com")
                await customer.say("Hello, my parcel is late")
                await until(pilot, lambda: app.state.offers, timeout=10)
                await pilot.press("a")
                await until(pilot, lambda: "joined" in transcript_text(app), timeout=10)

            stop_host(host)
            await until(pilot, lambda: app.connection == "reconnecting", timeout=10)
            await pilot.press("c", *REPLY, "enter")
            await until(pilot, lambda: "pending" in outbox_text(app))
            assert REPLY in outbox_text(app)

            await pilot.pause(DOWN)
            assert app.is_running and main(app), "the console died without its host"
            assert "pending" in outbox_text(app) and REPLY in outbox_text(app)

            host = start_host(root, port=host.port)
            await until(pilot, lambda: app.connection == "connected", timeout=15)
            await until(pilot, lambda: not app.state.outbox, timeout=15)
            await until(pilot, lambda: REPLY in transcript_text(app), timeout=10)
            assert outbox_text(app) == ""
            # The store has it once, however many times the client asked.
            stored = await app.client.request(GetTranscript(interaction=number), Transcript)
            assert [m.body for m in stored.messages].count(REPLY) == 1
    finally:
        stop_host(host)


def test_the_outbox_is_bounded_and_forgets_what_the_host_stored() -> None:
    state = ConsoleState()
    for n in range(MAX_OUTBOX):
        assert state.queue_reply("IMS1", f"reply {n}", f"id{n}")
    assert not state.queue_reply("IMS1", "one too many", "idx")
    assert "idx" not in state.outbox
    assert state.reply_failed("id0", "conversation_closed") == {"chat:IMS1"}
    assert state.pending("IMS1")[0].failed == "conversation_closed"
    assert state.reply_sent("id1") == {"chat:IMS1"}
    assert state.reply_sent("id1") == set()  # an ack and its message event: once is enough
    assert len(state.pending("IMS1")) == MAX_OUTBOX - 1


async def test_kept_replies_end_as_last_asked_with_a_write_under_way(tmp_path: Path) -> None:
    """The file follows the outbox: a reply stored by the host while its own write to the
    file was still under way is not left behind on disk (it once was, and was sent again at
    the next start)."""
    kept = KeptReplies(tmp_path / "state" / "replies.json")
    reply = Kept("IMS0001001", REPLY, "m1", "web-ana", 1796140000.5)
    kept.keep([reply])
    await asyncio.sleep(0)  # its write begins
    kept.keep([])
    await kept.flush()
    assert not kept.path.exists()
    kept.keep([reply])
    await kept.flush()
    assert read_kept(kept.path) == [reply]


async def test_a_kept_reply_goes_only_to_the_conversation_it_was_written_for(
    tmp_path: Path,
) -> None:
    """Kept replies name their conversation's customer and opening time as well as its
    number: a host whose database was replaced numbers from IMS0001001 again, and a reply
    written to one customer must not reach another under the same number."""
    async with running_host(tmp_path) as h:
        first = InboxApp(
            ConsoleSettings(url=h.agent_url, user="alice", bell=False), password=DEMO_PASSWORD
        )
        async with first.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: first.state.me is not None, timeout=10)
            number = await chat_ready(h, first, pilot)
            record = first.state.chats[number].record
        path = kept_path(normalise_url(h.agent_url), "alice")
        path.parent.mkdir(parents=True, exist_ok=True)
        written = [
            Kept(number, "For Ana", "k1", record.customer, record.opened_at),
            Kept(number, "For another customer", "k2", "web-someone-else", record.opened_at),
        ]
        path.write_bytes(msgspec.json.encode(written))
        again = InboxApp(
            ConsoleSettings(url=h.agent_url, user="alice", bell=False), password=DEMO_PASSWORD
        )
        async with again.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: again.state.me is not None, timeout=10)
            # Gone once the host has acked the one reply sent (the other is not kept).
            await until(pilot, lambda: not path.exists(), timeout=10)
        stored = await h.host.inbox.store.list_messages(number)
        bodies = [m.body for m in stored]
        assert bodies.count("For Ana") == 1
        assert "For another customer" not in bodies


def test_kept_replies_that_cannot_be_read_are_none(tmp_path: Path) -> None:
    path = tmp_path / "replies.json"
    path.write_text("{not json")
    assert read_kept(path) == []
    assert read_kept(tmp_path / "absent.json") == []
