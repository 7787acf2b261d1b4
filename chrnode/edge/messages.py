"""Typed EdgeV2 messages (SPEC 4): a frame in, a message out; a message in, a frame out. No I/O.

Each message is a frozen dataclass whose wire fields carry a *kind* (a validator of the msgpack
value). :func:`decode_payload` checks the payload is a msgpack map with string keys, then every
known field: byte strings must be bin (never str), addresses exactly 20 bytes, signatures exactly
65, integers in range; unknown keys are ignored so newer peers can add fields. Every fault raises
:class:`RemoteProtocolError` with a wire code and the request ``id`` when it could be read.
:func:`encode_message` validates the same way and raises :class:`LocalProtocolError`.

Requests and answers of one type are different classes: the frame's response flag picks one. An
error answer (response + error flags) of any type is an :class:`ErrorReply`. Peer messages
(0x20-0x29) are carried as :class:`PeerMessage` with their fields as a plain map; their schemas
belong to the DHT layer.
"""

from __future__ import annotations

import struct
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, cast

import msgpack

from chrnode.edge import codes
from chrnode.edge import fields as f
from chrnode.edge.bounds import PayloadError, unpack
from chrnode.edge.fields import MAX_KEY, MAX_NAME, MAX_TEXT, MAX_UINT64
from chrnode.edge.frame import FLAG_ERROR, FLAG_RESPONSE, Frame, encode_frame, encode_header
from chrnode.errors import LocalProtocolError, RemoteProtocolError
from chrnode.ticket import Ticket

__all__ = [
    "DEVICE_TYPES", "PEER_TYPES", "TYPE_NAMES", "Ack", "ErrorReply", "GetNode", "GetNodeReply", "GetObject",
    "GetObjectReply", "Hello", "HelloReply", "Message", "Notify", "PeerMessage", "Ping", "PingReply",
    "PortClose", "PortOpen", "PortOpenReply", "PortPause", "PortResume", "PortSend", "Resolve",
    "ResolveReply", "TicketMsg", "TicketReply", "TicketRequest", "decode_payload", "encode_message",
    "encode_portsend_parts",
]  # fmt: skip

# --- message types (SPEC 4) -----------------------------------------------------------------------
HELLO, TICKET, PORTOPEN, PORTSEND, PORTCLOSE, PING = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
GETNODE, GETOBJECT, RESOLVE, TICKET_REQUEST, NOTIFY = 0x07, 0x08, 0x09, 0x0A, 0x0B
PEER_PING, PEER_STORE, PEER_FIND_NODE, PEER_FIND_VALUE = 0x20, 0x21, 0x22, 0x23
PEER_PORTOPEN, PEER_PORTSEND, PEER_PORTCLOSE, PEER_FORWARD = 0x24, 0x25, 0x26, 0x27
PEER_MERKLE, PEER_HELLO = 0x28, 0x29
PORT_PAUSE, PORT_RESUME = 0x2A, 0x2B  # per-port backpressure (SPEC 4: the implementation's, 0x2A+)

TYPE_NAMES: dict[int, str] = {
    HELLO: "hello", TICKET: "ticket", PORTOPEN: "portopen", PORTSEND: "portsend",
    PORTCLOSE: "portclose", PING: "ping", GETNODE: "getnode", GETOBJECT: "getobject",
    RESOLVE: "resolve", TICKET_REQUEST: "ticket_request", NOTIFY: "notify",
    PEER_PING: "peer_ping", PEER_STORE: "peer_store", PEER_FIND_NODE: "peer_find_node",
    PEER_FIND_VALUE: "peer_find_value", PEER_PORTOPEN: "peer_portopen",
    PEER_PORTSEND: "peer_portsend", PEER_PORTCLOSE: "peer_portclose", PEER_FORWARD: "peer_forward",
    PEER_MERKLE: "peer_merkle", PEER_HELLO: "peer_hello",
    PORT_PAUSE: "port_pause", PORT_RESUME: "port_resume",
}  # fmt: skip
DEVICE_TYPES = frozenset(range(HELLO, NOTIFY + 1))
PEER_TYPES = frozenset(range(PEER_PING, PEER_HELLO + 1))


# --- messages -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hello:
    TYPE: ClassVar[int] = HELLO
    device: bytes = f.wire_field(f.address)
    device_sig: bytes = f.wire_field(f.signature)
    version: int = f.wire_field(f.uint)
    compress: bool = f.wire_field(f.boolean, False)
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class HelloReply:
    TYPE: ClassVar[int] = HELLO
    node: bytes = f.wire_field(f.address)
    version: int = f.wire_field(f.uint)
    epoch: int = f.wire_field(f.uint)
    chain_id: int = f.wire_field(f.uint)
    fleet: bytes = f.wire_field(f.address)
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class TicketMsg:
    TYPE: ClassVar[int] = TICKET
    ticket: Ticket = f.wire_field(f.ticket)  # noqa: RUF009 - f.wire_field is dataclasses.field with a kind
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class TicketReply:
    """``status`` "thanks" with ``paid_bytes``, or "too_low" with the stored ticket as ``latest``."""

    TYPE: ClassVar[int] = TICKET
    status: str = f.wire_field(f.text_of(16))
    paid_bytes: int | None = f.wire_field(f.uint, None)
    latest: Ticket | None = f.wire_field(f.ticket, None)  # noqa: RUF009
    id: int | None = f.wire_field(f.uint, None)

    def _problem(self) -> str | None:
        if self.status == "thanks":
            return None if self.paid_bytes is not None else "status 'thanks' needs paid_bytes"
        if self.status == "too_low":
            return None if self.latest is not None else "status 'too_low' needs latest"
        return f"status must be 'thanks' or 'too_low', got {self.status!r}"


@dataclass(frozen=True, slots=True)
class PortOpen:
    """Device -> node: ``device`` or ``name`` of the target. Node -> target: ``device`` is the
    opener and ``ref`` the port's reference on both sides."""

    TYPE: ClassVar[int] = PORTOPEN
    port: int | str = f.wire_field(f.port)
    device: bytes | None = f.wire_field(f.address, None)
    name: str | None = f.wire_field(f.text_of(MAX_NAME, 1), None)
    flags: str = f.wire_field(f.port_flags, "rw")
    ref: int | None = f.wire_field(f.uint, None)
    id: int | None = f.wire_field(f.uint, None)

    def _problem(self) -> str | None:
        if (self.device is None) == (self.name is None):
            return "needs exactly one of device (20 B) and name"
        return None


@dataclass(frozen=True, slots=True)
class PortOpenReply:
    """``ref`` from the node to the opener; empty (ref None) from a target accepting the port."""

    TYPE: ClassVar[int] = PORTOPEN
    ref: int | None = f.wire_field(f.uint, None)
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class PortSend:
    TYPE: ClassVar[int] = PORTSEND
    ref: int = f.wire_field(f.uint)
    data: bytes = f.wire_field(f.bin_of())
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class PortClose:
    TYPE: ClassVar[int] = PORTCLOSE
    ref: int = f.wire_field(f.uint)
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar[int] = PING
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class PingReply:
    """``time``: the answering side's clock, Unix time in milliseconds."""

    TYPE: ClassVar[int] = PING
    time: int = f.wire_field(f.uint)
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class GetNode:
    TYPE: ClassVar[int] = GETNODE
    node: bytes = f.wire_field(f.address)
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class GetNodeReply:
    """The node's signed record (its schema is the DHT layer's, SPEC 6)."""

    TYPE: ClassVar[int] = GETNODE
    record: dict[str, Any] = f.wire_field(f.string_map)  # noqa: RUF009
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class GetObject:
    TYPE: ClassVar[int] = GETOBJECT
    key: bytes = f.wire_field(f.bin_of(max_size=MAX_KEY))
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class GetObjectReply:
    """The stored signed object (its schema is the DHT layer's, SPEC 6)."""

    TYPE: ClassVar[int] = GETOBJECT
    object: dict[str, Any] = f.wire_field(f.string_map)  # noqa: RUF009
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class Resolve:
    TYPE: ClassVar[int] = RESOLVE
    name: str = f.wire_field(f.text_of(MAX_NAME, 1))
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class ResolveReply:
    TYPE: ClassVar[int] = RESOLVE
    device: bytes = f.wire_field(f.address)
    owner: bytes = f.wire_field(f.address)
    namespace: str = f.wire_field(f.text_of(MAX_NAME))
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class TicketRequest:
    """Node -> device: send a ticket covering at least ``usage`` bytes in ``epoch``."""

    TYPE: ClassVar[int] = TICKET_REQUEST
    usage: int = f.wire_field(f.uint)
    epoch: int = f.wire_field(f.uint)
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class Notify:
    """Node -> device, no answer. ``level``: "info", "warning" or "error"; ``code`` as in errors.
    ``id`` is normally None; it exists so that every message has one."""

    TYPE: ClassVar[int] = NOTIFY
    level: str = f.wire_field(f.text_of(16, 1))
    code: str = f.wire_field(f.error_code)
    message: str = f.wire_field(f.text_of(MAX_TEXT))
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class PortPause:
    """Stop sending data on ``ref`` until a PortResume: the port's reader is not keeping up.

    Sent by the node to a device, and by either node over a peer link; no ``id``, no answer. A
    device that keeps sending on a paused port is paused as a whole connection once it has sent
    more than a small allowance (docs/protocol.md), so honouring it keeps its other ports going."""

    TYPE: ClassVar[int] = PORT_PAUSE
    ref: int = f.wire_field(f.uint)
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class PortResume:
    """Data may flow on ``ref`` again (after a PortPause)."""

    TYPE: ClassVar[int] = PORT_RESUME
    ref: int = f.wire_field(f.uint)
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class Ack:
    """The empty answer ``{}`` (portsend and portclose with an id)."""

    msg_type: int
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error answer to a request of type ``msg_type``: ``{id, code, message}`` (SPEC 4)."""

    msg_type: int
    code: str = f.wire_field(f.error_code)
    message: str = f.wire_field(f.text_of(MAX_TEXT))
    id: int | None = f.wire_field(f.uint, None)


@dataclass(frozen=True, slots=True)
class PeerMessage:
    """A node <-> node message (0x20-0x29): the payload map without ``id``, validated by the DHT layer."""

    msg_type: int
    fields: dict[str, Any]
    response: bool = False
    id: int | None = f.wire_field(f.uint, None)


Message = (
    Hello | HelloReply | TicketMsg | TicketReply | PortOpen | PortOpenReply | PortSend | PortClose
    | Ping | PingReply | GetNode | GetNodeReply | GetObject | GetObjectReply | Resolve | ResolveReply
    | TicketRequest | Notify | PortPause | PortResume | Ack | ErrorReply | PeerMessage
)  # fmt: skip

_REQUESTS: dict[int, type[Any]] = {
    cls.TYPE: cls
    for cls in (Hello, TicketMsg, PortOpen, PortSend, PortClose, Ping, GetNode, GetObject, Resolve)
}
_REQUESTS.update(
    {TICKET_REQUEST: TicketRequest, NOTIFY: Notify, PORT_PAUSE: PortPause, PORT_RESUME: PortResume}
)
_REPLIES: dict[int, type[Any]] = {
    cls.TYPE: cls
    for cls in (HelloReply, TicketReply, PortOpenReply, PingReply, GetNodeReply, GetObjectReply, ResolveReply)
}
_ACK_TYPES = frozenset((PORTSEND, PORTCLOSE))

# Per class: (name, kind, default) of each wire field, computed once.
_SCHEMAS: dict[type[Any], tuple[tuple[str, f.Kind, Any], ...]] = {
    cls: tuple((fld.name, fld.metadata["kind"], fld.default) for fld in fields(cls) if "kind" in fld.metadata)
    for cls in (*_REQUESTS.values(), *_REPLIES.values(), Ack, ErrorReply, PeerMessage)
}


# --- decoding -------------------------------------------------------------------------------------
def decode_payload(frame: Frame) -> Message:
    """The typed message in ``frame``; RemoteProtocolError(code, request_id) if it is not valid."""
    msg_type = frame.type
    name = TYPE_NAMES.get(msg_type)
    try:
        obj = unpack(frame.payload)  # bounded: depth, sizes, no ext (bounds.py)
    except PayloadError as exc:
        if name is None:
            raise RemoteProtocolError(f"unknown message type 0x{msg_type:02x}", codes.UNKNOWN_TYPE) from exc
        raise RemoteProtocolError(f"{name} payload {exc}", codes.BAD_PAYLOAD, _read_id(exc.value)) from exc
    if msg_type == PORTSEND and not frame.flags and type(obj) is dict:
        fast = _fast_portsend(obj)  # the relay's data path (SPEC 4): skip the generic schema walk
        if fast is not None:
            return fast
    request_id = _read_id(obj)
    if name is None:
        raise RemoteProtocolError(f"unknown message type 0x{msg_type:02x}", codes.UNKNOWN_TYPE, request_id)
    if frame.flags & ~(FLAG_RESPONSE | FLAG_ERROR):
        # FrameDecoder never hands these out; a hand-made Frame must be plain too.
        problem = f"{name} frame flags 0x{frame.flags:x} set bits other than response and error"
        raise RemoteProtocolError(problem, codes.BAD_FRAME, request_id)
    if not isinstance(obj, dict):
        problem = f"{name} payload must be a msgpack map with string keys, got {f.show(obj)}"
        raise RemoteProtocolError(problem, codes.BAD_PAYLOAD)
    if not all(isinstance(key, str) for key in obj):
        raise RemoteProtocolError(f"{name} payload map keys must be strings", codes.BAD_PAYLOAD, request_id)
    if "id" in obj and obj["id"] is not None and request_id is None:
        raise RemoteProtocolError(
            f"{name} id must be an integer 0..2^64-1, got {f.show(obj['id'])}", codes.BAD_PAYLOAD
        )

    if frame.is_error:
        if not frame.is_response:
            raise RemoteProtocolError(
                f"{name} frame has the error flag without the response flag", codes.BAD_FRAME, request_id
            )
        return cast(ErrorReply, _build(ErrorReply, obj, name, request_id, msg_type=msg_type))
    if msg_type in PEER_TYPES:
        extra = {k: v for k, v in obj.items() if k != "id"}
        return PeerMessage(msg_type, extra, frame.is_response, request_id)
    if frame.is_response:
        if msg_type in _ACK_TYPES:
            return Ack(msg_type, request_id)
        cls = _REPLIES.get(msg_type)
        if cls is None:
            raise RemoteProtocolError(f"{name} has no answer, got one", codes.UNEXPECTED_MESSAGE, request_id)
        return cast(Message, _build(cls, obj, f"{name} answer", request_id))
    return cast(Message, _build(_REQUESTS[msg_type], obj, name, request_id))


def _fast_portsend(obj: dict[Any, Any]) -> PortSend | None:
    """A PortSend if ``obj`` is a plainly valid one, else None (the generic path then says why)."""
    ref, data, request_id = obj.get("ref"), obj.get("data"), obj.get("id")
    if (
        type(ref) is int
        and 0 <= ref <= MAX_UINT64
        and type(data) is bytes
        and (request_id is None or (type(request_id) is int and 0 <= request_id <= MAX_UINT64))
        and all(type(key) is str for key in obj)
    ):
        return PortSend(ref, data, request_id)
    return None


def _read_id(obj: Any) -> int | None:
    if isinstance(obj, dict):
        value = obj.get("id")
        if type(value) is int and 0 <= value <= MAX_UINT64:
            return value
    return None


def _build(cls: type[Any], obj: dict[str, Any], what: str, request_id: int | None, **extra: Any) -> Any:
    values: dict[str, Any] = dict(extra)
    for key, kind, default in _SCHEMAS[cls]:
        value = obj.get(key)
        if value is None:
            # nil counts as absent: optional fields of other implementations may be sent as nil
            if default is MISSING:
                raise RemoteProtocolError(f"{what}: field {key!r} is missing", codes.BAD_PAYLOAD, request_id)
            values[key] = default
            continue
        try:
            values[key] = kind(value)
        except f.InvalidField as exc:
            raise RemoteProtocolError(f"{what}: field {key!r} {exc}", codes.BAD_PAYLOAD, request_id) from None
    message = cls(**values)
    problem = _cross_check(message)
    if problem:
        raise RemoteProtocolError(f"{what}: {problem}", codes.BAD_PAYLOAD, request_id)
    return message


def _cross_check(message: Any) -> str | None:
    check = getattr(message, "_problem", None)
    return check() if check is not None else None


# --- encoding -------------------------------------------------------------------------------------
def encode_message(msg: Message, *, compress: bool = False) -> bytes:
    """``msg`` as one frame; LocalProtocolError if a field is not what SPEC 4 allows."""
    if type(msg) is PortSend and msg.id is None and not compress:
        header, data = encode_portsend_parts(msg.ref, msg.data)
        return header + data
    if isinstance(msg, ErrorReply | Ack | PeerMessage):
        msg_type = msg.msg_type
        if msg_type not in TYPE_NAMES:
            raise LocalProtocolError(f"cannot send message type 0x{msg_type:02x}: not in SPEC 4")
    else:
        msg_type = msg.TYPE
    if isinstance(msg, ErrorReply):
        flags = FLAG_RESPONSE | FLAG_ERROR
    elif isinstance(msg, PeerMessage):
        flags = FLAG_RESPONSE if msg.response else 0
    else:
        flags = FLAG_RESPONSE if type(msg) in _REPLIES.values() or isinstance(msg, Ack) else 0
    payload: dict[str, Any] = {}
    if isinstance(msg, PeerMessage):
        try:
            payload.update(f.string_map(msg.fields))
        except f.InvalidField as exc:
            raise LocalProtocolError(f"{TYPE_NAMES[msg_type]} fields {exc}") from None
    for key, kind, _default in _SCHEMAS[type(msg)]:
        value = getattr(msg, key)
        if value is None:
            continue
        try:
            kind(value)
        except f.InvalidField as exc:
            raise LocalProtocolError(f"{type(msg).__name__}.{key} {exc}") from None
        payload[key] = value.to_wire() if isinstance(value, Ticket) else value
    if isinstance(msg, ErrorReply):
        payload["id"] = msg.id  # SPEC 4: {id, code, message}, id nil when it could not be read
    problem = _cross_check(msg)
    if problem:
        raise LocalProtocolError(f"{type(msg).__name__}: {problem}")
    return encode_frame(msg_type, msgpack.packb(payload, use_bin_type=True), flags, compress=compress)


_PORTSEND_MAP = b"\x82\xa3ref"  # fixmap of 2 entries, then the key "ref"
_DATA_KEY = b"\xa4data"


def encode_portsend_parts(ref: int, data: bytes | memoryview) -> tuple[bytes, bytes | memoryview]:
    """A portsend frame without ``id`` as (header + msgpack prefix, data), so relayed data is not copied.

    The two parts concatenated are byte-identical to ``encode_message(PortSend(ref, data))``.
    """
    if type(ref) is not int or not 0 <= ref <= MAX_UINT64:
        raise LocalProtocolError(f"portsend ref must be an integer 0..2^64-1, got {ref!r}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"portsend data must be bytes, got {type(data).__name__}")
    size = memoryview(data).nbytes if isinstance(data, memoryview) else len(data)
    if size < 0x100:
        bin_header = struct.pack(">BB", 0xC4, size)
    elif size < 0x10000:
        bin_header = struct.pack(">BH", 0xC5, size)
    else:
        bin_header = struct.pack(">BI", 0xC6, size)
    prefix = _PORTSEND_MAP + msgpack.packb(ref) + _DATA_KEY + bin_header
    return encode_header(PORTSEND, len(prefix) + size) + prefix, data
