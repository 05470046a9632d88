"""A real `inbox-tui --server` subprocess on a loopback port, for the tests and benches.

`start_host` waits until /healthz answers; a restart on the same root reuses the data
directory. The environment is explicit (see DROPPED) with XDG directories under the root, so
a host never reads a developer's config or leaves files in their home.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from core.demo import demo_config_text

# The installed entry point, next to the interpreter running (the venv's bin/), so what
# `pip install` put there is what runs.
INBOX_TUI = Path(sys.executable).parent / "inbox-tui"
LISTENING = re.compile(r"event=listening address=(\S+):(\d+)")
POLL = 0.05

# COLUMNS and LINES would override the terminal's real size (Python's shutil, which Textual
# asks, reads them first). pytest imports readline, and GNU readline exports COLUMNS=80 and
# LINES=24 into the C environment: os.environ does not show them, yet a child started with
# env=None inherits them. So every child here gets an explicit environment without them.
# TERM goes too: inside tmux it must be tmux's own, not the (maybe "dumb") one CI runs with.
DROPPED = ("COLUMNS", "LINES", "TERM", "TMUX", "TMUX_PANE", "INBOX_TUI_URL")


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in DROPPED}


def console_env(root: Path) -> dict[str, str]:
    """Environment for a console or host: XDG directories under `root`, so neither reads a
    developer's console.toml or saved tokens nor leaves files in their home."""
    env = base_env()
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        path = root / name.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    return env


@dataclass
class HostProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def agent_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/agent"

    @property
    def widget_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/widget/ws"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_host(
    root: Path,
    timeout: float = 15.0,
    *,
    config: Path | None = None,
    port: int = 0,
    store: str | None = None,
    bus: str | None = None,
    workers: int = 1,
    ready: str = "ok",
    log_level: str = "info",
    cpus: set[int] | None = None,
) -> HostProcess:
    """Start `inbox-tui --server` on `port` (by default 0: the kernel picks a free one, so no
    race with other runs) and return once /healthz answers. A restart on the same `root`
    reuses the data directory, as an admin restarting the service would. Without `config`
    the host runs the demo's, every agent with core.demo.DEMO_PASSWORD. With `store` (a
    postgresql:// URL) it is one host of a cluster, with `bus` (a nats:// URL) one that serves
    while another routes, and with `workers` that many processes on its port; `ready` is the
    /healthz status to wait for ("standby" for a host without a bus that another one's
    routing keeps waiting; an edge is "ok" once it hears the router). With `cpus` the host and
    every thread it starts run on those CPUs only (Linux)."""
    root.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = root / "demo.toml"
        config.write_text(demo_config_text(), encoding="utf-8")
    log = root / "host.log"
    with log.open("wb") as out, contextlib.ExitStack() as restore:
        if cpus is not None:
            # A child inherits the affinity of the thread that starts it: this one's, for now.
            restore.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
            os.sched_setaffinity(0, cpus)
        proc = subprocess.Popen(
            [
                str(INBOX_TUI),
                "--server",
                "--listen",
                f"127.0.0.1:{port}",
                "--data",
                str(root / "data"),
                "--config",
                str(config),
                *(["--store", store] if store else []),
                *(["--bus", bus] if bus else []),
                *(["--workers", str(workers)] if workers != 1 else []),
                *(["--log-level", log_level] if log_level != "info" else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=console_env(root / "host-env"),
            # Its own process group: a Ctrl-C meant for pytest or a bench must not reach it.
            start_new_session=True,
        )
    host = HostProcess(proc=proc, port=0, log=log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the host exited ({proc.returncode}):\n{host.log_text()}")
            match = LISTENING.search(host.log_text())
            if match:
                host.port = int(match.group(2))
                if health(host.base_url) == ready:
                    return host
            if time.monotonic() > deadline:
                raise RuntimeError(f"the host was not healthy in {timeout} s:\n{host.log_text()}")
            time.sleep(POLL)
    except BaseException:
        stop_host(host)
        raise


def health(base_url: str) -> str | None:
    """The host's /healthz status ("ok", "degraded", "standby", "unavailable"), None if it
    does not answer."""
    body = health_body(base_url)
    return None if body is None else str(body.get("status"))


def health_body(base_url: str) -> dict[str, object] | None:
    """The host's /healthz answer (its status, and in a cluster on a bus its role, "router"
    or "edge"), None if it does not answer within a second."""
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=1.0) as reply:
            return dict(json.load(reply))
    except urllib.error.HTTPError as e:  # 503: degraded, standby or unavailable, and why
        with e:
            return dict(json.load(e))
    except (OSError, ValueError):
        return None


def stop_host(host: HostProcess) -> None:
    """SIGTERM (the host drains and commits), then SIGKILL if it hangs."""
    stop_process(host.proc)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(grace)
