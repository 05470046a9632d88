"""CPU seconds per process over a run, from /proc: the host's processes (the supervisor of
`--workers` and each worker, by role), PostgreSQL's and nats-server's.

A process's CPU is user + system time (/proc/PID/stat fields 14 and 15), in clock ticks. The
meter samples every process it is told about once a second, so a process that exits during
the run (a short database connection) still counts up to its last sample, and one that starts
during the run counts from zero.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` so far; None once it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parens: count the fields after the last ")".
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    """The live children of `pid` (every thread's; /proc/PID/task/TID/children)."""
    found: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def named(comm: str) -> list[int]:
    """Every process whose command name (/proc/PID/comm) is `comm`."""
    found: list[int] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == comm:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def postgres_labels(database: str | None) -> dict[int, str]:
    """PostgreSQL's processes on this machine: the backends of `database` (their title is
    "postgres: CLUSTER: USER DATABASE ADDRESS STATE"), the server's own processes (postmaster,
    walwriter, checkpointer, background writer...: shared by every database) and other
    databases' backends (other users of the server, reported apart so they are not
    counted as the run's)."""
    labels: dict[int, str] = {}
    for pid in named("postgres"):
        title = cmdline(pid).split()
        if database is not None and database in title[3:5]:  # a backend, or autovacuum's
            labels[pid] = "postgres_backends"
        elif len(title) >= 5 and ("(" in title[4] or title[4] == "[local]"):
            labels[pid] = "postgres_other_databases"
        else:
            labels[pid] = "postgres_server"
    return labels


def machine_busy() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat: all but
    idle and iowait), to tell the run's processes from everyone else's on a shared machine."""
    with (PROC / "stat").open() as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]
    # guest and guest_nice (fields 9 and 10) are already counted in user and nice.
    return (sum(ticks[:8]) - idle) / TICKS


@dataclass
class CpuMeter:
    """CPU used between `start` and `stop` by the processes `find` names (pid: label)."""

    find: Callable[[], dict[int, str]]
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)
    started: bool = False

    def sample(self) -> None:
        for pid, label in self.find().items():
            cpu = cpu_seconds(pid)
            if cpu is None:
                continue
            # Seen first after the start: it started during the run, all its CPU counts.
            self.first.setdefault(pid, cpu if not self.started else 0.0)
            self.last[pid] = cpu
            self.labels[pid] = label
        self.started = True

    def per_process(self) -> dict[int, tuple[str, float]]:
        return {
            pid: (self.labels[pid], round(self.last[pid] - self.first[pid], 2))
            for pid in sorted(self.last)
        }

    def per_label(self) -> dict[str, float]:
        sums: dict[str, float] = {}
        for label, cpu in self.per_process().values():
            sums[label] = round(sums.get(label, 0.0) + cpu, 2)
        return sums
