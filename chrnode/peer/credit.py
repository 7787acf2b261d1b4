"""Per-port credit over a peer link (SPEC 4: backpressure is per port; the implementation's
message 0x2C, documented in docs/protocol.md). Pure: no I/O, no clock.

port_pause / port_resume (0x2A / 0x2B) tell a node to stop and go once a reader is behind, but
by then the link's buffers (the sender's queue, both kernels) may hold megabytes of that port's
data, all of which lands in the reader's node: the link is never paused, so it must be read.
Credit bounds it. A node sends at most ``window`` bytes of one port over a link that the peer
has not yet credited; the peer credits bytes once they have left it (written on towards the
reader's device), in batches of CREDIT_BATCH. What does not fit waits at the sending node,
whose port table pauses that port at its source meanwhile (chrnode.net.relay), until nothing
waits and at most half the window is uncredited (``reopened``: resumed as soon as one frame fits,
a fast port paused again after every frame, a port_pause, a port_resume and two changes of the
source's read watch per frame). So one port holds at most ``window`` bytes in the reader's node,
whatever the link and the kernels hold.

    0x2C port_credit  {ref, bytes}        no id, no answer: ``bytes`` more of ``ref`` may be sent
    0x2C port_credit  {id, ref: 0, bytes: 0}   the probe, answered {id} by a node that credits

Each node probes once when a link is up; an answer (or the peer's own probe) says the peer
credits, so both sides use credit on that link; a peer that does not know 0x2C answers an error
and the link goes on with port_pause / port_resume alone.

:class:`SendWindow` is the sending side of one port, :class:`CreditLedger` the receiving side.
"""

from __future__ import annotations

import collections
from typing import Any

import msgpack

from chrnode.edge.frame import FLAG_ERROR, FLAG_RESPONSE, encode_header

__all__ = [
    "CREDIT_BATCH",
    "PORT_CREDIT",
    "WINDOW",
    "CreditLedger",
    "SendWindow",
    "encode_credit",
    "read_credit",
]

PORT_CREDIT = 0x2C
# Enough for several 256 KiB frames in flight (throughput across nodes is unaffected on loopback
# and LAN round trips), small enough that one slow port costs its reader's node under 1 MiB.
# Two whole 256 KiB port frames fit (262,176 bytes each with their headers); at 800 KiB three
# would, and a reader that reads nothing then held four frames (just over 1 MiB) in its node:
# one partly written to the kernel, still queued in full, plus the window.
WINDOW = 768 * 1024
CREDIT_BATCH = 64 * 1024  # one small frame of credit per 64 KiB passed on

Frame = bytes | bytearray | memoryview


def encode_credit(ref: int, nbytes: int, request_id: int | None = None, *, response: bool = False) -> bytes:
    """A port_credit frame (a probe when ``request_id`` is given, its answer with ``response``)."""
    fields: dict[str, Any] = {} if response else {"ref": ref, "bytes": nbytes}
    if request_id is not None:
        fields["id"] = request_id
    payload: bytes = msgpack.packb(fields)
    return encode_header(PORT_CREDIT, len(payload), FLAG_RESPONSE if response else 0) + payload


def read_credit(fields: Any, flags: int) -> tuple[str, int, int]:
    """What a decoded port_credit payload is: ("credit", ref, bytes), ("probe", id, 0),
    ("answer", id, 0), ("refused", id, 0) for an error answer; ValueError if malformed."""
    if not isinstance(fields, dict):
        raise ValueError("port_credit payload must be a map")
    request_id = fields.get("id")
    if request_id is not None and (type(request_id) is not int or request_id < 0):
        raise ValueError("port_credit id must be a non-negative integer")
    if flags & FLAG_RESPONSE:
        return ("refused" if flags & FLAG_ERROR else "answer"), request_id or 0, 0
    if request_id is not None:
        return "probe", request_id, 0
    ref, nbytes = fields.get("ref"), fields.get("bytes")
    if type(ref) is not int or type(nbytes) is not int or ref <= 0 or not 0 < nbytes < 1 << 40:
        raise ValueError("port_credit needs a positive integer ref and bytes")
    return "credit", ref, nbytes


class SendWindow:
    """The sending node's side of one port on one link: bytes sent and not yet credited, and the
    frames waiting for credit (in order)."""

    __slots__ = ("closing", "held", "held_bytes", "outstanding", "window")

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.outstanding = 0
        self.held: collections.deque[Frame] = collections.deque()
        self.held_bytes = 0
        self.closing = False  # the port closed here: send the portclose once the held frames went

    @property
    def blocked(self) -> bool:
        """Frames wait, or the window is full: the port's source should pause."""
        return bool(self.held) or self.outstanding >= self.window

    @property
    def reopened(self) -> bool:
        """Nothing waits and at most half the window is uncredited: a paused source may go on
        (hysteresis: resumed at a full window, it would pause again after one frame)."""
        return not self.held and self.outstanding <= self.window // 2

    def can_send(self, size: int) -> bool:
        """A frame of ``size`` may go now: nothing waits and it fits the window (a frame larger
        than the whole window goes alone, so no frame waits forever)."""
        return not self.held and (self.outstanding + size <= self.window or self.outstanding == 0)

    def sent(self, size: int) -> None:
        self.outstanding += size

    def hold(self, frame: Frame) -> None:
        """``frame`` waits for credit (the caller must not pass a buffer it will reuse)."""
        self.held.append(frame)
        self.held_bytes += len(frame)

    def credit(self, nbytes: int) -> list[Frame]:
        """The peer credited ``nbytes``: the waiting frames that may go now (counted, in order)."""
        # More credit than was sent is possible once (credit started mid-port): never below 0.
        self.outstanding = max(0, self.outstanding - nbytes)
        out: list[Frame] = []
        while self.held and (self.outstanding + len(self.held[0]) <= self.window or not self.outstanding):
            frame = self.held.popleft()
            self.held_bytes -= len(frame)
            self.outstanding += len(frame)
            out.append(frame)
        return out


class CreditLedger:
    """The receiving node's side of one port on one link: frames passed on to the reader's
    connection, credited once that connection has handed them to the kernel.

    Offsets are the reader connection's byte counts: a frame written when the connection had
    taken ``end`` bytes in all has left this node once ``flushed`` (taken minus still queued)
    reaches ``end``."""

    __slots__ = ("batch", "pending", "ready")

    def __init__(self, batch: int = CREDIT_BATCH) -> None:
        self.batch = batch
        self.pending: collections.deque[tuple[int, int]] = collections.deque()  # (end offset, bytes)
        self.ready = 0  # left this node, not credited yet

    def received(self, end: int, nbytes: int, flushed: int) -> int:
        """A frame of ``nbytes`` was written to the reader, ending at offset ``end``; returns the
        bytes to credit now (0: not yet a batch)."""
        self.pending.append((end, nbytes))
        return self.drained(flushed)

    def drained(self, flushed: int) -> int:
        """The reader's connection has flushed up to ``flushed``: bytes to credit now."""
        pending = self.pending
        while pending and pending[0][0] <= flushed:
            self.ready += pending.popleft()[1]
        if self.ready >= self.batch:
            out, self.ready = self.ready, 0
            return out
        return 0
