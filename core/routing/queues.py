"""What makes a set of queues routable: the one place these rules live.

The engine checks them when it is built; the config loader calls the same functions while it
reads the file, so a broken rule is reported at its line there and can never pass the loader
only to stop the host at start-up. A `RoutingConfigError` names the queue and the Queue field to
blame, which is all the loader needs to place it; its `reason` is written for the person editing
the file and starts with that field.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from core.model import Queue
from core.routing.condition import Condition, ConditionError, compile_condition

__all__ = ["RoutingConfigError", "check_overflow_cycles", "check_queue", "unknown_name"]


class RoutingConfigError(ValueError):
    def __init__(self, queue: str, field: str, reason: str) -> None:
        super().__init__(f"queue {queue}: {reason}")
        self.queue = queue
        self.field = field
        self.reason = reason


def unknown_name(kind: str, name: str, known: Collection[str]) -> str:
    """The reason given for a reference to something not declared, listing what is."""
    listed = ", ".join(known) if known else "none are declared"
    return f"names unknown {kind} {json.dumps(name, ensure_ascii=False)} (known: {listed})"


def check_queue(
    queue: Queue,
    channels: Collection[str],
    presences: Collection[str],
    queues: Collection[str],
) -> Condition:
    """Check that the queue names only declared things and that its condition compiles;
    return the compiled condition."""

    def refer(field: str, kind: str, name: str | None, known: Collection[str]) -> None:
        if name is not None and name not in known:
            reason = f"{field} {unknown_name(kind, name, known)}"
            raise RoutingConfigError(queue.name, field, reason)

    refer("channel", "channel", queue.channel, channels)
    try:
        condition = compile_condition(queue.condition)
    except ConditionError as e:
        # An error without a column is about the whole text and already names it.
        reason = str(e) if e.column is None else f"condition is invalid: {e}"
        raise RoutingConfigError(queue.name, "condition", reason) from e
    refer("timeout_presence", "presence", queue.timeout_presence, presences)
    refer("overflow", "queue", queue.overflow, queues)
    return condition


def check_overflow_cycles(queues: Sequence[Queue]) -> None:
    """Refuse overflow chains that come back round: an item would circle them for ever.

    Every overflow must name a queue in `queues` (check_queue). The cycle is named from its
    first queue in `queues`, so a reader of the file sees it start where they would look."""
    overflow = {q.name: q.overflow for q in queues}
    for q in queues:
        chain = [q.name]
        nxt = q.overflow
        while nxt is not None and nxt not in chain:
            chain.append(nxt)
            nxt = overflow[nxt]
        if nxt == q.name:
            cycle = " -> ".join([*chain, q.name])
            raise RoutingConfigError(q.name, "overflow", f"overflow cycle {cycle}")
