"""The DHT's requests and answers on the wire: the machine's messages (chrnode.dht.messages) through
the one peer codec (chrnode.peer.messages) and back (chrnode.net.dht_wire), and generated bad
payloads refused with a code before anything reaches the machine."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.crypto import PrivateKey
from chrnode.dht import DhtProtocolError
from chrnode.dht.ids import Contact
from chrnode.dht.messages import FindNode, FindValue, Found, Nodes, Ping, Pong, Refused, Store, Stored
from chrnode.dht.store import Value
from chrnode.edge.messages import ErrorReply
from chrnode.errors import RemoteProtocolError
from chrnode.net.codecs import ObjectCodec, contact_of
from chrnode.net.dht_wire import from_peer_answer, from_peer_request, to_peer_answer, to_peer_request
from chrnode.objects.kinds import NodeRecord, make_location, make_node_object
from chrnode.objects.signed import SignedObject
from chrnode.peer import messages as pm
from chrnode.ticket import Ticket

CODEC = ObjectCodec()
NOW = int(time.time())


def key(n: int) -> PrivateKey:
    return PrivateKey.from_bytes(n.to_bytes(32, "big"))


def node_object(n: int, port: int = 51055) -> SignedObject:
    k = key(n)
    return make_node_object(
        k, NodeRecord(k.address, "10.0.0.9", (41046,), port, 2, 31337), seq=1, expires=NOW + 600
    )


def location(device: int = 900, node: int = 1) -> SignedObject:
    ticket = Ticket(31337, 694, key(node).address, b"\x60" * 20, 1, 1000).sign(key(device))
    return make_location(key(node), ticket, seq=3, expires=NOW + 600)


def value(obj: SignedObject) -> Value:
    return CODEC.decode_value(obj)


def through_wire(msg: Any, *, response: bool, msg_type: int | None = None) -> Any:
    """``msg`` as the link sends it (fields, msgpack) and as the other end's link types it."""
    sent_type, fields = (
        pm.nodes_fields(msg, msg_type or pm.FIND_NODE) if isinstance(msg, pm.Nodes) else pm.to_fields(msg)
    )
    payload = msgpack.unpackb(msgpack.packb(fields, use_bin_type=True), raw=False)
    return pm.parse(sent_type, payload, response=response, request_id=7)


def test_requests_round_trip_through_the_peer_codec() -> None:
    target = key(900).address
    for request in (Ping(), FindNode(target), FindValue(target), Store(value(location()))):
        msg = through_wire(to_peer_request(request, CODEC), response=False)
        assert from_peer_request(msg, CODEC) == request
    assert pm.to_fields(to_peer_request(FindNode(target), CODEC)) == (pm.FIND_NODE, {"target": target})


def test_answers_round_trip_and_keep_the_node_objects_untouched() -> None:
    contacts = [contact_of(node_object(n)) for n in (5, 6)]
    reply = to_peer_answer(
        Nodes(contacts), CODEC, lambda c: c.record if isinstance(c.record, SignedObject) else None
    )
    assert isinstance(reply, pm.Nodes) and reply.nodes == (node_object(5), node_object(6))
    parsed = from_peer_answer(FindNode(b"\x00" * 20), through_wire(reply, response=True), CODEC)
    assert parsed == Nodes(contacts)
    assert [c.record for c in parsed.contacts] == [node_object(5), node_object(6)]  # type: ignore[union-attr]
    # FIND_VALUE without the value: the nodes come in a FIND_VALUE frame (SPEC 4: the request's type)
    as_find_value = through_wire(reply, response=True, msg_type=pm.FIND_VALUE)
    assert from_peer_answer(FindValue(b"\x00" * 20), as_find_value, CODEC) == Nodes(contacts)
    held = value(location())
    found = to_peer_answer(Found(held), CODEC, lambda c: None)
    back = from_peer_answer(FindValue(held.key), through_wire(found, response=True), CODEC)
    assert back == Found(held)
    pong = through_wire(to_peer_answer(Pong(12.5), CODEC, lambda c: None), response=True)
    assert from_peer_answer(Ping(), pong, CODEC) == Pong(12.5)
    assert to_peer_answer(Stored(), CODEC, lambda c: None) == pm.Empty()
    assert from_peer_answer(Store(held), pm.Empty(), CODEC) == Stored()
    assert to_peer_answer(Refused("stale", "older"), CODEC, lambda c: None) == Refused("stale", "older")
    refused = ErrorReply(pm.STORE, "stale", "older", 7)
    assert from_peer_answer(Store(held), refused, CODEC) == Refused("stale", "older")
    assert from_peer_answer(Ping(), None, CODEC) is None  # no answer: the machine's failure


def test_a_contact_without_its_node_object_is_left_out_of_an_answer() -> None:
    bare = Contact(key(7).address, "10.0.0.7", 51055)  # a fleet node from config, never met
    reply = to_peer_answer(Nodes([bare, contact_of(node_object(8))]), CODEC, lambda c: None)
    assert reply == pm.Nodes(())
    reply = to_peer_answer(Nodes([bare]), CODEC, lambda c: node_object(7))
    assert reply == pm.Nodes((node_object(7),))


@pytest.mark.parametrize(
    ("request_", "answer", "code"),
    [
        (FindValue(b"\x00" * 20), pm.ValueFound(location()), "mis_keyed"),  # an object of another key
        (FindNode(b"\x00" * 20), pm.ValueFound(location()), "mis_keyed"),  # a value for FIND_NODE
        (FindNode(b"\x00" * 20), pm.Nodes((location(),)), "bad_payload"),  # not a node object
        (FindNode(b"\x00" * 20), pm.PeerPingReply(5), "bad_payload"),  # the answer of another request
        (Ping(), pm.Empty(), "bad_payload"),
    ],
)
def test_answers_that_do_not_fit_their_request_are_refused_with_their_code(
    request_: Any, answer: Any, code: str
) -> None:
    with pytest.raises(DhtProtocolError) as caught:
        from_peer_answer(request_, answer, CODEC)
    assert caught.value.code == code and caught.value.message


def test_a_far_future_object_is_refused_before_the_machine_sees_it() -> None:
    ticket = Ticket(31337, 694, key(1).address, b"\x60" * 20, 1, 1000).sign(key(900))
    forged = make_location(key(1), ticket, seq=3, expires=NOW + 10 * 365 * 86400)
    with pytest.raises(DhtProtocolError) as caught:
        from_peer_request(pm.Store(forged), CODEC)
    assert caught.value.code == "expired"


_MSGPACK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=24),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
_PAYLOADS = st.dictionaries(
    st.sampled_from(["target", "key", "object", "nodes", "time", "id", "x"]),
    _MSGPACK | st.just(node_object(3).to_wire()) | st.just([node_object(3).to_wire()] * 21),
    max_size=4,
)
_TYPES = st.sampled_from([pm.PING, pm.STORE, pm.FIND_NODE, pm.FIND_VALUE])
_CODES = ("bad_payload", "bad_signature", "mis_keyed", "expired", "unknown_type", "unexpected_message")


@settings(max_examples=300, deadline=None)
@given(_TYPES, _PAYLOADS)
def test_generated_requests_reach_the_machine_or_are_refused_with_a_code(
    msg_type: int, payload: dict[str, Any]
) -> None:
    try:
        request = from_peer_request(pm.parse(msg_type, payload, response=False, request_id=3), CODEC)
    except RemoteProtocolError as exc:
        assert exc.code in _CODES and exc.request_id == 3
    except DhtProtocolError as exc:
        assert exc.code in _CODES and exc.message
    else:
        assert isinstance(request, Ping | FindNode | FindValue | Store)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([Ping(), FindNode(b"\x04" * 20), FindValue(b"\x04" * 20)]), _TYPES, _PAYLOADS)
def test_generated_answers_reach_the_machine_or_are_refused_with_a_code(
    request_: Any, msg_type: int, payload: dict[str, Any]
) -> None:
    try:
        answer = from_peer_answer(request_, pm.parse(msg_type, payload, response=True, request_id=3), CODEC)
    except (RemoteProtocolError, DhtProtocolError) as exc:
        assert exc.code in _CODES
    else:
        assert isinstance(answer, Pong | Nodes | Found | Stored)
        if isinstance(answer, Nodes):
            assert len(answer.contacts) <= pm.MAX_NODES
