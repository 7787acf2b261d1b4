"""The DHT's SPEC 4 payloads (0x20-0x23): shapes, msgpack round trips, and bad input refused
with a code, never an unexpected exception."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.dht import DhtProtocolError
from chrnode.dht.ids import Contact
from chrnode.dht.messages import (
    FIND_NODE,
    FIND_VALUE,
    PING,
    STORE,
    FindNode,
    FindValue,
    Found,
    Nodes,
    Ping,
    Pong,
    Refused,
    Store,
    Stored,
    answer_payload,
    contact_from_node_object,
    message_type,
    parse_answer,
    parse_error,
    parse_request,
    request_payload,
    value_from_object,
)


class FieldCodec:
    """Reads the SPEC 6 fields; a real node checks the signature first (signed-object codec)."""

    def decode_contact(self, record: object) -> Contact:
        return contact_from_node_object(record)

    def decode_value(self, obj: object):  # type: ignore[no-untyped-def]
        return value_from_object(obj)


CODEC = FieldCodec()


def node_object(n: int, host: str = "10.0.0.9", port: int = 51055) -> dict[str, object]:
    address = n.to_bytes(20, "big")
    return {
        "kind": "node",
        "key": address,
        "signer": address,
        "seq": 1,
        "expires": 2_000_000_000,
        "data": {"host": host, "edge_ports": [41046], "peer_port": port, "version": 2, "chain_id": 31337},
        "signature": b"\x01" * 65,
    }


def location(key: bytes, seq: int = 3) -> dict[str, object]:
    return {"kind": "location", "key": key, "signer": b"\x02" * 20, "seq": seq, "expires": 2_000_000_000,
            "data": {"ticket": {}}, "signature": b"\x03" * 65}  # fmt: skip


def wire(payload: dict[str, object]) -> dict[str, object]:
    """Through msgpack as the frame carries it (bytes as bin)."""
    return msgpack.unpackb(msgpack.packb(payload, use_bin_type=True), raw=False)  # type: ignore[no-any-return]


def test_request_payloads_round_trip_through_msgpack() -> None:
    target = b"\x07" * 20
    value = value_from_object(location(target))
    for request, kind in (
        (Ping(), PING),
        (FindNode(target), FIND_NODE),
        (FindValue(target), FIND_VALUE),
        (Store(value), STORE),
    ):
        assert message_type(request) == kind
        assert parse_request(kind, wire(request_payload(request)), CODEC) == request
    assert request_payload(FindNode(target)) == {"target": target}


def test_answer_payloads_have_the_spec_shapes_and_round_trip() -> None:
    contacts = [contact_from_node_object(node_object(n)) for n in (5, 6)]
    nodes = answer_payload(Nodes(contacts))
    assert nodes == {"nodes": [node_object(5), node_object(6)]}  # node objects, untouched
    parsed = parse_answer(FindNode(b"\x00" * 20), wire(nodes), CODEC, CODEC)
    assert parsed == Nodes(contacts)
    assert [c.host for c in parsed.contacts] == ["10.0.0.9", "10.0.0.9"]  # type: ignore[union-attr]
    key = b"\x09" * 20
    found = parse_answer(
        FindValue(key), wire(answer_payload(Found(value_from_object(location(key))))), CODEC, CODEC
    )
    assert isinstance(found, Found) and found.value.seq == 3
    assert parse_answer(Ping(), wire(answer_payload(Pong(12.5))), CODEC, CODEC) == Pong(12.5)
    assert answer_payload(Stored()) == {}
    assert parse_error(wire(answer_payload(Refused("stale", "older")))) == Refused("stale", "older")


@pytest.mark.parametrize(
    ("request_", "payload", "code"),
    [
        (FindNode(b"\x00" * 20), {"nodes": [node_object(n) for n in range(1, 23)]}, "bad_payload"),  # > k
        (FindNode(b"\x00" * 20), {"nodes": "x"}, "bad_payload"),
        (FindNode(b"\x00" * 20), {}, "bad_payload"),
        (FindNode(b"\x00" * 20), {"nodes": [node_object(1, port=0)]}, "bad_payload"),
        (FindNode(b"\x00" * 20), {"nodes": [{**node_object(1), "signer": b"\x05" * 20}]}, "mis_keyed"),
        (FindValue(b"\x00" * 20), {"object": location(b"\x01" * 20)}, "mis_keyed"),  # another key
        (FindValue(b"\x00" * 20), {"object": {**location(b"\x00" * 20), "seq": -1}}, "bad_payload"),
        (Ping(), {"time": True}, "bad_payload"),
    ],
)
def test_bad_answers_are_refused_with_their_code(
    request_: object, payload: dict[str, object], code: str
) -> None:
    with pytest.raises(DhtProtocolError) as caught:
        parse_answer(request_, payload, CODEC, CODEC)  # type: ignore[arg-type]
    assert caught.value.code == code and caught.value.message


_MSGPACK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=24),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
_PAYLOADS = st.dictionaries(
    st.sampled_from(["target", "key", "object", "nodes", "time", "id", "x"]), _MSGPACK, max_size=4
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([PING, STORE, FIND_NODE, FIND_VALUE, 0x24, 0x01]), _PAYLOADS)
def test_generated_requests_parse_or_are_refused_with_a_code(kind: int, payload: dict[str, object]) -> None:
    try:
        request = parse_request(kind, payload, CODEC)
    except DhtProtocolError as exc:
        assert exc.code in ("bad_payload", "unknown_type", "mis_keyed") and exc.message
    else:
        assert message_type(request) == kind


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([Ping(), Store(value_from_object(location(b"\x04" * 20))), FindNode(b"\x04" * 20),
                        FindValue(b"\x04" * 20)]), _PAYLOADS)  # fmt: skip
def test_generated_answers_parse_or_are_refused_with_a_code(
    request_: object, payload: dict[str, object]
) -> None:
    try:
        parse_answer(request_, payload, CODEC, CODEC)  # type: ignore[arg-type]
    except DhtProtocolError as exc:
        assert exc.code in ("bad_payload", "mis_keyed") and exc.message
