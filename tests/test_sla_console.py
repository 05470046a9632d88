"""Service levels in the console: a supervisor's console toasts an alert (with the bell and a
desktop notification when [alerts] says so), marks the queues on the supervisor screen, and
after a reconnect alerts only the crossings it has not shown; an agent's shows nothing."""

from __future__ import annotations

import io
from pathlib import Path

import msgspec
import pytest
from rich.console import Console

from core.protocol import QueueStats, SlaAlert, SlaCrossing, Snapshot
from core.sla import QueueSla, SlaLevel, SlaTargets
from screens.main import MainScreen
from screens.supervisor import SupervisorScreen
from tests.hosting import running_host
from tests.test_console_pilot import SIZE, console, static_text, toasts, until
from tests.test_console_trail import snapshot
from tests.test_sla import sla_config
from tui.alerts import desktop_notification
from tui.settings import AlertSettings, SettingsError, load_settings
from tui.state import ConsoleState
from tui.widgets.queue_stats import QueueStatsView


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("TMUX", raising=False)


async def test_a_supervisor_console_toasts_rings_and_notifies_an_alert(tmp_path: Path) -> None:
    async with running_host(tmp_path, sla_config()) as h:
        alerts = AlertSettings(bell=True, desktop=True, desktop_sequence="osc777")
        boss = console(h, user="dan", alerts=alerts)
        async with boss.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(boss.screen, MainScreen))
            rings: list[None] = []
            written: list[str] = []
            # The terminal's side of Textual, not this console's code: what reaches it.
            boss.bell = lambda: rings.append(None)  # type: ignore[method-assign]
            assert boss._driver is not None
            boss._driver.write = written.append  # type: ignore[method-assign]
            record = await h.host.inbox.start_conversation(channel="chat", customer="web-ana")
            await until(pilot, lambda: "has waited past the 2s target" in toasts(boss), 10)
            assert f"general: {record.number} is near the 2s wait target" in toasts(boss)
            assert len(rings) == 2
            assert written[-1] == desktop_notification(
                "osc777", "inbox-tui", f"general: {record.number} has waited past the 2s target"
            )
            await pilot.press("s")
            await until(pilot, lambda: isinstance(boss.screen, SupervisorScreen))
            view = boss.screen.query_one("#all-queues", QueueStatsView)
            await until(pilot, lambda: "1 past" in static_text(view))


async def test_a_burst_of_alerts_is_one_toast_then_one_summary(tmp_path: Path) -> None:
    async with running_host(tmp_path, sla_config()) as h:
        boss = console(h, user="dan")
        async with boss.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(boss.screen, MainScreen))
            rings: list[None] = []
            boss.bell = lambda: rings.append(None)  # type: ignore[method-assign]
            # Six customers at once, nobody to take them: twelve crossings within a second.
            for i in range(6):
                await h.host.inbox.start_conversation(channel="chat", customer=f"web-{i}")
            await until(pilot, lambda: "11 more alerts; the latest: general:" in toasts(boss), 10)
            assert len(toasts(boss).splitlines()) == 2, toasts(boss)
            assert len(rings) == 2


async def test_an_agent_console_shows_nothing_of_service_levels(tmp_path: Path) -> None:
    async with running_host(tmp_path, sla_config()) as h:
        dan = await h.agent("dan", presence="Away")
        agent = console(h, user="alice")
        async with agent.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(agent.screen, MainScreen))
            await agent.client.set_presence("Away")  # so the chat waits in her queue
            await h.host.inbox.start_conversation(channel="chat", customer="web-ana")
            # dan hears the breach; by then alice's console would have too.
            while (await dan.next_event(SlaAlert)).crossing.level != SlaLevel.BREACHED:
                pass
            await pilot.pause(0.1)
            assert "target" not in toasts(agent)
            queues = static_text(agent.screen.query_one(QueueStatsView))
            assert "general" in queues and "SLA" not in queues and "past" not in queues
        await dan.close()


def _crossing(item: str, level: SlaLevel, since: float) -> SlaCrossing:
    return SlaCrossing(
        queue="general",
        item=item,
        interaction=f"IMS{item}",
        target="wait",
        level=level,
        since=since,
        seconds=30,
    )


def _snapshot(crossings: list[SlaCrossing]) -> Snapshot:
    return msgspec.structs.replace(snapshot("dan"), sla_crossings=crossings)


def test_a_snapshot_after_a_restart_alerts_only_what_was_not_shown() -> None:
    state = ConsoleState()
    shown = _crossing("W1", SlaLevel.BREACHED, 100.0)
    state.apply(SlaAlert(crossing=shown))
    assert state.sla_alerts == [
        (SlaLevel.BREACHED, "general: IMSW1 has waited past the 30s target")
    ]
    state.sla_alerts.clear()
    state.apply(SlaAlert(crossing=shown))  # the same crossing again: not shown twice
    assert state.sla_alerts == []
    during = _crossing("W2", SlaLevel.BREACHED, 130.0)  # crossed while the host was down
    state.load(_snapshot([shown, during]))
    assert state.sla_alerts == [
        (SlaLevel.BREACHED, "general: IMSW2 has waited past the 30s target")
    ]


def test_many_crossings_in_one_snapshot_are_one_summary() -> None:
    state = ConsoleState()
    state.load(_snapshot([_crossing(f"W{i}", SlaLevel.NEAR, i) for i in range(5)]))
    assert state.sla_alerts == [
        (SlaLevel.NEAR, "5 conversations near or past their targets in general")
    ]


def test_queue_marks_are_coloured_by_level_for_supervisors_only() -> None:
    def stats(near: int, breached: int) -> QueueStats:
        return QueueStats(
            queue="general",
            channel="chat",
            waiting=3,
            active=0,
            average_wait=1,
            longest_wait=2,
            agents_available=0,
            sla=QueueSla(targets=SlaTargets(wait=30), near=near, breached=breached),
        )

    view = QueueStatsView()
    view.show([stats(1, 2)], sla=True)
    coloured = coloured_text(view)
    assert "\x1b[1;31m2 past" in coloured and "\x1b[1;33m1 near" in coloured
    assert "\x1b[1;31mgeneral" in coloured  # the queue in the colour of its worst mark
    view.show([stats(1, 0)], sla=True)
    assert "\x1b[1;33mgeneral" in coloured_text(view)
    view.show([stats(1, 2)])  # an agent's main screen
    assert "SLA" not in static_text(view) and "past" not in static_text(view)


def coloured_text(view: QueueStatsView) -> str:
    out = io.StringIO()
    Console(file=out, width=100, color_system="standard", force_terminal=True).print(view.content)
    return out.getvalue()


def test_desktop_notifications_are_escapes_that_text_cannot_break() -> None:
    assert desktop_notification("osc9", "inbox-tui", "late") == "\x1b]9;inbox-tui: late\x07"
    assert (
        desktop_notification("osc777", "inbox-tui", "a;b\x07c")
        == "\x1b]777;notify;inbox-tui;abc\x07"
    )
    wrapped = desktop_notification("osc9", "t", "x", tmux=True)
    assert wrapped == "\x1bPtmux;\x1b\x1b]9;t: x\x07\x1b\\"


def test_alert_settings_are_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "console.toml"
    assert load_settings(path).alerts == AlertSettings(bell=True, desktop=False)
    path.write_text('[alerts]\nbell = false\ndesktop = true\ndesktop_sequence = "osc777"\n')
    assert load_settings(path).alerts == AlertSettings(
        bell=False, desktop=True, desktop_sequence="osc777"
    )
    for bad, says in (
        ('[alerts]\ndesktop = "yes"\n', "desktop must be true or false"),
        ('[alerts]\ndesktop_sequence = "osc99"\n', "desktop_sequence must be one of osc9, osc777"),
        ("[alerts]\nbeep = true\n", "unknown setting 'beep'"),
    ):
        path.write_text(bad)
        with pytest.raises(SettingsError, match=says):
            load_settings(path)
