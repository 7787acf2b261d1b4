"""The join's refreshes run a few at a time (chrnode.dht.paced), nearest bucket first."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.dht.ids import Contact, as_id, bucket_index
from chrnode.dht.messages import FindNode, Nodes, Ping, Pong
from chrnode.dht.node import DhtConfig, DhtNode, LookupDone, Send
from chrnode.dht.paced import PacedRefreshes

OWN = Contact(as_id(1 << 159), "10.0.0.1", 51055, record="own")
FLEET = Contact(as_id(3), "10.0.0.3", 51055, record="fleet")  # bucket 159
NEAR = Contact(bytes([0x80] + [0] * 18 + [9]), "10.0.0.9", 51055, record="near")  # bucket 3


# ---- the rule alone -----------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.lists(st.sampled_from(["add", "next", "end", "end-other"]), max_size=80))
def test_never_more_than_the_limit_run_and_each_starts_once_in_order(limit: int, ops: list[str]) -> None:
    rule = PacedRefreshes(limit)
    added: list[int] = []
    started: list[int] = []
    running: set[int] = set()
    for op in ops:
        if op == "add":
            added.append(len(added) + 1)
            rule.add(added[-1], bytes(20))
        elif op == "next":
            got = rule.next()
            if got is None:
                assert len(running) == limit or len(started) == len(added)
            else:
                started.append(got[0])
                running.add(got[0])
        elif op == "end" and running:
            assert rule.ended(min(running))
            running.discard(min(running))
        else:
            assert not rule.ended(10_000)  # not one of these refreshes: no slot freed
        assert rule.running == len(running) <= limit
    assert started == added[: len(started)]  # in the order added, none twice


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        PacedRefreshes(0)


# ---- in the node machine ------------------------------------------------------------------------------
def _joined_node(limit: int, seed: int) -> DhtNode:
    node = DhtNode(
        OWN, config=DhtConfig(refresh_on_join=True, refreshes_in_flight=limit), rng=random.Random(seed)
    )
    node.on_request(NEAR, Ping(), now=0.0)
    node.on_request(FLEET, Ping(), now=0.0)
    return node


def test_the_join_refresh_starts_the_nearest_buckets_first_and_only_a_few() -> None:
    node = _joined_node(3, seed=3)
    ids, actions = node.refresh_beyond_nearest(now=1.0)
    assert len(ids) == 159 - 3 and node.running_lookups == 3
    targets = {a.request.target for a in actions if isinstance(a, Send) and isinstance(a.request, FindNode)}
    assert sorted(bucket_index(OWN.address, t) for t in targets) == [4, 5, 6]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**32), st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_every_bucket_past_the_nearest_is_refreshed_once_never_more_than_n_at_a_time(
    limit: int, seed: int, fail_rates: list[float]
) -> None:
    """Answers and failures in a generated order (failures evict the two contacts, and the
    refreshes left then finish at once with nobody to ask): every refresh ends exactly once."""
    node = _joined_node(limit, seed)
    rng = random.Random(seed)
    ids, actions = node.refresh_beyond_nearest(now=1.0)
    now, step, failures = 1.0, 0, 0
    open_sends: list[Send] = []
    finished: list[int] = []
    first_seen: list[int] = []  # the bucket of each refresh target, in the order its lookup began
    while True:
        for action in actions:
            if isinstance(action, LookupDone):
                assert action.purpose == "refresh"
                finished.append(action.lookup_id)
            elif isinstance(action, Send):
                open_sends.append(action)
                if isinstance(action.request, FindNode):
                    bucket = bucket_index(OWN.address, action.request.target)
                    if bucket not in first_seen:
                        first_seen.append(bucket)
        assert node.running_lookups <= limit
        if not open_sends:
            break
        send = open_sends.pop(rng.randrange(len(open_sends)))
        now += 0.01
        step += 1
        if rng.random() < fail_rates[step % len(fail_rates)]:
            failures += 1
            actions = node.on_failure(send.request_id, now)
        else:
            answer = Pong(now) if isinstance(send.request, Ping) else Nodes([])
            actions = node.on_answer(send.request_id, answer, now)
    assert sorted(finished) == sorted(ids)  # each refresh ended, once
    assert node.running_lookups == 0
    assert first_seen == sorted(first_seen)  # nearest first
    assert set(first_seen) <= set(range(4, 160))
    if failures == 0:  # nobody evicted: every refresh asked someone
        assert first_seen == list(range(4, 160))
