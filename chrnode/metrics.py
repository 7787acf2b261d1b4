"""The seed's metrics (SPEC 12) from the RPC snapshot, as JSON for ``network_stats``.

``summarize(snapshot)`` is pure and gives the seed's list: connections, bandwidth in/out, request
latency percentiles, errors by category, cache hit ratios, P2P health, chain sync status and the
reward rate. Memory and CPU come from psutil for the actor processes the tree lists
(``ProcessSampler``). ``stat_entries`` and ``stat_key`` read the Stats actor's part of the
snapshot (chrnode.health reads it through them too).

The Prometheus text format for ``GET /metrics`` (``MetricsExporter``, its collector and its
registry) lives in chrnode.metrics_prometheus, which builds on this module.

Which stats names feed which metric is written in docs/rpc.md ("Snapshot contract"). Missing or
malformed data gives an absent metric or 0, never an exception.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import psutil

from chrnode.chain.monitor import balance_summary, endpoint_rows

STATUSES = ("ok", "degraded", "down")  # as in chrnode.health, which imports this module


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
