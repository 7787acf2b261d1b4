"""The chain as an operator sees it (issue 7): endpoint states, balance and failed jobs in health,
network_stats and /metrics; `fleet_status` consistent; `status` lines. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from chrnode.metrics import summarize
from chrnode.rpc.client import format_status
from chrnode.testing.rpc import sample_snapshot
from tests.test_jsonrpc_api import rpc, setup
from tests.test_jsonrpc_health import NOW, _families, exporter, layer


def test_fleet_status_configured_agrees_with_its_parts() -> None:
    contract = {"ok": True, "configured": True, "fleet": "0x" + "f1" * 20, "node_allowed": True}
    d, _, _, _ = setup(snapshot={"fleet_chain": contract})
    status = rpc(d, "fleet_status")["result"]
    assert status["configured"] is True and status["seeds_configured"] is False
    assert status["contract"]["configured"] is True and status["fleet"] == contract["fleet"]
    d, _, _, _ = setup(snapshot={"fleet_chain": {**contract, "configured": False, "fleet": None}})
    status = rpc(d, "fleet_status")["result"]
    assert status["configured"] is False and status["contract"]["configured"] is False


def test_status_shows_the_chain_balance_and_each_endpoint() -> None:
    stats = {
        "chain": {
            "configured": True,
            "head_block": 12,
            "node_balance": {"known": True, "eth": 0.0, "can_pay": False},
            "endpoints": [
                {"url": "http://127.0.0.1:1", "state": "backing_off", "latency_ms": None, "error": "refused"},
                {"url": "http://127.0.0.1:8547", "state": "active", "latency_ms": 1.2, "error": ""},
            ],
        }
    }
    text = format_status({"address": "0x00", "ports": {}}, {"status": "degraded", "layers": {}}, stats)
    assert "chain    head 12   balance 0.0 ETH (CANNOT pay ticket submission gas)" in text
    assert "http://127.0.0.1:1  backing_off  (refused)" in text
    assert "http://127.0.0.1:8547  active 1.2 ms" in text
    assert "chain " not in format_status({"ports": {}}, {"layers": {}}, {"chain": {"configured": False}})


def _chain_with(endpoints: list[dict[str, Any]], balance: dict[str, Any]) -> dict[str, Any]:
    snap = sample_snapshot(NOW)
    snap["chain"].update(endpoints=endpoints, node_balance=balance)
    return snap


DEAD = {"url": "http://127.0.0.1:1", "state": "backing_off", "error": "cannot reach it", "failures": 3}
LIVE = {"url": "http://127.0.0.1:8547", "state": "active", "latency_ms": 1.5, "failures": 0, "error": ""}
RICH = {"known": True, "eth": 100.0, "can_pay": True, "needed_wei": "5500000000000000"}


def test_a_failing_endpoint_and_an_empty_account_degrade_integration() -> None:
    assert layer(_chain_with([LIVE], RICH), "integration")[0] == "ok"
    status, reason = layer(_chain_with([DEAD, LIVE], RICH), "integration")
    assert status == "degraded" and "endpoint http://127.0.0.1:1 backing_off: cannot reach it" in reason
    broke = {**RICH, "eth": 0.0, "can_pay": False}
    status, reason = layer(_chain_with([LIVE], broke), "integration")
    assert status == "degraded" and "node balance 0.0 ETH cannot pay ticket submission gas" in reason


def test_a_failed_job_degrades_its_layer_never_reads_as_success() -> None:
    snap = sample_snapshot(NOW)
    snap["cron"] = [
        {"name": "ticket_submit", "target": "RemoteChain.RPC", "last_error": "2 of 2 tickets not sent: gas"},
        {"name": "storage_maintenance", "target": "Model.Sql.Worker", "last_error": None},
    ]
    status, reason = layer(snap, "integration")
    assert status == "degraded" and "job ticket_submit failed: 2 of 2 tickets not sent: gas" in reason
    assert layer(snap, "storage")[0] == "ok"
    snap["cron"][1]["last_error"] = "disk full"
    assert layer(snap, "storage")[0] == "degraded"


def test_endpoints_and_balance_in_network_stats_and_metrics() -> None:
    snap = _chain_with([DEAD, LIVE], RICH)
    chain = summarize(snap)["chain"]
    assert [(e["url"], e["state"]) for e in chain["endpoints"]] == [
        (DEAD["url"], "backing_off"),
        (LIVE["url"], "active"),
    ]
    assert chain["node_balance"] == {"known": True, "eth": 100.0, "can_pay": True}
    families = _families(exporter(snap).render().decode())
    up = {s.labels["url"]: s.value for s in families["chr_chain_endpoint_up"].samples}
    assert list(up.values()) == [0.0, 1.0]
    states = {s.labels["state"] for s in families["chr_chain_endpoint_state"].samples}
    assert states == {"backing_off", "active"}
    assert families["chr_chain_endpoint_latency_seconds"].samples[0].value == pytest.approx(0.0015)
    assert families["chr_node_balance_eth"].samples[0].value == 100.0
    assert families["chr_node_can_pay_submission"].samples[0].value == 1.0
