"""The node-level DHT machine: requests in, answers and sends out, timers driven by tick(now)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert node.on_answer(second.request_id, Nodes([]), now=0.6) == []  # peer(10) may still answer
    assert node.next_deadline() == 1.5  # abandon_factor (3) x the soft timeout after sending
    [done] = [a for a in node.tick(1.5) if isinstance(a, LookupDone)]
    assert done.result.closest == [peer(11)]  # done long before the hard timeout
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


# -- generated event sequences, lying and malformed peers included -----------------------------

_ADDRESSES = st.sampled_from([as_id(n) for n in (1, 2, 3, 5, 8, 13, 1 << 100, 1 << 159, (1 << 159) | 7)])
_CONTACTS = st.builds(lambda a: Contact(a, "10.0.0.3", 51055), _ADDRESSES)
_VALUES = st.builds(
    Value,
    _ADDRESSES,
    st.integers(min_value=0, max_value=5),
    st.floats(min_value=0.0, max_value=500.0),
    st.just("obj"),
)
_REQUESTS = st.one_of(
    st.just(Ping()),
    st.builds(FindNode, _ADDRESSES),
    st.builds(FindValue, _ADDRESSES),
    st.builds(Store, _VALUES),
)
_ANSWERS = st.one_of(
    st.builds(Pong, st.floats(allow_nan=False)),
    st.builds(Nodes, st.lists(_CONTACTS, max_size=25)),  # more than k, own address, repeats
    st.builds(Found, _VALUES),  # often of another key than asked
    st.just(Stored()),
    st.builds(Refused, st.sampled_from(["rate_limited", "stale"]), st.just("no")),
)
_EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("request"), _CONTACTS, _REQUESTS),
        st.tuples(st.just("answer"), st.integers(min_value=0, max_value=40), _ANSWERS),
        st.tuples(st.just("failure"), st.integers(min_value=0, max_value=40), st.none()),
        st.tuples(st.just("lookup"), _ADDRESSES, st.booleans()),
        st.tuples(st.just("tick"), st.floats(min_value=0.0, max_value=3.0), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=250, deadline=None)
@given(_EVENTS)
def test_the_node_stays_consistent_under_any_events(events: list[tuple[str, object, object]]) -> None:
    node = make(k=4, alpha=2, hard_timeout=2.0, maintenance_period=5.0, refresh_interval=20.0)
    now = 0.0
    sent: list[int] = []
    for kind, first, second in events:
        if kind == "request":
            assert isinstance(first, Contact)
            answer, actions = node.on_request(first, second, now)  # type: ignore[arg-type]
            if isinstance(answer, Nodes):
                assert len(answer.contacts) <= 4 and first not in answer.contacts
                assert OWN not in answer.contacts
        elif kind == "answer":
            assert isinstance(first, int)
            actions = node.on_answer(sent[first % len(sent)] if sent else first, second, now)  # type: ignore[arg-type]
        elif kind == "failure":
            assert isinstance(first, int)
            actions = node.on_failure(sent[first % len(sent)] if sent else first, now)
        elif kind == "lookup":
            assert isinstance(first, bytes) and isinstance(second, bool)
            actions = node.lookup(first, now, find_value=second)[1]
        else:
            assert isinstance(first, float)
            now += first
            actions = node.tick(now)
        for action in actions:
            if isinstance(action, Send):
                assert action.to.address != OWN.address
                sent.append(action.request_id)
            if isinstance(action, LookupDone) and action.result.value is not None:
                assert action.result.value.key == action.result.target
        assert OWN.address not in node.table
        assert node.next_deadline() >= 0
    # Whatever happened, every request ends by its hard timeout and every lookup finishes.
    for _ in range(200):
        if node.outstanding == 0 and node.running_lookups == 0:
            break
        now += 2.0
        node.tick(now)
    assert node.outstanding == 0 and node.running_lookups == 0


def test_stats_count_what_happened() -> None:
    node = make(alpha=1)
    learn(node, 10)
    _, actions = node.lookup(as_id(0), now=0.0)
    [query] = sends(actions)
    node.on_answer(query.request_id, Nodes([]), now=0.2)
    node.on_request(peer(11), Store(Value(as_id(3), 1, 0.1, "x")), now=1.0)  # expired: refused
    stats = node.stats()
    assert stats["contacts"] == 1 + 1  # peer(10), and peer(11) which spoke to us
    assert stats["requests_served"] == 2 and stats["stores_refused"] == 1
    assert stats["requests_sent"] == 1 and stats["lookups_ok"] == 1
    assert stats["requests_outstanding"] == 0 and abs(stats["rtt_srtt_seconds"] - 0.2) < 1e-9


def test_a_fleet_node_from_config_gets_its_record_from_the_link_and_only_then_is_passed_on() -> None:
    node = make()
    seed = Contact(as_id(10), "fleet.example", 51055)  # from `fleet_nodes`: no node object yet
    _, actions = node.join([seed], now=0.0)
    [query] = sends(actions)
    assert query.to == seed
    proven = Contact(as_id(10), "fleet.example", 51055, record="node-10")
    node.on_answer(query.request_id, Nodes([]), now=0.1, sender=proven)
    assert node.table.get(as_id(10)) is not None and node.table.get(as_id(10)).record == "node-10"  # type: ignore[union-attr]
    answer, _ = node.on_request(peer(11), FindNode(as_id(9)), now=0.2)
    assert answer == Nodes([proven])
    bare = make()
    bare.table.heard_from(seed, now=0.0)  # a contact without record is never sent to others
    assert bare.on_request(peer(11), FindNode(as_id(9)), now=0.2)[0] == Nodes([])


def test_the_first_answer_brings_forward_the_soft_deadlines_set_from_rtt_initial() -> None:
    """Queries sent before any round trip was measured wait `rtt_initial`; the first answer
    brings their soft deadlines forward to the measured figure, later answers at about the same
    figure leave them be (no pass over the open requests), a much faster one brings them again."""
    node = make(hard_timeout=5.0, rtt_initial=1.0, rtt_floor=0.01, alpha=3)
    learn(node, *range(10, 20))
    _, actions = node.lookup(as_id(0), now=0.0)
    first, *others = sends(actions)
    assert len(others) == 2 and node.next_deadline() == 1.0
    node.on_answer(first.request_id, Nodes([]), now=0.02)  # a 20 ms round trip
    assert node.next_deadline() < 0.2  # the two others: soft timeout from 20 ms, not 1 s
    moved = sorted(t for t in node._timers if t[1] in {s.request_id for s in others})
    later = node.lookup(as_id(1), now=0.05)[1]
    quick = sends(later)[0]
    node.on_answer(quick.request_id, Nodes([]), now=0.071)  # 21 ms: about the same figure
    assert sorted(t for t in node._timers if t[1] in {s.request_id for s in others}) == moved
    slow_start = node.lookup(as_id(2), now=0.1)[1]
    # (the contacts that answered have round trips of their own: only the others follow the network's)
    fresh = [s for s in sends(slow_start) if s.to not in (first.to, quick.to)]
    soft_of = {s.request_id: min(t[0] for t in node._timers if t[1] == s.request_id) for s in fresh}
    assert soft_of
    for _ in range(12):  # round trips of 1 ms pull the estimate down to well under 3/4 of it
        ping = node._send(peer(19), Ping(), 0.1, None)
        node.on_answer(ping.request_id, Pong(0.1), now=0.101)
    brought = {i: min(t[0] for t in node._timers if t[1] == i) for i in soft_of}
    assert all(brought[i] < soft_of[i] for i in soft_of)
