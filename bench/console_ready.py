"""The console against a real host: time to ready with a long history, and event-to-screen latency.

    python -m bench.console_ready [--conversations N] [--messages N] [--samples N] [--json]

A real routing host (example config, SQLite with synchronous=FULL, aiohttp on 127.0.0.1:0) runs
in this process, in the same event loop as a headless console (`App.run_test`, 160x50), which
connects to it over a loopback WebSocket like any console. Before the clock starts:
  * alice (password demo) is made Available and accepts one live chat, whose transcript then
    gets --messages messages written straight through the store (concurrently, so they go in
    by group commit);
  * --conversations closed interactions with alice as participant are written through the store
    the same way (not routed: they are history, as after months of work).
Measured:
  ready:    from creating the App to the main screen showing the chat list and the open chat's
            transcript as loaded by the console (GetTranscript, its default limit), with the
            milestones on the way (logged in, main screen up);
  latency:  a customer message into host.inbox.customer_message (commit, fan-out, socket, client,
            state, widget) until the console's Transcript widget holds it, polled every 0.5 ms
            (see `until`); --samples messages one after another, p50/p95/p99;
  history:  one ListInteractions round trip (its maximum page, 1000 rows), then the History
            screen (h), which pages every interaction in 1000 at a time: first rows shown, every
            row loaded; G, a jump to the oldest row; g, back to the newest (the open chat) until
            its transcript is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual import events
from textual.css.query import NoMatches

from core.demo import DEMO_PASSWORD, demo_config
from core.host.app import close_host, create_app, open_host, serve_loopback
from core.host.state import Host
from core.model import (
    InteractionRecord,
    InteractionState,
    Message,
    Participant,
    Role,
    SenderKind,
)
from core.protocol import AcceptOffer, InteractionList, ListInteractions, SetPresence
from screens.history import HistoryScreen
from screens.main import MainScreen
from tui.app import InboxApp
from tui.settings import ConsoleSettings
from tui.widgets.chat_list import ChatList
from tui.widgets.transcript import Transcript
from tui.widgets.virtual_list import VirtualList

AGENT, PASSWORD = "alice", DEMO_PASSWORD
CUSTOMER = "web-bench"
SIZE = (160, 50)
BATCH = 1000  # concurrent store writes per gather: enough for the writer to group-commit
PAGE = 1000  # ListInteractions' maximum limit
TIMEOUT = 30.0
POLL = 0.0005

BODIES = (
    "Hello, my parcel was due yesterday and the tracking page still says pending.",
    "Thanks, let me check that with the carrier for you.",
    "Order 55102, delivery to the office address please.",
    "I have asked the depot to call you before they come round.",
)


def ranges(seqs: list[int]) -> str:
    """1-500, 10002-10201: which messages a transcript holds, gaps included."""
    spans: list[list[int]] = []
    for seq in seqs:
        if spans and seq == spans[-1][1] + 1:
            spans[-1][1] = seq
        else:
            spans.append([seq, seq])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def gathered(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(calls), BATCH):
        results += await asyncio.gather(*(call() for call in calls[start : start + BATCH]))
    return results


async def until(check: Callable[[], bool], what: str) -> float:
    """perf_counter when `check` first held, polled every POLL seconds.

    Not `pilot.pause(0)` in a loop: that keeps this thread busy, and the host's SQLite threads
    (same process here, unlike in production) then wait up to the 5 ms GIL switch interval for
    every row they fetch; a 500-message GetTranscript took 1-3.5 s instead of milliseconds.
    Sleeping lets the loop idle as it would in a real console, at the cost of <= POLL error.
    """
    deadline = time.perf_counter() + TIMEOUT

    def holds() -> bool:
        try:
            return check()
        except NoMatches:  # the screen is up but not composed yet
            return False

    while not holds():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the console never got there: {what}")
        await asyncio.sleep(POLL)
    return time.perf_counter()


async def seed(host: Host, conversations: int, messages: int) -> tuple[str, dict[str, float]]:
    """alice's live chat with `messages` messages, and `conversations` closed ones before it."""
    inbox, store = host.inbox, host.inbox.store
    timings: dict[str, float] = {}
    # A direct session (no socket) to act as alice; it stays open so her chat stays hers.
    session = inbox.open_session(AGENT, Role.AGENT, "bench-setup", time.time() + 3600)
    await inbox.handle(session, SetPresence(presence="Available"))
    record = await inbox.start_conversation(
        channel="chat", customer=CUSTOMER, customer_name="Bench Customer"
    )
    offer = next(o for o in inbox.routing.router.offers.values() if o.agent == AGENT)
    await inbox.handle(session, AcceptOffer(offer=offer.id))

    now = time.time()
    started = time.perf_counter()

    def history(i: int) -> Callable[[], Awaitable[InteractionRecord]]:
        opened = now - 86400 * 180 + i * 60.0

        async def create() -> InteractionRecord:
            return await store.create_interaction(
                item=f"Whist{i}",
                channel="chat",
                customer=f"web-{i % 997}",
                opened_at=opened,
                queue="general",
                state=InteractionState.CLOSED_COMPLETE,
                customer_name=f"Customer {i % 997}",
                participants=(Participant(agent=AGENT, joined_at=opened, left_at=opened + 300),),
            )

        return create

    await gathered([history(i) for i in range(conversations)])
    timings["seed_conversations_ms"] = (time.perf_counter() - started) * 1e3

    started = time.perf_counter()

    def message(i: int) -> Callable[[], Awaitable[tuple[Message, bool]]]:
        kind = SenderKind.CUSTOMER if i % 2 == 0 else SenderKind.AGENT
        sender = CUSTOMER if kind == SenderKind.CUSTOMER else AGENT
        return lambda: store.append_message(
            record.number, kind, sender, BODIES[i % len(BODIES)], f"seed-{i}", now - 3600 + i * 0.1
        )

    appended = await gathered([message(i) for i in range(messages)])
    timings["seed_messages_ms"] = (time.perf_counter() - started) * 1e3
    # The chat also holds the system line written when alice accepted it.
    timings["chat_messages"] = max((m.seq for m, _ in appended), default=0)
    return record.number, timings


async def measure(
    host: Host, url: str, number: str, samples: int, conversations: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    settings = ConsoleSettings(url=url, user=AGENT, bell=False)
    started = time.perf_counter()
    app = InboxApp(settings, password=PASSWORD)
    async with app.run_test(size=SIZE) as pilot:

        def main() -> MainScreen | None:
            return app.screen if isinstance(app.screen, MainScreen) else None

        def chat_list() -> ChatList:
            return app.screen.query_one("#chat-list", ChatList)

        def transcript() -> Transcript:
            return app.screen.query_one("#transcript", Transcript)

        # ---------------------------------------------------------------- time to ready
        logged_in = await until(lambda: app.state.me is not None, "logged in")
        shown = await until(lambda: main() is not None and chat_list().row_count > 0, "main screen")

        def loaded() -> bool:
            chat = app.state.chats.get(number)
            return chat is not None and chat.loaded and transcript().message_count > 0

        ready = await until(loaded, "transcript loaded")
        seqs = [m.seq for m in transcript().messages]
        out["ready"] = {
            "logged_in_ms": (logged_in - started) * 1e3,
            "main_screen_ms": (shown - started) * 1e3,
            "ready_ms": (ready - started) * 1e3,
            "chat_list_rows": chat_list().row_count,
            "snapshot_interactions": len(app.state.chats),
            "transcript_messages": len(seqs),
            "transcript_first_seq": seqs[0],
            "transcript_last_seq": seqs[-1],
        }

        # ---------------------------------------------------------------- latency
        commits: list[float] = []
        latencies: list[float] = []
        for i in range(samples):
            sent = time.perf_counter()
            message, _ = await host.inbox.customer_message(
                number, CUSTOMER, f"latency probe {i}: {BODIES[i % len(BODIES)]}", f"probe-{i}"
            )
            committed = time.perf_counter()

            def probe_shown(seq: int = message.seq) -> bool:
                return bool(transcript().messages) and transcript().messages[-1].seq == seq

            seen = await until(probe_shown, f"probe {i}")
            commits.append((committed - sent) * 1e3)
            latencies.append((seen - sent) * 1e3)
        out["latency"] = {
            "samples": samples,
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies),
            "mean_ms": statistics.fmean(latencies),
            "host_part_p50_ms": percentile(commits, 50),
            "transcript_messages_after": transcript().message_count,
            "transcript_seqs_after": ranges([m.seq for m in transcript().messages]),
        }

        # ---------------------------------------------------------------- history
        started = time.perf_counter()
        page = await app.client.request(ListInteractions(limit=PAGE), InteractionList)
        first_page = time.perf_counter() - started

        def history() -> HistoryScreen | None:
            return app.screen if isinstance(app.screen, HistoryScreen) else None

        def history_rows() -> int:
            return history_list().row_count if history() else 0

        def history_transcript() -> Transcript:
            return app.screen.query_one("#history-transcript", Transcript)

        def history_list() -> VirtualList[Any]:
            return app.screen.query_one("#history-list", VirtualList)

        def key(name: str) -> None:
            # Not pilot.press: it waits until the app is idle, i.e. until every page is in.
            app.post_message(events.Key(name, name))

        expected = conversations + 1  # and the open chat
        started = time.perf_counter()
        key("h")
        first_rows = await until(lambda: history_rows() > 0, "history: first page")
        all_rows = await until(lambda: history_rows() >= expected, "history: every page")
        jump_started = time.perf_counter()
        key("G")
        await until(lambda: history_list().cursor == expected - 1, "history: the oldest row")
        await pilot.pause()
        jumped = time.perf_counter() - jump_started
        # Opening History highlights the newest row without showing its transcript; moving
        # back to it (the open chat, the only one with messages) does.
        top_started = time.perf_counter()
        key("g")
        top_transcript = await until(
            lambda: history_transcript().message_count > 0, "history: the newest row's transcript"
        )
        out["history"] = {
            "conversations_seeded": conversations,
            "list_first_page_ms": first_page * 1e3,
            "list_first_page_rows": len(page.interactions),
            "screen_first_rows_ms": (first_rows - started) * 1e3,
            "screen_all_rows_ms": (all_rows - started) * 1e3,
            "screen_rows": history_rows(),
            "jump_to_oldest_ms": jumped * 1e3,
            "back_to_newest_transcript_ms": (top_transcript - top_started) * 1e3,
            "newest_transcript_messages": history_transcript().message_count,
        }
    return out


async def run(conversations: int, messages: int, samples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="console-ready-") as tmp:
        # The console saves alice's session token: keep it out of the user's state directory.
        os.environ["XDG_STATE_HOME"] = str(Path(tmp) / "state")
        os.environ["XDG_CONFIG_HOME"] = str(Path(tmp) / "config")
        host = await open_host(demo_config(), Path(tmp) / "data")
        runner, url = await serve_loopback(create_app(host))
        try:
            number, timings = await seed(host, conversations, messages)
            agent_url = url.replace("http://", "ws://") + "/agent"
            result = await measure(host, agent_url, number, samples, conversations)
        finally:
            await runner.cleanup()
            await close_host(host)
    result["setup"] = {"conversations": conversations, "messages": messages, **timings}
    return result


def print_table(result: dict[str, Any]) -> None:
    setup, ready, latency, history = (
        result["setup"],
        result["ready"],
        result["latency"],
        result["history"],
    )
    rows = [
        ("setup", "history conversations written (ms)", setup["seed_conversations_ms"]),
        ("setup", "open chat messages written (ms)", setup["seed_messages_ms"]),
        ("ready", "App start -> logged in (ms)", ready["logged_in_ms"]),
        ("ready", "App start -> main screen with chat list (ms)", ready["main_screen_ms"]),
        ("ready", "App start -> transcript loaded (ms)", ready["ready_ms"]),
        ("ready", "chats in the snapshot / chat list rows", ready["chat_list_rows"]),
        ("ready", "messages loaded of the open chat", ready["transcript_messages"]),
        (
            "ready",
            "loaded seqs (of the open chat's total)",
            f"{ready['transcript_first_seq']}-{ready['transcript_last_seq']}"
            f" (of {setup['chat_messages']})",
        ),
        (
            "latency",
            f"event to Transcript, {latency['samples']} samples: p50 (ms)",
            latency["p50_ms"],
        ),
        ("latency", "p95 (ms)", latency["p95_ms"]),
        ("latency", "p99 (ms)", latency["p99_ms"]),
        ("latency", "max (ms)", latency["max_ms"]),
        ("latency", "host part (commit + fan-out), p50 (ms)", latency["host_part_p50_ms"]),
        ("latency", "seqs in the Transcript afterwards", latency["transcript_seqs_after"]),
        ("history", "ListInteractions limit=1000 round trip (ms)", history["list_first_page_ms"]),
        ("history", "press h -> first page of rows shown (ms)", history["screen_first_rows_ms"]),
        (
            "history",
            f"press h -> all {history['screen_rows']:,} rows loaded (ms)",
            history["screen_all_rows_ms"],
        ),
        ("history", "G (jump to the oldest row) + paint (ms)", history["jump_to_oldest_ms"]),
        (
            "history",
            f"g (newest) -> its transcript, {history['newest_transcript_messages']} messages (ms)",
            history["back_to_newest_transcript_ms"],
        ),
    ]
    for area, label, value in rows:
        shown = f"{value:,.1f}" if isinstance(value, float) else str(value)
        print(f"{area:<8} {label:<58} {shown:>14}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console_ready", description=__doc__)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    # One history row at least: the History steps move the cursor between the first and last.
    if args.conversations < 1 or args.messages < 0 or args.samples < 1:
        parser.error("--conversations and --samples must be >= 1, --messages >= 0")
    result = asyncio.run(run(args.conversations, args.messages, args.samples))
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
