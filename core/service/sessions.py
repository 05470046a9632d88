"""Agent sessions: numbered events, a resume buffer and a bounded outgoing queue.

A session outlives its socket: events keep being numbered and buffered while the console is
away, so a reconnect with `Resume(token, last_seq)` replays exactly what was missed. The buffer
is bounded; a client further behind than it gets a `Resync` snapshot instead.

The outgoing queue is bounded too: a console that stops reading is disconnected (its socket
closed by the host) rather than allowed to hold memory or slow anyone else down; it can resume.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from msgspec.structs import replace

from core.model import Role
from core.protocol import Event

RESUME_BUFFER = 2_000
OUTGOING_LIMIT = 1_000
_SESSION_NUMBERS = itertools.count()
T = TypeVar("T")


class Kick(StrEnum):
    """Why the host drops a session's socket; the transport tells the console which."""

    NOT_READING = "not_reading"  # the outgoing queue filled: the console may resume
    REPLACED = "replaced"  # another console resumed this session: this one must not fight it
    ENDED = "ended"  # logged out or expired: only a new login helps


class Outgoing(Generic[T]):
    """Frames on their way to one socket, at most `limit` of them, taken by one writer.

    Not an asyncio.Queue: each get() is a coroutine, with a future whenever it waits; with two
    thousand consoles those were a tenth of the host's calls, and their waits most of the young
    objects a garbage collection pass walked (docs/performance.md)."""

    __slots__ = ("_waiter", "events", "limit")

    def __init__(self, limit: int) -> None:
        self.events: deque[T] = deque()
        self.limit = limit
        self._waiter: asyncio.Future[None] | None = None

    def put(self, event: T) -> bool:
        """Queue `event`; False, and nothing queued, when `limit` events are waiting."""
        if len(self.events) >= self.limit:
            return False
        self.events.append(event)
        if self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(None)
            self._waiter = None
        return True

    def waiter(self) -> asyncio.Future[None] | None:
        """A future done once an event is queued; None when one is queued already.
        A plain future, not a coroutine: a waiting coroutine's frame per idle socket was
        most of what a young garbage collection walked."""
        if self.events:
            return None
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter


@dataclass(eq=False)
class AgentSession:
    agent: str
    role: Role
    token_digest: str
    expires_at: float
    seq: int = 0
    buffer: deque[Event] = field(default_factory=lambda: deque(maxlen=RESUME_BUFFER))
    outgoing: Outgoing[Event] | None = None
    detached_at: float | None = None
    wants_queue_stats: bool = True
    # The statistics round whose figures the console has (Views.stats_loop); -1: none yet.
    stats_round: int = -1
    # Spreads the consoles over the statistics rounds when not all are due in every one.
    stagger: int = field(default_factory=lambda: next(_SESSION_NUMBERS))
    overflowed: bool = False
    closed: bool = False  # logged out or expired: no command is taken on it any more
    # Set by the transport: how to drop the attached socket, and why.
    kick: Callable[[Kick], None] | None = None
    # Fixed with the role at login; an attribute, not a property, because each statistics
    # round asks every session.
    supervisor: bool = field(init=False)

    def __post_init__(self) -> None:
        self.supervisor = self.role in (Role.SUPERVISOR, Role.ADMIN)

    def push(self, event: Event) -> None:
        """Number the event, keep it for resume, and queue it for the socket if attached."""
        self.seq += 1
        numbered = replace(event, seq=self.seq)
        self.buffer.append(numbered)
        if self.outgoing is None:
            return
        if not self.outgoing.put(numbered):
            # The socket is not keeping up: drop it; the buffer still has everything.
            self.overflowed = True
            self.outgoing = None
            if self.kick is not None:
                self.kick(Kick.NOT_READING)

    def show(self, event: Event) -> None:
        """Send an unnumbered event that the next one of its kind replaces (queue figures):
        not kept for resume, and dropped rather than queued behind a console that is not
        reading (the next numbered event finds the queue full and drops the console)."""
        if self.outgoing is not None:
            self.outgoing.put(event)

    def attach(self, kick: Callable[[Kick], None]) -> Outgoing[Event]:
        """A socket takes over the session (a second console of the same session replaces
        the first, which is kicked)."""
        if self.kick is not None:
            self.kick(Kick.REPLACED)
        self.outgoing = Outgoing(OUTGOING_LIMIT)
        self.detached_at = None
        self.overflowed = False
        self.kick = kick
        self.stats_round = -1  # figures are not replayed: the next round sends them whole
        return self.outgoing

    def detach(self, queue: Outgoing[Event], now: float) -> None:
        if self.outgoing is queue or self.outgoing is None:
            self.outgoing = None
            self.kick = None
            self.detached_at = now

    def missed_since(self, last_seq: int) -> list[Event] | None:
        """Events after `last_seq`, or None when some of them are no longer held."""
        if last_seq > self.seq:
            return None
        if last_seq == self.seq:
            return []
        if not self.buffer or self.buffer[0].seq > last_seq + 1:
            return None
        return [e for e in self.buffer if e.seq > last_seq]
