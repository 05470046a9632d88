"""(F) The interaction's attachments, and the templates available to me."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from core.model import Attachment, Template


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class AttachmentsPanel(Static):
    DEFAULT_CSS = "AttachmentsPanel { height: auto; }"

    def show(self, attachments: list[Attachment], templates: list[Template]) -> None:
        text = Text()
        text.append("Attachments", style="bold")
        text.append("  (d: show, save, open)\n" if attachments else "\n", style="dim")
        for a in attachments:
            text.append(f"  📎 {a.name}", style="")
            text.append(f"  {_size(a.size)}\n", style="dim")
        if not attachments:
            text.append("  none\n", style="dim")
        text.append("Templates", style="bold")
        text.append("  (type / in the composer)\n", style="dim")
        for t in templates:
            text.append(f"  /{t.shortcut}", style="cyan")
            text.append(f"  {t.title or t.text[:40]}\n", style="dim")
        self.update(text)
