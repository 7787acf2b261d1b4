"""Ports between devices on this node (SPEC 4: portopen, portsend, portclose).

A device opens a port to another device (by address, or by BNS name through the hooks). The node
asks the target with a portopen request of its own ``{id, ref, device (the opener), port,
flags}``; an empty answer accepts, an error refuses; the opener then gets ``{ref}``. Both sides
use the same ``ref``, so a ``portsend`` frame ``{ref, data}`` without ``id`` is forwarded byte for
byte: the frame buffer the sender's data was decrypted into is what gets encrypted towards the
receiver (no msgpack decode, no copy).

Consent (issue 8): every port has exactly one opener and one target, and the target itself
accepted it. No device is ever given a ref the target did not answer for.

Flags are the opener's: ``r`` it may receive from the target, ``w`` it may send to the target.
``s`` (shared) is passed to the target with the portopen: it says the opener expects the target
to take several openers on that port. Each of them is asked of the target and gets its own ref,
so the target tells its subscribers apart by ref (and by the opener address of each portopen);
the node does not fan one ref out to several readers. (A broadcast channel with its own
subscriptions is a separate feature: issue 10, channels.)

Limits: a device has at most MAX_PORTS_PER_DEVICE ports, open or being opened; at most
MAX_PENDING_OPENS unanswered portopens as opener, and at most MAX_PENDING_PER_TARGET unanswered
portopens wait on one target, whoever sent them (``busy`` beyond either).
"""

from __future__ import annotations

import logging
from collections import Counter
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
MAX_PENDING_OPENS = 64  # unanswered portopens of one opener
MAX_PENDING_PER_TARGET = 64  # unanswered portopens waiting on one target, from all openers


class Port:
    """One open port: its target session, its opener session and the opener's flags."""

    __slots__ = ("flags", "name", "opener", "ref", "target")

    def __init__(self, ref: int, target: Session, opener: Session, name: int | str, flags: str) -> None:
        self.ref = ref
        self.target = target
        self.opener = opener
        self.name = name
        self.flags = flags

    def other(self, end: Session) -> Session:
        """The end that is not ``end``."""
        return self.opener if end is self.target else self.target


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
    """Every port of one node, indexed by ref in each session; opens in flight counted per end."""

    def __init__(self, open_timeout: float) -> None:
        self.open_timeout = open_timeout
        self._next_ref = 0
        self._pending_as_opener: Counter[Session] = Counter()
        self._pending_on_target: Counter[Session] = Counter()
        self.count = 0
        self.opened_total = 0

    def _new_ref(self) -> int:
        self._next_ref += 1
        return self._next_ref

    def pending(self, session: Session) -> tuple[int, int]:
        """(unanswered portopens ``session`` sent, unanswered portopens waiting on it)."""
        return self._pending_as_opener[session], self._pending_on_target[session]

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
        problem = self._over_limit(opener, target, what)
        if problem is not None:
            opener.server.count_error(codes.BUSY)
            opener.error(PORTOPEN, rid, codes.BUSY, problem)
            return
        ref = self._new_ref()
        request_port = msg.port
        flags = msg.flags
        opener_device = opener.device
        self._pending_as_opener[opener] += 1
        self._pending_on_target[target] += 1

        def build(request_id: int) -> Message:
            return PortOpen(port=request_port, device=opener_device, flags=flags, ref=ref, id=request_id)

        def on_answer(answer: Message | None) -> None:
            self._settle(opener, target)
            self._answered(opener, target, msg, ref, answer, what)

        target.request(build, on_answer, self.open_timeout)

    def _over_limit(self, opener: Session, target: Session, what: str) -> str | None:
        as_opener = self._pending_as_opener[opener]
        if len(opener.ports) + as_opener >= MAX_PORTS_PER_DEVICE:
            return f"too many ports open or opening (at most {MAX_PORTS_PER_DEVICE} per device)"
        if as_opener >= MAX_PENDING_OPENS:
            return f"too many unanswered portopens (at most {MAX_PENDING_OPENS}); wait for their answers"
        on_target = self._pending_on_target[target]
        if on_target >= MAX_PENDING_PER_TARGET:
            return f"{what} has {on_target} portopens waiting for its answer; retry later"
        if len(target.ports) + on_target + self._pending_as_opener[target] >= MAX_PORTS_PER_DEVICE:
            return f"{what} has too many ports (at most {MAX_PORTS_PER_DEVICE} per device)"
        return None

    def _settle(self, opener: Session, target: Session) -> None:
        for counter, session in ((self._pending_as_opener, opener), (self._pending_on_target, target)):
            counter[session] -= 1
            if counter[session] <= 0:
                del counter[session]

    def _answered(
        self, opener: Session, target: Session, msg: PortOpen, ref: int, answer: Message | None, what: str
    ) -> None:
        rid = msg.id
        accepted = isinstance(answer, PortOpenReply)
        if opener.closed or target.closed or opener.closing:
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
        port = Port(ref, target, opener, msg.port, msg.flags)
        opener.ports[ref] = port
        target.ports[ref] = port
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
            if "r" not in port.flags:
                source.warn(
                    codes.FORBIDDEN, f"port {ref} was opened write-only ('w'): the opener does not read"
                )
                return
            port.opener.forward(frame, source)
            return
        if "w" not in port.flags:
            source.warn(codes.FORBIDDEN, f"port {ref} was opened read-only ('r'): you may not send on it")
            return
        port.target.forward(frame, source)

    # ---- closing ----------------------------------------------------------------------------

    def close(self, session: Session, ref: int) -> bool:
        """``session`` closes ``ref``; False if it has no such port. The other end is told."""
        port = session.ports.pop(ref, None)
        if port is None:
            return False
        session.recent_refs.append(ref)
        other = port.other(session)
        if other.ports.pop(ref, None) is not None:
            other.recent_refs.append(ref)
            other.send(PortClose(ref=ref))
        self.count -= 1
        return True

    def session_closed(self, session: Session) -> None:
        """Close every port of a device that left."""
        for ref in list(session.ports):
            self.close(session, ref)


def describe(device: bytes) -> str:
    """How a device is named in messages."""
    return f"device {to_hex_address(device)}"
