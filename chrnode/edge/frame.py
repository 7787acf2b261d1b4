"""The EdgeV2 frame codec (SPEC 4): bytes in, frames out; a frame in, bytes out. No I/O.

    +---------+------+-------------+--------------+------------------+
    | version | type | flags BE16  | length BE32  | payload (length) |
    |  1 (=2) |  1   |      2      |      4       |                  |
    +---------+------+-------------+--------------+------------------+

flags: bit 0 response, bit 1 error, bit 2 payload zlib-compressed; every other bit must be 0.

:class:`FrameDecoder` is fed whatever the transport read and hands out whole frames. The length is
checked against the limit as soon as the header is in, before any payload is buffered. Faults that
desynchronise the stream (wrong version, oversized length, truncated at end of stream) raise
:class:`FrameError` and poison the decoder: close the connection. A well-delimited frame with bad
flags or a bad compressed payload raises a plain :class:`RemoteProtocolError` after it has been
consumed, so the caller may answer with an error and go on reading.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

from chrnode.edge import codes
from chrnode.edge.bounds import PayloadError, unpack
from chrnode.errors import FrameError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FLAG_COMPRESSED",
    "FLAG_ERROR",
    "FLAG_RESPONSE",
    "HEADER_SIZE",
    "KNOWN_FLAGS",
    "VERSION",
    "Buffer",
    "Frame",
    "FrameDecoder",
    "checked_frame",
    "decompress_payload",
    "encode_frame",
    "encode_frame_parts",
    "encode_header",
    "peek_request_id",
]

VERSION = 2
HEADER_SIZE = 8
DEFAULT_MAX_FRAME_SIZE = 1024 * 1024  # SPEC 4: 1 MiB unless configured otherwise
MAX_LENGTH_FIELD = 0xFFFF_FFFF

FLAG_RESPONSE = 0x0001
FLAG_ERROR = 0x0002
FLAG_COMPRESSED = 0x0004
KNOWN_FLAGS = FLAG_RESPONSE | FLAG_ERROR | FLAG_COMPRESSED

_HEADER = struct.Struct(">BBHI")

# Compact the receive buffer once the consumed prefix is this large and at least half the buffer,
# so a long stream costs amortised O(1) per byte instead of a copy of the tail per frame.
_COMPACT_MIN = 64 * 1024


# Payloads may be views into a transport's buffer; FrameDecoder always hands out bytes.
Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame. ``payload`` is plain (already decompressed), so ``flags`` never has the compressed
    bit: compression is a detail of one hop."""

    type: int
    flags: int
    payload: Buffer

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)


def encode_header(msg_type: int, length: int, flags: int = 0) -> bytes:
    """The 8-byte header of a frame whose payload is ``length`` bytes."""
    if not 0 <= msg_type <= 0xFF:
        raise LocalProtocolError(f"frame type must be 0..255, got {msg_type}")
    if flags & ~KNOWN_FLAGS or flags < 0:
        raise LocalProtocolError(f"frame flags 0x{flags:x} set bits other than response/error/compressed")
    if not 0 <= length <= MAX_LENGTH_FIELD:
        raise LocalProtocolError(f"frame payload of {length} bytes does not fit the 32-bit length field")
    return _HEADER.pack(VERSION, msg_type, flags, length)


def encode_frame_parts(
    msg_type: int, payload: bytes | memoryview, flags: int = 0, *, compress: bool = False
) -> tuple[bytes, bytes | memoryview]:
    """(header, payload) of a frame, unjoined, for ``writelines``/``sendmsg`` without a copy.

    With ``compress`` the payload is zlib-compressed and the compressed flag set, but only when that
    makes it smaller (receivers accept both). Pass the compressed flag only through ``compress``.
    """
    if flags & FLAG_COMPRESSED:
        raise LocalProtocolError("set compression with compress=True, not with the flag")
    if compress:
        packed = zlib.compress(payload, 6)
        if len(packed) < len(payload):
            return encode_header(msg_type, len(packed), flags | FLAG_COMPRESSED), packed
    return encode_header(msg_type, len(payload), flags), payload


def encode_frame(msg_type: int, payload: bytes, flags: int = 0, *, compress: bool = False) -> bytes:
    """One frame as a single bytes object (joins header and payload: one copy of the payload)."""
    header, body = encode_frame_parts(msg_type, payload, flags, compress=compress)
    return header + body


def peek_request_id(payload: Buffer) -> int | None:
    """The ``id`` of a payload if it can be read (for error answers to otherwise bad frames)."""
    try:
        obj = unpack(payload)
    except PayloadError:  # an undecodable or unbounded payload simply has no readable id
        return None
    if isinstance(obj, dict):
        value = obj.get("id")
        if type(value) is int and 0 <= value <= 0xFFFF_FFFF_FFFF_FFFF:
            return value
    return None


def decompress_payload(payload: Buffer, max_size: int, request_id: int | None = None) -> bytes:
    """Inflate a zlib payload, refusing output over ``max_size`` without ever producing more."""
    inflater = zlib.decompressobj()
    try:
        plain = inflater.decompress(payload, max_size)
        if not inflater.eof:
            # Output stopped at the limit or the input ran out: one more byte of room tells which.
            if inflater.decompress(inflater.unconsumed_tail, 1):
                raise RemoteProtocolError(
                    f"compressed payload inflates to more than the {max_size}-byte frame limit",
                    codes.FRAME_TOO_LARGE,
                    request_id,
                )
            if not inflater.eof:
                raise RemoteProtocolError(
                    "compressed payload is a truncated zlib stream", codes.BAD_COMPRESSION, request_id
                )
    except zlib.error as exc:
        raise RemoteProtocolError(
            f"compressed payload is not a valid zlib stream: {exc}", codes.BAD_COMPRESSION, request_id
        ) from exc
    if inflater.unused_data:
        raise RemoteProtocolError(
            "compressed payload has bytes after the end of its zlib stream", codes.BAD_COMPRESSION, request_id
        )
    return plain


def checked_frame(msg_type: int, flags: int, payload: Buffer, max_frame_size: int) -> Frame:
    """The Frame of a well-delimited header + payload: flags checked, payload decompressed.

    FrameDecoder ends with this; transports that assemble frames themselves call it too.
    Raises RemoteProtocolError (not FrameError: the stream is still in sync) for reserved flag bits
    and for compressed payloads that are invalid or inflate beyond ``max_frame_size``.
    """
    if flags & ~KNOWN_FLAGS:
        raise RemoteProtocolError(
            f"frame flags 0x{flags:04x} set reserved bits (only 0x{KNOWN_FLAGS:x} are defined)",
            codes.BAD_FRAME,
            peek_request_id(payload),
        )
    if flags & FLAG_COMPRESSED:
        return Frame(msg_type, flags & ~FLAG_COMPRESSED, decompress_payload(payload, max_frame_size))
    return Frame(msg_type, flags, payload)


class FrameDecoder:
    """Incremental frame parser: ``feed`` bytes, then call ``next_frame`` until it returns None."""

    __slots__ = ("_buf", "_eof", "_error", "_max", "_pos")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 < max_frame_size <= MAX_LENGTH_FIELD:
            raise ValueError(f"max_frame_size must be 1..{MAX_LENGTH_FIELD}, got {max_frame_size}")
        self._max = max_frame_size
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed data in _buf
        self._eof = False
        self._error: FrameError | None = None

    @property
    def max_frame_size(self) -> int:
        return self._max

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out as frames."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes read from the transport."""
        if self._error is not None:
            raise self._error
        if self._eof:
            raise LocalProtocolError("feed() after feed_eof()")
        self._buf += data

    def feed_eof(self) -> None:
        """The transport closed; ``next_frame`` then raises FrameError if a frame was cut short."""
        self._eof = True

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive (or after a clean end of stream)."""
        if self._error is not None:
            raise self._error
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < HEADER_SIZE:
            if self._eof and available:
                self._fail(f"stream ended inside a frame header ({available} of {HEADER_SIZE} bytes)")
            return None
        version, msg_type, flags, length = _HEADER.unpack_from(buf, pos)
        if version != VERSION:
            self._fail(f"frame version must be {VERSION}, got {version}")
        if length > self._max:
            # Refused from the header alone: nothing of the payload is buffered beyond what came in.
            self._fail(f"frame length {length} is over the {self._max}-byte limit", codes.FRAME_TOO_LARGE)
        end = pos + HEADER_SIZE + length
        if len(buf) < end:
            if self._eof:
                got = available - HEADER_SIZE
                self._fail(f"stream ended inside a frame payload ({got} of {length} bytes)")
            return None
        with memoryview(buf) as view, view[pos + HEADER_SIZE : end] as body:
            payload = body.tobytes()  # the one copy a payload costs
        self._consume(end)
        return checked_frame(msg_type, flags, payload, self._max)

    def __iter__(self) -> Iterator[Frame]:
        """Every complete frame buffered now."""
        while (frame := self.next_frame()) is not None:
            yield frame

    def _consume(self, end: int) -> None:
        if end == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif end >= _COMPACT_MIN and end * 2 >= len(self._buf):
            del self._buf[:end]
            self._pos = 0
        else:
            self._pos = end

    def _fail(self, message: str, code: str = codes.BAD_FRAME) -> NoReturn:
        self._error = FrameError(message, code)
        self._buf = bytearray()
        self._pos = 0
        raise self._error
