"""Signed objects (SPEC 6): canonical encoding, signatures, the kinds' rules and the store's rules."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.crypto import PrivateKey
from chrnode.edge.hello import sign_hello
from chrnode.objects.errors import ObjectError
from chrnode.objects.kinds import (
    NodeRecord,
    check_kind,
    location_device,
    make_hello_location,
    make_location,
    make_node_object,
)
from chrnode.objects.signed import MAX_DATA_DEPTH, SignedObject, canonical_bytes
from chrnode.objects.store import ObjectStore, key_range
from chrnode.ticket import Ticket

NODE = PrivateKey.from_bytes(b"\x02" * 32)
OTHER_NODE = PrivateKey.from_bytes(b"\x03" * 32)
DEVICE = PrivateKey.from_bytes(b"\x01" * 32)
FLEET = bytes.fromhex("6000000000000000000000000000000000000006")
NOW = 1_800_000_000


def record(key: PrivateKey = NODE) -> NodeRecord:
    return NodeRecord(key.address, "127.0.0.1", (41046, 41047), 51055, 2, 31337)


def ticket(device: PrivateKey = DEVICE, node: bytes = NODE.address, total: int = 1000) -> Ticket:
    return Ticket(31337, 694, node, FLEET, 1, total).sign(device)


def node_obj(seq: int = 1, expires: int = NOW + 3600, key: PrivateKey = NODE) -> SignedObject:
    return make_node_object(key, record(key), seq=seq, expires=expires)


def wire_roundtrip(obj: SignedObject) -> SignedObject:
    packed = msgpack.packb(obj.to_wire(), use_bin_type=True)
    return SignedObject.from_wire(msgpack.unpackb(packed, raw=False))


def code_of(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ObjectError) as info:
        fn(*args, **kwargs)
    return info.value.code


# --- the codec -------------------------------------------------------------------------------------
def test_canonical_bytes_sort_keys_at_every_level() -> None:
    a = canonical_bytes({"b": 1, "a": {"z": b"\x01", "y": [{"d": 1, "c": 2}]}})
    b = canonical_bytes({"a": {"y": [{"c": 2, "d": 1}], "z": b"\x01"}, "b": 1})
    assert a == b
    assert a == bytes.fromhex("82a161 82a179 9182a16302a16401 a17ac40101 a16201".replace(" ", ""))


def test_floats_and_non_string_keys_have_no_canonical_form() -> None:
    assert code_of(canonical_bytes, {"x": 1.5}) == "bad_payload"
    assert code_of(canonical_bytes, {1: 2}) == "bad_payload"


def test_node_object_round_trips_and_verifies() -> None:
    obj = node_obj()
    back = wire_roundtrip(obj)
    assert back == obj and back.signer == NODE.address
    check_kind(back)
    assert NodeRecord.from_object(back) == record()


@given(st.sampled_from(["kind", "key", "signer", "seq", "expires", "data"]), st.data())
@settings(max_examples=60, deadline=None)
def test_any_changed_field_breaks_the_signature_or_shape(name: str, data: st.DataObject) -> None:
    wire = node_obj().to_wire()
    changed = {
        "kind": "location",
        "key": OTHER_NODE.address,
        "signer": OTHER_NODE.address,
        "seq": data.draw(st.integers(2, 2**64 - 1)),
        "expires": data.draw(st.integers(0, 2**64 - 1).filter(lambda v: v != NOW + 3600)),
        "data": {**wire["data"], "host": "10.0.0.1"},
    }[name]
    wire[name] = changed
    assert code_of(SignedObject.from_wire, wire) == "bad_signature"


GARBAGE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=8) | st.text(max_size=8) | st.floats(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4) | st.integers(), inner),
    max_leaves=30,
)


@given(GARBAGE)
@settings(max_examples=300, deadline=None)
def test_generated_wire_objects_never_crash(garbage: Any) -> None:
    wire = node_obj().to_wire()
    for target in ("data", "kind", "key", "seq", "signature"):
        bad = {**wire, target: garbage}
        try:
            obj = SignedObject.from_wire(bad)
        except ObjectError as exc:
            assert exc.code in {"bad_payload", "bad_signature"}
        else:  # only the untouched value can pass
            assert obj.to_wire() == wire


def test_deep_nesting_is_refused_at_once() -> None:
    deep: Any = 1
    for _ in range(1000):
        deep = [deep]
    wire = {**node_obj().to_wire(), "data": {"x": deep}}
    assert code_of(SignedObject.from_wire, wire) == "bad_payload"
    shallow: Any = 1
    for _ in range(MAX_DATA_DEPTH - 2):  # data is level 1, "x" level 2
        shallow = [shallow]
    SignedObject.sign(NODE, kind="node", key=NODE.address, seq=1, expires=NOW, data={"x": shallow})


def test_missing_fields_are_named() -> None:
    wire = node_obj().to_wire()
    del wire["seq"], wire["signature"]
    with pytest.raises(ObjectError, match="seq, signature"):
        SignedObject.from_wire(wire)


# --- kinds -----------------------------------------------------------------------------------------
def test_node_object_must_name_itself() -> None:
    forged = SignedObject.sign(
        OTHER_NODE, kind="node", key=NODE.address, seq=9, expires=NOW, data=record().to_data()
    )
    assert code_of(check_kind, wire_roundtrip(forged)) == "mis_keyed"


def test_node_data_is_checked() -> None:
    data = {**record().to_data(), "peer_port": 70000}
    obj = SignedObject.sign(NODE, kind="node", key=NODE.address, seq=1, expires=NOW, data=data)
    assert code_of(check_kind, obj) == "bad_payload"


def test_location_carries_the_devices_ticket() -> None:
    loc = wire_roundtrip(make_location(NODE, ticket(), seq=1, expires=NOW + 60))
    assert loc.key == DEVICE.address and location_device(loc) == DEVICE.address


def test_location_for_a_device_that_paid_another_node_is_refused() -> None:
    # OTHER_NODE holds a ticket naming NODE and claims the device: the ticket names NODE.
    loc = SignedObject.sign(
        OTHER_NODE,
        kind="location",
        key=DEVICE.address,
        seq=1,
        expires=NOW,
        data={"ticket": ticket().to_wire()},
    )
    assert code_of(check_kind, loc) == "mis_keyed"
    with pytest.raises(ObjectError):
        make_location(OTHER_NODE, ticket(), seq=1, expires=NOW)


def test_location_keyed_to_another_device_is_refused() -> None:
    loc = SignedObject.sign(
        NODE, kind="location", key=OTHER_NODE.address, seq=1, expires=NOW, data={"ticket": ticket().to_wire()}
    )
    assert code_of(check_kind, loc) == "mis_keyed"


def test_location_with_a_forged_ticket_is_refused() -> None:
    bad = {**ticket().to_wire(), "signature": b"\x00" * 65}
    loc = SignedObject.sign(
        NODE, kind="location", key=DEVICE.address, seq=1, expires=NOW, data={"ticket": bad}
    )
    assert code_of(check_kind, loc) == "bad_signature"


def test_hello_location_and_the_ticket_policy() -> None:
    binding = bytes(range(12))
    sig = sign_hello(DEVICE, binding, NODE.address)
    loc = make_hello_location(NODE, DEVICE.address, binding, sig, seq=1, expires=NOW)
    assert location_device(loc) == DEVICE.address
    assert code_of(check_kind, loc, accept_hello=False) == "mis_keyed"
    # The proof names the node: another node cannot reuse it.
    stolen = make_hello_location(OTHER_NODE, DEVICE.address, binding, sig, seq=1, expires=NOW)
    assert code_of(check_kind, stolen) == "mis_keyed"


def test_a_location_is_checked_once_per_verified_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ticket's recovery is remembered for the very object checked: the same object off the
    wire again (signed.py hands out its one verified instance) is not recovered again; an object
    around a copied signature, or the hello form under another ticket policy, is checked in full."""
    recovered: list[bytes] = []
    real = Ticket.recover

    def counting(self: Ticket) -> bytes:
        recovered.append(self.node)
        return real(self)

    monkeypatch.setattr(Ticket, "recover", counting)
    loc = make_location(NODE, ticket(total=4242), seq=7, expires=NOW + 60)
    recovered.clear()
    first = wire_roundtrip(loc)
    assert location_device(first) == DEVICE.address and len(recovered) == 1
    again = wire_roundtrip(loc)
    assert again is first
    check_kind(again)
    assert location_device(again) == DEVICE.address and len(recovered) == 1
    copied = dataclasses.replace(first, key=OTHER_NODE.address)  # the same signature, another key
    assert code_of(check_kind, copied) == "mis_keyed" and len(recovered) == 2
    forged = dataclasses.replace(first, data={"ticket": {**ticket().to_wire(), "signature": b"\x00" * 65}})
    assert code_of(check_kind, forged) == "bad_signature"
    binding = bytes(range(12))
    hello = make_hello_location(NODE, DEVICE.address, binding, sign_hello(DEVICE, binding, NODE.address),
                                seq=1, expires=NOW)  # fmt: skip
    assert location_device(hello) == DEVICE.address
    assert code_of(check_kind, hello, accept_hello=False) == "mis_keyed"


def test_unknown_kind_is_refused() -> None:
    obj = SignedObject.sign(NODE, kind="bogus", key=NODE.address, seq=1, expires=NOW, data={})
    assert code_of(check_kind, obj) == "bad_payload"


# --- the store -------------------------------------------------------------------------------------
def test_highest_seq_wins_and_older_is_stale() -> None:
    store = ObjectStore()
    assert store.offer(node_obj(seq=5), NOW)
    assert not store.offer(node_obj(seq=5), NOW)  # the same object again: a harmless repeat
    assert code_of(store.offer, node_obj(seq=4), NOW) == "stale"
    assert store.offer(node_obj(seq=6), NOW)
    held = store.get(NODE.address, NOW)
    assert held is not None and held.seq == 6


def test_equal_seq_with_other_content_is_stale() -> None:
    store = ObjectStore()
    store.offer(node_obj(seq=5), NOW)
    other = make_node_object(NODE, dataclasses.replace(record(), host="h"), seq=5, expires=NOW + 10)
    assert code_of(store.offer, other, NOW) == "stale"


def test_expired_and_far_future_objects_are_refused() -> None:
    store = ObjectStore()
    assert code_of(store.offer, node_obj(expires=NOW), NOW) == "expired"
    assert code_of(store.offer, node_obj(expires=NOW + 10 * 24 * 3600), NOW) == "expired"
    assert len(store) == 0


def test_expiry_drops_and_frees_the_key() -> None:
    store = ObjectStore()
    store.offer(node_obj(seq=5, expires=NOW + 10), NOW)
    assert store.get(NODE.address, NOW + 10) is None
    assert [o.seq for o in store.expire(NOW + 10)] == [5]
    assert len(store) == 0
    assert store.offer(node_obj(seq=1, expires=NOW + 100), NOW + 20)  # a lower seq after expiry


def test_store_limit() -> None:
    store = ObjectStore(max_objects=2)
    keys = [PrivateKey.from_bytes(bytes([i]) * 32) for i in (4, 5, 6)]
    store.offer(node_obj(key=keys[0]), NOW)
    store.offer(node_obj(key=keys[1]), NOW)
    assert code_of(store.offer, node_obj(key=keys[2]), NOW) == "busy"
    assert store.offer(node_obj(seq=2, key=keys[1]), NOW)  # replacing a held key is always fine


@given(st.integers(0, 160), st.binary(min_size=20, max_size=20))
def test_key_range_contains_exactly_the_keys_with_the_prefix(bits: int, key: bytes) -> None:
    low, high = key_range(key, bits)
    assert low <= key and (high is None or key < high)
    if bits:
        mask = ((1 << bits) - 1) << (160 - bits)
        assert int.from_bytes(low, "big") == int.from_bytes(key, "big") & mask
    else:
        assert low == bytes(20) and high is None
