"""The bench's probes (bench/probes/) in a real host subprocess: what docs/performance.md tells
people to run gives the files it describes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.host_process import start_host, stop_host
from tests.console_terminal import widget_customer

PROBES = Path(__file__).resolve().parent.parent / "bench" / "probes"


async def test_the_probes_count_calls_in_a_window_time_every_collection_and_the_loops_lag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, passes, lag = tmp_path / "calls.prof", tmp_path / "gc.txt", tmp_path / "lag.txt"
    monkeypatch.setenv("PYTHONPATH", str(PROBES))
    monkeypatch.setenv("PROBE_CALLS", str(calls))
    monkeypatch.setenv("PROBE_GC", str(passes))
    monkeypatch.setenv("PROBE_GC_YOUNG", "1")
    monkeypatch.setenv("PROBE_LAG", str(lag))
    host = start_host(tmp_path / "host")
    try:
        host.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)  # the handler runs between the host's own steps
        async with widget_customer(host.widget_url) as customer:
            await customer.start("Ana Lima", "ana@example.com")
            await customer.say("Hello, my parcel is late")
        host.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while not calls.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_host(host)
    report = subprocess.run(
        [sys.executable, "-m", "bench.probes.calls", str(calls)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # The widget's line, and the system line of its start: at least one message stored.
    assert " messages stored, " in report.splitlines()[0]
    assert "core/host" in report
    lines = passes.read_text(encoding="utf-8").splitlines()
    assert lines, "no collection was timed"
    _, generation, ms, collected, *_ = lines[0].split(" ")
    assert int(generation) in (0, 1, 2) and float(ms) >= 0 and int(collected) >= 0
    assert any("young=" in line for line in lines)
    # A line per second the host's loop ran: how many 1 ms ticks, and how late they came.
    seconds = [line.split(" ") for line in lag.read_text(encoding="utf-8").splitlines()]
    ticks = [fields for fields in seconds if fields[1].startswith("ticks=")]
    assert ticks, "the loop's lag was not measured"
    assert sum(int(fields[1].removeprefix("ticks=")) for fields in ticks) > 100
    for _, _, p50, p99, top in ticks:
        assert float(p50.removeprefix("p50=")) <= float(top.removeprefix("max="))
        assert p99.startswith("p99=")
