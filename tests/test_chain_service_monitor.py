"""HeadMonitor (SPEC 7): sync status, lag and epoch from head observations. Pure logic."""

from __future__ import annotations

import pytest

from chrnode.chain.monitor import DOWN, LAGGING, SYNCED, HeadMonitor

A, B = "http://127.0.0.1:1", "http://127.0.0.1:2"


class Clock:
    now = 10_000.0

    def __call__(self) -> float:
        return self.now


def test_nothing_polled_yet_is_down_with_a_reason() -> None:
    snap = HeadMonitor([A], 100).snapshot()
    assert (snap["status"], snap["head"], snap["epoch"], snap["reachable"]) == (DOWN, None, None, False)
    assert snap["reason"] == "no endpoint has answered yet"
    assert snap["endpoints"][0]["status"] == "down" and snap["endpoints"][0]["state"] == "unknown"


def test_synced_head_gives_epoch_and_lag_seconds() -> None:
    clock = Clock()
    monitor = HeadMonitor([A], epoch_length=1000, clock=clock)
    monitor.observe(A, head=42, timestamp=9_990, latency=0.002)
    snap = monitor.snapshot()
    assert snap["status"] == SYNCED and snap["synced"] and snap["reachable"]
    assert (snap["head"], snap["head_block"], snap["epoch"], snap["lag_blocks"]) == (42, 42, 9, 0)
    assert snap["lag_seconds"] == snap["lag_s"] == 10.0
    assert snap["endpoints"][0] == {
        "url": A,
        "status": "up",
        "state": "active",
        "head": 42,
        "latency_ms": 2.0,
        "error": "",
        "checked_at": 10_000.0,
        "failures": 0,
        "retry_in_s": None,
    }


def test_the_used_endpoint_lagging_behind_another_is_lagging() -> None:
    monitor = HeadMonitor([A, B], 1000, max_lag_blocks=3, clock=Clock())
    monitor.observe(A, 100, 5000)
    monitor.observe(B, 103, 5030)
    assert monitor.status == SYNCED and monitor.lag_blocks == 3
    monitor.observe(B, 110, 5100)
    assert monitor.status == LAGGING and monitor.lag_blocks == 10 and monitor.head == 100
    monitor.failed(A, "timed out")  # the node now reads B: caught up
    assert monitor.status == SYNCED and monitor.head == 110


def test_an_old_head_is_lagging_only_when_a_maximum_age_is_set() -> None:
    clock = Clock()
    relaxed = HeadMonitor([A], 1000, clock=clock)  # a dev chain mines on demand
    strict = HeadMonitor([A], 1000, max_head_age=60, clock=clock)
    for monitor in (relaxed, strict):
        monitor.observe(A, 5, 9_000)
    assert relaxed.status == SYNCED and strict.status == LAGGING


def test_all_endpoints_failing_is_down_with_the_last_error() -> None:
    monitor = HeadMonitor([A, B], 1000, clock=Clock())
    monitor.observe(A, 1, 1)
    monitor.failed(A, "connection refused")
    monitor.failed(B, "wrong chain id 1")
    snap = monitor.snapshot()
    assert snap["status"] == DOWN and snap["reason"] == f"{B}: wrong chain id 1"
    assert [e["failures"] for e in snap["endpoints"]] == [1, 1]
    monitor.failed(A, "connection refused")
    assert monitor.endpoints[A].failures == 2


def test_not_configured_is_down_even_if_reachable() -> None:
    monitor = HeadMonitor([A], 1000, clock=Clock())
    monitor.observe(A, 1, 1)
    monitor.not_configured("not configured: no contracts.json")
    snap = monitor.snapshot()
    assert (snap["status"], snap["configured"]) == (DOWN, False)
    assert snap["reason"] == "not configured: no contracts.json"


def test_bad_input_is_refused() -> None:
    monitor = HeadMonitor([A], 1000)
    with pytest.raises(ValueError, match="unknown endpoint"):
        monitor.observe("http://elsewhere", 1, 1)
    with pytest.raises(ValueError, match="must not be negative"):
        monitor.observe(A, -1, 1)
    with pytest.raises(ValueError, match="epoch_length"):
        HeadMonitor([A], 0)
    assert HeadMonitor([], 1000).snapshot()["reason"] == "no chain endpoints configured"


def test_endpoint_states_show_failover_and_backoff() -> None:
    clock = Clock()
    monitor = HeadMonitor([A, B], 1000, clock=clock)
    monitor.failed(A, "no answer within 2 s", retry_in=4.0)
    monitor.observe(B, 7, 9_000, latency=0.01)
    states = [(e["state"], e["retry_in_s"]) for e in monitor.snapshot()["endpoints"]]
    assert states == [("backing_off", 4.0), ("active", None)]
    clock.now += 4.5
    assert monitor.snapshot()["endpoints"][0]["state"] == "failing"  # due for its next probe
    monitor.backing_off(A, retry_in=8.0)
    assert monitor.snapshot()["endpoints"][0]["retry_in_s"] == 8.0
    monitor.observe(A, 7, 9_000)
    assert [e["state"] for e in monitor.snapshot()["endpoints"]] == ["active", "standby"]


def test_node_balance_says_whether_it_can_pay_for_a_batch() -> None:
    monitor = HeadMonitor([A], 1000, clock=Clock())
    assert monitor.snapshot()["node_balance"] == {"known": False, "error": "not read yet"}
    monitor.balance(0, gas_price=10**9)
    broke = monitor.snapshot()["node_balance"]
    assert broke["known"] and not broke["can_pay"] and broke["wei"] == "0"
    monitor.balance(100 * 10**18, gas_price=10**9)
    rich = monitor.snapshot()["node_balance"]
    assert rich["can_pay"] and rich["eth"] == 100.0 and int(rich["needed_wei"]) == 5_500_000 * 10**9
    monitor.balance(None, error="eth_getBalance: all 1 chain endpoint(s) unavailable")
    assert monitor.snapshot()["node_balance"]["error"].startswith("eth_getBalance")
