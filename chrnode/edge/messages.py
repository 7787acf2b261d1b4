"""Typed EdgeV2 messages (SPEC 4): a frame in, a message out; a message in, a frame out. No I/O.

The messages are the frozen dataclasses of chrnode.edge.schema (all re-exported here), whose wire
fields carry a *kind* (a validator of the msgpack value). :func:`decode_payload` checks the payload
is a msgpack map with string keys (bounded first: chrnode.edge.bounds), then every known field:
byte strings must be bin (never str), addresses exactly 20 bytes, signatures exactly 65, integers
in range; unknown keys are ignored so newer peers can add fields. Every fault raises
:class:`RemoteProtocolError` with a wire code and the request ``id`` when it could be read.
:func:`encode_message` validates the same way and raises :class:`LocalProtocolError`.

Requests and answers of one type are different classes: the frame's response flag picks one. An
error answer (response + error flags) of any type is an :class:`ErrorReply`. Peer messages
(0x20-0x27) are carried as :class:`PeerMessage` with their fields as a plain map; their schemas
belong to the DHT layer.
"""

from __future__ import annotations

import struct
from dataclasses import MISSING, fields
from typing import Any, cast

import msgpack

from chrnode.edge import codes, schema
from chrnode.edge import fields as f
from chrnode.edge.bounds import PayloadError, unpack
from chrnode.edge.fields import MAX_UINT64
from chrnode.edge.frame import FLAG_ERROR, FLAG_RESPONSE, Frame, encode_frame, encode_header
from chrnode.edge.schema import *  # noqa: F403 - every message and type, re-exported (written down once there)
from chrnode.edge.schema import (
    PEER_TYPES,
    PORTCLOSE,
    PORTSEND,
    REPLIES,
    REQUESTS,
    TYPE_NAMES,
    Ack,
    ErrorReply,
    Message,
    PeerMessage,
    PortSend,
)
from chrnode.errors import LocalProtocolError, RemoteProtocolError
from chrnode.ticket import Ticket

__all__ = ["decode_payload", "encode_message", "encode_portsend_parts"]
__all__ += schema.__all__

_ACK_TYPES = frozenset((PORTSEND, PORTCLOSE))
_REPLY_CLASSES = frozenset(REPLIES.values())

# Per class: (name, kind, default) of each wire field, computed once.
_SCHEMAS: dict[type[Any], tuple[tuple[str, f.Kind, Any], ...]] = {
    cls: tuple((fld.name, fld.metadata["kind"], fld.default) for fld in fields(cls) if "kind" in fld.metadata)
    for cls in (*REQUESTS.values(), *REPLIES.values(), Ack, ErrorReply, PeerMessage)
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
        cls = REPLIES.get(msg_type)
        if cls is None:
            raise RemoteProtocolError(f"{name} has no answer, got one", codes.UNEXPECTED_MESSAGE, request_id)
        return cast(Message, _build(cls, obj, f"{name} answer", request_id))
    return cast(Message, _build(REQUESTS[msg_type], obj, name, request_id))


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
        flags = FLAG_RESPONSE if type(msg) in _REPLY_CLASSES or isinstance(msg, Ack) else 0
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
