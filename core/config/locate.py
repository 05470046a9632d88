"""Line numbers for messages: where a key path is in the TOML text (`Locator`), and where
brackets nest too deeply for tomllib (`first_deep_line`)."""

from __future__ import annotations

import re
import tomllib
from typing import Any

KeyPath = tuple[str | int, ...]


class _Section:
    __slots__ = ("keys", "line")

    def __init__(self, line: int) -> None:
        self.line = line
        self.keys: dict[tuple[str, ...], int] = {}


_HEADER_ARRAY = re.compile(r"^\s*\[\[(.*?)\]\]\s*(?:#.*)?$")
_HEADER_TABLE = re.compile(r"^\s*\[(.*?)\]\s*(?:#.*)?$")
_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_KEY_LINE = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def _key_parts(text: str) -> tuple[str, ...] | None:
    if '"' not in text and "'" not in text:
        return tuple(p.strip() for p in text.split("."))
    # Quoted keys are rare; let tomllib do the unquoting rather than re-implement escapes.
    try:
        node: Any = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError:
        return None
    parts: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        (key,) = node
        parts.append(key)
        node = node[key]
    return tuple(parts)


def _advance(line: str, ml: str | None, depth: int) -> tuple[str | None, int]:
    """Carry the multi-line string and bracket state past one line, so that text inside a
    string or a multi-line array is never taken for a header or a key."""
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ml == '"""':
            if ch == "\\":
                i += 2
            elif line.startswith('"""', i):
                ml, i = None, i + 3
            else:
                i += 1
        elif ml == "'''":
            end = line.find("'''", i)
            if end < 0:
                break
            ml, i = None, end + 3
        elif ch == "#":
            break
        elif line.startswith('"""', i) or line.startswith("'''", i):
            ml, i = line[i : i + 3], i + 3
        elif ch == '"':
            i += 1
            while i < n and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
        elif ch == "'":
            end = line.find("'", i + 1)
            i = n if end < 0 else end + 1
        elif ch in "[{":
            depth, i = depth + 1, i + 1
        elif ch in "]}":
            depth, i = max(0, depth - 1), i + 1
        else:
            i += 1
    return ml, depth


class Locator:
    """Finds the line of a key path such as ("queue", 2, "offer_timeout") in the raw text.

    tomllib keeps no positions, so this rescans the text: table headers (an array table's
    entries counted in order, as tomllib builds the list) and the `key =` lines inside each.
    A path it cannot place exactly falls back to its table's header, then to line 1.
    """

    def __init__(self, text: str) -> None:
        self.sections: dict[KeyPath, _Section] = {(): _Section(1)}
        arrays: dict[KeyPath, int] = {}  # array table path -> entries seen so far
        current = self.sections[()]
        ml: str | None = None
        depth = 0
        for number, line in enumerate(text.splitlines(), start=1):
            if ml is None and depth == 0:
                header = _HEADER_ARRAY.match(line) or _HEADER_TABLE.match(line)
                if header is not None:
                    parts = _key_parts(header.group(1).strip())
                    if parts:
                        is_array = header.re is _HEADER_ARRAY
                        path = self._canonical(parts, is_array, arrays)
                        current = self.sections.setdefault(path, _Section(number))
                        # So that a path naming the table itself, ("queue",), finds a line.
                        for end in range(1, len(parts) + 1):
                            self.sections[()].keys.setdefault(parts[:end], number)
                    continue
                key = _KEY_LINE.match(line)
                if key is not None and (parts := _key_parts(key.group(1))):
                    for end in range(1, len(parts) + 1):
                        current.keys.setdefault(parts[:end], number)
            ml, depth = _advance(line, ml, depth)

    @staticmethod
    def _canonical(parts: tuple[str, ...], is_array: bool, arrays: dict[KeyPath, int]) -> KeyPath:
        path: list[str | int] = []
        for i, part in enumerate(parts):
            path.append(part)
            key = tuple(path)
            if i == len(parts) - 1 and is_array:
                arrays[key] = arrays.get(key, 0) + 1
                path.append(arrays[key] - 1)
            elif key in arrays:  # [[queue.skills]] belongs to the latest [[queue]]
                path.append(arrays[key] - 1)
        return tuple(path)

    def line(self, path: KeyPath) -> int:
        for cut in range(len(path), -1, -1):
            section = self.sections.get(path[:cut])
            if section is None:
                continue
            rest = path[cut:]
            for end in range(len(rest), 0, -1):
                keys = rest[:end]
                if all(isinstance(k, str) for k in keys) and keys in section.keys:
                    return section.keys[keys]  # type: ignore[index]
            return section.line
        return 1


def first_deep_line(text: str, limit: int = 100) -> int | None:
    """The line where brackets first nest `limit` deep (quoted text aside, roughly): where to
    look, since tomllib gives no position with a RecursionError."""
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        for char in re.sub(r'"[^"]*"|\'[^\']*\'', "", line.split("#", 1)[0]):
            depth += (char in "[{") - (char in "]}")
            if depth >= limit:
                return number
    return None
