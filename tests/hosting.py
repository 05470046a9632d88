"""A real routing host on a loopback port for tests: store on a real SQLite file in tmp_path."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from core.client import InboxClient
from core.config import HostConfig, parse_config
from core.demo import DEMO_PASSWORD, demo_config, demo_config_text
from core.host.app import close_host, create_app, open_host, serve_loopback
from core.host.state import Host
from core.model import Role
from core.service.sessions import AgentSession

# The demo config with short timeouts, so expiry and reclaim happen within a test.
FAST_QUEUES = """
[[queue]]
name = "general"
channel = "chat"
rule = "most_capacity"
groups = ["tier1", "tier2"]
offer_timeout = 1.5
"""


@dataclass
class RunningHost:
    host: Host
    url: str  # http://127.0.0.1:PORT

    @property
    def agent_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/agent"

    async def agent(self, name: str, presence: str | None = "Available") -> InboxClient:
        """An agent logged in over the real socket (DEMO_PASSWORD), optionally set present."""
        client = InboxClient(self.agent_url, backoff=(0.05, 0.2))
        await client.connect()
        await client.login(name, DEMO_PASSWORD)
        if presence:
            await client.set_presence(presence)
        return client

    def session(self, agent: str, role: Role = Role.AGENT) -> AgentSession:
        """An agent session driven directly through the inbox (no socket)."""
        return self.host.inbox.open_session(
            agent, role, f"test-{agent}-{time.time()}", time.time() + 3600
        )


def fast_config_text(queues: str = FAST_QUEUES) -> str:
    """The demo config (agents with DEMO_PASSWORD), with the chat queues replaced by `queues`
    (by default one quick general queue)."""
    text = demo_config_text()
    start = text.index("[[queue]]")
    end = text.index("# Asynchronous messaging")
    return text[:start] + queues + "\n" + text[end:]


def fast_config() -> HostConfig:
    return parse_config(fast_config_text(), name="fast.toml")


@contextlib.asynccontextmanager
async def running_host(
    tmp_path: Path, config: HostConfig | None = None
) -> AsyncIterator[RunningHost]:
    host = await open_host(config or demo_config(), tmp_path / "data")
    runner, url = await serve_loopback(create_app(host))
    try:
        yield RunningHost(host=host, url=url)
    finally:
        await runner.cleanup()
        await close_host(host)
