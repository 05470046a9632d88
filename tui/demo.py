"""The demo's console: the one a person uses, made ready on the demo's first screen. The host
side of the demo (core/host/demo.py) hands it the URL, the account and what to say."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import replace

from core.client import ClientError
from tui.actions import binding_ids
from tui.app import InboxApp
from tui.settings import load_settings


async def run_demo_console(
    *, url: str, agent: str, password: str, banner: str, beside: Awaitable[None]
) -> None:
    class DemoApp(InboxApp):
        """Available at once (so offers arrive without knowing the presence key) and the
        banner as a toast."""

        def switch_to_main(self) -> None:
            super().switch_to_main()
            self.notify(banner, title="inbox-tui demo", timeout=45)
            self.run_worker(self.go_available())

        async def go_available(self) -> None:
            with contextlib.suppress(ClientError, TimeoutError):
                await self.client.set_presence("Available")

    settings = replace(load_settings(binding_ids=binding_ids()), url=url, user=agent)
    app = DemoApp(settings, password=password)
    customers = asyncio.ensure_future(beside)
    try:
        await app.run_async()
    finally:
        customers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await customers
