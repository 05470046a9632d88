"""The console's own settings file: every mistake in it is named with the file, nothing is
guessed (a quoted "false" is not taken as true)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.host_process import INBOX_TUI, console_env
from tui.settings import ConsoleSettings, SettingsError, load_settings


def settings_from(tmp_path: Path, text: str) -> ConsoleSettings:
    path = tmp_path / "console.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def test_a_full_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INBOX_TUI_URL", raising=False)
    text = 'url = "host.example:8600"\nuser = "alice"\nbell = false\ntheme = "nord"\n'
    text += 'download_dir = "~/inbox-files"\n[keymap]\n"offer.accept" = "f2"\n'
    settings = settings_from(tmp_path, text)
    assert settings == ConsoleSettings(
        url="ws://host.example:8600/agent",
        user="alice",
        bell=False,
        theme="nord",
        keymap={"offer.accept": "f2"},
        download_dir="~/inbox-files",
    )
    assert load_settings(tmp_path / "missing.toml") == ConsoleSettings()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("bell = 'false'", "bell must be true or false, not 'false'"),
        ("user = 7", "user must be a string in quotes, not 7"),
        ("keymap = 'f2'", "keymap must be a table"),
        ("[keymap]\n'offer.accept' = 2", "[keymap] maps binding ids to keys, both strings"),
        ("colour = 'red'", "unknown setting 'colour'"),
        ("user = ", "Invalid value"),
        ("x = " + "[" * 3000 + "]" * 3000, "arrays or inline tables nested too deeply"),
    ],
)
def test_mistakes_are_named_with_the_file(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(SettingsError) as refused:
        settings_from(tmp_path, text)
    assert str(refused.value).startswith(f"{tmp_path / 'console.toml'}: ")
    assert says in str(refused.value)


def test_bytes_that_are_not_text_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "console.toml"
    path.write_bytes(b"user = '\xff'")
    with pytest.raises(SettingsError, match=r"console\.toml: "):
        load_settings(path)


def test_an_unknown_keymap_id_is_named_with_the_closest_one(tmp_path: Path) -> None:
    from tui.actions import binding_ids

    path = tmp_path / "console.toml"
    path.write_text('[keymap]\n"offer.acept" = "f2"\n', encoding="utf-8")
    with pytest.raises(SettingsError) as refused:
        load_settings(path, binding_ids=binding_ids())
    assert str(refused.value) == (
        f"{path}: [keymap]: unknown binding id 'offer.acept' (did you mean 'offer.accept'?)"
    )
    path.write_text('[keymap]\n"offer.accept" = "f2"\n', encoding="utf-8")
    assert load_settings(path, binding_ids=binding_ids()).keymap == {"offer.accept": "f2"}


def test_the_console_refuses_an_unknown_keymap_id_before_it_starts(tmp_path: Path) -> None:
    env = console_env(tmp_path)
    config = Path(env["XDG_CONFIG_HOME"]) / "inbox-tui"
    config.mkdir(parents=True)
    (config / "console.toml").write_text('[keymap]\n"chat.nxt_unread" = "u"\n')
    run = subprocess.run(
        [INBOX_TUI, "--connect", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "unknown binding id 'chat.nxt_unread' (did you mean 'chat.next_unread'?)" in run.stderr
