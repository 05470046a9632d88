"""Supervisors: the day at a glance. One queue's figures per minute (or every queue's summed)
over the day so far, each as a sparkline under a line of its totals.

Textual's own Sparkline draws them: a day is up to 1,440 minutes in a terminal's width, so each
bar is the most of the minutes it covers, which is what a glance at a day needs (a burst stays
visible). It is built in, so the console needs no plotting library.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from core.model import QueueMinute
from core.protocol import DayFigures

MINUTE = 60
MIN_SPAN = 60  # minutes: the plots show at least the last hour


@dataclass(frozen=True)
class Series:
    """One plotted figure: its name, its value per minute, and the line above its plot."""

    name: str
    values: list[float]
    summary: str


def _sum(field: str) -> Callable[[Sequence[QueueMinute]], float]:
    return lambda minutes: float(sum(getattr(m, field) for m in minutes))


def _average_wait(minutes: Sequence[QueueMinute]) -> float:
    # Weighted by how many waits each queue's average covers, so a busy queue counts for more.
    waits = sum(m.waits for m in minutes)
    return round(sum(m.average_wait * m.waits for m in minutes) / waits, 1) if waits else 0.0


def _longest_wait(minutes: Sequence[QueueMinute]) -> float:
    return max((m.longest_wait for m in minutes), default=0.0)


def _seconds(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.0f} s"


def day_series(figures: DayFigures, queue: str | None) -> list[Series]:
    """The plotted series of `queue` (None: every queue summed), a value per minute from
    `figures.since` to `figures.until`; a minute the host did not store is all zeros."""
    count = max(0, (figures.until - figures.since) // MINUTE)
    by_minute: list[list[QueueMinute]] = [[] for _ in range(count)]
    for m in figures.minutes:
        i = (m.minute - figures.since) // MINUTE
        if 0 <= i < count and (queue is None or m.queue == queue):
            by_minute[i].append(m)
    every = [m for minute in by_minute for m in minute]

    def values(of: Callable[[Sequence[QueueMinute]], float]) -> list[float]:
        return [of(minute) for minute in by_minute]

    waiting = values(_sum("waiting"))
    total = {f: int(_sum(f)(every)) for f in ("arrivals", "answered", "abandoned", "handled")}
    average = values(_average_wait)
    longest = values(_longest_wait)
    return [
        Series(
            "Waiting",
            waiting,
            f"now {int(waiting[-1]) if waiting else 0}, "
            f"at most {int(max(values(_sum('most_waiting')), default=0))}",
        ),
        Series("Arrivals", values(_sum("arrivals")), f"{total['arrivals']} today"),
        Series("Answered", values(_sum("answered")), f"{total['answered']} today"),
        Series("Abandoned", values(_sum("abandoned")), f"{total['abandoned']} today"),
        Series("Handled", values(_sum("handled")), f"{total['handled']} today"),
        Series("Average wait", average, f"{_seconds(_average_wait(every))} over the day"),
        Series("Longest wait", longest, f"{_seconds(max(longest, default=0.0))} at most"),
    ]


def first_plotted(figures: DayFigures) -> int:
    """The first minute to plot, as an index from `figures.since`: the first the host stored
    for any queue (so cycling queues keeps the same span), but no later than MIN_SPAN minutes
    before the end. The hours before the first traffic of the day would squeeze the day into
    the plots' last columns (a demo started at 18:47 drew 3 minutes in 1,130)."""
    count = max(0, (figures.until - figures.since) // MINUTE)
    stored = [(m.minute - figures.since) // MINUTE for m in figures.minutes]
    first = min((i for i in stored if 0 <= i < count), default=count)
    return max(0, min(first, count - MIN_SPAN))


class DayPlots(Vertical):
    DEFAULT_CSS = """
    DayPlots { height: auto; }
    DayPlots .day-title { text-style: bold; }
    DayPlots .day-series { color: $text-muted; }
    DayPlots Sparkline { height: 2; margin-bottom: 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.figures: DayFigures | None = None
        self.queue: str | None = None  # None: every queue summed
        self.series: list[Series] = []

    def compose(self) -> ComposeResult:
        yield Static("The day: waiting for the host", classes="day-title", id="day-title")
        for i, name in enumerate(s.name for s in day_series(_EMPTY, None)):
            yield Static(name, classes="day-series", id=f"day-label-{i}")
            yield Sparkline([], id=f"day-plot-{i}")

    def show(self, figures: DayFigures) -> None:
        self.figures = figures
        if self.queue is not None and self.queue not in figures.queues:
            self.queue = None
        self._draw()

    def cycle(self) -> None:
        """Every queue summed, then each queue in turn."""
        if self.figures is None:
            return
        choices: list[str | None] = [None, *self.figures.queues]
        self.queue = choices[(choices.index(self.queue) + 1) % len(choices)]
        self._draw()

    def _draw(self) -> None:
        if self.figures is None:
            return
        self.series = day_series(self.figures, self.queue)
        which = "every queue" if self.queue is None else f"queue {self.queue}"
        first = first_plotted(self.figures)
        minutes = (self.figures.until - self.figures.since) // MINUTE - first
        start = time.strftime("%H:%M", time.localtime(self.figures.since + first * MINUTE))
        self.query_one("#day-title", Static).update(
            f"The day, {which}: from {start}, {minutes} minutes"
        )
        for i, series in enumerate(self.series):
            self.query_one(f"#day-label-{i}", Static).update(f"{series.name}: {series.summary}")
            self.query_one(f"#day-plot-{i}", Sparkline).data = series.values[first:]


_EMPTY = DayFigures(ref=0, since=0, until=0, queues=[], minutes=[])
