"""Pure metrics aggregation (SPEC 12): counters, gauges, timer percentiles, batches between
actors, the minute rollup into node_stats."""

from __future__ import annotations

import json
import math
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chrnode.stats import (
    BANDWIDTH_IN,
    BANDWIDTH_OUT,
    CONNECTIONS,
    MIN_VALUE,
    RELATIVE_ACCURACY,
    LocalStats,
    Sketch,
    StatsAggregate,
    StatsBatch,
    metric_key,
)
from chrnode.storage import NodeStatsRow

durations = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
quantiles = st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0]) | st.floats(
    min_value=0.0, max_value=1.0
)


def reference(values: list[float], q: float) -> float:
    """Nearest-rank quantile on the sorted list."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def close_enough(estimate: float, true: float) -> bool:
    return abs(estimate - true) <= RELATIVE_ACCURACY * true * (1 + 1e-9) + MIN_VALUE


@given(values=st.lists(durations, min_size=1, max_size=300), q=quantiles)
def test_quantile_is_within_the_relative_accuracy_of_the_sorted_list(values: list[float], q: float) -> None:
    sketch = Sketch()
    for v in values:
        sketch.add(v)
    estimate = sketch.quantile(q)
    assert estimate is not None
    assert close_enough(estimate, reference(values, q)), (estimate, reference(values, q))
    assert min(values) <= estimate <= max(values)


@given(
    parts=st.lists(st.lists(durations, max_size=60), min_size=1, max_size=5),
    q=quantiles,
)
def test_merged_sketches_answer_like_one_sketch_of_everything(parts: list[list[float]], q: float) -> None:
    merged = Sketch()
    whole = Sketch()
    for part in parts:
        piece = Sketch()
        for v in part:
            piece.add(v)
            whole.add(v)
        merged.merge(pickle.loads(pickle.dumps(piece)))
    assert merged.buckets == whole.buckets and merged.count == whole.count
    everything = [v for part in parts for v in part]
    if everything:
        estimate = merged.quantile(q)
        assert estimate is not None and close_enough(estimate, reference(everything, q))
    else:
        assert merged.quantile(q) is None


def test_sketch_memory_is_bounded_by_the_value_range() -> None:
    sketch = Sketch()
    value = 1e-12
    while value < 1e15:
        sketch.add(value)
        value *= 1.001
    assert len(sketch.buckets) < 2600
    assert sketch.quantile(1.0) == sketch.high


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "1", True])
def test_sketch_refuses_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a finite number >= 0"):
        Sketch().add(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected a number from 0 to 1"):
        Sketch().quantile(1.5)


def test_summary_of_an_empty_and_a_full_timer() -> None:
    assert Sketch().summary() == {"count": 0, "sum": 0.0, "min": None, "max": None, "p50": None, "p90": None,
                                  "p99": None}  # fmt: skip
    sketch = Sketch()
    for ms in range(1, 101):
        sketch.add(ms / 1000)
    summary = sketch.summary()
    assert summary["count"] == 100 and summary["min"] == 0.001 and summary["max"] == 0.1
    assert summary["p50"] == pytest.approx(0.050, rel=RELATIVE_ACCURACY)
    assert summary["p99"] == pytest.approx(0.099, rel=RELATIVE_ACCURACY)


def test_metric_names_and_labels_are_checked() -> None:
    assert metric_key("rpc_requests", {"method": "x", "code": "ok"}) == (
        "rpc_requests",
        (("code", "ok"), ("method", "x")),
    )
    for name in ("", "9lives", "has space", "dash-ed"):
        with pytest.raises(ValueError, match="metric name"):
            metric_key(name)
    with pytest.raises(ValueError, match="label name '__reserved'"):
        metric_key("ok", {"__reserved": "x"})
    with pytest.raises(ValueError, match="label code has value 1; expected a str"):
        metric_key("ok", {"code": 1})  # type: ignore[dict-item]


def test_local_stats_accumulate_and_drain_resets() -> None:
    local = LocalStats("Edge")
    local.incr("frames")
    local.incr("frames", 2)
    local.incr("errors", labels={"category": "bad_frame"})
    local.set_gauge(CONNECTIONS, 3)
    local.set_gauge(CONNECTIONS, 5)
    local.record("latency", 0.002)
    with local.timer("latency"):
        pass
    batch = local.drain()
    assert batch.source == "Edge"
    assert batch.counters == {("frames", ()): 3, ("errors", (("category", "bad_frame"),)): 1}
    assert batch.gauges == {(CONNECTIONS, ()): 5}
    assert batch.timers[("latency", ())].count == 2
    assert local.drain().is_empty()
    with pytest.raises(ValueError, match="increment -1"):
        local.incr("frames", -1)
    with pytest.raises(ValueError, match="gauge g: value nan"):
        local.set_gauge("g", math.nan)
    with pytest.raises(ValueError, match="metric name 'bad name'"):
        local.incr("bad name")
    with pytest.raises(ValueError, match="stats source"):
        LocalStats("")


def test_timer_records_even_when_the_block_raises() -> None:
    local = LocalStats("A")
    with pytest.raises(RuntimeError), local.timer("work", {"kind": "x"}):
        raise RuntimeError("boom")
    assert local.drain().timers[("work", (("kind", "x"),))].count == 1


def test_aggregate_merges_batches_from_several_actors() -> None:
    agg = StatsAggregate(started_at=1_000.0)
    edge1, edge2 = LocalStats("Edge1"), LocalStats("Edge2")
    for local, conns in ((edge1, 3), (edge2, 4)):
        local.set_gauge(CONNECTIONS, conns)
        local.incr("frames", 10)
        local.record("latency", 0.01)
    agg.merge(pickle.loads(pickle.dumps(edge1.drain())))
    agg.merge(pickle.loads(pickle.dumps(edge2.drain())))
    assert agg.gauge(CONNECTIONS) == 7  # gauges of several actors add up
    assert agg.counter("frames") == 20
    timer = agg.timer("latency")
    assert timer is not None and timer.count == 2
    edge1.set_gauge(CONNECTIONS, 1)  # a later value replaces that actor's earlier one
    agg.merge(edge1.drain())
    assert agg.gauge(CONNECTIONS) == 5
    agg.forget("Edge2")
    assert agg.gauge(CONNECTIONS) == 1
    assert agg.gauge("never_set") is None and agg.counter("never_counted") == 0


def test_counters_stay_monotonic_across_an_actor_restart() -> None:
    agg = StatsAggregate(started_at=0.0)
    first = LocalStats("Edge")
    first.incr("frames", 5)
    agg.merge(first.drain())
    restarted = LocalStats("Edge")  # a new process starts counting from zero: it sends deltas
    restarted.incr("frames", 2)
    agg.merge(restarted.drain())
    assert agg.counter("frames") == 7


def test_snapshot_is_json_ready() -> None:
    agg = StatsAggregate(started_at=100.0)
    local = LocalStats("Rpc")
    local.incr("rpc_requests", labels={"method": "chr_node_info"})
    local.set_gauge("chain_head", 42)
    local.record("rpc_latency_seconds", 0.003)
    agg.merge(local.drain())
    snap = agg.snapshot(now=160.0)
    assert json.loads(json.dumps(snap)) == snap
    assert snap["uptime_seconds"] == 60.0
    assert snap["counters"] == [{"name": "rpc_requests", "labels": {"method": "chr_node_info"}, "value": 1}]
    assert snap["gauges"] == [{"name": "chain_head", "labels": {}, "value": 42}]
    [timer] = snap["timers"]  # type: ignore[misc]
    assert timer["name"] == "rpc_latency_seconds" and timer["count"] == 1
    assert timer["p50"] == pytest.approx(0.003, rel=RELATIVE_ACCURACY)
    assert "uptime_seconds" not in agg.snapshot()


def test_minute_rollup_gives_deltas_connections_and_uptime() -> None:
    agg = StatsAggregate(started_at=1_000.0)
    for port, n in (("41046", 100), ("41047", 50)):
        batch = StatsBatch("Edge" + port)
        batch.counters[(BANDWIDTH_IN, (("port", port),))] = n
        batch.counters[(BANDWIDTH_OUT, (("port", port),))] = 2 * n
        batch.gauges[(CONNECTIONS, (("port", port),))] = n // 10
        agg.merge(batch)
    assert agg.minute_rollup(1_060.0) == NodeStatsRow(1_060, 15, 150, 300, 60)
    local = LocalStats("Edge41046")
    local.incr(BANDWIDTH_IN, 7, {"port": "41046"})
    agg.merge(local.drain())
    assert agg.minute_rollup(1_120.5) == NodeStatsRow(1_120, 15, 7, 0, 120)
    # Two rollups in the same second must not produce the same primary key.
    assert agg.minute_rollup(1_120.9).timestamp == 1_121
    assert agg.minute_rollup(1_180.0) == NodeStatsRow(1_180, 15, 0, 0, 180)
