"""(B) The composer: Enter sends; ctrl+j starts a new line; ctrl+o edits the draft in
$VISUAL/$EDITOR; a leading "/" asks for a template.

ctrl+j is the newline key because it is a plain control byte (LF) that every terminal, tmux,
screen and SSH pass through unchanged; shift+enter and alt+enter are not (they arrive as Enter,
or are eaten). Pastes keep their lines. A draft may not exceed the protocol's body limit: a
paste that would take it over is refused with a message saying so, never cut silently.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from textual import events
from textual.app import SuspendNotSupported
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea

MAX_BODY = 16_000  # core.model.Body's max_length: the host refuses anything longer
PLACEHOLDER = "Reply: Enter sends, ctrl+j new line, ctrl+o $EDITOR, / templates"


class Composer(TextArea):
    class Send(Message):
        def __init__(self, body: str) -> None:
            super().__init__()
            self.body = body

    class WantsTemplate(Message):
        pass

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+o", "edit_externally", "Editor", id="composer.editor"),
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(
            placeholder=PLACEHOLDER,
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            **kw,
        )

    @property
    def value(self) -> str:
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)

    def too_long(self, length: int) -> bool:
        if length <= MAX_BODY:
            return False
        self.notify(
            f"A reply is at most {MAX_BODY:,} characters; this one would be {length:,}. "
            "Nothing was added.",
            title="Too long",
            severity="error",
        )
        return True

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.submit()
            return
        if event.key == "ctrl+j":
            event.stop()
            event.prevent_default()
            self.insert("\n")
        # Anything else: Textual goes on to TextArea._on_key itself (handlers run per class
        # along the MRO until one prevents the default), so calling super would type twice.

    async def _on_paste(self, event: events.Paste) -> None:
        selected = len(self.selected_text)
        if self.too_long(len(self.text) - selected + len(event.text)):
            event.stop()
            event.prevent_default()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if event.text_area is self and self.text == "/":
            self.clear()
            self.post_message(self.WantsTemplate())

    def submit(self) -> None:
        body = self.text.strip()
        if not body or self.too_long(len(body)):
            return
        self.clear()
        self.post_message(self.Send(body))

    def action_edit_externally(self) -> None:
        """Edit the draft in the user's own editor (as mutt, aerc and git do)."""
        command = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if not command:
            self.notify("Set $VISUAL or $EDITOR to edit replies in your editor", severity="error")
            return
        with tempfile.TemporaryDirectory(prefix="inbox-tui-") as tmp:
            draft = Path(tmp) / "reply.txt"
            draft.write_text(self.text, encoding="utf-8")
            try:
                with self.app.suspend():
                    status = subprocess.run([*shlex.split(command), str(draft)]).returncode
            except OSError as e:
                self.notify(f"Cannot run {command!r}: {e.strerror}", severity="error")
                return
            except SuspendNotSupported:
                self.notify("This console cannot hand the terminal to an editor", severity="error")
                return
            if status != 0:
                self.notify(f"{command} exited with {status}: the draft is unchanged")
                return
            text = draft.read_text(encoding="utf-8", errors="replace").rstrip("\n")
        if not self.too_long(len(text)):
            self.value = text
        self.focus()
