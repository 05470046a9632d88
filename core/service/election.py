"""Which host of a cluster routes: the one whose store holds the router lease.

Routing stays single-writer. Every host tries to take the lease; the one that gets it routes
until its lease connection ends (the host died, lost the database, or the database ended its
session), and from the moment the lease is gone its routing commits are refused (fencing:
StoreFenced), so a host that has not yet noticed cannot store a decision. The others keep
trying every `retry` seconds and the first to win rebuilds from the store, as a restart does.
"""

from __future__ import annotations

import asyncio
import logging

from store.base import RouterLease, StoreError, StoreUnavailable

log = logging.getLogger("inbox_tui.election")

RETRY = 0.25  # seconds between tries: the bound on failover after the lease is gone
# After losing the role a host lets the others try first for this long: its own session was
# the one the database ended (a partition, a stall), so it is the least likely to keep it.
STEP_ASIDE = 2.0


class Election:
    def __init__(self, lease: RouterLease, holder: str, *, retry: float = RETRY) -> None:
        self.lease = lease
        self.holder = holder
        self.retry = retry
        self.step_aside = 0.0
        # Why this host does not route, for /healthz: another holds the role, or the database
        # cannot be reached.
        self.waiting_because = "another host holds the routing role"

    async def win(self) -> int:
        """Wait until this host holds the routing role; its fencing epoch."""
        await asyncio.sleep(self.step_aside)
        while True:
            try:
                epoch = await self.lease.acquire_router(self.holder)
            except StoreError as e:
                # The database is away, or refused the takeover: say so once and keep trying,
                # the role waits for us.
                if isinstance(e, StoreUnavailable):
                    because = f"the database cannot be reached: {e}"
                else:
                    because = f"the routing role cannot be taken: {e}"
                if because.split(":")[0] != self.waiting_because.split(":")[0]:
                    log.warning("event=election_failed holder=%s reason=%s", self.holder, e)
                self.waiting_because = because
                epoch = None
            else:
                self.waiting_because = "another host holds the routing role"
            if epoch is not None:
                log.info("event=routing_role_won holder=%s epoch=%s", self.holder, epoch)
                return epoch
            await asyncio.sleep(self.retry)

    async def lost(self) -> str:
        """Wait until the role won last is lost; why."""
        await self.lease.router_lost.wait()
        self.step_aside = STEP_ASIDE
        return self.lease.router_lost_reason or "lost"

    async def resign(self) -> None:
        await self.lease.release_router()
