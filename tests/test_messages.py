"""Typed EdgeV2 messages (SPEC 4): msgpack payload validation and encoding."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chrnode.crypto import PrivateKey
from chrnode.edge import codes
from chrnode.edge import messages as m
from chrnode.edge.frame import FLAG_ERROR, FLAG_RESPONSE, Frame, FrameDecoder
from chrnode.errors import LocalProtocolError, RemoteProtocolError
from chrnode.testing.crypto import signed_ticket

ADDR = bytes(range(20))
SIG = bytes(65)


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def decode(msg_type: int, obj: object, flags: int = 0) -> m.Message:
    return m.decode_payload(Frame(msg_type, flags, pack(obj)))


def round_trip(msg: m.Message) -> m.Message:
    decoder = FrameDecoder()
    decoder.feed(m.encode_message(msg))
    frame = decoder.next_frame()
    assert frame is not None and decoder.next_frame() is None
    return m.decode_payload(frame)


def _ticket() -> object:
    return signed_ticket(PrivateKey.generate(), ADDR, total_bytes=1000)


EXAMPLES: list[m.Message] = [
    m.Hello(device=ADDR, device_sig=SIG, version=2, compress=True, id=1),
    m.HelloReply(node=ADDR, version=2, epoch=689, chain_id=31337, fleet=ADDR, id=1),
    m.TicketMsg(ticket=_ticket(), id=2),  # type: ignore[arg-type]
    m.TicketReply(status="thanks", paid_bytes=4096, id=2),
    m.TicketReply(status="too_low", latest=_ticket(), id=2),  # type: ignore[arg-type]
    m.PortOpen(port=80, device=ADDR, flags="rws", id=3),
    m.PortOpen(port="ssh", name="cam.chronara.io", id=3),
    m.PortOpen(port=80, device=ADDR, ref=9, flags="r", id=3),
    m.PortOpenReply(ref=9, id=3),
    m.PortOpenReply(id=3),
    m.PortSend(ref=9, data=b"\x00payload"),
    m.PortSend(ref=9, data=b"", id=4),
    m.PortClose(ref=9, id=5),
    m.Ping(id=6),
    m.PingReply(time=1_700_000_000_000, id=6),
    m.GetNode(node=ADDR, id=7),
    m.GetNodeReply(record={"host": "127.0.0.1", "edge_port": 41046, "sig": SIG}, id=7),
    m.GetObject(key=b"k" * 32, id=8),
    m.GetObjectReply(object={"key": b"k", "value": [1, 2]}, id=8),
    m.Resolve(name="mysite.chronara.com", id=9),
    m.ResolveReply(device=ADDR, owner=ADDR, namespace="com:mysite", id=9),
    m.TicketRequest(usage=10_000, epoch=689),
    m.Notify(level="warning", code="rate_limited", message="slow down"),
    m.Ack(m.PORTSEND, id=4),
    m.Ack(m.PORTCLOSE, id=5),
    m.ErrorReply(m.PORTOPEN, code="not_found", message="no such device", id=3),
    m.ErrorReply(m.HELLO, code="bad_frame", message="unreadable", id=None),
    m.PeerMessage(m.PEER_FIND_NODE, {"node_id": ADDR, "target": ADDR, "signature": SIG}, False, 11),
    m.PeerMessage(m.PEER_PING, {"node_id": ADDR}, True, 11),
]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda msg: type(msg).__name__)
def test_round_trip(msg: m.Message) -> None:
    assert round_trip(msg) == msg


def test_wire_bytes_of_a_ping_are_exact() -> None:
    assert m.encode_message(m.Ping(id=7)) == bytes.fromhex("0206000000000005") + b"\x81\xa2id\x07"
    answer = m.encode_message(m.ErrorReply(m.PING, "rate_limited", "slow", 7))
    assert answer[:4] == bytes.fromhex("02060003")
    assert msgpack.unpackb(answer[8:]) == {"code": "rate_limited", "message": "slow", "id": 7}


def test_portsend_parts_equal_the_whole_frame() -> None:
    for size in (0, 1, 255, 256, 65_535, 65_536, 300_000):
        data = bytes([7]) * size
        header, body = m.encode_portsend_parts(2**40, memoryview(data))
        assert body.obj is data  # not copied
        whole = header + data
        # byte-identical to what the generic msgpack encoder makes of the same map
        assert whole[8:] == msgpack.packb({"ref": 2**40, "data": data}, use_bin_type=True)
        assert m.encode_message(m.PortSend(ref=2**40, data=data)) == whole
        assert m.decode_payload(Frame(m.PORTSEND, 0, whole[8:])) == m.PortSend(ref=2**40, data=data)


def test_unknown_keys_ignored_and_nil_counts_as_absent() -> None:
    msg = decode(m.PING, {"id": 3, "future_field": [1, 2, {"x": b"y"}]})
    assert msg == m.Ping(id=3)
    assert decode(m.PORTOPEN, {"port": 1, "device": ADDR, "name": None, "flags": None}) == m.PortOpen(
        port=1, device=ADDR
    )


def test_answers_and_errors_by_flags() -> None:
    assert decode(m.PORTSEND, {"id": 1}, FLAG_RESPONSE) == m.Ack(m.PORTSEND, 1)
    err = decode(m.RESOLVE, {"id": 1, "code": "not_found", "message": "x"}, FLAG_RESPONSE | FLAG_ERROR)
    assert err == m.ErrorReply(m.RESOLVE, "not_found", "x", 1)


def bad(msg_type: int, obj: object, flags: int = 0, *, code: str = codes.BAD_PAYLOAD) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decode(msg_type, obj, flags)
    assert info.value.code == code, str(info.value)
    return info.value


def test_address_must_be_bin_of_exactly_20_bytes() -> None:
    err = bad(m.GETNODE, {"id": 4, "node": "0x" + ADDR.hex()})
    assert "'node' must be msgpack bin, got str" in str(err) and err.request_id == 4
    assert "exactly 20 bytes, got 19" in str(bad(m.GETNODE, {"id": 4, "node": ADDR[:19]}))
    assert "exactly 65 bytes" in str(bad(m.HELLO, {"device": ADDR, "device_sig": SIG + b"x", "version": 2}))


def test_missing_and_mistyped_fields() -> None:
    assert "'ref' is missing" in str(bad(m.PORTCLOSE, {"id": 1}))
    assert "integer 0..2^64-1" in str(bad(m.PORTSEND, {"ref": -1, "data": b""}))
    assert "integer 0..2^64-1" in str(bad(m.PORTSEND, {"ref": True, "data": b""}))  # bool is not an int
    hello = {"device": ADDR, "device_sig": SIG, "version": 2, "compress": 1}
    assert "msgpack bool" in str(bad(m.HELLO, hello))
    assert "0..65535" in str(bad(m.PORTOPEN, {"port": 70000, "device": ADDR}))
    assert "exactly one of device" in str(bad(m.PORTOPEN, {"port": 1}))
    assert "exactly one of device" in str(bad(m.PORTOPEN, {"port": 1, "device": ADDR, "name": "a"}))
    assert "letters from 'rws'" in str(bad(m.PORTOPEN, {"port": 1, "device": ADDR, "flags": "rx"}))
    assert "one direction" in str(bad(m.PORTOPEN, {"port": 1, "device": ADDR, "flags": "s"}))
    assert "needs latest" in str(bad(m.TICKET, {"status": "too_low"}, FLAG_RESPONSE))
    assert "snake_case" in str(bad(m.PING, {"code": "Bad Code", "message": ""}, FLAG_RESPONSE | FLAG_ERROR))


def test_ticket_field_errors_name_the_field() -> None:
    wire = signed_ticket(PrivateKey.generate(), ADDR).to_wire()
    wire["signature"] = wire["signature"][:64]
    err = bad(m.TICKET, {"id": 9, "ticket": wire})
    assert "ticket.signature must be 65 bytes" in str(err) and err.request_id == 9
    wire = signed_ticket(PrivateKey.generate(), ADDR).to_wire()
    wire["payment_proof"] = b"x" * 20
    assert "32-byte transaction hash" in str(bad(m.TICKET, {"ticket": wire}))
    del wire["epoch"]
    assert "ticket.epoch is missing" in str(bad(m.TICKET, {"ticket": wire}))


def test_frame_level_faults() -> None:
    assert bad(0x42, {"id": 5}, code=codes.UNKNOWN_TYPE).request_id == 5
    assert bad(0x42, b"", code=codes.UNKNOWN_TYPE).request_id is None
    assert bad(m.PING, {"id": 5}, FLAG_ERROR, code=codes.BAD_FRAME).request_id == 5
    assert bad(m.NOTIFY, {"id": 5}, FLAG_RESPONSE, code=codes.UNEXPECTED_MESSAGE).request_id == 5
    with pytest.raises(RemoteProtocolError) as info:
        m.decode_payload(Frame(m.PING, 0x4, pack({"id": 5})))
    assert info.value.code == codes.BAD_FRAME


def test_payload_shape_faults() -> None:
    with pytest.raises(RemoteProtocolError, match="not valid msgpack") as info:
        m.decode_payload(Frame(m.PING, 0, b"\xc1"))  # 0xc1 is never used in msgpack
    assert info.value.code == codes.BAD_PAYLOAD
    with pytest.raises(RemoteProtocolError, match="not valid msgpack"):
        m.decode_payload(Frame(m.PING, 0, pack({"id": 1}) + b"\x00"))  # trailing data
    assert "must be a msgpack map" in str(bad(m.PING, [1, 2]))
    assert "keys must be strings" in str(bad(m.PING, {b"id": 1}))
    assert bad(m.PING, {"id": "7"}).request_id is None
    assert bad(m.PING, {"id": -1}).request_id is None


def test_encode_refuses_invalid_messages() -> None:
    with pytest.raises(LocalProtocolError, match="exactly 20 bytes"):
        m.encode_message(m.GetNode(node=b"short", id=1))
    with pytest.raises(LocalProtocolError, match="exactly one of device"):
        m.encode_message(m.PortOpen(port=1, id=1))
    with pytest.raises(LocalProtocolError, match="not in SPEC 4"):
        m.encode_message(m.Ack(0x55, 1))
    with pytest.raises(LocalProtocolError, match="portsend data must be bytes"):
        m.encode_message(m.PortSend(ref=1, data="text"))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="string keys"):
        m.encode_message(m.PeerMessage(m.PEER_PING, {1: 2}, False, 1))  # type: ignore[dict-item]


def test_compressed_message_round_trip() -> None:
    msg = m.PortSend(ref=1, data=bytes(50_000), id=3)
    data = m.encode_message(msg, compress=True)
    assert len(data) < 1000
    decoder = FrameDecoder()
    decoder.feed(data)
    frame = decoder.next_frame()
    assert frame is not None and m.decode_payload(frame) == msg


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=70),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12) | st.binary(max_size=4), children, max_size=5),
    max_leaves=12,
)  # fmt: skip
field_names = st.sampled_from(
    ["id", "device", "device_sig", "version", "ticket", "ref", "data", "port", "flags", "name", "node",
     "key", "code", "message", "status", "paid_bytes", "latest", "time", "usage", "epoch", "level"]
)  # fmt: skip


uint64 = st.integers(0, 2**64 - 1)
ids = st.none() | uint64
addresses = st.binary(min_size=20, max_size=20)
valid_messages = st.one_of(
    st.builds(m.Hello, device=addresses, device_sig=st.binary(min_size=65, max_size=65), version=uint64,
              compress=st.booleans(), id=ids),
    st.builds(m.PortOpen, port=st.integers(0, 65535) | st.text(min_size=1, max_size=255), device=addresses,
              flags=st.sampled_from(["r", "w", "rw", "wr", "rs", "srw"]), ref=st.none() | uint64, id=ids),
    st.builds(m.PortSend, ref=uint64, data=st.binary(max_size=2000), id=ids),
    st.builds(m.PortClose, ref=uint64, id=ids),
    st.builds(m.Resolve, name=st.text(min_size=1, max_size=255), id=ids),
    st.builds(m.TicketRequest, usage=uint64, epoch=uint64, id=ids),
    st.builds(m.ErrorReply, msg_type=st.sampled_from(sorted(m.TYPE_NAMES)),
              code=st.sampled_from(sorted(codes.ERROR_CODES)), message=st.text(max_size=100), id=ids),
    st.builds(m.PeerMessage, msg_type=st.sampled_from(sorted(m.PEER_TYPES)),
              fields=st.dictionaries(st.text(max_size=8).filter(lambda k: k != "id"), st.binary(max_size=30)),
              response=st.booleans(), id=ids),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(msg=valid_messages, compress=st.booleans())
def test_generated_messages_round_trip(msg: m.Message, compress: bool) -> None:
    decoder = FrameDecoder()
    decoder.feed(m.encode_message(msg, compress=compress))
    frame = decoder.next_frame()
    assert frame is not None and m.decode_payload(frame) == msg


@settings(max_examples=150, deadline=None)
@given(
    msg_type=st.sampled_from([*m.TYPE_NAMES, 0, 0x0C, 0x1F, 0x28, 0xFF]),
    flags=st.sampled_from([0, FLAG_RESPONSE, FLAG_ERROR, FLAG_RESPONSE | FLAG_ERROR]),
    obj=st.dictionaries(field_names, msgpack_values, max_size=6) | msgpack_values,
)
@example(msg_type=0x20, flags=0, obj={"device": float("nan")})  # once found: NaN is not == NaN
def test_generated_payloads_decode_or_raise_protocol_error(msg_type: int, flags: int, obj: object) -> None:
    try:
        msg = m.decode_payload(Frame(msg_type, flags, pack(obj)))
    except RemoteProtocolError as exc:
        assert exc.code in codes.ERROR_CODES and str(exc)
    else:
        # Whatever is accepted can be sent back unchanged. Compared as bytes on the wire, since a
        # generated float may be NaN, which is never == itself.
        assert m.encode_message(round_trip(msg)) == m.encode_message(msg)


@settings(max_examples=500, deadline=None)
@given(msg_type=st.integers(0, 255), flags=st.integers(0, 7), payload=st.binary(max_size=200))
def test_garbage_bytes_raise_only_remote_protocol_error(msg_type: int, flags: int, payload: bytes) -> None:
    try:
        m.decode_payload(Frame(msg_type, flags, payload))
    except RemoteProtocolError as exc:
        assert exc.code in codes.ERROR_CODES


def test_deep_nesting_is_refused_cleanly() -> None:
    with pytest.raises(RemoteProtocolError):
        m.decode_payload(Frame(m.PING, 0, b"\x91" * 100_000))
    with pytest.raises(RemoteProtocolError):
        m.decode_payload(Frame(m.PEER_STORE, 0, b"\x81\xa1v" + b"\x81\xa1v" * 5000 + b"\xc0"))


def test_a_message_is_written_down_once_in_schema() -> None:
    """schema.py is the one list: each message class is in REQUESTS or REPLIES (by its frame's
    direction), in Message and in __all__, and the codec module re-exports every name of it."""
    import typing

    from chrnode.edge import messages, schema

    named = [getattr(schema, name) for name in schema.__all__]
    classes = {obj for obj in named if isinstance(obj, type) and hasattr(obj, "TYPE")}
    registered = set(schema.REQUESTS.values()) | set(schema.REPLIES.values())
    assert classes == registered
    assert registered <= set(typing.get_args(schema.Message))
    assert all(schema.TYPE_NAMES.get(cls.TYPE) for cls in registered)
    assert set(schema.__all__) <= set(messages.__all__)
    assert all(getattr(messages, name) is getattr(schema, name) for name in schema.__all__)
