"""The seed's metrics (SPEC 12) in the Prometheus text format, for ``GET /metrics``.

``MetricsExporter`` renders them through prometheus_client with a registry of its own (never the
global default one, so several nodes can live in one test process). Its collector builds every
family from the snapshot at scrape time: the seed's list (chrnode.metrics.summarize), every
counter and gauge of the Stats actor (as ``chr_stat_*``), memory and CPU of the actor processes
(chrnode.metrics.ProcessSampler), the actor tree, the health layers and the network loop's lag.

Which stats names feed which metric is written in docs/rpc.md ("Snapshot contract"). Missing or
malformed data gives an absent metric or 0, never an exception: a builder that fails on a report
loses its families, not the whole scrape.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from chrnode.metrics import STATUSES, ProcessSampler, _num, _section, stat_entries, summarize

log = logging.getLogger("chrnode.rpc")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HealthFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
QUANTILES = (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99"))


_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/\-{}=,]")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_:]")


def _label(value: str) -> str:
    return _LABEL_UNSAFE.sub("_", value)[:120]


def _label_name(name: str) -> str:
    # Prometheus label names: [a-zA-Z_][a-zA-Z0-9_]*, and "__" is reserved.
    safe = _NAME_UNSAFE.sub("_", name).replace(":", "_")
    return safe if safe and not safe[0].isdigit() and not safe.startswith("__") else "l_" + safe


class _SnapshotCollector(Collector):
    """A prometheus_client collector that builds every family from the snapshot at scrape time."""

    def __init__(
        self,
        get_snapshot: Callable[[], Mapping[str, Any]],
        sampler: ProcessSampler,
        health: HealthFn | None,
    ) -> None:
        self._get_snapshot = get_snapshot
        self._sampler = sampler
        self._health = health

    def collect(self) -> Iterator[Metric]:
        snapshot = self._get_snapshot()
        builders = (
            self._seed_metrics,
            self._stat_metrics,
            self._process_metrics,
            self._tree_metrics,
            self._health_metrics,
            _loop_lag_metrics,
        )
        for build in builders:
            try:
                yield from build(snapshot)
            except Exception:  # a malformed report loses its metrics, not the whole scrape
                log.exception("metrics: %s failed on the snapshot", build.__name__)

    def _seed_metrics(self, snapshot: Mapping[str, Any]) -> Iterator[Metric]:
        s = summarize(snapshot)
        g = GaugeMetricFamily("chr_connections", "Open connections by kind", labels=["kind"])
        for kind, n in sorted(s["connections"].items()):
            g.add_metric([_label(kind)], n)
        yield g
        c = CounterMetricFamily("chr_bandwidth_bytes", "Bytes relayed, by direction", labels=["direction"])
        c.add_metric(["in"], s["bandwidth"]["in"])
        c.add_metric(["out"], s["bandwidth"]["out"])
        yield c
        lat = Metric("chr_latency_seconds", "Latency of requests and operations, by operation", "summary")
        for op, row in sorted(s["latency"].items()):
            for key, q in QUANTILES:
                if key in row:
                    lat.add_sample("chr_latency_seconds", {"op": _label(op), "quantile": q}, row[key])
            lat.add_sample("chr_latency_seconds_count", {"op": _label(op)}, row.get("count", 0.0))
            lat.add_sample("chr_latency_seconds_sum", {"op": _label(op)}, row.get("sum", 0.0))
        yield lat
        e = CounterMetricFamily("chr_errors", "Errors by category", labels=["category"])
        for cat, n in sorted(s["errors"].items()):
            e.add_metric([_label(cat)], n)
        yield e
        hr = GaugeMetricFamily("chr_cache_hit_ratio", "Cache hits / lookups, by cache", labels=["cache"])
        lk = CounterMetricFamily(
            "chr_cache_lookups", "Cache lookups by cache and result", labels=["cache", "result"]
        )
        for cache, row in sorted(s["cache"].items()):
            hr.add_metric([_label(cache)], row["hit_ratio"])
            lk.add_metric([_label(cache), "hit"], row["hits"])
            lk.add_metric([_label(cache), "miss"], row["misses"])
        yield hr
        yield lk
        p2p = GaugeMetricFamily("chr_p2p_peers", "Peers by state", labels=["state"])
        p2p.add_metric(["connected"], s["p2p"]["connected"])
        p2p.add_metric(["known"], s["p2p"]["known"])
        yield p2p
        yield GaugeMetricFamily(
            "chr_p2p_health", "Connected peers / known peers (0..1)", value=s["p2p"]["health"]
        )
        dht = s["dht"]
        yield GaugeMetricFamily("chr_p2p_links", "Open peer links", value=dht["links"])
        yield GaugeMetricFamily("chr_dht_routing_table", "Contacts in the routing table", value=dht["table"])
        yield GaugeMetricFamily("chr_dht_objects", "Signed objects held", value=dht["objects"])
        lookups = CounterMetricFamily("chr_dht_lookups", "Finished DHT lookups by result", labels=["result"])
        lookups.add_metric(["ok"], dht["lookups_ok"])
        lookups.add_metric(["failed"], dht["lookups_failed"])
        yield lookups
        merkle = CounterMetricFamily(
            "chr_merkle_objects", "Objects exchanged by MERKLE reconciliation", labels=["direction"]
        )
        merkle.add_metric(["fetched"], dht["merkle_fetched"])
        merkle.add_metric(["pushed"], dht["merkle_pushed"])
        yield merkle
        chain = s["chain"]
        yield GaugeMetricFamily(
            "chr_chain_reachable", "1 when a chain endpoint answers", value=float(chain["reachable"])
        )
        yield GaugeMetricFamily(
            "chr_chain_synced", "1 when the chain monitor follows the head", value=float(chain["synced"])
        )
        if chain["head_block"] is not None:
            yield GaugeMetricFamily("chr_chain_head_block", "Last head block seen", value=chain["head_block"])
        if chain["lag_s"] is not None:
            yield GaugeMetricFamily(
                "chr_chain_lag_seconds", "Age of the last head block", value=chain["lag_s"]
            )
        up = GaugeMetricFamily("chr_chain_endpoint_up", "1 when the chain endpoint answers", labels=["url"])
        state = GaugeMetricFamily(
            "chr_chain_endpoint_state", "1 for the endpoint's current state", labels=["url", "state"]
        )
        latency = GaugeMetricFamily(
            "chr_chain_endpoint_latency_seconds", "Latency of the last probe", labels=["url"]
        )
        for ep in chain["endpoints"]:
            url = _label(ep["url"])
            up.add_metric([url], float(ep["state"] in ("active", "standby")))
            state.add_metric([url, _label(ep["state"])], 1.0)
            if ep["latency_ms"] is not None:
                latency.add_metric([url], ep["latency_ms"] / 1000)
        yield up
        yield state
        yield latency
        balance = chain["node_balance"]
        if balance["known"] and balance["eth"] is not None:
            yield GaugeMetricFamily("chr_node_balance_eth", "Node account balance", value=balance["eth"])
            yield GaugeMetricFamily(
                "chr_node_can_pay_submission",
                "1 when the node's balance pays the gas of a ticket batch",
                value=float(balance["can_pay"]),
            )
        yield GaugeMetricFamily(
            "chr_reward_rate_per_hour",
            "CHAI earned per hour (recent rate)",
            value=s["reward"]["rate_per_hour"],
        )
        yield GaugeMetricFamily("chr_reward_earned", "CHAI earned so far", value=s["reward"]["earned"])

    def _stat_metrics(self, snapshot: Mapping[str, Any]) -> Iterator[Metric]:
        """Every counter and gauge of the Stats actor under its own name (prefixed chr_stat_) and
        labels, so nothing reported is lost to the fixed families above."""
        seen: set[str] = set()
        for kind, typ in (("counters", "counter"), ("gauges", "gauge")):
            families: dict[str, Metric] = {}
            for name, labels, value in stat_entries(snapshot, kind):
                if (n := _num(value)) is None:
                    continue
                base = "chr_stat_" + _NAME_UNSAFE.sub("_", name)
                if typ == "counter":
                    base = base.removesuffix("_total")
                family = families.get(base)
                if family is None:
                    if base in seen:  # a counter and a gauge of one name: the counter stays
                        continue
                    seen.add(base)
                    family = families[base] = Metric(base, f"Stats {kind[:-1]} {name}", typ)
                sample = base + "_total" if typ == "counter" else base
                family.add_sample(sample, {_label_name(k): _label(v) for k, v in labels.items()}, n)
            yield from families.values()

    def _process_metrics(self, snapshot: Mapping[str, Any]) -> Iterator[Metric]:
        procs = self._sampler.sample(snapshot)
        rss = GaugeMetricFamily("chr_process_resident_memory_bytes", "RSS by actor process", labels=["actor"])
        cpu = CounterMetricFamily("chr_process_cpu_seconds", "CPU time by actor process", labels=["actor"])
        pct = GaugeMetricFamily("chr_process_cpu_percent", "CPU use since the last scrape", labels=["actor"])
        for name, row in sorted(procs.items()):
            rss.add_metric([_label(name)], row["rss_bytes"])
            cpu.add_metric([_label(name)], row["cpu_seconds"])
            pct.add_metric([_label(name)], row["cpu_percent"])
        yield rss
        yield cpu
        yield pct
        yield GaugeMetricFamily(
            "chr_node_resident_memory_bytes",
            "RSS of all actor processes",
            value=sum(r["rss_bytes"] for r in procs.values()),
        )

    def _tree_metrics(self, snapshot: Mapping[str, Any]) -> Iterator[Metric]:
        tree = snapshot.get("tree")
        up = GaugeMetricFamily("chr_actor_up", "1 when the actor is running", labels=["actor"])
        restarts = CounterMetricFamily("chr_actor_restarts", "Restarts by actor", labels=["actor"])
        for row in tree if isinstance(tree, list) else ():
            if isinstance(row, Mapping) and "name" in row:
                name = _label(str(row["name"]))
                up.add_metric([name], 1.0 if row.get("state") == "running" else 0.0)
                restarts.add_metric([name], _num(row.get("restarts")) or 0.0)
        yield up
        yield restarts
        node = _section(snapshot, "node")
        started = _num(node.get("started_at"))
        if started is not None:
            yield GaugeMetricFamily(
                "chr_node_start_time_seconds", "Unix time the node started", value=started
            )

    def _health_metrics(self, snapshot: Mapping[str, Any]) -> Iterator[Metric]:
        if self._health is None:
            return
        layers = self._health(snapshot).get("layers", {})
        g = GaugeMetricFamily(
            "chr_health_status", "Health by layer: 0 ok, 1 degraded, 2 down", labels=["layer"]
        )
        for layer, row in layers.items():
            g.add_metric([layer], float(STATUSES.index(row["status"])))
        yield g


class MetricsExporter:
    """Renders GET /metrics from the current snapshot; one registry per exporter. `health` (the
    same function /health uses, so both agree) adds chr_health_status."""

    content_type = CONTENT_TYPE

    def __init__(self, get_snapshot: Callable[[], Mapping[str, Any]], health: HealthFn | None = None) -> None:
        self.sampler = ProcessSampler()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(get_snapshot, self.sampler, health))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _loop_lag_metrics(snapshot: Mapping[str, Any]) -> Iterator[Metric]:
    """The network loop's lag (snapshot "loop_lag", chrnode.net.looplag): the histogram of every
    sample since start, and p50/p99/max over the last minute."""
    lag = _section(snapshot, "loop_lag")
    rows = lag.get("buckets")
    if not isinstance(rows, list) or not rows:
        return
    buckets = []
    for row in rows:
        pair = row if isinstance(row, list | tuple) and len(row) == 2 else (None, None)
        n, bound = _num(pair[1]), pair[0] if pair[0] == "+Inf" else _num(pair[0])
        if n is None or bound is None:
            return  # a malformed report gives no metric rather than a wrong one
        buckets.append((bound if isinstance(bound, str) else repr(float(bound)), n))
    yield HistogramMetricFamily(
        "chr_network_loop_lag_seconds",
        "How late the network loop ran its lag timer, since start",
        buckets=buckets,
        sum_value=_num(lag.get("sum_s")) or 0.0,
    )
    recent = GaugeMetricFamily(
        "chr_network_loop_lag_recent_seconds",
        "Network loop lag over the last minute, by quantile",
        labels=["quantile"],
    )
    for key, q in (("p50_ms", "0.5"), ("p99_ms", "0.99"), ("max_ms", "1")):
        recent.add_metric([q], (_num(lag.get(key)) or 0.0) / 1000)
    yield recent
