"""A selectable one-line-per-row list on Textual's Line API, for up to 100,000 rows.

ListView mounts a widget per row and OptionList measures every option up front; both take
seconds at this scale. Here a row is only turned into a strip when it scrolls into view, by a
caller-supplied renderer, so setting 100,000 rows costs a list copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

__all__ = ["RowRenderer", "VirtualList"]

T = TypeVar("T")

RowRenderer = Callable[[T, int, bool], Strip | Text]
"""Draw `row` in `width` cells; `selected` is true for the cursor row. Longer output is cropped."""


def _default_render(row: object, width: int, selected: bool) -> Text:
    return Text(str(row), no_wrap=True, overflow="ellipsis")


class VirtualList(ScrollView, Generic[T], can_focus=True):
    """Rows of any type, one line each, with a cursor.

    Posts `Highlighted` when the cursor moves (keys, clicks, assigning `cursor`, or `set_rows`
    with an explicit `cursor`) and `Selected` on Enter or a click.
    """

    DEFAULT_CSS = """
    VirtualList {
        background: $surface;
        color: $foreground;
        overflow-x: hidden;
        overflow-y: auto;
        & > .virtual-list--cursor {
            color: $block-cursor-blurred-foreground;
            background: $block-cursor-blurred-background;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus {
            background-tint: $foreground 5%;
            & > .virtual-list--cursor {
                color: $block-cursor-foreground;
                background: $block-cursor-background;
                text-style: $block-cursor-text-style;
            }
        }
    }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"virtual-list--cursor"}

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select", "Select", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("ctrl+d", "page(0.5)", "Half page down", show=False),
        Binding("ctrl+u", "page(-0.5)", "Half page up", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G", "last", "Last", show=False),
    ]

    # repaint=False: only the two rows whose highlight changed are refreshed, in the watcher.
    cursor: reactive[int] = reactive(0, repaint=False, init=False)
    """Index of the highlighted row (0 when there are no rows)."""

    class Highlighted(Message):
        """The cursor moved to `row` at `index`."""

        def __init__(self, virtual_list: VirtualList[Any], index: int, row: Any) -> None:
            super().__init__()
            self.virtual_list = virtual_list
            self.index = index
            self.row = row

        @property
        def control(self) -> VirtualList[Any]:
            return self.virtual_list

    class Selected(Message):
        """`row` at `index` was chosen (Enter or click)."""

        def __init__(self, virtual_list: VirtualList[Any], index: int, row: Any) -> None:
            super().__init__()
            self.virtual_list = virtual_list
            self.index = index
            self.row = row

        @property
        def control(self) -> VirtualList[Any]:
            return self.virtual_list

    def __init__(
        self,
        rows: Sequence[T] = (),
        render: RowRenderer[T] | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._rows: list[T] = list(rows)
        self._row_renderer: RowRenderer[T] = render or _default_render
        # (row index, is cursor) -> strip, for the width in _cache_width.
        self._strips: LRUCache[tuple[int, bool], Strip] = LRUCache(1024)
        self._cache_width = -1

    # -- public API ---------------------------------------------------------------------------

    @property
    def rows(self) -> Sequence[T]:
        return self._rows

    @property
    def row_count(self) -> int:
        return len(self._rows)

    @property
    def highlighted_row(self) -> T | None:
        return self._rows[self.cursor] if self._rows else None

    def set_rows(
        self,
        rows: Sequence[T],
        render: RowRenderer[T] | None = None,
        *,
        cursor: int | None = None,
    ) -> None:
        """Replace every row; `render` defaults to the current renderer.

        The cursor keeps its index (clamped to the new rows) unless `cursor` is given, so a
        periodically refreshed list does not lose the reader's place. Only an explicit `cursor`
        that differs counts as a move and posts `Highlighted`: a list that re-sets its rows and
        then its cursor would otherwise announce a row in between that nobody chose.
        """
        self._rows = list(rows)
        if render is not None:
            self._row_renderer = render
        self._strips.clear()
        self._update_virtual_size()
        target = self.validate_cursor(self.cursor if cursor is None else cursor)
        if cursor is not None and target != self.cursor:
            self.cursor = target  # the watcher scrolls and posts Highlighted
        else:
            self.set_reactive(VirtualList.cursor, target)
            self._scroll_to_cursor()
        self.refresh()

    def update_row(self, index: int, row: T) -> None:
        """Replace one row in place (same position, e.g. a changed status)."""
        self._rows[index] = row
        self._strips.discard((index, False))
        self._strips.discard((index, True))
        self.refresh_line(index)

    # -- cursor -------------------------------------------------------------------------------

    def validate_cursor(self, cursor: int) -> int:
        return max(0, min(cursor, len(self._rows) - 1))

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh_line(old)
        self.refresh_line(new)
        self._scroll_to_cursor()
        if self._rows:
            self._post_highlighted()

    def _post_highlighted(self) -> None:
        self.post_message(self.Highlighted(self, self.cursor, self._rows[self.cursor]))

    def _scroll_to_cursor(self) -> None:
        if not self._rows or not self.scrollable_content_region.height:
            return
        # force: right after set_rows the scrollbar, and with it allow_vertical_scroll, is
        # only updated at the next layout; an unforced scroll would be dropped.
        self.scroll_to_region(
            Region(0, self.cursor, max(1, self.scrollable_content_region.width), 1),
            animate=False,
            force=True,
            immediate=True,
            x_axis=False,
        )

    # -- actions ------------------------------------------------------------------------------

    def action_move(self, delta: int) -> None:
        self.cursor += delta

    def action_page(self, pages: float) -> None:
        step = max(1, int(self.scrollable_content_region.height * abs(pages)))
        step = step if pages > 0 else -step
        # Scroll with the cursor so it keeps its place on screen, as pagers do.
        self.scroll_to(y=self.scroll_y + step, animate=False, force=True)
        self.cursor += step

    def action_first(self) -> None:
        self.cursor = 0

    def action_last(self) -> None:
        self.cursor = len(self._rows) - 1

    def highlighted(self) -> T | None:
        return self._rows[self.cursor] if 0 <= self.cursor < len(self._rows) else None

    def action_select(self) -> None:
        if self._rows:
            self.post_message(self.Selected(self, self.cursor, self._rows[self.cursor]))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.x >= self.scrollable_content_region.width:
            return  # border, padding or the scrollbar
        index = self.scroll_offset.y + offset.y
        if 0 <= index < len(self._rows):
            event.stop()
            self.cursor = index
            self.post_message(self.Selected(self, index, self._rows[index]))

    # -- layout and rendering -----------------------------------------------------------------

    def _update_virtual_size(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, len(self._rows))

    def on_resize(self, event: events.Resize) -> None:
        self._update_virtual_size()
        self._scroll_to_cursor()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()  # focus changes the cursor's style

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if width != self._cache_width:
            self._strips.clear()
            self._cache_width = width
        index = self.scroll_offset.y + y
        if not 0 <= index < len(self._rows):
            return Strip.blank(width, self.get_visual_style().rich_style)
        selected = index == self.cursor
        key = (index, selected)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = self._render_row(index, width, selected)
        return strip

    def _render_row(self, index: int, width: int, selected: bool) -> Strip:
        rendered = self._row_renderer(self._rows[index], width, selected)
        if isinstance(rendered, Text):
            if "\n" in rendered.plain:
                rendered = rendered.split("\n")[0]  # one line per row
            rendered = Strip(rendered.render(self.app.console))
        if selected:
            style = self.get_visual_style("virtual-list--cursor").rich_style
        else:
            style = self.get_visual_style().rich_style
        # The row's own styles win over the base; renderers get `selected` to avoid clashes.
        return rendered.crop_extend(0, width, None).apply_style(style)
