"""The console application: wires the client, the state and the screens. Nothing else."""

from __future__ import annotations

import contextlib

from textual.app import App
from textual.binding import Binding
from textual.dom import DOMNode
from textual.message import Message
from textual.screen import Screen

from core.client import ClientError, InboxClient
from core.protocol import Event, OfferEvent
from screens.help import HelpScreen
from screens.login import LoginScreen
from screens.main import MainScreen
from screens.monitor import MonitorScreen
from screens.records import RecordsScreen
from screens.supervisor import SupervisorScreen
from tui.actions import APP_ACTIONS, bindings
from tui.commands import InboxCommands
from tui.replies import Replies
from tui.settings import ConsoleSettings, forget_token, save_token, saved_token
from tui.sla_toasts import SlaToasts
from tui.state import ConsoleState


class StateChanged(Message):
    def __init__(self, areas: set[str]) -> None:
        super().__init__()
        self.areas = areas


class InboxApp(App[None]):
    CSS_PATH = "../styles/inbox.tcss"
    TITLE = "inbox-tui"
    COMMANDS = App.COMMANDS | {InboxCommands}
    BINDINGS = bindings(APP_ACTIONS)

    def __init__(self, settings: ConsoleSettings, *, password: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.password = password
        self.state = ConsoleState()
        self.client: InboxClient = InboxClient(settings.url)
        self.connection = "disconnected"
        self.sla_toasts = SlaToasts(self, settings.alerts)
        self.replies = Replies(self, self.state, lambda: self.client, self.redraw)

    def on_mount(self) -> None:
        self.theme = self.settings.theme
        self.set_keymap(self.settings.keymap)
        if self.settings.user and self.password:
            self.run_worker(self.log_in(self.settings.url, self.settings.user, self.password))
        else:
            # A saved token does not skip the form: see LoginScreen.
            saved = bool(self.settings.user and self.saved())
            self.push_screen(LoginScreen(self.settings.url, self.settings.user, saved=saved))

    def saved(self) -> str | None:
        with contextlib.suppress(OSError, ValueError):
            return saved_token(self.settings.url, self.settings.user)
        return None

    async def log_in(self, url: str, user: str, password: str | None) -> None:
        """Connect and log in (password, else the saved token); on failure, say why on the
        login screen."""
        from tui.settings import normalise_url

        url = normalise_url(url)
        await self.client.close()
        self.client = InboxClient(url, on_event=self.inbox_event, on_status=self.inbox_status)
        try:
            await self.client.connect()
            token = None if password else saved_token(url, user)
            if password:
                reply = await self.client.login(user, password)
            elif token:
                reply = await self.client.login_token(token)
            else:
                raise ClientError("bad_credentials", "enter your password")
        except ClientError as e:
            await self.client.close()
            if e.code in ("bad_token", "expired"):
                forget_token(url, user)
            self.show_login(url, user, self.explain(e))
            return
        except (OSError, TimeoutError) as e:
            await self.client.close()
            self.show_login(url, user, f"Cannot reach the host at {url}: {e}")
            return
        with contextlib.suppress(OSError):
            save_token(url, user, reply.token)
        self.state.load(reply.snapshot)
        self.switch_to_main()
        self.show_sla_alerts()
        self.replies.logged_in(url, user)

    @staticmethod
    def explain(e: ClientError) -> str:
        return {
            "bad_credentials": "Wrong user name or password.",
            "protocol_mismatch": f"This console and the host do not match: {e.message}",
            "rate_limited": f"Too many attempts: {e.message}",
        }.get(e.code, f"{e.code}: {e.message}")

    def show_login(self, url: str, user: str, error: str) -> None:
        if isinstance(self.screen, LoginScreen):
            self.screen.failed(error)
        else:
            self.push_screen(LoginScreen(url, user, error))

    def switch_to_main(self) -> None:
        main = MainScreen()
        if isinstance(self.screen, LoginScreen):
            self.switch_screen(main)
        else:
            self.push_screen(main)

    def redraw(self, areas: set[str]) -> None:
        self.post_message(StateChanged(areas))

    def inbox_event(self, event: Event) -> None:
        waiting = len(self.state.outbox)
        areas = self.state.apply(event)
        if len(self.state.outbox) != waiting:  # a reply of mine stored, told by the host
            self.replies.outbox_changed()
        if isinstance(event, OfferEvent):
            view = event.view
            if self.settings.bell:
                self.bell()
            self.notify(
                f"{view.customer_name or view.item.customer} on {view.item.channel}: press a",
                title="New offer",
            )
        while self.state.notes:
            self.notify(self.state.notes.pop(0))
        self.show_sla_alerts()
        if areas:
            self.post_message(StateChanged(areas))

    def show_sla_alerts(self) -> None:
        self.sla_toasts.show(self.state.sla_alerts)

    def inbox_status(self, status: str) -> None:
        self.connection = status
        self.post_message(StateChanged({"connection"}))

    def on_state_changed(self, message: StateChanged) -> None:
        if not self._running:
            # Shutting down: the screens' widgets are being removed under the redraw (it
            # raised NoMatches when events came in as the console quit).
            return
        for s in self.screen_stack:
            if isinstance(s, MainScreen | RecordsScreen | SupervisorScreen | MonitorScreen):
                s.refresh_areas(message.areas)

    def bindings_in_force(self, *nodes: DOMNode) -> list[Binding]:
        """The bindings of `nodes` with the user's [keymap] applied. Textual applies it to the
        copies it looks keys up in, never to the classes' BINDINGS: what help and the palette
        show must come from the same place, or they teach keys that do nothing."""
        found: list[Binding] = []
        for node in nodes:
            bindings = node._bindings.copy()
            bindings.apply_keymap(self._keymap)
            found += [b for group in bindings.key_to_bindings.values() for b in group]
        return found

    def keys_for(self, action: str, screen: Screen[object]) -> str:
        """The keys that run `action` on `screen` (or app-wide), as the footer writes them."""
        keys = [
            self.get_key_display(b)
            for b in self.bindings_in_force(screen, self)
            if b.action == action
        ]
        return ", ".join(dict.fromkeys(keys))

    def action_help(self) -> None:
        # The table's help line (the binding's tooltip) where there is one; a dialog's own
        # bindings have only their label.
        rows = {
            ((b.id or "app").split(".")[0], self.get_key_display(b), b.tooltip or b.description)
            for b in self.bindings_in_force(*self.screen_stack, self)
            if b.description
        }
        self.push_screen(HelpScreen(sorted(rows)))

    async def on_unmount(self) -> None:
        await self.replies.flush()
        await self.client.close()
