"""`inbox-tui --server`: resolve config, address and data directory, then serve until a signal."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from msgspec.structs import replace

from core.config import ConfigError, HostConfig, default_config_path, load_config
from core.host.app import StartupError, serve
from core.host.workers import supervise
from core.paths import default_data_dir
from core.service import StoreError


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise StartupError(f"--listen wants HOST:PORT (e.g. 127.0.0.1:8600), not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def resolve_config(path: Path | None) -> HostConfig:
    """The config given, else the default one. There is no fallback: a host that started on
    an example would route by someone else's queues, and the demo's agents are not yours."""
    if path is not None:
        return load_config(path)
    default = default_config_path()
    if not default.exists():
        raise StartupError(
            f"no config at {default}. Write a commented one (and the first admin login) with "
            "`inbox-tui admin init`, or give one with --config FILE"
        )
    return load_config(default)


def setup_logging(level: str = "info") -> None:
    # One structured line per event: key=value pairs after a timestamp and a level. At debug
    # the host logs every routing decision, so the record skips what the format never shows
    # (the caller's file and line, thread and process names): per the logging HOWTO's
    # "Optimization" table, that took a third of the cost of a line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (not on Windows): measured at the standard load preset,
    9 % more messages per second through the host than the default loop, at the same CPU."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_server(
    config_path: Path | None,
    listen: str | None,
    data_dir: Path | None,
    *,
    store: str | None = None,
    bus: str | None = None,
    workers: int = 1,
    log_level: str = "info",
) -> int:
    setup_logging(log_level)
    try:
        config = resolve_config(config_path)
        if store is not None:
            if not store.startswith(("postgresql://", "postgres://")):
                raise StartupError(f"--store wants a postgresql:// URL, not {store!r}")
            config = replace(config, host=replace(config.host, store=store))
        if bus is not None:
            if not all(u.strip().startswith(("nats://", "tls://")) for u in bus.split(",")):
                raise StartupError(f"--bus wants a nats:// URL, not {bus!r}")
            config = replace(config, host=replace(config.host, bus=bus))
        if config.host.bus is not None and config.host.store is None:
            raise StartupError(
                "a bus needs a shared store: give --store postgresql://… (or [host] store)"
            )
        if workers != 1 and config.host.bus is None:
            raise StartupError(
                "--workers needs a cluster: --store postgresql://… and --bus nats://… "
                "(on SQLite one process writes, so one process serves)"
            )
        address = parse_listen(listen or config.host.listen)
        data = data_dir or (Path(config.host.data_dir) if config.host.data_dir else None)
        data = data or default_data_dir()
        if workers != 1:
            return supervise(workers, address, lambda port: _work(config, (address[0], port), data))
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config, address, data))
    except (ConfigError, StartupError, StoreError) as e:
        print(f"inbox-tui: cannot start: {e}", file=sys.stderr)
        return 2
    return 0


def _work(config: HostConfig, address: tuple[str, int], data: Path) -> int:
    """One worker of `--workers`: a whole host on the shared port."""
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config, address, data, reuse_port=True))
    except (ConfigError, StartupError, StoreError) as e:
        print(f"inbox-tui: worker cannot start: {e}", file=sys.stderr)
        return 2
    return 0
