"""The node's health in the seed's five layers (SPEC 12), computed from the RPC snapshot.

Pure: a snapshot dict and the time in, ``{"status", "checked_at", "layers": {layer: {status,
reason}}}`` out. Each layer is ``ok``, ``degraded`` or ``down``; the node's status is the worst.
``GET /health`` answers 503 when any layer is down (SPEC 12), 200 otherwise.

    process      every supervised actor running (SPEC 9); a failed actor, or a permanent one that
                 stopped, is down; one starting or restarting is degraded
    network      listeners up (down if one is not) and, where peers are known, one connected
    storage      the database was writable at the last report, and that report is recent
    performance  request latency p90 under the threshold, and the network loop's lag p99 over the
                 last minute under its own (degraded above either)
    integration  chain and fleet reachable where configured; "not configured" is ok; degraded
                 when a chain endpoint fails (the node fails over) or the node's account cannot
                 pay the gas of ticket submission

A periodic job whose last run failed (`cron` snapshot: `last_error`) degrades the layer it
belongs to (`job_layer`: chain jobs integration, storage jobs storage, others process).

What each layer reads from the snapshot is listed in docs/rpc.md ("Snapshot contract"). An actor
may override a layer by publishing ``health: {layer: {status, reason}}``; an override wins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chrnode.metrics import STATUSES, stat_entries, stat_key

log = logging.getLogger("chrnode.rpc")

LAYERS = ("process", "network", "storage", "performance", "integration")
_RANK = {s: i for i, s in enumerate(STATUSES)}

Layer = dict[str, str]


@dataclass(frozen=True)
class HealthLimits:
    """Thresholds of the performance and storage layers."""

    latency_p90_s: float = 0.5
    storage_stale_s: float = 300.0
    # Timers (names in stats.timers) that measure requests served to others; internal work such
    # as SQLite fsyncs is not "request latency" and is left out.
    latency_prefixes: tuple[str, ...] = ("rpc", "edge", "peer", "request")
    # The network loop's lag p99 over the last minute (snapshot "loop_lag", chrnode.net.looplag):
    # above it every device and peer link waits that long for its turn; judged from 100 samples on.
    loop_lag_p99_s: float = 0.1
    loop_lag_min_samples: int = 100


def _layer(status: str, reason: str) -> Layer:
    return {"status": status, "reason": reason}


def _names(rows: list[str], limit: int = 5) -> str:
    shown = ", ".join(rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def process_layer(snapshot: Mapping[str, Any]) -> Layer:
    tree = snapshot.get("tree")
    if not isinstance(tree, list) or not tree:
        return _layer("degraded", "actor tree not reported yet")
    failed: list[str] = []
    stopped: list[str] = []
    busy: list[str] = []
    odd: list[str] = []
    running = 0
    for row in tree:
        if not isinstance(row, Mapping):
            continue
        name = str(row.get("name", "?"))
        state = row.get("state")
        if state == "running":
            running += 1
        elif state == "failed":
            failed.append(name)
        elif state == "stopped":
            # A transient or temporary actor that exited normally is not a fault (SPEC 9).
            if row.get("restart_type", "permanent") == "permanent":
                stopped.append(name)
        elif state in ("starting", "restarting", "stopping"):
            busy.append(name)
        elif state == "hung":  # it missed its heartbeat; its supervisor kills and restarts it
            failed.append(f"{name} (hung)")
        else:
            odd.append(f"{name} ({state})")
    if failed or stopped:
        parts = []
        if failed:
            parts.append("failed: " + _names(failed))
        if stopped:
            parts.append("permanent actor stopped: " + _names(stopped))
        return _layer("down", "; ".join(parts))
    if busy or odd:
        parts = []
        if busy:
            parts.append("restarting: " + _names(busy))
        if odd:
            parts.append("unknown state: " + _names(odd))
        return _layer("degraded", "; ".join(parts))
    return _layer("ok", f"{running} actors running")


def network_layer(snapshot: Mapping[str, Any]) -> Layer:
    conn = snapshot.get("connectivity")
    if not isinstance(conn, Mapping) or not conn:
        return _layer("degraded", "connectivity not reported yet")
    listeners = conn.get("listeners")
    listeners = listeners if isinstance(listeners, Mapping) else {}
    not_up = sorted(str(k) for k, up in listeners.items() if not up)
    if not_up:
        return _layer("down", "listener(s) not up: " + _names(not_up))
    # The peer side's links (snapshot "p2p", issue 10); before it reports, the Connectivity
    # actor's seed checks stand in for them.
    p2p = snapshot.get("p2p")
    p2p = p2p if isinstance(p2p, Mapping) else {}
    connected = (
        _int(p2p.get("links")) or _int(conn.get("peers_connected")) or _int(conn.get("seeds_reachable"))
    )
    known = max(_int(p2p.get("known")), _int(conn.get("peers_known")), _int(conn.get("seeds")))
    up = ", ".join(sorted(str(k) for k in listeners)) or "none reported"
    if known > 0 and connected == 0:
        return _layer("degraded", f"listeners up ({up}); no peer connected of {known} known")
    return _layer("ok", f"listeners up ({up}); {connected} peer(s) connected")


def storage_layer(snapshot: Mapping[str, Any], now: float, limits: HealthLimits) -> Layer:
    storage = snapshot.get("storage")
    if not isinstance(storage, Mapping) or "writable" not in storage:
        return _layer("degraded", "no storage report yet")
    if not storage.get("writable"):
        error = str(storage.get("error") or "no reason given")
        return _layer("down", f"database not writable: {error}")
    checked = _float(storage.get("checked_at"))
    if checked is not None:
        age = now - checked
        if age > limits.storage_stale_s:
            return _layer(
                "degraded", f"last storage report is {age:.0f} s old (limit {limits.storage_stale_s:g} s)"
            )
        return _layer("ok", f"database writable (checked {max(age, 0):.0f} s ago)")
    return _layer("ok", "database writable")


def performance_layer(snapshot: Mapping[str, Any], limits: HealthLimits) -> Layer:
    slow: list[str] = []
    measured = 0
    for name, labels, timer in stat_entries(snapshot, "timers"):
        if not name.startswith(limits.latency_prefixes) or not isinstance(timer, Mapping):
            continue
        p90 = _float(timer.get("p90"))
        if p90 is None:
            continue
        measured += 1
        if p90 > limits.latency_p90_s:
            slow.append(f"{stat_key(name, labels)} p90 {p90 * 1000:.0f} ms")
    limit_ms = f"{limits.latency_p90_s * 1000:.0f} ms"
    problems = [f"latency over {limit_ms}: " + _names(sorted(slow))] if slow else []
    lagging = _loop_lag_problem(snapshot, limits)
    if lagging:
        problems.append(lagging)
    if problems:
        return _layer("degraded", "; ".join(problems))
    if not measured:
        return _layer("ok", "no request latency measured yet")
    return _layer("ok", f"request latency p90 under {limit_ms} ({measured} timers)")


def _loop_lag_problem(snapshot: Mapping[str, Any], limits: HealthLimits) -> str | None:
    """A network loop lagging past its limit (snapshot "loop_lag"), or None."""
    lag = snapshot.get("loop_lag")
    if not isinstance(lag, Mapping) or (_float(lag.get("samples")) or 0) < limits.loop_lag_min_samples:
        return None
    p99 = _float(lag.get("p99_ms"))
    limit = limits.loop_lag_p99_s * 1000
    if p99 is None or p99 <= limit:
        return None
    return f"network loop lag p99 {p99:.0f} ms over the last minute (limit {limit:.0f} ms)"


def integration_layer(snapshot: Mapping[str, Any]) -> Layer:
    parts: list[tuple[str, bool, str]] = []  # (what, reachable, detail)
    chain = snapshot.get("chain")
    if isinstance(chain, Mapping) and chain.get("configured"):
        ok = bool(chain.get("reachable"))
        detail = f"head {chain.get('head_block')}" if ok else str(chain.get("error") or "unreachable")
        parts.append(("chain", ok, detail))
    fleet = snapshot.get("fleet")
    if isinstance(fleet, Mapping) and fleet.get("configured"):
        ok = bool(fleet.get("connected"))
        detail = "connected" if ok else str(fleet.get("error") or "no fleet node reachable")
        parts.append(("fleet", ok, detail))
    if not parts:
        return _layer("ok", "not configured")
    reason = "; ".join(f"{what}: {detail}" for what, _, detail in parts)
    reachable = sum(1 for _, ok, _ in parts if ok)
    if reachable == len(parts):
        warnings = chain_warnings(chain) if isinstance(chain, Mapping) else []
        if warnings:
            return _layer("degraded", reason + "; " + "; ".join(warnings))
        return _layer("ok", reason)
    # The node still relays with one integration out; with every one out it cannot check tickets
    # or find its fleet, so it is down.
    return _layer("down" if reachable == 0 else "degraded", reason)


def chain_warnings(chain: Mapping[str, Any]) -> list[str]:
    """What an operator should fix while the chain still answers (issue 7): failing endpoints
    (the node fails over past them) and a node account that cannot pay for ticket submission."""
    out: list[str] = []
    endpoints = chain.get("endpoints")
    for ep in endpoints if isinstance(endpoints, list) else []:
        if isinstance(ep, Mapping) and ep.get("state") in ("failing", "backing_off"):
            out.append(f"endpoint {ep.get('url')} {ep.get('state')}: {ep.get('error') or 'no answer'}")
    balance = chain.get("node_balance")
    if isinstance(balance, Mapping) and balance.get("known") and balance.get("can_pay") is False:
        out.append(
            f"node balance {balance.get('eth')} ETH cannot pay ticket submission gas "
            f"(needs {balance.get('needed_wei')} wei)"
        )
    return out


def job_layer(target: str) -> str:
    """The health layer a periodic job belongs to, by the actor that runs it."""
    if target.startswith("RemoteChain."):
        return "integration"
    if target.startswith("Model.Sql"):
        return "storage"
    return "process"


def _failed_jobs(snapshot: Mapping[str, Any]) -> dict[str, list[str]]:
    jobs = snapshot.get("cron")
    failed: dict[str, list[str]] = {}
    for job in jobs if isinstance(jobs, list) else []:
        if isinstance(job, Mapping) and job.get("last_error"):
            layer = job_layer(str(job.get("target") or ""))
            failed.setdefault(layer, []).append(f"job {job.get('name')} failed: {job.get('last_error')}")
    return failed


def compute_health(
    snapshot: Mapping[str, Any],
    *,
    now: float | None = None,
    limits: HealthLimits | None = None,
) -> dict[str, Any]:
    """The five layers and the overall status. Never raises on a malformed snapshot."""
    now = time.time() if now is None else now
    limits = limits or HealthLimits()
    computers: dict[str, Callable[[], Layer]] = {
        "process": lambda: process_layer(snapshot),
        "network": lambda: network_layer(snapshot),
        "storage": lambda: storage_layer(snapshot, now, limits),
        "performance": lambda: performance_layer(snapshot, limits),
        "integration": lambda: integration_layer(snapshot),
    }
    overrides = snapshot.get("health")
    overrides = overrides if isinstance(overrides, Mapping) else {}
    layers: dict[str, Layer] = {}
    for name, compute in computers.items():
        override = overrides.get(name)
        if isinstance(override, Mapping) and override.get("status") in _RANK:
            layers[name] = _layer(
                str(override["status"]), str(override.get("reason", "reported by the node"))
            )
            continue
        try:
            layers[name] = compute()
        except Exception:  # a malformed report must not take /health down with it
            log.exception("health layer %s could not be computed", name)
            layers[name] = _layer("degraded", "could not be computed from the last report")
    try:
        failed_jobs = _failed_jobs(snapshot)
    except Exception:  # as above: never take /health down
        log.exception("failed jobs could not be read from the cron report")
        failed_jobs = {}
    for name, reasons in failed_jobs.items():
        layer = layers.get(name)
        if layer is not None and name not in overrides:
            status = "degraded" if layer["status"] == "ok" else layer["status"]
            layers[name] = _layer(status, layer["reason"] + "; " + "; ".join(reasons))
    worst = max((layer["status"] for layer in layers.values()), key=_RANK.__getitem__)
    return {"status": worst, "checked_at": round(now, 3), "layers": layers}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
