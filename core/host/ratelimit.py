"""Token buckets keyed by string (an API token id, a client address); sans-I/O.

Each key has a bucket of up to `burst` tokens that refills at `rate` tokens a second; a request
takes one. The caller passes the time in, so tests drive it with a fake clock and nothing here
sleeps or reads a clock.

Memory stays bounded whatever keys are thrown at it: at most `max_keys` buckets are kept, least
recently used first in line to go. A bucket that has refilled completely is forgotten at no
loss (a missing key starts full too), so eviction first drops those. Only when more than
`max_keys` keys are busy within one refill period is a partly drained bucket dropped, which
lets that key start over with a full burst: a bounded leak, better than memory growing with
every address on the internet.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["TokenBuckets"]


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class TokenBuckets:
    """One token bucket per key: `take(key, now)` spends a token or says how long to wait."""

    KEY_LENGTH = 256

    def __init__(self, rate: float, burst: float, *, max_keys: int = 10_000) -> None:
        if not rate > 0 or not burst >= 1 or max_keys < 1:
            raise ValueError("rate must be positive, burst at least 1 and max_keys at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        # Least recently used first, so eviction only ever looks at the front.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, bucket: _Bucket, now: float) -> float:
        # A clock that steps backwards (a test, an NTP jump on a wall clock) refills nothing
        # rather than draining the bucket.
        elapsed = max(0.0, now - bucket.updated)
        return min(self.burst, bucket.tokens + elapsed * self.rate)

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """0.0 if `cost` tokens were taken for `key`, else the seconds until they would be.

        A refused request takes nothing, so a client that keeps retrying too early is not
        pushed further back by its own retries.
        """
        if not 0 < cost <= self.burst:
            raise ValueError(f"cost must be in (0, {self.burst}], not {cost}")
        key = key[: self.KEY_LENGTH]
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        bucket.tokens = self._level(bucket, now)
        bucket.updated = max(bucket.updated, now)
        self._buckets[key] = bucket
        self._evict(now)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate

    def _evict(self, now: float) -> None:
        # Each key is evicted at most once per insertion, so this is amortised O(1).
        while len(self._buckets) > 1:
            oldest = next(iter(self._buckets.values()))
            full = self._level(oldest, now) >= self.burst
            if not full and len(self._buckets) <= self.max_keys:
                break
            self._buckets.popitem(last=False)
