"""MERKLE reconciliation (SPEC 4 type 0x28): two stores find exactly what differs, asking little."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.crypto import PrivateKey
from chrnode.objects import merkle
from chrnode.objects.kinds import NodeRecord, make_node_object
from chrnode.objects.signed import SignedObject
from chrnode.objects.store import ObjectStore

NOW = 1_800_000_000


@functools.cache
def key_of(i: int) -> PrivateKey:
    return PrivateKey.from_bytes((i + 1).to_bytes(32, "big"))


@functools.cache
def obj(i: int, seq: int) -> SignedObject:
    key = key_of(i)
    record = NodeRecord(key.address, "127.0.0.1", (41046,), 51055, 2, 31337)
    return make_node_object(key, record, seq=seq, expires=NOW + 3600)


def store_of(items: dict[int, int]) -> ObjectStore:
    store = ObjectStore()
    for i, seq in items.items():
        store.offer(obj(i, seq), NOW)
    return store


def reconcile(ours: ObjectStore, theirs: ObjectStore) -> merkle.Reconciler:
    rec = merkle.Reconciler(ours, NOW)
    queue = rec.start()
    while queue:
        query = queue.pop()
        queue.extend(rec.on_answer(query, merkle.answer(theirs, query.prefix, query.bits, NOW)))
    assert rec.done and not rec.gave_up
    return rec


def expected(ours: dict[int, int], theirs: dict[int, int]) -> tuple[set[bytes], set[bytes]]:
    fetch = {key_of(i).address for i, s in theirs.items() if s > ours.get(i, -1)}
    push = {key_of(i).address for i, s in ours.items() if s > theirs.get(i, -1)}
    return fetch, push


def test_equal_stores_settle_in_one_query() -> None:
    items = {i: 1 for i in range(200)}
    rec = reconcile(store_of(items), store_of(items))
    assert rec.sent == 1 and not rec.fetch and not rec.push


def test_small_stores_answer_with_items() -> None:
    theirs = store_of({1: 3, 2: 1})
    reply = merkle.answer(theirs, b"", 0, NOW)
    assert sorted(reply["items"]) == sorted([[key_of(1).address, 3], [key_of(2).address, 1]])
    rec = reconcile(store_of({1: 2, 3: 1}), theirs)
    assert rec.sent == 1
    assert rec.fetch == {key_of(1).address, key_of(2).address} and rec.push == {key_of(3).address}


def test_one_difference_in_a_large_store_costs_a_few_queries() -> None:
    base = {i: 1 for i in range(600)}
    theirs = dict(base)
    theirs[77] = 2
    rec = reconcile(store_of(base), store_of(theirs))
    assert rec.fetch == {key_of(77).address} and not rec.push
    # One path down the key space: two queries a level until a range holds at most FEW objects
    # (600 objects: about log2(600 / 16) ~ 6 levels).
    assert rec.sent <= 2 * 8 + 1


@given(
    st.dictionaries(st.integers(0, 399), st.integers(1, 3), max_size=300),
    st.dictionaries(st.integers(0, 399), st.integers(1, 3), max_size=300),
)
@settings(max_examples=25, deadline=None)
def test_reconcile_finds_exactly_the_difference(ours: dict[int, int], theirs: dict[int, int]) -> None:
    rec = reconcile(store_of(ours), store_of(theirs))
    assert (rec.fetch, rec.push) == expected(ours, theirs)


def test_range_hash_ignores_what_lies_outside_the_range() -> None:
    a, b = store_of({i: 1 for i in range(50)}), store_of({i: 1 for i in range(50)})
    b.offer(obj(60, 1), NOW)
    key = key_of(60).address
    other_half = bytes([key[0] ^ 0x80])
    assert merkle.range_hash(a, other_half, 1, NOW) == merkle.range_hash(b, other_half, 1, NOW)
    assert merkle.range_hash(a, key, 1, NOW) != merkle.range_hash(b, key, 1, NOW)


def test_expired_objects_do_not_count() -> None:
    store = store_of({1: 1})
    assert merkle.answer(store, b"", 0, NOW + 3600) == {"items": []}


@pytest.mark.parametrize(
    "reply",
    [
        None,
        {"hash": b"short"},
        {"items": [[b"\x00" * 19, 1]]},
        {"items": [[b"\x00" * 20, -1]]},
        {"items": [[b"\x00" * 20]]},
        {"items": [[b"\x00" * 20, 1]] * 100},
        {},
    ],
)
def test_malformed_answers_are_refused(reply: object) -> None:
    rec = merkle.Reconciler(store_of({}), NOW)
    (query,) = rec.start()
    with pytest.raises(ValueError):
        rec.on_answer(query, reply)


def test_items_outside_the_range_are_refused() -> None:
    rec = merkle.Reconciler(store_of({i: 1 for i in range(40)}), NOW)
    (root,) = rec.start()
    low, high = rec.on_answer(root, {"hash": b"\x01" * 32})
    with pytest.raises(ValueError, match="outside"):
        rec.on_answer(low, {"items": [[b"\xff" * 20, 1]]})
    assert rec.pending == {high}


def test_a_lying_peer_cannot_make_it_descend_for_ever() -> None:
    rec = merkle.Reconciler(store_of({i: 1 for i in range(40)}), NOW)
    queue = rec.start()
    while queue:  # the peer says "different" for every range, never lists items
        query = queue.pop()
        if query.bits >= 160:
            continue
        queue.extend(rec.on_answer(query, {"hash": b"\x02" * 32}))
    assert rec.gave_up and rec.sent <= merkle.MAX_QUERIES


def test_answer_to_an_unasked_range_is_refused() -> None:
    rec = merkle.Reconciler(store_of({}), NOW)
    rec.start()
    with pytest.raises(ValueError, match="not asked"):
        rec.on_answer(merkle.Query(b"\x80", 1), {"items": []})
