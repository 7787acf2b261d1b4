"""How late the network loop runs its callbacks (issue 10): a cheap sampler for operators.

Every byte stream of the node is served by the one loop of the network process
(chrnode.net.server), so anything that blocks it (a signature check, a SQLite write, msgpack of a
big payload, a TLS handshake) delays every device and every peer link at once. The sampler
schedules a timer every ``interval`` seconds and records how late it fired: the time the loop
spent in other callbacks past the timer's due time. That is the delay any ready callback saw.

    lag = LoopLagSampler(loop)            # started by NetworkServer.start()
    lag.start()
    lag.status()   # {"p50_ms", "p99_ms", "max_ms", "samples", "window_s", "interval_ms", ...}

The rules are pure (:class:`LagWindow`: samples in, figures out; no clock of its own), tested
with generated inputs; :class:`LoopLagSampler` is the thin adapter on the loop. The window keeps
the samples of the last ``window_s`` seconds (the "last minute" of ``network_stats``) for p50 /
p99 / max, and a cumulative histogram of every sample since start for Prometheus (/metrics
``chr_network_loop_lag_seconds``).

epoll's timeout has a resolution of 1 ms (asyncio rounds it up), so an idle loop shows lags of
up to about 1 ms; a timer may also fire a little early (asyncio's clock resolution), which counts
as 0.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["BUCKETS", "LagSummary", "LagWindow", "LoopLagSampler"]

# Upper bounds (seconds) of the cumulative histogram; +Inf is implied. 5 ms is the target (SPEC 13
# style benchmark bench/bench_loop_lag.py), 100 ms degrades the performance health layer.
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DEFAULT_INTERVAL = 0.05  # 20 timers a second: about 0.1 ms of loop time per second
DEFAULT_WINDOW = 60.0


@dataclass(frozen=True)
class LagSummary:
    """Figures over the samples of a window (seconds); zeros when there are none."""

    samples: int
    p50: float
    p99: float
    max: float


def quantile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of an ascending list (0 for an empty one): p99 of 100
    samples is the 99th, so one stall in a hundred ticks shows."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class LagWindow:
    """Lag samples of the last ``window_s`` seconds, and a histogram of all of them (pure)."""

    def __init__(self, window_s: float = DEFAULT_WINDOW, buckets: tuple[float, ...] = BUCKETS) -> None:
        if window_s <= 0:
            raise ValueError(f"the window must be positive, got {window_s}")
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"histogram buckets must ascend and be distinct, got {buckets}")
        self.window_s = window_s
        self.buckets = buckets
        self._recent: collections.deque[tuple[float, float]] = collections.deque()  # (at, lag)
        self.bucket_counts = [0] * (len(buckets) + 1)  # per bucket, not cumulative; last is +Inf
        self.count = 0
        self.total = 0.0

    def add(self, at: float, lag: float) -> None:
        """A timer due earlier ran at ``at`` (the loop's clock), ``lag`` seconds late."""
        lag = max(0.0, lag)  # early by the clock's resolution counts as on time
        self._recent.append((at, lag))
        self.bucket_counts[bisect.bisect_left(self.buckets, lag)] += 1
        self.count += 1
        self.total += lag
        self._expire(at)

    def _expire(self, now: float) -> None:
        recent, horizon = self._recent, now - self.window_s
        while recent and recent[0][0] < horizon:
            recent.popleft()

    def summary(self, now: float, since: float | None = None) -> LagSummary:
        """p50, p99 and max of the samples of the window ending at ``now`` (only those taken at or
        after ``since``, if given: a benchmark's phase)."""
        self._expire(now)
        start = now - self.window_s if since is None else max(since, now - self.window_s)
        lags = sorted(lag for at, lag in self._recent if at >= start)
        if not lags:
            return LagSummary(0, 0.0, 0.0, 0.0)
        return LagSummary(len(lags), quantile(lags, 0.5), quantile(lags, 0.99), lags[-1])

    def histogram(self) -> list[tuple[float, int]]:
        """Cumulative (upper bound, count) pairs, the last bound +Inf, as Prometheus has them."""
        out, running = [], 0
        for bound, n in zip((*self.buckets, math.inf), self.bucket_counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class LoopLagSampler:
    """Measures the lag of ``loop`` with a timer every ``interval`` seconds (loop thread only)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float = DEFAULT_INTERVAL,
        window_s: float = DEFAULT_WINDOW,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"the sampling interval must be positive, got {interval}")
        self.loop = loop
        self.interval = interval
        self.window = LagWindow(window_s)
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        if self._handle is None:
            self._due = self.loop.time() + self.interval
            self._handle = self.loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = self.loop.time()
        self.window.add(now, now - self._due)
        # From now, not from the due time: after a long stall the next sample is one interval
        # on, rather than a burst of catch-up ticks that would all report the same stall.
        self._due = now + self.interval
        self._handle = self.loop.call_at(self._due, self._tick)

    def summary(self, since: float | None = None) -> LagSummary:
        return self.window.summary(self.loop.time(), since)

    def status(self) -> dict[str, Any]:
        """For the snapshot (``network_stats`` "loop_lag", /metrics, the performance layer)."""
        s = self.summary()
        window = self.window
        return {
            "p50_ms": round(s.p50 * 1000, 3),
            "p99_ms": round(s.p99 * 1000, 3),
            "max_ms": round(s.max * 1000, 3),
            "samples": s.samples,
            "window_s": window.window_s,
            "interval_ms": self.interval * 1000,
            "count": window.count,
            "sum_s": round(window.total, 6),
            "buckets": [[bound if bound != math.inf else "+Inf", n] for bound, n in window.histogram()],
        }
