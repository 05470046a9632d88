"""tui.downloads: where a saved attachment goes, that nothing is ever overwritten, when the
desktop's opener is offered, and what shows as text."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.downloads import as_text, download_dir, opener, safe_name, save_new


def test_download_dir_is_the_setting_else_xdg_else_home_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DOWNLOAD_DIR", raising=False)
    assert download_dir() == tmp_path / "Downloads"
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(tmp_path / "xdg"))
    assert download_dir() == tmp_path / "xdg"
    assert download_dir("~/files") == tmp_path / "files"


def test_saving_never_overwrites_and_numbers_the_copies(tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_bytes(b"mine")
    first = save_new(tmp_path, "report.pdf", b"theirs 1")
    second = save_new(tmp_path, "report.pdf", b"theirs 2")
    assert (first.name, second.name) == ("report (1).pdf", "report (2).pdf")
    assert (tmp_path / "report.pdf").read_bytes() == b"mine"
    assert second.read_bytes() == b"theirs 2"
    assert save_new(tmp_path / "new", "README", b"x").name == "README"
    assert save_new(tmp_path / "new", "README", b"y").name == "README (1)"


@pytest.mark.parametrize(
    ("name", "saved"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\evil.exe", "evil.exe"),
        (".bashrc", "_bashrc"),
        ("a\x1b[2Jb.txt", "a_[2Jb.txt"),
        ("..", "attachment"),
        ("", "attachment"),
    ],
)
def test_the_name_cannot_leave_the_directory_or_hide(name: str, saved: str) -> None:
    assert safe_name(name) == saved


def test_no_opener_over_ssh_or_without_a_desktop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.1 5000 10.0.0.2 22")
    assert opener() is None
    monkeypatch.delenv("SSH_CONNECTION")
    monkeypatch.delenv("SSH_TTY", raising=False)
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert opener() is None


def test_only_utf8_plain_text_shows_inline() -> None:
    assert as_text("text/plain", "naïve\n".encode()) == "naïve\n"
    assert as_text("text/plain", b"\xff\xfe") is None
    assert as_text("text/html", b"<b>hi</b>") is None
    assert as_text("application/pdf", b"%PDF-1.4") is None
