"""A fuzzy picker: type to narrow, Enter picks, Escape backs out (transfer, invite,
templates, presence)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.fuzzy import Matcher
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

ASKING = "Asking the host…"


class Picker(ModalScreen[str | None]):
    BINDINGS = [
        ("escape", "dismiss(None)", "Cancel"),
        ("down", "move(1)", "Down"),
        ("up", "move(-1)", "Up"),
    ]

    def __init__(self, title: str, choices: list[tuple[str, str]] | None) -> None:
        """`choices` are (label, value) pairs; None while the host is still asked for them
        (`show_choices` brings them). The picker opens at once all the same, so what is typed
        behind its key goes into the filter rather than to the screen underneath."""
        super().__init__()
        self.title_text = title
        self.choices = choices
        # Enter pressed before the choices came: pick the best match once they are here.
        self.pick_when_shown = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text)
            yield Input(placeholder="type to filter", id="picker-filter")
            yield OptionList(*self._options(""), id="picker-options")
            yield Label(ASKING if self.choices is None else "", id="picker-asking")

    def show_choices(self, choices: list[tuple[str, str]]) -> None:
        if self.choices is not None or not self.is_attached:
            return  # closed before the host answered: nothing to show
        self.choices = choices
        self.query_one("#picker-asking", Label).update("")
        self._filter(self.query_one(Input).value)
        if self.pick_when_shown:
            self._pick()

    def _options(self, query: str) -> list[Option]:
        if self.choices is None:
            return []
        if not query:
            return [Option(label, id=value) for label, value in self.choices]
        matcher = Matcher(query)
        scored = [(matcher.match(label), label, value) for label, value in self.choices]
        return [
            Option(matcher.highlight(label), id=value)
            for score, label, value in sorted(scored, key=lambda s: -s[0])
            if score > 0
        ]

    def _filter(self, query: str) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        options.add_options(self._options(query))
        options.highlighted = 0 if options.option_count else None

    def _pick(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            self.dismiss(options.get_option_at_index(options.highlighted).id)

    def on_input_changed(self, event: Input.Changed) -> None:
        self._filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.choices is None:
            self.pick_when_shown = True
            return
        self._pick()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_move(self, step: int) -> None:
        options = self.query_one(OptionList)
        if options.option_count:
            current = options.highlighted or 0
            options.highlighted = (current + step) % options.option_count
