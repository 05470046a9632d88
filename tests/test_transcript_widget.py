"""Transcript: wrapping, styles, sticky bottom, keys and 10,000 messages, through Textual's Pilot.

Lines are read back with `render_line`, i.e. exactly what the widget hands the compositor.
"""

from __future__ import annotations

import time

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.style import Style
from textual.app import App, ComposeResult
from textual.widgets import Input

from core.model import Message, SenderKind
from tui.widgets.transcript import (
    TIME_WIDTH,
    Transcript,
    _wrap_cells,
    clean_text,
    format_time,
    wrap_spans,
)

T0 = 1_700_000_000.0
# A 40-column terminal: 2 columns of scrollbar gutter, 7 of time column, 31 for text.
WIDTH, HEIGHT = 40, 10
TEXT_WIDTH = WIDTH - 2 - TIME_WIDTH


def msg(
    seq: int,
    body: str,
    kind: SenderKind = SenderKind.CUSTOMER,
    sender: str = "",
    *,
    note: bool = False,
    at: float | None = None,
) -> Message:
    return Message(
        interaction="IMS0001001",
        seq=seq,
        sender_kind=kind,
        sender=sender or {"customer": "c1", "agent": "a1", "system": "system"}[kind],
        body=body,
        client_msg_id=f"m{seq}",
        created_at=T0 + seq * 60 if at is None else at,
        kind="work_note" if note else "message",
    )


def chat(count: int) -> list[Message]:
    kinds = (SenderKind.CUSTOMER, SenderKind.AGENT)
    return [msg(seq, f"message number {seq}", kinds[seq % 2]) for seq in range(1, count + 1)]


class TranscriptApp(App[None]):
    def compose(self) -> ComposeResult:
        yield Input()  # something else to hold focus
        yield Transcript()


def visible(transcript: Transcript) -> list[str]:
    height = transcript.scrollable_content_region.height
    return [transcript.render_line(y).text.rstrip() for y in range(height)]


def stamp(message: Message) -> str:
    return format_time(message.created_at) + "  "


# -- wrapping ---------------------------------------------------------------------------------


def test_wrap_spans_breaks_at_spaces_and_cuts_long_words() -> None:
    text = "the quick brown fox jumps over the lazy dog"
    lines = [text[s:e] for s, e in wrap_spans(text, 10)]
    assert lines == ["the quick", "brown fox", "jumps over", "the lazy", "dog"]

    text = "see https://example.com/a/very/long/path ok"
    lines = [text[s:e] for s, e in wrap_spans(text, 12)]
    assert lines == ["see", "https://exam", "ple.com/a/ve", "ry/long/path", "ok"]


def test_wrap_spans_paragraphs_and_empty_text() -> None:
    text = "first line\n\nthird"
    assert [text[s:e] for s, e in wrap_spans(text, 20)] == ["first line", "", "third"]
    assert wrap_spans("", 10) == [(0, 0)]


def test_wrap_spans_measures_wide_characters_in_cells() -> None:
    text = "田中さんのご注文は発送済みです"  # 15 double-width characters, no spaces
    lines = [text[s:e] for s, e in wrap_spans(text, 10)]
    assert lines == ["田中さんの", "ご注文は発", "送済みです"]
    assert all(cell_len(line) == 10 for line in lines)


def _wrap_by_cells(text: str, width: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = 0
    for paragraph in text.split("\n"):
        _wrap_cells(text, start, start + len(paragraph), width, spans)
        start += len(paragraph) + 1
    return spans


@settings(max_examples=400)
@given(st.text(alphabet="ab \n", max_size=80), st.integers(1, 14))
def test_ascii_fast_path_agrees_with_the_cell_measuring_wrap(text: str, width: int) -> None:
    text = clean_text(text)
    assert wrap_spans(text, width) == _wrap_by_cells(text, width)


TOKENS = ["a", "bb", " ", "\n", "漢", "字", "😀", "👩\u200d💻", "e\u0301", "ü"]


@settings(max_examples=400)
@given(st.lists(st.sampled_from(TOKENS), max_size=50).map("".join), st.integers(2, 14))
def test_wrap_keeps_every_character_and_fits_the_width(text: str, width: int) -> None:
    text = clean_text(text)
    spans = wrap_spans(text, width)
    assert all(cell_len(text[s:e]) <= width for s, e in spans)
    kept = "".join(text[s:e] for s, e in spans)
    assert kept.replace(" ", "") == text.replace(" ", "").replace("\n", "")


def test_clean_text_removes_control_codes() -> None:
    assert clean_text("red\x1b[31m\tx\r\ny  \n") == "red\ufffd[31m    x\ny"


# -- rendering --------------------------------------------------------------------------------


async def test_renders_time_name_and_wrapped_body_with_hanging_indent() -> None:
    long = "could you please check the status of my parcel, it was due yesterday"
    messages = [
        msg(1, "Alice joined", SenderKind.SYSTEM),
        msg(2, "hi", SenderKind.CUSTOMER),
        msg(3, long, SenderKind.AGENT),
    ]
    app = TranscriptApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages(messages, {"a1": "Bob"}, customer_name="Alice")
        await pilot.pause()
        assert visible(transcript)[:5] == [
            stamp(messages[0]) + "Alice joined",
            stamp(messages[1]) + "Alice: hi",
            stamp(messages[2]) + "Bob: could you please check the",
            " " * TIME_WIDTH + "status of my parcel, it was due",
            " " * TIME_WIDTH + "yesterday",
        ]
        assert transcript.line_count == 5
        assert all(len(line) <= WIDTH - 2 for line in visible(transcript))
        assert transcript.message_at(3) == messages[2]
        assert transcript.message_at(1) == messages[1]
        assert transcript.message_at(5) is None


async def test_names_fall_back_to_sender_ids() -> None:
    app = TranscriptApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages(
            [msg(1, "hello", SenderKind.CUSTOMER, "cust-9"), msg(2, "yo", SenderKind.AGENT, "a7")],
            {"cust-9": "Carla"},
        )
        await pilot.pause()
        assert [line[TIME_WIDTH:] for line in visible(transcript)[:2]] == [
            "Carla: hello",
            "a7: yo",
        ]


async def test_delivery_marks_follow_agent_messages_and_change_in_place() -> None:
    app = TranscriptApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_deliveries({2: "pending"})
        transcript.set_messages(
            [msg(1, "hi", SenderKind.CUSTOMER, "c1"), msg(2, "yo", SenderKind.AGENT, "a1")]
        )
        await pilot.pause()
        assert [line[TIME_WIDTH:] for line in visible(transcript)[:2]] == ["c1: hi", "a1: yo …"]
        transcript.set_deliveries({2: "retrying"})
        await pilot.pause()
        assert visible(transcript)[1][TIME_WIDTH:] == "a1: yo ↻"
        transcript.set_deliveries({2: "sent"})
        transcript.add_message(msg(3, "and?", SenderKind.AGENT, "a1"))
        transcript.set_deliveries({2: "sent", 3: "failed"})
        await pilot.pause()
        assert [line[TIME_WIDTH:] for line in visible(transcript)[1:3]] == [
            "a1: yo ✓",
            "a1: and? ✗ not delivered",
        ]
        # Another conversation's marks do not stay on this one's seqs.
        transcript.set_deliveries({})
        await pilot.pause()
        assert visible(transcript)[1][TIME_WIDTH:] == "a1: yo"


async def test_component_classes_style_customer_agent_system_note_and_time() -> None:
    app = TranscriptApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages(
            [
                msg(1, "Alice joined", SenderKind.SYSTEM),
                msg(2, "hi", SenderKind.CUSTOMER),
                msg(3, "hello", SenderKind.AGENT),
                msg(4, "VIP, be nice", SenderKind.AGENT, note=True),
            ],
            {"a1": "Bob"},
            customer_name="Alice",
        )
        await pilot.pause()

        def style(*names: str) -> Style:
            return transcript.get_visual_style(*names).rich_style

        def segments(y: int) -> list[tuple[str, Style | None]]:
            return [(s.text, s.style) for s in transcript.render_line(y) if s.text.strip()]

        system, customer, agent, note = (segments(y) for y in range(4))
        assert system[0][1] == style("transcript--time")
        assert system[1] == ("Alice joined", style("transcript--system"))
        assert system[1][1] is not None and system[1][1].italic
        assert customer[1] == ("Alice: ", style("transcript--customer"))
        assert customer[2] == ("hi", style())
        assert agent[1] == ("Bob: ", style("transcript--agent"))
        assert note[1][0] == "[note] Bob: "
        assert note[2] == ("VIP, be nice", style("transcript--note"))
        assert style("transcript--note") != style()
        assert len({style(f"transcript--{kind}") for kind in ("customer", "agent", "note")}) == 3


async def test_control_codes_never_reach_the_terminal() -> None:
    app = TranscriptApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages([msg(1, "\x1b[2Jgotcha\tthere\x07")])
        await pilot.pause()
        line = visible(transcript)[0]
        assert "\x1b" not in line and "\x07" not in line and "\t" not in line
        assert "gotcha    there" in line


async def test_resize_rewraps_to_the_new_width() -> None:
    body = " ".join(["word"] * 30)
    app = TranscriptApp()
    async with app.run_test(size=(80, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages([msg(1, body)], {}, customer_name="Al")
        await pilot.pause()
        assert transcript.line_count == len(wrap_spans("Al: " + body, 80 - 2 - TIME_WIDTH))
        await pilot.resize_terminal(30, HEIGHT)
        await pilot.pause()
        narrow = 30 - 2 - TIME_WIDTH
        assert transcript.line_count == len(wrap_spans("Al: " + body, narrow)) > 2
        assert all(len(line) <= 28 for line in visible(transcript))


# -- updates and sticky bottom ----------------------------------------------------------------


async def test_add_message_keeps_seq_order_and_replaces_same_seq() -> None:
    app = TranscriptApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages([msg(1, "one"), msg(4, "four")])
        transcript.add_message(msg(3, "three"))
        transcript.add_message(msg(2, "two"))
        transcript.add_message(msg(5, "five"))
        await pilot.pause()
        assert [m.seq for m in transcript.messages] == [1, 2, 3, 4, 5]
        assert [line.split(": ")[1] for line in visible(transcript)[:5]] == [
            "one",
            "two",
            "three",
            "four",
            "five",
        ]
        transcript.add_message(msg(3, "three, edited"))
        transcript.add_message(msg(3, "three, edited"))  # redelivered: nothing changes
        await pilot.pause()
        assert transcript.message_count == 5
        assert visible(transcript)[2].endswith("c1: three, edited")


async def test_sticky_bottom_follows_new_messages() -> None:
    app = TranscriptApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages(chat(100))
        await pilot.pause()
        assert transcript.scroll_y == transcript.max_scroll_y > 0
        assert visible(transcript)[-1].endswith("message number 100")

        transcript.add_message(msg(101, "are you there?"))
        await pilot.pause()
        assert transcript.scroll_y == transcript.max_scroll_y
        assert visible(transcript)[-1].endswith("are you there?")
        assert transcript.new_below == 0


async def test_scrolled_up_reader_is_not_moved_and_sees_a_count() -> None:
    app = TranscriptApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages(chat(100))
        transcript.focus()
        await pilot.pause()
        await pilot.press("k", "k", "k")
        top = transcript.scroll_y
        before = visible(transcript)
        assert top == transcript.max_scroll_y - 3

        for seq in (101, 102, 103):
            transcript.add_message(msg(seq, f"late {seq}"))
        await pilot.pause()
        assert transcript.scroll_y == top
        assert visible(transcript) == before
        assert transcript.new_below == 3

        await pilot.press("G")
        assert transcript.new_below == 0
        assert visible(transcript)[-1].endswith("late 103")
        transcript.add_message(msg(104, "following again"))
        await pilot.pause()
        assert visible(transcript)[-1].endswith("following again")


async def test_re_setting_the_same_conversation_keeps_a_scrolled_up_reader_in_place() -> None:
    app = TranscriptApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages(chat(100))
        transcript.focus()
        await pilot.pause()
        await pilot.press("g", "ctrl+d")
        before = visible(transcript)
        transcript.set_messages([*chat(100), msg(101, "new"), msg(102, "newer")])
        await pilot.pause()
        assert visible(transcript) == before
        assert transcript.new_below == 2

        transcript.set_messages([msgspec.structs.replace(msg(1, "another chat"), interaction="X")])
        await pilot.pause()
        assert transcript.new_below == 0
        assert visible(transcript)[0].endswith("another chat")


async def test_resize_keeps_a_following_reader_at_the_end() -> None:
    app = TranscriptApp()
    async with app.run_test(size=(60, 20)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages(chat(100))
        await pilot.pause()
        await pilot.resize_terminal(60, 12)  # shorter: the end would drop out of view
        await pilot.pause()
        assert visible(transcript)[-1].endswith("message number 100")
        await pilot.resize_terminal(25, 12)  # narrower: more lines, the end moves down
        await pilot.pause()
        assert transcript.scroll_y == transcript.max_scroll_y
        assert visible(transcript)[-1].endswith("100")


async def test_insert_above_the_view_keeps_the_view_on_the_same_messages() -> None:
    app = TranscriptApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages([m for m in chat(60) if m.seq != 2])
        transcript.focus()
        await pilot.pause()
        await pilot.press("g", "ctrl+d", "ctrl+d")
        before = visible(transcript)
        transcript.add_message(msg(2, "a late, long message that takes up two lines at least"))
        await pilot.pause()
        assert visible(transcript) == before


# -- keys -------------------------------------------------------------------------------------


async def test_scroll_keys() -> None:
    app = TranscriptApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages(chat(100))
        transcript.focus()
        await pilot.pause()
        bottom = transcript.max_scroll_y
        page = transcript.scrollable_content_region.height

        await pilot.press("g")
        assert transcript.scroll_y == 0
        assert visible(transcript)[0].endswith("message number 1")
        await pilot.press("j", "j")
        assert transcript.scroll_y == 2
        await pilot.press("k")
        assert transcript.scroll_y == 1
        await pilot.press("ctrl+d")
        assert transcript.scroll_y == 1 + page // 2
        await pilot.press("ctrl+u")
        assert transcript.scroll_y == 1
        await pilot.press("pagedown")
        assert transcript.scroll_y == 1 + page
        await pilot.press("pageup", "pageup")
        assert transcript.scroll_y == 0
        await pilot.press("G")
        assert transcript.scroll_y == bottom
        await pilot.press("home")
        assert transcript.scroll_y == 0
        await pilot.press("end")
        assert transcript.scroll_y == bottom


async def test_clear() -> None:
    app = TranscriptApp()
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        transcript = app.query_one(Transcript)
        transcript.set_messages(chat(30))
        await pilot.pause()
        transcript.clear()
        await pilot.pause()
        assert transcript.message_count == 0
        assert transcript.line_count == 0
        assert set(visible(transcript)) == {""}


# -- scale ------------------------------------------------------------------------------------


async def test_ten_thousand_messages_wrap_lazily() -> None:
    bodies = ["ok", "thanks, that helps a lot " * 3, "line one\nline two", "田中です " * 8]
    kinds = (SenderKind.CUSTOMER, SenderKind.AGENT, SenderKind.SYSTEM)
    messages = [
        msg(seq, bodies[seq % 4], kinds[seq % 3], note=seq % 50 == 0) for seq in range(1, 10_001)
    ]
    app = TranscriptApp()
    async with app.run_test(size=(100, 40)) as pilot:
        transcript = app.query_one(Transcript)
        await pilot.pause()
        started = time.perf_counter()
        transcript.set_messages(messages, {"a1": "Bob"}, customer_name="Alice")
        set_done = time.perf_counter()
        await pilot.pause()
        painted = time.perf_counter()
        print(
            f"\nTranscript 10,000 messages: set_messages {1000 * (set_done - started):.1f} ms,"
            f" set + first paint {1000 * (painted - started):.1f} ms (pilot pause included)"
        )
        assert transcript.message_count == 10_000
        width = 100 - 2 - TIME_WIDTH
        expected = sum(len(wrap_spans(transcript._texts[i], width)) for i in range(10_000))
        assert transcript.line_count == expected
        # Only what was drawn has been wrapped: a screenful of messages, not ten thousand.
        assert len(transcript._spans) <= 40
        assert visible(transcript)[-1].endswith(bodies[10_000 % 4].rstrip())

        transcript.focus()
        await pilot.press("g")
        assert visible(transcript)[0] == stamp(messages[0]) + "Bob: " + bodies[1].rstrip()
        line = transcript.line_count // 2
        found = transcript.message_at(line)
        assert found is not None
        index = found.seq - 1
        before = sum(len(wrap_spans(transcript._texts[i], width)) for i in range(index))
        assert before <= line < before + len(wrap_spans(transcript._texts[index], width))
