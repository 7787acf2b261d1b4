"""Ports across nodes (SPEC 4 relay portopen / portsend / portclose, SPEC 6 locations).

A device on node A opens a port to a device served by node B. A's port table gets, as the
target, a :class:`RemoteEnd`: the end that speaks for that device over A's peer link to B. B's
table gets, as the opener, a RemoteEnd for A's device over the same link. Each table then works
exactly as for two local devices; the ends translate:

    table -> end                   on the link
    request(PortOpen ref ...)      relay portopen {ref, opener, target, port, flags} -> {} | error
    send(PortOpenReply)            the {} answer to the relay portopen
    error(PORTOPEN, ...)           its error answer (not_found, refused, ref_in_use, busy)
    send(PortClose ref)            relay portclose {ref}
    forward(portsend frame)        the same frame as relay portsend (0x25): one byte changed in place
    pause_port / resume_port       port_pause / port_resume {ref} (0x2A / 0x2B)

The ref is the opener node's (random, 63 bits), used on both nodes: B answers ``ref_in_use`` if
it has it already and A's table retries with another. Port bytes stay on the network loop and are
never copied: a portsend frame from A's device is decrypted into a buffer, its type byte turned
from 0x04 into 0x25, and encrypted towards B from that buffer; B turns it back. Each edge bills
its own device (its session counts its own connection's bytes).

Backpressure is per port: B's reader that cannot keep up pauses the port at its source, which for
a RemoteEnd means a port_pause over the link, which A passes to its device; the link itself is
never paused. If the link's send buffer grows past LINK_HIGH_WATER anyway, each port that writes
into it is paused at its source until the link drains.

Finding the node that serves a device is chrnode.net.resolver's.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from chrnode.edge import codes
from chrnode.edge.messages import (
    PORTOPEN,
    PORTSEND,
    ErrorReply,
    Message,
    PortClose,
    PortOpen,
    PortOpenReply,
)
from chrnode.edge.ports import Port, PortEnd, PortTable, describe
from chrnode.peer import messages as pm
from chrnode.peer.link import PeerLink

if TYPE_CHECKING:
    from chrnode.net.peers import PeerNetwork

__all__ = ["LINK_HIGH_WATER", "PeerRelay", "RemoteEnd"]

_log = logging.getLogger("chrnode.relay")

LINK_HIGH_WATER = 4 * 1024 * 1024  # bytes queued on a link before the ports writing into it pause
RECENT_REFS = 64

Frame = bytes | bytearray | memoryview


class RemoteEnd:
    """One remote device's side of its ports, over one peer link (a PortEnd)."""

    __slots__ = ("_blocked", "_held", "device", "link", "ports", "recent_refs", "relay", "retarget")

    def __init__(
        self,
        relay: PeerRelay,
        link: PeerLink,
        device: bytes,
        retarget: Callable[[bytes, bytes], Awaitable[PeerLink | None]] | None = None,
    ) -> None:
        self.relay = relay
        self.link = link
        self.device = device
        # A target's end (made by the resolver): when its node answers not_found (the device
        # moved), look it up afresh and ask its new node, as long as no port uses the old link.
        self.retarget = retarget
        self.ports: dict[int, Port] = {}
        self.recent_refs: collections.deque[int] = collections.deque(maxlen=RECENT_REFS)
        self._blocked: set[Port] = set()  # ports paused at their source until the link drains
        self._held: set[int] = set()  # refs the peer was asked to pause

    def __repr__(self) -> str:
        return f"RemoteEnd({describe(self.device)} via {self.link.label()})"

    @property
    def closed(self) -> bool:
        return self.link.closed

    @property
    def closing(self) -> bool:
        return self.link.closed or self.link.conn is None or self.link.conn.is_closing

    # ---- control ----------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        if isinstance(msg, PortClose):
            self.relay.forget(self, msg.ref)
            self.link.send(pm.RelayPortClose(msg.ref))
        elif isinstance(msg, PortOpenReply):
            # We are the opener's end on the target's node: the target accepted; data may follow.
            if msg.ref is not None:
                self.relay.route(self, msg.ref)
            self.link.answer_fields(pm.RELAY_PORTOPEN, msg.id, {})
        else:
            _log.debug("%r: nothing to relay for %s", self, type(msg).__name__)

    def error(self, msg_type: int, request_id: int | None, code: str, message: str) -> None:
        if msg_type == PORTOPEN:
            self.link.error(pm.RELAY_PORTOPEN, request_id, code, message)

    def warn(self, code: str, message: str) -> None:
        self.relay.faults[code] += 1
        _log.debug("%r: %s: %s", self, code, message)

    def request(
        self, build: Callable[[int], Message], on_answer: Callable[[Message | None], None], timeout: float
    ) -> None:
        """The table asks the remote target to accept a port: a relay portopen."""
        msg = build(0)
        if not isinstance(msg, PortOpen) or msg.ref is None or msg.device is None:
            on_answer(None)
            return
        relay_open = pm.RelayPortOpen(msg.ref, msg.device, self.device, msg.port, msg.flags)
        self._open(relay_open, on_answer, timeout, retry=self.retarget is not None)

    def _open(
        self,
        relay_open: pm.RelayPortOpen,
        on_answer: Callable[[Message | None], None],
        timeout: float,
        retry: bool,
    ) -> None:
        ref = relay_open.ref

        def answered(answer: Any) -> None:
            if isinstance(answer, pm.Empty):
                self.relay.route(self, ref)  # before the table opens it: the target may send at once
                on_answer(PortOpenReply(id=None))
                return
            if not isinstance(answer, ErrorReply):
                on_answer(None)
                return
            if answer.code == codes.NOT_FOUND:
                self.relay.moved(self.device)
                if retry and not self.ports and self.retarget is not None:
                    self.relay.spawn(self._moved(relay_open, on_answer, timeout, answer))
                    return
            on_answer(ErrorReply(PORTOPEN, answer.code, answer.message, None))

        self.link.request(relay_open, answered, timeout)

    async def _moved(
        self,
        relay_open: pm.RelayPortOpen,
        on_answer: Callable[[Message | None], None],
        timeout: float,
        answer: ErrorReply,
    ) -> None:
        assert self.retarget is not None
        old = self.link.node
        link = await self.retarget(self.device, old) if old is not None else None
        if link is None or link is self.link or self.ports:
            on_answer(ErrorReply(PORTOPEN, answer.code, answer.message, None))
            return
        _log.info("%s moved to %s; asking there", describe(self.device), link.label())
        self.link = link
        self._open(relay_open, on_answer, timeout, retry=False)

    # ---- data and flow ----------------------------------------------------------------------
    def forward(self, frame: Frame, port: Port, source: PortEnd) -> None:
        """A portsend frame of ``port`` for the remote device: out as relay portsend."""
        if self.link.closed:
            return
        out = frame if not isinstance(frame, bytes) else bytearray(frame)
        out[1] = pm.RELAY_PORTSEND
        self.link.write_frame(out)
        self.relay.bytes_out += len(out)
        if self.link.buffered() > LINK_HIGH_WATER and port not in self._blocked:
            self._blocked.add(port)
            source.pause_port(port)
            if len(self._blocked) == 1:
                self.link.on_drain.append(self._drained)

    def _drained(self) -> None:
        blocked, self._blocked = self._blocked, set()
        for port in blocked:
            source = port.other(self)
            if not source.closed:
                source.resume_port(port)

    def pause_port(self, port: Port) -> None:
        """The local reader of ``port`` cannot keep up: ask the remote source to pause it."""
        if port.ref not in self._held:
            self._held.add(port.ref)
            self.link.send_flow(port.ref, True)

    def resume_port(self, port: Port) -> None:
        if port.ref in self._held:
            self._held.discard(port.ref)
            if port.ref in self.ports:
                self.link.send_flow(port.ref, False)

    def port_closed(self, port: Port) -> None:
        self._blocked.discard(port)
        self._held.discard(port.ref)
        self.relay.forget(self, port.ref)


class PeerRelay:
    """The relay requests of every peer link, and the ends they create (network loop only)."""

    def __init__(
        self,
        network: PeerNetwork,
        table: PortTable,
        local_end: Callable[[bytes], PortEnd | None],
    ) -> None:
        self.network = network
        self.table = table
        self.local_end = local_end
        self._ends: dict[tuple[bytes, bytes], RemoteEnd] = {}  # (peer node, device) -> opener's end
        self._targets: dict[bytes, RemoteEnd] = {}  # device -> target's end (its link may change)
        self._tasks: set[asyncio.Task[None]] = set()
        self._by_ref: dict[tuple[PeerLink, int], RemoteEnd] = {}
        self.faults: collections.Counter[str] = collections.Counter()
        self.bytes_in = 0
        self.bytes_out = 0
        self.opened = 0
        self.on_moved: list[Callable[[bytes], None]] = []
        network.relay = self
        network.handlers[pm.RELAY_PORTOPEN] = self._relay_open
        network.handlers[pm.RELAY_PORTCLOSE] = self._relay_close
        network.on_link_down.append(self._link_down)

    def end_for(self, link: PeerLink, device: bytes) -> RemoteEnd:
        assert link.node is not None
        key = (link.node, device)
        end = self._ends.get(key)
        if end is None or end.link is not link:
            end = self._ends[key] = RemoteEnd(self, link, device)
        return end

    def target_end(
        self, link: PeerLink, device: bytes, retarget: Callable[[bytes, bytes], Awaitable[PeerLink | None]]
    ) -> RemoteEnd:
        """The end a portopen to ``device`` (served through ``link``) targets."""
        end = self._targets.get(device)
        if end is None or end.closed or (end.link is not link and not end.ports):
            end = self._targets[device] = RemoteEnd(self, link, device, retarget)
        return end

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def route(self, end: RemoteEnd, ref: int) -> None:
        self._by_ref[(end.link, ref)] = end

    def forget(self, end: RemoteEnd, ref: int) -> None:
        if self._by_ref.get((end.link, ref)) is end:
            del self._by_ref[(end.link, ref)]

    def moved(self, device: bytes) -> None:
        for callback in self.on_moved:
            callback(device)

    # ---- requests from the link -----------------------------------------------------------------
    def _relay_open(self, link: PeerLink, msg: Any, request_id: int | None) -> None:
        assert isinstance(msg, pm.RelayPortOpen)
        target = self.local_end(msg.target)
        if target is None:
            link.error(pm.RELAY_PORTOPEN, request_id, codes.NOT_FOUND, f"{describe(msg.target)} is not here")
            return
        if request_id is None:
            self.faults[codes.BAD_PAYLOAD] += 1
            return  # a portopen nobody waits for would open a port nobody reads
        opener = self.end_for(link, msg.opener)
        request = PortOpen(port=msg.port, device=msg.target, flags=msg.flags, id=request_id)
        self.opened += 1
        self.table.open(opener, msg.opener, target, msg.target, request, describe(msg.target), ref=msg.ref)

    def _relay_close(self, link: PeerLink, msg: Any, request_id: int | None) -> None:
        assert isinstance(msg, pm.RelayPortClose)
        end = self._by_ref.get((link, msg.ref))
        if end is not None:
            self.table.close(end, msg.ref)
        link.answer_fields(pm.RELAY_PORTCLOSE, request_id, {})

    def relay_frame(self, link: PeerLink, ref: int, frame: bytearray | memoryview) -> None:
        end = self._by_ref.get((link, ref))
        if end is None:
            self.faults[codes.UNKNOWN_REF] += 1
            return
        self.bytes_in += len(frame)
        frame[1] = PORTSEND  # back to a device portsend, in place
        self.table.relay(end, ref, frame)

    def port_flow(self, link: PeerLink, ref: int, paused: bool) -> None:
        end = self._by_ref.get((link, ref))
        port = end.ports.get(ref) if end is not None else None
        if end is None or port is None:
            return
        source = port.other(end)
        if paused:
            source.pause_port(port)
        else:
            source.resume_port(port)

    def _link_down(self, link: PeerLink) -> None:
        for key, end in list(self._ends.items()):
            if end.link is link:
                del self._ends[key]
                self.table.end_closed(end)
        for device, end in list(self._targets.items()):
            if end.link is link:
                del self._targets[device]
                self.table.end_closed(end)
        for routed in [k for k in self._by_ref if k[0] is link]:
            del self._by_ref[routed]

    def status(self) -> dict[str, Any]:
        return {
            "remote_ends": len(self._ends) + len(self._targets),
            "relayed_in": self.bytes_in,
            "relayed_out": self.bytes_out,
            "relay_opens": self.opened,
            "faults": dict(self.faults),
        }
