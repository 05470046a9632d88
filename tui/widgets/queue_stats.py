"""(A) The queues assigned to me: active chats, waiting, average and longest wait, live.

For supervisors (`sla=True`) also each queue's service-level marks (core/sla.py): the queue
yellow with how many conversations are near a target, red with how many are past one."""

from __future__ import annotations

from rich.table import Table
from textual.widgets import Static

from core.protocol import QueueStats
from core.sla import QueueSla, SlaLevel

_STYLE = {SlaLevel.NEAR: "bold yellow", SlaLevel.BREACHED: "bold red"}


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


class QueueStatsView(Static):
    DEFAULT_CSS = "QueueStatsView { height: auto; }"

    def show(self, stats: list[QueueStats], *, sla: bool = False) -> None:
        sla = sla and any(s.sla is not None for s in stats)  # no targets anywhere: no column
        table = Table(box=None, expand=True, padding=(0, 1), header_style="bold")
        table.add_column("Queue", ratio=3, no_wrap=True)
        table.add_column("Act", justify="right")
        table.add_column("Wait", justify="right")
        table.add_column("Avg", justify="right")
        table.add_column("Max", justify="right")
        if sla:
            table.add_column("SLA", justify="right", no_wrap=True)
        for s in sorted(stats, key=lambda s: s.queue):
            style = _STYLE.get(s.sla.level) if sla and s.sla is not None else None
            row = [
                f"[{style}]{s.queue}[/]" if style else s.queue,
                str(s.active),
                f"[bold red]{s.waiting}[/]" if s.waiting else "0",
                _duration(s.average_wait),
                _duration(s.longest_wait),
            ]
            if sla:
                row.append(_marks(s.sla))
            table.add_row(*row)
        if not stats:
            table.add_row("[dim]no queues[/]", *[""] * (len(table.columns) - 1))
        self.update(table)


def _marks(sla: QueueSla | None) -> str:
    if sla is None:
        return "[dim]none[/]"
    parts = []
    if sla.breached:
        parts.append(f"[{_STYLE[SlaLevel.BREACHED]}]{sla.breached} past[/]")
    if sla.near:
        parts.append(f"[{_STYLE[SlaLevel.NEAR]}]{sla.near} near[/]")
    return " ".join(parts) or "[green]ok[/]"
