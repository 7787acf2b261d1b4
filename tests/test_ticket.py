"""Tickets (SPEC 5): digest, signatures cross-checked with eth-keys, wire form and validation order."""

from __future__ import annotations

import dataclasses

import eth_abi
import msgpack
import pytest
from eth_keys import keys as eth_keys
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.crypto import PrivateKey, keccak256
from chrnode.edge import codes
from chrnode.errors import CryptoError, RemoteProtocolError, TicketError
from chrnode.testing.crypto import DEFAULT_FLEET, signed_ticket
from chrnode.ticket import Ticket, TicketTooLowError, TicketValidator, epoch_of

NODE = PrivateKey.from_bytes(b"\x11" * 32)
DEVICE = PrivateKey.from_bytes(b"\x22" * 32)
OTHER = PrivateKey.from_bytes(b"\x33" * 32)
CHAIN = 31337
EPOCH = 689

ABI_TYPES = ["uint256", "uint256", "address", "address", "uint256", "uint256", "bytes32"]


def ticket(**changes: object) -> Ticket:
    fields: dict[str, object] = {"epoch": EPOCH, "total_bytes": 10_000, "total_connections": 3}
    fields.update(changes)
    key = fields.pop("key", DEVICE)
    return signed_ticket(key, fields.pop("node", NODE.address), **fields)  # type: ignore[arg-type]


def abi_digest(t: Ticket) -> bytes:
    local = keccak256(t.local_address)
    values = [t.chain_id, t.epoch, t.node, t.fleet, t.total_connections, t.total_bytes, local]
    return keccak256(eth_abi.encode(ABI_TYPES, values))


uint64 = st.integers(0, 2**64 - 1)


@settings(max_examples=60, deadline=None)
@given(
    chain_id=uint64, epoch=uint64, node=st.binary(min_size=20, max_size=20),
    fleet=st.binary(min_size=20, max_size=20), conns=uint64, total=uint64, local=st.binary(max_size=80),
)  # fmt: skip
def test_digest_is_the_eth_abi_encoding(
    chain_id: int, epoch: int, node: bytes, fleet: bytes, conns: int, total: int, local: bytes
) -> None:
    t = Ticket(chain_id, epoch, node, fleet, conns, total, local)
    assert t.ticket_digest() == abi_digest(t)


def test_signatures_cross_check_with_eth_keys() -> None:
    t = ticket(local_address=b"10.0.0.7:4000", payment_proof=b"\x99" * 32)
    digest = abi_digest(t)
    # eth-keys recovers what chrnode signs
    recovered = eth_keys.Signature(t.signature).recover_public_key_from_msg_hash(digest)
    assert recovered.to_canonical_address() == DEVICE.address
    # chrnode recovers what eth-keys signs
    theirs = eth_keys.PrivateKey(OTHER.to_bytes()).sign_msg_hash(digest).to_bytes()
    assert dataclasses.replace(t, signature=theirs).recover() == OTHER.address
    assert t.recover() == DEVICE.address


def test_wire_round_trip_is_msgpack_bin() -> None:
    t = ticket(local_address=b"\x01\x02", payment_proof=b"\x05" * 32)
    packed = msgpack.packb(t.to_wire(), use_bin_type=True)
    back = msgpack.unpackb(packed, raw=False)
    assert isinstance(back["node"], bytes) and isinstance(back["signature"], bytes)
    assert Ticket.from_wire(back) == t
    minimal = {k: v for k, v in t.to_wire().items() if k not in ("local_address", "payment_proof")}
    assert Ticket.from_wire(minimal) == dataclasses.replace(t, local_address=b"", payment_proof=b"")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"node": "0x" + "00" * 20}, "ticket.node must be msgpack bin, got str"),
        ({"fleet": b"\x00" * 21}, "ticket.fleet must be 20 bytes, got 21"),
        ({"epoch": -1}, "ticket.epoch must be an integer"),
        ({"total_bytes": 1.5}, "ticket.total_bytes must be an integer"),
        ({"chain_id": None}, "ticket.chain_id must be an integer"),
        ({"local_address": b"x" * 257}, "ticket.local_address must be 0..256 bytes"),
        ({"payment_proof": b"x" * 31}, "32-byte transaction hash or empty"),
        ({"signature": b""}, "ticket.signature must be 65 bytes"),
    ],
)
def test_from_wire_names_the_bad_field(change: dict[str, object], match: str) -> None:
    wire = ticket().to_wire()
    wire.update(change)
    with pytest.raises(RemoteProtocolError, match=match) as info:
        Ticket.from_wire(wire)
    assert info.value.code == codes.BAD_PAYLOAD
    with pytest.raises(RemoteProtocolError, match="must be a map"):
        Ticket.from_wire([1, 2])


def test_epoch_of() -> None:
    assert epoch_of(0) == 0
    assert epoch_of(30 * 86400 - 1) == 0 and epoch_of(30 * 86400) == 1
    assert epoch_of(100, epoch_length=10) == 10


class Fleet:
    def __init__(self, nodes: set[bytes], devices: set[bytes]) -> None:
        self.nodes, self.devices = nodes, devices
        self.calls: list[str] = []

    def node_allowed(self, fleet: bytes, node: bytes) -> bool:
        self.calls.append("node")
        return node in self.nodes

    def device_allowed(self, fleet: bytes, device: bytes) -> bool:
        self.calls.append("device")
        return device in self.devices


class Payment:
    def __init__(self, code: str | None) -> None:
        self.code = code
        self.seen: list[Ticket] = []

    def check_payment(self, ticket: Ticket, device: bytes) -> None:
        self.seen.append(ticket)
        if self.code:
            raise TicketError(self.code, "payment not proven")


def validator(**kwargs: object) -> TicketValidator:
    return TicketValidator(NODE.address, CHAIN, **kwargs)  # type: ignore[arg-type]


def code_of(v: TicketValidator, t: Ticket, stored: Ticket | None = None) -> str:
    with pytest.raises(TicketError) as info:
        v.validate(t, DEVICE.address, EPOCH, stored)
    assert str(info.value)
    return info.value.code


def test_accepts_a_good_ticket_and_reports_what_it_adds() -> None:
    v = validator()
    first = v.validate(ticket(), DEVICE.address, EPOCH)
    assert (first.added_bytes, first.added_connections) == (10_000, 3)
    later = v.validate(ticket(total_bytes=15_000, total_connections=3), DEVICE.address, EPOCH, first.ticket)
    assert (later.added_bytes, later.added_connections) == (5_000, 0)
    assert v.validate(ticket(epoch=EPOCH - 1), DEVICE.address, EPOCH).ticket.epoch == EPOCH - 1
    same = v.validate(ticket(), DEVICE.address, EPOCH, ticket())  # a resend is not lower
    assert same.added_bytes == 0


def test_each_step_has_its_own_code() -> None:
    v = validator()
    assert code_of(v, ticket(epoch=EPOCH + 1)) == codes.EPOCH_TOO_HIGH
    assert code_of(v, ticket(epoch=EPOCH - 2)) == codes.EPOCH_TOO_LOW
    assert code_of(v, dataclasses.replace(ticket(), signature=bytes(65))) == codes.BAD_SIGNATURE
    assert code_of(v, ticket(key=OTHER)) == codes.WRONG_DEVICE
    assert code_of(v, dataclasses.replace(ticket(), total_bytes=1)) == codes.WRONG_DEVICE  # tampered
    assert code_of(v, ticket(node=OTHER.address)) == codes.WRONG_NODE
    assert code_of(v, ticket(chain_id=1)) == codes.WRONG_CHAIN
    fleet = Fleet(nodes=set(), devices={DEVICE.address})
    assert code_of(validator(fleet_check=fleet), ticket()) == codes.FLEET_DENIED_NODE
    fleet = Fleet(nodes={NODE.address}, devices=set())
    assert code_of(validator(fleet_check=fleet), ticket()) == codes.FLEET_DENIED_DEVICE
    assert code_of(v, ticket(total_bytes=17 * 1024**3)) == codes.JUMP_TOO_LARGE
    assert code_of(validator(max_jump_connections=2), ticket()) == codes.JUMP_TOO_LARGE
    assert code_of(validator(payment_check=Payment(codes.PAYMENT_MISSING)), ticket()) == codes.PAYMENT_MISSING
    assert code_of(validator(payment_check=Payment(codes.PAYMENT_INVALID)), ticket()) == codes.PAYMENT_INVALID


def test_too_low_carries_the_stored_ticket() -> None:
    stored = ticket(total_bytes=50_000, total_connections=3)
    for lower in (ticket(total_bytes=49_999), ticket(total_bytes=60_000, total_connections=2)):
        with pytest.raises(TicketTooLowError) as info:
            validator().validate(lower, DEVICE.address, EPOCH, stored)
        assert info.value.code == codes.TOO_LOW and info.value.latest == stored


def test_steps_run_in_order_and_hooks_only_when_reached() -> None:
    fleet, payment = Fleet(nodes=set(), devices=set()), Payment(codes.PAYMENT_INVALID)
    v = validator(fleet_check=fleet, payment_check=payment)
    # Several faults at once: the earliest step decides.
    assert code_of(v, ticket(epoch=EPOCH + 5, key=OTHER, node=OTHER.address)) == codes.EPOCH_TOO_HIGH
    assert code_of(v, ticket(key=OTHER, node=OTHER.address)) == codes.WRONG_DEVICE
    assert code_of(v, ticket(node=OTHER.address)) == codes.WRONG_NODE
    assert fleet.calls == []  # step 4 never reached so far
    assert code_of(v, ticket()) == codes.FLEET_DENIED_NODE
    fleet.nodes.add(NODE.address)
    fleet.devices.add(DEVICE.address)
    stored = ticket(total_bytes=99_999)
    assert code_of(v, ticket(), stored) == codes.TOO_LOW
    assert payment.seen == []  # step 6 only after step 5
    assert code_of(v, ticket()) == codes.PAYMENT_INVALID
    assert payment.seen == [ticket()]


def test_stored_ticket_must_match_fleet_and_epoch() -> None:
    with pytest.raises(ValueError, match="same"):
        validator().validate(ticket(), DEVICE.address, EPOCH, ticket(fleet=b"\x01" * 20))


def test_digest_refuses_out_of_range_values() -> None:
    with pytest.raises(CryptoError, match="uint256"):
        Ticket(-1, 0, NODE.address, DEFAULT_FLEET, 0, 0).ticket_digest()
