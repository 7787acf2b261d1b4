"""The portsend fast path of the relay (SPEC 4): where a portsend frame's ref and data are, pure.

Every relayed frame passes here, so the usual encoding ``{ref: uint, data: bin}`` is read with
plain integer reads (about 1 us) and nothing is copied; anything else (an ``id``, other key order
than the two tried, other types) returns None and goes to the full decoder (messages).
"""

from __future__ import annotations

import struct

from chrnode.edge.frame import HEADER_SIZE

__all__ = ["parse_portsend"]

_U64 = struct.Struct(">Q")

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
    if tag == 0xCF and end >= 22:  # uint64: the random 63-bit refs of SPEC 4, nearly always
        ref, pos = _U64.unpack_from(frame, 14)[0], 22
    elif tag < 0x80:  # positive fixint: refs below 128
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
