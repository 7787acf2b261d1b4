"""Ports between devices on this node (SPEC 4: portopen, portsend, portclose).

A device opens a port to another device (by address, or by BNS name through the hooks). The node
asks the target with a portopen request of its own ``{id, ref, device (the opener), port,
flags}``; an empty answer accepts, an error refuses; the opener then gets ``{ref}``. Both sides
use the same ``ref``, so a ``portsend`` frame ``{ref, data}`` without ``id`` is forwarded byte for
byte: the frame buffer the sender's data was decrypted into is what gets encrypted towards the
receiver (no msgpack decode, no copy).

Flags are the opener's: ``r`` it may receive from the target, ``w`` it may send to the target,
``s`` shared: later openers asking for the same (target, port) with ``s`` attach to the open port
without asking the target again; the target's data goes to every attached reader, and the port
ends when the target closes it or the last opener leaves.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chrnode.crypto import to_hex_address
from chrnode.edge import codes
from chrnode.edge.frame import HEADER_SIZE
from chrnode.edge.messages import PORTOPEN, ErrorReply, Message, PortClose, PortOpen, PortOpenReply

if TYPE_CHECKING:
    from chrnode.edge.session import Session

__all__ = ["Port", "PortTable", "describe", "parse_portsend"]

_log = logging.getLogger("chrnode.edge")

MAX_PORTS_PER_DEVICE = 1024
MAX_PENDING_OPENS = 64


class Port:
    """One open port: its target session and the opener sessions with their flags."""

    __slots__ = ("name", "openers", "ref", "shared", "target")

    def __init__(self, ref: int, target: Session, name: int | str, shared: bool) -> None:
        self.ref = ref
        self.target = target
        self.name = name
        self.shared = shared
        self.openers: dict[Session, str] = {}


_CANONICAL = int.from_bytes(b"\x82\xa3ref", "big")  # fixmap(2), "ref": how every client encodes it
_DATA_KEY = int.from_bytes(b"\xa4data", "big")


def parse_portsend(frame: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """(ref, data start, data end) of a portsend frame whose payload is exactly ``{ref: uint,
    data: bin}``, else None: then the full decoder handles it (``id``, bad types, trailing
    bytes). Offsets are into ``frame``; nothing is copied. This runs for every relayed frame, so
    the usual key order is tried first with plain integer reads (about 1 us)."""
    end = len(frame)
    if end < HEADER_SIZE + 12 or int.from_bytes(frame[8:13], "big") != _CANONICAL:
        return _parse_any_order(frame)
    tag = frame[13]
    if tag < 0x80:  # positive fixint: refs below 128
        ref, pos = tag, 14
    elif tag == 0xCD:  # uint16
        ref, pos = (frame[14] << 8) | frame[15], 16
    else:
        ref, pos = _uint_at(frame, 13)
        if ref < 0:
            return None
    if end < pos + 7 or int.from_bytes(frame[pos : pos + 5], "big") != _DATA_KEY:
        return None
    tag = frame[pos + 5]
    if tag == 0xC4:  # bin8
        start, size = pos + 7, frame[pos + 6]
    elif tag == 0xC5 and end >= pos + 8:  # bin16
        start, size = pos + 8, (frame[pos + 6] << 8) | frame[pos + 7]
    else:
        start, size = _bin_at(frame, pos + 5)
    return (ref, start, end) if start >= 0 and start + size == end else None


def _uint_at(frame: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """(value, next position) of the msgpack unsigned integer at ``pos``; (-1, pos) if it is not one."""
    tag = frame[pos]
    if tag < 0x80:
        return tag, pos + 1
    if 0xCC <= tag <= 0xCF:
        size = 1 << (tag - 0xCC)
        if pos + 1 + size <= len(frame):
            return int.from_bytes(frame[pos + 1 : pos + 1 + size], "big"), pos + 1 + size
    return -1, pos


def _bin_at(frame: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """(data start, length) of the msgpack bin at ``pos``; (-1, 0) if it is not one."""
    if pos >= len(frame):
        return -1, 0
    tag = frame[pos]
    if not 0xC4 <= tag <= 0xC6:
        return -1, 0
    size = 1 << (tag - 0xC4)
    if pos + 1 + size > len(frame):
        return -1, 0
    return pos + 1 + size, int.from_bytes(frame[pos + 1 : pos + 1 + size], "big")


def _parse_any_order(frame: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """parse_portsend for ``{data, ref}`` written in the other order (other encoders may)."""
    end = len(frame)
    pos = HEADER_SIZE
    if end <= pos or frame[pos] != 0x82:  # fixmap of two entries
        return None
    pos += 1
    ref = start = -1
    size = 0
    for _ in range(2):
        if pos >= end:
            return None
        key = frame[pos]
        if key == 0xA3 and int.from_bytes(frame[pos + 1 : pos + 4], "big") == _REF and ref < 0:
            ref, pos = _uint_at(frame, pos + 4) if pos + 4 < end else (-1, pos)
            if ref < 0:
                return None
        elif key == 0xA4 and int.from_bytes(frame[pos + 1 : pos + 5], "big") == _DATA and start < 0:
            start, size = _bin_at(frame, pos + 5)
            if start < 0:
                return None
            pos = start + size
        else:
            return None
    if pos != end or ref < 0 or start < 0:
        return None
    return ref, start, start + size


_REF = int.from_bytes(b"ref", "big")
_DATA = int.from_bytes(b"data", "big")


class PortTable:
    """Every port of one node, indexed by ref (in each session) and by shared (target, port)."""

    def __init__(self, open_timeout: float) -> None:
        self.open_timeout = open_timeout
        self._next_ref = 0
        self._shared: dict[tuple[bytes, int | str], Port] = {}
        self.count = 0
        self.opened_total = 0

    def _new_ref(self) -> int:
        self._next_ref += 1
        return self._next_ref

    # ---- opening ----------------------------------------------------------------------------

    def open(self, opener: Session, target: Session | None, msg: PortOpen, what: str) -> None:
        """Handle ``msg`` from ``opener``; ``target`` is the connected session of the device named
        by ``what`` (an address or name, for messages), or None if it is not here."""
        rid = msg.id
        if target is None or target.closing:
            opener.error(PORTOPEN, rid, codes.NOT_FOUND, f"{what} is not connected to this node")
            return
        if target is opener:
            opener.error(PORTOPEN, rid, codes.FORBIDDEN, "a device cannot open a port to itself")
            return
        if len(opener.ports) >= MAX_PORTS_PER_DEVICE or opener.pending_count() >= MAX_PENDING_OPENS:
            opener.error(PORTOPEN, rid, codes.BUSY, f"too many open ports (at most {MAX_PORTS_PER_DEVICE})")
            return
        flags = msg.flags
        assert target.device is not None and opener.device is not None
        if "s" in flags:
            port = self._shared.get((target.device, msg.port))
            if port is not None and port.target is target:
                port.openers[opener] = flags
                opener.ports[port.ref] = port
                opener.send(PortOpenReply(ref=port.ref, id=rid))
                return
        ref = self._new_ref()
        request_port = msg.port
        opener_device = opener.device

        def build(request_id: int) -> Message:
            return PortOpen(port=request_port, device=opener_device, flags=flags, ref=ref, id=request_id)

        def on_answer(answer: Message | None) -> None:
            self._answered(opener, target, msg, ref, answer, what)

        target.request(build, on_answer, self.open_timeout)

    def _answered(
        self, opener: Session, target: Session, msg: PortOpen, ref: int, answer: Message | None, what: str
    ) -> None:
        rid = msg.id
        accepted = isinstance(answer, PortOpenReply)
        if opener.closed or target.closed:
            if accepted and not target.closed:
                target.send(PortClose(ref=ref))
            if not opener.closed:
                opener.error(PORTOPEN, rid, codes.NOT_FOUND, f"{what} left before answering the portopen")
            return
        if answer is None:
            # A late acceptance would leave the target with a half-open port: tell it to close.
            target.send(PortClose(ref=ref))
            opener.error(
                PORTOPEN,
                rid,
                codes.TIMEOUT,
                f"{what} did not answer the portopen within {self.open_timeout} s",
            )
            return
        if isinstance(answer, ErrorReply):
            opener.error(
                PORTOPEN,
                rid,
                codes.REFUSED,
                f"{what} refused port {msg.port!r}: {answer.code}: {answer.message}",
            )
            return
        if not accepted:
            target.send(PortClose(ref=ref))
            opener.error(PORTOPEN, rid, codes.REFUSED, f"{what} answered the portopen with something else")
            return
        shared = "s" in msg.flags
        port = Port(ref, target, msg.port, shared)
        port.openers[opener] = msg.flags
        opener.ports[ref] = port
        target.ports[ref] = port
        assert target.device is not None
        if shared:
            self._shared.setdefault((target.device, msg.port), port)
        self.count += 1
        self.opened_total += 1
        opener.send(PortOpenReply(ref=ref, id=rid))

    # ---- data -------------------------------------------------------------------------------

    def relay(self, source: Session, ref: int, frame: bytes | bytearray | memoryview) -> None:
        """Forward a portsend frame (already in its final shape) from ``source`` on ``ref``."""
        port = source.ports.get(ref)
        if port is None:
            # Data in flight when the other side closed is normal; only a ref never seen is a fault.
            if ref not in source.recent_refs:
                source.warn(codes.UNKNOWN_REF, f"portsend on ref {ref}, which is not an open port here")
            return
        if port.target is source:
            readers = 0
            # A copy: a reader that is cut off while we forward leaves the port (dict changes).
            openers = port.openers
            for opener, flags in tuple(openers.items()) if len(openers) > 1 else openers.items():
                if "r" in flags:
                    opener.forward(frame, source)
                    readers += 1
            if not readers:
                source.warn(
                    codes.FORBIDDEN, f"port {ref} was opened write-only ('w'): the opener does not read"
                )
            return
        flags = port.openers.get(source, "")
        if "w" not in flags:
            source.warn(codes.FORBIDDEN, f"port {ref} was opened read-only ('r'): you may not send on it")
            return
        port.target.forward(frame, source)

    # ---- closing ----------------------------------------------------------------------------

    def close(self, session: Session, ref: int) -> bool:
        """``session`` closes ``ref``; False if it has no such port."""
        port = session.ports.pop(ref, None)
        if port is None:
            return False
        session.recent_refs.append(ref)
        if port.target is session:
            self._end(port, notify_target=False)
        else:
            port.openers.pop(session, None)
            if not port.openers:
                self._end(port, notify_target=True)
        return True

    def session_closed(self, session: Session) -> None:
        """Close every port of a device that left."""
        for ref in list(session.ports):
            self.close(session, ref)

    def _end(self, port: Port, notify_target: bool) -> None:
        ref = port.ref
        target = port.target
        target.ports.pop(ref, None)
        if notify_target:
            target.send(PortClose(ref=ref))
        target.recent_refs.append(ref)
        for opener in tuple(port.openers):
            opener.ports.pop(ref, None)
            opener.recent_refs.append(ref)
            opener.send(PortClose(ref=ref))
        port.openers.clear()
        if port.shared and target.device is not None:
            key = (target.device, port.name)
            if self._shared.get(key) is port:
                del self._shared[key]
        self.count -= 1


def describe(device: bytes) -> str:
    """How a device is named in messages."""
    return f"device {to_hex_address(device)}"
