"""docs/protocol.md stays true: its worked examples are what the code produces, its codes the code's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chrnode.crypto import PrivateKey
from chrnode.edge import codes
from chrnode.edge import messages as m
from chrnode.edge.frame import Frame
from chrnode.edge.hello import hello_digest, sign_hello, verify_hello
from chrnode.ticket import Ticket

DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
DEVICE = PrivateKey.from_bytes(b"\x01" * 32)
NODE = PrivateKey.from_bytes(b"\x02" * 32)
TLS_UNIQUE = bytes.fromhex("00112233445566778899aabb")
FLEET = bytes.fromhex("6000000000000000000000000000000000000006")


def in_doc(data: bytes) -> bool:
    return data.hex(" ") in DOC


def test_keys_of_the_examples() -> None:
    assert DEVICE.hex_address in DOC and NODE.hex_address in DOC


def test_hello_example() -> None:
    assert hello_digest(TLS_UNIQUE, NODE.address).hex() in DOC
    sig = sign_hello(DEVICE, TLS_UNIQUE, NODE.address)
    assert sig[:32].hex() + sig[32:64].hex() in DOC.replace("\n    ", "")
    verify_hello(DEVICE.address, sig, TLS_UNIQUE, NODE.address)
    frame = m.encode_message(m.Hello(device=DEVICE.address, device_sig=sig, version=2, id=1))
    assert len(frame) == 139 and in_doc(frame)
    reply = m.HelloReply(node=NODE.address, version=2, epoch=689, chain_id=31337, fleet=FLEET, id=1)
    assert in_doc(m.encode_message(reply))


@pytest.mark.parametrize(
    "msg",
    [
        m.Ping(id=2),
        m.PingReply(time=1_700_000_000_000, id=2),
        m.PortSend(ref=5, data=b"hi"),
        m.ErrorReply(m.PORTOPEN, "not_found", "no device 0x12", 3),
    ],
)
def test_small_examples(msg: m.Message) -> None:
    data = m.encode_message(msg)
    assert in_doc(data)
    assert m.decode_payload(Frame(data[1], int.from_bytes(data[2:4], "big"), data[8:])) == msg


def test_ticket_example() -> None:
    ticket = Ticket(31337, 689, NODE.address, FLEET, 1, 1_048_576).sign(DEVICE)
    assert ticket.ticket_digest().hex() in DOC
    assert ticket.signature[:64].hex() in DOC.replace("\n    ", "")
    assert in_doc(m.encode_message(m.TicketMsg(ticket=ticket, id=4)))


def test_error_code_table_matches_the_code() -> None:
    section = DOC[DOC.index("## 6. Error codes") : DOC.index("## 7. Tickets")]
    listed = re.findall(r"^\| `([a-z_0-9]+)` \|", section, flags=re.MULTILINE)
    assert listed == list(codes.ERROR_CODES)
