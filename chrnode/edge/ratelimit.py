"""Token buckets for the device port: new connections per source IP, frames per device.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; each event takes one.
Buckets are lazily refilled from the clock on use, so an idle key costs nothing but its entry,
and ``KeyedBuckets.prune`` drops full buckets so the table does not grow with every address seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

__all__ = ["KeyedBuckets", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got rate={rate} burst={burst}")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> float:
        tokens = self._tokens
        if now > self._stamp:
            tokens = min(self._burst, tokens + (now - self._stamp) * self._rate)
            self._tokens = tokens
            self._stamp = now
        return tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are that many; False (and nothing taken) otherwise."""
        tokens = self._refill(now)
        if tokens >= cost:
            self._tokens = tokens - cost
            return True
        return False

    def spend(self, clock: Callable[[], float], cost: float = 1.0) -> bool:
        """``take`` at ``clock()``: the per-frame form the sessions and peer links call.

        It once read the clock only when the saved tokens ran out; the idle time before a burst
        was then credited at the end of it (capped once at ``burst`` instead of continuously),
        so a bucket full for two seconds let 2 x ``burst`` through at once (issue 10: a peer's
        flood of 1,000 requests got 450-630 served against a burst of 400)."""
        return self.take(clock(), cost)

    def wait_time(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (0 when they are now)."""
        tokens = self._refill(now)
        return 0.0 if tokens >= cost else (cost - tokens) / self._rate

    def full(self, now: float) -> bool:
        return self._refill(now) >= self._burst


class KeyedBuckets:
    """One TokenBucket per key (source IP, device), created on first use."""

    __slots__ = ("_buckets", "_burst", "_clock", "_rate")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[Hashable, TokenBucket] = {}

    def take(self, key: Hashable, cost: float = 1.0) -> bool:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, now)
        return bucket.take(now, cost)

    def bucket(self, key: Hashable) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, self._clock())
        return bucket

    def forget(self, key: Hashable) -> None:
        self._buckets.pop(key, None)

    def prune(self) -> int:
        """Drop buckets that are full again (their keys would start full anyway); how many went."""
        now = self._clock()
        full = [key for key, bucket in self._buckets.items() if bucket.full(now)]
        for key in full:
            del self._buckets[key]
        return len(full)

    def __len__(self) -> int:
        return len(self._buckets)
