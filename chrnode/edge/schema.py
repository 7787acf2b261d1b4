"""The EdgeV2 message types and their wire fields (SPEC 4): frozen dataclasses, no codec.

Each message is a frozen dataclass whose wire fields carry a *kind* (a validator of the msgpack
value, chrnode.edge.fields); chrnode.edge.messages decodes and encodes them. Requests and answers
of one type are different classes. Peer messages (0x20-0x27) are carried as :class:`PeerMessage`
with their fields as a plain map; their schemas belong to the DHT layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from chrnode.edge import fields as f
from chrnode.edge.fields import MAX_KEY, MAX_NAME, MAX_TEXT
from chrnode.ticket import Ticket

__all__ = [
    "DEVICE_TYPES",
    "GETNODE",
    "GETOBJECT",
    "HELLO",
    "NOTIFY",
    "PEER_FIND_NODE",
    "PEER_FIND_VALUE",
    "PEER_FORWARD",
    "PEER_HELLO",
    "PEER_MERKLE",
    "PEER_PING",
    "PEER_PORTCLOSE",
    "PEER_PORTOPEN",
    "PEER_PORTSEND",
    "PEER_STORE",
    "PEER_TYPES",
    "PING",
    "PORTCLOSE",
    "PORTOPEN",
    "PORTSEND",
    "PORT_PAUSE",
    "PORT_RESUME",
    "REPLIES",
    "REQUESTS",
    "RESOLVE",
    "TICKET",
    "TICKET_REQUEST",
    "TYPE_NAMES",
    "Ack",
    "ErrorReply",
    "GetNode",
    "GetNodeReply",
    "GetObject",
    "GetObjectReply",
    "Hello",
    "HelloReply",
    "Message",
    "Notify",
    "PeerMessage",
    "Ping",
    "PingReply",
    "PortClose",
    "PortOpen",
    "PortOpenReply",
    "PortPause",
    "PortResume",
    "PortSend",
    "Resolve",
    "ResolveReply",
    "TicketMsg",
    "TicketReply",
    "TicketRequest",
]

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
# A message is written down once: its class here, decorated with the direction of its frame
# (@_request: no response flag; @_reply: the response flag), its name in __all__ and in Message.
# The codec (chrnode.edge.messages) finds it in REQUESTS / REPLIES by its TYPE and re-exports it.
REQUESTS: dict[int, type[Any]] = {}  # frames without the response flag, by type
REPLIES: dict[int, type[Any]] = {}  # answers (the response flag), by type

_C = TypeVar("_C", bound=type[Any])


def _request(cls: _C) -> _C:
    assert cls.TYPE not in REQUESTS, f"two requests of type 0x{cls.TYPE:02x}"
    REQUESTS[cls.TYPE] = cls
    return cls


def _reply(cls: _C) -> _C:
    assert cls.TYPE not in REPLIES, f"two answers of type 0x{cls.TYPE:02x}"
    REPLIES[cls.TYPE] = cls
    return cls


@_request
@dataclass(frozen=True, slots=True)
class Hello:
    TYPE: ClassVar[int] = HELLO
    device: bytes = f.wire_field(f.address)
    device_sig: bytes = f.wire_field(f.signature)
    version: int = f.wire_field(f.uint)
    compress: bool = f.wire_field(f.boolean, False)
    id: int | None = f.wire_field(f.uint, None)


@_reply
@dataclass(frozen=True, slots=True)
class HelloReply:
    TYPE: ClassVar[int] = HELLO
    node: bytes = f.wire_field(f.address)
    version: int = f.wire_field(f.uint)
    epoch: int = f.wire_field(f.uint)
    chain_id: int = f.wire_field(f.uint)
    fleet: bytes = f.wire_field(f.address)
    id: int | None = f.wire_field(f.uint, None)


@_request
@dataclass(frozen=True, slots=True)
class TicketMsg:
    TYPE: ClassVar[int] = TICKET
    ticket: Ticket = f.wire_field(f.ticket)  # noqa: RUF009 - f.wire_field is dataclasses.field with a kind
    id: int | None = f.wire_field(f.uint, None)


@_reply
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


@_request
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


@_reply
@dataclass(frozen=True, slots=True)
class PortOpenReply:
    """``ref`` from the node to the opener; empty (ref None) from a target accepting the port.
    ``shared``: a target accepting an ``s`` portopen takes later openers as a channel (SPEC 4 ``s``;
    docs/protocol.md, "Channels")."""

    TYPE: ClassVar[int] = PORTOPEN
    ref: int | None = f.wire_field(f.uint, None)
    id: int | None = f.wire_field(f.uint, None)
    shared: bool | None = f.wire_field(f.boolean, None)


@_request
@dataclass(frozen=True, slots=True)
class PortSend:
    TYPE: ClassVar[int] = PORTSEND
    ref: int = f.wire_field(f.uint)
    data: bytes = f.wire_field(f.bin_of())
    id: int | None = f.wire_field(f.uint, None)


@_request
@dataclass(frozen=True, slots=True)
class PortClose:
    TYPE: ClassVar[int] = PORTCLOSE
    ref: int = f.wire_field(f.uint)
    id: int | None = f.wire_field(f.uint, None)


@_request
@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar[int] = PING
    id: int | None = f.wire_field(f.uint, None)


@_reply
@dataclass(frozen=True, slots=True)
class PingReply:
    """``time``: the answering side's clock, Unix time in milliseconds."""

    TYPE: ClassVar[int] = PING
    time: int = f.wire_field(f.uint)
    id: int | None = f.wire_field(f.uint, None)


@_request
@dataclass(frozen=True, slots=True)
class GetNode:
    TYPE: ClassVar[int] = GETNODE
    node: bytes = f.wire_field(f.address)
    id: int | None = f.wire_field(f.uint, None)


@_reply
@dataclass(frozen=True, slots=True)
class GetNodeReply:
    """The node's signed record (its schema is the DHT layer's, SPEC 6)."""

    TYPE: ClassVar[int] = GETNODE
    record: dict[str, Any] = f.wire_field(f.string_map)  # noqa: RUF009
    id: int | None = f.wire_field(f.uint, None)


@_request
@dataclass(frozen=True, slots=True)
class GetObject:
    TYPE: ClassVar[int] = GETOBJECT
    key: bytes = f.wire_field(f.bin_of(max_size=MAX_KEY))
    id: int | None = f.wire_field(f.uint, None)


@_reply
@dataclass(frozen=True, slots=True)
class GetObjectReply:
    """The stored signed object (its schema is the DHT layer's, SPEC 6)."""

    TYPE: ClassVar[int] = GETOBJECT
    object: dict[str, Any] = f.wire_field(f.string_map)  # noqa: RUF009
    id: int | None = f.wire_field(f.uint, None)


@_request
@dataclass(frozen=True, slots=True)
class Resolve:
    TYPE: ClassVar[int] = RESOLVE
    name: str = f.wire_field(f.text_of(MAX_NAME, 1))
    id: int | None = f.wire_field(f.uint, None)


@_reply
@dataclass(frozen=True, slots=True)
class ResolveReply:
    TYPE: ClassVar[int] = RESOLVE
    device: bytes = f.wire_field(f.address)
    owner: bytes = f.wire_field(f.address)
    namespace: str = f.wire_field(f.text_of(MAX_NAME))
    id: int | None = f.wire_field(f.uint, None)


@_request
@dataclass(frozen=True, slots=True)
class TicketRequest:
    """Node -> device: send a ticket covering at least ``usage`` bytes in ``epoch``."""

    TYPE: ClassVar[int] = TICKET_REQUEST
    usage: int = f.wire_field(f.uint)
    epoch: int = f.wire_field(f.uint)
    id: int | None = f.wire_field(f.uint, None)


@_request
@dataclass(frozen=True, slots=True)
class Notify:
    """Node -> device, no answer. ``level``: "info", "warning" or "error"; ``code`` as in errors.
    ``id`` is normally None; it exists so that every message has one."""

    TYPE: ClassVar[int] = NOTIFY
    level: str = f.wire_field(f.text_of(16, 1))
    code: str = f.wire_field(f.error_code)
    message: str = f.wire_field(f.text_of(MAX_TEXT))
    id: int | None = f.wire_field(f.uint, None)


@_request
@dataclass(frozen=True, slots=True)
class PortPause:
    """Stop sending data on ``ref`` until a PortResume: the port's reader is not keeping up.

    Sent by the node to a device, and by either node over a peer link; no ``id``, no answer. A
    device that keeps sending on a paused port is paused as a whole connection once it has sent
    more than a small allowance (docs/protocol.md), so honouring it keeps its other ports going."""

    TYPE: ClassVar[int] = PORT_PAUSE
    ref: int = f.wire_field(f.uint)
    id: int | None = f.wire_field(f.uint, None)


@_request
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
    """A node <-> node message (0x20-0x27): the payload map without ``id``, validated by the DHT layer."""

    msg_type: int
    fields: dict[str, Any]
    response: bool = False
    id: int | None = f.wire_field(f.uint, None)


Message = (
    Hello | HelloReply | TicketMsg | TicketReply | PortOpen | PortOpenReply | PortSend | PortClose
    | Ping | PingReply | GetNode | GetNodeReply | GetObject | GetObjectReply | Resolve | ResolveReply
    | TicketRequest | Notify | PortPause | PortResume | Ack | ErrorReply | PeerMessage
)  # fmt: skip
