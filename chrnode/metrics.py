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
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from chrnode.chain.monitor import balance_summary, endpoint_rows

log = logging.getLogger("chrnode.rpc")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("ok", "degraded", "down")  # as in chrnode.health, which imports this module
HealthFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
QUANTILES = (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99"))


def _num(value: object) -> float | None:
    """A number from a report value (ints stay ints, so JSON shows 42 not 42.0); numeric strings
    (token amounts) count too."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _section(snapshot: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = snapshot.get(key)
    return value if isinstance(value, Mapping) else {}


StatEntry = tuple[str, dict[str, str], Any]
"""(name, labels, value): a counter/gauge value, or a timer's {count, sum, p50, p90, p99, max}."""


def stat_entries(snapshot: Mapping[str, Any], kind: str) -> list[StatEntry]:
    """The counters, gauges or timers of the snapshot's ``stats`` part, in either shape: the Stats
    actor's list of ``{name, labels, value | count, sum, p50, ...}`` (chrnode.stats.StatsAggregate
    .snapshot) or a plain ``{name: value | {count, ...}}``."""
    raw = _section(snapshot, "stats").get(kind)
    out: list[StatEntry] = []
    if isinstance(raw, Mapping):
        out.extend((str(name), {}, value) for name, value in raw.items())
    elif isinstance(raw, list | tuple):
        for row in raw:
            if isinstance(row, Mapping) and isinstance(row.get("name"), str):
                labels = row.get("labels")
                labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}
                out.append((row["name"], labels, row if kind == "timers" else row.get("value")))
    return out


def stat_key(name: str, labels: Mapping[str, str]) -> str:
    """`name` or `name{k=v,...}`: one key per label set, for JSON and messages."""
    return name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else "")


def _add(into: dict[str, Any], key: str, value: Any) -> None:
    into[key] = into.get(key, 0) + value


def summarize(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The seed's metrics list as plain JSON, from the snapshot alone. Which stats feed what is
    in docs/rpc.md; both the Prometheus-style names of chrnode.stats and dotted names count."""
    counters: dict[str, Any] = {}
    gauges: dict[str, Any] = {}
    connections: dict[str, Any] = {}
    bandwidth: dict[str, Any] = {"in": 0, "out": 0}
    errors: dict[str, Any] = {}
    lookups: dict[str, dict[str, Any]] = {}
    for name, labels, value in stat_entries(snapshot, "counters"):
        if (n := _num(value)) is None:
            continue
        _add(counters, stat_key(name, labels), n)
        if name in ("bandwidth_in_bytes", "bytes.in"):
            _add(bandwidth, "in", n)
        elif name in ("bandwidth_out_bytes", "bytes.out"):
            _add(bandwidth, "out", n)
        elif name == "errors_total":
            _add(errors, labels.get("category", "other"), n)
        elif name.startswith("errors.") and len(name) > 7:
            _add(errors, name[7:], n)
        elif name in ("cache_hits_total", "cache_misses_total"):
            result = "hits" if name == "cache_hits_total" else "misses"
            _add(lookups.setdefault(labels.get("cache", "default"), {}), result, n)
        elif name.startswith("cache.") and name.endswith((".hits", ".misses")):
            cache, _, result = name[6:].rpartition(".")
            _add(lookups.setdefault(cache, {}), result, n)
    for name, labels, value in stat_entries(snapshot, "gauges"):
        if (n := _num(value)) is None:
            continue
        _add(gauges, stat_key(name, labels), n)
        if name == "connections":
            _add(connections, labels.get("kind", "edge"), n)
        elif name.startswith("connections.") and len(name) > 12:
            _add(connections, name[12:], n)
    latency: dict[str, dict[str, Any]] = {}
    for name, labels, timer in stat_entries(snapshot, "timers"):
        if isinstance(timer, Mapping):
            keys = ("count", "sum", "p50", "p90", "p99", "max")
            row = {k: n for k in keys if (n := _num(timer.get(k))) is not None}
            if row:
                latency[stat_key(name, labels)] = row
    caches = {}
    for cache, row in lookups.items():
        hits, misses = row.get("hits", 0), row.get("misses", 0)
        total = hits + misses
        caches[cache] = {"hits": hits, "misses": misses, "hit_ratio": hits / total if total else 0.0}

    conn = _section(snapshot, "connectivity")
    peers = snapshot.get("peers")
    peer_rows = [p for p in peers if isinstance(p, Mapping)] if isinstance(peers, list) else []
    connected = _num(conn.get("peers_connected"))
    if connected is None:
        connected = sum(1 for p in peer_rows if p.get("state") == "connected")
        connected = connected or _num(conn.get("seeds_reachable")) or 0  # until the DHT reports
    known = max(_num(conn.get("peers_known")) or 0, _num(conn.get("seeds")) or 0, len(peer_rows), connected)

    chain = _section(snapshot, "chain")
    reward = _section(snapshot, "reward")
    return {
        "connections": connections,
        "bandwidth": bandwidth,
        "latency": latency,
        "errors": errors,
        "cache": caches,
        "p2p": {"connected": connected, "known": known, "health": connected / known if known else 0.0},
        "dht": _dht_part(_section(snapshot, "p2p")),
        "chain": {
            "configured": bool(chain.get("configured")),
            "reachable": bool(chain.get("reachable")),
            "synced": bool(chain.get("synced")),
            "head_block": _num(chain.get("head_block")),
            "lag_s": _num(chain.get("lag_s")),
            # issue 7: failover and the node's ability to pay for ticket submission, visible
            "endpoints": endpoint_rows(chain),
            "node_balance": balance_summary(chain),
        },
        "reward": {
            "rate_per_hour": _num(reward.get("rate_per_hour")) or 0,
            "earned": _num(reward.get("earned")) or 0,
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


def _dht_part(p2p: Mapping[str, Any]) -> dict[str, float]:
    """The peer side's figures (snapshot "p2p", issue 10); 0 where not reported."""
    dht = p2p.get("dht")
    dht = dht if isinstance(dht, Mapping) else {}
    merkle = p2p.get("merkle")
    merkle = merkle if isinstance(merkle, Mapping) else {}
    return {
        "links": _num(p2p.get("links")) or 0,
        "objects": _num(p2p.get("objects")) or 0,
        "table": _num(dht.get("routing_table")) or 0,
        "lookups_ok": _num(dht.get("lookups_done")) or 0,
        "lookups_failed": _num(dht.get("lookups_failed")) or 0,
        "merkle_fetched": _num(merkle.get("fetched")) or 0,
        "merkle_pushed": _num(merkle.get("pushed")) or 0,
    }


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
