"""Login: host URL, user, password (or the saved session token), with clear errors."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Static


class LoginScreen(Screen[None]):
    BINDINGS = [("escape", "app.quit", "Quit")]

    def __init__(self, url: str, user: str, error: str = "", *, saved: bool = False) -> None:
        """`saved`: a session token for `user` is on disk. The form still waits for the user:
        someone used to typing a password would otherwise type it into the main screen,
        where its letters are commands (a `w` closed a live chat)."""
        super().__init__()
        self.url, self.user, self.error, self.saved = url, user, error, saved
        if saved and not error:
            self.error = f"Saved session for {user}: Enter continues, or type the password."

    def compose(self) -> ComposeResult:
        with Vertical(id="login-box"):
            yield Static("inbox-tui", id="login-title")
            yield Label("Host")
            yield Input(self.url, id="login-url")
            yield Label("User")
            yield Input(self.user, id="login-user")
            yield Label("Password")
            yield Input(password=True, id="login-password")
            yield Button("Log in", id="login-submit", variant="primary")
            yield Static(self.error, id="login-error")
        yield Footer()

    def on_mount(self) -> None:
        target = "#login-password" if self.user else "#login-user"
        self.query_one(target, Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "login-password":
            self.submit()
        else:
            self.focus_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.submit()

    def submit(self) -> None:
        url = self.query_one("#login-url", Input).value
        user = self.query_one("#login-user", Input).value.strip()
        password = self.query_one("#login-password", Input).value
        # The saved token is for the user it was saved under: another name needs a password.
        token = self.saved and not password and user == self.user
        if not user or not (password or token):
            self.show_error("Enter your user name and password.")
            return
        self.show_error("Connecting…")
        self.app.run_worker(self.app.log_in(url, user, password or None), exclusive=True)  # type: ignore[attr-defined]

    def show_error(self, text: str) -> None:
        self.query_one("#login-error", Static).update(text)

    def failed(self, text: str) -> None:
        """A refused login: say why and put the cursor back in an empty password field."""
        self.show_error(text)
        password = self.query_one("#login-password", Input)
        password.value = ""
        password.focus()
