"""Zero-copy EdgeV2 frame assembly on top of a TlsConnection (SPEC 4).

``chrnode.edge.frame.FrameDecoder`` is the reference codec: it buffers what it is fed and copies
each payload out. A relay cannot afford that for megabytes of port data, so this reader decides
where OpenSSL decrypts to (``get_buffer``):

- frames that fit in one read are parsed in place in the per-thread scratch buffer and handed
  out as a ``memoryview`` valid only during the call;
- a frame that spans reads gets one exact-size ``bytearray`` as soon as its header is known, and
  the rest of it is decrypted directly into that buffer; it is handed out as the ``bytearray``,
  which the receiver may keep.

Buffers of large frames (``POOL_MIN`` and up) are recycled through a small per-thread pool
instead of being allocated (zeroed, page-faulted in) for every frame: a delivered buffer joins
the pool, and is taken again for a frame of the same size only if nothing else references it.
The receiver, the port table's credit queue, a connection's write queue or a work queue keep it
by reference, and any memoryview of it references it too; so CPython's reference count says
exactly whether a consumer still holds it (``sys.getrefcount``: the pool's own reference and the
call's are all that may be left). A held buffer is never handed out; on other interpreters the
pool is off.

So a relayed frame is never copied in Python: it is decrypted into place and encrypted from
there. The header checks are those of FrameDecoder (version, length bounded before buffering).
"""

from __future__ import annotations

import struct
import sys
import threading

from chrnode.edge import codes
from chrnode.edge.frame import HEADER_SIZE, VERSION
from chrnode.edge.tlsbase import scratch_buffer
from chrnode.errors import FrameError

__all__ = ["POOL_MIN", "POOL_SLOTS", "FrameReader", "frame_buffer", "parse_header", "recycle"]

_HEADER = struct.Struct(">BBHI")

POOL_MIN = 64 * 1024  # smaller frame buffers come from malloc's free lists cheaply: not pooled
POOL_SLOTS = 4  # buffers a thread keeps (at most 4 x 256 KiB with the default frame limit)


class _Pool(threading.local):
    """The per-thread (so per event loop) list of recently delivered large frame buffers."""

    def __init__(self) -> None:
        self.free: list[bytearray] = []


_pool = _Pool()


def _refs(free: list[bytearray], index: int) -> int:
    return sys.getrefcount(free[index])


# What _refs() counts for a buffer referenced by the pool's list alone (measured, not assumed).
_ONLY_POOL = _refs([bytearray(1)], 0)
_REUSE = sys.implementation.name == "cpython"


def frame_buffer(size: int) -> bytearray:
    """A ``size``-byte buffer to assemble a frame in: a pooled one that nothing references any
    more, else a new one. Its bytes are not cleared (the reader overwrites all of them)."""
    if size >= POOL_MIN and _REUSE:
        free = _pool.free
        for index in range(len(free)):
            if len(free[index]) == size and _refs(free, index) == _ONLY_POOL:
                return free.pop(index)
    return bytearray(size)


def recycle(buf: bytearray) -> None:
    """``buf`` was delivered: pool it (a consumer may still hold it; frame_buffer checks)."""
    if len(buf) >= POOL_MIN and _REUSE:
        free = _pool.free
        if len(free) >= POOL_SLOTS:
            del free[0]  # the oldest: sizes change, and a held one is kept alive by its holder
        free.append(buf)


def parse_header(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int, int]:
    """(type, flags, payload length) of the header at ``offset``; FrameError on a wrong version."""
    version, msg_type, flags, length = _HEADER.unpack_from(data, offset)
    if version != VERSION:
        raise FrameError(f"frame version must be {VERSION}, got {version}", codes.BAD_FRAME)
    return msg_type, flags, length


class FrameReader:
    """Base of a TlsProtocol that receives whole frames; subclasses implement the two hooks."""

    __slots__ = ("_rx", "_rx_have", "_rx_header_only", "_rx_max", "_rx_stopped", "_scratch")

    def __init__(self, max_frame_size: int) -> None:
        self._rx: bytearray | None = None  # the frame (or header) being assembled across reads
        self._rx_have = 0
        self._rx_header_only = False
        self._rx_max = max_frame_size
        self._rx_stopped = False
        # The scratch buffer of the thread that creates the reader (the loop that will feed it).
        self._scratch = scratch_buffer()

    # ---- hooks -----------------------------------------------------------------------------

    def frame_received(self, msg_type: int, flags: int, frame: bytearray | memoryview) -> None:
        """A whole frame, header included. A memoryview is valid only during this call."""
        raise NotImplementedError

    def frame_fault(self, error: FrameError) -> None:
        """The stream cannot be parsed any further (SPEC 4: framing-level fault)."""
        raise NotImplementedError

    def stop_frames(self) -> None:
        """Deliver no more frames (the connection is closing)."""
        self._rx_stopped = True
        self._rx = None

    @property
    def assembling(self) -> int:
        """Bytes of a partial frame held by this reader (0 when idle: no buffer at all)."""
        return len(self._rx) if self._rx is not None else 0

    # ---- TlsProtocol read side -------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        rx = self._rx
        if rx is not None:
            return memoryview(rx)[self._rx_have :]
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self._rx_stopped:
            return
        rx = self._rx
        if rx is not None:
            self._rx_have += nbytes
            if self._rx_have < len(rx):
                return
            if self._rx_header_only:
                self._header_completed(rx)
                return
            self._rx = None
            self.frame_received(rx[1], (rx[2] << 8) | rx[3], rx)
            recycle(rx)
            return
        self._parse_scratch(self._scratch, nbytes)

    def _header_completed(self, header: bytearray) -> None:
        try:
            msg_type, flags, length = self._check(header, 0)
        except FrameError as exc:
            self._fault(exc)
            return
        self._rx_header_only = False
        if length == 0:
            self._rx = None
            self.frame_received(msg_type, flags, header)
            return
        frame = frame_buffer(HEADER_SIZE + length)
        frame[:HEADER_SIZE] = header
        self._rx = frame
        self._rx_have = HEADER_SIZE

    def _parse_scratch(self, view: memoryview, nbytes: int) -> None:
        pos = 0
        while not self._rx_stopped:
            left = nbytes - pos
            if left < HEADER_SIZE:
                if left:
                    self._rx = bytearray(HEADER_SIZE)
                    self._rx[:left] = view[pos:nbytes]
                    self._rx_have = left
                    self._rx_header_only = True
                return
            version, msg_type, flags, length = _HEADER.unpack_from(view, pos)
            if version != VERSION or length > self._rx_max:
                try:
                    self._check(view, pos)
                except FrameError as exc:
                    self._fault(exc)
                return
            end = pos + HEADER_SIZE + length
            if end > nbytes:
                frame = frame_buffer(HEADER_SIZE + length)
                frame[:left] = view[pos:nbytes]
                self._rx = frame
                self._rx_have = left
                return
            self.frame_received(msg_type, flags, view[pos:end])
            pos = end

    def _check(self, data: bytearray | memoryview, offset: int) -> tuple[int, int, int]:
        msg_type, flags, length = parse_header(data, offset)
        if length > self._rx_max:
            raise FrameError(
                f"frame length {length} is over the {self._rx_max}-byte limit", codes.FRAME_TOO_LARGE
            )
        return msg_type, flags, length

    def _fault(self, error: FrameError) -> None:
        self.stop_frames()
        self.frame_fault(error)
