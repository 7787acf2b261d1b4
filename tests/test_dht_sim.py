"""Kademlia against a simulated network of 1,000+ nodes in one process (chrnode.testing.dhtsim):
seeded and deterministic, with 25% dead and 25% silent nodes (SPEC 6)."""

from __future__ import annotations

import math
import statistics

import pytest

from chrnode.dht.ids import ID_BITS, as_id
from chrnode.dht.lockstep import LockstepLookup
from chrnode.dht.node import DhtConfig
from chrnode.dht.store import Value
from chrnode.testing.dhtsim import DEAD, LIVE, SILENT, LookupRun, SimNetwork

pytestmark = pytest.mark.slow

N = 1000
LOOKUPS = 100


def lookups(net: SimNetwork, count: int, *, find_value: bool = False) -> list[LookupRun]:
    live = net.live()
    runs = []
    for _ in range(count):
        origin = net.rng.choice(live)
        target = as_id(net.rng.getrandbits(ID_BITS))
        if find_value:
            net.place(Value(target, 1, 1e12, b"object"))
        runs.append(net.lookup(origin, target, find_value=find_value))
    return runs


def found_closest(net: SimNetwork, run: LookupRun) -> bool:
    """The lookup returned the live node closest to its target."""
    [closest] = net.closest_live(run.target, 1, exclude=run.origin)
    return closest in [c.address for c in run.result.closest]


def network(failed: str | None, *, seed: int = 11, **kwargs: object) -> SimNetwork:
    net = SimNetwork(N, seed=seed, **kwargs)  # type: ignore[arg-type]
    net.populate()
    if failed:
        net.fail(0.25, failed)
    return net


@pytest.mark.parametrize("failed", [None, DEAD, SILENT])
def test_every_lookup_succeeds_in_bounded_hops(failed: str | None) -> None:
    net = network(failed)
    runs = lookups(net, LOOKUPS)
    assert all(found_closest(net, r) for r in runs)
    assert all(
        r.result.closest and all(net.nodes[c.address].state == LIVE for c in r.result.closest) for r in runs
    )
    assert max(r.result.hops for r in runs) <= math.ceil(math.log2(N))
    values = lookups(net, LOOKUPS // 2, find_value=True)
    assert all(r.result.ok and r.result.value is not None and r.result.value.key == r.target for r in values)


@pytest.mark.parametrize("failed", [DEAD, SILENT])
def test_no_lookup_waits_for_a_hard_timeout(failed: str) -> None:
    """SPEC 6: the next contact is asked without waiting on a dead or slow one; the lockstep
    baseline, in the same network, does wait (so this check can fail)."""
    hard = DhtConfig(maintenance_period=math.inf).hard_timeout
    event = lookups(network(failed), LOOKUPS)
    assert max(r.latency for r in event) < hard
    lockstep = lookups(network(failed, lookup_factory=LockstepLookup), LOOKUPS)
    if failed == SILENT:
        assert statistics.median(r.latency for r in lockstep) >= hard
    assert statistics.median(r.latency for r in event) < statistics.median(r.latency for r in lockstep)


def test_the_simulation_is_deterministic() -> None:
    first = [(r.result.queries, r.latency, r.result.closest) for r in lookups(network(SILENT, seed=5), 20)]
    again = [(r.result.queries, r.latency, r.result.closest) for r in lookups(network(SILENT, seed=5), 20)]
    assert first == again


def test_nodes_that_join_through_one_bootstrap_find_each_other() -> None:
    net = SimNetwork(300, seed=2)
    net.join_all()
    sizes = [len(sim.dht.table) for sim in net.nodes.values()]
    assert min(sizes) >= net.config.k
    for address, sim in net.nodes.items():  # a table holds only nodes that spoke to it themselves
        assert {c.address for c in sim.dht.table} <= net.heard[address]
    net.fail(0.25, DEAD)
    assert all(found_closest(net, r) for r in lookups(net, 50))


def test_republish_keeps_a_value_at_the_k_closest_and_expiry_drops_it() -> None:
    config = DhtConfig(maintenance_period=10.0, republish_interval=60.0, refresh_interval=1e9)
    net = SimNetwork(300, seed=4, config=config)
    net.populate()
    key = as_id(net.rng.getrandbits(ID_BITS))
    value = Value(key, 1, 400.0, b"object")
    origin = net.live()[0]
    sent_to = net.publish(origin, value)
    assert {c.address for c in sent_to} == set(net.closest_live(key, net.config.k, exclude=origin))
    holders = [a for a, sim in net.nodes.items() if key in sim.dht.store]
    # Half the holders die; the survivors' republish stores it at the new k closest live.
    for address in holders[: len(holders) // 2]:
        net.nodes[address].state = DEAD
    net.advance(200.0)
    live_holders = {a for a, sim in net.nodes.items() if sim.state == LIVE and key in sim.dht.store}
    assert set(net.closest_live(key, net.config.k)) <= live_holders
    net.advance(410.0)  # past `expires`: no node serves it any more
    assert not any(key in sim.dht.store for sim in net.nodes.values() if sim.state == LIVE)
