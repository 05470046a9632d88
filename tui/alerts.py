"""A desktop notification written to the terminal: a few bytes the terminal turns into its
own notification, so it reaches a supervisor over SSH with nothing installed on the host.

Terminals disagree on the escape they read, and no standard settles it:

- `osc9`, `ESC ] 9 ; text BEL`, iTerm2's, also read by WezTerm and Ghostty. No title of its
  own, so the title leads the text. The default: the macOS terminal most SSH users run.
- `osc777`, `ESC ] 777 ; notify ; title ; text BEL`, from an rxvt-unicode extension: foot,
  rxvt-unicode, WezTerm, Ghostty, and GNOME Terminal where the distribution patched VTE
  (Fedora).

kitty has its own (OSC 99), not sent here; Terminal.app, Alacritty and tmux without
passthrough show nothing. A terminal that knows neither ignores it or, if old, may print it:
hence off by default (tui/settings.py).
Under tmux (`TMUX` set) the escape is wrapped for passthrough, which tmux passes on only
with `set -g allow-passthrough on`.
"""

from __future__ import annotations

DESKTOP_SEQUENCES = ("osc9", "osc777")
MAX_TEXT = 200  # characters of the text: a notification shows a line or two


def _clean(text: str) -> str:
    # A control character would end the escape early; ";" separates osc777's fields.
    return "".join(c for c in text if c.isprintable() and c != ";")[:MAX_TEXT]


def desktop_notification(sequence: str, title: str, text: str, *, tmux: bool = False) -> str:
    if sequence == "osc777":
        escape = f"\x1b]777;notify;{_clean(title)};{_clean(text)}\x07"
    else:
        escape = f"\x1b]9;{_clean(f'{title}: {text}')}\x07"
    if tmux:
        # tmux's passthrough: DCS tmux; the escape with each ESC doubled; ST.
        return "\x1bPtmux;" + escape.replace("\x1b", "\x1b\x1b") + "\x1b\\"
    return escape
