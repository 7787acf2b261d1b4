"""Pure metrics aggregation (SPEC 12, seed: Stats).

Each actor keeps a `LocalStats`, counts into it on its hot paths without any message, and now
and then sends `drain()` (a picklable `StatsBatch` of deltas) to the Stats actor, whose
`StatsAggregate` merges the batches. Counters travel as deltas, so totals stay monotonic when an
actor restarts; gauges travel as last values per source and a gauge several actors set is the sum
of theirs (connections over several edge actors add up); timers travel as mergeable sketches.

Timer percentiles come from log-spaced buckets (the DDSketch idea): a value v falls in bucket
ceil(log_gamma(v)), every estimate is within RELATIVE_ACCURACY of the value at that rank, memory
is bounded by the value range (a few thousand buckets at most), and two sketches merge exactly by
adding bucket counts, which a reservoir cannot do.

Names follow Prometheus' rules so the /metrics renderer never has to mangle them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from chrnode.storage.rows import NodeStatsRow

LabelKey = tuple[tuple[str, str], ...]
MetricKey = tuple[str, LabelKey]

RELATIVE_ACCURACY = 0.01
MIN_VALUE = 1e-9
"""Values below this count as zero (a nanosecond)."""
MAX_VALUE = 1e12
"""Values above this are clamped: it bounds the number of buckets."""
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)

# Metric names the minute rollup reads (seed: node_stats).
CONNECTIONS = "connections"
BANDWIDTH_IN = "bandwidth_in_bytes"
BANDWIDTH_OUT = "bandwidth_out_bytes"

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def metric_key(name: str, labels: Mapping[str, str] | None = None) -> MetricKey:
    """The key of a metric: its name and its sorted labels; ValueError on a name Prometheus refuses."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"metric name {name!r}: expected letters, digits, '_' or ':', not starting with a digit"
        )
    if not labels:
        return (name, ())
    for label, value in labels.items():
        if not isinstance(label, str) or not _LABEL.match(label) or label.startswith("__"):
            raise ValueError(
                f"metric {name}: label name {label!r} is invalid; expected [a-zA-Z_][a-zA-Z0-9_]*"
            )
        if not isinstance(value, str):
            raise ValueError(f"metric {name}: label {label} has value {value!r}; expected a str")
    return (name, tuple(sorted(labels.items())))


@dataclass
class Sketch:
    """Counts of non-negative values in log-spaced buckets; quantiles within RELATIVE_ACCURACY."""

    buckets: dict[int, int] = field(default_factory=dict)
    zeros: int = 0
    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, value: float) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not value >= 0
            or value == math.inf
        ):
            raise ValueError(f"timer value {value!r}: expected a finite number >= 0")
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        if value < MIN_VALUE:
            self.zeros += 1
            return
        index = math.ceil(math.log(min(value, MAX_VALUE)) / _LOG_GAMMA)
        self.buckets[index] = self.buckets.get(index, 0) + 1

    def merge(self, other: Sketch) -> None:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.zeros += other.zeros
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def quantile(self, q: float) -> float | None:
        """The value at nearest rank ceil(q * count) of the sorted values, estimated; None when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q!r}: expected a number from 0 to 1")
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        if rank == 1:
            return self.low  # the extremes are known exactly
        if rank >= self.count:
            return self.high
        seen = self.zeros
        if rank <= seen:
            return max(0.0, self.low)
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                estimate = 2.0 * _GAMMA**index / (_GAMMA + 1.0)
                # The true value lies in [low, high]: clamping can only bring the estimate closer.
                return min(max(estimate, self.low), self.high)
        return self.high  # unreachable while counts agree; the largest value is the safe answer

    def summary(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "sum": self.total,
            "min": self.low if self.count else None,
            "max": self.high if self.count else None,
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
        }


@dataclass
class StatsBatch:
    """What one actor sends the Stats actor: counter deltas, last gauge values and timer sketches."""

    source: str
    counters: dict[MetricKey, float] = field(default_factory=dict)
    gauges: dict[MetricKey, float] = field(default_factory=dict)
    timers: dict[MetricKey, Sketch] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.counters or self.gauges or self.timers)


class LocalStats:
    """An actor's own metrics between two drains. Cheap enough for per-frame counting."""

    def __init__(self, source: str) -> None:
        if not isinstance(source, str) or not source:
            raise ValueError(f"stats source {source!r}: expected a non-empty str (the actor's name)")
        self.source = source
        self._batch = StatsBatch(source)
        self._known: set[MetricKey] = set()

    def _key(self, name: str, labels: Mapping[str, str] | None) -> MetricKey:
        key: MetricKey = (name, tuple(sorted(labels.items())) if labels else ())
        if key not in self._known:  # validate each distinct key once, not on every call
            key = metric_key(name, labels)
            self._known.add(key)
        return key

    def incr(self, name: str, value: float = 1, labels: Mapping[str, str] | None = None) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not value >= 0
            or value == math.inf
        ):
            raise ValueError(f"counter {name}: increment {value!r}; expected a finite number >= 0")
        key = self._key(name, labels)
        counters = self._batch.counters
        counters[key] = counters.get(key, 0) + value

    def set_gauge(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"gauge {name}: value {value!r}; expected a finite number")
        self._batch.gauges[self._key(name, labels)] = value

    def record(self, name: str, seconds: float, labels: Mapping[str, str] | None = None) -> None:
        key = self._key(name, labels)
        sketch = self._batch.timers.get(key)
        if sketch is None:
            sketch = self._batch.timers[key] = Sketch()
        sketch.add(seconds)

    @contextmanager
    def timer(self, name: str, labels: Mapping[str, str] | None = None) -> Iterator[None]:
        """Record how long the block took (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record(name, time.perf_counter() - start, labels)

    def drain(self) -> StatsBatch:
        """Everything since the last drain; the local state starts afresh."""
        batch, self._batch = self._batch, StatsBatch(self.source)
        return batch


def _labelled(key: MetricKey, **values: object) -> dict[str, object]:
    return {"name": key[0], "labels": dict(key[1]), **values}


class StatsAggregate:
    """The Stats actor's view of the whole node. Times are wall-clock seconds (time.time())."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self._counters: dict[MetricKey, float] = {}
        self._gauges: dict[str, dict[MetricKey, float]] = {}
        self._timers: dict[MetricKey, Sketch] = {}
        self._rolled_in = 0.0
        self._rolled_out = 0.0
        self._last_rollup: int | None = None

    def merge(self, batch: StatsBatch) -> None:
        for key, delta in batch.counters.items():
            self._counters[key] = self._counters.get(key, 0) + delta
        if batch.gauges:
            self._gauges.setdefault(batch.source, {}).update(batch.gauges)
        for key, sketch in batch.timers.items():
            mine = self._timers.get(key)
            if mine is None:
                mine = self._timers[key] = Sketch()
            mine.merge(sketch)

    def forget(self, source: str) -> None:
        """Drop the gauges of an actor that stopped (a restarted one sends fresh values)."""
        self._gauges.pop(source, None)

    def counter(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        return self._counters.get(metric_key(name, labels), 0)

    def counter_total(self, name: str) -> float:
        """The counter summed over all its label sets."""
        return sum(value for (n, _), value in self._counters.items() if n == name)

    def _gauge_sums(self) -> dict[MetricKey, float]:
        sums: dict[MetricKey, float] = {}
        for gauges in self._gauges.values():
            for key, value in gauges.items():
                sums[key] = sums.get(key, 0) + value
        return sums

    def gauge(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        return self._gauge_sums().get(metric_key(name, labels))

    def gauge_total(self, name: str) -> float:
        """The gauge summed over sources and label sets (0 when nobody set it)."""
        return sum(value for (n, _), value in self._gauge_sums().items() if n == name)

    def timer(self, name: str, labels: Mapping[str, str] | None = None) -> Sketch | None:
        return self._timers.get(metric_key(name, labels))

    def snapshot(self, now: float | None = None) -> dict[str, object]:
        """JSON-ready: `counters`, `gauges` and `timers` as lists of {name, labels, ...} sorted by
        name and labels; with `now`, also `uptime_seconds`."""
        out: dict[str, object] = {
            "counters": [_labelled(key, value=value) for key, value in sorted(self._counters.items())],
            "gauges": [_labelled(key, value=value) for key, value in sorted(self._gauge_sums().items())],
            "timers": [_labelled(key, **sketch.summary()) for key, sketch in sorted(self._timers.items())],
        }
        if now is not None:
            out["uptime_seconds"] = max(0.0, now - self.started_at)
        return out

    def minute_rollup(self, now: float) -> NodeStatsRow:
        """The node_stats row for the time since the previous rollup (the Stats actor calls this
        every minute): connections now, bytes in/out since then, uptime."""
        total_in = self.counter_total(BANDWIDTH_IN)
        total_out = self.counter_total(BANDWIDTH_OUT)
        timestamp = int(now)
        if self._last_rollup is not None and timestamp <= self._last_rollup:
            timestamp = self._last_rollup + 1  # the row's key must not overwrite the previous row
        row = NodeStatsRow(
            timestamp=timestamp,
            connections=max(0, int(self.gauge_total(CONNECTIONS))),
            bandwidth_in=int(total_in - self._rolled_in),
            bandwidth_out=int(total_out - self._rolled_out),
            uptime_seconds=max(0, int(now - self.started_at)),
        )
        self._rolled_in, self._rolled_out, self._last_rollup = total_in, total_out, timestamp
        return row
