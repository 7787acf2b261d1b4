"""Peer messages (SPEC 4, 0x20-0x29): typed parsing, encoding and the peer hello proof."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.crypto import PrivateKey
from chrnode.edge import messages as m
from chrnode.edge.frame import FrameDecoder
from chrnode.errors import RemoteProtocolError
from chrnode.objects.kinds import NodeRecord, make_node_object
from chrnode.peer import messages as pm
from chrnode.peer.hello import check_peer_hello, check_peer_hello_reply, make_peer_hello

DIALER = PrivateKey.from_bytes(b"\x04" * 32)
LISTENER = PrivateKey.from_bytes(b"\x05" * 32)
TLS_UNIQUE = bytes(range(12))
NOW = 1_800_000_000


def record(key: PrivateKey) -> Any:
    rec = NodeRecord(key.address, "127.0.0.1", (41046,), 51055, 2, 31337)
    return make_node_object(key, rec, seq=1, expires=NOW + 3600)


def over_the_wire(msg: Any, *, response: bool = False) -> Any:
    """Encode as a real frame, decode it with the frame codec, then parse the peer fields."""
    msg_type, fields = pm.to_fields(msg)
    frame_bytes = (
        m.encode_message(m.PeerMessage(msg_type, fields, response, 7)) if msg_type in m.PEER_TYPES else None
    )
    if frame_bytes is not None:
        decoder = FrameDecoder()
        decoder.feed(frame_bytes)
        (frame,) = list(decoder)
        decoded = m.decode_payload(frame)
        assert isinstance(decoded, m.PeerMessage)
        fields = decoded.fields
    fields = msgpack.unpackb(msgpack.packb(fields, use_bin_type=True), raw=False)
    return pm.parse(msg_type, fields, response=response, request_id=7)


@pytest.mark.parametrize(
    ("msg", "response"),
    [
        (pm.PeerPing(), False),
        (pm.PeerPingReply(123), True),
        (pm.Store(record(DIALER)), False),
        (pm.FindNode(b"\x11" * 20), False),
        (pm.FindValue(b"\x12" * 20), False),
        (pm.ValueFound(record(DIALER)), True),
        (pm.RelayPortOpen(2**62 + 5, b"\x01" * 20, b"\x02" * 20, 8080, "rws"), False),
        (pm.RelayPortSend(9, b"data"), False),
        (pm.RelayPortClose(9), False),
        (pm.Forward(b"\x03" * 20, 0x0B, {"level": "info"}), False),
        (pm.Merkle(b"\x80", 1), False),
        (make_peer_hello(DIALER, TLS_UNIQUE, LISTENER.address, record(DIALER)), False),
        (pm.PeerHelloReply(LISTENER.address, 2, record(LISTENER)), True),
    ],
)
def test_round_trip(msg: Any, response: bool) -> None:
    assert over_the_wire(msg, response=response) == msg


def test_find_answers_with_nodes() -> None:
    nodes = pm.Nodes((record(DIALER), record(LISTENER)))
    _, fields = pm.nodes_fields(nodes)
    assert pm.parse(pm.FIND_NODE, fields, response=True) == nodes
    assert pm.parse(pm.FIND_VALUE, fields, response=True) == nodes


def test_too_many_nodes_are_refused() -> None:
    fields = {"nodes": [record(DIALER).to_wire()] * (pm.MAX_NODES + 1)}
    with pytest.raises(RemoteProtocolError) as info:
        pm.parse(pm.FIND_NODE, fields, response=True, request_id=3)
    assert info.value.code == "bad_payload" and info.value.request_id == 3


def test_forged_object_in_store_gets_its_code() -> None:
    wire = {**record(DIALER).to_wire(), "seq": 99}
    with pytest.raises(RemoteProtocolError) as info:
        pm.parse(pm.STORE, {"object": wire}, response=False, request_id=4)
    assert info.value.code == "bad_signature" and info.value.request_id == 4


def test_merkle_prefix_must_cover_its_bits() -> None:
    with pytest.raises(RemoteProtocolError, match="prefix"):
        pm.parse(pm.MERKLE, {"prefix": b"", "bits": 9}, response=False)


GARBAGE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=24) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=20,
)


@given(
    st.sampled_from(sorted(pm.NAMES)),
    st.booleans(),
    st.dictionaries(
        st.sampled_from(
            [
                "ref",
                "data",
                "target",
                "key",
                "object",
                "nodes",
                "node",
                "node_sig",
                "version",
                "record",
                "opener",
                "port",
                "flags",
                "type",
                "payload",
                "prefix",
                "bits",
                "time",
                "hash",
            ]
        ),
        GARBAGE,
    ),
)
@settings(max_examples=500, deadline=None)
def test_generated_fields_never_crash(msg_type: int, response: bool, fields: dict[str, Any]) -> None:
    try:
        pm.parse(msg_type, fields, response=response, request_id=1)
    except RemoteProtocolError as exc:
        assert exc.code in {"bad_payload", "bad_signature", "unsupported_version", "unexpected_message"}


def test_peer_hello_proves_the_dialer() -> None:
    hello = make_peer_hello(DIALER, TLS_UNIQUE, LISTENER.address, record(DIALER))
    check_peer_hello(hello, TLS_UNIQUE, LISTENER.address)


@pytest.mark.parametrize(
    ("tls_unique", "listener", "code"),
    [(bytes(12), LISTENER.address, "wrong_device"), (TLS_UNIQUE, DIALER.address, "wrong_device")],
)
def test_peer_hello_from_another_session_or_for_another_listener_fails(
    tls_unique: bytes, listener: bytes, code: str
) -> None:
    hello = make_peer_hello(DIALER, TLS_UNIQUE, LISTENER.address, record(DIALER))
    with pytest.raises(RemoteProtocolError) as info:
        check_peer_hello(hello, tls_unique, listener)
    assert info.value.code == code


def test_peer_hello_with_someone_elses_record_fails() -> None:
    hello = make_peer_hello(DIALER, TLS_UNIQUE, LISTENER.address, record(LISTENER))
    with pytest.raises(RemoteProtocolError) as info:
        check_peer_hello(hello, TLS_UNIQUE, LISTENER.address)
    assert info.value.code == "bad_payload"


def test_hello_reply_must_match_the_certificate() -> None:
    reply = pm.PeerHelloReply(LISTENER.address, 2, record(LISTENER))
    check_peer_hello_reply(reply, LISTENER.address)
    with pytest.raises(RemoteProtocolError) as info:
        check_peer_hello_reply(reply, DIALER.address)
    assert info.value.code == "wrong_device"


def test_wrong_version_is_named() -> None:
    hello = make_peer_hello(DIALER, TLS_UNIQUE, LISTENER.address, record(DIALER))
    _, fields = pm.to_fields(hello)
    with pytest.raises(RemoteProtocolError) as info:
        pm.parse(pm.PEER_HELLO, {**fields, "version": 3}, response=False)
    assert info.value.code == "unsupported_version"
