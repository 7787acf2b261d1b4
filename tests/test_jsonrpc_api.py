"""The node's methods (chrnode.rpc.api, chrnode.rpc.admin) and their OpenRPC document, through the
dispatcher, without HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import chrnode
from chrnode.errors import ActorError, RpcError
from chrnode.rpc.api import NodeView, build_methods
from chrnode.rpc.jsonrpc import Dispatcher
from chrnode.rpc.openrpc import OPENRPC_VERSION
from chrnode.rpc.wire import ACTOR_FAILED, INVALID_PARAMS, UNAUTHORIZED
from chrnode.testing.rpc import RecordingAdmin, sample_snapshot

READ_METHODS = [
    "chr_node_info",
    "network_stats",
    "peer_list",
    "fleet_status",
    "reward_status",
    "health",
    "cron_jobs",
    "rpc.discover",
]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rpc(d: Dispatcher, method: str, params: Any = None, *, admin: bool = False) -> Any:
    req: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        req["params"] = params
    out = asyncio.run(d.dispatch_body(json.dumps(req).encode(), is_admin=admin))
    assert out is not None
    return json.loads(out)


def setup(
    snapshot: dict[str, Any] | None = None, admin: Any = None, now: float = 1_800_000_000.0
) -> tuple[Dispatcher, NodeView, RecordingAdmin, Clock]:
    clock = Clock(now)
    view = NodeView(sample_snapshot(now) if snapshot is None else snapshot, clock=clock)
    admin = admin or RecordingAdmin()
    return Dispatcher(build_methods(view, admin)), view, admin, clock


def test_chr_node_info() -> None:
    d, _, _, clock = setup()
    info = rpc(d, "chr_node_info")["result"]
    assert info["address"] == "0x" + "ab" * 20
    assert info["ports"] == {"rpc": 8545, "rpcs": 8443, "edge2": [41046, 41047], "peer2": 51055}
    assert info["uptime"] == 3600
    assert info["version"] == "0.1.0" and info["host"] == "node1.example.org"
    names = [row["name"] for row in info["tree"]]
    assert names[0] == "ChronaraNode.Supervisor" and "Network.RpcHttp" in names
    fields = {
        "name",
        "parent",
        "state",
        "restarts",
        "restart_type",
        "pid",
        "reason",
        "last_exit",
        "requested_restarts",
    }
    assert set(info["tree"][1]) == fields
    assert info["tree"][1]["restarts"] == 1 and info["tree"][1]["state"] == "running"

    clock.now += 10.7
    assert rpc(d, "chr_node_info")["result"]["uptime"] == 3611  # started 3600.5 s before


def test_chr_node_info_follows_snapshot_updates() -> None:
    d, view, _, _ = setup()
    tree = [dict(row) for row in view.snapshot["tree"]]
    tree[2]["state"] = "restarting"
    tree[2]["restarts"] = 9
    view.set_part("tree", tree)
    row = rpc(d, "chr_node_info")["result"]["tree"][2]
    assert row["state"] == "restarting" and row["restarts"] == 9
    view.set_part("node", {**view.snapshot["node"], "address": bytes(range(20))})
    assert rpc(d, "chr_node_info")["result"]["address"] == "0x" + bytes(range(20)).hex()


def test_empty_snapshot_gives_well_formed_answers() -> None:
    d, _, _, _ = setup(snapshot={})
    results = {m: rpc(d, m) for m in READ_METHODS}
    for method, answer in results.items():
        assert "result" in answer, (method, answer)
    info = results["chr_node_info"]["result"]
    assert info["address"] is None and info["tree"] == [] and info["uptime"] == 0
    assert info["version"] == chrnode.__version__
    assert results["peer_list"]["result"] == {"peers": [], "connected": 0, "known": 0}
    assert results["reward_status"]["result"]["earned"] == "0"
    assert results["reward_status"]["result"]["token"] == "CHAI"
    assert results["fleet_status"]["result"]["configured"] is False
    assert results["cron_jobs"]["result"] == {"jobs": []}
    assert results["network_stats"]["result"]["bandwidth"] == {"in": 0, "out": 0}
    health = results["health"]["result"]
    assert set(health["layers"]) == {"process", "network", "storage", "performance", "integration"}
    assert health["status"] == "degraded"


def test_malformed_snapshot_parts_do_not_fail() -> None:
    snapshot = {
        "node": "oops",
        "tree": [1, None, {"name": "X", "state": "running"}],
        "stats": {"counters": 5},
        "peers": {"not": "a list"},
        "fleet": [],
        "reward": None,
        "cron": [{"name": b"\x01"}],
        "connectivity": 3,
    }
    d, _, _, _ = setup(snapshot=snapshot)
    for method in READ_METHODS:
        assert "result" in rpc(d, method), method
    assert rpc(d, "cron_jobs")["result"]["jobs"] == [{"name": "0x01"}]


def test_peer_list_and_sections() -> None:
    d, _, _, _ = setup()
    peers = rpc(d, "peer_list")["result"]
    assert peers["known"] == 20 and peers["connected"] == 7
    assert rpc(d, "fleet_status")["result"]["connected"] is True
    reward = rpc(d, "reward_status")["result"]
    assert reward["earned"] == "1500000000000000000" and reward["epoch"] == 668
    stats = rpc(d, "network_stats")["result"]
    assert stats["bandwidth"] == {"in": 123456789, "out": 98765432}
    assert stats["connections"] == {"edge": 42}
    assert stats["cache"]["chain_l1"]["hit_ratio"] == pytest.approx(0.9)
    assert stats["latency"]["rpc_request_seconds"]["p90"] == pytest.approx(0.0013, rel=0.05)
    assert stats["errors"] == {"tickets": 3, "rpc": 1}
    assert stats["p2p"]["health"] == pytest.approx(7 / 20)
    assert stats["process"], "psutil found no process"
    assert all(row["rss_bytes"] > 0 for row in stats["process"].values())


def test_admin_methods_call_the_actor() -> None:
    d, _, admin, _ = setup()
    assert rpc(d, "admin_restart_actor", ["Cron"], admin=True)["result"] == {"restarted": "Cron"}
    assert rpc(d, "admin_set_log_level", {"level": "debug"}, admin=True)["result"] == {"log_level": "DEBUG"}
    assert rpc(d, "admin_stop", admin=True)["result"] == {"stopping": True}
    assert admin.calls == [("restart_actor", "Cron"), ("set_log_level", "DEBUG"), ("stop",)]


def test_admin_methods_refused_without_token() -> None:
    d, _, admin, _ = setup()
    for method, params in (
        ("admin_restart_actor", ["Cron"]),
        ("admin_set_log_level", ["INFO"]),
        ("admin_stop", []),
    ):
        answer = rpc(d, method, params)
        assert answer["error"]["code"] == UNAUTHORIZED
        assert ".cookie" in answer["error"]["message"] and "/" not in answer["error"]["message"]
    assert admin.calls == []


def test_restart_unknown_actor_names_the_known_ones() -> None:
    d, _, admin, _ = setup()
    answer = rpc(d, "admin_restart_actor", ["Nope"], admin=True)
    assert answer["error"]["code"] == INVALID_PARAMS
    assert "Cron" in answer["error"]["data"]["known"]
    assert answer["error"]["data"]["param"] == "name"
    assert admin.calls == []


def test_bad_log_level() -> None:
    d, _, admin, _ = setup()
    answer = rpc(d, "admin_set_log_level", ["LOUD"], admin=True)
    assert answer["error"]["code"] == INVALID_PARAMS
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in answer["error"]["message"]
    assert rpc(d, "admin_set_log_level", [3], admin=True)["error"]["data"]["expected"] == "string"
    assert admin.calls == []


def test_actor_failure_is_reported() -> None:
    d, _, _, _ = setup(admin=RecordingAdmin(fail=ActorError("Cron did not answer within 5 s")))
    answer = rpc(d, "admin_restart_actor", ["Cron"], admin=True)
    assert answer["error"]["code"] == ACTOR_FAILED
    assert answer["error"]["message"] == "could not restart Cron: Cron did not answer within 5 s"
    d, _, _, _ = setup(admin=RecordingAdmin(fail=RpcError(-32050, "busy")))
    assert rpc(d, "admin_stop", admin=True)["error"] == {"code": -32050, "message": "busy"}


def test_openrpc_document_lists_every_method_with_params() -> None:
    d, _, _, _ = setup()
    doc = rpc(d, "rpc.discover")["result"]
    assert doc["openrpc"] == OPENRPC_VERSION == "1.2.6"
    assert doc["info"]["version"] == chrnode.__version__
    by_name = {m["name"]: m for m in doc["methods"]}
    assert set(by_name) == set(d.methods)
    for name, method in d.methods.items():
        entry = by_name[name]
        assert [p["name"] for p in entry["params"]] == [p.name for p in method.params]
        for p, spec in zip(entry["params"], method.params, strict=True):
            assert p["required"] is spec.required and p["schema"] == {"type": spec.type}
        assert entry["result"]["name"] and "schema" in entry["result"]
        assert entry.get("x-admin", False) is method.admin
        if method.admin:
            assert UNAUTHORIZED in [e["code"] for e in entry["errors"]]
    assert {
        "chr_node_info",
        "peer_list",
        "network_stats",
        "reward_status",
        "fleet_status",
        "health",
        "admin_restart_actor",
        "admin_set_log_level",
        "admin_stop",
        "rpc.discover",
    } <= set(by_name)


def test_extra_methods_join_the_table_and_the_document() -> None:
    from chrnode.rpc.jsonrpc import Method, Param

    view = NodeView({})
    extra = Method("bns_resolve", lambda name: {"name": name}, (Param("name", "string"),))
    d = Dispatcher(build_methods(view, RecordingAdmin(), extra=[extra]))
    assert rpc(d, "bns_resolve", ["a.chronara.com"])["result"] == {"name": "a.chronara.com"}
    names = [m["name"] for m in rpc(d, "rpc.discover")["result"]["methods"]]
    assert "bns_resolve" in names
