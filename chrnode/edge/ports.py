"""Ports between devices (SPEC 4: portopen, portsend, portclose), spoken to through port ends.

A port joins two *ends*: the end of the opening device and the end of the target device. An end
is whatever carries a device's side of the port: a local device session (chrnode.edge.session)
or, later, a peer link to the node that serves the device (SPEC 4 relay portopen/portsend). The
table only speaks to the narrow :class:`PortEnd` interface defined here, so it knows neither.

Opening: the node asks the target's end with a portopen request of its own ``{id, ref, device
(the opener), port, flags}``; an empty answer accepts, an error refuses; the opener then gets
``{ref}``. Both sides use the same ``ref``, so a ``portsend`` frame ``{ref, data}`` without ``id``
is forwarded byte for byte: the frame buffer the sender's data was decrypted into is what gets
encrypted towards the receiver (no msgpack decode, no copy).

Refs are random positive 63-bit integers (SPEC 4), so that one ref names a port on every node it
passes; refs in use on this node are never handed out again, and a target that answers
``ref_in_use`` (a peer that already uses it) gets the portopen again with another ref.

Consent (issue 8): every port has exactly one opener and one target, and the target itself
accepted it. No device is ever given a ref the target did not answer for. ``s`` (shared) is passed
to the target with the portopen: it says the opener expects the target to take several openers
on that port; each of them is asked and gets its own ref, so the target tells its subscribers
apart by ref (and by the opener address of each portopen). A target that answers ``shared``
makes the port a channel: later ``s`` openers join it without being asked (the rules are
chrnode.edge.channels', the adapter chrnode.edge.channel_hub's, set as ``channels`` here).

Backpressure is per port (SPEC 4): when the end a port's data goes to cannot keep up, it calls
``pause_port`` on the other end for that port only; the source's other ports keep flowing.

Limits: a device has at most MAX_PORTS_PER_DEVICE ports, open or being opened; at most
MAX_PENDING_OPENS unanswered portopens as opener, and at most MAX_PENDING_PER_TARGET unanswered
portopens wait on one target, whoever sent them (``busy`` beyond either).
"""

from __future__ import annotations

import collections
import logging
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from chrnode.crypto import to_hex_address
from chrnode.edge import codes
from chrnode.edge.messages import PORTOPEN, ErrorReply, Message, PortClose, PortOpen, PortOpenReply
from chrnode.edge.portsend import parse_portsend

__all__ = ["ChannelHost", "DeviceResolver", "Port", "PortEnd", "PortTable", "describe", "parse_portsend"]

_log = logging.getLogger("chrnode.edge")

MAX_PORTS_PER_DEVICE = 1024
MAX_PENDING_OPENS = 64  # unanswered portopens of one opener
MAX_PENDING_PER_TARGET = 64  # unanswered portopens waiting on one target, from all openers
REF_ATTEMPTS = 3  # fresh refs tried when a target answers ref_in_use
REF_BITS = 63  # SPEC 4: random positive 63-bit integers


Frame = bytes | bytearray | memoryview


class PortEnd(Protocol):
    """What the port table needs of one side of its ports (a device session, a peer link).

    ``ports`` and ``recent_refs`` are the end's own index of its ports by ref (the table keeps them
    up to date); the methods send to the device or the link behind the end."""

    ports: dict[int, Port]
    recent_refs: collections.deque[int]

    @property
    def closed(self) -> bool:
        """The end is gone: nothing more can be sent through it."""
        ...

    @property
    def closing(self) -> bool:
        """Closed, or closing: it takes no new requests or ports."""
        ...

    def send(self, msg: Message) -> None:
        """Send a message (portopen answers, portclose) to the device behind this end."""
        ...

    def error(self, msg_type: int, request_id: int | None, code: str, message: str) -> None:
        """Answer a request of the device behind this end with an error (SPEC 4)."""
        ...

    def warn(self, code: str, message: str) -> None:
        """A fault without an id to answer: tell the device (notify) and count it."""
        ...

    def request(
        self, build: Callable[[int], Message], on_answer: Callable[[Message | None], None], timeout: float
    ) -> None:
        """Ask the device behind this end; ``on_answer`` gets the answer, or None on timeout/close."""
        ...

    def forward(self, frame: Frame, port: Port, source: PortEnd) -> None:
        """Deliver a relayed portsend frame of ``port`` from ``source``. An end that cannot keep up
        calls ``source.pause_port(port)`` and later ``source.resume_port(port)``."""
        ...

    def pause_port(self, port: Port) -> None:
        """Stop sending data on ``port`` until resume_port (the other end cannot keep up)."""
        ...

    def resume_port(self, port: Port) -> None:
        """Data on ``port`` may flow again."""
        ...

    def port_closed(self, port: Port) -> None:
        """``port`` ended (either side): forget any pause state it holds."""
        ...

    def pause(self) -> None:
        """Stop reading this end's connection until resume() (counted). Only for a source that
        has more in flight on a paused port than the node holds for it (chrnode.net.relay); a
        peer link is never paused (SPEC 4), so a link's end does nothing."""
        ...

    def resume(self) -> None:
        """Undo one pause()."""
        ...


class ChannelHost(Protocol):
    """Takes the ``s`` portopens to targets served here (chrnode.edge.channel_hub.ChannelHub)."""

    def takes(self, target: PortEnd, flags: str) -> bool: ...

    def open(
        self,
        opener: PortEnd,
        opener_device: bytes,
        target: PortEnd,
        target_device: bytes,
        msg: PortOpen,
        what: str,
        ref: int | None,
    ) -> None: ...


class DeviceResolver(Protocol):
    """Finds the end serving a device that is not connected here (issue 10: asks the DHT for its
    location and returns the peer link to the serving node). Without one, such a device is
    ``not_found``."""

    async def find(self, device: bytes) -> PortEnd | None: ...


class Port:
    """One open port: its two ends, the devices they speak for, the name and the opener's flags."""

    __slots__ = ("flags", "name", "opener", "opener_device", "ref", "target", "target_device")

    def __init__(
        self,
        ref: int,
        opener: PortEnd,
        opener_device: bytes,
        target: PortEnd,
        target_device: bytes,
        name: int | str,
        flags: str,
    ) -> None:
        self.ref = ref
        self.opener = opener
        self.opener_device = opener_device
        self.target = target
        self.target_device = target_device
        self.name = name
        self.flags = flags

    def other(self, end: PortEnd) -> PortEnd:
        """The end that is not ``end``."""
        return self.opener if end is self.target else self.target


class PortTable:
    """Every port of one node, indexed by ref in each end; opens in flight counted per end."""

    def __init__(self, open_timeout: float, count_error: Callable[[str], None] | None = None) -> None:
        self.open_timeout = open_timeout
        self._count_error = count_error if count_error is not None else _ignore
        self._refs: set[int] = set()  # refs open or being opened on this node
        self._pending_as_opener: Counter[PortEnd] = Counter()
        self._pending_on_target: Counter[PortEnd] = Counter()
        self.count = 0
        self.opened_total = 0
        self.channels: ChannelHost | None = None  # shared ports (SPEC 4 "s"); none: each opener asked

    def new_ref(self) -> int:
        """A random positive 63-bit ref not in use on this node (SPEC 4)."""
        while True:
            ref = secrets.randbits(REF_BITS)
            if ref and ref not in self._refs:
                self._refs.add(ref)
                return ref

    def reserve(self, ref: int) -> None:
        """Mark ``ref`` in use on this node (a ref chosen by a peer, or one a channel holds)."""
        self._refs.add(ref)

    def release(self, ref: int) -> None:
        self._refs.discard(ref)

    def pending(self, end: PortEnd) -> tuple[int, int]:
        """(unanswered portopens ``end`` sent, unanswered portopens waiting on it)."""
        return self._pending_as_opener[end], self._pending_on_target[end]

    # ---- opening ----------------------------------------------------------------------------

    def open(
        self,
        opener: PortEnd,
        opener_device: bytes,
        target: PortEnd | None,
        target_device: bytes | None,
        msg: PortOpen,
        what: str,
        *,
        ref: int | None = None,
    ) -> None:
        """Handle ``msg`` from ``opener`` (speaking for ``opener_device``): ``target`` is the end that
        serves the device named by ``what`` (an address or name, for messages), or None if no end
        was found here or on the network.

        ``ref``: the ref the opener chose (a relay portopen from another node, SPEC 4: one ref names
        the port on every node it passes); ``ref_in_use`` if this node uses it already."""
        rid = msg.id
        if opener.closing:
            return
        if ref is not None and (ref in self._refs or not 0 < ref < 1 << REF_BITS):
            self._count_error(codes.REF_IN_USE)
            opener.error(PORTOPEN, rid, codes.REF_IN_USE, f"ref {ref} is in use on this node; pick another")
            return
        if target is None or target_device is None or target.closing:
            self._count_error(codes.NOT_FOUND)
            opener.error(PORTOPEN, rid, codes.NOT_FOUND, f"{what} is not connected to this node")
            return
        if target is opener and target_device == opener_device:
            opener.error(PORTOPEN, rid, codes.FORBIDDEN, "a device cannot open a port to itself")
            return
        problem = self._over_limit(opener, target, what)
        if problem is not None:
            self._count_error(codes.BUSY)
            opener.error(PORTOPEN, rid, codes.BUSY, problem)
            return
        channels = self.channels
        if channels is not None and channels.takes(target, msg.flags):
            channels.open(opener, opener_device, target, target_device, msg, what, ref)
            return
        self.hold(opener, target)
        if ref is not None:
            self._refs.add(ref)
        self._ask(
            opener, opener_device, target, target_device, msg, what, REF_ATTEMPTS if ref is None else 1, ref
        )

    def _ask(
        self,
        opener: PortEnd,
        opener_device: bytes,
        target: PortEnd,
        target_device: bytes,
        msg: PortOpen,
        what: str,
        attempts: int,
        given: int | None = None,
    ) -> None:
        ref = self.new_ref() if given is None else given
        request_port, flags = msg.port, msg.flags

        def build(request_id: int) -> Message:
            return PortOpen(port=request_port, device=opener_device, flags=flags, ref=ref, id=request_id)

        def on_answer(answer: Message | None) -> None:
            if isinstance(answer, ErrorReply) and answer.code == codes.REF_IN_USE and attempts > 1:
                self._refs.discard(ref)
                if not (opener.closing or target.closing):
                    self._ask(opener, opener_device, target, target_device, msg, what, attempts - 1)
                    return
            self.settle(opener, target)
            port = Port(ref, opener, opener_device, target, target_device, msg.port, msg.flags)
            if not self.answered(port, msg, answer, what):
                self._refs.discard(ref)

        target.request(build, on_answer, self.open_timeout)

    def _over_limit(self, opener: PortEnd, target: PortEnd, what: str) -> str | None:
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

    def hold(self, opener: PortEnd, target: PortEnd) -> None:
        """Count an unanswered portopen of ``opener`` waiting on ``target`` (until settle)."""
        self._pending_as_opener[opener] += 1
        self._pending_on_target[target] += 1

    def settle(self, opener: PortEnd, target: PortEnd) -> None:
        for counter, end in ((self._pending_as_opener, opener), (self._pending_on_target, target)):
            counter[end] -= 1
            if counter[end] <= 0:
                del counter[end]

    def answered(self, port: Port, msg: PortOpen, answer: Message | None, what: str) -> bool:
        """Open ``port`` if the target accepted; True if it is open."""
        opener, target, ref, rid = port.opener, port.target, port.ref, msg.id
        accepted = isinstance(answer, PortOpenReply)
        if opener.closing or target.closed:
            if accepted and not target.closed:
                target.send(PortClose(ref=ref))
            if not opener.closed:
                opener.error(PORTOPEN, rid, codes.NOT_FOUND, f"{what} left before answering the portopen")
            return False
        if answer is None:
            # A late acceptance would leave the target with a half-open port: tell it to close.
            target.send(PortClose(ref=ref))
            self._count_error(codes.TIMEOUT)
            message = f"{what} did not answer the portopen within {self.open_timeout} s"
            opener.error(PORTOPEN, rid, codes.TIMEOUT, message)
            return False
        if isinstance(answer, ErrorReply):
            message = f"{what} refused port {msg.port!r}: {answer.code}: {answer.message}"
            opener.error(PORTOPEN, rid, codes.REFUSED, message)
            return False
        if not accepted:
            target.send(PortClose(ref=ref))
            opener.error(PORTOPEN, rid, codes.REFUSED, f"{what} answered the portopen with something else")
            return False
        self.attach(port)
        opener.send(PortOpenReply(ref=ref, id=rid))
        return True

    def attach(self, port: Port) -> None:
        """Index an accepted ``port`` in both its ends (the opener is answered by the caller)."""
        port.opener.ports[port.ref] = port
        port.target.ports[port.ref] = port
        self.count += 1
        self.opened_total += 1

    # ---- data -------------------------------------------------------------------------------

    def relay(self, source: PortEnd, ref: int, frame: Frame) -> None:
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
            port.opener.forward(frame, port, source)
            return
        if "w" not in port.flags:
            source.warn(codes.FORBIDDEN, f"port {ref} was opened read-only ('r'): you may not send on it")
            return
        port.target.forward(frame, port, source)

    # ---- closing ----------------------------------------------------------------------------

    def close(self, end: PortEnd, ref: int) -> bool:
        """``end`` closes ``ref``; False if it has no such port. The other end is told."""
        port = end.ports.pop(ref, None)
        if port is None:
            return False
        end.recent_refs.append(ref)
        other = port.other(end)
        if other.ports.pop(ref, None) is not None:
            other.recent_refs.append(ref)
            other.send(PortClose(ref=ref))
        self._refs.discard(ref)
        self.count -= 1
        end.port_closed(port)
        other.port_closed(port)
        return True

    def end_closed(self, end: PortEnd) -> None:
        """Close every port of an end that left (a device session, a peer link)."""
        for ref in list(end.ports):
            self.close(end, ref)

    session_closed = end_closed


def _ignore(_code: str) -> None:
    return None


def describe(device: bytes) -> str:
    """How a device is named in messages."""
    return f"device {to_hex_address(device)}"
