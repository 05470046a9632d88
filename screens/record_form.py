"""Create an incident or a case from the interaction, prefilled from the transcript.

The form opens as its key is taken and the host's prefill comes after (`prefill`): what is
typed meanwhile goes into the form, and the prefill fills only what is still empty."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, TextArea

from core.protocol import CreateRecord
from screens.picker import ASKING


class RecordForm(ModalScreen[CreateRecord | None]):
    BINDINGS = [("escape", "dismiss(None)", "Cancel"), ("ctrl+s", "save", "Create")]

    def __init__(self, interaction: str, kind: str) -> None:
        super().__init__()
        self.interaction, self.kind = interaction, kind
        self.filled = False  # the host's prefill has come (or will not)
        self.save_when_filled = False  # ctrl+s pressed before it came

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"New {self.kind} from {self.interaction}")
            yield Label(ASKING, id="form-asking")
            yield Label("Short description")
            yield Input(max_length=200, id="form-short")
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
            yield TextArea(id="form-description")
            with Horizontal():
                yield Button("Create (ctrl+s)", id="form-create", variant="primary")
                yield Button("Cancel", id="form-cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "form-create":
            self.action_save()
        else:
            self.dismiss(None)

    def prefill(self, short: str, description: str) -> None:
        """The host's suggestion, into the fields still empty; "" for none (the host could
        not be asked: the form is the agent's to fill)."""
        if self.filled or not self.is_attached:
            return  # closed before the host answered
        self.filled = True
        self.query_one("#form-asking", Label).update("")
        field = self.query_one("#form-short", Input)
        if not field.value:
            field.value = short
        text = self.query_one("#form-description", TextArea)
        if not text.text:
            text.text = description
        if self.save_when_filled:
            self.action_save()

    def action_save(self) -> None:
        if not self.filled:
            self.save_when_filled = True  # with the transcript's description, once it is here
            return
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
