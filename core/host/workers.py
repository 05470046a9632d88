"""`--workers N`: N host processes on one port, so one machine uses all its cores.

Each worker is a whole host of the cluster (an edge, or the router if it wins the role) and
binds the port itself with SO_REUSEPORT; the kernel spreads new connections over them. This
process only holds the port, starts the workers, starts again any that dies (kill -9 included:
its consoles reconnect to the others meanwhile), and passes SIGTERM and SIGINT on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

from core.host.app import StartupError, reserve

log = logging.getLogger("inbox_tui.workers")

MAX_WORKERS = 64
# A worker that fails this soon after starting fails at start (a config or database refused):
# starting it again would fail the same way, so the host stops and says why.
EARLY = 5.0
RESTART_PAUSE = 0.5


def supervise(count: int, listen: tuple[str, int], work: Callable[[int], int]) -> int:
    """Run `work(port)` in `count` forked processes until a signal; returns the exit code."""
    if not 1 <= count <= MAX_WORKERS:
        raise StartupError(f"--workers wants 1 to {MAX_WORKERS}, not {count}")
    # Bound, never listening: it keeps the port (a port of 0 picks one for all the workers),
    # and a port taken by something else is reported here, once.
    held = reserve(*listen, reuse_port=True)
    port = held.getsockname()[1]
    children: dict[int, tuple[int, float]] = {}  # pid: (worker number, started at)
    stopping = False

    def spawn(number: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            held.close()
            code = 1
            try:
                code = work(port)
            finally:
                os._exit(code)
        children[pid] = (number, time.monotonic())
        log.info("event=worker_started worker=%s pid=%s", number, pid)

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("event=workers_starting count=%s port=%s pid=%s", count, port, os.getpid())
    for number in range(count):
        spawn(number)
    failed = 0
    while children:
        pid, status = os.wait()
        if pid not in children:
            continue
        number, started = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        log.warning("event=worker_exited worker=%s pid=%s code=%s", number, pid, code)
        if time.monotonic() - started < EARLY and code > 0:
            failed = code
            stop(signal.SIGTERM, None)
            continue
        time.sleep(RESTART_PAUSE)
        spawn(number)
    held.close()
    return failed
