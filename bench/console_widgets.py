"""Set-and-first-paint times of the console's Line API widgets, Transcript and VirtualList.

    python -m bench.console_widgets [--sizes 10000,100000] [--width 100] [--height 40]
                                    [--repeat 3] [--json]

Each widget runs alone in a headless Textual app (App.run_test) of the given terminal size.
Data is built before the clock starts. Per size, the best of --repeat runs of:
  set:        the synchronous set_messages / set_rows call;
  set+render: that call plus render_line for every visible line (the widget's own first paint);
  set+paint:  set+render plus `await pilot.pause()`, i.e. until Textual has laid out and drawn
              the new content; `idle pause` is the cost of a pause with nothing to do, for scale;
  jump:       scroll to a random far position and render every visible line (cold caches);
  resize:     (Transcript) re-wrap everything for a new width: the one-pass line count;
  append:     (Transcript) add_message at the bottom, following it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widget import Widget

from core.model import Message, SenderKind
from tui.widgets.transcript import Transcript
from tui.widgets.virtual_list import VirtualList

_VOCABULARY = (
    "hello thanks order delivery refund account password invoice please could you check "
    "the status of my parcel it was due yesterday and still has not arrived a b c"
)
WORDS = _VOCABULARY.split()


def make_messages(count: int, seed: int = 7) -> list[Message]:
    """A chat-like mix: mostly short lines, some paragraphs, a few non-ASCII and notes."""
    rng = random.Random(seed)
    kinds = (SenderKind.CUSTOMER, SenderKind.AGENT, SenderKind.SYSTEM)
    messages = []
    for seq in range(1, count + 1):
        kind = rng.choices(kinds, weights=(45, 45, 10))[0]
        if kind == SenderKind.SYSTEM:
            body = "Alice joined"
        else:
            words = rng.choice((3, 8, 15, 30, 60, 120))
            body = " ".join(rng.choice(WORDS) for _ in range(words))
            if rng.random() < 0.05:
                body += "\nThanks — Grüße, 田中 👍"
        messages.append(
            Message(
                interaction="IMS0001001",
                seq=seq,
                sender_kind=kind,
                sender="c1" if kind == SenderKind.CUSTOMER else "a1",
                body=body,
                client_msg_id=f"m{seq}",
                created_at=1_700_000_000.0 + seq * 30,
                kind="work_note" if rng.random() < 0.03 else "message",
            )
        )
    return messages


def render_row(row: tuple[int, str, str], width: int, selected: bool) -> Text:
    number, customer, state = row
    text = Text(f"IMS{number:07d}  ", style="bold" if selected else "")
    text.append(f"{customer:<24}", style="italic")
    text.append(state)
    return text


class _Host(App[None]):
    def __init__(self, widget: Widget) -> None:
        super().__init__()
        self._widget = widget

    def compose(self) -> ComposeResult:
        yield self._widget


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _render_screen(widget: Widget) -> None:
    for y in range(widget.scrollable_content_region.height):
        widget.render_line(y)


async def _measure(
    widget: Widget,
    size: tuple[int, int],
    setter: Callable[[], None],
    extra: Callable[[Widget, Pilot[None]], Any] | None = None,
) -> dict[str, float]:
    app = _Host(widget)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        started = time.perf_counter()
        await pilot.pause()
        idle = time.perf_counter() - started

        started = time.perf_counter()
        setter()
        set_done = time.perf_counter()
        _render_screen(widget)
        rendered = time.perf_counter()
        await pilot.pause()
        painted = time.perf_counter()

        rng = random.Random(1)
        jumps = []
        for _ in range(20):
            widget.scroll_to(y=rng.randrange(int(widget.max_scroll_y) + 1), animate=False)
            begin = time.perf_counter()
            _render_screen(widget)
            jumps.append(time.perf_counter() - begin)
        result = {
            "set_ms": _ms(set_done - started),
            "set_render_ms": _ms(rendered - started),
            "set_paint_ms": _ms(painted - started),
            "idle_pause_ms": _ms(idle),
            "jump_render_ms": _ms(max(jumps)),
        }
        if extra is not None:
            result.update(await extra(widget, pilot))
    return result


async def _transcript_extra(widget: Widget, pilot: Pilot[None]) -> dict[str, float]:
    assert isinstance(widget, Transcript)
    begin = time.perf_counter()
    widget._relayout(widget._width - 13, anchor=True)  # what a resize does
    resize = time.perf_counter() - begin
    widget.action_scroll_bottom()
    last = widget.messages[-1]
    extra = Message(
        interaction=last.interaction,
        seq=last.seq + 1,
        sender_kind=SenderKind.CUSTOMER,
        sender="c1",
        body="one more thing: " + " ".join(WORDS),
        client_msg_id="extra",
        created_at=last.created_at + 30,
    )
    begin = time.perf_counter()
    widget.add_message(extra)
    _render_screen(widget)
    append = time.perf_counter() - begin
    return {"resize_rewrap_ms": _ms(resize), "append_render_ms": _ms(append)}


def _best(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: min(run[key] for run in runs) for key in runs[0]}


async def run(sizes: Sequence[int], width: int, height: int, repeat: int) -> list[dict[str, Any]]:
    report: list[dict[str, Any]] = []
    for count in sizes:
        messages = make_messages(count)
        names = {"a1": "Bob Agent"}
        runs = []
        for _ in range(repeat):
            transcript = Transcript()
            runs.append(
                await _measure(
                    transcript,
                    (width, height),
                    partial(transcript.set_messages, messages, names, customer_name="Alice"),
                    _transcript_extra,
                )
            )
        report.append({"widget": "Transcript", "items": count, **_best(runs)})

        rows = [(1000 + i, f"customer-{i}", "closed") for i in range(count)]
        runs = []
        for _ in range(repeat):
            vlist: VirtualList[tuple[int, str, str]] = VirtualList()
            runs.append(
                await _measure(vlist, (width, height), partial(vlist.set_rows, rows, render_row))
            )
        report.append({"widget": "VirtualList", "items": count, **_best(runs)})
    return report


def _table(report: list[dict[str, Any]]) -> str:
    keys = [
        "set_ms",
        "set_render_ms",
        "set_paint_ms",
        "idle_pause_ms",
        "jump_render_ms",
        "resize_rewrap_ms",
        "append_render_ms",
    ]
    lines = [f"{'widget':<12} {'items':>7} " + " ".join(f"{key:>15}" for key in keys)]
    for row in report:
        cells = " ".join(f"{row.get(key, ''):>15}" for key in keys)
        lines.append(f"{row['widget']:<12} {row['items']:>7} {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console_widgets", description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--height", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    report = asyncio.run(run(sizes, args.width, args.height, args.repeat))
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
