"""Supervisors: every open conversation, one line each, sorted and filtered, times ticking.

The rows are the host's floor rows (core/protocol.py FloorRow); waiting and handle times and
the time since the customer's last message are worked out here from the rows' times, so they
tick every second without asking the host. A Line-API list (virtual_list.py) draws only the
rows in view, so a floor of thousands costs what a screenful does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from core.protocol import FloorRow
from core.sla import SlaLevel, SlaTargets, clock_level
from tui.widgets.virtual_list import VirtualList

# (label, key): the orders `o` cycles through. Longest waiting / handled first, then by name.
SORTS: list[tuple[str, Callable[[FloorRow], tuple[object, ...]]]] = [
    ("wait", lambda r: (not waiting(r), r.arrived_at, r.interaction)),
    ("handle time", lambda r: (waiting(r), r.accepted_at or 0.0, r.interaction)),
    ("queue", lambda r: (r.queue or "", r.arrived_at, r.interaction)),
    ("agent", lambda r: (r.agent or "", r.arrived_at, r.interaction)),
]
# Filter fields a supervisor may name: "queue:vip", "agent:alice", "channel:chat".
FIELDS = {
    "queue": lambda r: r.queue or "",
    "agent": lambda r: " ".join([r.agent or "", *r.others]),
    "channel": lambda r: r.channel,
}
# Column widths: all of them fit an 80-column terminal.
COLUMNS = [("Number", 10), ("Customer", 10), ("Channel", 7), ("Queue", 7), ("Agent", 8)]
COLUMNS += [("State", 8), ("Wait/hdl", 8), ("Cust.", 6), ("SLA", 4), ("P", 2)]
# The SLA column's word and colour per level (the word for terminals without colour).
SLA_MARKS = {
    SlaLevel.OK: ("", ""),
    SlaLevel.NEAR: ("near", "yellow"),
    SlaLevel.BREACHED: ("past", "bold red"),
}


def waiting(row: FloorRow) -> bool:
    """No agent has it now: new, or back in its queue (a handle time would mislead)."""
    return row.agent is None or row.accepted_at is None


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def matches(row: FloorRow, query: str) -> bool:
    """Every word of `query` matches: `field:value` that field, a bare word any of them."""
    for word in query.lower().split():
        name, _, value = word.partition(":")
        if value and name in FIELDS:
            if value not in FIELDS[name](row).lower():
                return False
            continue
        text = " ".join(
            [row.interaction, row.customer_name, row.channel, row.queue or "", row.agent or ""]
        )
        if word not in text.lower():
            return False
    return True


def sla_level(row: FloorRow, targets: SlaTargets | None, now: float) -> SlaLevel:
    """The row's running service-level clock against its queue's target: the host's clock
    (the one its alerts come from), ticking here."""
    if targets is None or row.sla_target is None or row.sla_since is None:
        return SlaLevel.OK
    return clock_level(targets.seconds(row.sla_target), targets.near, row.sla_since, None, now)


def cells(row: FloorRow, now: float, sla: SlaLevel = SlaLevel.OK) -> list[str]:
    if row.agent is None or row.accepted_at is None:
        timer = f"w {duration(now - row.arrived_at)}"
    else:
        timer = f"h {duration(now - row.accepted_at)}"
    since = "" if row.last_customer_at is None else duration(now - row.last_customer_at)
    state = "on hold" if row.on_hold else row.state.replace("_", "-")
    agent = row.agent or "-"
    if row.others:
        agent += f"+{len(row.others)}"
    return [
        row.interaction,
        row.customer_name,
        row.channel,
        row.queue or "-",
        agent,
        state,
        timer,
        since + ("!" if row.unanswered else ""),
        SLA_MARKS[sla][0],
        str(row.priority) if row.priority else "",
    ]


def line(values: list[str]) -> str:
    return " ".join(v[:w].ljust(w) for v, (_, w) in zip(values, COLUMNS, strict=True))


class FloorTable(Vertical):
    DEFAULT_CSS = """
    FloorTable { height: 1fr; }
    FloorTable > #floor-header { height: 1; text-style: bold; }
    FloorTable > #floor-status { height: 1; color: $text-muted; }
    FloorTable > VirtualList { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.all_rows: list[FloorRow] = []
        self.sort = 0
        self.filter_text = ""
        self.skew = 0.0  # the host's clock minus ours
        self.targets: dict[str, SlaTargets] = {}  # by queue: the queues with [queue.sla]

    def compose(self) -> ComposeResult:
        yield Static(line([name for name, _ in COLUMNS]), id="floor-header")
        yield VirtualList[FloorRow](render=self._draw_row, id="floor-rows")
        yield Static(id="floor-status")

    @property
    def rows(self) -> VirtualList[FloorRow]:
        return self.query_one("#floor-rows", VirtualList)

    def now(self) -> float:
        return time.time() + self.skew

    def show(
        self,
        rows: list[FloorRow],
        skew: float | None = None,
        targets: dict[str, SlaTargets] | None = None,
    ) -> None:
        """Every row of the floor as the console knows it now; the cursor stays on its
        conversation where it can. `targets`: the queues' service levels, from their figures."""
        if skew is not None:
            self.skew = skew
        if targets is not None:
            self.targets = targets
        self.all_rows = rows
        self._redraw()

    def cycle_sort(self) -> str:
        self.sort = (self.sort + 1) % len(SORTS)
        self._redraw()
        return SORTS[self.sort][0]

    def set_filter(self, query: str) -> None:
        self.filter_text = query.strip()
        self._redraw()

    def tick(self) -> None:
        """Redraw the times: a second has passed."""
        self.rows.set_rows(self.rows.rows)

    def current(self) -> FloorRow | None:
        return self.rows.highlighted()

    def _redraw(self) -> None:
        label, key = SORTS[self.sort]
        shown = sorted((r for r in self.all_rows if matches(r, self.filter_text)), key=key)
        listed = self.rows
        was = listed.highlighted()
        cursor = next(
            (i for i, r in enumerate(shown) if was and r.interaction == was.interaction), None
        )
        listed.set_rows(shown, cursor=cursor)
        status = f"{len(shown)} of {len(self.all_rows)} open · by {label}"
        if self.filter_text:
            status += f" · filter: {self.filter_text}"
        self.query_one("#floor-status", Static).update(Text(status))

    def _draw_row(self, row: FloorRow, width: int, selected: bool) -> Text:
        now = self.now()
        sla = sla_level(row, self.targets.get(row.queue or ""), now)
        text = Text(line(cells(row, now, sla)), no_wrap=True, overflow="ellipsis")
        if row.unanswered and not selected:
            text.stylize("bold")
        style = SLA_MARKS[sla][1]
        if style and not selected:
            # The wait/handle time and the mark, in the level's colour.
            start = sum(w + 1 for _, w in COLUMNS[:6])
            text.stylize(style, start, start + sum(w + 1 for _, w in COLUMNS[6:9]))
        return text
