"""The network loop's lag sampler (chrnode.net.looplag): the window's rules with generated inputs,
the sampler on a real loop that is really blocked, the health layer and /metrics from its report,
and a real daemon reporting it over JSON-RPC and /metrics."""

from __future__ import annotations

import asyncio
import math
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from chrnode.health import HealthLimits, compute_health
from chrnode.metrics_prometheus import MetricsExporter
from chrnode.net.looplag import BUCKETS, LagWindow, LoopLagSampler, quantile
from chrnode.net.server import NetworkServer
from chrnode.testing.edge import async_test, wait_for
from chrnode.testing.node import NodeProcess

samples = st.lists(
    st.tuples(st.floats(0, 1000, allow_nan=False), st.floats(-0.01, 3.0, allow_nan=False)), max_size=300
)


def _timeline(raw: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Samples in time order, as a loop's clock gives them."""
    return sorted(raw, key=lambda s: s[0])


@given(samples, st.floats(0.5, 120))
def test_the_window_holds_exactly_the_recent_samples(raw: list[tuple[float, float]], window: float) -> None:
    lag = LagWindow(window)
    timeline = _timeline(raw)
    for at, value in timeline:
        lag.add(at, value)
    now = timeline[-1][0] if timeline else 0.0
    recent = sorted(max(0.0, v) for at, v in timeline if at >= now - window)
    s = lag.summary(now)
    assert s.samples == len(recent)
    if recent:
        assert s.max == recent[-1]
        assert s.p50 == quantile(recent, 0.5)
        assert s.p50 <= s.p99 <= s.max
        # nearest rank: at least 99% of the samples are at or under p99
        assert sum(1 for v in recent if v <= s.p99) >= 0.99 * len(recent)
    else:
        assert (s.p50, s.p99, s.max) == (0.0, 0.0, 0.0)


@given(samples)
def test_the_histogram_counts_every_sample_in_its_bucket(raw: list[tuple[float, float]]) -> None:
    lag = LagWindow(1.0)
    for at, value in _timeline(raw):
        lag.add(at, value)
    hist = lag.histogram()
    assert [bound for bound, _ in hist] == [*BUCKETS, math.inf]
    assert hist[-1][1] == lag.count == len(raw)
    for bound, n in hist:
        assert n == sum(1 for _, v in raw if max(0.0, v) <= bound)
    assert lag.total == pytest.approx(sum(max(0.0, v) for _, v in raw))


def test_since_limits_the_summary_to_a_phase() -> None:
    lag = LagWindow(60)
    for i in range(10):
        lag.add(float(i), 0.001)
    lag.add(10.0, 0.2)
    assert lag.summary(10.0).max == 0.2
    assert lag.summary(10.0, since=10.0).samples == 1


def test_bad_parameters_are_refused_with_their_value() -> None:
    with pytest.raises(ValueError, match="window must be positive, got 0"):
        LagWindow(0)
    with pytest.raises(ValueError, match="ascend"):
        LagWindow(1, (0.1, 0.01))
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="interval must be positive"):
            LoopLagSampler(loop, interval=0)
    finally:
        loop.close()


@async_test()
async def test_the_sampler_sees_a_blocked_loop() -> None:
    sampler = LoopLagSampler(asyncio.get_running_loop(), interval=0.005)
    sampler.start()
    await wait_for(lambda: sampler.window.count >= 10, what="ten idle samples")
    idle = sampler.summary()
    assert idle.samples >= 10 and idle.max < 0.05  # no stall was made
    mark = asyncio.get_running_loop().time()
    time.sleep(0.08)  # work that blocks the loop, as a synchronous SQLite write would
    await wait_for(lambda: sampler.summary(since=mark).samples >= 2, what="samples after the stall")
    stalled = sampler.summary(since=mark)
    assert stalled.max >= 0.07
    status = sampler.status()
    assert status["max_ms"] >= 70 and status["samples"] == sampler.summary().samples
    assert status["buckets"][-1] == ["+Inf", sampler.window.count]
    sampler.stop()
    count = sampler.window.count
    await asyncio.sleep(0.03)
    assert not sampler.running and sampler.window.count == count


@async_test()
async def test_the_network_server_samples_its_loop_until_stopped() -> None:
    network = NetworkServer()
    await network.start()
    assert network.lag is not None and network.lag.running
    await wait_for(lambda: network.lag is not None and network.lag.window.count > 0, what="a sample")
    await network.stop()
    assert not network.lag.running


def _lag_report(p99_ms: float, samples: int = 1200) -> dict[str, object]:
    return {
        "p50_ms": 0.4,
        "p99_ms": p99_ms,
        "max_ms": p99_ms * 2,
        "samples": samples,
        "window_s": 60.0,
        "count": samples,
        "sum_s": 1.5,
        "buckets": [[b, samples // 2] for b in BUCKETS] + [["+Inf", samples]],
    }


def test_health_degrades_when_the_loop_lags() -> None:
    limits = HealthLimits(loop_lag_p99_s=0.1)
    calm = compute_health({"loop_lag": _lag_report(3.0)}, limits=limits)["layers"]["performance"]
    assert calm["status"] == "ok"
    lagging = compute_health({"loop_lag": _lag_report(250.0)}, limits=limits)["layers"]["performance"]
    assert lagging == {
        "status": "degraded",
        "reason": "network loop lag p99 250 ms over the last minute (limit 100 ms)",
    }
    few = compute_health({"loop_lag": _lag_report(250.0, samples=10)}, limits=limits)
    assert few["layers"]["performance"]["status"] == "ok"  # ten samples say nothing yet
    odd = compute_health({"loop_lag": {"p99_ms": "slow", "samples": "many"}}, limits=limits)
    assert odd["layers"]["performance"]["status"] == "ok"


def test_metrics_show_the_histogram_and_the_recent_quantiles() -> None:
    text = MetricsExporter(lambda: {"loop_lag": _lag_report(7.0)}).render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    hist = families["chr_network_loop_lag_seconds"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets["+Inf"] == 1200 and buckets["0.005"] == 600
    recent = {s.labels["quantile"]: s.value for s in families["chr_network_loop_lag_recent_seconds"].samples}
    assert recent == {"0.5": pytest.approx(0.0004), "0.99": pytest.approx(0.007), "1": pytest.approx(0.014)}
    broken = MetricsExporter(lambda: {"loop_lag": {"buckets": [["x", 1]]}}).render().decode()
    assert "chr_network_loop_lag_seconds" not in broken


@pytest.mark.slow
def test_a_node_reports_its_loop_lag_over_rpc_and_metrics(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data").start()
    try:
        deadline = time.monotonic() + 30
        lag: dict[str, object] = {}
        while time.monotonic() < deadline:
            lag = node.rpc("network_stats").get("loop_lag") or {}
            if isinstance(lag.get("samples"), int) and lag["samples"] >= 20:  # type: ignore[operator]
                break
            time.sleep(0.2)
        assert isinstance(lag.get("samples"), int) and lag["samples"] >= 20, lag  # type: ignore[operator]
        assert 0 <= lag["p50_ms"] <= lag["p99_ms"] <= lag["max_ms"]  # type: ignore[operator]
        assert lag["window_s"] == 60.0
        url = f"http://127.0.0.1:{node.rpc_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        count = [s for s in families["chr_network_loop_lag_seconds"].samples if s.name.endswith("_count")]
        assert count and count[0].value >= 20
    finally:
        assert node.stop() == 0
