"""Committed messages per second through a store: one commit per message vs group commit.

    python -m bench.store_micro [--seconds N] [--concurrency N] [--synchronous FULL] [--json]
                                [--backend sqlite | postgresql://USER@HOST:PORT/DATABASE]

Both modes append chat messages through the real store and count only appends whose await
returned, i.e. committed ones, each mode on a fresh store: SQLite (WAL, synchronous=FULL by
default) in a temporary directory, or PostgreSQL in a scratch database the bench creates on the
server of the URL given (so that login needs the right to create databases) and drops after.
  naive: one appender awaiting each message in turn, so every batch holds one message and
         every message pays its own transaction and commit.
  group: many concurrent appenders; the writer commits whatever queued up in one transaction
         (up to the backend's batch limit: 1,000 for SQLite, 64 for PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core.model import SenderKind
from store import is_postgres_url
from store.sqlite import SQLiteStore, Synchronous

INTERACTIONS = 16


@contextlib.asynccontextmanager
async def _fresh_store(backend: str, synchronous: Synchronous) -> AsyncIterator[Any]:
    if not is_postgres_url(backend):
        with tempfile.TemporaryDirectory(prefix="store-micro-") as tmp:
            async with SQLiteStore(Path(tmp) / "inbox.db", Path(tmp), synchronous) as store:
                yield store
        return
    import asyncpg  # only for this backend

    from store.postgres import PostgresStore

    name = f"store_micro_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(backend)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        url = urlunsplit(urlsplit(backend)._replace(path=f"/{name}"))
        async with PostgresStore(url) as store:
            yield store
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def _measure(
    mode: str,
    seconds: float,
    concurrency: int,
    synchronous: Synchronous,
    backend: str = "sqlite",
) -> dict[str, Any]:
    async with _fresh_store(backend, synchronous) as store:
        records = [
            await store.create_interaction(
                item=f"w{i}", channel="chat", customer=f"c{i}", opened_at=0.0
            )
            for i in range(INTERACTIONS)
        ]
        numbers = [r.number for r in records]
        commits_before = store.stats.commits
        deadline = time.perf_counter() + seconds
        counts = [0] * concurrency

        async def appender(worker: int) -> None:
            n = 0
            while time.perf_counter() < deadline:
                await store.append_message(
                    numbers[(worker + n) % INTERACTIONS],
                    SenderKind.CUSTOMER,
                    "c",
                    "a typical short chat line, about sixty characters long....",
                    f"{worker}-{n}",
                    time.time(),
                )
                n += 1
            counts[worker] = n

        started = time.perf_counter()
        await asyncio.gather(*(appender(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
        commits = store.stats.commits - commits_before
    messages = sum(counts)
    return {
        "mode": mode,
        "appenders": concurrency,
        "messages": messages,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(messages / elapsed),
        "commits": commits,
        "mean_batch": round(messages / commits, 1) if commits else 0.0,
        "slowest_commit_ms": round(store.stats.max_commit_seconds * 1000, 1),
        "max_batch": store.stats.max_batch,
    }


async def run(
    seconds: float, concurrency: int, synchronous: Synchronous, backend: str = "sqlite"
) -> dict[str, Any]:
    naive = await _measure("naive", seconds, 1, synchronous, backend)
    group = await _measure("group", seconds, concurrency, synchronous, backend)
    if is_postgres_url(backend):
        from store.postgres import redact

        durability = {"backend": redact(backend)}
    else:
        durability = {"backend": "sqlite", "synchronous": synchronous}
    return {
        **durability,
        "results": [naive, group],
        "ratio": round(group["messages_per_s"] / max(naive["messages_per_s"], 1), 1),
    }


def _table(report: dict[str, Any]) -> str:
    header = (
        "mode",
        "appenders",
        "messages",
        "seconds",
        "messages_per_s",
        "commits",
        "mean_batch",
        "slowest_commit_ms",
    )
    rows = [header, *([str(r[k]) for k in header] for r in report["results"])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    where = report["backend"]
    if "synchronous" in report:
        where += f", synchronous={report['synchronous']}"
    lines.append(f"group commit / naive: {report['ratio']}x  ({where})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_micro", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per mode (default 5)")
    parser.add_argument("--concurrency", type=int, default=256, help="group-commit appenders")
    parser.add_argument(
        "--synchronous", choices=("NORMAL", "FULL", "EXTRA"), default="FULL", help="SQLite's"
    )
    parser.add_argument(
        "--backend",
        default="sqlite",
        metavar="sqlite|URL",
        help="sqlite (default), or a postgresql:// URL of a server to make scratch databases on",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.backend != "sqlite" and not is_postgres_url(args.backend):
        parser.error(f"--backend: expected sqlite or a postgresql:// URL, not {args.backend!r}")
    report = asyncio.run(run(args.seconds, args.concurrency, args.synchronous, args.backend))
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
