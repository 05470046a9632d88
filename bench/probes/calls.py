"""What a window of a host's run cost in Python calls, per durable message.

    python -m bench.probes.calls FILE [--top N]

FILE is a PROBE_CALLS profile (bench/probes/sitecustomize.py). Calls are counted, not
timed, so two runs of different speed compare: each figure is divided by the store appends
of messages in the window (`append_message` of the SQLite or PostgreSQL store). A coroutine
counts a call each time it resumes.
"""

from __future__ import annotations

import argparse
import collections
import pstats

STORES = ("store/sqlite.py", "store/postgres.py")


def where(filename: str) -> str:
    """A profile entry's package: the first folder under site-packages, ours by layer."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    for layer in ("core/", "store/", "tui/", "screens/"):
        if f"/{layer}" in filename:
            return layer + filename.split(f"/{layer}", 1)[1].split("/", 1)[0]
    return "builtins" if filename == "~" else "stdlib:" + filename.rsplit("/", 1)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    stats = pstats.Stats(args.profile).stats  # type: ignore[attr-defined]
    appends = sum(
        calls
        for (filename, _, name), (_, calls, *_) in stats.items()
        if name == "append_message" and filename.endswith(STORES)
    )
    if not appends:
        raise SystemExit("no message was stored in the profiled window")
    total = sum(calls for (_, calls, *_) in stats.values())
    print(f"{appends} messages stored, {total / appends:.1f} calls per message")
    by_package: collections.Counter[str] = collections.Counter()
    for (filename, _, _), (_, calls, *_) in stats.items():
        by_package[where(filename)] += calls
    for package, calls in by_package.most_common(args.top):
        print(f"{calls / appends:8.1f}  {package}")
    print()
    functions = sorted(stats.items(), key=lambda kv: -kv[1][1])[: args.top]
    for (filename, line, name), (_, calls, *_) in functions:
        print(f"{calls / appends:8.1f}  {where(filename)} {name}:{line}")


if __name__ == "__main__":
    main()
