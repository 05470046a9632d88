"""GET /metrics in the Prometheus text exposition format (0.0.4), written by hand.

The format is a few lines of text per metric; prometheus_client would bring a global registry
and its own locking to do what a page of code does here.

The metrics must cost routing nothing: the routing listener only bumps plain ints, histogram
observations are a bisect and two additions, and everything else (queue depths, store counters,
open items) is read from state the host keeps anyway, at scrape time.

`inbox_store_commit_batch_size` is a real histogram: the store counts committed batches by the
power of two at or above their size, which are exactly `le` buckets; `_sum` is the statements
committed (StoreStats.ops) and `_count` the commits.
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web

from core.host.state import HOST, Host
from core.model import OfferState
from core.routing.decisions import OfferEnded, OfferMade
from core.service.routing import Step

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# The store keys batches by the power of two at or above their size; larger ones land in +Inf.
BATCH_BUCKETS = tuple(1 << i for i in range(11))  # 1, 2, 4, ... 1024
OUTCOMES = ("made", *(s.value for s in OfferState if s != OfferState.PENDING))
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
INF = float("inf")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _bound(le: float) -> str:
    return "+Inf" if le == INF else f"{le:g}"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items()) + "}"


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = less or equal).
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        out, running = [], 0
        for bound, n in zip((*self.buckets, INF), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class Metrics:
    offers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    histograms: dict[str, Histogram] = field(
        default_factory=lambda: {
            "routing_step": Histogram(LATENCY_BUCKETS),
            "message": Histogram(LATENCY_BUCKETS),
            "arrival": Histogram(LATENCY_BUCKETS),
            "gc_pause": Histogram(LATENCY_BUCKETS),
        }
    )
    _gc_started: float = 0.0

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        # The collector stops the whole loop: its pauses are a direct cause of tail latency.
        # A callback can fail to run (a collection at the recursion limit, during deeply
        # nested input): a stop without its own start must not count a made-up pause.
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.observe("gc_pause", time.perf_counter() - self._gc_started)
            self._gc_started = 0.0

    def on_step(self, step: Step) -> None:
        for d in step.decisions:
            if isinstance(d, OfferMade):
                self.offers["made"] += 1
            elif isinstance(d, OfferEnded):
                self.offers[d.offer.state.value] += 1

    def observe(self, name: str, seconds: float) -> None:
        histogram = self.histograms.get(name)
        if histogram is not None:
            histogram.observe(seconds)


METRICS = web.AppKey("metrics", Metrics)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        self.lines.append(f"{name}{_labels(labels or {})} {_number(value)}")

    def histogram(
        self,
        name: str,
        help_text: str,
        buckets: Iterable[tuple[float, int]],
        total: float,
        count: int,
    ) -> None:
        self.family(name, "histogram", help_text)
        for bound, n in buckets:
            self.sample(f"{name}_bucket", n, {"le": _bound(bound)})
        self.sample(f"{name}_sum", total)
        self.sample(f"{name}_count", count)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _batch_buckets(batch_sizes: dict[int, int]) -> list[tuple[float, int]]:
    out, running = [], 0
    for bound in BATCH_BUCKETS:
        running += batch_sizes.get(bound, 0)
        out.append((float(bound), running))
    out.append((INF, sum(batch_sizes.values())))
    return out


def render(host: Host, metrics: Metrics, now: float) -> str:
    w = _Writer()
    w.family("inbox_connected_agents", "gauge", "Agent console sockets connected now.")
    w.sample("inbox_connected_agents", host.connected_agents)
    w.family(
        "inbox_dropped_consoles_total",
        "counter",
        "Console sockets closed because they stopped reading (their event queue filled).",
    )
    w.sample("inbox_dropped_consoles_total", host.dropped_consoles)

    stats = host.inbox.queue_stats()
    w.family("inbox_queue_depth", "gauge", "Work items waiting in the queue for an agent.")
    for name, s in stats.items():
        w.sample("inbox_queue_depth", s.waiting, {"queue": name})
    w.family("inbox_queue_active", "gauge", "Work items of the queue accepted or in wrap-up.")
    for name, s in stats.items():
        w.sample("inbox_queue_active", s.active, {"queue": name})
    w.family(
        "inbox_queue_sla_breached",
        "gauge",
        "Conversations of the queue past its service-level target, waiting for an agent or "
        "for a first reply (queues with [queue.sla] only).",
    )
    for name, s in stats.items():
        if s.sla is not None:
            w.sample("inbox_queue_sla_breached", s.sla.breached, {"queue": name})

    w.family("inbox_offers_total", "counter", "Offers made, and offers ended by outcome.")
    for outcome, n in metrics.offers.items():
        w.sample("inbox_offers_total", n, {"outcome": outcome})

    for name, help_text in (
        ("routing_step", "One routing step: engine decision plus its commit, in seconds."),
        ("message", "A message from receipt to fan-out, commit included, in seconds."),
        (
            "arrival",
            "A customer's new conversation until its item is routed and announced: the "
            "interaction's commit, then the routing step's, in seconds.",
        ),
        ("gc_pause", "A garbage collection pass, during which nothing else runs, in seconds."),
    ):
        h = metrics.histograms[name]
        w.histogram(f"inbox_{name}_seconds", help_text, h.cumulative(), h.sum, h.count)

    store = host.inbox.store_stats
    w.family("inbox_store_commits_total", "counter", "Store transactions committed.")
    w.sample("inbox_store_commits_total", store.commits)
    w.histogram(
        "inbox_store_commit_batch_size",
        "Writes per committed store transaction (group commit batch size).",
        _batch_buckets(store.batch_sizes),
        store.ops,
        store.commits,
    )
    w.family(
        "inbox_store_slow_commits_total", "counter", "Store transactions that took over 25 ms."
    )
    w.sample("inbox_store_slow_commits_total", store.slow_commits)
    w.family("inbox_store_commit_seconds_max", "gauge", "The slowest store transaction so far.")
    w.sample("inbox_store_commit_seconds_max", round(store.max_commit_seconds, 6))
    w.family(
        "inbox_store_write_seconds_total",
        "counter",
        "Seconds the store's one writer spent running transactions: a rate near 1 means every "
        "write waits for the writer.",
    )
    w.sample("inbox_store_write_seconds_total", round(store.write_seconds, 6))
    w.family("inbox_store_failed_commits_total", "counter", "Store transactions that failed.")
    w.sample("inbox_store_failed_commits_total", store.failed_commits)

    w.family(
        "inbox_cpu_seconds_total",
        "counter",
        "CPU seconds by part: the whole process; its event loop's thread (sockets, sessions, "
        "messages, routing, fan-out); of that, the routing engine's decisions; the store's "
        "writer thread (SQLite's statements and commits; absent where the writer runs on the "
        "event loop).",
    )
    w.sample("inbox_cpu_seconds_total", round(time.process_time(), 6), {"part": "process"})
    # This handler runs on the event loop's thread, so its thread time is the loop's.
    w.sample("inbox_cpu_seconds_total", round(time.thread_time(), 6), {"part": "event_loop"})
    engine = host.inbox.routing.engine_cpu_seconds
    w.sample("inbox_cpu_seconds_total", round(engine, 6), {"part": "routing_engine"})
    if store.writer_cpu_seconds is not None:
        writer = store.writer_cpu_seconds
        w.sample("inbox_cpu_seconds_total", round(writer, 6), {"part": "store_writer"})

    outbox = host.inbox.outbox
    w.family(
        "inbox_deliveries_total",
        "counter",
        "Tries to deliver to a channel's provider, by outcome: sent, retrying (failed, tried "
        "again later), failed (given up). Counted on the routing host, which delivers.",
    )
    for outcome, n in outbox.outcomes.items():
        w.sample("inbox_deliveries_total", n, {"outcome": outcome})
    w.family(
        "inbox_outbox_backlog",
        "gauge",
        "Deliveries to channels' providers not yet sent nor given up, at the outbox's last pass.",
    )
    w.sample("inbox_outbox_backlog", outbox.backlog)

    w.family("inbox_open_items", "gauge", "Work items queued, offered, accepted or in wrap-up.")
    w.sample("inbox_open_items", host.inbox.open_item_count())
    w.family("inbox_uptime_seconds", "gauge", "Seconds since the host started.")
    w.sample("inbox_uptime_seconds", round(now - host.started_at, 3))
    return w.text()


async def handle(request: web.Request) -> web.Response:
    text = render(request.app[HOST], request.app[METRICS], time.time())
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


def setup(app: web.Application) -> None:
    """Serve /metrics and hook the counters into routing; a second call does nothing."""
    if METRICS in app:
        return
    host = app[HOST]
    metrics = app[METRICS] = Metrics()
    unobserve = (
        host.inbox.observe_steps(metrics.on_step),
        host.inbox.observe_timings(metrics.observe),
    )
    gc.callbacks.append(metrics.on_gc)

    async def unhook(app: web.Application) -> None:
        # The host may outlive this app (tests, an embedded demo): stop feeding a dead page.
        for stop in unobserve:
            stop()
        if metrics.on_gc in gc.callbacks:
            gc.callbacks.remove(metrics.on_gc)

    app.on_cleanup.append(unhook)
    app.router.add_get("/metrics", handle)
