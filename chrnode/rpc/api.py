"""The node's JSON-RPC methods (SPEC 8) over a snapshot of the node's state.

Read methods answer from a ``NodeView``: a snapshot dict the RPC actor keeps current from what
other actors publish (topic ``snapshot``, one key per part), so ``chr_node_info`` costs no actor
round trip (docs/architecture.md). The admin methods (restart an actor, set the log level, stop
the node) and their ``AdminOps`` moved to ``chrnode.rpc.admin``; ``build_methods`` lists them with
the read methods.

Snapshot keys (all optional; a missing part gives an empty but well-formed answer):
``node`` {address, version, started_at, host, ports{rpc, rpcs, edge2, peer2}}, ``tree`` [{name,
parent, state, restarts, restart_type, pid, reason, last_exit, requested_restarts}], ``stats`` {counters,
gauges, timers}, ``cron`` [jobs], ``connectivity``, ``peers`` [...], ``fleet``, ``chain``,
``reward``, ``storage``, ``health`` (layer overrides). The full contract is in docs/rpc.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import chrnode
from chrnode.health import HealthLimits, compute_health
from chrnode.metrics import ProcessSampler, summarize
from chrnode.rpc.admin import AdminOps, admin_methods
from chrnode.rpc.jsonrpc import Method
from chrnode.rpc.openrpc import openrpc_document
from chrnode.rpc.wire import RawJson, encode_json

_TREE_FIELDS = (
    "name",
    "parent",
    "state",
    "restarts",
    "restart_type",
    "pid",
    "reason",
    "last_exit",
    "requested_restarts",
)
_EDGE_FIELDS = ("devices", "connections", "ports_open", "bytes_in", "bytes_out")
_CHANNEL_FIELDS = (
    "channels",
    "members",
    "peak_members",
    "opened_total",
    "joined_total",
    "slow_closed",
    "bytes_delivered",
)


class NodeView:
    """The current snapshot. Replaced, never mutated in place, so a reader on another thread sees
    either the old or the new state whole; `generation` lets readers cache what they derive.
    One writer (the RPC actor's thread); any number of readers."""

    def __init__(
        self, snapshot: Mapping[str, Any] | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self._state: tuple[int, Mapping[str, Any]] = (0, dict(snapshot or {}))

    @property
    def snapshot(self) -> Mapping[str, Any]:
        return self._state[1]

    @property
    def state(self) -> tuple[int, Mapping[str, Any]]:
        """(generation, snapshot) read together."""
        return self._state

    def replace(self, snapshot: Mapping[str, Any]) -> None:
        self._state = (self._state[0] + 1, dict(snapshot))

    def set_part(self, key: str, value: Any) -> None:
        """Replace one part (what PubSub delivers: one key of topic `snapshot`)."""
        generation, old = self._state
        new = dict(old)
        new[key] = value
        self._state = (generation + 1, new)


def jsonable(value: Any, depth: int = 0) -> Any:
    """Snapshot parts come from other actors (pickled): make them JSON (bytes as 0x-hex)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 20:
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v, depth + 1) for v in value), key=str)
    return str(value)


def _hex_address(value: Any) -> str | None:
    if isinstance(value, bytes | bytearray) and len(value) == 20:
        return "0x" + bytes(value).hex()
    if isinstance(value, str) and value:
        return value if value.startswith("0x") else "0x" + value
    return None


# What a caller reads when the chain fails, by the chain service's error code. The service's own
# text names endpoint URLs, file paths and actors: that is for the operator's log, not for
# unauthenticated callers (issue 8).
PUBLIC_CHAIN_ERRORS: Mapping[str, str] = {
    "chain_unavailable": "the chain cannot be reached right now; try again later",
    "busy": "the chain cannot be reached right now; try again later",
    "wrong_chain": "the node's chain endpoints serve another chain than it is configured for",
    "not_configured": "a contract this method needs is not configured on this node",
    "chain_error": "the chain answered with an error; the node log has the details",
}
CHAIN_FAILED_TEXT = "the chain service failed; the node log has the details"


def public_chain_error(code: str) -> str:
    return PUBLIC_CHAIN_ERRORS.get(code, CHAIN_FAILED_TEXT)


def _section(snapshot: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = snapshot.get(key)
    return value if isinstance(value, Mapping) else {}


def _channel_counts(part: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if type(v := part.get(k)) is int else 0 for k in _CHANNEL_FIELDS}


def _rows(snapshot: Mapping[str, Any], key: str) -> list[Any]:
    value = snapshot.get(key)
    return [jsonable(r) for r in value if isinstance(r, Mapping)] if isinstance(value, list | tuple) else []


class _NodeInfo:
    """chr_node_info, the hot path: everything but the uptime is serialized once per snapshot
    generation, and each call splices the uptime in front (SPEC 13 target: 0.8x a bare handler)."""

    def __init__(self, view: NodeView) -> None:
        self._view = view
        self._generation = -1
        self._tail = ""
        self._started_at = 0.0

    def __call__(self) -> RawJson:
        generation, snapshot = self._view.state
        if generation != self._generation:
            self._rebuild(generation, snapshot)
        uptime = max(0, int(self._view.clock() - self._started_at)) if self._started_at else 0
        return RawJson('{"uptime":' + str(uptime) + "," + self._tail)

    def _rebuild(self, generation: int, snapshot: Mapping[str, Any]) -> None:
        node = _section(snapshot, "node")
        started = node.get("started_at")
        self._started_at = (
            float(started) if isinstance(started, int | float) and not isinstance(started, bool) else 0.0
        )
        tree = snapshot.get("tree")
        rows = [
            {k: jsonable(r.get(k)) for k in _TREE_FIELDS}
            for r in (tree if isinstance(tree, list | tuple) else ())
            if isinstance(r, Mapping)
        ]
        body = {
            "address": _hex_address(node.get("address")),
            "version": str(node.get("version") or chrnode.__version__),
            "host": jsonable(node.get("host")),
            "started_at": self._started_at or None,
            "ports": jsonable(node.get("ports")) if isinstance(node.get("ports"), Mapping) else {},
            "tree": rows,
        }
        self._tail = encode_json(body)[1:]  # drop the "{": the uptime member goes first
        self._generation = generation


def build_methods(
    view: NodeView,
    admin: AdminOps,
    *,
    health_limits: HealthLimits | None = None,
    extra: Sequence[Method] = (),
) -> list[Method]:
    """Every method of SPEC 8 that this layer serves, plus `extra`, plus rpc.discover of them all."""
    limits = health_limits or HealthLimits()
    sampler = ProcessSampler()

    def network_stats() -> dict[str, Any]:
        snapshot = view.snapshot
        stats = summarize(snapshot)
        stats["process"] = sampler.sample(snapshot)
        # The per-minute rollups of the last hour, as stored in node_stats (Network.Stats).
        stats["minutes"] = _rows(_section(snapshot, "network"), "node_stats")
        # The device port's live figures (Network.EdgeV2.Listener's last report), for `chr-node status`.
        edge = _section(snapshot, "edge")
        stats["edge"] = {k: jsonable(edge.get(k, 0)) for k in _EDGE_FIELDS}
        # The peer side's live figures (links, routing table, lookups, MERKLE exchanges), issue 10.
        stats["p2p"].update(jsonable(_section(snapshot, "p2p")))
        # How late the network process's loop runs (chrnode.net.looplag): p50/p99/max, last minute.
        stats["loop_lag"] = jsonable(_section(snapshot, "loop_lag"))
        stats["channels"] = _channel_counts(_section(snapshot, "channels"))  # chr_channels lists them
        return stats

    def chr_channels() -> dict[str, Any]:
        # The Channels actor's view of the channels on the network loop (actors/channels.py).
        part = _section(view.snapshot, "channels")
        out = _channel_counts(part)
        out["reported_at"] = part.get("reported_at") if isinstance(part.get("reported_at"), float) else None
        out["list"] = _rows(part, "list")
        return out

    def peer_list() -> dict[str, Any]:
        peers = _rows(view.snapshot, "peers")
        connected = sum(1 for p in peers if p.get("state") == "connected")
        return {"peers": peers, "connected": connected, "known": len(peers)}

    def fleet_status() -> dict[str, Any]:
        out: dict[str, Any] = {
            "configured": False,
            "connected": False,
            "fleet": None,
            "seed_nodes": [],
            "connected_nodes": 0,
        }
        out.update(jsonable(_section(view.snapshot, "fleet")))
        # Top-level `configured` covers both parts (issue 7): the seed nodes (`seeds_configured`)
        # and the fleet contract (`contract.configured`, from RemoteChain).
        out["seeds_configured"] = bool(out["configured"])
        chain = _section(view.snapshot, "fleet_chain")  # the fleet contract's view (RemoteChain)
        if chain:
            contract = jsonable(chain)
            if isinstance(contract, dict) and contract.get("error"):
                contract["error"] = public_chain_error(str(contract.get("code") or ""))
            out["contract"] = contract
            out["configured"] = out["seeds_configured"] or bool(chain.get("configured"))
            if out["fleet"] is None and chain.get("fleet"):
                out["fleet"] = chain["fleet"]
        return out

    def reward_status() -> dict[str, Any]:
        out: dict[str, Any] = {
            "token": "CHAI",
            "epoch": None,
            "earned": "0",
            "pending": "0",
            "rate_per_hour": 0,
            "uptime_ratio": None,
            "last_submitted": None,
        }
        out.update(jsonable(_section(view.snapshot, "reward")))
        return out

    def health() -> dict[str, Any]:
        return compute_health(view.snapshot, now=view.clock(), limits=limits)

    def cron_jobs() -> dict[str, Any]:
        return {"jobs": _rows(view.snapshot, "cron")}

    obj = {"type": "object"}
    methods = [
        Method(
            "chr_node_info",
            _NodeInfo(view),
            summary="Node identity, ports, uptime and actor tree",
            result="{address (0x-hex), version, uptime (s), started_at, host, ports{rpc, rpcs, edge2, "
            "peer2, actor_admin}, tree[{name, parent, state, restarts, restart_type, pid, reason, "
            "last_exit, requested_restarts}]}",
            result_schema=obj,
        ),
        Method(
            "network_stats",
            network_stats,
            summary="The seed's metrics as JSON (same data as GET /metrics)",
            result="{connections, bandwidth{in, out}, latency{op: {p50, p90, p99, count}}, errors, cache, "
            "p2p, chain{..., endpoints[{url, state, latency_ms}], node_balance{eth, can_pay}}, reward, "
            "process{actor: {rss_bytes, cpu_seconds, cpu_percent}}, counters, gauges, "
            "edge{devices, connections, ports_open, bytes_in, bytes_out}}",
            result_schema=obj,
        ),
        Method(
            "chr_channels",
            chr_channels,
            summary="Channels (shared ports, flag s) on this node: members and bytes delivered",
            result="{channels, members, peak_members, opened_total, joined_total, slow_closed, "
            "bytes_delivered, reported_at, list[{target, port, ref, members[{device, ref, flags, owner}], "
            "joined_total, bytes_delivered, frames_delivered, bytes_written}]}",
            result_schema=obj,
        ),
        Method(
            "peer_list",
            peer_list,
            summary="Known peers and their state",
            result="{peers[...], connected, known}",
            result_schema=obj,
        ),
        Method(
            "fleet_status",
            fleet_status,
            summary="Connection to the fleet: its seed nodes and its contract",
            result="{configured, seeds_configured, connected, fleet, seed_nodes[...], connected_nodes, "
            "contract}",
            result_schema=obj,
        ),
        Method(
            "reward_status",
            reward_status,
            summary="CHAI earnings",
            result="{token, epoch, earned, pending, rate_per_hour, uptime_ratio, last_submitted}",
            result_schema=obj,
        ),
        Method(
            "health",
            health,
            summary="Health in the seed's five layers (same as GET /health)",
            result="{status, checked_at, layers{process, network, storage, performance, integration: "
            "{status: ok|degraded|down, reason}}}",
            result_schema=obj,
        ),
        Method(
            "cron_jobs",
            cron_jobs,
            summary="Scheduled jobs and their last runs",
            result="{jobs[...]}",
            result_schema=obj,
        ),
        *admin_methods(view, admin),
        *extra,
    ]
    discover: list[RawJson] = []

    def rpc_discover() -> RawJson:
        return discover[0]

    methods.append(
        Method(
            "rpc.discover",
            rpc_discover,
            summary="This API as an OpenRPC 1.2.6 document",
            result="the OpenRPC document",
            result_schema={"type": "object"},
        )
    )
    discover.append(RawJson(encode_json(openrpc_document(methods, version=chrnode.__version__))))
    return methods
