"""Create an incident or a case from the interaction, prefilled from the transcript."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, TextArea

from core.protocol import CreateRecord


class RecordForm(ModalScreen[CreateRecord | None]):
    BINDINGS = [("escape", "dismiss(None)", "Cancel"), ("ctrl+s", "save", "Create")]

    def __init__(self, interaction: str, kind: str, short: str, description: str) -> None:
        super().__init__()
        self.interaction, self.kind = interaction, kind
        self.short, self.description = short, description

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"New {self.kind} from {self.interaction}")
            yield Label("Short description")
            yield Input(self.short, max_length=200, id="form-short")
            yield Label("Priority")
            yield Select(
                [
                    (f"{p} - {n}", p)
                    for p, n in (
                        (1, "critical"),
                        (2, "high"),
                        (3, "moderate"),
                        (4, "low"),
                        (5, "planning"),
                    )
                ],
                value=3,
                allow_blank=False,
                id="form-priority",
            )
            yield Label("Description")
            yield TextArea(self.description, id="form-description")
            with Horizontal():
                yield Button("Create (ctrl+s)", id="form-create", variant="primary")
                yield Button("Cancel", id="form-cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "form-create":
            self.action_save()
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        short = self.query_one("#form-short", Input).value.strip()
        if not short:
            self.notify("A short description is needed", severity="error")
            return
        self.dismiss(
            CreateRecord(
                interaction=self.interaction,
                kind=self.kind,  # type: ignore[arg-type]
                short_description=short,
                description=self.query_one("#form-description", TextArea).text[:16_000],
                priority=int(self.query_one("#form-priority", Select).value),  # type: ignore[arg-type]
            )
        )
