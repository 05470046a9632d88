"""Customer notices per channel and language on a real host: a widget customer and a REST
customer each get the channel's text in their language, else in the channel's default language,
else the built-in English; the config refuses unknown notices, bad tags and oversize texts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from core.config import ConfigError, load_config, parse_config
from core.model import Role, SenderKind
from core.notices import NOTICE_MAX, NOTICES
from core.protocol import EndChat
from tests.hosting import fast_config_text, running_host
from tests.test_api import serving
from tests.test_widget import Customer, available

CHAT_CHANNEL = 'name = "chat"\nmode = "sync"\n'
# Spanish by default; French and Spanish texts for "busy", French only for "closed".
NOTICES_TOML = """language = "es"
notices.busy.es = "Todos nuestros agentes están ocupados."
notices.busy.fr = "Tous nos agents sont occupés."
notices.closed = { FR = "La discussion est terminée." }
"""


def config_text() -> str:
    # Nobody Available at first and a short max_wait without overflow: the busy notice.
    text = fast_config_text().replace(
        "offer_timeout = 1.5\n", "offer_timeout = 1.5\nmax_wait = 0.3\n"
    )
    assert CHAT_CHANNEL in text
    return text.replace(CHAT_CHANNEL, CHAT_CHANNEL + NOTICES_TOML, 1)


async def test_notices_are_in_the_customers_language_then_the_channels_then_english(
    tmp_path: Path,
) -> None:
    config = parse_config(config_text(), name="notices.toml")
    async with serving(tmp_path, config) as api, aiohttp.ClientSession() as http:
        inbox = api.host.inbox
        # A widget customer whose browser says fr-CA: no fr-CA text, the fr one.
        widget = Customer(await http.ws_connect(api.url.replace("http", "ws") + "/widget/ws"))
        french = (await widget.start(language="fr-CA"))["conversation"]
        await widget.expect("message", body="Tous nos agents sont occupés.")
        # A REST customer in German: no German text, the channel's Spanish.
        integration = await api.token(None, Role.SUPERVISOR)
        status, created, _ = await api.call(
            "POST",
            "/api/v1/items",
            integration,
            json={"channel": "chat", "customer": {"id": "crm-1"}, "language": "de"},
        )
        assert status == 201, created
        german = created["interaction"]

        async def system_lines(number: str) -> list[str]:
            stored = await inbox.store.list_messages(number, limit=100)
            return [m.body for m in stored if m.sender_kind == SenderKind.SYSTEM]

        async def told(number: str, text: str) -> None:
            for _ in range(200):
                if text in await system_lines(number):
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"{number} was never told {text!r}: {await system_lines(number)}")

        await told(german, "Todos nuestros agentes están ocupados.")

        # Bob takes and ends both: "closed" has a French text (its tag in capitals), no
        # Spanish one, so the German customer gets the built-in English.
        bob = await available(api.host, "bob")
        for _ in range(2):
            number = await bob.accept_next_offer()
            await bob.do(EndChat(interaction=number))
        await widget.expect("message", body="La discussion est terminée.")
        await told(german, NOTICES["closed"])
        assert "La discussion est terminée." not in await system_lines(german)
        assert french != german


OVERFLOW_QUEUES = """
[[queue]]
name = "general"
channel = "chat"
groups = ["tier1"]
max_wait = 0.3
overflow = "backup"

[[queue]]
name = "backup"
channel = "chat"
order = 200
groups = ["tier2"]
"""


async def test_an_overflow_tells_the_customer_in_their_language(tmp_path: Path) -> None:
    text = fast_config_text(OVERFLOW_QUEUES).replace(
        CHAT_CHANNEL, CHAT_CHANNEL + 'notices.overflow.fr = "Nous passons votre demande."\n', 1
    )
    async with running_host(tmp_path, parse_config(text, name="overflow.toml")) as h:
        inbox = h.host.inbox
        record = await inbox.start_conversation(channel="chat", customer="c", language="fr-BE")
        async with asyncio.timeout(10):
            while record.item not in inbox.routing.router.items or (
                inbox.routing.router.items[record.item].queue != "backup"
            ):
                await asyncio.sleep(0.05)
        async with asyncio.timeout(10):
            while True:
                stored = await inbox.store.list_messages(record.number, limit=10)
                if any(m.body == "Nous passons votre demande." for m in stored):
                    break
                await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("notices", "line", "reason"),
    [
        (
            "[channel.notices.bussy]\nen = 'x'\n",
            4,
            'notices.bussy names unknown notice "bussy" (known: busy, overflow, closed, reopened)',
        ),
        (
            "[channel.notices.busy]\nenglish_please = 'x'\n",
            5,
            'notices.busy.english_please must be a language tag like "en" or "fr-CA", '
            'got "english_please"',
        ),
        (
            f"[channel.notices.busy]\nen = '{'x' * (NOTICE_MAX + 1)}'\n",
            5,
            f"notices.busy.en must be at most {NOTICE_MAX} characters, got {NOTICE_MAX + 1}",
        ),
        ("[channel.notices.busy]\nen = ''\n", 5, 'notices.busy.en must be a text, got ""'),
        (
            "language = 'Français'\n",
            4,
            'language must be a language tag like "en" or "fr-CA", got "Français"',
        ),
    ],
)
def test_bad_notices_are_refused_with_the_line_and_the_reason(
    tmp_path: Path, notices: str, line: int, reason: str
) -> None:
    path = tmp_path / "inbox.toml"
    path.write_text(f'[[channel]]\nname = "chat"\nmode = "sync"\n{notices}', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f'{path}:{line}: channel "chat": {reason}'
