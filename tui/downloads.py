"""Where the console puts an attachment an agent saves, and how it opens or shows one.

Textual-free, so it is tested directly. A file is saved in the download directory (console.toml
`download_dir`, else `$XDG_DOWNLOAD_DIR`, else ~/Downloads) under its own name, or with " (1)",
" (2)", ... before the extension when that is taken: never over an existing file, and the
name is made with O_EXCL so a file appearing meanwhile is not overwritten either. The name
comes from another person, so only its last path part is used and a dot file gets no chance
to hide ("…/.bashrc" is saved as "_bashrc").
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

MAX_SUFFIX = 1000  # "name (1000).ext" and then give up: something is wrong with the directory
TEXT_TYPES = ("text/plain", "text/csv")
MAX_INLINE_CHARS = 200_000  # more is saved, not shown


def download_dir(configured: str = "") -> Path:
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_DOWNLOAD_DIR", "")
    return Path(xdg).expanduser() if xdg else Path.home() / "Downloads"


def safe_name(name: str) -> str:
    last = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch if ch.isprintable() else "_" for ch in last).strip()
    if cleaned in ("", ".", ".."):
        return "attachment"
    return "_" + cleaned[1:] if cleaned.startswith(".") else cleaned


def save_new(directory: Path, name: str, data: bytes) -> Path:
    """Write `data` under a name not yet used in `directory` (made if missing); OSError as
    the file system says, FileExistsError when a thousand names are taken."""
    directory.mkdir(parents=True, exist_ok=True)
    base = safe_name(name)
    stem, dot, ext = base.rpartition(".")
    if not stem:
        stem, dot, ext = base, "", ""
    for n in range(MAX_SUFFIX + 1):
        candidate = directory / (base if n == 0 else f"{stem} ({n}){dot}{ext}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return candidate
    raise FileExistsError(f"{directory}: {base} and {MAX_SUFFIX} numbered copies exist")


def opener() -> list[str] | None:
    """The desktop's command that opens a file, or None where there is no desktop to open it
    on: over SSH (the file would open on the server's screen, if anywhere), or without one."""
    if os.environ.get("SSH_CONNECTION") or os.environ.get("SSH_TTY"):
        return None
    if sys.platform == "darwin":
        return ["open"] if shutil.which("open") else None
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None
    return ["xdg-open"] if shutil.which("xdg-open") else None


def as_text(content_type: str, data: bytes) -> str | None:
    """The file as text to show in the console, or None when it is not plain UTF-8 text."""
    if content_type not in TEXT_TYPES or len(data) > MAX_INLINE_CHARS * 4:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) > MAX_INLINE_CHARS or "\x00" in text:
        return None
    return text
