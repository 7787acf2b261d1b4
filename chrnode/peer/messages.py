"""Typed node <-> node messages (SPEC 4, types 0x20-0x29): a PeerMessage's fields in, a checked
message out; a message in, the fields out. Pure code; the frame codec is chrnode.edge.

The frame layer hands peer messages over as ``PeerMessage(msg_type, fields, response, id)`` with the
payload map as it came; :func:`parse` checks it against the schema of its type and direction and
returns one of the dataclasses below, or raises :class:`RemoteProtocolError` (``bad_payload`` with
the request id, so the error answer can name it). Signed objects inside (records, STORE objects,
FIND answers) are checked as far as their signature and shape (:class:`SignedObject.from_wire`);
what a store keeps is :mod:`chrnode.objects.store`'s decision.

The relay data path (0x25 relay portsend) is here for completeness; a link's hot path decodes
it without the schema walk, as the device portsend is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chrnode.edge import codes
from chrnode.edge import fields as f
from chrnode.errors import RemoteProtocolError
from chrnode.objects.errors import ObjectError
from chrnode.objects.signed import SignedObject

__all__ = [
    "FIND_NODE",
    "FIND_VALUE",
    "FORWARD",
    "MAX_NODES",
    "MERKLE",
    "PEER_HELLO",
    "PING",
    "RELAY_PORTCLOSE",
    "RELAY_PORTOPEN",
    "RELAY_PORTSEND",
    "STORE",
    "Empty",
    "FindNode",
    "FindValue",
    "Forward",
    "Merkle",
    "Nodes",
    "PeerHello",
    "PeerHelloReply",
    "PeerPing",
    "PeerPingReply",
    "RelayPortClose",
    "RelayPortOpen",
    "RelayPortSend",
    "Store",
    "ValueFound",
    "parse",
    "to_fields",
]

PING, STORE, FIND_NODE, FIND_VALUE = 0x20, 0x21, 0x22, 0x23
RELAY_PORTOPEN, RELAY_PORTSEND, RELAY_PORTCLOSE, FORWARD = 0x24, 0x25, 0x26, 0x27
MERKLE, PEER_HELLO = 0x28, 0x29

MAX_NODES = 20  # k (SPEC 6): a FIND answer lists at most k node objects
MAX_PROTOCOL_VERSION = 2


@dataclass(frozen=True, slots=True)
class PeerHello:
    node: bytes
    node_sig: bytes
    version: int
    record: SignedObject


@dataclass(frozen=True, slots=True)
class PeerHelloReply:
    node: bytes
    version: int
    record: SignedObject


@dataclass(frozen=True, slots=True)
class PeerPing:
    pass


@dataclass(frozen=True, slots=True)
class PeerPingReply:
    time: int


@dataclass(frozen=True, slots=True)
class Store:
    object: SignedObject


@dataclass(frozen=True, slots=True)
class FindNode:
    target: bytes


@dataclass(frozen=True, slots=True)
class FindValue:
    key: bytes


@dataclass(frozen=True, slots=True)
class Nodes:
    """The answer to FIND_NODE, and to FIND_VALUE when the value is not held: closest first."""

    nodes: tuple[SignedObject, ...]


@dataclass(frozen=True, slots=True)
class ValueFound:
    object: SignedObject


@dataclass(frozen=True, slots=True)
class RelayPortOpen:
    ref: int
    opener: bytes
    target: bytes
    port: int | str
    flags: str


@dataclass(frozen=True, slots=True)
class RelayPortSend:
    ref: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RelayPortClose:
    ref: int


@dataclass(frozen=True, slots=True)
class Forward:
    target: bytes
    type: int
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Empty:
    """The empty answer ``{}`` (STORE, relay portopen, relay portclose, forward)."""


@dataclass(frozen=True, slots=True)
class Merkle:
    prefix: bytes
    bits: int


PeerRequest = (
    PeerHello | PeerPing | Store | FindNode | FindValue | RelayPortOpen | RelayPortSend | RelayPortClose
    | Forward | Merkle
)  # fmt: skip


# --- parsing ---------------------------------------------------------------------------------------
class _Fields:
    """Reads checked fields of one payload, naming the message and field in every error."""

    def __init__(self, what: str, fields: dict[str, Any], request_id: int | None) -> None:
        self.what, self.fields, self.request_id = what, fields, request_id

    def bad(self, problem: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"{self.what}: {problem}", codes.BAD_PAYLOAD, self.request_id)

    def get(self, name: str, kind: f.Kind) -> Any:
        value = self.fields.get(name)
        if value is None:
            raise self.bad(f"field {name!r} is missing")
        try:
            return kind(value)
        except f.InvalidField as exc:
            raise self.bad(f"field {name!r} {exc}") from None

    def signed(self, name: str, value: Any = None) -> SignedObject:
        raw = self.fields.get(name) if value is None else value
        if raw is None:
            raise self.bad(f"field {name!r} is missing")
        try:
            return SignedObject.from_wire(raw)
        except ObjectError as exc:
            raise RemoteProtocolError(f"{self.what}: {name}: {exc}", exc.code, self.request_id) from None

    def nodes(self) -> Nodes:
        raw = self.fields.get("nodes")
        if not isinstance(raw, list) or len(raw) > MAX_NODES:
            raise self.bad(f"field 'nodes' must be a list of at most {MAX_NODES} node objects")
        return Nodes(tuple(self.signed("nodes", item) for item in raw))


def _version(r: _Fields) -> int:
    version: int = r.get("version", f.uint)
    if version != MAX_PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"{r.what}: version {version} is not spoken here (2)", codes.UNSUPPORTED_VERSION, r.request_id
        )
    return version


def _bits(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= 160:
        raise f.InvalidField(f"must be an integer 0..160, got {f.show(value)}")
    return value


def _merkle(r: _Fields) -> Merkle:
    bits = r.get("bits", _bits)
    prefix = r.fields.get("prefix", b"")
    if not isinstance(prefix, bytes) or not (bits + 7) // 8 <= len(prefix) <= 20:
        raise r.bad(f"field 'prefix' must be bin of {(bits + 7) // 8}..20 bytes for {bits} bits")
    return Merkle(prefix, bits)


_PAYLOAD_MAP: f.Kind = f.string_map

_REQUESTS: dict[int, Callable[[_Fields], Any]] = {
    PEER_HELLO: lambda r: PeerHello(
        r.get("node", f.address), r.get("node_sig", f.signature), _version(r), r.signed("record")
    ),
    PING: lambda r: PeerPing(),
    STORE: lambda r: Store(r.signed("object")),
    FIND_NODE: lambda r: FindNode(r.get("target", f.address)),
    FIND_VALUE: lambda r: FindValue(r.get("key", f.address)),
    RELAY_PORTOPEN: lambda r: RelayPortOpen(
        r.get("ref", f.uint),
        r.get("opener", f.address),
        r.get("target", f.address),
        r.get("port", f.port),
        r.get("flags", f.port_flags) if r.fields.get("flags") is not None else "rw",
    ),
    RELAY_PORTSEND: lambda r: RelayPortSend(r.get("ref", f.uint), r.get("data", f.bin_of())),
    RELAY_PORTCLOSE: lambda r: RelayPortClose(r.get("ref", f.uint)),
    FORWARD: lambda r: Forward(
        r.get("target", f.address), r.get("type", f.uint), r.get("payload", _PAYLOAD_MAP)
    ),
    MERKLE: _merkle,
}


def _find_value_answer(r: _Fields) -> ValueFound | Nodes:
    if r.fields.get("object") is not None:
        return ValueFound(r.signed("object"))
    return r.nodes()


_ANSWERS: dict[int, Callable[[_Fields], Any]] = {
    PEER_HELLO: lambda r: PeerHelloReply(r.get("node", f.address), _version(r), r.signed("record")),
    PING: lambda r: PeerPingReply(r.get("time", f.uint)),
    FIND_NODE: lambda r: r.nodes(),
    FIND_VALUE: _find_value_answer,
    MERKLE: lambda r: dict(r.fields),  # {hash} or {items}: chrnode.objects.merkle checks it against the range
}
_EMPTY_ANSWERS = frozenset((STORE, RELAY_PORTOPEN, RELAY_PORTCLOSE, FORWARD))

NAMES = {
    PING: "PING", STORE: "STORE", FIND_NODE: "FIND_NODE", FIND_VALUE: "FIND_VALUE",
    RELAY_PORTOPEN: "relay portopen", RELAY_PORTSEND: "relay portsend", RELAY_PORTCLOSE: "relay portclose",
    FORWARD: "forward", MERKLE: "MERKLE", PEER_HELLO: "peer hello",
}  # fmt: skip


def parse(msg_type: int, fields: dict[str, Any], *, response: bool, request_id: int | None = None) -> Any:
    """The typed peer message of ``msg_type``; RemoteProtocolError if the fields are not SPEC 4's.

    Empty answers (STORE, relay portopen/portclose, forward) come back as :class:`Empty`.
    """
    name = NAMES.get(msg_type)
    if name is None:
        raise RemoteProtocolError(
            f"unknown peer message type 0x{msg_type:02x}", codes.UNKNOWN_TYPE, request_id
        )
    reader = _Fields(f"{name} answer" if response else name, fields, request_id)
    if response:
        if msg_type in _EMPTY_ANSWERS:
            return Empty()
        parser = _ANSWERS.get(msg_type)
        if parser is None:
            raise RemoteProtocolError(f"{name} has no answer, got one", codes.UNEXPECTED_MESSAGE, request_id)
        return parser(reader)
    return _REQUESTS[msg_type](reader)


# --- encoding --------------------------------------------------------------------------------------
def to_fields(msg: Any) -> tuple[int, dict[str, Any]]:
    """(msg_type, payload fields without ``id``) for a typed peer message or answer."""
    if isinstance(msg, PeerHello):
        return PEER_HELLO, {
            "node": msg.node, "node_sig": msg.node_sig, "version": msg.version, "record": msg.record.to_wire()
        }  # fmt: skip
    if isinstance(msg, PeerHelloReply):
        return PEER_HELLO, {"node": msg.node, "version": msg.version, "record": msg.record.to_wire()}
    if isinstance(msg, PeerPing):
        return PING, {}
    if isinstance(msg, PeerPingReply):
        return PING, {"time": msg.time}
    if isinstance(msg, Store):
        return STORE, {"object": msg.object.to_wire()}
    if isinstance(msg, FindNode):
        return FIND_NODE, {"target": msg.target}
    if isinstance(msg, FindValue):
        return FIND_VALUE, {"key": msg.key}
    if isinstance(msg, ValueFound):
        return FIND_VALUE, {"object": msg.object.to_wire()}
    if isinstance(msg, RelayPortOpen):
        fields = {
            "ref": msg.ref,
            "opener": msg.opener,
            "target": msg.target,
            "port": msg.port,
            "flags": msg.flags,
        }
        return RELAY_PORTOPEN, fields
    if isinstance(msg, RelayPortSend):
        return RELAY_PORTSEND, {"ref": msg.ref, "data": msg.data}
    if isinstance(msg, RelayPortClose):
        return RELAY_PORTCLOSE, {"ref": msg.ref}
    if isinstance(msg, Forward):
        return FORWARD, {"target": msg.target, "type": msg.type, "payload": msg.payload}
    if isinstance(msg, Merkle):
        return MERKLE, {"prefix": msg.prefix, "bits": msg.bits}
    raise TypeError(f"not a peer message: {type(msg).__name__}")


def nodes_fields(nodes: Nodes, msg_type: int = FIND_NODE) -> tuple[int, dict[str, Any]]:
    """A FIND_NODE (or FIND_VALUE without the value) answer's fields."""
    return msg_type, {"nodes": [node.to_wire() for node in nodes.nodes[:MAX_NODES]]}
