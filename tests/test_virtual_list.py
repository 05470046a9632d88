"""VirtualList: rendering, cursor keys, messages, clicks and 100,000 rows, through Textual's Pilot.

Lines are read back with `render_line`, i.e. exactly what the widget hands the compositor.
"""

from __future__ import annotations

import time
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.strip import Strip
from textual.widgets import Input

from tui.widgets.virtual_list import VirtualList

WIDTH, HEIGHT = 40, 12  # the Input above the list takes 3 rows: the list shows 9


def render_row(row: str, width: int, selected: bool) -> Text:
    return Text(("> " if selected else "  ") + row)


class ListApp(App[None]):
    def __init__(self, rows: list[str] | None = None) -> None:
        super().__init__()
        self.rows = rows if rows is not None else [f"row {i}" for i in range(100)]
        self.events: list[tuple[str, int, Any]] = []

    def compose(self) -> ComposeResult:
        yield Input()  # something else to hold focus
        yield VirtualList(self.rows, render_row)

    @on(VirtualList.Highlighted)
    def highlighted(self, event: VirtualList.Highlighted) -> None:
        self.events.append(("highlighted", event.index, event.row))

    @on(VirtualList.Selected)
    def selected(self, event: VirtualList.Selected) -> None:
        self.events.append(("selected", event.index, event.row))


def visible(vlist: VirtualList[Any]) -> list[str]:
    height = vlist.scrollable_content_region.height
    return [vlist.render_line(y).text.rstrip() for y in range(height)]


def background(vlist: VirtualList[Any], y: int) -> object:
    style = next(iter(vlist.render_line(y))).style
    return style.bgcolor if style else None


def in_view(vlist: VirtualList[Any]) -> bool:
    top = vlist.scroll_offset.y
    return top <= vlist.cursor < top + vlist.scrollable_content_region.height


async def test_renders_only_rows_with_the_cursor_marked() -> None:
    app = ListApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        vlist = app.query_one(VirtualList)
        await pilot.pause()
        lines = visible(vlist)
        assert len(lines) == 9
        assert lines[:3] == ["> row 0", "  row 1", "  row 2"]
        assert all(
            len(vlist.render_line(y).text) == vlist.scrollable_content_region.width
            for y in range(9)
        )
        cursor_style = vlist.get_visual_style("virtual-list--cursor").rich_style
        assert background(vlist, 0) == cursor_style.bgcolor
        assert background(vlist, 1) != cursor_style.bgcolor


async def test_cursor_style_differs_when_focused() -> None:
    app = ListApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        vlist = app.query_one(VirtualList)
        await pilot.pause()
        assert not vlist.has_focus
        blurred = background(vlist, 0)
        vlist.focus()
        await pilot.pause()
        focused = background(vlist, 0)
        assert blurred != focused
        assert focused == vlist.get_visual_style("virtual-list--cursor").rich_style.bgcolor


async def test_keys_move_the_cursor_and_keep_it_in_view() -> None:
    app = ListApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        vlist = app.query_one(VirtualList)
        vlist.focus()
        await pilot.pause()
        page = vlist.scrollable_content_region.height
        steps = [
            (("j", "j", "down"), 3),
            (("k", "up"), 1),
            (("ctrl+d",), 1 + page // 2),
            (("ctrl+u",), 1),
            (("pagedown",), 1 + page),
            (("pagedown",), 1 + 2 * page),
            (("pageup",), 1 + page),
            (("G",), 99),
            (("g",), 0),
            (("end",), 99),
            (("j",), 99),  # stays on the last row
            (("home",), 0),
            (("k",), 0),
        ]
        for keys, expected in steps:
            await pilot.press(*keys)
            assert vlist.cursor == expected, keys
            assert in_view(vlist), keys
        await pilot.press("G")
        assert visible(vlist)[-1] == "> row 99"


async def test_highlighted_on_move_and_selected_on_enter() -> None:
    app = ListApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        vlist = app.query_one(VirtualList)
        vlist.focus()
        await pilot.pause()
        await pilot.press("j", "j", "enter", "G")
        await pilot.pause()
        assert app.events == [
            ("highlighted", 1, "row 1"),
            ("highlighted", 2, "row 2"),
            ("selected", 2, "row 2"),
            ("highlighted", 99, "row 99"),
        ]
        app.events.clear()
        await pilot.press("G")  # already there: no move, no message
        await pilot.pause()
        assert app.events == []


async def test_click_selects_the_row_under_the_mouse() -> None:
    app = ListApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        vlist = app.query_one(VirtualList)
        vlist.focus()
        await pilot.press("pagedown")  # scrolled: the click must account for the offset
        top = vlist.scroll_offset.y
        app.events.clear()
        await pilot.click(VirtualList, offset=(3, 4))
        await pilot.pause()
        assert vlist.cursor == top + 4
        assert app.events[-1] == ("selected", top + 4, f"row {top + 4}")
        assert visible(vlist)[4] == f"> row {top + 4}"


async def test_update_row_redraws_it() -> None:
    app = ListApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        vlist = app.query_one(VirtualList)
        await pilot.pause()
        assert visible(vlist)[2] == "  row 2"
        vlist.update_row(2, "row 2 (closed)")
        await pilot.pause()
        assert visible(vlist)[2] == "  row 2 (closed)"
        assert vlist.rows[2] == "row 2 (closed)"


async def test_set_rows_keeps_the_cursor_place_and_announces_only_moves() -> None:
    app = ListApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        vlist = app.query_one(VirtualList)
        vlist.cursor = 5
        await pilot.pause()
        app.events.clear()
        vlist.set_rows([f"new {i}" for i in range(50)])
        await pilot.pause()
        assert vlist.cursor == 5
        assert vlist.highlighted_row == "new 5"
        assert app.events == []  # a refresh is not a move

        vlist.set_rows(["a", "b", "c"])  # shrinks under the cursor: clamped
        assert vlist.cursor == 2
        vlist.set_rows(["a", "b", "c"], cursor=0)
        await pilot.pause()
        assert app.events == [("highlighted", 0, "a")]
        assert visible(vlist)[:4] == ["> a", "  b", "  c", ""]


async def test_renderers_may_return_strips_and_long_text_is_cropped() -> None:
    def as_strip(row: str, width: int, selected: bool) -> Strip:
        return Strip([Segment(row * 30, Style(bold=selected))])

    def two_lines(row: str, width: int, selected: bool) -> Text:
        return Text(f"{row}\nsecond line")

    app = ListApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        vlist = app.query_one(VirtualList)
        vlist.set_rows(["ab", "cd"], as_strip)
        await pilot.pause()
        width = vlist.scrollable_content_region.width
        assert visible(vlist)[:2] == [("ab" * 30)[:width], ("cd" * 30)[:width]]
        first = vlist.render_line(0)
        assert first.cell_length == width
        style = next(iter(first)).style
        assert style is not None and style.bold
        vlist.set_rows(["x"], two_lines)
        await pilot.pause()
        assert visible(vlist)[:2] == ["x", ""]


async def test_empty_list_ignores_keys() -> None:
    app = ListApp(rows=[])
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        vlist = app.query_one(VirtualList)
        vlist.focus()
        await pilot.press("j", "G", "pagedown", "enter")
        await pilot.pause()
        assert vlist.cursor == 0
        assert vlist.highlighted_row is None
        assert app.events == []
        assert set(visible(vlist)) == {""}


async def test_one_hundred_thousand_rows() -> None:
    rows = [f"IMS{1000 + i:07d} customer-{i}" for i in range(100_000)]
    app = ListApp(rows=[])
    async with app.run_test(size=(100, 40)) as pilot:
        vlist = app.query_one(VirtualList)
        await pilot.pause()
        started = time.perf_counter()
        vlist.set_rows(rows)
        set_done = time.perf_counter()
        await pilot.pause()
        painted = time.perf_counter()
        print(
            f"\nVirtualList 100,000 rows: set_rows {1000 * (set_done - started):.1f} ms,"
            f" set + first paint {1000 * (painted - started):.1f} ms (pilot pause included)"
        )
        assert visible(vlist)[0] == "> " + rows[0]
        vlist.focus()
        await pilot.press("G")
        assert vlist.cursor == 99_999
        assert visible(vlist)[-1] == "> " + rows[-1]
        await pilot.press("pageup", "k")
        assert in_view(vlist)
        assert visible(vlist)[vlist.cursor - vlist.scroll_offset.y] == "> " + rows[vlist.cursor]
