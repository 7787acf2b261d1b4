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
never paused. Where both nodes credit (chrnode.peer.credit, 0x2C), a port also has at most
WINDOW bytes on the link that B has not passed on yet: what does not fit waits in A's RemoteEnd,
and the port is paused at its source until B credits it down to half the window, so a slow
reader costs B's node at most the window, however much the link and the kernels between the
nodes hold. If the link's send buffer grows past LINK_HIGH_WATER anyway, each port that writes
into it is paused at its source until the link drains. A source port paused for several of
these reasons resumes when the last one ends.

The ends are chrnode.net.remote_end's; this module keeps them by peer and ref and handles the
relay requests and frames that arrive on the links. Finding the node that serves a device is
chrnode.net.resolver's.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from chrnode.edge import codes
from chrnode.edge.messages import PORTSEND, PortOpen
from chrnode.edge.ports import PortEnd, PortTable, describe
from chrnode.net.remote_end import HOLD_LIMIT, LINK_HIGH_WATER, RemoteEnd
from chrnode.peer import messages as pm
from chrnode.peer.credit import CreditLedger
from chrnode.peer.link import PeerLink

if TYPE_CHECKING:
    from chrnode.net.peers import PeerNetwork

# RemoteEnd and its limits are re-exported from chrnode.net.remote_end
__all__ = ["HOLD_LIMIT", "LINK_HIGH_WATER", "PASS_QUEUE", "PeerRelay", "RemoteEnd"]

_log = logging.getLogger("chrnode.relay")

DRAIN_CHECK = 0.001  # seconds between checks of frames queued towards a reader, while any waits
# A reader whose connection queues at most this much keeps up: what it was given counts as passed
# on (credited at once), so a port that flows pays no wait for its credit; the reader's node then
# holds at most WINDOW + PASS_QUEUE for the port.
PASS_QUEUE = 128 * 1024


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
        self._senders: dict[tuple[PeerLink, int], RemoteEnd] = {}  # credit links: who sends on ref
        self._ledgers: dict[tuple[PeerLink, int], tuple[CreditLedger, Any]] = {}  # (ledger, reader conn)
        self._drain_timer: asyncio.TimerHandle | None = None
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
        self._ledgers.pop((end.link, ref), None)

    def sends(self, end: RemoteEnd, ref: int) -> None:
        self._senders[(end.link, ref)] = end

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
        size = len(frame)
        self.table.relay(end, ref, frame)
        if link.credits:
            self._passed_on(link, end, ref, size)

    def _passed_on(self, link: PeerLink, end: RemoteEnd, ref: int, size: int) -> None:
        """Credit the frame once the reader's connection has handed it to the kernel."""
        entry = self._ledgers.get((link, ref))
        if entry is None:
            port = end.ports.get(ref)
            reader = port.other(end) if port is not None else None
            entry = self._ledgers[(link, ref)] = (CreditLedger(), getattr(reader, "conn", None))
        ledger, conn = entry
        if conn is None or conn.is_closing:
            credit = ledger.received(0, size, 0)  # nothing of it waits here
        else:
            credit = ledger.received(conn.bytes_out, size, _passed(conn))
        if credit:
            link.send_credit(ref, credit)
        if ledger.pending and self._drain_timer is None:
            self._drain_timer = asyncio.get_running_loop().call_later(DRAIN_CHECK, self._drain)

    def _drain(self) -> None:
        self._drain_timer = None
        waiting = False
        for (link, ref), (ledger, conn) in list(self._ledgers.items()):
            if not ledger.pending:
                continue
            gone = conn is None or conn.is_closing
            credit = ledger.drained(1 << 62 if gone else _passed(conn))
            if credit:
                link.send_credit(ref, credit)
            waiting = waiting or bool(ledger.pending)
        if waiting:
            self._drain_timer = asyncio.get_running_loop().call_later(DRAIN_CHECK, self._drain)

    def port_credit(self, link: PeerLink, ref: int, nbytes: int) -> None:
        end = self._senders.get((link, ref))
        if end is None:
            return  # the port ended: credit for it is normal in flight
        end.credited(ref, nbytes)
        if ref not in end._flows:
            del self._senders[(link, ref)]

    def port_flow(self, link: PeerLink, ref: int, paused: bool) -> None:
        end = self._by_ref.get((link, ref))
        port = end.ports.get(ref) if end is not None else None
        if end is None or port is None:
            return
        end.peer_flow(port, paused)

    def _link_down(self, link: PeerLink) -> None:
        for key, end in list(self._ends.items()):
            if end.link is link:
                del self._ends[key]
                self.table.end_closed(end)
                end.link_lost()
        for device, end in list(self._targets.items()):
            if end.link is link:
                del self._targets[device]
                self.table.end_closed(end)
                end.link_lost()
        for table in (self._by_ref, self._senders, self._ledgers):
            for routed in [k for k in table if k[0] is link]:
                del table[routed]

    def status(self) -> dict[str, Any]:
        return {
            "remote_ends": len(self._ends) + len(self._targets),
            "relayed_in": self.bytes_in,
            "relayed_out": self.bytes_out,
            "relay_opens": self.opened,
            "faults": dict(self.faults),
        }


def _passed(conn: Any) -> int:
    """How much of what a reader's connection was given has left this node (SPEC 4 credit)."""
    queued: int = conn.get_write_buffer_size()
    total: int = conn.bytes_out
    return total if queued <= PASS_QUEUE else total - queued
