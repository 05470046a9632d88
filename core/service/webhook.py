"""The outbox's webhook transport: a delivery POSTed as JSON, signed (core/service/outbox.py).

One aiohttp client session for every channel's deliveries; a 2xx answer is delivered, any
other answer, a refused connection or a timeout raises, and the outbox retries.
"""

from __future__ import annotations

import time

import aiohttp

from core.config.settings import DeliverySettings
from core.model import Delivery
from core.service.outbox import payload, signed_headers

# What is read of a refusing provider's answer, for the delivery's last_error.
MAX_ANSWER_BYTES = 200


class WebhookTransport:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, delivery: Delivery, settings: DeliverySettings) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = payload(delivery)
        headers = signed_headers(settings.secret, delivery.id, body, time.time())
        timeout = aiohttp.ClientTimeout(total=settings.timeout)
        async with self._session.post(
            settings.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as answer:
            if not 200 <= answer.status < 300:
                text = (await answer.content.read(MAX_ANSWER_BYTES)).decode(errors="replace")
                raise RuntimeError(f"{settings.url} answered {answer.status}: {text}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
