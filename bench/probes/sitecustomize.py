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
PROBE_LAG=FILE     how late the event loop comes back: a 1 ms timer's lateness, per second of
                   the run (ticks, p50, p99, max), and where the loop's thread was (its Python
                   stack, sampled by another thread every 0.5 ms) whenever the timer was over
                   5 ms late; written at exit. Needs uvloop (the host's loop where installed).

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


def _lag(out: str) -> None:
    import atexit
    import collections
    import threading
    import time

    import uvloop

    last = [0.0]
    lateness: dict[int, list[float]] = collections.defaultdict(list)
    stalls: collections.Counter[tuple[int, str]] = collections.Counter()
    loop_thread = threading.main_thread().ident

    def tick(loop: uvloop.Loop) -> None:
        now = time.perf_counter()
        if last[0]:
            lateness[int(time.time())].append((now - last[0] - 0.001) * 1000)
        last[0] = now
        loop.call_later(0.001, tick, loop)

    new_event_loop = uvloop.new_event_loop

    def probed_loop() -> uvloop.Loop:
        loop = new_event_loop()
        loop.call_soon(tick, loop)
        return loop

    # The host asks uvloop for its loop when it starts (core/host/run.py), after this runs.
    uvloop.new_event_loop = probed_loop

    def watch() -> None:
        while True:
            time.sleep(0.0005)
            if not last[0] or time.perf_counter() - last[0] < 0.005:
                continue
            frame = sys._current_frames().get(loop_thread)  # type: ignore[arg-type]
            where: list[str] = []
            while frame is not None and len(where) < 6:
                code = frame.f_code
                where.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_qualname}")
                frame = frame.f_back
            stalls[(int(time.time()), " < ".join(where))] += 1

    threading.Thread(target=watch, name="probe-lag", daemon=True).start()

    def write() -> None:
        with open(out, "w") as f:
            for second, late in sorted(lateness.items()):
                late.sort()
                p50, p99 = late[len(late) // 2], late[int(len(late) * 0.99)]
                top = late[-1]
                f.write(f"{second} ticks={len(late)} p50={p50:.2f} p99={p99:.2f} max={top:.2f}\n")
            for (second, where), samples in sorted(stalls.items()):
                f.write(f"{second} stall samples={samples} {where}\n")

    atexit.register(write)


if _PROBED and (calls := os.environ.get("PROBE_CALLS")):
    _calls(calls)
if _PROBED and (gc_out := os.environ.get("PROBE_GC")):
    _gc(gc_out, os.environ.get("PROBE_GC_YOUNG") == "1")
if _PROBED and (lag_out := os.environ.get("PROBE_LAG")):
    _lag(lag_out)
