"""The demo's setup: the shipped demo config and the one password every demo agent gets.

`inbox-tui --demo`, the tests and the benches use it; a real host never does. Its config comes
from `inbox-tui admin init` and names no password, and the demo config on disk names none
either, so `inbox-tui --server --config core/examples/demo.toml` lets nobody log in.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from msgspec.structs import replace

from core.config import HostConfig, parse_config

__all__ = ["DEMO_PASSWORD", "demo_config", "demo_config_path", "demo_config_text", "with_logins"]

# Obeys the rules every password obeys (core.auth.check_password_rules): the demo is no
# exception, only the one place where a password is known in advance.
DEMO_PASSWORD = "demo-pass"

_AGENT_TABLE = re.compile(r"^\[\[agent\]\][ \t]*$", re.MULTILINE)


def demo_config_path() -> Path:
    """The demo's commented config, shipped in the package."""
    # The package is always installed as a directory (never zipped), so this is a real file.
    return Path(str(resources.files("core").joinpath("examples", "demo.toml")))


def demo_config_text(text: str | None = None) -> str:
    """Config text (by default the demo's) with `password = DEMO_PASSWORD` in every agent
    table: for a host started as a subprocess, which reads its config from a file."""
    if text is None:
        text = demo_config_path().read_text(encoding="utf-8")
    return _AGENT_TABLE.sub(f'[[agent]]\npassword = "{DEMO_PASSWORD}"', text)


def with_logins(config: HostConfig) -> HostConfig:
    """`config` with every agent given the demo password (those without one of their own)."""
    passwords = dict.fromkeys((a.id for a in config.agents), DEMO_PASSWORD)
    return replace(config, seed_passwords=passwords | config.seed_passwords)


def demo_config() -> HostConfig:
    """The demo config, every agent able to log in with DEMO_PASSWORD."""
    path = demo_config_path()
    return with_logins(parse_config(path.read_text(encoding="utf-8"), name=str(path), path=path))
