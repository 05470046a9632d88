"""Probes loaded into a host from outside it: put this directory on PYTHONPATH and Python
imports this file at start-up in every process, the bench's host among them. Only a process
started as `inbox-tui` is probed; each probe is off unless its variable is set.

PROBE_CALLS=FILE   cProfile of the main thread (the event loop) between SIGUSR1 and
                   SIGUSR2, written to FILE at SIGUSR2: deterministic call counts for a window
                   of a run (`python -m bench.probes.calls FILE`). Under it the host runs at
                   about half speed, so its times are not the host's.
PROBE_GC=FILE      one line per garbage collection pass, written at exit: wall time,
                   generation, milliseconds, objects collected. With PROBE_GC_YOUNG=1 also
                   what the young generation held when a pass began (the commonest types and
                   coroutines), at most one pass a second: slow, for finding out, not timing.

    PYTHONPATH=bench/probes PROBE_GC=/tmp/gc.txt python -m bench.load --rate 50 ...
"""

from __future__ import annotations

import os
import sys

_PROBED = "inbox-tui" in " ".join(sys.argv)


def _calls(out: str) -> None:
    import cProfile
    import signal

    profile = cProfile.Profile()

    def start(*_: object) -> None:
        profile.enable()

    def stop(*_: object) -> None:
        profile.disable()
        profile.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


def _gc(out: str, young: bool) -> None:
    import atexit
    import collections
    import gc
    import time

    lines: list[str] = []
    began = [0.0, 0.0]  # this pass's start; when the young generation was last described
    held = [""]

    def describe() -> str:
        objects = gc.get_objects(0)
        kinds = collections.Counter(type(o).__name__ for o in objects)
        waits = collections.Counter(
            o.cr_code.co_qualname for o in objects if type(o).__name__ == "coroutine"
        )
        return (
            f"young={len(objects)} types={kinds.most_common(6)} coroutines={waits.most_common(6)}"
        )

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            held[0] = ""
            if young and info["generation"] == 0 and time.time() - began[1] >= 1.0:
                began[1] = time.time()
                held[0] = describe()
            began[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - began[0]) * 1000
        lines.append(
            f"{time.time():.3f} {info['generation']} {ms:.3f} {info['collected']} {held[0]}"
        )

    gc.callbacks.append(on_gc)

    def write() -> None:
        with open(out, "w") as f:
            f.write("".join(line + "\n" for line in lines))

    atexit.register(write)


if _PROBED and (calls := os.environ.get("PROBE_CALLS")):
    _calls(calls)
if _PROBED and (gc_out := os.environ.get("PROBE_GC")):
    _gc(gc_out, os.environ.get("PROBE_GC_YOUNG") == "1")
