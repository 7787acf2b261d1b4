"""Health layers and metrics from snapshots (pure; the HTTP side is in test_rpc_server.py)."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from chrnode.health import LAYERS, HealthLimits, compute_health
from chrnode.metrics import summarize
from chrnode.metrics_prometheus import MetricsExporter
from chrnode.testing.rpc import sample_snapshot

NOW = 1_800_000_000.0


def health(snapshot: dict[str, Any], **limits: Any) -> dict[str, Any]:
    return compute_health(snapshot, now=NOW, limits=HealthLimits(**limits))


def layer(snapshot: dict[str, Any], name: str) -> tuple[str, str]:
    row = health(snapshot)["layers"][name]
    return row["status"], row["reason"]


def test_healthy_node() -> None:
    report = health(sample_snapshot(NOW))
    assert report["status"] == "ok"
    assert list(report["layers"]) == list(LAYERS)
    assert all(row["status"] == "ok" for row in report["layers"].values())


def test_process_layer() -> None:
    snap = sample_snapshot(NOW)
    snap["tree"][3]["state"] = "restarting"
    assert layer(snap, "process") == ("degraded", "restarting: Network.Stats")
    snap["tree"][4]["state"] = "failed"
    assert layer(snap, "process") == ("down", "failed: Model.Sql")
    snap = sample_snapshot(NOW)
    snap["tree"][-1]["state"] = "stopped"  # transient: a normal exit is not a fault
    assert layer(snap, "process")[0] == "ok"
    snap["tree"][1]["state"] = "stopped"  # permanent
    assert layer(snap, "process") == ("down", "permanent actor stopped: Globals")
    assert layer({}, "process") == ("degraded", "actor tree not reported yet")
    snap = sample_snapshot(NOW)
    snap["tree"][3]["state"] = "hung"  # missed its heartbeat: down until its replacement runs
    assert layer(snap, "process") == ("down", "failed: Network.Stats (hung)")


def test_network_layer() -> None:
    snap = sample_snapshot(NOW)
    snap["connectivity"]["listeners"]["edge2"] = False
    assert layer(snap, "network") == ("down", "listener(s) not up: edge2")
    snap = sample_snapshot(NOW)
    snap["connectivity"]["peers_connected"] = 0
    status, reason = layer(snap, "network")
    assert status == "degraded" and "no peer connected of 20 known" in reason
    snap["connectivity"]["peers_known"] = 0  # a lone node with no fleet configured is fine
    assert layer(snap, "network")[0] == "ok"
    # What the Connectivity actor publishes before the DHT runs: seed reachability.
    seeds = {"listeners": {"rpc:8545": True}, "seeds": 2, "seeds_reachable": 0}
    assert layer({"connectivity": seeds}, "network")[0] == "degraded"
    seeds["seeds_reachable"] = 1
    assert layer({"connectivity": seeds}, "network") == ("ok", "listeners up (rpc:8545); 1 peer(s) connected")


def test_storage_layer() -> None:
    snap = sample_snapshot(NOW)
    snap["storage"] = {"writable": False, "error": "disk I/O error", "checked_at": NOW}
    assert layer(snap, "storage") == ("down", "database not writable: disk I/O error")
    snap["storage"] = {"writable": True, "checked_at": NOW - 1000}
    status, reason = layer(snap, "storage")
    assert status == "degraded" and "1000 s old" in reason
    assert layer({}, "storage") == ("degraded", "no storage report yet")


def test_performance_layer() -> None:
    snap = sample_snapshot(NOW)
    timers = {t["name"]: t for t in snap["stats"]["timers"]}
    assert layer(snap, "performance") == ("ok", "request latency p90 under 500 ms (2 timers)")
    timers["rpc_request_seconds"]["p90"] = 0.9
    status, reason = layer(snap, "performance")
    assert status == "degraded" and "rpc_request_seconds p90 900 ms" in reason
    timers["rpc_request_seconds"]["p90"] = 0.001
    # Internal work such as SQLite writes is not request latency.
    snap["stats"]["timers"].append({"name": "sql_write_seconds", "labels": {}, "p90": 5.0})
    assert layer(snap, "performance")[0] == "ok"
    assert health(snap, latency_p90_s=0.0001)["layers"]["performance"]["status"] == "degraded"
    # The plain {name: {p90, ...}} shape counts too.
    plain = {"stats": {"timers": {"rpc.request": {"p90": 2.0}, "sql.write": {"p90": 9.0}}}}
    assert layer(plain, "performance") == ("degraded", "latency over 500 ms: rpc.request p90 2000 ms")


def test_integration_layer() -> None:
    snap = sample_snapshot(NOW)
    snap["chain"]["reachable"] = False
    snap["chain"]["error"] = "all 2 endpoints timed out"
    status, reason = layer(snap, "integration")
    assert status == "degraded" and "chain: all 2 endpoints timed out" in reason
    snap["fleet"]["connected"] = False
    assert layer(snap, "integration")[0] == "down"
    assert layer({}, "integration") == ("ok", "not configured")


def test_overrides_win_and_bad_ones_are_ignored() -> None:
    snap = sample_snapshot(NOW)
    snap["health"] = {
        "storage": {"status": "down", "reason": "WAL checkpoint failed"},
        "network": {"status": "bogus"},
        "process": "x",
    }
    report = health(snap)
    assert report["layers"]["storage"] == {"status": "down", "reason": "WAL checkpoint failed"}
    assert report["layers"]["network"]["status"] == "ok"
    assert report["status"] == "down"


def test_summarize_reads_the_stats_actor_shape() -> None:
    s = summarize(sample_snapshot(NOW))
    assert s["connections"] == {"edge": 42}
    assert s["bandwidth"] == {"in": 123456789, "out": 98765432}
    assert s["errors"] == {"rpc": 1, "tickets": 3}
    assert s["cache"] == {"chain_l1": {"hits": 900, "misses": 100, "hit_ratio": pytest.approx(0.9)}}
    assert s["latency"]["rpc_request_seconds"]["count"] == 1000
    assert s["counters"]["rpc_requests_total{status=2xx}"] == 5000


def test_summarize_reads_plain_dotted_names() -> None:
    counters = {"bytes.in": 5, "bytes.out": 6, "errors.protocol": 2, "cache.l1.hits": 3, "cache.l1.misses": 1}
    stats = {
        "counters": counters,
        "gauges": {"connections.device": 4, "connections.peer": 2},
        "timers": {"rpc.request": {"count": 2, "p90": 0.01}},
    }
    s = summarize({"stats": stats})
    assert s["bandwidth"] == {"in": 5, "out": 6} and s["errors"] == {"protocol": 2}
    assert s["connections"] == {"device": 4, "peer": 2}
    assert s["cache"]["l1"]["hit_ratio"] == pytest.approx(0.75)
    assert s["latency"] == {"rpc.request": {"count": 2, "p90": 0.01}}


def test_summarize_missing_data_is_zero() -> None:
    s = summarize({})
    assert s["bandwidth"] == {"in": 0, "out": 0}
    assert s["connections"] == {} and s["latency"] == {} and s["cache"] == {}
    assert s["p2p"] == {"connected": 0, "known": 0, "health": 0.0}


def exporter(snapshot: dict[str, Any]) -> MetricsExporter:
    return MetricsExporter(lambda: snapshot, health=lambda snap: compute_health(snap, now=NOW))


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exporter_output_parses_and_has_the_seed_metrics() -> None:
    fams = _families(exporter(sample_snapshot(NOW)).render().decode())
    for name in (
        "chr_connections",
        "chr_bandwidth_bytes",
        "chr_latency_seconds",
        "chr_errors",
        "chr_process_resident_memory_bytes",
        "chr_process_cpu_seconds",
        "chr_cache_hit_ratio",
        "chr_p2p_peers",
        "chr_p2p_health",
        "chr_chain_synced",
        "chr_reward_rate_per_hour",
        "chr_health_status",
        "chr_actor_up",
        "chr_actor_restarts",
    ):
        assert name in fams, name
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for s in fams["chr_bandwidth_bytes"].samples
    }
    assert samples[("chr_bandwidth_bytes_total", (("direction", "in"),))] == 123456789
    q = {
        s.labels.get("quantile"): s.value
        for s in fams["chr_latency_seconds"].samples
        if s.labels.get("op") == "rpc_request_seconds"
    }
    assert q["0.9"] == pytest.approx(0.0013, rel=0.05)
    assert fams["chr_process_resident_memory_bytes"].samples[0].value > 0
    # Every stat also under its own name and labels.
    errors = {s.labels["category"]: s.value for s in fams["chr_stat_errors"].samples}
    assert errors == {"rpc": 1, "tickets": 3}
    assert fams["chr_stat_connections"].samples[0].value == 42
    health_samples = {s.labels["layer"]: s.value for s in fams["chr_health_status"].samples}
    assert health_samples == dict.fromkeys(LAYERS, 0.0)


def test_two_exporters_do_not_share_a_registry() -> None:
    a = exporter({})
    b = exporter(sample_snapshot(NOW))
    assert "chr_stat_connections" not in a.render().decode()
    assert "chr_stat_connections 42" in b.render().decode()


_REAL = sample_snapshot(NOW)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.binary(max_size=4),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "node",
        "tree",
        "stats",
        "cron",
        "connectivity",
        "peers",
        "fleet",
        "chain",
        "reward",
        "storage",
        "health",
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=8), st.data())
def test_garbage_snapshots_never_raise(snapshot: dict[str, Any], data: st.DataObject) -> None:
    # Also garbage inside well-shaped sections: replace one leaf of a real snapshot.
    real = copy.deepcopy(_REAL)
    key = data.draw(_keys)
    if isinstance(real.get(key), dict) and real[key]:
        inner = data.draw(st.sampled_from(sorted(real[key])))
        real[key][inner] = data.draw(_json)
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    logger = logging.getLogger("chrnode.rpc")
    logger.addHandler(handler)
    try:
        for snap in (snapshot, real):
            report = health(snap)
            assert report["status"] in ("ok", "degraded", "down")
            summarize(snap)
            text = exporter(snap).render().decode()
            assert "chr_health_status" in text
            list(text_string_to_metric_families(text))
    finally:
        logger.removeHandler(handler)
    # The collectors and layers catch what they do not expect and log it: nothing may get there.
    assert not errors, [r.getMessage() for r in errors]
