"""Token buckets: bursts, refill, per-key isolation, bounded memory; the clock is passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.host.ratelimit import TokenBuckets


def test_burst_then_refill_at_the_rate() -> None:
    b = TokenBuckets(rate=2.0, burst=3)
    assert [b.take("k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("k", 0.0) == pytest.approx(0.5)  # one token comes back in 1/rate seconds
    assert b.take("k", 0.25) == pytest.approx(0.25)
    assert b.take("k", 0.5) == 0.0
    assert b.take("k", 0.5) > 0


def test_refused_requests_do_not_push_the_wait_further() -> None:
    b = TokenBuckets(rate=1.0, burst=1)
    assert b.take("k", 0.0) == 0.0
    waits = [b.take("k", 0.0) for _ in range(5)]
    assert waits == [pytest.approx(1.0)] * 5
    assert b.take("k", 1.0) == 0.0


def test_refill_never_exceeds_the_burst() -> None:
    b = TokenBuckets(rate=10.0, burst=2)
    b.take("k", 0.0)
    allowed = sum(b.take("k", 1000.0) == 0.0 for _ in range(5))
    assert allowed == 2


def test_keys_are_independent() -> None:
    b = TokenBuckets(rate=1.0, burst=1)
    assert b.take("a", 0.0) == 0.0
    assert b.take("a", 0.0) > 0
    assert b.take("b", 0.0) == 0.0


def test_a_clock_going_backwards_refills_nothing() -> None:
    b = TokenBuckets(rate=1.0, burst=1)
    assert b.take("k", 100.0) == 0.0
    assert b.take("k", 50.0) > 0
    assert b.take("k", 100.5) > 0  # still measured from 100, not from 50
    assert b.take("k", 101.0) == 0.0


def test_memory_is_bounded_and_idle_full_buckets_go_first() -> None:
    b = TokenBuckets(rate=1.0, burst=2, max_keys=100)
    for i in range(10_000):
        b.take(f"addr-{i}", 0.0)
    assert len(b) <= 100
    # Once refilled, a bucket is worth nothing and is dropped on the next call.
    b.take("late", 10.0)
    assert len(b) == 1


def test_drained_bucket_survives_while_under_the_cap() -> None:
    b = TokenBuckets(rate=1.0, burst=1, max_keys=10)
    b.take("busy", 0.0)
    for i in range(5):
        b.take(f"other-{i}", 0.1)
    assert b.take("busy", 0.2) > 0  # still remembered as drained


def test_long_keys_are_truncated() -> None:
    b = TokenBuckets(rate=1.0, burst=1)
    b.take("x" * 10_000, 0.0)
    assert b.take("x" * 256 + "different tail", 0.0) > 0


@pytest.mark.parametrize(
    ("rate", "burst", "max_keys"), [(0, 1, 1), (1, 0.5, 1), (1, 1, 0), (-1, 1, 1)]
)
def test_bad_settings_are_refused(rate: float, burst: float, max_keys: int) -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate, burst, max_keys=max_keys)


def test_cost_above_the_burst_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(1.0, 2).take("k", 0.0, cost=3)


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.floats(0, 0.5, allow_nan=False)),
        min_size=1,
        max_size=200,
    )
)
def test_each_key_gets_at_most_burst_plus_rate_times_elapsed(
    steps: list[tuple[int, float]],
) -> None:
    rate, burst = 5.0, 4
    b = TokenBuckets(rate, burst)
    now = 0.0
    first: dict[int, float] = {}
    granted: dict[int, int] = {}
    for key, dt in steps:
        now += dt
        first.setdefault(key, now)
        if b.take(str(key), now) == 0.0:
            granted[key] = granted.get(key, 0) + 1
    for key, n in granted.items():
        assert n <= burst + rate * (now - first[key]) + 1e-9
