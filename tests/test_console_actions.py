"""The one table of console actions (tui/actions.py) is whole: every action it names exists,
no key or id is claimed twice, and the screen, the palette and the toolbar take it from there."""

from __future__ import annotations

import re
from collections import Counter

from screens.main import MainScreen
from screens.records import RecordsScreen
from screens.supervisor import SupervisorScreen
from tui.actions import (
    APP_ACTIONS,
    MAIN_ACTIONS,
    RECORDS_ACTIONS,
    SUPERVISOR_ACTIONS,
    binding_ids,
    bindings,
    palette_actions,
)
from tui.app import InboxApp


def method(action: str) -> str:
    return "action_" + re.sub(r"\(.*\)$", "", action)


def test_every_action_in_the_table_runs_something() -> None:
    for a in MAIN_ACTIONS:
        assert hasattr(MainScreen, method(a.action)), a.id
    for a in APP_ACTIONS:
        assert hasattr(InboxApp, method(a.action)), a.id
    for a in RECORDS_ACTIONS:
        owner = InboxApp if a.action.startswith("app.") else RecordsScreen
        assert hasattr(owner, method(a.action.removeprefix("app."))), a.id


def test_no_id_and_no_key_is_claimed_twice() -> None:
    every = MAIN_ACTIONS + RECORDS_ACTIONS + SUPERVISOR_ACTIONS + APP_ACTIONS
    ids = Counter(b.id for b in bindings(every))
    assert [i for i, n in ids.items() if n > 1] == []
    # Keys once per screen: the other screens are on top of the main one, not beside it.
    for screen in (MAIN_ACTIONS, RECORDS_ACTIONS, SUPERVISOR_ACTIONS):
        keys = Counter(b.key for b in bindings(screen + APP_ACTIONS))
        assert [k for k, n in keys.items() if n > 1] == []
    assert binding_ids() == set(ids)


def test_the_records_screen_and_its_palette_come_from_its_table() -> None:
    assert [b.id for b in RecordsScreen.BINDINGS] == [b.id for b in bindings(RECORDS_ACTIONS)]  # type: ignore[union-attr]
    names = [a.palette for a in palette_actions(RECORDS_ACTIONS)]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"records?: .+", n) for n in names)


def test_the_supervisor_screen_and_its_palette_come_from_its_table() -> None:
    assert [b.id for b in SupervisorScreen.BINDINGS] == [  # type: ignore[union-attr]
        b.id for b in bindings(SUPERVISOR_ACTIONS)
    ]
    names = [a.palette for a in palette_actions(SUPERVISOR_ACTIONS)]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"supervisor: .+", n) for n in names)


def test_the_screen_the_palette_and_the_toolbar_come_from_the_table() -> None:
    assert [b.id for b in MainScreen.BINDINGS] == [b.id for b in bindings(MAIN_ACTIONS)]  # type: ignore[union-attr]
    names = [a.palette for a in palette_actions()]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"(offer|chat|record|presence|view): .+", n) for n in names)
    # The toolbar keeps the order agents know.
    assert [a.label for a in MAIN_ACTIONS if a.toolbar] == [
        "Attach",
        "Add agent",
        "Transfer",
        "Template",
        "End chat",
    ]
