"""The host's shared state, reachable from every endpoint module through `app[HOST]`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from core.auth import Authenticator
from core.config import HostConfig
from core.host.bus import Bus
from core.service.admin import Administration
from core.service.inbox import Inbox


@dataclass
class Host:
    config: HostConfig
    inbox: Inbox
    auth: Authenticator
    admin: Administration
    data_dir: Path
    started_at: float = field(default_factory=time.time)
    connected_agents: int = 0
    dropped_consoles: int = 0  # closed for not reading (their queue filled)
    # On a bus: it routes, and serves what the edges relay (relay.py).
    bus: Bus | None = None
    # The widget's ticket key when the hosts of a cluster share one; None: the data dir's.
    widget_key: bytes | None = None
    # E-mail channel -> the address its SMTP server is bound to, while it serves (mail_in.py).
    mail_listening: dict[str, tuple[str, int]] = field(default_factory=dict)


HOST = web.AppKey("host", Host)
