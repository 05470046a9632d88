"""Child process of the routing-commit crash test in test_crash_safety.py.

Usage: python -m tests.routing_crash_child DATA_DIR ITEM_STATE

Runs an inbox over the store in DATA_DIR (no sockets: an agent session driven directly), and
walks one chat through accept, end and close. The first routing step whose commit stores the
work item in ITEM_STATE (accepted, wrap_up or closed) is the last thing it does: the process
SIGKILLs itself the moment that commit returns, before anyone hears of the step. That is the
window where an item used to be stored changed while its interaction record was not yet.
It prints `COMMITTED` just before the kill; exiting on its own means the state never came.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from core.model import ItemState, Message, Role
from core.protocol import AcceptOffer, CloseRecord, EndChat, SetPresence
from core.service.inbox import Inbox
from store import open_store
from tests.hosting import fast_config

SAFETY_LIMIT_S = 30.0


async def main(data_dir: Path, state: ItemState) -> None:
    store = await open_store(data_dir)
    commit = store.apply_routing

    async def commit_then_die(**rows: Any) -> list[Message]:
        lines = await commit(**rows)
        if any(item.state == state for item in rows.get("items", ())):
            sys.stdout.write("COMMITTED\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return lines

    store.apply_routing = commit_then_die  # type: ignore[method-assign]
    inbox = Inbox(fast_config(), store)
    await inbox.start()
    session = inbox.open_session("alice", Role.AGENT, "crash-alice", time.time() + 3600)
    await inbox.handle(session, SetPresence(presence="Available"))
    record = await inbox.start_conversation(channel="chat", customer="crash-customer")
    offer = inbox.routing.router.offer_of_item[record.item]
    await inbox.handle(session, AcceptOffer(offer=offer))
    await inbox.handle(session, EndChat(interaction=record.number))
    await inbox.handle(session, CloseRecord(interaction=record.number))
    # Listeners run on after the steps; give them a moment, then say the kill never came.
    await asyncio.sleep(0.5)


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(Path(sys.argv[1]), ItemState(sys.argv[2])), SAFETY_LIMIT_S))
