"""A full disk under a running host: clear errors, nothing acknowledged lost, recovery.

The data directory is a small tmpfs of its own (mounting needs root, which CI has). The host
runs as a real subprocess; a filler file takes the last free byte mid-conversation. While the
disk is full every write must be refused with a clear error (REST 503 `unavailable`, agent
socket error `unavailable`) and no acknowledgement given; once space returns, the same
messages retried with the same client_msg_id are stored, each exactly once.
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

from bench.host_process import INBOX_TUI, console_env, start_host, stop_host
from core.client import ClientError, InboxClient
from core.protocol import OfferEvent
from store import open_store
from tests.console_terminal import WidgetCustomer
from tests.hosting import fast_config_text
from tests.test_crash_safety import integration_token

DISK_BYTES = 24 * 1024 * 1024


@contextlib.contextmanager
def mounted(path: Path, *commands: list[str | Path]) -> Iterator[Path]:
    """Run the mount `commands` on `path` (root only: CI has it; elsewhere the test is
    skipped), yield, and unmount."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        for argv in commands:
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                message = f"{' '.join(map(str, argv))} failed (needs root): {done.stderr.strip()}"
                if os.environ.get("CI"):
                    pytest.fail(message + " under CI")
                pytest.skip(message)
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False, capture_output=True)


def small_disk(path: Path, size: int) -> contextlib.AbstractContextManager[Path]:
    return mounted(path, ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path])


def fill(path: Path) -> Path:
    """Write zeros until the file system says it is full."""
    filler = path / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


async def test_a_full_disk_refuses_clearly_loses_nothing_and_recovers(tmp_path: Path) -> None:
    config = tmp_path / "inbox.toml"
    config.write_text(fast_config_text())
    with small_disk(tmp_path / "data", DISK_BYTES) as data:
        token = await integration_token(tmp_path)
        host = start_host(tmp_path, config=config)
        agent = InboxClient(host.agent_url, request_timeout=10.0)
        acked: dict[str, str] = {}  # client_msg_id -> body, acknowledged by the host
        try:
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                await agent.connect()
                await agent.login("alice", "demo")
                await agent.set_presence("Available")
                customer = {"id": "full-disk", "name": "Fay"}
                body = {"channel": "chat", "customer": customer}
                async with http.post(f"{host.base_url}/api/v1/items", json=body) as r:
                    assert r.status == 201, await r.text()
                    number = (await r.json())["interaction"]
                offer = await agent.next_event(OfferEvent)
                await agent.accept(offer.view.offer.id)
                url = f"{host.base_url}/api/v1/interactions/{number}/messages"

                async def customer_says(msg_id: str) -> aiohttp.ClientResponse:
                    payload = {"customer_id": "full-disk", "body": f"c {msg_id}"}
                    async with http.post(url, json={**payload, "client_msg_id": msg_id}) as r:
                        await r.read()
                        if r.status == 201:
                            acked[msg_id] = payload["body"]
                        return r

                assert (await customer_says("before")).status == 201
                ack = await agent.send_message(number, "a before", "a-before")
                acked[ack.message.client_msg_id] = "a before"
                web = WidgetCustomer(await http.ws_connect(host.widget_url))
                web_number = await web.start("Wes", "wes@example.test")
                await web.say("w before")  # client_msg_id c1

                filler = fill(data)
                # Full: refused with a clear error, not acknowledged, the host still up.
                for i in range(3):
                    reply = await customer_says(f"full-{i}")
                    assert reply.status == 503, reply.status
                with pytest.raises(ClientError) as refused:
                    await agent.send_message(number, "a full", "a-full")
                assert refused.value.code == "unavailable", refused.value
                await web.ws.send_json({"t": "message", "body": "w full", "client_msg_id": "w-1"})
                error = await web.expect(lambda f: f["t"] == "error", "error", raise_on_error=False)
                assert error["code"] == "unavailable", error
                async with http.get(f"{host.base_url}/healthz") as r:
                    assert r.status == 200

                filler.unlink()
                # Space again: the same retries go through, once each.
                for i in range(3):
                    assert (await customer_says(f"full-{i}")).status == 201
                ack = await agent.send_message(number, "a full", "a-full")
                acked["a-full"] = "a full"
                assert (await customer_says("after")).status == 201
                await web.ws.send_json({"t": "message", "body": "w full", "client_msg_id": "w-1"})
                await web.expect(
                    lambda f: f["t"] == "ack" and f.get("client_msg_id") == "w-1",
                    "ack",
                    raise_on_error=False,  # the refusal above is among the frames
                )
                await web.ws.close()
        finally:
            await agent.close()
            stop_host(host)
        store = await open_store(data)
        try:
            stored = await store.list_messages(number, limit=1000)
            web_stored = await store.list_messages(web_number, limit=1000)
        finally:
            await store.close()
        assert [m.body for m in web_stored if m.sender_kind == "customer"] == [
            "w before",
            "w full",
        ]
        ids = [m.client_msg_id for m in stored]
        for msg_id, text in acked.items():
            assert ids.count(msg_id) == 1, (msg_id, ids)
            assert next(m.body for m in stored if m.client_msg_id == msg_id) == text
        assert len(acked) == 7


def read_only(path: Path) -> contextlib.AbstractContextManager[Path]:
    """`path` bind-mounted over itself read-only, as a disk remounted read-only would be."""
    return mounted(path, ["mount", "--bind", path, path], ["mount", "-o", "remount,ro,bind", path])


def test_a_read_only_data_directory_is_refused_at_start(tmp_path: Path) -> None:
    # A tmpfs cannot be made read-only while the host holds its files open for writing (the
    # kernel says "busy"), so read-only is tested where it can happen: at start.
    with read_only(tmp_path / "data") as data:
        done = subprocess.run(
            [INBOX_TUI, "--server", "--listen", "127.0.0.1:0", "--data", data],
            capture_output=True,
            text=True,
            timeout=30,
            env=console_env(tmp_path / "env"),
        )
    assert done.returncode == 2, done.stderr
    assert f"data directory {data} is not writable" in done.stderr
