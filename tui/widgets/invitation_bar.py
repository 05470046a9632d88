"""One line above the footer, on every pane and width, while a colleague's invitation to join
a chat waits for an answer. A toast fades in seconds; the invitation does not expire, so the
question stays on screen until `y` joins or `Y` declines."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class InvitationBar(Static):
    DEFAULT_CSS = """
    InvitationBar { height: 1; padding: 0 1; display: none; background: $boost; }
    InvitationBar.waiting { display: block; }
    """

    def show(self, invitations: list[tuple[str, str]]) -> None:
        """`invitations`: (interaction, who invites) pairs, the one `y` answers first."""
        self.set_class(bool(invitations), "waiting")
        if not invitations:
            self.update("")
            return
        number, inviter = invitations[0]
        text = Text("Invitation: ", style="bold")
        text.append(f"{inviter} asks you to join {number}", style="bold reverse")
        text.append("  y join · Y decline", style="cyan")
        if len(invitations) > 1:
            text.append(f"  +{len(invitations) - 1} more", style="dim")
        self.update(text)
