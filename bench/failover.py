"""Router failover on PostgreSQL: how long after kill -9 of the routing host another routes.

    python -m bench.failover [--agents N] [--conversations N] [--trials N] [--messaging]
                             [--postgres URL] [--json FILE]

A fresh database is created on the server at --postgres (it must allow CREATE DATABASE; by
default $INBOX_TEST_POSTGRES or postgresql://postgres@127.0.0.1:5432/postgres), provisioned
with N agents and seeded with open conversations (bench.seed), as bench.restart does on SQLite.
Two real `inbox-tui --server --store URL` processes start on it: the first wins the router
lease and routes, the second stands by (/healthz 503 "standby"). Each trial:

  1. checks the router routes: a probe agent (agent00001, who holds none of the seeded
     conversations) is Available over the agent socket, a REST integration creates a chat, the
     probe receives the offer, accepts, ends and closes it;
  2. waits a random 0-1 s (a failure does not wait for the standby's next try at the lease,
     every RETRY = 0.25 s: without it the kill would land at the same point of that cycle in
     every trial), then kills the router with SIGKILL;
  3. times, from the signal, (a) the standby's /healthz answering 200 "ok" (polled every
     20 ms) and (b) the probe, connecting to it once it is ok, receiving the offer for a new
     REST chat ("routing again": the election, the rebuild of the open conversations from
     PostgreSQL, a login, a REST request and a routing step);
  4. splits (a) with the new router's log: kill -> event=routing_role_won (the election),
     won -> event=serving (the rebuild: loading items, offers, statuses and conversations);
  5. restarts the killed host on the same database, where it stands by: the next trial kills
     the other one.

With --messaging the seeded channel is asynchronous (mode "async", like messaging), so the
rebuild also reads the newest lines of every open conversation for the ongoing tray.

Reported per trial and as min / median / max, with the load average and the time each of the
store's load calls takes on the seeded database, measured once before the hosts start.
The database is dropped at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from bench.host_process import HostProcess, health, start_host, stop_host
from bench.load import STARTUP_TIMEOUT, host_config, proc_usage, run_in_loop, scrape
from bench.restart import provision_and_seed, route_one
from bench.seed import CHANNEL
from core.service.conversations import UNREAD_CAP
from store.postgres import PostgresStore, redact

DEFAULT_POSTGRES = (
    os.environ.get("INBOX_TEST_POSTGRES") or "postgresql://postgres@127.0.0.1:5432/postgres"
)
POLL = 0.02
TAKEOVER_TIMEOUT = 120.0
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+ event=(\w+)", re.M)


async def admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def database_url(server: str, name: str) -> str:
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


def log_events(host: HostProcess) -> list[tuple[float, str]]:
    """(unix time, event) of the host log's `event=` lines (asctime is local, to the ms)."""
    return [
        (datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp(), event)
        for stamp, event in LOG_LINE.findall(host.log_text())
    ]


def after(events: list[tuple[float, str]], name: str, since: float) -> float | None:
    """Seconds from `since` (unix time) to the first `name` event at or after it (less 1 ms,
    the log's resolution)."""
    for at, event in events:
        if event == name and at >= since - 0.001:
            return round(at - since, 3)
    return None


async def store_loads(url: str, tray: list[str]) -> dict[str, float]:
    """Seconds each of the loads a new router makes takes on this database, in the order
    RoutingService and Conversations make them (one pass, a warm server). `tray`: the
    asynchronous channels, whose conversations' newest lines are loaded too."""
    out: dict[str, float] = {}
    async with PostgresStore(url) as store:
        calls: dict[str, Any] = {
            "list_agents": store.list_agents,
            "load_open_conversations": lambda: store.load_open_conversations(UNREAD_CAP, tray),
            "load_agent_statuses": store.load_agent_statuses,
            "load_open_items": store.load_open_items,
            "load_pending_offers": store.load_pending_offers,
            "load_affinity": store.load_affinity,
            # The same, as if the seeded channel were asynchronous (--messaging) or not.
            "load_open_conversations_other_mode": lambda: store.load_open_conversations(
                UNREAD_CAP, [] if tray else [CHANNEL]
            ),
        }
        for name, call in calls.items():
            started = time.perf_counter()
            rows = await call()
            out[name] = round(time.perf_counter() - started, 3)
            out[name + "_rows"] = len(rows)
    return out


def wait_until_ok(host: HostProcess, since: float) -> float:
    """Seconds from `since` (perf_counter) until `host`'s /healthz says "ok"."""
    while health(host.base_url) != "ok":
        if host.proc.poll() is not None:
            raise RuntimeError(f"the standby exited:\n{host.log_text()}")
        if time.perf_counter() - since > TAKEOVER_TIMEOUT:
            raise RuntimeError(f"no takeover in {TAKEOVER_TIMEOUT} s:\n{host.log_text()}")
        time.sleep(POLL)
    return time.perf_counter() - since


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "median": round(statistics.median(values), 3),
        "max": max(values),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="inbox-failover-"))
    name = f"inbox_failover_{secrets.token_hex(4)}"
    url = database_url(args.postgres, name)
    hosts: list[HostProcess] = []
    report: dict[str, Any] = {
        "agents": args.agents,
        "conversations": args.conversations,
        "channel_mode": "async" if args.messaging else "sync",
        "database": redact(url),
        "cpus": os.cpu_count(),
    }
    await admin(args.postgres, f"CREATE DATABASE {name}")
    try:
        config = root / "inbox.toml"
        text = host_config()
        if args.messaging:
            text = text.replace('mode = "sync"', 'mode = "async"', 1)
        config.write_text(text)
        print(f"scratch database {redact(url)}", flush=True)
        probe_token, api_token, report["seed_s"] = await provision_and_seed(
            url, args.agents, args.conversations
        )
        await admin(url, "VACUUM ANALYZE")  # as autovacuum would soon after such a load
        report["store_loads_s"] = await store_loads(url, [CHANNEL] if args.messaging else [])
        print(f"store loads: {report['store_loads_s']}", flush=True)

        started = time.perf_counter()
        router = await asyncio.to_thread(
            start_host, root / "a", STARTUP_TIMEOUT, config=config, store=url
        )
        hosts.append(router)
        report["first_start_s"] = round(time.perf_counter() - started, 3)
        standby = await asyncio.to_thread(
            start_host, root / "b", STARTUP_TIMEOUT, config=config, store=url, ready="standby"
        )
        hosts.append(standby)
        print(f"first start: routing in {report['first_start_s']} s, B stands by", flush=True)

        trials = []
        pauses = random.Random(args.seed)
        for n in range(args.trials):
            await route_one(router, probe_token, api_token, 2 * n)
            await asyncio.sleep(pauses.uniform(0.0, 1.0))
            load_before = os.getloadavg()[0]
            killed_at = time.time()
            kill = time.perf_counter()
            router.proc.send_signal(signal.SIGKILL)
            router.proc.wait()
            ok = await asyncio.to_thread(wait_until_ok, standby, kill)
            offered = await route_one(standby, probe_token, api_token, 2 * n + 1)
            routed = time.perf_counter() - kill
            events = log_events(standby)
            async with aiohttp.ClientSession() as http:
                metrics = await scrape(http, standby.base_url)
            won = after(events, "routing_role_won", killed_at)
            serving = after(events, "serving", killed_at)
            trial = {
                "healthz_ok_s": round(ok, 3),
                "routing_again_s": round(routed, 3),
                "role_won_s": won,
                "rebuild_s": round(serving - won, 3) if won is not None and serving else None,
                "probe_offer_s": round(offered, 3),
                "open_items": metrics.get("inbox_open_items", 0.0),
                "peak_rss_mib": round(proc_usage(standby.proc.pid)["peak_rss_mib"], 1),
                "load_1m": round(load_before, 2),
            }
            trials.append(trial)
            print(f"trial {n + 1}: {trial}", flush=True)
            # The killed host comes back on the same database and stands by.
            dead, router = router, standby
            hosts.remove(dead)
            standby = await asyncio.to_thread(
                start_host,
                dead.log.parent,  # its root: the same data directory, a new log
                STARTUP_TIMEOUT,
                config=config,
                store=url,
                ready="standby",
            )
            hosts.append(standby)
        report["trials"] = trials
        if trials:
            for key in ("healthz_ok_s", "routing_again_s", "role_won_s", "rebuild_s"):
                values = [v for t in trials if (v := t[key]) is not None]
                if values:
                    report[key] = summary(values)
        return report
    finally:
        for host in hosts:
            stop_host(host)
        await admin(args.postgres, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.failover",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--agents", type=int, default=7500)
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument(
        "--messaging",
        action="store_true",
        help="the seeded conversations on an asynchronous channel (the tray loads their lines)",
    )
    parser.add_argument(
        "--postgres",
        default=DEFAULT_POSTGRES,
        help="a server URL to create (and drop) the scratch database on",
    )
    parser.add_argument("--seed", type=int, default=1, help="of the random pauses before kills")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    report = run_in_loop(run(args))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
