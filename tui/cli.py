"""The `inbox-tui` command: parses arguments and hands over to the part that does the work."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from core.config import ConfigError, example_config_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inbox-tui",
        description="Keyboard-first agent inbox for contact centres, and its routing host.",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run the routing host in-process with simulated agents and customers",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="routing host config (TOML); the demo uses the shipped example by default",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="with --demo: stop after this many seconds (default: run until Ctrl-C)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="with --demo: mean seconds between arriving customers (default 2)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.demo:
        build_parser().print_help()
        return 2
    from tui.demo import run_demo

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                run_demo(
                    args.config or example_config_path(),
                    seconds=args.seconds,
                    interval=args.interval,
                )
            )
    except ConfigError as e:
        print(f"inbox-tui: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
