"""The README's first command: the installed `inbox-tui --demo` runs the real host in-process,
simulated agents log in over the agent protocol and work the customers' chats."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def inbox_tui() -> str:
    found = shutil.which("inbox-tui", path=str(Path(sys.executable).parent))
    assert found, "inbox-tui is not installed in this environment"
    return found


def test_demo_routes_customers_and_stops_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    run = subprocess.run(
        [inbox_tui(), "--demo", "--seconds", "4", "--interval", "0.2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"IMS\d{7}\s+offered\s+\w+\s+offered to \w+: ", out)
    assert re.search(r"IMS\d{7}\s+assigned\s+\w+\s+accepted by \w+", out)
    assert re.search(r"IMS\d{7}\s+wrap_up\s+\w+\s+ended by agent", out)
    summary = re.search(r"stopped: (\d+) customers, (\d+) messages, (\d+) commits", out)
    assert summary and int(summary.group(1)) > 5 and int(summary.group(3)) > 5
    # The temporary data directory is removed at exit.
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_a_broken_config_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[host]\nlisten = "127.0.0.1:8600"\nlisen = 1\n')
    run = subprocess.run(
        [inbox_tui(), "--demo", "--config", str(bad), "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert f"{bad}:3" in run.stderr and "lisen" in run.stderr
