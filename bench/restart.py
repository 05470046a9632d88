"""Restart after kill -9: how long until a host holding many open conversations routes again.

    python -m bench.restart [--agents N] [--conversations N] [--trials N] [--json FILE]

A store is provisioned with N agents and seeded with open conversations (bench.seed), then a
real `inbox-tui --server` is started on it. Each trial:

  1. checks the host routes: a probe agent (agent00000, who holds none of the seeded
     conversations) is Available over the agent socket, a REST integration creates a chat, the
     probe receives the offer, accepts, ends and closes it;
  2. kills the host with SIGKILL;
  3. starts it again on the same data directory and times, from the spawn of the process,
     /healthz answering ("listening") and the probe receiving the offer for a new chat
     ("routing again": imports, store open, the open conversations loaded, the engine rebuilt,
     a login, a REST request and a routing step).

Reported per trial and as the worst of all trials, with the host's peak RSS and the number of
open conversations it loaded (from /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.host_process import HostProcess, start_host, stop_host
from bench.load import (
    QUEUE,
    STARTUP_TIMEOUT,
    host_config,
    proc_usage,
    provision,
    run_in_loop,
    scrape,
)
from bench.seed import seed_open_conversations
from core.client import InboxClient
from core.protocol import CloseRecord, OfferEvent

CAPACITY = 10


async def route_one(host: HostProcess, probe_token: str, api_token: str, n: int) -> float:
    """Seconds from this call to the probe agent's offer for a new REST chat; the chat is
    then accepted, ended and closed so the probe is free for the next trial."""
    started = time.perf_counter()
    offers: asyncio.Queue[OfferEvent] = asyncio.Queue()
    client = InboxClient(f"ws://127.0.0.1:{host.port}/agent", request_timeout=30.0)
    client.on_event = lambda e: offers.put_nowait(e) if isinstance(e, OfferEvent) else None
    await client.connect()
    try:
        await client.login_token(probe_token)
        await client.set_presence("Available")
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{host.base_url}/api/v1/items",
                json={"channel": "chat", "customer": {"id": f"probe-{n}", "name": "Probe"}},
                headers={"Authorization": f"Bearer {api_token}"},
            ) as reply,
        ):
            if reply.status != 201:
                raise RuntimeError(f"POST /api/v1/items: {reply.status} {await reply.text()}")
        offer = await asyncio.wait_for(offers.get(), 30.0)
        routed = time.perf_counter() - started
        number = offer.view.interaction
        assert number is not None
        await client.accept(offer.view.offer.id)
        await client.end_chat(number)
        await client.request(CloseRecord(interaction=number))
        return routed
    finally:
        await client.close()


async def provision_and_seed(
    location: Path | str, agents: int, conversations: int
) -> tuple[str, str, float]:
    """`agents` agents of capacity CAPACITY, one integration and `conversations` open
    conversations held by all agents but the first two, written into the store at `location`
    (a data directory or a postgresql:// URL) before any host opens it. Returns the probe
    agent's token (agent00001, who holds none of them), the integration's token and the
    seconds the seeding took."""
    print(f"provisioning {agents} agents...", flush=True)
    creds, tokens, _ = await provision(location, agents, CAPACITY, 1)
    owners = [agent for agent, _, _ in creds[2:]]
    print(f"seeding {conversations} open conversations...", flush=True)
    seeded = await seed_open_conversations(location, owners, conversations, QUEUE, CAPACITY)
    return creds[1][2], tokens[0], round(seeded, 1)  # agent00000 logs in with a password


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="inbox-restart-"))
    host: HostProcess | None = None
    report: dict[str, Any] = {"agents": args.agents, "conversations": args.conversations}
    try:
        data = root / "data"
        data.mkdir()
        config = root / "inbox.toml"
        config.write_text(host_config())
        probe_token, api_token, report["seed_s"] = await provision_and_seed(
            data, args.agents, args.conversations
        )
        started = time.perf_counter()
        host = await asyncio.to_thread(start_host, root, STARTUP_TIMEOUT, config=config)
        report["first_start_s"] = round(time.perf_counter() - started, 3)
        print(f"first start: healthy in {report['first_start_s']} s", flush=True)
        trials = []
        for n in range(args.trials):
            await route_one(host, probe_token, api_token, 2 * n)
            host.proc.send_signal(signal.SIGKILL)
            host.proc.wait()
            spawned = time.perf_counter()
            host = await asyncio.to_thread(start_host, root, STARTUP_TIMEOUT, config=config)
            listening = time.perf_counter() - spawned
            routed = (
                time.perf_counter()
                - spawned
                + await route_one(host, probe_token, api_token, 2 * n + 1)
            )
            async with aiohttp.ClientSession() as http:
                metrics = await scrape(http, host.base_url)
            usage = proc_usage(host.proc.pid)
            trial = {
                "listening_s": round(listening, 3),
                "routing_again_s": round(routed, 3),
                "open_items": metrics.get("inbox_open_items", 0.0),
                "peak_rss_mib": round(usage["peak_rss_mib"], 1),
            }
            trials.append(trial)
            print(f"trial {n + 1}: {trial}", flush=True)
        report["trials"] = trials
        if trials:
            report["worst_listening_s"] = max(t["listening_s"] for t in trials)
            report["worst_routing_again_s"] = max(t["routing_again_s"] for t in trials)
        return report
    finally:
        if host is not None:
            stop_host(host)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.restart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--agents", type=int, default=7500)
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    report = run_in_loop(run(args))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
