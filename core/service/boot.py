"""Opening and closing the service over its store: what a host does first and last.

The host never sees the store: it gets the inbox, the authenticator and the administration,
all over the one store opened here, and hands the inbox back to `close_service`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from msgspec.structs import replace

from core.auth import Authenticator
from core.config import HostConfig
from core.service.admin import Administration
from core.service.inbox import Inbox
from store import open_store


class Service(NamedTuple):
    inbox: Inbox  # its `config` is the one in force: the agents as stored
    auth: Authenticator
    admin: Administration


async def open_service(config: HostConfig, data_dir: Path) -> Service:
    """Open the store, bring the config into it, seed demo passwords and start routing."""
    store = await open_store(data_dir, synchronous=config.host.synchronous)
    try:
        await store.upsert_channels(config.channels)
        await store.upsert_presence_states(config.presences)
        await store.upsert_queues(config.queues)
        await store.upsert_templates(config.templates)
        # The config defines its agents, but whether one is disabled is the admin's call
        # (inbox-tui admin agent disable), kept across restarts; agents added with the admin
        # command are routed too.
        stored = {a.id: a for a in await store.list_agents()}
        await store.upsert_agents(
            replace(a, disabled=stored[a.id].disabled) if a.id in stored else a
            for a in config.agents
        )
        auth = Authenticator(store, session_ttl=config.host.session_ttl)
        await auth.seed(config)
        inbox = Inbox(replace(config, agents=await store.list_agents()), store)
        await inbox.start()
    except BaseException:
        await store.close()
        raise
    return Service(inbox=inbox, auth=auth, admin=Administration(store, auth, inbox))


async def close_service(inbox: Inbox) -> None:
    """Stop the inbox, then close the store under it (the last commits land first)."""
    await inbox.stop()
    await inbox.store.close()
