"""The seed's metrics (SPEC 12) from the RPC snapshot: as JSON for ``network_stats`` and in the
Prometheus text format for ``GET /metrics``.

``summarize(snapshot)`` is pure and gives the seed's list: connections, bandwidth in/out, request
latency percentiles, errors by category, cache hit ratios, P2P health, chain sync status and the
reward rate. Memory and CPU come from psutil for the actor processes the tree lists
(``ProcessSampler``). ``MetricsExporter`` renders both through prometheus_client with a registry
of its own (never the global default one, so several nodes can live in one test process).

Which stats names feed which metric is written in docs/rpc.md ("Snapshot contract"). Missing or
malformed data gives an absent metric or 0, never an exception.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chrnode.health import STATUSES, compute_health

log = logging.getLogger("chrnode.rpc")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUANTILES = (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99"))


def _num(value: object) -> float | None:
    """A finite-or-not number from a report value; numeric strings (token amounts) count too."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _section(snapshot: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = snapshot.get(key)
    return value if isinstance(value, Mapping) else {}


def _numbers(section: Mapping[str, Any], key: str) -> dict[str, float]:
    raw = section.get(key)
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, float] = {}
    for name, value in raw.items():
        number = _num(value)
        if number is not None:
            out[str(name)] = number
    return out


def _suffixed(values: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {
        name[len(prefix) :]: v
        for name, v in values.items()
        if name.startswith(prefix) and len(name) > len(prefix)
    }


def summarize(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The seed's metrics list as plain JSON, from the snapshot alone."""
    stats = _section(snapshot, "stats")
    counters = _numbers(stats, "counters")
    gauges = _numbers(stats, "gauges")
    timers_raw = stats.get("timers")
    latency: dict[str, dict[str, float]] = {}
    if isinstance(timers_raw, Mapping):
        for name, timer in timers_raw.items():
            if isinstance(timer, Mapping):
                row = {
                    k: n
                    for k in ("count", "sum", "p50", "p90", "p99", "max")
                    if (n := _num(timer.get(k))) is not None
                }
                if row:
                    latency[str(name)] = row

    caches: dict[str, dict[str, float]] = {}
    for name, hits in _suffixed(counters, "cache.").items():
        if name.endswith(".hits"):
            cache = name[: -len(".hits")]
            misses = counters.get(f"cache.{cache}.misses", 0.0)
            total = hits + misses
            caches[cache] = {"hits": hits, "misses": misses, "hit_ratio": hits / total if total else 0.0}

    conn = _section(snapshot, "connectivity")
    peers = snapshot.get("peers")
    peer_rows = [p for p in peers if isinstance(p, Mapping)] if isinstance(peers, list) else []
    connected = _num(conn.get("peers_connected"))
    if connected is None:
        connected = float(sum(1 for p in peer_rows if p.get("state") == "connected"))
    known = max(_num(conn.get("peers_known")) or 0.0, float(len(peer_rows)), connected)

    chain = _section(snapshot, "chain")
    reward = _section(snapshot, "reward")
    return {
        "connections": _suffixed(gauges, "connections."),
        "bandwidth": {"in": counters.get("bytes.in", 0.0), "out": counters.get("bytes.out", 0.0)},
        "latency": latency,
        "errors": _suffixed(counters, "errors."),
        "cache": caches,
        "p2p": {"connected": connected, "known": known, "health": connected / known if known else 0.0},
        "chain": {
            "configured": bool(chain.get("configured")),
            "reachable": bool(chain.get("reachable")),
            "synced": bool(chain.get("synced")),
            "head_block": _num(chain.get("head_block")),
            "lag_s": _num(chain.get("lag_s")),
        },
        "reward": {
            "rate_per_hour": _num(reward.get("rate_per_hour")) or 0.0,
            "earned": _num(reward.get("earned")) or 0.0,
        },
        "counters": counters,
        "gauges": gauges,
    }


class ProcessSampler:
    """Memory and CPU of the node's actor processes (pids from the tree), or of this process when
    the tree lists none. Keeps psutil.Process objects so cpu_percent has a previous reading."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, snapshot: Mapping[str, Any]) -> dict[str, dict[str, float]]:
        """{actor name: {rss_bytes, cpu_seconds, cpu_percent}} for every live actor process."""
        targets: dict[int, str] = {}
        tree = snapshot.get("tree")
        for row in tree if isinstance(tree, list) else ():
            if isinstance(row, Mapping):
                pid = row.get("pid")
                if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
                    targets.setdefault(pid, str(row.get("name", pid)))
        if not targets:
            targets[os.getpid()] = "self"
        out: dict[str, dict[str, float]] = {}
        for pid, name in targets.items():
            try:
                proc = self._procs.get(pid) or self._procs.setdefault(pid, psutil.Process(pid))
                with proc.oneshot():
                    times = proc.cpu_times()
                    out[name] = {
                        "rss_bytes": float(proc.memory_info().rss),
                        "cpu_seconds": float(times.user + times.system),
                        "cpu_percent": float(proc.cpu_percent(interval=None)),
                    }
            except (psutil.Error, OSError):
                self._procs.pop(pid, None)  # gone or not ours: leave it out, never fail a scrape
        for pid in set(self._procs) - set(targets):
            del self._procs[pid]
        return out


_LABEL_SAFE = re.compile(r"[^A-Za-z0-9_.:/\-]")


def _label(value: str) -> str:
    return _LABEL_SAFE.sub("_", value)[:120]


class _SnapshotCollector(Collector):
    """A prometheus_client collector that builds every family from the snapshot at scrape time."""

    def __init__(self, get_snapshot: Callable[[], Mapping[str, Any]], sampler: ProcessSampler) -> None:
        self._get_snapshot = get_snapshot
        self._sampler = sampler

    def collect(self) -> Iterator[Metric]:
        snapshot = self._get_snapshot()
        for build in (self._seed_metrics, self._process_metrics, self._tree_metrics, self._health_metrics):
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
        yield GaugeMetricFamily(
            "chr_reward_rate_per_hour",
            "CHAI earned per hour (recent rate)",
            value=s["reward"]["rate_per_hour"],
        )
        yield GaugeMetricFamily("chr_reward_earned", "CHAI earned so far", value=s["reward"]["earned"])
        gen_c = CounterMetricFamily("chr_stat", "Every counter of the Stats actor, by name", labels=["name"])
        for name, n in sorted(s["counters"].items()):
            gen_c.add_metric([_label(name)], n)
        yield gen_c
        gen_g = GaugeMetricFamily(
            "chr_stat_gauge", "Every gauge of the Stats actor, by name", labels=["name"]
        )
        for name, n in sorted(s["gauges"].items()):
            gen_g.add_metric([_label(name)], n)
        yield gen_g

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
        health = compute_health(snapshot)
        g = GaugeMetricFamily(
            "chr_health_status", "Health by layer: 0 ok, 1 degraded, 2 down", labels=["layer"]
        )
        for layer, row in health["layers"].items():
            g.add_metric([layer], float(STATUSES.index(row["status"])))
        yield g


class MetricsExporter:
    """Renders GET /metrics from the current snapshot; one registry per exporter."""

    content_type = CONTENT_TYPE

    def __init__(self, get_snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self.sampler = ProcessSampler()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(get_snapshot, self.sampler))

    def render(self) -> bytes:
        return generate_latest(self.registry)
