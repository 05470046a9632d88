"""The console as agents on a shared jump box get it: through a real sshd, in ssh's pty.

The test starts its own sshd on a free loopback port with its own config, host key and
authorized_keys under tmp_path (never the system's sshd), whose ForceCommand runs the
installed `inbox-tui` console. ssh runs inside tmux so the whole chain has real terminals:
tmux pane → ssh -tt → sshd pty → Textual. Keys (F5 included) must survive that trip.

A developer without /usr/sbin/sshd may skip; under CI (.ci/ensure-sshd installs it) a missing
sshd fails the test.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.host_process import INBOX_TUI, HostProcess, base_env, console_env, stop_process
from core.demo import DEMO_PASSWORD
from tests.console_terminal import (
    POLL,
    TMUX,
    host_process,
    log_in,
    require_tool,
    take_chat_and_reply,
    tmux_session,
)

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself, so it must be started by absolute path


@pytest.fixture(autouse=True)
def tools() -> None:
    require_tool(SSHD, "the test runs its own sshd")
    require_tool("ssh", "the ssh client, from openssh-client")
    require_tool("ssh-keygen", "host and client keys, from openssh-client")
    require_tool(TMUX, "ssh runs in tmux so the console gets a real terminal")


@dataclass
class Sshd:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    client_key: Path
    user: str

    def ssh_argv(self) -> list[str]:
        return [
            "ssh",
            "-F",
            "/dev/null",  # a developer's ~/.ssh/config must not redirect or multiplex
            "-tt",  # a pty on the far side: the console is a full-screen program
            "-i",
            str(self.client_key),
            "-p",
            str(self.port),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",  # never stop at a password or host-key prompt
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"{self.user}@127.0.0.1",
        ]


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "inbox-tui-test", "-f", str(path)],
        check=True,
        capture_output=True,
        env=base_env(),
        timeout=15,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_console_command(root: Path, host: HostProcess) -> Path:
    """The ForceCommand: the installed console, with its XDG directories under `root`.

    sshd gives the session a bare environment, so everything the console needs is set here;
    TERM comes from ssh's pty request. The pid file lets the test end a console that
    outlives its connection."""
    env = {
        k: v
        for k, v in console_env(root).items()
        if k.startswith("XDG_") or k in ("LANG", "LC_ALL")
    }
    env.setdefault("LANG", "C.UTF-8")
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    argv = [str(INBOX_TUI), "--connect", host.agent_url, "--user", "alice"]
    script = root / "console.sh"
    script.write_text(
        "#!/bin/bash\n"
        + exports
        + f"echo $$ > {shlex.quote(str(root / 'console.pid'))}\n"
        + f"exec {shlex.join(argv)}\n"
    )
    script.chmod(0o755)
    return script


def sshd_config(root: Path, port: int, force_command: Path) -> Path:
    user = getpass.getuser()
    config = root / "sshd_config"
    config.write_text(
        f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {root / "host_key"}
PidFile {root / "sshd.pid"}
AuthorizedKeysFile {root / "authorized_keys"}
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
# tmp_path is not laid out like a home directory; sshd would refuse the keys in it.
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTTY yes
LogLevel VERBOSE
ForceCommand {force_command}
"""
    )
    return config


@contextlib.contextmanager
def running_sshd(root: Path, force_command: Path, timeout: float = 15.0) -> Iterator[Sshd]:
    root.mkdir(parents=True, exist_ok=True)
    keygen(root / "host_key")
    keygen(root / "client_key")
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    if os.geteuid() == 0:
        # sshd's privilege-separation directory; Debian creates it only when its own sshd
        # service starts, which it never does here.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    sshd = None
    # free_port() can race with another process taking the port: then try another.
    for _attempt in range(3):
        port = free_port()
        log = root / f"sshd-{port}.log"
        config = sshd_config(root, port, force_command)
        proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=base_env(),
            start_new_session=True,
        )
        candidate = Sshd(proc, port, log, root / "client_key", getpass.getuser())
        if wait_listening(candidate, timeout):
            sshd = candidate
            break
        stop_sshd(candidate)
        if "Address already in use" not in read(log):
            raise AssertionError(f"sshd did not start:\n{read(log)}")
    if sshd is None:
        raise AssertionError("sshd found no free port in 3 tries")
    try:
        yield sshd
    finally:
        stop_sshd(sshd)


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def wait_listening(sshd: Sshd, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"Server listening on 127.0.0.1 port {sshd.port}" in read(sshd.log):
            return True
        if sshd.proc.poll() is not None:
            return False
        time.sleep(POLL)
    raise AssertionError(f"sshd not listening after {timeout} s:\n{read(sshd.log)}")


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (sshd's per-connection processes)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name, in parentheses, may contain spaces: split after it.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def end_pid(pid: int, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, one process we started."""
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while True:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        time.sleep(POLL)
        # A dead child of ours stays a zombie until reaped; it is gone for our purposes.
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return


def stop_sshd(sshd: Sshd) -> None:
    # sshd puts each connection in its own session, out of reach of the listener's group:
    # end those by pid first. The listener does not end them when it stops.
    for pid in children(sshd.proc.pid):
        end_pid(pid)
    stop_process(sshd.proc)


def end_console(pid_file: Path) -> None:
    """The console normally ends with its connection (SIGHUP); make sure it has."""
    with contextlib.suppress(OSError, ValueError):
        end_pid(int(pid_file.read_text().strip()))


async def test_console_over_ssh_accepts_and_replies(tmp_path: Path) -> None:
    console_root = tmp_path / "console"
    console_root.mkdir()
    with host_process(tmp_path / "host") as host:
        force_command = write_console_command(console_root, host)
        try:
            with (
                running_sshd(tmp_path / "sshd", force_command) as sshd,
                tmux_session(tmp_path / "tmux") as term,
            ):
                term.start(sshd.ssh_argv(), base_env())
                try:
                    await log_in(term, DEMO_PASSWORD, "Alice Martin")
                except AssertionError as e:
                    raise AssertionError(f"{e}\n--- sshd log ---\n{read(sshd.log)}") from None
                await take_chat_and_reply(term, host, "Hi Ana, answering over ssh")
        finally:
            end_console(console_root / "console.pid")
