"""The DHT's requests and answers (SPEC 4 types 0x20-0x23) and their msgpack payload shapes.

The node machine speaks in the dataclasses below; the peer-link adapter turns them into frame
payloads with `request_payload` / `answer_payload` and back with `parse_request` /
`parse_answer` (the frame's `id`, flags and msgpack are the framing codec's, not this module's).
Node objects and signed objects stay opaque here: a `ContactCodec` turns a received node object
into a `Contact` (checking its signature), a `ValueCodec` turns a signed object into a `Value`.
Those codecs are the signed-object module's (SPEC 6): they check the signature, then can use
`contact_from_node_object` / `value_from_object` here to read the fields the DHT needs.

    PING        0x20  {}                 -> {time}
    STORE       0x21  {object}           -> {} | error stale / expired / rate_limited / ...
    FIND_NODE   0x22  {target: 20 B}     -> {nodes: [node object, ...]}   closest first, <= k
    FIND_VALUE  0x23  {key: 20 B}        -> {object} | {nodes: [...]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from chrnode.dht import DhtProtocolError
from chrnode.dht.ids import ID_BYTES, Contact, K
from chrnode.dht.store import Value

PING, STORE, FIND_NODE, FIND_VALUE = 0x20, 0x21, 0x22, 0x23


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class FindNode:
    target: bytes


@dataclass(frozen=True)
class FindValue:
    key: bytes


@dataclass(frozen=True)
class Store:
    value: Value


Request = Ping | FindNode | FindValue | Store


@dataclass(frozen=True)
class Pong:
    time: float


@dataclass(frozen=True)
class Nodes:
    contacts: list[Contact]


@dataclass(frozen=True)
class Found:
    value: Value


@dataclass(frozen=True)
class Stored:
    pass


@dataclass(frozen=True)
class Refused:
    """An error answer (SPEC 4: response and error flags, `{code, message}`)."""

    code: str
    message: str


Answer = Pong | Nodes | Found | Stored | Refused


class ContactCodec(Protocol):
    def decode_contact(self, record: object) -> Contact:
        """A contact from a node object; raises DhtProtocolError when it is not a valid one."""
        ...


class ValueCodec(Protocol):
    def decode_value(self, obj: object) -> Value:
        """A value from a signed object; raises DhtProtocolError (bad_signature, mis_keyed...)."""
        ...


def contact_from_node_object(obj: object) -> Contact:
    """The contact a `node` object names (SPEC 6: key = signer = the node's address, data
    `{host, peer_port, ...}`), keeping the object as the contact's record.

    Reads the fields only: the signature is the signed-object codec's to check, before this.
    """
    if not isinstance(obj, dict) or obj.get("kind") != "node":
        raise DhtProtocolError("bad_payload", "a node entry must be a signed object of kind `node`")
    key, signer, data = obj.get("key"), obj.get("signer"), obj.get("data")
    if not isinstance(key, bytes) or len(key) != ID_BYTES or key != signer:
        raise DhtProtocolError("mis_keyed", "a node object's key and signer must be the same 20-byte address")
    host = data.get("host") if isinstance(data, dict) else None
    port = data.get("peer_port") if isinstance(data, dict) else None
    if not isinstance(host, str) or not host:
        raise DhtProtocolError("bad_payload", "a node object needs `data.host` (a non-empty string)")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise DhtProtocolError("bad_payload", "a node object needs `data.peer_port` (1-65535)")
    return Contact(key, host, port, record=obj)


def value_from_object(obj: object) -> Value:
    """The `Value` of a signed object (SPEC 6 `key`, `seq`, `expires`), keeping the object.

    Reads the fields only: the signature and the kind's key rule are the signed-object
    codec's to check, before this.
    """
    if not isinstance(obj, dict):
        raise DhtProtocolError("bad_payload", "a signed object must be a map (SPEC 6)")
    key = obj.get("key")
    if not isinstance(key, bytes) or len(key) != ID_BYTES:
        raise DhtProtocolError("bad_payload", "a signed object's `key` must be 20 bytes")
    return Value(key, _count(obj, "seq"), float(_count(obj, "expires")), obj)


def _count(obj: dict[object, object], name: str) -> int:
    number = obj.get(name)
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise DhtProtocolError("bad_payload", f"a signed object's `{name}` must be a non-negative integer")
    return number


def message_type(request: Request) -> int:
    if isinstance(request, Ping):
        return PING
    if isinstance(request, Store):
        return STORE
    return FIND_NODE if isinstance(request, FindNode) else FIND_VALUE


def request_payload(request: Request) -> dict[str, object]:
    """The payload of a request frame, without its `id` (the link adds it)."""
    if isinstance(request, Ping):
        return {}
    if isinstance(request, FindNode):
        return {"target": request.target}
    if isinstance(request, FindValue):
        return {"key": request.key}
    return {"object": request.value.obj}


def answer_payload(answer: Answer) -> dict[str, object]:
    """The payload of an answer frame, without its `id`; a `Refused` goes with the error flag."""
    if isinstance(answer, Pong):
        return {"time": answer.time}
    if isinstance(answer, Nodes):
        return {"nodes": [c.record for c in answer.contacts]}
    if isinstance(answer, Found):
        return {"object": answer.value.obj}
    if isinstance(answer, Refused):
        return {"code": answer.code, "message": answer.message}
    return {}


def parse_request(kind: int, payload: dict[str, object], values: ValueCodec) -> Request:
    """The request of a received frame; DhtProtocolError(`bad_payload`, ...) when malformed.

    Codes are those of chrnode/edge/codes.py (`bad_payload`, `unknown_type`) plus SPEC 4's
    STORE codes (`mis_keyed`, ...) raised by the value codec."""
    if kind == PING:
        return Ping()
    if kind == FIND_NODE:
        return FindNode(_id_field(payload, "target"))
    if kind == FIND_VALUE:
        return FindValue(_id_field(payload, "key"))
    if kind == STORE:
        if "object" not in payload:
            raise DhtProtocolError("bad_payload", "STORE needs an `object` (a signed object, SPEC 6)")
        return Store(values.decode_value(payload["object"]))
    raise DhtProtocolError("unknown_type", f"message type 0x{kind:02x} is not a DHT request")


def parse_answer(
    request: Request,
    payload: dict[str, object],
    contacts: ContactCodec,
    values: ValueCodec,
    *,
    k: int = K,
) -> Answer:
    """The answer to `request` in a received answer frame (error frames: `parse_error`)."""
    if isinstance(request, Ping):
        time = payload.get("time")
        if isinstance(time, bool) or not isinstance(time, int | float):
            raise DhtProtocolError("bad_payload", "a PING answer needs a numeric `time`")
        return Pong(float(time))
    if isinstance(request, Store):
        return Stored()
    if isinstance(request, FindValue) and "object" in payload:
        value = values.decode_value(payload["object"])
        if value.key != request.key:
            raise DhtProtocolError("mis_keyed", "FIND_VALUE answered with an object of another key")
        return Found(value)
    nodes = payload.get("nodes")
    if not isinstance(nodes, list):
        raise DhtProtocolError("bad_payload", "a FIND answer needs `nodes` (a list of node objects)")
    if len(nodes) > k:
        raise DhtProtocolError(
            "bad_payload", f"a FIND answer carries at most k = {k} nodes, not {len(nodes)}"
        )
    return Nodes([contacts.decode_contact(record) for record in nodes])


def parse_error(payload: dict[str, object]) -> Refused:
    code, message = payload.get("code"), payload.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        raise DhtProtocolError("bad_payload", "an error answer needs a string `code` and `message`")
    return Refused(code, message)


def _id_field(payload: dict[str, object], name: str) -> bytes:
    value = payload.get(name)
    if not isinstance(value, bytes) or len(value) != ID_BYTES:
        raise DhtProtocolError("bad_payload", f"`{name}` must be {ID_BYTES} bytes (msgpack bin)")
    return value
