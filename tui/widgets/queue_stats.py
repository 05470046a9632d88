"""(A) The queues assigned to me: active chats, waiting, average and longest wait, live."""

from __future__ import annotations

from rich.table import Table
from textual.widgets import Static

from core.protocol import QueueStats


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


class QueueStatsView(Static):
    DEFAULT_CSS = "QueueStatsView { height: auto; }"

    def show(self, stats: list[QueueStats]) -> None:
        table = Table(box=None, expand=True, padding=(0, 1), header_style="bold")
        table.add_column("Queue", ratio=3, no_wrap=True)
        table.add_column("Act", justify="right")
        table.add_column("Wait", justify="right")
        table.add_column("Avg", justify="right")
        table.add_column("Max", justify="right")
        for s in sorted(stats, key=lambda s: s.queue):
            table.add_row(
                s.queue,
                str(s.active),
                f"[bold red]{s.waiting}[/]" if s.waiting else "0",
                _duration(s.average_wait),
                _duration(s.longest_wait),
            )
        if not stats:
            table.add_row("[dim]no queues[/]", "", "", "", "")
        self.update(table)
