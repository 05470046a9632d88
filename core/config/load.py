"""Finding, reading and parsing a config file; core.config.validate does the rest."""

from __future__ import annotations

import os
import re
import tomllib
from importlib import resources
from pathlib import Path

from core.config.locate import first_deep_line
from core.config.settings import ConfigError, HostConfig
from core.config.validate import validate

MAX_CONFIG_BYTES = 1 << 20


def default_config_path() -> Path:
    """$XDG_CONFIG_HOME/inbox-tui/inbox.toml, else ~/.config/inbox-tui/inbox.toml."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says to ignore a relative value: it would depend on the current directory.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "inbox-tui" / "inbox.toml"


def example_config_path() -> Path:
    """The commented config for a real host, shipped in the package; `inbox-tui admin init`
    copies it. It names no agent and no password (the demo's is core.demo)."""
    # The package is always installed as a directory (never zipped), so this is a real file.
    return Path(str(resources.files("core").joinpath("examples", "inbox.toml")))


def load_config(path: Path) -> HostConfig:
    """Read, parse and validate a config file; every problem is a ConfigError."""
    path = Path(path)
    name = str(path)
    try:
        with path.open("rb") as f:
            # Read one byte past the limit so an oversize file is never read whole.
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(name, None, "", f"cannot read the file: {e.strerror or e}") from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            name,
            None,
            "",
            f"file is larger than {MAX_CONFIG_BYTES >> 20} MiB; is it the right file?",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(name, line, "", "the file is not valid UTF-8") from e
    return parse_config(text, name=name, base_dir=path.parent, path=path)


def parse_config(
    text: str,
    *,
    name: str = "<config>",
    base_dir: Path | None = None,
    path: Path | None = None,
) -> HostConfig:
    """Validate config text; `name` is the file name used in messages, `base_dir` anchors a
    relative data_dir (the current directory when None)."""
    if len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise ConfigError(name, None, "", f"config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _syntax_error(name, str(e), text) from e
    except RecursionError as e:
        # tomllib recurses per nested array or inline table; a few thousand fit in the file.
        line = first_deep_line(text)
        raise ConfigError(name, line, "", "arrays or inline tables nested too deeply") from e
    return validate(name, text, doc, base_dir, path)


_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_END = re.compile(r"\s*\(at end of document\)$")


def _syntax_error(name: str, message: str, text: str) -> ConfigError:
    if m := _TOML_AT.search(message):
        reason = f"TOML syntax error: {message[: m.start()]} (column {m.group(2)})"
        return ConfigError(name, int(m.group(1)), "", reason)
    if m := _TOML_END.search(message):
        last = text.count("\n") + (0 if text.endswith("\n") else 1)
        reason = f"TOML syntax error at end of file: {message[: m.start()]}"
        return ConfigError(name, max(last, 1), "", reason)
    return ConfigError(name, None, "", f"TOML syntax error: {message}")
