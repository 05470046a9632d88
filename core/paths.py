"""Where inbox-tui keeps its files (XDG base directories), and writing secrets to disk.

data    $XDG_DATA_HOME/inbox-tui   else ~/.local/share/inbox-tui   the host's database
config  $XDG_CONFIG_HOME/inbox-tui else ~/.config/inbox-tui        inbox.toml
state   $XDG_STATE_HOME/inbox-tui  else ~/.local/state/inbox-tui   the console's session token and
                                                                   the replies not yet acknowledged
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.files import write_atomically

APP = "inbox-tui"
# A secret file is a token or similar: anything larger is not one of ours.
MAX_SECRET_BYTES = 4096


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    # The XDG spec says to ignore a relative value: it would depend on the current directory.
    root = Path(value) if value and os.path.isabs(value) else Path.home() / fallback
    return root / APP


def default_data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share")


def default_config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config")


def default_state_dir() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state")


def save_secret(path: Path, text: str) -> None:
    """Write `text` to `path` readable by the owner only, atomically.

    The file is never readable by others, not even for a moment, and a reader sees the old
    secret or the new one, never half of one (core.files). Missing directories are created 0700.
    """
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, text.encode("utf-8"))


def load_secret(path: Path) -> str | None:
    """The secret saved at `path`, or None if there is none.

    A file that others can read is refused (PermissionError), as ssh refuses a private key:
    the secret in it must be taken as leaked, and silently using it would hide that.
    """
    try:
        with Path(path).open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise PermissionError(
                    f"{path} is accessible by other users (mode {stat.S_IMODE(mode):o}); "
                    "delete it and log in again"
                )
            data = f.read(MAX_SECRET_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"{path} is larger than {MAX_SECRET_BYTES} bytes: not a saved secret")
    return data.decode("utf-8")
