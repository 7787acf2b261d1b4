"""The peer hello (SPEC 4, type 0x29): the dialing node proves its key inside the TLS session.

The listener proves its address by its certificate; the dialer's first frame must be a peer hello
whose ``node_sig`` is its signature over keccak256(tls-unique || listener address), the same proof
as the device hello (SPEC 3), and whose ``record`` is its own signed ``node`` object. Nothing else
is accepted before it, and a second one is refused. After it every frame on the link is the proven
node's.
"""

from __future__ import annotations

from chrnode.crypto import PrivateKey
from chrnode.edge import codes
from chrnode.edge.hello import sign_hello, verify_hello
from chrnode.errors import RemoteProtocolError
from chrnode.objects.errors import ObjectError
from chrnode.objects.kinds import NODE, check_kind
from chrnode.objects.signed import SignedObject
from chrnode.peer.messages import MAX_PROTOCOL_VERSION, PeerHello, PeerHelloReply

__all__ = ["check_peer_hello", "check_peer_hello_reply", "make_peer_hello"]


def make_peer_hello(key: PrivateKey, tls_unique: bytes, listener: bytes, record: SignedObject) -> PeerHello:
    return PeerHello(key.address, sign_hello(key, tls_unique, listener), MAX_PROTOCOL_VERSION, record)


def _check_record(record: SignedObject, node: bytes, request_id: int | None) -> None:
    if record.kind != NODE or record.key != node:
        raise RemoteProtocolError(
            "peer hello record must be the node object of the hello's node", codes.BAD_PAYLOAD, request_id
        )
    try:
        check_kind(record)
    except ObjectError as exc:
        raise RemoteProtocolError(f"peer hello record: {exc}", exc.code, request_id) from None


def check_peer_hello(
    hello: PeerHello, tls_unique: bytes, listener: bytes, request_id: int | None = None
) -> None:
    """Accept the dialer's hello only if it signs this session for this listener, with its record.

    Raises RemoteProtocolError: ``bad_signature`` / ``wrong_device`` (the proof), ``bad_payload`` or
    ``mis_keyed`` (the record is not the dialer's own node object).
    """
    try:
        verify_hello(hello.node, hello.node_sig, tls_unique, listener)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"peer hello: {exc}", exc.code, request_id) from None
    _check_record(hello.record, hello.node, request_id)


def check_peer_hello_reply(reply: PeerHelloReply, certified: bytes) -> None:
    """The listener's answer must name the address its certificate proved, with its own record."""
    if reply.node != certified:
        raise RemoteProtocolError(
            f"peer hello answer names 0x{reply.node.hex()}, the certificate 0x{certified.hex()}",
            codes.WRONG_DEVICE,
        )
    _check_record(reply.record, reply.node, None)
