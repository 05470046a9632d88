"""A screen's workers end before its widgets go (screens/working.py). Textual removes a
screen's widgets first and cancels its workers after; a worker whose answer came in between
raised NoMatches and ended the console (seen in CI: the console quit while a transcript was
on its way). Here the answer is made to come at exactly that moment: a child of the screen
releases the worker as it is unmounted."""

from __future__ import annotations

import asyncio

import pytest
from textual.app import App, ComposeResult
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from screens.working import WorkingScreen


class Releaser(Static):
    def __init__(self, answer: asyncio.Event) -> None:
        super().__init__("going", id="releaser")
        self.answer = answer

    def on_unmount(self) -> None:
        self.answer.set()  # the host's answer arrives while the widgets are being removed


def loading_screen(base: type[Screen[None]]) -> type[Screen[None]]:
    class Loading(base):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:
            super().__init__()
            self.answer = asyncio.Event()
            self.drew = False
            self.worker: Worker[None] | None = None

        def compose(self) -> ComposeResult:
            yield Releaser(self.answer)
            yield Static("", id="figures")

        def on_mount(self) -> None:
            self.worker = self.run_worker(self.load())

        async def load(self) -> None:
            await self.answer.wait()
            self.query_one("#figures", Static).update("drawn")
            self.drew = True

    return Loading


class Console(App[None]):
    def __init__(self, screen: Screen[None]) -> None:
        super().__init__()
        self.loading = screen

    def on_mount(self) -> None:
        self.push_screen(self.loading)


@pytest.mark.parametrize("how", ["popped", "console quits"])
async def test_a_working_screens_worker_ends_before_its_widgets_go(how: str) -> None:
    screen = loading_screen(WorkingScreen)()
    app = Console(screen)
    async with app.run_test() as pilot:
        await pilot.pause()
        assert screen.worker is not None and screen.worker.state == WorkerState.RUNNING
        if how == "popped":
            app.pop_screen()
            await pilot.pause()
            await app.workers.wait_for_complete()
            assert screen.answer.is_set()  # the answer did come, as the widgets went
    # Leaving run_test re-raises whatever ended the app: nothing did.
    assert screen.worker is not None and screen.worker.state == WorkerState.CANCELLED
    assert not screen.drew


@pytest.mark.parametrize("how", ["popped", "console quits"])
async def test_a_plain_screens_worker_meets_no_widgets_there(how: str) -> None:
    """The same with Textual's Screen: what WorkingScreen is for."""
    screen = loading_screen(Screen)()
    app = Console(screen)
    with pytest.raises(Exception, match="No nodes match '#figures'"):
        async with app.run_test() as pilot:
            await pilot.pause()
            if how == "popped":
                app.pop_screen()
                await pilot.pause()
                await app.workers.wait_for_complete()
                await pilot.pause()
