"""Committed messages per second through SQLiteStore: one commit per message vs group commit.

    python -m bench.store_micro [--seconds N] [--concurrency N] [--synchronous FULL] [--json]

Both modes append chat messages through the real store (WAL, synchronous=FULL by default) in a
fresh temporary directory and count only appends whose await returned, i.e. committed ones.
  naive: one appender awaiting each message in turn, so every batch holds one message and
         every message pays its own transaction and fsync.
  group: many concurrent appenders; the writer commits whatever queued up in one transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from core.model import SenderKind
from store.sqlite import SQLiteStore, Synchronous

INTERACTIONS = 16


async def _measure(
    mode: str, seconds: float, concurrency: int, synchronous: Synchronous
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="store-micro-") as tmp:
        data_dir = Path(tmp)
        store = SQLiteStore(data_dir / "inbox.db", data_dir, synchronous)
        await store.open()
        try:
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
        finally:
            await store.close()
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


async def run(seconds: float, concurrency: int, synchronous: Synchronous) -> dict[str, Any]:
    naive = await _measure("naive", seconds, 1, synchronous)
    group = await _measure("group", seconds, concurrency, synchronous)
    return {
        "synchronous": synchronous,
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
    lines.append(f"group commit / naive: {report['ratio']}x  (synchronous={report['synchronous']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_micro", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per mode (default 5)")
    parser.add_argument("--concurrency", type=int, default=256, help="group-commit appenders")
    parser.add_argument("--synchronous", choices=("NORMAL", "FULL", "EXTRA"), default="FULL")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args.seconds, args.concurrency, args.synchronous))
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
