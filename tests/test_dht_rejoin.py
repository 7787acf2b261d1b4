"""Rejoin: a node whose routing table empties joins through its fleet nodes again, with backoff."""

from __future__ import annotations

import logging
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.dht.ids import Contact, as_id, bucket_index
from chrnode.dht.messages import FindNode, Nodes, Ping
from chrnode.dht.node import DhtConfig, DhtNode, LookupDone, Send
from chrnode.dht.rejoin import REJOINED, RETRY, Rejoin

OWN = Contact(as_id(1 << 159), "10.0.0.1", 51055, record="own")
FLEET = Contact(as_id(3), "10.0.0.3", 51055, record="fleet")


def peer(n: int) -> Contact:
    return Contact(as_id(n), "10.0.0.2", 51055 + n % 100, record=f"node-{n}")


def sends(actions: list[object]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def done(actions: list[object]) -> list[LookupDone]:
    return [a for a in actions if isinstance(a, LookupDone)]


# ---- the backoff rule alone ---------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["empty", "tick", "fail", "fill"]), max_size=60), st.integers(0, 2**32))
def test_the_backoff_doubles_to_its_cap_and_resets_once_a_join_fills_the_table(
    events: list[str], seed: int
) -> None:
    rule = Rejoin(1.0, 16.0, random.Random(seed))
    now, lookup = 0.0, 0
    for event in events:
        now += 0.5
        if event == "empty":
            rule.emptied(now)
        elif event == "tick" and rule.due(now):
            lookup += 1
            rule.started(lookup)
        elif event == "tick":
            now = max(now, rule.due_at if rule.due_at < math.inf else now)
        elif rule.running is not None:
            before = rule.attempts
            outcome = rule.finished(rule.running, 1 if event == "fill" else 0, now)
            if event == "fill":
                assert outcome == REJOINED and rule.attempts == 0 and rule.due_at == math.inf
            else:
                assert outcome == RETRY and rule.attempts == before + 1
                ceiling = min(16.0, 2.0 ** (rule.attempts - 1) * 2)
                assert ceiling / 2 <= rule.due_at - now <= ceiling
        # one attempt at a time: while a join runs, none is armed
        assert rule.running is None or rule.due_at == math.inf
        assert not rule.due(now) or rule.running is None


def test_a_finished_lookup_that_is_not_the_join_changes_nothing() -> None:
    rule = Rejoin(1.0, 8.0, random.Random(1))
    rule.started(4)
    assert rule.finished(5, 0, 1.0) == "" and rule.running == 4


def test_bad_backoff_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="initial <= maximum"):
        Rejoin(10.0, 1.0)


# ---- in the node machine ------------------------------------------------------------------------------
def joined_node(**config: float) -> DhtNode:
    """A node that joined through FLEET, which answered and named nobody."""
    node = DhtNode(OWN, config=DhtConfig(**config), rng=random.Random(3))  # type: ignore[arg-type]
    _, actions = node.join([FLEET], now=0.0)
    [query] = sends(actions)
    assert query.to == FLEET and query.request == FindNode(OWN.address)
    assert done(node.on_answer(query.request_id, Nodes([]), now=0.1))
    assert FLEET.address in node.table
    return node


def test_an_emptied_table_rejoins_through_the_fleet_with_growing_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = joined_node(max_failures=1, rejoin_initial=2.0, rejoin_max=8.0)
    assert node.next_deadline() == node.maintenance.next_run  # nothing to rejoin yet
    _, actions = node.lookup(as_id(99), now=1.0)
    [query] = sends(actions)
    with caplog.at_level(logging.INFO, logger="chrnode.dht"):
        node.on_failure(query.request_id, now=1.2)  # the only contact failed: the table is empty
    assert len(node.table) == 0
    assert "routing table is empty" in caplog.text
    now, delays = 1.2, []
    for _ in range(4):
        due = node.next_deadline()
        delays.append(due - now)
        assert node.tick(due - 0.001) == []  # not before its time
        [again] = sends(node.tick(due))
        assert again.to == FLEET and again.request == FindNode(OWN.address)
        now = due + 0.05
        [finished] = done(node.on_failure(again.request_id, now))  # the fleet is unreachable too
        assert finished.purpose == "rejoin" and not finished.result.ok
    # 2 s, then 4, 8, 8 (the cap), each drawn from its upper half
    for delay, ceiling in zip(delays, [2.0, 4.0, 8.0, 8.0], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert "next attempt in" in caplog.text
    assert node.counters["rejoins"] == 4
    # The fleet is back: the next attempt fills the table and the rejoining stops.
    due = node.next_deadline()
    [again] = sends(node.tick(due))
    with caplog.at_level(logging.INFO, logger="chrnode.dht"):
        node.on_answer(again.request_id, Nodes([]), now=due + 0.05)
    assert FLEET.address in node.table
    assert "joined the network: 1 contacts" in caplog.text
    assert node.next_deadline() == node.maintenance.next_run
    assert node.rejoin.attempts == 0


def test_a_first_join_that_reaches_nobody_is_retried() -> None:
    node = DhtNode(OWN, config=DhtConfig(rejoin_initial=1.0), rng=random.Random(3))
    _, actions = node.join([FLEET], now=0.0)
    [query] = sends(actions)
    node.on_failure(query.request_id, now=0.5)
    due = node.next_deadline()
    assert 0.5 + 1.0 <= due <= 0.5 + 2.0  # a failed join: the second delay, 2 x initial at most
    assert [s.to for s in sends(node.tick(due))] == [FLEET]


def test_a_table_refilled_by_a_peer_before_the_attempt_cancels_it() -> None:
    node = joined_node(max_failures=1)
    _, actions = node.lookup(as_id(99), now=1.0)
    node.on_failure(sends(actions)[0].request_id, now=1.1)
    due = node.next_deadline()
    node.on_request(peer(8), Ping(), now=due - 0.5)  # someone reached us: the table is not empty
    assert sends(node.tick(due)) == []
    assert node.next_deadline() == node.maintenance.next_run


def test_a_node_without_fleet_nodes_never_rejoins() -> None:
    node = DhtNode(OWN, config=DhtConfig(max_failures=1), rng=random.Random(3))
    node.on_request(peer(8), Ping(), now=0.0)
    _, actions = node.lookup(as_id(99), now=1.0)
    node.on_failure(sends(actions)[0].request_id, now=1.1)
    assert len(node.table) == 0
    assert node.next_deadline() == node.maintenance.next_run


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["answer", "fail", "tick", "lookup"]), st.integers(1, 40)), max_size=40
    )
)
def test_an_empty_table_always_has_a_join_running_or_armed(events: list[tuple[str, int]]) -> None:
    """Liveness under generated events: a node with fleet nodes is never left empty and idle."""
    node = joined_node(max_failures=1, rejoin_initial=1.0, rejoin_max=4.0)
    now = 1.0
    open_sends: list[Send] = []
    for kind, n in events:
        now += 0.3
        actions: list[object] = []
        if kind == "lookup":
            actions = node.lookup(as_id(n), now)[1]
        elif kind == "tick":
            now = max(now, min(node.next_deadline(), now + 10))
            actions = node.tick(now)
        elif open_sends:
            send = open_sends.pop(0)
            if kind == "answer":
                actions = node.on_answer(send.request_id, Nodes([peer(n)]), now)
            else:
                actions = node.on_failure(send.request_id, now)
        open_sends += sends(actions)
        if not len(node.table):
            assert node.rejoin.running is not None or node.rejoin.due_at < math.inf


def test_refresh_after_a_join_looks_up_one_id_in_every_bucket_past_the_nearest() -> None:
    node = DhtNode(OWN, config=DhtConfig(refresh_on_join=True), rng=random.Random(3))
    near = Contact(bytes([0x80] + [0] * 18 + [9]), "10.0.0.9", 51055, record="near")  # bucket 3
    node.on_request(near, Ping(), now=0.0)
    node.on_request(FLEET, Ping(), now=0.0)  # bucket 159
    ids, actions = node.refresh_beyond_nearest(now=1.0)
    assert len(ids) == 159 - 3 and node.running_lookups == node.config.refreshes_in_flight
    targets = {s.request.target for s in sends(actions) if isinstance(s.request, FindNode)}
    assert {bucket_index(OWN.address, t) for t in targets} <= set(range(4, 160))
    off = DhtNode(OWN, config=DhtConfig(refresh_on_join=False), rng=random.Random(3))
    off.on_request(FLEET, Ping(), now=0.0)
    assert off.refresh_beyond_nearest(now=1.0) == ([], [])


def test_a_refresh_after_a_join_skips_the_buckets_the_join_lookup_met_whole() -> None:
    """The join's lookup of our own id met every node nearer than the farthest of its k closest:
    only the bucket that farthest one is in, and those beyond, are looked up again."""
    node = DhtNode(OWN, config=DhtConfig(refresh_on_join=True), rng=random.Random(5))
    k = node.config.k
    met = [Contact(as_id((1 << 159) ^ (i + 1)), "10.0.0.9", 51055, record=f"m{i}") for i in range(k - 1)]
    farthest = Contact(as_id((1 << 159) ^ (1 << 40) ^ 7), "10.0.0.9", 51055, record="far")  # bucket 40
    for contact in [*met, farthest]:
        node.on_request(contact, Ping(), now=0.0)
    nearest = min(bucket_index(OWN.address, c.address) for c in met)
    assert nearest == 0
    ids, actions = node.refresh_beyond_nearest(now=1.0, explored=[*met, farthest])
    targets = [s.request.target for s in sends(actions) if isinstance(s.request, FindNode)]
    started = list(range(40, 40 + node.config.refreshes_in_flight))  # the rest wait their turn
    assert sorted({bucket_index(OWN.address, t) for t in targets}) == started
    assert len(ids) == 160 - 40
    # Fewer than k met (a small network, or a join that reached few): every bucket past the nearest.
    again = DhtNode(OWN, config=DhtConfig(refresh_on_join=True), rng=random.Random(5))
    for contact in [*met, farthest]:
        again.on_request(contact, Ping(), now=0.0)
    ids, _ = again.refresh_beyond_nearest(now=1.0, explored=met)
    assert len(ids) == 159 - nearest
