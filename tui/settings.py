"""The console's own settings: `$XDG_CONFIG_HOME/inbox-tui/console.toml` (all optional).

    url = "ws://127.0.0.1:8600/agent"   # or INBOX_TUI_URL, or --connect
    user = "alice"
    bell = true                           # terminal bell on a new offer
    theme = "textual-dark"
    download_dir = "~/Downloads"          # where saved attachments go; default
                                          # $XDG_DOWNLOAD_DIR, else ~/Downloads
    [alerts]                              # supervisors' service-level alerts (always a toast)
    bell = true                           # and the terminal bell (default true)
    desktop = false                       # and a desktop notification (default false)
    desktop_sequence = "osc9"             # osc9 | osc777: which escape the terminal reads
                                          # (tui/alerts.py)
    [keymap]                              # binding id = keys, e.g. remap accept to F2
    "offer.accept" = "f2"

The saved session token lives in `$XDG_STATE_HOME/inbox-tui/` with mode 0600, one file per
host and user, so a console restarted after a crash logs in without the password.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from core.paths import default_config_dir, default_state_dir, load_secret, save_secret
from tui.alerts import DESKTOP_SEQUENCES

DEFAULT_URL = "ws://127.0.0.1:8600/agent"


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class AlertSettings:
    """How a service-level alert reaches a supervisor besides its toast. The bell is on by
    default like the offer's: one byte every terminal can mute, and a target passing is as
    urgent as an offer. A desktop notification is off: not every terminal reads the escape,
    and one that does not may print it."""

    bell: bool = True
    desktop: bool = False
    desktop_sequence: str = "osc9"


# [alerts]: what each key must be.
ALERT_TYPES: dict[str, tuple[type, str]] = {
    "bell": (bool, "true or false"),
    "desktop": (bool, "true or false"),
    "desktop_sequence": (str, "a string in quotes"),
}


@dataclass(frozen=True)
class ConsoleSettings:
    url: str = DEFAULT_URL
    user: str = ""
    bell: bool = True
    theme: str = "textual-dark"
    keymap: dict[str, str] = field(default_factory=dict)
    download_dir: str = ""  # empty: tui.downloads.download_dir's default
    alerts: AlertSettings = field(default_factory=AlertSettings)


def normalise_url(url: str) -> str:
    """Accept what people type: host:port, http(s)://host:port, or the full ws URL."""
    url = url.strip()
    if url.startswith(("http://", "https://")):
        url = "ws" + url[4:]
    if not url.startswith(("ws://", "wss://")):
        url = "ws://" + url
    scheme, _, rest = url.partition("://")
    if "/" not in rest:
        rest += "/agent"
    return f"{scheme}://{rest}"


# What each setting must be; bool("false") is True, so a quoted false must not pass as one.
SETTING_TYPES: dict[str, tuple[type, str]] = {
    "url": (str, "a string in quotes"),
    "user": (str, "a string in quotes"),
    "bell": (bool, "true or false"),
    "theme": (str, "a string in quotes"),
    "keymap": (dict, "a table"),
    "download_dir": (str, "a string in quotes"),
    "alerts": (dict, "a table"),
}


def load_settings(
    path: Path | None = None, *, binding_ids: Collection[str] | None = None
) -> ConsoleSettings:
    """Read console.toml; with `binding_ids`, a [keymap] id that is none of them is named
    (with the closest one), since a silently ignored remap looks like a broken key."""
    path = path or default_config_dir() / "console.toml"
    data: dict[str, object] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SettingsError(f"{path}: {e}") from e
        except RecursionError as e:  # tomllib recurses per nested array or inline table
            raise SettingsError(f"{path}: arrays or inline tables nested too deeply") from e
    _check_types(f"{path}:", data, SETTING_TYPES)
    keymap = data.get("keymap", {})
    if not isinstance(keymap, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in keymap.items()
    ):
        raise SettingsError(f"{path}: [keymap] maps binding ids to keys, both strings")
    if binding_ids is not None:
        for binding_id in keymap:
            if binding_id not in binding_ids:
                close = difflib.get_close_matches(binding_id, sorted(binding_ids), n=1)
                hint = (
                    f"did you mean {close[0]!r}?" if close else "see the ids with ? in the console"
                )
                raise SettingsError(f"{path}: [keymap]: unknown binding id {binding_id!r} ({hint})")
    alerts = _alerts(path, data.get("alerts", {}))
    url = os.environ.get("INBOX_TUI_URL") or str(data.get("url") or DEFAULT_URL)
    return ConsoleSettings(
        url=normalise_url(url),
        user=str(data.get("user", "")),
        bell=bool(data.get("bell", True)),
        theme=str(data.get("theme", "textual-dark")),
        keymap=dict(keymap),
        download_dir=str(data.get("download_dir", "")),
        alerts=alerts,
    )


def _check_types(where: str, table: dict[str, object], types: dict[str, tuple[type, str]]) -> None:
    for key, value in table.items():
        if key not in types:
            raise SettingsError(f"{where} unknown setting {key!r}")
        kind, words = types[key]
        if not isinstance(value, kind):
            raise SettingsError(f"{where} {key} must be {words}, not {value!r:.40}")


def _alerts(path: Path, table: object) -> AlertSettings:
    assert isinstance(table, dict)  # load_settings checked the type
    _check_types(f"{path}: [alerts]:", table, ALERT_TYPES)
    sequence = table.get("desktop_sequence", "osc9")
    if sequence not in DESKTOP_SEQUENCES:
        choices = ", ".join(DESKTOP_SEQUENCES)
        raise SettingsError(
            f"{path}: [alerts]: desktop_sequence must be one of {choices}, not {sequence!r:.40}"
        )
    return AlertSettings(
        bell=table.get("bell", True),
        desktop=table.get("desktop", False),
        desktop_sequence=sequence,
    )


def state_file(kind: str, url: str, user: str) -> Path:
    """The console's file of `kind` for this host and user, in the state directory."""
    # Hashed so a URL's characters never end up in a file name.
    key = hashlib.sha256(f"{url}|{user}".encode()).hexdigest()[:16]
    return default_state_dir() / f"{kind}-{key}"


def token_path(url: str, user: str) -> Path:
    return state_file("session", url, user)


def saved_token(url: str, user: str) -> str | None:
    return load_secret(token_path(url, user))


def save_token(url: str, user: str, token: str) -> None:
    save_secret(token_path(url, user), token)


def forget_token(url: str, user: str) -> None:
    token_path(url, user).unlink(missing_ok=True)
