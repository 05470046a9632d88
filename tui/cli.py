"""The `inbox-tui` command: parses arguments and hands over to the part that does the work."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from core.admin_cli import add_admin_parser, run_admin
from core.config import ConfigError
from core.demo import demo_config_path
from tui.settings import SettingsError


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
        "--connect",
        metavar="URL",
        default=None,
        help="the console: routing host to connect to (default from console.toml, "
        "INBOX_TUI_URL, else ws://127.0.0.1:8600/agent)",
    )
    parser.add_argument("--user", default=None, help="the console: log in as this agent")
    parser.add_argument(
        "--server",
        action="store_true",
        help="run the shared routing host (agents' consoles, the customer widget, the REST API)",
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=None,
        help="with --server: address to listen on (default from the config, 127.0.0.1:8600)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="with --server: data directory (default $XDG_DATA_HOME/inbox-tui)",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help="with --server: a postgresql:// database several hosts share (default from the "
        "config's [host] store, else SQLite in the data directory)",
    )
    parser.add_argument(
        "--bus",
        metavar="URL",
        default=None,
        help="with --server and a postgresql store: a nats:// server the hosts share, so "
        "every host serves and relays to the one that routes (default from the config's "
        "[host] bus)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="with --server on a store and a bus: run N host processes on the same port "
        "(SO_REUSEPORT), to use N cores (default 1)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning"),
        default="info",
        help="with --server: what the host logs; debug adds a line per routing decision "
        "(the store's audit trail keeps every decision either way; default info)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="routing host config (TOML); default $XDG_CONFIG_HOME/inbox-tui/inbox.toml "
        "(write one with `inbox-tui admin init`); with --demo, default the demo's",
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
    parser.add_argument(
        "--log-only",
        action="store_true",
        help="with --demo: print the routing log instead of opening the console",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_admin_parser(commands)
    return parser


def run_console(url: str | None, user: str | None) -> int:
    from dataclasses import replace

    from tui.actions import binding_ids
    from tui.app import InboxApp
    from tui.settings import load_settings, normalise_url

    try:
        settings = load_settings(binding_ids=binding_ids())
    except SettingsError as e:
        print(f"inbox-tui: {e}", file=sys.stderr)
        return 2
    if url:
        settings = replace(settings, url=normalise_url(url))
    if user:
        settings = replace(settings, user=user)
    InboxApp(settings).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "admin":
        return run_admin(args)
    if args.server:
        from core.host.run import run_server

        return run_server(
            args.config,
            args.listen,
            args.data,
            store=args.store,
            bus=args.bus,
            workers=args.workers,
            log_level=args.log_level,
        )
    if not args.demo:
        if not (args.connect or args.user or (sys.stdin.isatty() and sys.stdout.isatty())):
            # Nothing to talk to: a console needs a terminal. Say how to use the command.
            build_parser().print_help()
            return 2
        return run_console(args.connect, args.user)
    from core.host.demo import run_demo
    from tui.demo import run_demo_console

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                run_demo(
                    args.config or demo_config_path(),
                    seconds=args.seconds,
                    interval=args.interval,
                    # A terminal gets the console; a pipe (CI, logs) gets the routing log.
                    console_agent=None
                    if args.log_only or not sys.stdout.isatty()
                    else args.user or "alice",
                    console=run_demo_console,
                )
            )
    except (ConfigError, SettingsError) as e:  # the demo's console reads console.toml too
        print(f"inbox-tui: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
