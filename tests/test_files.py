"""core.files.write_atomically: all of a file or none of it, 0600, first writer wins on request."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from core.files import write_atomically


def test_a_file_is_replaced_whole_or_kept_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    target = tmp_path / "key"
    assert write_atomically(target, b"first") is True
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert write_atomically(target, b"second", replace=False) is False
    assert target.read_bytes() == b"first"
    assert write_atomically(target, b"third") is True
    assert target.read_bytes() == b"third"
    with pytest.raises(TypeError):
        write_atomically(target, "not bytes")  # type: ignore[arg-type]  # fails mid-write
    assert target.read_bytes() == b"third"
    assert [p.name for p in tmp_path.iterdir()] == ["key"]
