"""The load generator's smoke preset runs end to end and produces every figure.

Only presence and type are checked, never size: the numbers depend on the machine, and
docs/performance.md is where their values are discussed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.host_process import start_host, stop_host

ROOT = Path(__file__).resolve().parent.parent
LATENCIES = (
    "arrival_to_offer",
    "customer_to_agent",
    "agent_to_customer",
    "accept_to_first_message",
)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_smoke_preset_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.load", "--preset", "smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "arrivals" in run.stdout  # the progress lines
    report = json.loads(out.read_text())

    for name in LATENCIES:
        figures = report["latency_ms"][name]
        assert figures["n"] > 0, name
        for key in ("p50", "p95", "p99", "max"):
            assert _number(figures[key]), (name, key, figures[key])

    host = report["host"]
    for key in (
        "routing_steps_per_s",
        "durable_messages_per_s",
        "cpu_s",
        "peak_rss_mib",
        "messages_per_commit",
    ):
        assert _number(host[key]), (key, host[key])
    assert host["durable_messages"] > 0
    assert host["routing_steps"] > 0
    assert host["arrival_mean_ms"] > 0
    for key in ("routing_steps_over_5ms", "messages_over_5ms", "arrivals_over_5ms"):
        assert _number(host[key]) and 0 <= host[key] < 1, (key, host[key])
    assert host["offers_by_outcome"].get("made", 0) > 0
    assert all(_number(n) for n in host["offers_by_outcome"].values())

    counts = report["counts"]
    assert counts["arrivals_widget"] > 0 and counts["arrivals_rest"] > 0
    assert counts["agent_received"] > 0 and counts["customer_received"] > 0

    assert report["baseline_ws_echo"]["round_trips_per_s"] > 0
    assert report["baseline_sqlite_naive"]["messages_per_s"] > 0
    assert report["cpu"]["by_role"]["host"]["cpu_s"] > 0
    for value in report["ratios"].values():
        assert _number(value)
    assert isinstance(report["errors"], dict)


def test_smoke_preset_on_a_cluster_of_two_workers_reports_cpu_by_role(
    tmp_path: Path, postgres_url: str, nats_url: str
) -> None:
    out = tmp_path / "out.json"
    cluster = ["--store", postgres_url, "--store-as-is", "--bus", nats_url, "--workers", "2"]
    run = subprocess.run(
        [sys.executable, "-m", "bench.load", "--preset", "smoke", "--json", str(out), *cluster],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert report["host"]["durable_messages"] > 0
    assert report["errors"] == {}, report["errors"]
    cpu = report["cpu"]
    roles = {p["role"] for p in cpu["processes"].values()}
    assert {"supervisor", "router", "edge", "postgres_backends", "nats_server"} <= roles, roles
    assert cpu["processes"][str(cpu["router_pid"])]["role"] == "router"
    for role in ("router", "edge", "postgres_backends", "generator"):
        assert cpu["by_role"][role]["cpu_s"] > 0, role
        assert _number(cpu["by_role"][role]["ms_per_conversation"]), role


def test_slow_consoles_bench_drops_the_stuck_ones_and_delivers_everything(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.json"
    args = ["--mode", "stuck", "--seconds", "9", "--json", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "bench.slow_consoles", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (report,) = json.loads(out.read_text())
    # Every line reached its console once and in order, every stuck console was dropped with
    # 1008 (its own view and the host's counter), and the window was measured, not assumed.
    assert report["errors"] == {}, report["errors"]
    assert report["consoles"]["codes"] == {"1008": 100}
    assert report["host"]["dropped_consoles"] == 100
    assert report["window"]["basis"] == "measured"
    assert report["lines"]["alice"] == report["alice_ms"]["all"]["n"] > 0
    for phase in ("before", "window", "after"):
        assert _number(report["alice_ms"][phase]["p99"]), phase


def test_a_pinned_host_and_every_thread_it_starts_run_on_its_cpu(tmp_path: Path) -> None:
    """bench.load --pin: the host on CPU 0 (bench/host_process.py `cpus`), the threads it
    starts later (the SQLite writer, uvloop's, argon2's) too, and the starter unchanged."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    before = os.sched_getaffinity(0)
    host = start_host(tmp_path, cpus={0})
    try:
        assert os.sched_getaffinity(0) == before
        tasks = list(Path(f"/proc/{host.proc.pid}/task").iterdir())
        assert len(tasks) >= 2  # the event loop's and the SQLite writer's at least
        for task in tasks:
            status = (task / "status").read_text()
            assert "Cpus_allowed_list:\t0\n" in status, task
    finally:
        stop_host(host)
