"""Child process of the kill -9 test in test_store.py.

Usage: python -m tests.store_crash_child DATA_DIR|POSTGRESQL_URL RUN_TAG

Opens the store in DATA_DIR (SQLite) or at POSTGRESQL_URL, makes sure a few interactions exist
(reusing those of earlier runs), then appends messages from many concurrent coroutines so the
writer's batches are large.
Prints `READY` once open, then `ACK <client_msg_id> <seq> <interaction>` for each message, only
after its append returned, i.e. after its batch committed. It runs until killed, or gives up
after a safety limit so a broken test can never leave it behind.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from core.model import SenderKind
from store import is_postgres_url
from store.postgres import PostgresStore
from store.sqlite import SQLiteStore

INTERACTIONS = 4
# More appenders than one batch holds: while one batch commits, the next is already queued
# and the previous one's ACKs are being printed, so the writer is nearly always inside a
# transaction and the kill lands mid-batch.
WORKERS = 256
MAX_BATCH = 64
SAFETY_LIMIT_S = 60.0


async def main(location: str, tag: str) -> None:
    store: SQLiteStore | PostgresStore
    if is_postgres_url(location):
        store = PostgresStore(location, max_batch=MAX_BATCH)
    else:
        store = SQLiteStore(Path(location) / "inbox.db", Path(location), max_batch=MAX_BATCH)
    await store.open()
    numbers = [r.number for r in await store.list_interactions(limit=INTERACTIONS)]
    while len(numbers) < INTERACTIONS:
        record = await store.create_interaction(
            item=f"crash-{len(numbers)}", channel="chat", customer="crash", opened_at=time.time()
        )
        numbers.append(record.number)
    out = sys.stdout
    out.write("READY\n")
    out.flush()

    async def append_forever(worker: int) -> None:
        n = 0
        while True:
            number = numbers[(worker + n) % len(numbers)]
            client_msg_id = f"{tag}-{worker}-{n}"
            message, _ = await store.append_message(
                number,
                SenderKind.CUSTOMER,
                "crash",
                f"body of {client_msg_id}",
                client_msg_id,
                time.time(),
            )
            # One write() per line: lines under PIPE_BUF reach the pipe whole, so a kill can
            # cut the stream only between lines.
            out.write(f"ACK {client_msg_id} {message.seq} {number}\n")
            out.flush()
            n += 1

    await asyncio.wait_for(
        asyncio.gather(*(append_forever(w) for w in range(WORKERS))), SAFETY_LIMIT_S
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
