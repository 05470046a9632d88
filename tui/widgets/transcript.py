"""A conversation transcript on Textual's Line API, fast enough for 10,000 messages.

Each message is shown as ``HH:MM  Name: body``; the body wraps under the name (the time column
hangs), so the times stay scannable. Only the lines in view are ever rendered:

* Line counts per message are computed in one pass when the width is known. That pass uses a
  plain greedy word wrap (``wrap_spans``) rather than Rich's ``Text.wrap``, which is far too
  slow to run over a whole history; for ASCII text it breaks lines with ``str.rfind`` so the
  cost is per line, not per character.
* A prefix sum of those counts maps a line to its message by bisection.
* The wrapped lines of a message (as offsets into its text) are computed when the message is
  first drawn, and cached until the width changes; rendered strips are cached per line.

The view is sticky at the bottom: a message arriving while the reader is at the end scrolls
into view; if they have scrolled up, the view stays put and ``new_below`` counts what arrived,
for an indicator.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import ClassVar

from rich.cells import cell_len, chop_cells
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.strip import Strip

from core.model import Message, SenderKind

__all__ = ["TIME_WIDTH", "Transcript", "clean_text", "format_time", "wrap_spans"]

Span = tuple[int, int]

# "HH:MM" and two spaces. Continuation lines are indented by the same amount, so the wrap
# width is the same for every line of a message and one wrap function serves them all.
TIME_WIDTH = 7
NOTE_MARKER = "[note] "
ATTACHMENT_MARKER = " [attachment]"
# After an agent message on a channel that delivers it to a provider (docs/channels.md).
DELIVERY_MARKERS = {"pending": " …", "retrying": " ↻", "sent": " ✓", "failed": " ✗ not delivered"}

# C0/C1 controls would move the terminal's cursor; \n is handled as a paragraph break first.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_WORD = re.compile(r"\S+")


def _seq(message: Message) -> int:
    return message.seq


def format_time(timestamp: float) -> str:
    """Local wall-clock time of a message, as shown in the time column."""
    return time.strftime("%H:%M", time.localtime(timestamp))


def clean_text(text: str) -> str:
    """Make text safe to put on a terminal line: no control codes, lines without trailing spaces.

    Trailing spaces are dropped so a paragraph never ends in blanks, which keeps the two wrap
    paths (ASCII and general) in exact agreement.
    """
    if text.isprintable():
        return text.rstrip()
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")
    text = _CONTROL.sub("\ufffd", text.replace("\t", "    ").replace("\u2029", "\n"))
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip()


def wrap_spans(text: str, width: int) -> list[Span]:
    """Greedy word wrap of cleaned `text` to `width` cells, as ``(start, end)`` offsets.

    Newlines end paragraphs, spaces at a break are dropped, a word longer than a line is cut.
    An empty paragraph is one empty line, so the result is never empty.
    """
    width = max(1, width)
    spans: list[Span] = []
    ascii_only = text.isascii()
    length = len(text)
    start = 0
    while True:
        stop = text.find("\n", start)
        if stop == -1:
            stop = length
        # Decided per paragraph: one emoji in a signature should not slow the whole message.
        if ascii_only or text[start:stop].isascii():
            _wrap_ascii(text, start, stop, width, spans)
        else:
            _wrap_cells(text, start, stop, width, spans)
        if stop >= length:
            return spans
        start = stop + 1


def _wrap_ascii(text: str, start: int, stop: int, width: int, out: list[Span]) -> None:
    # Every character is one cell, so a line is at most `width` characters and the break is
    # the last space within reach: one C-level rfind per line instead of a loop per word.
    emitted = len(out)
    s = start
    while stop - s > width:
        cut = text.rfind(" ", s + 1, s + width + 1)
        end = cut
        while end > s and text[end - 1] == " ":
            end -= 1
        if cut == -1 or end == s:
            # No break within reach (or only indentation): cut, keeping what follows as is.
            out.append((s, s + width))
            s += width
        else:
            out.append((s, end))
            s = cut + 1
            while s < stop and text[s] == " ":
                s += 1
    if s < stop or len(out) == emitted:
        out.append((s, stop))


def _wrap_cells(text: str, start: int, stop: int, width: int, out: list[Span]) -> None:
    # The same greedy rule as _wrap_ascii, measured in cells for wide and zero-width characters.
    if cell_len(text[start:stop]) <= width:
        out.append((start, stop))
        return
    emitted = len(out)
    line_start = line_end = start
    line_width = 0
    for match in _WORD.finditer(text, start, stop):
        word_start, word_end = match.span()
        gap = cell_len(text[line_end:word_start])
        word = cell_len(text[word_start:word_end])
        if line_width + gap + word <= width:
            line_end, line_width = word_end, line_width + gap + word
            continue
        if line_end > line_start:
            out.append((line_start, line_end))
            line_start = line_end = word_start
            line_width, gap = 0, 0
            if word <= width:
                line_end, line_width = word_end, word
                continue
        # Too long for any line: cut it (with any indentation before it) into full lines.
        pieces = chop_cells(text[line_start:word_end], width)
        position = line_start
        for piece in pieces[:-1]:
            out.append((position, position + len(piece)))
            position += len(piece)
        line_start, line_end, line_width = position, word_end, cell_len(pieces[-1])
    if line_end > line_start or len(out) == emitted:
        out.append((line_start, line_end))


class Transcript(ScrollView, can_focus=True):
    """The messages of one conversation, newest at the bottom.

    ``--customer`` and ``--agent`` style the sender's name (bodies keep the widget's colour for
    legibility); ``--system`` and ``--note`` style their whole line; ``--time`` the time column.
    """

    ALLOW_SELECT = False  # strips carry no offsets for text selection (yet)

    DEFAULT_CSS = """
    Transcript {
        background: $surface;
        color: $foreground;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-gutter: stable;
        &:focus {
            background-tint: $foreground 5%;
        }
        & > .transcript--time {
            color: $text-muted;
        }
        & > .transcript--customer {
            color: $text-primary;
            text-style: bold;
        }
        & > .transcript--agent {
            color: $text-success;
            text-style: bold;
        }
        & > .transcript--system {
            color: $text-muted;
            text-style: dim italic;
        }
        & > .transcript--note {
            color: $text-warning;
            background: $warning-muted;
        }
    }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "transcript--time",
        "transcript--customer",
        "transcript--agent",
        "transcript--system",
        "transcript--note",
    }

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j,down", "scroll_lines(1)", "Line down", show=False),
        Binding("k,up", "scroll_lines(-1)", "Line up", show=False),
        Binding("ctrl+d", "scroll_pages(0.5)", "Half page down", show=False),
        Binding("ctrl+u", "scroll_pages(-0.5)", "Half page up", show=False),
        Binding("pagedown", "scroll_pages(1)", "Page down", show=False),
        Binding("pageup", "scroll_pages(-1)", "Page up", show=False),
        Binding("g,home", "scroll_top", "Top", show=False),
        Binding("G,end", "scroll_bottom", "Bottom", show=False),
    ]

    new_below: var[int] = var(0)
    """Messages that arrived below the view while the reader was scrolled up."""

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._messages: list[Message] = []
        self._seqs: list[int] = []  # parallel to _messages, for bisection by seq
        self._texts: list[str] = []  # head (marker, name) + body, cleaned
        self._heads: list[int] = []  # length of the head within the text
        self._names: Mapping[str, str] = {}
        self._deliveries: dict[int, str] = {}  # seq -> delivery state, see set_deliveries
        self._customer_name: str | None = None
        # (sender kind, sender, message kind) -> head: ten thousand messages, a few senders.
        self._heads_cache: dict[tuple[str, str, str], str] = {}
        self._width = 0  # wrap width the counts below were computed for; 0 = not laid out
        self._counts: list[int] = []
        self._starts: list[int] = [0]  # prefix sum of _counts: first line of each message
        self._spans: dict[int, list[Span]] = {}  # seq -> wrapped lines at _width
        self._strips: LRUCache[int, Strip] = LRUCache(1024)  # content line -> strip
        self._strip_width = 0  # width the cached strips were drawn for
        self._follow = True  # sticky bottom: new messages scroll into view

    # -- public API ---------------------------------------------------------------------------

    @property
    def message_count(self) -> int:
        return len(self._messages)

    @property
    def messages(self) -> Sequence[Message]:
        return self._messages

    @property
    def line_count(self) -> int:
        """Wrapped lines at the current width (0 until the widget has been laid out)."""
        return self._starts[-1]

    def set_messages(
        self,
        messages: Sequence[Message],
        names: Mapping[str, str] | None = None,
        *,
        customer_name: str | None = None,
    ) -> None:
        """Replace the whole conversation.

        `names` maps sender ids to display names; `customer_name`, when given, names every
        customer message (the record's name is friendlier than the contact id).
        Another conversation opens at its end. The same conversation again (callers may simply
        re-set it on every event) keeps the sticky-bottom rules of `add_message`: a reader who
        scrolled up stays on the same lines, and later messages are counted in `new_below`.
        """
        # A later duplicate seq wins, as in add_message.
        ordered = sorted({message.seq: message for message in messages}.values(), key=_seq)
        same = bool(ordered and self._messages) and (
            ordered[0].interaction == self._messages[0].interaction
        )
        keep_place = same and not self._follow
        anchor = self._anchor() if keep_place else None
        last_seq = self._seqs[-1] if self._seqs else 0

        self._names = dict(names or {})
        self._customer_name = customer_name
        self._heads_cache.clear()
        self._messages = ordered
        self._seqs = [message.seq for message in ordered]
        make_text = self._message_text
        composed = [make_text(message) for message in ordered]
        self._texts = [text for text, _ in composed]
        self._heads = [head for _, head in composed]
        self._relayout(self._wrap_width(), anchor=False)
        if keep_place:
            self._restore(anchor)
            self.new_below += len(self._seqs) - bisect_right(self._seqs, last_seq)
        else:
            self._scroll_to_end()

    def add_message(self, message: Message) -> None:
        """Add one message in seq order; one with a seq already shown replaces it.

        A redelivered, identical message is ignored.
        """
        index = bisect_left(self._seqs, message.seq)
        replacing = index < len(self._seqs) and self._seqs[index] == message.seq
        if replacing and self._messages[index] == message:
            return
        following = self._follow
        anchor = self._anchor()
        text, head = self._message_text(message)
        appended = index == len(self._seqs)
        if replacing:
            self._messages[index] = message
            self._texts[index] = text
            self._heads[index] = head
            self._spans.pop(message.seq, None)
        else:
            self._messages.insert(index, message)
            self._seqs.insert(index, message.seq)
            self._texts.insert(index, text)
            self._heads.insert(index, head)
        if self._width:
            count = self._count(text)
            if appended:
                self._counts.append(count)
                self._starts.append(self._starts[-1] + count)
            else:
                # Lines below the change move: the prefix sum and line-keyed strips are stale.
                if replacing:
                    self._counts[index] = count
                else:
                    self._counts.insert(index, count)
                self._starts = list(accumulate(self._counts, initial=0))
                self._strips.clear()
            self._update_virtual_size()
        if following:
            self._scroll_to_end()
        else:
            if not appended:
                self._restore(anchor)
            if not replacing:
                self.new_below += appended
        self.refresh()

    def set_deliveries(self, deliveries: Mapping[int, str]) -> None:
        """Mark messages by seq with their delivery state (DELIVERY_MARKERS); messages shown
        whose mark changed are redrawn."""
        changed = {
            seq
            for seq in deliveries.keys() | self._deliveries.keys()
            if deliveries.get(seq) != self._deliveries.get(seq)
        }
        self._deliveries = dict(deliveries)
        for seq in changed:
            index = bisect_left(self._seqs, seq)
            if index < len(self._seqs) and self._seqs[index] == seq:
                self._redraw(index)

    def _redraw(self, index: int) -> None:
        text, head = self._message_text(self._messages[index])
        self._texts[index] = text
        self._heads[index] = head
        self._spans.pop(self._seqs[index], None)
        if self._width:
            self._counts[index] = self._count(text)
            self._starts = list(accumulate(self._counts, initial=0))
            self._strips.clear()
            self._update_virtual_size()
        self.refresh()

    def clear(self) -> None:
        self.set_messages([], self._names, customer_name=self._customer_name)

    def message_at(self, line: int) -> Message | None:
        """The message drawn on content line `line` (0 is the first line of the transcript)."""
        if not 0 <= line < self._starts[-1]:
            return None
        return self._messages[bisect_right(self._starts, line) - 1]

    def line_text(self, line: int) -> str:
        """Plain text of content line `line`, as drawn (without the trailing padding)."""
        if not 0 <= line < self._starts[-1]:
            return ""
        return self._render_content_line(line).text.rstrip()

    # -- actions ------------------------------------------------------------------------------

    def action_scroll_lines(self, lines: int) -> None:
        self.scroll_to(y=self.scroll_y + lines, animate=False)

    def action_scroll_pages(self, pages: float) -> None:
        step = max(1, int(self.scrollable_content_region.height * abs(pages)))
        self.scroll_to(y=self.scroll_y + (step if pages > 0 else -step), animate=False)

    def action_scroll_top(self) -> None:
        self.scroll_to(y=0, animate=False)

    def action_scroll_bottom(self) -> None:
        self._scroll_to_end()

    # -- layout -------------------------------------------------------------------------------

    def _message_text(self, message: Message) -> tuple[str, int]:
        """The text that gets wrapped (head and body together) and the head's length."""
        key = (message.sender_kind, message.sender, message.kind)
        head = self._heads_cache.get(key)
        if head is None:
            head = self._heads_cache[key] = self._head(message)
        body = message.body
        if not body.isprintable() or body[-1:] == " ":
            body = clean_text(body)
        if message.attachment:
            body += ATTACHMENT_MARKER
        delivery = self._deliveries.get(message.seq)
        if delivery is not None:
            body += DELIVERY_MARKERS[delivery]
        return head + body, len(head)

    def _head(self, message: Message) -> str:
        kind = message.sender_kind
        if kind == SenderKind.SYSTEM:
            return ""
        if kind == SenderKind.CUSTOMER and self._customer_name:
            name = self._customer_name
        else:
            name = self._names.get(message.sender) or message.sender
        head = f"{' '.join(clean_text(name).split())}: "
        return NOTE_MARKER + head if message.kind == "work_note" else head

    def _wrap_width(self) -> int:
        content = self.scrollable_content_region.width
        return max(1, content - TIME_WIDTH) if content > 0 else 0

    def _count(self, text: str) -> int:
        # Most chat messages fit on one line; skip the wrap entirely for those.
        if len(text) <= self._width and text.isascii() and "\n" not in text:
            return 1
        return len(wrap_spans(text, self._width))

    def _relayout(self, width: int, *, anchor: bool) -> None:
        """Recount every message's lines for a new wrap width (or new messages)."""
        saved = self._anchor() if anchor else None
        self._width = width
        self._spans.clear()
        self._strips.clear()
        if width:
            count = self._count
            self._counts = [count(text) for text in self._texts]
        else:
            self._counts = []
        self._starts = list(accumulate(self._counts, initial=0))
        self._update_virtual_size()
        if saved is not None:
            self._restore(saved)
        self.refresh()

    def _update_virtual_size(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, self._starts[-1])

    def _anchor(self) -> tuple[int, int] | None:
        """The message at the top of the view and how far into it, to keep it there."""
        top = round(self.scroll_y)
        if not self._width or not 0 <= top < self._starts[-1]:
            return None
        index = bisect_right(self._starts, top) - 1
        return self._seqs[index], top - self._starts[index]

    def _restore(self, anchor: tuple[int, int] | None) -> None:
        if anchor is None:
            return
        seq, offset = anchor
        index = min(bisect_left(self._seqs, seq), len(self._seqs) - 1)
        if index < 0:
            return
        offset = min(offset, self._counts[index] - 1)
        self.scroll_to(y=self._starts[index] + offset, animate=False, force=True)

    def _scroll_to_end(self) -> None:
        # force: right after virtual_size grows, the scrollbar (and with it
        # allow_vertical_scroll) is only updated at the next layout, and an unforced scroll
        # would be dropped silently.
        self.scroll_to(y=self.max_scroll_y, animate=False, force=True)
        self._follow = True  # also when already there and scroll_y did not change
        self.new_below = 0

    def on_resize(self, event: events.Resize) -> None:
        width = self._wrap_width()
        if width != self._width:
            self._relayout(width, anchor=not self._follow)
        if self._follow:  # also when only the height changed: the end stays in view
            self._scroll_to_end()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # Whether the reader is at the end is decided by where they last scrolled to, not
        # recomputed when content grows (by then max_scroll_y has already moved on).
        self._follow = round(new_value) >= self.max_scroll_y
        if self._follow and self.new_below:
            self.new_below = 0

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()

    # -- rendering ----------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        line = self.scroll_offset.y + y
        width = self.scrollable_content_region.width
        if width != self._strip_width:
            # A paint can come between a size change and its Resize event (which re-wraps).
            self._strips.clear()
            self._strip_width = width
        if not 0 <= line < self._starts[-1]:
            return Strip.blank(width, self.get_visual_style().rich_style)
        strip = self._strips.get(line)
        if strip is None:
            strip = self._render_content_line(line)
            self._strips[line] = strip
        return strip

    def _spans_of(self, index: int) -> list[Span]:
        seq = self._seqs[index]
        spans = self._spans.get(seq)
        if spans is None:
            spans = self._spans[seq] = wrap_spans(self._texts[index], self._width)
        return spans

    def _render_content_line(self, line: int) -> Strip:
        index = bisect_right(self._starts, line) - 1
        row = line - self._starts[index]
        message = self._messages[index]
        text = self._texts[index]
        head = self._heads[index]
        start, end = self._spans_of(index)[row]

        style = self.get_visual_style
        base = style().rich_style
        if message.sender_kind == SenderKind.SYSTEM:
            head_style = body_style = style("transcript--system").rich_style
        elif message.kind == "work_note":
            body_style = style("transcript--note").rich_style
            head_style = body_style + Style(bold=True)
        else:
            head_style = style(f"transcript--{message.sender_kind}").rich_style
            body_style = base
        fill = body_style if message.kind == "work_note" else base

        if row == 0:
            stamp = format_time(message.created_at)
            segments = [Segment(stamp, style("transcript--time").rich_style)]
            segments.append(Segment(" " * (TIME_WIDTH - cell_len(stamp)), base))
        else:
            segments = [Segment(" " * TIME_WIDTH, base)]
        if start < head:
            segments.append(Segment(text[start : min(end, head)], head_style))
        if end > head:
            segments.append(Segment(text[max(start, head) : end], body_style))
        width = self.scrollable_content_region.width
        used = TIME_WIDTH + cell_len(text[start:end])
        if used < width:
            segments.append(Segment(" " * (width - used), fill))
        strip = Strip(segments, max(used, width))
        return strip.crop(0, width) if used > width else strip
