"""What an edge keeps of a console's session, so that when the router moves the console does not
notice more than a redraw.

A console's session (its event numbering, its resume buffer) lives on the router. When the
router goes, an edge could close the console's socket and let it reconnect; instead it logs the
console in on the new router itself, with the session token it saw go by, and hands the console
a `Resync` (a snapshot, the documented answer to a gap in the events) on the socket it already
has. Commands the console sent that the old router never answered are sent again, in order,
once the new router has the session: the console's own reconnect does the same, and every
command that changes something is safe to repeat (client_msg_id, offer ids).

Pure bookkeeping over the frames' bytes: it peeks at `t`, `ref`, `seq` and `token` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from core.protocol import (
    MAX_INT,
    PROTOCOL_VERSION,
    Hello,
    LoggedIn,
    Resume,
    Resync,
    encoder,
)

# The ref of the edge's own hello and resume on the new router. Nothing of the console's is in
# flight meanwhile (its frames wait for the move to end), so no answer can be mistaken.
REJOIN_REF = MAX_INT
# Frames that open or end a session: never sent again on the console's behalf.
SESSION_FRAMES = frozenset({"hello", "login", "authenticate", "resume", "logout"})
# At most this many unanswered commands are kept for sending again; a console further ahead of
# its answers is closed instead (it reconnects and sends them again itself).
UNANSWERED_LIMIT = 256


class Peek(msgspec.Struct, gc=False):
    t: str = ""
    ref: int = 0
    seq: int = 0
    token: str = ""


_peek = msgspec.msgpack.Decoder(Peek)
_logged_in = msgspec.msgpack.Decoder(LoggedIn)


def peek(data: bytes) -> Peek | None:
    try:
        return _peek.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


@dataclass
class ConsoleTrail:
    token: str | None = None  # the session's token once a login or resume succeeded
    last_seq: int = 0  # the last event number the console was sent
    unanswered: dict[int, bytes] = field(default_factory=dict)  # ref: the command's frame
    overflowed: bool = False
    _login_ref: int | None = None
    _offered_token: str | None = None

    def from_console(self, data: bytes) -> None:
        frame = peek(data)
        if frame is None:
            return
        if frame.t in ("login", "authenticate", "resume"):
            self._login_ref = frame.ref
            self._offered_token = frame.token or None
        elif frame.t == "logout":
            self.token = None  # nothing to carry over any more
        if frame.ref and frame.t not in SESSION_FRAMES:
            if len(self.unanswered) >= UNANSWERED_LIMIT:
                self.overflowed = True
            else:
                self.unanswered[frame.ref] = data

    def from_router(self, data: bytes) -> None:
        frame = peek(data)
        if frame is None:
            return
        if frame.seq:
            self.last_seq = frame.seq
        if frame.t == "logged_in":
            self.token = frame.token
        elif frame.t == "ok" and frame.ref == self._login_ref and self._offered_token:
            self.token = self._offered_token
        if frame.ref:
            self.unanswered.pop(frame.ref, None)

    @property
    def movable(self) -> bool:
        return self.token is not None and not self.overflowed

    def rejoin(self) -> list[bytes]:
        """What the edge sends the new router for the console: hello, then resume."""
        assert self.token is not None
        return [
            encoder.encode(Hello(ref=REJOIN_REF, version=PROTOCOL_VERSION, client="edge")),
            encoder.encode(Resume(ref=REJOIN_REF, token=self.token, last_seq=self.last_seq)),
        ]

    def rejoined(self, data: bytes) -> tuple[str, bytes | None]:
        """The new router's answer to `rejoin`, frame by frame: ("wait", None) for what comes
        before it, ("pass", data) for an event that raced ahead of it, ("done", frame) with
        what the console gets (a Resync, or None when the new router still had the session),
        or ("failed", None)."""
        frame = peek(data)
        if frame is None or frame.t == "welcome":
            return "wait", None
        if frame.ref != REJOIN_REF:
            return "pass", data
        if frame.t == "logged_in":
            logged = _logged_in.decode(data)
            self.token, self.last_seq = logged.token, logged.seq
            return "done", encoder.encode(Resync(seq=logged.seq, snapshot=logged.snapshot))
        if frame.t == "ok":
            return "done", None
        return "failed", None
