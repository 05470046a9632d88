"""Fuzzing the config loader: whatever the text, the answer is a HostConfig or a ConfigError
that says where (file:line), never another exception."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import ConfigError, HostConfig, load_config, parse_config
from core.demo import demo_config_path

EXAMPLES = int(os.environ.get("INBOX_FUZZ_EXAMPLES", "20"))
EXAMPLE = demo_config_path().read_text()
LINES = EXAMPLE.splitlines()
KEYS = [
    "name",
    "channel",
    "condition",
    "overflow",
    "max_wait",
    "rule",
    "offer_timeout",
    "skills",
    "groups",
    "capacity",
    "listen",
    "synchronous",
    "mode",
    "channels",
    "ofer",
]
VALUES = st.sampled_from(
    [
        '"x"',
        "1",
        "-1",
        "1e400",
        "true",
        "[]",
        "{}",
        '""',
        '[1, "a"]',
        "{ a = 1 }",
        '"a b"',
        "1979-05-27",
        '"\\u0000"',
        "nan",
        "inf",
        '"""\nx"""',
        "0x10",
        "99999999999999999999",
        # Deeper than tomllib's recursion allows (a RecursionError, not a ConfigError, once).
        "[" * 3000 + "]" * 3000,
        "{ a = " * 2000 + "1" + " }" * 2000,
    ]
)
CFG = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


def check(text: str, name: str = "fuzz.toml") -> None:
    try:
        config = parse_config(text, name=name)
    except ConfigError as e:
        assert e.line is not None and 1 <= e.line <= text.count("\n") + 2, (str(e), e.line)
        assert str(e).startswith(f"{name}:{e.line}: "), str(e)
        return
    assert isinstance(config, HostConfig)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "key", "value", "junk", "cut"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "key":
            lines.insert(i, f"{draw(st.sampled_from(KEYS))} = {draw(VALUES)}")
        elif op == "value" and "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "= " + draw(VALUES)
        elif op == "junk":
            lines.insert(i, draw(st.text(max_size=30)))
        elif op == "cut":
            lines = [*lines[:i], lines[i][: draw(st.integers(0, len(lines[i])))]]
    return "\n".join(lines)


@CFG
@given(mutated())
def test_mutated_example_config_is_loaded_or_refused_with_a_line(text: str) -> None:
    check(text)


@CFG
@given(st.text(max_size=200))
def test_random_text_is_refused_with_a_line(text: str) -> None:
    check(text)


@st.composite
def queues(draw: st.DrawFn) -> str:
    n = draw(st.integers(1, 5))
    parts = [
        '[[channel]]\nname = "chat"\nmode = "sync"\n[[channel]]\nname = "mail"\nmode = "async"'
    ]
    for i in range(n):
        parts.append(
            f'[[queue]]\nname = "q{i}"\nchannel = "{draw(st.sampled_from(["chat", "mail"]))}"'
        )
        if draw(st.booleans()):
            parts.append(f"max_wait = {draw(st.integers(-1, 5))}")
        if draw(st.booleans()):
            parts.append(f'overflow = "q{draw(st.integers(0, n))}"')
        if draw(st.booleans()):
            cond = draw(
                st.sampled_from(
                    ['language == "fr"', "a ==", "(((", "x in [1,", "not", "a and or b"]
                )
                | st.text(max_size=20)
            )
            parts.append(
                f"condition = {cond!r}".replace("\\", "\\\\")
                if "'" not in cond
                else 'condition = "x =="'
            )
    return "\n".join(parts) + "\n"


@CFG
@given(queues())
def test_overflow_cycles_and_conditions_are_refused_with_a_line(text: str) -> None:
    check(text)


@CFG
@given(st.binary(max_size=200))
def test_files_that_are_not_text_are_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "inbox.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as e:
        assert str(e).startswith(str(path)), str(e)
