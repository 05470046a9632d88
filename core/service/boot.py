"""Opening and closing the service over its store: what a host does first and last.

The host never sees the store: it gets the inbox, the authenticator and the administration,
all over the one store opened here, and hands the inbox back to `close_service`.

A host of a cluster (`[host] store = "postgresql://…"`) first opens the shared store with
`open_shared`, stands by until its `Election` wins the routing role, then opens the service on
it with `SharedStore.open_service`, exactly as a restart does; when the role is lost it stops
the service (`SharedStore.stop_service`) and stands by again.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from msgspec.structs import replace

from core.auth import Authenticator
from core.config import HostConfig
from core.service.admin import Administration
from core.service.election import Election
from core.service.inbox import Inbox
from store import RouterLease, Store, open_store
from store.base import CLUSTER_ID, CLUSTER_ID_BYTES, WIDGET_KEY, WIDGET_KEY_BYTES


class Service(NamedTuple):
    inbox: Inbox  # its `config` is the one in force: the agents as stored
    auth: Authenticator
    admin: Administration


async def open_service(config: HostConfig, data_dir: Path) -> Service:
    """Open the store, bring the config into it, seed demo passwords and start routing."""
    store = await open_store(data_dir, synchronous=config.host.synchronous)
    try:
        return await _start(config, store)
    except BaseException:
        await store.close()
        raise


async def _start(config: HostConfig, store: Store) -> Service:
    await store.upsert_channels(config.channels)
    await store.upsert_presence_states(config.presences)
    await store.upsert_queues(config.queues)
    await store.upsert_templates(config.templates)
    # The config defines its agents, but whether one is disabled is the admin's call
    # (inbox-tui admin agent disable), kept across restarts; agents added with the admin
    # command are routed too.
    stored = {a.id: a for a in await store.list_agents()}
    await store.upsert_agents(
        replace(a, disabled=stored[a.id].disabled) if a.id in stored else a for a in config.agents
    )
    auth = Authenticator(store, session_ttl=config.host.session_ttl)
    await auth.seed(config)
    inbox = Inbox(replace(config, agents=await store.list_agents()), store)
    await inbox.start()
    return Service(inbox=inbox, auth=auth, admin=Administration(store, auth, inbox))


class SharedStore:
    """The database a cluster of hosts shares, and this host's election in it."""

    def __init__(self, store: Store, lease: RouterLease, election: Election) -> None:
        self._store = store
        self._lease = lease
        self.election = election

    async def widget_key(self) -> bytes:
        """The widget's ticket key, the same on every host: a chat resumes through any host,
        before a failover and after."""
        return await self._lease.shared_secret(WIDGET_KEY, WIDGET_KEY_BYTES)

    async def cluster_id(self) -> str:
        """The cluster's id, the same on every host on this database: its subjects on the bus
        are under it, so two clusters sharing a NATS server never hear each other."""
        return (await self._lease.shared_secret(CLUSTER_ID, CLUSTER_ID_BYTES)).hex()

    async def open_service(self, config: HostConfig) -> Service:
        """Once the role is won: rebuild from the store and re-arm every deadline."""
        return await _start(config, self._store)

    async def stop_service(self, inbox: Inbox) -> None:
        """Stop routing and serving; the store stays open for the next term."""
        await inbox.stop()

    async def close(self) -> None:
        await self._store.close()  # ends the term too, if one is held


async def open_shared(config: HostConfig, holder: str) -> SharedStore:
    """Open the shared store of `[host] store`; `holder` names this host in the lease."""
    if config.host.store is None:
        raise ValueError("open_shared needs [host] store")
    store = await open_store(config.host.store)
    if not isinstance(store, RouterLease):
        await store.close()
        raise ValueError(f"{type(store).__name__} cannot elect a router")
    return SharedStore(store, store, Election(store, holder))


async def close_service(inbox: Inbox) -> None:
    """Stop the inbox, then close the store under it (the last commits land first)."""
    await inbox.stop()
    await inbox.store.close()
