"""The one error every part of the inbox refuses a command with."""

from __future__ import annotations


class InboxError(Exception):
    """A refused command; `code` is stable for the wire and the REST API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
