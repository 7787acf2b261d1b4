"""The node-level DHT machine: requests in, answers and sends out, timers driven by tick(now)."""

from __future__ import annotations

import random

from chrnode.dht.ids import Contact, as_id, as_int, bucket_index
from chrnode.dht.messages import FindNode, FindValue, Found, Nodes, Ping, Pong, Refused, Store, Stored
from chrnode.dht.node import DhtConfig, DhtNode, LookupDone, Published, Send
from chrnode.dht.store import Value

OWN = Contact(as_id(1 << 159), "10.0.0.1", 51055, record="own")


def peer(n: int) -> Contact:
    return Contact(as_id(n), "10.0.0.2", 51055 + n % 100, record=f"node-{n}")


def make(**config: float) -> DhtNode:
    return DhtNode(OWN, config=DhtConfig(**config), rng=random.Random(7))  # type: ignore[arg-type]


def sends(actions: list[object]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def test_a_request_answers_and_makes_its_sender_a_verified_contact() -> None:
    node = make()
    answer, actions = node.on_request(peer(5), Ping(), now=12.5)
    assert answer == Pong(12.5) and actions == []
    assert peer(5).address in node.table
    answer, _ = node.on_request(peer(6), FindNode(as_id(4)), now=13.0)
    assert answer == Nodes([peer(5)])  # closest first, never the asker itself


def test_store_keeps_the_highest_seq_and_refuses_stale_and_expired() -> None:
    node = make()
    key = as_id(77)
    assert node.on_request(peer(5), Store(Value(key, 3, 100.0, "v3")), now=1.0)[0] == Stored()
    assert node.on_request(peer(5), Store(Value(key, 2, 100.0, "v2")), now=2.0)[0] == Refused(
        "stale", "a newer object (higher seq) is held for this key"
    )
    refused = node.on_request(peer(5), Store(Value(key, 9, 1.5, "old")), now=2.0)[0]
    assert isinstance(refused, Refused) and refused.code == "expired"
    answer = node.on_request(peer(6), FindValue(key), now=3.0)[0]
    assert isinstance(answer, Found) and answer.value.obj == "v3"
    node.tick(100.0)  # past `expires`: dropped, FIND_VALUE answers with nodes again
    assert isinstance(node.on_request(peer(6), FindValue(key), now=100.0)[0], Nodes)
    assert len(node.store) == 0


def learn(node: DhtNode, *ns: int) -> None:
    for n in ns:
        node.on_request(peer(n), Ping(), now=0.0)


def test_a_lookup_sends_alpha_queries_and_the_next_as_each_answer_arrives() -> None:
    node = make()
    learn(node, 10, 11, 12, 13)
    _, actions = node.lookup(as_id(0), now=1.0)
    first = sends(actions)
    assert [s.to for s in first] == [peer(10), peer(11), peer(12)]
    assert all(s.request == FindNode(as_id(0)) for s in first)
    more = sends(node.on_answer(first[0].request_id, Nodes([peer(3)]), now=1.1))
    assert [s.to for s in more] == [peer(3)]


def test_the_soft_timeout_asks_the_next_and_the_hard_timeout_fails_the_contact() -> None:
    node = make(hard_timeout=5.0, rtt_initial=0.5, alpha=1)
    learn(node, 10, 11)
    _, actions = node.lookup(as_id(0), now=0.0)
    [first] = sends(actions)
    assert first.to == peer(10)
    assert node.tick(0.4) == []
    assert node.next_deadline() == 0.5
    [second] = sends(node.tick(0.5))  # the soft timeout: slot freed, next contact asked
    assert second.to == peer(11)
    [done] = [a for a in node.on_answer(second.request_id, Nodes([]), now=0.6) if isinstance(a, LookupDone)]
    assert done.result.closest == [peer(11)]  # done without waiting for the slow one
    assert node.table.failures(peer(10).address) == 0
    assert node.outstanding == 1  # its request stays open until the hard timeout
    node.tick(5.0)
    assert node.table.failures(peer(10).address) == 1 and node.outstanding == 0
    assert node.on_answer(first.request_id, Nodes([]), now=5.1) == []  # too late, ignored


def test_the_soft_timeout_follows_measured_round_trips() -> None:
    node = make(rtt_initial=1.0, rtt_floor=0.01)
    learn(node, 10, 11, 12, 13, 14, 15)
    for now in (1.0, 2.0, 3.0):
        ping = node._send(peer(10), Ping(), now, None)
        node.on_answer(ping.request_id, Pong(now), now + 0.1)
    assert abs(node.rtt.timeout(peer(99).address) - 0.1) < 0.2 < 1.0


def test_an_error_answer_fails_the_query() -> None:
    node = make()
    learn(node, 10)
    _, actions = node.lookup(as_id(0), now=0.0)
    [query] = sends(actions)
    out = node.on_answer(query.request_id, Refused("rate_limited", "slow down"), now=0.1)
    [done] = [a for a in out if isinstance(a, LookupDone)]
    assert not done.result.ok and node.table.failures(peer(10).address) == 1


def test_publish_stores_at_the_k_closest_that_answered() -> None:
    node = make(k=2)
    learn(node, 10, 11, 12)
    value = Value(as_id(8), 1, 1e9, "obj")
    status, actions = node.publish(value, now=0.0)
    assert status == "stored" and len(node.store) == 1
    queries = sends(actions)
    out: list[object] = []
    for query in queries:
        out += node.on_answer(query.request_id, Nodes([]), now=0.1)
    stores = [s for s in sends(out) if isinstance(s.request, Store)]
    [published] = [a for a in out if isinstance(a, Published)]
    closest = sorted((peer(n) for n in (10, 11, 12)), key=lambda c: as_int(c.address) ^ 8)[:2]
    assert [s.to for s in stores] == published.sent_to == closest
    assert all(s.request == Store(value) for s in stores)


def test_find_value_caches_at_the_closest_node_without_it() -> None:
    node = make(alpha=1)
    learn(node, 10, 11)
    key = as_id(0)
    _, actions = node.lookup(key, now=0.0, find_value=True)
    [q1] = sends(actions)
    [q2] = sends(node.on_answer(q1.request_id, Nodes([]), now=0.1))
    value = Value(key, 1, 1e9, "obj")
    out = node.on_answer(q2.request_id, Found(value), now=0.2)
    [done] = [a for a in out if isinstance(a, LookupDone)]
    assert done.result.value == value
    [cache] = sends(out)
    assert cache.to == q1.to and cache.request == Store(value)


def test_refresh_looks_up_a_random_id_in_every_stale_bucket() -> None:
    node = make(refresh_interval=100.0, maintenance_period=10.0)
    learn(node, 10, as_int(OWN.address) ^ (1 << 150))  # buckets 159 and 150
    assert sends(node.tick(50.0)) == []
    refresh = sends(node.tick(100.0))
    targets = [s.request.target for s in refresh if isinstance(s.request, FindNode)]
    buckets = {bucket_index(OWN.address, t) for t in targets}
    assert buckets == set(range(150, 160))  # from the nearest populated bucket outwards
    assert node.table.stale_buckets(100.0, 100.0) == []  # each was touched by its lookup
    assert sends(node.tick(150.0)) == []


def test_republish_stores_held_values_again_unless_one_arrived_recently() -> None:
    node = make(republish_interval=100.0, maintenance_period=10.0, refresh_interval=1e9)
    learn(node, 10)
    node.on_request(peer(10), Store(Value(as_id(5), 1, 1e9, "a")), now=0.0)
    node.on_request(peer(10), Store(Value(as_id(6), 1, 1e9, "b")), now=0.0)
    node.on_request(peer(10), Store(Value(as_id(6), 1, 1e9, "b")), now=60.0)  # another holder's
    queries = sends(node.tick(100.0))
    assert [q.request for q in queries] == [FindNode(as_id(5))]
