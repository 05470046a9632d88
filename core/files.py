"""Writing a file whole or not at all: the one routine for secrets, keys and attachments.

Standard library only, so every layer may use it, store/ included.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """Put `data` at `path` so that no reader and no crash ever sees part of it.

    It is written under a temporary name in the same directory, fsynced, then renamed into
    place and the directory fsynced: a reader sees the old file or the new one, and once this
    returns the new one survives a power cut. The file is created 0600 (mkstemp) before any
    byte is written, so a secret is never readable by others, not even for a moment.

    With replace=False an existing file is kept and False returned: of two processes creating
    the same file at once, one wins and both then read the winner's.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            written = True
        else:
            written = False
            # Unlike rename, link refuses to replace what is there.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
                written = True
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if written:
        fsync_dir(path.parent)
    return written


def fsync_dir(path: Path) -> None:
    """Make the names created in directory `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
