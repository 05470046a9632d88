"""Service levels: how a conversation and a queue stand against their queue's targets. Pure.

A queue may set two targets ([queue.sla] in the host config, core/config):

- **wait**: seconds from the item's arrival in the queue until an agent accepts it. Contact
  centres call this the speed of answer. The clock starts at `enqueued_at`, which an item
  keeps through expiry, overflow, reclaim and transfer to a queue, so a customer sent back to
  the queue is still judged by how long they have waited in all.
- **first_reply**: seconds from the agent's acceptance until their first reply to the
  customer. Measured from acceptance, not from arrival, so the two targets do not overlap:
  the wait is the floor's (staffing, routing), the first reply is the agent's. A transfer or
  a reclaim starts a new first-reply clock for the new owner.

Each clock is `ok`, then `near` once `near` (a fraction, 0.8 by default) of its target has
passed, then `breached` once the whole target has; a clock that stopped (accepted, answered)
keeps the level it stopped at, except that stopping inside the target is `ok` whatever it
came near. So, for fixed event times, a level never falls as time goes on, and `near`
always comes before `breached`.

No clock, no I/O: every function takes `now` and plain times (epoch seconds), so the host
(core/service/sla_watch.py, the queue figures) and the console (a floor row's mark) judge
alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Literal

from msgspec import Meta, Struct

DEFAULT_NEAR = 0.8
# The same bound as any duration in the host config: ten years.
MAX_TARGET = 10 * 366 * 24 * 3600


class SlaLevel(StrEnum):
    OK = "ok"
    NEAR = "near"
    BREACHED = "breached"


_RANK = {SlaLevel.OK: 0, SlaLevel.NEAR: 1, SlaLevel.BREACHED: 2}

# Which of a queue's targets a clock runs against.
SlaTarget = Literal["wait", "first_reply"]


class SlaTargets(Struct, frozen=True, gc=False, kw_only=True):
    """A queue's targets in seconds (None: no target of that kind) and the fraction of a
    target after which a conversation is marked near it."""

    wait: Annotated[float, Meta(gt=0, le=MAX_TARGET)] | None = None
    first_reply: Annotated[float, Meta(gt=0, le=MAX_TARGET)] | None = None
    near: Annotated[float, Meta(gt=0, lt=1)] = DEFAULT_NEAR

    def seconds(self, target: SlaTarget) -> float | None:
        return self.wait if target == "wait" else self.first_reply


def worst(*levels: SlaLevel) -> SlaLevel:
    return max(levels, key=_RANK.__getitem__, default=SlaLevel.OK)


def clock_level(
    target: float | None, near: float, started: float, stopped: float | None, now: float
) -> SlaLevel:
    """The level of a clock started at `started` and stopped at `stopped` (None: running),
    as of `now`. A clock whose target is None, or that has not started yet, is ok."""
    if target is None or now < started:
        return SlaLevel.OK
    if stopped is not None and stopped <= now:
        return SlaLevel.BREACHED if stopped - started > target else SlaLevel.OK
    elapsed = now - started
    if elapsed > target:
        return SlaLevel.BREACHED
    if elapsed >= near * target:
        return SlaLevel.NEAR
    return SlaLevel.OK


def crossed_at(targets: SlaTargets, target: SlaTarget, level: SlaLevel, started: float) -> float:
    """When a running clock started at `started` reached `level`: what an alert says "since"."""
    seconds = targets.seconds(target) or 0.0
    return started + (seconds * targets.near if level == SlaLevel.NEAR else seconds)


class QueueSla(Struct, frozen=True, gc=False, kw_only=True):
    """A queue's targets and, of its clocks still running (customers waiting for an agent,
    accepted conversations waiting for a first reply), how many are near and how many past
    their target. Stopped clocks are history, not something a supervisor can still act on."""

    targets: SlaTargets
    near: int = 0
    breached: int = 0

    @property
    def level(self) -> SlaLevel:
        if self.breached:
            return SlaLevel.BREACHED
        return SlaLevel.NEAR if self.near else SlaLevel.OK


def queue_sla(
    targets: SlaTargets,
    *,
    waiting_since: Iterable[float],
    unanswered_since: Iterable[float],
    now: float,
) -> QueueSla:
    """`waiting_since`: when each waiting item's wait began; `unanswered_since`: when each
    accepted conversation without a first reply was accepted."""
    counts = dict.fromkeys(SlaLevel, 0)
    clocks = ((targets.wait, waiting_since), (targets.first_reply, unanswered_since))
    for seconds, starts in clocks:
        if seconds is not None:
            for started in starts:
                counts[clock_level(seconds, targets.near, started, None, now)] += 1
    return QueueSla(targets=targets, near=counts[SlaLevel.NEAR], breached=counts[SlaLevel.BREACHED])
