"""Disk trouble under a running host: clear errors, nothing acknowledged lost, recovery.

The host runs as a real subprocess with its data directory on a small file system of its own
(mounting needs root, which CI has; elsewhere these tests are skipped):

- full: a tmpfs; a filler file takes the last free byte mid-conversation. Every write is
  refused with a clear error and no acknowledgement; once space returns, the same host stores
  the retries, each exactly once.
- read-only: ext4 on a loop device, mounted with errors=remount-ro, and an I/O error injected
  through ext4's own trigger_fs_error, so the kernel turns the file system read-only under
  the open database, as it does when a real disk fails. Writes are refused the same way; the
  admin stops the host, runs e2fsck and mounts the disk again, and the restarted host has
  everything acknowledged and stores the retries once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.host_process import INBOX_TUI, HostProcess, console_env, start_host, stop_host
from core.client import ClientError, InboxClient
from core.demo import DEMO_PASSWORD, demo_config_path
from core.host import widget
from core.protocol import OfferEvent
from store import open_store
from tests.console_terminal import WidgetCustomer
from tests.hosting import fast_config_text
from tests.test_crash_safety import integration_token

DISK_BYTES = 24 * 1024 * 1024


@contextlib.contextmanager
def mounted(path: Path, *commands: list[str | Path]) -> Iterator[Path]:
    """Run the (mount) `commands` for `path` (root only: CI has it; elsewhere the test is
    skipped), yield, and unmount."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        for argv in commands:
            run_as_root(argv)
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False, capture_output=True)


def run_as_root(argv: list[str | Path], ok: tuple[int, ...] = (0,)) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode not in ok:
        message = f"{' '.join(map(str, argv))} failed (needs root): {done.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message + " under CI")
        pytest.skip(message)


def small_disk(path: Path, size: int) -> contextlib.AbstractContextManager[Path]:
    return mounted(path, ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path])


def fill(path: Path) -> Path:
    """Write zeros until the file system says it is full."""
    filler = path / "filler"
    chunk = b"\0" * 65536
    # Unbuffered: a buffered file keeps what the full disk refused and fails again on close.
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


class Traffic:
    """One agent, a REST conversation and a widget conversation on a host; every message the
    host acknowledges is remembered, so the store can be checked against it afterwards."""

    def __init__(self, host: HostProcess, token: str) -> None:
        self.host = host
        self.token = token
        self.acked: dict[str, str] = {}  # client_msg_id -> body, acknowledged by the host
        self.web_acked: list[str] = []
        self.number = self.web_number = self.web_ticket = ""

    async def open(self) -> None:
        """Log in, take a REST customer's chat and a widget customer's, one message each way."""
        self.agent = await self.agent_logged_in()
        async with self.http() as http:
            body = {"channel": "chat", "customer": {"id": "disk", "name": "Fay"}}
            async with http.post(f"{self.host.base_url}/api/v1/items", json=body) as r:
                assert r.status == 201, await r.text()
                self.number = (await r.json())["interaction"]
            offer = await self.agent.next_event(OfferEvent)
            await self.agent.accept(offer.view.offer.id)
            assert await self.customer_says(http, "before") == 201
            await self.agent_says("a-before")
            web = WidgetCustomer(await http.ws_connect(self.host.widget_url))
            self.web_number = await web.start("Wes", "wes@example.test")
            self.web_ticket = next(f["ticket"] for f in web.frames if f["t"] == "started")
            await web.say("w before")  # client_msg_id c1
            self.web_acked.append("w before")
            await web.ws.close()

    async def agent_logged_in(self) -> InboxClient:
        agent = InboxClient(self.host.agent_url, request_timeout=10.0)
        await agent.connect()
        await agent.login("alice", DEMO_PASSWORD)
        await agent.set_presence("Available")
        return agent

    def http(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})

    async def customer_says(self, http: aiohttp.ClientSession, msg_id: str) -> int:
        url = f"{self.host.base_url}/api/v1/interactions/{self.number}/messages"
        payload = {"customer_id": "disk", "body": f"c {msg_id}", "client_msg_id": msg_id}
        async with http.post(url, json=payload) as r:
            await r.read()
            if r.status == 201:
                self.acked[msg_id] = payload["body"]
            return r.status

    async def agent_says(self, msg_id: str) -> None:
        ack = await self.agent.send_message(self.number, f"a {msg_id}", msg_id)
        self.acked[ack.message.client_msg_id] = f"a {msg_id}"

    async def widget(self, http: aiohttp.ClientSession) -> WidgetCustomer:
        """The widget customer back on its conversation (a page reload: resume by ticket)."""
        web = WidgetCustomer(await http.ws_connect(self.host.widget_url))
        await web.ws.send_json(
            {"t": "resume", "conversation": self.web_number, "ticket": self.web_ticket}
        )
        await web.expect(lambda f: f["t"] == "resumed", "resumed")
        return web

    async def refused(self, tag: str, cause: str) -> None:
        """Every write is refused with a clear error and nothing is acknowledged; reads go
        on, and /healthz says the host is degraded and why (`cause`)."""
        async with self.http() as http:
            for i in range(3):
                assert await self.customer_says(http, f"{tag}-{i}") == 503
            with pytest.raises(ClientError) as refused:
                await self.agent_says(f"a-{tag}")
            assert refused.value.code == "unavailable", refused.value
            web = await self.widget(http)
            frame = {"t": "message", "body": f"w {tag}", "client_msg_id": f"w-{tag}"}
            await web.ws.send_json(frame)
            error = await web.expect(lambda f: f["t"] == "error", "error", raise_on_error=False)
            # The refusal names the line, which the page sends again by itself.
            assert error["code"] == "unavailable" and error["client_msg_id"] == f"w-{tag}", error
            await web.ws.close()
            # A new chat is refused in words for the customer, which the start form shows.
            web = WidgetCustomer(await http.ws_connect(self.host.widget_url))
            await web.ws.send_json({"t": "start", "name": "Una", "email": "una@example.test"})
            error = await web.expect(lambda f: f["t"] == "error", "error", raise_on_error=False)
            assert error["code"] == "unavailable", error
            assert error["message"] == widget.UNAVAILABLE_TEXT, error
            await web.ws.close()
            async with http.get(f"{self.host.base_url}/healthz") as r:
                health = await r.json()
                assert r.status == 503 and health["status"] == "degraded", health
                assert cause in health["store"], health
            async with http.get(f"{self.host.base_url}/api/v1/interactions/{self.number}") as r:
                assert r.status == 200, await r.text()

    async def retried(self, tag: str) -> None:
        """The writes refused under `tag`, sent again with the same ids, now acknowledged."""
        async with self.http() as http:
            for i in range(3):
                assert await self.customer_says(http, f"{tag}-{i}") == 201
            await self.agent_says(f"a-{tag}")
            assert await self.customer_says(http, f"after-{tag}") == 201
            web = await self.widget(http)
            frame = {"t": "message", "body": f"w {tag}", "client_msg_id": f"w-{tag}"}
            await web.ws.send_json(frame)
            await web.expect(
                lambda f: f["t"] == "ack" and f.get("client_msg_id") == f"w-{tag}", "ack"
            )
            self.web_acked.append(f"w {tag}")
            await web.ws.close()
            async with http.get(f"{self.host.base_url}/healthz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"

    async def check_store(self, data: Path) -> None:
        """Every acknowledged message is stored exactly once, with its own text."""
        store = await open_store(data)
        try:
            stored = await store.list_messages(self.number, limit=1000)
            web_stored = await store.list_messages(self.web_number, limit=1000)
        finally:
            await store.close()
        web_bodies = [m.body for m in web_stored if m.sender_kind == "customer"]
        assert web_bodies == self.web_acked
        ids = [m.client_msg_id for m in stored]
        for msg_id, text in self.acked.items():
            assert ids.count(msg_id) == 1, (msg_id, ids)
            assert next(m.body for m in stored if m.client_msg_id == msg_id) == text


def config_file(root: Path) -> Path:
    config = root / "inbox.toml"
    config.write_text(fast_config_text())
    return config


async def test_a_full_disk_refuses_clearly_loses_nothing_and_recovers(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    with small_disk(tmp_path / "data", DISK_BYTES) as data:
        token = await integration_token(tmp_path / "data")  # before the host takes it
        traffic = Traffic(start_host(tmp_path, config=config), token)
        try:
            await traffic.open()
            filler = fill(data)
            await traffic.refused("full", "the disk is full")
            filler.unlink()
            await traffic.retried("full")  # the same host, once space is back
        finally:
            with contextlib.suppress(AttributeError):
                await traffic.agent.close()
            stop_host(traffic.host)
        await traffic.check_store(data)
    assert len(traffic.acked) == 7
    assert traffic.web_acked == ["w before", "w full"]


@contextlib.contextmanager
def ext4_disk(root: Path, path: Path) -> Iterator[tuple[Path, Path]]:
    """An ext4 image mounted on `path` that the kernel makes read-only on its first error,
    as production disks are usually mounted; yields (path, image)."""
    image = root / "disk.img"
    with image.open("wb") as f:
        f.truncate(DISK_BYTES)
    mkfs = ["mkfs.ext4", "-q", "-F", image]
    with mounted(path, mkfs, ["mount", "-o", "loop,errors=remount-ro", image, path]):
        yield path, image


def fail_disk(path: Path) -> None:
    """An I/O error as ext4 reports one: with errors=remount-ro the kernel turns the file
    system read-only at once, open files and all."""
    device = subprocess.run(
        ["findmnt", "-no", "SOURCE", path], capture_output=True, text=True, check=True
    ).stdout.strip()
    Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").write_text("disk test\n")
    with pytest.raises(OSError) as refused:
        (path / "probe").write_text("x")
    assert refused.value.errno == errno.EROFS


async def test_a_disk_turning_read_only_refuses_clearly_and_loses_nothing(
    tmp_path: Path,
) -> None:
    config = config_file(tmp_path)
    with ext4_disk(tmp_path, tmp_path / "data") as (data, image):
        token = await integration_token(tmp_path / "data")
        traffic = Traffic(start_host(tmp_path, config=config), token)
        try:
            await traffic.open()
            fail_disk(data)
            await traffic.refused("ro", "the file system is read-only")
        finally:
            with contextlib.suppress(AttributeError):
                await traffic.agent.close()
            stop_host(traffic.host)
        # The log names the cause for the admin, and a SIGTERM still stops the host cleanly
        # on a disk it can no longer write.
        log = traffic.host.log_text()
        assert "storage failed (the file system is read-only" in log, log
        assert traffic.host.proc.returncode == 0, log
        # What an admin does: unmount, repair, mount again, start the host.
        run_as_root(["umount", data])
        run_as_root(["e2fsck", "-fy", image], ok=(0, 1))  # 1: errors were corrected
        run_as_root(["mount", "-o", "loop,errors=remount-ro", image, data])
        traffic.host = start_host(tmp_path, config=config)
        try:
            traffic.agent = await traffic.agent_logged_in()
            await traffic.retried("ro")
        finally:
            await traffic.agent.close()
            stop_host(traffic.host)
        await traffic.check_store(data)
    assert len(traffic.acked) == 7
    assert traffic.web_acked == ["w before", "w ro"]


def read_only(path: Path) -> contextlib.AbstractContextManager[Path]:
    """`path` bind-mounted over itself read-only."""
    return mounted(path, ["mount", "--bind", path, path], ["mount", "-o", "remount,ro,bind", path])


def test_a_read_only_data_directory_is_refused_at_start(tmp_path: Path) -> None:
    with read_only(tmp_path / "data") as data:
        done = subprocess.run(
            [
                *(INBOX_TUI, "--server", "--listen", "127.0.0.1:0"),
                *("--data", data, "--config", demo_config_path()),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=console_env(tmp_path / "env"),
        )
    assert done.returncode == 2, done.stderr
    assert f"data directory {data} is not writable" in done.stderr
