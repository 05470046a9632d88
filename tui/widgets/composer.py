"""(B) The composer: Enter sends; a leading "/" asks for a template."""

from __future__ import annotations

from textual.message import Message
from textual.widgets import Input

MAX_BODY = 16_000


class Composer(Input):
    class Send(Message):
        def __init__(self, body: str) -> None:
            super().__init__()
            self.body = body

    class WantsTemplate(Message):
        pass

    def __init__(self, **kw: object) -> None:
        super().__init__(
            placeholder="Type a reply; / for templates; Enter sends",
            max_length=MAX_BODY,
            **kw,  # type: ignore[arg-type]
        )

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.value == "/":
            self.value = ""
            self.post_message(self.WantsTemplate())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        body = event.value.strip()
        if body:
            self.value = ""
            self.post_message(self.Send(body))
