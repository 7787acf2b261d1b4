"""The kinds of signed object (SPEC 6): what a `node` and a `location` object must say.

- ``node``: key = signer = the node's address; data ``{host, edge_ports, peer_port, version,
  chain_id}``. ``getnode`` answers with it, FIND_NODE answers carry it.
- ``location``: key = the device's address, signer = the node serving it, data ``{ticket}``: the
  device's latest valid ticket naming that node. The ticket's signature must recover to the key and
  its ``node`` must be the signer, so no node can claim a device that did not pay it. A node that
  does not require tickets may publish the hello proof instead, ``{hello: {binding, device_sig}}``
  (the session's tls-unique and the device's signature over keccak256(binding || node address));
  a node that requires tickets refuses that form (``accept_hello=False``).

Pure code: builders for the node's own objects, and :func:`check_kind`, which a store runs on
every object it is offered.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from chrnode.crypto import PrivateKey, recover_address
from chrnode.edge.hello import hello_digest
from chrnode.errors import CryptoError, ProtocolError
from chrnode.objects.errors import BAD_PAYLOAD, BAD_SIGNATURE, MIS_KEYED, ObjectError
from chrnode.objects.signed import SignedObject
from chrnode.ticket import Ticket

__all__ = [
    "LOCATION",
    "NODE",
    "NodeRecord",
    "check_kind",
    "location_device",
    "make_hello_location",
    "make_location",
    "make_node_object",
]

NODE = "node"
LOCATION = "location"
MAX_HOST = 255
MAX_EDGE_PORTS = 8
CHECKED_CACHE = 8192

# A location's check recovers its ticket's signer (about 0.5 ms with the ticket's ABI digest),
# and the same object is checked again wherever it goes: each FIND_VALUE that returns it, at
# the asker, at the node it is cached at. Objects are immutable and chrnode.objects.signed hands
# out one instance per verified object, so a check is remembered for that very instance:
# (signature, accept_hello) -> (the object, the device it proved). A hit must be the same
# object (`is`), so an object built with another key or data around a copied signature misses
# and is checked in full.
_checked: OrderedDict[tuple[bytes, bool], tuple[SignedObject, bytes]] = OrderedDict()


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """The data of a ``node`` object: where and how to reach a node."""

    address: bytes
    host: str
    edge_ports: tuple[int, ...]
    peer_port: int
    version: int
    chain_id: int

    def to_data(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "edge_ports": list(self.edge_ports),
            "peer_port": self.peer_port,
            "version": self.version,
            "chain_id": self.chain_id,
        }

    @classmethod
    def from_object(cls, obj: SignedObject) -> NodeRecord:
        """The record of a checked ``node`` object (run :func:`check_kind` first)."""
        data = obj.data
        return cls(
            obj.key,
            data["host"],
            tuple(data["edge_ports"]),
            data["peer_port"],
            data["version"],
            data["chain_id"],
        )


def make_node_object(key: PrivateKey, record: NodeRecord, *, seq: int, expires: int) -> SignedObject:
    return SignedObject.sign(key, kind=NODE, key=key.address, seq=seq, expires=expires, data=record.to_data())


def make_location(node_key: PrivateKey, ticket: Ticket, *, seq: int, expires: int) -> SignedObject:
    """This node's claim to serve the device that signed ``ticket`` (which must name this node)."""
    device = ticket.recover()
    if ticket.node != node_key.address:
        raise ObjectError(MIS_KEYED, "a location's ticket must name the node that signs the location")
    data = {"ticket": ticket.to_wire()}
    return SignedObject.sign(node_key, kind=LOCATION, key=device, seq=seq, expires=expires, data=data)


def make_hello_location(
    node_key: PrivateKey, device: bytes, binding: bytes, device_sig: bytes, *, seq: int, expires: int
) -> SignedObject:
    """The hello-proof form of a location, for nodes that do not require tickets."""
    data = {"hello": {"binding": bytes(binding), "device_sig": bytes(device_sig)}}
    return SignedObject.sign(node_key, kind=LOCATION, key=device, seq=seq, expires=expires, data=data)


def check_kind(obj: SignedObject, *, accept_hello: bool = True) -> None:
    """Refuse (ObjectError) an object whose key, signer and data disagree for its kind."""
    if obj.kind == NODE:
        _check_node(obj)
    elif obj.kind == LOCATION:
        location_device(obj, accept_hello=accept_hello)
    else:
        raise ObjectError(BAD_PAYLOAD, f"unknown object kind {obj.kind!r:.40}; known: node, location")


def location_device(obj: SignedObject, *, accept_hello: bool = True) -> bytes:
    """The device a checked ``location`` object proves it serves (its key), or ObjectError."""
    entry = (obj.signature, accept_hello)
    hit = _checked.get(entry)
    if hit is not None and hit[0] is obj:
        _checked.move_to_end(entry)
        return hit[1]
    device = _location_device(obj, accept_hello)
    _checked[entry] = (obj, device)
    if len(_checked) > CHECKED_CACHE:
        _checked.popitem(last=False)
    return device


def _location_device(obj: SignedObject, accept_hello: bool) -> bytes:
    data = obj.data
    if "ticket" in data:
        try:
            ticket = Ticket.from_wire(data["ticket"])
            device = ticket.recover()
        except (ProtocolError, CryptoError) as exc:
            raise ObjectError(BAD_SIGNATURE, f"location ticket is invalid: {exc}") from exc
        if device != obj.key:
            raise ObjectError(MIS_KEYED, "location key must be the device whose ticket it carries")
        if ticket.node != obj.signer:
            raise ObjectError(MIS_KEYED, "location ticket must name the node that signed the location")
        return device
    if "hello" in data:
        if not accept_hello:
            raise ObjectError(
                MIS_KEYED, "this node requires tickets: a location must carry the device's ticket"
            )
        return _hello_device(obj)
    raise ObjectError(BAD_PAYLOAD, "location data must carry `ticket` (or `hello`)")


def _hello_device(obj: SignedObject) -> bytes:
    hello = obj.data["hello"]
    if not isinstance(hello, dict) or not isinstance(hello.get("binding"), bytes):
        raise ObjectError(BAD_PAYLOAD, "location hello must be {binding: bin, device_sig: bin}")
    sig = hello.get("device_sig")
    if not isinstance(sig, bytes):
        raise ObjectError(BAD_PAYLOAD, "location hello must be {binding: bin, device_sig: bin}")
    try:
        device = recover_address(hello_digest(hello["binding"], obj.signer), sig)
    except CryptoError as exc:
        raise ObjectError(BAD_SIGNATURE, f"location hello proof is invalid: {exc}") from exc
    if device != obj.key:
        raise ObjectError(MIS_KEYED, "location hello proof must be signed by the device its key names")
    return device


def _check_node(obj: SignedObject) -> None:
    if obj.key != obj.signer:
        raise ObjectError(MIS_KEYED, "a node object's key must be its signer's address")
    data = obj.data
    host = data.get("host")
    if not isinstance(host, str) or not 0 < len(host) <= MAX_HOST:
        raise ObjectError(BAD_PAYLOAD, f"node host must be a string of 1..{MAX_HOST} characters")
    ports = data.get("edge_ports")
    if not isinstance(ports, list) or len(ports) > MAX_EDGE_PORTS or not all(_is_port(p) for p in ports):
        raise ObjectError(BAD_PAYLOAD, f"node edge_ports must be a list of at most {MAX_EDGE_PORTS} ports")
    if not _is_port(data.get("peer_port")):
        raise ObjectError(BAD_PAYLOAD, "node peer_port must be a port number 1..65535")
    for name in ("version", "chain_id"):
        value = data.get(name)
        if type(value) is not int or value < 0:
            raise ObjectError(BAD_PAYLOAD, f"node {name} must be a non-negative integer")


def _is_port(value: object) -> bool:
    return type(value) is int and 0 < value < 65536
