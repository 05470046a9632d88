"""Customer notices: the lines the host itself writes into a conversation for its customer, by
name, in the customer's language where the channel has a text in it.

A channel's `notices` (core/config, `[channel.notices.NAME]`) map a notice name to its texts by
language tag. The text of a notice for a conversation is the channel's in the conversation's
language (the tag as given, then its primary subtag: "fr-CA", then "fr"), else the channel's in
its default `language`, else the built-in English below. Tags compare case-insensitively.
"""

from __future__ import annotations

import re
from typing import Annotated

from msgspec import Meta

from core.model import ServiceChannel

# The built-in English of every notice, and so the names a channel may give texts for.
NOTICES = {
    # The customer waited the queue's max_wait and no overflow queue takes them.
    "busy": "All our agents are busy right now. Thank you for waiting: you keep your place.",
    # The wait ran out and the request moved to the queue's overflow queue.
    "overflow": "We are passing your request to more colleagues, so that someone answers sooner.",
    # The agent ended the chat.
    "closed": "The chat has ended",
    # The customer wrote into the conversation after its close, within the reopen window.
    "reopened": "Welcome back: this conversation is open again.",
}
NOTICE_MAX = 1000  # characters of one notice's text

# BCP 47-shaped: "en", "fr-CA", "zh-Hant-TW"; as browsers' navigator.language gives it.
LANGUAGE_PATTERN = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,4}$"
LANGUAGE_MAX = 35
LanguageTag = Annotated[str, Meta(min_length=2, max_length=LANGUAGE_MAX, pattern=LANGUAGE_PATTERN)]
_LANGUAGE = re.compile(LANGUAGE_PATTERN)


def is_language(tag: str) -> bool:
    return len(tag) <= LANGUAGE_MAX and _LANGUAGE.fullmatch(tag) is not None


def _candidates(tag: str) -> list[str]:
    tag = tag.lower()
    primary = tag.split("-", 1)[0]
    return [tag, primary] if primary != tag else [tag]


def notice_text(channel: ServiceChannel, name: str, language: str) -> str:
    """The text of notice `name` (a key of NOTICES) for a conversation in `language` ("" when
    the customer's language is not known) on `channel`."""
    texts = {tag.lower(): text for tag, text in channel.notices.get(name, {}).items()}
    tags = (_candidates(language) if language else []) + _candidates(channel.language)
    return next((texts[tag] for tag in tags if tag in texts), NOTICES[name])
